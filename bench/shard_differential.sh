#!/usr/bin/env bash
# A long, recorded run of the sharding differential test (tests/integration/test_shard_differential.py): N
# generated SELECTs (5000) from SEED (the test's fixed default unless given), each in the simple and the extended
# protocol, on one unsharded PostgreSQL and through pgrouter over two shards. Prints and writes to OUT (default
# /tmp/pgr-shard-differential-<date>.log) the seed, the counts of same answers and refusals, the refusals by
# construct, the seconds, and every wrong answer with its query index, SQL and both answers.
# Usage: bench/shard_differential.sh   env: N (5000), SEED, OUT, PGROUTER_BIN (build/pgrouter),
#   PGR_CLUSTER_DIR (a cluster from tests/cluster.sh to use; otherwise the test starts and stops one)
# Exit status: pytest's (0: every answer right). Check with: shellcheck bench/shard_differential.sh
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-5000}
OUT=${OUT:-/tmp/pgr-shard-differential-$(date +%Y%m%d-%H%M%S).log}
export PGROUTER_BIN=${PGROUTER_BIN:-$REPO_DIR/build/pgrouter}
export PGR_DIFF_QUERIES=$N
[ -n "${SEED:-}" ] && export PGR_DIFF_SEED=$SEED

cd "$REPO_DIR"
echo "pgrouter: $PGROUTER_BIN ($(git rev-parse --short HEAD)); $N queries; output in $OUT"
/usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
  tests/integration/test_shard_differential.py::test_generated_queries_answer_as_one_unsharded_server 2>&1 |
  tee "$OUT"
exit "${PIPESTATUS[0]}"
