#!/usr/bin/env bash
# Builds the libFuzzer targets in build-fuzz/ (or $FUZZ_BUILD_DIR) with clang, ASan and UBSan. The normal
# build (build/, g++) is not touched: this is a build dir of its own, configured with -Dfuzz=true.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dir=${FUZZ_BUILD_DIR:-build-fuzz}
if [[ ! -f "$dir/build.ninja" ]]; then
  # b_lundef=false: with clang, -fsanitize needs its runtime at link time, which meson's -Wl,--no-undefined
  # check does not see.
  CXX=clang++ meson setup "$dir" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debugoptimized </dev/null
fi
# Only the fuzz targets (an alias in tests/fuzz/meson.build), not the daemon and unit tests under clang.
ninja -C "$dir" -j"${FUZZ_JOBS:-1}" fuzz </dev/null
