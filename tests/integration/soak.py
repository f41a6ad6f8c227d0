"""Soak driver: clients writing, reading, preparing, pipelining and copying through one pgrouter (transaction
pooling, one replica, read/write splitting) while a seeded schedule reloads the config, restarts the replica and
terminates pgrouter's server backends. At the end: every acknowledged write is on the primary, every client error
is one of EXPECTED_ERRORS, pgrouter's RSS and fds are back near their start, and a fresh client works.

Used by tests/integration/test_soak.py (60 s) and bench/soak.sh (10 min). Run by hand:
    /usr/bin/python3 tests/integration/soak.py --cluster-dir DIR --seconds 600 [--seed N] [--clients 12]
with DIR a cluster from tests/cluster.sh (its replica is restarted).
"""
import argparse
import collections
import logging
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pgnodes  # noqa: E402
import pgr  # noqa: E402

USER = "pgr_scram"
TABLE = "soak_writes"

# SQLSTATE (or "conn-lost" for a connection that broke without one) -> why a client may see it under this chaos.
# The summary says which chaos step was running (or had just ended) when each error came.
EXPECTED_ERRORS = {
    "57P01": "admin_shutdown, the server's FATAL relayed: pg_terminate_backend hit the server running the client's "
             "transaction (it cannot be moved: it may have written)",
    "08006": "pgrouter's 'server connection broke mid-session': the server died under an open transaction or an "
             "answer already partly relayed; the statement may or may not have run, so it is not retried",
    "conn-lost": "the connection closed with no SQLSTATE: libpq lost the FATAL of a terminated backend (seen in "
                 "pipelines)",
}

CHAOS_KINDS = ("reload", "restart_replica", "kill_backends")
MIB = 1024 * 1024


def sqlstate_of(exc):
    state = getattr(exc, "sqlstate", None)
    if state:
        return state
    if isinstance(exc, psycopg.OperationalError):
        # libpq folds a FATAL read just before EOF into its "server closed the connection" error, without the code.
        return "57P01" if "terminating connection due to administrator command" in str(exc) else "conn-lost"
    return type(exc).__name__


def proc_usage(pid):
    """(RSS bytes, open fds) of a process from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def restart_with_pg_ctl(datadir, logfile):
    """A restart as an operator does it: fast shutdown (open sessions get 57P01), then start."""
    args = [pgnodes.PG_BIN / "pg_ctl", "-D", datadir, "-l", logfile, "-m", "fast", "-w", "-t", "120", "restart"]
    r = pgnodes.as_postgres(args, timeout=180)
    if r.returncode != 0:
        raise RuntimeError(f"pg_ctl restart of {datadir} failed: {r.stdout}{r.stderr}")


def router_config(cluster, replica_port, pool_size=10, idle_timeout="10m"):
    """Transaction pooling, the cluster's primary plus one replica; probes fast so a restarted replica returns."""
    replica = {"host": pgr.HOST, "port": replica_port}
    return {"listen": {"workers": 2}, "log": {"level": "warn"},
            "pool": {"mode": "transaction", "size": pool_size, "idle_timeout": idle_timeout, "queue_timeout": "60s"},
            "databases": [{"name": "app", "shards": [{"primary": cluster.endpoint("primary"),
                                                      "replicas": [replica]}],
                           "routing": {"read_from": "replicas", "probe_interval": "200ms"}}]}


