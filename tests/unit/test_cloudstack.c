/* test_cloudstack.c -- CloudStack signing vectors, URL encoding, and call classification against
 * an in-process HTTP server on 127.0.0.1. Must not: reach any host other than 127.0.0.1. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cloudstack.h"
#include "unit.h"

#define SECRET                                                                                     \
    "Cz8sQ2tAx6Wf0hnhK-VkWj9x3yNbZ7e2Pq1LmR4oTgUs5vAaB3cD6eF8gH0iJ2kL4mN6pQ8rS0tU2vW4xY6z7A"
#define APIKEY                                                                                     \
    "bT4kV2mX9pQ1rS7uW3yZ5aC8dE0fG2hJ4kL6mN8pQ0rS2tU4vW6xY8zA1bC3dE5fG7hJ9kL1mN3pQ5rS7tU9vA"
#define VM_ID "9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41"
#define DOM_ID "4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f"

/* ---- signing ---- */

static void check_encode(const char *in, const char *want)
{
    textbuf sb = TEXTBUF_INIT;
    CHECK_INT(cloudstack_url_encode(&sb, in), 0);
    CHECK_STR(textbuf_str(&sb), want);
    textbuf_free(&sb);
}

static void test_url_encode(void)
{
    check_encode("", "");
    check_encode("AZaz09.-*_", "AZaz09.-*_");
    check_encode("web server", "web%20server");
    check_encode("a+b", "a%2Bb");
    check_encode("~/=&?%#", "%7E%2F%3D%26%3F%25%23");
    check_encode("\xc3\xa9", "%C3%A9");               /* é */
    check_encode("\xe2\x82\xac", "%E2%82%AC");        /* € */
    check_encode("\xf0\x9f\x98\x80", "%F0%9F%98%80"); /* U+1F600 */
    check_encode("2024-05-02T14:20:00+0000", "2024-05-02T14%3A20%3A00%2B0000");

    /* Invalid UTF-8 could never be signed the way Java re-encodes it; the buffer is untouched. */
    const char *bad[] = {"\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\xff"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        textbuf sb = TEXTBUF_INIT;
        textbuf_puts(&sb, "keep");
        CHECK_INT(cloudstack_url_encode(&sb, bad[i]), -1);
        CHECK_STR(textbuf_str(&sb), "keep");
        textbuf_free(&sb);
    }
}

static void test_vector_one(void)
{
    const struct cs_param p[] = {
        {"command", "listVirtualMachines"},
        {"response", "json"},
        {"listall", "true"},
        {"page", "1"},
        {"pagesize", "500"},
        {"keyword", "web server~1"},
        {"apikey", APIKEY},
        {"signatureversion", "3"},
        {"expires", "2024-05-02T14:20:00+0000"},
    };
    textbuf q = TEXTBUF_INIT;
    CHECK_INT(cloudstack_canonical_query(p, 9, &q), 0);
    CHECK_STR(
        textbuf_str(&q),
        "apikey=bt4kv2mx9pq1rs7uw3yz5ac8de0fg2hj4kl6mn8pq0rs2tu4vw6xy8za1bc3de5fg7hj9kl1mn3pq5"
        "rs7tu9va&command=listvirtualmachines&expires=2024-05-02t14%3a20%3a00%2b0000&keyword="
        "web%20server%7e1&listall=true&page=1&pagesize=500&response=json&signatureversion=3");
    textbuf_free(&q);
    char sig[29];
    CHECK_INT(cloudstack_sign(SECRET, p, 9, sig, sizeof sig), 0);
    CHECK_STR(sig, "HfWT5B1yA9SJU6vkCPZHuQv+fmk=");
    textbuf enc = TEXTBUF_INIT;
    cloudstack_url_encode(&enc, sig);
    CHECK_STR(textbuf_str(&enc), "HfWT5B1yA9SJU6vkCPZHuQv%2Bfmk%3D");
    textbuf_free(&enc);
    CHECK_INT(cloudstack_sign(SECRET, p, 9, sig, 28), -1);
}

