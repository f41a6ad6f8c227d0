"""Shutdown and readiness: SIGTERM drains (listeners closed, idle clients FATAL 57P01, transactions in flight
finish up to listen.shutdown_timeout, exit 0), /readyz says whether every database can be served, and systemd
hears READY=1, RELOADING=1/READY=1, STOPPING=1 and WATCHDOG=1 on NOTIFY_SOCKET."""
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import pgr
from routing_util import wait_for

ADMIN_SHUTDOWN = "57P01"
SHUTDOWN_MESSAGE = "terminating connection due to administrator command"
UNIT = Path(__file__).resolve().parents[2] / "systemd" / "pgrouter.service"


def readyz(router):
    """(status, body) of GET /readyz."""
    try:
        with urllib.request.urlopen(f"http://{pgr.HOST}:{router.admin_port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def drain(router):
    """SIGTERM, and wait until the drain has started (/readyz 503)."""
    router.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: readyz(router)[0] == 503, what="/readyz 503 after SIGTERM")


def logged_in(router):
    raw = pgr.Raw(router.port)
    raw.startup("pgr_clear", "app", "clear_pw")
    return raw


def assert_shutdown_fatal(raw):
    """The connection gets FATAL 57P01, then is closed."""
    messages = raw.read_until((), timeout=10)
    errors = [pgr.parse_error_fields(p) for k, p in messages if k == "E"]
    assert [(e["code"], e["message"]) for e in errors] == [(ADMIN_SHUTDOWN, SHUTDOWN_MESSAGE)], messages
    assert errors[0]["S"] == "FATAL"
    assert messages[-1][0] == ""


@pytest.fixture
def table(cluster):
    name = f"lifecycle_{uuid.uuid4().hex[:8]}"
    with cluster.connect() as conn:
        conn.execute(f"create table {name} (a int)")
        conn.execute(f"grant all on {name} to public")
    yield name
    with cluster.connect() as conn:
        conn.execute(f"drop table if exists {name}")


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_transaction_in_flight_finishes_then_57P01(pgrouter, cluster, table, mode):
    router = pgrouter({"pool": {"mode": mode}, "listen": {"shutdown_timeout": "20s"}})
    with logged_in(router) as raw:
        assert raw.simple_query("begin")[1] is None
        assert raw.simple_query(f"insert into {table} values (1)")[1] is None
        drain(router)
        assert raw.simple_query(f"insert into {table} values (2)")[1] is None
        assert raw.simple_query("commit")[1] is None
        assert_shutdown_fatal(raw)
    assert router.proc.wait(timeout=15) == 0
    with cluster.connect() as conn:
        assert conn.execute(f"select count(*) from {table}").fetchone() == (2,)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_idle_client_gets_57P01_at_once(pgrouter, mode):
    router = pgrouter({"pool": {"mode": mode}, "listen": {"shutdown_timeout": "20s"}})
    with logged_in(router) as raw:
        assert raw.simple_query("select 1")[0] == [["1"]]
        started = time.monotonic()
        router.proc.send_signal(signal.SIGTERM)
        assert_shutdown_fatal(raw)
    assert router.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 15  # not held until shutdown_timeout (20 s)


def test_new_connections_refused_and_readyz_503_while_draining(pgrouter):
    router = pgrouter({"listen": {"shutdown_timeout": "20s"}})
    status, body = readyz(router)
    assert status == 200, body
    with logged_in(router) as raw:
        assert raw.simple_query("begin")[1] is None  # keeps the drain going
        drain(router)
        status, body = readyz(router)
        assert status == 503 and "draining" in body, body
        with urllib.request.urlopen(f"http://{pgr.HOST}:{router.admin_port}/livez", timeout=5) as response:
            assert response.status == 200
        assert "pgrouter_draining 1" in router.metrics()

        def refused():
            try:
                socket.create_connection((pgr.HOST, router.port), timeout=5).close()
                return False
            except ConnectionRefusedError:
                return True

        wait_for(refused, what="a new connection refused")
        assert raw.simple_query("rollback")[1] is None
        assert_shutdown_fatal(raw)
    assert router.proc.wait(timeout=15) == 0


def test_exit_at_shutdown_timeout_with_a_transaction_left_open(pgrouter):
    router = pgrouter({"listen": {"shutdown_timeout": "2s"}})
    with logged_in(router) as raw:
        assert raw.simple_query("begin")[1] is None
        started = time.monotonic()
        router.proc.send_signal(signal.SIGTERM)
        assert router.proc.wait(timeout=15) == 0
        assert time.monotonic() - started > 1.5  # it waited for the transaction
        assert raw.is_closed(timeout=5)
    assert "shutdown_timeout passed" in router.log()


def test_sigint_stops_at_once(pgrouter):
    router = pgrouter({"listen": {"shutdown_timeout": "60s"}})
    with logged_in(router) as raw:
        assert raw.simple_query("begin")[1] is None
        router.proc.send_signal(signal.SIGINT)
        assert router.proc.wait(timeout=15) == 0  # well before shutdown_timeout
        assert raw.is_closed(timeout=5)


def test_readyz_names_a_shard_without_its_primary(pgrouter, cluster):
    dead = pgr.free_port()
    shard = {"primary": {"host": pgr.HOST, "port": dead}, "replicas": [cluster.endpoint("replica")]}
    router = pgrouter({"databases": [{"name": "app", "shards": [shard], "routing": {"probe_interval": "200ms"}}]})
    wait_for(lambda: readyz(router)[0] == 503, what="/readyz 503 with the primary down")
    status, body = readyz(router)
    assert f"database app shard 0: primary {pgr.HOST}:{dead} is down" in body, body


@pytest.mark.parametrize("name", ["pgrouter.service", "pgrouter@a.service"])
def test_systemd_unit_verifies(tmp_path, name):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    source = UNIT.with_name(name.replace("@a", "@"))
    # ExecStart must name an executable file here; the installed path may not exist on a build machine.
    unit = tmp_path / name
    unit.write_text(source.read_text().replace("ExecStart=/usr/bin/pgrouter", f"ExecStart={pgr.pgrouter_bin()}"))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Type=notify" in source.read_text()


def test_notify_sequence(pgrouter, tmp_path):
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(10)
    states = []

    def next_state():
        """The next notification other than a watchdog ping."""
        while True:
            text = listener.recv(4096).decode()
            states.append(text)
            if text != "WATCHDOG=1":
                return text

    try:
        router = pgrouter(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        assert next_state() == "READY=1"
        router.proc.send_signal(signal.SIGHUP)
        assert next_state() == "RELOADING=1"
        assert next_state() == "READY=1"
        router.proc.send_signal(signal.SIGTERM)
        assert next_state() == "STOPPING=1"
        assert router.proc.wait(timeout=15) == 0
        assert "WATCHDOG=1" in states, states  # every 200 ms, so some came while the test ran
    finally:
        listener.close()
