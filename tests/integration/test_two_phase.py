"""Cross-shard writes against real servers: a statement of its own that writes rows on several shards (or a
reference table, on every shard) runs on each shard's primary and is committed on all of them or on none, by
two-phase commit with its decision recorded on the default shard. pgrouter is killed (SIGKILL) at each step
of the commit and a new pgrouter's recovery must leave every such write committed everywhere or nowhere."""
import time

import psycopg
import pytest

import pgr
from test_sharding import key_on_each_shard, sharded_config, sqlstate_of, wait_replayed

TABLE = "tp_orders"
REF = "tp_plans"


def config(cluster, **sharding):
    return sharded_config(cluster, {TABLE: "tenant_id"}, reference_tables=[REF], **sharding)


def shard_servers():
    return ["primary", "shard1"]


def roll_back_prepared_parts(conn):
    """Parts a failed test left prepared would hold their locks on the tables for ever."""
    for (gid,) in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'pgr\\_%'").fetchall():
        conn.execute(f"ROLLBACK PREPARED '{gid}'")


@pytest.fixture
def tables(cluster):
    """tp_orders (sharded) and tp_plans (reference) on both shards, with two rows of each shard's key."""
    a, b = key_on_each_shard(cluster)
    for i, server in enumerate(shard_servers()):
        with cluster.connect(server, autocommit=True) as c:
            roll_back_prepared_parts(c)
            c.execute(f"DROP TABLE IF EXISTS {TABLE}, {REF}")
            c.execute(f"CREATE TABLE {TABLE} (tenant_id bigint NOT NULL, id int, v text)")
            c.execute(f"CREATE TABLE {REF} (plan int PRIMARY KEY, name text)")
            c.execute(f"GRANT ALL ON {TABLE}, {REF} TO PUBLIC")
            key = [a, b][i]
            c.execute(f"INSERT INTO {TABLE} VALUES ({key}, 1, 'old'), ({key}, 2, 'old')")
            c.execute(f"INSERT INTO {REF} VALUES (1, 'free')")
    wait_replayed(cluster)  # shard 0's reads may go to its replica
    return a, b


def on_shards(cluster, sql):
    out = []
    for server in shard_servers():
        with cluster.connect(server) as c:
            out.append(c.execute(sql).fetchall())
    return out


