"""Client authentication (auth rules, SCRAM, md5, trust, reject, stored secrets), backend login per server auth
method, TLS, the metrics that count refused logins, and that no secret ever reaches pgrouter's log."""
import base64
import hashlib
import hmac
import re
import socket
import subprocess
import time

import psycopg
import pytest

import pgr

ALL = ["all"]
LOCAL = ["127.0.0.1/32"]


def rule(method, users=ALL, databases=ALL, addresses=LOCAL):
    return {"method": method, "users": users, "databases": databases, "addresses": addresses}


def users_with(*extra, replace=None):
    """The default users list with some entries replaced (by name) and extra entries added."""
    replace = replace or {}
    users = [replace.get(name, {"name": name, "password": pw}) for name, pw in pgr.USERS.items()]
    return users + list(extra)


def login_error(router, user, password, database="app"):
    """The ErrorResponse fields a raw login gets; fails the test if the login succeeds."""
    with pgr.Raw(router.port) as raw:
        try:
            raw.startup(user, database, password)
        except pgr.RawError as e:
            return e.fields
    pytest.fail(f"login as {user!r} to {database!r} unexpectedly succeeded")


def current_user(router, user, password=None, **kwargs):
    with router.connect(user=user, password=password, **kwargs) as conn:
        return conn.execute("SELECT current_user").fetchone()[0]


def md5_hash(user, password):
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def scram_verifier(password, salt=b"pgrouter-test-salt", iterations=4096):
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def metric_value(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (0 if there is none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if not match or match.group(1) != name:
            continue
        sample_labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def raw_exchange(router, user, password, method):
    """Every message pgrouter sends during one failing raw login (SCRAM or md5), driven by hand so that the
    exact bytes can be compared; the client always answers with `password`."""
    received = []
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.startup_packet(user, "app"))
        scram = None
        while True:
            kind, payload = raw.read_message()
            received.append((kind, payload))
            if kind in ("E", "Z", ""):
                return received
            assert kind == "R", f"unexpected message {kind!r} during login"
            code = int.from_bytes(payload[:4], "big")
            if code == 5 and method == "md5":
                inner = hashlib.md5((password + user).encode()).hexdigest()
                raw.send(pgr.password_message("md5" + hashlib.md5(inner.encode() + payload[4:8]).hexdigest()))
            elif code == 10 and method == "scram":
                scram = pgr.ScramClient(password)
                raw.send(pgr.message("p", pgr.cstr("SCRAM-SHA-256") + pgr.int32(len(scram.first)) + scram.first))
            elif code == 11 and method == "scram":
                raw.send(pgr.message("p", scram.final(payload[4:])))
            else:
                pytest.fail(f"unexpected authentication request {code} for {method}")


def scram_server_first(router, user):
    """The attributes of the server-first-message pgrouter sends `user` (the exchange is then abandoned)."""
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.startup_packet(user, "app"))
        kind, payload = raw.read_message()
        assert (kind, int.from_bytes(payload[:4], "big")) == ("R", 10)
        scram = pgr.ScramClient("irrelevant")
        raw.send(pgr.message("p", pgr.cstr("SCRAM-SHA-256") + pgr.int32(len(scram.first)) + scram.first))
        kind, payload = raw.read_message()
        assert (kind, int.from_bytes(payload[:4], "big")) == ("R", 11)
        return dict(item.split("=", 1) for item in payload[4:].decode().split(","))


# --- backend login: one test role per server auth method ------------------------------------------------------

@pytest.mark.parametrize("user", ["pgr_scram", "pgr_md5", "pgr_clear", "pgr_trust"])
def test_backend_login_with_each_server_auth_method(pgrouter, user):
    router = pgrouter()
    assert current_user(router, user) == user


def test_wrong_backend_password_reports_refused_login(pgrouter):
    wrong = {"name": "pgr_scram", "password": "scram_pw", "backend_password": "wrong_backend_pw"}
    router = pgrouter({"users": users_with(replace={"pgr_scram": wrong})})
    fields = login_error(router, "pgr_scram", "scram_pw")
    assert fields["code"] == "28P01"
    assert "pgrouter's login" in fields["message"]
    assert fields["severity"] == "FATAL"
    # The other users' pools are unaffected.
    assert current_user(router, "pgr_md5") == "pgr_md5"


