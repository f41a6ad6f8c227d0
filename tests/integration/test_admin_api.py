"""The HTTP API (/v1 on the admin server): the admin console's views and commands as JSON, for automation, with a
bearer token (admin.api_token_file / admin.api_token_env) for calls that change something and, by default,
read-only calls open on localhost."""
import http.client
import json
import subprocess
import time
import urllib.error
import urllib.request

import psycopg
import pytest

import pgr
from routing_util import wait_for
from test_admin_console import Background

TOKEN = "api-t0ken-for-tests"
API = {"admin": {"api_token_env": "PGR_TEST_API_TOKEN"}, "pool": {"mode": "transaction", "size": 4}}
ENV = {"PGR_TEST_API_TOKEN": TOKEN}


@pytest.fixture
def router(pgrouter):
    return pgrouter(API, env=ENV)


def call(router, path, method="GET", token=None, body=None, timeout=10):
    """(status, headers, JSON body) of one API call."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body.encode() if isinstance(body, str) else body
    if method == "POST" and data is None:
        data = b""
    req = urllib.request.Request(f"http://{pgr.HOST}:{router.admin_port}{path}", data=data, method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def call_from(router, source, path, token=None):
    """A GET from another loopback address (127.0.0.2: not localhost for the API)."""
    conn = http.client.HTTPConnection(pgr.HOST, router.admin_port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def records(view):
    """A view's rows as dicts by column name."""
    return [dict(zip(view["columns"], row)) for row in view["rows"]]


def pool_row(router, user="pgr_scram", database="app"):
    status, _, view = call(router, "/v1/pools")
    assert status == 200, view
    found = [r for r in records(view) if r["user"] == user and r["database"] == database]
    return found[0] if found else None


def test_views_reflect_a_client_in_a_transaction(router):
    with router.connect(autocommit=False) as client:
        client.execute("select 1")  # a transaction open: its server is held
        row = pool_row(router)
        assert row["cl_active"] == 1 and row["sv_active"] == 1, row
        assert row["pool_mode"] == "transaction" and row["shard"] == 0
        clients = records(call(router, "/v1/clients")[2])
        assert any(c["user"] == "pgr_scram" and c["state"] == "active" and c["port"] > 0 for c in clients)
        servers = records(call(router, "/v1/servers")[2])
        assert [s["state"] for s in servers] == ["active"]
        client.commit()
    assert pool_row(router)["sv_active"] == 0
    dbs = records(call(router, "/v1/databases")[2])
    assert [(d["name"], d["pool_size"], d["paused"], d["disabled"]) for d in dbs] == [("app", 4, 0, 0)]
    assert records(call(router, "/v1/stats")[2])[0]["total_query_count"] >= 1
    config = {r["key"]: r["value"] for r in records(call(router, "/v1/config")[2])}
    assert config["pool.size"] == "4" and config["admin.api_token"] == "(set)"
    assert config["admin.api_read_open"] == "localhost"
    assert records(call(router, "/v1/version")[2])[0]["version"].startswith("pgrouter ")
    backends = records(call(router, "/v1/backends")[2])
    assert [(b["database"], b["role"], b["state"]) for b in backends] == [("app", "primary", "up")]


def test_mutating_calls_need_the_token(router):
    status, headers, body = call(router, "/v1/pause", "POST")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert headers["WWW-Authenticate"] == "Bearer"
    status, _, body = call(router, "/v1/pause", "POST", token="wrong")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert [d["paused"] for d in records(call(router, "/v1/databases")[2])] == [0]  # nothing was paused
    status, _, body = call(router, "/v1/pause", "POST", token=TOKEN)
    assert status == 200 and body["ok"] is True, body
    status, _, body = call(router, "/v1/resume", "POST", token=TOKEN)
    assert status == 200 and body["ok"] is True, body
    status, _, body = call(router, "/v1/resume?database=app", "POST", token=TOKEN)  # not paused any more
    assert status == 409 and body["error"]["code"] == "conflict", body


def test_without_a_token_changes_are_refused_and_reads_open_on_localhost(pgrouter):
    router = pgrouter({"pool": {"mode": "transaction"}})
    status, _, body = call(router, "/v1/reload", "POST", token="anything")
    assert status == 403 and body["error"]["code"] == "api_token_not_configured", body
    assert call(router, "/v1/pools")[0] == 200
    status, body = call_from(router, "127.0.0.2", "/v1/pools")
    assert status == 403 and body["error"]["code"] == "forbidden", body


def test_reads_from_elsewhere_need_the_token(router):
    status, body = call_from(router, "127.0.0.2", "/v1/pools")
    assert status == 401 and body["error"]["code"] == "unauthorized", body
    status, body = call_from(router, "127.0.0.2", "/v1/pools", token=TOKEN)
    assert status == 200 and "columns" in body


def test_read_open_token_needs_it_on_localhost_too(pgrouter):
    router = pgrouter({**API, "admin": {**API["admin"], "api_read_open": "token"}}, env=ENV)
    assert call(router, "/v1/version")[0] == 401
    assert call(router, "/v1/version", token=TOKEN)[0] == 200


