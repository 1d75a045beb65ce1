/* pdns_api.c -- purges PowerDNS's caches for changed names over one kept-alive curl handle.
 * Must not: write zones or records, let the API key reach err or logs, or stall a batch for long.
 */
#include "pdns_api.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "http_client.h"
#include "logger.h"
#include "textbuf.h"

/* A purge only speeds up visibility: waiting longer than this for PowerDNS would hold up the
 * next batch's writes for less benefit than the cache expiry it saves. */
#define PURGE_CONNECT_TIMEOUT_MS 1000L
#define PURGE_REQUEST_TIMEOUT_MS 2000L
#define PURGE_BATCH_BUDGET_MS 5000LL
/* The answer is {"count": N, "result": "Flushed cache."}; anything larger is not PowerDNS. */
#define PURGE_MAX_ANSWER 4096

struct pdns_api {
    CURL *curl;
    char *flush_url; /* <PDNS_API_URL>/api/v1/servers/<id>/cache/flush?domain= */
    char *host;      /* host[:port] without userinfo: the only part of the URL messages show */
    char *server_id;
    struct curl_slist *headers; /* holds "X-API-Key: <key>": wiped before it is freed */
    textbuf url;
    size_t answer_len;
    char curl_err[CURL_ERROR_SIZE];
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The answer is read only to bound it: its status code says all the caller needs. */
static size_t on_answer(char *data, size_t size, size_t nmemb, void *ud)
{
    (void)data;
    struct pdns_api *api = ud;
    size_t n = size * nmemb;
    api->answer_len += n;
    return api->answer_len > PURGE_MAX_ANSWER ? 0 : n;
}

void pdns_api_free(struct pdns_api *api)
{
    if (!api)
        return;
    if (api->curl)
        curl_easy_cleanup(api->curl);
    for (struct curl_slist *h = api->headers; h; h = h->next)
        OPENSSL_cleanse(h->data, strlen(h->data));
    curl_slist_free_all(api->headers);
    free(api->flush_url);
    free(api->host);
    free(api->server_id);
    textbuf_free(&api->url);
    free(api);
}

static int build_flush_url(struct pdns_api *api, const char *base, const char *server_id)
{
    size_t len = strlen(base);
    while (len > 0 && base[len - 1] == '/')
        len--;
    char *id = curl_easy_escape(api->curl, server_id, 0);
    if (!id)
        return -1;
    textbuf b = TEXTBUF_INIT;
    int rc = textbuf_printf(&b, "%.*s/api/v1/servers/%s/cache/flush?domain=", (int)len, base, id);
    curl_free(id);
    if (rc != 0 || !(api->flush_url = strdup(textbuf_str(&b)))) {
        textbuf_free(&b);
        return -1;
    }
    textbuf_free(&b);
    return 0;
}

csp_status pdns_api_new(const struct settings *s, struct pdns_api **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!s->pdns_api_url || !*s->pdns_api_url)
        return CSP_OK;
    if (strncasecmp(s->pdns_api_url, "http://", 7) != 0 &&
        strncasecmp(s->pdns_api_url, "https://", 8) != 0) {
        set_err(err, errlen, "PDNS_API_URL: must start with http:// or https://");
        return CSP_PERMANENT;
    }
    if (strpbrk(s->pdns_api_url, "?# \t\r\n")) {
        set_err(err, errlen,
                "PDNS_API_URL: must be a plain URL without query, fragment or spaces "
                "(e.g. http://127.0.0.1:8081)");
        return CSP_PERMANENT;
    }
    if (!s->pdns_api_key || !*s->pdns_api_key || strpbrk(s->pdns_api_key, "\r\n")) {
        set_err(err, errlen,
                "PDNS_API_KEY: not set or not one line (PowerDNS's api-key; required with "
                "PDNS_API_URL)");
        return CSP_PERMANENT;
    }
    const char *server_id =
        s->pdns_server_id && *s->pdns_server_id ? s->pdns_server_id : "localhost";

