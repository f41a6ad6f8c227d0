"""Transaction pooling (pool.mode: transaction): a server is attached at a transaction's first message and
given back at ReadyForQuery 'I' once nothing is in flight; many clients share a few servers.
Prepared statements and settings that follow a client across servers: test_txn_state.py."""
import os
import subprocess
import threading
import time

import psycopg
import pytest

import pgr

TXN = {"pool": {"mode": "transaction", "size": 2}, "listen": {"workers": 1}}



@pytest.mark.parametrize("mode, send_batching", [("simple", "io_uring"), ("extended", "io_uring"),
                                                  ("prepared", "io_uring"), ("simple", "off"), ("extended", "off")])
def test_pgbench_many_clients_few_servers(pgrouter, pgbench_tables, mode, send_batching):
    """pgbench's writing transactions (-b tpcb-like) through 2 servers, with the relay's sends batched through
    io_uring (the default) and made one by one (listen.send_batching: off, also what runs where io_uring is
    unavailable)."""
    env = {**os.environ, "PGPASSWORD": pgr.USERS["pgr_scram"]}
    router = pgrouter({**TXN, "listen": {**TXN["listen"], "send_batching": send_batching}})
    # -M prepared prepares each statement synchronously at first use, blocking its whole thread: with several
    # clients per thread holding the few servers in transactions that would deadlock pgbench itself (with any
    # transaction pooler), so each client gets its own thread there.
    threads = "16" if mode == "prepared" else "2"
    result = subprocess.run(["pgbench", "-M", mode, "-c", "16", "-j", threads, "-t", "100", "-h", pgr.HOST, "-p",
                             str(router.port), "-U", "pgr_scram", "app"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "number of transactions actually processed: 1600/1600" in result.stdout
    assert "number of failed transactions: 0" in result.stdout
    pgr.wait_metric(router, "pgrouter_servers_active", 0)
    assert pgr.metric(router.metrics(), "pgrouter_server_connections_total") <= 2  # 16 clients, 2 servers


def test_transaction_keeps_its_server_and_idle_clients_hold_none(pgrouter):
    router = pgrouter(TXN)
    clients = [router.connect() for _ in range(20)]
    pgr.wait_metric(router, "pgrouter_servers_active", 0)
    a, b = clients[0], clients[1]
    a.execute("begin")
    pid = a.execute("select pg_backend_pid()").fetchone()[0]
    for _ in range(5):
        assert b.execute("select pg_backend_pid()").fetchone()[0] != pid  # a's server is taken
        assert a.execute("select pg_backend_pid()").fetchone()[0] == pid
    pgr.wait_metric(router, "pgrouter_servers_active", 1)
    a.execute("commit")
    pgr.wait_metric(router, "pgrouter_servers_active", 0)
    for c in clients:
        assert c.execute("select 1").fetchone() == (1,)
        c.close()


def test_failed_transaction_keeps_server_until_rollback(pgrouter):
    router = pgrouter(TXN)
    with router.connect() as a, router.connect() as b:
        a.execute("begin")
        pid = a.execute("select pg_backend_pid()").fetchone()[0]
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("select 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            a.execute("select 1")
        assert b.execute("select pg_backend_pid()").fetchone()[0] != pid
        a.execute("rollback")
        assert a.execute("select 1").fetchone() == (1,)


def test_concurrent_transactions_all_commit(pgrouter):
    router = pgrouter(TXN)
    with router.connect() as setup:
        setup.execute("drop table if exists txn_pool_rows; create table txn_pool_rows (client int, n int)")
    errors = []

    def worker(i):
        try:
            with router.connect(autocommit=False, prepare_threshold=1) as c:  # named statements, any server
                for n in range(20):
                    c.execute("insert into txn_pool_rows values (%s, %s)", (i, n))
                    c.execute("insert into txn_pool_rows values (%s, %s)", (i, -n))
                    c.commit()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with router.connect() as check:
        assert check.execute("select count(*), sum(n) from txn_pool_rows").fetchone() == (30 * 40, 0)


def test_clients_in_line_for_a_busy_server(pgrouter):
    """Every server busy: a transaction's first query waits in line (FIFO) for the next server given back,
    and past pool.queue_timeout gets 53300, not a hang; the pgrouter_clients_waiting gauge follows."""
    router = pgrouter({"pool": {"mode": "transaction", "size": 1, "queue_timeout": "1s"}, "listen": {"workers": 1}})
    holder = router.connect(autocommit=True)
    holder.execute("begin")
    holder.execute("select 1")  # holds the only server
    late = router.connect(autocommit=True)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as info:
        late.execute("select 2")
    assert 0.8 <= time.monotonic() - started < 5
    assert "53300" in str(info.value) or "waiting for a server connection" in str(info.value)
    assert pgr.metric(router.metrics(), "pgrouter_clients_waiting") == 0

    waiters = [router.connect(autocommit=True) for _ in range(3)]
    results, ran_at = {}, {}

    def wait(i):
        results[i], ran_at[i] = waiters[i].execute("select %s::int, clock_timestamp()", (i,)).fetchone()

    threads = []
    for i in range(3):
        threads.append(threading.Thread(target=wait, args=(i,)))
        threads[-1].start()
        time.sleep(0.15)  # in line in this order
    assert results == {}
    assert pgr.metric(router.metrics(), "pgrouter_clients_waiting") == 3
    holder.execute("commit")
    for t in threads:
        t.join(10)
    assert results == {0: 0, 1: 1, 2: 2}
    assert ran_at[0] < ran_at[1] < ran_at[2]  # served in the order they came
    assert pgr.metric(router.metrics(), "pgrouter_clients_waiting") == 0
    assert holder.execute("select 7").fetchone() == (7,)  # the server is still good
    for c in waiters + [holder]:
        c.close()


def test_startup_settings_follow_the_client_to_any_server(pgrouter):
    router = pgrouter({"pool": {"mode": "transaction", "size": 1}, "listen": {"workers": 1}})
    one = psycopg.connect(router.dsn() + " application_name=one options='-c statement_timeout=1111'",
                          autocommit=True)
    two = psycopg.connect(router.dsn() + " application_name=two options='-c statement_timeout=2222'",
                          autocommit=True)
    # The welcome shows each client its own startup values (the second login's welcome comes from the pool's
    # cached server parameters with the client's settings over them).
    assert one.info.parameter_status("application_name") == "one"
    assert two.info.parameter_status("application_name") == "two"
    for _ in range(3):
        assert one.execute("select current_setting('application_name'), "
                           "current_setting('statement_timeout')").fetchone() == ("one", "1111ms")
        assert two.execute("select current_setting('application_name'), "
                           "current_setting('statement_timeout')").fetchone() == ("two", "2222ms")
    one.close()
    two.close()


def test_pipeline_with_error_answers_every_sync(pgrouter):
    router = pgrouter(TXN)
    with pgr.Raw(router.port) as raw:
        raw.startup("pgr_scram", password=pgr.USERS["pgr_scram"])
        batch = b""
        for sql in ["select 1", "select 1/0", "select 3"]:
            batch += pgr.parse(sql) + pgr.bind() + pgr.execute() + pgr.sync()
        raw.send(batch)
        readies, rows, errors = 0, [], []
        while readies < 3:
            kind, payload = raw.read_message()
            assert kind != ""
            if kind == "Z":
                readies += 1
            elif kind == "D":
                rows.append(pgr.parse_data_row(payload))
            elif kind == "E":
                errors.append(pgr.parse_error_fields(payload)["code"])
        assert rows == [["1"], ["3"]] and errors == ["22012"]
        rows, err = raw.simple_query("select 4")
        assert rows == [["4"]] and err is None
    pgr.wait_metric(router, "pgrouter_servers_active", 0)


def test_listen_works_under_transaction_pooling(pgrouter):
    router = pgrouter(TXN)
    with router.connect() as listener, router.connect() as sender:
        listener.execute("listen txn_chan")
        sender.execute("notify txn_chan, 'hello'")
        note = next(listener.notifies())
        assert (note.channel, note.payload) == ("txn_chan", "hello")


def test_pool_mode_per_user(pgrouter):
    """users[].pool_mode overrides the pool mode: pgr_md5 is transaction-pooled, pgr_scram session-pooled."""
    users = [{"name": n, "password": p, **({"pool_mode": "transaction"} if n == "pgr_md5" else {})}
             for n, p in pgr.USERS.items()]
    router = pgrouter({"pool": {"mode": "session"}, "users": users})
    with router.connect(user="pgr_md5") as txn:
        assert txn.execute("select 1").fetchone() == (1,)
        pgr.wait_metric(router, "pgrouter_servers_active", 0)  # given back after the transaction
        with router.connect(user="pgr_scram") as session:
            assert session.execute("select 1").fetchone() == (1,)
            pgr.wait_metric(router, "pgrouter_servers_active", 1)  # kept for the session
