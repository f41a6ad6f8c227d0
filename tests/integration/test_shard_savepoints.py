"""Savepoints and SET LOCAL inside a transaction across shards: the same scripts run directly on one unsharded
PostgreSQL (a table holding both tenants' rows) and through pgrouter, where each tenant's rows are on another
shard, must give the same answers (SQLSTATEs, rows) and leave the same rows. A shard the transaction reaches
after a savepoint or SET LOCAL gets them replayed, so ROLLBACK TO undoes the same on every shard."""
import psycopg
import pytest

import pgr
from test_sharding import key_on_each_shard, sharded_config, sqlstate_of

TABLE = "sp_orders"  # through pgrouter: each tenant's rows on its shard
DIRECT = "sp_direct"  # directly: both tenants' rows on one server
SHARDS = ["primary", "shard1"]


def config(cluster):
    return sharded_config(cluster, {TABLE: "tenant_id"})


def prepared_xacts(cluster):
    out = []
    for server in SHARDS:
        with cluster.connect(server) as c:
            out.append(c.execute("SELECT gid FROM pg_prepared_xacts").fetchall())
    return out


@pytest.fixture
def keys(cluster):
    a, b = key_on_each_shard(cluster)
    for server in SHARDS:
        with cluster.connect(server, autocommit=True) as c:
            c.execute(f"DROP TABLE IF EXISTS {TABLE}, {DIRECT}")
            for t in (TABLE, DIRECT):
                c.execute(f"CREATE TABLE {t} (tenant_id bigint NOT NULL, id int, v text)")
                c.execute(f"GRANT ALL ON {t} TO PUBLIC")
    yield a, b
    assert prepared_xacts(cluster) == [[], []]


def reset_rows(cluster, a, b):
    for i, server in enumerate(SHARDS):
        with cluster.connect(server, autocommit=True) as c:
            c.execute(f"TRUNCATE {TABLE}, {DIRECT}")
            c.execute(f"INSERT INTO {TABLE} VALUES ({[a, b][i]}, 1, 'old')")
    with cluster.connect("primary", autocommit=True) as c:
        c.execute(f"INSERT INTO {DIRECT} VALUES ({a}, 1, 'old'), ({b}, 1, 'old')")


def final_rows(cluster, table):
    rows = []
    servers = SHARDS if table == TABLE else ["primary"]
    for server in servers:
        with cluster.connect(server) as c:
            rows += c.execute(f"SELECT tenant_id, id, v FROM {table}").fetchall()
    return sorted(rows)


def run_script(conn, steps, table, a, b, prepare):
    """Each step's (SQLSTATE or None, rows or None), as the client sees them."""
    out = []
    for step in steps:
        sql = step.format(t=table, a=a, b=b)
        try:
            cur = conn.execute(sql, prepare=prepare)
            out.append((None, cur.fetchall() if cur.description else None))
        except psycopg.Error as e:
            out.append((e.sqlstate, None))
    return out


def same_as_directly(cluster, router, steps, a, b, prepare=False):
    """Runs the script directly and through pgrouter; both give the same answers and rows. Returns the answers."""
    reset_rows(cluster, a, b)
    with cluster.connect("primary", autocommit=True) as c:
        direct = run_script(c, steps, DIRECT, a, b, prepare)
    want_rows = [(k, i, v) for k, i, v in final_rows(cluster, DIRECT)]
    reset_rows(cluster, a, b)
    with router.connect(autocommit=True) as c:
        routed = run_script(c, steps, TABLE, a, b, prepare)
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert routed == direct, list(zip(steps, direct, routed))
    assert final_rows(cluster, TABLE) == want_rows
    assert prepared_xacts(cluster) == [[], []]
    return direct


UPDATE_A = "UPDATE {t} SET v = '%s' WHERE tenant_id = {a}"
UPDATE_B = "UPDATE {t} SET v = '%s' WHERE tenant_id = {b}"
READ_A = "SELECT v FROM {t} WHERE tenant_id = {a}"
READ_B = "SELECT v FROM {t} WHERE tenant_id = {b}"

