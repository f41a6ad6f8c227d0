"""Query cancellation: pgrouter hands out its own BackendKeyData; a CancelRequest reaching any worker finds
the session's server, and a stale or wrong key never cancels another client's query."""
import threading
import time

import psycopg

import pgr


def run_sleep(conn, seconds, result, key):
    started = time.monotonic()
    try:
        conn.execute(f"select pg_sleep({seconds})")
        result[key] = ("done", time.monotonic() - started)
    except psycopg.errors.QueryCanceled:
        result[key] = ("canceled", time.monotonic() - started)


def test_cancel_running_query(pgrouter):
    router = pgrouter()
    with router.connect() as conn:
        result = {}
        t = threading.Thread(target=run_sleep, args=(conn, 10, result, "q"))
        t.start()
        time.sleep(0.5)
        conn.cancel()
        t.join(10)
        assert result["q"][0] == "canceled" and result["q"][1] < 5
        assert conn.execute("select 1").fetchone() == (1,)
    assert "pgrouter_cancel_requests_total 1" in router.metrics()


def test_cancel_reaches_sessions_on_every_worker(pgrouter):
    """Many sessions spread over 2 workers; each cancel opens a new connection that the kernel may place on
    either worker, so most cancels must cross workers."""
    router = pgrouter({"listen": {"workers": 2}, "pool": {"size": 40}})
    conns = [router.connect() for _ in range(12)]
    pids = {c.info.backend_pid for c in conns}
    assert len(pids) == 12
    assert {pid >> 24 for pid in pids} == {1, 2}  # the worker index is in the key, both workers are used
    result = {}
    threads = [threading.Thread(target=run_sleep, args=(c, 20, result, i)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    time.sleep(0.7)
    for c in conns:
        c.cancel()
    for t in threads:
        t.join(15)
    assert all(result[i][0] == "canceled" for i in range(12)), result
    for c in conns:
        c.close()


def test_wrong_secret_does_not_cancel(pgrouter):
    router = pgrouter()
    with router.connect() as conn:
        pid = conn.info.backend_pid
        result = {}
        t = threading.Thread(target=run_sleep, args=(conn, 1.5, result, "q"))
        t.start()
        time.sleep(0.3)
        with pgr.Raw(router.port) as raw:
            raw.send(pgr.cancel_request(pid, 12345))
            assert raw.is_closed()
        t.join(10)
        assert result["q"][0] == "done"


def test_stale_key_never_cancels_next_client_on_reused_server(pgrouter):
    """Client A leaves; client B gets A's server from the pool; A's old cancel key must not touch B."""
    router = pgrouter({"listen": {"workers": 1}, "pool": {"size": 1}})
    with pgr.Raw(router.port) as a:
        a.startup("pgr_scram", password=pgr.USERS["pgr_scram"])
        a_key = a.backend_key
        rows, _ = a.simple_query("select pg_backend_pid()")
        a_server_pid = rows[0][0]
        a.send(pgr.terminate())
    time.sleep(0.2)
    with router.connect() as b:
        assert str(b.execute("select pg_backend_pid()").fetchone()[0]) == a_server_pid  # same server
        result = {}
        t = threading.Thread(target=run_sleep, args=(b, 1.5, result, "b"))
        t.start()
        time.sleep(0.3)
        for _ in range(3):
            with pgr.Raw(router.port) as raw:
                raw.send(pgr.cancel_request(*a_key))
                raw.is_closed()
        t.join(10)
        assert result["b"][0] == "done"


def test_cancel_when_idle_is_harmless(pgrouter):
    router = pgrouter()
    with router.connect() as conn:
        conn.cancel()
        time.sleep(0.2)
        assert conn.execute("select 3").fetchone() == (3,)


def test_late_cancels_never_hit_the_next_client_of_a_server(pgrouter):
    """Transaction pooling: a CancelRequest forwarded while a's query runs may reach PostgreSQL after that query ended.
    The server is not handed to anyone else until PostgreSQL has taken the cancel (then, idle, it ignores it), so the
    clients sharing the two servers never see a cancel they did not ask for."""
    router = pgrouter({"pool": {"mode": "transaction", "size": 2}, "listen": {"workers": 1}})
    stop = threading.Event()
    stray, errors = [], []

    def noise(i):
        try:
            with router.connect(prepare_threshold=None) as conn:
                while not stop.is_set():
                    try:
                        conn.execute("select pg_sleep(0.005)")
                    except psycopg.errors.QueryCanceled:
                        stray.append(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=noise, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    cancelled = 0
    try:
        with router.connect(prepare_threshold=None) as a:
            for _ in range(25):
                done = threading.Event()

                def canceller():  # keeps cancelling until a's query ends: the last ones race its end
                    while not done.wait(0.01):
                        a.cancel()

                t = threading.Thread(target=canceller)
                t.start()
                try:
                    a.execute("select pg_sleep(0.3)")
                except psycopg.errors.QueryCanceled:
                    cancelled += 1
                done.set()
                t.join()
    finally:
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    # Cancels did reach a's queries (the test exercised the race); how many of 25 depends on the host's load,
    # since a cancel sent before a's query has a server is ignored.
    assert cancelled >= 5
    assert stray == [], f"clients that never sent a cancel had {len(stray)} queries cancelled"
