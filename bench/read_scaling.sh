#!/usr/bin/env bash
# Read scaling through pgrouter: does adding replicas multiply read throughput at the same pool size per backend?
# One throwaway primary and 2 streaming replicas (pg_basebackup -R); two pgrouters in transaction mode, each with
# POOL_SIZE server connections per backend: "primary" knows only the primary, "primary+2r" the primary and both
# replicas with `routing: {read_from: any}` (the primary is one more candidate for reads). A pgbench custom script
# makes each read wait SLEEP seconds on the server (pg_sleep), so the pool bounds throughput: at most
# POOL_SIZE * backends / SLEEP transactions per second. As a reference without pgrouter, "direct" runs the same
# script with POOL_SIZE clients straight to the primary, and "direct-3" POOL_SIZE clients straight to each of the 3
# servers at once (3 pgbench processes, tps summed): what the machine itself gives at that concurrency. The
# configs run once per round, interleaved (the order rotates), and the median tps is reported as a markdown table
# with the ratios, the check of the issue's bar (primary+2r >= 2.5x primary), the reads pgrouter routed to replicas
# and to the primary (its /metrics), the transactions each replica ran (pg_stat_database) and the CPU used.
# Usage: bench/read_scaling.sh   env: T=seconds per run (10), ROUNDS (3), POOL_SIZE per backend (8),
#   C=clients through pgrouter (9 * POOL_SIZE: 3 per server connection of the 3-backend config),
#   SLEEP=seconds of pg_sleep per read (0.005), STRATEGY=round_robin|random|least_outstanding|weighted
#   (round_robin), PROTOCOL=simple|extended|prepared (simple), PGROUTER_WORKERS (2), BAR (2.5), DIRECT=0 (skips
#   the no-proxy reference runs), PGROUTER_BIN, KEEP=1
# Run as root from anywhere (PostgreSQL is started as the postgres user), with pgrouter built; nothing else should
# use the CPU meanwhile: the last column of the table shows how much did. Check with: shellcheck -x bench/read_scaling.sh
# Example: T=10 ROUNDS=3 bench/read_scaling.sh   (~4 minutes; results and discussion in bench/RESULTS.md)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT

T=${T:-10}
ROUNDS=${ROUNDS:-3}
POOL_SIZE=${POOL_SIZE:-8}
C=${C:-$((9 * POOL_SIZE))}
SLEEP=${SLEEP:-0.005}
STRATEGY=${STRATEGY:-round_robin}
PROTOCOL=${PROTOCOL:-simple}
PGROUTER_WORKERS=${PGROUTER_WORKERS:-2}
BAR=${BAR:-2.5}
SCALE=1
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
TICK=$(getconf CLK_TCK)

command -v pgbench >/dev/null || { log "installing postgresql-client"; apt-get install -y postgresql-client >/dev/null; }
ulimit -n 65536 2>/dev/null || true
start_postgres 300
# The direct runs use their own database, so pg_stat_database of "postgres" on the replicas counts only what
# pgrouter sent there.
log "pgbench -i -s $SCALE (databases postgres and direct)"
psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -c 'create database direct'
pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s "$SCALE" -q postgres >"$W/init.log" 2>&1
pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s "$SCALE" -q direct >>"$W/init.log" 2>&1
start_replica replica1  # after -i, so the replicas start with the data and nothing to replay
start_replica replica2
ALL_PORTS=("$PGPORT" "${REPLICA_PORTS[@]}")

declare -A PORT ADMIN PID BACKENDS
CONFIGS=(primary primary+2r)
PGROUTER_REPLICA_PORTS='' start_pgrouter transaction "$POOL_SIZE" "$PGROUTER_WORKERS" primary ||
  { log "pgrouter (primary only) did not start"; exit 1; }
PORT[primary]=$PGROUTER_PORT ADMIN[primary]=$PGROUTER_ADMIN_PORT PID[primary]=$PGROUTER_PID BACKENDS[primary]=1
PGROUTER_ROUTING="{read_from: any, strategy: $STRATEGY, probe_interval: 100ms}" \
  start_pgrouter transaction "$POOL_SIZE" "$PGROUTER_WORKERS" primary+2r ||
  { log "pgrouter (primary + replicas) did not start"; exit 1; }
