"""Transaction pooling carries a client's session state across servers: named prepared statements
are prepared on whichever server the client gets, SET/RESET follow the client, a SET in a rolled-back
transaction is undone, nothing one client sets is seen by another, and features that cannot be shared pin the
client (or are refused with pool.session_features: refuse)."""
import time
import threading

import psycopg
import pytest

import pgr

ONE_WORKER = {"listen": {"workers": 1}}


def txn(size, **pool):
    return {**ONE_WORKER, "pool": {"mode": "transaction", "size": size, **pool}}


def backend_pid(conn):
    return conn.execute("select pg_backend_pid()", prepare=False).fetchone()[0]


def test_named_statements_follow_the_client_to_another_server(pgrouter):
    router = pgrouter(txn(2))
    with router.connect(prepare_threshold=0) as a, router.connect(prepare_threshold=None) as b:
        first = a.execute("select %s::int * 2, pg_backend_pid()", (21,)).fetchone()
        assert first[0] == 42
        # b holds the server a just used (the pool hands out the most recently used one) inside a transaction,
        # so a's next transaction runs on the other server, which has never seen a's statement.
        b.execute("begin")
        assert backend_pid(b) == first[1]
        second = a.execute("select %s::int * 2, pg_backend_pid()", (50,)).fetchone()
        assert second == (100, second[1]) and second[1] != first[1]
        b.execute("commit")
        for i in range(10):
            assert a.execute("select %s::int * 2, pg_backend_pid()", (i,)).fetchone()[0] == 2 * i
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_prepared_statements_prepared_total") >= 2  # once on each server
    assert pgr.metric(text, "pgrouter_clients_pinned_total") == 0
    pgr.wait_metric(router, "pgrouter_servers_active", 0)


def test_same_statement_names_from_many_clients_never_collide(pgrouter):
    """psycopg names its statements _pg3_0, _pg3_1, ... on every connection: on one shared server, the same
    names mean different queries for different clients."""
    router = pgrouter(txn(1))
    errors = []

    def worker(i):
        try:
            with router.connect(prepare_threshold=0) as c:
                for n in range(30):
                    query = f"select %s::int + {i}, 'client {i}'"  # a different text per client
                    assert c.execute(query, (n,)).fetchone() == (n + i, f"client {i}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_server_connections_total") == 1
    assert pgr.metric(text, "pgrouter_clients_pinned_total") == 0


def test_identical_statements_are_shared_between_clients(pgrouter):
    router = pgrouter(txn(1))
    with router.connect(prepare_threshold=0) as a, router.connect(prepare_threshold=0) as b:
        for c in (a, b, a, b):
            assert c.execute("select %s::int + 1", (1,)).fetchone() == (2,)
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_prepared_statements_prepared_total") == 1
    assert pgr.metric(text, "pgrouter_prepared_statements_reused_total") >= 1


def test_statement_cache_evicts_and_re_prepares(pgrouter):
    router = pgrouter(txn(1, prepared_statements_cache=2))
    with router.connect(prepare_threshold=0) as c:
        for round_ in range(3):
            for k in range(5):
                assert c.execute(f"select %s::int * {k + 1}", (round_,)).fetchone() == (round_ * (k + 1),)
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_prepared_statements_evicted_total") > 0
    with router.connect() as c:  # the server holds at most 2 of them
        n = c.execute("select count(*) from pg_prepared_statements where name like 'pgr_%'").fetchone()[0]
        assert n <= 2


def test_psycopg_deallocate_of_evicted_statements(pgrouter):
    """psycopg keeps at most prepared_max statements and DEALLOCATEs the oldest by its own name: pgrouter
    maps the name to the server's."""
    router = pgrouter(txn(2))
    with router.connect(prepare_threshold=0) as c:
        c.prepared_max = 2
        for round_ in range(3):
            for k in range(4):
                assert c.execute(f"select %s::int - {k}", (round_,)).fetchone() == (round_ - k,)
    assert pgr.metric(router.metrics(), "pgrouter_clients_pinned_total") == 0


