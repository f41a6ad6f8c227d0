"""Session pooling on a sharded database: each statement runs on the shard its key names (as in transaction
pooling), and the session holds one server per shard it used, its shard's primary, until it disconnects, so
session state made on a shard (temp tables, settings, prepared statements) stays usable there. Answers are
compared with the rows read on each shard directly."""
import time

import psycopg
import pytest

import pgr
from test_sharding import key_on_each_shard, make_table, rows_on, sharded_config, sqlstate_of

TABLE = "ss_orders"
SHARDS = ["primary", "shard1"]


def session_config(cluster, **sharding):
    config = sharded_config(cluster, {TABLE: "tenant_id"}, **sharding)
    config["pool"] = {"mode": "session"}
    return config


def active_servers(router):
    return pgr.metric(router.metrics(), "pgrouter_servers_active")


def wait_active(router, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while active_servers(router) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return active_servers(router)


def rows_of(cluster, key):
    """The rows of `key` as the shards hold them (read on each shard directly)."""
    out = []
    for server in SHARDS:
        with cluster.connect(server) as c:
            out += c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s ORDER BY v", (key,)).fetchall()
    return out


@pytest.fixture
def keys(cluster):
    make_table(cluster, TABLE)
    a, b = key_on_each_shard(cluster)
    return a, b


def test_keyed_reads_and_writes_reach_each_tenants_shard(cluster, pgrouter, keys):
    a, b = keys
    router = pgrouter(session_config(cluster))
    with router.connect() as c, router.connect(prepare_threshold=0) as prepared:
        for i, k in enumerate([a, b, a, b]):
            c.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES (%s, %s)", (k, f"s{i}"))
            prepared.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES (%s, %s)", (k, f"p{i}"))
        with c.transaction():
            c.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES ({b}, 'tx')")
        on = [rows_on(cluster, s, TABLE) for s in SHARDS]
        assert {k for k, _ in on[0]} == {a} and {k for k, _ in on[1]} == {b}, on
        for k in (a, b):
            want = rows_of(cluster, k)
            assert want, k
            assert c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = {k} ORDER BY v").fetchall() == want
            assert prepared.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s ORDER BY v",
                                    (k,)).fetchall() == want
        c.execute(f"UPDATE {TABLE} SET v = v || '!' WHERE tenant_id = %s", (b,))
        assert all(v.endswith("!") for (v,) in rows_of(cluster, b))
        assert not any(v.endswith("!") for (v,) in rows_of(cluster, a))


def seed_rows(cluster, keys):
    for server, k in zip(SHARDS, keys):
        with cluster.connect(server) as direct:
            direct.execute(f"INSERT INTO {TABLE} VALUES ({k}, 'one'), ({k}, 'two')")


PID_SQL = f"SELECT pg_backend_pid() FROM {TABLE} WHERE tenant_id = %s LIMIT 1"


def test_session_state_stays_on_each_shards_held_server(cluster, pgrouter, keys):
    a, b = keys
    seed_rows(cluster, keys)
    router = pgrouter(session_config(cluster))
    with router.connect() as c:
        pids = {k: c.execute(PID_SQL, (k,)).fetchone()[0] for k in (a, b)}
        assert pids[a] != pids[b]
        # A temp table (on the default shard, as any table in neither list) stays usable in later
        # transactions of that shard, with work on the other shard in between.
        c.execute("CREATE TEMP TABLE ss_scratch (n int)")
        c.execute("INSERT INTO ss_scratch VALUES (41)")
        assert c.execute(f"SELECT count(*) FROM {TABLE} WHERE tenant_id = %s", (b,)).fetchone()[0] == 2
        with c.transaction():
            assert c.execute("SELECT n + 1 FROM ss_scratch").fetchall() == [(42,)]
            c.execute("INSERT INTO ss_scratch VALUES (1)")
        assert c.execute("SELECT count(*) FROM ss_scratch").fetchone()[0] == 2
        # A session advisory lock stays held by the default shard's server.
        c.execute("SELECT pg_advisory_lock(4242)")
        # A setting made on the default shard's server is seen by shard 1's.
        c.execute("SET application_name = 'held-session'")
        got = c.execute(f"SELECT current_setting('application_name') FROM {TABLE} WHERE tenant_id = %s "
                        "LIMIT 1", (b,)).fetchone()
        assert got == ("held-session",)
        # Server-side prepared statements on both shards, used again and again.
        for _ in range(3):
            for k in (a, b):
                assert c.execute(f"SELECT count(*) FROM {TABLE} WHERE tenant_id = %s", (k,),
                                 prepare=True).fetchone()[0] == 2
        # Every keyed statement ran on the same server of its shard, and the session holds one per shard.
        assert {k: c.execute(PID_SQL, (k,)).fetchone()[0] for k in (a, b)} == pids
        assert active_servers(router) == 2
        with cluster.connect("primary") as direct:
            assert direct.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
                                  (pids[a],)).fetchone()[0] == 1
        assert pgr.metric(router.metrics(), "pgrouter_clients_pinned_total") == 0
    # At disconnect every held server goes back to its pool, reset (pool.reset_query).
    assert wait_active(router, 0) == 0
    with cluster.connect("primary") as direct:
        assert direct.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                              "objid = 4242").fetchone()[0] == 0
    with router.connect() as c:
        assert sqlstate_of(c, "SELECT n FROM ss_scratch")[0] == "42P01"
        assert c.execute(f"SELECT current_setting('application_name') FROM {TABLE} WHERE tenant_id = %s "
                         "LIMIT 1", (b,)).fetchone()[0] != "held-session"