static void test_vector_two(void)
{
    const struct cs_param p[] = {
        {"command", "listDomains"}, {"response", "json"}, {"id", DOM_ID}, {"apikey", APIKEY}};
    char sig[29];
    CHECK_INT(cloudstack_sign(SECRET, p, 4, sig, sizeof sig), 0);
    CHECK_STR(sig, "9n7o2hx3a0TIbbkRopMKMpLrE7E=");
}

static void test_sort_and_lowercase(void)
{
    /* Collections.sort order: every upper-case name before any lower-case one. */
    const struct cs_param p[] = {
        {"b", "4"}, {"a", "3"}, {"B", "2"}, {"A", "1"}, {"_x", "\xc3\xa9"}};
    textbuf q = TEXTBUF_INIT;
    textbuf_puts(&q, "KEEP:");
    CHECK_INT(cloudstack_canonical_query(p, 5, &q), 0);
    CHECK_STR(textbuf_str(&q), "KEEP:a=1&b=2&_x=%c3%a9&a=3&b=4");
    textbuf_free(&q);

    const struct cs_param bad[] = {{"a", "1"}, {"b", NULL}};
    textbuf q2 = TEXTBUF_INIT;
    CHECK_INT(cloudstack_canonical_query(bad, 2, &q2), -1);
    CHECK_STR(textbuf_str(&q2), "");
    textbuf_free(&q2);
}

static void test_expires(void)
{
    char buf[32];
    time_t before = time(NULL);
    cloudstack_expires(600, buf);
    time_t after = time(NULL);
    CHECK_INT(strlen(buf), 24);
    CHECK_STR(buf + 19, "+0000");
    struct tm tm = {0};
    const char *end = strptime(buf, "%Y-%m-%dT%H:%M:%S", &tm);
    CHECK(end && strcmp(end, "+0000") == 0);
    time_t t = timegm(&tm);
    CHECK(t >= before + 600 && t <= after + 600);
}

/* ---- a canned HTTP server ---- */

struct canned {
    int status;
    const char *body;
    int delay_ms;
    const char *raw; /* when set, sent verbatim instead of status + body */
};

struct server {
    int lfd, port, stop, connections, nreq, busy;
    pthread_t th;
    pthread_mutex_t mu;
    struct canned resp[4];
    int nresp, next;
    char *reqs[64];
};

static void server_set(struct server *s, int n, const struct canned *resp)
{
    pthread_mutex_lock(&s->mu);
    memcpy(s->resp, resp, (size_t)n * sizeof *resp);
    s->nresp = n;
    s->next = 0;
    pthread_mutex_unlock(&s->mu);
}

static int wait_readable(struct server *s, int fd)
{
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int rc = poll(&pfd, 1, 50);
        pthread_mutex_lock(&s->mu);
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop || rc < 0)
            return 0;
        if (rc > 0)
            return 1;
    }
}

/* Serves one connection, keep-alive, until the client closes it. */
static void serve_conn(struct server *s, int fd)
{
    char buf[16384];
    size_t len = 0;
    for (;;) {
        char *eoh;
        while (!(eoh = memmem(buf, len, "\r\n\r\n", 4))) {
            if (len == sizeof buf || !wait_readable(s, fd))
                return;
            ssize_t got = recv(fd, buf + len, sizeof buf - len, 0);
            if (got <= 0)
                return;
            len += (size_t)got;
        }
        struct canned c;
        pthread_mutex_lock(&s->mu);
        if (s->nreq < 64)
            s->reqs[s->nreq++] = strndup(buf, strcspn(buf, "\r\n"));
        c = s->resp[s->next < s->nresp ? s->next : s->nresp - 1];
        s->next++;
        s->busy = 1;
        pthread_mutex_unlock(&s->mu);
        size_t used = (size_t)(eoh + 4 - buf);
        memmove(buf, buf + used, len - used);
        len -= used;
        if (c.delay_ms)
            usleep((useconds_t)c.delay_ms * 1000);
        char out[8192];
        int n = c.raw
                    ? snprintf(out, sizeof out, "%s", c.raw)
                    : snprintf(out, sizeof out,
                               "HTTP/1.1 %d X\r\nContent-Type: application/json; charset=UTF-8\r\n"
                               "Content-Length: %zu\r\n\r\n%s",
                               c.status, strlen(c.body), c.body);
        ssize_t sent = send(fd, out, (size_t)n, MSG_NOSIGNAL);
        pthread_mutex_lock(&s->mu);
        s->busy = 0;
        pthread_mutex_unlock(&s->mu);
        if (sent != n)
            return;
    }
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    while (wait_readable(s, s->lfd)) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&s->mu);
        s->connections++;
        pthread_mutex_unlock(&s->mu);
        serve_conn(s, fd);
        close(fd);
    }
    return NULL;
}

