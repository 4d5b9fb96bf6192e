#!/usr/bin/env python3
"""CPU training throughput: Kindling against PyTorch eager, and the dense
layer's GEMM rate against plain OpenBLAS.

    /opt/kindling-venv/bin/python bench/bench_cpu.py [--lib build/libkindling.so] [--seconds 4]

Training (mlp and lenet presets, batch 64 and 256, 1 and 2 threads, SGD with
momentum 0.9, real Fashion-MNIST batches made before timing): steady-state
samples/s after a warm-up, the median of three timed chunks.
  - Kindling "loop": kd_net_forward(training) + kd_net_loss +
    kd_net_backward + kd_optim_step through ctypes, the work kd_train does
    per step; threads via kd_set_threads.
  - Kindling "kd_train": kd_train itself over an in-memory kd_dataset
    (shuffled; includes its batch copies, validation and bookkeeping).
  - PyTorch: zero_grad, forward, F.cross_entropy, backward, SGD.step with
    torch.set_num_threads.
Every framework/thread-count combination runs in its own process so thread
pools (OpenBLAS, OpenMP) do not interfere.

OpenBLAS picks its kernels by CPU model at load time. A release older than
the CPU falls back to generic "Prescott" (SSE3) kernels; then Kindling is
measured twice, as installed and with OPENBLAS_CORETYPE set to the best
core the CPU's flags allow (SkylakeX for AVX-512, Haswell for AVX2).

GEMM: bench/gemm_peak.c (compiled here with cc against the library) times
the dense layer's forward + backward and the same three sgemm calls, plus a
2048^3 sgemm, in one process.

Unset OPENBLAS_NUM_THREADS (or the thread setting cannot take effect).
"""
import argparse
import datetime
import gzip
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")
NETS = ("mlp", "lenet")
BATCHES = (64, 256)
TARGETS = {"mlp": 1.5, "lenet": 1.2}
GEMM_SHAPES = ((256, 784, 1024), (256, 1024, 1024), (1024, 1024, 1024))


def read_fashion():
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz", "rb") as f:
        x = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz", "rb") as f:
        y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    return (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int32)


def timed_rate(step, batch, seconds, warmup=0.5, chunks=3):
    """Samples/s of step() after `warmup` seconds: median of `chunks` chunks."""
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < warmup or n < 3:
        step()
        n += 1
    rates = []
    for _ in range(chunks):
        t0, n = time.perf_counter(), 0
        while True:
            step()
            n += 1
            t = time.perf_counter() - t0
            if t >= seconds / chunks:
                break
        rates.append(n * batch / t)
    return statistics.median(rates)


class Batches:
    """Cycle through the data set's consecutive batches (views, no copies)."""

    def __init__(self, x, y, batch):
        self.x, self.y, self.batch = x, y, batch
        self.count, self.k = len(x) // batch, 0

    def next(self):
        lo = self.k * self.batch
        self.k = (self.k + 1) % self.count
        return self.x[lo:lo + self.batch], self.y[lo:lo + self.batch]


# ------------------------------------------------------------------ workers
def worker_kindling(threads, seconds):
    import kdlib

    kdlib.set_threads(threads)
    x, y = read_fashion()
    full = kdlib.KdDataset(x, y, (1, 28, 28))
    rows = []
    for net_name in NETS:
        for batch in BATCHES:
            net = kdlib.Net(net_name, 1)
            cfg = kdlib.optim_config(kdlib.KD_OPT_MOMENTUM, lr=0.01, momentum=0.9)
            opt = kdlib.Optim(cfg, net.count)
            data = Batches(x, y, batch)

            def step():
                xb, yb = data.next()
                net.forward(xb, training=1)
                net.loss(yb)
                net.backward(yb)
                opt.step_net(net)

            loop = timed_rate(step, batch, seconds)

            # kd_train over enough samples for about `seconds`: a prefix of
            # the training set, or several epochs of all of it.
            want = int(loop * seconds)
            epochs = max(1, round(want / len(x)))
            n = min(len(x), max(batch * 4, want))
            ds = full if n == len(x) else kdlib.KdDataset(x[:n], y[:n], (1, 28, 28))
            kdlib.train(net, opt, ds, epochs=1, batch_size=batch, shuffle=1, seed=5)  # warm-up
            t0 = time.perf_counter()
            kdlib.train(net, opt, ds, epochs=epochs, batch_size=batch, shuffle=1, seed=6)
            trained = epochs * n / (time.perf_counter() - t0)
            rows.append({"net": net_name, "batch": batch, "threads": threads, "loop": loop, "kd_train": trained})
            print(f"  kindling {net_name} b{batch} t{threads}: loop {loop:.0f}/s, kd_train {trained:.0f}/s",
                  file=sys.stderr)
    return rows


