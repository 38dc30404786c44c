# syntax=docker/dockerfile:1
# Multi-stage: dependencies are cooked in their own layer (cargo-chef), so a code change
# rebuilds only sluice itself.
FROM rust:1-slim-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json --bin sluice
COPY . .
RUN cargo build --release --locked --bin sluice

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin sluice
WORKDIR /app
COPY --from=builder /src/target/release/sluice /usr/local/bin/sluice
COPY --chown=sluice:sluice valves/ /app/valves/
RUN mkdir -p /app/data && chown sluice:sluice /app/data
USER sluice
ENV SLUICE_HOST=0.0.0.0 \
    SLUICE_PORT=9099 \
    SLUICE_VALVES_DIR=/app/valves \
    SLUICE_DATA_DIR=/app/data
EXPOSE 9099
VOLUME ["/app/valves", "/app/data"]
# `sluice healthcheck` asks GET / on SLUICE_PORT: no curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 CMD ["/usr/local/bin/sluice", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sluice"]
