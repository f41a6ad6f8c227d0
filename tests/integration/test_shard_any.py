"""`key = ANY(array)` through pgrouter against real shards: the array's keys, from a literal or from a Bind's
parameter in text or binary format, choose the shards the statement runs on. Each shard also holds a row that
does not belong there (a key of the other shard), so a statement that ran on a shard it should not have shows
that row: the answer says where it ran."""
import uuid

import psycopg
import pytest

import pgr
from test_sharding import key_on_each_shard, make_table, sharded_config, wait_replayed

TABLE = "sh_any"


@pytest.fixture
def setup(cluster, pgrouter):
    make_table(cluster, TABLE)
    a, b = key_on_each_shard(cluster)  # a on shard 0, b on shard 1
    with cluster.connect("primary") as c:
        c.execute(f"INSERT INTO {TABLE} VALUES (%s, 'a'), (%s, 'b on shard 0')", (a, b))
    with cluster.connect("shard1") as c:
        c.execute(f"INSERT INTO {TABLE} VALUES (%s, 'b'), (%s, 'a on shard 1')", (b, a))
    wait_replayed(cluster)
    router = pgrouter(sharded_config(cluster, {TABLE: "tenant_id"}))
    return router, a, b


def scatters(router):
    return pgr.metric(router.metrics(), "pgrouter_shard_scatters_total")


def test_any_of_a_list_parameter_routes_to_the_shards_it_names(setup):
    router, a, b = setup
    with router.connect() as c:
        # %t and %b: the list bound in text ('{1,2}') or binary (int2[], int8[] by its values) format.
        for placeholder in ("%t", "%b"):
            sql = f"SELECT tenant_id, v FROM {TABLE} WHERE tenant_id = ANY({placeholder}) ORDER BY v COLLATE \"C\""
            for prepare in (False, True):
                binary = prepare  # binary results too, sometimes

                def run(keys, binary=binary):
                    return c.cursor(binary=binary).execute(sql, (keys,), prepare=prepare).fetchall()

                before = scatters(router)
                assert run([a]) == [(a, "a")], (placeholder, prepare)
                assert run([b]) == [(b, "b")]
                assert run([b, None, b]) == [(b, "b")]  # a NULL element names no shard
                assert run([]) == []  # no key: the default shard, which finds no row
                assert scatters(router) == before  # none of these ran on both shards
                # Keys of both shards: both run it, each finding its own rows and its misplaced one. (Binary
                # results are refused where the merge sorts.)
                assert run([a, b], binary=False) == [(a, "a"), (a, "a on shard 1"), (b, "b"), (b, "b on shard 0")]
                assert scatters(router) == before + 1
        # A NULL array matches no row.
        assert c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = ANY(%s::bigint[])", (None,)).fetchall() == []


def test_any_of_an_array_literal_routes_to_the_shards_it_names(setup):
    router, a, b = setup
    with router.connect() as c:
        before = scatters(router)
        for array in [f"'{{{a}}}'", f"'{{{a}}}'::bigint[]", f"' {{ \"{a}\" , NULL }} '", f"'{{{a}}}'::int8[]",
                      f"CAST('{{{a}}}' AS bigint[])"]:
            got = c.execute(f"SELECT tenant_id, v FROM {TABLE} WHERE tenant_id = ANY({array})").fetchall()
            assert got == [(a, "a")], array
        assert c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = ANY('{{{b}}}'::int8[])").fetchall() == [("b",)]
        assert c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = ANY('{{}}')").fetchall() == []
        assert scatters(router) == before
        # An array pgrouter does not read (a dimension decoration) runs on every shard: still PostgreSQL's answer
        # for the rows there.
        got = c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = ANY('[1:1]={{{a}}}'::bigint[]) "
                        "ORDER BY v COLLATE \"C\"")
        assert got.fetchall() == [("a",), ("a on shard 1",)]
        assert scatters(router) == before + 1
        # An element the type rejects is PostgreSQL's error.
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = ANY('{{x}}'::bigint[])")


def test_a_transaction_chooses_its_shard_from_an_array(setup):
    router, a, b = setup
    with router.connect(autocommit=False) as c:
        assert c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = ANY(%s)", ([b],)).fetchall() == [("b",)]
        c.execute(f"UPDATE {TABLE} SET v = 'b2' WHERE tenant_id = ANY(%s) AND v = 'b'", ([b, None],))
        c.commit()
    with router.connect() as c:
        assert c.execute(f"SELECT v FROM {TABLE} WHERE tenant_id = %s", (b,)).fetchall() == [("b2",)]


def test_group_by_an_output_name_across_shards(setup):
    router, a, b = setup
    with router.connect() as c:
        got = c.execute(f"SELECT length(v) AS len, count(*) AS n FROM {TABLE} GROUP BY len ORDER BY len").fetchall()
    # The rows: 'a', 'b' (1), 'b on shard 0', 'a on shard 1' (12).
    assert got == [(1, 2), (12, 2)]


@pytest.mark.parametrize("key_type", ["text", "uuid"])
def test_arrays_of_text_and_uuid_keys(cluster, pgrouter, key_type):
    """psycopg binds a list of str as text[] and of UUID as uuid[]: in binary, array_recv's elements of those types."""
    table = f"sh_any_{key_type}"
    make_table(cluster, table, key_type)
    router = pgrouter(sharded_config(cluster, {table: "tenant_id"}, key_type=key_type))
    if key_type == "text":
        keys = ["", "a", "tenant-42", "Zürich", "O'Brien", "a,b", "{x}", 'q"uote', "NULL"]
    else:
        keys = [uuid.UUID(int=i * 7919 + 1) for i in range(8)]
    with router.connect() as c:
        for k in keys:
            c.execute(f"INSERT INTO {table} (tenant_id, v) VALUES (%s, 'r')", (k,))
    wait_replayed(cluster)
    on = {}
    for shard, server in enumerate(["primary", "shard1"]):
        with cluster.connect(server) as c:
            for (k,) in c.execute(f"SELECT tenant_id FROM {table}"):
                on[k] = shard
    assert len(set(on.values())) == 2, "the keys should be on both shards"
    with router.connect() as c:
        for placeholder in ("%t", "%b"):
            sql = f"SELECT tenant_id FROM {table} WHERE tenant_id = ANY({placeholder})"
            before = scatters(router)
            for k in keys:
                assert c.execute(sql, ([k],)).fetchall() == [(k,)], (placeholder, k)
                same = [j for j in keys if on[j] == on[k]]
                assert sorted(r[0] for r in c.execute(sql, (same,))) == sorted(same)
            assert scatters(router) == before
            assert sorted(r[0] for r in c.execute(sql, (keys,))) == sorted(keys)
            assert scatters(router) == before + 1
