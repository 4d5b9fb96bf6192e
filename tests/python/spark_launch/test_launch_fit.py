"""Training through the Spark barrier stage (local[4]): the builder and the
Estimator fit, transform, save/load; Spark's sync run equals a plain mpirun
on the same partitions; a killed rank is retried and resumed; a cancelled
job group leaves no process behind."""
import json
import logging
import os
import re
import subprocess
import threading
import time

import h5py
import numpy as np
from conftest import SPEC, describe, make_blobs, wait_no_job_processes

from kindling_spark import driver, keeper, params, spool, task
from kindling_spark.errors import TrainingCancelled
from kindling_spark.estimator import Kindling, KindlingClassifier
from kindling_spark.model import KindlingModel

TEST_X, TEST_Y = make_blobs(600, seed=99)


def accuracy(model, x=TEST_X, y=TEST_Y):
    return float(np.mean(model.predict_classes(x) == y))


def pairs_rdd(spark, n, partitions, seed=1):
    x, y = make_blobs(n, seed)
    return spark.sparkContext.parallelize([(int(a), b) for a, b in zip(y, x)], partitions), x, y


def builder(**kw):
    k = (Kindling().setNetwork(SPEC).setNumEpoch(kw.pop("epochs", 4)).setBatchSize(kw.pop("batch", 16))
         .setNumWorker(kw.pop("workers", 2)).setSeed(3).setOptimizer("momentum", lr=0.05)
         .setSchedule("constant"))
    mode = kw.pop("mode", "async")
    if mode == "sync":
        k.setMode("sync")
    else:
        k.setNumServer(kw.pop("servers", 1)).setMaxStaleness(kw.pop("staleness", 0))
    assert not kw, kw
    return k


def layer_arrays(h5bytes_or_path):
    if isinstance(h5bytes_or_path, bytes):
        import io

        h5bytes_or_path = io.BytesIO(h5bytes_or_path)
    with h5py.File(h5bytes_or_path, "r") as f:
        out = {}
        f["layers"].visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                               else None)
        return out, int(f["training"].attrs["step"]), int(f["training"].attrs["epoch"])


def test_builder_async_fit_logs_progress_and_transforms(spark, caplog, no_strays):
    rdd, _, _ = pairs_rdd(spark, 800, 3)  # 3 partitions dealt to 2 workers
    seen = []
    caplog.set_level(logging.INFO, logger="kindling_spark")
    model = builder(mode="async", servers=1).setProgressCallback(lambda line: seen.append((time.time(), line))).fit(rdd)
    summary = model.training_summary
    assert [a["status"] for a in summary["attempts"]] == ["ok"]
    # Per-epoch lines reached the driver's log while the ranks ran (before mpirun ended).
    epochs = [(t, line) for t, line in seen if line.startswith("epoch ")]
    assert [line.split()[1] for _, line in epochs] == ["1/4", "2/4", "3/4", "4/4"]
    end = [t for t, line in seen if "mpirun exited with status 0" in line]
    assert end and epochs[0][0] <= end[0]
    # Local mode: the tasks are one host to Open MPI, and the ranks say they
    # exchange through shared memory (the server's window is osc/sm).
    lines = [line for _, line in seen]
    assert any("starting: 3 ranks on 1 host(s)" in line for line in lines), lines[:5]
    report = [line for line in lines if line.startswith("kindling train: async")]
    assert report and "by one-sided RMA in shared memory; 3 ranks on 1 host" in report[0], report
    assert re.search(r"^epoch 1/4 .* samples/s per worker, \d+ global", epochs[0][1]), epochs[0][1]
    assert any(r.getMessage().startswith("epoch 1/4") for r in caplog.records)
    # The model carries the training history from the checkpoint.
    assert [h["epoch"] for h in model.history_records] == [1, 2, 3, 4]
    assert model.history_records[-1]["train_loss"] < model.history_records[0]["train_loss"]
    assert accuracy(model) > 0.9

    x, y = make_blobs(50, seed=5)
    from pyspark.ml.linalg import Vectors

    df = spark.createDataFrame([(int(a), Vectors.dense(b.tolist())) for a, b in zip(y, x)], ["label", "features"])
    out = model.transform(df).collect()
    assert len(out) == 50
    np.testing.assert_allclose(np.array([r.probability.toArray() for r in out]), model.predict(x), atol=1e-6)
    assert wait_no_job_processes(summary["job_id"]) == []
    assert not os.path.exists(summary["spool_dir"]) and not os.path.exists(summary["checkpoint"])