def prepared_parts(cluster):
    return on_shards(cluster, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'pgr\\_%' ORDER BY gid")


def test_writes_across_shards_commit_on_each(cluster, pgrouter, tables):
    a, b = tables
    router = pgrouter(config(cluster))
    with router.connect(autocommit=True) as c:
        cur = c.execute(f"UPDATE {TABLE} SET v = 'in' WHERE tenant_id IN ({a}, {b}) AND id = 1")
        assert cur.rowcount == 2 and cur.statusmessage == "UPDATE 2"
        cur = c.execute(f"UPDATE {TABLE} SET v = %s WHERE tenant_id IN (%s, %s) AND id = %s", ("bound", a, b, 2))
        assert cur.statusmessage == "UPDATE 2"
        assert on_shards(cluster, f"SELECT v FROM {TABLE} ORDER BY id") == [[("in",), ("bound",)]] * 2
        # Not limited by the key: every shard.
        cur = c.execute(f"DELETE FROM {TABLE} WHERE id = 2 RETURNING tenant_id, id")
        assert cur.statusmessage == "DELETE 2" and sorted(cur.fetchall()) == sorted([(a, 2), (b, 2)])
        assert [d.name for d in cur.description] == ["tenant_id", "id"]
        # A reference table: every shard, atomically.
        c.execute(f"INSERT INTO {REF} VALUES (2, 'pro')")
        cur = c.execute(f"UPDATE {REF} SET name = upper(name)")
        assert cur.statusmessage == "UPDATE 4"  # two rows on each of two shards, as the shards report them
        # The same through a prepared (named) statement, twice.
        with router.connect(autocommit=True, prepare_threshold=0) as p:
            for v in ["p1", "p2"]:
                assert p.execute(f"UPDATE {TABLE} SET v = %s WHERE tenant_id IN (%s, %s)", (v, a, b)).rowcount == 2
    assert on_shards(cluster, f"SELECT v FROM {TABLE}") == [[("p2",)]] * 2
    assert on_shards(cluster, f"SELECT plan, name FROM {REF} ORDER BY plan") == [[(1, "FREE"), (2, "PRO")]] * 2
    assert prepared_parts(cluster) == [[], []]
    metrics = router.metrics()
    assert "pgrouter_two_phase_committed_total 7" in metrics, metrics


def test_an_insert_of_rows_of_several_shards_gives_each_shard_its_rows(cluster, pgrouter, tables):
    a, b = tables
    router = pgrouter(config(cluster))
    rows = [(a, 10, "s"), (b, 11, "s"), (a, 12, "s"), (b, 13, "s")]
    values = ", ".join(f"({k}, {i}, '{v}')" for k, i, v in rows)
    with router.connect(autocommit=True) as c:
        # Simple protocol: RETURNING comes back in the VALUES' order, the count is the sum.
        cur = c.execute(f"INSERT INTO {TABLE} (tenant_id, id, v) VALUES {values} RETURNING id, tenant_id",
                        prepare=False)
        assert cur.statusmessage == "INSERT 0 4"
        assert cur.fetchall() == [(i, k) for k, i, _ in rows]
        # Extended protocol: the key bound in binary (%b) and in text, a parameter shared by every row and one
        # in RETURNING, which each shard's INSERT keeps under its own number.
        cur = c.execute(f"INSERT INTO {TABLE} (tenant_id, id, v) VALUES (%b, 20, %s), (%s, 21, %s), (%b, 22, %s) "
                        f"RETURNING id, v || %s", (b, "e", a, "e", b, "e", "!"))
        assert cur.statusmessage == "INSERT 0 3" and cur.fetchall() == [(20, "e!"), (21, "e!"), (22, "e!")]
        # A prepared (named) statement, run twice with the rows' shards swapped.
        with router.connect(autocommit=True, prepare_threshold=0) as p:
            for first, second, n in [(a, b, 30), (b, a, 40)]:
                cur = p.execute(f"INSERT INTO {TABLE} (tenant_id, id, v) VALUES (%s, %s, 'p'), (%s, %s, 'p') "
                                "RETURNING tenant_id", (first, n, second, n + 1))
                assert cur.fetchall() == [(first,), (second,)]
        # ON CONFLICT DO NOTHING: the rows that were inserted, whatever their order.
        for server in shard_servers():
            with cluster.connect(server, autocommit=True) as s:
                s.execute(f"CREATE UNIQUE INDEX tp_orders_id ON {TABLE} (tenant_id, id)")
        cur = c.execute(f"INSERT INTO {TABLE} (tenant_id, id, v) VALUES ({a}, 10, 'dup'), ({b}, 50, 'new'), "
                        f"({a}, 51, 'new') ON CONFLICT DO NOTHING RETURNING id")
        assert cur.statusmessage == "INSERT 0 2" and sorted(cur.fetchall()) == [(50,), (51,)]
    # Each row on its key's shard only, once.
    want = [sorted((k, i) for k, i in keys) for keys in (
        [(a, 1), (a, 2), (a, 10), (a, 12), (a, 21), (a, 30), (a, 41), (a, 51)],
        [(b, 1), (b, 2), (b, 11), (b, 13), (b, 20), (b, 22), (b, 31), (b, 40), (b, 50)])]
    assert on_shards(cluster, f"SELECT tenant_id, id FROM {TABLE} ORDER BY tenant_id, id") == want
    assert prepared_parts(cluster) == [[], []]


def test_an_insert_split_between_shards_fails_on_every_shard_or_none(cluster, pgrouter, tables):
    a, b = tables
    with cluster.connect("shard1") as c:  # only shard 1 refuses the value
        c.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT tp_no_bad CHECK (v <> 'bad')")
    router = pgrouter(config(cluster))
    with router.connect(autocommit=True) as c:
        code, msg = sqlstate_of(c, f"INSERT INTO {TABLE} (tenant_id, id, v) VALUES ({a}, 7, 'bad'), ({b}, 7, 'bad')")
        assert code == "23514" and "tp_no_bad" in msg
        code, _ = sqlstate_of(c, f"INSERT INTO {TABLE} (tenant_id, id, v) VALUES ({b}, 7, 'ok'), (NULL, 7, 'ok')")
        assert code == "23502"  # the NULL key's row goes to the default shard, whose NOT NULL refuses it
        code, _ = sqlstate_of(c, f"INSERT INTO {TABLE} (tenant_id, id, v) VALUES ({a}, 7, 'ok'), ({b}, 'x', 'ok')")
        assert code == "22P02"
    assert on_shards(cluster, f"SELECT count(*) FROM {TABLE}") == [[(2,)], [(2,)]]
    assert prepared_parts(cluster) == [[], []]


def test_a_transaction_across_shards_commits_on_every_shard_or_none(cluster, pgrouter, tables):
    a, b = tables
    router = pgrouter(config(cluster))
    rows = f"SELECT v FROM {TABLE} WHERE id = 1"
    with router.connect(autocommit=False) as c:  # simple protocol; psycopg's BEGIN is deferred to the first shard
        c.execute(f"UPDATE {TABLE} SET v = 'both' WHERE tenant_id = {a} AND id = 1", prepare=False)
        c.execute(f"UPDATE {TABLE} SET v = 'both' WHERE tenant_id = {b} AND id = 1", prepare=False)
        for k in (a, b, a):  # each shard's part sees its own writes; nothing is visible outside yet
            assert c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = {k} AND id = 1", prepare=False).fetchone() \
                == ("both",)
        assert on_shards(cluster, rows) == [[("old",)], [("old",)]]
        c.commit()
    assert on_shards(cluster, rows) == [[("both",)], [("both",)]]
    with router.connect(autocommit=False) as c:  # extended protocol, then ROLLBACK
        for k in (a, b):
            c.execute(f"UPDATE {TABLE} SET v = %s WHERE tenant_id = %s AND id = 1", ("rolled back", k))
        c.rollback()
    assert on_shards(cluster, rows) == [[("both",)], [("both",)]]
    with router.connect(autocommit=False, prepare_threshold=0) as c:  # named prepared statements
        for k in (b, a, b):
            cur = c.execute(f"UPDATE {TABLE} SET v = %s WHERE tenant_id = %s AND id = 2 RETURNING tenant_id",
                            ("prepared", k))
            assert cur.fetchall() == [(k,)]
        c.commit()
    assert on_shards(cluster, f"SELECT v FROM {TABLE} WHERE id = 2") == [[("prepared",)], [("prepared",)]]
    with router.connect(autocommit=False) as c:  # an error aborts the whole transaction, as on one server
        c.execute(f"UPDATE {TABLE} SET v = 'lost' WHERE tenant_id = %s", (a,))
        c.execute(f"UPDATE {TABLE} SET v = 'lost' WHERE tenant_id = %s", (b,))
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute(f"SELECT 1/0 FROM {TABLE} WHERE tenant_id = %s", (a,))
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s", (b,))
        c.commit()  # COMMIT of an aborted transaction rolls back
        c.rollback()
    assert on_shards(cluster, f"SELECT DISTINCT v FROM {TABLE} WHERE v = 'lost'") == [[], []]
    with router.connect(autocommit=False) as c:  # a session SET is refused once the transaction spans shards
        c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s", (a,))
        c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s", (b,))
        code, msg = sqlstate_of(c, "SET application_name = 'x'")
        assert code == "0A000" and "SET LOCAL" in msg  # (savepoints: test_shard_savepoints.py)
        c.rollback()
        c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s", (b,))  # the session goes on, on one shard
        c.rollback()
    assert prepared_parts(cluster) == [[], []]
    metrics = router.metrics()
    assert pgr.metric(metrics, "pgrouter_shard_transactions_across_total") == 5, metrics
    assert pgr.metric(metrics, "pgrouter_two_phase_committed_total") == 2


def test_an_error_on_one_shard_rolls_back_every_shard(cluster, pgrouter, tables):
    a, b = tables
    with cluster.connect("shard1") as c:  # only shard 1 refuses the value
        c.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT tp_no_bad CHECK (v <> 'bad')")
    router = pgrouter(config(cluster))
    with router.connect(autocommit=True) as c:
        code, msg = sqlstate_of(c, f"UPDATE {TABLE} SET v = 'bad' WHERE tenant_id IN ({a}, {b})")
        assert code == "23514" and "tp_no_bad" in msg
        assert c.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    assert on_shards(cluster, f"SELECT DISTINCT v FROM {TABLE}") == [[("old",)], [("old",)]]
    assert prepared_parts(cluster) == [[], []]


def decisions(cluster):
    """Rows in the decision table on the default shard (0 before its first use)."""
    with cluster.connect("primary") as c:
        if c.execute("SELECT to_regclass('public.pgrouter_2pc_decisions')").fetchone()[0] is None:
            return 0
        return c.execute("SELECT count(*) FROM pgrouter_2pc_decisions").fetchone()[0]


def commit_counts(router):
    metrics = router.metrics()
    return (pgr.metric(metrics, "pgrouter_one_phase_commits_total"),
            pgr.metric(metrics, "pgrouter_two_phase_committed_total"))


def test_a_write_across_shards_that_changes_one_shard_commits_in_one_phase(cluster, pgrouter, tables):
    """Statements of both shards' keys that change rows on shard 0 only, or on none: the parts that wrote
    nothing commit plainly, and so does the one that wrote; nothing is prepared and no decision recorded."""
    a, b = tables
    with cluster.connect("primary") as c:
        c.execute(f"UPDATE {TABLE} SET v = 'marked' WHERE id = 1")
    router = pgrouter(config(cluster))
    before = decisions(cluster)
    with router.connect(autocommit=True) as c:
        cur = c.execute(f"UPDATE {TABLE} SET v = 'one' WHERE tenant_id IN ({a}, {b}) AND v = 'marked' "
                        "RETURNING tenant_id, id", prepare=False)
        assert cur.statusmessage == "UPDATE 1" and cur.fetchall() == [(a, 1)]
        cur = c.execute(f"UPDATE {TABLE} SET v = %s WHERE tenant_id IN (%s, %s) AND v = %s", ("two", a, b, "one"))
        assert cur.statusmessage == "UPDATE 1"
        assert c.execute(f"DELETE FROM {TABLE} WHERE id = 99").statusmessage == "DELETE 0"  # every shard, no row
    assert on_shards(cluster, f"SELECT id, v FROM {TABLE} ORDER BY id") == [[(1, "two"), (2, "old")],
                                                                          [(1, "old"), (2, "old")]]
    assert decisions(cluster) == before
    assert prepared_parts(cluster) == [[], []]
    assert commit_counts(router) == (3, 0)


def test_a_write_across_shards_that_changes_several_is_still_two_phase(cluster, pgrouter, tables):
    a, b = tables
    router = pgrouter(config(cluster))
    before = decisions(cluster)
    with router.connect(autocommit=True) as c:
        cur = c.execute(f"UPDATE {TABLE} SET v = 'both' WHERE tenant_id IN ({a}, {b}) AND id = 2")
        assert cur.statusmessage == "UPDATE 2"
    assert on_shards(cluster, f"SELECT v FROM {TABLE} WHERE id = 2") == [[("both",)], [("both",)]]
    assert decisions(cluster) == before + 1
    assert prepared_parts(cluster) == [[], []]
    assert commit_counts(router) == (0, 1)


def test_a_transaction_across_shards_that_wrote_on_one_commits_in_one_phase(cluster, pgrouter, tables):
    a, b = tables
    router = pgrouter(config(cluster))
    before = decisions(cluster)
    with router.connect(autocommit=False) as c:  # writes on shard 0, then reads on shard 1
        c.execute(f"UPDATE {TABLE} SET v = 'w0' WHERE tenant_id = {a} AND id = 1", prepare=False)
        assert c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = {b} AND id = 1",
                         prepare=False).fetchone() == ("old",)
        c.commit()
    with router.connect(autocommit=False) as c:  # reads on shard 0, then writes on shard 1 (extended protocol)
        assert c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s AND id = 1", (a,)).fetchone() is not None
        c.execute(f"UPDATE {TABLE} SET v = %s WHERE tenant_id = %s AND id = 2", ("w1", b))
        c.commit()
    with router.connect(autocommit=False) as c:  # reads only
        c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s", (a,)).fetchall()
        c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s", (b,)).fetchall()
        c.commit()
    assert on_shards(cluster, f"SELECT id, v FROM {TABLE} ORDER BY id") == [[(1, "w0"), (2, "old")],
                                                                          [(1, "old"), (2, "w1")]]
    assert decisions(cluster) == before
    assert prepared_parts(cluster) == [[], []]
    assert commit_counts(router) == (3, 0)
    assert pgr.metric(router.metrics(), "pgrouter_shard_transactions_across_total") == 3


