"""Tenant sharding against real servers: shard 0 is the test cluster's primary with its streaming replica, shard 1
the shard1 server. Rows written through pgrouter must land where PostgreSQL's own PARTITION BY HASH would put them
(checked on each shard with satisfies_hash_partition), keyed statements must run on their shard only, and every
statement pgrouter cannot route to one shard must get 0A000, never a wrong or partial answer."""
import random
import time
import uuid

import psycopg
import pytest

import pgr

SEED = 20261206
INT8_MIN, INT8_MAX = -(2 ** 63), 2 ** 63 - 1


def shard_servers(cluster):
    return ["primary", "shard1"]


def make_table(cluster, name, key_type="bigint", extra="v text"):
    """The same empty table on both shards, plus a hash-partitioned parent to check placement against."""
    for server in shard_servers(cluster):
        with cluster.connect(server) as c:
            c.execute(f"DROP TABLE IF EXISTS {name}, {name}_hp")
            c.execute(f"CREATE TABLE {name} (tenant_id {key_type} NOT NULL, {extra})")
            c.execute(f"GRANT ALL ON {name} TO PUBLIC")
            c.execute(f"CREATE TABLE {name}_hp (k {key_type}) PARTITION BY HASH (k)")


def sharded_config(cluster, tables, **sharding):
    return {
        "pool": {"mode": "transaction"},
        "databases": [{
            "name": "app",
            "shards": [{"primary": cluster.endpoint("primary"), "replicas": [cluster.endpoint("replica")]},
                       {"primary": cluster.endpoint("shard1")}],
            "sharding": {"tables": tables, **sharding},
        }],
    }


def rows_on(cluster, server, table, key_type="bigint"):
    with cluster.connect(server) as c:
        return c.execute(f"SELECT tenant_id, v FROM {table} ORDER BY 1, 2").fetchall()


def misplaced(cluster, table, shards=2):
    bad = []
    for i, server in enumerate(shard_servers(cluster)):
        with cluster.connect(server) as c:
            bad += c.execute(f"SELECT tenant_id FROM {table} WHERE NOT satisfies_hash_partition("
                             f"'{table}_hp'::regclass, {shards}, {i}, tenant_id)").fetchall()
    return bad


def keys_for_test(rng, n):
    keys = [0, -1, 1, 42, INT8_MIN, INT8_MAX, INT8_MIN + 1, INT8_MAX - 1, 2 ** 31, -(2 ** 31)]
    keys += [rng.randint(INT8_MIN, INT8_MAX) for _ in range(n)] + [rng.randint(-1000, 1000) for _ in range(n)]
    return list(dict.fromkeys(keys))


def wait_replayed(cluster, timeout=60):
    """Until the replica replayed everything the primary has logged. (The insert position: the test cluster
    commits asynchronously, so the write position can trail the last commits.)"""
    with cluster.connect("primary") as p:
        lsn = p.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with cluster.connect("replica", autocommit=True) as r:
        while not r.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
            assert time.monotonic() < deadline, f"the replica did not replay {lsn} within {timeout}s"
            time.sleep(0.02)


