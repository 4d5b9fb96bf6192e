"""The driver side of a fit: one Spark barrier stage of workers + servers
tasks (task.barrier_task), one MPI rank per task, retried and resumed.

Faults: a failed barrier stage fails the Spark job, and a rank that dies
ends mpirun. Either way the driver starts the stage again (up to
max_retries times) with `--resume` from the last checkpoint, which the
writer rank saves every epoch and every `checkpoint_every` steps. Resuming
needs the checkpoint directory to be visible to every task (one machine,
or shared storage across hosts).
"""
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid

from .data import frame_for_ranks, frame_partitions, partition_for_ranks, training_frame, validation_shares
from .errors import DataError, KindlingSparkError, NotEnoughSlotsError, TrainingCancelled, TrainingError
from .files import write_atomic
from .task import RESULT_SCHEMA, TEST_HOSTS_ENV, JobSpec, barrier_task, checkpoint_step, frame_task

log = logging.getLogger("kindling_spark")

FAULT_ENV = "KINDLING_SPARK_FAULT"     # test hook "RANK:STEP": kill that rank at that step, first attempt only
FAULT_RANK_ENV = "KINDLING_SPARK_FAULT_ENV"  # test hook "NAME=VALUE ...": set in the ranks' environment, first attempt only


def available_slots(sc):
    """Tasks the cluster can run at once (what a barrier stage needs)."""
    jsc = sc._jsc.sc()
    try:
        rp = jsc.resourceProfileManager().defaultResourceProfile()
        return int(jsc.maxNumConcurrentTasks(rp))
    except Exception:
        cpus = int(sc.getConf().get("spark.task.cpus", "1"))
        return sc.defaultParallelism // max(1, cpus)


def check_slots(sc, cfg, slots=None, master=None):
    """Wait up to cfg.slot_wait for cfg.ranks task slots; NotEnoughSlotsError
    if there are fewer. slots (a callable) and master replace sc's (the JVM's
    launcher, jvm_driver, has no Python SparkContext)."""
    need = cfg.ranks
    slots = slots or (lambda: available_slots(sc))
    master = master or sc.master
    deadline = time.time() + max(0.0, cfg.slot_wait)
    while True:
        have = slots()
        if have >= need:
            return have
        if master.startswith("local") or time.time() >= deadline:
            break
        time.sleep(0.5)
    what = f"{cfg.workers} worker{'s' if cfg.workers != 1 else ''}"
    if cfg.server_ranks:
        what += f" + {cfg.server_ranks} server{'s' if cfg.server_ranks != 1 else ''}"
    hint = (f"run with master local[{need}] or more" if master.startswith("local")
            else "add executors or cores (spark.executor.cores / spark.task.cpus per executor)")
    raise NotEnoughSlotsError(
        f"the training needs one barrier stage of {need} tasks ({what}) running at once, but the cluster "
        f"has {have} task slot{'s' if have != 1 else ''} (master {master}); {hint}, or use fewer workers")


def _error_text(e):
    s = str(e)
    return s if len(s) < 4000 else s[:2000] + "\n...\n" + s[-2000:]


def _error_summary(e):
    """The most telling line of a Spark error: its last "SomethingError: ..." line."""
    lines = [l.strip() for l in str(e).splitlines() if re.match(r"\s*[\w.]+(Error|Exception|Exit)\b.*:", l)]
    return (lines[-1] if lines else str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)[:300]


def _rank_error(tail):
    """The first error line a rank printed ("kindling: --context gpu: no CUDA
    device: ..."), without Open MPI's prefixes; None if there is none."""
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


class Stage:
    """The barrier stage of an attempt over the training rows: an RDD's
    (data.as_pair forms) as numpy blocks, or a DataFrame's label and
    features columns as Arrow batches (data.frame_for_ranks; without pyarrow
    and pandas its rows as an RDD). `direct`: the input's partitions are the
    workers' (no shuffle)."""

    def __init__(self, data, cfg, label_name, features_name, direct):
        from pyspark.sql import DataFrame

        self.cfg, self.direct = cfg, direct
        self.frame = self.blocks = None
        if isinstance(data, DataFrame):
            self.frame = frame_for_ranks(data, cfg, label_name, features_name, direct)
            if self.frame is None:
                data = training_frame(data, label_name, features_name).rdd.map(tuple)
                label_name, features_name = "label", "features"
        if self.frame is None:
            self.blocks = partition_for_ranks(data, cfg, label_name, features_name, direct)

    def run(self, job):
        """{task: record} of every task of one attempt."""
        if self.frame is not None:
            import pickle

            out = self.frame.mapInArrow(lambda batches, job=job: frame_task(job, batches), RESULT_SCHEMA,
                                        barrier=True).collect()
            return {r.task: pickle.loads(r.record) for r in out}
        return dict(self.blocks.barrier().mapPartitions(lambda it, job=job: barrier_task(job, it)).collect())


def input_partitions(data):
    from pyspark.sql import DataFrame

    return frame_partitions(data) if isinstance(data, DataFrame) else data.getNumPartitions()


