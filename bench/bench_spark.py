"""Kindling on Spark against PyTorch's TorchDistributor, and the parameter
server's exchange on each transport, in one run on this machine.

1. The README's main job (`spark-submit --master local[4]
   examples/fashion_mnist_spark.py`: Fashion-MNIST into a DataFrame, the
   MLP, 2 workers + 1 parameter server, async in synchronous rounds
   (staleness 0, the Spark default), Adam 0.002 (the default) with a cosine
   schedule, 8 epochs, batch 64 per worker, save, load, predict the test set) against bench/torch_distributor_job.py (the same
   data, network, optimizer, schedule, epochs and batch per worker on 2
   DDP processes over gloo), interleaved: PAIRS pairs, the order swapped
   every pair. Medians of: the whole spark-submit wall time; fit() (or
   TorchDistributor.run()) to the first training step; training samples/s
   (every worker's samples over the time from the first step to the last);
   the exchange's share of a step; the test accuracy; and Kindling/Torch.
   Each pair also runs one `kindling train` process on the same data,
   network, optimizer and batch (2 epochs, one thread: the default): the Spark job's
   samples/s against it (target: at least 1x).
2. The exchange per step (ms, and its share of the step) of the same async
   job (1 server, 2 workers, 1 epoch) in Spark local mode (from part 1,
   staleness 0), under plain mpirun on one host (staleness 0 as the main
   job, and 2), and between two network
   namespaces over TCP (the server on one "host", the workers on the
   other: root and `ip netns` needed, else skipped with the reason). Next to
   the namespaces' row, bench_exchange's probe: the parameter server's
   exchange against MPI_Sendrecv of the same bytes between the same ranks
   in the same run (target: within 2x).
3. The cost model of bench/ps_cost_model.py, with alpha and the bandwidth
   fitted from MPI_Sendrecv of 1,000 floats and of the MLP's 109,386 (no
   compute between steps) and the Adam cost measured here:
   its prediction against the probe's measurements (1 and 2 workers), then
   the exchange share for 8, 64 and 256 workers, 1-16 servers, 10 and 100
   Gb/s, and the servers that keep it under 15%.

    python bench/bench_spark.py [--pairs 3] [--epochs 8] [--skip-namespaces] [--json out.json]

Needs an MPI build (bench/../build or build-launch, or KINDLING_CLI and
KINDLING_LIB), Java, pyspark, torch, pyarrow and pandas in the project's
environment, and the Fashion-MNIST IDX files (Debian package
dataset-fashion-mnist, or KD_FASHION_MNIST_DIR). The machine's load is
printed before each part: rerun on a quiet machine for figures to quote.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
import ps_cost_model  # noqa: E402

PYTHON = sys.executable
DATA = os.environ.get("KD_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
SUMMARY = re.compile(r"kindling train: async, (\d+) workers?, \d+ servers?: (\d+) steps in ([0-9.]+) s .*"
                     r"exchange ([0-9.]+) ms/step \(([0-9.]+)% of the time\) by ([^;]+);")


def find_build():
    for build in ("build-launch", "build"):
        cli = os.environ.get("KINDLING_CLI") or os.path.join(REPO, build, "kindling")
        if os.path.isfile(cli):
            d = os.path.dirname(cli)
            return cli, os.environ.get("KINDLING_LIB") or os.path.join(d, "libkindling.so"), \
                os.path.join(d, "mpi", "kindling_bench_exchange")
    sys.exit("bench_spark: no kindling build (bash ci/build.sh build, or set KINDLING_CLI and KINDLING_LIB)")


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def env_for(cli, lib):
    env = dict(os.environ, KINDLING_CLI=cli, KINDLING_LIB=lib, PYSPARK_PYTHON=PYTHON, PYSPARK_DRIVER_PYTHON=PYTHON,
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (os.path.join(REPO, "spark-barrier"), os.environ.get("PYTHONPATH"))
                                          if p))
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def spark_submit(script, args, env, log):
    """(wall seconds, JSON record) of one spark-submit."""
    out = tempfile.mktemp(suffix=".json", prefix="kd-bench-")
    cmd = [os.path.join(os.path.dirname(PYTHON), "spark-submit"), "--master", "local[4]",
           "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.host=127.0.0.1",
           "--conf", "spark.driver.bindAddress=127.0.0.1", script, *args, "--json", out]
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=1800).returncode
    wall = time.time() - t0
    if rc != 0 or not os.path.exists(out):
        with open(log) as f:
            tail = f.read()[-3000:]
        sys.exit(f"bench_spark: {os.path.basename(script)} failed (exit {rc}); log {log}:\n{tail}")
    with open(out) as f:
        record = json.load(f)
    os.unlink(out)
    return wall, record


def kindling_metrics(wall, r):
    """The figures of one main job from its JSON (examples/fashion_mnist_spark.py --json)."""
    lines = r["lines"]
    t0 = r["fit_start"]
    first_epoch = next(t for t, text in lines if text.startswith("epoch 1/"))
    first_step = first_epoch - r["history"][0]["seconds"] - t0
    spooled = next((t for t, text in lines if "rows spooled" in text), None)
    m = next(SUMMARY.search(text) for _, text in lines if SUMMARY.search(text))
    workers, steps, seconds = int(m.group(1)), int(m.group(2)), float(m.group(3))
    last_epoch = [t for t, text in lines if text.startswith(f"epoch {r['epochs']}/")][0]
    return {"wall": wall, "fit": r["fit_end"] - t0, "first_step": first_step,
            "spooled": spooled - t0 if spooled else None,
            # every worker's samples over first step -> last epoch line (the writer's view)
            "samples_per_sec": steps * r["batch_size"] * workers / seconds,
            "train_seconds": seconds, "exchange_ms": float(m.group(4)), "exchange_share": float(m.group(5)) / 100,
            "exchange_by": m.group(6), "accuracy": r["test_accuracy"], "last_epoch_at": last_epoch - t0}


def torch_metrics(wall, r):
    train = r["train_end"] - r["first_step"]
    return {"wall": wall, "fit": r["run_end"] - r["run_start"], "first_step": r["first_step"] - r["run_start"],
            "samples_per_sec": r["samples"] / train, "train_seconds": train, "exchange_share": None,
            "accuracy": r["test_accuracy"]}


EPOCH_RATE = re.compile(r"^epoch \d+/\d+ .* (\d+) samples/s", re.M)


def single_process(cli, env, log):
    """Samples/s of one `kindling train` process on the main job's data,
    network, optimizer and batch (2 epochs; the median epoch)."""
    cmd = [cli, "train", "--net", "mlp", "--epochs", "2", "--batch-size", "64", "--optimizer", "adam", "--lr", "0.002"]
    r = subprocess.run(cmd, env=dict(env, KD_FASHION_MNIST_DIR=DATA), capture_output=True, text=True, timeout=600)
    with open(log, "w") as f:
        f.write(r.stdout + r.stderr)
    rates = [int(x) for x in EPOCH_RATE.findall(r.stdout + r.stderr)]
    if r.returncode != 0 or not rates:
        sys.exit(f"bench_spark: one kindling train process failed (exit {r.returncode}), see {log}")
    return statistics.median(rates)


def med(runs, key):
    vals = [x[key] for x in runs if x.get(key) is not None]
    return statistics.median(vals) if vals else None


def main_job_pairs(args, env, logdir, single):
    example = os.path.join(REPO, "examples", "fashion_mnist_spark.py")
    torch_job = os.path.join(REPO, "bench", "torch_distributor_job.py")
    common = ["--data", DATA, "--epochs", str(args.epochs)]
    kd, th = [], []
    cli = env["KINDLING_CLI"]
    for i in range(args.pairs):
        order = ("kindling", "torch", "single") if i % 2 == 0 else ("single", "torch", "kindling")
        for who in order:
            print(f"  pair {i + 1}/{args.pairs}: {who} (load {load()})", flush=True)
            if who == "single":
                rate = single_process(cli, env, os.path.join(logdir, f"single-{i}.log"))
                single.append(rate)
            elif who == "kindling":
                # The same training rows as the torch job: no validation hold-out.
                wall, r = spark_submit(example, common + ["--validation", "0"], env,
                                       os.path.join(logdir, f"kindling-{i}.log"))
                kd.append(kindling_metrics(wall, r))
            else:
                # The main job's optimizer: the defaults, Adam 0.002 with cosine.
                wall, r = spark_submit(torch_job, common + ["--lr", "0.002"], env,
                                       os.path.join(logdir, f"torch-{i}.log"))
                th.append(torch_metrics(wall, r))
    return kd, th


def print_main_table(kd, th, pairs, single=()):
    rows = [("whole spark-submit wall (s)", "wall", "{:.1f}", "<= 0.5"),
            ("fit() to the end (s)", "fit", "{:.1f}", ""),
            ("fit() to first training step (s)", "first_step", "{:.1f}", "<= 0.5"),
            ("training samples/s (every worker)", "samples_per_sec", "{:,.0f}", ">= 3"),
            ("exchange share of a step", "exchange_share", "{:.0%}", "Kindling <= 15%"),
            ("test accuracy", "accuracy", "{:.4f}", "Kindling >= 0.88")]
    print(f"| median of {pairs} interleaved pairs | Kindling main job | TorchDistributor | Kindling / Torch | target |")
    print("|---|---:|---:|---:|---|")
    for label, key, fmt, target in rows:
        a, b = med(kd, key), med(th, key)
        ratio = f"{a / b:.2f}" if a is not None and b else ""
        print(f"| {label} | {fmt.format(a) if a is not None else '-'} | {fmt.format(b) if b is not None else '-'} "
              f"| {ratio} | {target} |")
    if single:
        one, job = statistics.median(single), med(kd, "samples_per_sec")
        print(f"| one `kindling train` process, samples/s (same data, net, optimizer, batch) | {job:,.0f} "
              f"(the Spark job) | {one:,.0f} (one process) | {job / one:.2f} | Spark job >= 1x one process |")
    sp = med(kd, "spooled")
    if sp is not None:
        print(f"\nKindling: fit() to the rows spooled on the workers {sp:.1f} s (median); the exchange "
              f"{med(kd, 'exchange_ms'):.3f} ms/step by {kd[0]['exchange_by']}.")


# ------------------------------------------------------------ exchange table
def run_capture(cmd, env, timeout=600):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def summary_of(text):
    m = SUMMARY.search(text)
    if not m:
        return None
    return {"exchange_ms": float(m.group(4)), "share": float(m.group(5)) / 100, "by": m.group(6),
            "steps_per_sec": int(m.group(2)) / float(m.group(3))}


ASYNC_JOB = ["train", "--dist", "async", "--servers", "1", "--max-staleness", "2", "--epochs", "1", "--batch-size", "64",
             "--optimizer", "adam", "--lr", "0.001", "--threads", "1"]


def with_staleness(job, k):
    i = job.index("--max-staleness")
    return job[:i + 1] + [str(k)] + job[i + 2:]


def one_host_runs(cli, env, runs, staleness=2):
    out = []
    for _ in range(runs):
        rc, text = run_capture(["mpirun", "--oversubscribe", "-np", "3", cli, *with_staleness(ASYNC_JOB, staleness)],
                               env)
        s = summary_of(text)
        if rc != 0 or not s:
            sys.exit(f"bench_spark: plain mpirun failed (exit {rc}):\n{text[-2000:]}")
        out.append(s)
    return out


class Namespaces:
    """Two network namespaces joined by a veth pair, each its own host name
    (UTS namespace) and TMPDIR, with an rsh agent for mpirun."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.a, self.b = f"kdbench-a-{tag}", f"kdbench-b-{tag}"
        self.subnet = f"10.233.{os.getpid() % 250}"
        self.work = tempfile.mkdtemp(prefix="kd-bench-ns-")
        self.agent = os.path.join(self.work, "agent.sh")

    def why_not(self):
        if os.geteuid() != 0:
            return "needs root (ip netns)"
        if not shutil.which("ip") or not shutil.which("unshare"):
            return "needs ip (iproute2) and unshare (util-linux)"
        return None

    def __enter__(self):
        va, vb = f"kdbva{os.getpid() % 100000}", f"kdbvb{os.getpid() % 100000}"
        steps = [["ip", "netns", "add", self.a], ["ip", "netns", "add", self.b],
                 ["ip", "link", "add", va, "type", "veth", "peer", "name", vb],
                 ["ip", "link", "set", va, "netns", self.a], ["ip", "link", "set", vb, "netns", self.b],
                 ["ip", "-n", self.a, "addr", "add", f"{self.subnet}.1/24", "dev", va],
                 ["ip", "-n", self.b, "addr", "add", f"{self.subnet}.2/24", "dev", vb],
                 ["ip", "-n", self.a, "link", "set", va, "up"], ["ip", "-n", self.b, "link", "set", vb, "up"],
                 ["ip", "-n", self.a, "link", "set", "lo", "up"], ["ip", "-n", self.b, "link", "set", "lo", "up"]]
        for s in steps:
            r = subprocess.run(s, capture_output=True, text=True)
            if r.returncode != 0:
                self.__exit__(None, None, None)
                raise RuntimeError(f"{' '.join(s)}: {r.stderr.strip()}")
        with open(self.agent, "w") as f:
            f.write(f"""#!/bin/bash
host=$1; shift
cmd="$*"
mkdir -p {self.work}/tmp-$host
exec ip netns exec "$host" unshare --uts /bin/bash -c "hostname $host && export TMPDIR={self.work}/tmp-$host && ${{cmd//--daemonize/}}"
""")
        os.chmod(self.agent, 0o700)
        return self

    def mpirun(self, hosts, np_, argv):
        return ["ip", "netns", "exec", self.a, "mpirun", "-np", str(np_), "--host", hosts,
                "--mca", "plm_rsh_agent", self.agent, "--mca", "plm_rsh_no_tree_spawn", "1",
                "--mca", "btl", "self,vader,tcp", "--mca", "btl_tcp_if_include", f"{self.subnet}.0/24",
                "--mca", "oob_tcp_if_include", f"{self.subnet}.0/24",
                # the two "hosts" share this machine's cores: ranks yield, or they starve the network stack
                "--mca", "mpi_yield_when_idle", "1", "-x", "OPENBLAS_NUM_THREADS", *argv]

    def __exit__(self, *exc):
        for ns in (self.a, self.b):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for p in pids:
                try:
                    os.kill(int(p), 9)
                except (OSError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)


