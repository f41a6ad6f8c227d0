"""role: auto: a shard listed as `hosts:` has no fixed primary; the probes find it (the host out of
recovery, on the newest timeline) and writes follow a promotion without a reload. Each test makes its own primary
(a pg_basebackup copy of the shared primary, with its roles and tables) and a streaming replica of it (pgnodes.py),
then promotes and stops them: the shared cluster is never touched."""
import time

import pgr
from routing_util import backend_metric, server_port, wait_for, wait_probed_up


def auto_config(hosts, **routing):
    # pgr_md5 is session-pooled: its whole session goes to the host that is the primary when it logs in.
    users = [{"name": name, "password": password, **({"pool_mode": "session"} if name == "pgr_md5" else {})}
             for name, password in pgr.USERS.items()]
    return {"listen": {"workers": 1}, "pool": {"mode": "transaction", "size": 4}, "users": users,
            "databases": [{"name": "app", "shards": [{"hosts": [h.endpoint() for h in hosts]}],
                           "routing": {"probe_interval": "100ms", **routing}}]}


def write(router, note):
    """A write through a new connection; returns the port of the server that ran it."""
    with router.connect() as c:
        return c.execute("insert into client_events (client, note) values ('failover', %s) "
                         "returning inet_server_port()", (note,)).fetchone()[0]


def test_writes_follow_a_promotion_without_a_reload(cluster, pgrouter, pg_nodes):
    old = pg_nodes.copy_of(cluster.primary_port)
    new = pg_nodes.replica_of(old.port)
    router = pgrouter(auto_config([old, new]))
    wait_probed_up(router, old.port, recovery=False)
    wait_probed_up(router, new.port)
    assert write(router, "before") == old.port
    with router.connect(user="pgr_md5") as session:
        assert server_port(session) == old.port
    with router.connect() as reader:  # a client that never writes: its reads go to the replica
        wait_for(lambda: server_port(reader) == new.port, what="a read on the replica")
    with new.connect() as direct:  # replication is asynchronous: promote once the replica has the row
        wait_for(lambda: direct.execute("select count(*) from client_events where client = 'failover'")
                 .fetchone()[0] == 1, what="the replica replaying the first write")
    new.promote()
    old.stop("fast")
    started = time.monotonic()
    # The first write after the stop either finds the new primary already, or the old one gone (taken out of
    # rotation) and waits for the probes to show the promoted host (routing.wait_for_primary, 5 s by default).
    assert write(router, "after") == new.port
    took = time.monotonic() - started
    assert took < 2.0, f"the first write after the failover took {took:.2f}s (probe_interval 100ms)"
    assert write(router, "again") == new.port
    with router.connect(user="pgr_md5") as session:
        assert server_port(session) == new.port
    text = router.metrics()
    assert backend_metric(text, "pgrouter_backend_in_recovery", new.port) == 0
    assert backend_metric(text, "pgrouter_backend_up", old.port) == 0
    with router.connect() as reader:  # reads go on: to the primary, no replica being left
        assert server_port(reader) == new.port
        # The row written before the failover reached the promoted host by replication.
        notes = [r[0] for r in reader.execute("select note from client_events where client = 'failover' order by id")]
        assert notes == ["before", "after", "again"]


def test_without_a_primary_writes_get_a_clear_error_and_reads_go_on(cluster, pgrouter, pg_nodes):
    primary = pg_nodes.copy_of(cluster.primary_port)
    replica = pg_nodes.replica_of(primary.port)
    router = pgrouter(auto_config([primary, replica], wait_for_primary="1s"))
    wait_probed_up(router, primary.port, recovery=False)
    wait_probed_up(router, replica.port)
    primary.stop("fast")  # and no promotion: no host is a primary
    with pgr.Raw(router.port) as raw:  # raw protocol: the exact ErrorResponse
        raw.startup("pgr_scram", password=pgr.USERS["pgr_scram"])  # logs in through the replica
        started = time.monotonic()
        raw.send(pgr.query("insert into client_events (client, note) values ('failover', 'x')"))
        replies = raw.read_until(())
        took = time.monotonic() - started
    assert [kind for kind, _ in replies] == ["E", ""], replies
    error = pgr.parse_error_fields(replies[0][1])
    assert (error["severity"], error["code"]) == ("FATAL", "08001"), error
    message = error["message"]
    assert 'no primary is available for database "app"' in message, message
    assert f"{pgr.HOST}:{primary.port} down" in message, message
    assert f"{pgr.HOST}:{replica.port} in recovery" in message, message
    assert "routing.wait_for_primary" in message and "promote a replica" in message, message
    assert 1.0 <= took < 4.0, f"the write was answered after {took:.2f}s (wait_for_primary: 1s)"
    with router.connect() as reader:  # reads go on, on the replica
        assert server_port(reader) == replica.port
    replica.promote()
    started = time.monotonic()
    assert write(router, "after promotion") == replica.port  # waits for the probes to see the promotion
    assert time.monotonic() - started < 2.0
