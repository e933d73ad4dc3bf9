# syntax=docker/dockerfile:1
# The aetherv server image (used by k8s/deployment.yaml as aetherv-server:latest).
#   docker build -t aetherv-server:latest .
#   docker run --rm aetherv-server:latest check-config   # with your HYPERV_HOSTS etc.: validates
# The image is built without the `demo` feature: it has no simulated fleet, and with no hosts
# configured (HYPERV_HOSTS or HOSTS_FILE) it refuses to start. Run the demo with
# `cargo run --release -p aetherv-server` instead.
# Builder and runtime are both Debian 12 (bookworm), so the glibc the binary links against
# matches the runtime's.
# The runtime is Debian slim rather than distroless because the server builds the provisioning
# ISOs at start with xorriso (Debian package xorriso), which distroless cannot install.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
# Kerberos (the `kerberos` feature) links the system's GSSAPI: the krb5 headers and libclang
# (bindgen) to build; the runtime image installs the MIT runtime (libgssapi-krb5-2).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libkrb5-dev libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace: --locked resolves every member against Cargo.lock.
COPY . .
# Cache mounts keep the registry and target directory between builds (BuildKit); the binary is
# copied out of the cached target directory because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release -p aetherv-server --locked --no-default-features --features kerberos \
    && install -D -m 0755 target/release/aetherv-server /out/aetherv-server \
    && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
        -p aetherv-guest --target x86_64-unknown-linux-gnu \
    && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/aetherv-guest /out/aetherv-guest

# Debian slim with CA certificates, xorriso and the MIT Kerberos runtime; the server runs as an unprivileged user (65532).
# The static Linux guest agent sits next to the server binary, where the server looks for it
# when it builds LinuxProvisioning.iso (AETHERV_GUEST_AGENT overrides that).
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates xorriso libgssapi-krb5-2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/aetherv-server /usr/local/bin/aetherv-server
COPY --from=builder /out/aetherv-guest /usr/local/bin/aetherv-guest
USER 65532:65532
# The ISOs are built under the system temp folder by default; a writable path for user 65532.
ENV AETHERV_ISO_OUTPUT_DIR=/tmp/aetherv-provisioning-isos
# Inside a container the server must listen on all interfaces (its default is 127.0.0.1:8000).
ENV LISTEN_ADDR=0.0.0.0:8000
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/aetherv-server"]
