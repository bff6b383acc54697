# syntax=docker/dockerfile:1
# Herald's container image: a release build, then a small Debian runtime
# with the one binary, run as an unprivileged user.
#
#   docker build -t herald .
#   docker run -p 8080:8080 herald                      # embedded, dev app
#   docker run -p 8080:8080 -v $PWD/herald.toml:/etc/herald/herald.toml:ro \
#     -e HERALD_CONFIG=/etc/herald/herald.toml \
#     -e HERALD_REDIS_URL=redis://redis:6379 herald      # a cluster gateway
#
# What the image relies on at run time (user, files, port, signals) is
# exercised without a container engine by crates/gateway/tests/image.rs,
# which runs the binary the way this image does.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p herald-gateway \
 && strip target/release/herald

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/herald --create-home herald \
 && mkdir -p /etc/herald
COPY --from=build /src/target/release/herald /usr/local/bin/herald
USER 10001:10001
# All interfaces in the container; the embedded store under the data dir;
# the configuration file when one is mounted (none: the development app).
ENV HERALD_LISTEN=0.0.0.0:8080 \
    HERALD_DATA_DIR=/var/lib/herald
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
# SIGTERM: stop accepting, tell clients to reconnect elsewhere, drain.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["serve"]