def test_rows_land_where_postgres_hash_partitioning_puts_them(cluster, pgrouter):
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    make_table(cluster, "sh_place")
    router = pgrouter(sharded_config(cluster, {"sh_place": "tenant_id"}))
    keys = keys_for_test(rng, 40)
    with router.connect() as c, router.connect(prepare_threshold=0) as prepared:
        for i, k in enumerate(keys):
            if i % 3 == 0:  # simple protocol, the key inline
                c.execute(psycopg.sql.SQL("INSERT INTO sh_place (tenant_id, v) VALUES ({}, {})").format(
                    psycopg.sql.Literal(k), psycopg.sql.Literal(f"row{i}")))
            elif i % 3 == 1:  # extended, the key bound as a parameter (text format)
                c.execute("INSERT INTO sh_place (tenant_id, v) VALUES (%s, %s)", (k, f"row{i}"))
            else:  # a named prepared statement, the key bound in binary
                prepared.execute("INSERT INTO sh_place (tenant_id, v) VALUES (%b, %s)", (k, f"row{i}"))
        with c.transaction():  # an explicit transaction opened by a lone BEGIN
            c.execute("INSERT INTO sh_place (tenant_id, v) VALUES (%s, 'tx')", (7,))
            c.execute("INSERT INTO sh_place (tenant_id, v) VALUES (7, 'tx2')")
    on = [rows_on(cluster, s, "sh_place") for s in shard_servers(cluster)]
    assert sum(len(r) for r in on) == len(keys) + 2
    assert on[0] and on[1], "both shards got rows"
    assert misplaced(cluster, "sh_place") == []
    wait_replayed(cluster)
    # Each key is read back through pgrouter from its shard (shard 0's reads may go to its replica).
    with router.connect() as c, router.connect(prepare_threshold=0) as prepared:
        for i, k in enumerate(keys):
            conn = prepared if i % 2 else c
            got = conn.execute("SELECT v FROM sh_place WHERE tenant_id = %s", (k,)).fetchall()
            assert got == [(f"row{i}",)], k
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_shard_routed_total") >= 2 * len(keys)
    assert pgr.metric(text, "pgrouter_shard_begins_deferred_total") >= 1
    assert (f'pgrouter_backend_shard_info{{database="app",shard="1",backend="{pgr.HOST}:{cluster.shard1_port}"}} 1'
            in text)
    assert f'pgrouter_backend_shard_info{{database="app",shard="0",backend="{pgr.HOST}:{cluster.replica_port}"}} 1' \
        in text


@pytest.mark.parametrize("key_type,values", [
    ("integer", [0, -1, 2 ** 31 - 1, -(2 ** 31), 12345]),
    ("smallint", [0, -1, 32767, -32768, 77]),
    ("text", ["", "a", "tenant-42", "Zürich", "東京", "O'Brien"]),
    ("uuid", [str(uuid.UUID(int=0)), "6ba7b810-9dad-11d1-80b4-00c04fd430c8"]
     + [str(uuid.UUID(int=random.Random(SEED + i).getrandbits(128))) for i in range(8)]),
])
def test_placement_for_every_key_type(cluster, pgrouter, key_type, values):
    table = f"sh_type_{key_type}"
    make_table(cluster, table, key_type)
    router = pgrouter(sharded_config(cluster, {table: "tenant_id"}, key_type=key_type))
    with router.connect() as c:
        for i, k in enumerate(values):
            c.execute(f"INSERT INTO {table} (tenant_id, v) VALUES (%s, %s)", (k, f"r{i}"))
            c.execute(psycopg.sql.SQL("INSERT INTO {} (tenant_id, v) VALUES ({}, {})").format(
                psycopg.sql.Identifier(table), psycopg.sql.Literal(k), psycopg.sql.Literal(f"s{i}")))
    assert sum(len(rows_on(cluster, s, table)) for s in shard_servers(cluster)) == 2 * len(values)
    assert misplaced(cluster, table) == []


def sqlstate_of(conn, sql, params=None):
    try:
        conn.execute(sql, params)
    except psycopg.Error as e:
        return e.sqlstate, str(e)
    return None, None


