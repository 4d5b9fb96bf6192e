"""The barrier task: what each of the stage's tasks does in one attempt.

Why mpirun with an rsh agent (and not ompi-server + connect/accept): the
ranks run the unchanged `kindling train --dist ... --local-data` command
line, exactly as under a plain `mpirun`, so a Spark run and an mpirun run
on the same partitions train the same weights, and no MPI code changes
(the connect/accept route needs a second wiring path in mpi/ and hung with
many concurrent joiners).

Hosts, as Horovod's Spark runner groups them: every task reports a host
key (host name, boot id and the namespaces it shares memory and network
in), and the tasks of one key are one host to Open MPI, holding as many
slots as tasks. mpirun runs in task 0 and starts the ranks of task 0's
host itself; on every other host the first task (the host's leader) runs
one orted, started through mpirun's rsh agent (rendezvous.agent_main),
which hands the orted command line to that task's launch service; the
host's ranks are orted's children. Ranks on one host exchange through
shared memory (btl vader; the parameter server's window is shared memory,
see mpi/ps.h), ranks on different hosts over TCP. Rank r runs on the host
of the task that rank_order gives it (ranks 0..S-1: the servers' tasks;
rank S+w: worker w, reading the spool file its task wrote from partition
S+w on that host), placed one app context at a time (mpirun's MPMD form),
so the Spark scheduler's placement is kept whatever it is. A host with more
ranks than cores makes the ranks yield when idle (mpi_yield_when_idle),
so they do not spin against each other. Each leader gets a private TMPDIR
(the daemons' session directories).

Every process a task starts runs under a keeper (keeper.py), so no rank,
orted or mpirun outlives its task; tasks without a process to run wait for
the result, holding their slot, and a task that fails fails the barrier
stage, which the driver retries.
"""
import dataclasses
import hashlib
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
from .keeper import JOB_ENV, KeptProcess, job_processes, module_command
from .params import TrainConfig, best_path, is_preset, train_argv

HOST_PREFIX = "kdspark-t"     # + the leader task's id: the name of a host mpirun reaches through the agent
TEST_HOSTS_ENV = "KINDLING_SPARK_TEST_HOSTS"  # test hook "N": deal the tasks into N hosts (one machine as N)
TAIL_LINES = 40


@dataclasses.dataclass
class JobSpec:
    """What every barrier task of one attempt gets (pickled into the task)."""
    job_id: str
    attempt: int
    secret: str
    hub: tuple
    cfg: TrainConfig
    cli: str         # the kindling binary the driver names (KINDLING_CLI there); None: each host finds its own
    spool_dir: str
    checkpoint: str
    resume: bool
    fault: tuple = None
    fault_env: tuple = None  # ("NAME=VALUE", ...) for the ranks (tests/faults: the failpoint preload)
    timeout: float = None
    test_hosts: int = 0      # test hook: deal the tasks into this many hosts (TEST_HOSTS_ENV)
    own_checkpoint_dir: bool = False  # the checkpoint's directory is the driver's temporary one, not the user's
    val: object = None       # a validation data set: a Broadcast of [(labels, features)] per worker task


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


def rank_pid(job_id, rank, cli):
    """The pid of a job's rank on this machine (its `kindling` process), or None."""
    marker = f"OMPI_COMM_WORLD_RANK={rank}".encode()
    for pid in job_processes(job_id):
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")) != os.path.basename(cli):
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    return pid
        except OSError:
            continue
    return None


def _fault_watch(job, stop):
    """Test hook: kill a rank once the checkpoint reaches a step (run by
    the leader of the rank's host)."""
    rank, step = job.fault
    while not stop.wait(0.05):
        if checkpoint_step(job.checkpoint) >= step:
            pid = rank_pid(job.job_id, rank, job.cli or "kindling")
            if pid is not None:
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


