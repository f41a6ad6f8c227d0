#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL 15 topology (primary, streaming replica, two shard primaries) plus Redis
# under one directory, on free loopback ports, for pgrouter's integration tests and demo.
#
#   tests/cluster.sh start DIR   # writes DIR/env.sh and DIR/env.json with the ports
#   tests/cluster.sh stop DIR    # safe to call twice
set -Eeuo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SQL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/sql"
PG_SERVERS=(primary replica shard0 shard1)

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

# PostgreSQL refuses to run as root: run its tools as 'postgres' when we are root.
as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Prints N distinct free loopback ports. All sockets stay bound until every port is chosen so the N are distinct;
# a parallel run may still race for a port between this and the server's bind, which start() reports clearly.
free_ports() {
  /usr/bin/python3 - "$1" <<'PY'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

psql_on() {  # psql_on PORT DBNAME [psql args...]
  local port=$1 dbname=$2
  shift 2
  as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$dbname" "$@"
}

write_server_config() {  # write_server_config DATADIR
  local datadir=$1
  cat >>"$datadir/postgresql.conf" <<EOF

# --- tests/cluster.sh: fast, disposable settings ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/sock'
max_connections = 300
# Cross-shard writes commit with PREPARE TRANSACTION (two-phase commit).
max_prepared_transactions = 20
shared_buffers = 16MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = replica
wal_keep_size = 256MB
max_wal_senders = 8
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
log_min_messages = warning
log_connections = off
log_checkpoints = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  cat >"$datadir/pg_hba.conf" <<'EOF'
# tests/cluster.sh: one auth method per test role (the backend-auth matrix), trust for the superuser.
local   all          all                         trust
host    all          postgres     127.0.0.1/32   trust
host    all          pgr_trust    127.0.0.1/32   trust
host    all          pgr_scram    127.0.0.1/32   scram-sha-256
host    all          pgr_md5      127.0.0.1/32   md5
host    all          pgr_clear    127.0.0.1/32   password
host    all          all          127.0.0.1/32   scram-sha-256
host    replication  postgres     127.0.0.1/32   trust
EOF
}

set_port() {  # set_port DATADIR PORT: the last 'port' line of postgresql.conf wins
  echo "port = $2" >>"$1/postgresql.conf"
}

start_pg() {  # start_pg NAME
  local name=$1
  if ! as_postgres "$PG_BIN/pg_ctl" -D "$DIR/$name" -l "$DIR/$name.log" -w -t 60 start >/dev/null; then
    echo "cluster.sh: $name failed to start; log tail:" >&2
    tail -n 20 "$DIR/$name.log" >&2 || true
    return 1
  fi
}

# Background jobs inherit the ERR trap (set -E): only the main shell cleans up, once.
on_start_failure() {
  if [[ $BASHPID == "$$" ]]; then
    trap - ERR
    echo "cluster.sh: start failed, stopping what was started" >&2
    stop_all
  fi
}

start() {
  # A postmaster.pid whose process is gone (the machine restarted) is stale: start over it.
  if [[ -f "$DIR/env.sh" ]] && [[ -f "$DIR/primary/postmaster.pid" ]] &&
     kill -0 "$(head -n1 "$DIR/primary/postmaster.pid")" 2>/dev/null; then
    echo "cluster.sh: $DIR already has a running cluster (stop it first)" >&2
    exit 1
  fi
  mkdir -p "$DIR/sock"
  rm -rf "${PG_SERVERS[@]/#/$DIR/}" "$DIR/redis" "$DIR/env.sh" "$DIR/env.json"
  mkdir -p "$DIR/redis"
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$DIR" "$DIR/sock"
  fi
  trap on_start_failure ERR

  read -r PRIMARY_PORT REPLICA_PORT SHARD0_PORT SHARD1_PORT REDIS_PORT <<<"$(free_ports 5)"

  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --dir "$DIR/redis" --pidfile "$DIR/redis/redis.pid" --logfile "$DIR/redis.log" >/dev/null

  # One initdb, set up once, then copied by pg_basebackup: much faster than initdb + schema per server.
  as_postgres "$PG_BIN/initdb" -D "$DIR/primary" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
  write_server_config "$DIR/primary"
  set_port "$DIR/primary" "$PRIMARY_PORT"
  start_pg primary
  psql_on "$PRIMARY_PORT" postgres -f "$SQL_DIR/roles.sql"
  psql_on "$PRIMARY_PORT" postgres -c 'CREATE DATABASE app'
  psql_on "$PRIMARY_PORT" app -f "$SQL_DIR/schema.sql"
  psql_on "$PRIMARY_PORT" postgres -c 'CHECKPOINT'

  local name port pids=()
  for name in replica shard0 shard1; do
    local recovery_flag=()
    [[ $name == replica ]] && recovery_flag=(-R)
    as_postgres "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$DIR/$name" \
      -X stream -c fast --no-sync "${recovery_flag[@]}" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  set_port "$DIR/replica" "$REPLICA_PORT"
  set_port "$DIR/shard0" "$SHARD0_PORT"
  set_port "$DIR/shard1" "$SHARD1_PORT"
  # Without standby.signal the shard copies come up as independent primaries.
  pids=()
  for name in replica shard0 shard1; do
    start_pg "$name" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done

  # The replica is usable once it streams from the primary.
  local tries
  for ((tries = 0; tries < 100; tries++)); do
    if [[ "$(psql_on "$PRIMARY_PORT" postgres -At -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" == 1 ]]; then
      break
    fi
    sleep 0.1
  done

  for ((tries = 0; tries < 100; tries++)); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
  done

  cat >"$DIR/env.sh" <<EOF
# Written by tests/cluster.sh: source it to reach the test topology.
export PGR_DIR=$DIR
export PGR_HOST=127.0.0.1
export PGR_PRIMARY_PORT=$PRIMARY_PORT
export PGR_REPLICA_PORT=$REPLICA_PORT
export PGR_SHARD0_PORT=$SHARD0_PORT
export PGR_SHARD1_PORT=$SHARD1_PORT
export PGR_REDIS_PORT=$REDIS_PORT
export PGR_PG_BIN=$PG_BIN
EOF
  cat >"$DIR/env.json" <<EOF
{
  "PGR_DIR": "$DIR",
  "PGR_HOST": "127.0.0.1",
  "PGR_PRIMARY_PORT": $PRIMARY_PORT,
  "PGR_REPLICA_PORT": $REPLICA_PORT,
  "PGR_SHARD0_PORT": $SHARD0_PORT,
  "PGR_SHARD1_PORT": $SHARD1_PORT,
  "PGR_REDIS_PORT": $REDIS_PORT,
  "PGR_PG_BIN": "$PG_BIN"
}
EOF
  trap - ERR
  echo "cluster.sh: started in $DIR (primary $PRIMARY_PORT, replica $REPLICA_PORT, shard0 $SHARD0_PORT," \
    "shard1 $SHARD1_PORT, redis $REDIS_PORT)"
}

stop_all() {
  local name tries
  # Replica first, so the primary's shutdown does not wait on a walsender.
  for name in replica shard0 shard1 primary; do
    if [[ -f "$DIR/$name/postmaster.pid" ]]; then
      as_postgres "$PG_BIN/pg_ctl" -D "$DIR/$name" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    fi
  done
  local pidfile="$DIR/redis/redis.pid" pid
  if [[ -f "$pidfile" ]]; then
    pid=$(<"$pidfile")
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      local port
      port=$(sed -n 's/^export PGR_REDIS_PORT=//p' "$DIR/env.sh" 2>/dev/null || true)
      [[ -z "$port" ]] && port=${REDIS_PORT:-}
      if [[ -z "$port" ]] || ! redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1; then
        kill "$pid" 2>/dev/null || true
      fi
      for ((tries = 0; tries < 50; tries++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
    fi
    rm -f "$pidfile"
  fi
}

[[ $# -eq 2 ]] || usage
case "$2" in
  /*) DIR=$2 ;;
  *) DIR="$(pwd)/$2" ;;
esac
DIR=${DIR%/}

case "$1" in
  start) start ;;
  stop) stop_all ;;
  *) usage ;;
esac
