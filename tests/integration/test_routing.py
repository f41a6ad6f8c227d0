"""Read/write splitting against the test cluster's primary and its streaming replica: reads land on the
replica (pg_is_in_recovery() in the answer says where a statement ran), writes and explicit read-write transactions
on the primary; hints; read-your-writes with a replica that applies WAL late; a paused replica leaves the rotation;
an unreachable replica is ejected without client errors; replicas added and removed by reload under load."""
import os
import socket
import subprocess
import threading
import time

import psycopg
import pytest

import pgr
from routing_util import (backend_metric, replica_apply_delay, replica_in_rotation, routing_config, wait_for,
                          wait_probed_up, where)


def test_reads_go_to_the_replica_and_writes_to_the_primary(cluster, pgrouter):
    router = pgrouter(routing_config(cluster))
    wait_for(lambda: replica_in_rotation(router), what="the replica's first probe")
    # Reads from a client that writes nothing: read-your-writes never holds them back.
    with router.connect() as r:
        assert where(r) == "replica"
        r.execute("begin read only")  # may go to a replica
        assert where(r) == "replica"
        r.execute("commit")
        assert where(r, "/* pgrouter: primary */ select pg_is_in_recovery()") == "primary"  # hint
        r.execute("set pgrouter.route = 'primary'")  # for the session
        assert where(r) == "primary"
        r.execute("reset pgrouter.route")
        assert where(r) == "replica"
    with router.connect() as c, router.connect(prepare_threshold=0) as prepared:
        assert where(c) == "replica"
        assert where(c, "select pg_is_in_recovery() from products where tenant_id = %s limit 1", (1,)) == "replica"
        assert where(prepared, "select pg_is_in_recovery() where %s::int = 1", (1,)) == "replica"  # named statement
        assert where(prepared, "select pg_is_in_recovery() where %s::int = 1", (1,)) == "replica"
        # Writes, locking reads, writer functions and read-write transactions: the primary.
        assert where(c, "with t as (insert into client_events (client, note) values ('routing', 'w') returning 1) "
                        "select pg_is_in_recovery() from t") == "primary"
        assert where(c, "select pg_is_in_recovery() from products where tenant_id = 1 limit 1 for update") == "primary"
        assert where(c, "select pg_is_in_recovery(), nextval('client_events_id_seq')") == "primary"
        c.execute("begin")
        assert where(c) == "primary"
        c.execute("commit")
        c.execute("delete from client_events where client = 'routing'")
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_routed_reads_replica_total") >= 5
    assert pgr.metric(text, "pgrouter_routed_writes_total") >= 4
    assert 'pgrouter_backend_in_recovery{backend="' in text


def test_session_pooling_stays_on_the_primary(cluster, pgrouter):
    config = routing_config(cluster)
    config["pool"]["mode"] = "session"
    router = pgrouter(config)
    time.sleep(0.3)
    with router.connect() as c:
        assert where(c) == "primary"


def test_read_from_per_user_overrides_the_database(cluster, pgrouter):
    """users[].read_from: pgr_md5 reads from the primary, pgr_scram keeps the database's replicas, and a user
    set to replicas still gets them when the database says primary."""
    config = routing_config(cluster)
    config["users"] = [{"name": name, "password": password, **({"read_from": "primary"} if name == "pgr_md5" else {})}
                       for name, password in pgr.USERS.items()]
    router = pgrouter(config)
    wait_for(lambda: replica_in_rotation(router), what="the replica's first probe")
    with router.connect() as scram, router.connect(user="pgr_md5") as md5:
        assert [where(scram) for _ in range(5)] == ["replica"] * 5
        assert [where(md5) for _ in range(5)] == ["primary"] * 5
    config["databases"][0]["routing"]["read_from"] = "primary"
    config["users"] = [{"name": name, "password": password, **({"read_from": "replicas"} if name == "pgr_md5" else {})}
                       for name, password in pgr.USERS.items()]
    router.reload(config)
    wait_for(lambda: replica_in_rotation_for(router, "pgr_md5"), what="pgr_md5 reading from the replica")
    with router.connect() as scram:
        assert where(scram) == "primary"


def replica_in_rotation_for(router, user):
    with router.connect(user=user) as c:
        return where(c) == "replica"


