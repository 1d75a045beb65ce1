/* test_pdns_api.c -- pdns_api against the stack's real PowerDNS API (DNS_API_PORT, DNS_API_KEY)
 * and a local HTTP server that answers as told. Must not: skip when DNS_API_* is missing. */
#define _GNU_SOURCE /* memmem, strcasestr */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../unit/unit.h"
#include "pdns_api.h"
#include "settings.h"

#define MAX_REQS 16

/* A one-thread HTTP/1.1 server: answers every request on a connection with `status`, keeps the
 * connection open, and records what it saw. */
struct fake {
    int fd;
    int port;
    int status;
    const char *fail_path; /* a request whose path contains this gets 422 instead */
    pthread_t thread;
    pthread_mutex_t mu;
    int connections;
    int nreq;
    char req[MAX_REQS][512]; /* request line and X-API-Key header of each request */
};

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "test_pdns_api: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int listen_local(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("cannot listen on 127.0.0.1");
    *port = ntohs(a.sin_port);
    return fd;
}

static void serve_connection(struct fake *f, int c)
{
    char buf[8192];
    size_t have = 0;
    for (;;) {
        char *end = memmem(buf, have, "\r\n\r\n", 4);
        if (!end) {
            if (have == sizeof buf)
                return;
            ssize_t n = read(c, buf + have, sizeof buf - have);
            if (n <= 0)
                return;
            have += (size_t)n;
            continue;
        }
        *end = '\0';
        const char *key = strcasestr(buf, "\r\nX-API-Key:");
        size_t line = strcspn(buf, "\r");
        size_t keylen = key ? strcspn(key + 2, "\r") : 0;
        int status = f->status;
        pthread_mutex_lock(&f->mu);
        if (f->nreq < MAX_REQS)
            snprintf(f->req[f->nreq++], sizeof f->req[0], "%.*s|%.*s", (int)line, buf, (int)keylen,
                     key ? key + 2 : "");
        pthread_mutex_unlock(&f->mu);
        if (f->fail_path && strstr(buf, f->fail_path) && strstr(buf, f->fail_path) < buf + line)
            status = 422;
        char answer[256];
        int n = snprintf(answer, sizeof answer,
                         "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                         "\r\n{}",
                         status);
        if (write(c, answer, (size_t)n) != n)
            return;
        size_t used = (size_t)(end + 4 - buf);
        memmove(buf, buf + used, have - used);
        have -= used;
    }
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        int c = accept(f->fd, NULL, NULL);
        if (c < 0)
            return NULL;
        pthread_mutex_lock(&f->mu);
        f->connections++;
        pthread_mutex_unlock(&f->mu);
        serve_connection(f, c);
        close(c);
    }
}

static void fake_start(struct fake *f, int status, const char *fail_path)
{
    memset(f, 0, sizeof *f);
    f->status = status;
    f->fail_path = fail_path;
    f->fd = listen_local(&f->port);
    pthread_mutex_init(&f->mu, NULL);
    if (pthread_create(&f->thread, NULL, fake_main, f) != 0)
        die("pthread_create");
}

static void fake_stop(struct fake *f)
{
    shutdown(f->fd, SHUT_RDWR);
    close(f->fd);
    pthread_join(f->thread, NULL);
    pthread_mutex_destroy(&f->mu);
}

static struct pdns_api *open_api(const char *url, const char *key, const char *server_id)
{
    struct settings s;
    memset(&s, 0, sizeof s);
    s.pdns_api_url = (char *)url;
    s.pdns_api_key = (char *)key;
    s.pdns_server_id = (char *)server_id;
    struct pdns_api *api = NULL;
    char err[512];
    if (pdns_api_new(&s, &api, err, sizeof err) != CSP_OK || !api)
        die("pdns_api_new(%s): %s", url, err);
    return api;
}

static const char *const names[] = {"web-01.api-test.example.", "10.1.16.172.in-addr.arpa.",
                                    "grp-x.api-test.example."};
#define NNAMES (sizeof names / sizeof names[0])

