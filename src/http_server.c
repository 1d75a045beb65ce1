/* http_server.c -- /metrics, /healthz and /readyz on libmicrohttpd's own thread, or a clear refusal
 * when cs-pdns was built without it. Must not: write to the registry or block the main loop; every
 * request only reads thread-safe state. */
#include "http_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int http_server_parse_addr(const char *addr, char *host, size_t hostlen, int *port, char *err,
                           size_t errlen)
{
    static const char usage[] = "use host:port, [ipv6]:port or :port, e.g. 127.0.0.1:9187";
    if (!addr || !*addr) {
        snprintf(err, errlen, "empty address; %s", usage);
        return -1;
    }
    const char *h = addr, *colon;
    size_t hlen;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "\"%s\": a bracketed IPv6 address must be followed by :port; %s",
                     addr, usage);
            return -1;
        }
        h = addr + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon) {
            snprintf(err, errlen, "\"%s\" has no port; %s", addr, usage);
            return -1;
        }
        hlen = (size_t)(colon - addr);
        if (memchr(addr, ':', hlen)) {
            snprintf(err, errlen, "\"%s\": put an IPv6 address in brackets, e.g. [::1]:9187", addr);
            return -1;
        }
    }
    const char *p = colon + 1;
    size_t digits = strspn(p, "0123456789");
    long value = digits && digits <= 5 && !p[digits] ? strtol(p, NULL, 10) : -1;
    if (value < 0 || value > 65535) {
        snprintf(err, errlen,
                 "\"%s\": the port must be a number from 0 to 65535 (0 picks a free one)", addr);
        return -1;
    }
    if (hlen >= hostlen) {
        snprintf(err, errlen, "\"%s\": the host is too long", addr);
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)value;
    return 0;
}

#ifdef CSPDNS_HAVE_MICROHTTPD

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "logger.h"

struct http_server {
    struct MHD_Daemon *daemon;
    metrics *metrics;
    long long stale_after_ms;
    http_ready_fn ready;
    void *ready_ud;
    _Atomic long long last_tick_ms;
    int port;
};

