# syntax=docker/dockerfile:1
# sluice as one static binary in an empty image: no shell, no libc, no package manager; CA
# certificates for outbound TLS, a numeric non-root user, the valves and data directories as
# volumes. About 39 MB, half of it the WebAssembly runtime (README, Container).
#
#   docker build -t sluice .                              builds sluice in a Rust stage
#   docker build --build-arg BINARY=prebuilt -t sluice .  takes a binary built already, from
#       target/container/ (scripts/container-context.sh lays it out; CI builds this way,
#       pulling no image)
#
# Multi-arch: build on (or for) the target: `docker buildx build --platform linux/arm64 .`
# builds the binary in an arm64 Rust stage (scripts/build-release.sh picks the target).
ARG BINARY=built

# ---- the binary, built here. Only what the build reads is copied, each part in its own
# layer, so an edit to the docs or the tests rebuilds nothing.
FROM rust:1-bookworm AS built
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY pipelines pipelines
COPY examples examples
COPY benches benches
COPY tests/api/main.rs tests/api/main.rs
COPY tests/load/main.rs tests/load/main.rs
COPY scripts/build-release.sh scripts/build-release.sh
# The WebAssembly pipeline interface and the Python kit are compiled into the binary.
COPY wit wit
COPY guests/python/kit guests/python/kit
COPY src src
# The commit's time, for a reproducible build: --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
ARG SOURCE_DATE_EPOCH=0
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-release.sh > /tmp/built \
    && mkdir -p /out/usr/local/bin /out/etc/ssl/certs /out/app/data /out/app/valves \
    && cp "$(head -n 1 /tmp/built)" /out/usr/local/bin/sluice \
    && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/

# ---- or the same layout, built elsewhere.
FROM scratch AS prebuilt
COPY target/container/ /out/

FROM ${BINARY} AS binary

# ---- the image.
FROM scratch
COPY --from=binary /out/usr/local/bin/sluice /usr/local/bin/sluice
COPY --from=binary /out/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# Empty, owned by the user sluice runs as: a named volume mounted here starts as a copy of
# them, writable.
COPY --from=binary --chown=10001:10001 /out/app/ /app/
USER 10001:10001
WORKDIR /app
ENV SLUICE_HOST=0.0.0.0 \
    SLUICE_PORT=9099 \
    SLUICE_VALVES_DIR=/app/valves \
    SLUICE_DATA_DIR=/app/data
EXPOSE 9099
VOLUME ["/app/valves", "/app/data"]
# No curl in the image: `sluice healthcheck` asks GET / itself and says why it failed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["/usr/local/bin/sluice", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sluice"]
