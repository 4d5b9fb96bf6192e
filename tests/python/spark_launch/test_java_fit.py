"""Kindling.fit on the JVM (java/, issue 16), through kindling-tests.jar's
ModelTool in its own JVM (local[2 + servers]): a sync fit of an RDD of
LabeledPoints trains exactly the weights the Python builder's fit trains on
the same partitions (the same launcher: jvm_driver and jvm_task run
driver.run_attempts and task.barrier_task); an async fit of a DataFrame
learns; a bad row is a DataError and a bad setting the Python builder's
message, before any stage; a rank killed mid-run is retried and resumed;
no process outlives a fit. Skipped when the jars are not built."""
import os
import subprocess

import numpy as np
import pytest
from conftest import SPEC, make_blobs

from sparkenv import model_tool
from kindling_spark import driver
from kindling_spark.estimator import Kindling
from kindling_spark.model import KindlingModel

import json

TEST_X, TEST_Y = make_blobs(600, seed=99)


@pytest.fixture(scope="module")
def java_fit(tmp_path_factory):
    tool = model_tool()
    d = tmp_path_factory.mktemp("java_fit")
    x, y = make_blobs(400, seed=1)
    (d / "x.f32").write_bytes(x.astype("<f4").tobytes())
    (d / "y.i32").write_bytes(y.astype("<i4").tobytes())

    def run(out, kind="rdd", servers=0, extra="", env=None, ok=True):
        e = dict(os.environ, OPENBLAS_NUM_THREADS="1", KINDLING_PYTHON=os.environ.get("KD_PYTHON", "python3"))
        e.update(env or {})
        r = subprocess.run([*tool, "fit", str(d / "x.f32"), str(d / "y.i32"),
                            str(len(x)), json.dumps(SPEC), str(out), kind, str(servers), extra],
                           capture_output=True, text=True, timeout=600, env=e)
        last = [line for line in r.stdout.splitlines() if line.startswith(("OK", "ERROR"))]
        assert last, f"ModelTool fit printed nothing (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
        if ok:
            assert r.returncode == 0 and last[-1].startswith("OK"), f"{last[-1]}\n{r.stderr[-5000:]}"
        else:
            assert r.returncode == 1 and last[-1].startswith("ERROR"), last
        return last[-1]
    run.x, run.y = x, y
    return run


def accuracy(model):
    return float(np.mean(model.predict_classes(TEST_X) == TEST_Y))


def test_java_sync_fit_trains_what_python_trains(java_fit, spark, tmp_path, no_strays):
    java_fit(tmp_path / "java", "rdd", servers=0)
    jmodel = KindlingModel.load(str(tmp_path / "java"))
    x, y = java_fit.x, java_fit.y
    rdd = spark.sparkContext.parallelize([(int(a), b) for a, b in zip(y, x)], 2)
    pmodel = (Kindling().setNetwork(SPEC).setNumEpoch(6).setBatchSize(32).setNumWorker(2).setNumServer(0).setSeed(7)
              .setOptimizer("momentum", lr=0.01).setSchedule("constant").setThreadsPerRank(1).fit(rdd))
    np.testing.assert_allclose(jmodel.predict(TEST_X), pmodel.predict(TEST_X), rtol=0, atol=1e-6)
    assert [h["train_loss"] for h in jmodel.history_records] == pytest.approx(
        [h["train_loss"] for h in pmodel.history_records], abs=1e-6)
    assert accuracy(jmodel) > 0.8


def test_java_async_dataframe_fit_learns(java_fit, tmp_path, no_strays):
    out = java_fit(tmp_path / "df", "df", servers=1)
    assert "epochs=6" in out
    assert accuracy(KindlingModel.load(str(tmp_path / "df"))) > 0.8


def test_java_fit_bad_row_is_a_data_error(java_fit, tmp_path, no_strays):
    err = java_fit(tmp_path / "bad", "rdd", extra="badlabel", ok=False)
    assert "KindlingSparkException [DataError]" in err and "row 5: label 7.5 is not a class" in err, err
    assert not (tmp_path / "bad").exists()


def test_java_fit_bad_setting_has_the_python_message(java_fit, tmp_path, no_strays):
    err = java_fit(tmp_path / "bad", "rdd", extra="badopt", ok=False)
    assert "IllegalArgumentException: unknown optimizer 'nope'" in err, err


def test_java_fit_retries_and_resumes_a_killed_rank(java_fit, tmp_path, no_strays):
    # rank 1 dies once the checkpoint reaches step 20 (first attempt only); the
    # next attempt resumes from the checkpoint and the fit succeeds.
    out = java_fit(tmp_path / "retry", "rdd", servers=1, extra="checkpointEvery=5", env={driver.FAULT_ENV: "1:20"})
    assert "resumed true" in out, out
    assert accuracy(KindlingModel.load(str(tmp_path / "retry"))) > 0.8