    struct pdns_api *api = calloc(1, sizeof *api);
    if (!api)
        goto oom;
    int made = http_client_easy(on_answer, api, api->curl_err, &api->curl);
    if (made == -1) {
        set_err(err, errlen, "PowerDNS API client: libcurl failed to initialise");
        pdns_api_free(api);
        return CSP_PERMANENT;
    }
    api->host = http_client_url_host(s->pdns_api_url);
    api->server_id = strdup(server_id);
    if (!api->host || !api->server_id || build_flush_url(api, s->pdns_api_url, server_id) != 0)
        goto oom;
    textbuf header = TEXTBUF_INIT;
    if (textbuf_printf(&header, "X-API-Key: %s", s->pdns_api_key) != 0) {
        textbuf_free(&header);
        goto oom;
    }
    api->headers = curl_slist_append(NULL, textbuf_str(&header));
    OPENSSL_cleanse(header.buf, header.len);
    textbuf_free(&header);
    if (!api->headers)
        goto oom;

    CURL *c = api->curl;
    CURLcode rc = made == 0 ? CURLE_OK : CURLE_UNKNOWN_OPTION;
    rc |= curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    rc |= curl_easy_setopt(c, CURLOPT_HTTPHEADER, api->headers);
    rc |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, PURGE_CONNECT_TIMEOUT_MS);
    if (rc != CURLE_OK) {
        set_err(err, errlen, "PowerDNS API client: libcurl lacks a required option (http/https)");
        pdns_api_free(api);
        return CSP_PERMANENT;
    }
    *out = api;
    return CSP_OK;
oom:
    pdns_api_free(api);
    set_err(err, errlen, "PowerDNS API client: out of memory");
    return CSP_PERMANENT;
}

/* PERMANENT outranks TRANSIENT: it needs the operator, a transient one heals by itself. The
 * batch reports its worst failure, and that failure's message. */
static void note_failure(csp_status *worst, csp_status st, const char *msg, char *err,
                         size_t errlen)
{
    if (*worst == CSP_PERMANENT || (*worst == CSP_TRANSIENT && st == CSP_TRANSIENT))
        return;
    *worst = st;
    set_err(err, errlen, "%s", msg);
}

/* An answer that says the settings are wrong ends the batch: every other name would get it too. */
static csp_status classify_http(struct pdns_api *api, long code, const char *name, int *stop,
                                char *err, size_t errlen)
{
    *stop = 0;
    if (code >= 200 && code < 300)
        return CSP_OK;
    if (code >= 300 && code < 400) {
        *stop = 1;
        set_err(err, errlen,
                "PowerDNS API at %s: HTTP %ld (a redirect): PDNS_API_URL must be the webserver's "
                "base URL, e.g. http://127.0.0.1:8081",
                api->host, code);
        return CSP_PERMANENT;
    }
    if (code == 401) {
        *stop = 1;
        set_err(err, errlen,
                "PowerDNS API at %s: HTTP 401: PDNS_API_KEY is not the api-key of that "
                "PowerDNS",
                api->host);
        return CSP_PERMANENT;
    }
    if (code == 403) {
        *stop = 1;
        set_err(err, errlen,
                "PowerDNS API at %s: HTTP 403: add this host to PowerDNS's "
                "webserver-allow-from (PDNS_API_URL)",
                api->host);
        return CSP_PERMANENT;
    }
    if (code == 404) {
        *stop = 1;
        set_err(err, errlen,
                "PowerDNS API at %s: HTTP 404 for server \"%.64s\": check PDNS_SERVER_ID (usually "
                "localhost) and that PDNS_API_URL is the webserver's base URL with api=yes",
                api->host, api->server_id);
        return CSP_PERMANENT;
    }
    if (code >= 500 || code == 408 || code == 429) {
        set_err(err, errlen,
                "PowerDNS API at %s: HTTP %ld purging %.255s (PowerDNS is in trouble; the "
                "name answers once its cache entries expire)",
                api->host, code, name);
        return CSP_TRANSIENT;
    }
    set_err(err, errlen, "PowerDNS API at %s: HTTP %ld purging %.255s (a name it refuses)",
            api->host, code, name);
    return CSP_PERMANENT;
}

