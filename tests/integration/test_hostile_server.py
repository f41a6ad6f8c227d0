"""pgrouter pointed at a hostile server (hostile_server.py): bad message lengths, unknown message types, SCRAM
exchanges a real PostgreSQL never sends, answers cut short, a server that never answers. Whatever the server does,
pgrouter must drop that server connection (never pool it), give the client a clear 08xxx error saying what the
server did, log it without secrets, and keep serving everyone else: a bystander client of the real cluster, on the
same worker, is used before and after every case."""
import socket
import time

import pytest

import pgr
from hostile_server import Conn, HostileServer

USER = "pgr_hostile"
CLIENT_PW = "hostile_client_pw_K3"    # the client's password to pgrouter
BACKEND_PW = "hostile_backend_pw_Q7"  # pgrouter's password to the fake server
CONNECT_TIMEOUT = 2.0                 # pool.connect_timeout: a login that needs it took too long


def router_config(cluster, fake, mode, pool=None):
    users = [{"name": name, "password": pw} for name, pw in pgr.USERS.items()]
    users.append({"name": USER, "password": CLIENT_PW, "backend_password": BACKEND_PW})
    return {
        # One worker: the bystander shares the worker that meets the hostile server, so a crash, a stall (a
        # PBKDF2 of 2^31 iterations) or a hang there would reach it.
        "listen": {"workers": 1},
        "pool": {"mode": mode, "connect_timeout": f"{int(CONNECT_TIMEOUT * 1000)}ms", **(pool or {})},
        "databases": [
            {"name": "hostile", "dbname": "fakedb", "shards": [{"primary": fake.endpoint()}]},
            {"name": "app", "shards": [{"primary": cluster.endpoint("primary")}]},
        ],
        "users": users,
    }