# ------------------------------------------------------------------- hosts
def host_key(task, test_hosts=0):
    """What makes two tasks one host for MPI: the machine (host name, boot
    id) and the namespaces that decide whether processes can share memory
    and see each other (ipc, mnt, net, pid, user, uts), as Horovod's
    host_hash does. The test hook deals the tasks into N hosts instead."""
    if test_hosts:
        return f"test-host-{task % test_hosts}"
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip())
    except OSError:
        pass
    for ns in ("ipc", "mnt", "net", "pid", "user", "uts"):
        try:
            parts.append(os.readlink(f"/proc/self/ns/{ns}"))
        except OSError:
            pass
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def usable_cores():
    """Cores this task's processes may run on: the affinity mask, capped by
    a cgroup (v2) CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cores


@dataclasses.dataclass
class Host:
    key: str
    tasks: list      # task ids in task order; tasks[0] is the leader
    name: str        # what mpirun calls it
    ranks: int = 0
    cores: int = 1

    @property
    def leader(self):
        return self.tasks[0]


def group_hosts(infos, order, local_name):
    """{host key: Host} for the attempt: task 0's host is mpirun's own
    (named local_name, so mpirun starts its ranks itself); every other
    host is named after its leader task, which the agent's table maps to
    that task's launch service."""
    hosts = {}
    for t, info in enumerate(infos):
        h = hosts.get(info["host"])
        if h is None:
            h = hosts[info["host"]] = Host(info["host"], [], local_name if t == 0 else f"{HOST_PREFIX}{t}",
                                           cores=info.get("cores") or 1)
        h.tasks.append(t)
    for t in order:
        hosts[infos[t]["host"]].ranks += 1
    return hosts


def app_contexts(infos, order, hosts, cfg, cli=None):
    """mpirun's MPMD contexts in rank order: (host name, slots, ranks, env,
    kindling binary) for each run of consecutive ranks on one host with the
    same GPU. The binary is the one the host's leader task found (a packed
    venv sits in a different directory on every executor), else `cli`."""
    contexts = []
    for t in order:
        h = hosts[infos[t]["host"]]
        gpus = infos[t].get("gpus") if cfg.context == "gpu" else None
        env = (f"CUDA_VISIBLE_DEVICES={gpus[0]}",) if gpus else ()
        if contexts and contexts[-1][0] == h.name and contexts[-1][3] == env and not gpus:
            contexts[-1][2] += 1
        else:
            contexts.append([h.name, len(h.tasks), 1, env, infos[h.leader].get("cli") or cli])
    return contexts


def local_tools(job, t, env):
    """This host's `kindling` binary (job.cli, else native.cli_path() here:
    KINDLING_CLI, the installed wheel's, a build tree's, $PATH) and a check
    that Open MPI's runtime is on the PATH the task's processes get: mpirun
    for task 0, orted (prted in Open MPI 5) for the hosts it reaches through
    the agent. Returns (cli, None) or (None, error record naming the host)."""
    from . import native

    where = f"executor host {socket.gethostname()} (task {t})"
    path = env.get("PATH", "")
    wanted = [("mpirun",)] if t == 0 else []
    wanted.append(("orted", "prted"))
    for names in wanted:
        if not any(shutil.which(n, path=path) for n in names):
            return None, {"kind": "setup", "message": (
                f"{where}: Open MPI's {' / '.join(names)} is not on the PATH of the Spark executor "
                f"(PATH={path}). Install Open MPI's runtime on every Spark worker (Debian/Ubuntu: apt-get install "
                f"openmpi-bin; RHEL: openmpi, then add its bin directory), or set spark.executorEnv.PATH to "
                f"include it")}
    if job.cli:
        if not os.access(job.cli, os.X_OK):
            return None, {"kind": "setup", "message": f"{where}: the kindling binary {job.cli} named by the driver "
                                                      f"is not here; unset KINDLING_CLI on the driver so each "
                                                      f"executor uses its own (the kindling-spark wheel's)"}
        return job.cli, None
    try:
        return native.cli_path(), None
    except native.NotFound as e:
        return None, {"kind": "setup", "message": f"{where}: {e}"}


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


