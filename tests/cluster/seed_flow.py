"""The seed's ("MXNet on Spark") flow as its users wrote it, submitted to a
Spark cluster by tests/cluster/standalone.sh:

    model = Kindling()...fit(points)            # an RDD of mllib LabeledPoints
    model.save(sc, path); KindlingModel.load(sc, path)
    brModel = sc.broadcast(model)
    test.mapPartitions(lambda it: brModel.value.predict(it))

on Fashion-MNIST (the first --train-rows / --test-rows images), checking
the accuracy and that the driver and every executor run the installed
kindling-spark wheel: kindling_spark, libkindling.so and the kindling binary
from --env-prefix, no KINDLING_CLI / KINDLING_LIB, nothing of --forbid (the
source and build trees) on sys.path. Prints one JSON line "seed-flow: {...}".
"""
import argparse
import gzip
import json
import os
import socket
import sys
import tempfile
import time

import numpy as np


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def load(data_dir, split, rows):
    x = read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))[:rows]
    y = read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"))[:rows]
    return (x.reshape(len(x), -1) / np.float32(255)).astype(np.float32), y.astype(np.int32)


def where_am_i(_=None):
    """What this Python process runs Kindling from."""
    import kindling_spark
    from kindling_spark import native

    return {"host": socket.gethostname(), "pid": os.getpid(), "python": sys.executable,
            "package": os.path.dirname(kindling_spark.__file__), "lib": native.library_path(),
            "cli": native.cli_path(), "sys_path": list(sys.path),
            "env": {k: v for k, v in os.environ.items() if k in ("KINDLING_CLI", "KINDLING_LIB")}}


def check_place(place, prefix, forbid):
    problems = []
    for key in ("package", "lib", "cli"):
        if not os.path.realpath(place[key]).startswith(os.path.realpath(prefix) + os.sep):
            problems.append(f"{key} {place[key]} is not in {prefix}")
    if place["env"]:
        problems.append(f"environment has {place['env']}")
    for p in place["sys_path"]:
        for f in forbid:
            rp, rf = os.path.realpath(p or "."), os.path.realpath(f)
            if rp == rf or rp.startswith(rf + os.sep):
                problems.append(f"sys.path has {p} (inside {f})")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--train-rows", type=int, default=10000)
    ap.add_argument("--test-rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--min-accuracy", type=float, default=0.8)
    ap.add_argument("--env-prefix", required=True, help="where the wheel is installed (the executors' venv)")
    ap.add_argument("--forbid", action="append", default=[], help="a tree nothing may be imported from")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    from pyspark import SparkConf, SparkContext
    from pyspark.mllib.regression import LabeledPoint

    from kindling_spark.estimator import Kindling
    from kindling_spark.model import KindlingModel

    sc = SparkContext(conf=SparkConf().setAppName("kindling-seed-flow"))
    sc.setLogLevel("WARN")
    try:
        out = {"master": sc.master}
        # Where the driver and the executors run Kindling from.
        places = [where_am_i()] + sc.parallelize(range(6), 6).map(where_am_i).collect()
        problems = [f"{p['host']}:{p['pid']}: {msg}" for p in places
                    for msg in check_place(p, args.env_prefix, args.forbid)]
        out["python_processes"] = len({(p["host"], p["pid"]) for p in places})
        out["executor_cli"] = sorted({p["cli"] for p in places[1:]})
        if problems:
            raise SystemExit("seed-flow: not running from the installed wheel:\n" + "\n".join(problems))

        x, y = load(args.data, "train", args.train_rows)
        tx, ty = load(args.data, "t10k", args.test_rows)
        points = sc.parallelize([LabeledPoint(float(a), b) for a, b in zip(y, x)], 2)
        t0 = time.time()
        model = (Kindling().setNetwork("mlp").setDimension((1, 28, 28)).setNumEpoch(args.epochs)
                 .setBatchSize(64).setNumWorker(2).setNumServer(1).setContext("cpu").setLabelName("label")
                 .setOptimizer("adam", lr=0.001).setMaxStaleness(2).fit(points))
        out["fit_seconds"] = round(time.time() - t0, 1)
        out["history"] = [{k: h[k] for k in ("epoch", "train_loss", "train_accuracy")} for h in model.history_records]

        path = args.model or os.path.join(tempfile.mkdtemp(prefix="kindling-seed-"), "model")
        model.save(sc, path)
        loaded = KindlingModel.load(sc, path)
        assert loaded.checkpoint == model.checkpoint, "the loaded model differs from the saved one"

        br = sc.broadcast(loaded)
        test = sc.parallelize([LabeledPoint(float(a), b) for a, b in zip(ty, tx)], 3)

        def predict(it):
            pts = list(it)
            return zip((p.label for p in pts), br.value.predict(iter(pts)))

        pairs = test.mapPartitions(predict).collect()
        labels = np.array([p[0] for p in pairs])
        probs = np.stack([p[1] for p in pairs])
        assert len(pairs) == len(ty), (len(pairs), len(ty))
        np.testing.assert_allclose(probs, model.predict(tx), atol=1e-5)  # executors = driver
        accuracy = float(np.mean(np.argmax(probs, axis=1) == labels))
        out["test_accuracy"] = round(accuracy, 4)
        print("seed-flow: " + json.dumps(out), flush=True)
        if accuracy < args.min_accuracy:
            raise SystemExit(f"seed-flow: test accuracy {accuracy:.4f} < {args.min_accuracy}")
    finally:
        sc.stop()


if __name__ == "__main__":
    main()
