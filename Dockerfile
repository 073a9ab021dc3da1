# Builds the mayfly binary and a small runtime image. Every path the build
# reads is copied below (tests/api/container.rs checks it: the console and the
# migrations are compiled in, and Cargo.toml names a bench file).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY console ./console
COPY benches ./benches
RUN cargo build --release --locked --bin mayfly && strip target/release/mayfly

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/mayfly mayfly \
    && install -d -o mayfly -g mayfly -m 0700 /var/lib/mayfly
COPY --from=build /src/target/release/mayfly /usr/local/bin/mayfly
USER mayfly
# The SQLite default (./mayfly-data) and a generated master key live here: mount a volume.
WORKDIR /var/lib/mayfly
VOLUME /var/lib/mayfly
ENV MAYFLY_LISTEN=0.0.0.0:8420 MAYFLY_LOG_FORMAT=json
EXPOSE 8420
ENTRYPOINT ["/usr/local/bin/mayfly"]
CMD ["serve"]