@pytest.mark.parametrize("strategy", ["round_robin", "random", "least_outstanding", "weighted"])
def test_every_strategy_routes_reads_to_an_eligible_replica(cluster, pgrouter, strategy):
    dead = {"host": pgr.HOST, "port": pgr.free_port()}  # refuses connections: never eligible
    router = pgrouter(routing_config(cluster, replicas=[dead, cluster.endpoint("replica")], strategy=strategy))
    wait_for(lambda: replica_in_rotation(router), what="the replica's first probe")
    with router.connect() as c:
        assert [where(c) for _ in range(20)] == ["replica"] * 20


def test_an_unreachable_replica_is_ejected_and_reads_keep_working(cluster, pgrouter):
    dead = {"host": pgr.HOST, "port": pgr.free_port()}
    router = pgrouter(routing_config(cluster, replicas=[dead]))
    time.sleep(0.5)
    with router.connect() as c:
        for _ in range(10):
            assert where(c) == "primary"  # primary_fallback
    text = router.metrics()
    assert f'pgrouter_backend_up{{backend="{pgr.HOST}:{dead["port"]}"}} 0' in text


def test_no_fallback_gives_a_clear_error(cluster, pgrouter):
    dead = {"host": pgr.HOST, "port": pgr.free_port()}
    router = pgrouter(routing_config(cluster, replicas=[dead], primary_fallback="false"))
    time.sleep(0.5)
    with router.connect() as c:
        with pytest.raises(psycopg.OperationalError, match="primary_fallback"):
            c.execute("select 1")
    with router.connect() as c:
        assert c.execute("insert into client_events (client, note) values ('routing', 'x') returning 1").fetchone()
        c.execute("delete from client_events where client = 'routing'")


def replica_setting(cluster, sql):
    with cluster.connect(server="replica") as r:
        return r.execute(sql).fetchall()


def test_read_your_writes_with_a_replica_that_applies_late(cluster, pgrouter):
    with replica_apply_delay(cluster, "300ms"):
        router = pgrouter(routing_config(cluster))
        wait_for(lambda: replica_in_rotation(router), what="the replica's first probe")
        with router.connect() as setup:
            setup.execute("create table if not exists ryw (id bigint primary key)")
            setup.execute("truncate ryw")
        stale, reader_where = [], []

        def reader():  # never writes: its reads stay on the replica
            with router.connect() as c:
                for _ in range(200):
                    reader_where.append(where(c))

        t = threading.Thread(target=reader)
        t.start()
        with router.connect() as w:
            for i in range(1000):
                w.execute("insert into ryw values (%s)", (i,))
                if w.execute("select count(*) from ryw where id = %s", (i,)).fetchone()[0] != 1:
                    stale.append(i)
        t.join(60)
        assert stale == []
        on_replica = reader_where.count("replica") / len(reader_where)
        assert on_replica >= 0.9, f"{on_replica:.0%} of the non-writer's reads went to the replica"
        with router.connect() as c:
            c.execute("drop table ryw")


def test_read_your_writes_wait_serves_the_read_from_the_replica_once_it_replayed(cluster, pgrouter):
    """routing.read_your_writes_wait with the shared replica applying commits 1 s late: a read right after the
    client's own write waits for a probe of the primary and then for the replica to replay that position, and is
    answered by the replica, seeing the write. With the wait at 0 (the default) the read goes to the primary at
    once; with a wait shorter than the apply delay it goes to the primary when the wait is over."""
    def read_after_write(c, i):
        c.execute("insert into ryw_wait values (%s)", (i,))
        started = time.monotonic()
        in_recovery, seen = c.execute("select pg_is_in_recovery(), count(*) from ryw_wait where id = %s",
                                      (i,)).fetchone()
        return ("replica" if in_recovery else "primary"), seen, time.monotonic() - started

    def counter(name):
        return pgr.metric(router.metrics(), name) or 0

    with replica_apply_delay(cluster, "1s"):
        router = pgrouter(routing_config(cluster, read_your_writes_wait="10s"))  # probes every 100 ms
        wait_for(lambda: replica_in_rotation(router), what="the replica's first probe")
        with router.connect() as c:
            c.execute("create table if not exists ryw_wait (id bigint primary key)")
            c.execute("truncate ryw_wait")
            for i in range(3):
                served_by, seen, waited = read_after_write(c, i)
                assert (served_by, seen) == ("replica", 1), f"read {i}: on the {served_by}, saw {seen} rows"
                assert waited >= 0.5, f"read {i} answered by the replica {waited:.2f}s after the write: no wait"
                assert waited < 8
        assert counter("pgrouter_routed_reads_ryw_waited_total") >= 3
        assert counter("pgrouter_routed_reads_ryw_wait_timeouts_total") == 0

        router.reload(routing_config(cluster), settle=0.3)  # read_your_writes_wait: 0
        with router.connect() as c:
            served_by, seen, waited = read_after_write(c, 10)
            assert (served_by, seen) == ("primary", 1)
            assert waited < 0.5, f"the read waited {waited:.2f}s with read_your_writes_wait 0"
        assert counter("pgrouter_routed_reads_ryw_wait_timeouts_total") == 0

        router.reload(routing_config(cluster, read_your_writes_wait="200ms"), settle=0.3)
        with router.connect() as c:
            served_by, seen, waited = read_after_write(c, 20)
            assert (served_by, seen) == ("primary", 1), "the replica applied the write within 200 ms of a 1 s delay"
            assert waited >= 0.2, f"went to the primary after {waited:.2f}s, before read_your_writes_wait"
        assert counter("pgrouter_routed_reads_ryw_wait_timeouts_total") == 1
        with router.connect() as c:
            c.execute("drop table ryw_wait")