class Setup:
    """A fake server running `script`, a pgrouter with a database on it and one on the real primary, and a
    bystander client connected to the real one before anything hostile happens."""

    def __init__(self, cluster, pgrouter, script, mode, pool=None):
        self.fake = HostileServer(script)
        self.router = pgrouter(router_config(cluster, self.fake, mode, pool))
        self.bystander = self.router.connect(user="pgr_scram", dbname="app")
        assert self.bystander.execute("SELECT 1").fetchone() == (1,)

    def close(self):
        self.bystander.close()
        self.fake.stop()

    def raw_login(self):
        raw = pgr.Raw(self.router.port, timeout=15)
        raw.startup(USER, "hostile", CLIENT_PW)
        return raw

    def login_error(self):
        """(error fields, seconds) of a client login to the hostile database, which must fail."""
        start = time.monotonic()
        with pgr.Raw(self.router.port, timeout=15) as raw:
            try:
                raw.startup(USER, "hostile", CLIENT_PW)
            except pgr.RawError as e:
                return e.fields, time.monotonic() - start
        pytest.fail("the login through a hostile server unexpectedly succeeded")

    def wait_pooled(self, idle, timeout=10.0):
        """Until `idle` servers are idle in pgrouter's pools: a session-pooled server is reset (DISCARD ALL) after
        its client leaves, and a login during the reset gets a new server."""
        deadline = time.monotonic() + timeout
        while pgr.metric(self.router.metrics(), "pgrouter_servers_idle") < idle:
            assert time.monotonic() < deadline, "the server never went back to its pool"
            time.sleep(0.02)

    def assert_unharmed(self):
        assert self.router.running
        assert self.bystander.execute("SELECT 42").fetchone() == (42,)  # the same worker, the same session
        with self.router.connect(user="pgr_md5", dbname="app") as conn:  # and a new login
            assert conn.execute("SELECT current_user").fetchone() == ("pgr_md5",)
        self.fake.check()

    def log_record(self, msg, timeout=5.0):
        """The first log record with this msg (waited for: the log is written by another process)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.router.log_records() if r.get("msg") == msg]
            if found or time.monotonic() > deadline:
                assert found, f"no {msg!r} in pgrouter's log:\n{self.router.log()[-3000:]}"
                return found[0]
            time.sleep(0.05)

    def assert_no_secrets_logged(self):
        log = self.router.log()
        assert BACKEND_PW not in log and CLIENT_PW not in log


@pytest.fixture
def hostile(cluster, pgrouter):
    setups = []

    def make(script, mode="session", pool=None):
        setups.append(Setup(cluster, pgrouter, script, mode, pool))
        return setups[-1]

    yield make
    for setup in setups:
        setup.close()


def query(raw, sql, timeout=10):
    """Sends a simple Query; the messages read up to ReadyForQuery or EOF (kind '')."""
    raw.send(pgr.query(sql))
    return raw.read_until(("Z",), timeout)


def errors(messages):
    return [pgr.parse_error_fields(payload) for kind, payload in messages if kind == "E"]


# --- the fake itself ------------------------------------------------------------------------------------------

def good_scram(conn, iterations=4096):
    conn.read_startup()
    if not conn.scram(BACKEND_PW, iterations=iterations):
        conn.error_response("28P01", "password authentication failed", "FATAL")
        return
    conn.auth_request(0)
    conn.welcome()
    conn.serve()


@pytest.mark.parametrize("iterations", [4096, 100_000])
def test_well_behaved_fake_server_works(hostile, iterations):
    """The fake speaks enough PostgreSQL for pgrouter (so the cases below fail for what they change), and a
    high but legitimate iteration count is accepted."""
    setup = hostile(lambda conn: good_scram(conn, iterations))
    with setup.raw_login() as raw:
        rows, error = raw.simple_query("SELECT x FROM anything")
        assert (rows, error) == ([["fake"]], None)
        assert raw.parameters["server_version"] == "15.0 (hostile)"
    assert setup.fake.connections[0].startup == {"user": USER, "database": "fakedb"}
    setup.assert_unharmed()


# --- login --------------------------------------------------------------------------------------------------

def then_wait(conn):
    conn.wait_closed(30)


def send_after_startup(data):
    def script(conn):
        conn.read_startup()
        conn.send(data)
        then_wait(conn)
    return script


def scram_script(**tamper):
    def script(conn):
        conn.read_startup()
        conn.scram(BACKEND_PW, **tamper)
        then_wait(conn)
    return script


def scram_then_ok_without_final(conn):
    # AuthenticationOk where SASLFinal belongs: the server never proved it knows the password.
    conn.read_startup()
    conn.scram(BACKEND_PW, final=False)
    conn.auth_request(0)
    conn.welcome()
    then_wait(conn)


def ok_before_authentication(conn):
    # ReadyForQuery with no authentication at all is a protocol violation (libpq: "expected authentication
    # request from server").
    conn.read_startup()
    conn.send(pgr.message("Z", b"I"))
    then_wait(conn)


def scram_then_cleartext(conn):
    # A downgrade in the middle of SCRAM: the server asks for the password itself.
    conn.read_startup()
    conn.auth_request(10, pgr.cstr("SCRAM-SHA-256") + b"\0")
    conn.expect("p")
    conn.auth_request(3)
    then_wait(conn)


def server_first_twice(conn):
    conn.read_startup()
    conn.scram(BACKEND_PW, final=False)
    conn.auth_request(11, b"r=x,s=c2FsdA==,i=4096")
    then_wait(conn)


def half_a_message_then_eof(conn):
    conn.read_startup()
    conn.send(b"R" + pgr.int32(12) + pgr.int32(10))  # SASL request cut after its code
    conn.close()


def never_answers(conn):
    conn.read_startup()
    then_wait(conn)


LOGIN_CASES = {
    # id: (script, SQLSTATE, fragments of the client's message)
    "length-below-4": (send_after_startup(b"R" + pgr.int32(3)), "08P01", ["invalid message length 3", "'R'"]),
    "length-huge": (send_after_startup(b"R" + pgr.int32(0x7FFFFFFF) + pgr.int32(0)), "08P01",
                    ["invalid message length 2147483647"]),
    "length-large-auth": (send_after_startup(b"R" + pgr.int32(100_000) + pgr.int32(10)), "08P01",
                          ["invalid message length 100000"]),
    "unknown-type": (send_after_startup(pgr.message("Y", b"hello")), "08P01", ["unexpected message type 'Y'"]),
    "data-row-during-login": (send_after_startup(pgr.message("D", pgr.int16(0))), "08P01",
                              ["unexpected message type 'D'"]),
    "ready-before-auth": (ok_before_authentication, "08P01", ["before authentication"]),
    "nonce-replaced": (scram_script(nonce=lambda client: "someOtherNonce0123456789"), "08P01",
                       ["nonce does not extend"]),
    "nonce-not-extended": (scram_script(nonce=lambda client: client), "08P01", ["nonce does not extend"]),
    "iterations-0": (scram_script(iterations=0), "08P01", ["iteration count 0"]),
    "iterations-negative": (scram_script(iterations=-4096), "08P01", ["iteration count -4096"]),
    "iterations-2^31-1": (scram_script(iterations=2**31 - 1), "08P01", ["iteration count 2147483647", "1000000"]),
    "iterations-2^40": (scram_script(iterations=2**40), "08P01", ["iteration count 1099511627776"]),
    "wrong-signature": (scram_script(signature=lambda right: bytes(32)), "08001",
                        ["signature", "does not know"]),
    "short-signature": (scram_script(signature=lambda right: right[:16]), "08001", ["signature"]),
    "ok-without-sasl-final": (scram_then_ok_without_final, "08P01", ["before the SCRAM exchange"]),
    "scram-then-cleartext": (scram_then_cleartext, "08P01", ["authentication request 3 out of order"]),
    "server-first-twice": (server_first_twice, "08P01", ["authentication request 11 out of order"]),
    "half-a-message-then-eof": (half_a_message_then_eof, "08006", ["closed the connection"]),
    "never-answers": (never_answers, "08001", ["timed out", f"{int(CONNECT_TIMEOUT * 1000)} ms"]),
}


@pytest.mark.parametrize("mode", ["session", "transaction"])
@pytest.mark.parametrize("case", list(LOGIN_CASES))
def test_hostile_server_login(hostile, case, mode):
    script, sqlstate, fragments = LOGIN_CASES[case]
    setup = hostile(script, mode)
    fields, seconds = setup.login_error()
    assert (fields["severity"], fields["code"]) == ("FATAL", sqlstate), fields
    for fragment in fragments:
        assert fragment in fields["message"], fields
    assert f"127.0.0.1:{setup.fake.port}" in fields["message"], "the message names the server"
    # Refused as soon as the server misbehaved, not at the connect timeout (nor after minutes of PBKDF2).
    assert seconds < (CONNECT_TIMEOUT + 3 if case == "never-answers" else CONNECT_TIMEOUT - 0.2), seconds
    # pgrouter closed that server connection rather than keeping it (unless the fake hung up first).
    assert setup.fake.wait_connections(1)
    assert setup.fake.connections[0].hung_up or setup.fake.connections[0].closed.wait(5)
    if case == "scram-then-cleartext":  # the password was never sent: only the SASLInitialResponse was
        assert [kind for kind, _ in setup.fake.connections[0].received] == ["p"]
    record = setup.log_record("server login failed")
    assert record["sqlstate"] == sqlstate
    assert fragments[0] in record["error"]
    setup.assert_no_secrets_logged()
    setup.assert_unharmed()


def test_server_error_during_scram_is_passed_on(hostile):
    """A server-final-message carrying e= is the server's refusal, not a signature to check."""
    def script(conn):
        conn.read_startup()
        conn.scram(BACKEND_PW, final=False)
        conn.auth_request(12, b"e=invalid-proof")
        then_wait(conn)
    setup = hostile(script)
    fields, _ = setup.login_error()
    assert fields["code"].startswith("08") and "invalid-proof" in fields["message"], fields
    assert setup.fake.connections[0].closed.wait(5)
    setup.assert_unharmed()


