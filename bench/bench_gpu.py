#!/usr/bin/env python3
"""GPU training throughput: Kindling's CUDA backend against PyTorch CUDA eager.

    /opt/kindling-venv/bin/python bench/bench_gpu.py [--lib build-gpu/libkindling.so] [--seconds 4]
                               [--batches 64 256] [--device 0]

For the mlp and lenet presets at each batch size, SGD with momentum 0.9 on
real Fashion-MNIST batches (random data when the set is missing), made
before timing and cycled: steady-state samples/s after a warm-up, the median
of three timed chunks, each chunk ending with a device synchronisation.
  - Kindling: kd_net_forward(training) + kd_net_loss + kd_net_backward +
    kd_net_optim_step through ctypes on a network moved to the GPU with
    kd_net_set_context (the work kd_train does per step; the batch goes
    host -> pinned -> device inside kd_net_forward, as in training).
  - PyTorch: the same network (nn.Sequential, same layer sizes) with
    zero_grad, forward, F.cross_entropy, backward, SGD.step; the batch is
    copied host -> device every step too (pinned, non_blocking).
Prints a table with the Kindling / PyTorch ratio.

Needs a CUDA device, libkindling built with gpu/ and torch with CUDA.
Without a device it prints "no CUDA device: <reason>" and exits 77.
"""
import argparse
import ctypes
import gzip
import os
import pathlib
import statistics
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
FASHION = pathlib.Path(os.environ.get("KD_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
NETS = ("mlp", "lenet")
KD_DEVICE_GPU = 1
KD_OPT_MOMENTUM = 1


class Context(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("device_id", ctypes.c_int)]


class OptimConfig(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("lr", ctypes.c_double), ("momentum", ctypes.c_double),
                ("nesterov", ctypes.c_int), ("beta1", ctypes.c_double), ("beta2", ctypes.c_double),
                ("eps", ctypes.c_double), ("weight_decay", ctypes.c_double), ("schedule", ctypes.c_int),
                ("step_size", ctypes.c_int64), ("gamma", ctypes.c_double), ("total_steps", ctypes.c_int64),
                ("lr_min", ctypes.c_double)]


def load_lib(path):
    candidates = [path] if path else []
    if os.environ.get("KD_LIB"):
        candidates.append(os.environ["KD_LIB"])
    candidates += [ROOT / "build-gpu" / "libkindling.so", ROOT / "build" / "libkindling.so"]
    for c in candidates:
        if c and pathlib.Path(c).exists():
            lib = ctypes.CDLL(str(c))
            break
    else:
        sys.exit("bench_gpu: libkindling.so not found (use --lib or KD_LIB)")
    P, S = ctypes.c_void_p, ctypes.c_int
    sig = {
        "kd_last_error": (ctypes.c_char_p, []),
        "kd_gpu_built": (ctypes.c_int, []),
        "kd_gpu_device_count": (S, [ctypes.POINTER(ctypes.c_int)]),
        "kd_net_create": (S, [ctypes.c_char_p, ctypes.c_uint64, ctypes.POINTER(P)]),
        "kd_net_free": (None, [P]),
        "kd_net_set_context": (S, [P, Context]),
        "kd_net_param_count": (ctypes.c_size_t, [P]),
        "kd_net_forward": (S, [P, P, ctypes.c_int, ctypes.c_int]),
        "kd_net_loss": (S, [P, P, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_int)]),
        "kd_net_backward": (S, [P, P]),
        "kd_net_optim_step": (S, [P, P]),
        "kd_net_sync": (S, [P, P]),
        "kd_optim_config_default": (OptimConfig, []),
        "kd_optim_create": (S, [ctypes.POINTER(OptimConfig), ctypes.c_size_t, ctypes.POINTER(P)]),
        "kd_optim_free": (None, [P]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


def check(lib, status, what):
    if status != 0:
        raise RuntimeError(f"{what}: {lib.kd_last_error().decode()}")


def read_data(n=60000):
    try:
        with gzip.open(FASHION / "train-images-idx3-ubyte.gz", "rb") as f:
            x = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
        with gzip.open(FASHION / "train-labels-idx1-ubyte.gz", "rb") as f:
            y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
        return (x.reshape(-1, 784).astype(np.float32) / 255.0), y.astype(np.int32)
    except OSError:
        print("bench_gpu: Fashion-MNIST not found, using random data", file=sys.stderr)
        rng = np.random.default_rng(0)
        return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)


def timed_rate(step, sync, batch, seconds, warmup=1.0, chunks=3):
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < warmup or n < 5:
        step()
        n += 1
    sync()
    rates = []
    for _ in range(chunks):
        t0, n = time.perf_counter(), 0
        while True:
            step()
            n += 1
            if time.perf_counter() - t0 >= seconds / chunks:
                break
        sync()
        rates.append(n * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_kindling(lib, net_name, batch, x, y, seconds, device):
    net, opt = ctypes.c_void_p(), ctypes.c_void_p()
    check(lib, lib.kd_net_create(net_name.encode(), 1, ctypes.byref(net)), "kd_net_create")
    check(lib, lib.kd_net_set_context(net, Context(KD_DEVICE_GPU, device)), "kd_net_set_context")
    cfg = lib.kd_optim_config_default()
    cfg.kind, cfg.lr, cfg.momentum = KD_OPT_MOMENTUM, 0.01, 0.9
    check(lib, lib.kd_optim_create(ctypes.byref(cfg), lib.kd_net_param_count(net), ctypes.byref(opt)), "kd_optim_create")
    count, k = len(x) // batch, [0]
    loss, hits = ctypes.c_double(), ctypes.c_int()

    def step():
        lo = k[0] * batch
        k[0] = (k[0] + 1) % count
        xb, yb = x[lo:lo + batch], y[lo:lo + batch]
        check(lib, lib.kd_net_forward(net, xb.ctypes.data, batch, 1), "forward")
        check(lib, lib.kd_net_loss(net, yb.ctypes.data, ctypes.byref(loss), ctypes.byref(hits)), "loss")
        check(lib, lib.kd_net_backward(net, yb.ctypes.data), "backward")
        check(lib, lib.kd_net_optim_step(net, opt), "optimizer step")

    def sync():
        check(lib, lib.kd_net_sync(net, opt), "sync")

    try:
        return timed_rate(step, sync, batch, seconds)
    finally:
        lib.kd_optim_free(opt)
        lib.kd_net_free(net)


def torch_model(torch, name):
    nn = torch.nn
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                             nn.Linear(64, 10))
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.Tanh(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(500, 10))


def bench_torch(torch, net_name, batch, x, y, seconds, device):
    dev = torch.device(f"cuda:{device}")
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 like Kindling
    torch.backends.cudnn.allow_tf32 = False
    model = torch_model(torch, net_name).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xt = torch.from_numpy(x.reshape(-1, 1, 28, 28)).pin_memory()
    yt = torch.from_numpy(y.astype(np.int64)).pin_memory()
    count, k = len(x) // batch, [0]

    def step():
        lo = k[0] * batch
        k[0] = (k[0] + 1) % count
        xb = xt[lo:lo + batch].to(dev, non_blocking=True)
        yb = yt[lo:lo + batch].to(dev, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.item()  # Kindling reads its loss on the host every step too
        loss.backward()
        opt.step()

    return timed_rate(step, torch.cuda.synchronize, batch, seconds)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", help="libkindling.so built with gpu/ (default: $KD_LIB, build-gpu/, build/)")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--device", type=int, default=0)
    args = ap.parse_args()

    lib = load_lib(args.lib)
    if not lib.kd_gpu_built():
        print("bench_gpu: no CUDA device: this libkindling was built without CUDA", file=sys.stderr)
        sys.exit(77)
    n = ctypes.c_int()
    if lib.kd_gpu_device_count(ctypes.byref(n)) != 0:
        print(f"bench_gpu: {lib.kd_last_error().decode()}", file=sys.stderr)
        sys.exit(77)
    try:
        import torch
        have_torch = torch.cuda.is_available()
    except ImportError:
        torch, have_torch = None, False
    if not have_torch:
        print("bench_gpu: note: PyTorch with CUDA is not available; measuring Kindling only", file=sys.stderr)

    x, y = read_data()
    print(f"{'net':6} {'batch':>5} {'kindling/s':>12} {'pytorch/s':>12} {'ratio':>7}")
    for net_name in NETS:
        for batch in args.batches:
            kd = bench_kindling(lib, net_name, batch, x, y, args.seconds, args.device)
            pt = bench_torch(torch, net_name, batch, x, y, args.seconds, args.device) if have_torch else float("nan")
            ratio = kd / pt if have_torch else float("nan")
            print(f"{net_name:6} {batch:5d} {kd:12.0f} {pt:12.0f} {ratio:7.2f}", flush=True)


if __name__ == "__main__":
    main()
