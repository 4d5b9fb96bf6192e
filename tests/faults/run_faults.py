#!/usr/bin/env python3
"""Fault-injection matrix for kindling's distributed training.

Kills one rank of a `kindling train --dist` job at a chosen point (an
LD_PRELOAD failpoint, see failpoint.c: inside a push, an allreduce, a
server's reply to a checkpoint gather, a checkpoint write, just before the
checkpoint's rename) or at a seeded random time (external SIGKILL), then
resumes from the checkpoint, and checks every case for:

  - a bounded end: the broken run exits non-zero within --fail-timeout and
    mpirun's message names the killed rank (a hang is a failure);
  - the checkpoint: it opens with h5py and `kindling inspect`, holds the
    last complete save (the previous one when the writer died inside a
    save), and a temporary left by the kill is ignored by the resume and
    removed by its first save;
  - no process of the job left behind (after the broken run and the resume);
  - the resumed run finishes all epochs with the accuracy of an unbroken run
    (sync: the same to 1e-3, since a resume continues exactly; async: close).

With --spark the same is done through kindling_spark in Spark local mode
(the barrier stage fails, the launcher retries it with --resume).

Prints a table (also --markdown FILE). --assert exits 1 if any check fails
(ctest: faults_mpi_matrix). Needs numpy; h5py and pyspark where used.

  /opt/kindling-venv/bin/python tests/faults/run_faults.py --cli build/kindling \
      --shim build/tests/faults/libkd_failpoint.so [--spark] [--fashion] [--seed N]
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

SPEC = ('{"input": [10], "layers": [{"type": "dense", "units": 16}, {"type": "tanh"},'
        ' {"type": "dense", "units": 3}, {"type": "softmax"}]}')


def log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------- data
def make_blobs(path, n, seed):
    """Three noisy blobs in 10-D as CSV, label first (as tests/mpi/lib_mpi.sh)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0, 1.0, (n, 10)) + (np.arange(10)[None, :] % 3 == y[:, None]) * 1.2
    np.savetxt(path, np.column_stack([y, x]), fmt=["%d"] + ["%.4f"] * 10, delimiter=",")
    return x.astype("float32"), y.astype("int32")