def worker_torch(threads, seconds):
    import torch

    nn, F = torch.nn, torch.nn.functional
    torch.set_num_threads(threads)
    x, y = read_fashion()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    models = {
        "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                     nn.Linear(64, 10)),
        "lenet": lambda: nn.Sequential(nn.Conv2d(1, 20, 5), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5),
                                       nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.Tanh(),
                                       nn.Linear(500, 10)),
    }
    rows = []
    for net_name in NETS:
        for batch in BATCHES:
            model = models[net_name]()
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            data = Batches(xt, yt, batch)

            def step():
                xb, yb = data.next()
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()

            rate = timed_rate(step, batch, seconds)
            rows.append({"net": net_name, "batch": batch, "threads": threads, "torch": rate})
            print(f"  torch {net_name} b{batch} t{threads}: {rate:.0f}/s", file=sys.stderr)
    return rows


# ------------------------------------------------------------------ driver
def run_worker(kind, threads, seconds, env_extra=None):
    env = dict(os.environ)
    env.pop("OPENBLAS_NUM_THREADS", None)
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, __file__, "--worker", kind, "--threads", str(threads),
                          "--seconds", str(seconds)], env=env, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout)


def openblas_info(env_extra=None):
    """(version config string, core name) as the library would see them."""
    code = ("import ctypes; L = ctypes.CDLL('libopenblas.so.0');"
            "L.openblas_get_config.restype = L.openblas_get_corename.restype = ctypes.c_char_p;"
            "print(L.openblas_get_config().decode()); print(L.openblas_get_corename().decode())")
    env = dict(os.environ)
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, check=True)
    config, core = out.stdout.strip().split("\n")
    return config, core


def best_coretype():
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def load_average():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def wait_idle(limit_s, threshold=0.5):
    """Wait (up to limit_s) for the 1-minute load average to drop below
    threshold: other processes on the cores make the numbers meaningless."""
    t0 = time.time()
    while load_average() >= threshold and time.time() - t0 < limit_s:
        time.sleep(5)
    return load_average()


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        return (f"{info.get('Model name', '?')} (family {info.get('CPU family', '?')} model {info.get('Model', '?')}), "
                f"{info.get('CPU(s)', '?')} CPUs, {info.get('Thread(s) per core', '?')} thread(s)/core, "
                f"{info.get('Hypervisor vendor', 'bare metal')} {'guest' if 'Hypervisor vendor' in info else ''}".strip())
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()


def build_gemm_helper(lib_path, out_dir):
    inc = [ROOT / "include", ROOT / "src", ROOT / "src" / "layers"]
    for cand in ("/usr/include/x86_64-linux-gnu/openblas-pthread", "/usr/include/aarch64-linux-gnu/openblas-pthread",
                 "/usr/include/openblas"):
        if pathlib.Path(cand, "cblas.h").exists():
            inc.append(pathlib.Path(cand))
            break
    exe = pathlib.Path(out_dir) / "gemm_peak"
    cmd = [os.environ.get("CC", "cc"), "-O2", "-o", str(exe), str(ROOT / "bench" / "gemm_peak.c")]
    cmd += [f"-I{p}" for p in inc]
    cmd += [f"-L{lib_path.parent}", "-lkindling", "-lopenblas", "-lcjson", f"-Wl,-rpath,{lib_path.parent}"]
    subprocess.run(cmd, check=True)
    return exe