def test_pause_waits_for_transactions_and_holds_queries_until_resume(router):
    with router.connect(autocommit=False) as busy, router.connect() as idle:
        busy.execute("select 1")
        pause = Background(lambda: call(router, "/v1/pause?database=app", "POST", token=TOKEN, timeout=30))
        time.sleep(0.5)
        assert pause.is_alive(), "the pause was answered while a transaction was open"
        busy.commit()
        pause.join(5)
        assert not pause.is_alive() and pause.error is None, pause.error
        assert pause.result[0] == 200 and pause.result[2] == {"ok": True, "action": "pause", "database": "app"}
        held = Background(lambda: idle.execute("select 42").fetchone()[0])
        time.sleep(0.5)
        assert held.is_alive(), "a query ran on a paused database"
        assert [d["paused"] for d in records(call(router, "/v1/databases")[2])] == [1]
        assert pool_row(router)["cl_waiting"] == 1
        status, _, body = call(router, "/v1/resume", "POST", token=TOKEN, body=json.dumps({"database": "app"}))
        assert status == 200, body
        held.join(5)
        assert held.result == 42, held.error


def test_disable_refuses_new_logins_until_enable(router):
    with router.connect() as existing:
        assert call(router, "/v1/disable?database=app", "POST", token=TOKEN)[0] == 200
        with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
            router.connect()
        assert existing.execute("select 1").fetchone() == (1,)
        assert call(router, "/v1/enable", "POST", token=TOKEN, body="database=app")[0] == 200
        with router.connect() as again:
            assert again.execute("select 1").fetchone() == (1,)
    status, _, body = call(router, "/v1/disable?database=nosuchdb", "POST", token=TOKEN)
    assert status == 400 and body["error"]["code"] == "bad_request", body
    status, _, body = call(router, "/v1/disable", "POST", token=TOKEN)
    assert status == 400 and body["error"]["code"] == "bad_request", body


def test_kill_ends_the_databases_clients(router):
    with router.connect() as victim:
        victim.execute("select 1")
        assert call(router, "/v1/kill?database=app", "POST", token=TOKEN)[0] == 200
        with pytest.raises(psycopg.OperationalError, match="killed from the admin console"):
            victim.execute("select 1")
    assert call(router, "/v1/resume?database=app", "POST", token=TOKEN)[0] == 200


def test_reload_applies_a_changed_config_and_rereads_the_token_file(pgrouter, tmp_path):
    token_file = tmp_path / "api-token"
    token_file.write_text("first-token\n")
    config = {"admin": {"api_token_file": str(token_file)}, "pool": {"mode": "transaction", "size": 4}}
    router = pgrouter(config)
    router._write_config({**config, "pool": {"mode": "transaction", "size": 7}})
    status, _, body = call(router, "/v1/reload", "POST", token="first-token")
    assert status == 200 and body["ok"] is True, body
    values = {r["key"]: r["value"] for r in records(call(router, "/v1/config")[2])}
    assert values["pool.size"] == "7"
    token_file.write_text("  second-token  \n")
    assert call(router, "/v1/reload", "POST", token="first-token")[0] == 200
    assert call(router, "/v1/reload", "POST", token="first-token")[0] == 401
    router._write_config({**config, "pool": {"mode": "bogus"}})
    status, _, body = call(router, "/v1/reload", "POST", token="second-token")
    assert status == 409 and body["error"]["code"] == "reload_failed", body
    assert "RELOAD failed" in body["error"]["message"]


def test_drain_stops_accepting(router):
    with router.connect() as client:
        client.execute("select 1")
        status, _, body = call(router, "/v1/drain", "POST", token=TOKEN)
        assert status == 200 and body["ok"] is True, body
        wait_for(lambda: not pgr.port_accepts(router.port), timeout=5, what="the listener to close")
    wait_for(lambda: router.proc.poll() is not None, timeout=10, what="pgrouter to exit after the drain")
    assert router.proc.returncode == 0


def test_unknown_path_and_wrong_method(router):
    status, _, body = call(router, "/v1/nothing")
    assert status == 404 and body["error"]["code"] == "unknown_path", body
    status, headers, body = call(router, "/v1/pools", "POST", token=TOKEN)
    assert status == 405 and body["error"]["code"] == "method_not_allowed" and headers["Allow"] == "GET"
    status, headers, body = call(router, "/v1/pause", "GET", token=TOKEN)
    assert status == 405 and headers["Allow"] == "POST"
    status, _, body = call(router, "/v1/kill", "POST", token=TOKEN, body="{bad json")
    assert status == 400 and body["error"]["code"] == "bad_request"


def test_check_config_needs_a_readable_token_file(cluster, tmp_path):
    config = pgr.default_config(cluster, pgr.free_port(), pgr.free_port())
    config["admin"]["api_token_file"] = str(tmp_path / "missing-token")
    path = tmp_path / "pgrouter.yaml"
    path.write_text(pgr.to_yaml(config))
    out = subprocess.run([str(pgr.pgrouter_bin()), "--check-config", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1 and "api_token_file" in out.stderr, out.stderr
    (tmp_path / "missing-token").write_text("tok\n")
    out = subprocess.run([str(pgr.pgrouter_bin()), "--check-config", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr


def test_views_are_the_consoles_result_sets(pgrouter):
    router = pgrouter({**API, "admin": {**API["admin"], "admin_users": ["postgres"]}}, env=ENV)
    with router.connect(user="postgres", dbname="pgrouter") as console:
        for view, command in (("pools", "SHOW POOLS"), ("databases", "SHOW DATABASES"), ("config", "SHOW CONFIG"),
                              ("backends", "SHOW BACKENDS"), ("version", "SHOW VERSION")):
            cur = console.execute(command)
            status, _, body = call(router, f"/v1/{view}")
            assert status == 200 and body["columns"] == [d.name for d in cur.description], view
            assert [list(r) for r in cur.fetchall()] == body["rows"], view
