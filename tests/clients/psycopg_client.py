#!/usr/bin/python3
"""Real-client acceptance check with psycopg 3: connect, parameters, transactions, an error, then print OK.

usage: psycopg_client.py [DSN] [--prepare-threshold N]   (DSN defaults to $PGR_DSN)
With --prepare-threshold 0 psycopg prepares every statement server-side (named Parse/Bind/Execute).
"""
import argparse
import os
import sys

import psycopg
from psycopg import errors


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def run(dsn, prepare_threshold):
    client_tag = f"psycopg/{prepare_threshold}"
    with psycopg.connect(dsn, prepare_threshold=prepare_threshold, connect_timeout=10) as conn:
        conn.autocommit = True

        # Repeated so that prepared statements are created and then reused.
        for _ in range(3):
            check(conn.execute("SELECT %s::int + %s::int", (1, 2)).fetchone() == (3,), "parameter arithmetic")
            rows = conn.execute(
                "SELECT id, name FROM products WHERE tenant_id = %s AND deleted_at IS NULL ORDER BY id LIMIT %s",
                (1, 5)).fetchall()
            check(len(rows) == 5 and all(isinstance(r[0], int) for r in rows), f"products rows: {rows!r}")
        check(conn.execute("SELECT %s::text", ("héllo 'quoted'",)).fetchone() == ("héllo 'quoted'",), "text param")
        check(conn.execute("SELECT %s::int", (None,)).fetchone() == (None,), "NULL param")

        # Rolled-back transaction leaves no row; committed one does.
        with conn.transaction(force_rollback=True):
            row_id = conn.execute("INSERT INTO client_events (client, note) VALUES (%s, %s) RETURNING id",
                                  (client_tag, "rolled back")).fetchone()[0]
            check(conn.execute("SELECT count(*) FROM client_events WHERE id = %s", (row_id,)).fetchone() == (1,),
                  "row visible inside its transaction")
        check(conn.execute("SELECT count(*) FROM client_events WHERE id = %s", (row_id,)).fetchone() == (0,),
              "rolled-back row is gone")
        with conn.transaction():
            row_id = conn.execute("INSERT INTO client_events (client, note) VALUES (%s, %s) RETURNING id",
                                  (client_tag, "committed")).fetchone()[0]
        check(conn.execute("SELECT count(*) FROM client_events WHERE id = %s", (row_id,)).fetchone() == (1,),
              "committed row is visible")
        conn.execute("DELETE FROM client_events WHERE id = %s", (row_id,))

        # An error reaches the client with its SQLSTATE and the connection stays usable.
        try:
            conn.execute("SELECT 1/0")
            raise AssertionError("SELECT 1/0 did not fail")
        except errors.DivisionByZero as e:
            check(e.sqlstate == "22012", f"sqlstate {e.sqlstate}")
        check(conn.execute("SELECT 1").fetchone() == (1,), "connection works after an error")

        # An error inside a transaction aborts it until ROLLBACK, then all is well again.
        conn.autocommit = False
        try:
            conn.execute("SELECT %s::int / 0", (7,))
            raise AssertionError("division by zero did not fail")
        except errors.DivisionByZero:
            pass
        try:
            conn.execute("SELECT 1")
            raise AssertionError("statement in an aborted transaction did not fail")
        except errors.InFailedSqlTransaction as e:
            check(e.sqlstate == "25P02", f"sqlstate {e.sqlstate}")
        conn.rollback()
        check(conn.execute("SELECT %s::int", (42,)).fetchone() == (42,), "works after rollback")
        conn.rollback()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn", nargs="?", default=os.environ.get("PGR_DSN"))
    parser.add_argument("--prepare-threshold", type=int, default=5)
    args = parser.parse_args()
    if not args.dsn:
        parser.error("give a DSN or set PGR_DSN")
    threshold = None if args.prepare_threshold < 0 else args.prepare_threshold
    try:
        run(args.dsn, threshold)
    except Exception as e:  # report any failure as one line, the caller asserts on the output
        print(f"FAIL: {type(e).__name__}: {e}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