SCRIPTS = {
    # The savepoint is made while the transaction is still on its first shard: the second shard's leg gets it
    # replayed, and ROLLBACK TO undoes the second shard's write there, keeping the first one's.
    "savepoint before the second shard": [
        "BEGIN", UPDATE_A % "a1", "SAVEPOINT s", UPDATE_B % "b1", READ_B, "ROLLBACK TO s", READ_B, READ_A,
        "COMMIT"],
    # Both shards open, then a savepoint on both, writes on both, ROLLBACK TO, more writes.
    "savepoint on both shards": [
        "BEGIN", UPDATE_A % "a1", UPDATE_B % "b1", "SAVEPOINT s", UPDATE_A % "a2", UPDATE_B % "b2",
        "ROLLBACK TO SAVEPOINT s", READ_A, READ_B, UPDATE_B % "b3", "COMMIT"],
    # Nested savepoints: RELEASE ends s2 (ROLLBACK TO s2 then fails with 3B001 and aborts), ROLLBACK TO s1
    # brings the transaction back and undoes everything after s1.
    "nested with release": [
        "BEGIN", UPDATE_A % "x", "SAVEPOINT s1", UPDATE_B % "y", "SAVEPOINT s2", UPDATE_A % "z",
        "RELEASE s2", UPDATE_B % "w", "ROLLBACK TO s2", READ_A, "ROLLBACK TO s1", READ_A, READ_B,
        UPDATE_B % "after", "RELEASE SAVEPOINT s1", "COMMIT"],
    # An error after a savepoint aborts everything (25P02), ROLLBACK TO recovers, COMMIT commits what was
    # before the savepoint and after the ROLLBACK TO.
    "error then rollback to": [
        "BEGIN", UPDATE_A % "e1", UPDATE_B % "e1", "SAVEPOINT s", UPDATE_B % "e2",
        "SELECT 1/0 FROM {t} WHERE tenant_id = {a}", READ_B, "SAVEPOINT t", "ROLLBACK TO s", READ_B,
        UPDATE_A % "e3", "COMMIT"],
    # An unknown name: PostgreSQL's 3B001, the transaction aborted, COMMIT rolls back.
    "unknown savepoint": [
        "BEGIN", UPDATE_A % "u1", UPDATE_B % "u1", "ROLLBACK TO nope", READ_A, "COMMIT"],
    "unknown savepoint released": [
        "BEGIN", UPDATE_A % "r1", "SAVEPOINT s", UPDATE_B % "r1", "RELEASE nope", READ_B, "ROLLBACK TO s",
        UPDATE_B % "r2", "COMMIT"],
    # The same mistakes while the transaction is still on its first shard: the stack the second shard's leg
    # gets is what PostgreSQL kept.
    "errors before the second shard": [
        "BEGIN", UPDATE_A % "f1", "SAVEPOINT s", "SAVEPOINT t", "ROLLBACK TO nope", "SAVEPOINT u",
        "ROLLBACK TO t", "RELEASE t", UPDATE_B % "f2", "ROLLBACK TO s", READ_B, "ROLLBACK TO t", "ROLLBACK TO s",
        UPDATE_B % "f3", "COMMIT"],
    # A quoted name, and the same name twice (the latest one counts).
    "quoted and repeated names": [
        "BEGIN", UPDATE_A % "q1", 'SAVEPOINT "Sp"', UPDATE_B % "q1", "SAVEPOINT sp", UPDATE_B % "q2",
        "SAVEPOINT sp", UPDATE_A % "q3", "ROLLBACK TO sp", READ_A, "RELEASE sp", "ROLLBACK TO sp", READ_B,
        'ROLLBACK TO "Sp"', READ_A, READ_B, "COMMIT"],
}


