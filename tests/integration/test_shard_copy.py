"""COPY ... FROM STDIN (and multi-row INSERTs, and explicit transactions) into a sharded table through pgrouter: each row goes to its key's shard (checked with
PostgreSQL's own satisfies_hash_partition), all rows or none are committed (two-phase commit), and errors are
the ones PostgreSQL gives for the same data. Into a reference table, every row goes to every shard."""
import random

import psycopg
import pytest

from test_sharding import keys_for_test, make_table, misplaced, shard_servers, sharded_config
from test_two_phase import roll_back_prepared_parts

SEED = 20261207
TABLE = "sh_copy"
REF = "sh_copy_ref"


@pytest.fixture
def tables(cluster):
    make_table(cluster, TABLE)
    for server in shard_servers(cluster):
        with cluster.connect(server, autocommit=True) as c:
            roll_back_prepared_parts(c)
            c.execute(f"DROP TABLE IF EXISTS {REF}")
            c.execute(f"CREATE TABLE {REF} (id int PRIMARY KEY, name text)")
            c.execute(f"GRANT ALL ON {REF} TO PUBLIC")


def config(cluster, **sharding):
    return sharded_config(cluster, {TABLE: "tenant_id"}, reference_tables=[REF], **sharding)


def all_rows(cluster, table=TABLE):
    out = []
    for server in shard_servers(cluster):
        with cluster.connect(server) as c:
            out += c.execute(f"SELECT tenant_id, v FROM {table}").fetchall()
    return sorted(out)


def no_prepared_parts(cluster):
    for server in shard_servers(cluster):
        with cluster.connect(server) as c:
            assert c.execute("SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'pgr\\_%'").fetchone() == (0,)


def test_copy_and_multi_row_inserts_put_every_row_on_its_shard(cluster, pgrouter, tables):
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    keys = keys_for_test(rng, 30)
    # Values that need escaping in each format: tabs, newlines, backslashes, quotes, commas.
    texts = ["plain", "tab\there", "new\nline", "back\\slash", 'quo"te', "com,ma", "", "\\N", "é"]
    want = []
    router = pgrouter(config(cluster))
    with router.connect() as c:
        with c.cursor() as cur:
            # Text format with a column list, rows written by psycopg (its escaping), in many CopyData messages.
            with cur.copy(f"COPY {TABLE} (tenant_id, v) FROM STDIN") as copy:
                for i, k in enumerate(keys):
                    row = (k, f"t{i}:" + texts[i % len(texts)])
                    copy.write_row(row)
                    want.append(row)
            assert cur.rowcount == len(keys)
            # CSV with a header and no column list (the key's position comes from the table), written raw in
            # pieces that cut rows and quoted newlines apart.
            lines = ["tenant_id,v\n"]
            for i, k in enumerate(keys):
                v = f"c{i}:" + texts[i % len(texts)]
                lines.append(f'{k},"{v.replace(chr(34), chr(34) * 2)}"\n')
                want.append((k, v))
            data = "".join(lines).encode()
            with cur.copy(f"COPY {TABLE} FROM STDIN (FORMAT csv, HEADER)") as copy:
                for at in range(0, len(data), 7):
                    copy.write(data[at:at + 7])
            assert cur.rowcount == len(keys)
        # One INSERT with every key's row: split per shard.
        values = ", ".join(f"({k}, 'i{i}')" for i, k in enumerate(keys))
        assert c.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES {values}").rowcount == len(keys)
        want += [(k, f"i{i}") for i, k in enumerate(keys)]
        # An explicit transaction of single-row INSERTs on every shard: coordinated, committed by 2PC.
        with c.transaction():
            for i, k in enumerate(keys):
                c.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES (%s, %s)", (k, f"x{i}"))
        want += [(k, f"x{i}") for i, k in enumerate(keys)]
    assert all_rows(cluster) == sorted(want)
    assert misplaced(cluster, TABLE) == []
    no_prepared_parts(cluster)


