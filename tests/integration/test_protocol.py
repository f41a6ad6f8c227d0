"""Wire-protocol robustness: malformed, oversized, split, truncated and hostile input from clients must get the
documented error (or a silent close) and must never hurt pgrouter or the other clients."""
import random
import socket
import threading
import time

import psycopg
import pytest

import pgr

TRUST = {"auth": [{"method": "trust", "users": ["all"], "databases": ["all"], "addresses": ["127.0.0.1/32"]}]}


def still_serves(router):
    """pgrouter still answers a normal client."""
    with router.connect() as conn:
        assert conn.execute("SELECT 41 + 1").fetchone()[0] == 42
    assert router.running


def read_all(raw, timeout=3.0):
    """Everything pgrouter sends until it closes the connection: (messages, closed). A reset counts as closed."""
    messages = []
    try:
        while True:
            kind, payload = raw.read_message(timeout)
            if kind == "":
                return messages, True
            messages.append((kind, payload))
    except socket.timeout:
        return messages, False
    except ConnectionResetError:
        return messages, True


def errors_in(messages):
    return [pgr.parse_error_fields(payload) for kind, payload in messages if kind == "E"]


def expect_fatal_and_close(raw, sqlstate, timeout=3.0):
    messages, closed = read_all(raw, timeout)
    errors = errors_in(messages)
    assert closed, f"connection left open after {messages}"
    assert [e["code"] for e in errors] == [sqlstate], f"got {errors}"
    assert errors[0]["severity"] == "FATAL"
    return errors[0]