def test_classifier_sync_fit_save_load_round_trip(spark, tmp_path, no_strays):
    x, y = make_blobs(600, seed=2)
    df = spark.createDataFrame([(float(a), b.tolist()) for a, b in zip(y, x)], ["target", "pixels"])
    clf = KindlingClassifier(featuresCol="pixels", labelCol="target", network=json.dumps(SPEC), numEpochs=4,
                             batchSize=16, numWorkers=2, mode="sync", optimizer="momentum", learningRate=0.05,
                             schedule="constant", seed=3)
    model = clf.fit(df)
    assert isinstance(model, KindlingModel)
    assert model.getFeaturesCol() == "pixels" and model.getLabelCol() == "target"
    assert accuracy(model) > 0.9

    path = str(tmp_path / "model")
    model.write().overwrite().save(path)
    loaded = KindlingModel.load(path)
    a = model.transform(df).select("prediction", "probability").collect()
    b = loaded.transform(df).select("prediction", "probability").collect()
    assert [r.prediction for r in a] == [r.prediction for r in b]
    np.testing.assert_array_equal(np.array([r.probability.toArray() for r in a]),
                                  np.array([r.probability.toArray() for r in b]))
    assert loaded.history_records == model.history_records

    clf_path = str(tmp_path / "clf")
    clf.write().overwrite().save(clf_path)
    again = KindlingClassifier.load(clf_path)
    assert again.getOrDefault("numWorkers") == 2 and again.getOrDefault("mode") == "sync"


def test_input_forms_more_workers_than_partitions_and_empty_partitions(spark, no_strays):
    from pyspark.mllib.regression import LabeledPoint

    x, y = make_blobs(300, seed=4)
    sc = spark.sparkContext
    # LabeledPoints in one partition, dealt to 3 workers.
    lp = sc.parallelize([LabeledPoint(int(a), b.tolist()) for a, b in zip(y, x)], 1)
    m = builder(mode="sync", workers=3, epochs=3).fit(lp)
    assert accuracy(m) > 0.85
    # numpy rows [label, features...] with an empty partition, first or second: the
    # empty worker takes empty steps, and worker 0 (which writes the checkpoint and
    # reports the final accuracy) is given to a task with rows.
    arrays = [np.concatenate([[a], b]) for a, b in zip(y, x)]
    for rdd in (sc.parallelize(arrays, 1).union(sc.parallelize([], 1)),
                sc.parallelize([], 1).union(sc.parallelize(arrays, 1))):
        sizes = rdd.glom().map(len).collect()
        assert sorted(sizes) == [0, 300]
        m = builder(mode="sync", workers=2, epochs=3).fit(rdd)
        assert accuracy(m) > 0.85, sizes
        assert [a["status"] for a in m.training_summary["attempts"]] == ["ok"]