static int listen_any(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("test server");
        exit(1);
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static void server_start(struct server *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = listen_any(&s->port);
    pthread_create(&s->th, NULL, server_main, s);
}

static void server_stop(struct server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    close(s->lfd);
    for (int i = 0; i < s->nreq; i++)
        free(s->reqs[i]);
    pthread_mutex_destroy(&s->mu);
}

static int server_nreq(struct server *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->nreq;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int server_connections(struct server *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->connections;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* After a client timeout the server is still sleeping on that request; later checks that count
 * requests must not race with it. */
static void server_wait_idle(struct server *s, int nreq)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&s->mu);
        int idle = s->nreq >= nreq && !s->busy;
        pthread_mutex_unlock(&s->mu);
        if (idle)
            return;
        usleep(10000);
    }
    fprintf(stderr, "test server did not become idle\n");
}

/* URLDecoder semantics, as the servlet applies them. */
static char *url_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1), *o = out;
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        if (s[i] == '%' && i + 2 < len && sscanf(s + i + 1, "%2x", &v) == 1) {
            *o++ = (char)v;
            i += 2;
        } else {
            *o++ = s[i] == '+' ? ' ' : s[i];
        }
    }
    *o = '\0';
    return out;
}

/* Checks that the request line carries a signature valid for its own decoded parameters. */
static void check_signed_request(const char *line, const char *want_command)
{
    const char *q = strchr(line, '?');
    CHECK(strncmp(line, "GET /client/api?", 16) == 0);
    if (!q)
        return;
    q++;
    size_t qlen = strcspn(q, " ");
    CHECK(memchr(q, '+', qlen) == NULL);
    struct cs_param p[32];
    char *names[32], *values[32], *sig = NULL, *apikey = NULL, *command = NULL, *expires = NULL;
    size_t n = 0;
    while (qlen > 0 && n < 32) {
        size_t plen = strcspn(q, "& ");
        const char *eq = memchr(q, '=', plen);
        CHECK(eq != NULL);
        if (!eq)
            break;
        char *name = url_decode(q, (size_t)(eq - q));
        char *value = url_decode(eq + 1, plen - (size_t)(eq + 1 - q));
        if (strcmp(name, "signature") == 0) {
            sig = value;
            free(name);
        } else {
            names[n] = name;
            values[n] = value;
            p[n] = (struct cs_param){name, value};
            if (!strcmp(name, "apikey"))
                apikey = value;
            if (!strcmp(name, "command"))
                command = value;
            if (!strcmp(name, "expires"))
                expires = value;
            n++;
        }
        q += plen;
        qlen -= plen;
        if (*q == '&')
            q++, qlen--;
    }
    char want[29] = "";
    CHECK_INT(cloudstack_sign(SECRET, p, n, want, sizeof want), 0);
    CHECK_STR(sig, want);
    CHECK_STR(apikey, APIKEY);
    CHECK_STR(command, want_command);
    CHECK(expires && strlen(expires) == 24 && strcmp(expires + 19, "+0000") == 0);
    free(sig);
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
        free(values[i]);
    }
}

/* ---- calls ---- */

#define VM_BODY(id)                                                                                \
    "{\"listvirtualmachinesresponse\":{\"count\":1,\"virtualmachine\":[{\"id\":\"" id              \
    "\",\"name\":\"web-01\",\"nic\":[]}]}}"
