"""The barrier task of a fit started from the JVM (java/: org.kindling.spark),
as a process: `python -m kindling_spark.jvm_task`, run by each JVM barrier
task. It runs the same task body as a PySpark fit (task.barrier_task): the
rendezvous through the driver hub, the host grouping, the keeper, orted and
mpirun; only the rows arrive differently, as the spool file the JVM task
wrote from its partition.

stdin, two lines: the attempt's JobSpec (pickled, base64; it carries the
job's secret, so it never touches a file), then JSON {"task", "tasks",
"spool", "rows", "error", "gpus", "result"}. The task's record is written
(pickled (task, record)) to "result"; the exit status is 0 when written.

stdin then stays open: when it reaches EOF (the JVM task ended, was killed
or its executor died) this process ends at once, and every process it
started ends with it (their keepers hold a pipe from this process).
"""
import base64
import json
import os
import pickle
import sys
import threading

from .files import write_atomic
from .task import barrier_task


class _TaskInfo:
    def __init__(self, address):
        self.address = address


class _GpuInfo:
    def __init__(self, addresses):
        self.addresses = addresses


class JvmTaskContext:
    """What barrier_task asks of its BarrierTaskContext, from the JVM's."""

    def __init__(self, task, tasks, gpus):
        self._task, self._tasks, self._gpus = task, tasks, gpus

    def partitionId(self):
        return self._task

    def getTaskInfos(self):
        return [_TaskInfo("") for _ in range(self._tasks)]

    def resources(self):
        return {"gpu": _GpuInfo(self._gpus)} if self._gpus else {}


def _watch_stdin():
    """Ends this process when the JVM side goes away (stdin EOF)."""
    try:
        while os.read(0, 65536):  # raw reads: no buffer lock held at interpreter shutdown
            pass
    finally:
        os._exit(3)


def _line():
    """One line of stdin, read unbuffered (what follows stays for the watcher)."""
    out = bytearray()
    while True:
        b = os.read(0, 1)
        if not b:
            raise SystemExit("kindling_spark.jvm_task: stdin closed before the job arrived")
        if b == b"\n":
            return bytes(out)
        out += b


def main():
    job = pickle.loads(base64.b64decode(_line()))
    info = json.loads(_line())
    threading.Thread(target=_watch_stdin, daemon=True).start()
    if info.get("error"):
        rows = [("error", info["error"])]
    elif info.get("spool"):
        rows = [("spool", info["spool"], int(info["rows"]))]
    else:  # a server's task: no rows
        rows = []
    ctx = JvmTaskContext(int(info["task"]), int(info["tasks"]), info.get("gpus"))
    (t, record), = barrier_task(job, rows, ctx=ctx)
    write_atomic(info["result"], pickle.dumps((t, record)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
