# Multi-stage: build with the Rust toolchain, run on a slim base.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin weft --bin shuttle

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/weft weft && mkdir -p /var/lib/weft && chown weft /var/lib/weft
COPY --from=build /src/target/release/weft /src/target/release/shuttle /usr/local/bin/
COPY agent-wrappers /opt/weft/agent-wrappers
USER weft
WORKDIR /var/lib/weft
EXPOSE 3000
HEALTHCHECK --interval=30s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/3000 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200 OK' <&3"]
ENTRYPOINT ["weft"]
CMD ["serve"]
