"""Open N idle PostgreSQL connections through a proxy, run one SELECT 1 on each, then hold them until killed.

Used by bench/idle_rss.sh: prints "connected N" once every connection is open, so the caller can measure RSS.
"""
import signal
import sys
import time

import psycopg


def main() -> int:
    port, count, query_once = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    connections = []
    started = time.monotonic()
    for i in range(count):
        try:
            conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                   autocommit=True, connect_timeout=60)
        except psycopg.Error as exc:
            print(f"failed after {i} connections: {exc}", flush=True)
            return 1
        if query_once:
            conn.execute("select 1").fetchone()
        connections.append(conn)
    print(f"connected {len(connections)} in {time.monotonic() - started:.1f}s", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sys.exit(main())
