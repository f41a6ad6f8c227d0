"""Users and databases not in pgrouter's config (docs/AUTH.md): auth_query, auth_file and the fallback "*" database,
against the real test cluster."""
import os
import time

import psycopg
import pytest

import pgr

AQ_SCRAM = ("pgr_aq_scram", "aq_scram_pw")  # created here, SCRAM-stored; the servers' hba asks SCRAM of it


@pytest.fixture(scope="module", autouse=True)
def lookup_roles(cluster):
    """A SCRAM role that no pgrouter config below lists (pgr_md5, md5-stored, comes from tests/sql/roles.sql)."""
    drop_role(cluster)
    with cluster.connect(user="postgres", dbname="postgres") as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(f"CREATE ROLE {AQ_SCRAM[0]} LOGIN PASSWORD '{AQ_SCRAM[1]}'")
        conn.execute(f"GRANT CONNECT ON DATABASE app TO {AQ_SCRAM[0]}")
    yield
    drop_role(cluster)


def drop_role(cluster):
    with cluster.connect(user="postgres", dbname="postgres") as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (AQ_SCRAM[0],)).fetchone():
            conn.execute(f"REVOKE ALL ON DATABASE app FROM {AQ_SCRAM[0]}")
            conn.execute(f"DROP ROLE {AQ_SCRAM[0]}")


# Only the superuser is configured (it runs auth_query); pgr_md5 gets md5, everyone else SCRAM, as the servers do.
AUTH_RULES = [
    {"method": "md5", "users": ["pgr_md5"], "addresses": ["127.0.0.1/32"]},
    {"method": "scram-sha-256", "users": ["all"], "databases": ["all"], "addresses": ["127.0.0.1/32"]},
]
ONLY_POSTGRES = [{"name": "postgres", "password": pgr.USERS["postgres"]}]


def lookup_config(**auth_sources):
    return {"users": ONLY_POSTGRES, "auth": AUTH_RULES,
            "auth_sources": {"auth_user": "postgres", **auth_sources}}


def login_error(port, user, password, dbname="app"):
    """(SQLSTATE, message) of the ErrorResponse a raw login gets; fails the test if the login succeeds."""
    with pgr.Raw(port) as raw:
        try:
            raw.startup(user, dbname, password)
        except pgr.RawError as e:
            return e.fields.get("code"), e.fields.get("message", "") + " " + e.fields.get("hint", "")
    pytest.fail(f"login as {user!r} to {dbname!r} unexpectedly succeeded")


def current(conn):
    return conn.execute("SELECT current_user, current_database()").fetchone()


def test_auth_query_scram_user_logs_in_and_is_served(pgrouter):
    router = pgrouter(lookup_config())
    for _ in range(3):  # the first runs the query, the next ones use the cached answer
        with router.connect(user=AQ_SCRAM[0], password=AQ_SCRAM[1]) as conn:
            assert current(conn) == (AQ_SCRAM[0], "app")
    # The server login used the client's SCRAM keys: pgrouter never had the password.
    assert "auth_query failed" not in router.log()


def test_auth_query_scram_user_in_transaction_pooling(pgrouter):
    router = pgrouter({**lookup_config(), "pool": {"mode": "transaction"}})
    with router.connect(user=AQ_SCRAM[0], password=AQ_SCRAM[1]) as conn:
        for _ in range(3):
            assert current(conn) == (AQ_SCRAM[0], "app")


def test_auth_query_md5_user_logs_in_with_its_hash(pgrouter):
    router = pgrouter(lookup_config())
    with router.connect(user="pgr_md5", password=pgr.USERS["pgr_md5"]) as conn:
        assert current(conn) == ("pgr_md5", "app")


@pytest.mark.parametrize("user,password", [(AQ_SCRAM[0], "wrong"), ("pgr_md5", "wrong"),
                                           ("pgr_nobody_at_all", "whatever")])
def test_wrong_password_and_unknown_user_fail_as_postgresql_does(pgrouter, cluster, user, password):
    router = pgrouter(lookup_config())
    via_router = login_error(router.port, user=user, password=password)
    direct = login_error(cluster.primary_port, user, password)
    assert via_router[0] == direct[0] == "28P01", (via_router, direct)
    assert f'password authentication failed for user "{user}"' in via_router[1]
    # The unknown user's negative answer is cached and gives the same answer again.
    assert login_error(router.port, user=user, password=password)[0] == "28P01"


