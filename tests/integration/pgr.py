"""Helpers for pgrouter's integration tests: the test cluster, a pgrouter process driven from a config dict, and a
raw wire-protocol connection for tests that must send exactly the bytes they choose."""
import copy
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "tests" / "cluster.sh"
HOST = "127.0.0.1"

# Test roles on every server (tests/sql/roles.sql) and the password each uses, both towards pgrouter and towards
# PostgreSQL. pgr_trust and postgres are trusted by the servers, but clients still authenticate to pgrouter.
USERS = {
    "pgr_scram": "scram_pw",
    "pgr_md5": "md5_pw",
    "pgr_clear": "clear_pw",
    "pgr_trust": "trust_pw",
    "postgres": "postgres_pw",
}


def pgrouter_bin():
    return Path(os.environ.get("PGROUTER_BIN", REPO / "build" / "pgrouter"))


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_accepts(port, host=HOST):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def deep_merge(base, overrides):
    """Returns base with overrides applied: dicts merge key by key, anything else (lists too) replaces, and a
    value of None deletes the key."""
    merged = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def to_yaml(config):
    # JSON is valid YAML; indented, so that loader errors carrying line:column stay readable.
    return json.dumps(config, indent=2) + "\n"


class Cluster:
    """The topology started by tests/cluster.sh, read from its env.json."""

    def __init__(self, directory):
        self.dir = Path(directory)
        env = json.loads((self.dir / "env.json").read_text())
        self.env = {k: str(v) for k, v in env.items()}
        self.primary_port = env["PGR_PRIMARY_PORT"]
        self.replica_port = env["PGR_REPLICA_PORT"]
        self.shard0_port = env["PGR_SHARD0_PORT"]
        self.shard1_port = env["PGR_SHARD1_PORT"]
        self.redis_port = env["PGR_REDIS_PORT"]

    def port(self, server):
        """server: primary | replica | shard0 | shard1 | redis"""
        return getattr(self, f"{server}_port")

    def endpoint(self, server, **extra):
        return {"host": HOST, "port": self.port(server), **extra}

    def dsn(self, server="primary", user="postgres", password=None, dbname="app", **params):
        if password is None:
            password = USERS.get(user)
        parts = {"host": HOST, "port": self.port(server), "user": user, "dbname": dbname, **params}
        if password is not None:
            parts["password"] = password
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def connect(self, server="primary", user="postgres", dbname="app", **kwargs):
        import psycopg
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.dsn(server, user=user, dbname=dbname), **kwargs)

    def log_tails(self, lines=40):
        tails = []
        for log in sorted(self.dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"==> {log} <==\n" + "\n".join(text))
        return "\n".join(tails)


