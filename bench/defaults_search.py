#!/usr/bin/env python3
"""How `kindling train`'s defaults were chosen (issue 14): by validation,
never by the test set.

Phase "val": every candidate setting of a preset trains on Fashion-MNIST's
training set with 10% held out (--val-split 0.1, the run's seed), and is
judged by its final validation accuracy (the mean over --seeds seeds).
Phase "test": the chosen setting (the defaults, i.e. no flags but --net)
trains on the whole training set and is scored once on the t10k test set.

    python bench/defaults_search.py --cli build/kindling --net mlp --phase val
    python bench/defaults_search.py --cli build/kindling --net mlp --phase test --seeds 42 7 1234
    python bench/defaults_search.py --net mlp --phase spark     # KindlingClassifier() as it comes

Phase "spark": the Spark defaults (KindlingClassifier(network=NET) with
nothing else set: 2 workers and 1 parameter server, async, in local[4]) on
the whole training set as a DataFrame, scored on t10k by the model.

Prints one row per run and a summary table (markdown) with the machine's
1-minute load average when each run started (the runs are single-threaded;
the load only changes their duration, not their figures).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# Candidates per preset: (label, extra flags). The first is the setting
# that was the default before issue 14.
CANDIDATES = {
    "mlp": [
        ("adam 1e-3, cosine, 5 epochs, batch 64", ["--epochs", "5"]),
        ("adam 1e-3, cosine, 10 epochs, batch 64", ["--epochs", "10"]),
        ("adam 2e-3, cosine, 5 epochs, batch 64", ["--epochs", "5", "--lr", "0.002"]),
        ("adam 2e-3, cosine, 10 epochs, batch 64", ["--epochs", "10", "--lr", "0.002"]),
        ("adam 1e-3, cosine, 10 epochs, batch 128", ["--epochs", "10", "--batch-size", "128"]),
        ("adam 1e-3, cosine, 15 epochs, batch 64", ["--epochs", "15"]),
        ("adamw 1e-3 wd 0.05, cosine, 10 epochs, batch 64",
         ["--epochs", "10", "--optimizer", "adamw", "--weight-decay", "0.05"]),
        ("adamw 2e-3 wd 0.05, cosine, 10 epochs, batch 64",
         ["--epochs", "10", "--lr", "0.002", "--optimizer", "adamw", "--weight-decay", "0.05"]),
        ("adamw 2e-3 wd 0.05, cosine, 15 epochs, batch 64",
         ["--epochs", "15", "--lr", "0.002", "--optimizer", "adamw", "--weight-decay", "0.05"]),
        ("nesterov momentum 0.05 wd 5e-4, cosine, 10 epochs, batch 64",
         ["--epochs", "10", "--optimizer", "momentum", "--nesterov", "--lr", "0.05", "--weight-decay", "0.0005"]),
        ("nesterov momentum 0.05 wd 5e-4, cosine, 15 epochs, batch 64",
         ["--epochs", "15", "--optimizer", "momentum", "--nesterov", "--lr", "0.05", "--weight-decay", "0.0005"]),
    ],
    "lenet": [
        ("adam 1e-3, cosine, 5 epochs, batch 64", ["--epochs", "5"]),
        ("adam 1e-3, cosine, 10 epochs, batch 64", ["--epochs", "10"]),
        ("adam 2e-3, cosine, 5 epochs, batch 64", ["--epochs", "5", "--lr", "0.002"]),
        ("adam 2e-3, cosine, 10 epochs, batch 64", ["--epochs", "10", "--lr", "0.002"]),
        ("adamw 2e-3 wd 0.05, cosine, 10 epochs, batch 64",
         ["--epochs", "10", "--lr", "0.002", "--optimizer", "adamw", "--weight-decay", "0.05"]),
        ("adam 2e-3, cosine, 15 epochs, batch 64", ["--epochs", "15", "--lr", "0.002"]),
        ("adam 1e-3, cosine, 15 epochs, batch 64", ["--epochs", "15"]),
        ("adamw 2e-3 wd 0.05, cosine, 15 epochs, batch 64",
         ["--epochs", "15", "--lr", "0.002", "--optimizer", "adamw", "--weight-decay", "0.05"]),
        ("nesterov momentum 0.05 wd 5e-4, cosine, 10 epochs, batch 64",
         ["--epochs", "10", "--optimizer", "momentum", "--nesterov", "--lr", "0.05", "--weight-decay", "0.0005"]),
        ("adamw 2e-3 wd 0.3, cosine, 10 epochs, batch 64",
         ["--epochs", "10", "--lr", "0.002", "--optimizer", "adamw", "--weight-decay", "0.3"]),
        ("nesterov momentum 0.05 wd 5e-4, cosine, 15 epochs, batch 64",
         ["--epochs", "15", "--optimizer", "momentum", "--nesterov", "--lr", "0.05", "--weight-decay", "0.0005"]),
        ("nesterov momentum 0.05 wd 5e-4, cosine, 10 epochs, batch 32",
         ["--epochs", "10", "--batch-size", "32", "--optimizer", "momentum", "--nesterov", "--lr", "0.05",
          "--weight-decay", "0.0005"]),
    ],
}


def load_average():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def train(cli, net, flags, seed, val, workdir):
    ckpt = os.path.join(workdir, "run.h5")
    cmd = [cli, "train", "--net", net, "--seed", str(seed), "--checkpoint", ckpt, "-q", *flags]
    if val:
        cmd += ["--val-split", "0.1"]
    load = load_average()
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    seconds = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    info = json.loads(subprocess.run([cli, "inspect", ckpt, "--json"], capture_output=True, text=True,
                                     check=True).stdout)
    last = info["history"][-1]
    return {"val": last["val_accuracy"], "test": last["test_accuracy"], "epochs": len(info["history"]),
            "seconds": seconds, "load": load}


def train_spark(net, seed, extra=None):
    """KindlingClassifier with its defaults (only the network and seed set);
    returns the test accuracy and the fit's seconds."""
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("fashion_mnist_spark",
                                                  os.path.join(here, "..", "examples", "fashion_mnist_spark.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # puts the checkout's kindling_spark on the path
    from pyspark.sql import SparkSession

    from kindling_spark.estimator import KindlingClassifier

    spark = example.quiet_session(SparkSession.builder.master("local[4]").appName("kindling-defaults")).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        x, y = example.load_fashion(example.DEFAULT_DATA, "train")
        xt, yt = example.load_fashion(example.DEFAULT_DATA, "t10k")
        clf = KindlingClassifier(network=net, seed=seed, **(extra or {}))
        df = example.to_dataframe(spark, x, y)
        load = load_average()
        t0 = time.monotonic()
        model = clf.fit(df)
        seconds = time.monotonic() - t0
        test = float((model.predict_classes(xt.reshape(len(xt), *model.input_shape)) == yt).mean())
        return {"val": None, "test": test, "epochs": len(model.history_records), "seconds": seconds, "load": load}
    finally:
        spark.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", default="build/kindling")
    ap.add_argument("--net", choices=sorted(CANDIDATES), default="mlp")
    ap.add_argument("--phase", choices=["val", "test", "spark"], default="val")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--only", type=int, nargs="*", help="candidate indices to run (val phase)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="spark phase: a KindlingClassifier param to set (e.g. mode=sync), to try a candidate")
    args = ap.parse_args()
    extra = {}
    for kv in args.param:
        name, _, value = kv.partition("=")
        for kind in (int, float, str):
            try:
                extra[name] = kind(value)
                break
            except ValueError:
                pass
    runs = []
    with tempfile.TemporaryDirectory() as work:
        if args.phase == "val":
            todo = [c for i, c in enumerate(CANDIDATES[args.net]) if args.only is None or i in args.only]
        else:
            todo = [("the defaults" if args.phase == "test" else
                     "the Spark defaults" + "".join(f", {k}={v}" for k, v in extra.items()), [])]
        for label, flags in todo:
            for seed in args.seeds:
                if args.phase == "spark":
                    r = train_spark(args.net, seed, extra)
                else:
                    r = train(args.cli, args.net, flags, seed, args.phase == "val", work)
                r.update(label=label, seed=seed)
                runs.append(r)
                figure = r["val"] if args.phase == "val" else r["test"]
                print(f"{args.net}  {label:48s} seed {seed:5d}  {args.phase} accuracy {figure:.4f}  "
                      f"({r['epochs']} epochs, {r['seconds']:.0f} s, load {r['load']:.1f})", flush=True)
    print()
    key = "val" if args.phase == "val" else "test"
    print(f"| net | setting | seeds | {key} accuracy (mean) | min | max | seconds (mean) | load (1-min avg) |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for label in dict.fromkeys(r["label"] for r in runs):
        rs = [r for r in runs if r["label"] == label]
        figs = [r[key] for r in rs]
        print(f"| {args.net} | {label} | {len(rs)} | {sum(figs) / len(figs):.4f} | {min(figs):.4f} | "
              f"{max(figs):.4f} | {sum(r['seconds'] for r in rs) / len(rs):.0f} | "
              f"{', '.join('%.1f' % r['load'] for r in rs)} |")


if __name__ == "__main__":
    main()
