"""Fashion-MNIST through Spark: load the IDX files into DataFrames, train
Kindling's MLP with 2 workers and 1 parameter server in one barrier stage,
save the model, load it back, predict the test set with the loaded model
and print the test accuracy.

    spark-submit --master 'local[4]' examples/fashion_mnist_spark.py
    python examples/fashion_mnist_spark.py --epochs 8 --model /tmp/fmnist-model

Needs the kindling_spark package (pip install ./spark-barrier, or
PYTHONPATH=spark-barrier), an MPI build of kindling and the data set
(Debian package dataset-fashion-mnist, or --data DIR).
"""
import argparse
import gzip
import importlib.util
import logging
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT_PACKAGE = os.path.abspath(os.path.join(HERE, "..", "spark-barrier"))
if importlib.util.find_spec("kindling_spark") is not None:  # installed: pip install ./spark-barrier
    CHECKOUT_PACKAGE = None
else:
    # Running from a checkout: the package next door, also for Spark's Python
    # workers (they inherit PYTHONPATH when this process starts the JVM).
    sys.path.insert(0, CHECKOUT_PACKAGE)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (CHECKOUT_PACKAGE, os.environ.get("PYTHONPATH")) if p)

DEFAULT_DATA = os.environ.get("KD_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def read_idx(path):
    """An IDX file (plain or gzip) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\0\0" or raw[2] != 8:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def load_fashion(data_dir, split):
    """Images (n, 784) float32 in [0, 1] and labels (n,) int32; split "train" or "t10k"."""
    x = read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"))
    return (x.reshape(len(x), -1) / np.float32(255)).astype(np.float32), y.astype(np.int32)


def to_dataframe(spark, x, y, partitions):
    """A DataFrame (label int, features array<float>) built through Arrow."""
    import pyarrow as pa

    features = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]).cast(pa.list_(pa.float32()))
    table = pa.table({"label": pa.array(y), "features": features})
    return spark.createDataFrame(table).repartition(partitions)


def ship_package(spark, package_parent):
    """Under spark-submit the JVM started before this script could set
    PYTHONPATH: ship the checkout's kindling_spark to the Python workers."""
    import shutil

    base = os.path.join(tempfile.mkdtemp(prefix="kindling-pyfiles-"), "kindling_spark")
    archive = shutil.make_archive(base, "zip", package_parent, "kindling_spark")
    spark.sparkContext.addPyFile(archive)


def main(argv=None, spark=None):
    """Returns the loaded model's test accuracy. A given SparkSession is
    used and left running; otherwise one is made (local[4] outside
    spark-submit) and stopped at the end."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="directory with the Fashion-MNIST IDX .gz files")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64, help="per worker")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--servers", type=int, default=1, help="parameter servers (async mode)")
    ap.add_argument("--mode", choices=("async", "sync"), default="async")
    ap.add_argument("--train-rows", type=int, default=None, help="train on the first N training images (default all)")
    ap.add_argument("--test-rows", type=int, default=None, help="test on the first N test images (default all)")
    ap.add_argument("--model", default=None, help="where to save the model (default: a temporary directory)")
    ap.add_argument("--master", default=None, help="Spark master when not run by spark-submit (default local[4])")
    ap.add_argument("--json", default=None, help="also write what happened (times, the ranks' lines, history, "
                                                  "accuracy) to this file, for bench/bench_spark.py")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from pyspark.sql import SparkSession

    from kindling_spark.estimator import KindlingClassifier
    from kindling_spark.model import KindlingModel

    own_session = spark is None
    if own_session:
        builder = SparkSession.builder.appName("kindling-fashion-mnist")
        if args.master or "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit: local mode
            builder = builder.master(args.master or "local[4]")
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        if CHECKOUT_PACKAGE and "PYSPARK_GATEWAY_PORT" in os.environ:
            ship_package(spark, CHECKOUT_PACKAGE)
    try:
        x_train, y_train = load_fashion(args.data, "train")
        x_test, y_test = load_fashion(args.data, "t10k")
        x_train, y_train = x_train[:args.train_rows], y_train[:args.train_rows]
        x_test, y_test = x_test[:args.test_rows], y_test[:args.test_rows]
        train = to_dataframe(spark, x_train, y_train, args.workers)
        test = to_dataframe(spark, x_test, y_test, 4)

        clf = KindlingClassifier(network="mlp", inputShape=[1, 28, 28], numEpochs=args.epochs,
                                 batchSize=args.batch_size, numWorkers=args.workers, numServers=args.servers,
                                 mode=args.mode, maxStaleness=2, optimizer="adam", learningRate=0.001,
                                 checkpointEvery=500)
        lines = []  # (time, line) of everything the ranks and the launcher said

        class Lines(logging.Handler):
            def emit(self, record):
                lines.append((record.created, record.getMessage()))

        catch = Lines()
        logging.getLogger("kindling_spark").addHandler(catch)
        t0 = time.time()
        try:
            model = clf.fit(train)
        finally:
            logging.getLogger("kindling_spark").removeHandler(catch)
        t1 = time.time()
        servers = f" + {args.servers} server(s)" if args.mode == "async" else " (sync)"
        print(f"trained in {time.time() - t0:.1f} s with {args.workers} workers{servers}; "
              f"last epoch: loss {model.history[-1]['train_loss']:.4f}, "
              f"accuracy {model.history[-1]['train_accuracy']:.4f}")

        path = args.model or os.path.join(tempfile.mkdtemp(prefix="kindling-fmnist-"), "model")
        model.write().overwrite().save(path)
        loaded = KindlingModel.load(path)
        from pyspark.sql import functions as F

        predictions = loaded.transform(test).select("label", "prediction")
        # One pass over the predictions: the hits and the count together.
        tally = predictions.agg(F.sum((F.col("label") == F.col("prediction")).cast("int")).alias("correct"),
                                F.count("*").alias("total")).first()
        correct, total = int(tally.correct), int(tally.total)
        print(f"saved to {path}; loaded model: test accuracy {correct / total:.4f} ({correct}/{total})")
        if args.json:
            import json

            with open(args.json, "w") as f:
                json.dump({"fit_start": t0, "fit_end": t1, "lines": lines, "history": model.history,
                           "test_accuracy": correct / total, "workers": args.workers, "servers": args.servers,
                           "mode": args.mode, "batch_size": args.batch_size, "epochs": args.epochs}, f)
        return correct / total
    finally:
        if own_session:
            spark.stop()


if __name__ == "__main__":
    main()
