"""Relay fidelity: psql, pgbench in all three protocols, COPY in/out with errors, notices, notifications,
ParameterStatus, large messages, and session reset between clients of one server (session pooling)."""
import os
import subprocess

import psycopg
import pytest

import pgr


def psql(router, *args, user="pgr_scram", input=None, check=True):
    env = {**os.environ, "PGPASSWORD": pgr.USERS[user], "PGCONNECT_TIMEOUT": "10"}
    cmd = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-h", pgr.HOST, "-p", str(router.port), "-U", user, "app",
           *args]
    result = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_psql_multi_statement_and_meta(pgrouter):
    router = pgrouter()
    out = psql(router, "-c", "select 1; select 'two'", "-c", "select current_database()").stdout.split()
    assert out == ["1", "two", "app"]


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_protocols(pgrouter, pgbench_tables, mode):
    router = pgrouter()
    env = {**os.environ, "PGPASSWORD": pgr.USERS["pgr_scram"]}
    result = subprocess.run(["pgbench", "-M", mode, "-c", "4", "-j", "2", "-t", "150", "-h", pgr.HOST, "-p",
                             str(router.port), "-U", "pgr_scram", "app"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "number of transactions actually processed: 600/600" in result.stdout
    assert "number of failed transactions: 0" in result.stdout


def test_copy_in_and_out(pgrouter):
    router = pgrouter()
    with router.connect() as conn:
        conn.execute("drop table if exists relay_copy")
        conn.execute("create table relay_copy (id int primary key, note text)")
        with conn.cursor() as cur:
            with cur.copy("copy relay_copy from stdin") as copy:
                for i in range(5000):
                    copy.write_row((i, f"row {i}"))
            rows = []
            with cur.copy("copy relay_copy to stdout") as copy:
                for row in copy.rows():
                    rows.append(row)
        assert len(rows) == 5000
        assert conn.execute("select sum(id) from relay_copy").fetchone()[0] == sum(range(5000))


def test_copy_error_after_copydone_keeps_connection(pgrouter):
    """A duplicate key found while the server processes the data (the error arrives after CopyDone)."""
    router = pgrouter()
    with pgr.Raw(router.port) as raw:
        raw.startup("pgr_scram", password=pgr.USERS["pgr_scram"])
        raw.simple_query("drop table if exists relay_copy2; create table relay_copy2 (id int primary key)")
        raw.send(pgr.query("copy relay_copy2 from stdin"))
        kind, _ = raw.read_message()
        assert kind == "G"  # CopyInResponse
        raw.send(pgr.message("d", b"1\n1\n") + pgr.message("c"))
        msgs = raw.read_until_ready()
        errors = [pgr.parse_error_fields(p) for k, p in msgs if k == "E"]
        assert errors and errors[0]["code"] == "23505"
        assert msgs[-1] == ("Z", b"I")
        rows, err = raw.simple_query("select count(*) from relay_copy2")
        assert err is None and rows == [["0"]]


def test_copy_fail_from_client_before_copydone(pgrouter):
    router = pgrouter()
    with pgr.Raw(router.port) as raw:
        raw.startup("pgr_scram", password=pgr.USERS["pgr_scram"])
        raw.simple_query("drop table if exists relay_copy3; create table relay_copy3 (id int)")
        raw.send(pgr.query("copy relay_copy3 from stdin"))
        assert raw.read_message()[0] == "G"
        raw.send(pgr.message("d", b"1\n2\n") + pgr.message("f", pgr.cstr("client gave up")))
        msgs = raw.read_until_ready()
        errors = [pgr.parse_error_fields(p) for k, p in msgs if k == "E"]
        assert errors and errors[0]["code"] == "57014" and "client gave up" in errors[0]["message"]
        rows, err = raw.simple_query("select count(*) from relay_copy3")
        assert err is None and rows == [["0"]]


def test_copy_bad_data_error_mid_stream(pgrouter):
    """The server rejects a row while data is still flowing; the client then finishes with CopyDone."""
    router = pgrouter()
    with router.connect() as conn:
        conn.execute("drop table if exists relay_copy4")
        conn.execute("create table relay_copy4 (id int)")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with conn.cursor().copy("copy relay_copy4 from stdin") as copy:
                copy.write(b"1\nnot-a-number\n3\n")
        assert conn.execute("select count(*) from relay_copy4").fetchone()[0] == 0


def test_notice_notification_and_parameter_status(pgrouter):
    router = pgrouter()
    with router.connect() as listener, router.connect() as sender:
        notices = []
        listener.add_notice_handler(lambda d: notices.append(d.message_primary))
        listener.execute("do $$ begin raise notice 'hello from plpgsql'; end $$")
        assert notices == ["hello from plpgsql"]
        listener.execute("listen relay_channel")
        sender.execute("notify relay_channel, 'payload-1'")
        # psycopg 3.1's notifies() has no timeout: the NOTIFY was committed first, so one is already waiting.
        gen = listener.notifies()
        note = next(gen)
        assert (note.channel, note.payload) == ("relay_channel", "payload-1")
        gen.close()
        listener.execute("set application_name = 'relay-test'")
        assert listener.info.parameter_status("application_name") == "relay-test"


def test_startup_parameters_are_applied(pgrouter):
    router = pgrouter()
    dsn = router.dsn() + " application_name=myapp options='-c search_path=pg_catalog -c statement_timeout=1234'"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("show application_name").fetchone()[0] == "myapp"
        assert conn.execute("show search_path").fetchone()[0] == "pg_catalog"
        assert conn.execute("show statement_timeout").fetchone()[0] == "1234ms"
        assert conn.info.parameter_status("application_name") == "myapp"


def test_large_messages_cross_buffer_boundaries(pgrouter):
    router = pgrouter()
    with router.connect() as conn:
        blob = os.urandom(6 * 1024 * 1024)
        got = conn.execute("select %s::bytea", (blob,)).fetchone()[0]
        assert got == blob
        long_sql = "select length('" + "x" * (3 * 1024 * 1024) + "')"  # a 3 MiB simple Query
        assert conn.execute(long_sql).fetchone()[0] == 3 * 1024 * 1024


def test_session_state_does_not_leak_to_next_client(pgrouter):
    router = pgrouter({"listen": {"workers": 1}, "pool": {"size": 1}})
    with router.connect() as a:
        pid = a.execute("select pg_backend_pid()").fetchone()[0]
        a.execute("set search_path = pg_catalog")
        a.execute("create temp table leak_me (x int)")
        a.execute("prepare leak_stmt as select 1")
    with router.connect() as b:
        assert b.execute("select pg_backend_pid()").fetchone()[0] == pid  # same server, reused
        assert b.execute("show search_path").fetchone()[0] == '"$user", public'
        assert b.execute("select count(*) from pg_prepared_statements").fetchone()[0] == 0
        assert b.execute("select count(*) from pg_class where relname = 'leak_me'").fetchone()[0] == 0


def test_client_disconnect_mid_transaction_rolls_back(pgrouter):
    router = pgrouter({"listen": {"workers": 1}, "pool": {"size": 1}})
    with router.connect() as setup:
        setup.execute("drop table if exists relay_tx; create table relay_tx (id int)")
    a = router.connect(autocommit=False)
    a.execute("insert into relay_tx values (1)")
    a.execute("select pg_advisory_xact_lock(4242)")
    a.close()  # Terminate while the transaction is open
    with router.connect() as b:
        assert b.execute("select count(*) from relay_tx").fetchone()[0] == 0
        assert b.execute("select pg_try_advisory_xact_lock(4242)").fetchone()[0] is True