@pytest.mark.parametrize("prepare", [False, True], ids=["simple", "prepared"])
def test_savepoint_scripts_answer_as_one_server(cluster, pgrouter, keys, prepare):
    a, b = keys
    router = pgrouter(config(cluster))
    for name, steps in SCRIPTS.items():
        print(name)
        answers = same_as_directly(cluster, router, steps, a, b, prepare)
        codes = [code for code, _ in answers]
        if "unknown" in name:
            assert "3B001" in codes, codes
        if name == "error then rollback to":
            assert codes.count("25P02") == 2 and codes[-1] is None, codes
    metrics = router.metrics()
    assert pgr.metric(metrics, "pgrouter_shard_transactions_across_total") == len(SCRIPTS), metrics


SET_LOCAL_SCRIPTS = {
    # Made on the first shard, replayed on the second one's leg: its pg_sleep hits the timeout.
    "set local before the second shard": [
        "BEGIN", READ_A, "SET LOCAL statement_timeout = '300ms'",
        "SELECT pg_sleep(3) FROM {t} WHERE tenant_id = {b}", "ROLLBACK"],
    # Made with both shards open: both get it.
    "set local on both shards": [
        "BEGIN", READ_A, READ_B, "SET LOCAL statement_timeout TO '300ms'",
        "SELECT pg_sleep(3) FROM {t} WHERE tenant_id = {a}", "ROLLBACK"],
    # A ROLLBACK TO undoes a SET LOCAL made after its savepoint, also on the shard reached after both.
    "set local undone by rollback to": [
        "BEGIN", READ_A, "SAVEPOINT s", "SET LOCAL statement_timeout = '300ms'", "ROLLBACK TO s",
        "SELECT pg_sleep(0.8) FROM {t} WHERE tenant_id = {b}", "SHOW statement_timeout", "COMMIT"],
    # RELEASE keeps what was set inside the savepoint.
    "set local kept by release": [
        "BEGIN", READ_A, "SAVEPOINT s", "SET LOCAL statement_timeout = '300ms'", "RELEASE s",
        "SELECT pg_sleep(3) FROM {t} WHERE tenant_id = {b}", "ROLLBACK"],
    # After COMMIT the setting is gone on both shards.
    "set local ends with the transaction": [
        "BEGIN", READ_A, "SET LOCAL statement_timeout = '300ms'", READ_B, "COMMIT",
        "SELECT current_setting('statement_timeout') FROM {t} WHERE tenant_id = {a}",
        "SELECT current_setting('statement_timeout') FROM {t} WHERE tenant_id = {b}"],
}


@pytest.mark.parametrize("prepare", [False, True], ids=["simple", "prepared"])
def test_set_local_reaches_every_shard_of_the_transaction(cluster, pgrouter, keys, prepare):
    a, b = keys
    router = pgrouter(config(cluster))
    for name, steps in SET_LOCAL_SCRIPTS.items():
        print(name)
        answers = same_as_directly(cluster, router, steps, a, b, prepare)
        codes = [code for code, _ in answers]
        if "undone" in name or "ends" in name:
            assert "57014" not in codes, codes
        else:
            assert "57014" in codes, codes
    # Outside the transaction each shard's servers have the default again.
    with router.connect() as c:
        for k in (a, b):
            assert c.execute(f"SELECT current_setting('statement_timeout') FROM {TABLE} WHERE tenant_id = {k} "
                             "AND id = 1").fetchone() == ("0",)


def test_session_set_inside_a_transaction_across_shards_is_refused(cluster, pgrouter, keys):
    a, b = keys
    reset_rows(cluster, a, b)
    router = pgrouter(config(cluster))
    with router.connect() as c:
        c.execute("BEGIN")
        c.execute(f"UPDATE {TABLE} SET v = 's' WHERE tenant_id = {a}")
        c.execute(f"UPDATE {TABLE} SET v = 's' WHERE tenant_id = {b}")
        code, msg = sqlstate_of(c, "SET statement_timeout = '1s'")
        assert code == "0A000" and "SET LOCAL" in msg, msg
        code, _ = sqlstate_of(c, "SELECT 1")
        assert code == "25P02"
        c.execute("ROLLBACK")
        assert c.execute("SHOW statement_timeout").fetchone() == ("0",)
    assert final_rows(cluster, TABLE) == sorted([(a, 1, "old"), (b, 1, "old")])


