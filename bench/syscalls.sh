#!/usr/bin/env bash
# System calls and context switches per transaction of each pooler under the same pgbench load, counted by
# perf stat on the process (all threads): how often it wakes up and what each wake-up costs, which tps on a
# shared host hides. PgBouncer and pgrouter (and, with PGROUTER_BASE_BIN, a second pgrouter build as "baseline")
# run side by side on one throwaway PostgreSQL; each is driven in turn by pgbench -S for T seconds and counted
# for the middle T-2 of them. Context switches are split into voluntary (the process slept) and involuntary
# (preempted: a task it woke took its CPU), read from /proc/PID/task/*/status over the same window.
# Usage: bench/syscalls.sh     env: MODE (extended; simple|extended|prepared), C clients (32), T seconds (6),
#   RATE (pgbench -R: a fixed offered rate instead of saturation), POOL_SIZE (20), PGROUTER_BIN, PGROUTER_BASE_BIN,
#   REPLICA=1 (reads through a streaming replica: PgBouncer points at it, pgrouter classifies and routes to it)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
ensure_tools
command -v perf >/dev/null || apt-get install -y linux-perf >/dev/null
MODE=${MODE:-extended}
C=${C:-32}
T=${T:-6}
POOL_SIZE=${POOL_SIZE:-20}
start_postgres 300
pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s 10 -q postgres >"$W/init.log" 2>&1
if [ "${REPLICA:-0}" = 1 ]; then
  start_replica
  TARGET_PORT=$REPLICA_PORT  # what PgBouncer serves from
fi
targets=()
start_pgbouncer transaction "$POOL_SIZE" && targets+=("pgbouncer $BOUNCER_PID $BOUNCER_PORT")
start_pgrouter transaction "$POOL_SIZE" 1 && targets+=("pgrouter $PGROUTER_PID $PGROUTER_PORT")
if [ -n "${PGROUTER_BASE_BIN:-}" ]; then
  PGROUTER_BIN=$PGROUTER_BASE_BIN start_pgrouter transaction "$POOL_SIZE" 1 baseline &&
    targets+=("baseline $PGROUTER_PID $PGROUTER_PORT")
fi
events=task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto
echo "pgbench -S -M $MODE -c $C ${RATE:+-R $RATE }(pool $POOL_SIZE, 1 pgrouter worker); per transaction:"
printf '%-10s %8s %10s %10s %9s %9s %9s %10s %8s %8s\n' target tps "cpu us" "ctx sw" "vol." "invol." syscalls epoll_wait recv send
for t in "${targets[@]}"; do
  read -r name pid port <<<"$t"
  pgbench -S -M "$MODE" -c "$C" -j 2 -T "$T" ${RATE:+-R "$RATE"} -n -h 127.0.0.1 -p "$port" -U postgres postgres \
    >"$W/$name.pgbench" 2>&1 &
  pb=$!
  sleep 1
  # Voluntary (the process slept) and involuntary (a woken task took its CPU) switches, from /proc.
  switches() { cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt/{v+=$2} /^nonvoluntary_ctxt/{n+=$2} END{print v+0, n+0}'; }
  read -r v0 n0 <<<"$(switches)"
  perf stat -e "$events" -p "$pid" -o "$W/$name.perf" -- sleep $((T - 2)) >/dev/null 2>&1 || true
  read -r v1 n1 <<<"$(switches)"
  wait $pb || true
  tps=$(awk '/^tps = /{print $3; exit}' "$W/$name.pgbench")
  awk -v name="$name" -v tps="$tps" -v secs=$((T - 2)) -v vol=$((v1 - v0)) -v invol=$((n1 - n0)) '
    /task-clock/ {gsub(",", "", $1); cpu = $1}
    /context-switches/ {gsub(",", "", $1); cs = $1}
    /raw_syscalls/ {gsub(",", "", $1); sc = $1}
    /epoll_wait/ {gsub(",", "", $1); ew = $1}
    /recvfrom/ {gsub(",", "", $1); rv = $1}
    /sendto/ {gsub(",", "", $1); sd = $1}
    END {n = tps * secs; printf "%-10s %8d %10.1f %10.2f %9.2f %9.2f %9.2f %10.2f %8.2f %8.2f\n", name, tps, cpu * 1000 / n, cs / n, vol / n, invol / n, sc / n, ew / n, rv / n, sd / n}' \
    "$W/$name.perf"
done