def test_writes_that_need_several_shards_are_refused(cluster, pgrouter):
    """(Reads of several shards are scattered: test_scatter.py.)"""
    make_table(cluster, "sh_ref")
    router = pgrouter(sharded_config(cluster, {"sh_ref": "tenant_id"}, unsharded="reject", cross_shard_writes="reject"))
    with router.connect(autocommit=True) as c:
        c.execute("INSERT INTO sh_ref (tenant_id, v) VALUES (1, 'a')")
        c.execute("INSERT INTO sh_ref (tenant_id, v) VALUES (2, 'b')")
        code, msg = sqlstate_of(c, "UPDATE sh_ref SET v = 'c'")
        assert code == "0A000" and "not limited to one shard key" in msg
        a, b = key_on_each_shard(cluster)  # two keys on different shards in one IN list
        code, msg = sqlstate_of(c, f"DELETE FROM sh_ref WHERE tenant_id IN ({a}, {b})")
        assert code == "0A000" and "writes rows on shards 0, 1" in msg
        wait_replayed(cluster)
        assert sorted(c.execute("SELECT tenant_id, v FROM sh_ref").fetchall()) == [(1, "a"), (2, "b")]
        code, msg = sqlstate_of(c, "UPDATE sh_ref SET tenant_id = 3 WHERE tenant_id = 1")
        assert code == "0A000" and "tenant_id" in msg
        code, msg = sqlstate_of(c, "SELECT * FROM client_events")
        assert code == "0A000" and "client_events" in msg and "reject" in msg
        # The session goes on: a keyed statement still works.
        assert c.execute("SELECT v FROM sh_ref WHERE tenant_id = 1").fetchall() == [("a",)]
    assert pgr.metric(router.metrics(), "pgrouter_shard_refused_total") >= 4


def shard_of(cluster, key, key_type="bigint", shards=2):
    """Which shard PostgreSQL's hash partitioning gives the key (asked of the primary)."""
    with cluster.connect("primary") as c:
        c.execute("CREATE TABLE IF NOT EXISTS sh_probe_hp (k bigint) PARTITION BY HASH (k)")
        for i in range(shards):
            if c.execute("SELECT satisfies_hash_partition('sh_probe_hp'::regclass, %s, %s, %s::bigint)",
                         (shards, i, key)).fetchone()[0]:
                return i
    raise AssertionError("no shard")


def key_on_each_shard(cluster):
    """A key on shard 0 and one on shard 1, as PostgreSQL's hash partitioning places them."""
    keys_on = {}
    for k in range(1, 50):
        keys_on.setdefault(shard_of(cluster, k), k)
        if len(keys_on) == 2:
            break
    return keys_on[0], keys_on[1]


def test_a_transaction_stays_on_its_shard(cluster, pgrouter):
    make_table(cluster, "sh_tx")
    # With cross_shard_writes: reject a transaction never goes on to another shard (test_two_phase.py covers
    # transactions across shards).
    router = pgrouter(sharded_config(cluster, {"sh_tx": "tenant_id"}, cross_shard_writes="reject"))
    a, b = key_on_each_shard(cluster)
    with router.connect() as c:
        c.execute("BEGIN")
        c.execute("INSERT INTO sh_tx (tenant_id, v) VALUES (%s, 'a')", (a,))
        code, msg = sqlstate_of(c, "INSERT INTO sh_tx (tenant_id, v) VALUES (%s, 'b')", (b,))
        assert code == "0A000" and "transaction runs on shard 0" in msg and "cross_shard_writes is reject" in msg
        # As in PostgreSQL after an error, the transaction is aborted until it ends.
        code, _ = sqlstate_of(c, "SELECT 1")
        assert code == "25P02"
        c.execute("ROLLBACK")
        with c.transaction():
            c.execute("INSERT INTO sh_tx (tenant_id, v) VALUES (%s, 'b')", (b,))
        with pytest.raises(psycopg.errors.DivisionByZero):
            with c.transaction():
                c.execute("INSERT INTO sh_tx (tenant_id, v) VALUES (%s, 'rolled back')", (a,))
                c.execute("SELECT 1/0")
    assert rows_on(cluster, "primary", "sh_tx") == []
    assert rows_on(cluster, "shard1", "sh_tx") == [(b, "b")]