# ------------------------------------------------------------- processes
def procs_mentioning(text):
    """Live (non-zombie) pids whose command line contains text."""
    found = []
    needle = text.encode()
    for e in os.listdir("/proc"):
        if not e.isdigit() or int(e) == os.getpid():
            continue
        try:
            with open(f"/proc/{e}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{e}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmd and state != b"Z":
            found.append(int(e))
    return found


def rank_pid(text, rank):
    for pid in procs_mentioning(text):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return pid
    return None


def orphans_after(text, wait=5.0):
    """Processes of the job still alive after up to `wait` s; killed then."""
    deadline = time.time() + wait
    while True:
        left = procs_mentioning(text)
        if not left or time.time() > deadline:
            break
        time.sleep(0.1)
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


# ------------------------------------------------------------ checkpoint
def ckpt_state(cli, path):
    """(ok, step, epochs_in_history, text) of a checkpoint: h5py reads every
    dataset and `kindling inspect` accepts it."""
    if not os.path.exists(path):
        return False, None, None, "missing"
    step = epochs = None
    try:
        import h5py

        with h5py.File(path, "r") as f:
            f.visititems(lambda n, o: o[()] if isinstance(o, h5py.Dataset) else None)
            step = int(f["training"].attrs["step"])
            epochs = int(f["training/history"].shape[0]) if "history" in f["training"] else 0
    except ImportError:
        pass
    except Exception as e:  # noqa: BLE001 - reported
        return False, None, None, f"h5py cannot read it: {e}"
    r = subprocess.run([cli, "inspect", path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return False, step, epochs, f"kindling inspect failed: {r.stderr.strip()[:200]}"
    if step is None:
        m = re.search(r"step (\d+)", r.stdout)
        step = int(m.group(1)) if m else -1
    return True, step, epochs, "ok"


def temporaries(path):
    d, base = os.path.split(path)
    return sorted(n for n in os.listdir(d) if n.startswith(os.path.basename(base) + ".tmp"))


def save_steps(total_steps, every, spe):
    """The steps of the writer's saves in order (periodic, then epoch end;
    a periodic save never falls on an epoch's last step, whose epoch-end
    save follows)."""
    out = []
    for s in range(1, total_steps + 1):
        if every and s % every == 0 and s % spe != 0:
            out.append(s)
        if s % spe == 0:
            out.append(s)
    return out


def evaluate(cli, model, test_args):
    r = subprocess.run([cli, "eval", "--model", model, *test_args], capture_output=True, text=True, timeout=300)
    m = re.search(r"^accuracy\s+([0-9.]+)", r.stdout, re.M)
    return float(m.group(1)) if m else None


# ------------------------------------------------------------------ cases
class Matrix:
    def __init__(self, a):
        self.a = a
        self.cli = os.path.abspath(a.cli)
        self.shim = os.path.abspath(a.shim) if a.shim else None
        # An ASan build must have its runtime first in the preload list.
        ldd = subprocess.run(["ldd", self.cli], capture_output=True, text=True).stdout
        asan = re.search(r"(\S*libasan\.so\S*) => (\S+)", ldd)
        self.preload = f"{asan.group(2)}:{self.shim}" if asan else self.shim
        self.work = tempfile.mkdtemp(prefix="kd_faults.", dir=a.workdir)
        self.rng = random.Random(a.seed)
        self.rows = []
        self.problems = []
        self.refs = {}
        if a.fashion:
            self.train_args = ["--net", "mlp"]
            self.test_args = []
            self.epochs, self.batch, self.every, self.n_train = 2, 64, 200, 60000
            self.random_epochs = 6
        else:
            make_blobs(os.path.join(self.work, "train.csv"), 3000, 1)
            make_blobs(os.path.join(self.work, "test.csv"), 600, 2)
            with open(os.path.join(self.work, "spec.json"), "w") as f:
                f.write(SPEC)
            self.train_args = ["--net", os.path.join(self.work, "spec.json"),
                               "--train-csv", os.path.join(self.work, "train.csv")]
            self.test_args = ["--test-csv", os.path.join(self.work, "test.csv")]
            self.epochs, self.batch, self.every, self.n_train = 4, 16, 20, 3000
            self.random_epochs = 150  # long enough (a few seconds) to be killed at a random time
        self.env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                        OPENBLAS_NUM_THREADS="1")

    def mpirun(self, np_, argv, extra=()):
        return [self.a.mpirun, "--oversubscribe", "-np", str(np_), *extra, self.cli, *argv]

    def run(self, cmd, timeout, tag, on_start=None):
        """Runs cmd in its own session; (rc or 'HANG', seconds, output, end time)."""
        t0 = time.time()
        with open(os.path.join(self.work, tag + ".log"), "w+") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
            info = on_start(p) if on_start else None
            try:
                rc = p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                rc = "HANG"
            t1 = time.time()
            out.seek(0)
            text = out.read()
        return rc, t1 - t0, text, t1, info

    def mode_args(self, mode, servers):
        # Async with a staleness bound, so a slow (oversubscribed) worker is
        # still mid-training when the fast one is killed and vice versa.
        return ["--dist", "sync"] if mode == "sync" else ["--dist", "async", "--servers", str(servers),
                                                          "--max-staleness", "2"]

    def ref_accuracy(self, mode, np_, servers, epochs):
        key = (mode, np_, servers, epochs)
        if key not in self.refs:
            d = os.path.join(self.work, f"ref-{mode}-{epochs}")
            os.makedirs(d)
            ck = os.path.join(d, "ck.h5")
            argv = ["train", *self.train_args, *self.mode_args(mode, servers), "--epochs", str(epochs),
                    "--batch-size", str(self.batch), "--optimizer", "momentum", "--lr", "0.05",
                    "--checkpoint", ck, "--checkpoint-every", str(self.every), "-q"]
            rc, dt, text, _, _ = self.run(self.mpirun(np_, argv), self.a.run_timeout, f"ref-{mode}-{epochs}")
            acc = evaluate(self.cli, ck, self.test_args) if rc == 0 else None
            if rc != 0 or acc is None:
                self.problems.append(f"unbroken {mode} run failed (rc {rc}):\n{text[-2000:]}")
            self.refs[key] = (acc, dt)
            self.rows.append([f"unbroken {mode} ({np_} ranks, {epochs} epochs)", "-", "finished", "-",
                              f"{dt:.1f}", f"{acc:.4f}" if acc is not None else "?", "-", "-", "-"])
        return self.refs[key][0]

    def case(self, name, mode, np_, servers, victim, point=None, random_kill=False, expect_prev_save=None):
        """One case: the broken run, checks, the resume, checks; one table row."""
        a = self.a
        if a.only and not re.search(a.only, name):
            return
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        d = os.path.join(self.work, slug)
        os.makedirs(d)
        ck = os.path.join(d, "ck.h5")
        epochs = self.random_epochs if random_kill else self.epochs
        base = ["train", *self.train_args, *self.mode_args(mode, servers), "--epochs", str(epochs),
                "--batch-size", str(self.batch), "--optimizer", "momentum", "--lr", "0.05",
                "--checkpoint", ck, "--checkpoint-every", str(self.every), "-q"]
        bad = []
        extra = ()
        if point:
            extra = ("-x", f"LD_PRELOAD={self.preload}", "-x", f"KD_FAILPOINT={point}", "-x",
                     f"KD_FAILPOINT_RANK={victim}")
        delay = None
        if random_kill:
            # A fraction of the unbroken run's length, so the kill lands while
            # training runs however fast this machine is (a fixed 0.2-1.0 s
            # missed a 1.4 s run on a quiet machine).
            self.ref_accuracy(mode, np_, servers, epochs)
            ref_seconds = self.refs[(mode, np_, servers, epochs)][1]
            delay = round(self.rng.uniform(0.1, 0.4) * ref_seconds, 2)
        if random_kill and victim is None:
            victim = self.rng.randrange(np_)
        fault = point or f"SIGKILL rank {victim} {delay} s after the first checkpoint (seed {a.seed})"
        log(f"--- {name}: {fault}")

        def killer(p):
            if not random_kill:
                return None
            deadline = time.time() + a.fail_timeout
            while not os.path.exists(ck) and p.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(delay)
            pid = rank_pid(d, victim)
            if pid is None:
                return None
            os.kill(pid, signal.SIGKILL)
            return time.time()

        rc, dt, text, t_end, t_kill = self.run(self.mpirun(np_, base, extra), a.fail_timeout, slug + "-fault",
                                                killer)
        m = re.search(r"failpoint: .* at unix time ([0-9.]+)", text)
        t_fault = float(m.group(1)) if m else t_kill
        if rc == "HANG":
            outcome = f"HANG (killed after {a.fail_timeout} s)"
            bad.append("the broken run hung")
        elif rc == 0:
            outcome = "finished before the fault"
            bad.append("the fault never fired (the run finished)")
        else:
            named = re.search(rf"process rank {victim} .*(signal 9|Killed)", text)
            outcome = "clean error" if named else "error, rank not named"
            if not named:
                bad.append(f"mpirun's message does not name rank {victim}")
            if t_fault is None:
                bad.append("no failpoint/kill time")
        t_fail = t_end - t_fault if t_fault else None
        left = orphans_after(d)
        if left:
            bad.append(f"{len(left)} process(es) left after the broken run")
        ok, step, _, why = ckpt_state(self.cli, ck)
        tmps = temporaries(ck)
        spe = -(-self.n_train // (self.batch * (np_ - (servers if mode == "async" else 0))))
        state = f"step {step}" if ok else f"BAD: {why}"
        if not ok:
            bad.append(f"checkpoint after the fault: {why}")
        elif expect_prev_save:
            want = save_steps(epochs * spe, self.every, spe)[expect_prev_save - 2]
            state += " (previous save)" if step == want else f" (expected the previous save, step {want})"
            if step != want:
                bad.append(f"checkpoint at step {step}, expected the previous complete save at step {want}")
        # The resume: no failpoint, the same ranks.
        resume_argv = ["train", *self.train_args[2:], *self.mode_args(mode, servers), "--epochs", str(epochs),
                       "--resume", ck, "--checkpoint", ck, "-q"]
        rrc, rdt, rtext, _, _ = self.run(self.mpirun(np_, resume_argv), a.run_timeout, slug + "-resume")
        left2 = orphans_after(d)
        tmps_after = temporaries(ck)
        acc = ref = None
        if rrc != 0:
            bad.append(f"the resume failed (rc {rrc}): {rtext.strip()[-300:]}")
            outcome += "; resume FAILED"
        else:
            outcome += ", finished after resume"
            rok, _, hist, rwhy = ckpt_state(self.cli, ck)
            if not rok:
                bad.append(f"checkpoint after the resume: {rwhy}")
            elif hist is not None and hist != epochs:
                bad.append(f"history has {hist} epochs after the resume, expected {epochs}")
            acc = evaluate(self.cli, ck, self.test_args)
            ref = self.ref_accuracy(mode, np_, servers, epochs)
            tol = 1e-3 if mode == "sync" else a.async_tolerance
            if acc is None or ref is None or abs(acc - ref) > tol:
                bad.append(f"accuracy {acc} vs unbroken {ref} (tolerance {tol})")
        if left2:
            bad.append(f"{len(left2)} process(es) left after the resume")
        if tmps_after:
            bad.append(f"temporaries left after the resume: {tmps_after}")
        tmp_txt = ("none" if not tmps else f"{len(tmps)} left, " +
                   ("removed by resume" if not tmps_after else "STILL THERE after resume"))
        self.rows.append([name, fault, outcome, f"{t_fail:.1f}" if t_fail is not None else "?",
                          f"{rdt:.1f}" if rrc == 0 else "-",
                          f"{acc:.4f} ({ref:.4f})" if acc is not None and ref is not None else "-",
                          state, tmp_txt, str(len(left) + len(left2))])
        for b in bad:
            self.problems.append(f"{name}: {b}")
            log(f"    PROBLEM: {b}")
        if bad:
            log("    broken run output (last lines):\n      " + "\n      ".join(text.strip().splitlines()[-12:]))

    def mpi_cases(self):
        r = self.rng
        # A step pushes the gradients, then the push counter and the worker's
        # clock (staleness bound): call 3k+1 is inside a gradient push.
        push_n = 3 * r.randrange(20, 40) + 1
        self.case("async: worker (rank 2) killed inside a push", "async", 3, 1, 2, f"push:{push_n}")
        self.case("async: writer (rank 1) killed inside a push", "async", 3, 1, 1, f"push:{push_n + 30}")
        self.case("async: server (rank 0) killed answering a checkpoint gather", "async", 3, 1, 0, "send:5")
        self.case("async: writer killed mid checkpoint write", "async", 3, 1, 1, "ckpt_write:3",
                  expect_prev_save=3)
        self.case("async: writer killed before the checkpoint rename", "async", 3, 1, 1, "ckpt_rename:3",
                  expect_prev_save=3)
        self.case("async: server (rank 0) killed at a random time", "async", 3, 1, 0, random_kill=True)
        self.case("sync: worker (rank 1) killed inside an allreduce", "sync", 2, 0, 1,
                  f"allreduce:{r.randrange(40, 90)}")
        self.case("sync: writer (rank 0) killed mid checkpoint write", "sync", 2, 0, 0, "ckpt_write:4",
                  expect_prev_save=4)
        self.case("sync: writer killed before the checkpoint rename", "sync", 2, 0, 0, "ckpt_rename:2",
                  expect_prev_save=2)
        self.case("sync: random rank killed at a random time", "sync", 3, 0, None, random_kill=True)

    # ------------------------------------------------------------- Spark
    def spark_cases(self):
        sys.path.insert(0, os.path.join(REPO, "spark-barrier"))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.path.join(REPO, "spark-barrier"), os.environ.get("PYTHONPATH")) if p)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ["KINDLING_CLI"] = self.cli
        os.environ.setdefault("KINDLING_LIB", os.path.join(os.path.dirname(self.cli), "libkindling.so"))
        os.environ.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        import numpy as np
        from pyspark.sql import SparkSession

        from kindling_spark import driver, keeper
        from kindling_spark.estimator import Kindling

        spark = (SparkSession.builder.master("local[4]").appName("kindling-faults")
                 .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
                 .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
        spark.sparkContext.setLogLevel("OFF")
        x, y = make_blobs(os.path.join(self.work, "spark-train.csv"), 6000, 11)
        xt, yt = make_blobs(os.path.join(self.work, "spark-test.csv"), 600, 12)
        rdd = spark.sparkContext.parallelize([(int(a), b) for a, b in zip(y, x)], 2)
        import json

        def fit(mode, ckdir, env):
            for k in (driver.FAULT_ENV, driver.FAULT_RANK_ENV):
                os.environ.pop(k, None)
            os.environ.update(env)
            k = (Kindling().setNetwork(json.loads(SPEC)).setNumEpoch(4).setBatchSize(16).setNumWorker(2)
                 .setSeed(3).setOptimizer("momentum", lr=0.05).setSchedule("constant").setCheckpointEvery(20)
                 .setCheckpointDir(ckdir).setMaxRetries(2))
            k = k.setMode("sync") if mode == "sync" else k.setNumServer(1).setMaxStaleness(0)
            t0 = time.time()
            try:
                m = k.fit(rdd)
                return m, None, time.time() - t0
            except Exception as e:  # noqa: BLE001 - reported
                return None, e, time.time() - t0
            finally:
                for key in env:
                    os.environ.pop(key, None)

        refs = {}
        for mode in ("sync", "async"):
            m, err, dt = fit(mode, os.path.join(self.work, f"spark-ref-{mode}"), {})
            refs[mode] = float(np.mean(m.predict_classes(xt) == yt)) if m else None
            if err:
                self.problems.append(f"unbroken Spark {mode} fit failed: {err}")
            self.rows.append([f"Spark unbroken {mode} fit", "-", "finished" if m else "FAILED", "-", f"{dt:.1f}",
                              f"{refs[mode]:.4f}" if refs[mode] is not None else "-", "-", "-", "-"])
        step = self.rng.randrange(60, 300)
        cases = [
            ("Spark sync: writer's task (task 0, runs mpirun) killed mid checkpoint write", "sync",
             "ckpt_write:3 (rank 0 and its Spark task)",
             {driver.FAULT_RANK_ENV: f"LD_PRELOAD={self.shim} KD_FAILPOINT=ckpt_write:3 KD_FAILPOINT_RANK=0 "
                                       "KD_FAILPOINT_KILL=task"}),
            ("Spark async: worker rank 2 killed inside a push", "async", "push:61 (rank 2)",
             {driver.FAULT_RANK_ENV: f"LD_PRELOAD={self.shim} KD_FAILPOINT=push:61 KD_FAILPOINT_RANK=2"}),
            ("Spark sync: rank 1 killed at a random step", "sync", f"JobSpec.fault 1:{step} (seed {self.a.seed})",
             {driver.FAULT_ENV: f"1:{step}"}),
        ]
        for name, mode, fault, env in cases:
            if self.a.only and not re.search(self.a.only, name):
                continue
            log(f"--- {name}: {fault}")
            ckdir = os.path.join(self.work, re.sub(r"[^a-z0-9]+", "-", name.lower()))
            m, err, dt = fit(mode, ckdir, env)
            bad = []
            acc = float(np.mean(m.predict_classes(xt) == yt)) if m else None
            attempts = m.training_summary["attempts"] if m else []
            statuses = [at["status"] for at in attempts]
            if err:
                bad.append(f"the fit failed: {str(err)[-500:]}")
                outcome = "FAILED"
            elif len(attempts) < 2 or not attempts[-1].get("resumed"):
                bad.append(f"attempts {statuses}: no retry with resume")
                outcome = "finished without a retry"
            else:
                outcome = f"finished after retry ({' -> '.join(statuses)}), resumed"
                if len(attempts) != 2:  # one fault: exactly one failed attempt
                    bad.append(f"{len(attempts)} attempts for one fault: {statuses}")
            t_fail = attempts[0]["seconds"] if attempts else None
            t_rec = sum(at["seconds"] for at in attempts[1:]) if len(attempts) > 1 else None
            if acc is not None and refs[mode] is not None and abs(acc - refs[mode]) > self.a.async_tolerance:
                bad.append(f"accuracy {acc} vs unbroken {refs[mode]}")
            left = keeper.job_processes(m.training_summary["job_id"]) if m else keeper.job_processes()
            deadline = time.time() + 15
            while left and time.time() < deadline:
                time.sleep(0.2)
                left = keeper.job_processes(m.training_summary["job_id"]) if m else keeper.job_processes()
            if left:
                bad.append(f"{len(left)} process(es) left")
            tmps = [n for n in os.listdir(ckdir) if ".tmp" in n] if os.path.isdir(ckdir) else []
            ckpts = [n for n in os.listdir(ckdir) if n.endswith(".h5")] if os.path.isdir(ckdir) else []
            state = "-"
            if ckpts:
                ok, st, hist, why = ckpt_state(self.cli, os.path.join(ckdir, ckpts[0]))
                state = f"final step {st}, {hist} epochs" if ok else f"BAD: {why}"
                if not ok:
                    bad.append(why)
            if tmps:
                bad.append(f"temporaries left: {tmps}")
            self.rows.append([name, fault, outcome, f"{t_fail:.1f}" if t_fail else "?",
                              f"{t_rec:.1f}" if t_rec else "-",
                              f"{acc:.4f} ({refs[mode]:.4f})" if acc is not None and refs[mode] is not None else "-",
                              state, "none left" if not tmps else f"{len(tmps)} LEFT", str(len(left))])
            for b in bad:
                self.problems.append(f"{name}: {b}")
                log(f"    PROBLEM: {b}")
        spark.stop()

    def table(self):
        head = ["case", "fault", "outcome", "fail (s)", "resume (s)", "accuracy (unbroken)",
                "checkpoint after fault", "temp file", "orphans"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cli", default=os.environ.get("KD_CLI"), help="the kindling binary (MPI build)")
    p.add_argument("--shim", default=os.environ.get("KD_FAILPOINT_LIB"), help="libkd_failpoint.so")
    p.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    p.add_argument("--seed", type=int, default=None, help="for the random points and times (printed)")
    p.add_argument("--spark", action="store_true", help="also the Spark local-mode cases (needs pyspark)")
    p.add_argument("--no-mpi", action="store_true", help="skip the plain mpirun cases")
    p.add_argument("--fashion", action="store_true", help="Fashion-MNIST and the mlp instead of blobs")
    p.add_argument("--fail-timeout", type=float, default=90, help="a broken run must end within this (s)")
    p.add_argument("--run-timeout", type=float, default=300)
    p.add_argument("--async-tolerance", type=float, default=None,
                   help="async accuracy vs the unbroken run (default 0.03; 0.15 with --fashion, where a 2-epoch "
                        "async run varies that much from run to run)")
    p.add_argument("--only", help="run only the cases whose name matches this regular expression")
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--workdir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--assert", dest="check", action="store_true", help="exit 1 when any check fails")
    a = p.parse_args()
    if not a.cli or not os.path.isfile(a.cli):
        print("run_faults: --cli (or KD_CLI) must name the kindling binary", file=sys.stderr)
        return 2
    if not a.shim or not os.path.isfile(a.shim):
        print("run_faults: --shim (or KD_FAILPOINT_LIB) must name libkd_failpoint.so", file=sys.stderr)
        return 2
    if "--dist" not in subprocess.run([a.cli, "train", "--help"], capture_output=True, text=True).stdout:
        print("SKIP: this kindling has no --dist (built without MPI)")
        return 77
    if a.async_tolerance is None:
        a.async_tolerance = 0.15 if a.fashion else 0.03
    if a.seed is None:
        a.seed = random.randrange(1 << 16)
    log(f"run_faults: seed {a.seed} (rerun with --seed {a.seed} to reproduce)")
    t0 = time.time()
    m = Matrix(a)
    try:
        if not a.no_mpi:
            m.mpi_cases()
        if a.spark:
            m.spark_cases()
    finally:
        if not a.keep:
            shutil.rmtree(m.work, ignore_errors=True)
    table = m.table()
    log(f"\nseed {a.seed}, {time.time() - t0:.0f} s in all\n{table}")
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table + "\n")
    if m.problems:
        log(f"\n{len(m.problems)} problem(s):\n  " + "\n  ".join(m.problems))
        return 1 if a.check else 0
    log("\nall cases passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
