"""The barrier task: what each of the stage's tasks does in one attempt.

Why mpirun with an rsh agent (and not ompi-server + connect/accept): the
ranks run the unchanged `kindling train --dist ... --local-data` command
line, exactly as under a plain `mpirun`, so a Spark run and an mpirun run
on the same partitions train the same weights, and no MPI code changes
(the connect/accept route needs a second wiring path in mpi/ and hung with
many concurrent joiners). mpirun runs in barrier task 0; its rsh agent
(rendezvous.agent_main) hands each orted command line to the barrier task
that owns that "host", which runs orted as its child. Every task is its
own host named kdspark-t<i> (hosts that do not resolve, so mpirun never
forks a daemon locally), holding one slot, so rank i runs under task i:
ranks 0..S-1 are the servers (async mode) and rank S+w is worker w, which
reads the spool file its task wrote from partition S+w. Each task gets a
private TMPDIR (the daemons' session directories), and the ranks talk over
TCP (btl self,tcp), which also works for several tasks on one machine, as
in local[N].

Every process a task starts runs under a keeper (keeper.py), so no rank,
orted or mpirun outlives its task.
"""
import dataclasses
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from .files import write_atomic
from .keeper import JOB_ENV, KeptProcess, descendants, module_command
from .params import TrainConfig, is_preset, train_argv

HOST_PREFIX = "kdspark-t"
TAIL_LINES = 40


@dataclasses.dataclass
class JobSpec:
    """What every barrier task of one attempt gets (pickled into the task)."""
    job_id: str
    attempt: int
    secret: str
    hub: tuple
    cfg: TrainConfig
    cli: str
    spool_dir: str
    checkpoint: str
    resume: bool
    fault: tuple = None
    fault_env: tuple = None  # ("NAME=VALUE", ...) for the ranks (tests/faults: the failpoint preload)
    timeout: float = None


def _local_address_towards(host):
    """This machine's address on the route to host (the driver)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def checkpoint_step(path):
    """The checkpoint's step (-1 when unreadable): h5py when present
    (cheap to poll), else the C library."""
    try:
        import h5py
    except ImportError:
        try:
            from . import native

            return int(native.checkpoint_info(path)["steps"])
        except Exception:
            return -1
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f["training"].attrs["step"])
    except Exception:
        return -1


def _fault_watch(job, rank, orted_proc, stop):
    """Test hook: kill this task's rank once the checkpoint reaches a step."""
    step = job.fault[1]
    while not stop.wait(0.05):
        if checkpoint_step(job.checkpoint) >= step:
            for pid in descendants(orted_proc.pid):
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    continue
                if os.path.basename(exe) == os.path.basename(job.cli):
                    print(f"kindling: test hook: killing rank {rank} (pid {pid}) at checkpoint step >= {step}",
                          file=sys.stderr)
                    os.kill(pid, signal.SIGKILL)
            return


def task_gpus(ctx):
    """The GPU addresses Spark gave this task (spark.task.resource.gpu.amount
    with a discovery script), or None when it scheduled none."""
    try:
        info = ctx.resources().get("gpu")
    except Exception:  # an older Spark, or resources not configured
        return None
    return list(info.addresses) if info is not None and info.addresses else None


def gpu_env(env, cfg, gpus):
    """One GPU per rank: a task's rank is alone on its (virtual) host, so its
    local rank is 0 and `--context gpu` takes device 0 of what it can see;
    CUDA_VISIBLE_DEVICES makes that the GPU Spark assigned to the task."""
    if cfg.context == "gpu" and gpus:
        env = dict(env, CUDA_VISIBLE_DEVICES=",".join(gpus[:1]))
    return env


def _task_env(job, workdir):
    env = dict(os.environ)
    env.update({JOB_ENV: job.job_id, "TMPDIR": workdir, "OPENBLAS_NUM_THREADS": str(job.cfg.threads),
                "OMP_NUM_THREADS": str(job.cfg.threads)})
    if os.geteuid() == 0:  # Open MPI refuses root without both
        env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    return env


def rank_order(infos, servers):
    """Task ids by rank: the server tasks first, then the worker tasks with
    a non-empty one first, since worker 0 writes the checkpoint and reports
    the final accuracy on its own rows."""
    workers = list(range(servers, len(infos)))
    first = next((t for t in workers if infos[t]["rows"] > 0), workers[0])
    return list(range(servers)) + [first] + [t for t in workers if t != first]


def _run_mpirun(job, infos, order, workdir, env, relay):
    """Task 0: write the agent's table, secret and wrapper, run mpirun under
    a keeper, relay its lines. Returns (exit code, last lines)."""
    n = job.cfg.ranks
    table = {f"{HOST_PREFIX}{t}": infos[t]["address"] for t in order}  # in rank order
    table_path = os.path.join(workdir, "table.json")
    secret_path = os.path.join(workdir, "secret")
    agent = os.path.join(workdir, "rsh-agent")
    write_atomic(table_path, json.dumps(table))
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(job.secret)
    with open(agent, "w") as f:
        f.write("#!/bin/sh\nexec " + " ".join(map(shlex.quote, module_command("rendezvous"))) + ' agent "$@"\n')
    os.chmod(agent, 0o700)
    env = dict(env, KINDLING_RDV_TABLE=table_path, KINDLING_RDV_SECRET_FILE=secret_path)
    net_arg = job.cfg.network if is_preset(job.cfg.network) else os.path.join(job.spool_dir, "net.json")
    cmd = ["mpirun", "--mca", "plm_rsh_agent", agent, "--mca", "plm_rsh_no_tree_spawn", "1",
           "--mca", "btl", "self,tcp", "--bind-to", "none",
           "-H", ",".join(f"{h}:1" for h in table), "-np", str(n),  # rank r on the r-th host
           "-x", "OPENBLAS_NUM_THREADS", "-x", "OMP_NUM_THREADS", "-x", JOB_ENV, *job.cfg.mpi_args,
           *[a for kv in job.fault_env or () for a in ("-x", kv)],
           job.cli, *train_argv(job.cfg, net_arg, os.path.join(job.spool_dir, "part-%w.spool"), job.checkpoint,
                                job.resume)]
    relay.send_line(f"kindling: attempt {job.attempt + 1}, " +
                    (f"resuming from {job.checkpoint}" if job.resume else "starting") + ": " +
                    " ".join(shlex.quote(c) for c in cmd[cmd.index(job.cli):]))
    tail = []
    try:
        proc = KeptProcess(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir)
    except OSError as e:
        return 127, [f"cannot start mpirun: {e}"]
    timer = None
    if job.timeout:
        timer = threading.Timer(job.timeout, proc.kill)
        timer.daemon = True
        timer.start()
    try:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail = (tail + [line])[-TAIL_LINES:]
            relay.send_line(line)
        return proc.wait(), tail
    finally:
        if timer:
            timer.cancel()
        proc.kill()


