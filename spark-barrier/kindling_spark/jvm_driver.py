"""The driver side of a fit started from the JVM (java/: org.kindling.spark
.Kindling.fit), as a process: `python -m kindling_spark.jvm_driver`, run by
the JVM driver. The JVM runs the Spark jobs (it has the SparkContext and
the data); this process is the launcher's driver side, unchanged: the
builder's checks (estimator.Kindling's setters and network check), the job
id, secret and hub, and the attempts with their retries and --resume
(driver.run_attempts). Each attempt's barrier stage is asked of the JVM.

Protocol, one line per message. stdin line 1 (JVM -> here): JSON
{"calls": [[setter, [args], {kwargs}], ...], "host", "master", "checkpoint_out",
"timeout"}. Then, here -> JVM on this process's original stdout (Python's
own prints go to stderr):
    CONFIG {input_size, input_shape, num_classes, workers, server_ranks, ranks, network}
    SLOTS                    -> the JVM answers "SLOTS <n>" (task slots now)
    STAGE {"job": b64}       -> the JVM runs the barrier stage (each task runs
                                kindling_spark.jvm_task with the job) and answers
                                "RESULTS [b64 pickled (task, record), ...]" or
                                "FAILED <JSON string: the Spark error>"
    LINE <JSON string>       a rank's output line (progress)
    DONE {summary}           the checkpoint is at checkpoint_out
    ERROR {"type", "message"}  (DataError, NotEnoughSlotsError, TrainingError,
                                TrainingCancelled, KindlingSparkError, ValueError, TypeError)
stdin EOF (the JVM went away) cancels the fit.
"""
import base64
import json
import os
import pickle
import sys
import threading

from . import driver
from .errors import TrainingCancelled
from .estimator import Kindling
from .files import write_atomic


class Channel:
    """The line protocol to the JVM (thread-safe sends)."""

    def __init__(self, out, inp):
        self._out, self._in = out, inp
        self._lock = threading.Lock()

    def send(self, kind, payload=None):
        line = kind if payload is None else f"{kind} {json.dumps(payload, separators=(',', ':'))}"
        with self._lock:
            self._out.write((line + "\n").encode())
            self._out.flush()

    def receive(self):
        line = self._in.readline()
        if not line:
            raise TrainingCancelled("kindling: the JVM driver went away (its pipe closed); the fit is cancelled")
        kind, _, rest = line.decode().rstrip("\n").partition(" ")
        return kind, rest


class JvmStage:
    """driver.Stage for the JVM: the barrier stage runs there."""

    def __init__(self, channel):
        self.channel = channel

    def run(self, job):
        self.channel.send("STAGE", {"job": base64.b64encode(pickle.dumps(job)).decode(), "attempt": job.attempt,
                                    "spool_dir": job.spool_dir})
        kind, rest = self.channel.receive()
        if kind == "RESULTS":
            return dict(pickle.loads(base64.b64decode(r)) for r in json.loads(rest))
        if kind == "FAILED":
            raise RuntimeError(json.loads(rest))
        raise RuntimeError(f"kindling: unexpected reply from the JVM: {kind}")


def main():
    # The protocol owns the original stdout; anything printed goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    channel = Channel(out, sys.stdin.buffer)
    try:
        settings = json.loads(sys.stdin.buffer.readline() or b"null")
        if not isinstance(settings, dict):
            raise TrainingCancelled("kindling: no settings from the JVM")
        k = Kindling()
        for name, args, kwargs in settings["calls"]:
            if not name.startswith("set") or not hasattr(k, name):
                raise ValueError(f"unknown setting {name}")
            getattr(k, name)(*args, **kwargs)
        cfg, shape = k._config(None)
        if cfg.mode == "async" and cfg.servers < 1:
            raise ValueError("async mode needs numServers >= 1 (setNumServer) or mode 'sync' (setMode('sync'))")
        channel.send("CONFIG", {"input_size": cfg.input_size, "input_shape": list(shape),
                                "num_classes": cfg.num_classes, "workers": cfg.workers,
                                "server_ranks": cfg.server_ranks, "ranks": cfg.ranks, "network": cfg.network})

        def slots():
            channel.send("SLOTS")
            kind, rest = channel.receive()
            return int(rest)

        master = settings["master"]
        driver.check_slots(None, cfg, slots=slots, master=master)
        # As a PySpark fit: KINDLING_CLI names the binary for every host, else
        # each host finds its own (the wheel's, wherever it is installed there).
        cli = os.environ.get("KINDLING_CLI") or None
        ckpt, record = driver.run_attempts(lambda direct: JvmStage(channel), cfg, cli,
                                           settings.get("host") or "127.0.0.1", master.startswith("local"),
                                           on_line=lambda line: channel.send("LINE", line),
                                           timeout=settings.get("timeout"),
                                           spark_is_gone=lambda e: isinstance(e, TrainingCancelled))
        write_atomic(settings["checkpoint_out"], ckpt)
        channel.send("DONE", {"job_id": record["job_id"], "attempts": record["attempts"]})
        return 0
    except Exception as e:  # every failure goes to the JVM, which raises it there
        channel.send("ERROR", {"type": type(e).__name__, "message": str(e)})
        return 1


if __name__ == "__main__":
    sys.exit(main())
