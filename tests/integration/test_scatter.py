"""Cross-shard reads against real servers. The same rows are in one unsharded PostgreSQL (the cluster's shard0
server) and spread over two shards by pgrouter's hash placement (the primary, with its replica, and shard1). A
read of several shards through pgrouter must return exactly what the unsharded server returns for the same
statement: column names, types and value texts, in order where the statement orders them totally. What pgrouter
cannot merge exactly is refused with 0A000 before anything runs."""
import random
import threading

import psycopg
import pytest

import pgr
from test_relay import psql
from test_sharding import key_on_each_shard, sharded_config, sqlstate_of, wait_replayed

SEED = 61206
TABLE = "sc_orders"
INSERT = f"INSERT INTO {TABLE} (tenant_id, id, v, n, x, ok, plan) VALUES (%s, %s, %s, %s, %s, %s, %s)"


def config(cluster, **sharding):
    return sharded_config(cluster, {TABLE: "tenant_id"}, reference_tables=["sc_plans"], **sharding)


def rows(rng, n):
    out = []
    for i in range(n):
        tenant = rng.choice([0, -1, 1, 2, 3, 7, 42, 99, 2 ** 40, -(2 ** 62)])
        out.append((tenant, i, rng.choice(["a", "b", "c", "B", "é", None]), rng.randint(-50, 50),
                    rng.choice([None, 1.5, 2.25, -3.0]), rng.choice([True, False, None]), rng.randint(1, 3)))
    return out


@pytest.fixture(scope="module")
def data(cluster):
    """sc_orders on every server (rows only on the unsharded one and, through pgrouter, on the shards), and the
    reference table sc_plans with the same rows everywhere."""
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    generated = rows(rng, 300)
    for server in ["primary", "shard1", "shard0"]:
        with cluster.connect(server) as c:
            c.execute(f"DROP TABLE IF EXISTS {TABLE}, sc_plans")
            c.execute(f"CREATE TABLE {TABLE} (tenant_id bigint NOT NULL, id int, v text, n int, x float8, "
                      "ok boolean, plan int)")
            c.execute("CREATE TABLE sc_plans (plan int PRIMARY KEY, name text)")
            c.execute("INSERT INTO sc_plans VALUES (1, 'free'), (2, 'pro'), (3, 'max')")
            c.execute(f"GRANT ALL ON {TABLE}, sc_plans TO PUBLIC")
    with cluster.connect("shard0") as c:
        with c.cursor() as cur:
            cur.executemany(INSERT, generated)
    wait_replayed(cluster)  # the tables and grants, before any read goes to the replica
    return generated


def load_through(cluster, router, generated):
    for server in ["primary", "shard1"]:
        with cluster.connect(server) as c:
            c.execute(f"TRUNCATE {TABLE}")
    # One statement at a time: executemany pipelines them all before one Sync, one implicit transaction that
    # would write on both shards.
    with router.connect(autocommit=True) as c:
        for row in generated:
            c.execute(INSERT, row)
    wait_replayed(cluster)  # shard 0's reads may go to its replica


def answer(conn, sql, params=None):
    cur = conn.execute(sql, params)
    names = [(d.name, d.type_code) for d in cur.description]
    return names, cur.fetchall()