static void test_settings(void)
{
    struct settings s;
    memset(&s, 0, sizeof s);
    char sentinel;
    struct pdns_api *api = (struct pdns_api *)&sentinel;
    char err[512] = "";
    CHECK_INT(pdns_api_new(&s, &api, err, sizeof err), CSP_OK);
    CHECK(api == NULL);

    s.pdns_api_url = "ftp://127.0.0.1:8081";
    s.pdns_api_key = "k";
    CHECK_INT(pdns_api_new(&s, &api, err, sizeof err), CSP_PERMANENT);
    CHECK(api == NULL && strstr(err, "PDNS_API_URL"));
    s.pdns_api_url = "http://127.0.0.1:8081";
    s.pdns_api_key = NULL;
    CHECK_INT(pdns_api_new(&s, &api, err, sizeof err), CSP_PERMANENT);
    CHECK(api == NULL && strstr(err, "PDNS_API_KEY"));
}

/* The stack's PowerDNS: the right key purges; a wrong key or server id is the operator's to fix,
 * and the message says which setting, without the key. */
static void test_real_pdns(const char *base, const char *key)
{
    char err[512];
    size_t purged = 99;
    struct pdns_api *api = open_api(base, key, "localhost");
    CHECK_INT(pdns_api_purge(api, names, NNAMES, &purged, err, sizeof err), CSP_OK);
    CHECK_INT(purged, NNAMES);
    CHECK_INT(pdns_api_purge(api, names, 0, &purged, err, sizeof err), CSP_OK);
    CHECK_INT(purged, 0);
    pdns_api_free(api);

    char url[256];
    snprintf(url, sizeof url, "%s/", base);
    api = open_api(url, key, NULL);
    CHECK_INT(pdns_api_purge(api, names, 1, &purged, err, sizeof err), CSP_OK);
    CHECK_INT(purged, 1);
    pdns_api_free(api);

    const char *wrong_key = "not-the-key-4711";
    api = open_api(base, wrong_key, "localhost");
    CHECK_INT(pdns_api_purge(api, names, NNAMES, &purged, err, sizeof err), CSP_PERMANENT);
    CHECK_INT(purged, 0);
    CHECK(strstr(err, "PDNS_API_KEY") && strstr(err, "401"));
    CHECK(!strstr(err, wrong_key));
    printf("  wrong key: %s\n", err);
    pdns_api_free(api);

    api = open_api(base, key, "no-such-server");
    CHECK_INT(pdns_api_purge(api, names, NNAMES, &purged, err, sizeof err), CSP_PERMANENT);
    CHECK_INT(purged, 0);
    CHECK(strstr(err, "PDNS_SERVER_ID") && strstr(err, "no-such-server"));
    CHECK(!strstr(err, key));
    printf("  wrong server id: %s\n", err);
    pdns_api_free(api);

    snprintf(url, sizeof url, "%s/not-the-api", base);
    api = open_api(url, key, "localhost");
    CHECK_INT(pdns_api_purge(api, names, NNAMES, &purged, err, sizeof err), CSP_PERMANENT);
    CHECK(strstr(err, "PDNS_API_URL"));
    pdns_api_free(api);
}

