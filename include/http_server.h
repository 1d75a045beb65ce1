/* http_server.h -- the operations endpoint (METRICS_ADDR): /metrics, /healthz and /readyz over
 * HTTP, served by libmicrohttpd on its own thread.
 * Must not: change anything it reports on; it only reads the registry, the tick and the readiness
 * callback. */
#ifndef CSPDNS_HTTP_SERVER_H
#define CSPDNS_HTTP_SERVER_H

#include <stddef.h>

#include "metrics.h"
#include "textbuf.h"

/* Splits an address "host:port", "[ipv6]:port" or ":port" (every interface) into host (empty for
 * every interface) and port (0..65535; 0 asks the system for a free port). A bare IPv6 address
 * must be bracketed. Returns 0, or -1 with err saying what is wrong (without naming a variable:
 * callers prefix it with METRICS_ADDR). Pure, available without libmicrohttpd, so `check` can
 * validate the setting. */
int http_server_parse_addr(const char *addr, char *host, size_t hostlen, int *port, char *err,
                           size_t errlen);

/* Readiness when the registry's gauges are not the whole story. Called on the server thread, so it
 * must only read thread-safe state. Returns 1 when ready; otherwise 0 with why (one line per
 * reason) appended. */
typedef int (*http_ready_fn)(void *ud, textbuf *why);

struct http_server_config {
    const char *addr; /* METRICS_ADDR, see http_server_parse_addr */
    metrics *metrics; /* required; rendered on /metrics; must outlive the server */
    /* /healthz answers 503 when http_server_tick was not called for longer than this (seconds;
     * <= 0 means 60). Pick several times the longest pause of the loop that ticks. */
    int stale_after_s;
    /* NULL: ready when cspdns_kafka_partitions_assigned > 0, cspdns_db_reachable == 1 and
     * cspdns_policy_loaded == 1. Otherwise the callback decides alone. */
    http_ready_fn ready;
    void *ready_ud;
};

struct http_server;

/* Binds cfg->addr and serves on libmicrohttpd's own thread (MHD_USE_INTERNAL_POLLING_THREAD):
 *   GET /metrics   200, the Prometheus text format 0.0.4 of cfg->metrics
 *   GET /healthz   200 "ok" while the main loop ticks, else 503 saying when it last did
 *   GET /readyz    200 "ready", else 503 listing what is missing, one line each
 *   other paths    404; other methods 405 (HEAD is answered like GET, without a body)
 * The start itself counts as a tick. Logs the bound address ("listening on http://...") at info.
 * Returns 0, or -1 with err saying what to fix (bad address, port in use, no registry, or a build
 * without libmicrohttpd). */
int http_server_start(const struct http_server_config *cfg, struct http_server **out, char *err,
                      size_t errlen);

/* The port actually bound (useful with port 0). */
int http_server_port(const struct http_server *srv);

/* Marks the main loop as alive; cheap (one atomic store), call it on every loop iteration and
 * while waiting (for the database, during backoff). Thread-safe; NULL (no METRICS_ADDR) is a
 * no-op, so callers need not check. */
void http_server_tick(struct http_server *srv);

/* Stops serving (waits for requests in flight) and frees everything. NULL is a no-op. */
void http_server_stop(struct http_server *srv);

#endif
