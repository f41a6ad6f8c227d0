"""Per-pool metrics and the slow-query log against real servers: traffic through two databases and two users and
through a database sharded over the primary and shard1, then the pgrouter_pool_* series of /metrics are read by
their labels and must move by what the traffic did; metrics.max_pools folds later pools into "other"; a slow
statement is logged with its fingerprint and never its values unless log.slow_query_parameters says so."""
import re
import time

import psycopg
import pytest

import pgr

SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(router):
    """{(name, frozenset of (label, value)): value} of every series in /metrics."""
    out = {}
    for line in router.metrics().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = SERIES.match(line)
        assert m, f"unparsable exposition line: {line!r}"
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def pool(database, user, backend, shard="0", role="primary", **extra):
    return frozenset({"database": database, "user": user, "backend": backend, "shard": shard, "role": role,
                      **extra}.items())


def value(series, name, labels, default=None):
    return series.get((name, labels), default)


def pools_of(series, name):
    """The label sets (as dicts) of a family's series."""
    return [dict(labels) for (n, labels) in series if n == name]


def backend(cluster, server):
    return f"{pgr.HOST}:{cluster.port(server)}"


def make_sharded_table(cluster, name):
    for server in ("primary", "shard1"):
        with cluster.connect(server) as c:
            c.execute(f"DROP TABLE IF EXISTS {name}")
            c.execute(f"CREATE TABLE {name} (tenant_id bigint NOT NULL, v text)")
            c.execute(f"GRANT ALL ON {name} TO PUBLIC")


def count_on(cluster, server, table):
    with cluster.connect(server) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def three_databases(cluster):
    """app (transaction pooling), reports (the same PostgreSQL database, session pooling) and tenants (sharded
    over the primary and shard1, transaction pooling)."""
    return {
        "databases": [
            {"name": "app", "shards": [{"primary": cluster.endpoint("primary")}],
             "pool": {"mode": "transaction"}},
            {"name": "reports", "dbname": "app", "shards": [{"primary": cluster.endpoint("primary")}],
             "pool": {"mode": "session"}},
            {"name": "tenants", "dbname": "app",
             "shards": [{"primary": cluster.endpoint("primary")}, {"primary": cluster.endpoint("shard1")}],
             "pool": {"mode": "transaction"},
             "sharding": {"tables": {"mp_tenants": "tenant_id"}}},
        ],
    }


def test_pool_series_by_database_user_and_shard(cluster, pgrouter):
    make_sharded_table(cluster, "mp_tenants")
    router = pgrouter(three_databases(cluster))
    primary, shard1 = backend(cluster, "primary"), backend(cluster, "shard1")
    app_scram = pool("app", "pgr_scram", primary)
    app_md5 = pool("app", "pgr_md5", primary)
    reports_md5 = pool("reports", "pgr_md5", primary)

    with router.connect(dbname="app") as c:
        c.execute("SELECT 1")  # the pool exists from here on
    before = scrape(router)
    with router.connect(dbname="app") as c:
        for _ in range(4):
            c.execute("SELECT 1")  # autocommit: one checkout, one transaction and one query each
        with c.transaction():
            c.execute("SELECT 1")
            c.execute("SELECT 2")  # BEGIN, two statements, COMMIT: one transaction, four queries
    with router.connect(dbname="app", user="pgr_md5") as c:
        c.execute("SELECT 1")
    with router.connect(dbname="reports", user="pgr_md5") as c:
        c.execute("SELECT 1")
        c.execute("SELECT 1")
        with c.transaction():
            c.execute("SELECT pg_sleep(0.05)")
    # (prepare_threshold=None: psycopg would prepare the statement on its 5th run, a request of its own on the
    # default shard.)
    with router.connect(dbname="tenants", prepare_threshold=None) as c:
        for k in range(40):
            c.execute("INSERT INTO mp_tenants (tenant_id, v) VALUES (%s, 'x')", (k,))
    after = scrape(router)
    on_primary, on_shard1 = count_on(cluster, "primary", "mp_tenants"), count_on(cluster, "shard1", "mp_tenants")
    assert on_primary > 0 and on_shard1 > 0 and on_primary + on_shard1 == 40

    def delta(name, labels):
        return value(after, name, labels, 0) - value(before, name, labels, 0)

    assert delta("pgrouter_pool_queries_total", app_scram) == 8
    assert delta("pgrouter_pool_transactions_total", app_scram) == 5
    assert delta("pgrouter_pool_transaction_duration_seconds_count", app_scram) == 5
    # One checkout per transaction, and one more for a login on a worker that had no server's parameters yet.
    checkouts = delta("pgrouter_pool_checkouts_total", app_scram)
    assert 5 <= checkouts <= 7
    assert delta("pgrouter_pool_checkout_wait_seconds_count", app_scram) == checkouts
    assert value(after, "pgrouter_pool_queries_total", app_md5) == 1
    # Session pooling: two autocommit statements and one explicit transaction are three transactions.
    assert value(after, "pgrouter_pool_transactions_total", reports_md5) == 3
    assert value(after, "pgrouter_pool_checkouts_total", reports_md5) == 1
    assert value(after, "pgrouter_pool_transaction_duration_seconds_sum", reports_md5) >= 0.05
    assert value(after, "pgrouter_pool_queries_total", pool("reports", "pgr_scram", primary)) is None
    # The sharded database: a series per shard, each with the inserts that went there (one request each).
    t0 = value(after, "pgrouter_pool_queries_total", pool("tenants", "pgr_scram", primary, shard="0"))
    t1 = value(after, "pgrouter_pool_queries_total", pool("tenants", "pgr_scram", shard1, shard="1"))
    assert (t0, t1) == (on_primary, on_shard1)
    # Every pool's series sums to the unlabelled totals.
    for labelled, total in [("pgrouter_pool_queries_total", "pgrouter_queries_total"),
                            ("pgrouter_pool_checkout_wait_seconds_count", "pgrouter_pool_wait_seconds_count"),
                            ("pgrouter_pool_server_connections_total", "pgrouter_server_connections_total")]:
        parts = sum(v for (n, _), v in after.items() if n == labelled)
        assert parts == value(after, total, frozenset()), labelled
    # Between transactions the transaction-pooled servers sit idle in their pools.
    idle = value(after, "pgrouter_pool_servers", pool("app", "pgr_scram", primary, state="idle"))
    active = value(after, "pgrouter_pool_servers", pool("app", "pgr_scram", primary, state="active"))
    assert idle >= 1 and active == 0
    assert sum(v for (n, labels), v in after.items()
               if n == "pgrouter_pool_servers" and ("state", "idle") in labels) == \
        value(after, "pgrouter_servers_idle", frozenset())
    assert not [r for r in router.log_records() if r.get("msg") == "slow query"], "the slow-query log is off"


