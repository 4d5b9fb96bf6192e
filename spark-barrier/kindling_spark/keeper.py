"""The safe process runner: every process a barrier task starts (mpirun,
orted, through them the ranks) runs under a keeper, so nothing outlives
the task.

The keeper (`python keeper.py FD -- COMMAND...`) is a child subreaper
that runs COMMAND and holds the read end of a pipe from the task. When
the command ends, the keeper kills whatever it left behind; when the task
goes away in any way (success, exception, Spark killing the Python worker
with SIGKILL on cancellation), the pipe reaches EOF and the keeper kills
the whole tree. The command itself gets PR_SET_PDEATHSIG, so it dies with
a killed keeper.

This file uses the standard library only: it runs as a plain script (no
package import), which starts faster than `-m`.
"""
import ctypes
import os
import select
import signal
import subprocess
import sys
import time

JOB_ENV = "KINDLING_SPARK_JOB"  # set on every process of a job: orphans can be found by it
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


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
    """`FD -- COMMAND...`: run COMMAND; kill its whole tree when FD (the
    read end of the task's pipe) reaches EOF or when it ends."""
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


def module_command(module):
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
            self.proc = subprocess.Popen(module_command("keeper") + [str(r), "--"] + list(cmd), env=env,
                                         stdout=stdout, stderr=stderr, cwd=cwd, pass_fds=(r,),
                                         start_new_session=True)
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


if __name__ == "__main__":
    if len(sys.argv) >= 2:
        sys.exit(keeper_main(sys.argv[1:]))
    print("usage: python keeper.py FD -- COMMAND...", file=sys.stderr)
    sys.exit(2)
