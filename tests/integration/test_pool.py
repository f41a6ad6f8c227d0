"""Session pooling against real and failing servers: queueing and its limits, dead and hung backends,
a backend terminated mid-query, and pool metrics."""
import re
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest

import pgr


def test_clients_beyond_pool_wait_then_get_53300(pgrouter):
    router = pgrouter({"listen": {"workers": 1}, "pool": {"size": 1, "queue_timeout": "1s"}})
    with router.connect() as holder:
        holder.execute("select 1")
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as info:
            router.connect()
        waited = time.monotonic() - started
        assert 0.8 <= waited < 5, waited
        assert "53300" in str(info.value) or "waiting for a server connection" in str(info.value)
        assert "pool.queue_timeout" in str(info.value) or "pool.size" in str(info.value)
    # Once the holder leaves, the next client gets the server.
    with router.connect() as next_client:
        assert next_client.execute("select 1").fetchone() == (1,)


def test_waiting_client_gets_server_when_released(pgrouter):
    router = pgrouter({"listen": {"workers": 1}, "pool": {"size": 1, "queue_timeout": "10s"}})
    holder = router.connect()
    holder.execute("select 1")
    result = {}

    def waiter():
        with router.connect() as c:
            result["value"] = c.execute("select 42").fetchone()[0]

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    assert "value" not in result  # still queued
    assert 'pgrouter_clients_waiting 1' in router.metrics()
    holder.close()
    t.join(10)
    assert result.get("value") == 42


def test_queue_full_is_rejected_at_once(pgrouter):
    router = pgrouter({"listen": {"workers": 1}, "pool": {"size": 1, "queue_size": 0, "queue_timeout": "10s"}})
    with router.connect():
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as info:
            router.connect()
        assert time.monotonic() - started < 2
        assert "too many clients waiting" in str(info.value)


def test_backend_down_gives_clear_error(pgrouter):
    dead_port = pgr.free_port()
    router = pgrouter({"databases": [{"name": "app", "shards": [{"primary": {"host": pgr.HOST, "port": dead_port}}]}]})
    with pytest.raises(psycopg.OperationalError) as info:
        router.connect()
    assert "could not connect to server" in str(info.value)
    assert "Check that the server is up" in str(info.value)
    assert router.running


class SilentServer:
    """Accepts TCP connections and never answers: a hung backend."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((pgr.HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


class DroppingServer(SilentServer):
    """Logs a client in (trust), answers one query's first bytes, then drops the connection mid-answer."""

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            packet = c.recv(65536)
            if packet[4:8] == pgr.int32(pgr.SSL_REQUEST_CODE):  # server_tls.sslmode prefer: no TLS here
                c.sendall(b"N")
                c.recv(65536)  # startup packet
            c.sendall(pgr.message("R", pgr.int32(0)) + pgr.message("K", pgr.int32(1) + pgr.int32(2)) +
                      pgr.message("Z", b"I"))
            c.recv(65536)  # the query
            c.sendall(pgr.message("T", pgr.int16(1))[:8])  # half a RowDescription, then gone
            c.close()
        except OSError:
            pass


def test_hung_backend_hits_connect_timeout(pgrouter):
    silent = SilentServer()
    try:
        router = pgrouter({"pool": {"connect_timeout": "1s"},
                           "databases": [{"name": "app", "shards": [{"primary": {"host": pgr.HOST,
                                                                                 "port": silent.port}}]}]})
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as info:
            router.connect()
        assert 0.8 <= time.monotonic() - started < 5
        assert "timed out connecting to server" in str(info.value)
    finally:
        silent.close()


def test_backend_dropping_mid_answer_gives_08006_and_others_carry_on(pgrouter, cluster):
    dropping = DroppingServer()
    try:
        router = pgrouter({"databases": [
            {"name": "app", "shards": [{"primary": cluster.endpoint("primary")}]},
            {"name": "flaky", "shards": [{"primary": {"host": pgr.HOST, "port": dropping.port}}]}]})
        with router.connect() as healthy:
            with pgr.Raw(router.port) as raw:
                raw.startup("pgr_scram", database="flaky", password=pgr.USERS["pgr_scram"])
                raw.send(pgr.query("select 1"))
                msgs = raw.read_until(("E",))
                kind, payload = msgs[-1]
                assert kind == "E", msgs
                fields = pgr.parse_error_fields(payload)
                assert fields["code"] == "08006" and fields["severity"] == "FATAL"
                assert "server connection lost" in fields["message"]
                assert raw.is_closed()
            assert healthy.execute("select 7").fetchone() == (7,)
        assert 'pgrouter_errors_total{source="pgrouter",sqlstate="08006"} 1' in router.metrics()
    finally:
        dropping.close()


