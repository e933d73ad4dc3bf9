# syntax=docker/dockerfile:1
# The aetherv server image (used by k8s/deployment.yaml as aetherv-server:latest).
#   docker build -t aetherv-server:latest .
#   docker run --rm aetherv-server:latest check-config   # with your HYPERV_HOSTS etc.: validates
# The image is built without the `demo` feature: it has no simulated fleet, and with no hosts
# configured (HYPERV_HOSTS or HOSTS_FILE) it refuses to start. Run the demo with
# `cargo run --release -p aetherv-server` instead.
# Builder and runtime are both Debian 12 (bookworm), so the glibc the binary links against
# matches the runtime's.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
# Kerberos (the `kerberos` feature) links the system's GSSAPI: the krb5 headers and libclang
# (bindgen) to build; the MIT runtime libraries are copied into the runtime image below.
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
    && mkdir -p /out/krb5 \
    && ldd /out/aetherv-server | awk '/=> \// {print $3}' \
       | grep -E 'lib(gssapi_krb5|krb5|k5crypto|krb5support|com_err|keyutils)\.so' \
       | xargs -r cp --parents -L -t /out/krb5

# distroless cc: glibc, libgcc, CA certificates, no shell, user nonroot = 65532.
FROM ${RUNTIME_IMAGE}
COPY --from=builder /out/aetherv-server /usr/local/bin/aetherv-server
# MIT krb5 runtime (libgssapi_krb5 and what it links), at the paths the binary expects.
COPY --from=builder /out/krb5/ /
USER 65532:65532
# Inside a container the server must listen on all interfaces (its default is 127.0.0.1:8000).
ENV LISTEN_ADDR=0.0.0.0:8000
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/aetherv-server"]
