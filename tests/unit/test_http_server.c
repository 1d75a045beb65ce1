/* test_http_server.c -- unit tests for the operations endpoint: address parsing, and (when built
 * with libmicrohttpd) real HTTP over loopback with libcurl: status codes, bodies, readiness and
 * liveness transitions, methods, IPv6, a busy port, no leaked descriptors.
 * Must not: use a fixed port (port 0 everywhere) or depend on timing tighter than seconds. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_server.h"
#include "metrics.h"
#include "unit.h"

static void check_parse(const char *addr, const char *want_host, int want_port)
{
    char host[64] = "unset", err[200] = "";
    int port = -1;
    CHECK_INT(http_server_parse_addr(addr, host, sizeof host, &port, err, sizeof err), 0);
    CHECK_STR(host, want_host);
    CHECK_INT(port, want_port);
    CHECK_STR(err, "");
}

static void check_parse_fails(const char *addr, const char *why)
{
    char host[64], err[200] = "";
    int port = -1;
    CHECK_INT(http_server_parse_addr(addr, host, sizeof host, &port, err, sizeof err), -1);
    if (!strstr(err, why))
        fprintf(stderr, "  address \"%s\": error \"%s\" lacks \"%s\"\n", addr, err, why);
    CHECK(strstr(err, why) != NULL);
}

static void test_parse_addr(void)
{
    check_parse("127.0.0.1:9187", "127.0.0.1", 9187);
    check_parse("[::1]:9187", "::1", 9187);
    check_parse("[::]:0", "::", 0);
    check_parse(":9187", "", 9187);
    check_parse("localhost:65535", "localhost", 65535);
    check_parse("0.0.0.0:0", "0.0.0.0", 0);
    check_parse_fails("", "empty address");
    check_parse_fails(NULL, "empty address");
    check_parse_fails("9187", "has no port");
    check_parse_fails("::1:9187", "put an IPv6 address in brackets");
    check_parse_fails("[::1]9187", "must be followed by :port");
    check_parse_fails("[::1]", "must be followed by :port");
    check_parse_fails("host:", "the port must be a number");
    check_parse_fails("host:65536", "the port must be a number");
    check_parse_fails("host:-1", "the port must be a number");
    check_parse_fails("host:12a", "the port must be a number");
    check_parse_fails("host:000009187", "the port must be a number");
    char host[4], err[200];
    int port;
    CHECK_INT(http_server_parse_addr("longhost:1", host, sizeof host, &port, err, sizeof err), -1);
    CHECK(strstr(err, "too long") != NULL);
}

#ifdef CSPDNS_HAVE_MICROHTTPD

struct resp {
    long status;
    char type[128];
    char allow[64];
    textbuf body;
};

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    return textbuf_append(ud, data, size * n) == 0 ? size * n : 0;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    struct resp *r = ud;
    size_t len = size * n;
    if (len > 7 && strncasecmp(data, "Allow: ", 7) == 0)
        snprintf(r->allow, sizeof r->allow, "%.*s", (int)(len - 7 - 2), data + 7);
    return len;
}

/* Fetches url with method; returns 0 and fills r (free r->body), or -1 on a transport error. */
static int fetch(const char *method, const char *url, struct resp *r)
{
    memset(r, 0, sizeof *r);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        char *type = NULL;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &type);
        snprintf(r->type, sizeof r->type, "%s", type ? type : "");
    } else {
        fprintf(stderr, "  %s %s: %s\n", method, url, curl_easy_strerror(rc));
    }
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? 0 : -1;
}

