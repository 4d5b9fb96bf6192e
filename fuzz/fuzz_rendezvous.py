"""Fuzz harness (atheris, libFuzzer for Python) for the rendezvous
messages of spark-barrier/kindling_spark/rendezvous.py.

Each input is a byte stream a peer sends on one TCP connection. The first
byte picks which end receives it:

  0  an AuthServer before authentication (anyone who can reach the port):
     the connection must be refused and the handler never run
  1  the driver hub after authentication, purpose "log"
  2  the driver hub after authentication, purpose "task" (join, lines, done)
  3  a launch service after authentication (the launch request)
  4  the client side of the handshake and of TaskLink (a hostile server)

What counts as a bug: any exception other than the protocol's own
(RendezvousError, EOFError, OSError), reading past the stream without
EOFError, a command launched without a valid request, or a frame above
the size limits accepted.

    python fuzz/fuzz_rendezvous.py -max_total_time=20 CORPUS_DIR
"""
import os
import sys

import atheris

with atheris.instrument_imports():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "spark-barrier"))
    from kindling_spark import rendezvous as rdv

import logging
logging.getLogger("kindling_spark").setLevel(logging.CRITICAL)  # refusals are expected here

SECRET = "f" * 64
PROTOCOL_ERRORS = (rdv.RendezvousError, EOFError, OSError)


class StreamSocket:
    """A socket whose peer sent `data` and then closed; recv hands it out
    in pieces of at most `step` bytes, as TCP may."""

    def __init__(self, data, step=7):
        self.data, self.pos, self.step = data, 0, max(1, step)
        self.sent = []

    def recv(self, n):
        if n <= 0:
            raise AssertionError("recv of a non-positive size")
        chunk = self.data[self.pos:self.pos + min(n, self.step)]
        self.pos += len(chunk)
        return chunk

    def sendall(self, b):
        self.sent.append(bytes(b))

    def settimeout(self, t):
        pass

    def shutdown(self, how):
        pass

    def close(self):
        pass


def _auth_server(handler, purposes):
    """An AuthServer without its listening socket (only _serve runs)."""
    s = object.__new__(rdv.AuthServer)
    s.secret, s.handler, s.purposes = SECRET, handler, purposes
    s.max_frame, s.name, s.rejected = rdv.MAX_FRAME, "fuzz", []
    s._closing, s._conns = False, set()
    import threading
    s._lock = threading.Lock()
    return s


def _hub():
    import threading
    hub = object.__new__(rdv.DriverHub)
    hub.on_line, hub.lines = None, []
    hub._cond = threading.Condition()
    hub._expected, hub._joined = {0: 1}, {0: {}}
    return hub


class FakeProc:
    def wait(self):
        return 0

    def kill(self):
        pass


def pre_auth(data):
    called = []
    server = _auth_server(lambda ch, purpose: called.append(purpose), {"log", "task"})
    server._serve(StreamSocket(data), ("fuzz", 0))
    if called:
        raise AssertionError(f"handler ran for an unauthenticated peer: {called}")
    if len(server.rejected) != 1:
        raise AssertionError(f"expected one refusal, got {server.rejected}")


def hub_stream(data, purpose):
    hub = _hub()
    try:
        hub._handle(rdv.Channel(StreamSocket(data)), purpose)
    except PROTOCOL_ERRORS:
        pass
    for _, _, text in hub.lines:
        if not isinstance(text, str):
            raise AssertionError("a non-text log line was recorded")


def launch_stream(data):
    import threading
    svc = object.__new__(rdv.LaunchService)
    svc.host_name = "kdspark-t0"
    launched = []
    svc._run = lambda cmd: launched.append(cmd) or FakeProc()
    svc._proc, svc._lock, svc.launched = None, threading.Lock(), threading.Event()
    try:
        svc._handle(rdv.Channel(StreamSocket(data)), "launch kdspark-t0")
    except PROTOCOL_ERRORS:
        pass
    if len(launched) > 1 or any(not isinstance(c, str) for c in launched):
        raise AssertionError(f"bad launches: {launched!r}")


def client_stream(data, step):
    ch = rdv.Channel(StreamSocket(data, step), rdv.HANDSHAKE_MAX_FRAME)
    try:
        msg = ch.recv()
        if not isinstance(msg, dict):
            raise AssertionError("recv returned a non-object")
        link = object.__new__(rdv.TaskLink)
        link.attempt, link.task = 0, 0
        link.ch = rdv.Channel(StreamSocket(data[ch.sock.pos:], step))
        infos = link.join({"host": "h"})
        if not isinstance(infos, list):
            raise AssertionError("join returned a non-list")
        rc, tail = link.result()
        if not isinstance(tail, list) and tail is not None:
            pass  # the caller formats whatever came; only types matter to recv
    except PROTOCOL_ERRORS:
        pass


def TestOneInput(data):
    if not data:
        return
    mode, body = data[0] % 5, data[1:]
    if mode == 0:
        pre_auth(body)
    elif mode == 1:
        hub_stream(body, "log")
    elif mode == 2:
        hub_stream(body, "task")
    elif mode == 3:
        launch_stream(body)
    else:
        client_stream(body, 1 + data[0] // 5)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
