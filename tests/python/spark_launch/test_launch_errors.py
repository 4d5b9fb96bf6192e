"""Bad input gives a clear Python exception (naming the problem) and leaves
no process behind: wrong feature length, null or non-numeric labels,
labels outside the classes, an empty DataFrame, too few task slots, a bad
network spec."""
import ctypes
import json
import logging
import time

import numpy as np
import pytest
from conftest import NUM_FEATURES, SPEC, make_blobs

from kindling_spark.estimator import Kindling, KindlingClassifier
from kindling_spark import native, params, task
from kindling_spark.errors import DataError, NotEnoughSlotsError, TrainingError


def kindling(**kw):
    return (Kindling().setNetwork(kw.get("network", SPEC)).setNumEpoch(2).setBatchSize(16)
            .setNumWorker(kw.get("workers", 2)).setNumServer(kw.get("servers", 1)).setMaxRetries(2))


def rows(n=60, seed=1):
    x, y = make_blobs(n, seed)
    return [(int(a), b.tolist()) for a, b in zip(y, x)]


def fit_rdd(spark, data, partitions=2, **kw):
    return kindling(**kw).fit(spark.sparkContext.parallelize(data, partitions))


def test_wrong_feature_length(spark, no_strays):
    data = rows()
    data[37] = (data[37][0], data[37][1][:-1])
    with pytest.raises(DataError, match=rf"input partition \d, row \d+: {NUM_FEATURES - 1} features, expected "
                                        rf"{NUM_FEATURES} \(the network's input size\)"):
        fit_rdd(spark, data)


def test_null_label_in_a_dataframe(spark, no_strays):
    data = [(float(a), b) for a, b in rows()]
    data[5] = (None, data[5][1])
    df = spark.createDataFrame(data, "label double, features array<double>")
    with pytest.raises(DataError, match="row 5: label is null"):
        KindlingClassifier(network=json.dumps(SPEC), numEpochs=1, batchSize=16).fit(df.coalesce(1))


def test_non_numeric_labels(spark, no_strays):
    df = spark.createDataFrame([("cat", b) for _, b in rows(10)], "label string, features array<double>")
    with pytest.raises(DataError, match="label column 'label' has type string"):
        KindlingClassifier(network=json.dumps(SPEC), numEpochs=1).fit(df)
    data = rows()
    data[3] = ("three", data[3][1])
    with pytest.raises(DataError, match="label 'three' is not a number"):
        fit_rdd(spark, data)


def test_label_outside_the_classes(spark, no_strays):
    data = rows()
    data[11] = (3, data[11][1])  # the network has classes 0..2
    with pytest.raises(DataError, match=r"label 3 is not a class of the network \(whole numbers 0\.\.2\)"):
        fit_rdd(spark, data)
    data[11] = (1.5, data[11][1])
    with pytest.raises(DataError, match="label 1.5 is not a class"):
        fit_rdd(spark, data)


def test_empty_dataframe(spark, no_strays):
    df = spark.createDataFrame([], "label double, features array<double>")
    with pytest.raises(DataError, match="the training data is empty"):
        KindlingClassifier(network=json.dumps(SPEC), numEpochs=1).fit(df)


def test_too_few_slots_fails_at_once(spark, no_strays):
    t0 = time.time()
    with pytest.raises(NotEnoughSlotsError, match=r"barrier stage of 5 tasks \(4 workers \+ 1 server\).* has 4 "
                                                  r"task slots .*local\[4\].*local\[5\]"):
        fit_rdd(spark, rows(), workers=4, servers=1)
    assert time.time() - t0 < 10


@pytest.mark.parametrize("network, message", [
    ({"input": [NUM_FEATURES], "layers": [{"type": "dense", "units": 3}, {"type": "wobble"}]}, "wobble"),
    ({"input": [NUM_FEATURES], "layers": [{"type": "dense", "units": 0}, {"type": "softmax"}]}, "units"),
    ('{"input": [8], "layers": [', "not valid JSON"),
    # Unknown top-level keys and duplicate keys fail here as in the CLI (json
    # alone would keep the last duplicate, the C library the first).
    ({"input": [NUM_FEATURES], "layers": SPEC["layers"], "epochs": 3}, 'unknown top-level key "epochs"'),
    ('{"input": [8], "input": [4], "layers": [{"type": "softmax"}]}', "key 'input' appears more than once"),
    ('{"input": [8], "layers": [{"type": "dense", "units": 3, "units": 5}, {"type": "softmax"}]}',
     "key 'units' appears more than once"),
    ("resnet", "neither a preset"),
])
def test_bad_network_spec(spark, network, message, no_strays):
    with pytest.raises(ValueError, match=message):
        fit_rdd(spark, rows(), network=network)


def test_dimension_must_match_the_network(spark, no_strays):
    with pytest.raises(ValueError, match="differs from setDimension"):
        kindling().setDimension((1, 28, 28)).fit(spark.sparkContext.parallelize(rows(), 2))
    with pytest.raises(ValueError, match="preset 'mlp' takes input"):
        kindling(network="mlp").setDimension((3, 32, 32)).fit(spark.sparkContext.parallelize(rows(), 2))