def mpirun_command(job, infos, order, hosts, agent):
    """The mpirun command line: one app context per run of ranks on a host."""
    cfg = job.cfg
    net_arg = cfg.network if is_preset(cfg.network) else os.path.join(job.spool_dir, "net.json")
    val_pattern = os.path.join(job.spool_dir, "val-%w.spool") if job.val is not None else None
    argv = train_argv(cfg, net_arg, os.path.join(job.spool_dir, "part-%w.spool"), job.checkpoint, job.resume,
                      val_pattern)
    # The test hook's hosts share one machine, where Open MPI's view of who
    # shares memory differs from rank to rank: TCP only, as between machines.
    btl = "self,tcp" if job.test_hosts else "self,vader,tcp"
    cmd = ["mpirun", "--mca", "plm_rsh_agent", agent, "--mca", "plm_rsh_no_tree_spawn", "1",
           "--mca", "btl", btl, "--bind-to", "none"]
    if any(h.ranks > h.cores for h in hosts.values()):  # ranks outnumber cores: never spin against each other
        cmd += ["--mca", "mpi_yield_when_idle", "1"]
    cmd += list(cfg.mpi_args)
    common = ["-x", "OPENBLAS_NUM_THREADS", "-x", "OMP_NUM_THREADS", "-x", JOB_ENV,
              *[a for kv in job.fault_env or () for a in ("-x", kv)]]
    for i, (name, slots, n, env, cli) in enumerate(app_contexts(infos, order, hosts, cfg, job.cli)):
        if i:
            cmd.append(":")
        cmd += ["-np", str(n), "--host", f"{name}:{slots}", *common, *[a for kv in env for a in ("-x", kv)],
                cli, *argv]
    return cmd, argv


def agent_path(job):
    """mpirun's rsh agent: one path on every host (the job's spool
    directory), because mpirun hands its MCA settings, plm_rsh_agent among
    them, to every orted, and an orted whose agent path does not exist on
    its host stops at once ("plm_rsh_agent ... could not be found")."""
    return os.path.join(job.spool_dir, "rsh-agent")


def write_agent(job):
    """This host's copy of the agent (its own Python: a packed venv lives at
    a different path on every executor); every task writes it before the
    tasks join, atomically, so mpirun and each orted find it."""
    path = agent_path(job)
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write("#!/bin/sh\nexec " + " ".join(map(shlex.quote, module_command("rendezvous"))) + ' agent "$@"\n')
    os.replace(tmp, path)


def _run_mpirun(job, infos, order, hosts, workdir, env, relay):
    """Task 0: write the agent's table, secret and wrapper, run mpirun under
    a keeper, relay its lines. Returns (exit code, last lines)."""
    table = {h.name: infos[h.leader]["address"] for h in hosts.values() if h.leader != 0}
    table_path = os.path.join(workdir, "table.json")
    secret_path = os.path.join(workdir, "secret")
    agent = agent_path(job)
    write_atomic(table_path, json.dumps(table))
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(job.secret)
    env = dict(env, KINDLING_RDV_TABLE=table_path, KINDLING_RDV_SECRET_FILE=secret_path)
    cmd, argv = mpirun_command(job, infos, order, hosts, agent)
    where = ", ".join(f"{h.ranks} on {'this host' if h.leader == 0 else h.name}"
                      f"{' (' + str(h.cores) + ' cores)' if h.ranks > h.cores else ''}" for h in hosts.values()
                      if h.ranks)
    relay.send_line(f"kindling: attempt {job.attempt + 1}, " +
                    (f"resuming from {job.checkpoint}" if job.resume else "starting") +
                    f": {job.cfg.ranks} ranks on {sum(1 for h in hosts.values() if h.ranks)} host(s) ({where}): "
                    + " ".join(shlex.quote(c) for c in [infos[0].get("cli") or job.cli, *argv]))
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


