"""pool.query_timeout, pool.idle_transaction_timeout and pool.client_idle_timeout: each ends the client's
connection with a FATAL naming the setting, and pgrouter keeps serving others."""
import time

import psycopg
import pytest

import pgr


def assert_closed_with(conn, sql, setting):
    with pytest.raises(psycopg.OperationalError) as info:
        conn.execute(sql)
    text = str(info.value)
    assert setting in text, text
    assert conn.closed or conn.broken
    return info.value


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_query_timeout(pgrouter, mode):
    router = pgrouter({"pool": {"mode": mode, "query_timeout": "1s"}})
    with router.connect() as conn:
        assert conn.execute("select pg_sleep(0.1)").fetchone() == ("",)  # shorter than the timeout
        started = time.monotonic()
        assert_closed_with(conn, "select pg_sleep(20)", "pool.query_timeout")
        assert time.monotonic() - started < 5
    with router.connect() as other:
        assert other.execute("select 1").fetchone() == (1,)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_query_timeout_and_latency_in_a_deep_pipeline(pgrouter, mode):
    """A client with more queries in flight than pgrouter times in place (4) (simple-protocol queries sent
    without waiting): each is still timed from when it was sent, for the latency histogram and for
    pool.query_timeout."""
    router = pgrouter({"pool": {"mode": mode, "query_timeout": "3s"}, "listen": {"workers": 1}})
    count = lambda: pgr.metric(router.metrics(), "pgrouter_query_duration_seconds_count") or 0  # noqa: E731
    with pgr.Raw(router.port) as raw:
        raw.startup("pgr_clear", "app", "clear_pw")
        before = count()
        raw.send(b"".join(pgr.query(f"select pg_sleep(0.1), {i}") for i in range(10)))  # 1 s in all
        answers = [raw.read_until_ready(timeout=10) for _ in range(10)]
        assert [m[-1][0] for m in answers] == ["Z"] * 10
        assert not [k for m in answers for k, _ in m if k == "E"]
        time.sleep(0.2)
        assert count() - before == 10
        started = time.monotonic()
        raw.send(b"".join(pgr.query("select pg_sleep(0.05)") for _ in range(6)) +
                 pgr.query("select pg_sleep(20)"))  # the 7th in flight: timed in the ring on the heap
        messages = raw.read_until((), timeout=10)
        errors = [pgr.parse_error_fields(p) for k, p in messages if k == "E"]
        assert [e["code"] for e in errors] == ["57014"], errors
        assert "pool.query_timeout" in errors[0]["message"]
        assert messages[-1][0] == ""  # closed
        assert 2.5 < time.monotonic() - started < 8
    with router.connect() as other:
        assert other.execute("select 1").fetchone() == (1,)


def test_idle_transaction_timeout_rolls_back(pgrouter):
    router = pgrouter({"pool": {"idle_transaction_timeout": "1s"}})
    with router.connect() as setup:
        setup.execute("drop table if exists idle_tx; create table idle_tx (id int)")
    conn = router.connect(autocommit=False)
    conn.execute("insert into idle_tx values (1)")
    time.sleep(2.5)
    assert_closed_with(conn, "commit", "pool.idle_transaction_timeout")
    conn.close()
    with router.connect() as check:
        assert check.execute("select count(*) from idle_tx").fetchone() == (0,)


def test_client_idle_timeout(pgrouter):
    router = pgrouter({"pool": {"client_idle_timeout": "1s"}})
    busy = router.connect()
    idle = router.connect()
    for _ in range(5):  # activity keeps a client alive
        time.sleep(0.5)
        assert busy.execute("select 1").fetchone() == (1,)
    assert_closed_with(idle, "select 1", "pool.client_idle_timeout")
    busy.close()
    idle.close()
    assert 'pgrouter_errors_total{source="pgrouter",sqlstate="57P05"} 1' in router.metrics()


def test_timeouts_are_off_by_default(pgrouter):
    router = pgrouter()
    with router.connect() as conn:
        conn.execute("begin")
        time.sleep(1.5)
        assert conn.execute("select pg_sleep(1.2)").fetchone() == ("",)
        conn.execute("commit")


@pytest.mark.parametrize("setting,script,sqlstate", [
    ("query_timeout", ["select pg_sleep(20)"], "57014"),
    ("idle_transaction_timeout", ["begin", None], "25P03"),
    ("client_idle_timeout", [None], "57P05"),
])
def test_timeout_sqlstates_on_the_wire(pgrouter, setting, script, sqlstate):
    """psycopg hides the SQLSTATE of a FATAL that closes the connection; the raw protocol shows it."""
    router = pgrouter({"pool": {setting: "1s"}})
    with pgr.Raw(router.port) as raw:
        raw.startup("pgr_scram", password=pgr.USERS["pgr_scram"])
        for sql in script:
            if sql is None:
                continue
            raw.send(pgr.query(sql))
            if sql == "begin":
                raw.read_until_ready()
        msgs = raw.read_until(("E",), timeout=8)
        kind, payload = msgs[-1]
        assert kind == "E", msgs
        fields = pgr.parse_error_fields(payload)
        assert fields["code"] == sqlstate and fields["severity"] == "FATAL"
        assert f"pool.{setting}" in fields["message"]
        assert raw.is_closed()