def test_a_replica_whose_replay_is_too_late_leaves_the_rotation_and_returns(cluster, pgrouter):
    """routing.max_lag_time with the shared replica applying commits 3 s late (recovery_min_apply_delay): after a
    write on the primary its replay delay (now() - pg_last_xact_replay_timestamp() while it has WAL it has not
    replayed) passes 1 s and it leaves the rotation until it has applied the write; with max_lag_time off it stays."""
    def lag():
        return backend_metric(router.metrics(), "pgrouter_backend_replay_lag_seconds", cluster.replica_port)

    def write_on_primary():
        with cluster.connect() as p:  # straight to the primary: read-your-writes plays no part
            p.execute("insert into client_events (client, note) values ('routing', 'lag')")
        return time.monotonic()

    with replica_apply_delay(cluster, "3s"):
        router = pgrouter(routing_config(cluster, max_lag_bytes=0))  # max_lag_time: off (the default)
        wait_for(lambda: replica_in_rotation(router), timeout=15, what="the replica's first probe")
        wait_for(lambda: lag() == 0, timeout=15, what="the replica replaying all it received")
        written = write_on_primary()
        wait_for(lambda: lag() > 1, timeout=5, what="the replay delay passing 1 s")
        in_rotation = replica_in_rotation(router)
        assert lag() > 1, "the write was applied already: the delay did not hold"  # so it was late just before
        assert in_rotation, "max_lag_time is off: a late replica keeps its reads"
        wait_for(lambda: lag() == 0, timeout=15, what="the write applied")

        router.reload(routing_config(cluster, max_lag_bytes=0, max_lag_time="1s"), settle=0.3)
        # a reload may re-probe the replica before it takes reads again; it has no late write now, so it returns
        wait_for(lambda: replica_in_rotation(router), timeout=5, what="the caught-up replica in rotation after the reload")
        wait_for(lambda: lag() == 0, timeout=5, what="no replay delay before the second write")
        written = write_on_primary()
        wait_for(lambda: not replica_in_rotation(router), timeout=5, what="the late replica leaving the rotation")
        out_after = time.monotonic() - written
        assert out_after < 3, f"out of rotation only {out_after:.1f}s after the write: after it was applied"
        assert lag() > 1
        wait_for(lambda: replica_in_rotation(router), timeout=15, what="the replica back once it applied the write")
        assert time.monotonic() - written >= 2.5, "back in rotation before the 3 s apply delay was over"
        assert lag() <= 1
        with cluster.connect() as p:
            p.execute("delete from client_events where client = 'routing'")


def test_a_paused_replica_leaves_the_rotation_and_returns(cluster, pgrouter):
    router = pgrouter(routing_config(cluster))
    wait_for(lambda: replica_in_rotation(router), what="the replica's first probe")
    replica_setting(cluster, "select pg_wal_replay_pause()")
    try:
        wait_for(lambda: not replica_in_rotation(router), timeout=1.0, what="the paused replica to leave")  # 2 probes
    finally:
        replica_setting(cluster, "select pg_wal_replay_resume()")
    wait_for(lambda: replica_in_rotation(router), timeout=2.0, what="the resumed replica to return")