def test_backend_user_mapping(pgrouter):
    alias = {"name": "alias", "password": "alias_pw", "backend_user": "pgr_md5", "backend_password": "md5_pw"}
    router = pgrouter({"users": users_with(alias)})
    assert current_user(router, "alias", "alias_pw") == "pgr_md5"


# --- client authentication methods ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["scram-sha-256", "md5"])
def test_password_methods_accept_right_and_refuse_wrong_password(pgrouter, method):
    router = pgrouter({"auth": [rule(method)]})
    with pgr.Raw(router.port) as raw:
        messages = raw.startup("pgr_clear", "app", "clear_pw")
        auth_codes = [int.from_bytes(p[:4], "big") for k, p in messages if k == "R"]
        assert auth_codes[0] == (10 if method == "scram-sha-256" else 5)
        assert raw.simple_query("SELECT current_user") == ([["pgr_clear"]], None)
    fields = login_error(router, "pgr_clear", "not_the_password")
    assert (fields["code"], fields["message"]) == ("28P01", 'password authentication failed for user "pgr_clear"')


def test_psycopg_wrong_password_message(pgrouter):
    router = pgrouter()
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "pgr_scram"'):
        router.connect(user="pgr_scram", password="wrong")


@pytest.mark.parametrize("method", ["scram", "md5"])
def test_unknown_user_is_indistinguishable_from_wrong_password(pgrouter, method):
    router = pgrouter({"auth": [rule("scram-sha-256" if method == "scram" else "md5")]})
    # Same-length names, so that after swapping the name every byte must match.
    known = raw_exchange(router, "pgr_scram", "wrong_pw", method)
    unknown = raw_exchange(router, "pgr_ghost", "wrong_pw", method)
    assert [k for k, _ in known] == [k for k, _ in unknown]
    assert known[-1][0] == "E"
    assert known[-1][1] == unknown[-1][1].replace(b'"pgr_ghost"', b'"pgr_scram"')
    assert pgr.parse_error_fields(unknown[-1][1])["code"] == "28P01"
    for (_, known_payload), (_, unknown_payload) in zip(known[:-1], unknown[:-1]):
        assert known_payload[:4] == unknown_payload[:4]  # the same authentication request codes
        assert len(known_payload) == len(unknown_payload)
    if method == "scram":
        known_first = dict(i.split("=", 1) for i in known[1][1][4:].decode().split(","))
        unknown_first = dict(i.split("=", 1) for i in unknown[1][1][4:].decode().split(","))
        assert known_first.keys() == unknown_first.keys()
        assert known_first["i"] == unknown_first["i"]
        assert len(base64.b64decode(known_first["s"])) == len(base64.b64decode(unknown_first["s"]))


def test_scram_salt_does_not_reveal_whether_a_user_exists(pgrouter):
    router = pgrouter()
    # PostgreSQL stores one salt per user, and mocks a stable one for unknown users: so must pgrouter.
    assert scram_server_first(router, "pgr_ghost")["s"] == scram_server_first(router, "pgr_ghost")["s"]
    assert scram_server_first(router, "pgr_scram")["s"] == scram_server_first(router, "pgr_scram")["s"]


def test_trust_rule_needs_no_password_but_a_known_user(pgrouter):
    router = pgrouter({"auth": [rule("trust")]})
    with pgr.Raw(router.port) as raw:
        messages = raw.startup("pgr_scram", "app", password=None)
        assert [int.from_bytes(p[:4], "big") for k, p in messages if k == "R"] == [0]
    fields = login_error(router, "nobody", None)
    assert fields["code"] == "28P01"


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_query_sent_with_the_startup_packet_is_answered(pgrouter, mode):
    # A client may send its first query without waiting for the welcome (trust needs no exchange): the
    # login reads whatever arrived at once, and what came after the startup packet goes to the relay.
    router = pgrouter({"auth": [rule("trust")], "pool": {"mode": mode}})
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.startup_packet("pgr_scram", "app") + pgr.query("SELECT 42") + pgr.query("SELECT 43"))
        kinds = []
        while kinds.count("Z") < 3:
            kind, payload = raw.read_message(timeout=5)
            assert kind not in ("", "E"), payload
            kinds.append(kind)
            if kind == "D":
                assert pgr.parse_data_row(payload) in (["42"], ["43"])
        assert kinds.count("D") == 2
        assert raw.simple_query("SELECT 44") == ([["44"]], None)


