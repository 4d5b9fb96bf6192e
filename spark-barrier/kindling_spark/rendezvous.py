"""How the processes of one training job find and trust each other.

One secret per job (`new_secret`, made on the driver) and one small
protocol on every TCP connection between the driver, the barrier tasks and
the rsh agents that `mpirun` starts:

    frame      4-byte big-endian length, then that many bytes of UTF-8 JSON
               holding an object; a frame longer than the limit, or not a
               JSON object, ends the connection
    handshake  server -> {"kd": "hello", "nonce": Ns}
               client -> {"kd": "auth", "nonce": Nc, "mac": HMAC(secret, "client|purpose|Ns|Nc")}
               server -> {"kd": "ok", "mac": HMAC(secret, "server|purpose|Ns|Nc")}
               both sides check the other's MAC (hmac.compare_digest), so
               neither a client nor a server without the secret gets
               anything: no log line is recorded and no command is run for
               a connection that has not proved it; `purpose` binds a
               connection to one use ("log", "launch kdspark-t1").
Fresh 32-byte nonces on both sides stop replays; the handshake must finish
within a few seconds.

The wiring (see task.py for why mpirun and an rsh agent): each barrier
task runs a `LaunchService`; mpirun, started by task 0, calls the agent
(`python -m kindling_spark.rendezvous agent HOST WORDS...`) once per task
with the orted command line; the agent proves the secret to that task's
service, which runs orted as its child and answers with orted's exit
status; the agent exits with it, so mpirun sees the daemon end as if ssh
had run it. The driver runs a `DriverHub`: the tasks of an attempt join it
to learn each other's service addresses, task 0 relays the ranks' output
lines to it while they train, and it hands mpirun's exit status to every
task.
"""
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import struct
import sys
import threading
import time

PROTOCOL = "kindling-rendezvous-1"
MAX_FRAME = 1 << 20          # bytes; a frame above it is refused
HANDSHAKE_MAX_FRAME = 4096   # before authentication nothing needs more
HANDSHAKE_TIMEOUT = 5.0      # seconds for a client to prove the secret
_LEN = struct.Struct(">I")

log = logging.getLogger("kindling_spark")


class RendezvousError(ConnectionError):
    """A connection that broke the protocol or failed authentication."""


def new_secret():
    """A fresh secret for one job (256 bits, hex)."""
    return secrets.token_hex(32)


def _mac(secret, side, purpose, server_nonce, client_nonce):
    msg = "|".join((PROTOCOL, side, purpose, server_nonce, client_nonce)).encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def _same_mac(got, want):
    """Constant-time comparison of a peer's MAC with ours. compare_digest
    refuses str with non-ASCII characters (TypeError), so compare bytes: a
    hostile peer's arbitrary text is simply a wrong MAC."""
    return hmac.compare_digest(str(got).encode("utf-8", "replace"), want.encode())


# ----------------------------------------------------------------- framing
class Channel:
    """Framed JSON messages over a connected socket."""

    def __init__(self, sock, max_frame=MAX_FRAME):
        self.sock = sock
        self.max_frame = max_frame
        self._send_lock = threading.Lock()

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return bytes(buf)

    def recv(self):
        """The next message (a dict). EOFError at a clean end; RendezvousError
        for an oversized frame or one that is not a JSON object."""
        (n,) = _LEN.unpack(self._recv_exact(_LEN.size))
        if n > self.max_frame:
            raise RendezvousError(f"frame of {n} bytes exceeds the {self.max_frame}-byte limit")
        raw = self._recv_exact(n)
        try:
            msg = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RendezvousError(f"frame of {n} bytes is not JSON") from None
        except RecursionError:  # "[[[[..." nested deeper than Python's stack allows
            raise RendezvousError(f"frame of {n} bytes nests too deeply") from None
        if not isinstance(msg, dict):
            raise RendezvousError("frame is not a JSON object")
        return msg

    def send(self, msg):
        raw = json.dumps(msg, separators=(",", ":")).encode()
        if len(raw) > self.max_frame:
            raise RendezvousError(f"message of {len(raw)} bytes exceeds the {self.max_frame}-byte limit")
        with self._send_lock:
            self.sock.sendall(_LEN.pack(len(raw)) + raw)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def connect(address, secret, purpose, timeout=30.0, max_frame=MAX_FRAME):
    """Open an authenticated channel to a server at (host, port)."""
    sock = socket.create_connection(tuple(address), timeout=timeout)
    ch = Channel(sock, HANDSHAKE_MAX_FRAME)
    try:
        hello = ch.recv()
        if hello.get("kd") != "hello" or not isinstance(hello.get("nonce"), str):
            raise RendezvousError(f"{address}: not a Kindling rendezvous server")
        cn = secrets.token_hex(32)
        ch.send({"kd": "auth", "purpose": purpose, "nonce": cn,
                 "mac": _mac(secret, "client", purpose, hello["nonce"], cn)})
        reply = ch.recv()
        want = _mac(secret, "server", purpose, hello["nonce"], cn)
        if reply.get("kd") != "ok" or not _same_mac(reply.get("mac", ""), want):
            raise RendezvousError(f"{address}: the server refused the connection or did not prove the job secret")
    except (EOFError, OSError, RendezvousError) as e:
        ch.close()
        if isinstance(e, RendezvousError):
            raise
        raise RendezvousError(f"{address}: handshake failed ({e})") from None
    sock.settimeout(None)
    ch.max_frame = max_frame
    return ch


