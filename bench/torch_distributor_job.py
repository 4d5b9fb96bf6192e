"""The README's main job done by PyTorch through Spark's TorchDistributor,
for bench/bench_spark.py: the same data (Fashion-MNIST from the IDX files),
network (784-128-64-10, ReLU, He initialisation), optimizer (Adam, lr 0.001,
cosine schedule over every step down to 0), epochs (8), batch (64 per
worker), 2 worker processes averaging gradients every step (DDP, gloo),
then the test accuracy.

    spark-submit --master 'local[4]' bench/torch_distributor_job.py --json out.json

TorchDistributor in local mode starts torchrun on the driver and has no path
from DataFrame partitions to its processes, so the driver reads the IDX files
and hands them to the processes as one .npz file (the Kindling job reads the
same files into a DataFrame, which its ranks get through Spark). Rank 0
stamps the time of its first step and of its last.
"""
import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))


def train(data_path, epochs, batch, lr):
    """Runs in each torchrun process; returns rank 0's record."""
    import time

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    d = np.load(data_path)
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"].astype(np.int64))
    torch.manual_seed(42)
    layers = [torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(),
              torch.nn.Linear(64, 10)]
    for m in layers[:3:2]:
        torch.nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
    net = torch.nn.Sequential(*layers)
    model = DDP(net)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(x)
    per = n // world
    steps_per_epoch = (per + batch - 1) // batch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch, eta_min=0.0)
    loss_fn = torch.nn.CrossEntropyLoss()
    first = None
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))[rank * per:(rank + 1) * per]
        for i in range(0, per, batch):
            idx = order[i:i + batch]
            if first is None:
                first = time.time()
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    last = time.time()
    record = None
    if rank == 0:
        with torch.no_grad():
            pred = net(torch.from_numpy(d["xt"])).argmax(1)
        acc = float((pred == torch.from_numpy(d["yt"].astype(np.int64))).float().mean())
        record = {"first_step": first, "train_end": last, "samples": epochs * per * world, "test_accuracy": acc}
    dist.destroy_process_group()
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("KD_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # also keeps torchrun from printing its banner

    import numpy as np
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    from fashion_mnist_spark import load_fashion

    spark = SparkSession.builder.appName("torch-distributor-fashion-mnist").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        x, y = load_fashion(args.data, "train")
        xt, yt = load_fashion(args.data, "t10k")
        work = tempfile.mkdtemp(prefix="kd-bench-torch-")
        data_path = os.path.join(work, "data.npz")
        np.savez(data_path, x=x, y=y, xt=xt, yt=yt)
        t0 = time.time()
        record = TorchDistributor(num_processes=args.workers, local_mode=True, use_gpu=False).run(
            train, data_path, args.epochs, args.batch_size, args.lr)
        t1 = time.time()
        os.unlink(data_path)
        os.rmdir(work)
        record.update(run_start=t0, run_end=t1)
        print(f"TorchDistributor: trained in {t1 - t0:.1f} s; test accuracy {record['test_accuracy']:.4f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(record, f)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
