"""Message boundaries: whatever one client sends, the daemon survives, every other client is unaffected, nothing
reaches a server that PostgreSQL itself would refuse, and the client gets what PostgreSQL would have sent it.

Each case sends the same bytes to pgrouter and straight to PostgreSQL (the cluster's primary) and compares what
comes back (message types, SQLSTATEs and texts of errors, rows), and then checks that a bystander through the same
pgrouter (pool of one server, so it gets the very server the case used) sees only its own answers and settings.
"""
import socket
import sys
import time
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pgr  # noqa: E402

USER = "pgr_scram"

MODES = {
    "transaction": {"pool": {"mode": "transaction", "size": 1, "queue_timeout": "5s"}},
    "session": {"pool": {"mode": "session", "size": 1, "queue_timeout": "5s"}},
}


def config(cluster, mode, replica=False):
    cfg = {"listen": {"workers": 1}, **MODES[mode]}
    if replica:
        cfg["databases"] = [{"name": "app", "shards": [{"primary": cluster.endpoint("primary"),
                                                          "replicas": [cluster.endpoint("replica")]}],
                             "routing": {"probe_interval": "100ms"}}]
    return cfg


def login(port):
    raw = pgr.Raw(port, timeout=5.0)
    raw.startup(USER, "app", pgr.USERS[USER])
    return raw


def transcript(raw, timeout=1.5):
    """What the peer sends until it closes or is quiet for `timeout`: [(kind, detail)], closed. Errors are
    (severity, code, message); other messages their payload, except those that differ between servers."""
    out = []
    try:
        while True:
            kind, payload = raw.read_message(timeout)
            if kind == "":
                return out, True
            if kind in ("E", "N"):
                f = pgr.parse_error_fields(payload)
                out.append((kind, (f.get("severity"), f.get("code"), f.get("message"))))
            elif kind not in ("S", "K"):
                out.append((kind, payload))
    except socket.timeout:
        return out, False
    except ConnectionResetError:
        return out, True


def run_steps(port, steps, close_at_end=False):
    """Logs in, then for each step sends its bytes and reads what comes back. A step is bytes, or (bytes,
    seconds to read for). Returns the transcripts of every step and whether the connection was closed."""
    raw = login(port)
    results, closed = [], False
    try:
        for step in steps:
            data, wait = step if isinstance(step, tuple) else (step, 1.0)
            if closed:
                break
            try:
                raw.send(data)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            got, closed = transcript(raw, wait)
            results.append(got)
    finally:
        raw.close()
    return results, closed


def same_as_postgres(cluster, router, steps):
    direct = run_steps(cluster.primary_port, steps)
    routed = run_steps(router.port, steps)
    assert routed == direct, f"pgrouter:\n{routed}\nPostgreSQL:\n{direct}"
    return routed


def bystander_ok(router):
    """A client that asks only its own questions gets only its own answers, with the default settings."""
    with psycopg.connect(router.dsn(), connect_timeout=5, autocommit=True) as conn:
        conn.execute("set lock_timeout = 0")  # a statement of its own first: nothing queued may answer it
        assert conn.execute("select 42").fetchone()[0] == 42
        assert conn.execute("show statement_timeout").fetchone()[0] == "0"
        assert conn.execute("select 'own ' || 43").fetchone()[0] == "own 43"
    assert router.running


def copydata(payload_len):
    return b"d" + pgr.int32(4 + payload_len)


# --- half-sent messages straddling a ReadyForQuery -------------------------------------------------------------

@pytest.mark.parametrize("replica", [False, True], ids=["primary", "replica"])
@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_copydata_header_behind_a_query_then_its_body(cluster, pgrouter, mode, replica):
    """Query + the header of a CopyData, its body later, then a query: PostgreSQL reads and ignores the CopyData
    (no COPY is running) and answers the query. The daemon used to crash on the body's first bytes."""
    router = pgrouter(config(cluster, mode, replica))
    rest = b"x" * 996
    same_as_postgres(cluster, router, [pgr.query("select 1") + copydata(996), rest[:3], rest[3:],
                                       pgr.query("select 2")])
    bystander_ok(router)


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_messages_smuggled_inside_a_copydata_reach_no_one(cluster, pgrouter, mode):
    """A CopyData whose body holds whole messages (a SET and a query) sent after its header straddled a
    ReadyForQuery: they are data, never run, and their replies reach no one."""
    router = pgrouter(config(cluster, mode))
    smuggled = pgr.query("set statement_timeout = 1") + pgr.query("select 4242")
    same_as_postgres(cluster, router, [pgr.query("select 1") + copydata(len(smuggled)), (smuggled, 0.5),
                                       pgr.query("show statement_timeout")])
    bystander_ok(router)
    if mode == "session":
        return  # the smuggler's server is its own until it leaves
    # ... while the smuggler is still connected, too.
    raw = login(router.port)
    try:
        raw.send(pgr.query("select 1") + copydata(len(smuggled)))
        raw.read_until_ready()
        raw.send(smuggled)
        time.sleep(0.3)
        bystander_ok(router)
    finally:
        raw.close()


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_copy_messages_outside_a_copy_are_ignored(cluster, pgrouter, mode):
    router = pgrouter(config(cluster, mode))
    same_as_postgres(cluster, router, [copydata(3) + b"abc" + b"c" + pgr.int32(4) + b"f" + pgr.int32(9) + b"oops\0",
                                       pgr.query("select 'after'")])
    bystander_ok(router)