class AuthServer:
    """A TCP server whose connections must prove the job secret before
    `handler(channel, purpose)` sees them. Refused connections are counted
    in `rejected` (reasons) for the tests and the log."""

    def __init__(self, secret, handler, purposes, host="127.0.0.1", port=0, max_frame=MAX_FRAME, name="server"):
        self.secret = secret
        self.handler = handler
        self.purposes = purposes  # a set of allowed purposes or a callable(purpose) -> bool
        self.max_frame = max_frame
        self.name = name
        self.rejected = []
        self._closing = False
        self._conns = set()
        self._lock = threading.Lock()
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.2)  # so close() is seen at once by the accept loop
        self.address = self._sock.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept_loop, name=f"kindling-{name}", daemon=True)
        self._thread.start()

    def _allowed(self, purpose):
        return self.purposes(purpose) if callable(self.purposes) else purpose in self.purposes

    def _accept_loop(self):
        while not self._closing:
            try:
                sock, peer = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(None)
            threading.Thread(target=self._serve, args=(sock, peer), daemon=True,
                             name=f"kindling-{self.name}-conn").start()

    def _reject(self, ch, peer, reason):
        with self._lock:
            self.rejected.append(reason)
        log.warning("kindling %s: refused a connection from %s:%s: %s", self.name, peer[0], peer[1], reason)
        try:
            ch.send({"kd": "denied"})
        except OSError:
            pass
        ch.close()

    def _serve(self, sock, peer):
        sock.settimeout(HANDSHAKE_TIMEOUT)
        ch = Channel(sock, HANDSHAKE_MAX_FRAME)
        sn = secrets.token_hex(32)
        try:
            ch.send({"kd": "hello", "protocol": PROTOCOL, "nonce": sn})
            auth = ch.recv()
        except (OSError, EOFError, RendezvousError) as e:
            self._reject(ch, peer, f"handshake: {e}")
            return
        purpose, cn, mac = auth.get("purpose"), auth.get("nonce"), auth.get("mac")
        if auth.get("kd") != "auth" or not all(isinstance(v, str) for v in (purpose, cn, mac)):
            self._reject(ch, peer, "no authentication in the first message")
            return
        if len(cn) < 32:
            self._reject(ch, peer, "client nonce too short")
            return
        if not _same_mac(mac, _mac(self.secret, "client", purpose, sn, cn)):
            self._reject(ch, peer, "wrong job secret")
            return
        if not self._allowed(purpose):
            self._reject(ch, peer, f"unexpected purpose {purpose!r}")
            return
        try:
            ch.send({"kd": "ok", "mac": _mac(self.secret, "server", purpose, sn, cn)})
        except OSError:
            ch.close()
            return
        sock.settimeout(None)
        ch.max_frame = self.max_frame
        with self._lock:
            if self._closing:
                ch.close()
                return
            self._conns.add(ch)
        try:
            self.handler(ch, purpose)
        except RendezvousError as e:
            with self._lock:
                self.rejected.append(str(e))
            log.warning("kindling %s: dropped a connection from %s:%s: %s", self.name, peer[0], peer[1], e)
        except (OSError, EOFError):
            pass
        finally:
            with self._lock:
                self._conns.discard(ch)
            ch.close()

    def close(self):
        with self._lock:
            self._closing = True
            conns = list(self._conns)
        try:
            self._sock.close()
        except OSError:
            pass
        for ch in conns:
            ch.close()
        self._thread.join(timeout=5)


