#!/usr/bin/env bash
# Instructions per transaction in pgrouter's own process under pgbench, counted by callgrind: a measure that does
# not move with the host's noise (PostgreSQL and pgbench are not in it; kernel time is not either). pgrouter runs
# under valgrind with instrumentation off, a short warm-up runs, instrumentation is switched on, then
# pgbench -S -t TX per client runs and pgrouter is stopped; the totals and the top functions are printed.
# Usage: bench/callgrind.sh     env: MODE (extended; simple|extended|prepared), EXTRA (more pgbench options, e.g.
#   -C), C clients (16), TX per client (300), REPLICA=1 (a streaming replica; reads classified and routed),
#   PGROUTER_BIN, OUT (callgrind output file, default $W/callgrind.out, kept with KEEP=1 or when OUT is given),
#   TARGET=pgbouncer (counts PgBouncer instead, same load, transaction mode, pool 20: the reference),
#   SHARDED=1 (a second server as a second shard, pgbench_accounts sharded by aid as bench/sharded_reads.sh does;
#   the keyed read of -S as a custom script, since pgbench -S would also read pgbench_branches, which is refused;
#   KEYED=1 runs that script without sharding, the unsharded reference)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cleanup() {
  if [ "${SHARDED:-0}" = 1 ]; then stop_second_postgres; fi
  bench_cleanup
}
trap cleanup EXIT
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
ensure_tools
MODE=${MODE:-extended}
C=${C:-16}
TX=${TX:-300}
OUT=${OUT:-$W/callgrind.out}
start_postgres 100
pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s 1 -q postgres >"$W/init.log" 2>&1
if [ "${REPLICA:-0}" = 1 ]; then start_replica; fi
script=(-S)
if [ "${SHARDED:-0}" = 1 ]; then
  start_second_postgres
  pgbench -h 127.0.0.1 -p "$PG2PORT" -U postgres -i -s 1 -q postgres >"$W/init2.log" 2>&1
  export PGROUTER_REPLICA_PORTS='' PGROUTER_SHARD_PORTS="$PG2PORT"
  export PGROUTER_SHARDING="{key_type: integer, tables: {pgbench_accounts: aid}, unsharded: reject}"
fi
if [ "${SHARDED:-0}" = 1 ] || [ "${KEYED:-0}" = 1 ]; then
  cat >"$W/read.sql" <<'SQL'
\set aid random(1, 100000)
select abalance from pgbench_accounts where aid = :aid;
SQL
  script=(-f "$W/read.sql")
fi
vg=(valgrind --tool=callgrind --callgrind-out-file="$OUT" --dump-instr=no --instr-atstart=no)
if [ "${TARGET:-pgrouter}" = pgbouncer ]; then
  # PgBouncer runs as postgres (it refuses root); callgrind_control must then be run as that user too.
  [ "${REPLICA:-0}" = 1 ] && TARGET_PORT=$REPLICA_PORT
  start_pgbouncer transaction 20  # started once for its config; stopped and run again under valgrind
  as_postgres "kill \$(cat $W/bouncer.pid)"
  sleep 1
  chown postgres "$W"
  as_postgres "$(printf '%q ' "${vg[@]}") pgbouncer $W/bouncer.ini >$W/valgrind.log 2>&1 &"
  wait_for_sql "$BOUNCER_PORT" 60
  port=$BOUNCER_PORT
  control() { as_postgres "callgrind_control $*"; }
  stop() { as_postgres "pkill -INT -u postgres -f 'callgrind.*pgbouncer'"; sleep 3; }
else
  cat >"$W/under-callgrind" <<WRAP
#!/bin/sh
exec $(printf '%q ' "${vg[@]}") "$PGROUTER_BIN" "\$@"
WRAP
  chmod +x "$W/under-callgrind"
  PGROUTER_BIN=$W/under-callgrind start_pgrouter transaction 20 1
  port=$PGROUTER_PORT
  control() { callgrind_control "$@"; }
  stop() { kill -INT "$PGROUTER_PID"; wait "$PGROUTER_PID" 2>/dev/null || true; }
fi
pgb=(pgbench "${script[@]}" -M "$MODE" ${EXTRA:-} -n -h 127.0.0.1 -p "$port" -U postgres postgres)
"${pgb[@]}" -c 4 -t 20 >/dev/null 2>&1   # warm-up: pool, caches
control -i on >/dev/null 2>&1
out=$("${pgb[@]}" -c "$C" -j 1 -t "$TX" 2>&1)
stop
txns=$(awk '/actually processed/{print $NF}' <<<"$out" | cut -d/ -f1)
total=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
if [ "${TARGET:-pgrouter}" = pgbouncer ]; then who="pgbouncer $(pgbouncer --version | head -1 | awk '{print $2}')"
else who="pgrouter $(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo '?')"; fi
load="-S"
[ "${#script[@]}" = 2 ] && load="-f read.sql (keyed read${SHARDED:+, SHARDED=$SHARDED})"
echo "$who; pgbench $load -M $MODE ${EXTRA:-} -c $C -t $TX;" \
  "$txns transactions; $total instructions; $((total / txns)) per transaction"
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | grep -E '/src/|include/pgrouter/' | head -25 | cut -c1-160