def run_training(sc, data, cfg, cli, on_line=None, timeout=None, label_name="label", features_name="features",
                 validation=None):
    """Train on an RDD's (label, features) rows or a DataFrame's label and
    features columns; returns (checkpoint bytes, driver-side record of the
    run). Retries the barrier stage up to cfg.max_retries times, resuming
    from the last checkpoint. `validation`: a validation data set (RDD or
    DataFrame, the same columns), scored every epoch by the workers, each on
    its share. With cfg.keep_best the best epoch's checkpoint is written
    there (on the driver)."""
    check_slots(sc, cfg)
    val = None
    if validation is not None:
        try:
            val = sc.broadcast(validation_shares(validation, cfg, label_name, features_name))
        except ValueError as e:
            raise DataError(f"kindling: {e}") from None
    host = sc.getConf().get("spark.driver.host", "127.0.0.1")
    direct = cfg.server_ranks == 0 and input_partitions(data) == cfg.workers
    return run_attempts(lambda direct: Stage(data, cfg, label_name, features_name, direct), cfg, cli,
                        host, sc.master.startswith("local"), direct, on_line=on_line, timeout=timeout,
                        spark_is_gone=lambda e: _spark_is_gone(sc, e), val=val)


def run_attempts(make_stage, cfg, cli, host, local, direct=False, on_line=None, timeout=None, spark_is_gone=None,
                 val=None):
    """The launcher's driver side for any stage runner (Python's Stage, or
    the JVM's through jvm_driver): the job's id, secret and hub, then the
    attempts, each one barrier stage of make_stage(direct).run(job), retried
    with --resume. `host`: the driver's address as the tasks reach it
    (127.0.0.1 when `local`); `val`: the validation shares (a Broadcast).
    Returns (checkpoint bytes, record)."""
    from . import rendezvous

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
    test_hosts = int(os.environ.get(TEST_HOSTS_ENV) or 0)
    try:
        host = socket.gethostbyname(host)
    except OSError:
        pass
    hub = rendezvous.DriverHub(secret, host=host if not local else "127.0.0.1", on_line=on_line)
    stage = make_stage(direct)
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
                          timeout=timeout, test_hosts=test_hosts, own_checkpoint_dir=own_dir, val=val)
            t0 = time.time()
            hub.expect(attempt, cfg.ranks)
            try:
                results = stage.run(job)
            except Exception as e:  # py4j / PythonException: a task or executor failed
                if direct and "BarrierJobUnsupportedRDDChainException" in str(e):
                    # Spark refused the input's RDD chain in a barrier stage: shuffle after all.
                    direct = False
                    stage = make_stage(False)
                    attempt -= 1
                    continue
                if _is_cancellation(e):
                    raise TrainingCancelled(f"training job {job_id} was cancelled") from None
                if spark_is_gone is not None and spark_is_gone(e):
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
            if not results:  # an empty DataFrame's shuffle can have no partitions at all
                raise DataError("kindling: the training data is empty (every partition has 0 rows)")
            first = results[0]
            if first["status"] == "partitions":
                if not direct:
                    raise KindlingSparkError(f"kindling: the barrier stage ran {first['tasks']} tasks, "
                                             f"expected {cfg.ranks}")
                # The input had another number of partitions at run time than planned: shuffle after all.
                direct = False
                stage = make_stage(False)
                attempt -= 1
                continue
            if first["status"] == "error":
                err = first["errors"][0]
                cls = DataError if err["kind"] == "data" else KindlingSparkError
                raise cls(f"kindling: {err['message']}")
            record["attempts"].append({"attempt": attempt, "status": first["status"], "rc": first["rc"],
                                       "resumed": resume, "seconds": time.time() - t0})
            if first["status"] == "ok":
                writer = next(r for r in results.values() if "checkpoint" in r)
                if cfg.keep_best and "best" in writer:
                    write_atomic(cfg.keep_best, writer["best"])
                    record["best_checkpoint"] = cfg.keep_best
                record["finished"] = time.time()
                return writer["checkpoint"], record
            tail = "\n".join(first["tail"])
            last = f"mpirun exited with status {first['rc']}; the ranks' last lines:\n{tail}"
            if first["rc"] == 2 or first["rc"] == 127:
                # A usage error, a device the hosts lack (--context gpu without a
                # CUDA device) or a missing program: retrying cannot help. The
                # ranks' own error line is the headline.
                raise TrainingError(f"kindling: training failed: {_rank_error(first['tail']) or last}\n({last})")
            step = checkpoint_step(checkpoint) if os.path.exists(checkpoint) else -1
            if attempt > 0 and step == last_step:  # two failures in a row without progress: it is not transient
                raise TrainingError(f"kindling: training failed twice without progress; {last}")
            last_step = step
            log.warning("kindling: attempt %d of %d failed (mpirun status %d); %s", attempt + 1,
                        cfg.max_retries + 1, first["rc"], "retrying" if attempt < cfg.max_retries else "giving up")
        raise TrainingError(f"kindling: training failed on all {cfg.max_retries + 1} attempts; last: {last}")
    finally:
        hub.close()
        if val is not None:
            val.unpersist()
        shutil.rmtree(spool_dir, ignore_errors=True)  # what tasks on this host left (killed ones)
        if own_dir:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