def test_login_failures_do_not_stall_the_worker(hostile):
    """A huge iteration count is refused before any key derivation: the bystander on the same worker is answered
    while clients keep logging in through the hostile server."""
    setup = hostile(scram_script(iterations=2**31 - 1))
    start = time.monotonic()
    for _ in range(5):
        fields, _ = setup.login_error()
        assert fields["code"] == "08P01"
        assert setup.bystander.execute("SELECT 1").fetchone() == (1,)
    assert time.monotonic() - start < 5
    setup.assert_unharmed()


# --- queries --------------------------------------------------------------------------------------------------

def misbehave_on(action):
    """A well-behaved trust server whose answer to `SELECT hostile` is action(conn)."""
    def on_query(conn, sql):
        if sql != "SELECT hostile":
            return False
        action(conn)
        return True

    def script(conn):
        conn.trust_login()
        conn.serve(on_query)
        then_wait(conn)
    return script


def rows_then(data, close=False):
    def action(conn):
        conn.send(conn.row_description("x") + conn.data_row("one") + conn.data_row("two") + data)
        if close:
            conn.close()
    return action


QUERY_CASES = {
    # id: (action, SQLSTATE, fragment of the client's message)
    "length-below-4": (rows_then(b"D" + pgr.int32(2)), "08P01", "invalid message"),
    "length-huge": (rows_then(b"D" + pgr.int32(0x7FFFFFFF) + b"xx"), "08P01", "invalid message"),
}