def probe(cmd, env):
    """The probe's figures: {'sendrecv_ms', 'ps_ms', 'ratio', 'adam_ns_per_param', 'ps'}."""
    rc, text = run_capture(cmd, env)
    m = re.search(r"exchange_probe workers=\d+ floats=\d+ gap_us=\S+ sendrecv_ms=([0-9.]+) ps_ms=([0-9.]+) "
                  r"ratio=([0-9.]+) ps=\"([^\"]*)\"", text)
    a = re.search(r"adam_ns_per_param=([0-9.]+)", text)
    if rc != 0 or not m:
        raise RuntimeError(f"bench_exchange failed (exit {rc}):\n{text[-2000:]}")
    return {"sendrecv_ms": float(m.group(1)), "ps_ms": float(m.group(2)), "ratio": float(m.group(3)), "ps": m.group(4),
            "adam_ns_per_param": float(a.group(1)) if a else None}


def median_probe(cmds, env, runs):
    got = [probe(c, env) for c in cmds for _ in range(runs)]
    return {k: statistics.median(g[k] for g in got) if isinstance(got[0][k], float) else got[0][k] for k in got[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3, help="interleaved Kindling/Torch pairs (>= 3 to quote)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3, help="runs of each exchange measurement (median)")
    ap.add_argument("--skip-main", action="store_true", help="only the exchange table and the cost model")
    ap.add_argument("--skip-namespaces", action="store_true")
    ap.add_argument("--json", help="also write every figure here")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")):
        sys.exit(f"bench_spark: Fashion-MNIST not found in {DATA} (apt-get install dataset-fashion-mnist)")
    cli, lib, probe_bin = find_build()
    env = env_for(cli, lib)
    logdir = tempfile.mkdtemp(prefix="kd-bench-spark-")
    result = {"machine": {"cores": os.cpu_count(), "cli": cli}}
    print(f"# Kindling on Spark: benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
          f"load {load()}, logs in {logdir})\n")

    kd = []
    if not args.skip_main:
        print(f"## 1. The README's main job against TorchDistributor ({args.epochs} epochs)\n")
        single = []
        kd, th = main_job_pairs(args, env, logdir, single)
        print()
        print_main_table(kd, th, args.pairs, single)
        result["main"] = {"kindling": kd, "torch": th, "one_process_samples_per_sec": single}

    print(f"\n## 2. Exchange per step: async, 1 server + 2 workers, MLP, batch 64 (load {load()})\n")
    rows = []
    if kd:
        rows.append(("Spark local mode (the main job: staleness 0, Adam 2e-3, 8 epochs)", med(kd, "exchange_ms"),
                     med(kd, "exchange_share"), kd[0]["exchange_by"], ""))
    # Staleness 0 as the main job (synchronous rounds: every step waits for
    # the server), then 2 as the namespaces' rows.
    one0 = one_host_runs(cli, env, args.runs, 0)
    rows.append(("plain mpirun, one host, staleness 0", med(one0, "exchange_ms"), med(one0, "share"), one0[0]["by"],
                 ""))
    one = one_host_runs(cli, env, args.runs)
    rows.append(("plain mpirun, one host, staleness 2", med(one, "exchange_ms"), med(one, "share"), one[0]["by"], ""))
    ns_result = None
    reason = "skipped (--skip-namespaces)" if args.skip_namespaces else Namespaces().why_not()
    if not reason:
        try:
            with Namespaces() as ns:
                two = []
                for _ in range(args.runs):
                    rc, text = run_capture(ns.mpirun(f"{ns.a}:1,{ns.b}:2", 3, [cli, *ASYNC_JOB]), env)
                    s = summary_of(text)
                    if rc != 0 or not s:
                        raise RuntimeError(f"the namespaces run failed (exit {rc}):\n{text[-2000:]}")
                    two.append(s)
                # the probe: MLP-sized exchange after 400 us of compute per step
                pr = {w: median_probe([ns.mpirun(f"{ns.a}:1,{ns.b}:{w}", w + 1, [probe_bin, "200", "400", "0", "5"])],
                                      env, args.runs) for w in (1, 2)}
                small = median_probe([ns.mpirun(f"{ns.a}:1,{ns.b}:1", 2, [probe_bin, "300", "0", "1000", "5"])],
                                     env, 1)
                big = median_probe([ns.mpirun(f"{ns.a}:1,{ns.b}:1", 2, [probe_bin, "200", "0", "0", "5"])],
                                   env, 1)
                ns_result = {"train": two, "probe": pr, "small": small, "big": big}
                rows.append(("two namespaces over TCP, staleness 2", med(two, "exchange_ms"), med(two, "share"), two[0]["by"],
                             f"probe: {pr[2]['ps_ms']:.3f} ms vs MPI_Sendrecv {pr[2]['sendrecv_ms']:.3f} ms "
                             f"({pr[2]['ratio']:.2f}x; 1 worker {pr[1]['ratio']:.2f}x)"))
        except RuntimeError as e:
            reason = str(e)
    print("| where | exchange ms/step | share of the step | by | same bytes by MPI_Sendrecv, same run |")
    print("|---|---:|---:|---|---|")
    for where, ms, sh, by, extra in rows:
        print(f"| {where} | {ms:.3f} | {sh:.0%} | {by} | {extra} |")
    if reason:
        print(f"| two namespaces over TCP | - | - | {reason} | |")
    result["exchange"] = {"rows": rows, "namespaces": ns_result, "skipped": reason}

    print(f"\n## 3. Cost model (bench/ps_cost_model.py) (load {load()})\n")
    if ns_result:
        small, big = ns_result["small"], ns_result["big"]
        # MPI_Sendrecv of n floats each way: alpha + 4 n / bw (full duplex), at the MLP's size
        bw = 4 * (109386 - 1000) / ((big["sendrecv_ms"] - small["sendrecv_ms"]) * 1e-3)
        alpha = max(1e-7, small["sendrecv_ms"] * 1e-3 - 4 * 1000 / bw)
        opt = (small.get("adam_ns_per_param") or 1.5) * 1e-9
        compute = 400e-6
        print(f"Fitted on the namespaces' TCP: alpha {alpha * 1e6:.1f} us per message, {bw / 1e9:.2f} GB/s per "
              f"direction; Adam {opt * 1e9:.2f} ns per parameter and push; compute 0.40 ms per step (the probe's).\n")
        print("| workers | predicted exchange ms/step | measured (probe) | error |")
        print("|---:|---:|---:|---:|")
        for w in (1, 2):
            T, ex, _ = ps_cost_model.step_time(109386, w, 1, compute, alpha, bw, opt)
            meas = ns_result["probe"][w]["ps_ms"]
            print(f"| {w} | {ex * 1e3:.3f} | {meas:.3f} | {(ex * 1e3 - meas) / meas:+.0%} |")
        print("\n(2 workers + 1 server share this machine's cores with each other and the network stack, which the "
              "model does not know.)\n")
        print("Predicted exchange share of the MLP (109,386 parameters, 0.4 ms of compute per step, alpha as "
              "measured here):\n")
        print(ps_cost_model.sizing_table(109386, compute, alpha, opt))
        print("\nThe same at batch 512 per worker (8x the compute per step, the same bytes):\n")
        print(ps_cost_model.sizing_table(109386, 8 * compute, alpha, opt))
        result["model"] = {"alpha": alpha, "bw": bw, "opt": opt}
    else:
        print(f"skipped: it is fitted on the namespaces' measurements ({reason})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    print(f"\n(load at the end {load()}; logs in {logdir})")


if __name__ == "__main__":
    main()