def test_replicas_added_and_removed_by_reload_under_load(cluster, pgrouter, pgbench_tables):
    env = {**os.environ, "PGPASSWORD": pgr.USERS["pgr_scram"]}
    with_replica, without = routing_config(cluster), routing_config(cluster, replicas=[])
    router = pgrouter(without)
    bench = subprocess.Popen(["pgbench", "-S", "-M", "extended", "-c", "8", "-j", "2", "-T", "6", "-h", pgr.HOST,
                              "-p", str(router.port), "-U", "pgr_scram", "app"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for i in range(10):
        time.sleep(0.5)
        router.reload(with_replica if i % 2 == 0 else without, settle=0.05)
    out, _ = bench.communicate(timeout=60)
    assert bench.returncode == 0, out
    assert "number of failed transactions: 0" in out, out
    assert pgr.metric(router.metrics(), "pgrouter_routed_reads_replica_total") > 0


def test_a_query_sent_in_pieces_is_routed_by_its_whole_text(cluster, pgrouter):
    """A read whose first message arrives in two TCP segments still goes to the replica (pgrouter waits for the
    whole first message before routing), and counts as no write (no read-your-writes detour afterwards)."""
    router = pgrouter(routing_config(cluster))
    wait_for(lambda: replica_in_rotation(router), what="the replica's first probe")
    with pgr.Raw(router.port) as raw:
        raw.startup("pgr_scram", "app", pgr.USERS["pgr_scram"])
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(3):
            q = pgr.query("select pg_is_in_recovery()")
            raw.send(q[:7])
            time.sleep(0.2)
            raw.send(q[7:])
            got = raw.read_until_ready()
            assert [pgr.parse_data_row(p) for k, p in got if k == "D"] == [["t"]], got
    assert pgr.metric(router.metrics(), "pgrouter_routed_writes_total") == 0


def test_a_write_pipelined_behind_a_read_on_the_replica_goes_to_the_primary(cluster, pgrouter):
    """A client sends a read, then (without waiting for its answer) a write in a batch of its own: the read runs
    on the replica, and the write, held until the read was answered, runs on the primary instead of failing
    there with 25006 (pgrouter_routed_writes_held_total counts it)."""
    router = pgrouter(routing_config(cluster))
    wait_for(lambda: replica_in_rotation(router), what="the replica's first probe")
    with router.connect() as c:
        c.execute("drop table if exists pipelined_w")
        c.execute("create table pipelined_w (id int)")
    with pgr.Raw(router.port) as raw:
        raw.startup("pgr_scram", "app", pgr.USERS["pgr_scram"])
        raw.send(pgr.query("select pg_is_in_recovery(), pg_sleep(0.5)"))
        time.sleep(0.1)  # the read is running on the replica
        raw.send(pgr.query("insert into pipelined_w values (1) returning pg_is_in_recovery()"))
        first = raw.read_until_ready()
        second = raw.read_until_ready()
    assert [pgr.parse_data_row(p)[0] for k, p in first if k == "D"] == ["t"], first
    assert [k for k, _ in second if k == "E"] == [], second
    assert [pgr.parse_data_row(p) for k, p in second if k == "D"] == [["f"]], second
    assert pgr.metric(router.metrics(), "pgrouter_routed_writes_held_total") == 1
    with router.connect() as c:
        # A new connection: no read-your-writes for it, so the count is read on the primary.
        assert c.execute("/* pgrouter: primary */ select count(*) from pipelined_w").fetchone()[0] == 1
        c.execute("drop table pipelined_w")


def test_backend_series_follow_the_configuration(cluster, pgrouter):
    """pgrouter_backend_probed says whether a probe answered; a replica a reload removes leaves /metrics."""
    router = pgrouter(routing_config(cluster))
    wait_probed_up(router, cluster.replica_port)
    text = router.metrics()
    assert backend_metric(text, "pgrouter_backend_probed", cluster.replica_port) == 1
    assert backend_metric(text, "pgrouter_backend_up", cluster.replica_port) == 1
    router.reload(routing_config(cluster, replicas=[]))
    wait_for(lambda: backend_metric(router.metrics(), "pgrouter_backend_up", cluster.replica_port) is None,
             what="the removed replica's series gone")
    text = router.metrics()
    assert backend_metric(text, "pgrouter_backend_probed", cluster.replica_port) is None
    assert backend_metric(text, "pgrouter_backend_up", cluster.primary_port) is not None  # still configured
    router.reload(routing_config(cluster))  # back: the same record, with its history
    wait_for(lambda: backend_metric(router.metrics(), "pgrouter_backend_up", cluster.replica_port) == 1,
             what="the replica's series back")