def test_user_with_only_md5_hash(pgrouter):
    hashed = {"name": "hashed", "md5_hash": md5_hash("hashed", "hashed_pw"),
              "backend_user": "pgr_scram", "backend_password": "scram_pw"}
    router = pgrouter({"users": users_with(hashed), "auth": [rule("md5")]})
    assert current_user(router, "hashed", "hashed_pw") == "pgr_scram"
    assert login_error(router, "hashed", "other_pw")["code"] == "28P01"


def test_user_with_only_scram_verifier(pgrouter):
    verified = {"name": "verified", "scram_verifier": scram_verifier("verified_pw"),
                "backend_user": "pgr_md5", "backend_password": "md5_pw"}
    router = pgrouter({"users": users_with(verified)})
    assert current_user(router, "verified", "verified_pw") == "pgr_md5"
    assert login_error(router, "verified", "other_pw")["code"] == "28P01"
    # The stored salt is served as is.
    assert base64.b64decode(scram_server_first(router, "verified")["s"]) == b"pgrouter-test-salt"


def scram_first_message(raw, client_first, mechanism="SCRAM-SHA-256"):
    raw.send(pgr.startup_packet("pgr_scram", "app"))
    kind, payload = raw.read_message()
    assert (kind, int.from_bytes(payload[:4], "big")) == ("R", 10)
    raw.send(pgr.message("p", pgr.cstr(mechanism) + pgr.int32(len(client_first)) + client_first))


def fatal_then_closed(raw):
    kind, payload = raw.read_message()
    assert kind == "E", (kind, payload)
    fields = pgr.parse_error_fields(payload)
    try:
        assert raw.read_message() == ("", b"")
    except ConnectionResetError:
        pass  # closed with bytes of ours unread
    return fields


@pytest.mark.parametrize("client_first, mechanism", [
    (b"p=tls-server-end-point,,n=,r=abcdefghijklmnop", "SCRAM-SHA-256"),  # channel binding not offered
    (b"n,a=admin,n=,r=abcdefghijklmnop", "SCRAM-SHA-256"),  # authorization identity
    (b"n,,n=,r=abcdefghijklmnop", "SCRAM-SHA-256-PLUS"),
    (b"n,,n=,r=abcdefghijklmnop", "SCRAM-SHA-1"),
    (b"n,,garbage", "SCRAM-SHA-256"),
], ids=["channel-binding", "authzid", "plus-mechanism", "sha1", "garbage"])
def test_malformed_scram_client_first_is_a_protocol_violation(pgrouter, client_first, mechanism):
    router = pgrouter()
    with pgr.Raw(router.port) as raw:
        scram_first_message(raw, client_first, mechanism)
        assert fatal_then_closed(raw)["code"] == "08P01"
    assert current_user(router, "pgr_scram") == "pgr_scram"


def test_scram_final_with_a_forged_nonce_or_proof_fails(pgrouter):
    router = pgrouter()
    for tamper in ("nonce", "proof"):
        with pgr.Raw(router.port) as raw:
            scram = pgr.ScramClient("scram_pw")
            scram_first_message(raw, scram.first)
            kind, payload = raw.read_message()
            assert (kind, int.from_bytes(payload[:4], "big")) == ("R", 11)
            final = scram.final(payload[4:]).decode()
            if tamper == "nonce":
                final = final.replace(",r=", ",r=X", 1)
            else:
                proof = bytearray(base64.b64decode(final.split(",p=")[1]))
                proof[0] ^= 1
                final = final.split(",p=")[0] + ",p=" + base64.b64encode(bytes(proof)).decode()
            raw.send(pgr.message("p", final.encode()))
            assert fatal_then_closed(raw)["code"] in ("08P01", "28P01")


