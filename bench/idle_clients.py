"""Open N idle PostgreSQL connections through a proxy, run one SELECT 1 on each, then hold them until killed.

Used by bench/idle_rss.sh: prints "connected N" once every connection is open, so the caller can measure RSS.
Speaks the wire protocol itself (trust authentication, as the bench configures both proxies): psycopg waits with
select(), which cannot watch file descriptors above 1023, and 10,000 clients need more.
"""
import resource
import signal
import socket
import struct
import sys
import time


def read_until_ready(sock, buf=b""):
    """Reads messages until ReadyForQuery; raises on ErrorResponse. Returns leftover bytes."""
    while True:
        while len(buf) >= 5:
            kind, length = buf[:1], struct.unpack("!I", buf[1:5])[0]
            if len(buf) < 1 + length:
                break
            body, buf = buf[5:1 + length], buf[1 + length:]
            if kind == b"E":
                raise RuntimeError(body.decode(errors="replace"))
            if kind == b"R" and struct.unpack("!I", body[:4])[0] != 0:
                raise RuntimeError("the proxy asked for a password: the bench expects trust")
            if kind == b"Z":
                return buf
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk


def connect(port, query_once):
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    params = b"user\0postgres\0database\0postgres\0\0"
    sock.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    read_until_ready(sock)
    if query_once:
        sql = b"select 1\0"
        sock.sendall(b"Q" + struct.pack("!I", 4 + len(sql)) + sql)
        read_until_ready(sock)
    return sock


def main() -> int:
    port, count, query_once = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    connections = []
    started = time.monotonic()
    for i in range(count):
        try:
            connections.append(connect(port, query_once))
        except (OSError, RuntimeError) as exc:
            print(f"failed after {i} connections: {exc}", flush=True)
            return 1
    print(f"connected {len(connections)} in {time.monotonic() - started:.1f}s", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sys.exit(main())