static void test_unreachable(void)
{
    int port;
    int fd = listen_local(&port);
    close(fd); /* nothing listens there now: connections are refused */
    char url[64], err[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    struct pdns_api *api = open_api(url, "secret-key-1", "localhost");
    size_t purged = 99;
    CHECK_INT(pdns_api_purge(api, names, NNAMES, &purged, err, sizeof err), CSP_TRANSIENT);
    CHECK_INT(purged, 0);
    CHECK(strstr(err, "PDNS_API_URL") && !strstr(err, "secret-key-1"));
    printf("  refused: %s\n", err);
    pdns_api_free(api);

    /* A server that takes the connection and never answers: the purge gives up after its 2 s
     * request timeout, once for the batch rather than once per name (3 names would take 5 s). */
    fd = listen_local(&port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    api = open_api(url, "secret-key-1", "localhost");
    double t0 = now_s();
    CHECK_INT(pdns_api_purge(api, names, NNAMES, &purged, err, sizeof err), CSP_TRANSIENT);
    double took = now_s() - t0;
    CHECK_INT(purged, 0);
    CHECK(strstr(err, "no answer within"));
    CHECK(took >= 1.9 && took < 3.9);
    printf("  stalled server: %s (gave up after %.1f s)\n", err, took);
    pdns_api_free(api);
    close(fd);
}

static void test_fake_server(void)
{
    struct fake f;
    char url[64], err[512];
    size_t purged = 99;

    fake_start(&f, 200, NULL);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", f.port);
    struct pdns_api *api = open_api(url, "k3y", "my server");
    CHECK_INT(pdns_api_purge(api, names, NNAMES, &purged, err, sizeof err), CSP_OK);
    CHECK_INT(purged, NNAMES);
    CHECK_INT(pdns_api_purge(api, names, 1, &purged, err, sizeof err), CSP_OK);
    pdns_api_free(api);
    fake_stop(&f);
    CHECK_INT(f.connections, 1);
    CHECK_INT(f.nreq, NNAMES + 1);
    CHECK_STR(f.req[0], "PUT /api/v1/servers/my%20server/cache/flush?domain=web-01.api-test."
                        "example. HTTP/1.1|X-API-Key: k3y");
    CHECK_STR(f.req[1], "PUT /api/v1/servers/my%20server/cache/flush?domain=10.1.16.172.in-addr."
                        "arpa. HTTP/1.1|X-API-Key: k3y");

    /* 5xx is the server's trouble: transient, and the other names are still tried. */
    fake_start(&f, 503, NULL);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", f.port);
    api = open_api(url, "k3y", "localhost");
    CHECK_INT(pdns_api_purge(api, names, NNAMES, &purged, err, sizeof err), CSP_TRANSIENT);
    CHECK_INT(purged, 0);
    CHECK(strstr(err, "HTTP 503"));
    pdns_api_free(api);
    fake_stop(&f);
    CHECK_INT(f.nreq, NNAMES);

    /* A wrong setting fails every name alike: the batch stops at the first answer. */
    static const int config_errors[] = {302, 401, 403, 404};
    for (size_t i = 0; i < sizeof config_errors / sizeof config_errors[0]; i++) {
        fake_start(&f, config_errors[i], NULL);
        snprintf(url, sizeof url, "http://127.0.0.1:%d", f.port);
        api = open_api(url, "k3y", "localhost");
        CHECK_INT(pdns_api_purge(api, names, NNAMES, &purged, err, sizeof err), CSP_PERMANENT);
        CHECK_INT(purged, 0);
        CHECK(strstr(err, "PDNS_API_") && !strstr(err, "k3y"));
        pdns_api_free(api);
        fake_stop(&f);
        CHECK_INT(f.nreq, 1);
    }

    /* One name refused: the rest are purged, and the batch reports the refusal. */
    fake_start(&f, 200, "in-addr");
    snprintf(url, sizeof url, "http://127.0.0.1:%d", f.port);
    api = open_api(url, "k3y", "localhost");
    CHECK_INT(pdns_api_purge(api, names, NNAMES, &purged, err, sizeof err), CSP_PERMANENT);
    CHECK_INT(purged, NNAMES - 1);
    CHECK(strstr(err, "HTTP 422") && strstr(err, "10.1.16.172.in-addr.arpa."));
    pdns_api_free(api);
    fake_stop(&f);
    CHECK_INT(f.nreq, NNAMES);
}

int main(void)
{
    const char *port = getenv("DNS_API_PORT");
    const char *key = getenv("DNS_API_KEY");
    if (!port || !key || atoi(port) <= 0)
        die("DNS_API_PORT and DNS_API_KEY must name the PowerDNS API of a running stack: run "
            "this through `stack.py exec --state FILE -- test_pdns_api` (ctest does)");
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", atoi(port));
    test_settings();
    test_real_pdns(base, key);
    test_unreachable();
    test_fake_server();
    return unit_done("pdns_api");
}
