#!/usr/bin/env bash
# Starts a local pgrouter demo (PostgreSQL primary + replica + shards + Redis under .demo/, pgrouter in front of the
# primary) and prints how to connect. Run it again, or run `scripts/demo.sh stop`, to tear everything down.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="$REPO/.demo"
BUILD_DIR=${BUILD_DIR:-$REPO/build}
PID_FILE="$DEMO/pgrouter.pid"
CONFIG="$DEMO/pgrouter.yaml"
LOG="$DEMO/pgrouter.log"
PSQL=/usr/lib/postgresql/15/bin/psql

running() {
  [[ -f "$PID_FILE" ]] && kill -0 "$(<"$PID_FILE")" 2>/dev/null && return 0
  [[ -f "$DEMO/cluster/primary/postmaster.pid" ]]
}

stop_demo() {
  if [[ -f "$PID_FILE" ]]; then
    local pid tries
    pid=$(<"$PID_FILE")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for ((tries = 0; tries < 100; tries++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$PID_FILE"
  fi
  [[ -d "$DEMO/cluster" ]] && bash "$REPO/tests/cluster.sh" stop "$DEMO/cluster"
  echo "demo stopped"
}

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_demo() {
  bash "$REPO/scripts/install-deps.sh"
  [[ -f "$BUILD_DIR/build.ninja" ]] || meson setup "$BUILD_DIR" "$REPO"
  ninja -C "$BUILD_DIR" pgrouter

  mkdir -p "$DEMO"
  rm -rf "$DEMO/cluster"
  bash "$REPO/tests/cluster.sh" start "$DEMO/cluster"
  # shellcheck disable=SC1091
  source "$DEMO/cluster/env.sh"

  # The demo's own login, on every writable server (the replica receives it by replication).
  local port
  for port in "$PGR_PRIMARY_PORT" "$PGR_SHARD0_PORT" "$PGR_SHARD1_PORT"; do
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d app <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN PASSWORD 'app';
GRANT USAGE, CREATE ON SCHEMA public TO app;
GRANT ALL ON ALL TABLES IN SCHEMA public TO app;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app;
SQL
  done
  # The shard servers start as copies of the primary: each keeps only the tenants PostgreSQL's hash
  # partitioning (pgrouter's `hash` strategy) gives it, so the sharded database below is really split.
  local shard=0
  for port in "$PGR_SHARD0_PORT" "$PGR_SHARD1_PORT"; do
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d app <<SQL
CREATE TABLE pgr_demo_placement (k bigint) PARTITION BY HASH (k);
DELETE FROM products WHERE NOT satisfies_hash_partition('pgr_demo_placement'::regclass, 2, $shard, tenant_id);
DELETE FROM users WHERE NOT satisfies_hash_partition('pgr_demo_placement'::regclass, 2, $shard, tenant_id);
DELETE FROM categories WHERE NOT satisfies_hash_partition('pgr_demo_placement'::regclass, 2, $shard, tenant_id);
DELETE FROM brands WHERE NOT satisfies_hash_partition('pgr_demo_placement'::regclass, 2, $shard, tenant_id);
DROP TABLE pgr_demo_placement;
SQL
    shard=$((shard + 1))
  done

  local listen_port admin_port
  listen_port=$(free_port)
  admin_port=$(free_port)
  while [[ "$admin_port" == "$listen_port" ]]; do admin_port=$(free_port); done
  cat >"$CONFIG" <<EOF
# Written by scripts/demo.sh for the topology under .demo/cluster (see conf/pgrouter.yaml for every key).
version: 1
listen:
  host: 127.0.0.1
  port: $listen_port
  workers: 2
admin:
  host: 127.0.0.1
  port: $admin_port
log:
  level: info
pool:
  mode: transaction  # read/write splitting applies to transaction pooling
  size: 20
databases:
  - name: app
    shards:
      - primary: {host: 127.0.0.1, port: $PGR_PRIMARY_PORT}
        replicas:
          - {host: 127.0.0.1, port: $PGR_REPLICA_PORT, weight: 1}
  # The same schema split by tenant over the two shard servers (docs/SHARDING.md).
  - name: app_sharded
    dbname: app
    shards:
      - primary: {host: 127.0.0.1, port: $PGR_SHARD0_PORT}
      - primary: {host: 127.0.0.1, port: $PGR_SHARD1_PORT}
    sharding:
      key_type: bigint
      tables: {products: tenant_id, brands: tenant_id, categories: tenant_id, users: tenant_id}
users:
  - name: app
    password: app
auth:
  - method: scram-sha-256
    users: [all]
    databases: [all]
    addresses: [127.0.0.1/32]
EOF

  setsid "$BUILD_DIR/pgrouter" --config "$CONFIG" </dev/null >>"$LOG" 2>&1 &
  echo $! >"$PID_FILE"
  local tries
  for ((tries = 0; tries < 150; tries++)); do
    if ! kill -0 "$(<"$PID_FILE")" 2>/dev/null; then
      echo "pgrouter exited during startup; the end of $LOG:" >&2
      tail -n 20 "$LOG" >&2
      stop_demo
      exit 1
    fi
    /usr/bin/python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' \
      "$listen_port" 2>/dev/null && break
    sleep 0.1
  done
  if ((tries == 150)); then
    echo "pgrouter did not listen on $listen_port within 15 s; the end of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    stop_demo
    exit 1
  fi

  echo
  echo "pgrouter is running (pid $(<"$PID_FILE"), log $LOG, config $CONFIG). Connect with:"
  echo "  psql \"host=127.0.0.1 port=$listen_port user=app dbname=app password=app\""
  echo "Reads outside a transaction go to the replica, writes and read-write transactions to the primary:"
  echo "  select pg_is_in_recovery();   -- t (the replica)      begin; select pg_is_in_recovery(); commit;   -- f"
  echo "The same schema sharded by tenant over two servers (each statement goes to its tenant's shard):"
  echo "  psql \"host=127.0.0.1 port=$listen_port user=app dbname=app_sharded password=app\""
  echo "  select name from products where tenant_id = 2;   select count(*) from products;   -- the second is refused"
  echo "Metrics: http://127.0.0.1:$admin_port/metrics"
  echo "Stop with: scripts/demo.sh stop   (or run scripts/demo.sh again)"
}

case "${1:-start}" in
  start)
    if running; then
      stop_demo
    else
      start_demo
    fi
    ;;
  stop) stop_demo ;;
  *)
    echo "usage: $0 [start|stop]" >&2
    exit 2
    ;;
esac