def test_backend_terminated_mid_query(pgrouter, cluster):
    router = pgrouter()
    victim = router.connect()
    other = router.connect()
    pid = victim.execute("select pg_backend_pid()").fetchone()[0]

    def kill_soon():
        time.sleep(0.5)
        with cluster.connect() as admin:
            admin.execute("select pg_terminate_backend(%s)", (pid,))

    threading.Thread(target=kill_soon).start()
    with pytest.raises(psycopg.OperationalError) as info:
        victim.execute("select pg_sleep(10)")
    assert "terminating connection due to administrator command" in str(info.value) or "57P01" in str(info.value)
    victim.close()
    assert other.execute("select 1").fetchone() == (1,)
    with router.connect() as fresh:
        assert fresh.execute("select 2").fetchone() == (2,)
    other.close()


def test_dead_idle_server_is_not_handed_out(pgrouter, cluster):
    """A pooled server that PostgreSQL closed while idle is detected at checkout and replaced."""
    router = pgrouter({"listen": {"workers": 1}, "pool": {"size": 2}})
    with router.connect() as c:
        pid = c.execute("select pg_backend_pid()").fetchone()[0]
    time.sleep(0.2)  # the reset query runs after the client leaves
    with cluster.connect() as admin:
        admin.execute("select pg_terminate_backend(%s)", (pid,))
    time.sleep(0.3)
    with router.connect() as c:
        assert c.execute("select pg_backend_pid()").fetchone()[0] != pid


def test_pool_metrics(pgrouter):
    router = pgrouter({"listen": {"workers": 1}})
    with router.connect() as c:
        for _ in range(5):
            c.execute("select 1")
        text = router.metrics()
        assert "pgrouter_servers_active 1" in text
        assert "pgrouter_clients_connected 1" in text
    time.sleep(0.3)
    text = router.metrics()
    assert "pgrouter_servers_idle 1" in text
    assert "pgrouter_server_connections_total 1" in text
    queries = [l for l in text.splitlines() if l.startswith("pgrouter_queries_total")]
    assert queries and float(queries[0].split()[-1]) >= 5
    assert "pgrouter_query_duration_seconds_count" in text


def test_pool_size_is_one_budget_across_workers(pgrouter, cluster):
    """pool.size bounds servers over all workers; an idle server on one worker moves its slot to a client
    waiting on the other (SO_REUSEPORT spreads clients, so both workers get some)."""
    def backends():
        with cluster.connect() as admin:
            return admin.execute("select count(*) from pg_stat_activity where usename = 'pgr_scram'").fetchone()[0]

    # Servers of an earlier test's router may still be exiting: counted from none.
    deadline = time.monotonic() + 10
    while backends() and time.monotonic() < deadline:
        time.sleep(0.05)
    router = pgrouter({"listen": {"workers": 2}, "pool": {"size": 2, "queue_timeout": "10s"}})
    peak = 0
    for _ in range(4):
        conns = [router.connect() for _ in range(2)]
        for c in conns:
            assert c.execute("select 1").fetchone() == (1,)
        peak = max(peak, backends())
        for c in conns:
            c.close()
    assert peak <= 2
    held = [router.connect() for _ in range(2)]
    result = {}

    def third():
        with router.connect() as c:
            result["v"] = c.execute("select 3").fetchone()[0]

    t = threading.Thread(target=third)
    t.start()
    time.sleep(0.5)
    assert "v" not in result  # the budget is used up: the third client waits
    held[0].close()
    t.join(10)
    assert result.get("v") == 3
    held[1].close()


def per_worker(text, name):
    """{worker: value} of a per-worker gauge (pgrouter_worker_<name>{worker="N"})."""
    out = {}
    for line in text.splitlines():
        m = re.match(r'pgrouter_worker_' + name + r'\{worker="(\d+)"\} (\S+)$', line)
        if m:
            out[int(m[1])] = float(m[2])
    return out


def test_per_worker_gauges_add_up(pgrouter):
    router = pgrouter({"listen": {"workers": 2}})
    conns = [router.connect() for _ in range(6)]
    for c in conns:
        c.execute("select 1")
    text = router.metrics()
    for name in ("clients_connected", "clients_waiting", "servers_active", "servers_idle"):
        workers = per_worker(text, name)
        assert sorted(workers) == [0, 1], name
        assert sum(workers.values()) == pgr.metric(text, f"pgrouter_{name}"), name
    assert sum(per_worker(text, "clients_connected").values()) == 6
    for c in conns:
        c.close()


