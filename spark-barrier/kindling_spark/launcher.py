"""The training launch: one Spark barrier stage of workers + servers tasks,
one MPI rank per task, retried and resumed by the driver.

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

Every process a task starts runs under a keeper (`python -m
kindling_spark.launcher keep`): a child subreaper that holds the read end
of a pipe from the task. When the command ends, the keeper kills whatever
it left behind; when the task goes away in any way (success, exception,
Spark killing the Python worker with SIGKILL on cancellation), the pipe
reaches EOF and the keeper kills the whole tree. So no rank, orted or
mpirun outlives its task.

Faults: a failed barrier stage fails the Spark job, and a rank that dies
ends mpirun. Either way the driver starts the stage again (up to
max_retries times) with `--resume` from the last checkpoint, which the
writer rank saves every epoch and every `checkpoint_every` steps. Resuming
needs the checkpoint directory to be visible to every task (one machine,
or shared storage across hosts).
"""
import ctypes
import dataclasses
import json
import logging
import math
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

log = logging.getLogger("kindling_spark")

HOST_PREFIX = "kdspark-t"
JOB_ENV = "KINDLING_SPARK_JOB"         # set on every process of a job: orphans can be found by it
FAULT_ENV = "KINDLING_SPARK_FAULT"     # test hook "RANK:STEP": kill that rank at that step, first attempt only
FAULT_RANK_ENV = "KINDLING_SPARK_FAULT_ENV"  # test hook "NAME=VALUE ...": set in the ranks' environment, first attempt only
TAIL_LINES = 40
BLOCK_ROWS = 4096                      # rows per block shipped from the map stage to a worker
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


class KindlingSparkError(RuntimeError):
    """Base class of the launcher's errors."""


class DataError(KindlingSparkError, ValueError):
    """The training rows are unusable (wrong length, bad label, empty...)."""


class NotEnoughSlotsError(KindlingSparkError):
    """The cluster cannot run every task of the barrier stage at once."""


class TrainingError(KindlingSparkError):
    """Training failed on every attempt; the message has the ranks' last lines."""


class TrainingCancelled(KindlingSparkError):
    """The job group was cancelled while training."""


