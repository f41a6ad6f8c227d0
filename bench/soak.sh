#!/usr/bin/env bash
# Soak: tests/integration/soak.py for MINUTES (10) on a cluster of its own (tests/cluster.sh in a temp dir:
# primary + streaming replica; the replica is restarted by the chaos schedule), through pgrouter in transaction
# pooling with read/write splitting. Prints the seed first and a summary last; exit status 1 on any failure
# (a lost acknowledged write, an error outside soak.EXPECTED_ERRORS, a stuck client, RSS or fds not back near
# their start, pgrouter dead or not exiting cleanly).
# Usage: bench/soak.sh [--seconds N]   env: MINUTES (10), SECONDS_ (overrides MINUTES), SEED (random),
#   CLIENTS (12), PGROUTER_BIN (build/pgrouter), KEEP=1 (keep the cluster dir and pgrouter's log)
# Check with: shellcheck bench/soak.sh
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=/usr/bin/python3
export PGROUTER_BIN=${PGROUTER_BIN:-$REPO_DIR/build/pgrouter}
seconds=${SECONDS_:-$(( ${MINUTES:-10} * 60 ))}
if [ "${1:-}" = --seconds ] && [ -n "${2:-}" ]; then seconds=$2; fi
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}

DIR=$(mktemp -d /tmp/pgr-soak.XXXXXX)
chmod 755 "$DIR"  # the servers run as postgres
cleanup() {  # shellcheck disable=SC2317  # called by the EXIT trap
  bash "$REPO_DIR/tests/cluster.sh" stop "$DIR" >>"$DIR/cluster.out" 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "soak.sh: kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

echo "soak.sh: seed $SEED, ${seconds}s, pgrouter $PGROUTER_BIN ($(git -C "$REPO_DIR" rev-parse --short HEAD))"
bash "$REPO_DIR/tests/cluster.sh" start "$DIR" >"$DIR/cluster.out" 2>&1 || { cat "$DIR/cluster.out" >&2; exit 1; }
if ! "$PYTHON" "$REPO_DIR/tests/integration/soak.py" --cluster-dir "$DIR" --seconds "$seconds" --seed "$SEED" \
  --clients "${CLIENTS:-12}" --workdir "$DIR/pgrouter"; then
  KEEP=1  # the servers' and pgrouter's logs are what explains a failure
  exit 1
fi
