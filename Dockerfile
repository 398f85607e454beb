# syntax=docker/dockerfile:1
# One image for Pulse: `pulse` (every component; `pulse serve --target <component>`) and
# `pulse-operator`. The operator runs the tenants' Deployments from this same image.
#
#   docker build -t pulse:dev .
#   docker run --rm pulse:dev --help
#   docker run --rm --entrypoint pulse-operator pulse:dev render -f - < manifests/examples/fr.yaml

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The whole workspace (.dockerignore leaves out target/ and .git): the web app's files,
# services/web/assets/, have no build step of their own; services/web/build.rs compresses and
# embeds them into `pulse` during `cargo build`, so they need no copy into the runtime image.
COPY . .
# Cache the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pulse --bin pulse -p pulse-operator --bin pulse-operator \
    && mkdir -p /out \
    && cp target/release/pulse target/release/pulse-operator /out/ \
    && strip /out/pulse /out/pulse-operator

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 pulse \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pulse
COPY --from=build /out/pulse /out/pulse-operator /usr/local/bin/
# The numeric user lets Kubernetes check runAsNonRoot.
USER 65532:65532
# Public HTTP, gRPC, admin (/livez, /readyz, /metrics).
EXPOSE 8080 50051 9090
ENTRYPOINT ["pulse"]
CMD ["serve", "--target", "all"]
