# pgrouter container image: docker build -t pgrouter:0.1.0 .
# Build stage: the Debian 12 packages of scripts/install-deps.sh's build part and README.md's build commands.
# Runtime stage: the shared libraries pgrouter links, the binary, a non-root user and a config that listens on
# all interfaces. Mount your own config over /etc/pgrouter/pgrouter.yaml.
FROM debian:bookworm-slim AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y -q --no-install-recommends \
      g++ meson ninja-build pkg-config \
      libboost-dev libpq-dev libpg-query-dev libprotobuf-c-dev libyaml-cpp-dev prometheus-cpp-dev doctest-dev \
      libssl-dev libfmt-dev libxxhash-dev liburing-dev libjemalloc-dev libsystemd-dev nlohmann-json3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN meson setup build \
 && ninja -C build

FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# The packages of the libraries build/pgrouter links (its NEEDED entries), libc6 aside.
RUN apt-get update \
 && apt-get install -y -q --no-install-recommends \
      libjemalloc2 libssl3 libpq5 libyaml-cpp0.7 libfmt9 libprometheus-cpp-core1.0 libpg-query1504.0 liburing2 \
      libsystemd0 libstdc++6 libgcc-s1 \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid, so that Kubernetes' runAsUser (deploy/kubernetes/deployment.yaml) names the same user.
RUN groupadd --system --gid 10001 pgrouter \
 && useradd --system --uid 10001 --gid pgrouter --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin pgrouter
COPY --from=build /src/build/pgrouter /usr/bin/pgrouter
COPY deploy/docker/pgrouter.yaml /etc/pgrouter/pgrouter.yaml
USER pgrouter
# 6432: PostgreSQL clients (listen.port); 9930: /metrics, /livez, /readyz (admin.port).
EXPOSE 6432 9930
# bash's /dev/tcp: the slim image has no curl. /livez answers 200 while the process answers.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9930 && printf 'GET /livez HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM drains for up to listen.shutdown_timeout (30s): stop with a longer grace (docker stop -t 45).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/pgrouter"]
CMD ["--config", "/etc/pgrouter/pgrouter.yaml"]
