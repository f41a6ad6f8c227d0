"""The differential test of sharding: generated SELECTs (tests/integration/query_gen.py) run on one unsharded
PostgreSQL holding every row (the cluster's shard0 server) and through pgrouter over two shards holding the same
rows spread by hash (test_scatter.py's tables and data), each in the simple protocol (psycopg's ClientCursor:
parameters inlined, one Query message) and in the extended protocol (parameters bound; the unnamed statement, or
a named prepared one; sometimes binary results). The answers must have the same column names, type OIDs, type
modifiers and formats, and the same value texts: in order when the statement's ORDER BY is total, else as
multisets. pgrouter may refuse (0A000) only statements that read several shards and hold a construct the
generator marks as possibly refused; a statement limited to one shard by its key must never be refused. Any
other error must have the unsharded server's SQLSTATE.

Values are compared as the servers' bytes (PostgreSQL's text output, or binary), never parsed: the table's
float8 values (1.5, 2.25, -3.0) are exact in binary, so any sum of them is exact in any order, and pgrouter
refuses sum/avg of floating point across shards anyway.

PGR_DIFF_QUERIES (600) queries from seed PGR_DIFF_SEED (fixed default), both printed; a failure prints the seed,
the query index, the SQL and both answers. A long run: bench/shard_differential.sh."""
import collections
import os
import re
import time

import psycopg
import pytest

import pgr
from query_gen import ABSENT, TENANTS, Generator
from test_scatter import config, data, load_through  # noqa: F401  (data is the module's fixture)
from test_sharding import shard_of

SEED = int(os.environ.get("PGR_DIFF_SEED", "20261207"))
COUNT = int(os.environ.get("PGR_DIFF_QUERIES", "600"))
MAX_REPORTED = 10

# Known pgrouter bugs the generator finds, each left out of the comparison until it is fixed: (name, whether a
# query and protocol hit it, a minimal reproducer). Empty when none is known.
KNOWN = []


class Answer:
    def __init__(self, columns=None, rows=None, sqlstate=None, message=None):
        self.columns, self.rows, self.sqlstate, self.message = columns, rows, sqlstate, message

    def __repr__(self):
        if self.sqlstate:
            return f"ERROR {self.sqlstate}: {self.message}"
        shown = self.rows[:20]
        more = f" ... ({len(self.rows)} rows)" if len(self.rows) > len(shown) else f" ({len(self.rows)} rows)"
        return f"columns {self.columns}\n      rows {shown}{more}"


def run(conn, q, mode):
    """The answer to q in mode "simple" or "extended": column (name, type OID, type modifier, format) and the
    raw values, read from the libpq result so that nothing is parsed."""
    try:
        if mode == "simple":
            cur = psycopg.ClientCursor(conn)
            cur.execute(q.sql, q.params)
        else:
            cur = conn.cursor(binary=q.binary)
            # Without parameters psycopg would send a simple Query: prepare it to stay in the extended protocol.
            cur.execute(q.sql, q.params, prepare=q.prepare or not q.params)
    except psycopg.Error as e:
        return Answer(sqlstate=e.sqlstate or "?", message=str(e).splitlines()[0] if str(e) else type(e).__name__)
    res = cur.pgresult
    columns = [(res.fname(i).decode(), res.ftype(i), res.fmod(i), res.fformat(i)) for i in range(res.nfields)]
    rows = [tuple(res.get_value(r, c) for c in range(res.nfields)) for r in range(res.ntuples)]
    return Answer(columns, rows)


def multiset(rows):
    return sorted(rows, key=lambda row: [(v is None, v or b"") for v in row])


COMPARING = re.compile(r"ORDER BY|GROUP BY|DISTINCT|HAVING|\b(count|sum|min|max|avg|bool_and|bool_or|every)\(")


def compares(q):
    """Whether the merge must compare or combine values (then binary results are refused across shards)."""
    return bool(COMPARING.search(q.sql))


def judge(q, mode, want, got):
    """None when pgrouter's answer is right, else why not. A refusal comes back as ("refused", message)."""
    if got.sqlstate == "0A000" and want.sqlstate != "0A000":
        allowed = q.refusable or (mode == "extended" and q.binary and compares(q))
        if q.single_shard:
            return "a statement limited to one shard was refused"
        if not allowed:
            return "refused, but the generator expected every construct in it to be merged"
        return ("refused", got.message)
    if want.sqlstate or got.sqlstate:
        if want.sqlstate != got.sqlstate:
            return f"SQLSTATE {got.sqlstate}, the unsharded server's is {want.sqlstate}"
        return None
    if got.columns != want.columns:
        return "different columns"
    if q.ordered:
        if got.rows != want.rows:
            return "different rows (or order)" if multiset(got.rows) != multiset(want.rows) else "different order"
    elif multiset(got.rows) != multiset(want.rows):
        return "different rows"
    return None


def refusal_construct(message):
    """The construct a refusal names, without the parts that vary (type OIDs, shard numbers)."""
    for marker in ("cannot be answered exactly with ", "cannot be merged exactly: ", "pgrouter: "):
        if marker in message:
            message = message.split(marker, 1)[1]
            break
    return re.sub(r"\(type OID \d+\)", "(type OID n)", message)[:90]


