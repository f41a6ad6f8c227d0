"""Zero-downtime restart: `pgrouter --takeover` receives the running process's listening sockets over
listen.takeover_socket and serves on them; the old process stops accepting, serves the clients it has for up to
listen.takeover_client_wait, drains and exits 0. pgbench runs through whole sequences of takeovers, with a new
connection per transaction (-C: no connect is refused or reset) and with connections held throughout, and has
zero failed transactions."""
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import pgr
from routing_util import wait_for

from test_lifecycle import assert_shutdown_fatal, logged_in


def takeover_config(tmp_path, **listen):
    return {"pool": {"mode": "transaction", "size": 4},
            "listen": {"takeover_socket": str(tmp_path / "takeover.sock"), **listen}}


class Successor:
    """A pgrouter started with --takeover on a running one's configuration (same ports, same socket)."""

    def __init__(self, old, workdir, extra_args=(), socket_path=None):
        self.port, self.admin_port = old.port, old.admin_port
        if socket_path:  # the running process makes it once it serves, a moment after its port accepts
            wait_for(lambda: Path(socket_path).exists(), what="the takeover socket")
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "pgrouter.log"
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(pgr.pgrouter_bin()), "--takeover", "--config", str(old.config_path),
                                      *extra_args],
                                     stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, timeout=20):
        wait_for(lambda: '"pgrouter started"' in self.log() or self.proc.poll() is not None, timeout,
                 "the successor to start")
        assert self.proc.poll() is None, self.log()

    def metrics(self):
        import urllib.request
        with urllib.request.urlopen(f"http://{pgr.HOST}:{self.admin_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
        self._log_file.close()
        return self.proc.returncode


@pytest.fixture
def successors(tmp_path):
    """Factory: successors(old, name) starts a successor of old (one of takeover_config(tmp_path); running=False:
    none runs), waits until it serves and returns it; each still running at the end is stopped and must exit 0."""
    started = []

    def take_over(old, name, running=True):
        s = Successor(old, tmp_path / name, socket_path=tmp_path / "takeover.sock" if running else None)
        started.append(s)
        s.wait_serving()
        return s

    yield take_over
    for s in started:
        assert s.stop() == 0, s.log()[-3000:]


def run_pgbench(router, seconds, connect_per_transaction, clients=4):
    env = {**os.environ, "PGPASSWORD": pgr.USERS["pgr_scram"]}
    args = ["pgbench", "-n", "-S", "-T", str(seconds), "-c", str(clients), "-j", str(clients), "-h", pgr.HOST,
            "-p", str(router.port), "-U", "pgr_scram", "app"]
    if connect_per_transaction:
        args.insert(1, "-C")
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def assert_no_failures(bench):
    out, _ = bench.communicate(timeout=120)
    assert bench.returncode == 0, out
    assert "number of failed transactions: 0" in out, out
    processed = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    assert processed > 0, out
    return processed


def test_pgbench_with_a_connection_per_transaction_through_two_takeovers(pgrouter, pgbench_tables, successors,
                                                                          tmp_path):
    old = pgrouter(takeover_config(tmp_path))
    bench = run_pgbench(old, 9, connect_per_transaction=True)
    time.sleep(2)
    first = successors(old, "second")
    old.proc.wait(30)  # its clients come and go in one transaction each: it leaves quickly
    assert old.proc.returncode == 0, old.log()[-3000:]
    time.sleep(2)
    second = successors(old, "third")
    first.proc.wait(30)
    assert first.proc.returncode == 0, first.log()[-3000:]
    assert_no_failures(bench)
    # Each process served its part of the run.
    for log in (old.log(), first.log()):
        assert '"takeover: the new process serves"' in log
    assert pgr.metric(second.metrics(), "pgrouter_client_connections_total") > 0


def test_pgbench_holding_its_connections_through_a_takeover(pgrouter, pgbench_tables, successors, tmp_path):
    """The old process keeps serving the connections it has (takeover_client_wait) until they leave."""
    old = pgrouter(takeover_config(tmp_path))
    bench = run_pgbench(old, 6, connect_per_transaction=False)
    time.sleep(2)
    new = successors(old, "new")
    with old.connect() as conn:  # a new client: served by the new process
        assert conn.execute("select 1").fetchone() == (1,)
    assert old.running, f"exited with {old.proc.returncode}:\n{old.log()[-3000:]}"  # pgbench's clients are there
    assert_no_failures(bench)
    old.proc.wait(15)
    assert old.proc.returncode == 0, old.log()[-3000:]
    assert pgr.metric(new.metrics(), "pgrouter_client_connections_total") >= 1


def test_clients_left_after_takeover_client_wait_are_ended_like_a_drain(pgrouter, successors, tmp_path):
    old = pgrouter(takeover_config(tmp_path, takeover_client_wait="1s"))
    idle = logged_in(old)
    new = successors(old, "new")
    assert_shutdown_fatal(idle)  # FATAL 57P01 once the wait is over
    old.proc.wait(15)
    assert old.proc.returncode == 0
    with old.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_a_successor_that_dies_before_serving_changes_nothing(pgrouter, tmp_path):
    old = pgrouter(takeover_config(tmp_path))
    # The port accepts as soon as it listens; the takeover socket comes once pgrouter has started serving.
    wait_for(lambda: (tmp_path / "takeover.sock").exists(), what="the takeover socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(tmp_path / "takeover.sock"))
    sock.sendall(b"TAKEOVER pid=1\n")
    text, fds, _, _ = socket.recv_fds(sock, 512, 16)
    assert text.startswith(b"SOCKETS listeners=2 admin=1"), text
    assert len(fds) == 3
    for fd in fds:
        os.close(fd)
    sock.close()  # never says READY
    wait_for(lambda: "takeover abandoned" in old.log(), what="the old process to notice")
    assert old.running
    with old.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert pgr.metric(old.metrics(), "pgrouter_draining") == 0


def test_takeover_needs_the_socket_in_the_configuration(pgrouter, tmp_path):
    old = pgrouter()
    result = subprocess.run([str(pgr.pgrouter_bin()), "--takeover", "--config", str(old.config_path)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    assert "--takeover needs listen.takeover_socket" in result.stdout + result.stderr
    with old.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_takeover_with_nobody_there_starts_fresh(cluster, tmp_path, successors):
    port, admin_port = pgr.free_port(), pgr.free_port()
    config = pgr.deep_merge(pgr.default_config(cluster, port, admin_port), takeover_config(tmp_path))
    path = tmp_path / "pgrouter.yaml"
    path.write_text(pgr.to_yaml(config))

    class Nobody:
        pass
    nobody = Nobody()
    nobody.port, nobody.admin_port, nobody.config_path = port, admin_port, path
    fresh = successors(nobody, "fresh", running=False)
    assert "starting on fresh sockets" in fresh.log()
    wait_for(lambda: pgr.port_accepts(port), what="the fresh start to listen")


def test_a_cancel_reaches_a_client_the_old_process_still_serves(pgrouter, successors, tmp_path):
    """After the takeover the listeners, and so every CancelRequest, go to the new process; a key it did not give
    is passed on over the takeover channel to the old one, which cancels its client's query (57014, as ever)."""
    import psycopg
    import threading
    old = pgrouter(takeover_config(tmp_path))
    with old.connect() as client:
        assert client.execute("select 1").fetchone() == (1,)
        new = successors(old, "second")
        outcome = []

        def sleep():
            try:
                client.execute("select pg_sleep(20)")
                outcome.append("finished")
            except psycopg.errors.QueryCanceled as e:
                outcome.append(e.sqlstate)

        runner = threading.Thread(target=sleep, daemon=True)
        runner.start()
        time.sleep(0.5)
        started = time.monotonic()
        client.cancel()  # to the shared port: the new process accepts it
        runner.join(10)
        assert outcome == ["57014"], outcome
        assert time.monotonic() - started < 5
        assert client.execute("select 2").fetchone() == (2,)  # the old process still serves it
    old.proc.wait(30)
    assert old.proc.returncode == 0, old.log()[-3000:]
    assert "passed on to the process taken over" in new.log()