def test_scatter_read_and_cross_shard_write(cluster, pgrouter, keys):
    a, b = keys
    router = pgrouter(session_config(cluster))
    seed_rows(cluster, keys)
    with router.connect() as c:
        pids = {k: c.execute(PID_SQL, (k,)).fetchone()[0] for k in (a, b)}
        assert c.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 4
        assert sorted(c.execute(f"SELECT tenant_id, v FROM {TABLE}").fetchall()) == sorted(
            rows_on(cluster, "primary", TABLE) + rows_on(cluster, "shard1", TABLE))
        c.execute(f"UPDATE {TABLE} SET v = 'both' WHERE tenant_id IN ({a}, {b}) AND v = 'one'")
        assert rows_of(cluster, a) == [("both",), ("two",)]
        assert rows_of(cluster, b) == [("both",), ("two",)]
        # The scatter's and the write's legs were the session's own servers: still one per shard.
        assert {k: c.execute(PID_SQL, (k,)).fetchone()[0] for k in (a, b)} == pids
        assert active_servers(router) == 2
    assert wait_active(router, 0) == 0


def test_a_statement_for_another_shard_inside_a_transaction_is_refused_or_coordinated(cluster, pgrouter, keys):
    a, b = keys
    router = pgrouter(session_config(cluster, cross_shard_writes="reject"))
    with router.connect() as c:
        c.execute("BEGIN")
        c.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES ({a}, 'in-tx')")
        code, msg = sqlstate_of(c, f"SELECT v FROM {TABLE} WHERE tenant_id = {b}")
        assert code == "0A000", msg
        c.execute("ROLLBACK")
        assert rows_of(cluster, a) == []
        # The session goes on, and keys of both shards still work.
        c.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES ({b}, 'after')")
        assert c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = {b}").fetchall() == [("after",)]


def test_a_held_server_that_ends_is_replaced_or_ends_the_session(cluster, pgrouter, keys):
    """A held server terminated while parked: replaced when it held only settings and prepared statements;
    when it held session state (a temp table) the client is told its session there ended."""
    a, b = keys
    seed_rows(cluster, keys)
    router = pgrouter(session_config(cluster))
    with router.connect() as c:
        c.execute("SET application_name = 'survives'")
        old = c.execute(PID_SQL, (b,)).fetchone()[0]
        with cluster.connect("shard1") as direct:
            assert direct.execute("SELECT pg_terminate_backend(%s)", (old,)).fetchone()[0]
        time.sleep(0.3)
        new = c.execute(PID_SQL, (b,)).fetchone()[0]
        assert new != old
        assert c.execute(f"SELECT current_setting('application_name') FROM {TABLE} WHERE tenant_id = %s "
                         "LIMIT 1", (b,)).fetchone()[0] == "survives"
        c.execute("CREATE TEMP TABLE ss_gone (n int)")
        held = c.execute(PID_SQL, (a,)).fetchone()[0]
        with cluster.connect("primary") as direct:
            assert direct.execute("SELECT pg_terminate_backend(%s)", (held,)).fetchone()[0]
        time.sleep(0.3)
        with pytest.raises(psycopg.OperationalError):
            c.execute("SELECT n FROM ss_gone")
    assert wait_active(router, 0) == 0
    with router.connect() as c:  # pgrouter goes on
        assert c.execute(f"SELECT count(*) FROM {TABLE} WHERE tenant_id = %s", (b,)).fetchone()[0] == 2


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_sql_execute_runs_on_its_statements_shard_or_is_refused(cluster, pgrouter, keys, mode):
    """SQL EXECUTE names no table itself: it is routed by the statement it runs (a key written in it, or the
    argument given for a key that is a parameter), never run on the transaction's shard with the wrong tenant's
    rows (test_sharded_execute.py has the rest)."""
    a, b = keys
    seed_rows(cluster, keys)
    config = session_config(cluster)
    config["pool"] = {"mode": mode}
    router = pgrouter(config)
    with router.connect() as c:
        c.execute(f"PREPARE by_key(bigint) AS SELECT count(*) FROM {TABLE} WHERE tenant_id = $1")
        c.execute(f"PREPARE of_b AS SELECT v FROM {TABLE} WHERE tenant_id = {b} ORDER BY v")
        c.execute("PREPARE plain AS SELECT 41 + 1")
        for k in (a, b):
            assert c.execute(f"EXECUTE by_key({k})").fetchall() == [(len(rows_of(cluster, k)),)]
        code, msg = sqlstate_of(c, f"EXECUTE by_key({a} + 0)")
        assert code == "0A000" and "EXECUTE by_key" in msg and "argument 1" in msg, (code, msg)
        assert c.execute("EXECUTE of_b").fetchall() == rows_of(cluster, b)
        assert c.execute("EXECUTE plain").fetchall() == [(42,)]
        with c.transaction():
            c.execute(f"SELECT 1 FROM {TABLE} WHERE tenant_id = {a}")
            code, msg = sqlstate_of(c, "EXECUTE of_b")
            assert code == "0A000", (code, msg)