def test_generated_queries_answer_as_one_unsharded_server(cluster, pgrouter, data):  # noqa: F811
    print(f"seed {SEED}, {COUNT} queries (PGR_DIFF_SEED, PGR_DIFF_QUERIES)")
    router = pgrouter(config(cluster))
    load_through(cluster, router, data)
    gen = Generator(SEED, {k: shard_of(cluster, k) for k in TENANTS + ABSENT})
    outcomes = collections.Counter()
    refusals = collections.Counter()
    reach = collections.Counter()  # (shards the keys allow, what the unsharded server answered)
    failures = []
    started = time.monotonic()
    with router.connect() as routed, cluster.connect("shard0") as direct:
        for i in range(COUNT):
            q = gen.generate(i)
            # An = ANY(...) of one shard's keys must run on that shard alone, not merely answer right.
            watch = "any:one" in q.tags and q.single_shard
            for mode in ("simple", "extended"):
                scatters = pgr.metric(router.metrics(), "pgrouter_shard_scatters_total") if watch else 0
                want, got = run(direct, q, mode), run(routed, q, mode)
                verdict = judge(q, mode, want, got)
                if watch and verdict is None and \
                        pgr.metric(router.metrics(), "pgrouter_shard_scatters_total") != scatters:
                    verdict = "an = ANY(...) of one shard's keys ran on several shards"
                known = [name for name, hits, _ in KNOWN if hits(q, mode)]
                reach[("one shard" if q.single_shard else "several shards",
                       "error" if want.sqlstate else "rows")] += 1
                if verdict is None:
                    outcomes["same answer"] += 1
                elif isinstance(verdict, tuple):
                    outcomes["refused (0A000)"] += 1
                    refusals[refusal_construct(verdict[1])] += 1
                elif known:
                    outcomes[f"known: {known[0]}"] += 1
                else:
                    outcomes["FAILED"] += 1
                    how = mode + "".join(f", {w}" for w, on in (("binary", q.binary), ("prepared", q.prepare))
                                         if on and mode == "extended")
                    failures.append(f"seed {SEED}, query {i} ({how}): {verdict}\n"
                                    f"  sql:       {q.describe()}\n  tags:      {q.tags}\n"
                                    f"  refusable: {q.refusable}, single shard: {q.single_shard}, "
                                    f"ordered: {q.ordered}\n"
                                    f"  unsharded: {want!r}\n  pgrouter:  {got!r}")
    seconds = time.monotonic() - started
    print(f"{COUNT} queries x 2 protocols in {seconds:.1f} s: " +
          ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print("  runs by keys and answer: " + ", ".join(f"{a}/{b} {n}" for (a, b), n in sorted(reach.items())))
    for construct, n in refusals.most_common():
        print(f"  refused {n:5d}: {construct}")
    assert not failures, f"{len(failures)} wrong answers (seed {SEED}); the first ones:\n\n" + \
        "\n\n".join(failures[:MAX_REPORTED])
    # The generator reaches what it means to: both kinds of statement, and refusals of the constructs it marks.
    assert outcomes["same answer"] > COUNT
    if COUNT >= 300:
        assert outcomes["refused (0A000)"] > 0


IN_TX_COUNT = int(os.environ.get("PGR_DIFF_TX_QUERIES", "150"))


def test_generated_queries_inside_a_transaction_answer_as_one_unsharded_server(cluster, pgrouter, data):  # noqa: F811
    """The same queries inside BEGIN ... ROLLBACK: after a keyed read that puts the transaction on one shard
    (then a read of several shards takes it across shards), or as its first statement. Each transaction's
    reads see what the unsharded server's do, and each ends with ROLLBACK on both."""
    seed = SEED + 1
    print(f"seed {seed}, {IN_TX_COUNT} queries (PGR_DIFF_SEED + 1, PGR_DIFF_TX_QUERIES)")
    router = pgrouter(config(cluster))
    load_through(cluster, router, data)
    gen = Generator(seed, {k: shard_of(cluster, k) for k in TENANTS + ABSENT})
    outcomes = collections.Counter()
    failures = []
    with router.connect() as routed, cluster.connect("shard0", autocommit=True) as direct:
        for i in range(IN_TX_COUNT):
            q = gen.generate(i)
            mode = ("simple", "extended")[i % 2]
            first = TENANTS[i % len(TENANTS)] if i % 3 else None  # every third: the query opens it
            for conn in (routed, direct):
                conn.execute("BEGIN")
                if first is not None:
                    conn.execute("SELECT count(*) FROM sc_orders WHERE tenant_id = %s", (first,))
            want, got = run(direct, q, mode), run(routed, q, mode)
            states = (routed.info.transaction_status, direct.info.transaction_status)
            for conn in (routed, direct):
                conn.execute("ROLLBACK")
            verdict = judge(q, mode, want, got)
            if verdict is None and states[0] != states[1]:
                verdict = f"transaction status {states[0]!r}, the unsharded server's {states[1]!r}"
            if isinstance(verdict, tuple):
                outcomes["refused (0A000)"] += 1
            elif verdict is None:
                outcomes["same answer"] += 1
            else:
                outcomes["FAILED"] += 1
                failures.append(f"seed {seed}, query {i} ({mode}, after a keyed read of {first}): {verdict}\n"
                                f"  sql:       {q.describe()}\n  unsharded: {want!r}\n  pgrouter:  {got!r}")
    print(", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    assert not failures, f"{len(failures)} wrong answers (seed {seed}); the first ones:\n\n" + \
        "\n\n".join(failures[:MAX_REPORTED])
    assert outcomes["same answer"] > IN_TX_COUNT // 2
    assert pgr.metric(router.metrics(), "pgrouter_shard_transactions_across_total") > 0


@pytest.mark.parametrize("seed", [1, 2])
def test_the_generator_is_reproducible(seed):
    """The same seed gives the same statements, whatever ran before: a failure's seed and index replay it."""
    shards = {k: k % 2 for k in TENANTS + ABSENT}
    a, b = Generator(seed, shards), Generator(seed, shards)
    first = [a.generate(i).describe() for i in range(50)]
    assert [b.generate(i).describe() for i in reversed(range(50))][::-1] == first
    assert first != [Generator(seed + 100, shards).generate(i).describe() for i in range(50)]
