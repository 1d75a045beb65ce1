# cs-pdns container: build and unit/policy-test in one stage, run as a non-root user in the next.
# Mount your own policy over /etc/cs-pdns/policy.lua; settings come from the environment.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config librdkafka-dev liblua5.4-dev lua-cjson-dev \
      libmariadb-dev libcurl4-openssl-dev libssl-dev libmicrohttpd-dev python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCSPDNS_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && cmake --build build -j "$(nproc)" \
 && ctest --test-dir build -L "unit|policy" --output-on-failure \
 && strip build/cs-pdns

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librdkafka1 liblua5.4-0 lua-cjson libmariadb3 libcurl4 libssl3 libmicrohttpd12 \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin cs-pdns
COPY --from=build /src/build/cs-pdns /usr/local/bin/cs-pdns
COPY lua/policy.lua /etc/cs-pdns/policy.lua
ENV POLICY_FILE=/etc/cs-pdns/policy.lua
USER cs-pdns
# Liveness without adding an HTTP client to the image: with METRICS_ADDR set, bash's /dev/tcp asks
# /healthz, which answers 200 only while the main loop keeps ticking (a wedged process fails it);
# without it, `cs-pdns check` at least proves the settings and the (possibly mounted) policy load.
# A wildcard METRICS_ADDR (":9187", "0.0.0.0:9187", "[::]:9187") is probed on loopback. Every
# failure exits 1 (Docker reserves 2).
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["/bin/bash", "-c", "\
a=\"${METRICS_ADDR:-}\"; if [ -z \"$a\" ]; then cs-pdns check >/dev/null && exit 0; exit 1; fi; \
p=\"${a##*:}\"; h=\"${a%:*}\"; h=\"${h#[}\"; h=\"${h%]}\"; \
case \"$h\" in ''|0.0.0.0) h=127.0.0.1;; ::) h=::1;; esac; \
exec 3<>\"/dev/tcp/$h/$p\" || exit 1; \
printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3; \
read -r -t 8 v c r <&3 && [ \"$c\" = 200 ] || exit 1"]
ENTRYPOINT ["cs-pdns"]
CMD ["run"]