def barrier_task(job, rows):
    """One barrier task: spool its rows, serve its orted, (task 0) run
    mpirun; returns one record per task (the writer's carries the model)."""
    from pyspark import BarrierTaskContext

    from . import rendezvous, spool

    ctx = BarrierTaskContext.get()
    t = ctx.partitionId()
    cfg = job.cfg
    server = t < cfg.server_ranks
    os.makedirs(job.spool_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"t{t}-", dir=job.spool_dir)  # private: orted's TMPDIR, the agent's files
    env = gpu_env(_task_env(job, workdir), cfg, task_gpus(ctx))
    error, count = None, 0
    service = link = None
    started = time.time()
    kept = []
    my_rank = [None]  # known once every task has joined
    stop_fault = threading.Event()
    try:
        try:
            if not is_preset(cfg.network):
                write_atomic(os.path.join(job.spool_dir, "net.json"), cfg.network)
            if server:
                for _ in rows:
                    pass
            else:
                path = os.path.join(job.spool_dir, f"task-{t}.spool")
                with spool.SpoolWriter(path, (cfg.input_size,), labelled=True) as w:
                    for kind, *payload in rows:
                        if kind == "error":
                            raise ValueError(payload[0])
                        w.append(payload[1], payload[0])
                count = w.count
        except (ValueError, TypeError) as e:
            error = {"kind": "data", "message": str(e)}
        except OSError as e:
            error = {"kind": "setup", "message": f"task {t}: {e}"}

        def run_orted(command):
            p = KeptProcess(["bash", "-c", command], env=env, cwd=workdir)
            kept.append(p)
            if job.fault and job.fault[0] == my_rank[0]:
                threading.Thread(target=_fault_watch, args=(job, t, p, stop_fault), daemon=True).start()
            return p

        address = None
        if error is None:
            bind = _local_address_towards(job.hub[0])
            service = rendezvous.LaunchService(job.secret, f"{HOST_PREFIX}{t}", run_orted, bind_host=bind)
            address = list(service.address)
        link = rendezvous.TaskLink(job.hub, job.secret, job.attempt, t)
        infos = link.join({"task": t, "error": error, "rows": count, "address": address,
                           "spool_seconds": round(time.time() - started, 3)})
        errors = [i["error"] for i in infos if i["error"]]
        if not errors and sum(i["rows"] for i in infos) == 0:
            errors = [{"kind": "data", "message": "the training data is empty (every partition has 0 rows)"}]
        if errors:
            return [(t, {"status": "error", "errors": errors})]
        order = rank_order(infos, cfg.server_ranks)
        my_rank[0] = order.index(t)
        if not server:  # the rank reads part-<its worker index>
            part = os.path.join(job.spool_dir, f"part-{my_rank[0] - cfg.server_ranks}.spool")
            try:  # left by a task of a failed attempt that was killed before its cleanup
                os.unlink(part)
            except FileNotFoundError:
                pass
            os.symlink(f"task-{t}.spool", part)

        if t == 0:
            link.send_line(f"kindling: {sum(i['rows'] for i in infos)} rows spooled by {cfg.workers} worker "
                           f"tasks (slowest {max(i['spool_seconds'] for i in infos):.2f} s); launching "
                           f"{cfg.ranks} ranks")
            started = time.time()
            rc, tail = _run_mpirun(job, infos, order, workdir, env, link)
            link.send_line(f"kindling: mpirun exited with status {rc} after {time.time() - started:.1f} s")
            link.done(rc, tail)
        rc, tail = link.result()
        record = {"status": "ok" if rc == 0 else "failed", "rc": rc, "tail": tail, "rows": count}
        if rc == 0 and my_rank[0] == cfg.server_ranks:  # the writer: worker 0
            with open(job.checkpoint, "rb") as f:
                record["checkpoint"] = f.read()
        return [(t, record)]
    finally:
        stop_fault.set()
        if link is not None:
            link.close()
        if service is not None:
            service.close()
        for p in kept:
            p.kill()
        if not server:
            names = [f"task-{t}.spool"]
            if my_rank[0] is not None:
                names.append(f"part-{my_rank[0] - cfg.server_ranks}.spool")
            for name in names:
                try:
                    os.unlink(os.path.join(job.spool_dir, name))
                except OSError:
                    pass
        shutil.rmtree(workdir, ignore_errors=True)
        if my_rank[0] is not None:  # training is over for every task: the last one out removes the directory
            for leftover in ("net.json",):
                try:
                    os.unlink(os.path.join(job.spool_dir, leftover))
                except OSError:
                    pass
            try:
                os.rmdir(job.spool_dir)
            except OSError:
                pass
