# syntax=docker/dockerfile:1
# One Dockerfile for every service: the services share a workspace, a toolchain and their
# dependencies, so only the crate differs. Build with, from the repository root:
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=backend -t taskflow/backend .
# (SERVICE: backend, recurrence-worker or notifier).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
# librdkafka is compiled from source by rdkafka-sys (./configure and make), with zlib for `libz`.
# Debian's point releases replace package versions, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential zlib1g-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --version 0.1.73 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "set --build-arg SERVICE=backend|recurrence-worker|notifier" >&2; exit 1; }
COPY --from=planner /src/recipe.json recipe.json
# The dependency layer: rebuilt only when Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --locked -p "${SERVICE}" --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p "${SERVICE}" --bin "${SERVICE}" \
    && install -D "target/release/${SERVICE}" /out/service

# glibc and libgcc only; no shell, no package manager. The `nonroot` tag runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG SERVICE
LABEL org.opencontainers.image.title="taskflow-${SERVICE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/service /usr/local/bin/service
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# The backend also answers `migrate`, `topics` and `openapi` (the chart's migration Job passes
# `migrate`); the workers take no arguments.
ENTRYPOINT ["/usr/local/bin/service"]