# --- messages PostgreSQL refuses -------------------------------------------------------------------------------

@pytest.mark.parametrize("replica", [False, True], ids=["primary", "replica"])
@pytest.mark.parametrize("mode", ["transaction", "session"])
@pytest.mark.parametrize("case", ["unknown-type", "startup-after-login", "unknown-type-after-query"])
def test_unknown_message_type_is_fatal_and_never_forwarded(cluster, pgrouter, mode, replica, case):
    router = pgrouter(config(cluster, mode, replica))
    bad = {"unknown-type": b"y" + pgr.int32(4),
           "startup-after-login": pgr.startup_packet(USER, "app") + pgr.terminate(),
           "unknown-type-after-query": pgr.query("select 7") + b"y" + pgr.int32(8) + b"abcd"}[case]
    result, _ = same_as_postgres(cluster, router, [(bad, 3.0)])
    assert result[-1][-1][0] == "E" and result[-1][-1][1][:2] == ("FATAL", "08P01")
    bystander_ok(router)


@pytest.mark.parametrize("mode", ["transaction", "session"])
@pytest.mark.parametrize("length", [0, 3, 10001, 0x7fffffff])
def test_invalid_message_length_closes_silently(cluster, pgrouter, mode, length):
    """PostgreSQL only logs "invalid message length" (a Sync's limit is 10,000 bytes) and closes."""
    router = pgrouter(config(cluster, mode))
    same_as_postgres(cluster, router, [(pgr.query("select 5") + b"S" + pgr.int32(length), 3.0)])
    bystander_ok(router)


@pytest.mark.parametrize("mode", ["transaction", "session"])
@pytest.mark.parametrize("bad", ["unknown-type", "invalid-length"])
@pytest.mark.parametrize("write", ["after-copyinresponse", "one-write"])
def test_refused_message_inside_a_copy(cluster, pgrouter, mode, bad, write):
    """PostgreSQL's COPY answers an unknown type with ERROR + FATAL, an invalid length with ERROR 08006 + FATAL.
    Sent in the same write as the COPY, the refused message reaches pgrouter before the CopyInResponse: it
    used to wait for an answer the server, waiting for data, never gives."""
    router = pgrouter(config(cluster, mode))
    setup = psycopg.connect(cluster.dsn("primary", user="postgres"), autocommit=True)
    setup.execute("set lock_timeout = '5s'")  # a server left inside the COPY must fail the test, not hang it
    setup.execute("create table if not exists hardening_copy (v text)")
    setup.execute("grant all on hardening_copy to public")
    refused = b"y" + pgr.int32(4) if bad == "unknown-type" else b"d" + pgr.int32(3) + b"1\t"
    copy = pgr.query("copy hardening_copy from stdin") + b"d" + pgr.int32(6) + b"a\n"
    steps = [copy, (refused, 3.0)] if write == "after-copyinresponse" else [(copy + refused, 3.0)]
    try:
        same_as_postgres(cluster, router, steps)
        bystander_ok(router)
        assert setup.execute("select count(*) from hardening_copy").fetchone()[0] == 0
    finally:
        setup.execute("drop table hardening_copy")
        setup.close()


# --- what a leaving client or a dying server leaves behind -----------------------------------------------------

@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_client_leaving_mid_copydata_inside_a_copy(cluster, pgrouter, mode):
    router = pgrouter(config(cluster, mode))
    setup = psycopg.connect(cluster.dsn("primary", user="postgres"), autocommit=True)
    setup.execute("create table if not exists hardening_copy2 (v text)")
    setup.execute("grant all on hardening_copy2 to public")
    try:
        for _ in range(3):
            raw = login(router.port)
            raw.send(pgr.query("copy hardening_copy2 from stdin"))
            assert raw.read_message()[0] == "G"
            raw.send(copydata(1000) + b"half")
            time.sleep(0.1)
            raw.close()
            bystander_ok(router)
        assert setup.execute("select count(*) from hardening_copy2").fetchone()[0] == 0
    finally:
        setup.execute("drop table hardening_copy2")
        setup.close()