/* Binds and listens on one address. Returns the socket, or -1 with errno set. */
static int listen_on(const struct sockaddr *sa, socklen_t salen, int v6only)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (sa->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    if (bind(fd, sa, salen) != 0 || listen(fd, 64) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* An empty host means every interface: IPv6 and IPv4 on one dual-stack socket when the system
 * has IPv6, else IPv4 alone. A name is resolved and its first address that binds is used. */
static int bind_addr(const char *host, int port, char *err, size_t errlen)
{
    if (!*host) {
        struct sockaddr_in6 any6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
        int fd = listen_on((struct sockaddr *)&any6, sizeof any6, 0);
        if (fd < 0 && errno == EAFNOSUPPORT) {
            struct sockaddr_in any4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
            fd = listen_on((struct sockaddr *)&any4, sizeof any4, 0);
        }
        if (fd < 0)
            snprintf(err, errlen, "cannot listen on port %d: %s", port, strerror(errno));
        return fd;
    }
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve \"%s\": %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = listen_on(ai->ai_addr, ai->ai_addrlen, 1);
        e = fd < 0 ? errno : 0;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "cannot listen on %s port %d: %s", host, port, strerror(e));
    return fd;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             const textbuf *body)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(body->len, (void *)textbuf_str(body),
                                                             MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static int gauges_ready(metrics *m, textbuf *why)
{
    double assigned = 0, db = 0, policy = 0;
    metrics_get(m, METRIC_KAFKA_PARTITIONS_ASSIGNED, &assigned, NULL);
    metrics_get(m, METRIC_DB_REACHABLE, &db, NULL);
    metrics_get(m, METRIC_POLICY_LOADED, &policy, NULL);
    if (assigned <= 0)
        textbuf_puts(why, "no Kafka partition assigned yet\n");
    if (db != 1)
        textbuf_puts(why, "the PowerDNS database is not reachable\n");
    if (policy != 1)
        textbuf_puts(why, "no policy loaded\n");
    return assigned > 0 && db == 1 && policy == 1;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **req_cls)
{
    (void)version, (void)upload_data, (void)upload_data_size, (void)req_cls;
    static const char text[] = "text/plain; charset=utf-8";
    struct http_server *srv = cls;
    textbuf body = TEXTBUF_INIT;
    unsigned status = MHD_HTTP_OK;
    const char *type = text;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        textbuf_puts(&body, "only GET and HEAD are supported\n");
    } else if (strcmp(url, "/metrics") == 0) {
        type = "text/plain; version=0.0.4; charset=utf-8";
        if (metrics_render(srv->metrics, &body) != 0) {
            status = MHD_HTTP_INTERNAL_SERVER_ERROR;
            type = text;
            textbuf_reset(&body);
            textbuf_puts(&body, "out of memory\n");
        }
    } else if (strcmp(url, "/healthz") == 0) {
        long long age = clock_ms() - atomic_load(&srv->last_tick_ms);
        if (age <= srv->stale_after_ms) {
            textbuf_puts(&body, "ok\n");
        } else {
            status = MHD_HTTP_SERVICE_UNAVAILABLE;
            textbuf_printf(&body, "stale: the main loop last ticked %lld s ago (limit %lld s)\n",
                           age / 1000, srv->stale_after_ms / 1000);
        }
    } else if (strcmp(url, "/readyz") == 0) {
        int ok = srv->ready ? srv->ready(srv->ready_ud, &body) : gauges_ready(srv->metrics, &body);
        if (ok) {
            textbuf_reset(&body);
            textbuf_puts(&body, "ready\n");
        } else {
            status = MHD_HTTP_SERVICE_UNAVAILABLE;
        }
    } else {
        status = MHD_HTTP_NOT_FOUND;
        textbuf_puts(&body, "not found; try /metrics, /healthz or /readyz\n");
    }
    enum MHD_Result rc = reply(conn, status, type, &body);
    textbuf_free(&body);
    return rc;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_msg(LOG_LVL_WARN, "http", "%s", msg);
}

int http_server_start(const struct http_server_config *cfg, struct http_server **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    if (!cfg->metrics) {
        snprintf(err, errlen, "the HTTP server needs a metrics registry (a bug in the caller)");
        return -1;
    }
    char host[256], why[300];
    int port;
    if (http_server_parse_addr(cfg->addr, host, sizeof host, &port, why, sizeof why) != 0) {
        snprintf(err, errlen, "METRICS_ADDR: %s", why);
        return -1;
    }
    struct http_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    srv->metrics = cfg->metrics;
    srv->stale_after_ms = (cfg->stale_after_s > 0 ? cfg->stale_after_s : 60) * 1000LL;
    srv->ready = cfg->ready;
    srv->ready_ud = cfg->ready_ud;
    atomic_store(&srv->last_tick_ms, clock_ms());

    int fd = bind_addr(host, port, why, sizeof why);
    if (fd < 0) {
        snprintf(err, errlen, "METRICS_ADDR: %s", why);
        free(srv);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sslen);
    char shown[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, shown, sizeof shown);
        srv->port = ntohs(a->sin6_port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, shown, sizeof shown);
        srv->port = ntohs(a->sin_port);
    }
    /* Few, short requests from a scraper or a probe: a small connection cap and a timeout keep a
     * misbehaving client from holding the thread. */
    srv->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL,
                                   NULL, handle, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                   MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, 16u,
                                   MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!srv->daemon) {
        close(fd);
        free(srv);
        snprintf(err, errlen, "METRICS_ADDR: libmicrohttpd could not start on %s (see the log)",
                 cfg->addr);
        return -1;
    }
    log_msg(LOG_LVL_INFO, "http", "listening on http://%s%s%s:%d (/metrics, /healthz, /readyz)",
            ss.ss_family == AF_INET6 ? "[" : "", shown, ss.ss_family == AF_INET6 ? "]" : "",
            srv->port);
    *out = srv;
    return 0;
}

int http_server_port(const struct http_server *srv)
{
    return srv ? srv->port : 0;
}

void http_server_tick(struct http_server *srv)
{
    if (srv)
        atomic_store_explicit(&srv->last_tick_ms, clock_ms(), memory_order_relaxed);
}

void http_server_stop(struct http_server *srv)
{
    if (!srv)
        return;
    MHD_stop_daemon(srv->daemon);
    free(srv);
}

#else

int http_server_start(const struct http_server_config *cfg, struct http_server **out, char *err,
                      size_t errlen)
{
    (void)cfg;
    *out = NULL;
    snprintf(err, errlen,
             "METRICS_ADDR is set, but cs-pdns was built without libmicrohttpd: install it "
             "(Debian: libmicrohttpd-dev) and rebuild, or unset METRICS_ADDR");
    return -1;
}

int http_server_port(const struct http_server *srv)
{
    (void)srv;
    return 0;
}

void http_server_tick(struct http_server *srv)
{
    (void)srv;
}

void http_server_stop(struct http_server *srv)
{
    (void)srv;
}

#endif
