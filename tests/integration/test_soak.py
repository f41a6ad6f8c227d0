"""A 60-second soak (tests/integration/soak.py): mixed clients through transaction pooling with one replica while
reloads, replica restarts and server-backend kills run on a schedule from a fixed seed. The replica is private
(pgnodes.py) because it is restarted; writes go to the shared primary's soak_writes table, dropped at the end.
bench/soak.sh runs the same driver for 10 minutes on a cluster of its own."""
import os
import threading
import time

import pytest

import pgr
import soak

SEED = int(os.environ.get("PGR_SOAK_SEED", 20261206))
SECONDS = float(os.environ.get("PGR_SOAK_SECONDS", 60))
RESTARTS = 10
USER = soak.USER


def test_soak_loses_no_acknowledged_write_and_leaks_nothing(cluster, pgrouter, pg_nodes):
    replica = pg_nodes.replica_of(cluster.primary_port)
    router = pgrouter(soak.router_config(cluster, replica.port))
    driver = soak.Soak(cluster, router, replica.port, lambda: soak.restart_with_pg_ctl(replica.data, replica.log),
                       SECONDS, SEED, clients=12)
    try:
        failures = driver.run()  # prints the seed first and the summary last (pytest -s shows them)
    finally:
        with cluster.connect("primary") as admin:
            admin.execute(f"drop table if exists {soak.TABLE}")
    assert not failures, driver.summary(failures)


def read_until_failure(router, index, stop, failures):
    """A client that only reads (so its reads go to the replica), one single-statement Query at a time, over the
    raw protocol so that exactly what pgrouter sends before closing is seen."""
    raw = None
    while not stop.is_set():
        try:
            if raw is None:
                raw = pgr.Raw(router.port)
                raw.startup(USER, password=pgr.USERS[USER])
            raw.send(pgr.query(f"select pg_is_in_recovery(), {index}"))
            replies = raw.read_until(("Z",), timeout=30)
        except (OSError, pgr.RawError) as e:
            failures.append(f"reader {index}: {type(e).__name__}: {e}")
            raw = None
            continue
        if replies[-1][0] != "Z":
            failures.append(f"reader {index}: {[(k, pgr.parse_error_fields(p).get('code')) for k, p in replies]}")
            raw.close()
            raw = None
    if raw is not None:
        raw.close()


def test_read_on_a_replica_stopped_fast_is_answered_elsewhere(cluster, pgrouter, pg_nodes):
    replica = pg_nodes.replica_of(cluster.primary_port)
    router = pgrouter(soak.router_config(cluster, replica.port))
    stop, failures = threading.Event(), []
    readers = [threading.Thread(target=read_until_failure, args=(router, i, stop, failures), daemon=True)
               for i in range(8)]
    for t in readers:
        t.start()
    try:
        for _ in range(RESTARTS):  # one to five restarts showed it before the fix: stop at the first
            time.sleep(1.5)  # the replica back in rotation and taking reads
            soak.restart_with_pg_ctl(replica.data, replica.log)
            if failures:
                break
    finally:
        stop.set()
        for t in readers:
            t.join(60)
    assert not failures, failures