@pytest.mark.parametrize("mode", ["session", "transaction"])
@pytest.mark.parametrize("case", list(QUERY_CASES))
def test_hostile_server_mid_query(hostile, case, mode):
    action, sqlstate, fragment = QUERY_CASES[case]
    setup = hostile(misbehave_on(action), mode)
    with setup.raw_login() as raw:
        messages = query(raw, "SELECT hostile")
        assert messages[-1][0] == "", f"pgrouter kept the client connection: {messages}"
    (fields,) = errors(messages)
    assert (fields["severity"], fields["code"]) == ("FATAL", sqlstate), fields
    assert fragment in fields["message"], fields
    # The rows before the bad message reached the client; the broken server was closed, not pooled: the next
    # client gets a new server connection.
    assert [m for m in messages if m[0] == "D"][:2] == [("D", data_row("one")), ("D", data_row("two"))]
    assert setup.fake.connections[0].closed.wait(5)
    with setup.raw_login() as raw:
        assert raw.simple_query("SELECT 1") == ([["fake"]], None)
    assert len(setup.fake.connections) == 2
    setup.assert_no_secrets_logged()
    setup.assert_unharmed()


def data_row(value):
    """A one-column DataRow's payload."""
    data = value.encode()
    return pgr.int16(1) + pgr.int32(len(data)) + data


