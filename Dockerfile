# Builds the mayfly binary and a small runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked && strip target/release/mayfly

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 mayfly
COPY --from=build /src/target/release/mayfly /usr/local/bin/mayfly
USER mayfly
ENV MAYFLY_LISTEN=0.0.0.0:8420 MAYFLY_LOG_FORMAT=json
EXPOSE 8420
ENTRYPOINT ["/usr/local/bin/mayfly"]
CMD ["serve"]
