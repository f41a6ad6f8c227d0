#!/usr/bin/env bash
# Side-by-side pgbench -S through PostgreSQL direct, haproxy (TCP), PgBouncer and pgrouter (same pool mode) on one
# throwaway PostgreSQL, interleaved over several rounds, printing medians and ratios as a markdown table.
# Usage: bench/run.sh            env: T=seconds per run (15), C=clients (32), ROUNDS (3), PGROUTER_BIN, KEEP=1,
#   POOL_MODE=session|transaction (session), POOL_SIZE (40), PGROUTER_WORKERS (0: pgrouter's default, half the cores), CONNECT=1 (adds a -C run: a new
#   connection per transaction), PREPARED=1 (adds -M prepared), REPLICA=1 (read/write splitting: a streaming replica
#   is made; direct, haproxy and PgBouncer point at it, pgrouter at the primary with the replica, classifying every
#   statement and routing the reads there; needs POOL_MODE=transaction), PGROUTER_BASE_BIN=path (adds another pgrouter
#   build as the target "baseline", for an A/B in one run), ONLY="pgbouncer pgrouter baseline" (just these targets),
#   ONLY_MODES="simple extended" (just these protocols), PGROUTER_SCHED / PGROUTER_BASE_SCHED=batch|normal
#   (listen.scheduling of pgrouter / baseline; unset: the build's default), UNNAMED_PREPARE=1 (adds the target
#   "pgrouter_prep": the same pgrouter with pool.unnamed_statements: prepare; transaction mode), SERVER_TLS=1 (the
#   server runs with ssl=on and PgBouncer and pgrouter reach it with sslmode require, clients reach them in plain TCP;
#   direct and haproxy: pgbench's libpq default, prefer, so TLS end to end)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT

T=${T:-15}
C=${C:-32}
ROUNDS=${ROUNDS:-3}
POOL_MODE=${POOL_MODE:-session}
POOL_SIZE=${POOL_SIZE:-40}  # session mode: >= clients, so no target makes clients wait for a server connection
PGROUTER_WORKERS=${PGROUTER_WORKERS:-0}
WORKERS_SHOWN=$PGROUTER_WORKERS
[ "$PGROUTER_WORKERS" = 0 ] && WORKERS_SHOWN="$(($(nproc) / 2 > 0 ? $(nproc) / 2 : 1)) (default)"
MODES=(simple extended)
[ "${PREPARED:-0}" = 1 ] && MODES+=(prepared)
[ "${CONNECT:-0}" = 1 ] && MODES+=(connect)  # "connect" = -M simple -C: a new connection per transaction

ensure_tools
ulimit -n 65536 2>/dev/null || true
start_postgres 300
log "pgbench -i -s 10"
pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s 10 -q postgres >"$W/init.log" 2>&1
if [ "${REPLICA:-0}" = 1 ]; then
  start_replica
  TARGET_PORT=$REPLICA_PORT  # what direct, haproxy and PgBouncer measure
fi

TARGETS=(direct)
declare -A PORT=([direct]=${TARGET_PORT:-$PGPORT})
if start_haproxy; then TARGETS+=(haproxy); PORT[haproxy]=$HAP_PORT; fi
if start_pgbouncer "$POOL_MODE" "$POOL_SIZE"; then TARGETS+=(pgbouncer); PORT[pgbouncer]=$BOUNCER_PORT; fi
if start_pgrouter "$POOL_MODE" "$POOL_SIZE" "$PGROUTER_WORKERS"; then TARGETS+=(pgrouter); PORT[pgrouter]=$PGROUTER_PORT; fi
if [ -n "${PGROUTER_BASE_BIN:-}" ]; then
  # A/B in one run: another pgrouter build (e.g. an earlier commit) as the target "baseline".
  if PGROUTER_BIN=$PGROUTER_BASE_BIN start_pgrouter "$POOL_MODE" "$POOL_SIZE" "$PGROUTER_WORKERS" baseline; then
    TARGETS+=(baseline); PORT[baseline]=$PGROUTER_PORT
  fi
fi

if [ "${UNNAMED_PREPARE:-0}" = 1 ]; then
  # The same build with the client's unnamed statements prepared once per server connection (opt-in, as PgDog's
  # prepared_statements = "extended_anonymous").
  if PGROUTER_UNNAMED=prepare start_pgrouter "$POOL_MODE" "$POOL_SIZE" "$PGROUTER_WORKERS" pgrouter_prep; then
    TARGETS+=(pgrouter_prep); PORT[pgrouter_prep]=$PGROUTER_PORT
  fi
fi

if [ -n "${ONLY:-}" ]; then  # ONLY="pgbouncer pgrouter baseline": measure just these targets (quicker A/B runs)
  kept=()
  for t in "${TARGETS[@]}"; do [[ " $ONLY " == *" $t "* ]] && kept+=("$t"); done
  TARGETS=("${kept[@]}")
fi
[ -n "${ONLY_MODES:-}" ] && read -r -a MODES <<<"$ONLY_MODES"  # e.g. ONLY_MODES="simple extended"

