#!/usr/bin/env bash
# Installs the Debian packages pgrouter needs to build and test, touching apt only when something is missing.
set -euo pipefail

packages=(
  libboost-dev libpq-dev libpg-query-dev libprotobuf-c-dev libyaml-cpp-dev prometheus-cpp-dev doctest-dev
  g++ meson ninja-build pkg-config libssl-dev libfmt-dev libxxhash-dev liburing-dev libjemalloc-dev libsystemd-dev nlohmann-json3-dev libbenchmark-dev
  libhiredis-dev postgresql-15 redis-server pgbouncer haproxy python3-psycopg python3-pytest python3-yaml
  libpostgresql-jdbc-java
  # tests/fuzz: clang++ and, for clang 14, the libFuzzer and ASan/UBSan runtimes (libclang_rt.fuzzer-x86_64.a and
  # friends), only recommended by clang-14 and so not installed without it here. g++'s sanitizer runtimes (the
  # build-asan/ step of scripts/test.sh) come with g++ itself.
  clang libclang-rt-14-dev
  # scripts/format.sh --check (the tree's C++ style, .clang-format)
  clang-format
)
# The image may ship node 20 + npm and a JDK outside dpkg's knowledge: only ask apt for what no binary provides,
# so Debian's older nodejs never replaces a newer node already on PATH.
command -v javac >/dev/null 2>&1 || packages+=(default-jdk-headless)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
# promtool (tests/integration/test_deploy.py checks and unit-tests deploy/prometheus/pgrouter-rules.yml): Debian
# ships it in the prometheus server package.
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)

installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

missing=()
for package in "${packages[@]}"; do
  installed "$package" || missing+=("$package")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's postgresql package creates and starts a 'main' cluster on 5432. We never use it (tests/cluster.sh
# runs its own servers on free ports), so keep it stopped to free the port and the memory.
if command -v pg_lsclusters >/dev/null 2>&1; then
  while read -r version name port status _; do
    if [[ "$status" == online* ]]; then
      echo "install-deps: stopping the packaged PostgreSQL cluster $version/$name on port $port"
      pg_ctlcluster "$version" "$name" stop || true
    fi
  done < <(pg_lsclusters --no-header 2>/dev/null)
fi
# The prometheus package starts a server on port 9090 where a service manager runs; the tests only need
# promtool.
if command -v service >/dev/null 2>&1 && service prometheus status >/dev/null 2>&1; then
  echo "install-deps: stopping the packaged Prometheus server"
  service prometheus stop || true
fi
exit 0