# ------------------------------------------------------------------ keeper
def _prctl(option, value):
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children_map():
    """{ppid: [pid, ...]} for every process (Linux /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) >= 2:
            out.setdefault(int(fields[1]), []).append(int(entry))
    return out


def descendants(pid):
    """Every live descendant of pid."""
    children = _children_map()
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def _kill_tree(root, grace):
    """SIGTERM every descendant of root, then SIGKILL what is left after
    `grace` seconds, reaping (root is a subreaper, so orphans are its own)."""
    pids = descendants(root)
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace
    while time.time() < deadline:
        _reap()
        if not descendants(root):
            return
        time.sleep(0.05)
    while True:
        left = descendants(root)
        if not left:
            return
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
        _reap()


def _reap():
    """Reap every exited child; returns {pid: status}."""
    done = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done[pid] = status


def _exit_code(status):
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255


def keeper_main(argv):
    """`keep FD -- COMMAND...`: run COMMAND; kill its whole tree when FD
    (the read end of the task's pipe) reaches EOF or when it ends."""
    fd = int(argv[0])
    cmd = argv[2:] if len(argv) > 1 and argv[1] == "--" else argv[1:]
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    me = os.getpid()
    stop = {"why": None}

    def on_signal(signum, frame):
        stop["why"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    def child_setup():
        # The command dies with the keeper if the keeper itself is killed.
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    try:
        child = subprocess.Popen(cmd, preexec_fn=child_setup, close_fds=True)
    except OSError as e:
        print(f"kindling keeper: cannot start {cmd[0]}: {e}", file=sys.stderr)
        return 127
    code = None
    while True:
        for pid, status in _reap().items():
            if pid == child.pid:
                child.returncode = 0  # reaped here; keeps Popen from waiting again
                code = _exit_code(status)
        if code is not None:
            _kill_tree(me, grace=1.0)  # nothing outlives the command
            return code
        if stop["why"] is not None:
            _kill_tree(me, grace=2.0)
            return 128 + stop["why"]
        try:
            ready, _, _ = select.select([fd], [], [], 0.1)
        except InterruptedError:
            continue
        if ready:
            try:
                data = os.read(fd, 64)
            except OSError:
                data = b""
            if not data:  # the task is gone, or asked for the kill
                _kill_tree(me, grace=2.0)
                for pid, status in _reap().items():
                    if pid == child.pid:
                        child.returncode = 0
                return 143


def _module_command(module):
    """How to run one of this package's modules as a program: by file (no
    package import, so faster to start) when it is a plain file, else -m."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, module + ".py")
    if os.path.isfile(path):
        return [sys.executable, path]
    return [sys.executable, "-m", "kindling_spark." + module]


class KeptProcess:
    """A command under a keeper, owned by this process (see keeper_main).
    kill() and garbage collection end the whole tree."""

    def __init__(self, cmd, env=None, stdout=None, stderr=None, cwd=None):
        r, self._w = os.pipe()
        os.set_inheritable(r, True)
        try:
            self.proc = subprocess.Popen(_module_command("launcher") + ["keep", str(r), "--"]
                                         + list(cmd), env=env, stdout=stdout, stderr=stderr, cwd=cwd,
                                         pass_fds=(r,), start_new_session=True)
        except BaseException:
            os.close(self._w)
            raise
        finally:
            os.close(r)
        self.pid = self.proc.pid
        self.stdout = self.proc.stdout

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout=None):
        return self.proc.wait(timeout)

    def kill(self):
        """End the command and everything under it (idempotent)."""
        w, self._w = self._w, None
        if w is not None:
            os.close(w)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __del__(self):
        if getattr(self, "_w", None) is not None:
            os.close(self._w)
            self._w = None


def job_processes(job_id=None):
    """Pids of live processes started for a job (their environment carries
    KINDLING_SPARK_JOB=<job_id>), or for any job. For tests and diagnostics."""
    marker = f"{JOB_ENV}={job_id or ''}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z" and any(e == marker if job_id else e.startswith(marker) for e in env):
            found.append(int(entry))
    return found


# ------------------------------------------------------------------ config
# Training defaults, the same as `kindling train` and the C library's
# kd_train_config_default: one set of defaults whichever way a run starts.
# Kindling, KindlingClassifier and TrainConfig take them from here
# (tests/python/spark/test_defaults.py checks them against the CLI).
DEFAULT_EPOCHS = 5
DEFAULT_BATCH_SIZE = 64  # per worker


@dataclasses.dataclass
class TrainConfig:
    """Everything the ranks' command line needs. `network` is a preset
    name or JSON spec text; optimizer holds the CLI's optimizer flags."""
    network: str
    input_size: int
    num_classes: int
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = 2
    servers: int = 1
    mode: str = "async"
    max_staleness: int = -1
    seed: int = 42
    threads: int = 1
    optimizer: dict = dataclasses.field(default_factory=lambda: {"optimizer": "adam"})
    checkpoint_every: int = 0
    checkpoint_dir: str = None
    max_retries: int = 2
    mpi_args: tuple = ()
    spool_root: str = None
    slot_wait: float = 10.0
    context: str = "cpu"  # "gpu": workers train on a GPU (parameter servers stay on the CPU)

    @property
    def ranks(self):
        return self.workers + self.server_ranks

    @property
    def server_ranks(self):
        return self.servers if self.mode == "async" else 0


_OPTIMIZER_FLAGS = ("optimizer", "lr", "momentum", "nesterov", "beta1", "beta2", "eps", "weight_decay",
                    "schedule", "step_size", "gamma", "lr_min")


def train_argv(cfg, net_arg, spool_pattern, checkpoint, resume=False):
    """The `kindling` arguments every rank runs (after the binary), also
    usable for a plain mpirun of the same job. On resume the network,
    optimizer, seed and batch come from the checkpoint."""
    a = ["train", "--dist", cfg.mode]
    if cfg.mode == "async":
        a += ["--servers", str(cfg.servers), "--max-staleness", str(cfg.max_staleness)]
    a += ["--local-data", "--train-spool", spool_pattern, "--epochs", str(cfg.epochs),
          "--threads", str(cfg.threads), "--checkpoint", checkpoint]
    if cfg.checkpoint_every:
        a += ["--checkpoint-every", str(cfg.checkpoint_every)]
    if cfg.context != "cpu":
        a += ["--context", cfg.context]
    if resume:
        return a + ["--resume", checkpoint]
    a += ["--net", net_arg, "--batch-size", str(cfg.batch_size), "--seed", str(cfg.seed)]
    for key in _OPTIMIZER_FLAGS:
        v = cfg.optimizer.get(key)
        if v is None or v is False:
            continue
        flag = "--" + key.replace("_", "-")
        a += [flag] if v is True else [flag, str(v)]
    return a


def is_preset(network):
    return not network.lstrip().startswith("{")


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


# ------------------------------------------------------------- rows, blocks
def as_pair(row, label_name="label", features_name="features"):
    """(label, features) from a pair, a LabeledPoint, a Row (by field name)
    or a 1-D numpy array [label, feature...]."""
    import numpy as np

    if isinstance(row, np.ndarray):
        if row.ndim != 1 or row.shape[0] < 2:
            raise ValueError(f"an array row must be 1-D [label, features...], got shape {row.shape}")
        return row[0], row[1:]
    fields = getattr(row, "__fields__", None)  # pyspark Row
    if fields is not None and label_name in fields and features_name in fields:
        return row[label_name], row[features_name]
    if fields is None and hasattr(row, "label") and hasattr(row, "features"):  # LabeledPoint
        return row.label, row.features
    if isinstance(row, (tuple, list)) and len(row) == 2:
        return row[0], row[1]
    raise ValueError(f"a training row must be (label, features), a LabeledPoint, a Row with fields "
                     f"{label_name!r} and {features_name!r}, or an array [label, features...]; got "
                     f"{type(row).__name__}")


def _features(value, size):
    import numpy as np

    if value is None:
        raise ValueError("features are null")
    to_array = getattr(value, "toArray", None)  # pyspark vectors, dense or sparse
    try:
        x = np.asarray(to_array() if to_array is not None else value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"features are not numbers ({type(value).__name__} {str(value)[:60]!r})") from None
    if x.shape[0] != size:
        raise ValueError(f"{x.shape[0]} features, but the network takes {size}")
    if not np.isfinite(x).all():
        j = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"feature {j} is {x[j]}; features must be finite")
    return x


def _label(value, num_classes):
    if value is None:
        raise ValueError("label is null")
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        raise ValueError(f"label {value!r} is not a number")
    v = float(value)
    if not math.isfinite(v) or v != int(v) or not 0 <= v < num_classes:
        raise ValueError(f"label {value!r} is not a class of the network (whole numbers 0..{num_classes - 1})")
    return int(v)


def _convert_chunk(pairs, size, classes):
    """Labels int32 and features float32 [k, size] for k (label, features)
    pairs in bulk; None when anything is off (the caller then goes row by
    row to name the bad row)."""
    import numpy as np

    labels = [p[0] for p in pairs]
    y = np.asarray(labels)
    if y.dtype.kind not in "iuf" or y.ndim != 1:  # None, strings, bools and objects take the slow path
        return None
    yf = y.astype(np.float64)
    if not (np.isfinite(yf).all() and (yf == np.floor(yf)).all() and (yf >= 0).all() and (yf < classes).all()):
        return None
    feats = [p[1] for p in pairs]
    try:
        if all(isinstance(f, np.ndarray) for f in feats):
            x = np.stack([f.reshape(-1) for f in feats]).astype(np.float32, copy=False)
        elif all(hasattr(f, "toArray") for f in feats):
            x = np.stack([f.toArray() for f in feats]).astype(np.float32)
        else:
            x = np.asarray(feats, dtype=np.float32)
    except (TypeError, ValueError):
        return None
    if x.ndim != 2 or x.shape[1] != size or not np.isfinite(x).all():
        return None
    return yf.astype(np.int32), x


def make_blocks(cfg, input_partitions, label_name="label", features_name="features"):
    """The map-side function: each input partition's rows, checked, as
    numpy blocks (labels int32, features float32 [k, size]) keyed by the
    barrier task (rank) that trains on them. With `workers` input
    partitions, partition w goes whole and in order to worker w; otherwise
    rows are dealt round-robin. A bad row becomes a single ("error",
    message) block, which the barrier task reports as a DataError (an
    exception here would look like a lost task and be retried)."""
    S, W, size, classes = cfg.server_ranks, cfg.workers, cfg.input_size, cfg.num_classes
    same = W == input_partitions

    def blocks(index, first, chunk):
        import numpy as np

        pairs = [as_pair(r, label_name, features_name) for r in chunk]
        got = _convert_chunk(pairs, size, classes)
        if got is None:  # find and name the first bad row
            for i, (label, feats) in enumerate(pairs, first):
                try:
                    _label(label, classes)
                    _features(feats, size)
                except ValueError as e:
                    raise ValueError(f"input partition {index}, row {i}: {e}") from None
            raise ValueError(f"input partition {index}: rows {first}..{first + len(chunk) - 1} could not be "
                             f"converted together")
        y, x = got
        if same:
            return [(S + index, ("block", y, x))]
        owner = (index + np.arange(first, first + len(chunk))) % W
        return [(S + w, ("block", y[owner == w], x[owner == w])) for w in range(W) if (owner == w).any()]

    def run(index, rows):
        chunk, first = [], 0
        try:
            for row in rows:
                chunk.append(row)
                if len(chunk) >= BLOCK_ROWS:
                    yield from blocks(index, first, chunk)
                    first += len(chunk)
                    chunk = []
            if chunk:
                yield from blocks(index, first, chunk)
        except ValueError as e:
            yield S, ("error", str(e))

    return run


def partition_for_ranks(rdd, cfg, label_name="label", features_name="features", direct=False):
    """The rows as cfg.ranks partitions of blocks: partitions 0..S-1 empty
    (servers), S+w holding worker w's rows. `direct` (sync mode with one
    input partition per worker) skips the shuffle: the barrier stage then
    runs on the input partitions themselves, which Spark allows unless the
    input's last stage narrows partitions (union, coalesce)."""
    run = make_blocks(cfg, rdd.getNumPartitions(), label_name, features_name)
    keyed = rdd.mapPartitionsWithIndex(run)
    if direct:
        return keyed.map(lambda kv: kv[1], preservesPartitioning=True)
    return keyed.partitionBy(cfg.ranks, lambda k: k).values()


# -------------------------------------------------------------- task side
def _local_address_towards(host):
    """This machine's address on the route to host (the driver)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def _write_atomic(path, text):
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _checkpoint_step(path):
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
        if _checkpoint_step(job.checkpoint) >= step:
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
    _write_atomic(table_path, json.dumps(table))
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(job.secret)
    with open(agent, "w") as f:
        f.write("#!/bin/sh\nexec " + " ".join(map(shlex.quote, _module_command("rendezvous"))) + ' agent "$@"\n')
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
                _write_atomic(os.path.join(job.spool_dir, "net.json"), cfg.network)
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
        import shutil

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


# ------------------------------------------------------------ driver side
def available_slots(sc):
    """Tasks the cluster can run at once (what a barrier stage needs)."""
    jsc = sc._jsc.sc()
    try:
        rp = jsc.resourceProfileManager().defaultResourceProfile()
        return int(jsc.maxNumConcurrentTasks(rp))
    except Exception:
        cpus = int(sc.getConf().get("spark.task.cpus", "1"))
        return sc.defaultParallelism // max(1, cpus)


def check_slots(sc, cfg):
    need = cfg.ranks
    deadline = time.time() + max(0.0, cfg.slot_wait)
    while True:
        have = available_slots(sc)
        if have >= need:
            return have
        if sc.master.startswith("local") or time.time() >= deadline:
            break
        time.sleep(0.5)
    what = f"{cfg.workers} worker{'s' if cfg.workers != 1 else ''}"
    if cfg.server_ranks:
        what += f" + {cfg.server_ranks} server{'s' if cfg.server_ranks != 1 else ''}"
    hint = (f"run with master local[{need}] or more" if sc.master.startswith("local")
            else "add executors or cores (spark.executor.cores / spark.task.cpus per executor)")
    raise NotEnoughSlotsError(
        f"the training needs one barrier stage of {need} tasks ({what}) running at once, but the cluster "
        f"has {have} task slot{'s' if have != 1 else ''} (master {sc.master}); {hint}, or use fewer workers")


def _error_text(e):
    s = str(e)
    return s if len(s) < 4000 else s[:2000] + "\n...\n" + s[-2000:]


def _error_summary(e):
    """The most telling line of a Spark error: its last "SomethingError: ..." line."""
    import re

    lines = [l.strip() for l in str(e).splitlines() if re.match(r"\s*[\w.]+(Error|Exception|Exit)\b.*:", l)]
    return (lines[-1] if lines else str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)[:300]


def _rank_error(tail):
    """The first error line a rank printed ("kindling: --context gpu: no CUDA
    device: ..."), without Open MPI's prefixes; None if there is none."""
    import re

    for line in tail:
        m = re.search(r"\bkindling: (?!\(on |note:)(.*)", line)
        if m and not line.lstrip().startswith("kindling train:"):
            return m.group(1).strip()
    return None


def _is_cancellation(e):
    s = str(e)
    return "cancelled" in s and ("job group" in s or "Job" in s or "SparkContext" in s)


def _spark_is_gone(sc, e):
    """The JVM died (e.g. out of memory): no point in retrying."""
    try:
        from py4j.protocol import Py4JNetworkError
    except ImportError:
        Py4JNetworkError = ConnectionError
    return isinstance(e, (Py4JNetworkError, ConnectionRefusedError)) or sc._jsc is None


def run_training(sc, rdd, cfg, cli, on_line=None, timeout=None, label_name="label", features_name="features"):
    """Train on rdd's (label, features) rows; returns (checkpoint bytes,
    driver-side record of the run). Retries the barrier stage up to
    cfg.max_retries times, resuming from the last checkpoint."""
    from . import rendezvous

    check_slots(sc, cfg)
    job_id = uuid.uuid4().hex[:12]
    secret = rendezvous.new_secret()
    own_dir = cfg.checkpoint_dir is None
    ckpt_dir = tempfile.mkdtemp(prefix="kindling-job-") if own_dir else os.path.abspath(cfg.checkpoint_dir)
    os.makedirs(ckpt_dir, exist_ok=True)
    checkpoint = os.path.join(ckpt_dir, f"kindling-{job_id}.h5")
    spool_dir = os.path.join(cfg.spool_root or tempfile.gettempdir(), f"kindling-spool-{job_id}")
    fault = None
    if os.environ.get(FAULT_ENV):
        r, s = os.environ[FAULT_ENV].split(":")
        fault = (int(r), int(s))
    fault_env = tuple(os.environ.get(FAULT_RANK_ENV, "").split()) or None
    host = sc.getConf().get("spark.driver.host", "127.0.0.1")
    try:
        host = socket.gethostbyname(host)
    except OSError:
        pass
    hub = rendezvous.DriverHub(secret, host=host if not sc.master.startswith("local") else "127.0.0.1",
                               on_line=on_line)
    direct = cfg.server_ranks == 0 and rdd.getNumPartitions() == cfg.workers
    blocks = partition_for_ranks(rdd, cfg, label_name, features_name, direct)
    record = {"job_id": job_id, "attempts": [], "checkpoint": checkpoint, "spool_dir": spool_dir, "lines": hub.lines,
              "started": time.time()}
    try:
        last, last_step = None, None
        attempt = -1
        while attempt < cfg.max_retries:
            attempt += 1
            resume = attempt > 0 and os.path.exists(checkpoint)
            job = JobSpec(job_id=job_id, attempt=attempt, secret=secret, hub=tuple(hub.address), cfg=cfg, cli=cli,
                          spool_dir=spool_dir, checkpoint=checkpoint, resume=resume,
                          fault=fault if attempt == 0 else None, fault_env=fault_env if attempt == 0 else None,
                          timeout=timeout)
            t0 = time.time()
            hub.expect(attempt, cfg.ranks)
            try:
                results = dict(blocks.barrier().mapPartitions(lambda it, job=job: barrier_task(job, it)).collect())
            except Exception as e:  # py4j / PythonException: a task or executor failed
                if direct and "BarrierJobUnsupportedRDDChainException" in str(e):
                    # Spark refused the input's RDD chain in a barrier stage: shuffle after all.
                    direct = False
                    blocks = partition_for_ranks(rdd, cfg, label_name, features_name)
                    attempt -= 1
                    continue
                if _is_cancellation(e):
                    raise TrainingCancelled(f"training job {job_id} was cancelled") from None
                if _spark_is_gone(sc, e):
                    raise TrainingError(f"kindling: the Spark driver JVM is gone ({e}); not retrying") from e
                if "No module named 'kindling_spark'" in str(e):
                    raise KindlingSparkError(
                        "kindling: Spark's Python workers cannot import kindling_spark: install it where they run "
                        "(pip install ./spark-barrier), or ship it (spark-submit --py-files kindling_spark.zip, "
                        "sc.addPyFile) or set PYTHONPATH before the Spark JVM starts") from None
                last = f"the barrier stage failed: {_error_text(e)}"
                record["attempts"].append({"attempt": attempt, "status": "stage failed", "seconds": time.time() - t0})
                log.warning("kindling: attempt %d of %d failed (the barrier stage failed: %s); %s", attempt + 1,
                            cfg.max_retries + 1, _error_summary(e), "retrying" if attempt < cfg.max_retries
                            else "giving up")
                continue
            first = results[0]
            if first["status"] == "error":
                err = first["errors"][0]
                cls = DataError if err["kind"] == "data" else KindlingSparkError
                raise cls(f"kindling: {err['message']}")
            record["attempts"].append({"attempt": attempt, "status": first["status"], "rc": first["rc"],
                                       "resumed": resume, "seconds": time.time() - t0})
            if first["status"] == "ok":
                writer = next(r for r in results.values() if "checkpoint" in r)
                record["finished"] = time.time()
                return writer["checkpoint"], record
            tail = "\n".join(first["tail"])
            last = f"mpirun exited with status {first['rc']}; the ranks' last lines:\n{tail}"
            if first["rc"] == 2 or first["rc"] == 127:
                # A usage error, a device the hosts lack (--context gpu without a
                # CUDA device) or a missing program: retrying cannot help. The
                # ranks' own error line is the headline.
                raise TrainingError(f"kindling: training failed: {_rank_error(first['tail']) or last}\n({last})")
            step = _checkpoint_step(checkpoint) if os.path.exists(checkpoint) else -1
            if attempt > 0 and step == last_step:  # two failures in a row without progress: it is not transient
                raise TrainingError(f"kindling: training failed twice without progress; {last}")
            last_step = step
            log.warning("kindling: attempt %d of %d failed (mpirun status %d); %s", attempt + 1,
                        cfg.max_retries + 1, first["rc"], "retrying" if attempt < cfg.max_retries else "giving up")
        raise TrainingError(f"kindling: training failed on all {cfg.max_retries + 1} attempts; last: {last}")
    finally:
        hub.close()
        import shutil

        shutil.rmtree(spool_dir, ignore_errors=True)  # what tasks on this host left (killed ones)
        if own_dir:
            shutil.rmtree(ckpt_dir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "keep":
        sys.exit(keeper_main(sys.argv[2:]))
    print("usage: python -m kindling_spark.launcher keep FD -- COMMAND...", file=sys.stderr)
    sys.exit(2)
