# The controller image: rtmanager (the entrypoint) and rtctl, built from
# this repository.
#
#   docker build -t rtmanager:0.1.0 .
#   docker run --rm rtmanager:0.1.0 --help
#   docker run -d -v /var/run/docker.sock:/var/run/docker.sock --user 0 \
#       -e RTM_ETCD_ENDPOINTS=http://etcd:2379 -p 9464:9464 rtmanager:0.1.0
#
# helm/rtmanager deploys it on Kubernetes. tests/helm.rs checks the facts
# the chart relies on (user, port, paths, entrypoint).

# ---------------------------------------------------------------- build
# Bookworm, so that the binaries link against the glibc of the final image.
FROM rust:1-bookworm AS build

# protoc compiles etcd-client's protobuf definitions.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependencies first, in their own layer, so that a change to the sources
# does not rebuild them: build the real manifests of the workspace with stub
# sources (cargo checks that every member has its targets).
COPY Cargo.toml Cargo.lock ./
COPY crates/core/Cargo.toml crates/core/
COPY crates/controller/Cargo.toml crates/controller/
COPY crates/rtctl/Cargo.toml crates/rtctl/
COPY crates/testkit/Cargo.toml crates/testkit/
COPY crates/bench/Cargo.toml crates/bench/
RUN for lib in core controller rtctl testkit; do \
        mkdir -p "crates/$lib/src" && touch "crates/$lib/src/lib.rs"; \
    done \
    && mkdir -p crates/bench/src src/bin \
    && for path in crates/bench/src/main.rs src/bin/rtmanager.rs src/bin/rtctl.rs; do \
        echo 'fn main() {}' > "$path"; \
    done \
    && cargo build --release --locked -p rtmanager --bin rtmanager --bin rtctl \
    && rm -rf src crates/*/src

COPY src ./src
COPY crates ./crates
# COPY keeps the files' own modification times, which can be older than the
# stub build above; without the touch, cargo would keep the stub binaries.
# Only the two binaries the image ships: the product package's, which
# build neither the test kit nor the benchmark.
RUN find src crates -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p rtmanager --bin rtmanager --bin rtctl \
    && install -D -m 0755 target/release/rtmanager target/release/rtctl -t /out/

# ---------------------------------------------------------------- runtime
FROM debian:bookworm-slim

# ca-certificates: etcd endpoints behind a publicly signed certificate.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rtmanager \
    && useradd --system --uid 10001 --gid rtmanager --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin rtmanager

COPY --from=build /out/rtmanager /out/rtctl /usr/local/bin/

# /metrics, /healthz, /readyz; on every interface, since in a container the
# loopback default would hide them from Kubernetes' probes and Prometheus.
ENV RTM_METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464

# Non-root by default (numeric, so that Kubernetes' runAsNonRoot can check
# it). The Docker socket is root:docker 0660 on the host, so to reach it the
# controller needs the socket's group as a supplementary group (`docker run
# --group-add $(stat -c %g /var/run/docker.sock)`; the chart's
# docker.socketGroupId) or root (`--user 0`; the chart's default). Whoever
# can use the socket is root on the host either way.
USER 10001:10001

# rtmanager handles SIGTERM itself (drain, then exit), so it runs as PID 1
# without an init.
ENTRYPOINT ["/usr/local/bin/rtmanager"]
