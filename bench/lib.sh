# Shared setup for the bench scripts: a throwaway PostgreSQL and the proxies under comparison, all on free
# loopback ports inside one temp dir that is removed on exit. Source it; do not run it.
# shellcheck shell=bash disable=SC2015,SC2034  # "A && B || true" is meant; the variables set here are read by the callers

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
PGROUTER_BIN=${PGROUTER_BIN:-$REPO_DIR/build/pgrouter}
PYTHON=/usr/bin/python3   # Debian's, which has psycopg 3
PG_VERSION=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -n | tail -1)
PGBIN=/usr/lib/postgresql/$PG_VERSION/bin
export PATH=$PATH:/usr/sbin:/sbin

W=$(mktemp -d /tmp/pgrouter-bench.XXXXXX)
STARTED_PIDS=()

log() { echo "[bench] $*" >&2; }

# PostgreSQL and PgBouncer refuse to run as root.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ensure_tools() {
  local missing=()
  command -v pgbouncer >/dev/null || missing+=(pgbouncer)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v pgbench >/dev/null || missing+=(postgresql-client)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get install -y "${missing[@]}" >/dev/null
  fi
}

bench_cleanup() {
  local pid dir
  for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$W/bouncer.pid" ] && kill "$(cat "$W/bouncer.pid")" 2>/dev/null || true
  [ -f "$W/hap.pid" ] && kill "$(cat "$W/hap.pid")" 2>/dev/null || true
  for dir in "${REPLICA_DIRS[@]}"; do as_postgres "$PGBIN/pg_ctl -D $dir -m fast stop" >/dev/null 2>&1 || true; done
  [ -d "$W/pg" ] && as_postgres "$PGBIN/pg_ctl -D $W/pg -m fast stop" >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then log "kept $W"; else rm -rf "$W"; fi
}

# start_postgres MAX_CONNECTIONS: sets PGPORT.
start_postgres() {
  PGPORT=$(free_port)
  chown postgres "$W" 2>/dev/null || true
  as_postgres "$PGBIN/initdb -D $W/pg -A trust -U postgres" >/dev/null
  cat >>"$W/pg/postgresql.conf" <<CONF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$W'
max_connections = ${1:-300}
shared_buffers = 256MB
fsync = off
synchronous_commit = off
max_prepared_transactions = ${PG_MAX_PREPARED:-0}
CONF
  if [ "${SERVER_TLS:-0}" = 1 ]; then  # TLS to the server: a throwaway self-signed certificate
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/pg/server.key" -out "$W/pg/server.crt" -days 2 \
      -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1
    chown postgres "$W/pg/server.key" "$W/pg/server.crt" 2>/dev/null || true
    chmod 600 "$W/pg/server.key"
    echo "ssl = on" >>"$W/pg/postgresql.conf"
  fi
  as_postgres "$PGBIN/pg_ctl -D $W/pg -l $W/pg.log -w start" >/dev/null
  log "postgresql $PG_VERSION on 127.0.0.1:$PGPORT${SERVER_TLS:+ (ssl=on)}"
}

# start_second_postgres: another primary like start_postgres's (a second shard), in $W/pg2; sets PG2PORT. The
# caller's cleanup stops it (stop_second_postgres).
start_second_postgres() {
  PG2PORT=$(free_port)
  as_postgres "$PGBIN/initdb -D $W/pg2 -A trust -U postgres" >/dev/null
  cat >>"$W/pg2/postgresql.conf" <<CONF
port = $PG2PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$W'
max_connections = 300
shared_buffers = 256MB
fsync = off
synchronous_commit = off
max_prepared_transactions = ${PG_MAX_PREPARED:-0}
CONF
  as_postgres "$PGBIN/pg_ctl -D $W/pg2 -l $W/pg2.log -w start" >/dev/null
}
stop_second_postgres() {
  [ -d "$W/pg2" ] && as_postgres "$PGBIN/pg_ctl -D $W/pg2 -m fast stop" >/dev/null 2>&1 || true
}

# start_replica [NAME]: a streaming replica of the bench server (pg_basebackup -R) in $W/NAME (default "replica");
# call it once per replica with distinct names. Sets REPLICA_PORT (this replica's port) and appends it to
# REPLICA_PORTS; bench_cleanup stops every replica made.
REPLICA_PORTS=()
REPLICA_DIRS=()
start_replica() {
  local name=${1:-replica}
  REPLICA_PORT=$(free_port)
  as_postgres "$PGBIN/pg_basebackup -h 127.0.0.1 -p $PGPORT -U postgres -D $W/$name -X stream -c fast -R" >/dev/null
  cat >>"$W/$name/postgresql.conf" <<CONF
port = $REPLICA_PORT
CONF
  REPLICA_DIRS+=("$W/$name")
  as_postgres "$PGBIN/pg_ctl -D $W/$name -l $W/$name.log -w start" >/dev/null
  REPLICA_PORTS+=("$REPLICA_PORT")
  log "streaming replica $name on 127.0.0.1:$REPLICA_PORT"
}

