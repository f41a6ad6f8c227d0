"""Stress: many clients, few servers, transaction pooling. 200 clients x 200 mixed transactions over a pool
of 10 servers: prepared statements (psycopg prepare_threshold=0, so every statement is a named server-side
statement), pipelines, errors inside and outside explicit transactions, and a few cancels. Every result is checked
against each client's own model of its rows; at the end pgrouter must hold at most 10 idle servers and no client.

Sizes (environment): PGR_STRESS_CLIENTS (200), PGR_STRESS_TXNS (120 per client; 500 or more for a longer run), PGR_STRESS_CANCEL_CLIENTS (clients
that also cancel a pg_sleep, 20), PGR_STRESS_TIMEOUT (seconds for the whole run, 600: a guard
against hangs, not a speed check; a run of 200 x 500 takes 100-250 s on 2 cores, Python being the bottleneck), PGR_STRESS_OP_TIMEOUT
(seconds one operation may take before it counts as hung, 30), PGR_STRESS_PREPARE_THRESHOLD (psycopg's
prepare_threshold, 0; "none" for no server-side statements, to tell prepared-statement failures from others).
The run time and counters are printed (pytest -s).
"""
import os
import random
import re
import threading
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import errors

import pgr

CLIENTS = int(os.environ.get("PGR_STRESS_CLIENTS", 200))
TXNS = int(os.environ.get("PGR_STRESS_TXNS", 120))
CANCEL_CLIENTS = int(os.environ.get("PGR_STRESS_CANCEL_CLIENTS", 20))
RUN_TIMEOUT = float(os.environ.get("PGR_STRESS_TIMEOUT", 600))
OP_TIMEOUT = float(os.environ.get("PGR_STRESS_OP_TIMEOUT", 30))
_threshold = os.environ.get("PGR_STRESS_PREPARE_THRESHOLD", "0")
PREPARE_THRESHOLD = None if _threshold.lower() == "none" else int(_threshold)
POOL_SIZE = 10
USER = "pgr_scram"

RESENT_CANCELS = []  # clients whose first CancelRequest was not delivered (printed with the summary)

# kind -> weight; cancels are extra, CANCELS_PER_CLIENT for the first CANCEL_CLIENTS clients.
MIX = {"tx_insert_update": 30, "pipeline_tx": 15, "pipeline_read": 10, "error_in_tx": 10, "error_autocommit": 10,
       "verify": 20, "prepared_select": 5}
CANCELS_PER_CLIENT = 2


class Failure(Exception):
    pass