static csp_status transport_error(struct pdns_api *api, CURLcode rc, long timeout_ms, char *err,
                                  size_t errlen)
{
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        set_err(err, errlen, "PowerDNS API at %s: no answer within %ld ms (check PDNS_API_URL)",
                api->host, timeout_ms);
        return CSP_TRANSIENT;
    }
    if (rc == CURLE_WRITE_ERROR) {
        set_err(err, errlen,
                "PowerDNS API at %s: answer larger than %d bytes: is PDNS_API_URL a PowerDNS "
                "webserver?",
                api->host, PURGE_MAX_ANSWER);
        return CSP_PERMANENT;
    }
    /* libcurl's error buffer names host and port; the key travels in a header it never shows. */
    set_err(err, errlen,
            "PowerDNS API at %s: %s%s%s%s (check PDNS_API_URL and that PowerDNS "
            "runs with webserver=yes, api=yes)",
            api->host, curl_easy_strerror(rc), *api->curl_err ? " (" : "", api->curl_err,
            *api->curl_err ? ")" : "");
    return CSP_TRANSIENT;
}

/* One PUT; *stop says the rest of the batch would fail the same way. */
static csp_status purge_one(struct pdns_api *api, const char *name, long timeout_ms, int *stop,
                            char *err, size_t errlen)
{
    *stop = 1;
    char *escaped = curl_easy_escape(api->curl, name, 0);
    textbuf_reset(&api->url);
    if (!escaped || textbuf_printf(&api->url, "%s%s", api->flush_url, escaped) != 0) {
        curl_free(escaped);
        set_err(err, errlen, "PowerDNS API: out of memory building a purge request");
        return CSP_TRANSIENT;
    }
    curl_free(escaped);
    api->answer_len = 0;
    api->curl_err[0] = '\0';
    CURLcode rc = curl_easy_setopt(api->curl, CURLOPT_URL, textbuf_str(&api->url));
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(api->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (rc == CURLE_OK)
        rc = curl_easy_perform(api->curl);
    if (rc != CURLE_OK)
        return transport_error(api, rc, timeout_ms, err, errlen);
    long code = 0;
    curl_easy_getinfo(api->curl, CURLINFO_RESPONSE_CODE, &code);
    return classify_http(api, code, name, stop, err, errlen);
}

csp_status pdns_api_purge(struct pdns_api *api, const char *const *names, size_t n, size_t *purged,
                          char *err, size_t errlen)
{
    *purged = 0;
    if (err && errlen)
        err[0] = '\0';
    long long start = clock_ms();
    csp_status worst = CSP_OK;
    char one_err[512];
    for (size_t i = 0; i < n; i++) {
        long long left = PURGE_BATCH_BUDGET_MS - (clock_ms() - start);
        if (left <= 0) {
            set_err(one_err, sizeof one_err,
                    "PowerDNS API at %s: %zu of %zu purges not sent: the batch's %lld ms were "
                    "spent; those names answer once their cache entries expire",
                    api->host, n - i, n, PURGE_BATCH_BUDGET_MS);
            note_failure(&worst, CSP_TRANSIENT, one_err, err, errlen);
            break;
        }
        long timeout_ms = left < PURGE_REQUEST_TIMEOUT_MS ? (long)left : PURGE_REQUEST_TIMEOUT_MS;
        int stop = 0;
        csp_status st = purge_one(api, names[i], timeout_ms, &stop, one_err, sizeof one_err);
        if (st == CSP_OK) {
            (*purged)++;
            continue;
        }
        note_failure(&worst, st, one_err, err, errlen);
        if (stop)
            break;
    }
    log_msg(LOG_LVL_DEBUG, "pdns_api", "purged=%zu of=%zu outcome=%s ms=%lld", *purged, n,
            worst == CSP_OK          ? "ok"
            : worst == CSP_PERMANENT ? "permanent"
                                     : "transient",
            clock_ms() - start);
    return worst;
}
