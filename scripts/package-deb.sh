#!/usr/bin/env bash
# Builds pgrouter's Debian package (debian/) with dpkg-buildpackage -b -us -uc from a copy of the source tree
# (tracked and untracked files, minus what .gitignore ignores), so the developer build in build/ and the
# directory above the checkout stay untouched. The .deb and its .buildinfo/.changes land in OUT_DIR.
#   OUT_DIR=DIR            where to put the results (default debian/out)
#   DEB_BUILD_OPTIONS=...  passed on (default "parallel=1": the full build takes ~10 min on one core;
#                          add nocheck to skip the unit tests)
#   LINTIAN=0              skip the lintian run at the end (default: run it when lintian is installed)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
OUT_DIR=${OUT_DIR:-$repo/debian/out}
export DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS:-parallel=1}
if ! command -v dh >/dev/null 2>&1; then
  echo "package-deb: debhelper is missing: apt-get install debhelper (and lintian to check the result)" >&2
  exit 1
fi
version=$(dpkg-parsechangelog -l debian/changelog -S Version)

work=$(mktemp -d /tmp/pgrouter-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src="$work/pgrouter-$version"
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$src"

(cd "$src" && dpkg-buildpackage -b -us -uc)

mkdir -p "$OUT_DIR"
cp "$work"/pgrouter_"$version"_*.deb "$work"/pgrouter_"$version"_*.buildinfo "$work"/pgrouter_"$version"_*.changes "$OUT_DIR"/
cp "$work"/pgrouter-dbgsym_"$version"_*.deb "$OUT_DIR"/ 2>/dev/null || true
deb=$(ls "$OUT_DIR"/pgrouter_"$version"_*.deb)
echo "package-deb: $deb"
dpkg-deb -c "$deb"
if [[ "${LINTIAN:-1}" != 0 ]] && command -v lintian >/dev/null 2>&1; then
  lintian --info "$OUT_DIR"/pgrouter_"$version"_*.changes || true
fi
