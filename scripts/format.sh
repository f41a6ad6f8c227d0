#!/usr/bin/env bash
# Formats the tree's C++ files with .clang-format (Debian 12's clang-format 14), or, with --check, lists the
# files that differ from it and fails (what scripts/test.sh runs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v clang-format >/dev/null || { echo "format.sh: clang-format is missing (apt install clang-format)" >&2; exit 2; }
mapfile -t files < <(git ls-files '*.cpp' '*.hpp' '*.h')
if [[ ${1:-} == --check ]]; then
  exec clang-format --dry-run --Werror "${files[@]}"
fi
clang-format -i "${files[@]}"