# (statement, ordered): ordered when its ORDER BY is total, so the order must match too.
STATEMENTS = [
    (f"SELECT * FROM {TABLE}", False),
    (f"SELECT tenant_id, id, v FROM {TABLE} ORDER BY id", True),
    (f"SELECT id, n FROM {TABLE} ORDER BY n DESC, id LIMIT 7", True),
    (f"SELECT id, n FROM {TABLE} ORDER BY n, id LIMIT 5 OFFSET 11", True),
    (f"SELECT id, x FROM {TABLE} ORDER BY x NULLS FIRST, id", True),
    (f"SELECT count(*), sum(n), min(n), max(n), avg(n) FROM {TABLE}", True),
    (f"SELECT count(v), count(x), bool_and(ok), bool_or(ok) FROM {TABLE}", True),
    (f"SELECT plan, count(*), sum(n) FROM {TABLE} GROUP BY plan ORDER BY plan", True),
    (f"SELECT n % 3 AS m, count(*) FROM {TABLE} GROUP BY n % 3 HAVING count(*) > 90", False),
    # An output name in GROUP BY, after a server said no input column has it.
    (f"SELECT n % 3 AS m, count(*) FROM {TABLE} GROUP BY m ORDER BY m", True),
    (f"SELECT DISTINCT plan FROM {TABLE}", False),
    (f"SELECT id FROM {TABLE} WHERE n > 40 ORDER BY id", True),
    (f"SELECT o.id, p.name FROM {TABLE} o JOIN sc_plans p ON p.plan = o.plan ORDER BY o.id", True),
    (f"SELECT count(*) FROM {TABLE} WHERE v IS NULL", True),
    (f"SELECT id FROM {TABLE} WHERE false", True),
    # Sort and group keys the client does not see: hidden columns, stripped after the merge.
    (f"SELECT id FROM {TABLE} ORDER BY x NULLS FIRST, id", True),
    (f"SELECT * FROM {TABLE} ORDER BY id DESC LIMIT 9", True),
    (f"SELECT count(*), sum(n) FROM {TABLE} GROUP BY plan", False),
    (f"SELECT plan FROM {TABLE} GROUP BY plan ORDER BY count(*) DESC, plan", True),
    (f"SELECT tenant_id FROM {TABLE} GROUP BY tenant_id ORDER BY avg(n), tenant_id LIMIT 4", True),
    # Found by test_shard_differential.py: OFFSET 0, and constants libpg_query's JSON leaves out (0, negatives).
    (f"SELECT id, n FROM {TABLE} ORDER BY n, id OFFSET 0", True),
    (f"SELECT count(*) FROM {TABLE} WHERE false HAVING count(*) > -1", True),
    (f"SELECT plan, min(x) FROM {TABLE} GROUP BY plan HAVING min(x) > -10 ORDER BY plan", True),
    (f"SELECT n * -1 AS m FROM {TABLE} ORDER BY n * 0, id LIMIT 5", True),
]


def test_scatter_reads_answer_as_one_server_would(cluster, pgrouter, data):
    router = pgrouter(config(cluster))
    load_through(cluster, router, data)
    with router.connect(autocommit=True) as routed, cluster.connect("shard0") as direct:
        for sql, ordered in STATEMENTS:
            want_cols, want = answer(direct, sql)
            try:
                got_cols, got = answer(routed, sql)
            except psycopg.Error as e:
                raise AssertionError(f"{sql}: {e}") from e
            assert got_cols == want_cols, sql
            if ordered:
                assert got == want, sql
            else:
                assert sorted(got, key=repr) == sorted(want, key=repr), sql
        # Parameters, bound by the extended protocol, and a key list naming both shards.
        a, b = key_on_each_shard(cluster)
        for sql, params in [(f"SELECT id, v FROM {TABLE} WHERE n > %s ORDER BY id", (10,)),
                            (f"SELECT tenant_id, count(*) FROM {TABLE} WHERE tenant_id IN (%s, %s) "
                             "GROUP BY tenant_id ORDER BY tenant_id", (a, b)),
                            (f"SELECT count(*) FROM {TABLE} WHERE tenant_id = ANY(%s)", ([a, b, 42],))]:
            assert answer(routed, sql, params) == answer(direct, sql, params), sql
    metrics = router.metrics()
    assert pgr.metric(metrics, "pgrouter_shard_scatters_total") >= len(STATEMENTS) + 3
    assert pgr.metric(metrics, "pgrouter_shard_scatter_legs_total") >= 2 * (len(STATEMENTS) + 3)


def test_scatter_over_the_simple_protocol_with_psql(cluster, pgrouter, data):
    router = pgrouter(config(cluster))
    load_through(cluster, router, data)
    sql = f"SELECT plan, count(*), min(v COLLATE \"C\") FROM {TABLE} GROUP BY plan ORDER BY plan"

    with cluster.connect("shard0") as direct:
        want = direct.execute(sql).fetchall()
    out = psql(router, "-c", sql).stdout  # -At: unaligned, tuples only
    assert out.strip().splitlines() == [f"{p}|{c}|{m}" for p, c, m in want]


