#!/usr/bin/env bash
# CPU time per transaction of each pooler under the same pgbench load: a measure that holds up on a shared,
# noisy machine better than tps (which moves with whatever else runs). PgBouncer and pgrouter (and, with
# PGROUTER_BASE_BIN, a second pgrouter build as "baseline", for an A/B) run side by side on one throwaway
# PostgreSQL; each is driven in turn by pgbench -S and its process's CPU time is read with perf stat
# (task-clock: user + system, all threads), interleaved over ROUNDS rounds.
# Usage: bench/cpu.sh     env: MODES ("simple extended connect"; connect = -M simple -C), C clients (64),
#   T seconds per run (8), ROUNDS (2), POOL_MODE (transaction), POOL_SIZE (20), PGROUTER_WORKERS (0 = default),
#   PGROUTER_BIN, PGROUTER_BASE_BIN
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT

MODES=${MODES:-simple extended connect}
C=${C:-64}
T=${T:-8}
ROUNDS=${ROUNDS:-2}
POOL_MODE=${POOL_MODE:-transaction}
POOL_SIZE=${POOL_SIZE:-20}
command -v perf >/dev/null || apt-get install -y linux-perf >/dev/null
ensure_tools
ulimit -n 65536 2>/dev/null || true
start_postgres 300
pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s 10 -q postgres >"$W/init.log" 2>&1

declare -A PID PORT
start_pgbouncer "$POOL_MODE" "$POOL_SIZE"
PID[pgbouncer]=$BOUNCER_PID PORT[pgbouncer]=$BOUNCER_PORT
start_pgrouter "$POOL_MODE" "$POOL_SIZE" "${PGROUTER_WORKERS:-0}"
PID[pgrouter]=$PGROUTER_PID PORT[pgrouter]=$PGROUTER_PORT
TARGETS=(pgbouncer pgrouter)
if [ -n "${PGROUTER_BASE_BIN:-}" ]; then
  PGROUTER_BIN=$PGROUTER_BASE_BIN start_pgrouter "$POOL_MODE" "$POOL_SIZE" "${PGROUTER_WORKERS:-0}" baseline
  PID[baseline]=$PGROUTER_PID PORT[baseline]=$PGROUTER_PORT
  TARGETS+=(baseline)
fi

# measure TARGET MODE: prints "TARGET MODE tps us_per_tx"
measure() {
  local target=$1 mode=$2 protocol=$2 connect=() out txns tps ms
  if [ "$mode" = connect ]; then protocol=simple connect=(-C); fi
  timeout $((T + 10)) perf stat -e task-clock -p "${PID[$target]}" -o "$W/stat" &
  local stat=$!
  sleep 0.3
  out=$(pgbench -S -M "$protocol" "${connect[@]}" -c "$C" -j 2 -T "$T" -n -h 127.0.0.1 -p "${PORT[$target]}" \
    -U postgres postgres 2>&1) || true
  kill -INT "$stat" 2>/dev/null || true
  wait "$stat" 2>/dev/null || true
  txns=$(awk '/actually processed/{print $NF}' <<<"$out" | cut -d/ -f1)
  tps=$(awk '/^tps = /{print $3; exit}' <<<"$out")
  ms=$(awk '/task-clock/{gsub(",","",$1); print $1}' "$W/stat")
  if [ -z "$txns" ] || [ "$txns" = 0 ] || [ -z "$ms" ]; then
    log "FAILED: $target $mode"; echo "$out" >"$W/failed-$target-$mode.log"; return
  fi
  awk -v t="$target" -v m="$mode" -v n="$txns" -v ms="$ms" -v tps="$tps" \
    'BEGIN{printf "%s\t%s\t%.0f\t%.1f\n", t, m, tps, ms * 1000 / n}' | tee -a "$W/cpu.tsv" >&2
}

: >"$W/cpu.tsv"
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    n=${#TARGETS[@]}
    for i in $(seq 0 $((n - 1))); do measure "${TARGETS[$(((i + round - 1) % n))]}" "$mode"; done
  done
done

echo "$(nproc) cores; $(pgbouncer --version | head -1); pgrouter $(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo '?');" \
  "$POOL_MODE mode, pool $POOL_SIZE, pgbench -S -c $C -j 2 -T $T, median of $ROUNDS rounds; $(date -u +%Y-%m-%d)"
echo
"$PYTHON" - "$W/cpu.tsv" "${TARGETS[*]}" "$MODES" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
targets, modes = sys.argv[2].split(), sys.argv[3].split()
def med(t, m, col):
    v = [float(r[col]) for r in rows if r[0] == t and r[1] == m]
    return statistics.median(v) if v else None
print("| mode | " + " | ".join(f"{t} CPU us/tx" for t in targets) + " | pgrouter / pgbouncer | " +
      " | ".join(f"{t} tps" for t in targets) + " |")
print("|---" * (2 * len(targets) + 2) + "|")
for m in modes:
    cpu = [med(t, m, 3) for t in targets]
    tps = [med(t, m, 2) for t in targets]
    ratio = f"{cpu[1] / cpu[0]:.2f}" if cpu[0] and cpu[1] else "-"
    print(f"| {m} | " + " | ".join(f"{c:.1f}" if c else "-" for c in cpu) + f" | {ratio} | " +
          " | ".join(f"{x:.0f}" if x else "-" for x in tps) + " |")
PY