def test_pools_past_max_pools_are_counted_as_other(cluster, pgrouter):
    config = three_databases(cluster)
    config["metrics"] = {"max_pools": 1}
    router = pgrouter(config)
    primary = backend(cluster, "primary")
    with router.connect(dbname="app") as c:
        c.execute("SELECT 1")
    with router.connect(dbname="reports", user="pgr_md5") as c:
        c.execute("SELECT 1")
        c.execute("SELECT 1")
    with router.connect(dbname="app", user="pgr_md5") as c:
        c.execute("SELECT 1")
    series = scrape(router)
    assert value(series, "pgrouter_pool_queries_total", pool("app", "pgr_scram", primary)) == 1
    assert value(series, "pgrouter_pool_queries_total", pool("other", "other", "other", "other", "primary")) == 3
    assert sorted(map(sorted, map(dict.items, pools_of(series, "pgrouter_pool_queries_total")))) == sorted([
        sorted({"database": "app", "user": "pgr_scram", "backend": primary, "shard": "0", "role": "primary"}.items()),
        sorted({"database": "other", "user": "other", "backend": "other", "shard": "other",
                "role": "primary"}.items()),
    ])
    # A reload that raises the limit gives every pool its own series from then on; what was counted under
    # "other" stays there.
    router.reload({**config, "metrics": {"max_pools": 10}})
    with router.connect(dbname="reports", user="pgr_md5") as c:
        c.execute("SELECT 1")
    with router.connect(dbname="tenants", user="pgr_md5") as c:
        c.execute("SELECT 1")  # no shard key: the default shard, 0
    series = scrape(router)
    assert value(series, "pgrouter_pool_queries_total", pool("reports", "pgr_md5", primary)) == 1
    assert value(series, "pgrouter_pool_queries_total", pool("tenants", "pgr_md5", primary)) == 1
    assert value(series, "pgrouter_pool_queries_total", pool("other", "other", "other", "other", "primary")) == 3


def slow_records(router):
    return [r for r in router.log_records() if r.get("msg") == "slow query"]


def wait_for_slow_records(router, n, timeout=5):
    deadline = time.monotonic() + timeout
    while len(slow_records(router)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return slow_records(router)


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_slow_queries_are_logged_with_a_fingerprint_and_no_values(cluster, pgrouter, mode):
    config = {"pool": {"mode": mode}, "log": {"level": "info", "slow_query_ms": 150}}
    router = pgrouter(config)
    with router.connect() as c:
        c.execute("SELECT 1")
        c.execute("SELECT pg_sleep(0.2), 'literal-secret-123'")  # simple protocol
        c.execute("SELECT pg_sleep(%t), %t::text", (0.2, "param-secret-456"))  # extended, text parameters
        c.execute("SELECT pg_sleep(0.25), 'another-literal'")
    records = wait_for_slow_records(router, 3)
    assert len(records) == 3, records
    simple, extended, again = records
    for r in records:
        assert r["duration_ms"] >= 150
        assert (r["database"], r["user"], r["backend"], r["shard"], r["role"]) == \
            ("app", "pgr_scram", backend(cluster, "primary"), "0", "primary")
        assert re.fullmatch(r"[0-9a-f]{16}", r["fingerprint"]), r
        assert r["parameters"] == ""
    assert simple["fingerprint"] == again["fingerprint"]  # constants do not change it
    assert "pg_sleep($1)" in simple["statement"]
    assert extended["statement"] == "SELECT pg_sleep($1), $2::text"
    log = router.log()
    assert "literal-secret-123" not in log and "param-secret-456" not in log and "another-literal" not in log

    # Asked for: the statement as sent and the Bind values. (A new session reads the reloaded config.)
    router.reload({**config, "log": {"level": "info", "slow_query_ms": 150, "slow_query_parameters": True}})
    with router.connect() as c:
        c.execute("SELECT pg_sleep(0.2), 'literal-secret-123'")
        c.execute("SELECT pg_sleep(%t), %t::text", (0.2, "param-secret-456"))
    records = wait_for_slow_records(router, 5)[3:]
    assert len(records) == 2, records
    assert records[0]["statement"] == "SELECT pg_sleep(0.2), 'literal-secret-123'"
    assert records[0]["fingerprint"] == simple["fingerprint"]
    assert records[1]["statement"] == "SELECT pg_sleep($1), $2::text"
    assert records[1]["parameters"] == "$1 = '0.2', $2 = 'param-secret-456'"
    assert records[1]["fingerprint"] == extended["fingerprint"]
