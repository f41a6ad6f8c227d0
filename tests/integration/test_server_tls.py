"""TLS from pgrouter to PostgreSQL: sslmode (libpq's meaning), certificate checks, client certificates,
SCRAM-SHA-256-PLUS channel binding, cancels over TLS, and clear 08006 errors when TLS cannot be had.

One private PostgreSQL 15 (a copy of the shared primary) runs with ssl=on and a throwaway CA for the whole module.
Its pg_hba rejects pgr_scram without TLS (`hostnossl ... reject`), so a working pgr_scram session proves TLS is used.
"""
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

import pgnodes
import pgr

CERT_USER = "pgr_cert"
CERT_PASSWORD = "cert_pw"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-days", "2", "-subj", f"/CN={name}", "-sha256", cwd=d)


def make_cert(d, ca, name, cn, san=None):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn}", cwd=d)
    ext = []
    if san:
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        ext = ["-extfile", f"{name}.ext"]
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-sha256", *ext, cwd=d)
    os.chmod(d / f"{name}.key", 0o600)


class TlsServer:
    def __init__(self, node, certs):
        self.node = node
        self.certs = certs
        self.port = node.port

    def endpoint(self, host=pgr.HOST, **tls):
        return {"host": host, "port": self.port, **tls}


@pytest.fixture(scope="module")
def tls_server(cluster):
    nodes = pgnodes.PgNodes()
    try:
        node = nodes.copy_of(cluster.primary_port)
        certs = node.dir / "certs"
        certs.mkdir()
        make_ca(certs, "ca")
        make_ca(certs, "other_ca")
        make_cert(certs, "ca", "server", "localhost", "DNS:localhost,IP:127.0.0.1")
        make_cert(certs, "ca", "client", CERT_USER)
        if os.getuid() == 0:
            for p in [certs, *certs.iterdir()]:
                shutil.chown(p, "postgres", "postgres")
        with open(node.data / "postgresql.conf", "a") as f:
            f.write(f"\nssl = on\nssl_cert_file = '{certs}/server.crt'\nssl_key_file = '{certs}/server.key'\n"
                    f"ssl_ca_file = '{certs}/ca.crt'\n")
        (node.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all postgres 127.0.0.1/32 trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            f"hostnossl all pgr_scram 127.0.0.1/32 reject\n"
            f"hostssl all pgr_scram 127.0.0.1/32 scram-sha-256\n"
            f"hostnossl all {CERT_USER} 127.0.0.1/32 reject\n"
            f"hostssl all {CERT_USER} 127.0.0.1/32 cert clientcert=verify-full\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        node.stop()
        node.start()
        with node.connect() as c:
            c.execute(f"create role {CERT_USER} login")
            c.execute(f"grant all on schema public to {CERT_USER}")
        yield TlsServer(node, certs)
    finally:
        nodes.cleanup()


def start(pgrouter, server_tls=None, primary=None, level="info", mode="session", **extra):
    return pgrouter(config_for(server_tls, primary, level, mode, **extra))


def config_for(server_tls=None, primary=None, level="info", mode="session", **extra):
    config = {
        "log": {"level": level},
        "pool": {"mode": mode},
        "databases": [{"name": "app", "shards": [{"primary": primary}]}],
        "users": [{"name": n, "password": p} for n, p in {**pgr.USERS, CERT_USER: CERT_PASSWORD}.items()],
        **extra,
    }
    if server_tls is not None:
        config["server_tls"] = server_tls
    return config


def connect_error(router, user="pgr_scram", password=None):
    """(SQLSTATE, message) of a login through router that must fail."""
    with pgr.Raw(router.port, timeout=15) as raw:
        with pytest.raises(pgr.RawError) as info:
            raw.startup(user, "app", password or pgr.USERS.get(user))
    return info.value.code, info.value.fields.get("message", "")


def assert_ssl_backend(conn):
    assert conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() == (True,)


def test_require_relays_simple_extended_and_copy_over_tls(pgrouter, tls_server):
    router = start(pgrouter, {"sslmode": "require"}, tls_server.endpoint(), mode="transaction")
    with router.connect() as conn:
        assert_ssl_backend(conn)
        assert conn.execute("select %s::int + 1", (41,)).fetchone() == (42,)  # extended protocol
        with conn.transaction():
            conn.execute("create table if not exists tls_copy (n int, s text)")
            conn.execute("truncate tls_copy")
            with conn.cursor().copy("copy tls_copy from stdin") as copy:
                for i in range(2000):
                    copy.write_row((i, "x" * 100))
        rows = []
        with conn.cursor().copy("copy tls_copy to stdout") as copy:
            for row in copy.rows():
                rows.append(row)
        assert len(rows) == 2000
        big = conn.execute("select repeat('y', 1000000)").fetchone()[0]  # many TLS records in one reply
        assert len(big) == 1000000
        conn.execute("drop table tls_copy")
    # Many short transactions: servers go back to the pool and are taken again, still over TLS.
    with router.connect() as a, router.connect() as b:
        for i in range(50):
            assert a.execute("select %s", (i,)).fetchone() == (i,)
            assert b.execute(f"select {i}").fetchone() == (i,)
        assert_ssl_backend(a)


def test_verify_full_with_the_right_ca_and_host_name(pgrouter, tls_server):
    ca = str(tls_server.certs / "ca.crt")
    for host in ("127.0.0.1", "localhost"):
        router = start(pgrouter, {"sslmode": "verify-full", "sslrootcert": ca}, tls_server.endpoint(host))
        with router.connect() as conn:
            assert_ssl_backend(conn)
        router.stop()


def test_wrong_ca_gives_08006_and_logs_why(pgrouter, tls_server):
    router = start(pgrouter, {"sslmode": "verify-ca", "sslrootcert": str(tls_server.certs / "other_ca.crt")},
                   tls_server.endpoint())
    sqlstate, message = connect_error(router)
    assert sqlstate == "08006"
    assert "TLS handshake with server 127.0.0.1" in message and "certificate verify failed" in message, message
    assert "certificate verify failed" in router.log()
    assert router.running


def test_host_name_mismatch_fails_verify_full_but_passes_verify_ca(pgrouter, tls_server):
    try:
        other = socket.gethostbyname("vm")
    except OSError:
        other = None
    if other != "127.0.0.1":
        pytest.skip("needs a host name other than localhost that resolves to 127.0.0.1 ('vm' in /etc/hosts)")
    ca = str(tls_server.certs / "ca.crt")
    router = start(pgrouter, {"sslmode": "verify-full", "sslrootcert": ca}, tls_server.endpoint("vm"))
    sqlstate, message = connect_error(router)
    assert sqlstate == "08006" and "hostname mismatch" in message, message
    assert "hostname mismatch" in router.log()
    router.stop()
    router = start(pgrouter, {"sslmode": "verify-ca", "sslrootcert": ca}, tls_server.endpoint("vm"))
    with router.connect() as conn:
        assert_ssl_backend(conn)


def test_require_against_a_server_without_tls_is_refused_clearly(pgrouter, cluster):
    router = start(pgrouter, {"sslmode": "require"}, cluster.endpoint("primary"))
    sqlstate, message = connect_error(router)
    assert sqlstate == "08006"
    assert message == f"server 127.0.0.1:{cluster.primary_port} refused TLS (sslmode=require)", message
    assert "refused TLS" in router.log()


def test_prefer_against_a_server_without_tls_goes_plain(pgrouter, cluster):
    router = start(pgrouter, {"sslmode": "prefer"}, cluster.endpoint("primary"))
    with router.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_per_backend_sslmode_overrides_server_tls(pgrouter, tls_server):
    router = start(pgrouter, {"sslmode": "disable"}, tls_server.endpoint(sslmode="require"))
    with router.connect() as conn:
        assert_ssl_backend(conn)


def test_disable_reaches_hostnossl_reject(pgrouter, tls_server):
    router = start(pgrouter, {"sslmode": "disable"}, tls_server.endpoint())
    sqlstate, message = connect_error(router)
    assert sqlstate == "28000" and "no encryption" in message, message


def test_reload_changes_sslmode(pgrouter, tls_server):
    router = start(pgrouter, {"sslmode": "disable"}, tls_server.endpoint())
    assert connect_error(router)[0] == "28000"  # hostnossl ... reject
    out = router.reload(config_for({"sslmode": "require"}, tls_server.endpoint()))
    assert "error" not in out.lower(), out
    with router.connect() as conn:
        assert_ssl_backend(conn)


def test_reload_picks_up_a_ca_file_replaced_in_place(pgrouter, tls_server, tmp_path):
    ca = tmp_path / "ca.crt"
    shutil.copy(tls_server.certs / "other_ca.crt", ca)
    config = config_for({"sslmode": "verify-ca", "sslrootcert": str(ca)}, tls_server.endpoint())
    router = pgrouter(config)
    assert "certificate verify failed" in connect_error(router)[1]
    time.sleep(0.05)  # a modification time of its own
    shutil.copy(tls_server.certs / "ca.crt", ca)
    router.reload(config)
    with router.connect() as conn:
        assert_ssl_backend(conn)


def test_client_certificate_authentication(pgrouter, tls_server):
    c = tls_server.certs
    router = start(pgrouter, None, tls_server.endpoint(sslmode="verify-full", sslrootcert=str(c / "ca.crt"),
                                                       sslcert=str(c / "client.crt"), sslkey=str(c / "client.key")))
    with router.connect(user=CERT_USER, password=CERT_PASSWORD) as conn:
        assert conn.execute("select current_user").fetchone() == (CERT_USER,)
        assert_ssl_backend(conn)


def test_client_certificate_missing_is_refused(pgrouter, tls_server):
    router = start(pgrouter, {"sslmode": "require"}, tls_server.endpoint())
    sqlstate, message = connect_error(router, user=CERT_USER, password=CERT_PASSWORD)
    assert sqlstate == "28000", message


def test_scram_uses_channel_binding_over_tls(pgrouter, tls_server, cluster):
    router = start(pgrouter, {"sslmode": "require"}, tls_server.endpoint(), level="debug")
    with router.connect() as conn:
        assert_ssl_backend(conn)
    mechanisms = [r.get("mechanism") for r in router.log_records() if r.get("msg", r.get("message")) ==
                  "server login: SASL mechanism"]
    assert mechanisms and set(mechanisms) == {"SCRAM-SHA-256-PLUS"}, router.log()[-3000:]
    # Without TLS the same role logs in with plain SCRAM.
    plain = start(pgrouter, {"sslmode": "prefer"}, cluster.endpoint("primary"), level="debug")
    with plain.connect() as conn:
        conn.execute("select 1")
    mechanisms = [r.get("mechanism") for r in plain.log_records() if r.get("msg", r.get("message")) ==
                  "server login: SASL mechanism"]
    assert mechanisms and set(mechanisms) == {"SCRAM-SHA-256"}


def test_cancel_over_tls(pgrouter, tls_server):
    router = start(pgrouter, {"sslmode": "require"}, tls_server.endpoint())
    with router.connect() as conn:
        result = {}

        def sleep():
            started = time.monotonic()
            try:
                conn.execute("select pg_sleep(10)")
                result["q"] = ("done", time.monotonic() - started)
            except psycopg.errors.QueryCanceled:
                result["q"] = ("canceled", time.monotonic() - started)

        t = threading.Thread(target=sleep)
        t.start()
        time.sleep(0.5)
        conn.cancel()
        t.join(10)
        assert result["q"][0] == "canceled" and result["q"][1] < 5, result
        assert conn.execute("select 1").fetchone() == (1,)
    assert "cannot deliver a cancel request" not in router.log()


def test_pgbench_over_tls_in_transaction_mode(pgrouter, tls_server):
    env = {**os.environ, "PGPASSWORD": pgr.USERS["pgr_scram"], "PGSSLMODE": "require"}
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", pgr.HOST, "-p", str(tls_server.port), "-U", "pgr_scram",
                    "app"], check=True, capture_output=True, env=env, timeout=120)
    router = start(pgrouter, {"sslmode": "require"}, tls_server.endpoint(), mode="transaction")
    env["PGSSLMODE"] = "disable"
    r = subprocess.run(["pgbench", "-c", "4", "-T", "5", "-h", pgr.HOST, "-p", str(router.port), "-U", "pgr_scram",
                        "app"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "number of failed transactions: 0" in r.stdout, r.stdout
    processed = int(r.stdout.split("number of transactions actually processed: ")[1].split()[0])
    assert processed > 0
    assert "error" not in r.stderr.lower(), r.stderr


class FakeServer:
    """Answers pgrouter's SSLRequest with `answer`, then closes (mid-handshake when the answer is 'S')."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind((pgr.HOST, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(8)
                    conn.sendall(self.answer)
                    if self.answer == b"S":
                        conn.recv(4096)  # the ClientHello, then gone
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("answer, expected", [
    (b"S", "TLS handshake with server 127.0.0.1:{port} failed: the server closed the connection"),
    (b"X", "server 127.0.0.1:{port} answered pgrouter's SSLRequest with 'X' (expected 'S' or 'N')"),
])
def test_server_misbehaving_during_tls_setup(pgrouter, answer, expected):
    fake = FakeServer(answer)
    try:
        router = start(pgrouter, {"sslmode": "require"}, {"host": pgr.HOST, "port": fake.port})
        for _ in range(3):
            sqlstate, message = connect_error(router)
            assert sqlstate == "08006"
            assert message.startswith(expected.format(port=fake.port)), message
        assert router.running
    finally:
        fake.close()