class Client:
    """One psycopg connection through pgrouter and the rows it believes it has written: model[n] = v."""

    def __init__(self, index, dsn, admin_dsn, table, deadline):
        self.index = index
        self.dsn = dsn
        self.admin_dsn = admin_dsn
        self.table = table
        self.deadline = deadline
        self.rng = random.Random(index)
        self.model = {}
        self.next_n = 0
        self.errors = []
        self.counts = {}
        self.op = "connect"
        self.op_started = time.monotonic()
        self.steps = []  # (seconds since op_started, what): where a slow operation spent its time
        self.done = False
        self.conn = None

    # --- helpers ---------------------------------------------------------------------------------------------

    def begin(self, op):
        self.op = op
        self.op_started = time.monotonic()
        self.steps = []
        self.counts[op] = self.counts.get(op, 0) + 1

    def step(self, what):
        self.steps.append((round(time.monotonic() - self.op_started, 2), what))

    def check(self, condition, message):
        if not condition:
            raise Failure(f"client {self.index} {self.op}: {message}")

    def new_n(self):
        self.next_n += 1
        return self.next_n

    def model_sum(self):
        return sum(self.model.values())

    # --- transactions ----------------------------------------------------------------------------------------

    def tx_insert_update(self):
        n, v = self.new_n(), self.rng.randint(1, 1000)
        with self.conn.transaction():
            self.conn.execute(f"insert into {self.table} (client, n, v) values (%s, %s, %s)", (self.index, n, v))
            row = self.conn.execute(f"update {self.table} set v = v + 1 where client = %s and n = %s returning v",
                                    (self.index, n)).fetchone()
            self.check(row == (v + 1,), f"update returned {row}, expected {(v + 1,)}")
        self.model[n] = v + 1

    def pipeline_tx(self):
        rows = [(self.new_n(), self.rng.randint(1, 1000)) for _ in range(3)]
        with self.conn.pipeline():
            with self.conn.transaction():
                for n, v in rows:
                    self.conn.execute(f"insert into {self.table} (client, n, v) values (%s, %s, %s)",
                                      (self.index, n, v))
                cur = self.conn.execute(f"select count(*), coalesce(sum(v), 0) from {self.table} where client = %s",
                                        (self.index,))
        for n, v in rows:
            self.model[n] = v
        got = cur.fetchone()
        self.check(got == (len(self.model), self.model_sum()), f"got {got}, model {(len(self.model), self.model_sum())}")

    def pipeline_read(self):
        """Autocommit pipeline: several reads and a write, each statement its own transaction."""
        n, v = self.new_n(), self.rng.randint(1, 1000)
        with self.conn.pipeline():
            c1 = self.conn.execute("select %s::int * 2", (n,))
            self.conn.execute(f"insert into {self.table} (client, n, v) values (%s, %s, %s)", (self.index, n, v))
            c2 = self.conn.execute(f"select v from {self.table} where client = %s and n = %s", (self.index, n))
            c3 = self.conn.execute(f"select count(*) from {self.table} where client = %s", (self.index,))
        self.model[n] = v
        self.check(c1.fetchone() == (2 * n,), "select %s * 2 wrong")
        self.check(c2.fetchone() == (v,), "read-back of the row just written wrong")
        self.check(c3.fetchone() == (len(self.model),), "count wrong")

    def error_in_tx(self):
        n = self.new_n()
        if self.rng.random() < 0.5:
            try:
                with self.conn.transaction():
                    self.conn.execute(f"insert into {self.table} (client, n, v) values (%s, %s, 1)", (self.index, n))
                    self.conn.execute("select 1 / (%s - %s)", (n, n))
                raise Failure(f"client {self.index} error_in_tx: division by zero did not raise")
            except errors.DivisionByZero:
                pass
        else:  # the error in a pipelined transaction
            try:
                with self.conn.pipeline():
                    with self.conn.transaction():
                        self.conn.execute(f"insert into {self.table} (client, n, v) values (%s, %s, 1)",
                                          (self.index, n))
                        self.conn.execute(f"insert into {self.table} (client, n, v) values (%s, %s, 2)",
                                          (self.index, n))
                raise Failure(f"client {self.index} error_in_tx: duplicate insert did not raise")
            except errors.UniqueViolation:
                pass
        # Rolled back: the row is not there, and the connection works.
        row = self.conn.execute(f"select count(*) from {self.table} where client = %s and n = %s",
                                (self.index, n)).fetchone()
        self.check(row == (0,), f"row {n} of a rolled-back transaction is there")

    def error_autocommit(self):
        if self.model and self.rng.random() < 0.7:
            n = self.rng.choice(list(self.model))
            try:
                self.conn.execute(f"insert into {self.table} (client, n, v) values (%s, %s, 0)", (self.index, n))
                raise Failure(f"client {self.index} error_autocommit: duplicate key did not raise")
            except errors.UniqueViolation:
                pass
        else:
            try:
                self.conn.execute("select 1 / 0")
                raise Failure(f"client {self.index} error_autocommit: 1/0 did not raise")
            except errors.DivisionByZero:
                pass
        row = self.conn.execute(f"select count(*), coalesce(sum(v), 0) from {self.table} where client = %s",
                                (self.index,)).fetchone()
        self.check(row == (len(self.model), self.model_sum()), f"got {row} after the error")

    def verify(self):
        row = self.conn.execute(f"select count(*), coalesce(sum(v), 0) from {self.table} where client = %s",
                                (self.index,)).fetchone()
        self.check(row == (len(self.model), self.model_sum()),
                   f"got {row}, model {(len(self.model), self.model_sum())}")
        if self.model:
            n = self.rng.choice(list(self.model))
            got = self.conn.execute(f"select v from {self.table} where client = %s and n = %s",
                                    (self.index, n)).fetchone()
            self.check(got == (self.model[n],), f"row {n}: got {got}, expected {self.model[n]}")

    def prepared_select(self):
        a, b = self.rng.randint(-1000, 1000), self.rng.randint(-1000, 1000)
        got = self.conn.execute("select %s::int + %s::int, %s::text", (a, b, f"c{self.index}")).fetchone()
        self.check(got == (a + b, f"c{self.index}"), f"got {got}")

    def cancel(self):
        """pg_sleep cancelled from another thread: one CancelRequest, sent once the primary shows the query running
        (so that a cancel pgrouter could not yet deliver is not retried into some other client's query)."""
        marker = f"stress cancel {self.index}.{self.next_n}"
        self.next_n += 1
        outcome = {}

        def canceller():
            try:
                # One admin connection for the whole cancel: opening a new one to PostgreSQL under this load can
                # itself take seconds (the postmaster forks for it), which would make the check below late.
                with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=10) as admin:
                    def running():
                        return admin.execute("select count(*) from pg_stat_activity where state = 'active' and "
                                             "query like %s", (f"%{marker}%",)).fetchone()[0]
                    self.step("canceller connected to the primary")
                    until = time.monotonic() + OP_TIMEOUT
                    while time.monotonic() < until:
                        if running():
                            break
                        time.sleep(0.02)
                    else:
                        outcome["error"] = "pg_sleep never showed up in pg_stat_activity"
                        return
                    self.step("pg_sleep seen running; cancelling")
                    outcome["sent"] = time.monotonic()
                    self.conn.cancel()
                    self.step("cancel returned")
                    outcome["cancel_returned"] = round(time.monotonic() - outcome["sent"], 3)
                    # Under this load PostgreSQL itself can take seconds to act on a CancelRequest: sent straight
                    # to the primary while 210 clients ran through pgrouter, one took 5.8 s from connect to close
                    # (the postmaster's child handles it). pgrouter forwards every cancel
                    # (pgrouter_cancel_requests_total) but the query may end first. If it is still running 1.5 s
                    # later, one more is sent: the query is certainly still running then, so it cannot hit
                    # another client's query.
                    time.sleep(1.5)
                    if running():
                        outcome["resent"] = True
                        RESENT_CANCELS.append(self.index)
                        self.conn.cancel()
            except Exception as e:  # noqa: BLE001 - reported by the client thread
                outcome["error"] = f"{type(e).__name__}: {e}"

        thread = threading.Thread(target=canceller, daemon=True)
        thread.start()
        try:
            self.step("pg_sleep sent")
            self.conn.execute(f"select pg_sleep(5) /* {marker} */")
            thread.join(OP_TIMEOUT)
            raise Failure(f"client {self.index} cancel: pg_sleep(5) was not cancelled (canceller: {outcome})")
        except errors.QueryCanceled:
            took = time.monotonic() - outcome.get("sent", time.monotonic())
            self.step("pg_sleep cancelled")
        thread.join(OP_TIMEOUT)
        self.step("canceller done; select 42")
        self.check("error" not in outcome, f"canceller: {outcome.get('error')}")
        self.check(took < 2 or outcome.get("resent"), f"the query ended {took:.1f}s after the CancelRequest")
        self.check(self.conn.execute("select 42").fetchone() == (42,), "connection unusable after the cancel")

    # --- the client's life -------------------------------------------------------------------------------------

    def run(self):
        try:
            self.conn = psycopg.connect(self.dsn, autocommit=True, prepare_threshold=PREPARE_THRESHOLD,
                                        connect_timeout=30)
            kinds = list(MIX)
            weights = [MIX[k] for k in kinds]
            plan = self.rng.choices(kinds, weights, k=TXNS)
            if self.index < CANCEL_CLIENTS:
                for _ in range(CANCELS_PER_CLIENT):
                    plan[self.rng.randrange(len(plan))] = "cancel"
            for kind in plan:
                if time.monotonic() > self.deadline:
                    raise Failure(f"client {self.index}: out of time after {sum(self.counts.values())} operations")
                self.begin(kind)
                getattr(self, kind)()
            self.begin("final check")
            rows = self.conn.execute(f"select n, v from {self.table} where client = %s order by n",
                                     (self.index,)).fetchall()
            self.check(rows == sorted(self.model.items()), f"{len(rows)} rows, model has {len(self.model)}")
            self.conn.close()
        except Exception as e:  # noqa: BLE001 - every failure is reported with the client and operation
            self.errors.append(e if isinstance(e, Failure) else
                               Failure(f"client {self.index} {self.op}: {type(e).__name__}: {e}"))
            if self.conn is not None:
                self.conn.close()
        finally:
            self.done = True