def test_copy_into_a_reference_table_reaches_every_shard(cluster, pgrouter, tables):
    router = pgrouter(config(cluster))
    with router.connect() as c, c.cursor() as cur:
        with cur.copy(f"COPY {REF} FROM STDIN (FORMAT csv)") as copy:
            copy.write(b"1,free\n2,pro\n3,\"max\nplus\"\n")
        assert cur.rowcount == 6  # the shards' counts summed, as for any write to a reference table
    for server in shard_servers(cluster):
        with cluster.connect(server) as s:
            assert s.execute(f"SELECT id, name FROM {REF} ORDER BY id").fetchall() == [
                (1, "free"), (2, "pro"), (3, "max\nplus")]
    no_prepared_parts(cluster)


def copy_error(conn, sql, data=None, fail=False):
    """The SQLSTATE and message a COPY with `data` gets (fail: the client aborts it with CopyFail)."""
    try:
        with conn.cursor() as cur, cur.copy(sql) as copy:
            if data is not None:
                copy.write(data)
            if fail:
                raise RuntimeError("client gave up")
    except psycopg.Error as e:
        return e.sqlstate, e.diag.message_primary
    except RuntimeError as e:
        return "client", str(e)
    return None, None


def test_a_copy_that_fails_anywhere_leaves_no_row_and_errs_as_postgresql(cluster, pgrouter, tables):
    router = pgrouter(config(cluster))
    bad_rows = b"1\tok\n2\tok\n3\tok\nnot-a-number\tbad\n"
    with cluster.connect("shard1") as direct, router.connect() as c:
        # A row PostgreSQL rejects: the same SQLSTATE and message as from one server, and no row anywhere.
        want = copy_error(direct, f"COPY {TABLE} (tenant_id, v) FROM STDIN", bad_rows)
        assert want[0] == "22P02"
        assert copy_error(c, f"COPY {TABLE} (tenant_id, v) FROM STDIN", bad_rows) == want
        # A NOT NULL key (\N): PostgreSQL's 23502 from the default shard.
        null_key = b"1\tok\n\\N\tnull key\n"
        want = copy_error(direct, f"COPY {TABLE} (tenant_id, v) FROM STDIN", null_key)
        assert want[0] == "23502" and copy_error(c, f"COPY {TABLE} (tenant_id, v) FROM STDIN", null_key) == want
        # The client's CopyFail: what psycopg reports from PostgreSQL itself.
        want = copy_error(direct, f"COPY {TABLE} (tenant_id, v) FROM STDIN", b"1\tok\n2\tok\n", fail=True)
        assert copy_error(c, f"COPY {TABLE} (tenant_id, v) FROM STDIN", b"1\tok\n2\tok\n", fail=True) == want
        print("CopyFail:", want)
        # Carriage-return line ends cannot be cut as PostgreSQL would: refused, nothing written.
        code, msg = copy_error(c, f"COPY {TABLE} (tenant_id, v) FROM STDIN", b"1\tok\r2\tok\r")
        assert code == "0A000" and "carriage-return" in msg
        # Binary format and server-side files: refused before anything runs.
        code, msg = copy_error(c, f"COPY {TABLE} FROM STDIN (FORMAT binary)")
        assert code == "0A000" and "binary" in msg
        code, msg = copy_error(c, f"COPY {TABLE} FROM '/etc/hostname'")
        assert code == "0A000" and "file" in msg
        assert c.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    assert all_rows(cluster) == []
    no_prepared_parts(cluster)
    rejecting = pgrouter(config(cluster, cross_shard_writes="reject"))
    with rejecting.connect() as c:
        code, msg = copy_error(c, f"COPY {TABLE} (tenant_id, v) FROM STDIN", b"1\tx\n")
        assert code == "0A000" and "cross_shard_writes is reject" in msg
    with rejecting.connect(autocommit=False) as c:  # inside a transaction too
        c.execute("SELECT 1")
        code, msg = copy_error(c, f"COPY {TABLE} (tenant_id, v) FROM STDIN", b"1\tx\n")
        assert code == "0A000" and "cross_shard_writes is reject" in msg