def test_auth_query_through_a_security_definer_function(pgrouter, cluster):
    with cluster.connect(user="postgres", dbname="app") as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS pgrouter_auth")
        conn.execute("""
            CREATE OR REPLACE FUNCTION pgrouter_auth.lookup(i_username text, OUT usename name, OUT passwd text)
            RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS
            $$ SELECT rolname, rolpassword FROM pg_authid WHERE rolname = i_username AND rolcanlogin $$""")
    try:
        router = pgrouter(lookup_config(auth_query="SELECT usename, passwd FROM pgrouter_auth.lookup($1)"))
        with router.connect(user=AQ_SCRAM[0], password=AQ_SCRAM[1]) as conn:
            assert current(conn) == (AQ_SCRAM[0], "app")
    finally:
        with cluster.connect(user="postgres", dbname="app") as conn:
            conn.execute("DROP SCHEMA pgrouter_auth CASCADE")


def test_configured_users_come_first(pgrouter):
    # pgr_scram is configured with another password than the server's: the config wins over auth_query.
    users = ONLY_POSTGRES + [{"name": "pgr_scram", "password": "config_pw", "backend_password": "scram_pw"}]
    router = pgrouter({**lookup_config(), "users": users})
    with router.connect(user="pgr_scram", password="config_pw") as conn:
        assert current(conn)[0] == "pgr_scram"
    assert login_error(router.port, user="pgr_scram", password="scram_pw")[0] == "28P01"


def test_auth_server_down_gives_a_clear_error_and_others_are_served(pgrouter, cluster):
    dead = {"host": pgr.HOST, "port": pgr.free_port()}
    config = lookup_config(auth_dbname="authdb")
    config["databases"] = [{"name": "app", "shards": [{"primary": cluster.endpoint("primary")}]},
                           {"name": "authdb", "shards": [{"primary": dead}], "pool": {"connect_timeout": "1s"}}]
    router = pgrouter(config)
    for _ in range(2):  # a failure is not cached: each login tries again
        code, text = login_error(router.port, user=AQ_SCRAM[0], password=AQ_SCRAM[1])
        assert code == "08001", text
        assert 'could not run auth_query on database "authdb"' in text
    with router.connect(user="postgres") as conn:  # configured users do not need the lookup
        assert current(conn) == ("postgres", "app")
    assert router.running


def test_auth_file_is_read_and_reread_when_it_changes(pgrouter, tmp_path):
    userlist = tmp_path / "userlist.txt"
    userlist.write_text('; users pgrouter takes from the file\n"pgr_nobody" "x"\n')
    # pgr_clear: the servers ask it for a cleartext password, which the file's plaintext answers.
    router = pgrouter({"users": ONLY_POSTGRES, "auth_sources": {"auth_file": str(userlist)}})
    assert login_error(router.port, user="pgr_clear", password="clear_pw")[0] == "28P01"

    userlist.write_text('"pgr_clear" "clear_pw"\n"pgr_nobody" "x"\n')
    os.utime(userlist, (time.time() + 5, time.time() + 5))  # a new time even within the clock's resolution
    with router.connect(user="pgr_clear", password="clear_pw") as conn:
        assert current(conn) == ("pgr_clear", "app")

    # An md5 hash in the file: pgr_md5 checked with md5 and logged in to the md5 server with the hash alone.
    import hashlib
    md5 = "md5" + hashlib.md5(b"md5_pwpgr_md5").hexdigest()
    userlist.write_text(f'"pgr_clear" "changed"\n"pgr_md5" "{md5}"\n')
    os.utime(userlist, (time.time() + 10, time.time() + 10))
    assert login_error(router.port, user="pgr_clear", password="clear_pw")[0] == "28P01"
    router.reload({"users": ONLY_POSTGRES, "auth": AUTH_RULES, "auth_sources": {"auth_file": str(userlist)}})
    with router.connect(user="pgr_md5", password="md5_pw") as conn:
        assert current(conn) == ("pgr_md5", "app")


def test_auth_file_reread_on_reload_even_with_the_same_time(pgrouter, tmp_path):
    userlist = tmp_path / "userlist.txt"
    userlist.write_text('"pgr_clear" "wrong_pw"\n')
    stamp = (time.time() - 100, time.time() - 100)
    os.utime(userlist, stamp)
    overrides = {"users": ONLY_POSTGRES, "auth_sources": {"auth_file": str(userlist)}}
    router = pgrouter(overrides)
    assert login_error(router.port, user="pgr_clear", password="clear_pw")[0] == "28P01"
    userlist.write_text('"pgr_clear" "clear_pw"\n')  # same size, and the old time put back
    os.utime(userlist, stamp)
    router.reload(overrides)
    with router.connect(user="pgr_clear", password="clear_pw") as conn:
        assert current(conn)[0] == "pgr_clear"


def fallback_config(cluster, **extra):
    return {"databases": [{"name": "aliased", "dbname": "app", "shards": [{"primary": cluster.endpoint("primary")}]},
                          {"name": "*", "shards": [{"primary": cluster.endpoint("primary")}]}],
            "admin": {"admin_users": ["postgres"]}, **extra}


