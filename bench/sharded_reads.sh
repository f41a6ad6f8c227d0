#!/usr/bin/env bash
# Keyed reads through sharding against the same reads through pgrouter without sharding, in one run.
# Two throwaway PostgreSQL servers, both with pgbench's tables (scale 1). Two pgrouters in transaction mode, same
# pool size and workers: "unsharded" knows only the first server; "sharded" has both as shards with
# pgbench_accounts sharded by aid (hash, integer key), so each read is routed by its bound aid (the key is found
# in the statement's parse tree, once per statement text, and hashed per Bind). The pgbench custom script reads
# one account by aid, the key as a bound parameter. Each round runs every config once, interleaved; the median tps
# per config and the ratio sharded/unsharded (the bar: >= 0.9) are printed as a markdown table with the
# spread (min-max) of the rounds.
# Usage: bench/sharded_reads.sh   env: T=seconds per run (10), ROUNDS (3), C=clients (16), POOL_SIZE (8),
#   PROTOCOLS="extended prepared", PGROUTER_WORKERS (1), PGROUTER_BIN, KEEP=1
# Run as root with pgrouter built. Example: T=10 ROUNDS=3 bench/sharded_reads.sh   (~2.5 minutes)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"

T=${T:-10}
ROUNDS=${ROUNDS:-3}
C=${C:-16}
POOL_SIZE=${POOL_SIZE:-8}
PROTOCOLS=${PROTOCOLS:-extended prepared}
PGROUTER_WORKERS=${PGROUTER_WORKERS:-1}

cleanup() {
  stop_second_postgres
  bench_cleanup
}
trap cleanup EXIT

command -v pgbench >/dev/null || { log "installing postgresql-client"; apt-get install -y postgresql-client >/dev/null; }
start_postgres 300
start_second_postgres
for port in "$PGPORT" "$PG2PORT"; do
  pgbench -h 127.0.0.1 -p "$port" -U postgres -i -s 1 -q postgres >"$W/init-$port.log" 2>&1
done

declare -A PORT
PGROUTER_REPLICA_PORTS='' start_pgrouter transaction "$POOL_SIZE" "$PGROUTER_WORKERS" unsharded ||
  { log "pgrouter (unsharded) did not start"; exit 1; }
PORT[unsharded]=$PGROUTER_PORT
PGROUTER_REPLICA_PORTS='' PGROUTER_SHARD_PORTS="$PG2PORT" \
  PGROUTER_SHARDING="{key_type: integer, tables: {pgbench_accounts: aid}, unsharded: reject}" \
  start_pgrouter transaction "$POOL_SIZE" "$PGROUTER_WORKERS" sharded ||
  { log "pgrouter (sharded) did not start"; exit 1; }
PORT[sharded]=$PGROUTER_PORT
SHARDED_ADMIN=$PGROUTER_ADMIN_PORT

cat >"$W/read.sql" <<'SQL'
\set aid random(1, 100000)
select abalance from pgbench_accounts where aid = :aid;
SQL

declare -A TPS
for ((round = 1; round <= ROUNDS; round++)); do
  for proto in $PROTOCOLS; do
    order=(unsharded sharded)
    ((round % 2 == 0)) && order=(sharded unsharded)
    for cfg in "${order[@]}"; do
      tps=$(pgbench -h 127.0.0.1 -p "${PORT[$cfg]}" -U postgres -n -M "$proto" -c "$C" -j 2 -T "$T" \
        -f "$W/read.sql" postgres 2>&1 | awk '/^tps/ {print int($3); exit}')
      TPS[$cfg,$proto]="${TPS[$cfg,$proto]:-} ${tps:-0}"
      log "round $round $proto $cfg: ${tps:-0} tps"
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' | grep -v '^$' | sort -n | awk 'NR==1{lo=$1} {hi=$1} END {print lo "-" hi}'; }
routed=$(curl -sf "http://127.0.0.1:$SHARDED_ADMIN/metrics" | awk '$1 == "pgrouter_shard_routed_total" {print $2}')
echo
echo "| protocol | unsharded tps (median, min-max) | sharded tps (median, min-max) | sharded / unsharded |"
echo "|---|---|---|---|"
for proto in $PROTOCOLS; do
  u=$(echo "${TPS[unsharded,$proto]}" | median)
  s=$(echo "${TPS[sharded,$proto]}" | median)
  printf '| %s | %s (%s) | %s (%s) | %.2f |\n' "$proto" "$u" "$(echo "${TPS[unsharded,$proto]}" | spread)" \
    "$s" "$(echo "${TPS[sharded,$proto]}" | spread)" "$(echo "$s / $u" | bc -l)"
done
echo
echo "T=$T ROUNDS=$ROUNDS C=$C POOL_SIZE=$POOL_SIZE workers=$PGROUTER_WORKERS; sharded transactions routed by key: ${routed:-?}"
