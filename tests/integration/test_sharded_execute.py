"""SQL EXECUTE on a sharded database, routed by the key among its arguments: `PREPARE q(bigint) AS ... WHERE
tenant_id = $1; EXECUTE q(7)` runs where a Bind of '7' to q would run. Each shard holds only its own tenants'
rows (and, where a test says so, a decoy row of another shard's tenant that only a wrongly routed statement
would read or write), and answers are compared with the rows read on the key's shard directly."""
import psycopg
import pytest

from test_sharding import make_table, sharded_config, shard_of, sqlstate_of

TABLE = "sx_orders"
SHARDS = ["primary", "shard1"]


def keys_on_each_shard(cluster, candidates):
    """The first of `candidates` on shard 0 and the first on shard 1."""
    found = {}
    for k in candidates:
        found.setdefault(shard_of(cluster, k), k)
        if len(found) == 2:
            return found[0], found[1]
    raise AssertionError("no key on each shard")


@pytest.fixture
def keys(cluster):
    """Two positive and two negative keys, one of each on each shard, with rows on their shard only."""
    make_table(cluster, TABLE)
    a, b = keys_on_each_shard(cluster, range(1, 60))
    na, nb = keys_on_each_shard(cluster, range(-1, -60, -1))
    for server, shard_keys in zip(SHARDS, [(a, na), (b, nb)]):
        with cluster.connect(server) as direct:
            for k in shard_keys:
                direct.execute(f"INSERT INTO {TABLE} VALUES ({k}, 'one-{k}'), ({k}, 'two-{k}')")
    return a, b, na, nb


def config(cluster, mode):
    c = sharded_config(cluster, {TABLE: "tenant_id"})
    c["pool"] = {"mode": mode}
    return c


def rows_on_shard(cluster, key):
    """The rows of `key` as its own shard holds them."""
    with cluster.connect(SHARDS[shard_of(cluster, key)]) as c:
        return c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s ORDER BY v", (key,)).fetchall()


MODES = ["transaction", "session"]


@pytest.mark.parametrize("mode", MODES)
def test_execute_reads_the_keys_shard(cluster, pgrouter, keys, mode):
    router = pgrouter(config(cluster, mode))
    with router.connect() as c:
        c.execute(f"PREPARE by_key(bigint) AS SELECT v FROM {TABLE} WHERE tenant_id = $1 ORDER BY v")
        c.execute(f"PREPARE untyped AS SELECT v FROM {TABLE} WHERE tenant_id = $1 ORDER BY v")
        c.execute(f"PREPARE second(text, bigint) AS SELECT v FROM {TABLE} WHERE tenant_id = $2 AND v <> $1 "
                  "ORDER BY v")
        c.execute(f"PREPARE any_of(bigint[]) AS SELECT v FROM {TABLE} WHERE tenant_id = ANY($1) ORDER BY v")
        for k in keys + keys:
            want = rows_on_shard(cluster, k)
            assert len(want) == 2, (k, want)
            for argument in [f"{k}", f"'{k}'", f"'{k}'::int8", f"{k}::bigint", f"CAST('{k}' AS bigint)"]:
                assert c.execute(f"EXECUTE by_key({argument})").fetchall() == want, argument
                assert c.execute(f"EXECUTE untyped({argument})").fetchall() == want, argument
            assert c.execute(f"EXECUTE second(upper('x'), {k})").fetchall() == want
            assert c.execute(f"EXECUTE any_of('{{{k},{k}}}')").fetchall() == want
            # EXECUTE as a named extended-protocol statement, whose kept text names the server's statement.
            assert c.execute(f"EXECUTE by_key({k})", prepare=True).fetchall() == want
        # A negative key written with a space after its minus, and as a minus on a cast.
        na = keys[2]
        assert c.execute(f"EXECUTE by_key(- {-na})").fetchall() == rows_on_shard(cluster, na)
        assert c.execute(f"EXECUTE by_key(-{-na}::bigint)").fetchall() == rows_on_shard(cluster, na)
        # NULL matches no row wherever it runs, as a Bind of NULL.
        assert c.execute("EXECUTE by_key(NULL)").fetchall() == []
        # EXPLAIN EXECUTE runs nothing but is routed the same way.
        assert c.execute(f"EXPLAIN EXECUTE by_key({keys[1]})").fetchall()