def run_gemm(exe, threads, seconds, env_extra=None):
    env = dict(os.environ)
    env.pop("OPENBLAS_NUM_THREADS", None)
    env.update(env_extra or {})
    args = [str(exe), str(threads), str(seconds)] + [str(v) for s in GEMM_SHAPES for v in s]
    out = subprocess.run(args, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", help="libkindling.so (default: $KD_LIB, else build/libkindling.so)")
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--wait-idle", type=float, default=0, metavar="S",
                    help="first wait up to S seconds for the load average to drop below 0.5")
    ap.add_argument("--worker", choices=["kindling", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.lib:
        os.environ["KD_LIB"] = str(pathlib.Path(args.lib).resolve())

    if args.worker:
        fn = worker_kindling if args.worker == "kindling" else worker_torch
        print(json.dumps(fn(args.threads[0], args.seconds)))
        return 0

    import kdlib

    lib_path = next((p for p in kdlib.library_candidates() if p.exists()), None)
    if lib_path is None:
        sys.exit("libkindling.so not found: build it, or pass --lib / set KD_LIB")
    os.environ["KD_LIB"] = str(lib_path)
    if os.environ.get("OPENBLAS_NUM_THREADS"):
        print("note: OPENBLAS_NUM_THREADS is set; it is removed for the measurements", file=sys.stderr)

    load0 = wait_idle(args.wait_idle) if args.wait_idle else load_average()
    if load0 >= 0.5:
        print(f"warning: load average {load0:.2f} at start: other processes share the cores, "
              "the numbers will be low and noisy", file=sys.stderr)
    blas_config, core = openblas_info()
    variants = [("as installed", {})]
    tuned = best_coretype()
    if core == "Prescott" and tuned:
        variants.append((f"OPENBLAS_CORETYPE={tuned}", {"OPENBLAS_CORETYPE": tuned}))
    import torch  # only for its version here; the measurements run in workers

    print("## Machine\n")
    print(f"- date: {datetime.date.today().isoformat()}")
    print(f"- CPU: {cpu_model()}")
    print(f"- OS: {platform.platform()}; Python {platform.python_version()}")
    print(f"- Kindling {kdlib.load().kd_version().decode()} ({lib_path})")
    print(f"- OpenBLAS: {blas_config}; kernels chosen at load: {core}")
    print(f"- PyTorch {torch.__version__} (CPU eager, {torch.backends.mkldnn.is_available() and 'oneDNN + ' or ''}MKL)")
    print(f"- 1-minute load average at start: {load0:.2f}")
    print(f"- {args.seconds:g} s timed per measurement (median of 3 chunks, after 0.5 s warm-up)\n")

    results = {}
    for t in args.threads:
        print(f"[threads {t}] PyTorch", file=sys.stderr)
        for r in run_worker("torch", t, args.seconds):
            results.setdefault((r["net"], r["batch"], t), {})["torch"] = r["torch"]
        for label, env in variants:
            print(f"[threads {t}] Kindling, OpenBLAS {label}", file=sys.stderr)
            for r in run_worker("kindling", t, args.seconds, env):
                d = results.setdefault((r["net"], r["batch"], t), {})
                d[("loop", label)] = r["loop"]
                d[("kd_train", label)] = r["kd_train"]

    print("## Training throughput (samples/s)\n")
    head = "| net | batch | threads | PyTorch |"
    rule = "|---|---:|---:|---:|"
    for label, _ in variants:
        head += f" Kindling loop ({label}) | ratio | kd_train ({label}) | ratio |"
        rule += "---:|---:|---:|---:|"
    print(head + " target (loop ratio; per OpenBLAS variant) |")
    print(rule + "---:|")
    misses = []
    for (net, batch, t), d in sorted(results.items(), key=lambda kv: (NETS.index(kv[0][0]), kv[0][2], kv[0][1])):
        line = f"| {net} | {batch} | {t} | {d['torch']:.0f} |"
        for label, _ in variants:
            loop, trained = d[("loop", label)], d[("kd_train", label)]
            line += f" {loop:.0f} | {loop / d['torch']:.2f}x | {trained:.0f} | {trained / d['torch']:.2f}x |"
        verdicts = []
        for label, _ in variants:
            ratio = d[("loop", label)] / d["torch"]
            ok = ratio >= TARGETS[net]
            verdicts.append("ok" if ok else "MISS")
            if not ok:
                misses.append(f"{net} b{batch} t{t} ({label}): {ratio:.2f}x < {TARGETS[net]}x")
        print(line + f" >= {TARGETS[net]}x: {' / '.join(verdicts)} |")

    print("\n## Dense layer GEMM rate (GFLOP/s, forward + backward = 3 GEMMs of 2*m*n*k)\n")
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_gemm_helper(lib_path, tmp)
        print("| OpenBLAS | threads | batch x in -> out | dense layer | sgemm, same shapes | fraction | "
              "sgemm 2048^3 | fraction of it |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        gemm_seconds = max(1.0, args.seconds / 4)
        for label, env in variants:
            for t in args.threads:
                rows = run_gemm(exe, t, gemm_seconds, env)
                square = next(r for r in rows if r["kind"] == "square")["sgemm_gflops"]
                for r in rows:
                    if r["kind"] != "dense":
                        continue
                    frac = r["layer_gflops"] / r["sgemm_gflops"]
                    print(f"| {label} | {t} | {r['batch']} x {r['in']} -> {r['out']} | {r['layer_gflops']:.1f} | "
                          f"{r['sgemm_gflops']:.1f} | {100 * frac:.0f}% | {square:.1f} | "
                          f"{100 * r['layer_gflops'] / square:.0f}% |")
    print(f"\n1-minute load average at the end: {load_average():.2f}")
    if misses:
        print("\nTargets missed: " + "; ".join(misses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