def settings_of(conn):
    return conn.execute("select current_setting('search_path'), current_setting('TimeZone'), "
                        "current_setting('statement_timeout')", prepare=False).fetchone()


def test_settings_follow_their_client_and_never_leak(pgrouter):
    router = pgrouter(txn(1))  # one server: every client uses it in turn
    with router.connect() as base:
        defaults = settings_of(base)
    with router.connect() as a, router.connect() as b:
        a.execute("set search_path = pg_catalog, public")
        a.execute("SET TIME ZONE 'Asia/Tokyo'")
        a.execute("set statement_timeout to '1234ms'")
        mine = ("pg_catalog, public", "Asia/Tokyo", "1234ms")
        assert settings_of(a) == mine
        for _ in range(3):
            assert settings_of(b) == defaults  # same server, none of a's settings
            assert settings_of(a) == mine      # given back to a before its transaction
        a.execute("reset statement_timeout")
        assert settings_of(a) == mine[:2] + (defaults[2],)
        assert settings_of(b) == defaults
        a.execute("reset all")
        assert settings_of(a) == defaults
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_settings_replayed_total") > 0
    assert pgr.metric(text, "pgrouter_clients_pinned_total") == 0


@pytest.mark.parametrize("prefix", ["/* pgrouter: primary */ ", "-- from the ORM\n", "/* a /* nested */ one */\n"])
def test_settings_after_a_comment_never_leak(pgrouter, prefix):
    """A SET, RESET, DISCARD or advisory lock behind a leading comment (a routing hint, an ORM's tag) is the same
    statement to PostgreSQL: it must be carried (or pin) like the bare one, not slip through as a plain query."""
    router = pgrouter(txn(1))
    with router.connect() as base:
        defaults = settings_of(base)
    with router.connect() as a, router.connect() as b:
        a.execute(prefix + "set search_path = pg_catalog, public")
        a.execute(prefix + "SET statement_timeout TO '4321ms'")
        assert settings_of(a)[0] == "pg_catalog, public" and settings_of(a)[2] == "4321ms"
        assert settings_of(b) == defaults
        a.execute(prefix + "reset all")
        assert settings_of(a) == defaults
        assert pgr.metric(router.metrics(), "pgrouter_clients_pinned_total") == 0
        a.execute(prefix + "select pg_advisory_lock(77)")
        assert pgr.metric(router.metrics(), "pgrouter_clients_pinned_total") == 1  # kept on its server


def test_client_encoding_and_parameter_status_stay_right(pgrouter):
    router = pgrouter(txn(1))
    with router.connect() as a, router.connect() as b:
        a.execute("set client_encoding = 'LATIN1'")
        assert a.info.parameter_status("client_encoding") == "LATIN1"
        assert b.execute("select 'é'").fetchone() == ("é",)  # b's UTF8 is back on the shared server
        assert a.execute("select 'é'").fetchone() == ("é",)  # and a's LATIN1 (psycopg decodes either)
        assert a.execute("show client_encoding").fetchone() == ("LATIN1",)
        assert b.execute("show client_encoding").fetchone() == ("UTF8",)
        assert b.info.parameter_status("client_encoding") == "UTF8"


def test_set_in_a_rolled_back_transaction_is_undone(pgrouter):
    router = pgrouter(txn(1))
    with router.connect() as a, router.connect() as b:
        default = a.execute("show search_path").fetchone()[0]
        a.execute("begin")
        a.execute("set search_path = pg_catalog")
        assert a.execute("show search_path").fetchone() == ("pg_catalog",)
        a.execute("rollback")
        b.execute("select 1")
        assert a.execute("show search_path").fetchone() == (default,)
        # A SET in a failed transaction is dropped too, whether the client says COMMIT or ROLLBACK.
        a.execute("begin")
        a.execute("set search_path = pg_catalog")
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("select 1/0")
        a.execute("commit")
        b.execute("select 1")
        assert a.execute("show search_path").fetchone() == (default,)
        # A SET in a committed transaction stays, and a multi-statement query is one transaction.
        a.execute("begin; set search_path = information_schema; commit")
        b.execute("select 1")
        assert a.execute("show search_path").fetchone() == ("information_schema",)
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("set search_path = pg_catalog; select 1/0")
        b.execute("select 1")
        assert a.execute("show search_path").fetchone() == ("information_schema",)
        assert b.execute("show search_path").fetchone() == (default,)
        # SET LOCAL needs nothing.
        a.execute("begin; set local search_path = pg_catalog; commit")
        assert a.execute("show search_path").fetchone() == ("information_schema",)


