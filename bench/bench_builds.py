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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="TREE:BUILD of the build to compare against")
    ap.add_argument("--new", required=True, help="TREE:BUILD of the build measured")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per cpu measurement")
    ap.add_argument("--only", choices=["cpu", "mpi"], help="run one of the two parts")
    args = ap.parse_args()
    builds = {"base": parse_build(args.base), "new": parse_build(args.new)}
    results = {"base": {}, "new": {}}
    for r in range(args.rounds):
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
            print(f"round {r + 1}/{args.rounds}: {name} done", file=sys.stderr)
    print(f"# Kindling: new ({args.new}) against base ({args.base}), {args.rounds} interleaved rounds, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| measurement | base (median) | new (median) | new / base |")
    print("|---|---:|---:|---:|")
    for k in results["base"]:
        if k not in results["new"]:
            continue
        b, n = statistics.median(results["base"][k]), statistics.median(results["new"][k])
        print(f"| {k} | {b:.1f} | {n:.1f} | {n / b:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