def metric(text, name):
    """The value of an unlabelled metric (or the first series of a labelled one) in /metrics text, or None."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return None


def wait_metric(router, name, value, timeout=10.0):
    """Waits for a gauge to reach value: the session gives its server back just after the client has its answer,
    so a scrape right after a query may still count it."""
    deadline = time.monotonic() + timeout
    while True:
        seen = metric(router.metrics(), name)
        if seen == value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is {seen}, expected {value}")
        time.sleep(0.02)


def default_config(cluster, port, admin_port):
    return {
        "version": 1,
        # shutdown_timeout: stop() (SIGTERM) must not wait 30 s for a client a test left in a transaction.
        "listen": {"host": HOST, "port": port, "workers": 2, "shutdown_timeout": "5s"},
        "admin": {"host": HOST, "port": admin_port},
        "log": {"level": "info"},
        "databases": [{"name": "app", "shards": [{"primary": cluster.endpoint("primary")}]}],
        "users": [{"name": name, "password": password} for name, password in USERS.items()],
        "auth": [{"method": "scram-sha-256", "users": ["all"], "databases": ["all"], "addresses": ["127.0.0.1/32"]}],
    }


class PgrouterError(Exception):
    pass


class Pgrouter:
    """One pgrouter process started from default_config(...) + overrides, with its config and stderr in workdir."""

    def __init__(self, cluster, workdir, overrides=None, env=None, start_timeout=15.0):
        self.cluster = cluster
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "pgrouter.yaml"
        self.log_path = self.workdir / "pgrouter.log"
        binary = pgrouter_bin()
        if not binary.is_file():
            raise PgrouterError(f"{binary} does not exist: build it (ninja -C build) or set PGROUTER_BIN")
        # A free port can be taken by another process between free_port() and pgrouter's bind: then pgrouter
        # exits saying so, and is started again on other ports (a harness race, not what a test is about).
        for attempt in range(3):
            self.port = free_port()
            self.admin_port = free_port()
            while self.admin_port == self.port:
                self.admin_port = free_port()
            self.overrides = overrides or {}
            self.returncode = None
            self._write_config(self.overrides)
            self._log_file = open(self.log_path, "ab")
            self.proc = subprocess.Popen([str(binary), "--config", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})})
            try:
                self._wait_listening(start_timeout)
                return
            except PgrouterError:
                if attempt == 2 or self.returncode is None or "Address already in use" not in self.log():
                    raise
                self.log_path.rename(self.log_path.with_name(f"pgrouter.attempt{attempt}.log"))

    @property
    def config(self):
        return deep_merge(default_config(self.cluster, self.port, self.admin_port), self.overrides)

    def _write_config(self, overrides):
        self.overrides = overrides or {}
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(to_yaml(self.config))
        tmp.replace(self.config_path)  # atomic, so a reload never reads half a file

    def _wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                self._log_file.close()
                raise PgrouterError(f"pgrouter exited with {self.returncode} before listening; log:\n{self.log()}")
            if port_accepts(self.port):
                self._wait_admin_listening(deadline)
                return
            time.sleep(0.05)
        self.stop(check=False)
        raise PgrouterError(f"pgrouter did not listen on {self.port} within {timeout}s; log:\n{self.log()}")

    def _wait_admin_listening(self, deadline):
        # The admin server may start listening a moment after the client listener: a test's first HTTP call
        # must not race it. A config without one (or with one that cannot listen) is the test's business.
        admin = self.config.get("admin") or {}
        if not admin.get("port"):
            return
        while time.monotonic() < deadline and self.proc.poll() is None:
            if port_accepts(admin["port"], admin.get("host", HOST)):
                return
            time.sleep(0.02)

    def dsn(self, user="pgr_scram", password=None, dbname="app", **params):
        if password is None:
            password = USERS.get(user)
        parts = {"host": HOST, "port": self.port, "user": user, "dbname": dbname, **params}
        if password is not None:
            parts["password"] = password
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def connect(self, user="pgr_scram", password=None, dbname="app", **kwargs):
        import psycopg
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 10)
        return psycopg.connect(self.dsn(user=user, password=password, dbname=dbname), **kwargs)

    def reload(self, overrides, settle=0.5):
        """Rewrites the config as default + overrides (not cumulative) and sends SIGHUP; returns the log written
        in the following `settle` seconds, which is where the reload result (or rejection) is reported."""
        before = self.log_path.stat().st_size
        self._write_config(overrides)
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(settle)
        with open(self.log_path, "rb") as f:
            f.seek(before)
            return f.read().decode(errors="replace")

    def log(self):
        return self.log_path.read_text(errors="replace")

    def log_records(self):
        """The log as parsed JSON objects; lines that are not JSON are skipped."""
        records = []
        for line in self.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def metrics(self, path="/metrics", timeout=5):
        with urllib.request.urlopen(f"http://{HOST}:{self.admin_port}{path}", timeout=timeout) as response:
            return response.read().decode()

    @property
    def running(self):
        return self.proc.poll() is None

    def stop(self, timeout=15, check=True):
        """SIGTERM, wait, and (check=True) assert a clean exit: code 0, not a crash or a hang."""
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    self.returncode = self.proc.returncode
                    self._log_file.close()
                    if check:
                        raise AssertionError(f"pgrouter did not exit within {timeout}s of SIGTERM; log:\n"
                                             f"{self.log()[-4000:]}")
                    return self.returncode
            self.returncode = self.proc.returncode
            self._log_file.close()
        if check:
            assert self.returncode == 0, f"pgrouter exited with {self.returncode}; log:\n{self.log()[-4000:]}"
        return self.returncode


# ---------------------------------------------------------------------------------------------------------------
# Raw wire protocol (https://www.postgresql.org/docs/current/protocol-message-formats.html)

PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
CANCEL_REQUEST_CODE = 80877102
GSSENC_REQUEST_CODE = 80877104

# ErrorResponse / NoticeResponse field codes.
ERROR_FIELDS = {
    "S": "severity_localized", "V": "severity", "C": "code", "M": "message", "D": "detail", "H": "hint",
    "P": "position", "p": "internal_position", "q": "internal_query", "W": "where", "s": "schema", "t": "table",
    "c": "column", "d": "data_type", "n": "constraint", "F": "file", "L": "line", "R": "routine",
}


def int32(n):
    return n.to_bytes(4, "big", signed=True)


def int16(n):
    return n.to_bytes(2, "big", signed=True)


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def message(kind, payload=b""):
    """A typed message: kind byte, int32 length (counting itself), payload."""
    return (kind.encode() if isinstance(kind, str) else kind) + int32(len(payload) + 4) + payload


def startup_packet(user, database=None, protocol=PROTOCOL_3_0, **params):
    body = int32(protocol)
    fields = {"user": user, **({"database": database} if database else {}), **params}
    for key, value in fields.items():
        body += cstr(key) + cstr(value)
    body += b"\0"
    return int32(len(body) + 4) + body


def ssl_request():
    return int32(8) + int32(SSL_REQUEST_CODE)


def cancel_request(pid, secret):
    """pid and secret as BackendKeyData carries them (unsigned 32-bit)."""
    return int32(16) + int32(CANCEL_REQUEST_CODE) + pid.to_bytes(4, "big") + secret.to_bytes(4, "big")


def query(sql):
    return message("Q", cstr(sql))


def parse(sql, name="", param_oids=()):
    return message("P", cstr(name) + cstr(sql) + int16(len(param_oids)) + b"".join(int32(o) for o in param_oids))


def bind(params=(), portal="", statement="", result_formats=()):
    """Text-format parameters; None is NULL."""
    body = cstr(portal) + cstr(statement) + int16(0) + int16(len(params))
    for p in params:
        if p is None:
            body += int32(-1)
        else:
            data = p if isinstance(p, bytes) else str(p).encode()
            body += int32(len(data)) + data
    body += int16(len(result_formats)) + b"".join(int16(f) for f in result_formats)
    return message("B", body)


def describe(kind="S", name=""):
    return message("D", kind.encode() + cstr(name))


def execute(portal="", max_rows=0):
    return message("E", cstr(portal) + int32(max_rows))


def close(kind="S", name=""):
    return message("C", kind.encode() + cstr(name))


def sync():
    return message("S")


def flush():
    return message("H")


def terminate():
    return message("X")


def password_message(password):
    return message("p", cstr(password))


def parse_error_fields(payload):
    """ErrorResponse/NoticeResponse payload -> dict keyed by field code ('C', 'M', ...) and by name ('code',
    'message', ...)."""
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            code, value = chr(part[0]), part[1:].decode(errors="replace")
            fields[code] = value
            if code in ERROR_FIELDS:
                fields[ERROR_FIELDS[code]] = value
    return fields


def parse_data_row(payload):
    count = int.from_bytes(payload[:2], "big")
    values, pos = [], 2
    for _ in range(count):
        size = int.from_bytes(payload[pos:pos + 4], "big", signed=True)
        pos += 4
        if size < 0:
            values.append(None)
        else:
            values.append(payload[pos:pos + size].decode(errors="replace"))
            pos += size
    return values


class Raw:
    """A socket speaking the PostgreSQL protocol by hand. Messages read are (kind, payload) with kind a 1-char
    str; kind '' marks EOF (the peer closed the connection)."""

    def __init__(self, port, host=HOST, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buffer = b""
        self.backend_key = None
        self.parameters = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, need):
        while len(self.buffer) < need:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def read_byte(self):
        """One raw byte (the answer to SSLRequest/GSSENCRequest), or b'' at EOF."""
        if not self._fill(1):
            return b""
        byte, self.buffer = self.buffer[:1], self.buffer[1:]
        return byte

    def read_message(self, timeout=None):
        self.sock.settimeout(timeout or self.timeout)
        if not self._fill(5):
            return ("", b"")
        kind = chr(self.buffer[0])
        length = int.from_bytes(self.buffer[1:5], "big")
        if not self._fill(1 + length):
            return ("", b"")
        payload = self.buffer[5:1 + length]
        self.buffer = self.buffer[1 + length:]
        return (kind, payload)

    def read_until(self, kinds=("Z",), timeout=None):
        """Messages up to and including the first whose kind is in kinds (or EOF)."""
        messages = []
        while True:
            msg = self.read_message(timeout)
            messages.append(msg)
            if msg[0] in kinds or msg[0] == "":
                return messages

    def read_until_ready(self, timeout=None):
        return self.read_until(("Z",), timeout)

    def is_closed(self, timeout=2.0):
        """True if the peer closes the connection (pending messages are skipped) within timeout."""
        try:
            return self.read_until((), timeout)[-1][0] == ""
        except socket.timeout:
            return False

    def startup(self, user, database="app", password=None, **params):
        """Startup + authentication (trust, cleartext, md5, SCRAM-SHA-256) up to the first ReadyForQuery.
        Returns the messages read; raises RawError with the fields of an ErrorResponse."""
        self.send(startup_packet(user, database, **params))
        scram = None
        messages = []
        while True:
            kind, payload = msg = self.read_message()
            messages.append(msg)
            if kind == "":
                raise RawError({"message": "connection closed during startup"})
            if kind == "E":
                raise RawError(parse_error_fields(payload))
            if kind == "R":
                code = int.from_bytes(payload[:4], "big")
                if code == 3:
                    self.send(password_message(password))
                elif code == 5:
                    from hashlib import md5
                    inner = md5((password + user).encode()).hexdigest()
                    self.send(password_message("md5" + md5(inner.encode() + payload[4:8]).hexdigest()))
                elif code == 10:
                    scram = ScramClient(password)
                    self.send(message("p", cstr("SCRAM-SHA-256") + int32(len(scram.first)) + scram.first))
                elif code == 11:
                    self.send(message("p", scram.final(payload[4:])))
                elif code == 12:
                    scram.verify(payload[4:])
                elif code != 0:
                    raise RawError({"message": f"unsupported authentication request {code}"})
            elif kind == "K":
                self.backend_key = (int.from_bytes(payload[:4], "big"), int.from_bytes(payload[4:8], "big"))
            elif kind == "S":
                name, value = payload.split(b"\0")[:2]
                self.parameters[name.decode()] = value.decode()
            elif kind == "Z":
                return messages

    def simple_query(self, sql):
        """Sends a Query; returns (rows, error_fields or None) read up to ReadyForQuery."""
        self.send(query(sql))
        rows, error = [], None
        for kind, payload in self.read_until_ready():
            if kind == "D":
                rows.append(parse_data_row(payload))
            elif kind == "E":
                error = parse_error_fields(payload)
            elif kind == "":
                raise RawError({"message": "connection closed"})
        return rows, error


class RawError(Exception):
    def __init__(self, fields):
        super().__init__(f"{fields.get('code', '')} {fields.get('message', '')}".strip())
        self.fields = fields

    @property
    def code(self):
        return self.fields.get("code")


class ScramClient:
    """Client side of SCRAM-SHA-256 (RFC 5802/7677) without channel binding, as libpq does without TLS."""

    def __init__(self, password):
        import base64
        import secrets
        self.password = password
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.first = ("n,," + self.first_bare).encode()
        self.server_signature = None

    def final(self, server_first):
        import base64
        import hashlib
        import hmac
        server_first = server_first.decode()
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise RawError({"message": "SCRAM server nonce does not extend ours"})
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.server_signature = hmac.new(server_key, auth_message, "sha256").digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final):
        import base64
        attrs = dict(item.split("=", 1) for item in server_final.decode().split(","))
        if base64.b64decode(attrs.get("v", "")) != self.server_signature:
            raise RawError({"message": "SCRAM server signature mismatch"})