def test_sql_prepared_statements_are_carried_not_pinned(pgrouter):
    """SQL PREPARE / EXECUTE under transaction pooling: two clients sharing one server prepare the same name with
    different texts and execute it alternately, each getting its own; a client's statement survives another
    client's DEALLOCATE ALL / DISCARD ALL on the shared server; nobody is pinned (with one server, a pinned client
    would keep it and the other would wait)."""
    router = pgrouter(txn(1))
    with router.connect() as a, router.connect() as b:
        a.execute("prepare s (int) as select $1 * 2 as v, 'a' as who")  # no parameters: a simple Query
        b.execute('PREPARE "S" (int) AS select $1 + 1000, \'b\'')
        b.execute("prepare s (int) as select $1 + 1000 as v, 'b' as who")
        assert backend_pid(a) == backend_pid(b)  # one server for both
        for i in range(5):
            assert a.execute(f"execute s ({i})").fetchone() == (2 * i, "a")
            assert b.execute(f"EXECUTE S ({i})").fetchone() == (i + 1000, "b")
            assert b.execute(f'execute "S" ({i})').fetchone() == (i + 1000, "b")
        # EXECUTE in an extended-protocol Parse (psycopg with binary results) is carried too.
        assert a.execute("execute s (21)", binary=True).fetchone() == (42, "a")
        assert b.execute("execute s (21)", binary=True).fetchone() == (1021, "b")
        # b wipes the server's prepared statements; a's is prepared there again when a needs it.
        b.execute("discard all")
        assert a.execute("execute s (50)").fetchone() == (100, "a")
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):  # b's own are gone, as in PostgreSQL
            b.execute("execute s (1)")
        a.execute("begin")
        assert a.execute("execute s (3)").fetchone() == (6, "a")
        a.execute("rollback")
        b.execute("deallocate all")
        assert a.execute("explain (costs off) execute s (4)").fetchall() == [("Result",)]
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            a.execute("prepare s as select 1")
        a.execute("deallocate s")
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            a.execute("execute s (1)")
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_clients_pinned_total") == 0
    assert pgr.metric(text, "pgrouter_prepared_statements_prepared_total") >= 5
    pgr.wait_metric(router, "pgrouter_servers_active", 0)


def test_sql_prepared_statement_follows_the_client_to_another_server(pgrouter):
    router = pgrouter(txn(2))
    with router.connect() as a, router.connect() as b:
        a.execute("prepare follow (text) as select 'hello ' || $1, pg_backend_pid()")
        first = a.execute("execute follow ('one')").fetchone()
        # b holds the server a just used, so a's next transaction runs on the other one, which never saw a's
        # PREPARE.
        b.execute("begin")
        assert backend_pid(b) == first[1]
        second = a.execute("execute follow ('two')").fetchone()
        assert second[0] == "hello two" and second[1] != first[1]
        b.execute("commit")
    assert pgr.metric(router.metrics(), "pgrouter_clients_pinned_total") == 0


def test_advisory_lock_pins_its_holder_and_is_released_for_the_next_client(pgrouter):
    router = pgrouter(txn(2))
    with router.connect() as a, router.connect() as b:
        a.execute("set search_path = pg_catalog")
        a.execute("select pg_advisory_lock(4242)")
        pid = backend_pid(a)
        assert b.execute("select pg_try_advisory_xact_lock(4242)").fetchone() == (False,)  # held by a's session
        assert b.execute("show search_path").fetchone() != ("pg_catalog",)
        for _ in range(3):
            assert backend_pid(a) == pid  # pinned
        assert pgr.metric(router.metrics(), "pgrouter_clients_pinned_total") == 1
    with router.connect() as c:  # a's server is reset (DISCARD ALL releases the lock) before reuse
        # The reset runs in the background as a leaves, and c may get b's server meanwhile: the lock is free
        # once that reset is done (a client never waits for it).
        deadline = time.monotonic() + 5
        while c.execute("select pg_try_advisory_xact_lock(4242)").fetchone() != (True,):
            assert time.monotonic() < deadline, "a's session advisory lock was never released"
            time.sleep(0.05)
    assert '"feature":"session advisory lock"' in router.log()