def test_the_one_writing_part_failing_at_commit_fails_the_transaction(cluster, pgrouter, tables):
    """A deferred unique constraint on shard 0 is checked at its COMMIT: the client gets PostgreSQL's 23505 for
    its COMMIT, as from one server, and nothing is committed (shard 1's part, which only read, committed first)."""
    a, b = tables
    with cluster.connect("primary") as c:
        c.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT tp_once UNIQUE (tenant_id, id) DEFERRABLE INITIALLY DEFERRED")
    router = pgrouter(config(cluster))
    with router.connect(autocommit=False) as c:
        c.execute(f"INSERT INTO {TABLE} (tenant_id, id, v) VALUES ({a}, 1, 'dup')", prepare=False)
        c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = {b}", prepare=False).fetchall()
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.commit()
        assert c.execute(f"SELECT count(*) FROM {TABLE} WHERE tenant_id = {a}").fetchone() == (2,)
    assert on_shards(cluster, f"SELECT count(*) FROM {TABLE} WHERE v = 'dup'") == [[(0,)], [(0,)]]
    assert prepared_parts(cluster) == [[], []]
    assert commit_counts(router) == (0, 0)


def test_writes_across_shards_that_cannot_run_are_refused(cluster, pgrouter, tables):
    a, b = tables
    router = pgrouter(config(cluster))
    with router.connect(autocommit=True) as c:
        code, msg = sqlstate_of(c, f"INSERT INTO {TABLE} (tenant_id, id, v) SELECT tenant_id, 9, 'x' FROM {TABLE} "
                                   f"WHERE tenant_id IN ({a}, {b})")
        assert code == "0A000" and "only the rows of an INSERT ... VALUES can be split" in msg
        code, msg = sqlstate_of(c, f"UPDATE {TABLE} SET v = 'x' WHERE tenant_id = {a}; "
                                   f"UPDATE {TABLE} SET v = 'x' WHERE tenant_id = {b}")
        assert code == "0A000" and "statement of its own" in msg
    rejecting = pgrouter(config(cluster, cross_shard_writes="reject"))
    with rejecting.connect(autocommit=True) as c:
        code, msg = sqlstate_of(c, f"UPDATE {TABLE} SET v = 'y' WHERE tenant_id IN ({a}, {b})")
        assert code == "0A000" and "cross_shard_writes is reject" in msg
        code, msg = sqlstate_of(c, f"INSERT INTO {REF} VALUES (5, 'x')")
        assert code == "0A000" and "reference table" in msg
    assert on_shards(cluster, f"SELECT count(*) FROM {REF}") == [[(1,)], [(1,)]]