def test_a_first_batch_runs_where_its_first_request_says(cluster, pgrouter):
    # A transaction's first request is analysed once, before the attach; what follows it in the same batch
    # (a request of another shard, the same statement name given another text) is still checked on its own.
    make_table(cluster, "sh_first")
    router = pgrouter(sharded_config(cluster, {"sh_first": "tenant_id"}, cross_shard_writes="reject"))
    a, b = key_on_each_shard(cluster)
    with router.connect() as c:
        c.execute("INSERT INTO sh_first (tenant_id, v) VALUES (%s, 'a')", (a,))
        c.execute("INSERT INTO sh_first (tenant_id, v) VALUES (%s, 'b')", (b,))
    wait_replayed(cluster)  # (shard 0's reads go to its replica)
    text = "SELECT v FROM sh_first WHERE tenant_id = $1"

    def answers(messages):
        """Per request (up to each ReadyForQuery): its rows' first values and its error's SQLSTATE."""
        out, rows, code = [], [], None
        for kind, payload in messages:
            if kind == "D":
                rows.append(pgr.parse_data_row(payload)[0])
            elif kind == "E":
                code = pgr.parse_error_fields(payload).get("code")
            elif kind == "Z":
                out.append((rows, code))
                rows, code = [], None
        return out

    def run(raw, data, requests):
        raw.send(data)
        return answers(sum((raw.read_until_ready() for _ in range(requests)), []))

    def request(key):
        return pgr.parse(text) + pgr.bind([str(key).encode()]) + pgr.execute() + pgr.sync()

    with pgr.Raw(router.port) as raw:
        raw.startup("pgr_scram", "app", pgr.USERS["pgr_scram"])
        # The second request, pipelined behind the first, needs the other shard: refused, the first runs.
        assert run(raw, request(a) + request(b), 2) == [(["a"], None), ([], "0A000")]
        assert run(raw, request(b) + request(a), 2) == [(["b"], None), ([], "0A000")]
        # A statement prepared before: its Bind alone is the first request; the same name, closed and parsed
        # again with another text behind it, is analysed with that text.
        assert run(raw, pgr.parse(text, "s1") + pgr.sync(), 1) == [([], None)]
        again = (pgr.close("S", "s1") + pgr.parse("SELECT v || 'x' FROM sh_first WHERE tenant_id = $1", "s1") +
                 pgr.bind([str(b).encode()], statement="s1") + pgr.execute() + pgr.sync())
        first = pgr.bind([str(a).encode()], statement="s1") + pgr.execute() + pgr.sync()
        assert run(raw, first + again, 2) == [(["a"], None), ([], "0A000")]
        # Each on its own runs on its own shard.
        assert run(raw, pgr.bind([str(b).encode()], statement="s1") + pgr.execute() + pgr.sync(), 1) == \
            [(["bx"], None)]
        assert run(raw, request(b), 1) == [(["b"], None)]


def test_explicit_shard_keys(cluster, pgrouter):
    make_table(cluster, "sh_explicit")
    router = pgrouter(sharded_config(cluster, {"sh_explicit": "tenant_id"}))
    a, b = key_on_each_shard(cluster)
    with router.connect() as c:
        c.execute("INSERT INTO sh_explicit (tenant_id, v) VALUES (%s, 'a')", (a,))
        c.execute("INSERT INTO sh_explicit (tenant_id, v) VALUES (%s, 'b')", (b,))
        c.execute(f"SET pgrouter.shard_key = '{b}'")
        assert c.execute("SELECT tenant_id FROM sh_explicit").fetchall() == [(b,)]  # scoped by the session key
        code, msg = sqlstate_of(c, f"SELECT * FROM sh_explicit WHERE tenant_id = {a}")
        assert code == "0A000" and "pgrouter.shard_key" in msg
        code, msg = sqlstate_of(c, f"/* pgrouter: shard_key={a} */ SELECT count(*) FROM sh_explicit")
        assert code == "0A000" and "conflicts" in msg
        c.execute("RESET pgrouter.shard_key")
        assert c.execute(f"/* pgrouter: shard_key={a} */ SELECT tenant_id FROM sh_explicit").fetchall() == [(a,)]
        c.execute("SET pgrouter.shard_key = 'not a number'")
        code, msg = sqlstate_of(c, "SELECT count(*) FROM sh_explicit")
        assert code == "0A000" and "not a valid bigint" in msg
        c.execute("RESET pgrouter.shard_key")  # still possible: it touches no table
    with psycopg.connect(router.dsn(), options=f"-c pgrouter.shard_key={b}", autocommit=True) as c:
        assert c.execute("SELECT tenant_id FROM sh_explicit").fetchall() == [(b,)]