@pytest.mark.parametrize("mode", MODES)
def test_execute_writes_on_the_keys_shard_only(cluster, pgrouter, keys, mode):
    a, b, _, _ = keys
    # A decoy row of each tenant on the other shard: a write routed wrongly would change it.
    for server, k in zip(SHARDS, [b, a]):
        with cluster.connect(server) as direct:
            direct.execute(f"INSERT INTO {TABLE} VALUES ({k}, 'decoy')")
    router = pgrouter(config(cluster, mode))
    with router.connect() as c:
        c.execute(f"PREPARE mark(bigint, text) AS UPDATE {TABLE} SET v = v || $2 WHERE tenant_id = $1")
        c.execute(f"PREPARE add(bigint, text) AS INSERT INTO {TABLE} (tenant_id, v) VALUES ($1, $2)")
        for k in (a, b):
            assert c.execute(f"EXECUTE mark({k}, '!')").rowcount == 2
            c.execute(f"EXECUTE add({k}, 'added')")
        with c.transaction():
            c.execute(f"EXECUTE mark('{b}', '?')")
    for server, own, other in zip(SHARDS, [a, b], [b, a]):
        with cluster.connect(server) as direct:
            got = direct.execute(f"SELECT tenant_id, v FROM {TABLE} ORDER BY 1, 2").fetchall()
        later = "?" if own == b else ""  # the transaction's mark, after the insert
        want = sorted([(own, f"one-{own}!{later}"), (own, f"two-{own}!{later}"), (own, f"added{later}"),
                       (other, "decoy")])
        want += [row for row in got if row[0] not in (a, b)]  # the negative keys' rows, untouched
        assert sorted(got) == sorted(want), server


@pytest.mark.parametrize("mode", MODES)
def test_execute_that_cannot_be_routed_to_one_shard_is_refused(cluster, pgrouter, keys, mode):
    a, b, _, _ = keys
    router = pgrouter(config(cluster, mode))
    with router.connect() as c:
        c.execute(f"PREPARE by_key(bigint) AS SELECT v FROM {TABLE} WHERE tenant_id = $1 ORDER BY v")
        c.execute(f"PREPARE two(bigint, bigint) AS SELECT v FROM {TABLE} WHERE tenant_id IN ($1, $2) ORDER BY v")
        # An argument that is not a constant: pgrouter does not evaluate it.
        for argument in [f"{a} + 0", "(SELECT 1)", "length('ab')"]:
            code, msg = sqlstate_of(c, f"EXECUTE by_key({argument})")
            assert code == "0A000", (argument, code, msg)
            assert "EXECUTE by_key" in msg and "argument 1" in msg, msg
        code, msg = sqlstate_of(c, f"EXECUTE two({b}, abs({a}))")
        assert code == "0A000" and "argument 2" in msg, msg
        # Keys on both shards: a read of several shards through EXECUTE is refused.
        code, msg = sqlstate_of(c, f"EXECUTE two({a}, {b})")
        assert code == "0A000" and "several shards" in msg, msg
        assert c.execute(f"EXECUTE two({b}, {b})").fetchall() == rows_on_shard(cluster, b)
        # Too few arguments: PostgreSQL's own error.
        code, msg = sqlstate_of(c, "EXECUTE by_key")
        assert code == "42601", (code, msg)
        # Inside a transaction on one shard, an EXECUTE for the other is refused; one for its shard runs.
        with c.transaction():
            assert c.execute(f"EXECUTE by_key({a})").fetchall() == rows_on_shard(cluster, a)
            code, msg = sqlstate_of(c, f"EXECUTE by_key({b})")
            assert code == "0A000", (code, msg)
            raise psycopg.Rollback()
        # The session goes on.
        assert c.execute(f"EXECUTE by_key({b})").fetchall() == rows_on_shard(cluster, b)


@pytest.mark.parametrize("mode", MODES)
def test_prepare_and_execute_in_one_query(cluster, pgrouter, keys, mode):
    """The PREPARE earlier in the same simple Query defines what EXECUTE runs: routed by its argument too."""
    a, b, _, _ = keys
    router = pgrouter(config(cluster, mode))
    with router.connect() as c:
        for name, k in [("in_one_a", a), ("in_one_b", b)]:
            cur = c.execute(f"PREPARE {name}(bigint) AS SELECT v FROM {TABLE} WHERE tenant_id = $1 ORDER BY v; "
                            f"EXECUTE {name}({k})")
            assert cur.nextset()
            assert cur.fetchall() == rows_on_shard(cluster, k)
            assert c.execute(f"EXECUTE {name}({k})").fetchall() == rows_on_shard(cluster, k)
        # An EXECUTE whose key is on another shard than the rest of the Query.
        code, msg = sqlstate_of(c, f"SELECT v FROM {TABLE} WHERE tenant_id = {a}; EXECUTE in_one_b({b})")
        assert code == "0A000" and "another shard" in msg, msg