def wait_until(check, timeout=40, what="condition"):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.25)


@pytest.mark.parametrize("point,parts_left,committed", [
    ("after_prepare", 2, False),       # no decision recorded: recovery aborts both parts
    ("after_decision", 2, True),       # commit recorded, nothing committed yet: recovery commits both
    ("after_first_commit", 1, True),   # one shard committed: recovery commits the other
])
def test_a_crash_at_each_step_leaves_all_or_nothing(cluster, pgrouter, tables, tmp_path, point, parts_left,
                                                   committed):
    """pgrouter kills itself (SIGKILL) at a step of the commit; a new pgrouter's recovery settles the parts left
    prepared as the decision record says, within its grace period and interval (5 s each)."""
    a, b = tables
    crashing = pgr.Pgrouter(cluster, tmp_path / "crashing", config(cluster), env={"PGROUTER_TEST_CRASH_AT": point})
    try:
        with crashing.connect(autocommit=True) as c:
            with pytest.raises(psycopg.OperationalError):
                c.execute(f"UPDATE {TABLE} SET v = 'new' WHERE tenant_id IN ({a}, {b})")
        crashing.proc.wait(10)
        assert crashing.proc.returncode == -9, crashing.log()[-2000:]
    finally:
        crashing.stop(check=False)
    assert sum(len(p) for p in prepared_parts(cluster)) == parts_left
    recovering = pgrouter(config(cluster))
    wait_until(lambda: prepared_parts(cluster) == [[], []], what="recovery of the prepared parts")
    want = "new" if committed else "old"
    assert on_shards(cluster, f"SELECT DISTINCT v FROM {TABLE}") == [[(want,)], [(want,)]]
    metrics = recovering.metrics()
    name = "committed" if committed else "aborted"
    assert f"pgrouter_two_phase_recovered_{name}_total {parts_left}" in metrics, metrics
    # The decision table is there (made on first use) and holds the outcome until it is cleaned up.
    with cluster.connect("primary") as c:
        outcomes = c.execute("SELECT outcome FROM pgrouter_2pc_decisions").fetchall()
    assert (("commit",) if committed else ("abort",)) in outcomes