DEALLOCATE_SCRIPT = [
    # DEALLOCATE inside the transaction forgets the statement, and a rollback does not bring it back (prepared
    # statements are not transactional in PostgreSQL); DEALLOCATE ALL likewise.
    "PREPARE q AS SELECT 1", "BEGIN", UPDATE_A % "d1", UPDATE_B % "d1", "DEALLOCATE q", "EXECUTE q", "ROLLBACK",
    "EXECUTE q", "PREPARE q AS SELECT 2", "EXECUTE q",
    "BEGIN", UPDATE_A % "d2", UPDATE_B % "d2", "DEALLOCATE nope", "ROLLBACK",
    "BEGIN", UPDATE_A % "d3", UPDATE_B % "d3", "DEALLOCATE ALL", "COMMIT",
    "EXECUTE q", "PREPARE q AS SELECT 3", "EXECUTE q", "DEALLOCATE q"]


def test_deallocate_inside_a_transaction_across_shards(cluster, pgrouter, keys):
    """(Simple Queries only: a SQL PREPARE sent through Parse/Bind pins the client to its server
    (pool.session_features), and a pinned client's transaction stays on its shard.)"""
    a, b = keys
    router = pgrouter(config(cluster))
    answers = same_as_directly(cluster, router, DEALLOCATE_SCRIPT, a, b, prepare=False)
    print(answers)
    assert answers[5][0] == "26000" and answers[7][0] == "26000" and answers[9] == (None, [(2,)])
    assert answers[-4][0] == "26000" and answers[-2] == (None, [(3,)])


def test_sql_prepare_inside_a_transaction_across_shards_is_refused(cluster, pgrouter, keys):
    """It would leave the statement, under the client's own name, on a pooled server: refused, and no server
    of the pool (one per shard) has it afterwards."""
    a, b = keys
    reset_rows(cluster, a, b)
    cfg = config(cluster)
    cfg["pool"]["size"] = 1
    router = pgrouter(cfg)
    with router.connect() as c:
        c.execute("BEGIN")
        c.execute(f"UPDATE {TABLE} SET v = 'p' WHERE tenant_id = {a}")
        c.execute(f"UPDATE {TABLE} SET v = 'p' WHERE tenant_id = {b}")
        code, msg = sqlstate_of(c, "PREPARE leaked AS SELECT 42")
        assert code == "0A000" and "PREPARE the statement before BEGIN" in msg, msg
        c.execute("ROLLBACK")
    with router.connect() as other:
        for key in (a, b):
            code, _ = sqlstate_of(other, f"/* pgrouter: shard_key={key} */ EXECUTE leaked")
            assert code == "26000"
    assert final_rows(cluster, TABLE) == sorted([(a, 1, "old"), (b, 1, "old")])


def test_a_transaction_that_set_a_session_setting_stays_on_its_shard(cluster, pgrouter, keys):
    """A session SET made while the transaction is on its first shard lives on that server only: another
    shard's part would run without it (it answered '' here: a wrong answer). The statement for another shard
    is refused; after a COMMIT the setting reaches every shard, as any committed SET does, and no other
    client gets it."""
    a, b = keys
    reset_rows(cluster, a, b)
    cfg = config(cluster)
    cfg["pool"]["size"] = 1
    router = pgrouter(cfg)
    setting = f"SELECT current_setting('application_name') FROM {TABLE} WHERE tenant_id = %s"
    with router.connect() as c:
        c.execute("BEGIN")
        c.execute(f"UPDATE {TABLE} SET v = 's' WHERE tenant_id = {a}")
        c.execute("SET application_name = 'set_in_tx'")
        code, msg = sqlstate_of(c, setting, (b,))
        assert code == "0A000" and "SET a session setting" in msg and "SET LOCAL" in msg, msg
        c.execute("ROLLBACK")
        assert [c.execute(setting, (k,)).fetchone()[0] for k in (a, b)] == ["", ""]
        c.execute("BEGIN")
        c.execute(f"UPDATE {TABLE} SET v = 't' WHERE tenant_id = {a}")
        c.execute("SET application_name = 'committed'")
        assert c.execute(setting, (a,)).fetchone() == ("committed",)
        c.execute("COMMIT")
        assert [c.execute(setting, (k,)).fetchone()[0] for k in (a, b)] == ["committed", "committed"]
    with router.connect() as other:  # the same two servers (pool size 1): nothing of the first client's
        assert [other.execute(setting, (k,)).fetchone()[0] for k in (a, b)] == ["", ""]
    assert final_rows(cluster, TABLE) == sorted([(a, 1, "t"), (b, 1, "old")])


