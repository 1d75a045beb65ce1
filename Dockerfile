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
# The image has no HTTP client, so Docker's own check runs `cs-pdns check`: the settings and the
# (possibly mounted) policy still load, without touching Kafka, CloudStack or the database. It does
# not prove the running process is alive; orchestrators that probe over HTTP should use
# METRICS_ADDR's /healthz (liveness) and /readyz (readiness) instead.
HEALTHCHECK --interval=60s --timeout=10s --retries=3 CMD ["cs-pdns", "check"]
ENTRYPOINT ["cs-pdns"]
CMD ["run"]