RESULTS=$W/results.tsv   # round target mode tps latency_ms
: >"$RESULTS"

# run_pgbench TARGET MODE ROUND: one pgbench run; a failed or aborted run is recorded as tps 0 with its log kept.
run_pgbench() {
  local target=$1 mode=$2 round=$3 out status=0 protocol=$2 connect=()
  if [ "$mode" = connect ]; then protocol=simple connect=(-C); fi
  out=$(pgbench -h 127.0.0.1 -p "${PORT[$target]}" -U postgres -S -M "$protocol" "${connect[@]}" -c "$C" -j 2 -T "$T" \
    -n postgres 2>&1) ||
    status=$?
  local tps lat
  tps=$(awk '/^tps = /{print $3; exit}' <<<"$out")
  lat=$(awk '/^latency average = /{print $4; exit}' <<<"$out")
  if [ $status -ne 0 ] || [ -z "$tps" ] || grep -q 'aborted' <<<"$out"; then
    log "FAILED: $target $mode round $round (exit $status); output in $W/failed-$target-$mode-$round.log"
    echo "$out" >"$W/failed-$target-$mode-$round.log"
    tps=0 lat=0
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$mode" "$tps" "$lat" >>"$RESULTS"
  log "round $round  $(printf "%-9s %-8s" "$target" "$mode") tps=${tps%.*} lat_ms=$lat"
}

# A short warm-up so the first measured target does not pay for a cold buffer cache.
pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -S -c "$C" -j 2 -T 2 -n postgres >/dev/null 2>&1 || true

for round in $(seq 1 "$ROUNDS"); do
  for mode in "${MODES[@]}"; do
    # Rotate the target order each round so no target always runs first or last.
    n=${#TARGETS[@]}
    for i in $(seq 0 $((n - 1))); do
      run_pgbench "${TARGETS[$(((i + round - 1) % n))]}" "$mode" "$round"
    done
  done
done

echo
echo "## pgbench -S, $C clients, -j 2, ${T}s per run, median of $ROUNDS interleaved rounds"
echo
echo "$(nproc) cores; PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'); $(pgbouncer --version | head -1);" \
  "HAProxy $(haproxy -v | awk 'NR==1{print $3}'); pgrouter $(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo '?')" \
  "($WORKERS_SHOWN workers); pool size $POOL_SIZE, $POOL_MODE mode${REPLICA_PORT:+, reads through a streaming replica (pgrouter classifies and routes)}; $(date -u +%Y-%m-%d)."
echo
"$PYTHON" - "$RESULTS" "${TARGETS[*]}" "${MODES[*]}" <<'PY'
import statistics
import sys

path, targets, modes = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
runs = {}
for line in open(path):
    _, target, mode, tps, lat = line.split("\t")
    runs.setdefault((target, mode), []).append((float(tps), float(lat)))

def median(key, index):
    values = [run[index] for run in runs.get(key, [])]
    return statistics.median(values) if values else None

def ratio(num, den):
    return f"{num / den:.2f}" if num and den else "-"

print("| target | protocol | tps | mean latency ms | vs pgbouncer | vs direct |")
print("|---|---|---:|---:|---:|---:|")
for mode in modes:
    for target in targets:
        tps, lat = median((target, mode), 0), median((target, mode), 1)
        if tps is None:
            continue
        print(f"| {target} | {mode} | {tps:.0f} | {lat:.3f} | {ratio(tps, median(('pgbouncer', mode), 0))} "
              f"| {ratio(tps, median(('direct', mode), 0))} |")
print()
print("tps of every run (min..max per target/protocol): " + "; ".join(
    f"{t}/{m} {min(r[0] for r in runs[(t, m)]):.0f}..{max(r[0] for r in runs[(t, m)]):.0f}"
    for m in modes for t in targets if (t, m) in runs))
# The host's speed drifts over minutes (every target of a round tends to be high or low together): a ratio
# taken within each round, where the targets ran back to back, cancels the drift that the medians above keep.
rounds = {}
for line in open(path):
    rnd, target, mode, tps, _ = line.split("\t")
    rounds.setdefault((target, mode), {})[rnd] = float(tps)
lines = []
for mode in modes:
    base = rounds.get(("pgbouncer", mode), {})
    for target in targets:
        if target == "pgbouncer" or (target, mode) not in rounds or not base:
            continue
        ratios = [tps / base[r] for r, tps in sorted(rounds[(target, mode)].items(), key=lambda x: int(x[0]))
                  if base.get(r) and tps]
        if ratios:
            lines.append(f"{target}/{mode} median {statistics.median(ratios):.2f}, {sum(x >= 1 for x in ratios)} of "
                         f"{len(ratios)} rounds >= 1.00 ({', '.join(f'{x:.2f}' for x in ratios)})")
if lines:
    print()
    print("Within-round ratios to pgbouncer: " + "; ".join(lines))
PY
if [[ " ${TARGETS[*]} " != *" pgrouter "* ]]; then
  echo
  echo "pgrouter was skipped (see the SKIP message above)."
fi