#define GONE_BODY                                                                                  \
    "{\"listvirtualmachinesresponse\":{\"uuidList\":[],\"errorcode\":431,\"cserrorcode\":4350,"    \
    "\"errortext\":\"Invalid parameter id value=" VM_ID " due to incorrect long value format, or " \
    "entity does not exist or due to incorrect parameter annotation for the field in api cmd "     \
    "class.\"}}"
#define CRED_BODY                                                                                  \
    "{\"listvirtualmachinesresponse\":{\"uuidList\":[],\"errorcode\":401,\"errortext\":\"unable "  \
    "to verify user credentials and/or request signature\"}}"

static struct settings test_settings(char *endpoint, int timeout_ms)
{
    struct settings s;
    memset(&s, 0, sizeof s);
    s.cs_endpoint = endpoint;
    s.cs_api_key = APIKEY;
    s.cs_secret_key = SECRET;
    s.cs_timeout_ms = timeout_ms;
    s.cs_verify_tls = 1;
    return s;
}

static void check_no_secrets(const char *err)
{
    CHECK(*err != '\0');
    CHECK(strstr(err, APIKEY) == NULL && strstr(err, SECRET) == NULL);
    CHECK(strstr(err, "signature=") == NULL && strstr(err, "apikey") == NULL);
    CHECK(strchr(err, '?') == NULL);
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One cloudstack_call of listVirtualMachines against a single canned answer. */
static csp_status call_with(struct server *srv, struct cloudstack *cs, struct canned c,
                            struct cs_reply *r, char *err, size_t errlen)
{
    server_set(srv, 1, &c);
    const struct cs_param p[] = {{"id", VM_ID}};
    return cloudstack_call(cs, "listVirtualMachines", p, 1, r, err, errlen);
}

static void test_new_errors(void)
{
    char err[256];
    struct cloudstack *cs = (void *)1;
    struct settings s = test_settings(NULL, 1000);
    CHECK_INT(cloudstack_new(&s, &cs, err, sizeof err), -1);
    CHECK(cs == NULL && strstr(err, "CS_ENDPOINT"));
    s.cs_endpoint = "ftp://127.0.0.1/client/api";
    CHECK_INT(cloudstack_new(&s, &cs, err, sizeof err), -1);
    CHECK(strstr(err, "CS_ENDPOINT") != NULL);
    s.cs_endpoint = "http://127.0.0.1/client/api";
    s.cs_secret_key = "";
    CHECK_INT(cloudstack_new(&s, &cs, err, sizeof err), -1);
    CHECK(strstr(err, "CS_SECRET_KEY") != NULL);
    cloudstack_free(NULL);
    cs_reply_free(NULL);
}

static void test_lookups(struct server *srv, struct cloudstack *cs)
{
    char err[512];
    struct cs_reply r;
    const json_value *obj;

    /* 200 unwrap, over one kept-alive connection. */
    const struct canned ok = {200, VM_BODY(VM_ID), 0, NULL};
    server_set(srv, 1, &ok);
    int conns = server_connections(srv), before = server_nreq(srv);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(cloudstack_get_vm(cs, i == 2 ? "9C2F4E1A-6B3D-4F8E-A1C2-7D5E9B0F3A41" : VM_ID, &r,
                                    &obj, err, sizeof err),
                  CSP_OK);
        CHECK(obj != NULL && r.http_status == 200);
        CHECK_STR(json_get_str(obj, "name"), "web-01");
        cs_reply_free(&r);
    }
    CHECK_INT(server_nreq(srv) - before, 3);
    CHECK_INT(server_connections(srv) - conns, 1);
    check_signed_request(srv->reqs[before], "listVirtualMachines");
    CHECK(strstr(srv->reqs[before], "id=" VM_ID "&listall=true&") != NULL);
    CHECK(strstr(srv->reqs[before + 2], "id=" VM_ID "&") != NULL); /* sent lower-case */

    /* Empty list, then the project scope finds it. */
    const struct canned proj[] = {{200, "{\"listvirtualmachinesresponse\":{}}", 0, NULL},
                                  {200, VM_BODY(VM_ID), 0, NULL}};
    server_set(srv, 2, proj);
    before = server_nreq(srv);
    CHECK_INT(cloudstack_get_vm(cs, VM_ID, &r, &obj, err, sizeof err), CSP_OK);
    CHECK(obj != NULL);
    CHECK_INT(server_nreq(srv) - before, 2);
    CHECK(strstr(srv->reqs[before], "projectid") == NULL);
    CHECK(strstr(srv->reqs[before + 1], "&projectid=-1&") != NULL);
    check_signed_request(srv->reqs[before + 1], "listVirtualMachines");
    cs_reply_free(&r);

    /* An answer about another VM counts as not found, in both scopes. */
    const struct canned other = {200, VM_BODY("00000000-0000-4000-8000-000000000000"), 0, NULL};
    server_set(srv, 1, &other);
    before = server_nreq(srv);
    CHECK_INT(cloudstack_get_vm(cs, VM_ID, &r, &obj, err, sizeof err), CSP_OK);
    CHECK(obj == NULL);
    CHECK_INT(server_nreq(srv) - before, 2);
    cs_reply_free(&r);

    /* 431 entity-not-found: the VM is gone, no second call. */
    const struct canned gone = {431, GONE_BODY, 0, NULL};
    server_set(srv, 1, &gone);
    before = server_nreq(srv);
    CHECK_INT(cloudstack_get_vm(cs, VM_ID, &r, &obj, err, sizeof err), CSP_OK);
    CHECK(obj == NULL);
    CHECK_INT(r.http_status, 431);
    CHECK_INT(r.cserrorcode, 4350);
    CHECK_INT(server_nreq(srv) - before, 1);
    cs_reply_free(&r);

    /* A removed domain's account lookup: 431 without cserrorcode, text says so. */
    const struct canned acc_gone = {431,
                                    "{\"listaccountsresponse\":{\"errorcode\":431,\"errortext\":"
                                    "\"Domain id=12 doesn't exist\"}}",
                                    0, NULL};
    server_set(srv, 1, &acc_gone);
    CHECK_INT(cloudstack_get_account(cs, "acme", DOM_ID, &r, &obj, err, sizeof err), CSP_OK);
    CHECK(obj == NULL && r.http_status == 431);
    cs_reply_free(&r);

    /* cserrorcode 4350 alone is enough; a 431 with neither is a real error. */
    const struct canned code_only = {
        431,
        "{\"listdomainsresponse\":{\"errorcode\":431,\"cserrorcode\":4350,\"errortext\":\"x\"}}", 0,
        NULL};
    server_set(srv, 1, &code_only);
    CHECK_INT(cloudstack_get_domain(cs, DOM_ID, &r, &obj, err, sizeof err), CSP_OK);
    CHECK(obj == NULL && r.cserrorcode == 4350);
    cs_reply_free(&r);
    const struct canned other_431 = {
        431, "{\"listdomainsresponse\":{\"errorcode\":431,\"errortext\":\"bad page size\"}}", 0,
        NULL};
    server_set(srv, 1, &other_431);
    CHECK_INT(cloudstack_get_domain(cs, DOM_ID, &r, &obj, err, sizeof err), CSP_PERMANENT);
    CHECK(obj == NULL && strstr(err, "bad page size"));
    cs_reply_free(&r);

    /* The account whose name and domain match exactly, not the first one listed. */
    const struct canned accs = {
        200,
        "{\"listaccountsresponse\":{\"count\":3,\"account\":[{\"id\":\"a0\",\"name\":\"acme\","
        "\"domainid\":\"00000000-0000-4000-8000-000000000000\"},{\"id\":\"a1\",\"name\":\"acme2\","
        "\"domainid\":\"" DOM_ID "\"},{\"id\":\"a2\",\"name\":\"acme\",\"domainid\":\"" DOM_ID
        "\"}]}}",
        0, NULL};
    server_set(srv, 1, &accs);
    before = server_nreq(srv);
    CHECK_INT(cloudstack_get_account(cs, "acme", DOM_ID, &r, &obj, err, sizeof err), CSP_OK);
    CHECK(obj != NULL);
    CHECK_STR(json_get_str(obj, "id"), "a2");
    check_signed_request(srv->reqs[before], "listAccounts");
    CHECK(strstr(srv->reqs[before], "name=acme&domainid=" DOM_ID "&listall=true") != NULL);
    cs_reply_free(&r);
    CHECK_INT(cloudstack_get_account(cs, "ACME", DOM_ID, &r, &obj, err, sizeof err), CSP_OK);
    CHECK(obj == NULL);
    cs_reply_free(&r);

    const struct canned dom = {200,
                               "{\"listdomainsresponse\":{\"count\":1,\"domain\":[{\"id\":\"" DOM_ID
                               "\",\"name\":\"customers\"}]}}",
                               0, NULL};
    server_set(srv, 1, &dom);
    CHECK_INT(cloudstack_get_domain(cs, DOM_ID, &r, &obj, err, sizeof err), CSP_OK);
    CHECK(obj != NULL);
    CHECK_STR(json_get_str(obj, "name"), "customers");
    cs_reply_free(&r);

    const struct canned prj = {
        200,
        "{\"listprojectsresponse\":{\"count\":1,\"project\":[{\"id\":\"p1\",\"name\":\"x\"}]}}", 0,
        NULL};
    server_set(srv, 1, &prj);
    CHECK_INT(cloudstack_get_project(cs, "P1", &r, &obj, err, sizeof err), CSP_OK);
    CHECK(obj != NULL);
    cs_reply_free(&r);
    const struct canned bad_list = {200, "{\"listprojectsresponse\":{\"project\":{}}}", 0, NULL};
    server_set(srv, 1, &bad_list);
    CHECK_INT(cloudstack_get_project(cs, "p1", &r, &obj, err, sizeof err), CSP_TRANSIENT);
    cs_reply_free(&r);

    /* Caller mistakes are permanent and send nothing. */
    before = server_nreq(srv);
    CHECK_INT(cloudstack_get_vm(cs, "", &r, &obj, err, sizeof err), CSP_PERMANENT);
    CHECK_INT(cloudstack_get_domain(cs, NULL, &r, &obj, err, sizeof err), CSP_PERMANENT);
    const struct cs_param reserved[] = {{"Signature", "x"}};
    CHECK_INT(cloudstack_call(cs, "listZones", reserved, 1, &r, err, sizeof err), CSP_PERMANENT);
    const struct cs_param twice[] = {{"id", "1"}, {"id", "2"}};
    CHECK_INT(cloudstack_call(cs, "listZones", twice, 2, &r, err, sizeof err), CSP_PERMANENT);
    const struct cs_param badval[] = {{"name", "\xff"}};
    CHECK_INT(cloudstack_call(cs, "listZones", badval, 1, &r, err, sizeof err), CSP_PERMANENT);
    CHECK_INT(cloudstack_call(cs, "list&Zones", NULL, 0, &r, err, sizeof err), CSP_PERMANENT);
    CHECK_INT(server_nreq(srv) - before, 0);
}