# start_pgbouncer MODE POOL_SIZE: sets BOUNCER_PORT and BOUNCER_PID.
start_pgbouncer() {
  BOUNCER_PORT=$(free_port)
  echo '"postgres" ""' >"$W/users.txt"
  cat >"$W/bouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=${TARGET_PORT:-$PGPORT}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
auth_type = trust
auth_file = $W/users.txt
pool_mode = $1
default_pool_size = $2
max_client_conn = ${MAX_CLIENTS:-5000}
pidfile = $W/bouncer.pid
logfile = $W/bouncer.log
unix_socket_dir =
INI
  # SERVER_TLS=1: PgBouncer and pgrouter both reach the server with sslmode require.
  [ "${SERVER_TLS:-0}" = 1 ] && echo "server_tls_sslmode = require" >>"$W/bouncer.ini"
  chown postgres "$W/users.txt" "$W/bouncer.ini" 2>/dev/null || true
  # Each client and each server is a file descriptor: the default 1024 caps PgBouncer near 500 clients.
  as_postgres "ulimit -n \$(ulimit -Hn) 2>/dev/null; pgbouncer -d $W/bouncer.ini"
  wait_for_sql "$BOUNCER_PORT" 10 || { log "pgbouncer did not start; see $W/bouncer.log"; return 1; }
  BOUNCER_PID=$(cat "$W/bouncer.pid")
  log "pgbouncer ($1 mode, pool $2) on 127.0.0.1:$BOUNCER_PORT"
}

# start_haproxy: TCP mode splice, the floor of proxy overhead. Sets HAP_PORT.
start_haproxy() {
  HAP_PORT=$(free_port)
  cat >"$W/hap.cfg" <<HAP
global
  pidfile $W/hap.pid
  maxconn 5000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen pg
  bind 127.0.0.1:$HAP_PORT
  server p 127.0.0.1:${TARGET_PORT:-$PGPORT}
HAP
  haproxy -D -f "$W/hap.cfg"
  wait_for_sql "$HAP_PORT" 10 || { log "haproxy did not start"; return 1; }
  log "haproxy (tcp) on 127.0.0.1:$HAP_PORT"
}

# start_pgrouter MODE POOL_SIZE WORKERS [NAME]: sets PGROUTER_PORT, PGROUTER_ADMIN_PORT and PGROUTER_PID, or returns 1
# with a message when the binary is missing or does not answer a query (it is still being written).
# The database's replicas are the ports in PGROUTER_REPLICA_PORTS (space-separated; set but empty: none), by default
# every replica start_replica made; PGROUTER_ROUTING, if set, is the database's routing: value as YAML flow
# ("{read_from: any, probe_interval: 100ms}"); PGROUTER_UNNAMED, if set, is pool.unnamed_statements (pass|prepare);
# PGROUTER_SHARD_PORTS, if set, are more shards (their primaries' ports, or PORT/DBNAME for a shard that is another
# database of a server) and PGROUTER_SHARDING the database's sharding:
# value as YAML flow.
start_pgrouter() {
  if [ ! -x "$PGROUTER_BIN" ]; then
    log "SKIP pgrouter: $PGROUTER_BIN not found (build it, or set PGROUTER_BIN)"
    return 1
  fi
  PGROUTER_PORT=$(free_port)
  PGROUTER_ADMIN_PORT=$(free_port)
  local name=${4:-pgrouter} replicas="" port sched=${PGROUTER_SCHED:-}
  [ "$name" = baseline ] && sched=${PGROUTER_BASE_SCHED:-}  # listen.scheduling of each (empty: the build's default)
  for port in ${PGROUTER_REPLICA_PORTS-${REPLICA_PORTS[*]}}; do
    replicas+="${replicas:+, }{host: 127.0.0.1, port: $port}"
  done
  local more_shards=""
  local shard
  for shard in ${PGROUTER_SHARD_PORTS:-}; do  # PORT, or PORT/DBNAME: a shard that is a database of its own
    more_shards+="      - primary: {host: 127.0.0.1, port: ${shard%%/*}}"$'\n'
    [[ $shard == */* ]] && more_shards+="        dbname: ${shard#*/}"$'\n'
  done
  cat >"$W/$name.yaml" <<YAML
version: 1
listen:
  host: 127.0.0.1
  port: $PGROUTER_PORT
  workers: $3
  max_client_conn: ${MAX_CLIENTS:-5000}
${sched:+  scheduling: $sched}
admin:
  host: 127.0.0.1
  port: $PGROUTER_ADMIN_PORT
log:
  level: warn
pool:
  mode: $1
  size: $2
${PGROUTER_UNNAMED:+  unnamed_statements: $PGROUTER_UNNAMED}
server_tls:
  sslmode: $([ "${SERVER_TLS:-0}" = 1 ] && echo require || echo prefer)
databases:
  - name: postgres
    shards:
      - primary: {host: 127.0.0.1, port: $PGPORT}
        replicas: [$replicas]
${more_shards}${PGROUTER_ROUTING:+    routing: $PGROUTER_ROUTING}
${PGROUTER_SHARDING:+    sharding: $PGROUTER_SHARDING}
users:
  - name: postgres
    password: unused-trust-on-both-sides
auth:
  - method: trust
    users: [all]
    databases: [all]
    addresses: [all]
YAML
  "$PGROUTER_BIN" --config "$W/$name.yaml" >"$W/$name.log" 2>&1 &
  PGROUTER_PID=$!
  STARTED_PIDS+=("$PGROUTER_PID")
  if ! wait_for_sql "$PGROUTER_PORT" 10 "$PGROUTER_PID"; then
    log "SKIP pgrouter: it did not answer 'select 1' within 10 s. Last log lines:"
    tail -n 15 "$W/$name.log" >&2 || true
    kill "$PGROUTER_PID" 2>/dev/null || true
    return 1
  fi
  log "pgrouter ($1 mode, pool $2, $3 workers) on 127.0.0.1:$PGROUTER_PORT, admin :$PGROUTER_ADMIN_PORT"
}

# wait_for_sql PORT SECONDS [PID]: true once 'select 1' works through PORT; false on timeout or if PID dies.
wait_for_sql() {
  local deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
    if [ "$(PGCONNECT_TIMEOUT=3 timeout 5 psql -X -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atc 'select 1' 2>/dev/null)" = 1 ]; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