/* GETs path on the server's loopback port; returns the status, body in *body (caller frees). */
static long get(const struct http_server *srv, const char *path, char **body)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", http_server_port(srv), path);
    struct resp r;
    long status = fetch("GET", url, &r) == 0 ? r.status : -1;
    *body = strdup(textbuf_str(&r.body));
    textbuf_free(&r.body);
    return status;
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void test_endpoints(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    int fds_before = open_fds();
    struct http_server_config cfg = {.addr = "127.0.0.1:0", .metrics = m};
    struct http_server *srv = NULL;
    char err[300] = "";
    CHECK_INT(http_server_start(&cfg, &srv, err, sizeof err), 0);
    CHECK_STR(err, "");
    if (!srv)
        return;
    CHECK(http_server_port(srv) > 0);

    /* /metrics is the registry's exposition, with the format's content type. */
    metrics_add(m, METRIC_EVENTS_TOTAL, 1, "VM.CREATE", "applied", NULL);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", http_server_port(srv));
    struct resp r;
    CHECK_INT(fetch("GET", url, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.type, "text/plain; version=0.0.4; charset=utf-8");
    textbuf want = TEXTBUF_INIT;
    metrics_render(m, &want);
    CHECK_STR(textbuf_str(&r.body), textbuf_str(&want));
    CHECK(strstr(textbuf_str(&r.body),
                 "\ncspdns_events_total{kind=\"VM.CREATE\",outcome=\"applied\"} 1\n") != NULL);
    textbuf_free(&want);
    textbuf_free(&r.body);

    /* A counter moved between scrapes shows up in the next one. */
    metrics_add(m, METRIC_EVENTS_TOTAL, 2, "VM.CREATE", "applied", NULL);
    char *body;
    CHECK_INT(get(srv, "/metrics", &body), 200);
    CHECK(strstr(body, "\ncspdns_events_total{kind=\"VM.CREATE\",outcome=\"applied\"} 3\n") !=
          NULL);
    free(body);

    /* HEAD answers like GET without a body; other methods are refused with Allow. */
    CHECK_INT(fetch("HEAD", url, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_INT(r.body.len, 0);
    textbuf_free(&r.body);
    CHECK_INT(fetch("POST", url, &r), 0);
    CHECK_INT(r.status, 405);
    CHECK_STR(r.allow, "GET, HEAD");
    textbuf_free(&r.body);

    /* Unknown paths are 404, exact paths only. */
    const char *missing[] = {"/", "/metrics/", "/nope", "/healthz/x"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        CHECK_INT(get(srv, missing[i], &body), 404);
        free(body);
    }
    /* A query string does not change the path. */
    CHECK_INT(get(srv, "/healthz?verbose=1", &body), 200);
    free(body);

    /* Readiness follows the gauges: partitions, database, policy. */
    CHECK_INT(get(srv, "/readyz", &body), 503);
    CHECK_STR(body, "no Kafka partition assigned yet\nthe PowerDNS database is not reachable\n"
                    "no policy loaded\n");
    free(body);
    metrics_set(m, METRIC_KAFKA_PARTITIONS_ASSIGNED, 4, NULL);
    metrics_set(m, METRIC_POLICY_LOADED, 1, NULL);
    CHECK_INT(get(srv, "/readyz", &body), 503);
    CHECK_STR(body, "the PowerDNS database is not reachable\n");
    free(body);
    metrics_set(m, METRIC_DB_REACHABLE, 1, NULL);
    CHECK_INT(get(srv, "/readyz", &body), 200);
    CHECK_STR(body, "ready\n");
    free(body);
    metrics_set(m, METRIC_KAFKA_PARTITIONS_ASSIGNED, 0, NULL); /* a rebalance took them all */
    CHECK_INT(get(srv, "/readyz", &body), 503);
    CHECK_STR(body, "no Kafka partition assigned yet\n");
    free(body);

    /* Another server on the same port is refused with the system's reason. */
    char busy[64];
    snprintf(busy, sizeof busy, "127.0.0.1:%d", http_server_port(srv));
    struct http_server_config cfg2 = {.addr = busy, .metrics = m};
    struct http_server *srv2 = NULL;
    CHECK_INT(http_server_start(&cfg2, &srv2, err, sizeof err), -1);
    CHECK(srv2 == NULL);
    CHECK(strstr(err, "METRICS_ADDR: cannot listen on 127.0.0.1 port") == err);
    CHECK(strstr(err, "Address already in use") != NULL);

    http_server_stop(srv);
    CHECK_INT(open_fds(), fds_before);
    metrics_free(m);
}

static void test_liveness(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    struct http_server_config cfg = {.addr = "127.0.0.1:0", .metrics = m, .stale_after_s = 2};
    struct http_server *srv = NULL;
    char err[300] = "", *body;
    CHECK_INT(http_server_start(&cfg, &srv, err, sizeof err), 0);
    if (!srv)
        return;
    /* The start counts as a tick. */
    CHECK_INT(get(srv, "/healthz", &body), 200);
    CHECK_STR(body, "ok\n");
    free(body);
    sleep(4);
    CHECK_INT(get(srv, "/healthz", &body), 503);
    CHECK(strstr(body, "stale: the main loop last ticked ") == body);
    CHECK(strstr(body, "s ago (limit 2 s)\n") != NULL);
    free(body);
    http_server_tick(srv);
    CHECK_INT(get(srv, "/healthz", &body), 200);
    free(body);
    http_server_tick(NULL);
    http_server_stop(srv);
    http_server_stop(NULL);
    metrics_free(m);
}

static int custom_ready(void *ud, textbuf *why)
{
    atomic_int *state = ud;
    if (atomic_load(state))
        return 1;
    textbuf_puts(why, "resync in progress\n");
    return 0;
}

static void test_ready_callback(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    atomic_int state = 0;
    /* The callback decides alone: the gauges say "ready" here, the callback does not. */
    metrics_set(m, METRIC_KAFKA_PARTITIONS_ASSIGNED, 1, NULL);
    metrics_set(m, METRIC_DB_REACHABLE, 1, NULL);
    metrics_set(m, METRIC_POLICY_LOADED, 1, NULL);
    struct http_server_config cfg = {
        .addr = ":0", .metrics = m, .ready = custom_ready, .ready_ud = &state};
    struct http_server *srv = NULL;
    char err[300] = "", *body;
    CHECK_INT(http_server_start(&cfg, &srv, err, sizeof err), 0);
    if (!srv)
        return;
    /* ":0" listens on every interface, so loopback answers. */
    CHECK_INT(get(srv, "/readyz", &body), 503);
    CHECK_STR(body, "resync in progress\n");
    free(body);
    atomic_store(&state, 1);
    CHECK_INT(get(srv, "/readyz", &body), 200);
    CHECK_STR(body, "ready\n");
    free(body);
    http_server_stop(srv);
    metrics_free(m);
}

/* IPv6 loopback, when the machine has it; when it does not, the start must fail and say so. */
static void test_ipv6(void)
{
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 lo = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&lo, sizeof lo) == 0;
    if (probe >= 0)
        close(probe);
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    struct http_server_config cfg = {.addr = "[::1]:0", .metrics = m};
    struct http_server *srv = NULL;
    char err[300] = "";
    int rc = http_server_start(&cfg, &srv, err, sizeof err);
    if (!have_v6) {
        CHECK_INT(rc, -1);
        CHECK(strstr(err, "METRICS_ADDR: cannot listen on ::1") == err);
        metrics_free(m);
        return;
    }
    CHECK_INT(rc, 0);
    if (srv) {
        char url[128];
        snprintf(url, sizeof url, "http://[::1]:%d/healthz", http_server_port(srv));
        struct resp r;
        CHECK_INT(fetch("GET", url, &r), 0);
        CHECK_INT(r.status, 200);
        CHECK_STR(textbuf_str(&r.body), "ok\n");
        textbuf_free(&r.body);
    }
    http_server_stop(srv);
    metrics_free(m);
}

static void test_bad_address(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    struct http_server_config cfg = {.addr = "127.0.0.1:0", .metrics = NULL};
    struct http_server *srv = (struct http_server *)&cfg;
    char err[300] = "";
    CHECK_INT(http_server_start(&cfg, &srv, err, sizeof err), -1);
    CHECK(srv == NULL);
    CHECK(strstr(err, "needs a metrics registry") != NULL);
    cfg.metrics = m;
    cfg.addr = "localhost";
    CHECK_INT(http_server_start(&cfg, &srv, err, sizeof err), -1);
    CHECK(srv == NULL);
    CHECK(strstr(err, "METRICS_ADDR: \"localhost\" has no port") == err);
    /* An address of no local interface (TEST-NET-1, never assigned). */
    cfg.addr = "192.0.2.1:0";
    CHECK_INT(http_server_start(&cfg, &srv, err, sizeof err), -1);
    CHECK(strstr(err, "METRICS_ADDR: cannot listen on 192.0.2.1 port 0: ") == err);
    metrics_free(m);
}

#else

/* Built without libmicrohttpd: starting says how to get it, and the rest is a harmless no-op. */
static void test_without_microhttpd(void)
{
    struct http_server_config cfg = {.addr = "127.0.0.1:0", .metrics = NULL};
    struct http_server *srv = (struct http_server *)&cfg;
    char err[300] = "";
    CHECK_INT(http_server_start(&cfg, &srv, err, sizeof err), -1);
    CHECK(srv == NULL);
    CHECK(strstr(err, "built without libmicrohttpd") != NULL);
    CHECK(strstr(err, "libmicrohttpd-dev") != NULL);
    CHECK_INT(http_server_port(NULL), 0);
    http_server_tick(NULL);
    http_server_stop(NULL);
}

#endif

int main(void)
{
    test_parse_addr();
#ifdef CSPDNS_HAVE_MICROHTTPD
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_endpoints();
    test_liveness();
    test_ready_callback();
    test_ipv6();
    test_bad_address();
    curl_global_cleanup();
#else
    test_without_microhttpd();
#endif
    return unit_done("test_http_server");
}