def auth_reply(port, user, sent):
    """What a server says when `sent` comes instead of the password: (messages as (kind, code, message), closed)."""
    with pgr.Raw(port) as raw:
        raw.send(pgr.startup_packet(user, "app"))
        assert raw.read_message()[0] == "R"
        raw.send(sent)
        got = []
        try:
            while True:
                kind, payload = raw.read_message(3)
                if kind == "":
                    return got, True
                fields = pgr.parse_error_fields(payload) if kind == "E" else {}
                got.append((kind, fields.get("severity"), fields.get("code"), fields.get("message")))
        except ConnectionResetError:
            return got, True
        except socket.timeout:
            return got, False


@pytest.mark.parametrize("sent", [b"p" + pgr.int32(100000), b"p" + pgr.int32(2), pgr.query("SELECT 1"),
                                  pgr.terminate()], ids=["oversized", "too-short", "query", "terminate"])
@pytest.mark.parametrize("user", ["pgr_md5", "pgr_scram"])
def test_oversized_or_unexpected_message_during_authentication(cluster, pgrouter, user, sent):
    """As PostgreSQL: a bad length is only logged (closed without a word, and pgrouter must not wait for or
    allocate 100 kB), another message type is FATAL 08P01 naming it."""
    router = pgrouter({"auth": [rule("md5" if user == "pgr_md5" else "scram-sha-256")]})
    direct = auth_reply(cluster.primary_port, user, sent)
    assert auth_reply(router.port, user, sent) == direct
    assert direct[1]
    assert current_user(router, "pgr_md5") == "pgr_md5"


# --- auth rules -----------------------------------------------------------------------------------------------

def test_no_matching_rule_gives_28000(pgrouter):
    router = pgrouter({"auth": [rule("scram-sha-256", addresses=["10.0.0.0/8"])]})
    fields = login_error(router, "pgr_scram", "scram_pw")
    assert fields["code"] == "28000"
    assert "no pgrouter auth rule" in fields["message"]


def test_rules_apply_in_order_first_match_wins(pgrouter):
    router = pgrouter({"auth": [
        rule("reject", users=["pgr_md5"]),
        rule("trust", databases=["other"]),
        rule("md5", users=["pgr_clear"]),
        rule("scram-sha-256"),
        rule("trust"),  # never reached
    ]})
    assert login_error(router, "pgr_md5", "md5_pw")["code"] == "28000"
    with pgr.Raw(router.port) as raw:
        codes = [int.from_bytes(p[:4], "big") for k, p in raw.startup("pgr_clear", "app", "clear_pw") if k == "R"]
        assert codes[0] == 5
    with pgr.Raw(router.port) as raw:
        codes = [int.from_bytes(p[:4], "big") for k, p in raw.startup("pgr_trust", "app", "trust_pw") if k == "R"]
        assert codes[0] == 10
    # The trust rule for database "other" matches (no password asked), then the database is unknown.
    fields = login_error(router, "pgr_scram", None, database="other")
    assert fields["code"] == "3D000"


def test_reject_rule_gives_28000_even_with_the_right_password(pgrouter):
    router = pgrouter({"auth": [rule("reject")]})
    for user in ("pgr_scram", "nobody"):
        fields = login_error(router, user, pgr.USERS.get(user, "x"))
        assert fields["code"] == "28000"


def test_unknown_database_after_successful_auth(pgrouter):
    router = pgrouter()
    fields = login_error(router, "pgr_scram", "scram_pw", database="nosuchdb")
    assert fields["code"] == "3D000"
    assert 'database "nosuchdb" does not exist' in fields["message"]
    # Without the right password the database's existence is not revealed.
    assert login_error(router, "pgr_scram", "wrong", database="nosuchdb")["code"] == "28P01"


# --- metrics and logs -----------------------------------------------------------------------------------------

def test_refused_logins_are_counted(pgrouter):
    router = pgrouter()
    before = router.metrics()
    login_error(router, "pgr_scram", "wrong")
    login_error(router, "pgr_ghost", "wrong")
    with pytest.raises(psycopg.OperationalError):
        router.connect(user="pgr_md5", password="wrong")
    failures = "pgrouter_client_login_failures_total"
    # The worker counts a refused login right after sending its ErrorResponse: the last one may land a
    # moment after the client saw the error. Wait for it (bounded), then check the exact counts.
    deadline = time.monotonic() + 5
    after = router.metrics()
    while (failures not in after or metric_value(after, failures) - metric_value(before, failures) < 3) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
        after = router.metrics()
    assert failures in after
    assert metric_value(after, failures) - metric_value(before, failures) == 3
    errors = {"sqlstate": "28P01", "source": "pgrouter"}
    assert metric_value(after, "pgrouter_errors_total", **errors) - \
        metric_value(before, "pgrouter_errors_total", **errors) == 3


