#!/usr/bin/env bash
# A long, recorded run of the differential protocol fuzzer (tests/fuzz/protocol_fuzz.py): MINUTES (30) split evenly
# over the 4 modes (transaction, transaction + replica, session, session + replica), one after the other (the
# fuzzer compares timings of replies only loosely, but a loaded machine makes the "nothing more arrives" waits less
# telling), each with its own seed (SEED, SEED+1, ...). With MINIMIZE=1 the first failure of each kind is minimised
# (the minimising counts towards the minutes). Everything is written to OUT (default /tmp/pgr-protocol-fuzz-long-
# <date>): one log and one failures JSON per mode (replay any entry with --replay FILE), and summary.txt with the
# distinct failures per mode.
# Usage: bench/protocol_fuzz_long.sh   env: MINUTES (30), SEED (random), MINIMIZE (0), OUT, PGROUTER_BIN,
#   PGR_CLUSTER_DIR (a cluster from tests/cluster.sh to use; otherwise one is started and stopped here)
# Exit status 1 if any mode found a failure. Check with: shellcheck bench/protocol_fuzz_long.sh
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=/usr/bin/python3
MINUTES=${MINUTES:-30}
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
OUT=${OUT:-/tmp/pgr-protocol-fuzz-long-$(date +%Y%m%d-%H%M%S)}
export PGROUTER_BIN=${PGROUTER_BIN:-$REPO_DIR/build/pgrouter}
mkdir -p "$OUT"

started_cluster=""
if [ -z "${PGR_CLUSTER_DIR:-}" ]; then
  PGR_CLUSTER_DIR=$(mktemp -d /tmp/pgr-fuzz-cluster.XXXXXX)
  chmod 755 "$PGR_CLUSTER_DIR"
  bash "$REPO_DIR/tests/cluster.sh" start "$PGR_CLUSTER_DIR" >"$OUT/cluster.log" 2>&1
  started_cluster=$PGR_CLUSTER_DIR
fi
export PGR_CLUSTER_DIR
cleanup() {  # shellcheck disable=SC2317  # called by the EXIT trap
  if [ -n "$started_cluster" ]; then
    bash "$REPO_DIR/tests/cluster.sh" stop "$started_cluster" >>"$OUT/cluster.log" 2>&1 || true
    rm -rf "$started_cluster"
  fi
}
trap cleanup EXIT

per_mode=$("$PYTHON" -c "print($MINUTES / 4)")
status=0
: >"$OUT/summary.txt"
echo "pgrouter: $PGROUTER_BIN; $MINUTES minutes; first seed $SEED; output in $OUT" | tee -a "$OUT/summary.txt"
n=0
for mode in transaction session; do
  for replica in "" --replica; do
    seed=$((SEED + n))
    n=$((n + 1))
    name=$mode${replica:+-replica}
    args=(--seed "$seed" --minutes "$per_mode" --mode "$mode" --out "$OUT/failures-$name.json")
    [ -n "$replica" ] && args+=("$replica")
    [ "${MINIMIZE:-0}" = 1 ] && args+=(--minimize)
    echo "== $name (seed $seed, $per_mode min)" | tee -a "$OUT/summary.txt"
    if ! "$PYTHON" "$REPO_DIR/tests/fuzz/protocol_fuzz.py" "${args[@]}" >"$OUT/$name.log" 2>&1; then
      status=1
    fi
    sed -n '/^protocol_fuzz: seed=.*failing, /,$p' "$OUT/$name.log" | tee -a "$OUT/summary.txt"
  done
done
exit "$status"
