"""Launching training from Spark: Kindling's barrier stage against PyTorch's
TorchDistributor, in one run, local mode, the same MLP (784-128-64-10),
data (Fashion-MNIST), epochs, optimizer (Adam, lr 0.001) and batch (64 per
worker, 2 workers, synchronous gradient averaging).

For each: the time from calling fit()/run() to the first training step,
and the total time of the call. Kindling's first step is when its first
epoch began: the arrival of the "epoch 1" line at the driver minus that
epoch's duration (from the history); TorchDistributor's is a timestamp
its rank 0 writes before the first step. The Spark session is warm (one
trivial job has started its Python workers). Kindling's time includes moving
the rows through Spark into the ranks' spool files; TorchDistributor in
local mode reads a file on the driver instead (it has no data path from
Spark partitions in local mode).

    python bench/bench_spark.py [--epochs 3] [--samples 60000] [--repeat 2]

Prints a table and the launch-latency ratio (target: Kindling <= 0.5x).
"""
import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "spark-barrier"))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(REPO, "spark-barrier"),
                                                        os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
for build in ("build-launch", "build"):
    if not os.environ.get("KINDLING_CLI") and os.path.isfile(os.path.join(REPO, build, "kindling")):
        os.environ["KINDLING_CLI"] = os.path.join(REPO, build, "kindling")
        os.environ.setdefault("KINDLING_LIB", os.path.join(REPO, build, "libkindling.so"))
if os.geteuid() == 0:
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")

os.environ.setdefault("OMP_NUM_THREADS", "1")  # also keeps torchrun from printing its banner
DATA = os.environ.get("KD_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
WORKERS, BATCH, LR = 2, 64, 0.001


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def load(split, n=None):
    x = read_idx(os.path.join(DATA, f"{split}-images-idx3-ubyte.gz"))[:n]
    y = read_idx(os.path.join(DATA, f"{split}-labels-idx1-ubyte.gz"))[:n]
    return (x.reshape(len(x), -1) / np.float32(255)).astype(np.float32), y.astype(np.int64)


# ------------------------------------------------------------------ Kindling
def run_kindling(spark, x, y, epochs):
    from kindling_spark.estimator import Kindling

    # parallelize serializes the rows now, so they are in Spark before the clock starts.
    rdd = spark.sparkContext.parallelize([(int(a), b) for a, b in zip(y, x)], WORKERS)
    arrivals = []
    k = (Kindling().setNetwork("mlp").setNumEpoch(epochs).setBatchSize(BATCH).setNumWorker(WORKERS)
         .setMode("sync").setOptimizer("adam", lr=LR).setSchedule("constant")
         .setProgressCallback(lambda line: arrivals.append((time.time(), line))))
    t0 = time.time()
    model = k.fit(rdd)
    total = time.time() - t0
    first_epoch_line = next(t for t, line in arrivals if line.startswith("epoch 1/"))
    first_step = first_epoch_line - model.history[0]["seconds"] - t0
    return {"first_step": first_step, "total": total, "model": model}


# ------------------------------------------------------------ TorchDistributor
def torch_train(data_path, epochs, stamp_path):
    """Runs in each torchrun process (gloo, DDP on CPU)."""
    import time

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    d = np.load(data_path)
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    torch.manual_seed(42)
    net = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 10))
    model = DDP(net)
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(x)
    per = n // world
    stamped = False
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(epoch)
        order = torch.randperm(n, generator=g)[rank * per:(rank + 1) * per]
        for i in range(0, per, 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            if not stamped and rank == 0:
                with open(stamp_path, "w") as f:
                    f.write(repr(time.time()))
                stamped = True
    acc = None
    if rank == 0:
        t = np.load(data_path)
        with torch.no_grad():
            acc = float((net(torch.from_numpy(t["xt"])).argmax(1) == torch.from_numpy(t["yt"])).float().mean())
    dist.destroy_process_group()
    return acc


def run_torch(x, y, xt, yt, epochs, workdir):
    from pyspark.ml.torch.distributor import TorchDistributor

    data_path = os.path.join(workdir, "data.npz")
    np.savez(data_path, x=x, y=y, xt=xt, yt=yt.astype(np.int64))
    stamp = os.path.join(workdir, "first-step")
    if os.path.exists(stamp):
        os.unlink(stamp)
    t0 = time.time()
    acc = TorchDistributor(num_processes=WORKERS, local_mode=True, use_gpu=False).run(torch_train, data_path,
                                                                                       epochs, stamp)
    total = time.time() - t0
    with open(stamp) as f:
        first = float(f.read()) - t0
    return {"first_step": first, "total": total, "accuracy": acc}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=60000)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each (the median is reported)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[4]").appName("kindling-bench-spark")
             .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.memory", "4g")
             .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    # A Spark application has its Python workers up by the time it trains.
    spark.sparkContext.parallelize(range(8), 8).map(lambda v: v).count()
    x, y = load("train", args.samples)
    xt, yt = load("t10k")
    runs = {"kindling": [], "torch": []}
    with tempfile.TemporaryDirectory(prefix="kindling-bench-") as workdir:
        for i in range(args.repeat):
            k = run_kindling(spark, x, y, args.epochs)
            k["accuracy"] = float(np.mean(k.pop("model").predict_classes(xt) == yt))
            runs["kindling"].append(k)
            runs["torch"].append(run_torch(x, y, xt, yt, args.epochs, workdir))
            print(f"run {i + 1}: kindling {runs['kindling'][-1]}, torch {runs['torch'][-1]}", file=sys.stderr)
    spark.stop()

    med = {name: {key: statistics.median(r[key] for r in rs) for key in ("first_step", "total", "accuracy")}
           for name, rs in runs.items()}
    print(f"Fashion-MNIST MLP 784-128-64-10, {args.samples} samples, {args.epochs} epochs, {WORKERS} workers x "
          f"batch {BATCH}, Adam {LR}, local[4], median of {args.repeat}")
    print(f"{'':18} {'fit -> first step':>18} {'total':>10} {'test acc':>9}")
    for name, label in (("kindling", "Kindling (Spark)"), ("torch", "TorchDistributor")):
        m = med[name]
        print(f"{label:18} {m['first_step']:>16.2f} s {m['total']:>8.2f} s {m['accuracy']:>9.4f}")
    ratio = med["kindling"]["first_step"] / med["torch"]["first_step"]
    print(f"launch latency ratio Kindling / TorchDistributor: {ratio:.2f} (target <= 0.5: "
          f"{'met' if ratio <= 0.5 else 'not met'})")
    print(f"total time ratio Kindling / TorchDistributor: {med['kindling']['total'] / med['torch']['total']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "median": med, "launch_ratio": ratio}, f, indent=1)


if __name__ == "__main__":
    main()
