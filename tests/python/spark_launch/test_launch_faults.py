"""Fault injection through Spark (local[4]): the Spark task that runs the
writer rank (task 0, which also runs mpirun) is SIGKILLed while that rank
is half-way through writing a checkpoint (tests/faults/failpoint.c, preloaded
into the ranks of the first attempt only). The launcher must retry the
barrier stage once, resume from the last complete checkpoint, reach the
accuracy of an unbroken run with the same learning rates (the cosine
schedule is not re-planned by a retry, and never stalls at 0 before the
end), leave no temporary checkpoint file and no process behind. The mpirun matrix is tests/faults/run_faults.py (ctest
faults_mpi_matrix)."""
import os
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from conftest import REPO, SPEC, make_blobs, wait_no_job_processes

from kindling_spark import driver
from kindling_spark.estimator import Kindling

TEST_X, TEST_Y = make_blobs(600, seed=99)


@pytest.fixture(scope="module")
def failpoint_lib(cli, tmp_path_factory):
    """libkd_failpoint.so: KD_FAILPOINT_LIB, the build beside the CLI, or
    compiled here from tests/faults/failpoint.c."""
    for path in (os.environ.get("KD_FAILPOINT_LIB"),
                 os.path.join(os.path.dirname(cli), "tests", "faults", "libkd_failpoint.so")):
        if path and os.path.isfile(path):
            return path
    cc, mpicc = shutil.which("cc") or shutil.which("gcc"), shutil.which("mpicc")
    if not cc or not mpicc:
        pytest.skip("libkd_failpoint.so not built and no cc/mpicc to build it")
    flags = subprocess.run([mpicc, "--showme:compile"], capture_output=True, text=True).stdout.split()
    flags += subprocess.run(["pkg-config", "--cflags", "hdf5"], capture_output=True, text=True).stdout.split()
    out = str(tmp_path_factory.mktemp("failpoint") / "libkd_failpoint.so")
    r = subprocess.run([cc, "-shared", "-fPIC", "-O2", *flags, "-o", out,
                        str(REPO / "tests" / "faults" / "failpoint.c"), "-ldl"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build the failpoint library: {r.stderr[-500:]}")
    return out


def fit(spark, ckdir, on_line=None):
    x, y = make_blobs(6000, seed=8, spread=1.5)
    rdd = spark.sparkContext.parallelize([(int(a), b) for a, b in zip(y, x)], 2)
    k = (Kindling().setNetwork(SPEC).setNumEpoch(4).setBatchSize(16).setNumWorker(2).setMode("sync").setSeed(3)
         .setOptimizer("momentum", lr=0.05).setSchedule("cosine").setCheckpointEvery(20)
         .setCheckpointDir(str(ckdir)).setMaxRetries(2))
    if on_line:
        k.setProgressCallback(on_line)
    return k.fit(rdd)


def test_task_killed_mid_checkpoint_write_is_retried_and_resumed(spark, failpoint_lib, monkeypatch, tmp_path,
                                                                   no_strays):
    monkeypatch.delenv(driver.FAULT_ENV, raising=False)
    monkeypatch.delenv(driver.FAULT_RANK_ENV, raising=False)
    clean = fit(spark, tmp_path / "clean")

    # The third save (steps 20, 40, 60): rank 0 dies after the temporary's
    # first dataset is written, and takes its Spark task down with it.
    monkeypatch.setenv(driver.FAULT_RANK_ENV, f"LD_PRELOAD={failpoint_lib} KD_FAILPOINT=ckpt_write:3 "
                                                "KD_FAILPOINT_RANK=0 KD_FAILPOINT_KILL=task")
    ckdir = tmp_path / "broken"
    seen = {}

    def on_line(line):  # the checkpoint as the failed attempt left it, read when the retry starts
        if line.startswith("kindling: attempt 2") and "at_retry" not in seen:
            path = next(p for p in ckdir.iterdir() if p.suffix == ".h5")
            with h5py.File(path, "r") as f:
                seen["at_retry"] = int(f["training"].attrs["step"])
            seen["tmp_at_retry"] = sorted(p.name for p in ckdir.iterdir() if ".tmp" in p.name)

    broken = fit(spark, ckdir, on_line)
    attempts = broken.training_summary["attempts"]
    assert [a["status"] for a in attempts] == ["stage failed", "ok"], attempts
    assert attempts[1]["resumed"]
    # Resumed from the last complete save (step 40), not a half-written one;
    # the killed writer's temporary was there and the resumed run removed it.
    assert seen.get("at_retry") == 40, seen
    assert len(seen["tmp_at_retry"]) == 1, seen
    assert not [p.name for p in ckdir.iterdir() if ".tmp" in p.name]
    assert [h["epoch"] for h in broken.history_records] == [1, 2, 3, 4]
    # The retry resumed the planned schedule: the same rates as the clean run, above 0 until the end.
    rates = [h["learning_rate"] for h in broken.history_records]
    assert rates == [h["learning_rate"] for h in clean.history_records], (rates, clean.history_records)
    assert all(r > 0 for r in rates[:-1]) and rates[0] > rates[1] > rates[2], rates
    acc = lambda m: float(np.mean(m.predict_classes(TEST_X) == TEST_Y))  # noqa: E731
    assert abs(acc(clean) - acc(broken)) <= 0.005, (acc(clean), acc(broken))
    assert wait_no_job_processes(broken.training_summary["job_id"]) == []
