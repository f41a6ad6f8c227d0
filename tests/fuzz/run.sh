#!/usr/bin/env bash
# Runs every libFuzzer target built by tests/fuzz/build.sh for SECONDS each (default 20) over its seed corpus
# (tests/fuzz/corpus/<target>/, only read: new inputs go to a scratch copy), with a fixed, printed -seed
# (FUZZ_SEED, default 1). A crash, a sanitizer report, a leak, a timeout or a failed check fails the target;
# the input that did it is kept in $FUZZ_BUILD_DIR/fuzz-artifacts/<target>/. Ends with "fuzz: N passed, N failed".
# Reproduce one:  build-fuzz/tests/fuzz/fuzz_<target> build-fuzz/fuzz-artifacts/<target>/crash-...
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
seconds=${1:-20}
dir=${FUZZ_BUILD_DIR:-build-fuzz}
seed=${FUZZ_SEED:-1}
# halt_on_error: a UBSan report is a failure, not a line in a log. Leak checking stays on (libFuzzer's default).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

passed=0 failed=0
targets=()
for corpus in tests/fuzz/corpus/*/; do targets+=("$(basename "$corpus")"); done
for t in "${targets[@]}"; do
  bin="$dir/tests/fuzz/fuzz_$t"
  if [[ ! -x "$bin" ]]; then
    echo "fuzz: $t: $bin missing (run tests/fuzz/build.sh)"
    failed=$((failed + 1))
    continue
  fi
  scratch=$(mktemp -d)
  artifacts="$dir/fuzz-artifacts/$t"
  mkdir -p "$artifacts"
  echo "fuzz: $t for ${seconds}s, -seed=$seed"
  # -timeout: one input taking 25 s is a hang (the SCRAM client's PBKDF2 at an absurd iteration count, say).
  "$bin" -seed="$seed" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$scratch" "tests/fuzz/corpus/$t" >"$dir/fuzz-$t.log" 2>&1 </dev/null
  rc=$?
  rm -rf "$scratch"
  if ((rc == 0)); then
    passed=$((passed + 1))
    grep -E '^stat::number_of_executed_units|^Done ' "$dir/fuzz-$t.log" | sed "s/^/fuzz: $t: /"
  else
    failed=$((failed + 1))
    echo "fuzz: $t FAILED (exit $rc); log $dir/fuzz-$t.log, input in $artifacts/:"
    grep -E 'ERROR|check failed|SUMMARY|runtime error|Test unit written' "$dir/fuzz-$t.log" | head -20 | sed 's/^/  /'
  fi
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