def copy_rows(conn, sql, data):
    with conn.cursor() as cur:
        with cur.copy(sql) as copy:
            copy.write(data)
        return cur.rowcount


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_copy_inside_a_transaction_commits_and_rolls_back_with_it(cluster, pgrouter, tables, mode):
    """psycopg's default (autocommit off) puts each COPY inside a transaction: the rows of several shards are
    written on the transaction's part on each shard and committed or rolled back with it, as on one server."""
    print(f"seed {SEED}")
    keys = keys_for_test(random.Random(SEED), 10)
    data = "".join(f"{k}\tc{i}\n" for i, k in enumerate(keys)).encode()
    cfg = config(cluster)
    cfg["pool"]["mode"] = mode
    router = pgrouter(cfg)
    with router.connect(autocommit=False) as c:
        # The COPY first (the BEGIN psycopg sent is still pgrouter's), then rolled back: nothing anywhere.
        assert copy_rows(c, f"COPY {TABLE} (tenant_id, v) FROM STDIN", data) == len(keys)
        assert c.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (len(keys),)  # its own rows
        c.rollback()
        assert all_rows(cluster) == []
        # After a keyed INSERT (the transaction on one shard goes on across shards), beside a reference
        # table's COPY, then committed.
        c.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES (%s, 'first')", (keys[0],))
        assert copy_rows(c, f"COPY {TABLE} (tenant_id, v) FROM STDIN", data) == len(keys)
        assert copy_rows(c, f"COPY {REF} FROM STDIN (FORMAT csv)", b"1,free\n2,pro\n") == 4
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        c.commit()
        # A savepoint before the COPY: rolling back to it undoes the COPY on every shard.
        c.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES (%s, 'kept')", (keys[1],))
        c.execute("SAVEPOINT before_copy")
        copy_rows(c, f"COPY {TABLE} (tenant_id, v) FROM STDIN", data)
        c.execute("ROLLBACK TO SAVEPOINT before_copy")
        c.commit()
    want = [(keys[0], "first"), (keys[1], "kept")] + [(k, f"c{i}") for i, k in enumerate(keys)]
    assert all_rows(cluster) == sorted(want)
    assert misplaced(cluster, TABLE) == []
    for server in shard_servers(cluster):
        with cluster.connect(server) as s:
            assert s.execute(f"SELECT id, name FROM {REF} ORDER BY id").fetchall() == [(1, "free"), (2, "pro")]
    no_prepared_parts(cluster)


def test_a_failed_copy_aborts_its_transaction_as_on_one_server(cluster, pgrouter, tables):
    router = pgrouter(config(cluster))
    bad_rows = b"1\tok\n2\tok\n3\tok\nnot-a-number\tbad\n"
    sql = f"COPY {TABLE} (tenant_id, v) FROM STDIN"
    with cluster.connect("shard1", autocommit=False) as direct, router.connect(autocommit=False) as c:
        for fail in (False, True):  # a row PostgreSQL rejects; the client's CopyFail
            answers = []
            for conn in (direct, c):
                conn.execute(f"INSERT INTO {TABLE} (tenant_id, v) VALUES (5, 'before')")
                got = copy_error(conn, sql, b"1\tok\n2\tok\n" if fail else bad_rows, fail=fail)
                status = conn.info.transaction_status
                try:
                    conn.execute("SELECT 1")
                    after = None
                except psycopg.Error as e:
                    after = e.sqlstate
                conn.rollback()
                answers.append((got, status, after))
            print(answers)
            assert answers[0][0][0] in ("22P02", "57014")
            assert answers[1] == answers[0]
            assert answers[1][1] == psycopg.pq.TransactionStatus.INERROR and answers[1][2] == "25P02"
    assert all_rows(cluster) == []
    no_prepared_parts(cluster)