PORT[primary+2r]=$PGROUTER_PORT ADMIN[primary+2r]=$PGROUTER_ADMIN_PORT PID[primary+2r]=$PGROUTER_PID
BACKENDS[primary+2r]=${#ALL_PORTS[@]}
if [ "${DIRECT:-1}" = 1 ]; then
  CONFIGS+=(direct direct-3)
  BACKENDS[direct]=1 BACKENDS[direct-3]=${#ALL_PORTS[@]}
fi

cat >"$W/read.sql" <<SQL
\set aid random(1, 100000 * :scale)
select pg_sleep($SLEEP), aid from pgbench_accounts where aid = :aid;
SQL

# metric CONFIG NAME: the value of a pgrouter metric (no labels); 0 if absent or CONFIG has no pgrouter.
metric() {
  [ -n "${ADMIN[$1]:-}" ] || { echo 0; return; }
  curl -sf "http://127.0.0.1:${ADMIN[$1]}/metrics" | awk -v m="$2" '$1 == m {v = $2} END {printf "%.0f\n", v + 0}'
}
METRICS=(pgrouter_routed_reads_replica_total pgrouter_routed_reads_primary_total pgrouter_routed_writes_total
  pgrouter_server_connections_total)
# own_ticks: CPU ticks used so far by this bench's processes: this script and its reaped children (pgbench),
# both pgrouters, the 3 postmasters with their reaped children, and their live children (server backends).
own_ticks() {
  local dir postmasters=()
  for dir in "$W/pg" "${REPLICA_DIRS[@]}"; do postmasters+=("$(head -1 "$dir/postmaster.pid")"); done
  awk -v self=$$ -v pms=" ${postmasters[*]} " -v routers=" ${PID[*]} " '
    $1 == self || index(pms, " " $1 " ") { s += $14 + $15 + $16 + $17; next }
    index(routers, " " $1 " ") || index(pms, " " $4 " ") { s += $14 + $15 }
    END { print s + 0 }' /proc/[0-9]*/stat 2>/dev/null || true
}
# snapshot CONFIG: the metrics above, pgrouter's CPU ticks (user + system), the machine's busy and total ticks and
# the ticks of the bench's own processes.
snapshot() {
  local m out=()
  for m in "${METRICS[@]}"; do out+=("$(metric "$1" "$m")"); done
  if [ -n "${PID[$1]:-}" ]; then out+=("$(awk '{print $14 + $15}' "/proc/${PID[$1]}/stat")"); else out+=(0); fi
  out+=("$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)")
  out+=("$(own_ticks)")
  echo "${out[*]}"
}

# pgbench_config CONFIG SECONDS OUTDIR: runs pgbench for CONFIG, one output file per pgbench process in OUTDIR.
pgbench_config() {
  local config=$1 seconds=$2 dir=$3 port i=0 pids=() status=0
  mkdir -p "$dir"
  case $config in
    direct | direct-3)
      local ports=("$PGPORT")
      [ "$config" = direct-3 ] && ports=("${ALL_PORTS[@]}")
      for port in "${ports[@]}"; do
        pgbench -h 127.0.0.1 -p "$port" -U postgres -n -f "$W/read.sql" -s "$SCALE" -M "$PROTOCOL" -c "$POOL_SIZE" \
          -j 1 -T "$seconds" direct >"$dir/$i.out" 2>&1 &
        pids+=($!)
        i=$((i + 1))
      done
      for i in "${pids[@]}"; do wait "$i" || status=$?; done
      return $status
      ;;
    *)
      pgbench -h 127.0.0.1 -p "${PORT[$config]}" -U postgres -n -f "$W/read.sql" -s "$SCALE" -M "$PROTOCOL" -c "$C" \
        -j 2 -T "$seconds" postgres >"$dir/0.out" 2>&1
      ;;
  esac
}

