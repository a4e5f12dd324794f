# Waypoint: multi-stage build, small non-root runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate; no system packages are needed to build.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin waypoint \
    && cp target/release/waypoint /usr/local/bin/waypoint

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home waypoint
COPY --from=build /usr/local/bin/waypoint /usr/local/bin/waypoint
USER 10001
# health/metrics, REST, MCP
EXPOSE 8080 8081 8000
ENTRYPOINT ["waypoint"]
CMD ["start"]