def test_explain_shows_a_cross_shard_write(cluster, pgrouter, tables):
    a, b = tables
    router = pgrouter(config(cluster))
    with router.connect(autocommit=True) as c:
        rows = c.execute(f"/* pgrouter: explain */ UPDATE {TABLE} SET v = 'e' WHERE tenant_id IN ({a}, {b})").fetchall()
    assert [r[0] for r in rows] == ["0", "1"]
    assert all("two-phase commit" in r[2] for r in rows)
    assert on_shards(cluster, f"SELECT DISTINCT v FROM {TABLE}") == [[("old",)], [("old",)]]


def test_a_shard_that_cannot_be_reached_fails_the_write_everywhere(cluster, pgrouter, tables):
    """Shard 1's primary is a closed port: the write gets 08006 naming the shard, and shard 0 keeps its rows."""
    a, b = tables
    cfg = config(cluster)
    cfg["databases"][0]["shards"][1] = {"primary": {"host": pgr.HOST, "port": pgr.free_port()}}
    cfg["pool"] = {"mode": "transaction", "connect_timeout": "1s"}
    router = pgrouter(cfg)
    with router.connect(autocommit=True) as c:
        code, msg = sqlstate_of(c, f"UPDATE {TABLE} SET v = 'gone' WHERE tenant_id IN ({a}, {b})")
        assert code == "08006" and "shard 1" in msg and "cross-shard write" in msg
        assert c.execute(f"SELECT count(*) FROM {TABLE} WHERE tenant_id = {a}").fetchone() == (2,)
    assert on_shards(cluster, f"SELECT DISTINCT v FROM {TABLE}") == [[("old",)], [("old",)]]
    with cluster.connect("primary") as c:
        assert c.execute("SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'pgr\\_%'").fetchone() == (0,)