def test_bad_settings_fail_when_set():
    # Messages use the KindlingClassifier param names, for both APIs.
    with pytest.raises(ValueError, match="numWorkers must be an integer >= 1"):
        Kindling().setNumWorker(0)
    with pytest.raises(ValueError, match="numWorkers must be an integer >= 1"):
        KindlingClassifier(numWorkers=0).builder()
    with pytest.raises(ValueError, match="numServers must be an integer >= 0"):
        Kindling().setNumServer(-1)
    with pytest.raises(ValueError, match="numEpochs must be an integer >= 1"):
        KindlingClassifier(numEpochs=0).builder()
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        Kindling().setOptimizer("adagrad")
    with pytest.raises(ValueError, match="lr must be a finite number"):
        Kindling().setOptimizer("sgd", lr=float("nan"))
    with pytest.raises(ValueError, match="context must be 'cpu' or 'gpu'"):
        Kindling().setContext("tpu")
    assert np.prod(Kindling().setDimension((1, 28, 28))._dimension) == 784


def test_gpu_context_reaches_the_ranks_with_the_tasks_gpu():
    cfg = params.TrainConfig(network="mlp", input_size=784, num_classes=10, context="gpu", workers=2, servers=1)
    for resume in (False, True):
        argv = params.train_argv(cfg, "mlp", "part-%w.spool", "ck.h5", resume=resume)
        assert argv[argv.index("--context") + 1] == "gpu"
    cpu = params.TrainConfig(network="mlp", input_size=784, num_classes=10)
    assert "--context" not in params.train_argv(cpu, "mlp", "part-%w.spool", "ck.h5")
    # One GPU per rank: the first address Spark gave the rank's task, in that rank's app context.
    # Each host's ranks run the kindling binary its leader task found (a packed venv differs per executor).
    infos = [{"host": "a", "cores": 4, "gpus": None, "cli": "/a/env/kindling"},
             {"host": "a", "cores": 4, "gpus": ["3", "5"], "cli": "/a/other"},
             {"host": "b", "cores": 4, "gpus": ["1"], "cli": "/b/env/kindling"}]
    order = [0, 2, 1]  # server, then worker 0 on host b, worker 1 on host a
    hosts = task.group_hosts(infos, order, "here")
    assert task.app_contexts(infos, order, hosts, cfg) == [
        ["here", 2, 1, (), "/a/env/kindling"],
        [f"{task.HOST_PREFIX}2", 1, 1, ("CUDA_VISIBLE_DEVICES=1",), "/b/env/kindling"],
        ["here", 2, 1, ("CUDA_VISIBLE_DEVICES=3",), "/a/env/kindling"]]
    assert task.app_contexts(infos, order, hosts, cpu) == [
        ["here", 2, 1, (), "/a/env/kindling"], [f"{task.HOST_PREFIX}2", 1, 1, (), "/b/env/kindling"],
        ["here", 2, 1, (), "/a/env/kindling"]]
    for i in infos:
        del i["cli"]
    assert [c[4] for c in task.app_contexts(infos, order, hosts, cpu, "/driver/kindling")] == ["/driver/kindling"] * 3
    assert Kindling().setContext("gpu")._config(_FakeSc())[0].context == "gpu"


def _has_cuda_device():
    lib = native.load()
    count = ctypes.c_int(0)
    return lib.kd_gpu_device_count(ctypes.byref(count)) == 0 and count.value > 0


def test_gpu_without_a_device_fails_once_with_the_cuda_reason(spark, caplog, no_strays):
    if _has_cuda_device():
        pytest.skip("this machine has a CUDA device: the run would train")
    caplog.set_level(logging.WARNING, logger="kindling_spark")
    with pytest.raises(TrainingError) as e:
        kindling().setContext("gpu").fit(spark.sparkContext.parallelize(rows(), 2))
    headline = str(e.value).splitlines()[0]
    # The reason is the headline, not "failed twice without progress" after a pointless retry.
    assert "--context gpu" in headline and ("no CUDA device" in headline or "without CUDA" in headline), headline
    assert "twice" not in str(e.value)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()], "a missing GPU was retried"


class _FakeSc:
    class _Conf:
        def get(self, key, default=None):
            return default

    def getConf(self):
        return self._Conf()


def test_builder_estimator_and_config_share_their_defaults():
    """params.DEFAULTS is the one declaration: the builder, the Estimator
    and a bare TrainConfig run the same command line."""
    sc = _FakeSc()
    built, _ = Kindling()._config(sc)
    estimated, _ = KindlingClassifier().builder()._config(sc)
    bare = params.TrainConfig(network=built.network, input_size=built.input_size, num_classes=built.num_classes,
                              threads=built.threads)
    argv = [params.train_argv(c, "mlp", "part-%w.spool", "ck.h5") for c in (built, estimated, bare)]
    assert argv[0] == argv[1] == argv[2], argv
    for flag, value in (("--batch-size", params.DEFAULTS.batch_size), ("--epochs", params.DEFAULTS.epochs),
                        ("--optimizer", params.DEFAULTS.optimizer), ("--schedule", params.DEFAULTS.schedule),
                        ("--servers", params.DEFAULTS.servers), ("--seed", params.DEFAULTS.seed)):
        assert argv[0][argv[0].index(flag) + 1] == str(value), flag
    assert built.workers == estimated.workers == params.DEFAULTS.workers


