"""The job secret and the wiring, without Spark: authenticated connections
work, a connection without the secret, with a wrong one, or sending
garbage or oversized frames is refused and changes nothing; the rsh agent
runs orted's command through a task's launch service; the keeper leaves no
process behind however its owner ends."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from kindling_spark import keeper, rendezvous

SECRET = rendezvous.new_secret()


def wait_for(cond, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def frame(obj_or_bytes):
    raw = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return struct.pack(">I", len(raw)) + raw


def read_frame(sock):
    head = sock.recv(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return json.loads(data)


def closed_by_peer(sock, timeout=5.0):
    """True when the server ends the connection (after an optional denial)."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
            if b"denied" not in data and b"hello" not in data:
                return False
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.fixture
def hub():
    h = rendezvous.DriverHub(SECRET)
    yield h
    h.close()


def test_secret_is_fresh_and_long():
    a, b = rendezvous.new_secret(), rendezvous.new_secret()
    assert a != b and len(a) == 64 and int(a, 16) >= 0


def test_authenticated_line_reaches_the_hub(hub):
    ch = rendezvous.connect(hub.address, SECRET, "log")
    ch.send({"kd": "line", "attempt": 0, "text": "epoch 1/3  loss 1.0"})
    assert wait_for(lambda: [t for _, _, t in hub.lines] == ["epoch 1/3  loss 1.0"])
    ch.close()
    assert hub.rejected == []


def test_wrong_secret_is_refused(hub):
    with pytest.raises(rendezvous.RendezvousError, match="refused|prove"):
        rendezvous.connect(hub.address, rendezvous.new_secret(), "log")
    assert wait_for(lambda: hub.rejected == ["wrong job secret"])
    assert hub.lines == []


def test_non_ascii_mac_is_a_wrong_secret(hub):
    """Found by fuzz/fuzz_rendezvous.py: hmac.compare_digest raised TypeError
    on a MAC with non-ASCII text, killing the connection thread."""
    s = socket.create_connection(hub.address)
    assert read_frame(s)["kd"] == "hello"
    s.sendall(frame({"kd": "auth", "purpose": "log", "nonce": "a" * 64, "mac": "\u00e9" * 64}))
    assert closed_by_peer(s)
    s.close()
    assert wait_for(lambda: hub.rejected == ["wrong job secret"]), hub.rejected
    assert hub.lines == []


def test_no_authentication_is_refused(hub):
    s = socket.create_connection(hub.address)
    assert read_frame(s)["kd"] == "hello"
    s.sendall(frame({"kd": "line", "attempt": 0, "text": "forged progress"}))
    assert closed_by_peer(s)
    s.close()
    assert wait_for(lambda: hub.rejected == ["no authentication in the first message"])
    assert hub.lines == []


def test_silent_client_is_dropped_after_the_handshake_timeout(hub, monkeypatch):
    s = socket.create_connection(hub.address)
    assert read_frame(s)["kd"] == "hello"
    assert closed_by_peer(s, timeout=rendezvous.HANDSHAKE_TIMEOUT + 5)
    s.close()
    assert wait_for(lambda: len(hub.rejected) == 1 and "handshake" in hub.rejected[0])


@pytest.mark.parametrize("payload, reason", [
    (b"\x00\x00\x00\x05hello", "not JSON"),
    (struct.pack(">I", 1 << 30), "exceeds"),
    (frame(b"[1, 2, 3]"), "not a JSON object"),
    (b"GET / HTTP/1.1\r\n\r\n", "exceeds"),
    (frame(b"[" * 3000), "nests too deeply"),  # found by fuzz/fuzz_rendezvous.py
])
def test_garbage_and_oversized_frames_are_refused(hub, payload, reason):
    s = socket.create_connection(hub.address)
    read_frame(s)
    t0 = time.time()
    s.sendall(payload)
    assert closed_by_peer(s)
    assert time.time() - t0 < rendezvous.HANDSHAKE_TIMEOUT, "an oversized frame must be refused at once"
    s.close()
    assert wait_for(lambda: len(hub.rejected) == 1 and reason in hub.rejected[0]), hub.rejected
    assert hub.lines == []


def test_oversized_frame_after_authentication_drops_the_connection(hub):
    ch = rendezvous.connect(hub.address, SECRET, "log")
    ch.sock.sendall(struct.pack(">I", rendezvous.MAX_FRAME + 1))
    assert closed_by_peer(ch.sock)
    assert wait_for(lambda: len(hub.rejected) == 1 and "exceeds" in hub.rejected[0])


def test_client_refuses_a_server_without_the_secret():
    impostor = rendezvous.DriverHub(rendezvous.new_secret())
    try:
        with pytest.raises(rendezvous.RendezvousError):
            rendezvous.connect(impostor.address, SECRET, "log")
    finally:
        impostor.close()