static void test_classification(struct server *srv, struct cloudstack *cs)
{
    char err[512], want[160];
    struct cs_reply r;

    /* Raw parameters keep their case and reach the server encoded; the reply is unwrapped. */
    const struct canned zones = {200, "{\"listzonesresponse\":{\"count\":0}}", 0, NULL};
    server_set(srv, 1, &zones);
    int before = server_nreq(srv);
    const struct cs_param kw[] = {{"keyword", "a+b c~*/\xc3\xa9"}, {"Name", "X"}};
    CHECK_INT(cloudstack_call(cs, "listZones", kw, 2, &r, err, sizeof err), CSP_OK);
    CHECK(r.result != NULL && json_get(r.result, "count") != NULL);
    CHECK(strstr(srv->reqs[before], "keyword=a%2Bb%20c%7E*%2F%C3%A9&Name=X&") != NULL);
    check_signed_request(srv->reqs[before], "listZones");
    cs_reply_free(&r);

    /* A 431 that is not about a missing entity, and a 432 with errorresponse: permanent. */
    CHECK_INT(call_with(srv, cs,
                        (struct canned){431,
                                        "{\"listvirtualmachinesresponse\":{\"uuidList\":[],"
                                        "\"errorcode\":431,\"cserrorcode\":4350,\"errortext\":"
                                        "\"Page size can't exceed max\\nallowed\"}}",
                                        0, NULL},
                        &r, err, sizeof err),
              CSP_PERMANENT);
    CHECK_INT(r.errorcode, 431);
    CHECK_INT(r.cserrorcode, 4350);
    CHECK(strstr(err, "HTTP 431") && strstr(err, "Page size can't exceed max allowed"));
    check_no_secrets(err);
    cs_reply_free(&r);
    CHECK_INT(call_with(srv, cs,
                        (struct canned){432,
                                        "{\"errorresponse\":{\"uuidList\":[],\"errorcode\":432,"
                                        "\"cserrorcode\":9999,\"errortext\":\"not allowed\"}}",
                                        0, NULL},
                        &r, err, sizeof err),
              CSP_PERMANENT);
    CHECK_INT(r.errorcode, 432);
    CHECK_INT(r.cserrorcode, 9999);
    cs_reply_free(&r);

    /* A server that echoes our key does not get it into err. */
    CHECK_INT(call_with(srv, cs,
                        (struct canned){430,
                                        "{\"errorresponse\":{\"errorcode\":430,\"errortext\":"
                                        "\"bad key " APIKEY "\"}}",
                                        0, NULL},
                        &r, err, sizeof err),
              CSP_PERMANENT);
    check_no_secrets(err);
    CHECK(strstr(err, "withheld") != NULL);
    cs_reply_free(&r);

    /* Retryable answers. */
    CHECK_INT(call_with(srv, cs, (struct canned){401, CRED_BODY, 0, NULL}, &r, err, sizeof err),
              CSP_TRANSIENT);
    CHECK_INT(r.http_status, 401);
    CHECK_INT(r.errorcode, 401);
    CHECK(strstr(err, "HTTP 401") && strstr(err, "CS_SECRET_KEY"));
    check_no_secrets(err);
    cs_reply_free(&r);
    CHECK_INT(call_with(srv, cs,
                        (struct canned){429, "{\"errorresponse\":{\"errorcode\":429}}", 0, NULL},
                        &r, err, sizeof err),
              CSP_TRANSIENT);
    cs_reply_free(&r);
    CHECK_INT(
        call_with(srv, cs, (struct canned){503, "<html>down</html>", 0, NULL}, &r, err, sizeof err),
        CSP_TRANSIENT);
    CHECK_INT(r.http_status, 503);
    CHECK(r.doc == NULL);
    snprintf(want, sizeof want, "CloudStack listVirtualMachines: HTTP 503 from 127.0.0.1:%d",
             srv->port);
    CHECK_STR(err, want);
    cs_reply_free(&r);
    CHECK_INT(
        call_with(srv, cs, (struct canned){404, "<html>nope</html>", 0, NULL}, &r, err, sizeof err),
        CSP_TRANSIENT);
    cs_reply_free(&r);
    CHECK_INT(call_with(srv, cs, (struct canned){200, "<html>login</html>", 0, NULL}, &r, err,
                        sizeof err),
              CSP_TRANSIENT);
    CHECK(r.result == NULL && strstr(err, "listvirtualmachinesresponse"));
    check_no_secrets(err);
    cs_reply_free(&r);
    CHECK_INT(call_with(srv, cs, (struct canned){200, "{\"otherresponse\":{}}", 0, NULL}, &r, err,
                        sizeof err),
              CSP_TRANSIENT);
    cs_reply_free(&r);
    CHECK_INT(call_with(srv, cs,
                        (struct canned){0, NULL, 0,
                                        "HTTP/1.1 200 OK\r\nContent-Length: 300000000\r\n\r\n{}"},
                        &r, err, sizeof err),
              CSP_TRANSIENT);
    CHECK(strstr(err, "exceeds") != NULL);
    cs_reply_free(&r);
}