def test_what_cannot_be_merged_exactly_is_refused(cluster, pgrouter, data):
    router = pgrouter(config(cluster))
    with router.connect() as c:
        for sql, construct in [(f"SELECT id, row_number() OVER () FROM {TABLE}", "window"),
                               (f"SELECT DISTINCT ON (plan) plan, id FROM {TABLE}", "DISTINCT ON"),
                               (f"SELECT string_agg(v, ',') FROM {TABLE}", "string_agg"),
                               (f"SELECT count(DISTINCT v) FROM {TABLE}", "DISTINCT"),
                               # A constant, not the first select item: it was taken for count(*) > 50.
                               (f"SELECT count(*) FROM {TABLE} GROUP BY plan HAVING 1 > 50", "HAVING"),
                               # `plan` is also a column of the table, which PostgreSQL groups by.
                               (f"SELECT 1 AS plan, count(*) FROM {TABLE} GROUP BY plan", "input column")]:
            code, msg = sqlstate_of(c, sql)
            assert code == "0A000", (sql, code, msg)
            assert construct.lower() in msg.lower(), (sql, msg)
        # Inside a transaction the same refusals (test_shard_txn_reads.py: reads that can be merged run there),
        # and the transaction is aborted as by any error.
        c.execute("BEGIN")
        code, msg = sqlstate_of(c, f"SELECT string_agg(v, ',') FROM {TABLE}")
        assert code == "0A000" and "string_agg" in msg
        assert sqlstate_of(c, f"SELECT count(*) FROM {TABLE}")[0] == "25P02"
        c.rollback()
        assert c.execute(f"SELECT count(*) FROM {TABLE} WHERE tenant_id = 42").fetchone()[0] >= 0
    # cross_shard: reject, for the database or one user.
    router.reload(config(cluster, cross_shard="reject"), settle=0.3)
    with router.connect() as c:
        code, msg = sqlstate_of(c, f"SELECT count(*) FROM {TABLE}")
        assert code == "0A000" and "cross_shard is reject" in msg


def test_a_shard_error_reaches_the_client_and_the_servers_stay_usable(cluster, pgrouter, data):
    router = pgrouter(config(cluster))
    load_through(cluster, router, data)
    with router.connect() as c:
        code, msg = sqlstate_of(c, f"SELECT 1 / (n - n) FROM {TABLE}")
        assert code == "22012", (code, msg)
        code, msg = sqlstate_of(c, f"SELECT no_such_column FROM {TABLE}")
        assert code == "42703", (code, msg)
        # Statements PostgreSQL rejects whatever the rows get its own SQLSTATE, as from one server.
        for sql, want in [(f"SELECT id FROM {TABLE} ORDER BY 9", "42P10"),
                          (f"SELECT plan, count(*) FROM {TABLE} GROUP BY 3", "42P10"),
                          (f"SELECT id FROM {TABLE} ORDER BY id LIMIT -1", "2201W"),
                          (f"SELECT count(*) FROM {TABLE} OFFSET -2", "2201X")]:
            code, msg = sqlstate_of(c, sql)
            assert code == want, (sql, code, msg)
        for _ in range(5):  # the shards' servers went back clean: nothing left in them
            assert c.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == len(data)


def test_binary_results_pass_through_a_merge_that_compares_nothing(cluster, pgrouter, data):
    router = pgrouter(config(cluster))
    load_through(cluster, router, data)
    sql = f"SELECT id, n, x, v FROM {TABLE} WHERE n > %s"
    with router.connect() as routed, cluster.connect("shard0") as direct:
        want = sorted(direct.cursor(binary=True).execute(sql, (3,)).fetchall(), key=repr)
        cur = routed.cursor(binary=True)
        assert sorted(cur.execute(sql, (3,)).fetchall(), key=repr) == want
        assert cur.pgresult.fformat(0) == 1
        assert len(cur.execute(sql + " LIMIT 4", (3,)).fetchall()) == 4
        code, msg = sqlstate_of_cursor(cur, sql + " ORDER BY id", (3,))
        assert code == "0A000" and "text format" in msg, (code, msg)


def sqlstate_of_cursor(cur, sql, params):
    try:
        cur.execute(sql, params)
    except psycopg.Error as e:
        return e.sqlstate, str(e)
    return None, None


def test_prepared_statements_scatter_on_every_run(cluster, pgrouter, data):
    """psycopg prepares a statement on its sixth run (prepare_threshold 5), or at once with 0: a named Parse in
    the batch, then Binds of that name alone. Each run is scattered, and the client's statement stays usable
    on any shard (a keyed run of it goes to its shard like any prepared statement)."""
    router = pgrouter(config(cluster))
    load_through(cluster, router, data)
    sql = f"SELECT count(*), sum(n) FROM {TABLE} WHERE n > %s"
    with cluster.connect("shard0") as direct:
        want = {k: direct.execute(sql, (k,)).fetchone() for k in range(-3, 5)}
    for threshold in (0, 5):
        with router.connect(autocommit=True, prepare_threshold=threshold) as c:
            for k in range(-3, 5):
                assert c.execute(sql, (k,)).fetchone() == want[k], (threshold, k)
            keyed = f"SELECT count(*) FROM {TABLE} WHERE tenant_id = %s AND n > %s"
            for _ in range(3):
                c.execute(keyed, (42, 0))
    assert pgr.metric(router.metrics(), "pgrouter_shard_scatters_total") >= 16