def test_fallback_database_serves_any_name(pgrouter, cluster):
    router = pgrouter(fallback_config(cluster))
    for name in ("postgres", "template1", "app"):
        with router.connect(user="postgres", dbname=name) as conn:
            assert current(conn) == ("postgres", name)
    # A listed entry is not shadowed: "aliased" is the server's app, not a database named aliased.
    with router.connect(user="postgres", dbname="aliased") as conn:
        assert current(conn) == ("postgres", "app")
    # A name the server does not have: the server's own 3D000, passed on.
    code, text = login_error(router.port, user="postgres", password=pgr.USERS["postgres"], dbname="no_such_db")
    assert code == "3D000", text
    # The admin console still wins.
    with router.connect(user="postgres", dbname="pgrouter") as conn:
        pools = conn.execute("SHOW POOLS").fetchall()
    names = {row[0] for row in pools}
    assert {"postgres", "template1", "app", "aliased"} <= names


def test_console_commands_act_on_names_the_fallback_serves(pgrouter, cluster):
    import threading
    router = pgrouter(fallback_config(cluster))
    with router.connect(user="postgres", dbname="pgrouter") as admin:
        admin.execute("PAUSE template1")  # no client of it yet: the pause holds the first one's login
        answered = []
        waiter = threading.Thread(target=lambda: answered.append(
            current(router.connect(user="postgres", dbname="template1"))), daemon=True)
        waiter.start()
        time.sleep(0.5)
        assert not answered, "a login went through on a paused name"
        with router.connect(user="postgres", dbname="postgres") as other:  # other names are not held
            assert current(other) == ("postgres", "postgres")
        admin.execute("RESUME template1")
        waiter.join(10)
        assert answered == [("postgres", "template1")]
        admin.execute("DISABLE postgres")
        code, text = login_error(router.port, user="postgres", password=pgr.USERS["postgres"], dbname="postgres")
        assert code == "55000", text
        admin.execute("ENABLE postgres")
        with router.connect(user="postgres", dbname="template1") as victim:
            admin.execute("KILL template1")
            with pytest.raises(psycopg.OperationalError):
                victim.execute("select 1")
        admin.execute("RESUME template1")
        with pytest.raises(psycopg.errors.InvalidCatalogName, match="serves other names"):
            admin.execute('PAUSE "*"')


def test_fallback_database_is_off_unless_listed(pgrouter):
    router = pgrouter()
    code, text = login_error(router.port, user="postgres", password=pgr.USERS["postgres"], dbname="postgres")
    assert code == "3D000", text


def test_fallback_with_auth_query(pgrouter, cluster):
    router = pgrouter({**lookup_config(), **fallback_config(cluster)})
    with router.connect(user=AQ_SCRAM[0], password=AQ_SCRAM[1], dbname="template1") as conn:
        assert current(conn) == (AQ_SCRAM[0], "template1")
    # Names sent before authentication make no pools: the lookup for any "*" name runs in postgres.
    for i in range(3):
        assert login_error(router.port, AQ_SCRAM[0], "wrong", dbname=f"made_up_{i}")[0] == "28P01"
    with router.connect(user="postgres", dbname="pgrouter") as conn:
        names = {row[0] for row in conn.execute("SHOW POOLS").fetchall()}
    assert "template1" in names and "postgres" in names
    assert not any(name.startswith("made_up_") for name in names), names


def test_check_config_reports_bad_auth_keys(tmp_path, cluster):
    import subprocess
    config = pgr.default_config(cluster, 1, 2)
    config["auth_sources"] = {"auth_user": "nobody", "auth_file": str(tmp_path / "missing.txt")}
    config["databases"].append({"name": "*", "dbname": "x", "shards": [{"primary": cluster.endpoint("primary")}]})
    path = tmp_path / "bad.yaml"
    path.write_text(pgr.to_yaml(config))
    result = subprocess.run([str(pgr.pgrouter_bin()), "--check-config", str(path)], capture_output=True, text=True)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "auth_user 'nobody' is not a user" in out
    assert "cannot read" in out
    assert 'cannot have a dbname' in out


def test_md5_hash_cannot_answer_a_scram_server_and_says_so(pgrouter, tmp_path):
    import hashlib
    user, password = AQ_SCRAM
    userlist = tmp_path / "userlist.txt"
    userlist.write_text(f'"{user}" "md5{hashlib.md5((password + user).encode()).hexdigest()}"\n')
    router = pgrouter({"users": ONLY_POSTGRES, "auth_sources": {"auth_file": str(userlist)},
                       "auth": [{"method": "md5", "addresses": ["127.0.0.1/32"]}]})
    code, text = login_error(router.port, user, password)  # the client's md5 is right; the server wants SCRAM
    assert code == "28P01", text
    assert "SCRAM-SHA-256" in text and "an md5 hash, usable for md5 only" in text, text
    with router.connect(user="postgres") as conn:
        assert current(conn)[0] == "postgres"