# ------------------------------------------------------------- driver hub
class DriverHub:
    """The driver's end of a job: the barrier tasks of each attempt join
    here and get each other's launch addresses (faster than Spark's
    allGather, which polls once a second), task 0 relays the ranks' output
    lines while they train and finally their exit status, which the hub
    passes to every task of the attempt.

    Lines go to the `kindling_spark` logger (INFO) and to `on_line(line)`
    if given; `lines` keeps (time, attempt, line)."""

    def __init__(self, secret, host="127.0.0.1", on_line=None):
        self.on_line = on_line
        self.lines = []
        self._cond = threading.Condition()
        self._expected = {}   # attempt -> number of tasks
        self._joined = {}     # attempt -> {task: (channel, info)}
        self.server = AuthServer(secret, self._handle, {"log", "task"}, host=host, name="driver hub")
        self.address = self.server.address

    @property
    def rejected(self):
        return self.server.rejected

    def expect(self, attempt, tasks):
        """Open an attempt: `tasks` tasks will join it (earlier attempts close)."""
        with self._cond:
            self._expected = {attempt: tasks}
            self._joined[attempt] = {}
            self._cond.notify_all()

    def _line(self, attempt, text):
        with self._cond:
            self.lines.append((time.time(), attempt, text))
        log.info("%s", text)
        if self.on_line is not None:
            try:
                self.on_line(text)
            except Exception:  # a user callback must not stop the relay
                log.exception("kindling: the progress callback failed")

    def _handle(self, ch, purpose):
        first = ch.recv()
        if purpose == "task":
            self._task(ch, first)
            return
        msg = first
        while True:
            if msg.get("kd") != "line" or not isinstance(msg.get("text"), str):
                raise RendezvousError("driver hub: expected {kd: line, text: ...}")
            self._line(msg.get("attempt"), msg["text"])
            try:
                msg = ch.recv()
            except EOFError:
                return

    def _task(self, ch, join):
        attempt, task = join.get("attempt"), join.get("task")
        with self._cond:
            n = self._expected.get(attempt) if isinstance(attempt, int) else None
            if join.get("kd") != "join" or n is None or not isinstance(task, int) or not 0 <= task < n:
                raise RendezvousError(f"driver hub: bad join {str(join)[:200]}")
            peers = self._joined[attempt]
            if task in peers:
                raise RendezvousError(f"driver hub: task {task} joined attempt {attempt} twice")
            peers[task] = (ch, join.get("info"))
            self._cond.notify_all()
            while len(peers) < n and self._expected.get(attempt) == n:
                self._cond.wait(1.0)
            infos = [peers[i][1] for i in range(n)] if len(peers) == n else None
        if infos is None:
            return
        ch.send({"kd": "peers", "infos": infos})
        while True:
            try:
                msg = ch.recv()
            except EOFError:
                return
            kind = msg.get("kd")
            if kind == "line" and isinstance(msg.get("text"), str):
                self._line(attempt, msg["text"])
            elif kind == "done" and task == 0:
                result = {"kd": "result", "rc": msg.get("rc"), "tail": msg.get("tail")}
                with self._cond:
                    chans = [c for c, _ in self._joined.get(attempt, {}).values()]
                for c in chans:
                    try:
                        c.send(result)
                    except OSError:
                        pass
            else:
                raise RendezvousError(f"driver hub: unexpected message {kind!r} from task {task}")

    def close(self):
        with self._cond:
            self._expected.clear()
            self._cond.notify_all()
        self.server.close()


class TaskLink:
    """A barrier task's connection to the driver hub."""

    def __init__(self, address, secret, attempt, task):
        self.attempt, self.task = attempt, task
        self.ch = connect(address, secret, "task", timeout=30.0)

    def join(self, info):
        """Register this task; returns every task's info, in task order."""
        self.ch.send({"kd": "join", "attempt": self.attempt, "task": self.task, "info": info})
        reply = self.ch.recv()
        if reply.get("kd") != "peers" or not isinstance(reply.get("infos"), list):
            raise RendezvousError("driver hub: expected the peers' addresses")
        return reply["infos"]

    def send_line(self, line):
        """Relay one output line; losing the driver only loses the live log."""
        try:
            self.ch.send({"kd": "line", "text": line[:8192]})
        except OSError:
            pass

    def done(self, rc, tail):
        self.ch.send({"kd": "done", "rc": rc, "tail": tail})

    def result(self):
        """Wait for task 0's outcome (rc, tail)."""
        while True:
            msg = self.ch.recv()
            if msg.get("kd") == "result":
                return msg.get("rc"), msg.get("tail") or []

    def close(self):
        self.ch.close()


