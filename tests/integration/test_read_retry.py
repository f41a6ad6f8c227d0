"""Read retry: a read routed to a replica that breaks before any byte of its answer reached the client is
sent again to another eligible backend (another replica, or the primary with routing.primary_fallback), on the same
client connection, without an error. Each test kills a private replica of the shared primary (pgnodes.py) the way
`pg_ctl stop -m immediate` does: its backends get SIGQUIT, send a WARNING 57P01 notice and exit, like a crash.
The tests wait for events (reads served, a backend's exit, a statement running) rather than for fixed times, so
that a loaded machine makes them slower, not wrong."""
import contextlib
import os
import subprocess
import threading
import time

import pytest

import pgr
from cutproxy import CutProxy
from routing_util import backend_metric, routing_config, server_port, wait_for, wait_probed_up, where

# Probes only at start: a test that kills a replica between two queries wants the router to learn of it from the
# read itself (the retry path), not from a probe that takes the replica out of rotation first.
NO_LATER_PROBES = "1h"


def routed(router, name):
    return pgr.metric(router.metrics(), name) or 0


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_pgbench_reads_survive_their_replica_killed_mid_run(cluster, pgrouter, pgbench_tables, pg_nodes, protocol):
    replica = pg_nodes.replica_of(cluster.primary_port)
    router = pgrouter(routing_config(cluster, replicas=[replica.endpoint()]))
    wait_probed_up(router, replica.port)
    env = {**os.environ, "PGPASSWORD": pgr.USERS["pgr_scram"]}
    # A number of transactions rather than a duration: the kill comes after 200 of them, whatever the speed.
    # 16 clients over a pool of 4 servers: a server given back is taken at once by a waiting client, so reads
    # are running on the replica when it is killed (on an idle machine and on a loaded one).
    bench = subprocess.Popen(["pgbench", "-S", "-M", protocol, "-c", "16", "-j", "2", "-t", "500", "-h", pgr.HOST,
                              "-p", str(router.port), "-U", "pgr_scram", "app"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for(lambda: routed(router, "pgrouter_routed_reads_replica_total") >= 200, timeout=60,
                 what="pgbench's reads flowing to the replica")
        replica.stop("immediate")
        out, _ = bench.communicate(timeout=300)
    finally:
        if bench.poll() is None:
            bench.kill()
    # Every pgbench -S transaction is one SELECT whose answer PostgreSQL sends at once (at ReadyForQuery), so a
    # transaction the kill interrupts has not had a byte of its answer relayed: each should be retried. (A
    # statement that had begun streaming rows could not be retried; pgbench -S has none.) pgbench ends a client
    # at its first error and then exits non-zero.
    # A kill landing after the backend buffered its answer but before ReadyForQuery (about 1 run in 40; it flushes
    # the answer with its shutdown WARNING) is ended by pgrouter (see the CutProxy tests below): no error either.
    assert bench.returncode == 0, out
    assert "number of transactions actually processed: 8000/8000" in out, out
    assert "number of failed transactions: 0" in out, out
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_routed_reads_primary_total") > 0, "no read went on to the primary"
    interrupted = pgr.metric(text, "pgrouter_routed_reads_retried_total") + \
        pgr.metric(text, "pgrouter_routed_reads_ended_early_total")
    assert interrupted >= 1, "the kill interrupted no read"
    assert backend_metric(text, "pgrouter_backend_up", replica.port) == 0


def test_a_read_after_its_replica_died_between_queries_is_retried(cluster, pgrouter, pg_nodes):
    replica = pg_nodes.replica_of(cluster.primary_port)
    router = pgrouter(routing_config(cluster, replicas=[replica.endpoint()], probe_interval=NO_LATER_PROBES))
    wait_probed_up(router, replica.port)
    with router.connect() as c:
        port, pid = c.execute("select inet_server_port(), pg_backend_pid()").fetchone()
        assert port == replica.port  # that server now waits idle in the replica's pool
        replica.kill_immediate([pid])
        # The router still believes in the replica, but the idle server's socket spoke (EOF) while pooled: it is
        # dropped when taken, the replica refuses a new connection (restarting) and is marked down, and the read
        # goes to the primary (primary_fallback) on the same client connection, nothing sent to the dead one.
        assert server_port(c) == cluster.primary_port
        assert where(c) == "primary"  # the replica is out of rotation now
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_routed_reads_retried_total") == 0
    assert backend_metric(text, "pgrouter_backend_up", replica.port) == 0
    assert backend_metric(text, "pgrouter_backend_ejections_total", replica.port) == 1


def test_a_read_running_when_its_replica_dies_finishes_on_another_replica(cluster, pgrouter, pg_nodes):
    replica = pg_nodes.replica_of(cluster.primary_port)
    shared = cluster.replica_port
    router = pgrouter(routing_config(cluster, replicas=[replica.endpoint(), cluster.endpoint("replica")],
                                     probe_interval=NO_LATER_PROBES))
    wait_probed_up(router, replica.port)
    wait_probed_up(router, shared)
    sql = "select inet_server_port(), pg_sleep(2)"

    def kill_once_running():  # the statement is running on the private replica: kill it there
        with replica.connect() as watch:
            wait_for(lambda: watch.execute("select count(*) from pg_stat_activity where state = 'active' and "
                                           "query = %s", (sql,)).fetchone()[0] == 1, timeout=30,
                     what="the read running on the private replica")
        replica.kill_immediate()

    with router.connect() as c:
        # One worker, one client, round robin: reads alternate between the two replicas.
        wait_for(lambda: server_port(c) == shared, what="a read on the shared replica")
        killer = threading.Thread(target=kill_once_running)
        killer.start()
        started = time.monotonic()
        try:
            port, _ = c.execute(sql).fetchone()  # the private replica's turn
        finally:
            killer.join()
        took = time.monotonic() - started
        # Killed while sleeping, before any answer: run again, whole, on the other replica.
        assert port == shared
        assert took >= 2.0, f"answered after {took:.1f}s: not run again from the start"
        assert server_port(c) == shared
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_routed_reads_retried_total") == 1
    assert backend_metric(text, "pgrouter_backend_up", replica.port) == 0


def test_a_read_with_nowhere_else_to_go_gets_a_clear_error(cluster, pgrouter, pg_nodes):
    replica = pg_nodes.replica_of(cluster.primary_port)
    router = pgrouter(routing_config(cluster, replicas=[replica.endpoint()], probe_interval=NO_LATER_PROBES,
                                     primary_fallback="false"))
    wait_probed_up(router, replica.port)
    with pgr.Raw(router.port) as raw:  # raw protocol: the exact ErrorResponse, which psycopg reports without code
        raw.startup("pgr_scram", password=pgr.USERS["pgr_scram"])
        (port, pid), = raw.simple_query("select inet_server_port(), pg_backend_pid()")[0]
        assert int(port) == replica.port
        replica.kill_immediate([int(pid)])
        raw.send(pgr.query("select inet_server_port()"))
        replies = raw.read_until(())
    assert [kind for kind, _ in replies] == ["E", ""], replies  # one FATAL, then the connection closes
    error = pgr.parse_error_fields(replies[0][1])
    # The dead idle server is dropped when taken (its socket spoke while pooled), the restarting replica refuses
    # a new connection and is marked down: no replica, and no fallback. The message says why.
    message = error["message"]
    assert (error["severity"], error["code"]) == ("FATAL", "08001"), error
    assert "no replica can take this read" in message, message
    assert "primary_fallback is false" in message, message
    with router.connect() as c:  # the daemon is fine; writes still go to the primary
        assert where(c, "select pg_is_in_recovery(), nextval('client_events_id_seq')") == "primary"
    assert pgr.metric(router.metrics(), "pgrouter_routed_reads_retried_total") == 0


@pytest.fixture
def cut_replica(cluster):
    """The shared replica behind a CutProxy: a request carrying cutproxy.MARKER gets its answer, then the replica's
    immediate-shutdown WARNING instead of ReadyForQuery, then the end of the connection."""
    proxy = CutProxy(cluster.replica_port)
    yield proxy
    proxy.close()


def cut_router(cluster, pgrouter, proxy):
    router = pgrouter(routing_config(cluster, replicas=[proxy.endpoint()], probe_interval=NO_LATER_PROBES))
    wait_probed_up(router, proxy.port)
    return router


@contextlib.contextmanager
def raw_client(router):
    """A logged-in raw-protocol client (the exact messages: psycopg hides notices, errors' codes, statuses)."""
    with pgr.Raw(router.port) as raw:
        raw.startup("pgr_scram", password=pgr.USERS["pgr_scram"])
        yield raw


def ask(raw, sql, until=("Z",)):
    """Sends one Query; its replies up to one of `until` (or EOF), and their kinds as one string."""
    raw.send(pgr.query(sql))
    replies = raw.read_until(until)
    return "".join(kind for kind, _ in replies), replies


def assert_counts(router, retried, ended_early):
    text = router.metrics()
    assert pgr.metric(text, "pgrouter_routed_reads_retried_total") == retried
    assert pgr.metric(text, "pgrouter_routed_reads_ended_early_total") == ended_early


@pytest.mark.parametrize("sql,kinds", [("select inet_server_port(), 42 /* pgr_cut_after_answer */", "TDCZ"),
                                       ("select 1/0 /* pgr_cut_after_answer */", "EZ")])
def test_an_answer_cut_before_ready_for_query_is_ended_by_the_router(cluster, pgrouter, cut_replica, sql, kinds):
    # The race the pgbench test above met about once in 40 runs, made certain: the replica is killed after its
    # answer (RowDescription, DataRow, CommandComplete, or the statement's own error) but before ReadyForQuery,
    # and flushes the answer with its shutdown WARNING. One autocommit statement was asked and fully answered:
    # the client gets it, with a ReadyForQuery 'I' pgrouter writes (not run a second time), and goes on (the next
    # read on the primary, the replica being down).
    router = cut_router(cluster, pgrouter, cut_replica)
    with raw_client(router) as raw:
        got, replies = ask(raw, sql)
        assert got == kinds, replies
        if kinds == "TDCZ":
            assert pgr.parse_data_row(replies[1][1]) == [str(cluster.replica_port), "42"]
        else:
            assert pgr.parse_error_fields(replies[0][1])["code"] == "22012"
        assert replies[-1][1] == b"I"
        assert cut_replica.cuts == 1
        (in_recovery,), = raw.simple_query("select pg_is_in_recovery()")[0]
        assert in_recovery == "f"  # the same connection, now on the primary
    assert_counts(router, retried=0, ended_early=1)
    assert backend_metric(router.metrics(), "pgrouter_backend_up", cut_replica.port) == 0
    assert "replica went away after answering" in router.log()


def test_an_extended_answer_cut_before_ready_for_query_is_ended_by_the_router(cluster, pgrouter, cut_replica):
    router = cut_router(cluster, pgrouter, cut_replica)
    with router.connect() as c:  # psycopg: Parse, Bind, Describe, Execute, Sync
        assert c.execute("select %s::int, inet_server_port() /* pgr_cut_after_answer */", (7,)).fetchone() == \
            (7, cluster.replica_port)
        assert cut_replica.cuts == 1
        assert where(c) == "primary"
        assert c.execute("select %s::int", (8,)).fetchone() == (8,)
    assert pgr.metric(router.metrics(), "pgrouter_routed_reads_ended_early_total") == 1


def test_a_cut_answer_of_several_statements_runs_again_elsewhere(cluster, pgrouter, cut_replica):
    # Two statements answered, the second perhaps not run for all pgrouter could know: nothing reached the client,
    # so the whole read runs again on the primary and the client sees only that answer.
    router = cut_router(cluster, pgrouter, cut_replica)
    with raw_client(router) as raw:
        kinds, replies = ask(raw, "select 1; select inet_server_port() /* pgr_cut_after_answer */")
        assert kinds == "TDCTDCZ", replies
        assert pgr.parse_data_row(replies[4][1]) == [str(cluster.primary_port)]
    assert cut_replica.cuts == 1
    assert_counts(router, retried=1, ended_early=0)


def test_a_cut_begin_read_only_begins_again_elsewhere(cluster, pgrouter, cut_replica):
    # Not ended by pgrouter (its ReadyForQuery would have said 'T'): begun again on the primary, where the
    # transaction then stays.
    router = cut_router(cluster, pgrouter, cut_replica)
    with raw_client(router) as raw:
        kinds, replies = ask(raw, "begin read only /* pgr_cut_after_answer */")
        assert kinds == "CZ", replies
        assert replies[-1][1] == b"T"
        (in_recovery,), = raw.simple_query("select pg_is_in_recovery()")[0]
        assert in_recovery == "f"
        raw.simple_query("commit")
    assert cut_replica.cuts == 1
    assert_counts(router, retried=1, ended_early=0)


def test_a_cut_answer_the_client_must_not_see_twice_is_an_error(cluster, pgrouter, cut_replica):
    # The first of two statements failed (an error pgrouter does not replay, and cannot end: the Query had two
    # statements): the client gets what the server sent and then a FATAL saying the connection was lost.
    router = cut_router(cluster, pgrouter, cut_replica)
    with raw_client(router) as raw:
        kinds, replies = ask(raw, "select 1/0; select 2 /* pgr_cut_after_answer */", until=())
    assert kinds == "ENE", replies  # ... and EOF
    assert replies[-1][0] == "", replies
    assert pgr.parse_error_fields(replies[0][1])["code"] == "22012"
    error = pgr.parse_error_fields(replies[2][1])
    assert error["severity"] == "FATAL" and error["code"] == "08006", error
    assert "server connection lost" in error["message"], error
    assert_counts(router, retried=0, ended_early=0)


def test_a_replica_lost_while_settings_are_applied_sends_the_read_elsewhere(cluster, pgrouter, cut_replica):
    # A client whose settings differ from an idle replica server's gets them applied first (SET ...); the replica
    # dies in the middle of that (here: its answer cut by its shutdown WARNING). Nothing of the client's was sent:
    # the replica leaves the rotation and the read goes to the primary, without an error.
    router = cut_router(cluster, pgrouter, cut_replica)
    with router.connect() as c:
        assert server_port(c) == cluster.replica_port  # a server now idle in the replica's pool
    with router.connect(application_name="pgr_cut_after_answer") as c:
        assert where(c) == "primary"
        assert c.execute("show application_name").fetchone()[0] == "pgr_cut_after_answer"
    assert cut_replica.cuts == 1
    assert "replica failed while pgrouter applied the client's settings" in router.log()
    assert backend_metric(router.metrics(), "pgrouter_backend_up", cut_replica.port) == 0
