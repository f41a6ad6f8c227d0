#!/usr/bin/env bash
# Instructions per transaction in pgrouter's own process under pgbench, counted by callgrind: a measure that does
# not move with the host's noise (PostgreSQL and pgbench are not in it; kernel time is not either). pgrouter runs
# under valgrind with instrumentation off, a short warm-up runs, instrumentation is switched on, then
# pgbench -S -t TX per client runs and pgrouter is stopped; the totals and the top functions are printed.
# Usage: bench/callgrind.sh     env: MODE (extended; simple|extended|prepared), EXTRA (more pgbench options, e.g.
#   -C), C clients (16), TX per client (300), REPLICA=1 (a streaming replica; reads classified and routed),
#   PGROUTER_BIN, OUT (callgrind output file, default $W/callgrind.out, kept with KEEP=1 or when OUT is given)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
ensure_tools
MODE=${MODE:-extended}
C=${C:-16}
TX=${TX:-300}
OUT=${OUT:-$W/callgrind.out}
start_postgres 100
pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s 1 -q postgres >"$W/init.log" 2>&1
if [ "${REPLICA:-0}" = 1 ]; then start_replica; fi
cat >"$W/under-callgrind" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$OUT --dump-instr=no --instr-atstart=no "$PGROUTER_BIN" "\$@"
WRAP
chmod +x "$W/under-callgrind"
PGROUTER_BIN=$W/under-callgrind start_pgrouter transaction 20 1
pgb=(pgbench -S -M "$MODE" ${EXTRA:-} -n -h 127.0.0.1 -p "$PGROUTER_PORT" -U postgres postgres)
"${pgb[@]}" -c 4 -t 20 >/dev/null 2>&1   # warm-up: pool, caches
callgrind_control -i on >/dev/null 2>&1
out=$("${pgb[@]}" -c "$C" -j 1 -t "$TX" 2>&1)
kill -INT "$PGROUTER_PID"
wait "$PGROUTER_PID" 2>/dev/null || true
txns=$(awk '/actually processed/{print $NF}' <<<"$out" | cut -d/ -f1)
total=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
echo "pgrouter $(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo '?'); pgbench -S -M $MODE ${EXTRA:-} -c $C -t $TX;" \
  "$txns transactions; $total instructions; $((total / txns)) per transaction"
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | grep -E '/src/|include/pgrouter/' | head -25 | cut -c1-160