# --------------------------------------------------- orted launch service
class LaunchService:
    """A barrier task's end of the rsh agent: accepts exactly one
    authenticated launch for this task's host name, runs it through
    `run(command_line)` (which returns a process-like object with wait()
    and kill()), answers with the exit status, and kills the command when
    the agent's connection drops (mpirun gone)."""

    def __init__(self, secret, host_name, run, bind_host="127.0.0.1"):
        self.host_name = host_name
        self._run = run
        self._proc = None
        self._lock = threading.Lock()
        self.launched = threading.Event()
        self.server = AuthServer(secret, self._handle, {f"launch {host_name}"}, host=bind_host,
                                 name=f"launch service {host_name}")
        self.address = self.server.address

    @property
    def rejected(self):
        return self.server.rejected

    def _handle(self, ch, purpose):
        msg = ch.recv()
        if msg.get("kd") != "launch" or msg.get("host") != self.host_name or not isinstance(msg.get("command"), str):
            raise RendezvousError("launch service: expected {kd: launch, host, command}")
        with self._lock:
            if self._proc is not None or self.launched.is_set():
                raise RendezvousError("launch service: a second launch for the same task")
            self.launched.set()
            self._proc = self._run(msg["command"])
        proc = self._proc
        # The agent's connection lives as long as mpirun wants the daemon:
        # when it drops first, the daemon is no longer wanted.
        watcher = threading.Thread(target=self._watch_agent, args=(ch, proc), daemon=True)
        watcher.start()
        rc = proc.wait()
        try:
            ch.send({"kd": "exit", "code": rc})
        except OSError:
            pass

    @staticmethod
    def _watch_agent(ch, proc):
        try:
            while True:
                ch.recv()
        except (OSError, EOFError, RendezvousError):
            pass
        proc.kill()

    def kill(self):
        with self._lock:
            proc = self._proc
        if proc is not None:
            proc.kill()

    def close(self):
        self.kill()
        self.server.close()


def orted_command(words):
    """The orted command line mpirun hands its rsh agent, made ours: the
    words (already shell-quoted by mpirun) joined, without --daemonize, so
    orted stays a child of the task that runs it."""
    return " ".join(w for w in words if w.strip() != "--daemonize")


# ------------------------------------------------------------------ agent
def agent_main(argv):
    """mpirun's rsh agent: `agent HOST WORDS...`. The table of task
    addresses and the secret come from files named in the environment
    (KINDLING_RDV_TABLE, KINDLING_RDV_SECRET_FILE), written by task 0."""
    if len(argv) < 2:
        print("usage: python -m kindling_spark.rendezvous agent HOST COMMAND...", file=sys.stderr)
        return 2
    host, words = argv[0], argv[1:]
    try:
        with open(os.environ["KINDLING_RDV_TABLE"]) as f:
            table = json.load(f)
        with open(os.environ["KINDLING_RDV_SECRET_FILE"]) as f:
            secret = f.read().strip()
    except (KeyError, OSError, ValueError) as e:
        print(f"kindling agent: no rendezvous table or secret ({e})", file=sys.stderr)
        return 255
    if host not in table:
        print(f"kindling agent: unknown host {host!r} (tasks: {', '.join(sorted(table))})", file=sys.stderr)
        return 255
    try:
        ch = connect(table[host], secret, f"launch {host}")
        ch.send({"kd": "launch", "host": host, "command": orted_command(words)})
        reply = ch.recv()
    except (OSError, EOFError, RendezvousError) as e:
        print(f"kindling agent: launching on {host} failed: {e}", file=sys.stderr)
        return 255
    code = reply.get("code") if reply.get("kd") == "exit" else None
    return code if isinstance(code, int) and 0 <= code < 256 else 255


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "agent":
        sys.exit(agent_main(sys.argv[2:]))
    print("usage: python -m kindling_spark.rendezvous agent HOST COMMAND...", file=sys.stderr)
    sys.exit(2)
