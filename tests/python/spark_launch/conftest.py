"""Fixtures for the launcher tests: this checkout's package (driver and
Spark's Python workers), the C library and an MPI-enabled `kindling` with
--local-data and --train-spool (skipped, with what is missing, otherwise),
one local[4] SparkSession for the whole session, small data sets, and a
check that no process of this session's training jobs is left behind."""
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/python: sparkenv
from sparkenv import REPO, java_missing, use_this_checkout  # noqa: E402

use_this_checkout()
for build in ("build-launch", "build"):  # ci/build.sh build-launch, or the default build
    if not os.environ.get("KINDLING_CLI") and (REPO / build / "kindling").is_file():
        os.environ["KINDLING_CLI"] = str(REPO / build / "kindling")
        os.environ.setdefault("KINDLING_LIB", str(REPO / build / "libkindling.so"))
if os.geteuid() == 0:
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")

from kindling_spark import keeper, native  # noqa: E402

# Every process this session starts (Spark's Python workers, the ranks, the
# keepers) inherits this mark, so the orphan check sees this session's jobs
# and not those of another test run on the same machine.
SESSION_MARK = f"KD_TEST_SESSION={os.getpid()}-{time.time_ns()}"
os.environ["KD_TEST_SESSION"] = SESSION_MARK.split("=", 1)[1]


def in_this_session(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return SESSION_MARK.encode() in f.read().split(b"\0")
    except OSError:
        return False

NUM_FEATURES, NUM_CLASSES = 8, 3
SPEC = {"input": [NUM_FEATURES], "layers": [
    {"type": "dense", "units": 16}, {"type": "relu"},
    {"type": "dense", "units": NUM_CLASSES}, {"type": "softmax"}]}


def make_blobs(n, seed, features=NUM_FEATURES, spread=1.0):
    """Three Gaussian blobs (fixed centres, samples from `seed`)."""
    centers = np.random.default_rng(0).normal(0, 2.0, (NUM_CLASSES, features))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    x = centers[y] + rng.normal(0, spread, (n, features))
    return x.astype(np.float32), y.astype(np.int32)


@pytest.fixture(scope="session")
def cli():
    try:
        native.load()
        path = native.cli_path()
    except native.NotFound as e:
        pytest.skip(str(e))
    if not shutil.which("mpirun"):
        pytest.skip("mpirun not found (apt-get install openmpi-bin)")
    helptext = subprocess.run([path, "train", "--help"], capture_output=True, text=True).stdout
    for flag in ("--dist", "--local-data", "--train-spool"):
        if flag not in helptext or (flag == "--train-spool" and _rejects_spool(path)):
            pytest.skip(f"{path} has no usable {flag} (needs an MPI build with the spool reader)")
    return path


def _rejects_spool(path):
    r = subprocess.run([path, "train", "--train-spool", "/nonexistent.spool", "--epochs", "1"],
                       capture_output=True, text=True)
    return "unknown option" in r.stderr


def _session():
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[4]").appName("kindling-spark-launch-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    return session


@pytest.fixture(scope="session")
def _spark_for_session(cli):
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install pyspark)")
    reason = java_missing()
    if reason:
        pytest.skip(reason)
    yield
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


@pytest.fixture
def spark(_spark_for_session):
    """One local[4] session for all these tests (made again if another
    test module stopped it)."""
    return _session()


def wait_no_job_processes(job_id=None, timeout=15.0):
    """Pids still alive for the job (or any job) after waiting up to
    `timeout` s (Spark kills a cancelled task's Python worker after 2 s)."""
    deadline = time.time() + timeout
    while True:
        left = [p for p in keeper.job_processes(job_id) if in_this_session(p)]
        if job_id:
            r = subprocess.run(["pgrep", "-f", job_id], capture_output=True, text=True)
            left += [int(p) for p in r.stdout.split() if int(p) != os.getpid()]
        if not left or time.time() > deadline:
            return sorted(set(left))
        time.sleep(0.2)


def describe(pids):
    out = []
    for p in pids:
        try:
            out.append(f"{p}: {pathlib.Path(f'/proc/{p}/cmdline').read_bytes().replace(bytes(1), b' ').decode()[:200]}")
        except OSError:
            out.append(f"{p}: (gone)")
    return "\n".join(out)


@pytest.fixture
def no_strays():
    """Fails the test if any process of this session's training jobs outlives it."""
    yield
    left = wait_no_job_processes()
    assert not left, "processes left behind:\n" + describe(left)
