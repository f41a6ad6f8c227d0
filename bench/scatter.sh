#!/usr/bin/env bash
# Cross-shard reads: the latency of a 2-shard scatter `ORDER BY ... LIMIT 20` against the same query through
# pgrouter on one shard, and the peak memory of pgrouter while it streams a scatter of a million rows.
# Two throwaway PostgreSQL servers, each with pgbench's tables (scale S, 100,000 accounts per unit of scale).
# Two pgrouters in transaction mode: "one" knows only the first server; "scatter" has both as shards with
# pgbench_accounts sharded by aid, so a read not limited to one aid runs on both and is merged (the k-way merge
# on aid, then LIMIT). Each round runs both configs, interleaved; the median average latency per config and the
# ratio scatter/one are printed as a markdown table with the spread of the rounds. Then psql reads every row of
# both shards (2 x S x 100,000) ordered by aid through "scatter" into /dev/null, and pgrouter's peak RSS
# (VmHWM) before and after is printed.
# Usage: bench/scatter.sh   env: T=seconds per run (10), ROUNDS (3), C=clients (8), POOL_SIZE (8), S (5),
#   PGROUTER_BIN, KEEP=1
# Run as root with pgrouter built. Example: T=10 ROUNDS=3 bench/scatter.sh   (~3 minutes)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"

T=${T:-10}
ROUNDS=${ROUNDS:-3}
C=${C:-8}
POOL_SIZE=${POOL_SIZE:-8}
S=${S:-5}

cleanup() {
  stop_second_postgres
  bench_cleanup
}
trap cleanup EXIT

command -v pgbench >/dev/null || { log "installing postgresql-client"; apt-get install -y postgresql-client >/dev/null; }
start_postgres 300
start_second_postgres
for port in "$PGPORT" "$PG2PORT"; do
  pgbench -h 127.0.0.1 -p "$port" -U postgres -i -s "$S" -q postgres >"$W/init-$port.log" 2>&1
done

declare -A PORT
PGROUTER_REPLICA_PORTS='' start_pgrouter transaction "$POOL_SIZE" 1 one || { log "pgrouter (one) did not start"; exit 1; }
PORT[one]=$PGROUTER_PORT
PGROUTER_REPLICA_PORTS='' PGROUTER_SHARD_PORTS="$PG2PORT" \
  PGROUTER_SHARDING="{key_type: integer, tables: {pgbench_accounts: aid}, unsharded: reject}" \
  start_pgrouter transaction "$POOL_SIZE" 1 scatter || { log "pgrouter (scatter) did not start"; exit 1; }
PORT[scatter]=$PGROUTER_PORT
SCATTER_PID=$PGROUTER_PID
SCATTER_ADMIN=$PGROUTER_ADMIN_PORT

cat >"$W/top.sql" <<SQL
\set aid random(1, $((S * 100000 - 100)))
select aid, bid, abalance from pgbench_accounts where aid > :aid order by aid limit 20;
SQL

declare -A LAT
for ((round = 1; round <= ROUNDS; round++)); do
  order=(one scatter)
  ((round % 2 == 0)) && order=(scatter one)
  for cfg in "${order[@]}"; do
    lat=$(pgbench -h 127.0.0.1 -p "${PORT[$cfg]}" -U postgres -n -M extended -c "$C" -j 2 -T "$T" \
      -f "$W/top.sql" postgres 2>&1 | awk '/^latency average/ {print $4; exit}')
    LAT[$cfg]="${LAT[$cfg]:-} ${lat:-0}"
    log "round $round $cfg: ${lat:-?} ms"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {print lo "-" hi}'; }
hwm() { awk '/^VmHWM:/{print $2}' "/proc/$1/status"; }

before=$(hwm "$SCATTER_PID")
started=$(date +%s.%N)
rows=$(psql -X -At -h 127.0.0.1 -p "${PORT[scatter]}" -U postgres -d postgres \
  -c "select aid, bid, abalance, filler from pgbench_accounts order by aid" | wc -l)
took=$(echo "$(date +%s.%N) - $started" | bc -l)
after=$(hwm "$SCATTER_PID")
scatters=$(curl -sf "http://127.0.0.1:$SCATTER_ADMIN/metrics" | awk '$1 == "pgrouter_shard_scatters_total" {print $2}')

echo
echo "| query | one shard, ms (median, min-max) | 2-shard scatter, ms (median, min-max) | scatter / one |"
echo "|---|---|---|---|"
o=$(echo "${LAT[one]}" | median)
s=$(echo "${LAT[scatter]}" | median)
printf '| ORDER BY aid LIMIT 20 | %s (%s) | %s (%s) | %.2f |\n' "$o" "$(echo "${LAT[one]}" | spread)" \
  "$s" "$(echo "${LAT[scatter]}" | spread)" "$(echo "$s / $o" | bc -l)"
echo
printf 'scatter of %s rows ordered by aid: %.1f s; pgrouter peak RSS %s KiB before, %s KiB after\n' \
  "$rows" "$took" "$before" "$after"
echo "T=$T ROUNDS=$ROUNDS C=$C POOL_SIZE=$POOL_SIZE S=$S; scatters counted: ${scatters:-?}"