def spool_rows(job, t, rows):
    """Write the task's blocks of rows into its spool file; returns the row
    count. ("error", message) blocks become a ValueError."""
    from . import spool

    path = os.path.join(job.spool_dir, f"task-{t}.spool")
    with spool.SpoolWriter(path, (job.cfg.input_size,), labelled=True) as w:
        for kind, *payload in rows:
            if kind == "error":
                raise ValueError(payload[0])
            if kind == "spool":  # ("spool", path, count): a whole spool file written by the JVM (jvm_task)
                w.abort()
                os.replace(payload[0], path)
                return payload[1]
            w.append(payload[1], payload[0])
    return w.count


def spool_validation(job, t):
    """A worker task's share of the validation data set into its spool file
    (every worker gets one, possibly empty: the ranks add their figures up)."""
    from . import spool

    y, x = job.val.value[t - job.cfg.server_ranks]
    with spool.SpoolWriter(os.path.join(job.spool_dir, f"val-task-{t}.spool"), (job.cfg.input_size,),
                           labelled=True) as w:
        if len(y):
            w.append(x, y)


class _SetupFailed(Exception):
    pass


def barrier_task(job, rows, ctx=None):
    """One barrier task: spool its rows, join the others, (a host's leader)
    serve its orted, (task 0) run mpirun; returns one record per task (the
    writer's carries the model). ctx: the task's BarrierTaskContext (what
    jvm_task hands in for a JVM task: partitionId, getTaskInfos, resources)."""
    from . import rendezvous

    if ctx is None:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
    t = ctx.partitionId()
    cfg = job.cfg
    tasks = len(ctx.getTaskInfos())
    if tasks != cfg.ranks:  # a DataFrame whose partitions changed at run time (adaptive execution)
        for _ in rows:
            pass
        return [(t, {"status": "partitions", "tasks": tasks})]
    server = t < cfg.server_ranks
    os.makedirs(job.spool_dir, exist_ok=True)
    # The driver's temporary checkpoint directory exists only on the driver's
    # machine; the writer rank may run on another (`kindling train` refuses a
    # --checkpoint whose directory is missing). A user's checkpointDir must be
    # shared storage instead (README: Run on a Spark cluster).
    ckpt_dir = os.path.dirname(job.checkpoint)
    made_ckpt_dir = job.own_checkpoint_dir and not os.path.isdir(ckpt_dir)
    if made_ckpt_dir:
        os.makedirs(ckpt_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"t{t}-", dir=job.spool_dir)  # private: the daemons' TMPDIR, the agent's files
    env = _task_env(job, workdir)
    error, count = None, 0
    service = link = None
    started = time.time()
    kept = []
    my_rank = None  # known once every task has joined
    stop_fault = threading.Event()
    try:
        cli, error = local_tools(job, t, env)
        try:
            if error is not None:
                raise _SetupFailed()
            if not is_preset(cfg.network):
                write_atomic(os.path.join(job.spool_dir, "net.json"), cfg.network)
            write_agent(job)
            if server:
                for _ in rows:
                    pass
            else:
                count = spool_rows(job, t, rows)
                if job.val is not None:
                    spool_validation(job, t)
        except _SetupFailed:
            pass
        except (ValueError, TypeError) as e:
            error = {"kind": "data", "message": str(e)}
        except OSError as e:
            error = {"kind": "setup", "message": f"task {t}: {e}"}

        def run_orted(command):
            p = KeptProcess(["bash", "-c", command], env=env, cwd=workdir)
            kept.append(p)
            return p

        address = None
        if error is None:
            bind = _local_address_towards(job.hub[0])
            service = rendezvous.LaunchService(job.secret, f"{HOST_PREFIX}{t}", run_orted, bind_host=bind)
            address = list(service.address)
        link = rendezvous.TaskLink(job.hub, job.secret, job.attempt, t)
        infos = link.join({"task": t, "error": error, "rows": count, "address": address, "host": host_key(t, job.test_hosts),
                           "cores": usable_cores(), "gpus": task_gpus(ctx), "cli": cli,
                           "spool_seconds": round(time.time() - started, 3)})
        errors = [i["error"] for i in infos if i["error"]]
        if not errors and sum(i["rows"] for i in infos) == 0:
            errors = [{"kind": "data", "message": "the training data is empty (every partition has 0 rows)"}]
        if errors:
            return [(t, {"status": "error", "errors": errors})]
        order = rank_order(infos, cfg.server_ranks)
        my_rank = order.index(t)
        hosts = group_hosts(infos, order, socket.gethostname())
        if not server:  # the rank reads part-<its worker index>, on this host
            part = os.path.join(job.spool_dir, f"part-{my_rank - cfg.server_ranks}.spool")
            try:  # left by a task of a failed attempt that was killed before its cleanup
                os.unlink(part)
            except FileNotFoundError:
                pass
            os.symlink(f"task-{t}.spool", part)
            if job.val is not None:
                val = os.path.join(job.spool_dir, f"val-{my_rank - cfg.server_ranks}.spool")
                try:
                    os.unlink(val)
                except FileNotFoundError:
                    pass
                os.symlink(f"val-task-{t}.spool", val)
        if job.fault and hosts[infos[order[job.fault[0]]]["host"]].leader == t:
            threading.Thread(target=_fault_watch, args=(job, stop_fault), daemon=True).start()

        if t == 0:
            link.send_line(f"kindling: {sum(i['rows'] for i in infos)} rows spooled by {cfg.workers} worker "
                           f"tasks (slowest {max(i['spool_seconds'] for i in infos):.2f} s); launching "
                           f"{cfg.ranks} ranks")
            started = time.time()
            rc, tail = _run_mpirun(job, infos, order, hosts, workdir, env, link)
            link.send_line(f"kindling: mpirun exited with status {rc} after {time.time() - started:.1f} s")
            link.done(rc, tail)
        rc, tail = link.result()
        record = {"status": "ok" if rc == 0 else "failed", "rc": rc, "tail": tail, "rows": count}
        if rc == 0 and my_rank == cfg.server_ranks:  # the writer: worker 0
            with open(job.checkpoint, "rb") as f:
                record["checkpoint"] = f.read()
            if cfg.keep_best and os.path.exists(best_path(job.checkpoint)):
                with open(best_path(job.checkpoint), "rb") as f:
                    record["best"] = f.read()
            if job.own_checkpoint_dir:  # its bytes go to the driver; nothing is left on this host
                for path in (job.checkpoint, best_path(job.checkpoint)):
                    if os.path.exists(path):
                        os.unlink(path)
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
            names = [f"task-{t}.spool", f"val-task-{t}.spool"]
            if my_rank is not None:
                names += [f"part-{my_rank - cfg.server_ranks}.spool", f"val-{my_rank - cfg.server_ranks}.spool"]
            for name in names:
                try:
                    os.unlink(os.path.join(job.spool_dir, name))
                except OSError:
                    pass
        shutil.rmtree(workdir, ignore_errors=True)
        if made_ckpt_dir:
            try:
                os.rmdir(ckpt_dir)  # only when empty: another task's checkpoint stays
            except OSError:
                pass
        if my_rank is not None:  # training is over for every task: the last one out removes the directory
            for leftover in ("net.json", "rsh-agent"):
                try:
                    os.unlink(os.path.join(job.spool_dir, leftover))
                except OSError:
                    pass
            try:
                os.rmdir(job.spool_dir)
            except OSError:
                pass


RESULT_SCHEMA = "task int, record binary"


def frame_task(job, batches):
    """barrier_task for a DataFrame stage (mapInArrow, barrier=True): Arrow
    batches in (data.frame_for_ranks), one row (task, pickled record) out."""
    import pickle

    import pyarrow as pa

    from .data import blocks_from_arrow

    (t, record), = barrier_task(job, blocks_from_arrow(batches, job.cfg))
    yield pa.RecordBatch.from_arrays([pa.array([t], pa.int32()), pa.array([pickle.dumps(record)], pa.binary())],
                                     names=["task", "record"])
