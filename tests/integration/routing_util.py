"""Helpers shared by the read/write splitting tests (test_routing.py, test_read_retry.py, test_failover.py)."""
import contextlib
import time

import pgr

PROBE = "100ms"


def routing_config(cluster, replicas=None, primary=None, **routing):
    """Transaction pooling, one worker (round robin is then one sequence), the shared primary and replica unless
    given."""
    replicas = [cluster.endpoint("replica")] if replicas is None else replicas
    primary = cluster.endpoint("primary") if primary is None else primary
    return {"listen": {"workers": 1}, "pool": {"mode": "transaction", "size": 4},
            "databases": [{"name": "app", "shards": [{"primary": primary, "replicas": replicas}],
                           "routing": {"probe_interval": PROBE, **routing}}]}


def where(conn, sql="select pg_is_in_recovery()", params=None, **kw):
    """'replica' or 'primary': where the statement ran."""
    return "replica" if conn.execute(sql, params, **kw).fetchone()[0] else "primary"


def server_port(conn):
    """The port of the server that ran the statement (inet_server_port() is a read: replicas may take it)."""
    return conn.execute("select inet_server_port()").fetchone()[0]


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def replica_in_rotation(router):
    with router.connect() as c:
        return where(c) == "replica"


def backend_metric(text, name, port):
    """A per-backend gauge or counter (pgrouter_backend_*) of the backend on 127.0.0.1:port, or None."""
    prefix = f'{name}{{backend="{pgr.HOST}:{port}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


def wait_probed_up(router, port, recovery=True, timeout=30.0):
    """Waits until a probe found the backend on port up (and in recovery, or not). A probe that failed on a loaded
    machine (they time out after 2 s) is followed by another at once: a reload wakes the probe loop, which matters
    with a long probe_interval."""
    deadline = time.monotonic() + timeout
    next_reload = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        text = router.metrics()
        # in_recovery and the WAL position are set by a probe that answered (0 before).
        probed = (backend_metric(text, "pgrouter_backend_in_recovery", port) == 1 if recovery else
                  backend_metric(text, "pgrouter_backend_in_recovery", port) == 0 and
                  (backend_metric(text, "pgrouter_backend_wal_lsn_bytes", port) or 0) > 0)
        if probed and backend_metric(text, "pgrouter_backend_up", port) == 1:
            return
        if time.monotonic() > next_reload:
            router.reload(router.overrides, settle=0)
            next_reload = time.monotonic() + 2.5
        time.sleep(0.05)
    raise AssertionError(f"backend {port} not found up by the probes within {timeout}s")


@contextlib.contextmanager
def replica_apply_delay(cluster, delay):
    """The shared replica applies commits `delay` late (recovery_min_apply_delay) inside the block. A reload is
    asynchronous: the block starts once new sessions see the setting (the postmaster has reloaded and signalled the
    startup process) and a moment more for the startup process to take it."""
    def set_delay(value):
        with cluster.connect(server="replica") as r:
            if value is None:
                r.execute("alter system reset recovery_min_apply_delay")
            else:
                r.execute(f"alter system set recovery_min_apply_delay = '{value}'")
            r.execute("select pg_reload_conf()")

        def applied():
            with cluster.connect(server="replica") as r:
                shown = r.execute("select setting::int from pg_settings where name = 'recovery_min_apply_delay'")
                return shown.fetchone()[0] == (0 if value is None else delay_ms)
        wait_for(applied, what=f"recovery_min_apply_delay = {value} on the replica")
        time.sleep(0.2)

    delay_ms = int(interval_ms(delay))
    set_delay(delay)
    try:
        yield
    finally:
        set_delay(None)


def interval_ms(text):
    """'1s', '300ms' -> milliseconds."""
    return float(text[:-2]) if text.endswith("ms") else float(text[:-1]) * 1000