@pytest.mark.parametrize("mode", ["transaction", "session"])
@pytest.mark.parametrize("cut", ["query-body", "copydata-idle", "function-call"])
def test_client_leaving_mid_message_frees_the_pool_slot(cluster, pgrouter, mode, cut):
    """With one server, each client that leaves in the middle of a message must give its slot back: the next
    login and query work (session pooling used to lose the slot for good)."""
    router = pgrouter(config(cluster, mode))
    partial = {"query-body": b"Q" + pgr.int32(1000) + b"select",
               "copydata-idle": copydata(1000) + b"data",
               "function-call": b"F" + pgr.int32(1000) + b"\0\0"}[cut]
    for _ in range(3):
        raw = login(router.port)
        raw.send(partial)
        time.sleep(0.1)
        raw.close()
    bystander_ok(router)


def terminate(cluster, pid):
    with psycopg.connect(cluster.dsn("primary", user="postgres"), autocommit=True) as conn:
        conn.execute("select pg_terminate_backend(%s)", (pid,))


def test_server_sending_fatal_ends_that_client_and_is_not_pooled(cluster, pgrouter):
    router = pgrouter(config(cluster, "transaction"))
    raw = login(router.port)
    try:
        raw.send(pgr.query("begin"))
        raw.read_until_ready()
        ((pid,),), _ = raw.simple_query("select pg_backend_pid()")
        terminate(cluster, int(pid))
        got, closed = transcript(raw, 3.0)
        assert closed and got and got[-1][1][:2] == ("FATAL", "57P01"), got
    finally:
        raw.close()
    bystander_ok(router)


def test_idle_pooled_server_that_died_is_not_lent(cluster, pgrouter):
    """A pooled server terminated while idle (pg_terminate_backend, a restart, idle_session_timeout) is noticed
    and dropped: the next transaction gets a fresh server and no error."""
    router = pgrouter(config(cluster, "transaction"))
    with psycopg.connect(router.dsn(), autocommit=True) as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        terminate(cluster, pid)
        time.sleep(0.5)
        assert conn.execute("select 2").fetchone()[0] == 2
    bystander_ok(router)


# --- startup phase ---------------------------------------------------------------------------------------------

def silent_close(port, data):
    with socket.create_connection((pgr.HOST, port), timeout=5) as sock:
        sock.sendall(data)
        sock.settimeout(3)
        try:
            return sock.recv(100)
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize("packet", [pgr.int32(7) + b"\0\3\0", pgr.int32(4), pgr.int32(10005) + b"\0" * 16,
                                    pgr.int32(0x7fffffff)], ids=["7", "4", "10005", "2GB"])
def test_startup_packet_with_invalid_length_closes_silently(cluster, pgrouter, packet):
    router = pgrouter()
    direct = silent_close(cluster.primary_port, packet)
    assert silent_close(router.port, packet) == direct == b""
    bystander_ok(router)


def test_reset_that_does_not_finish_frees_the_slot(cluster, pgrouter):
    """Session pooling: a server whose reset does not answer within pool.connect_timeout is closed and its slot
    freed (it used to be waited for without end, and after pool.size such servers every login timed out)."""
    router = pgrouter({"listen": {"workers": 1},
                       "pool": {"mode": "session", "size": 1, "queue_timeout": "10s", "connect_timeout": "1s",
                                "reset_query": "select pg_sleep(60)"}})
    for i in range(3):
        started = time.monotonic()
        with psycopg.connect(router.dsn(), connect_timeout=10, autocommit=True) as conn:
            assert conn.execute("select %s::int", (i,)).fetchone()[0] == i
        assert time.monotonic() - started < 6
    assert "server reset failed" in router.log()


# --- session state carried across servers ----------------------------------------------------------------------

def test_partial_datestyle_is_carried_as_postgres_merged_it(cluster, pgrouter):
    """SET datestyle TO iso; SET datestyle TO ymd leaves PostgreSQL at 'ISO, YMD' (a partial DateStyle merges with
    the value before it). The client's next transaction on a server another client left at 'Postgres, DMY' must
    print dates as PostgreSQL would for it, not replay 'ymd' onto that style."""
    router = pgrouter({"listen": {"workers": 1}, "pool": {"mode": "transaction", "size": 2}})
    steps = ["set datestyle to iso", "set datestyle to ymd", "show datestyle", "select '1999-01-08'::date::text"]
    with psycopg.connect(cluster.dsn("primary", user=USER, password=pgr.USERS[USER]), autocommit=True) as direct:
        expected = [direct.execute(s).fetchone() if s.startswith(("show", "select")) else direct.execute(s) and None
                    for s in steps]
    with psycopg.connect(router.dsn(), autocommit=True) as a, psycopg.connect(router.dsn(), autocommit=True) as b:
        got = [a.execute(s).fetchone() if s.startswith(("show", "select")) else a.execute(s) and None for s in steps]
        assert got == expected
        # b leaves a server at another style, and holds the other one so a must take b's next.
        b.execute("set datestyle to postgres, dmy")
        with b.transaction():
            b.execute("select 1")
            for _ in range(3):
                assert a.execute("show datestyle").fetchone() == expected[2]
                assert a.execute("select '1999-01-08'::date::text").fetchone() == expected[3]