RESULTS=$W/results.tsv  # round config tps latency_ms replica_reads primary_reads writes server_conns pgrouter_cpu_s busy% other%
: >"$RESULTS"

# run_config CONFIG ROUND: one measured run; a failed or aborted run is recorded as tps 0 with its output kept.
run_config() {
  local config=$1 round=$2 status=0 before after tps lat dir=$W/run-$1-$2
  read -ra before <<<"$(snapshot "$config")"
  pgbench_config "$config" "$T" "$dir" || status=$?
  read -ra after <<<"$(snapshot "$config")"
  tps=$(awk '/^tps = /{s += $3; n++} END {if (n) printf "%.1f", s}' "$dir"/*.out)
  lat=$(awk '/^latency average = /{s += $4; n++} END {if (n) printf "%.3f", s / n}' "$dir"/*.out)
  if [ $status -ne 0 ] || [ -z "$tps" ] || grep -q 'aborted' "$dir"/*.out; then
    log "FAILED: $config round $round (exit $status); output in $dir"
    KEEP=${KEEP:-1}
    tps=0 lat=0
  fi
  local d=() i cpu busy other
  for i in 0 1 2 3; do d+=($((after[i] - before[i]))); done
  cpu=$(awk -v t=$((after[4] - before[4])) -v hz="$TICK" 'BEGIN {printf "%.2f", t / hz}')
  # Machine busy and the part of it used by processes other than the bench's (other users of the machine; also
  # softirq time, which the kernel charges to no process: a few % on a quiet machine).
  busy=$(awk -v b=$((after[5] - before[5])) -v t=$((after[6] - before[6])) 'BEGIN {printf "%.0f", t ? 100 * b / t : 0}')
  other=$(awk -v b=$((after[5] - before[5])) -v o=$((after[7] - before[7])) -v t=$((after[6] - before[6])) \
    'BEGIN {printf "%.0f", t ? 100 * (b - o) / t : 0}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$config" "$tps" "$lat" "${d[@]}" "$cpu" "$busy" \
    "$other" >>"$RESULTS"
  log "round $round  $(printf "%-10s" "$config") tps=${tps%.*} lat_ms=$lat reads replica/primary=${d[0]}/${d[1]}" \
    "writes=${d[2]} new server conns=${d[3]} pgrouter cpu=${cpu}s machine busy=${busy}% (not the bench: ${other}%)"
}

# replica_xacts: "port xact_commit" of database postgres on each replica.
replica_xacts() {
  local port
  for port in "${REPLICA_PORTS[@]}"; do
    echo "$port $(psql -X -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc \
      "select xact_commit from pg_stat_database where datname = 'postgres'")"
  done
}

XACTS_BEFORE=$(replica_xacts)
# Warm-up: fills the pools and lets the probes mark the replicas eligible (a read goes to a replica only once its
# first probe has answered).
for config in "${CONFIGS[@]}"; do pgbench_config "$config" 2 "$W/warmup-$config" || true; done
[ "$(metric primary+2r pgrouter_routed_reads_replica_total)" -gt 0 ] ||
  log "WARNING: no read went to a replica during the warm-up"

n=${#CONFIGS[@]}
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round so no config always runs first or after the same one.
  for i in $(seq 0 $((n - 1))); do run_config "${CONFIGS[$(((i + round - 1) % n))]}" "$round"; done
done

# Transactions each replica ran, from PostgreSQL's side. A server backend publishes its counters when it exits (or
# 10 s after going idle), so stop the primary+2r pgrouter and wait for its server connections to close first.
kill "${PID[primary+2r]}" 2>/dev/null || true
for _ in $(seq 1 100); do
  left=0
  for port in "${REPLICA_PORTS[@]}"; do
    left=$((left + $(psql -X -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc \
      "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()")))
  done
  [ "$left" = 0 ] && break
  sleep 0.1
done
XACTS_AFTER=$(replica_xacts)

echo
echo "## Read scaling: pgbench -f (pg_sleep($SLEEP) + a pgbench_accounts read by aid), -M $PROTOCOL, ${T}s per run," \
  "median of $ROUNDS interleaved rounds"
echo
echo "$(nproc) cores (load average at the start: $LOADAVG, at the end: $(cut -d' ' -f1-3 /proc/loadavg)); PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}');" \
  "pgrouter $(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo '?') ($PGROUTER_WORKERS workers)," \
  "transaction mode, pool size $POOL_SIZE per backend, $C clients (-j 2); primary+2r:" \
  "\`routing: {read_from: any, strategy: $STRATEGY, probe_interval: 100ms}\`; direct: $POOL_SIZE clients per server," \
  "no proxy; $(date -u +%Y-%m-%d)."
echo
"$PYTHON" - "$RESULTS" "$POOL_SIZE" "$C" "$SLEEP" "$BAR" "${CONFIGS[*]}" "$XACTS_BEFORE" "$XACTS_AFTER" \
  "${BACKENDS[primary]}" "${BACKENDS[primary+2r]}" <<'PY'
import statistics
import sys

path, pool, clients, sleep, bar = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
configs = sys.argv[6].split()
before = dict(line.split() for line in sys.argv[7].splitlines())
after = dict(line.split() for line in sys.argv[8].splitlines())
backends = {"primary": int(sys.argv[9]), "primary+2r": int(sys.argv[10]), "direct": 1, "direct-3": int(sys.argv[10])}
base = {"primary": "primary", "primary+2r": "primary", "direct": "direct", "direct-3": "direct"}
runs = {}
for line in open(path):
    f = line.rstrip("\n").split("\t")
    runs.setdefault(f[1], []).append([float(x) for x in f[2:]])

def med(config, i):
    return statistics.median(r[i] for r in runs[config])

print("| config | backends | clients | tps | min..max | mean latency ms | ceiling tps | of ceiling | ratio "
      "| reads to replicas / primary | new server conns per run (max) | pgrouter CPU s per run | machine CPU busy "
      "| of which not the bench |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for config in configs:
    if config not in runs:
        continue
    tps, ref = med(config, 0), med(base[config], 0)
    ceiling = pool * backends[config] / sleep
    proxied = not config.startswith("direct")
    rep, pri = sum(r[2] for r in runs[config]), sum(r[3] for r in runs[config])
    routed = (f"{rep:.0f} / {pri:.0f} ({100 * rep / (rep + pri):.0f}% replicas)" if rep + pri else "not classified") \
        if proxied else "-"
    ratio = f"{tps / ref:.2f}x {base[config]}" if ref else "-"
    print(f"| {config} | {backends[config]} | {clients if proxied else pool * backends[config]} | {tps:.0f} "
          f"| {min(r[0] for r in runs[config]):.0f}..{max(r[0] for r in runs[config]):.0f} | {med(config, 1):.2f} "
          f"| {ceiling:.0f} | {100 * tps / ceiling:.0f}% | {ratio} | {routed} "
          f"| {f'{med(config, 5):.0f} ({max(r[5] for r in runs[config]):.0f})' if proxied else '-'} | {f'{med(config, 6):.2f}' if proxied else '-'} "
          f"| {med(config, 7):.0f}% | {max(r[8] for r in runs[config]):.0f}% max |")
print()
a, b = med("primary", 0), med("primary+2r", 0)
ratio = b / a if a else 0
print(f"primary+2r / primary through pgrouter: **{ratio:.2f}x**; the bar ({bar}x) is "
      f"**{'met' if ratio >= bar else 'NOT met'}**." + (
          f" Without a proxy, 3 servers / 1 server at the same concurrency per server: "
          f"{med('direct-3', 0) / med('direct', 0):.2f}x." if "direct" in runs and "direct-3" in runs else ""))
spread = {port: int(after[port]) - int(before[port]) for port in after}
total = sum(spread.values())
print("Transactions each replica ran for pgrouter over the warm-up and the measured runs "
      "(pg_stat_database.xact_commit of database postgres, including pgrouter's probes): "
      + ", ".join(f"port {p}: {n}" + (f" ({100 * n / total:.0f}%)" if total else "") for p, n in spread.items()) + ".")
PY
