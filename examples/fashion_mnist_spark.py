"""Fashion-MNIST through Spark: load the IDX files into DataFrames, train
Kindling's MLP with 2 workers and 1 parameter server in one barrier stage,
save the model and its training curves (a PNG beside it), load the model
back, predict the test set with the loaded model and print the test
accuracy. Spark logs warnings only (examples/log4j2-quiet.properties), so
the console shows Kindling's lines: each epoch with its figures and ETA,
and the summary.

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
QUIET_LOG4J = os.path.join(HERE, "log4j2-quiet.properties")


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


def to_dataframe(spark, x, y):
    """A DataFrame (label int, features array<float>) built through Arrow.
    Not repartitioned: the fit deals the rows to its ranks in one shuffle
    anyway, and a repartition here would be a second shuffle of the data."""
    import pyarrow as pa

    features = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]).cast(pa.list_(pa.float32()))
    table = pa.table({"label": pa.array(y), "features": features})
    return spark.createDataFrame(table)


def ship_package(spark, package_parent):
    """Under spark-submit the JVM started before this script could set
    PYTHONPATH: ship the checkout's kindling_spark to the Python workers."""
    import shutil

    base = os.path.join(tempfile.mkdtemp(prefix="kindling-pyfiles-"), "kindling_spark")
    archive = shutil.make_archive(base, "zip", package_parent, "kindling_spark")
    spark.sparkContext.addPyFile(archive)


def quiet_session(builder):
    """Spark's driver logs warnings only, from its first line: the log4j
    configuration goes to the JVM this process starts (a log level set once
    the session runs would come after the start-up's INFO lines), and no
    console progress bar. Settings the user gave (spark-defaults.conf,
    PYSPARK_SUBMIT_ARGS) win."""
    from pyspark import SparkConf

    given = dict(SparkConf().getAll())
    if "spark.driver.extraJavaOptions" not in given:
        builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{QUIET_LOG4J}")
    if "spark.ui.showConsoleProgress" not in given:
        builder = builder.config("spark.ui.showConsoleProgress", "false")
    return builder


def plot_curves(model, path):
    """The training curves beside the saved model: a PNG with matplotlib, or
    the SVG `kindling plot` draws from the checkpoint without it. Returns
    the picture's path."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        import subprocess

        from kindling_spark import native

        ckpt = os.path.join(tempfile.mkdtemp(prefix="kindling-plot-"), "model.h5")
        model.save_checkpoint(ckpt)
        out = f"{path}-curves.svg"
        subprocess.run([native.cli_path(), "plot", ckpt, "-o", out], check=True)
        return out
    out = f"{path}-curves.png"
    model.plot_history(out, title="Kindling MLP on Fashion-MNIST through Spark")
    return out


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
    ap.add_argument("--validation", type=float, default=0.1, metavar="F",
                    help="fraction of the training rows held out for validation (0: none)")
    ap.add_argument("--max-samples", type=int, default=None, metavar="N",
                    help="train on N training rows drawn at random (a quick try)")
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
            builder = quiet_session(builder.master(args.master or "local[4]"))
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        if CHECKOUT_PACKAGE and "PYSPARK_GATEWAY_PORT" in os.environ:
            ship_package(spark, CHECKOUT_PACKAGE)
    try:
        x_train, y_train = load_fashion(args.data, "train")
        if args.max_samples:
            pick = np.random.default_rng(42).permutation(len(y_train))[:args.max_samples]
            x_train, y_train = x_train[pick], y_train[pick]
        x_test, y_test = load_fashion(args.data, "t10k")
        x_train, y_train = x_train[:args.train_rows], y_train[:args.train_rows]
        x_test, y_test = x_test[:args.test_rows], y_test[:args.test_rows]
        train = to_dataframe(spark, x_train, y_train)
        test = to_dataframe(spark, x_test, y_test)

        clf = KindlingClassifier(network="mlp", inputShape=[1, 28, 28], numEpochs=args.epochs,
                                 batchSize=args.batch_size, numWorkers=args.workers, numServers=args.servers,
                                 mode=args.mode, checkpointEvery=500, validationFraction=args.validation)
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
        last = model.history_records[-1]
        val = (f", validation loss {last['val_loss']:.4f}, accuracy {last['val_accuracy']:.4f}"
               if last["val_loss"] is not None else "")
        print(f"trained in {time.time() - t0:.1f} s with {args.workers} workers{servers}; "
              f"last epoch: loss {last['train_loss']:.4f}, accuracy {last['train_accuracy']:.4f}{val}")

        path = args.model or os.path.join(tempfile.mkdtemp(prefix="kindling-fmnist-"), "model")
        model.write().overwrite().save(path)
        print(f"training curves: {plot_curves(model, path.rstrip('/'))}")
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
                json.dump({"fit_start": t0, "fit_end": t1, "lines": lines, "history": model.history_records,
                           "test_accuracy": correct / total, "workers": args.workers, "servers": args.servers,
                           "mode": args.mode, "batch_size": args.batch_size, "epochs": args.epochs}, f)
        return correct / total
    finally:
        if own_session:
            spark.stop()


if __name__ == "__main__":
    main()