class Stats:
    """Counters shared by every thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = collections.Counter()
        self.errors = collections.Counter()
        self.error_ops = collections.defaultdict(collections.Counter)  # SQLSTATE -> operation kinds that got it
        self.samples = {}  # SQLSTATE -> first message seen
        self.events = []  # every client error and chaos step with its wall-clock time, to match against pgrouter's log
        self.chaos = collections.Counter()
        self.acked = set()
        self.replica_reads = 0
        self.chaos_now = None  # the chaos step running, or the last one and when it ended
        self.chaos_last = ("none", 0.0)

    def op(self, kind, n=1):
        with self.lock:
            self.ops[kind] += n

    def chaos_context(self):
        """The chaos step an error most likely comes from: the one running, or one that ended < 3 s ago."""
        if self.chaos_now:
            return self.chaos_now
        kind, ended = self.chaos_last
        return kind if time.monotonic() - ended < 3 else "none"

    def error(self, kind, exc):
        state = sqlstate_of(exc)
        with self.lock:
            self.errors[state] += 1
            self.error_ops[state][f"{kind}@{self.chaos_context()}"] += 1
            self.samples.setdefault(state, f"{type(exc).__name__}: {' / '.join(str(exc).split(chr(10))[:2])[:300]}")
            self.events.append(f"{time.strftime('%H:%M:%S')} {state} {kind}: {' / '.join(str(exc).split(chr(10))[:2])}")

    def ack(self, ids):
        with self.lock:
            self.acked.update(ids)


class Client(threading.Thread):
    """Connects, runs a few random operations, disconnects; again until the deadline. Ids are (client, seq) with
    seq never reused, so an id written twice shows up as 23505 (unexpected)."""

    OPS = {"insert_autocommit": 25, "insert_txn": 20, "read": 25, "prepared": 10, "pipeline": 12, "copy": 3,
           "reconnect": 5}
    # A client that never writes keeps its reads on the replica (read-your-writes sends a writer's reads to the
    # primary until the replica replayed them), so replica restarts hit reads in flight.
    READER_OPS = {"read": 60, "read_pipeline": 20, "read_prepared": 10, "reconnect": 10}

    def __init__(self, index, dsn, stats, deadline, seed):
        super().__init__(name=f"soak-client-{index}", daemon=True)
        self.index, self.dsn, self.stats, self.deadline = index, dsn, stats, deadline
        self.rng = random.Random(seed * 1000 + index)
        self.seq = 0
        self.conn = None
        self.current = ("idle", time.monotonic())  # what it is doing since when: tells a stuck client

    def ids(self, n):
        self.seq += n
        return [(self.index, s) for s in range(self.seq - n + 1, self.seq + 1)]

    def run(self):
        ops = self.READER_OPS if self.index % 4 == 0 else self.OPS
        kinds, weights = list(ops), list(ops.values())
        while time.monotonic() < self.deadline:
            kind = self.rng.choices(kinds, weights)[0]
            self.current = (kind, time.monotonic())
            try:
                if self.conn is None or self.conn.closed or kind == "reconnect":
                    self.reconnect()
                if kind != "reconnect":
                    getattr(self, kind)()
                self.stats.op(kind)
            except Exception as e:  # noqa: BLE001 - anything not in EXPECTED_ERRORS (a wrong result too) fails the run
                self.stats.error(kind, e)
                self.close()
            self.current = ("idle", time.monotonic())
        self.close()

    def reconnect(self):
        self.close()
        self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=20, prepare_threshold=None)
        self.stats.op("connect")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def insert_sql(self, via):
        return f"insert into {TABLE} (client, seq, via) values (%s, %s, '{via}')"

    def insert_autocommit(self):
        [i] = self.ids(1)
        self.conn.execute(self.insert_sql("autocommit"), i)
        self.stats.ack([i])

    def insert_txn(self):
        ids = self.ids(self.rng.randint(1, 4))
        with self.conn.transaction():
            for i in ids:
                self.conn.execute(self.insert_sql("txn"), i)
        self.stats.ack(ids)  # the transaction block exited: COMMIT was acknowledged

    def read(self):
        row = self.conn.execute(f"select pg_is_in_recovery(), count(*) from {TABLE} where client = %s",
                                (self.index,)).fetchone()
        if row[0]:
            with self.stats.lock:
                self.stats.replica_reads += 1

    def read_pipeline(self):
        with self.conn.pipeline():
            curs = [self.conn.execute("select pg_is_in_recovery(), %s::int", (n,)) for n in range(3)]
        assert [c.fetchone()[1] for c in curs] == [0, 1, 2]

    def read_prepared(self):
        a = self.rng.randint(1, 1000)
        row = self.conn.execute("select pg_is_in_recovery(), %s::int * 2", (a,), prepare=True).fetchone()
        assert row[1] == 2 * a
        if row[0]:
            with self.stats.lock:
                self.stats.replica_reads += 1

    def prepared(self):
        """Server-side named statements (prepare=True), which pgrouter carries from server to server."""
        a = self.rng.randint(1, 1000)
        assert self.conn.execute("select %s::int + 1", (a,), prepare=True).fetchone() == (a + 1,)
        [i] = self.ids(1)
        self.conn.execute(self.insert_sql("prepared"), i, prepare=True)
        self.stats.ack([i])

    def pipeline(self):
        """Autocommit pipeline: each statement its own transaction; acknowledged once the pipeline synced."""
        ids = self.ids(self.rng.randint(2, 5))
        with self.conn.pipeline():
            for i in ids:
                self.conn.execute(self.insert_sql("pipeline"), i)
            cur = self.conn.execute(f"select count(*) from {TABLE} where client = %s", (self.index,))
        cur.fetchone()
        self.stats.ack(ids)

    def copy(self):
        ids = self.ids(self.rng.randint(10, 50))
        with self.conn.cursor() as cur:
            with cur.copy(f"copy {TABLE} (client, seq, via) from stdin") as copy:
                for client, seq in ids:
                    copy.write_row((client, seq, "copy"))
        self.stats.ack(ids)


class Chaos(threading.Thread):
    """Runs the schedule: (seconds from start, kind), drawn from the seed so a run can be repeated."""

    def __init__(self, soak, schedule):
        super().__init__(name="soak-chaos", daemon=True)
        self.soak, self.schedule = soak, schedule
        self.failures = []

    def run(self):
        for at, kind in self.schedule:
            delay = self.soak.started + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                self.soak.stats.events.append(f"{time.strftime('%H:%M:%S')} chaos {kind} begins")
                self.soak.stats.chaos_now = kind
                try:
                    getattr(self.soak, kind)()
                finally:
                    self.soak.stats.chaos_now, self.soak.stats.chaos_last = None, (kind, time.monotonic())
                self.soak.stats.chaos[kind] += 1
                self.soak.stats.events.append(f"{time.strftime('%H:%M:%S')} chaos {kind} done")
            except Exception as e:  # noqa: BLE001 - a chaos step that fails is a harness failure, reported at the end
                self.failures.append(f"{kind} at {at:.1f}s: {type(e).__name__}: {e}")


def chaos_schedule(rng, seconds):
    """Events every 2-8 s (scaled down for short runs), every kind at least once, none in the last 15% of the run
    (so that the end state is measured after a quiet spell of load)."""
    end, at, events = seconds * 0.85, 0.0, []
    step = max(2.0, min(8.0, seconds / 15))
    while True:
        at += rng.uniform(step * 0.5, step * 1.5)
        if at >= end:
            break
        events.append([at, rng.choice(CHAOS_KINDS)])
    for i, kind in enumerate(CHAOS_KINDS):  # each kind at least once, early enough
        if all(k != kind for _, k in events) and events:
            events[min(i * 2, len(events) - 1)][1] = kind
    return [tuple(e) for e in events]


class Soak:
    def __init__(self, cluster, router, replica_port, restart_replica, seconds, seed, clients=12, log=print):
        self.cluster, self.router, self.replica_port = cluster, router, replica_port
        self.restart_replica_fn, self.seconds, self.seed, self.clients = restart_replica, seconds, seed, clients
        self.log = log
        self.rng = random.Random(seed)
        self.stats = Stats()
        self.pool_size = 10
        self.started = None
        self.result = {}

    # --- chaos -----------------------------------------------------------------------------------------------

    def reload(self):
        """A harmless change: the pool size and queue timeout move; the reload must be accepted."""
        self.pool_size = self.rng.choice([6, 8, 10, 12, 16])
        tail = self.router.reload(router_config(self.cluster, self.replica_port, self.pool_size), settle=0.3)
        if "config reload rejected" in tail:
            raise RuntimeError(f"reload rejected: {tail[-500:]}")

    def restart_replica(self):
        self.restart_replica_fn()

    def kill_backends(self):
        """pg_terminate_backend on some of pgrouter's server connections (idle or busy), straight on the primary."""
        with self.cluster.connect("primary") as admin:
            killed = admin.execute(
                "select count(pg_terminate_backend(pid)) from (select pid from pg_stat_activity where usename = %s "
                "and datname = 'app' and backend_type = 'client backend' order by random() limit %s) s",
                (USER, self.rng.randint(1, 6))).fetchone()[0]
        self.stats.chaos["backends_killed"] += killed

    # --- phases ----------------------------------------------------------------------------------------------

    def setup(self):
        with self.cluster.connect("primary") as admin:
            admin.execute(f"drop table if exists {TABLE}")
            admin.execute(f"create table {TABLE} (client int, seq int, via text not null, at timestamptz default "
                          f"now(), primary key (client, seq))")
            admin.execute(f"grant all on {TABLE} to {USER}")
        with self.router.connect() as c:  # warm up: the first login and probes are part of the baseline
            c.execute("select 1")
        time.sleep(1.0)
        self.result["before"] = proc_usage(self.router.proc.pid)

    def run_load(self):
        self.started = time.monotonic()
        deadline = self.started + self.seconds
        schedule = chaos_schedule(self.rng, self.seconds)
        self.result["schedule"] = schedule
        chaos = Chaos(self, schedule)
        clients = [Client(i, self.router.dsn(user=USER), self.stats, deadline, self.seed) for i in range(self.clients)]
        for t in [chaos, *clients]:
            t.start()
        stuck = []
        for c in clients:  # an operation may take long under chaos, but not forever
            c.join(max(0.0, deadline - time.monotonic()) + 120)
            if c.is_alive():
                stuck.append(f"{c.name} stuck in {c.current[0]} for {time.monotonic() - c.current[1]:.0f}s")
        chaos.join(180)
        self.result.update(stuck=stuck, chaos_failures=chaos.failures, load_seconds=time.monotonic() - self.started)

    def settle(self, timeout=30.0):
        """Idle servers closed quickly (idle_timeout 1s by reload), then fds are polled until near the start."""
        self.router.reload(router_config(self.cluster, self.replica_port, self.pool_size, idle_timeout="1s"),
                           settle=0.3)
        # Waits for the start's count (not the limit) so "after" is the drained state, not a snapshot mid-drain.
        fd_start = self.result["before"][1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc_usage(self.router.proc.pid)[1] > fd_start:
            time.sleep(0.5)
        self.result["after"] = proc_usage(self.router.proc.pid)
        self.result["settle_seconds"] = timeout - (deadline - time.monotonic())
        self.result["fd_limit"] = fd_start + 8  # slack: probe connections being reopened, a server mid-login

    def verify(self):
        failures = []
        with self.cluster.connect("primary") as admin:
            present = set(admin.execute(f"select client, seq from {TABLE}").fetchall())
        lost = sorted(self.stats.acked - present)
        self.result.update(acked=len(self.stats.acked), rows=len(present), lost=lost)
        if lost:
            failures.append(f"{len(lost)} acknowledged writes missing on the primary, first: {lost[:10]}")
        unexpected = {s: n for s, n in self.stats.errors.items() if s not in EXPECTED_ERRORS}
        if unexpected:
            failures.append("unexpected client errors: " + "; ".join(
                f"{s} x{n} ({self.stats.samples[s]})" for s, n in sorted(unexpected.items())))
        failures += self.result["stuck"] + [f"chaos step failed: {f}" for f in self.result["chaos_failures"]]
        failures += self.usage_failures()
        failures += self.liveness_failures()
        if self.stats.ops["insert_autocommit"] == 0 or self.stats.replica_reads == 0:
            failures.append("the load did not run: no autocommit insert acknowledged or no read on the replica")
        return failures

    def usage_failures(self):
        (rss0, fd0), (rss1, fd1) = self.result["before"], self.result["after"]
        out = []
        if rss1 > max(rss0 + 64 * MIB, 2 * rss0):
            out.append(f"RSS grew from {rss0 / MIB:.1f} MiB to {rss1 / MIB:.1f} MiB")
        if fd1 > self.result["fd_limit"]:
            out.append(f"open fds {fd0} at start, {fd1} after the load and settle (limit {self.result['fd_limit']})")
        return out

    def liveness_failures(self):
        if not self.router.running:
            return [f"pgrouter exited with {self.router.proc.poll()}"]
        try:
            with self.router.connect() as c:
                assert c.execute("select 42").fetchone() == (42,)
                c.execute(f"insert into {TABLE} (client, seq, via) values (-1, 1, 'final')")
        except (psycopg.Error, AssertionError) as e:
            return [f"a fresh client failed at the end: {type(e).__name__}: {e}"]
        reload_failures = pgr.metric(self.router.metrics(), "pgrouter_config_reload_failures_total")
        return [f"{reload_failures:.0f} config reloads failed"] if reload_failures else []

    def run(self):
        self.log(f"soak: seed {self.seed}, {self.seconds:.0f}s, {self.clients} clients, pgrouter pid "
                 f"{self.router.proc.pid}")
        self.setup()
        self.run_load()
        self.settle()
        failures = self.verify()
        events = self.router.workdir / "soak-events.log"
        events.write_text("\n".join(self.stats.events) + "\n")
        self.log(self.summary(failures) + f"\n  client errors and chaos steps, timed: {events}")
        return failures

    def summary(self, failures):
        r, s = self.result, self.stats
        (rss0, fd0), (rss1, fd1) = r["before"], r["after"]
        lines = [f"soak summary (seed {self.seed}, load {r['load_seconds']:.0f}s, {self.clients} clients)",
                 "  ops: " + ", ".join(f"{k} {v}" for k, v in sorted(s.ops.items())) +
                 f"; reads answered by the replica {s.replica_reads}",
                 f"  acknowledged ids {r['acked']}, rows on the primary {r['rows']}, lost {len(r['lost'])}",
                 "  errors by SQLSTATE: " + (", ".join(f"{k} {v}" for k, v in sorted(s.errors.items())) or "none"),
                 "  chaos: " + ", ".join(f"{k} {v}" for k, v in sorted(s.chaos.items())),
                 f"  pgrouter RSS {rss0 / MIB:.1f} -> {rss1 / MIB:.1f} MiB, fds {fd0} -> {fd1} "
                 f"(after {r['settle_seconds']:.1f}s of settling with idle_timeout 1s)"]
        for k in sorted(s.samples):
            where = ", ".join(f"{op} {n}" for op, n in sorted(s.error_ops[k].items()))
            lines.append(f"  {k} in (operation@chaos step): {where}; first: {s.samples[k]}")
        lines.append("  result: " + ("PASS" if not failures else "FAIL\n    " + "\n    ".join(failures)))
        return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster-dir", required=True)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--seed", type=int, default=random.randrange(2**31))
    p.add_argument("--clients", type=int, default=12)
    p.add_argument("--workdir", default=None, help="pgrouter's config and log (default: a temp dir)")
    args = p.parse_args()
    logging.getLogger("psycopg").setLevel(logging.ERROR)  # a pipeline whose server was killed warns on close
    cluster = pgr.Cluster(args.cluster_dir)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pgr-soak-"))
    router = pgr.Pgrouter(cluster, workdir, router_config(cluster, cluster.replica_port))
    replica_dir = cluster.dir / "replica"
    soak = Soak(cluster, router, cluster.replica_port,
                lambda: restart_with_pg_ctl(replica_dir, cluster.dir / "replica.log"), args.seconds, args.seed,
                args.clients, log=lambda m: print(m, flush=True))
    try:
        failures = soak.run()
    finally:
        code = router.stop(check=False)
        print(f"soak: pgrouter exited with {code}; its log: {router.log_path}", flush=True)
    sys.exit(1 if failures or code != 0 else 0)


if __name__ == "__main__":
    main()