def test_recovery_follows_the_primary_the_probes_found(cluster, pgrouter, tables, tmp_path):
    """Shard 0 given as `hosts:` (role: auto) with its replica listed first: the prepared parts and the decision
    record are on the host the probes find to be the primary, not on the first one listed (a replica cannot run
    COMMIT PREPARED)."""
    a, b = tables
    crashing = pgr.Pgrouter(cluster, tmp_path / "crashing", config(cluster),
                            env={"PGROUTER_TEST_CRASH_AT": "after_decision"})
    try:
        with crashing.connect(autocommit=True) as c:
            with pytest.raises(psycopg.OperationalError):
                c.execute(f"UPDATE {TABLE} SET v = 'new' WHERE tenant_id IN ({a}, {b})")
        crashing.proc.wait(10)
    finally:
        crashing.stop(check=False)
    assert sum(len(p) for p in prepared_parts(cluster)) == 2
    auto = config(cluster)
    db = auto["databases"][0]
    db["shards"][0] = {"hosts": [cluster.endpoint("replica"), cluster.endpoint("primary")]}
    db["routing"] = {"probe_interval": "100ms"}
    recovering = pgrouter(auto)
    wait_until(lambda: prepared_parts(cluster) == [[], []], what="recovery of the prepared parts")
    assert on_shards(cluster, f"SELECT DISTINCT v FROM {TABLE}") == [[("new",)], [("new",)]]
    assert "pgrouter_two_phase_recovered_committed_total 2" in recovering.metrics()