def router_cpu(router):
    """User + system CPU seconds pgrouter has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{router.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def server_backends(cluster, conn):
    """(state, count) of the primary's backends of USER other than this connection."""
    return conn.execute("select coalesce(state, ''), count(*) from pg_stat_activity where usename = %s and "
                        "datname = 'app' and pid <> pg_backend_pid() group by 1 order by 1", (USER,)).fetchall()


def test_stress_transaction_pool(cluster, pgrouter):
    table = f"stress_{uuid.uuid4().hex[:10]}"
    router = pgrouter({"pool": {"mode": "transaction", "size": POOL_SIZE, "queue_size": 10 * CLIENTS,
                                "queue_timeout": "120s"},
                       "listen": {"max_client_conn": 2 * CLIENTS + 100}})
    with cluster.connect(user=USER) as setup:
        setup.execute(f"create table {table} (client int, n int, v int, primary key (client, n))")
    admin = cluster.connect(user="postgres")
    try:
        started = time.monotonic()
        deadline = started + RUN_TIMEOUT
        admin_dsn = cluster.dsn(user="postgres")
        clients = [Client(i, router.dsn(user=USER), admin_dsn, table, deadline) for i in range(CLIENTS)]
        threads = [threading.Thread(target=c.run, name=f"client-{c.index}", daemon=True) for c in clients]
        for t in threads:
            t.start()

        # Watch while it runs: pgrouter's servers never exceed the pool, and no operation hangs. (Its own gauges:
        # the primary may still list for a moment a backend pgrouter has closed, e.g. when a slot moves to the other
        # worker, so pg_stat_activity is checked only once things settle.)
        max_backends, hung = 0, {}
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            text = router.metrics()
            max_backends = max(max_backends, pgr.metric(text, "pgrouter_servers_active") +
                               pgr.metric(text, "pgrouter_servers_idle"))
            now = time.monotonic()
            for c in clients:
                if not c.done and now - c.op_started > OP_TIMEOUT:
                    if c.index not in hung:  # with pgrouter's pool state at that moment, to tell where it waits
                        state = {k: pgr.metric(text, f"pgrouter_{k}")
                                 for k in ("clients_waiting", "servers_active", "servers_idle")}
                        state["per worker"] = [line.replace("pgrouter_worker_", "") for line in text.splitlines()
                                               if line.startswith("pgrouter_worker_")]
                        hung[c.index] = (f"client {c.index} hung in {c.op} for > {OP_TIMEOUT:g}s "
                                         f"(steps so far: {list(c.steps)}; pgrouter: {state})")
            time.sleep(0.25)
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
        elapsed = time.monotonic() - started
        still_running = [c for c in clients if not c.done]

        counts = {}
        for c in clients:
            for k, n in c.counts.items():
                counts[k] = counts.get(k, 0) + n
        failures = [str(e) for c in clients for e in c.errors]
        cpu = os.times()
        kinds = {}
        for f in failures:
            key = re.sub(r"^client \d+ ", "", f)  # "operation: what went wrong"
            key = re.sub(r'"(pgr_|_pg3_)[0-9a-f_]+"', r'"\1..."', key)[:110]
            kinds[key] = kinds.get(key, 0) + 1
        print(f"\nstress: {CLIENTS} clients x {TXNS} transactions, pool {POOL_SIZE}, prepare_threshold "
              f"{PREPARE_THRESHOLD}: {elapsed:.1f}s, "
              f"{sum(counts.values())} operations {counts}; max server backends seen {max_backends}; "
              f"{len(failures)} client failures, {len(still_running)} clients still running; CPU seconds: this "
              f"process {cpu.user + cpu.system:.0f}, pgrouter {router_cpu(router):.0f}")
        print(f"  cancels sent twice (the first was not delivered): {len(RESENT_CANCELS)}; pool slots moved between "
              f"workers: {pgr.metric(router.metrics(), 'pgrouter_pool_slots_moved_total')}")
        for key, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
            print(f"  {n:4} x {key}")

        assert not still_running, (f"{len(still_running)} clients did not finish within {RUN_TIMEOUT:g}s: " +
                                   "; ".join(f"client {c.index} in {c.op}" for c in still_running[:10]))
        assert not hung, "; ".join(list(hung.values())[:10])
        cancel_log = [line for line in router.log().splitlines() if "cancel" in line][-10:]
        assert not failures, (f"{len(failures)} clients failed: " +
                              ", ".join(f"{n} x {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])) +
                              "\nfirst ones:\n" + "\n".join(failures[:15]) +
                              "\npgrouter's log about cancels:\n" + "\n".join(cancel_log))

        # Every client's rows, all together, as the clients' models say.
        expected_rows = sum(len(c.model) for c in clients)
        expected_sum = sum(c.model_sum() for c in clients)
        assert admin.execute(f"select count(*), coalesce(sum(v), 0) from {table}").fetchone() == \
            (expected_rows, expected_sum)

        # Nothing leaked: no client left, at most POOL_SIZE servers, all idle (not in a transaction).
        settle = time.monotonic() + 10
        while True:
            text = router.metrics()
            gauges = {name: pgr.metric(text, name) for name in
                      ("pgrouter_clients_connected", "pgrouter_clients_waiting", "pgrouter_servers_active",
                       "pgrouter_servers_idle")}
            backends = server_backends(cluster, admin)
            if (gauges["pgrouter_clients_connected"] == 0 and gauges["pgrouter_servers_active"] == 0
                    and all(state == "idle" for state, _ in backends)
                    and sum(n for _, n in backends) <= POOL_SIZE) or time.monotonic() > settle:
                break
            time.sleep(0.2)
        assert gauges["pgrouter_clients_connected"] == 0, gauges
        assert gauges["pgrouter_clients_waiting"] == 0, gauges
        assert gauges["pgrouter_servers_active"] == 0, gauges
        assert gauges["pgrouter_servers_idle"] <= POOL_SIZE, gauges
        assert sum(n for _, n in backends) <= POOL_SIZE, backends
        assert all(state == "idle" for state, _ in backends), backends
        assert max_backends <= POOL_SIZE, f"{max_backends} server connections seen during the run"
        assert elapsed < RUN_TIMEOUT
    finally:
        admin.close()
        with cluster.connect(user=USER) as cleanup:
            cleanup.execute(f"drop table if exists {table}")
