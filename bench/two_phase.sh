#!/usr/bin/env bash
# Cross-shard writes: the latency of an UPDATE of four consecutive accounts through pgrouter on one shard, against
# the same UPDATE through pgrouter with pgbench_accounts sharded by aid over two servers. Its IN list holds
# expressions (:aid + 1), which name no constant key, so pgrouter runs it on both shards and commits it by
# two-phase commit every time (BEGIN and the statement on each, PREPARE TRANSACTION on each, the decision row on
# shard 0, COMMIT PREPARED on each): the count of two-phase commits is printed. Each round runs both configs, interleaved;
# the median average latency per config and the ratio are printed as a markdown table with the rounds' spread.
# Usage: bench/two_phase.sh   env: T=seconds per run (10), ROUNDS (3), C=clients (8), POOL_SIZE (8), S (5),
#   PGROUTER_BIN, KEEP=1
# Run as root with pgrouter built. Example: T=10 ROUNDS=3 bench/two_phase.sh   (~2 minutes)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"

T=${T:-10}
ROUNDS=${ROUNDS:-3}
C=${C:-8}
POOL_SIZE=${POOL_SIZE:-8}
S=${S:-5}
export PG_MAX_PREPARED=$((2 * POOL_SIZE + 10))

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
  start_pgrouter transaction "$POOL_SIZE" 1 sharded || { log "pgrouter (sharded) did not start"; exit 1; }
PORT[sharded]=$PGROUTER_PORT
SHARDED_ADMIN=$PGROUTER_ADMIN_PORT

cat >"$W/update.sql" <<SQL
\set aid random(1, $((S * 100000 - 4)))
update pgbench_accounts set abalance = abalance + 1 where aid in (:aid, :aid + 1, :aid + 2, :aid + 3);
SQL

declare -A LAT
for ((round = 1; round <= ROUNDS; round++)); do
  order=(one sharded)
  ((round % 2 == 0)) && order=(sharded one)
  for cfg in "${order[@]}"; do
    lat=$(pgbench -h 127.0.0.1 -p "${PORT[$cfg]}" -U postgres -n -M extended -c "$C" -j 2 -T "$T" \
      -f "$W/update.sql" postgres 2>&1 | awk '/^latency average/ {print $4; exit}')
    LAT[$cfg]="${LAT[$cfg]:-} ${lat:-0}"
    log "round $round $cfg: ${lat:-?} ms"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {print lo "-" hi}'; }
metric() { curl -sf "http://127.0.0.1:$SHARDED_ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

echo
echo "| statement | one shard, ms (median, min-max) | 2 shards, two-phase, ms (median, min-max) | sharded / one |"
echo "|---|---|---|---|"
o=$(echo "${LAT[one]}" | median)
s=$(echo "${LAT[sharded]}" | median)
printf '| UPDATE of 4 accounts | %s (%s) | %s (%s) | %.2f |\n' "$o" "$(echo "${LAT[one]}" | spread)" \
  "$s" "$(echo "${LAT[sharded]}" | spread)" "$(echo "$s / $o" | bc -l)"
echo
echo "two-phase commits: $(metric pgrouter_two_phase_committed_total), routed to one shard: $(metric pgrouter_shard_routed_total)"
echo "T=$T ROUNDS=$ROUNDS C=$C POOL_SIZE=$POOL_SIZE S=$S"