def connect_on_workers(router, wanted):
    """Connections sorted by the worker that accepted them (SO_REUSEPORT picks; the per-worker gauge tells):
    returns ({worker: [conn, ...]}, extras) with wanted[w] connections for each worker w; extras are the
    connections beyond that, left open (closing them would not change what the caller measures)."""
    got, extras = {w: [] for w in wanted}, []
    for _ in range(200):
        if all(len(got[w]) >= n for w, n in wanted.items()):
            return got, extras
        before = per_worker(router.metrics(), "clients_connected")
        c = router.connect(autocommit=True)
        worker, until = None, time.monotonic() + 5
        while worker is None and time.monotonic() < until:  # the gauge may move just after the login's answer
            after = per_worker(router.metrics(), "clients_connected")
            worker = next((w for w in after if after[w] > before.get(w, 0)), None)
        assert worker is not None, "no worker's pgrouter_worker_clients_connected counted the new connection"
        (got[worker] if worker in got and len(got[worker]) < wanted[worker] else extras).append(c)
    raise AssertionError(f"could not place connections on workers {wanted}: {got}")


def test_worker_without_servers_gets_a_slot_under_load(pgrouter):
    """pool.size is one budget for all workers. Worker 0's clients keep both slots busy, with a queue that never
    empties; a client on worker 1 (which holds no server) must still be served while that load goes on, not
    after it: the slot of a server coming back on worker 0 moves to the client that has waited much longer."""
    router = pgrouter({"listen": {"workers": 2},
                       "pool": {"mode": "transaction", "size": 2, "queue_timeout": "60s"}})
    placed, extras = connect_on_workers(router, {0: 4, 1: 1})
    stop, errors, done = threading.Event(), [], [0]

    def load(c):
        try:
            while not stop.is_set():
                c.execute("select pg_sleep(0.02)")
                done[0] += 1
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=load, args=(c,), daemon=True) for c in placed[0]]
    for t in threads:
        t.start()
    try:
        # Worker 1's idle server (if its login opened one) moves to worker 0's waiters: worker 1 holds none.
        deadline = time.monotonic() + 10
        while True:
            text = router.metrics()
            held = per_worker(text, "servers_active").get(1, 0) + per_worker(text, "servers_idle").get(1, 0)
            if held == 0 and per_worker(text, "clients_waiting").get(0, 0) > 0:
                break
            assert time.monotonic() < deadline, f"worker 1 still holds {held} servers, or worker 0 has no queue"
            time.sleep(0.05)
        started = time.monotonic()
        assert placed[1][0].execute("select 42").fetchone() == (42,)
        waited = time.monotonic() - started
        load_running = not stop.is_set() and not errors and all(t.is_alive() for t in threads)
        assert load_running, f"the load stopped before worker 1's client was served: {errors}"
        assert waited < 10, f"worker 1's client waited {waited:.1f}s"
        assert pgr.metric(router.metrics(), "pgrouter_pool_slots_moved_total") >= 1
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors
    assert done[0] > 0
    for c in placed[0] + placed[1] + extras:
        c.close()


def thread_policies(pid):
    """{thread name: Linux scheduling policy} of a process (0 SCHED_OTHER, 3 SCHED_BATCH), from /proc."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        out[f"{name}/{task.name}"] = int(stat[stat.rindex(")") + 2:].split()[38])  # field 41: policy
    return out


@pytest.mark.parametrize("scheduling, policy", [("batch", 3), (None, 0)])
def test_worker_threads_scheduling_policy(pgrouter, scheduling, policy):
    """listen.scheduling: batch runs the worker threads under SCHED_BATCH, normal (the default) under SCHED_OTHER;
    either way clients are served."""
    listen = {"workers": 2} | ({"scheduling": scheduling} if scheduling else {})
    router = pgrouter({"listen": listen})
    with router.connect() as c:
        assert c.execute("select 1").fetchone() == (1,)
    policies = thread_policies(router.proc.pid)
    batch = sum(1 for p in policies.values() if p == 3)  # the workers, and threads they start (Asio's resolver)
    assert (batch >= 2) if policy == 3 else (batch == 0), policies
    assert policies[f"pgrouter/{router.proc.pid}"] == 0, policies  # the main thread (control plane) is left as is
    assert "scheduling" in router.log()