def test_unsharded_tables_go_to_the_default_shard(cluster, pgrouter):
    make_table(cluster, "sh_def")
    for server, note in (("primary", "on shard 0"), ("shard1", "on shard 1")):
        with cluster.connect(server) as c:
            c.execute("DROP TABLE IF EXISTS sh_plain")
            c.execute("CREATE TABLE sh_plain (note text)")
            c.execute("GRANT ALL ON sh_plain TO PUBLIC")
            c.execute("INSERT INTO sh_plain VALUES (%s)", (note,))
    router = pgrouter(sharded_config(cluster, {"sh_def": "tenant_id"}, default_shard=1))
    with router.connect() as c:
        assert c.execute("SELECT note FROM sh_plain").fetchall() == [("on shard 1",)]
        assert c.execute("SELECT 1").fetchall() == [(1,)]


@pytest.mark.parametrize("protocol", ["extended", "prepared"])
def test_shard_map_reload_under_pgbench_loses_nothing(cluster, pgrouter, tmp_path, protocol):
    """The shard map changes under a keyed pgbench load (hash -> consistent -> map with a pinned key -> hash):
    transactions that started keep their shard, later ones use the new map, and none fails."""
    import os
    import subprocess
    import time
    make_table(cluster, "sh_reload")
    config = sharded_config(cluster, {"sh_reload": "tenant_id"})
    router = pgrouter(config)
    script = tmp_path / "keyed.sql"
    script.write_text("\\set k random(1, 1000)\n"
                      "BEGIN;\n"
                      "INSERT INTO sh_reload (tenant_id, v) VALUES (:k, 'bench');\n"
                      "SELECT count(*) FROM sh_reload WHERE tenant_id = :k;\n"
                      "COMMIT;\n")
    env = {**os.environ, "PGPASSWORD": pgr.USERS["pgr_scram"]}
    bench = subprocess.Popen(["pgbench", "-n", "-M", protocol, "-c", "8", "-j", "2", "-T", "3", "-f", str(script),
                              "-h", pgr.HOST, "-p", str(router.port), "-U", "pgr_scram", "app"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    maps = [{"strategy": "consistent"}, {"strategy": "map", "fallback": "hash", "pins": [{"key": "7", "shard": 1}]},
            {"strategy": "hash"}]
    for i in range(6):
        time.sleep(0.4)
        config["databases"][0]["sharding"] = {"tables": {"sh_reload": "tenant_id"}, **maps[i % len(maps)]}
        router.reload(config, settle=0.1)
    out, _ = bench.communicate(timeout=60)
    assert bench.returncode == 0, out
    assert "number of failed transactions: 0" in out, out
    processed = [line for line in out.splitlines() if "number of transactions actually processed" in line]
    assert processed and int(processed[0].split(":")[1].strip()) > 100, out
    assert pgr.metric(router.metrics(), "pgrouter_config_reload_failures_total") == 0
    assert pgr.metric(router.metrics(), "pgrouter_shard_refused_total") in (None, 0)


def test_shards_as_databases_of_one_server(cluster, pgrouter):
    """A shard's own `dbname`: shard 0 is database app of the shard1 server, shard 1 database pgr_s1 of the
    primary (with its replica). The database entry's own dbname exists nowhere, so every connection, probes
    included, must use its shard's name: rows land by hash in the right database, keyed reads of shard 1 go to
    its replica (found healthy by probing pgr_s1), and a scatter sees the rows of both databases."""
    with cluster.connect("primary", dbname="postgres", autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS pgr_s1")
        c.execute("CREATE DATABASE pgr_s1")
    places = [("shard1", "app"), ("primary", "pgr_s1")]
    for server, dbname in places:
        with cluster.connect(server, dbname=dbname) as c:
            c.execute("DROP TABLE IF EXISTS sh_db, sh_db_hp")
            c.execute("CREATE TABLE sh_db (tenant_id bigint NOT NULL, v text)")
            c.execute("GRANT ALL ON sh_db TO PUBLIC")
            c.execute("CREATE TABLE sh_db_hp (k bigint) PARTITION BY HASH (k)")
    router = pgrouter({
        "pool": {"mode": "transaction"},
        "admin": {"admin_users": ["postgres"]},
        "databases": [{
            "name": "app",
            "dbname": "pgr_no_such_database",
            "shards": [{"primary": cluster.endpoint("shard1"), "dbname": "app"},
                       {"primary": cluster.endpoint("primary"), "replicas": [cluster.endpoint("replica")],
                        "dbname": "pgr_s1"}],
            "routing": {"probe_interval": "100ms"},
            "sharding": {"tables": {"sh_db": "tenant_id"}},
        }],
    })
    keys = list(range(-20, 21))
    with router.connect() as c:
        for k in keys:
            c.execute("INSERT INTO sh_db (tenant_id, v) VALUES (%s, %s)", (k, f"v{k}"))
    counts = []
    for i, (server, dbname) in enumerate(places):
        with cluster.connect(server, dbname=dbname) as c:
            counts.append(c.execute("SELECT count(*) FROM sh_db").fetchone()[0])
            bad = c.execute("SELECT tenant_id FROM sh_db WHERE NOT satisfies_hash_partition("
                            f"'sh_db_hp'::regclass, 2, {i}, tenant_id)").fetchall()
            assert bad == [], (server, dbname)
    assert sum(counts) == len(keys) and min(counts) > 0, counts
    with cluster.connect("primary", dbname="pgr_s1") as p:
        lsn = p.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    deadline = time.monotonic() + 60
    with cluster.connect("replica", dbname="pgr_s1", autocommit=True) as r:
        while not r.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    replica = f"{pgr.HOST}:{cluster.replica_port}"
    deadline = time.monotonic() + 10
    def backend_gauge(name):
        return pgr.metric(router.metrics(), f'{name}{{backend="{replica}"}}')

    while backend_gauge("pgrouter_backend_probed") != 1:
        assert time.monotonic() < deadline, "the replica of shard 1 was never probed in its own database"
        time.sleep(0.1)
    assert backend_gauge("pgrouter_backend_up") == 1
    with router.connect() as c:
        in_recovery = {}
        for k in keys:
            v, rec = c.execute("SELECT v, pg_is_in_recovery() FROM sh_db WHERE tenant_id = %s", (k,)).fetchone()
            assert v == f"v{k}"
            in_recovery.setdefault(rec, 0)
            in_recovery[rec] += 1
        assert in_recovery.get(True, 0) > 0, "no keyed read reached shard 1's replica"
        assert c.execute("SELECT count(*) FROM sh_db").fetchone()[0] == len(keys)
    with router.connect(user="postgres", dbname="pgrouter") as admin:
        shown = admin.execute("SHOW DATABASES").fetchall()
        names = [d.name for d in admin.execute("SHOW DATABASES").description]
        assert [(r[names.index("shard")], r[names.index("database")]) for r in shown] == [(0, "app"), (1, "pgr_s1")]
    with cluster.connect("primary", dbname="postgres", autocommit=True) as c:
        c.execute("DROP DATABASE pgr_s1 WITH (FORCE)")