def read_all(raw, timeout=10):
    """Every byte pgrouter sends until it closes the connection."""
    raw.sock.settimeout(timeout)
    data = raw.buffer
    while chunk := raw.sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_half_a_data_row_then_eof(hostile, mode):
    """The server dies in the middle of a DataRow whose first bytes were already relayed. Nothing can follow them
    that the client would read as a message (an ErrorResponse written there lands inside the DataRow): the client
    must get exactly the bytes the server sent, then EOF, as if it had been talking to that server."""
    head = pgr.message("D", pgr.int16(1) + pgr.int32(100) + b"x" * 100)[:40]
    setup = hostile(misbehave_on(rows_then(head, close=True)), mode)
    with setup.raw_login() as raw:
        raw.send(pgr.query("SELECT hostile"))
        received = read_all(raw)
    sent = Conn.row_description("x") + Conn.data_row("one") + Conn.data_row("two") + head
    assert received == sent
    record = setup.log_record("server connection lost")
    assert f"127.0.0.1:{setup.fake.port}" in record["server"]
    with setup.raw_login() as raw:
        assert raw.simple_query("SELECT 1") == ([["fake"]], None)
    assert len(setup.fake.connections) == 2
    setup.assert_unharmed()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_unknown_message_type_mid_query(hostile, mode):
    """A message type PostgreSQL never sends ('Y') in an answer: the client would lose its framing (libpq: "unexpected
    response from server"), so pgrouter must end it with 08P01 and drop the server."""
    action = rows_then(pgr.message("Y", b"junk") + Conn.command_complete("SELECT 2") + pgr.message("Z", b"I"))
    setup = hostile(misbehave_on(action), mode)
    with setup.raw_login() as raw:
        messages = query(raw, "SELECT hostile")
    assert "Y" not in [m[0] for m in messages]
    (fields,) = errors(messages)
    assert (fields["code"], fields["severity"]) == ("08P01", "FATAL")
    assert setup.fake.connections[0].closed.wait(5)
    setup.assert_unharmed()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_error_inside_a_row_stream_is_relayed_and_the_server_kept(hostile, mode):
    """An ERROR after some DataRows is ordinary PostgreSQL (a division by zero at the third row): the client gets
    the rows and the server's error, its session goes on, and the server is reused."""
    error = pgr.message("E", b"SERROR\0VERROR\0C22012\0Mdivision by zero\0\0")
    setup = hostile(misbehave_on(rows_then(error + pgr.message("Z", b"I"))), mode)
    with setup.raw_login() as raw:
        messages = query(raw, "SELECT hostile")
        assert [m[0] for m in messages] == ["T", "D", "D", "E", "Z"]
        (fields,) = errors(messages)
        assert (fields["code"], fields["message"]) == ("22012", "division by zero")
        assert raw.simple_query("SELECT 1") == ([["fake"]], None)
    setup.wait_pooled(1 if mode == "session" else 2)  # (transaction pooling: the bystander's is idle too)
    with setup.raw_login() as raw:
        assert raw.simple_query("SELECT 1") == ([["fake"]], None)
    assert len(setup.fake.connections) == 1
    setup.assert_unharmed()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_fatal_inside_a_row_stream_closes_the_server(hostile, mode):
    """A FATAL after some DataRows (the server shutting down mid-answer) reaches the client as the server sent
    it, and that server is not pooled."""
    fatal = pgr.message("E", b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0")
    setup = hostile(misbehave_on(rows_then(fatal, close=True)), mode)
    with setup.raw_login() as raw:
        messages = query(raw, "SELECT hostile")
        assert messages[-1][0] == ""
    codes = [f["code"] for f in errors(messages)]
    assert codes[0] == "57P01", messages
    with setup.raw_login() as raw:
        assert raw.simple_query("SELECT 1") == ([["fake"]], None)
    assert len(setup.fake.connections) == 2
    setup.assert_unharmed()


def test_server_that_never_answers_the_reset_is_closed(hostile):
    """Session pooling resets a server (DISCARD ALL) before the next client gets it. A server that never answers
    must not keep its pool slot forever: after pool.connect_timeout pgrouter closes it, says so in its log, and
    the client waiting for the slot gets a new server."""
    def on_query(conn, sql):
        # Only the first connection stops answering, and only the reset.
        return sql.startswith("DISCARD") and conn is conn.server.connections[0]

    def script(conn):
        conn.trust_login()
        conn.serve(on_query)
        then_wait(conn)

    setup = hostile(script, pool={"size": 1, "queue_timeout": "8s"})
    with setup.raw_login() as raw:
        assert raw.simple_query("SELECT 1") == ([["fake"]], None)
    start = time.monotonic()
    with setup.raw_login() as raw:  # waits for the only slot
        assert raw.simple_query("SELECT 1") == ([["fake"]], None)
    assert CONNECT_TIMEOUT - 0.5 < time.monotonic() - start < CONNECT_TIMEOUT + 3
    first = setup.fake.connections[0]
    assert ("Q", b"DISCARD ALL\0") in first.received and first.closed.wait(5)
    assert len(setup.fake.connections) == 2
    record = setup.log_record("server reset failed; connection closed")
    assert record["sqlstate"] == "08006" and "did not answer pgrouter's DISCARD" in record["error"], record
    setup.assert_unharmed()


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_fatal_right_after_an_answer(hostile, mode):
    """A server shutting down just after it answered (its ReadyForQuery and FATAL 57P01 in one write, as a replica
    under `pg_ctl restart -m fast` does): in session pooling the client is in that server's session and gets the
    FATAL, as from PostgreSQL; in transaction pooling its transaction is over, so it hears nothing and its next
    query gets another server. That server is never pooled either way."""
    fatal = pgr.message("E", b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0")

    def answer_then_fatal(conn):
        conn.send(conn.row_description("x") + conn.data_row("last") + conn.command_complete("SELECT 1")
                  + pgr.message("Z", b"I") + fatal)
        conn.close()
    setup = hostile(misbehave_on(answer_then_fatal), mode)
    with setup.raw_login() as raw:
        assert raw.simple_query("SELECT hostile") == ([["last"]], None)
        if mode == "session":
            assert [f["code"] for f in errors(raw.read_until(("Z",), 10))] == ["57P01"]
        else:
            assert raw.simple_query("SELECT 1") == ([["fake"]], None)
            assert len(setup.fake.connections) == 2
    setup.assert_unharmed()