def test_tasks_join_and_get_the_result(hub):
    hub.expect(0, 2)
    links = [rendezvous.TaskLink(hub.address, SECRET, 0, t) for t in range(2)]
    import threading

    got = {}

    def join(t):
        got[t] = links[t].join({"task": t, "address": ["127.0.0.1", 1000 + t]})

    threads = [threading.Thread(target=join, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert got[0] == got[1] == [{"task": 0, "address": ["127.0.0.1", 1000]},
                                {"task": 1, "address": ["127.0.0.1", 1001]}]
    links[0].send_line("epoch 1/1")
    links[0].done(0, ["final"])
    assert links[1].result() == (0, ["final"])
    assert links[0].result() == (0, ["final"])
    assert [t for _, _, t in hub.lines] == ["epoch 1/1"]
    for link in links:
        link.close()


def test_join_for_an_unknown_attempt_is_refused(hub):
    hub.expect(3, 2)
    link = rendezvous.TaskLink(hub.address, SECRET, 2, 0)
    with pytest.raises((rendezvous.RendezvousError, EOFError, OSError)):
        link.join({"task": 0})
    assert wait_for(lambda: any("bad join" in r for r in hub.rejected))


# ------------------------------------------------------------ launch service
class FakeProc:
    def __init__(self, command):
        self.p = subprocess.Popen(["bash", "-c", command])

    def wait(self):
        return self.p.wait()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()


def agent_env(tmp_path, table, secret):
    (tmp_path / "table.json").write_text(json.dumps(table))
    (tmp_path / "secret").write_text(secret)
    env = dict(os.environ, KINDLING_RDV_TABLE=str(tmp_path / "table.json"),
               KINDLING_RDV_SECRET_FILE=str(tmp_path / "secret"))
    return env


def run_agent(env, host, *words):
    return subprocess.run([sys.executable, "-m", "kindling_spark.rendezvous", "agent", host, *words], env=env,
                          capture_output=True, text=True, timeout=30)


def test_agent_runs_the_command_on_its_task_without_daemonize(tmp_path):
    marker = tmp_path / "ran"
    service = rendezvous.LaunchService(SECRET, "kdspark-t1", FakeProc)
    try:
        env = agent_env(tmp_path, {"kdspark-t1": list(service.address)}, SECRET)
        # mpirun hands the words already quoted for a shell, --daemonize included.
        r = run_agent(env, "kdspark-t1", "echo", "--daemonize", f"'{marker}'", ">", f"'{marker}'", ";", "exit", "7")
        assert r.returncode == 7, r.stderr
        assert marker.read_text().strip() == str(marker), "--daemonize must be dropped from the command"
    finally:
        service.close()


def test_agent_with_a_wrong_secret_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    service = rendezvous.LaunchService(SECRET, "kdspark-t0", FakeProc)
    try:
        env = agent_env(tmp_path, {"kdspark-t0": list(service.address)}, rendezvous.new_secret())
        r = run_agent(env, "kdspark-t0", "touch", str(marker))
        assert r.returncode == 255 and "refused" in r.stderr
        assert wait_for(lambda: service.rejected == ["wrong job secret"])
        assert not marker.exists() and not service.launched.is_set()
    finally:
        service.close()


def test_launch_for_another_host_is_refused(tmp_path):
    service = rendezvous.LaunchService(SECRET, "kdspark-t0", FakeProc)
    try:
        # The table points kdspark-t5 at this service: its purpose does not match.
        env = agent_env(tmp_path, {"kdspark-t5": list(service.address)}, SECRET)
        r = run_agent(env, "kdspark-t5", "true")
        assert r.returncode == 255
        assert not service.launched.is_set()
    finally:
        service.close()


def test_agent_gone_kills_the_command(tmp_path):
    started = tmp_path / "started"
    service = rendezvous.LaunchService(SECRET, "kdspark-t0", FakeProc)
    try:
        env = agent_env(tmp_path, {"kdspark-t0": list(service.address)}, SECRET)
        agent = subprocess.Popen([sys.executable, "-m", "kindling_spark.rendezvous", "agent", "kdspark-t0",
                                  f"touch '{started}'; exec sleep 300"], env=env)
        assert wait_for(lambda: started.exists(), 10)
        agent.kill()  # mpirun killing its agent
        agent.wait()
        proc = service._proc
        assert wait_for(lambda: proc.p.poll() is not None, 10), "the command must die with its agent"
    finally:
        service.close()


# ------------------------------------------------------------------ keeper
def test_keeper_kills_the_tree_on_kill_and_after_the_command(tmp_path):
    env = dict(os.environ, KINDLING_SPARK_JOB="keeper-test-1")
    p = keeper.KeptProcess(["bash", "-c", "sleep 300 & sleep 300 & wait"], env=env)
    assert wait_for(lambda: len(keeper.job_processes("keeper-test-1")) >= 4)  # keeper, bash, 2 sleeps
    p.kill()
    assert wait_for(lambda: keeper.job_processes("keeper-test-1") == [], 10)

    # The command ends but leaves a daemonized grandchild: the keeper reaps it.
    env = dict(os.environ, KINDLING_SPARK_JOB="keeper-test-2")
    p = keeper.KeptProcess(["bash", "-c", "setsid sleep 300 & exit 3"], env=env)
    assert p.wait(timeout=20) == 3
    assert wait_for(lambda: keeper.job_processes("keeper-test-2") == [], 10)


def test_keeper_kills_the_tree_when_its_owner_is_sigkilled(tmp_path):
    owner = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.path.dirname(os.path.dirname(keeper.__file__))!r})
        from kindling_spark import keeper
        env = dict(os.environ, KINDLING_SPARK_JOB="keeper-test-3")
        p = keeper.KeptProcess(["bash", "-c", "sleep 300 & sleep 300 & wait"], env=env)
        print("up", flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", owner], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    assert wait_for(lambda: len(keeper.job_processes("keeper-test-3")) >= 4)
    os.kill(proc.pid, signal.SIGKILL)  # what Spark does to a cancelled task's Python worker
    proc.wait()
    assert wait_for(lambda: keeper.job_processes("keeper-test-3") == [], 10)
