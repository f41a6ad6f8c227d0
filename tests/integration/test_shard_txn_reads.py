"""Reads and writes of several shards inside a transaction, against real servers. The transaction goes on
across shards (the session coordinates its parts), a read of several shards runs on the transaction's part on
each shard, so it sees the transaction's own writes, and a statement that writes rows of several shards runs
on each part and commits with the transaction. Each script runs through pgrouter over two shards and on one
unsharded PostgreSQL (the cluster's shard0 server) holding the same rows: every answer (columns, rows, command
tag, SQLSTATE) and the final rows must be the same."""
import threading
import time

import psycopg
import pytest

from test_sharding import sqlstate_of
from test_two_phase import REF, TABLE, config, on_shards, prepared_parts, tables  # noqa: F401 (fixture)


@pytest.fixture
def direct(cluster, tables):  # noqa: F811
    """The same rows as the shards hold together, on one unsharded server."""
    a, b = tables
    with cluster.connect("shard0", autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {TABLE}, {REF}")
        c.execute(f"CREATE TABLE {TABLE} (tenant_id bigint NOT NULL, id int, v text)")
        c.execute(f"CREATE TABLE {REF} (plan int PRIMARY KEY, name text)")
        c.execute(f"INSERT INTO {TABLE} VALUES ({a}, 1, 'old'), ({a}, 2, 'old'), ({b}, 1, 'old'), ({b}, 2, 'old')")
        c.execute(f"INSERT INTO {REF} VALUES (1, 'free')")
    return cluster.connect("shard0", autocommit=True)


def outcome(conn, sql, params=None, prepare=None):
    """What a client sees of one statement: (columns, rows, tag) or the error's SQLSTATE."""
    try:
        cur = conn.execute(sql, params, prepare=prepare)
    except psycopg.Error as e:
        return ("error", e.sqlstate)
    columns = [(d.name, d.type_code) for d in cur.description] if cur.description else None
    rows = cur.fetchall() if cur.description else None
    return (columns, rows, cur.statusmessage)


def run_both(routed, direct, script, prepare=None, errors=()):
    """Each statement on both connections: the same answer, and an error only where `errors` expects one."""
    for sql, params in script:
        got, want = outcome(routed, sql, params, prepare), outcome(direct, sql, params, prepare)
        assert got == want, (sql, got, want)
        assert (want[0] == "error") == (sql in errors), (sql, want)
        status = (routed.info.transaction_status, direct.info.transaction_status)
        assert status[0] == status[1], (sql, status)


def all_rows(cluster, direct_conn):
    routed = sorted(r for rows in on_shards(cluster, f"SELECT tenant_id, id, v FROM {TABLE}") for r in rows)
    return routed, sorted(direct_conn.execute(f"SELECT tenant_id, id, v FROM {TABLE}").fetchall())


def script_of(a, b):
    return [
        ("BEGIN", None),
        (f"UPDATE {TABLE} SET v = 'mine' WHERE tenant_id = %s AND id = 1", (a,)),
        # A read of both shards sees the transaction's write on the first.
        (f"SELECT tenant_id, id, v FROM {TABLE} ORDER BY tenant_id, id", None),
        (f"SELECT count(*), max(id), min(v COLLATE \"C\") FROM {TABLE} WHERE v <> %s", ("none",)),
        # A write of both shards inside the transaction, with RETURNING.
        (f"UPDATE {TABLE} SET v = 'both' WHERE id = 2 RETURNING tenant_id, id, v", None),
        (f"SELECT v, count(*) FROM {TABLE} GROUP BY v ORDER BY v COLLATE \"C\"", None),
        # One INSERT's rows split between the shards' parts.
        (f"INSERT INTO {TABLE} (tenant_id, id, v) VALUES (%s, 3, 'new'), (%s, 3, 'new') RETURNING id, tenant_id",
         (b, a)),
        # An output name in GROUP BY: pgrouter asks a shard about it inside the transaction, which stays usable.
        (f"SELECT id % 2 AS m, count(*) FROM {TABLE} GROUP BY m ORDER BY m", None),
        (f"UPDATE {TABLE} SET v = 'last' WHERE tenant_id = %s AND id = 3", (b,)),
        (f"SELECT tenant_id, id, v FROM {TABLE} ORDER BY id, tenant_id LIMIT 4", None),
        ("COMMIT", None),
    ]


@pytest.mark.parametrize("pool_mode,prepare", [("transaction", False), ("transaction", None),
                                               ("transaction", True), ("session", None)],
                         ids=["simple", "extended", "prepared", "session-pooled"])
def test_reads_and_writes_of_several_shards_inside_a_transaction_answer_as_one_server(
        cluster, pgrouter, tables, direct, pool_mode, prepare):  # noqa: F811
    a, b = tables
    cfg = config(cluster)
    cfg["pool"]["mode"] = pool_mode
    router = pgrouter(cfg)
    with router.connect(autocommit=True) as routed, direct:
        script = script_of(a, b)
        if prepare is False:  # the simple protocol: the values written in
            script = [(sql if params is None else
                       (sql % tuple(f"'{p}'" if isinstance(p, str) else p for p in params)), None)
                      for sql, params in script]
        run_both(routed, direct, script, prepare=prepare if prepare is not False else None)
        got, want = all_rows(cluster, direct)
        assert got == want
    assert prepared_parts(cluster) == [[], []]
    assert "pgrouter_shard_transactions_across_total 1" in router.metrics()


def test_a_transaction_that_reads_several_shards_first_and_rolls_back(cluster, pgrouter, tables, direct):  # noqa: F811
    a, b = tables
    router = pgrouter(config(cluster))
    with router.connect(autocommit=True) as routed, direct:
        run_both(routed, direct, [
            ("BEGIN ISOLATION LEVEL REPEATABLE READ", None),
            (f"SELECT count(*) FROM {TABLE}", None),  # its first statement reads both shards
            (f"DELETE FROM {TABLE} WHERE tenant_id = %s", (b,)),
            (f"DELETE FROM {TABLE} WHERE id = 1", None),
            (f"SELECT tenant_id, id FROM {TABLE} ORDER BY 1, 2", None),
            ("SHOW transaction_isolation", None),
            ("ROLLBACK", None),
            (f"SELECT count(*) FROM {TABLE}", None),
        ])
        got, want = all_rows(cluster, direct)
        assert got == want and len(got) == 4
    assert prepared_parts(cluster) == [[], []]


def test_an_error_of_a_read_of_several_shards_aborts_the_transaction(cluster, pgrouter, tables, direct):  # noqa: F811
    a, b = tables
    router = pgrouter(config(cluster))
    with router.connect(autocommit=True) as routed, direct:
        run_both(routed, direct, [
            ("BEGIN", None),
            (f"UPDATE {TABLE} SET v = 'lost' WHERE tenant_id = %s", (a,)),
            (f"SELECT 1 / (id - id) FROM {TABLE}", None),  # 22012 on every shard
            (f"SELECT count(*) FROM {TABLE}", None),  # 25P02
            (f"UPDATE {TABLE} SET v = 'lost too' WHERE tenant_id = %s", (b,)),  # 25P02
            ("COMMIT", None),  # rolls back
        ], errors=(f"SELECT 1 / (id - id) FROM {TABLE}", f"SELECT count(*) FROM {TABLE}",
                   f"UPDATE {TABLE} SET v = 'lost too' WHERE tenant_id = %s"))
        got, want = all_rows(cluster, direct)
        assert got == want and {v for _, _, v in got} == {"old"}
        # A read pgrouter cannot merge exactly is refused inside the transaction too, and aborts it.
        routed.execute("BEGIN")
        routed.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s", (a,))
        code, msg = sqlstate_of(routed, f"SELECT id, row_number() OVER () FROM {TABLE}")
        assert code == "0A000" and "window" in msg.lower(), msg
        assert sqlstate_of(routed, f"SELECT count(*) FROM {TABLE}")[0] == "25P02"
        routed.execute("ROLLBACK")
        # `v` is also an input column, which PostgreSQL groups by: refused (pgrouter's probe of the first shard,
        # inside the transaction, leaves it usable until the refusal).
        routed.execute("BEGIN")
        code, msg = sqlstate_of(routed, f"SELECT 1 AS v, count(*) FROM {TABLE} GROUP BY v")
        assert code == "0A000" and "input column" in msg, msg
        routed.execute("ROLLBACK")
        assert routed.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (4,)
    assert prepared_parts(cluster) == [[], []]


def test_without_two_phase_a_read_of_several_shards_inside_a_transaction_is_refused(cluster, pgrouter, tables):  # noqa: F811
    a, b = tables
    router = pgrouter(config(cluster, cross_shard_writes="reject"))
    with router.connect(autocommit=True) as c:
        c.execute("BEGIN")
        c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s", (a,))
        code, msg = sqlstate_of(c, f"SELECT count(*) FROM {TABLE}")
        assert code == "0A000" and "cross_shard_writes: two_phase" in msg, msg
        c.execute("ROLLBACK")
        # Outside a transaction it is a cross-shard read as ever.
        assert c.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (4,)


def test_a_cancel_reaches_a_read_of_several_shards_inside_a_transaction(cluster, pgrouter, tables):  # noqa: F811
    """As on one server: the statement ends with 57014 at once, the transaction is aborted until ROLLBACK."""
    a, b = tables
    router = pgrouter(config(cluster))
    with router.connect(autocommit=True) as c:
        c.execute("BEGIN")
        c.execute(f"UPDATE {TABLE} SET v = 'mine' WHERE tenant_id = %s", (a,))
        timer = threading.Timer(0.5, c.cancel)
        timer.start()
        started = time.monotonic()
        code, msg = sqlstate_of(c, f"SELECT pg_sleep(5) FROM {TABLE}")  # 10 s on each shard
        timer.join()
        assert code == "57014" and "canceling statement due to user request" in msg, msg
        assert time.monotonic() - started < 4
        assert sqlstate_of(c, f"SELECT count(*) FROM {TABLE}")[0] == "25P02"
        c.execute("ROLLBACK")
        assert c.execute(f"SELECT count(*) FROM {TABLE} WHERE v = 'mine'").fetchone() == (0,)
    assert prepared_parts(cluster) == [[], []]
    for server in ("primary", "shard1"):
        with cluster.connect(server) as s:
            assert s.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(5)%' "
                             "AND state = 'active'").fetchone() == (0,)