def test_ranks_are_placed_on_their_tasks_hosts():
    """Tasks that share a host are one host to mpirun (task 0's is mpirun's
    own); each rank runs on its task's host, one app context per run of
    ranks on a host; a host with more ranks than cores makes them yield."""
    cfg = params.TrainConfig(network="mlp", input_size=784, num_classes=10, workers=3, servers=1)
    infos = [{"host": "a", "cores": 2}, {"host": "b", "cores": 8}, {"host": "a", "cores": 2},
             {"host": "a", "cores": 2}]
    order = [0, 1, 2, 3]
    hosts = task.group_hosts(infos, order, "node-a")
    assert {k: (h.name, h.tasks, h.ranks) for k, h in hosts.items()} == {
        "a": ("node-a", [0, 2, 3], 3), "b": (f"{task.HOST_PREFIX}1", [1], 1)}
    job = task.JobSpec(job_id="j", attempt=0, secret="s", hub=("127.0.0.1", 1), cfg=cfg, cli="/bin/kindling",
                       spool_dir="/tmp/sp", checkpoint="/tmp/ck.h5", resume=False)
    cmd, argv = task.mpirun_command(job, infos, order, hosts, "/tmp/agent")
    contexts = " ".join(cmd).split(" : ")
    assert [c.split("--host ")[1].split()[0] for c in contexts] == ["node-a:3", f"{task.HOST_PREFIX}1:1", "node-a:3"]
    assert [int(c.split("-np ")[1].split()[0]) for c in contexts] == [1, 1, 2]
    assert all(c.endswith(" ".join(argv)) for c in contexts)
    assert "self,vader,tcp" in cmd and cmd[cmd.index("mpi_yield_when_idle") + 1] == "1"  # 3 ranks, 2 cores
    roomy = task.group_hosts([dict(i, cores=8) for i in infos], order, "node-a")
    assert "mpi_yield_when_idle" not in task.mpirun_command(job, infos, order, roomy, "/tmp/agent")[0]


@pytest.mark.parametrize("bad, message", [
    ([1.0] * (NUM_FEATURES - 1), rf"input partition 0, row 7: {NUM_FEATURES - 1} features, expected {NUM_FEATURES}"),
    (None, "input partition 0, row 7: features are null"),
    ([1.0] * (NUM_FEATURES - 1) + [None], f"input partition 0, row 7: features have a null element \\(feature "
                                          f"{NUM_FEATURES - 1}\\)"),
    ([1.0] * (NUM_FEATURES - 1) + [float("nan")], f"input partition 0, row 7: feature {NUM_FEATURES - 1} is nan"),
])
def test_bad_dataframe_rows_are_named_through_arrow(spark, bad, message, no_strays):
    """DataFrames reach the ranks as Arrow batches; a bad row is still named."""
    data = [(float(a), b) for a, b in rows()]
    data[7] = (data[7][0], bad)
    df = spark.createDataFrame(data, "label double, features array<double>").coalesce(1)
    with pytest.raises(DataError, match=message):
        KindlingClassifier(network=json.dumps(SPEC), numEpochs=1, batchSize=16).fit(df)


def test_missing_open_mpi_on_an_executor_names_the_host(tmp_path):
    """Open MPI's runtime comes from the OS: a task whose PATH has no mpirun
    (task 0) or orted (the others) fails before spooling, naming its host."""
    import socket
    import types

    job = types.SimpleNamespace(cli=None)
    empty = tmp_path / "empty"
    empty.mkdir()
    for t, prog in ((0, "mpirun"), (2, "orted / prted")):
        cli, err = task.local_tools(job, t, {"PATH": str(empty)})
        assert cli is None and err["kind"] == "setup"
        assert f"executor host {socket.gethostname()} (task {t}): Open MPI's {prog} is not on the PATH" in err["message"]
        assert f"PATH={empty}" in err["message"] and "apt-get install openmpi-bin" in err["message"]
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("mpirun", "orted"):
        (fake / name).write_text("#!/bin/sh\n")
        (fake / name).chmod(0o755)
    cli, err = task.local_tools(job, 0, {"PATH": str(fake)})
    assert err is None and cli == native.cli_path()
    # A binary the driver names must exist on the executor.
    cli, err = task.local_tools(types.SimpleNamespace(cli=str(tmp_path / "nope")), 1, {"PATH": str(fake)})
    assert cli is None and "the kindling binary" in err["message"] and "is not here" in err["message"]