def nested_transactions(conn, table, a, b):
    """Django/psycopg-style nesting: each `with conn.transaction()` inside another is a savepoint."""
    update = f"UPDATE {table} SET v = %s WHERE tenant_id = %s"
    with conn.transaction():
        conn.execute(update, ("outer", a))
        with conn.transaction():
            conn.execute(update, ("inner kept", b))
        with conn.transaction():
            conn.execute(update, ("undone", a))
            conn.execute(update, ("undone", b))
            raise psycopg.Rollback()  # rolls back to this block's savepoint
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.transaction():
                conn.execute(update, ("failed", b))
                with conn.transaction():
                    conn.execute(update, ("failed inner", a))
                conn.execute(f"SELECT 1/0 FROM {table} WHERE tenant_id = %s", (a,))
        seen = conn.execute(f"SELECT tenant_id, v FROM {table} WHERE tenant_id = %s", (b,)).fetchall()
        conn.execute(update, ("last", b))
    return seen


def test_psycopg_nested_transactions_across_tenants(cluster, pgrouter, keys):
    a, b = keys
    router = pgrouter(config(cluster))
    reset_rows(cluster, a, b)
    with cluster.connect("primary", autocommit=True) as c:
        direct_seen = nested_transactions(c, DIRECT, a, b)
    want = final_rows(cluster, DIRECT)
    reset_rows(cluster, a, b)
    with router.connect(autocommit=True) as c:
        assert nested_transactions(c, TABLE, a, b) == direct_seen == [(b, "inner kept")]
    assert final_rows(cluster, TABLE) == want == sorted([(a, 1, "outer"), (b, 1, "last")])
    with router.connect(autocommit=True, prepare_threshold=0) as c:  # the same with named statements
        reset_rows(cluster, a, b)
        assert nested_transactions(c, TABLE, a, b) == direct_seen
    assert final_rows(cluster, TABLE) == want
    assert pgr.metric(router.metrics(), "pgrouter_shard_transactions_across_total") == 2


def test_a_savepoint_pgrouter_cannot_follow_keeps_the_transaction_on_its_shard(cluster, pgrouter, keys):
    a, b = keys
    reset_rows(cluster, a, b)
    router = pgrouter(config(cluster))
    with router.connect() as c:
        c.execute("BEGIN")
        # Among other statements of one Query: pgrouter does not know which of them ran.
        c.execute(f"UPDATE {TABLE} SET v = 'm' WHERE tenant_id = {a}; SAVEPOINT s", prepare=False)
        code, msg = sqlstate_of(c, f"UPDATE {TABLE} SET v = 'm' WHERE tenant_id = {b}")
        assert code == "0A000" and "cannot replay it on another shard" in msg, msg
        c.execute("ROLLBACK")
        # The next transaction starts afresh.
        c.execute("BEGIN")
        c.execute("SAVEPOINT s")
        c.execute(f"UPDATE {TABLE} SET v = 'n' WHERE tenant_id = {a}")
        c.execute(f"UPDATE {TABLE} SET v = 'n' WHERE tenant_id = {b}")
        c.execute("RELEASE s")
        c.execute("COMMIT")
    assert final_rows(cluster, TABLE) == sorted([(a, 1, "n"), (b, 1, "n")])
    assert pgr.metric(router.metrics(), "pgrouter_shard_transactions_across_total") == 1
