"""The admin console: a virtual database (admin.database, default "pgrouter"; "pgbouncer" too) on the client
listener that answers PgBouncer's SHOW, PAUSE, RESUME, DISABLE, ENABLE, KILL, RELOAD and SHUTDOWN, to
admin.admin_users (every command) and admin.stats_users (SHOW only), through psql and psycopg."""
import os
import signal
import subprocess
import threading
import time

import psycopg
import pytest

import pgr
from routing_util import wait_for

ADMIN = "postgres"  # in admin.admin_users
STATS = "pgr_md5"  # in admin.stats_users
CONSOLE = {"admin": {"admin_users": [ADMIN], "stats_users": [STATS]}, "pool": {"mode": "transaction", "size": 4}}


@pytest.fixture
def router(pgrouter):
    return pgrouter(CONSOLE)


def console(router, user=ADMIN, dbname="pgrouter"):
    return router.connect(user=user, dbname=dbname)


def rows(conn, sql):
    """The rows of a console command as dicts by column name."""
    cur = conn.execute(sql)
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def pool_row(conn, user="pgr_scram", database="app"):
    found = [r for r in rows(conn, "SHOW POOLS") if r["user"] == user and r["database"] == database]
    return found[0] if found else None


def psql(router, sql, user=ADMIN, dbname="pgrouter"):
    env = {**os.environ, "PGPASSWORD": pgr.USERS[user]}
    return subprocess.run(["psql", "-X", "-h", pgr.HOST, "-p", str(router.port), "-U", user, "-d", dbname, "-A",
                           "-F", "|", "-c", sql], capture_output=True, text=True, env=env, timeout=30)


