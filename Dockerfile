# model-pusher's container image, for the Kubeflow "push" step (kubeflow/component.yaml).
#
#   docker build -t model-pusher:latest .
#
# Stage 1 builds the host and the bundled policies; stage 2 holds only the binary, the policies
# and CA certificates, and runs as an unprivileged user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# rustup's wasm32 target is the route `cargo xtask policies` prefers: it downloads the
# target's standard library instead of building it from source.
RUN rustup target add wasm32-unknown-unknown
COPY . .
# `cargo xtask policies`, with xtask built in release: it links the host library, so the
# binary's release build that follows reuses those artifacts instead of compiling wasmtime
# a second time in debug.
RUN cargo run --release --locked -p xtask -- policies \
    && cargo build --release --locked -p model-pusher

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/pusher pusher
COPY --from=build /src/target/release/model-pusher /usr/local/bin/model-pusher
# The binary finds bundled policies in <its directory>/../share/model-pusher/policies. The glob
# takes every bundled policy and leaves out target/policies/testing/, the tests' hostile guests.
COPY --from=build /src/target/policies/*.wasm /usr/local/share/model-pusher/policies/
# A numeric user, so that a pod's runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/pusher
# Compiled policies are cached here; in a pod this lasts as long as the pod, and a read-only
# root filesystem only costs a compilation (the cache is skipped with a warning).
ENV MODEL_PUSHER_CACHE_DIR=/home/pusher/.cache/model-pusher
ENTRYPOINT ["model-pusher"]
CMD ["--help"]
