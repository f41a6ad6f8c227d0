#!/usr/bin/env bash
# pgrouter CPU time per transaction, for comparing two builds under the same load (an A/B that does not depend on
# which target ran after which, unlike tps in bench/run.sh): runs BIN in transaction mode (2 workers, pool 20)
# against the primary of a cluster made by tests/cluster.sh, drives pgbench -S (64 clients, 8 s; CONNECT=1 adds -C)
# and reads pgrouter's task-clock with perf stat.
# Usage: bash tests/cluster.sh start /tmp/pgr && pgbench -i -h 127.0.0.1 -p PRIMARY -U pgr_scram app  (once)
#        CLUSTER=/tmp/pgr bench/ab_cpu.sh build/pgrouter [other/pgrouter ...]
set -euo pipefail
CLUSTER=${CLUSTER:?set CLUSTER to a tests/cluster.sh directory}
source "$CLUSTER/env.sh"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
connect=()
[ "${CONNECT:-0}" = 1 ] && connect=(-C)
for BIN in "$@"; do
  PORT=$(/usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  cat >"$W/ab.yaml" <<Y
version: 1
listen: {host: 127.0.0.1, port: $PORT, workers: 2, max_client_conn: 5000}
log: {level: warn}
pool: {mode: transaction, size: 20}
databases: [{name: app, shards: [{primary: {host: 127.0.0.1, port: $PGR_PRIMARY_PORT}}]}]
users: [{name: pgr_scram, password: scram_pw}]
auth: [{method: trust}]
Y
  "$BIN" --config "$W/ab.yaml" >"$W/pgrouter.log" 2>&1 &
  P=$!
  sleep 1
  timeout 12 perf stat -e task-clock -p "$P" -o "$W/stat" &
  S=$!
  sleep 0.5
  out=$(pgbench -S -M simple "${connect[@]}" -c 64 -j 2 -T 8 -h 127.0.0.1 -p "$PORT" -U pgr_scram app 2>&1)
  kill -INT "$S" 2>/dev/null || true
  wait "$S" 2>/dev/null || true
  kill "$P"
  wait "$P" 2>/dev/null || true
  txns=$(awk '/actually processed/{print $NF}' <<<"$out" | cut -d/ -f1)
  ms=$(awk '/task-clock/{gsub(",","",$1); print $1}' "$W/stat")
  awk -v b="$BIN" -v t="$txns" -v m="$ms" 'BEGIN{printf "%s: %d transactions, %.0f ms CPU, %.1f us per transaction\n", b, t, m, m*1000/t}'
done
