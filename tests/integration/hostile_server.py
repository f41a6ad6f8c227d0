"""A fake PostgreSQL server on a loopback port, scripted per test, for pointing pgrouter at a server that breaks
the protocol (tests/integration/test_hostile_server.py).

    def script(conn):                  # runs in its own thread for every connection pgrouter opens
        conn.read_startup()
        conn.scram(PASSWORD, iterations=0)   # or conn.send(...) anything at all
        conn.wait_closed()
    with HostileServer(script) as fake:  # fake.port; fake.connections lists a Conn per accepted connection
        ...

Each Conn records what pgrouter sent it (`received`) and whether pgrouter closed it (`closed`, an Event set when
the fake reads EOF or a reset), so a test can tell that pgrouter dropped a server connection instead of pooling it.
"""
import base64
import hashlib
import hmac
import socket
import threading
import time

import pgr

# What a PostgreSQL 15 server reports at login; pgrouter relays these to its clients.
DEFAULT_PARAMETERS = {
    "server_version": "15.0 (hostile)",
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "is_superuser": "off",
    "application_name": "",
}


class Conn:
    """One connection pgrouter opened to the fake server."""

    def __init__(self, sock, server):
        self.sock = sock
        self.server = server
        self.buffer = b""
        self.startup = None          # the startup packet's parameters
        self.received = []           # (kind, payload) of every typed message read
        self.closed = threading.Event()  # pgrouter closed the connection
        self.hung_up = False             # the fake closed it
        self.error = None            # an exception the script raised (a broken fake is a failed test)

    # --- bytes ----------------------------------------------------------------------------------------------

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            if not self.hung_up:
                self.closed.set()

    def _fill(self, need, timeout):
        while len(self.buffer) < need:
            try:
                self.sock.settimeout(timeout)
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise
            except OSError:
                chunk = b""
            if not chunk:
                if not self.hung_up:
                    self.closed.set()
                return False
            self.buffer += chunk
        return True

    def read_message(self, timeout=10.0):
        """(kind, payload) of the next typed message, ('', b'') at EOF."""
        if not self._fill(5, timeout):
            return ("", b"")
        kind = chr(self.buffer[0])
        length = int.from_bytes(self.buffer[1:5], "big")
        if not self._fill(1 + length, timeout):
            return ("", b"")
        payload, self.buffer = self.buffer[5:1 + length], self.buffer[1 + length:]
        self.received.append((kind, payload))
        return (kind, payload)

    def expect(self, kind, timeout=10.0):
        got = self.read_message(timeout)
        if got[0] != kind:
            raise AssertionError(f"fake server expected {kind!r} from pgrouter, got {got[0]!r} {got[1][:60]!r}")
        return got[1]

    def read_startup(self, timeout=10.0):
        """Reads the startup packet (answering 'N' to an SSLRequest first); returns its parameters."""
        while True:
            if not self._fill(4, timeout):
                raise AssertionError("pgrouter closed before sending a startup packet")
            length = int.from_bytes(self.buffer[:4], "big")
            if not self._fill(length, timeout):
                raise AssertionError("pgrouter closed inside its startup packet")
            packet, self.buffer = self.buffer[:length], self.buffer[length:]
            code = int.from_bytes(packet[4:8], "big")
            if code == pgr.SSL_REQUEST_CODE or code == pgr.GSSENC_REQUEST_CODE:
                self.send(b"N")
                continue
            fields = packet[8:].split(b"\0")
            self.startup = {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)
                            if fields[i]}
            return self.startup

    def wait_closed(self, timeout=10.0):
        """Reads (and records) whatever pgrouter still sends until it closes the connection; True if it did."""
        deadline = time.monotonic() + timeout
        while not self.closed.is_set() and not self.hung_up:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                if self.read_message(left)[0] == "":
                    break
            except socket.timeout:
                return False
        return True

    def close(self):
        """Hangs up from the fake's side (`closed` stays as it was: it says what pgrouter did)."""
        self.hung_up = True
        try:
            self.sock.close()
        except OSError:
            pass

    # --- messages the fake sends ----------------------------------------------------------------------------

    def auth_request(self, code, data=b""):
        self.send(pgr.message("R", pgr.int32(code) + data))

    def error_response(self, code, text, severity="ERROR"):
        fields = b"S" + pgr.cstr(severity) + b"V" + pgr.cstr(severity) + b"C" + pgr.cstr(code) + b"M" + pgr.cstr(text)
        self.send(pgr.message("E", fields + b"\0"))

    def welcome(self, parameters=None, pid=4242, secret=0x5EC2E7):
        """What a server sends after AuthenticationOk: ParameterStatus, BackendKeyData, ReadyForQuery."""
        out = b""
        for name, value in {**DEFAULT_PARAMETERS, **(parameters or {})}.items():
            out += pgr.message("S", pgr.cstr(name) + pgr.cstr(value))
        out += pgr.message("K", pgr.int32(pid) + pgr.int32(secret))
        out += pgr.message("Z", b"I")
        self.send(out)

    def trust_login(self):
        self.read_startup()
        self.auth_request(0)
        self.welcome()

    def scram(self, password, nonce=None, salt=b"hostile-salt", iterations=4096, signature=None, final=True):
        """Server side of SCRAM-SHA-256 up to (and, with final, including) SASLFinal. nonce(client_nonce) may
        return the combined nonce to send; signature(right_signature) may return another one. Returns whether
        pgrouter's proof was right (it was sent the real salt and iteration count), or None if pgrouter gave up
        before sending a proof."""
        self.auth_request(10, pgr.cstr("SCRAM-SHA-256") + b"\0")
        payload = self.expect("p")
        mechanism, rest = payload.split(b"\0", 1)
        assert mechanism == b"SCRAM-SHA-256", mechanism
        client_first = rest[4:].decode()
        client_first_bare = client_first[3:]  # after the gs2 header "n,,"
        client_nonce = dict(a.split("=", 1) for a in client_first_bare.split(","))["r"]
        combined = nonce(client_nonce) if nonce else client_nonce + "hostileServerNonce"
        server_first = f"r={combined},s={base64.b64encode(salt).decode()},i={iterations}"
        self.auth_request(11, server_first.encode())
        kind, payload = self.read_message()
        if kind != "p":
            return None
        client_final = payload.decode()
        without_proof, proof = client_final.rsplit(",p=", 1)
        auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, max(iterations, 1))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        client_signature = hmac.new(stored_key, auth_message, "sha256").digest()
        recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), client_signature))
        proof_ok = hashlib.sha256(recovered).digest() == stored_key
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        right = hmac.new(server_key, auth_message, "sha256").digest()
        if final:
            self.auth_request(12, b"v=" + base64.b64encode(signature(right) if signature else right))
        return proof_ok

    @staticmethod
    def row_description(*names):
        body = pgr.int16(len(names))
        for name in names:  # text columns
            body += pgr.cstr(name) + pgr.int32(0) + pgr.int16(0) + pgr.int32(25) + pgr.int16(-1) + pgr.int32(-1) \
                + pgr.int16(0)
        return pgr.message("T", body)

    @staticmethod
    def data_row(*values):
        body = pgr.int16(len(values))
        for value in values:
            data = str(value).encode()
            body += pgr.int32(len(data)) + data
        return pgr.message("D", body)

    @staticmethod
    def command_complete(tag):
        return pgr.message("C", pgr.cstr(tag))

    def answer(self, sql):
        """A well-behaved answer to a simple Query: one row for a SELECT, a bare CommandComplete otherwise."""
        words = sql.strip().split()
        tag = words[0].upper() if words else ""
        if tag == "SELECT":
            self.send(self.row_description("x") + self.data_row("fake") + self.command_complete("SELECT 1")
                      + pgr.message("Z", b"I"))
        elif tag == "":
            self.send(pgr.message("I") + pgr.message("Z", b"I"))
        else:
            self.send(self.command_complete(" ".join(words[:2]).upper() if tag in ("DISCARD", "RESET") else tag)
                      + pgr.message("Z", b"I"))

    def serve(self, on_query=None):
        """Answers simple Queries until pgrouter closes or sends Terminate. on_query(conn, sql) handles a query
        itself and returns True, or returns False for the well-behaved answer; it may also close the socket."""
        while True:
            kind, payload = self.read_message(timeout=60)
            if kind in ("", "X"):
                return
            if kind != "Q":
                raise AssertionError(f"fake server got {kind!r}, it only speaks simple queries")
            sql = payload.rstrip(b"\0").decode()
            if not (on_query and on_query(self, sql)):
                self.answer(sql)
            if self.closed.is_set() or self.hung_up:
                return


class HostileServer:
    """Listens on 127.0.0.1:<port>; every accepted connection runs script(conn) in a thread of its own."""

    def __init__(self, script):
        self.script = script
        self.connections = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((pgr.HOST, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._threads = []
        self._stopping = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def endpoint(self):
        return {"host": pgr.HOST, "port": self.port}

    def _accept(self):
        while not self._stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(sock, self)
            self.connections.append(conn)
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, conn):
        try:
            self.script(conn)
        except Exception as e:  # noqa: BLE001 - reported by check() in the test's thread
            conn.error = e
        finally:
            conn.close()

    def wait_connections(self, count, timeout=10.0):
        deadline = time.monotonic() + timeout
        while len(self.connections) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.connections) >= count

    def check(self):
        """Raises the first exception a connection's script raised."""
        for conn in self.connections:
            if conn.error is not None:
                raise AssertionError(f"fake server script failed: {conn.error!r}") from conn.error

    def stop(self):
        self._stopping = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        try:
            self.listener.close()
        except OSError:
            pass
        for conn in list(self.connections):
            conn.close()
        for thread in self._threads:
            thread.join(5)