def test_spark_sync_equals_plain_mpirun_on_the_same_partitions(spark, cli, tmp_path, no_strays):
    rdd, _, _ = pairs_rdd(spark, 500, 2, seed=7)
    k = builder(mode="sync", workers=2, epochs=3).setCheckpointDir(str(tmp_path / "ckpt"))
    model = k.fit(rdd)
    spark_w, spark_step, _ = layer_arrays(model.checkpoint)
    lines = [t for _, _, t in model.training_summary["lines"]]
    assert any(t.startswith("kindling train: sync") and "by allreduce overlapped with backward; 2 ranks on 1 host" in t
               for t in lines), lines

    # The same job under plain mpirun: one spool per partition, the launcher's own arguments.
    parts = rdd.glom().collect()
    for w, rows in enumerate(parts):
        spool.write_spool(tmp_path / f"part-{w}.spool", np.stack([r[1] for r in rows]), [r[0] for r in rows])
    cfg, _ = k._config(spark.sparkContext)
    (tmp_path / "net.json").write_text(cfg.network)
    ckpt = tmp_path / "mpirun.h5"
    args = params.train_argv(cfg, str(tmp_path / "net.json"), str(tmp_path / "part-%w.spool"), str(ckpt))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    r = subprocess.run(["mpirun", "--oversubscribe", "-np", "2", cli, *args], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    ref_w, ref_step, _ = layer_arrays(str(ckpt))
    assert spark_step == ref_step > 0
    assert sorted(spark_w) == sorted(ref_w)
    for name in ref_w:
        np.testing.assert_allclose(spark_w[name], ref_w[name], rtol=0, atol=1e-5, err_msg=name)


def test_killed_rank_is_retried_and_resumed(spark, monkeypatch, tmp_path, no_strays):
    x, y = make_blobs(6000, seed=8, spread=1.5)
    rdd = spark.sparkContext.parallelize([(int(a), b) for a, b in zip(y, x)], 2)

    def run(**fault):
        k = builder(mode="sync", workers=2, epochs=4).setCheckpointEvery(20).setCheckpointDir(
            str(tmp_path / ("broken" if fault else "clean")))
        if fault:
            monkeypatch.setenv(driver.FAULT_ENV, "1:200")  # rank 1 dies once the checkpoint reaches step 200
        else:
            monkeypatch.delenv(driver.FAULT_ENV, raising=False)
        return k.fit(rdd)

    clean = run()
    broken = run(fault=True)
    attempts = broken.training_summary["attempts"]
    assert [a["status"] for a in attempts] == ["failed", "ok"], attempts
    assert attempts[1]["resumed"]
    lines = [t for _, _, t in broken.training_summary["lines"]]
    assert any("killing rank 1" in t or "signal 9" in t for t in lines), "\n".join(lines[-20:])
    assert [h["epoch"] for h in broken.history_records] == [1, 2, 3, 4]
    a_clean, a_broken = accuracy(clean), accuracy(broken)
    assert abs(a_clean - a_broken) <= 0.005, (a_clean, a_broken)


def test_cancelled_job_group_leaves_no_process(spark, no_strays):
    x, y = make_blobs(4000, seed=9)
    sc = spark.sparkContext
    rdd = sc.parallelize([(int(a), b) for a, b in zip(y, x)], 2)
    first_epoch = threading.Event()
    outcome = {}

    def on_line(line):
        if line.startswith("epoch "):
            first_epoch.set()

    def fit():
        sc.setJobGroup("kindling-cancel-test", "a training to cancel")
        try:
            outcome["model"] = builder(mode="async", epochs=400).setProgressCallback(on_line).fit(rdd)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            outcome["error"] = e

    th = threading.Thread(target=fit)
    th.start()
    assert first_epoch.wait(120), "training never reported an epoch"
    sc.cancelJobGroup("kindling-cancel-test")
    th.join(60)
    assert not th.is_alive()
    assert isinstance(outcome.get("error"), TrainingCancelled), outcome
    left = wait_no_job_processes()
    assert not left, describe(left)


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except OSError:
        return 0


def _listening():
    """(process name, pid, local address) of every listening TCP socket."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 6:
            continue
        local = cols[3].rsplit(":", 1)[0]
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            found.append((name, int(pid), local))
    return found


def test_kindling_sockets_listen_on_loopback_only_in_local_mode(spark, no_strays):
    """The driver hub and every task's launch service listen on 127.0.0.1
    in local mode (Open MPI's own daemons and ranks are not Kindling's:
    they listen on every interface, see docs/reliability.md)."""
    rdd, _, _ = pairs_rdd(spark, 400, 2)
    seen = {}

    def snapshot(line):
        if line.startswith("epoch 1/") and not seen:
            job = keeper.job_processes()
            ours = {os.getpid()}
            for pid in job:  # the barrier tasks' Python workers are ancestors of the keepers
                p = _parent(pid)
                while p > 1 and p not in ours:
                    ours.add(p)
                    p = _parent(p)
            mpi = {"mpirun", "orted", "kindling", "java"}
            seen["sockets"] = [(n, pid, a) for n, pid, a in _listening() if pid in ours and n not in mpi]

    builder(mode="sync", epochs=2).setProgressCallback(snapshot).fit(rdd)
    sockets = seen.get("sockets")
    assert sockets, "no listening socket of the driver or the tasks was seen during training"
    assert any(pid == os.getpid() for _, pid, _ in sockets), f"the driver hub was not seen: {sockets}"
    assert any(pid != os.getpid() for _, pid, _ in sockets), f"no task's launch service was seen: {sockets}"
    wide = [s for s in sockets if s[2] not in ("127.0.0.1", "[::1]")]
    assert not wide, f"sockets listening beyond loopback: {wide}"


def test_tasks_on_two_hosts_use_messages_and_recover_a_killed_rank(spark, monkeypatch, tmp_path, no_strays):
    """The test hook deals the tasks into 2 hosts: task 0's host runs its
    ranks under mpirun, the other host's leader runs an orted through the
    agent, and the parameter server, seeing ranks on 2 hosts, talks by
    messages over TCP. A rank killed on the other host fails the attempt;
    the retry resumes and trains as well as an unbroken run."""
    x, y = make_blobs(6000, seed=8, spread=1.5)
    rdd = spark.sparkContext.parallelize([(int(a), b) for a, b in zip(y, x)], 2)
    monkeypatch.setenv(task.TEST_HOSTS_ENV, "2")

    def run(fault=None):
        k = builder(mode="async", servers=1, staleness=0, workers=2, epochs=4).setCheckpointEvery(20) \
            .setCheckpointDir(str(tmp_path / ("broken" if fault else "clean")))
        if fault:
            monkeypatch.setenv(driver.FAULT_ENV, fault)
        else:
            monkeypatch.delenv(driver.FAULT_ENV, raising=False)
        return k.fit(rdd)

    clean = run()
    lines = [t for _, _, t in clean.training_summary["lines"]]
    assert any("starting: 3 ranks on 2 host(s)" in t for t in lines), lines[:5]
    summary = [t for t in lines if t.startswith("kindling train: async")]
    assert summary and "by two-sided messages (ranks on several hosts)" in summary[0], summary
    # Tasks 0 and 2 share a host, task 1 is alone: rank 1 (worker 0, task 1) runs on the other host.
    broken = run(fault="1:100")
    attempts = broken.training_summary["attempts"]
    assert [a["status"] for a in attempts] == ["failed", "ok"], attempts
    assert attempts[1]["resumed"]
    assert [h["epoch"] for h in broken.history_records] == [1, 2, 3, 4]
    a_clean, a_broken = accuracy(clean), accuracy(broken)
    assert a_clean > 0.9 and abs(a_clean - a_broken) <= 0.01, (a_clean, a_broken)


def test_dataframe_through_arrow_trains_what_its_rows_train(spark, no_strays):
    """A DataFrame goes to the ranks as Arrow batches written into the spool
    files; an RDD of the same rows in the same partitions goes row by row.
    Sync mode trains identical weights on identical spools. Vector columns
    (dense and sparse) arrive as the same numbers as arrays."""
    from pyspark.ml.linalg import Vectors

    x, y = make_blobs(500, seed=12)
    sparse = [Vectors.sparse(len(b), {j: float(v) for j, v in enumerate(b) if j % 2 == 0 or v > 0})
              if i % 3 == 0 else Vectors.dense(b.tolist()) for i, b in enumerate(x)]
    df = spark.createDataFrame([(float(a), v) for a, v in zip(y, sparse)], ["label", "features"]).coalesce(2)
    df_rows = spark.sparkContext.parallelize([(int(a), v.toArray().astype(np.float32)) for a, v in zip(y, sparse)], 2)
    assert df.rdd.glom().map(len).collect() == df_rows.glom().map(len).collect()
    by_frame = builder(mode="sync", workers=2, epochs=2).fit(df)
    by_rows = builder(mode="sync", workers=2, epochs=2).fit(df_rows)
    a, _, _ = layer_arrays(by_frame.checkpoint)
    b, _, _ = layer_arrays(by_rows.checkpoint)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert accuracy(by_frame) > 0.9