def closed_silently(sock, timeout=3.0):
    """True if the peer closes the socket without sending a single byte."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def startup_until_ready(raw):
    messages = []
    while True:
        kind, payload = raw.read_message()
        messages.append((kind, payload))
        if kind in ("Z", "E", ""):
            return messages


# --- startup packet -------------------------------------------------------------------------------------------

# (An invalid startup packet length: test_hardening.py, compared with PostgreSQL.)


def test_startup_packet_of_exactly_10000_bytes_is_accepted(pgrouter):
    router = pgrouter(TRUST)
    padding = 10000 - len(pgr.startup_packet("pgr_scram", "app", application_name=""))
    packet = pgr.startup_packet("pgr_scram", "app", application_name="a" * padding)
    assert len(packet) == 10000
    with pgr.Raw(router.port) as raw:
        raw.send(packet)
        assert startup_until_ready(raw)[-1][0] == "Z"
        assert raw.simple_query("SELECT 1") == ([["1"]], None)


@pytest.mark.parametrize("body", [b"user\0pgr_scram\0database\0app", b"user\0pgr_scram\0database\0app\0",
                                  b"user\0pgr_scram\0database\0app\0\0junk"],
                         ids=["unterminated-value", "no-final-nul", "bytes-after-terminator"])
def test_startup_parameters_not_properly_terminated(pgrouter, body):
    router = pgrouter()
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.int32(len(body) + 8) + pgr.int32(pgr.PROTOCOL_3_0) + body)
        expect_fatal_and_close(raw, "08P01")
    still_serves(router)


def test_protocol_2_is_refused(pgrouter):
    router = pgrouter()
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.startup_packet("pgr_scram", "app", protocol=2 << 16))
        error = expect_fatal_and_close(raw, "0A000")
        assert "protocol" in error["message"]
    still_serves(router)


@pytest.mark.parametrize("minor, options", [(1, {}), (0, {"_pq_.foo": "bar"}), (2, {"_pq_.a": "1", "_pq_.b": "2"})])
def test_newer_minor_version_or_protocol_option_is_negotiated(pgrouter, minor, options):
    router = pgrouter(TRUST)
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.startup_packet("pgr_scram", "app", protocol=(3 << 16) | minor, **options))
        messages = startup_until_ready(raw)
        assert messages[0][0] == "v", messages
        payload = messages[0][1]
        # The newest version pgrouter supports, as PostgreSQL sends it (PG_PROTOCOL_LATEST, major and minor).
        assert int.from_bytes(payload[:4], "big") == pgr.PROTOCOL_3_0
        count = int.from_bytes(payload[4:8], "big")
        names = [n.decode() for n in payload[8:].split(b"\0")[:count]]
        assert names == list(options)
        assert messages[-1][0] == "Z"
        assert raw.simple_query("SELECT current_user") == ([["pgr_scram"]], None)


def test_replication_connection_is_refused(pgrouter):
    router = pgrouter()
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.startup_packet("pgr_scram", "app", replication="database"))
        expect_fatal_and_close(raw, "0A000")
    still_serves(router)


def test_startup_parameters_become_session_settings_verbatim(pgrouter):
    router = pgrouter(TRUST)
    tricky = "it's \\ \"quoted\"; DROP TABLE x; --"
    with pgr.Raw(router.port) as raw:
        raw.startup("pgr_scram", "app", application_name=tricky, options="-c statement_timeout=1234 --work_mem=2MB")
        assert raw.simple_query("SHOW application_name") == ([[tricky]], None)
        assert raw.simple_query("SHOW statement_timeout") == ([["1234ms"]], None)
        assert raw.simple_query("SHOW work_mem") == ([["2MB"]], None)


@pytest.mark.parametrize("params, sqlstate", [({"bad name;": "x"}, "08P01"), ({"options": "--x;y=1"}, "0A000")])
def test_unsafe_startup_parameters_are_refused(pgrouter, params, sqlstate):
    router = pgrouter(TRUST)
    with pgr.Raw(router.port) as raw:
        with pytest.raises(pgr.RawError) as refused:
            raw.startup("pgr_scram", "app", **params)
        assert refused.value.code == sqlstate
    still_serves(router)


def test_startup_setting_refused_by_the_server(cluster, tmp_path):
    # Not the pgrouter fixture: a crash must fail this test, not its teardown.
    router = pgr.Pgrouter(cluster, tmp_path / "pgrouter")
    try:
        with pytest.raises(psycopg.OperationalError, match='invalid value for parameter "statement_timeout"'):
            psycopg.connect(router.dsn(options="'-c statement_timeout=1;DROP'"), connect_timeout=10)
        with pgr.Raw(router.port) as raw:
            with pytest.raises(pgr.RawError) as refused:
                raw.startup("pgr_scram", "app", "scram_pw", search_path="x", work_mem="lots")
            assert refused.value.code == "22023"
        still_serves(router)
    finally:
        assert router.stop(check=False) == 0, router.log()[-2000:]


def test_startup_without_user_or_database(pgrouter):
    router = pgrouter(TRUST)
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.int32(9) + pgr.int32(pgr.PROTOCOL_3_0) + b"\0")
        expect_fatal_and_close(raw, "28000")
    with pgr.Raw(router.port) as raw:
        # The database defaults to the user name, which is not a configured database.
        raw.send(pgr.startup_packet("pgr_scram"))
        expect_fatal_and_close(raw, "3D000")
    still_serves(router)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_garbage_as_startup_packet(pgrouter, seed):
    router = pgrouter()
    garbage = random.Random(seed).randbytes(64 * 1024)
    with pgr.Raw(router.port) as raw:
        try:
            raw.send(garbage)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: what we want
        messages, closed = read_all(raw)
        assert closed
        assert all(e["code"] == "08P01" for e in errors_in(messages))
    still_serves(router)


def test_garbage_with_a_plausible_length_prefix(pgrouter):
    router = pgrouter()
    body = random.Random(7).randbytes(4000).replace(b"\0", b"x")
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.int32(len(body) + 8) + pgr.int32(pgr.PROTOCOL_3_0) + body)
        expect_fatal_and_close(raw, "08P01")
    still_serves(router)


# --- encryption requests --------------------------------------------------------------------------------------

def test_gssenc_request_is_declined_then_login_works(pgrouter):
    router = pgrouter()
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.int32(8) + pgr.int32(pgr.GSSENC_REQUEST_CODE))
        assert raw.read_byte() == b"N"
        raw.startup("pgr_scram", "app", "scram_pw")
        assert raw.simple_query("SELECT current_user") == ([["pgr_scram"]], None)


def test_ssl_request_without_tls_config_is_declined_then_login_works(pgrouter):
    router = pgrouter()
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.ssl_request())
        assert raw.read_byte() == b"N"
        raw.startup("pgr_md5", "app", "md5_pw")
        assert raw.simple_query("SELECT current_user") == ([["pgr_md5"]], None)
    with pgr.Raw(router.port) as raw:
        raw.send(pgr.ssl_request())
        assert raw.read_byte() == b"N"
        raw.send(pgr.ssl_request())
        expect_fatal_and_close(raw, "08P01")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    import subprocess
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return {"cert_file": str(cert), "key_file": str(key)}


@pytest.mark.parametrize("with_tls", [True, False], ids=["tls", "no-tls"])
def test_bytes_pipelined_after_ssl_request_close_the_connection(pgrouter, tls_files, with_tls):
    # CVE-2021-23214: bytes sent before the handshake must not be taken as if they came over TLS.
    router = pgrouter({"tls": tls_files} if with_tls else None)
    with socket.create_connection((pgr.HOST, router.port), timeout=5) as sock:
        sock.sendall(pgr.ssl_request() + pgr.startup_packet("pgr_scram", "app"))
        assert closed_silently(sock)
    still_serves(router)


# --- messages after login -------------------------------------------------------------------------------------

def logged_in(router, user="pgr_scram"):
    raw = pgr.Raw(router.port)
    raw.startup(user, "app", pgr.USERS[user])
    return raw


def test_message_bigger_than_max_message_size(pgrouter):
    router = pgrouter({"listen": {"max_message_size": "1MB"}})
    with logged_in(router) as raw:
        # A 1 MB query is still fine ...
        sql = "SELECT length('" + "x" * (1024 * 1024 - 100) + "')"
        assert raw.simple_query(sql) == ([[str(1024 * 1024 - 100)]], None)
        # ... one claiming 2 MB is not: only its header is sent, pgrouter must not wait for the rest.
        raw.send(b"Q" + pgr.int32(2 * 1024 * 1024))
        error = expect_fatal_and_close(raw, "08P01")
        assert "max_message_size" in error["message"]
    still_serves(router)


# (A length below 4 after login: test_hardening.py, compared with PostgreSQL.)


def test_messages_split_into_single_bytes(pgrouter):
    router = pgrouter()
    with pgr.Raw(router.port) as raw:
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The startup packet byte by byte, then the authentication as usual.
        packet = pgr.startup_packet("pgr_scram", "app")
        for i in range(len(packet)):
            raw.send(packet[i:i + 1])
            time.sleep(0.002)
        kind, payload = raw.read_message()
        assert (kind, int.from_bytes(payload[:4], "big")) == ("R", 10)
        raw.sock.close()
    with logged_in(router) as raw:
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = pgr.query("SELECT 'one byte at a time'") + pgr.query("SELECT 2")
        for i in range(len(data)):
            raw.send(data[i:i + 1])
            time.sleep(0.002)
        rows = []
        for _ in range(2):
            rows += [pgr.parse_data_row(p) for k, p in raw.read_until_ready() if k == "D"]
        assert rows == [["one byte at a time"], ["2"]]


@pytest.mark.parametrize("cut", ["header", "body"])
def test_client_disconnecting_mid_message_does_not_poison_the_server(pgrouter, cut):
    # One server connection, so the next client gets the very server the first one left (or a new one).
    router = pgrouter({"pool": {"size": 1, "queue_timeout": "5s"}})
    for _ in range(3):
        with logged_in(router) as raw:
            sql = pgr.query("SELECT 'never completed'")
            raw.send(sql[:3] if cut == "header" else sql[:-6])
        with logged_in(router) as raw:
            assert raw.simple_query("SELECT 'next client'") == ([["next client"]], None)
    still_serves(router)


def test_client_disconnecting_during_a_large_result(pgrouter):
    router = pgrouter({"pool": {"size": 1, "queue_timeout": "5s"}})
    for _ in range(2):
        with logged_in(router) as raw:
            raw.send(pgr.query("SELECT repeat('x', 1000) FROM generate_series(1, 20000)"))
            raw.read_message()  # the result has started
        with logged_in(router) as raw:
            assert raw.simple_query("SELECT 'after'") == ([["after"]], None)
    still_serves(router)


# --- cancel requests ------------------------------------------------------------------------------------------

def test_cancel_request_with_unknown_key(pgrouter):
    router = pgrouter()
    with logged_in(router) as victim:
        pid, secret = victim.backend_key
        # A running query is cancelled only with its exact key.
        victim.send(pgr.query("SELECT pg_sleep(1)"))
        time.sleep(0.2)
        for key in [(pid, secret ^ 1), (pid ^ 0x5a5a, secret), (12345, 67890)]:
            with socket.create_connection((pgr.HOST, router.port), timeout=5) as sock:
                sock.sendall(pgr.cancel_request(*key))
                assert closed_silently(sock)
        messages = victim.read_until_ready(timeout=5)
        assert not errors_in(messages)
        assert [pgr.parse_data_row(p) for k, p in messages if k == "D"] == [[""]]
        # The right key does cancel, so the requests above were heard and ignored.
        victim.send(pgr.query("SELECT pg_sleep(10)"))
        time.sleep(0.2)
        started = time.monotonic()
        with socket.create_connection((pgr.HOST, router.port), timeout=5) as sock:
            sock.sendall(pgr.cancel_request(pid, secret))
            assert closed_silently(sock)
        messages = victim.read_until_ready(timeout=5)
        assert [e["code"] for e in errors_in(messages)] == ["57014"]
        assert time.monotonic() - started < 5
    still_serves(router)


# --- limits and timeouts --------------------------------------------------------------------------------------

def test_max_client_conn(pgrouter):
    router = pgrouter({"listen": {"max_client_conn": 2}})
    first, second = router.connect(), router.connect()
    try:
        with pgr.Raw(router.port) as raw:
            raw.send(pgr.startup_packet("pgr_scram", "app"))
            error = expect_fatal_and_close(raw, "53300")
            assert "too many clients" in error["message"]
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            router.connect()
        assert first.execute("SELECT 1").fetchone()[0] == 1
    finally:
        first.close()
    # A freed slot can be used again (the count is released asynchronously: allow a moment).
    deadline = time.monotonic() + 3
    while True:
        try:
            with router.connect() as third:
                assert third.execute("SELECT 3").fetchone()[0] == 3
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    second.close()


@pytest.mark.parametrize("sent", [b"", pgr.int32(100) + b"\0\3"], ids=["nothing", "partial-startup"])
def test_client_login_timeout(pgrouter, sent):
    # tcp_defer_accept off: a connection that sends nothing is accepted, and then cut off by the login timeout.
    router = pgrouter({"listen": {"client_login_timeout": "1s", "tcp_defer_accept": False}})
    with socket.create_connection((pgr.HOST, router.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        assert closed_silently(sock, timeout=10)
        elapsed = time.monotonic() - started
    assert 0.7 < elapsed < 3.0, elapsed
    still_serves(router)


def test_silent_connection_is_not_accepted_with_tcp_defer_accept(pgrouter):
    # The default: the kernel holds a connection until its first bytes arrive, so the login (and its timeout)
    # starts then. A connection silent for longer than client_login_timeout is still served once it speaks;
    # with tcp_defer_accept: false it is cut off (test_client_login_timeout[nothing]).
    router = pgrouter({"listen": {"client_login_timeout": "1s"}})
    with socket.create_connection((pgr.HOST, router.port), timeout=10) as sock:
        time.sleep(1.8)
        sock.sendall(pgr.int32(8) + pgr.int32(80877103))  # SSLRequest
        assert sock.recv(1) == b"N"
        sock.sendall(pgr.startup_packet("pgr_scram", "app"))
        assert sock.recv(1) == b"R"  # the authentication request: the login goes on
    still_serves(router)


def test_login_timeout_during_authentication_and_not_after_login(pgrouter):
    router = pgrouter({"listen": {"client_login_timeout": "1s"}})
    with logged_in(router) as idle_client:
        # A client stuck in the SCRAM exchange is cut off ...
        with pgr.Raw(router.port) as stuck:
            stuck.send(pgr.startup_packet("pgr_scram", "app"))
            assert stuck.read_message()[0] == "R"
            started = time.monotonic()
            messages, closed = read_all(stuck, timeout=5)
            assert closed and time.monotonic() - started < 3
        # ... but a logged-in client may stay idle for longer than the login timeout.
        time.sleep(0.5)
        assert idle_client.simple_query("SELECT 'still here'") == ([["still here"]], None)


def test_many_hostile_clients_at_once(pgrouter):
    router = pgrouter({"listen": {"client_login_timeout": "2s"}})
    rng = random.Random(11)
    payloads = [rng.randbytes(rng.randrange(1, 3000)) for _ in range(40)]
    failures = []

    def hostile(data):
        try:
            with socket.create_connection((pgr.HOST, router.port), timeout=5) as sock:
                sock.sendall(data)
                sock.settimeout(5)
                while sock.recv(4096):
                    pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))

    threads = [threading.Thread(target=hostile, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    with router.connect() as conn:
        assert conn.execute("SELECT 'meanwhile'").fetchone()[0] == "meanwhile"
    for t in threads:
        t.join(15)
    assert not failures
    still_serves(router)
