"""SIGHUP reload: an invalid file is rejected whole and the old config keeps serving; valid changes apply
without closing client connections, and pgbench under reload loses no transaction."""
import os
import subprocess
import threading
import time

import psycopg
import pytest

import pgr



def test_invalid_config_is_rejected_and_old_one_kept(pgrouter):
    router = pgrouter()
    with router.connect() as conn:
        # Write a broken file by hand (not through the dict): a bad value and an unknown key.
        router.config_path.write_text(router.config_path.read_text().replace('"workers": 2', '"workers": "two"')
                                      .replace('"log": {', '"logg": {'))
        log_size = router.log_path.stat().st_size
        router.proc.send_signal(1)
        time.sleep(0.5)
        tail = router.log()[log_size:]
        assert "config reload rejected" in tail
        assert str(router.config_path) in tail and "workers" in tail
        after = router.metrics()
        assert pgr.metric(after, "pgrouter_config_reload_failures_total") == 1
        assert pgr.metric(after, "pgrouter_config_reloads_total") == 1
        assert conn.execute("select 1").fetchone() == (1,)
    with router.connect() as again:
        assert again.execute("select 2").fetchone() == (2,)


def test_reload_adds_database_and_retargets_without_dropping_clients(pgrouter, cluster):
    router = pgrouter()
    existing = router.connect()
    assert existing.execute("select pg_is_in_recovery()").fetchone() == (False,)
    with pytest.raises(psycopg.OperationalError):
        router.connect(dbname="ro")
    tail = router.reload({"databases": [
        {"name": "app", "shards": [{"primary": cluster.endpoint("replica")}]},
        {"name": "ro", "dbname": "app", "shards": [{"primary": cluster.endpoint("replica")}]}]})
    assert "configuration reloaded" in tail
    # The existing session keeps its server (session pooling); new sessions follow the new config.
    assert existing.execute("select pg_is_in_recovery()").fetchone() == (False,)
    with router.connect() as fresh:
        assert fresh.execute("select pg_is_in_recovery()").fetchone() == (True,)
    with router.connect(dbname="ro") as ro:
        assert ro.execute("select pg_is_in_recovery()").fetchone() == (True,)
    existing.close()
    assert pgr.metric(router.metrics(), "pgrouter_config_reloads_total") == 1


def test_pgbench_under_repeated_reload_has_zero_failures(pgrouter, pgbench_tables):
    env = {**os.environ, "PGPASSWORD": pgr.USERS["pgr_scram"]}
    router = pgrouter({"pool": {"size": 20}})
    bench = subprocess.Popen(["pgbench", "-c", "8", "-j", "2", "-T", "6", "-h", pgr.HOST, "-p", str(router.port),
                              "-U", "pgr_scram", "app"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env)
    for i in range(8):
        time.sleep(0.5)
        router.reload({"pool": {"size": 16 + i, "idle_timeout": f"{30 + i}s"},
                       "log": {"level": "debug" if i % 2 else "info"}}, settle=0.1)
    out, _ = bench.communicate(timeout=60)
    assert bench.returncode == 0, out
    assert "number of failed transactions: 0" in out, out
    processed = [l for l in out.splitlines() if "number of transactions actually processed" in l]
    assert processed and int(processed[0].split(":")[1].strip()) > 100, out
    assert pgr.metric(router.metrics(), "pgrouter_config_reloads_total") == 8
    assert pgr.metric(router.metrics(), "pgrouter_config_reload_failures_total") == 0


def test_larger_pool_on_reload_serves_every_waiting_client(pgrouter):
    """Clients queued on a full pool all get in when a reload raises pool.size, not one per server returned:
    the holder keeps its server throughout (session mode)."""
    router = pgrouter({"listen": {"workers": 1}, "pool": {"size": 1, "queue_timeout": "30s"}})
    holder = router.connect()
    assert holder.execute("select 1").fetchone() == (1,)
    results, threads = [], []

    def waiter(i):
        with router.connect() as c:
            results.append(c.execute("select %s::int", (i,)).fetchone()[0])
            time.sleep(3)  # keeps its server: each waiter needs a slot of its own

    for i in range(3):
        threads.append(threading.Thread(target=waiter, args=(i,), daemon=True))
        threads[-1].start()
    time.sleep(0.5)
    assert results == []  # all three wait for the one server the holder keeps
    started = time.monotonic()
    router.reload({"listen": {"workers": 1}, "pool": {"size": 4, "queue_timeout": "30s"}}, settle=0.1)
    while len(results) < 3 and time.monotonic() - started < 10:
        time.sleep(0.05)
    assert sorted(results) == [0, 1, 2], results
    assert time.monotonic() - started < 2.5, "the waiters were let in one at a time"
    for t in threads:
        t.join(10)
    holder.close()
