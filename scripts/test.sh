#!/usr/bin/env bash
# Runs every pgrouter test: installs missing dependencies, builds in build/, runs the doctest unit tests through
# meson, then the integration and real-client tests with pytest; ends with one line "N passed, N failed".
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
BUILD_DIR=${BUILD_DIR:-build}
PYTEST_TIME_LIMIT=${PYTEST_TIME_LIMIT:-15m}
unit_passed=0 unit_failed=0 py_passed=0 py_failed=0 step_failed=0

summary_and_exit() {
  local passed=$((unit_passed + py_passed)) failed=$((unit_failed + py_failed + step_failed))
  echo "$passed passed, $failed failed"
  ((failed == 0 && $1 == 0)) && exit 0
  exit 1
}

step() { echo "==> $*"; }

step "dependencies"
if ! bash scripts/install-deps.sh </dev/null; then
  echo "test.sh: installing dependencies failed" >&2
  step_failed=1
  summary_and_exit 1
fi

step "build ($BUILD_DIR)"
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  meson setup "$BUILD_DIR" </dev/null || { step_failed=1; summary_and_exit 1; }
fi
if ! ninja -C "$BUILD_DIR" </dev/null; then
  echo "test.sh: build failed" >&2
  step_failed=1
  summary_and_exit 1
fi

if [[ ! -d tests/clients/node/node_modules/pg ]]; then
  step "node client dependencies (npm ci)"
  (cd tests/clients/node && npm ci --no-audit --no-fund </dev/null) || step_failed=1
fi

step "unit tests (meson test)"
meson test -C "$BUILD_DIR" --print-errorlogs </dev/null
meson_rc=$?
# Every doctest binary prints "[doctest] test cases: X | Y passed | Z failed | ..."; meson keeps it in testlog.txt.
read -r unit_passed unit_failed < <(
  /usr/bin/python3 - "$BUILD_DIR/meson-logs/testlog.txt" <<'PY'
import re, sys
passed = failed = 0
try:
    text = open(sys.argv[1], errors="replace").read()
except OSError:
    text = ""
for m in re.finditer(r"\[doctest\] test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed", text):
    passed += int(m.group(2))
    failed += int(m.group(3))
print(passed, failed)
PY
)
if ((meson_rc != 0 && unit_failed == 0)); then
  echo "test.sh: meson test failed without a failing doctest case (crash or timeout?)" >&2
  unit_failed=1
fi

step "integration and client tests (pytest)"
PGROUTER_BIN=${PGROUTER_BIN:-$(cd "$BUILD_DIR" && pwd)/pgrouter}
export PGROUTER_BIN
junit="$BUILD_DIR/pytest-junit.xml"
rm -f "$junit"
timeout --signal=TERM --kill-after=30s "$PYTEST_TIME_LIMIT" \
  /usr/bin/python3 -m pytest -q tests/integration --junitxml="$junit" </dev/null
pytest_rc=$?
read -r py_passed py_failed < <(
  /usr/bin/python3 - "$junit" <<'PY'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0, 0)
    sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = failures = errors = skipped = 0
for s in suites:
    tests += int(s.get("tests", 0))
    failures += int(s.get("failures", 0))
    errors += int(s.get("errors", 0))
    skipped += int(s.get("skipped", 0))
print(tests - failures - errors - skipped, failures + errors)
PY
)
# rc 5 = no tests collected; anything else non-zero without a counted failure is a crash, timeout or usage error.
if ((pytest_rc != 0 && pytest_rc != 5 && py_failed == 0)); then
  echo "test.sh: pytest exited with $pytest_rc" >&2
  py_failed=1
fi

summary_and_exit $((meson_rc | (pytest_rc == 5 ? 0 : pytest_rc)))
