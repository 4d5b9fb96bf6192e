#!/usr/bin/env python3
"""Training speed of two builds of Kindling, measured interleaved on this
machine, as ratios new / base (e.g. before and after a refactoring).

Each build is a source tree and its build directory (TREE:BUILD; a tree's
own bench scripts and test helpers go with its library, since their ctypes
mirror must match it). Every round runs, alternating which build goes
first:
  cpu  bench/bench_cpu.py --worker kindling (one thread): samples/s of a
       hand-written step loop and of kd_train, MLP and LeNet, batch 64, 256;
  mpi  bench/bench_mpi.sh (MEM=0, PS_RUNS=1): steps/s of `kindling train`
       sync and async with 1, 2 and 4 workers, and the parameter server's
       push+pull time.
The table gives the median of the rounds for each build and the ratio of
the medians (new / base; above 1 = new is faster, except for times).
With --instructions (needs valgrind) it also counts, once per build, the
instructions `kindling train` executes (callgrind): the MLP for 2 epochs of
2000 Fashion-MNIST samples and LeNet for 1 epoch of 400, read from a spool
file. Unlike times, the counts do not depend on what else the machine runs,
so on a busy machine they are the figure to trust for "no added work".

    $KD_PYTHON bench/bench_builds.py --base /tmp/old:/tmp/old/build --new .:build --rounds 3

On a machine shared with other work the numbers are noisy: compare ratios,
not absolute rates, and use several rounds.
"""
import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys


def parse_build(text):
    tree, _, build = text.partition(":")
    tree = pathlib.Path(tree).resolve()
    build = pathlib.Path(build).resolve() if build else tree / "build"
    for p in (tree / "bench" / "bench_cpu.py", build / "libkindling.so"):
        if not p.exists():
            sys.exit(f"bench_builds: {p} does not exist")
    return tree, build


def run_cpu(tree, build, seconds):
    out = subprocess.run([sys.executable, str(tree / "bench" / "bench_cpu.py"), "--worker", "kindling",
                          "--threads", "1", "--seconds", str(seconds), "--lib", str(build / "libkindling.so")],
                         check=True, capture_output=True, text=True).stdout
    rows = json.loads(out.strip().splitlines()[-1])
    res = {}
    for r in rows:
        res[f"cpu {r['net']} b{r['batch']} loop samples/s"] = r["loop"]
        res[f"cpu {r['net']} b{r['batch']} kd_train samples/s"] = r["kd_train"]
    return res


def run_mpi(tree, build):
    env = dict(os.environ, MEM="0", PS_RUNS="1", EPOCHS=os.environ.get("EPOCHS", "1"))
    out = subprocess.run(["bash", str(tree / "bench" / "bench_mpi.sh"), str(build)], check=True,
                         capture_output=True, text=True, env=env).stdout
    res = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] in ("sync", "async") and cells[1].isdigit():
            res[f"mpi {cells[0]} {cells[1]} worker(s) steps/s"] = float(cells[5])
        m = re.match(r"(\d+) MB", cells[0]) if cells else None
        if m and len(cells) == 8:
            res[f"ps push+pull {m.group(1)} MB step ms (lower is faster)"] = float(cells[1].split()[0])
    if not res:
        raise RuntimeError(f"bench_mpi.sh printed no table:\n{out}")
    return res


def run_instructions(builds, workdir):
    """Instructions executed by `kindling train` of each build (callgrind)."""
    import gzip

    import numpy as np

    sys.path.insert(0, str(builds["new"][0] / "spark-barrier"))
    from kindling_spark.spool import write_spool

    fm = pathlib.Path(os.environ.get("KD_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    with gzip.open(fm / "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16)[: 2000 * 784].reshape(2000, 1, 28, 28) / np.float32(255)
    with gzip.open(fm / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:2000].astype(np.int32)
    runs = {"mlp": (2000, 2), "lenet": (400, 1)}
    env = dict(os.environ, KD_BLAS_AUTO="0", OPENBLAS_CORETYPE="Haswell", OPENBLAS_NUM_THREADS="1")
    res = {}
    for net, (n, epochs) in runs.items():
        spool = workdir / f"{net}.spool"
        write_spool(spool, x[:n], y[:n])
        for name, (_, build) in builds.items():
            out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                                  str(build / "kindling"), "train", "--net", net, "--epochs", str(epochs),
                                  "--batch-size", "64", "-q", "--threads", "1", "--train-spool", str(spool)],
                                 env=env, capture_output=True, text=True, check=True).stderr
            ir = int(re.search(r"Collected : (\d+)", out).group(1))
            res.setdefault(f"instructions: train {net}, {n} samples x {epochs} epoch(s) (lower is less work)",
                           {})[name] = ir
            print(f"instructions {net}: {name} done", file=sys.stderr)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="TREE:BUILD of the build to compare against")
    ap.add_argument("--new", required=True, help="TREE:BUILD of the build measured")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per cpu measurement")
    ap.add_argument("--only", choices=["cpu", "mpi", "none"], help="run one of the timed parts, or none")
    ap.add_argument("--instructions", action="store_true", help="also count instructions with callgrind")
    args = ap.parse_args()
    builds = {"base": parse_build(args.base), "new": parse_build(args.new)}
    results = {"base": {}, "new": {}}
    rounds = args.rounds if args.only != "none" else 0
    for r in range(rounds):
        order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
        for name in order:
            tree, build = builds[name]
            got = {}
            if args.only in (None, "cpu"):
                got.update(run_cpu(tree, build, args.seconds))
            if args.only in (None, "mpi"):
                got.update(run_mpi(tree, build))
            for k, v in got.items():
                results[name].setdefault(k, []).append(v)
            print(f"round {r + 1}/{rounds}: {name} done", file=sys.stderr)
    print(f"# Kindling: new ({args.new}) against base ({args.base}), {rounds} interleaved rounds, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| measurement | base (median) | new (median) | new / base |")
    print("|---|---:|---:|---:|")
    for k in results["base"]:
        if k not in results["new"]:
            continue
        b, n = statistics.median(results["base"][k]), statistics.median(results["new"][k])
        print(f"| {k} | {b:.1f} | {n:.1f} | {n / b:.3f} |")
    if args.instructions:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="kd_bench_builds.") as tmp:
            for k, v in run_instructions(builds, pathlib.Path(tmp)).items():
                print(f"| {k} | {v['base']} | {v['new']} | {v['new'] / v['base']:.6f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