class Background(threading.Thread):
    """Runs fn in a thread; result or exception kept."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None
        self.start()

    def run(self):
        try:
            self.result = self.fn()
        except Exception as e:  # noqa: BLE001 (reported by the test)
            self.error = e


def test_show_pools_reflects_a_transaction_psycopg_and_psql(router):
    with router.connect(autocommit=False) as client, console(router) as admin:
        client.execute("select 1")  # a transaction open: its server is held
        row = pool_row(admin)
        assert row["cl_active"] == 1 and row["sv_active"] == 1, row
        assert row["pool_mode"] == "transaction" and row["shard"] == 0
        assert row["backend"] == f"{pgr.HOST}:{router.cluster.primary_port}"
        out = psql(router, "SHOW POOLS")
        assert out.returncode == 0, out.stderr
        header = out.stdout.splitlines()[0].split("|")
        assert header[:12] == ["database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used",
                               "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode"]
        line = [l.split("|") for l in out.stdout.splitlines()[1:] if l.startswith("app|pgr_scram|")][0]
        assert line[2] == "1" and line[4] == "1", out.stdout
        client.commit()
        row = pool_row(admin)
        assert row["sv_active"] == 0 and row["sv_idle"] == 1, row


def test_show_commands_answer(router):
    with router.connect() as client, console(router) as admin:
        client.execute("select 1")
        clients = rows(admin, "show clients;")
        assert {(c["user"], c["database"]) for c in clients} >= {("pgr_scram", "app"), (ADMIN, "pgrouter")}
        assert all(c["type"] == "C" and c["addr"] == pgr.HOST and c["port"] > 0 for c in clients)
        servers = rows(admin, "SHOW SERVERS")
        assert [s["state"] for s in servers] == ["idle"] and servers[0]["port"] == router.cluster.primary_port
        dbs = rows(admin, "SHOW DATABASES")
        assert [(d["name"], d["pool_size"], d["paused"], d["disabled"]) for d in dbs] == [("app", 4, 0, 0)]
        stats = rows(admin, "SHOW STATS")
        assert stats[0]["total_query_count"] >= 1 and stats[0]["total_received"] > 0
        config = {r["key"]: r for r in rows(admin, "SHOW CONFIG")}
        assert config["pool.size"]["value"] == "4" and config["pool.size"]["default"] == "20"
        assert config["listen.port"]["changeable"] == "no"
        assert rows(admin, "SHOW VERSION")[0]["version"].startswith("pgrouter ")
        backends = rows(admin, "SHOW BACKENDS")
        assert [(b["database"], b["role"], b["state"]) for b in backends] == [("app", "primary", "up")]
    out = psql(router, "SHOW VERSION", dbname="pgbouncer")  # PgBouncer's name for it works too
    assert out.returncode == 0 and "pgrouter " in out.stdout, out.stderr


def test_int8_columns(router):
    with console(router) as admin:
        cur = admin.execute("SHOW POOLS")
        types = {d.name: d.type_code for d in cur.description}
        assert types["cl_active"] == 20 and types["database"] == 25


def test_stats_user_shows_but_cannot_change(router):
    with console(router, user=STATS) as stats:
        assert rows(stats, "SHOW POOLS") is not None
        for command in ("PAUSE", "RESUME", "RELOAD", "KILL app", "DISABLE app", "SHUTDOWN"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="admin access needed"):
                stats.execute(command)
        assert rows(stats, "SHOW VERSION")  # still usable


def test_other_users_are_refused(router):
    with pytest.raises(psycopg.OperationalError, match="not allowed"):
        console(router, user="pgr_clear")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        router.connect(user=ADMIN, password="wrong", dbname="pgrouter")
    out = psql(router, "SHOW POOLS", user="pgr_clear")
    assert out.returncode != 0 and "not allowed" in out.stderr


def test_pause_waits_for_transactions_and_holds_new_ones_until_resume(router):
    with router.connect(autocommit=False) as busy, router.connect() as idle, console(router) as admin:
        busy.execute("select 1")
        pause = Background(lambda: admin.execute("PAUSE app"))
        time.sleep(0.5)
        assert pause.is_alive(), "PAUSE answered while a transaction was open"
        busy.commit()
        pause.join(5)
        assert not pause.is_alive() and pause.error is None, pause.error
        held = Background(lambda: idle.execute("select 42").fetchone()[0])
        time.sleep(0.5)
        assert held.is_alive(), "a query ran on a paused database"
        with console(router) as other:
            assert [r["paused"] for r in rows(other, "SHOW DATABASES")] == [1]
            assert pool_row(other)["cl_waiting"] == 1
            other.execute("RESUME app")
        held.join(5)
        assert held.result == 42, held.error


def test_disable_refuses_new_logins_until_enable(router):
    with router.connect() as existing, console(router) as admin:
        admin.execute("DISABLE app")
        with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
            router.connect()
        assert existing.execute("select 1").fetchone() == (1,)  # clients already in are left alone
        admin.execute("ENABLE app")
        with router.connect() as again:
            assert again.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InvalidCatalogName):
            admin.execute("DISABLE nosuchdb")


def test_reload_applies_a_changed_config(router):
    with console(router) as admin:
        router._write_config({**CONSOLE, "pool": {"mode": "transaction", "size": 7}})
        admin.execute("RELOAD")
        config = {r["key"]: r["value"] for r in rows(admin, "SHOW CONFIG")}
        assert config["pool.size"] == "7"
        assert [d["pool_size"] for d in rows(admin, "SHOW DATABASES")] == [7]
        router._write_config({**CONSOLE, "pool": {"mode": "bogus"}})
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="RELOAD failed"):
            admin.execute("RELOAD")
        assert rows(admin, "SHOW VERSION")


def test_kill_drops_the_databases_clients(router):
    with router.connect() as victim, console(router) as admin:
        victim.execute("select 1")
        admin.execute("KILL app")
        with pytest.raises(psycopg.OperationalError, match="killed from the admin console"):
            victim.execute("select 1")
        assert [s for s in rows(admin, "SHOW SERVERS")] == []
        assert [r["paused"] for r in rows(admin, "SHOW DATABASES")] == [1]  # as PgBouncer: paused until RESUME
        admin.execute("RESUME app")
        with router.connect() as again:
            assert again.execute("select 1").fetchone() == (1,)


def test_wait_close_waits_for_the_servers_a_reload_retired(pgrouter, cluster):
    session_pooled = {**CONSOLE, "pool": {"mode": "session", "size": 4}}
    router = pgrouter(session_pooled)
    with router.connect() as held, console(router) as admin:
        held.execute("select 1")
        assert [s["close_needed"] for s in rows(admin, "SHOW SERVERS")] == [0]
        admin.execute("WAIT_CLOSE")  # nothing retired: answered at once
        tail = router.reload({**session_pooled,
                              "databases": [{"name": "app", "shards": [{"primary": cluster.endpoint("replica")}]}]})
        assert "configuration reloaded" in tail
        assert [s["close_needed"] for s in rows(admin, "SHOW SERVERS")] == [1]
        with console(router) as other:
            assert rows(other, "SHOW CLIENTS")[0]["close_needed"] == 0
            waiting = Background(lambda: other.execute("WAIT_CLOSE app"))
            time.sleep(0.5)
            assert waiting.is_alive(), "WAIT_CLOSE answered while a retired server was in use"
            assert held.execute("select pg_is_in_recovery()").fetchone() == (False,)  # still the old target
            held.close()
            waiting.join(5)
            assert not waiting.is_alive() and waiting.error is None, waiting.error
            assert waiting.result.statusmessage == "WAIT_CLOSE"
        with router.connect() as fresh:
            assert fresh.execute("select pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.InvalidCatalogName):
            admin.execute("WAIT_CLOSE nosuchdb")


def test_unknown_command_keeps_the_session(router):
    with console(router) as admin:
        with pytest.raises(psycopg.errors.SyntaxError) as err:
            admin.execute("SHOW NONSENSE")
        assert "SHOW POOLS" in (err.value.diag.message_hint or "")
        assert rows(admin, "show   version ;")
    out = psql(router, "select 1")
    assert out.returncode != 0 and "unknown command" in out.stderr


def test_psycopg_without_autocommit_gets_an_error_for_its_begin(router):
    # As with PgBouncer's console: psycopg opens a transaction first (BEGIN), which the console refuses.
    with console(router) as admin, router.connect(user=ADMIN, dbname="pgrouter", autocommit=False) as plain:
        with pytest.raises((psycopg.errors.SyntaxError, psycopg.errors.FeatureNotSupported)):
            plain.execute("SHOW VERSION")
        assert rows(admin, "SHOW VERSION")


def test_extended_protocol_is_refused(router):
    with pgr.Raw(router.port) as raw:
        raw.startup(ADMIN, "pgrouter", pgr.USERS[ADMIN])
        raw.send(pgr.parse("SHOW POOLS") + pgr.bind() + pgr.execute() + pgr.sync())
        messages = raw.read_until_ready()
        errors = [pgr.parse_error_fields(p) for k, p in messages if k == "E"]
        assert [(e["code"], e["message"]) for e in errors] == [
            ("0A000", "the admin console accepts only simple queries")]
        assert messages[-1] == ("Z", b"I")
        result, error = raw.simple_query("SHOW VERSION")
        assert error is None and len(result) == 1
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="only simple queries"):
        with console(router) as admin:
            admin.execute("SHOW POOLS WHERE %s", (1,))  # parameters: the extended protocol


def test_shutdown_drains(router):
    with router.connect() as client, console(router) as admin:
        admin.execute("SHUTDOWN")
        wait_for(lambda: router.proc.poll() is not None, timeout=10, what="pgrouter to exit after SHUTDOWN")
    assert router.proc.returncode == 0


def test_session_pooled_login_waits_while_paused(pgrouter):
    router = pgrouter({**CONSOLE, "pool": {"mode": "session"}})
    with console(router) as admin:
        admin.execute("PAUSE app")  # no client yet: answered at once
        login = Background(lambda: router.connect().execute("select 7").fetchone()[0])
        time.sleep(0.5)
        assert login.is_alive(), "a session-pooled login got a server while paused"
        admin.execute("RESUME")
        login.join(5)
        assert login.result == 7, login.error


def test_sigterm_ends_console_sessions(router):
    with pgr.Raw(router.port) as raw:
        raw.startup(ADMIN, "pgrouter", pgr.USERS[ADMIN])
        started = time.monotonic()
        router.proc.send_signal(signal.SIGTERM)
        messages = raw.read_until((), timeout=5)
        errors = [pgr.parse_error_fields(p) for k, p in messages if k == "E"]
        assert [(e["S"], e["code"]) for e in errors] == [("FATAL", "57P01")], messages
    wait_for(lambda: router.proc.poll() is not None, timeout=5, what="pgrouter to exit")
    assert time.monotonic() - started < 4  # not held until listen.shutdown_timeout (5s)