def test_explain_says_where_a_statement_would_run_without_running_it(cluster, pgrouter, data):
    router = pgrouter(config(cluster))
    a, b = key_on_each_shard(cluster)
    with router.connect(autocommit=True) as c:
        def explain(sql, params=None):
            return c.execute("/* pgrouter: explain */ " + sql, params).fetchall()
        assert [d.name for d in c.execute(f"/* pgrouter: explain */ SELECT 1").description] == \
            ["shard", "statement", "reason"]
        [(shard, statement, reason)] = explain(f"SELECT * FROM {TABLE} WHERE tenant_id = %s", (b,))
        assert shard == "1" and "shard key" in reason and statement.endswith("tenant_id = $1")
        rows = explain(f"SELECT plan, avg(n) FROM {TABLE} GROUP BY plan ORDER BY plan LIMIT 2")
        assert [r[0] for r in rows] == ["0", "1"]
        assert all("sum(n)" in r[1] and "count(n)" in r[1] and "cross-shard read" in r[2] for r in rows)
        [(shard, statement, reason)] = explain(f"SELECT string_agg(v, ',') FROM {TABLE}")
        assert shard is None and reason.startswith("refused (0A000)") and "string_agg" in reason
        rows = explain(f"DELETE FROM {TABLE}")
        assert [r[0] for r in rows] == ["0", "1"] and all("two-phase commit" in r[2] for r in rows)
        # Nothing ran: the DELETE above deleted nothing.
        before = c.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
        explain(f"DELETE FROM {TABLE} WHERE tenant_id = %s", (a,))
        assert c.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == before


def test_copy_to_stdout_gives_every_shards_rows(cluster, pgrouter, data):
    """COPY <sharded table> TO STDOUT: each shard's rows in turn under one CopyOutResponse, one count. With a
    header line per shard or binary format (a file header per shard) it is refused."""
    router = pgrouter(config(cluster))
    load_through(cluster, router, data)
    copy = f"COPY {TABLE} (tenant_id, id, v, n) TO STDOUT"
    with cluster.connect("shard0") as direct:
        with direct.cursor().copy(copy) as cp:
            want = sorted(bytes(b).decode() for b in cp)
    out = psql(router, "-c", copy).stdout
    assert sorted(line + "\n" for line in out.splitlines()) == sorted("".join(want).splitlines(keepends=True))
    with router.connect(autocommit=True) as c:
        with c.cursor() as cur:
            with cur.copy(copy + " WITH (FORMAT csv)") as cp:
                got = b"".join(bytes(b) for b in cp).decode().splitlines()
            assert cur.rowcount == len(data)
        assert len(got) == len(data)
        for options in ["WITH (FORMAT csv, HEADER)", "WITH (FORMAT binary)"]:
            code, msg = sqlstate_of(c, f"{copy} {options}")
            assert code == "0A000", (options, code, msg)


def test_a_shard_that_cannot_be_reached_fails_the_read_and_frees_the_others(cluster, pgrouter, data):
    """Shard 1's primary is a closed port: the read gets 08006 naming the shard at once (shard 0's server, taken
    first and sent nothing, is not waited on), and the session goes on."""
    cfg = config(cluster)
    cfg["databases"][0]["shards"][1] = {"primary": {"host": pgr.HOST, "port": pgr.free_port()}}
    cfg["pool"] = {"mode": "transaction", "connect_timeout": "1s"}
    router = pgrouter(cfg)
    with router.connect() as c:
        answer = []
        reader = threading.Thread(target=lambda: answer.append(sqlstate_of(c, f"SELECT count(*) FROM {TABLE}")),
                                  daemon=True)
        reader.start()
        reader.join(10)
        assert answer, "the read did not end within 10 s"
        code, msg = answer[0]
        assert code == "08006" and "shard 1" in msg, (code, msg)
        assert c.execute("SELECT 1").fetchone() == (1,)
