# syntax=docker/dockerfile:1
# akgate container image: `docker build -t akgate .`
# Secrets referenced by rules/keys.toml (secret_env / secret_file) are supplied at run time, e.g.
#   docker run -p 8080:8080 -p 9901:9901 -e AKGATE_SECRET_CI=... akgate
# or mount your own rule set over /etc/akgate/rules (akgate reloads it when files change).

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin akgate
COPY --from=builder /src/target/release/akgate /usr/local/bin/akgate
COPY rules/ /etc/akgate/rules/
# Numeric, so that Kubernetes' runAsNonRoot can check it (deploy/kubernetes uses 10001).
USER 10001
EXPOSE 8080 9901
ENTRYPOINT ["akgate", "serve", "--rules", "/etc/akgate/rules", "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:9901"]