static void test_timeouts(struct server *srv)
{
    char endpoint[128], err[512];
    struct cs_reply r;
    struct cloudstack *cs;
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d/client/api", srv->port);
    struct settings s = test_settings(endpoint, 300);
    CHECK_INT(cloudstack_new(&s, &cs, err, sizeof err), 0);

    /* The server sleeps longer than CS_TIMEOUT. */
    int before = server_nreq(srv);
    long long t0 = mono_ms();
    CHECK_INT(
        call_with(srv, cs, (struct canned){200, VM_BODY(VM_ID), 700, NULL}, &r, err, sizeof err),
        CSP_TRANSIENT);
    long long took = mono_ms() - t0;
    CHECK(took >= 250 && took < 650);
    CHECK_INT(r.http_status, 0);
    CHECK(strstr(err, "CS_TIMEOUT") != NULL);
    cs_reply_free(&r);
    cloudstack_free(cs);
    server_wait_idle(srv, before + 1);

    /* A deadline nearer than CS_TIMEOUT wins; a passed one sends nothing. */
    s.cs_timeout_ms = 5000;
    CHECK_INT(cloudstack_new(&s, &cs, err, sizeof err), 0);
    cloudstack_set_deadline(cs, mono_ms() + 200);
    before = server_nreq(srv);
    t0 = mono_ms();
    CHECK_INT(
        call_with(srv, cs, (struct canned){200, VM_BODY(VM_ID), 700, NULL}, &r, err, sizeof err),
        CSP_TRANSIENT);
    took = mono_ms() - t0;
    CHECK(took >= 150 && took < 650);
    CHECK(strstr(err, "deadline") != NULL);
    cs_reply_free(&r);
    server_wait_idle(srv, before + 1);
    cloudstack_set_deadline(cs, mono_ms() - 1);
    before = server_nreq(srv);
    CHECK_INT(
        call_with(srv, cs, (struct canned){200, VM_BODY(VM_ID), 0, NULL}, &r, err, sizeof err),
        CSP_TRANSIENT);
    CHECK_INT(server_nreq(srv) - before, 0);
    CHECK(strstr(err, "deadline") != NULL);
    cs_reply_free(&r);
    cloudstack_set_deadline(cs, 0);
    CHECK_INT(
        call_with(srv, cs, (struct canned){200, VM_BODY(VM_ID), 0, NULL}, &r, err, sizeof err),
        CSP_OK);
    cs_reply_free(&r);
    cloudstack_free(cs);

    /* Nothing listens on a port just released. */
    int port, fd = listen_any(&port);
    close(fd);
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d/client/api", port);
    s = test_settings(endpoint, 2000);
    CHECK_INT(cloudstack_new(&s, &cs, err, sizeof err), 0);
    CHECK_INT(call_with(srv, cs, (struct canned){200, "{}", 0, NULL}, &r, err, sizeof err),
              CSP_TRANSIENT);
    CHECK_INT(r.http_status, 0);
    CHECK(strstr(err, "cannot talk to 127.0.0.1:") != NULL);
    check_no_secrets(err);
    cs_reply_free(&r);
    cloudstack_free(cs);
}

int main(void)
{
    /* The server under test is local; a proxy from the environment must not intercept it. */
    unsetenv("http_proxy");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    test_url_encode();
    test_vector_one();
    test_vector_two();
    test_sort_and_lowercase();
    test_expires();
    test_new_errors();

    struct server srv;
    server_start(&srv);
    char endpoint[128], err[256];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d/client/api", srv.port);
    struct settings s = test_settings(endpoint, 3000);
    struct cloudstack *cs = NULL;
    CHECK_INT(cloudstack_new(&s, &cs, err, sizeof err), 0);
    if (cs) {
        test_lookups(&srv, cs);
        test_classification(&srv, cs);
        cloudstack_free(cs);
    }
    test_timeouts(&srv);
    server_stop(&srv);
    return unit_done("test_cloudstack");
}
