#!/usr/bin/env bash
# Memory per idle client: RSS (VmRSS) of pgrouter and of PgBouncer before and with N idle clients connected
# (each ran one SELECT 1), and the difference per client.
# Usage: bench/idle_rss.sh      env: N=clients (1000), MODE=transaction|session (transaction), PGROUTER_BIN, KEEP=1
# In transaction mode idle clients hold no server connection; in session mode each holds one, so PostgreSQL
# is started with room for N server connections per proxy.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT

N=${N:-1000}
export MAX_CLIENTS=$((N + 100))  # both proxies must admit them all
MODE=${MODE:-transaction}
QUERY_ONCE=${QUERY_ONCE:-1}
if [ "$MODE" = session ]; then POOL_SIZE=$N; else POOL_SIZE=20; fi

ensure_tools
ulimit -n 65536 2>/dev/null || true
start_postgres $((POOL_SIZE + 50))  # the proxies are measured one after the other

ROWS=()
# measure NAME PID PORT: one table row for the process PID listening on PORT.
measure() {
  local name=$1 pid=$2 port=$3 before with client
  before=$(rss_kib "$pid")
  "$PYTHON" "$BENCH_DIR/idle_clients.py" "$port" "$N" "$QUERY_ONCE" >"$W/clients-$name.log" 2>&1 &
  client=$!
  STARTED_PIDS+=("$client")
  local deadline=$((SECONDS + 120))
  while ! grep -q '^connected' "$W/clients-$name.log" 2>/dev/null; do
    if ! kill -0 "$client" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      log "$name: clients did not all connect: $(tail -n 3 "$W/clients-$name.log")"
      kill "$client" 2>/dev/null || true
      ROWS+=("| $name | $MODE | $before | failed | - |")
      return 0
    fi
    sleep 0.5
  done
  sleep 1  # let the proxy finish any work the last logins started
  with=$(rss_kib "$pid")
  log "$name: $(cat "$W/clients-$name.log"); VmRSS ${before} KiB -> ${with} KiB"
  kill "$client" 2>/dev/null || true
  wait "$client" 2>/dev/null || true
  ROWS+=("| $name | $MODE | $before | $with | $(( (with - before) * 1024 / N )) |")
}

if start_pgbouncer "$MODE" "$POOL_SIZE"; then
  measure pgbouncer "$BOUNCER_PID" "$BOUNCER_PORT"
  # Stop it so its server connections do not count against PostgreSQL's max_connections for pgrouter.
  kill "$BOUNCER_PID" 2>/dev/null || true
  sleep 2
fi
if start_pgrouter "$MODE" "$POOL_SIZE" 2; then
  measure pgrouter "$PGROUTER_PID" "$PGROUTER_PORT"
else
  ROWS+=("| pgrouter | $MODE | skipped | skipped | - |")
fi

echo
echo "## RSS with $N idle clients ($MODE mode, one SELECT 1 each), $(date -u +%Y-%m-%d)"
echo
echo "| proxy | pool mode | VmRSS before KiB | VmRSS with $N clients KiB | bytes per client |"
echo "|---|---|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