@pytest.mark.parametrize("sql, feature", [("listen some_channel", "LISTEN"),
                                          ("select pg_advisory_lock(7)", "session advisory lock"),
                                          ("create temp table t_refused (x int)", "temporary table")])
def test_refuse_mode_names_the_feature_and_setting(pgrouter, sql, feature):
    router = pgrouter(txn(2, session_features="refuse"))
    with router.connect() as c:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            c.execute(sql)
        assert feature in str(e.value) and "pool.session_features" in str(e.value)
        assert c.execute("select 1").fetchone() == (1,)  # the connection is fine
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            c.execute(sql, prepare=True)  # extended protocol, named statement
        assert c.execute("select %s::int", (5,), prepare=True).fetchone() == (5,)
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_session_features_refused_total") == 2
    assert pgr.metric(text, "pgrouter_clients_pinned_total") == 0
    # Counted as the client saw them (the server's answer to pgrouter's sentinel was 26000).
    assert 'pgrouter_errors_total{source="server",sqlstate="0A000"} 2' in text, text
    assert 'sqlstate="26000"' not in text, text


def pgbench_tpcb(router, protocol):
    """pgbench's TPC-B-like script, 8 clients x 100 transactions through router; asserts none failed and returns
    pgrouter's metrics text."""
    import os
    import subprocess
    env = {**os.environ, "PGPASSWORD": pgr.USERS["pgr_scram"]}
    # One thread per client: see test_transaction_pool.py's pgbench test.
    result = subprocess.run(["pgbench", "-M", protocol, "-c", "8", "-j", "8", "-t", "100", "-h", pgr.HOST, "-p",
                             str(router.port), "-U", "pgr_scram", "app"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "number of failed transactions: 0" in result.stdout
    pgr.wait_metric(router, "pgrouter_servers_active", 0)
    return router.metrics()


def test_pgbench_prepared_under_transaction_pooling_with_a_tiny_cache(pgrouter, pgbench_tables):
    text = pgbench_tpcb(pgrouter(txn(3, prepared_statements_cache=1)), "prepared")
    assert pgr.metric(text, "pgrouter_prepared_statements_evicted_total") > 0
    assert pgr.metric(text, "pgrouter_servers_active") == 0


@pytest.mark.parametrize("unnamed", ["pass", "prepare"])
def test_unnamed_statement_of_one_client_never_runs_for_another(pgrouter, unnamed):
    """Two raw clients share one server (pool size 1). B leaves its unnamed statement on the server; A, whose
    unnamed statement a simple Query dropped (or whose re-sent one the server skipped after an error), binds
    the unnamed statement: A must get PostgreSQL's 26000 or its own statement's row, never B's. The same with
    pool.unnamed_statements: prepare, where each client's unnamed statement is a shared statement on the server."""
    router = pgrouter(txn(1, unnamed_statements=unnamed))

    def login():
        raw = pgr.Raw(router.port)
        raw.startup("pgr_scram", "app", pgr.USERS["pgr_scram"])
        return raw

    def rows(messages):
        return [pgr.parse_data_row(p) for k, p in messages if k == "D"]

    def errors(messages):
        return [pgr.parse_error_fields(p)["code"] for k, p in messages if k == "E"]

    with login() as a, login() as b:
        def b_parses_unnamed():
            b.send(pgr.parse("select 'B''s statement'") + pgr.sync())
            assert [k for k, _ in b.read_until_ready()] == ["1", "Z"]

        # A has its own unnamed statement; B replaces the server's with its own.
        a.send(pgr.parse("select 'A''s statement'") + pgr.sync())
        a.read_until_ready()
        b_parses_unnamed()
        # An error ahead of A's Bind makes the server skip the Parse pgrouter re-sends for A.
        a.send(pgr.parse("selec broken", name="bad") + pgr.bind() + pgr.execute() + pgr.sync())
        got = a.read_until_ready()
        assert errors(got) == ["42601"] and rows(got) == []
        # A's statement still exists (as in its own session), so A gets A's row.
        a.send(pgr.bind() + pgr.execute() + pgr.sync())
        assert rows(a.read_until_ready()) == [["A's statement"]]

        # A simple Query drops A's unnamed statement; B parses one again on the shared server.
        a.send(pgr.query("select 1"))
        a.read_until_ready()
        b_parses_unnamed()
        a.send(pgr.bind() + pgr.execute() + pgr.sync())
        got = a.read_until_ready()
        assert rows(got) == [] and errors(got) == ["26000"], got
        # B still has its own.
        b.send(pgr.bind() + pgr.execute() + pgr.sync())
        assert rows(b.read_until_ready()) == [["B's statement"]]



def test_a_setting_changed_inside_a_function_never_leaks_to_a_client_with_the_same_settings(pgrouter, cluster):
    """Two clients that logged in with the same settings share one server. One changes application_name
    inside a function (no SET or set_config in its own text: nothing pgrouter can see but the ParameterStatus
    the server reports): the other still gets its own login value. pgrouter remembers which settings a
    server was found to have; a reported change must make it check and set them again."""
    with cluster.connect() as admin:
        admin.execute("create or replace function pgr_rename_app(t text) returns text language sql "
                      "as $$ select pg_catalog.set_config('application_name', t, false) $$")
    router = pgrouter(txn(1))
    with router.connect(application_name="same") as a, router.connect(application_name="same") as b:
        assert b.execute("show application_name").fetchone() == ("same",)
        assert a.execute("show application_name").fetchone() == ("same",)  # the server is settled for both
        a.execute("select pgr_rename_app('changed')")
        assert a.info.parameter_status("application_name") == "changed"
        assert b.execute("show application_name").fetchone() == ("same",)
        assert b.info.parameter_status("application_name") == "same"
        assert pgr.metric(router.metrics(), "pgrouter_clients_pinned_total") == 0


def test_set_config_of_a_session_setting_pins_and_a_local_one_does_not(pgrouter):
    """set_config(name, value, false) in a plain SELECT changes the session like SET, but pgrouter cannot
    carry it (its arguments are expressions): the client is pinned and its server reset before reuse, so
    nothing reaches another client, reported setting (application_name) or not (search_path).
    set_config(..., true) ends with the transaction and pins nothing."""
    router = pgrouter(txn(2))
    with router.connect() as a, router.connect() as b:
        defaults = settings_of(b)
        with a.transaction():
            a.execute("select set_config('search_path', 'pg_catalog', true)")
            assert a.execute("show search_path").fetchone() == ("pg_catalog",)
        assert pgr.metric(router.metrics(), "pgrouter_clients_pinned_total") == 0
        a.execute("select set_config('search_path', 'pg_catalog', false), "
                  "set_config('application_name', 'changed', false)")
        assert pgr.metric(router.metrics(), "pgrouter_clients_pinned_total") == 1
        for _ in range(3):
            assert settings_of(b) == defaults
            assert b.execute("show application_name").fetchone() != ("changed",)
            assert a.execute("show search_path").fetchone() == ("pg_catalog",)
    with router.connect() as c, router.connect() as d:  # a's server was reset before reuse
        for conn in (c, d):
            assert settings_of(conn) == defaults
            assert conn.execute("show application_name").fetchone() != ("changed",)
    assert '"feature":"set_config() of a session setting"' in router.log()


def test_a_do_block_that_sets_pins_and_leaks_nothing(pgrouter):
    """A DO block's PL/pgSQL SET (first in the block, or run by EXECUTE from a string) lasts for the session
    like a plain SET, but pgrouter does not see a statement of its own: the client is pinned, and the other
    client sharing the pool never gets the setting."""
    router = pgrouter(txn(2))
    with router.connect() as a, router.connect() as b:
        defaults = settings_of(b)
        a.execute("DO $$ BEGIN SET search_path = pg_catalog; END $$")
        a.execute("DO $$ BEGIN EXECUTE 'SET statement_timeout = 777'; END $$")
        assert settings_of(a) == ("pg_catalog", defaults[1], "777ms")
        assert pgr.metric(router.metrics(), "pgrouter_clients_pinned_total") == 1
        for _ in range(3):
            assert settings_of(b) == defaults
    with router.connect() as c, router.connect() as d:  # a's server was reset before reuse
        assert settings_of(c) == defaults and settings_of(d) == defaults


def prepared_on_server(conn, text):
    """(name, plans so far) of each statement the client's server has prepared with this text."""
    return conn.execute("select name, generic_plans + custom_plans from pg_prepared_statements where statement = %s",
                        (text,), prepare=False).fetchall()


@pytest.mark.parametrize("unnamed", ["pass", "prepare"])
def test_unnamed_statements_are_prepared_once_per_server_when_asked(pgrouter, unnamed):
    """pool.unnamed_statements: prepare: a text the client sends again as its unnamed statement is parsed once per
    server connection (from its second time: a text sent once stays the server's unnamed statement) and then only bound (psycopg with prepare_threshold=None sends Parse/Bind/Execute with the
    unnamed statement every time). With pass (the default) the server parses it each time and keeps nothing."""
    router = pgrouter(txn(1, unnamed_statements=unnamed))
    text = "select $1::int * 3 as tripled"
    with router.connect(prepare_threshold=None) as c:
        for i in range(20):
            assert c.execute("select %s::int * 3 as tripled", (i,)).fetchone() == (3 * i,)
        on_server = prepared_on_server(c, text)
    metrics = router.metrics()
    if unnamed == "pass":
        assert on_server == []
        assert pgr.metric(metrics, "pgrouter_prepared_statements_prepared_total") == 0
        return
    # The first Parse of a text stays the server's unnamed statement; from the second on, one statement under
    # pgrouter's shared name, executed 19 times (the plan counters count executions).
    assert len(on_server) == 1 and on_server[0][0].startswith("pgr_") and on_server[0][1] == 19, on_server
    # Prepared once: the 18 later Parses were answered from the server's copy.
    assert pgr.metric(metrics, "pgrouter_prepared_statements_reused_total") >= 18


def test_prepared_unnamed_statement_errors_name_the_unnamed_statement(pgrouter):
    """Errors about the shared statement name the client's statement as PostgreSQL does: ""."""
    router = pgrouter(txn(1, unnamed_statements="prepare"))
    with pgr.Raw(router.port) as raw:
        raw.startup("pgr_scram", "app", pgr.USERS["pgr_scram"])
        for _ in range(3):  # the server's unnamed statement, then prepared, then already there
            raw.send(pgr.parse("select $1::int") + pgr.bind() + pgr.execute() + pgr.sync())
            got = raw.read_until_ready()
            errors = [pgr.parse_error_fields(p) for k, p in got if k == "E"]
            assert [k for k, _ in got] == ["1", "E", "Z"], got
            assert errors[0]["code"] == "08P01"
            assert errors[0]["message"] == 'bind message supplies 0 parameters, but prepared statement "" requires 1'


@pytest.mark.parametrize("alter_via", ["pgrouter", "direct"])
@pytest.mark.parametrize("unnamed", ["pass", "prepare"])
def test_unnamed_statement_after_its_result_columns_change(pgrouter, cluster, unnamed, alter_via):
    """A table gains a column between two executions of `select *` as the unnamed statement. Re-parsed (pass),
    the new column simply appears. Prepared on the server (prepare): an ALTER that runs through pgrouter moves
    every client to freshly parsed statements, so nothing fails either; one run on the server directly leaves
    the server's copy stale, PostgreSQL refuses it once with 0A000 "cached plan must not change result type" (as
    it does for any prepared statement), and pgrouter then prepares the server's statements afresh, so the
    client's next execution sees the new column."""
    router = pgrouter(txn(1, unnamed_statements=unnamed))
    with router.connect(prepare_threshold=None, autocommit=True) as c:
        c.execute("drop table if exists unnamed_cols")
        c.execute("create table unnamed_cols (a int)")
        c.execute("insert into unnamed_cols values (1)")
        try:
            for _ in range(3):
                assert c.execute("select * from unnamed_cols where a = %s", (1,)).fetchall() == [(1,)]
            alter = "alter table unnamed_cols add column b int default 7"
            if alter_via == "pgrouter":
                c.execute(alter)
            else:
                with cluster.connect() as direct:
                    direct.execute(alter)
            failures = 0
            for _ in range(3):
                try:
                    rows = c.execute("select * from unnamed_cols where a = %s", (1,)).fetchall()
                    break
                except psycopg.errors.FeatureNotSupported as e:
                    assert "cached plan must not change result type" in str(e)
                    failures += 1
            assert rows == [(1, 7)]
            assert failures == (1 if (unnamed, alter_via) == ("prepare", "direct") else 0)
        finally:
            c.execute("drop table if exists unnamed_cols")


def test_pgbench_extended_with_prepared_unnamed_statements_and_a_tiny_cache(pgrouter, pgbench_tables):
    """pgbench's TPC-B-like script (five statements, the unnamed statement each) with
    pool.unnamed_statements: prepare on three servers holding two statements each: statements are evicted and
    prepared again all the time, and no transaction fails."""
    text = pgbench_tpcb(pgrouter(txn(3, unnamed_statements="prepare", prepared_statements_cache=2)), "extended")
    # Seven texts (BEGIN and END too) cycling through two places: every Parse after a text's first prepares, and
    # evicts one.
    assert pgr.metric(text, "pgrouter_prepared_statements_prepared_total") >= 8 * 100 * 7 - 7
    assert pgr.metric(text, "pgrouter_prepared_statements_evicted_total") > 0
    assert pgr.metric(text, "pgrouter_servers_active") == 0


@pytest.mark.parametrize("unnamed,threshold", [("pass", 0), ("prepare", None)])
def test_statements_are_shared_only_between_clients_that_parse_them_alike(pgrouter, unnamed, threshold):
    """A timestamptz literal is converted with the TimeZone of the session that parses it: two clients in
    different zones preparing the same text on one server (pool size 1) must each get their own statement
    (named with prepare_threshold=0; the unnamed statement with pool.unnamed_statements: prepare)."""
    router = pgrouter(txn(1, unnamed_statements=unnamed))
    query = "select extract(epoch from '2020-01-02 10:00'::timestamptz)::bigint, %s::int"
    utc_epoch = 1577959200
    with router.connect(prepare_threshold=threshold, options="-c TimeZone=UTC") as utc, \
            router.connect(prepare_threshold=threshold, options="-c TimeZone=Asia/Tokyo") as tokyo:
        for i in range(3):
            assert utc.execute(query, (i,)).fetchone() == (utc_epoch, i)
            assert tokyo.execute(query, (i,)).fetchone() == (utc_epoch - 9 * 3600, i)
        # After a SET of the zone, a statement parsed from now on (a new text for psycopg's own cache of named
        # statements; a statement prepared before keeps its constant, in PostgreSQL too) is the other zone's.
        utc.execute("set timezone to 'Asia/Tokyo'", prepare=False)
        for i in range(3):
            assert utc.execute(query + " + 0", (i,)).fetchone() == (utc_epoch - 9 * 3600, i)


def test_a_named_statement_prepared_again_after_its_table_changed_is_fresh(pgrouter):
    """PostgreSQL refuses a prepared `select *` once its table gained a column (0A000 "cached plan must not change
    result type") and the client (Rails does) closes and prepares it again. Through pgrouter the name it prepares
    again is the same shared server statement: it must be parsed afresh, not answered from the server's stale copy
    (the client would then fail forever on that server)."""
    router = pgrouter(txn(1))
    with router.connect(autocommit=True) as c:
        c.execute("drop table if exists named_cols")
        c.execute("create table named_cols (a int)")
        c.execute("insert into named_cols values (1)")
    try:
        with pgr.Raw(router.port) as raw:
            raw.startup("pgr_scram", "app", pgr.USERS["pgr_scram"])

            def run_s1():
                raw.send(pgr.bind(statement="s1") + pgr.execute() + pgr.sync())
                got = raw.read_until_ready()
                return ([pgr.parse_error_fields(p)["code"] for k, p in got if k == "E"],
                        [pgr.parse_data_row(p) for k, p in got if k == "D"])

            raw.send(pgr.parse("select * from named_cols", name="s1") + pgr.sync())
            raw.read_until_ready()
            assert run_s1() == ([], [["1"]])
            raw.send(pgr.query("alter table named_cols add column b int default 7"))
            raw.read_until_ready()
            assert run_s1() == (["0A000"], [])  # as PostgreSQL answers
            raw.send(pgr.close("S", "s1") + pgr.parse("select * from named_cols", name="s1") + pgr.sync())
            assert [k for k, _ in raw.read_until_ready()] == ["3", "1", "Z"]
            assert run_s1() == ([], [["1", "7"]])
    finally:
        with router.connect(autocommit=True) as c:
            c.execute("drop table if exists named_cols")


@pytest.fixture
def sequence(cluster):
    admin = psycopg.connect(cluster.dsn("primary", user="postgres"), autocommit=True)
    admin.execute("create table if not exists txn_seq_t (id serial primary key, v text)")
    admin.execute("grant all on txn_seq_t, txn_seq_t_id_seq to public")
    yield "txn_seq_t"
    admin.execute("drop table txn_seq_t")
    admin.close()


def test_currval_after_another_transaction_is_refused_never_another_clients(pgrouter, cluster, sequence):
    """A client's nextval() in one transaction, another client's on the same server, then the first client's
    currval() in a later transaction: PostgreSQL gives the first client's own value; through transaction pooling
    the server's last value is the other client's, so pgrouter refuses with 55000 and says what to do."""
    router = pgrouter(txn(1))
    direct = psycopg.connect(cluster.dsn("primary", user="pgr_scram", password=pgr.USERS["pgr_scram"]),
                             autocommit=True)
    with router.connect(autocommit=True) as a, router.connect(autocommit=True) as b, direct:
        own = a.execute("insert into txn_seq_t (v) values ('a') returning id").fetchone()[0]
        b.execute("insert into txn_seq_t (v) values ('b')")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
            a.execute("select currval('txn_seq_t_id_seq')")
        assert "INSERT ... RETURNING" in refused.value.diag.message_hint
        assert "another client" in str(refused.value)
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            a.execute("select lastval()", prepare=False)  # the unnamed statement too
        # The same bytes straight to PostgreSQL: the client's own value, which pgrouter never contradicts.
        mine = direct.execute("insert into txn_seq_t (v) values ('d') returning id").fetchone()[0]
        assert direct.execute("select currval('txn_seq_t_id_seq')").fetchone()[0] == mine
        # In the transaction of the INSERT (or the same Query), the value is the client's: allowed.
        with a.transaction():
            got = a.execute("insert into txn_seq_t (v) values ('a2') returning id").fetchone()[0]
            assert a.execute("select currval('txn_seq_t_id_seq')").fetchone()[0] == got
            assert a.execute("select lastval()", prepare=False).fetchone()[0] == got
        cur = a.cursor()
        cur.execute("insert into txn_seq_t (v) values ('a3'); select lastval()")
        assert cur.nextset() and cur.fetchone()[0] > got
        assert b.execute("select 1").fetchone()[0] == 1  # the refusals cost the other client nothing
    assert own < got
    assert router.running


def test_currval_of_a_pinned_client_is_its_own(pgrouter, sequence):
    router = pgrouter(txn(2))
    with router.connect(autocommit=True) as a, router.connect(autocommit=True) as b:
        a.execute("select pg_advisory_lock(77)")  # pins a to its server
        own = a.execute("insert into txn_seq_t (v) values ('a') returning id").fetchone()[0]
        b.execute("insert into txn_seq_t (v) values ('b')")
        assert a.execute("select currval('txn_seq_t_id_seq')").fetchone()[0] == own
        a.execute("select pg_advisory_unlock(77)")