def test_no_secret_is_ever_logged(pgrouter):
    backend_secret = "backend_only_pw_X9"
    wrong = {"name": "pgr_scram", "password": "scram_pw", "backend_password": backend_secret}
    hashed = md5_hash("hashed", "hashed_pw")
    router = pgrouter({"log": {"level": "debug"}, "auth": [rule("md5", users=["pgr_md5", "hashed"]),
                                                           rule("scram-sha-256")],
                       "users": users_with({"name": "hashed", "md5_hash": hashed, "backend_user": "pgr_trust"},
                                           replace={"pgr_scram": wrong})})
    for user in ("pgr_md5", "pgr_clear", "pgr_trust"):
        assert current_user(router, user) == user
    assert current_user(router, "hashed", "hashed_pw") == "pgr_trust"
    wrong_guesses = ["guess_one_pw", "guess_two_pw"]
    login_error(router, "pgr_md5", wrong_guesses[0])
    login_error(router, "pgr_clear", wrong_guesses[1])
    login_error(router, "pgr_scram", "scram_pw")  # the server refuses the backend password
    router.reload({"log": {"level": "debug"}})
    assert current_user(router, "pgr_scram") == "pgr_scram"
    router.stop()
    log = router.log()
    assert "client authentication failed" in log  # the failures were logged, just not their secrets
    secrets = list(pgr.USERS.values()) + wrong_guesses + [backend_secret, "hashed_pw", hashed, hashed[3:]]
    leaked = [s for s in secrets if s in log]
    assert not leaked, f"secrets in pgrouter's log: {leaked}"


# --- TLS ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return {"cert_file": str(cert), "key_file": str(key)}


@pytest.mark.parametrize("user", ["pgr_scram", "pgr_md5"])
def test_tls_required_connection(pgrouter, tls_files, user):
    router = pgrouter({"tls": tls_files})
    with router.connect(user=user, sslmode="require") as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user").fetchone()[0] == user
    with router.connect(user=user, sslmode="disable") as conn:
        assert not conn.info.pgconn.ssl_in_use


def test_tls_wrong_password_is_refused(pgrouter, tls_files):
    router = pgrouter({"tls": tls_files})
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "pgr_scram"'):
        router.connect(user="pgr_scram", password="wrong", sslmode="require")


def test_without_tls_config_require_fails_and_prefer_is_plain(pgrouter):
    router = pgrouter()
    with pytest.raises(psycopg.OperationalError, match="(?i)ssl"):
        router.connect(sslmode="require")
    with router.connect(sslmode="prefer") as conn:
        assert not conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_tls_handshake_garbage_does_not_hurt(pgrouter, tls_files):
    router = pgrouter({"tls": tls_files})
    with socket.create_connection((pgr.HOST, router.port), timeout=5) as sock:
        sock.sendall(pgr.ssl_request())
        assert sock.recv(1) == b"S"
        sock.sendall(b"\x16\x03\x01\x00\x05hello, this is not TLS" * 4)
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
    with router.connect(sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_login_timeout_applies_during_the_tls_handshake(pgrouter, tls_files):
    router = pgrouter({"tls": tls_files, "listen": {"client_login_timeout": "1s"}})
    with socket.create_connection((pgr.HOST, router.port), timeout=10) as sock:
        sock.sendall(pgr.ssl_request())
        assert sock.recv(1) == b"S"
        started = time.monotonic()
        try:
            assert sock.recv(1) == b""  # no ClientHello from us: pgrouter gives up
        except ConnectionResetError:
            pass
        assert 0.7 < time.monotonic() - started < 3.0
    with router.connect(sslmode="require") as conn:
        assert conn.info.pgconn.ssl_in_use