def test_a_bystander_session_is_unaffected(cluster, pgrouter, keys):
    a, b = keys
    router = pgrouter(session_config(cluster))
    with router.connect() as one, router.connect() as two:
        one.execute("SET application_name = 'one'")
        one.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES ({b}, 'from-one')")
        two.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES ({a}, 'from-two')")
        app = "SELECT current_setting('application_name') FROM {} WHERE tenant_id = {} LIMIT 1"
        assert two.execute(app.format(TABLE, b)).fetchone()[0] != "one"
        assert one.execute(app.format(TABLE, a)).fetchone()[0] == "one"
        assert two.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = {b}").fetchall() == [("from-one",)]
        assert one.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = {a}").fetchall() == [("from-two",)]
        assert active_servers(router) == 4
    assert wait_active(router, 0) == 0


def test_one_shard_session_pooling_is_unchanged(cluster, pgrouter):
    """A database of one shard keeps plain session pooling: one server from login on, pinned to nothing."""
    router = pgrouter({"pool": {"mode": "session"}})
    with router.connect() as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        c.execute("CREATE TEMP TABLE ss_one (n int)")
        assert active_servers(router) == 1
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_clients_pinned_total") == 0


def console_rows(router, sql):
    with router.connect(user="postgres", dbname="pgrouter") as admin:
        cur = admin.execute(sql)
        names = [d.name for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def test_show_servers_lists_the_servers_a_session_keeps_on_each_shard(cluster, pgrouter, keys):
    """A session-pooled client holding a server on each shard, and a transaction-pooled one inside a
    transaction across shards: SHOW SERVERS lists each of their servers, linked to the client, and SHOW POOLS
    counts them as active (not as logging in)."""
    a, b = keys
    config = session_config(cluster)
    config["admin"] = {"admin_users": ["postgres"]}
    router = pgrouter(config)
    shard_ports = {cluster.endpoint(s)["port"] for s in SHARDS}
    with router.connect() as held:
        for k in (a, b):
            held.execute(f"SELECT count(*) FROM {TABLE} WHERE tenant_id = %s", (k,))
        client = [c for c in console_rows(router, "SHOW CLIENTS") if c["database"] == "app"]
        servers = console_rows(router, "SHOW SERVERS")
        assert len(client) == 1 and len(servers) == 2, servers
        assert {s["port"] for s in servers} == shard_ports
        assert {s["link"] for s in servers} == {client[0]["ptr"]} and {s["state"] for s in servers} == {"active"}
        pools = [p for p in console_rows(router, "SHOW POOLS") if p["database"] == "app"]
        assert sum(p["sv_active"] for p in pools) == 2, pools
    # Given back at disconnect (after their reset): idle in their pools, linked to no one.
    deadline = time.monotonic() + 10
    while {(s["state"], s["link"]) for s in console_rows(router, "SHOW SERVERS")} != {("idle", "")}:
        assert time.monotonic() < deadline, console_rows(router, "SHOW SERVERS")
        time.sleep(0.1)
    config["pool"] = {"mode": "transaction"}
    router = pgrouter(config)
    with router.connect(autocommit=False) as tx:
        for k in (a, b):  # the second shard's statement takes the transaction across shards
            tx.execute(f"SELECT count(*) FROM {TABLE} WHERE tenant_id = %s", (k,))
        servers = console_rows(router, "SHOW SERVERS")
        assert {s["port"] for s in servers if s["state"] == "active"} == shard_ports, servers
        tx.rollback()
