#!/usr/bin/env bash
# Keyed reads through sharding against the same reads through pgrouter without sharding, in one run.
# Two throwaway PostgreSQL servers; pgbench's tables (scale 1) in database postgres of each and in database
# shard1 of the first. Three pgrouters in transaction mode, same pool size (per shard) and workers:
# "unsharded" knows only the first server; "sharded" has two shards on the same server (its databases
# postgres and shard1: the same PostgreSQL server as "unsharded", so the ratio is what sharding costs in
# pgrouter); "two_servers" has the two servers as shards (the ratio then also holds what a second PostgreSQL
# instance costs on the same cores). pgbench_accounts is sharded by aid (hash, integer key), so each read is
# routed by its bound aid (the key is found in the statement's parse tree, once per statement text, and hashed
# per Bind). The pgbench custom script reads one account by aid, the key as a bound parameter. Each round runs
# every config once, interleaved; the median tps per config and the ratios to unsharded (the bar: sharded >=
# 0.9) are printed as a markdown table with the spread (min-max) of the rounds.
# Usage: bench/sharded_reads.sh   env: T=seconds per run (10), ROUNDS (3), C=clients (16), POOL_SIZE (8),
#   PROTOCOLS="extended prepared", PGROUTER_WORKERS (1), PGROUTER_BIN, KEEP=1
# Run as root with pgrouter built. Example: T=10 ROUNDS=3 bench/sharded_reads.sh   (~3.5 minutes)
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
psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE shard1" postgres
for place in "$PGPORT postgres" "$PGPORT shard1" "$PG2PORT postgres"; do
  read -r port db <<<"$place"
  pgbench -h 127.0.0.1 -p "$port" -U postgres -i -s 1 -q "$db" >"$W/init-$port-$db.log" 2>&1
done

declare -A PORT
PGROUTER_REPLICA_PORTS='' start_pgrouter transaction "$POOL_SIZE" "$PGROUTER_WORKERS" unsharded ||
  { log "pgrouter (unsharded) did not start"; exit 1; }
PORT[unsharded]=$PGROUTER_PORT
export PGROUTER_SHARDING="{key_type: integer, tables: {pgbench_accounts: aid}, unsharded: reject}"
PGROUTER_REPLICA_PORTS='' PGROUTER_SHARD_PORTS="$PGPORT/shard1" \
  start_pgrouter transaction "$POOL_SIZE" "$PGROUTER_WORKERS" sharded ||
  { log "pgrouter (sharded) did not start"; exit 1; }
PORT[sharded]=$PGROUTER_PORT
SHARDED_ADMIN=$PGROUTER_ADMIN_PORT
PGROUTER_REPLICA_PORTS='' PGROUTER_SHARD_PORTS="$PG2PORT" \
  start_pgrouter transaction "$POOL_SIZE" "$PGROUTER_WORKERS" two_servers ||
  { log "pgrouter (two_servers) did not start"; exit 1; }
PORT[two_servers]=$PGROUTER_PORT
unset PGROUTER_SHARDING

cat >"$W/read.sql" <<'SQL'
\set aid random(1, 100000)
select abalance from pgbench_accounts where aid = :aid;
SQL

declare -A TPS
for ((round = 1; round <= ROUNDS; round++)); do
  for proto in $PROTOCOLS; do
    order=(unsharded sharded two_servers)
    ((round % 2 == 0)) && order=(two_servers sharded unsharded)
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
# Per-round ratios (the configs of a round ran within a minute of each other): their median and spread are
# less moved by the host's slow drifts than a ratio of medians.
round_ratios() {  # round_ratios CFG PROTO: "r1 r2 ..." of CFG/unsharded
  local -a ua ca
  read -r -a ua <<<"${TPS[unsharded,$2]}"
  read -r -a ca <<<"${TPS[$1,$2]}"
  for i in "${!ua[@]}"; do echo "${ca[$i]} ${ua[$i]}" | awk '$2 > 0 {printf "%.3f ", $1 / $2}'; done
}
echo "| protocol | unsharded tps (median, min-max) | sharded, one server | two_servers | sharded / unsharded (ratio of medians; per-round median, min-max) | two_servers / unsharded |"
echo "|---|---|---|---|---|---|"
for proto in $PROTOCOLS; do
  u=$(echo "${TPS[unsharded,$proto]}" | median)
  s=$(echo "${TPS[sharded,$proto]}" | median)
  t=$(echo "${TPS[two_servers,$proto]}" | median)
  rs=$(round_ratios sharded "$proto")
  rt=$(round_ratios two_servers "$proto")
  printf '| %s | %s (%s) | %s (%s) | %s (%s) | %.2f; %s (%s) | %.2f; %s (%s) |\n' "$proto" \
    "$u" "$(echo "${TPS[unsharded,$proto]}" | spread)" "$s" "$(echo "${TPS[sharded,$proto]}" | spread)" \
    "$t" "$(echo "${TPS[two_servers,$proto]}" | spread)" \
    "$(echo "$s / $u" | bc -l)" "$(echo "$rs" | median)" "$(echo "$rs" | spread)" \
    "$(echo "$t / $u" | bc -l)" "$(echo "$rt" | median)" "$(echo "$rt" | spread)"
done
echo
echo "T=$T ROUNDS=$ROUNDS C=$C POOL_SIZE=$POOL_SIZE workers=$PGROUTER_WORKERS; sharded transactions routed by key: ${routed:-?}"
