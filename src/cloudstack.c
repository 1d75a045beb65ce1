/* cloudstack.c -- signed CloudStack API calls over one kept-alive curl handle, classified answers.
 * Must not: decide names, write DNS, or let a key, a signature or the query reach err or logs. */
#define _GNU_SOURCE /* strcasestr */
#include "cloudstack.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "http_client.h"
#include "logger.h"
#include "strmap.h"

/* A list answer for a full resync is a few MB; anything near this is hostile or broken. */
#define CS_MAX_RESPONSE ((size_t)256 << 20)
/* CloudStack rejects expired requests; ten minutes absorbs modest clock skew. */
#define CS_EXPIRES_AHEAD_S 600
#define CS_MAX_COMMAND 64
#define CS_MAX_ERRTEXT 300
#define CS_SIG_LEN 29

/* ======================================== signing ======================================== */

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '*' || c == '_';
}

/* Java decodes the value as UTF-8 before re-encoding it; invalid bytes would become U+FFFD there
 * and the signature could never match, so they are refused here instead. */
static int valid_utf8(const unsigned char *s)
{
    while (*s) {
        unsigned char c = *s;
        int n;
        unsigned cp;
        if (c < 0x80) {
            s++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3, cp = c & 0x07;
        } else {
            return 0;
        }
        for (int i = 1; i <= n; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        s += n + 1;
    }
    return 1;
}

int cloudstack_url_encode(textbuf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!s || !valid_utf8((const unsigned char *)s))
        return -1;
    size_t start = out->len;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[3] = {'%', hex[*p >> 4], hex[*p & 0x0F]};
        int rc;
        if (is_unreserved(*p))
            rc = textbuf_putc(out, (char)*p);
        else if (*p == ' ')
            rc = textbuf_append(out, "%20", 3);
        else
            rc = textbuf_append(out, esc, 3);
        if (rc != 0) {
            out->len = start;
            if (out->buf)
                out->buf[start] = '\0';
            return -1;
        }
    }
    return 0;
}

static int cmp_param_name(const void *a, const void *b)
{
    const struct cs_param *pa = *(const struct cs_param *const *)a;
    const struct cs_param *pb = *(const struct cs_param *const *)b;
    return strcmp(pa->name, pb->name);
}

int cloudstack_canonical_query(const struct cs_param *params, size_t n, textbuf *out)
{
    const struct cs_param **sorted = calloc(n ? n : 1, sizeof *sorted);
    if (!sorted)
        return -1;
    size_t start = out->len;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (!params[i].name || !params[i].value) {
            rc = -1;
            goto out;
        }
        sorted[i] = &params[i];
    }
    qsort(sorted, n, sizeof *sorted, cmp_param_name);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if ((i > 0 && textbuf_putc(out, '&') != 0) || textbuf_puts(out, sorted[i]->name) != 0 ||
            textbuf_putc(out, '=') != 0 || cloudstack_url_encode(out, sorted[i]->value) != 0)
            rc = -1;
    }
    /* Java's toLowerCase on an ASCII string; names are ASCII and values are encoded by now. */
    for (size_t i = start; rc == 0 && i < out->len; i++) {
        if (out->buf[i] >= 'A' && out->buf[i] <= 'Z')
            out->buf[i] = (char)(out->buf[i] - 'A' + 'a');
    }
out:
    if (rc != 0 && out->len > start) {
        out->len = start;
        out->buf[start] = '\0';
    }
    free(sorted);
    return rc;
}

int cloudstack_sign(const char *secret, const struct cs_param *params, size_t n, char *out,
                    size_t outlen)
{
    if (!secret || !out || outlen < CS_SIG_LEN || strlen(secret) > 4096)
        return -1;
    textbuf q = TEXTBUF_INIT;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int rc = -1;
    if (cloudstack_canonical_query(params, n, &q) != 0)
        goto out;
    if (!HMAC(EVP_sha1(), secret, (int)strlen(secret), (const unsigned char *)textbuf_str(&q),
              q.len, md, &mdlen) ||
        mdlen != 20)
        goto out;
    EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
    rc = 0;
out:
    if (q.buf)
        OPENSSL_cleanse(q.buf, q.len);
    textbuf_free(&q);
    return rc;
}

void cloudstack_expires(long seconds_ahead, char out[32])
{
    time_t t = time(NULL) + (time_t)seconds_ahead;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%S+0000", &tm) == 0)
        snprintf(out, 32, "1970-01-01T00:00:00+0000");
}

/* ======================================== transport ======================================= */

struct cloudstack {
    CURL *curl;
    char *endpoint;
    char *host; /* host[:port] without userinfo: the only part of the URL messages may show */
    char *api_key;
    char *secret;
    int timeout_ms;
    long long deadline_ms;
    textbuf body;
    int body_too_big;
    char curl_err[CURL_ERROR_SIZE];
    cloudstack_observer observer;
    void *observer_ud;
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

static void free_wiped(char *s)
{
    if (s)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

void cloudstack_free(struct cloudstack *cs)
{
    if (!cs)
        return;
    if (cs->curl)
        curl_easy_cleanup(cs->curl);
    free(cs->endpoint);
    free(cs->host);
    free_wiped(cs->api_key);
    free_wiped(cs->secret);
    textbuf_free(&cs->body);
    free(cs);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct cloudstack *cs = ud;
    size_t n = size * nmemb;
    if (n > CS_MAX_RESPONSE - cs->body.len) {
        cs->body_too_big = 1;
        return 0;
    }
    return textbuf_append(&cs->body, data, n) == 0 ? n : 0;
}

int cloudstack_new(const struct settings *s, struct cloudstack **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!s->cs_endpoint || !*s->cs_endpoint) {
        set_err(err, errlen, "CS_ENDPOINT: not set (expected http(s)://host:8080/client/api)");
        return -1;
    }
    if (strncasecmp(s->cs_endpoint, "http://", 7) != 0 &&
        strncasecmp(s->cs_endpoint, "https://", 8) != 0) {
        set_err(err, errlen, "CS_ENDPOINT: must start with http:// or https://");
        return -1;
    }
    if (strpbrk(s->cs_endpoint, "?# \t\r\n")) {
        set_err(err, errlen, "CS_ENDPOINT: must be a plain URL without query, fragment or spaces");
        return -1;
    }
    if (!s->cs_api_key || !*s->cs_api_key) {
        set_err(err, errlen, "CS_API_KEY: not set (the API key of a CloudStack user)");
        return -1;
    }
    if (!s->cs_secret_key || !*s->cs_secret_key || strlen(s->cs_secret_key) > 4096) {
        set_err(err, errlen, "CS_SECRET_KEY: not set or too long (the user's secret key)");
        return -1;
    }
    struct cloudstack *cs = calloc(1, sizeof *cs);
    if (!cs)
        goto oom;
    cs->timeout_ms = s->cs_timeout_ms > 0 ? s->cs_timeout_ms : 10000;
    cs->endpoint = strdup(s->cs_endpoint);
    cs->host = http_client_url_host(s->cs_endpoint);
    cs->api_key = strdup(s->cs_api_key);
    cs->secret = strdup(s->cs_secret_key);
    if (!cs->endpoint || !cs->host || !cs->api_key || !cs->secret)
        goto oom;
    int made = http_client_easy(on_body, cs, cs->curl_err, &cs->curl);
    if (made == -1) {
        set_err(err, errlen, "CloudStack client: libcurl failed to initialise");
        cloudstack_free(cs);
        return -1;
    }

    CURL *c = cs->curl;
    CURLcode rc = made == 0 ? CURLE_OK : CURLE_UNKNOWN_OPTION;
    rc |= curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    rc |= curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)CS_MAX_RESPONSE);
    rc |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, s->cs_verify_tls ? 1L : 0L);
    rc |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, s->cs_verify_tls ? 2L : 0L);
    if (s->cs_ca_file && *s->cs_ca_file)
        rc |= curl_easy_setopt(c, CURLOPT_CAINFO, s->cs_ca_file);
    if (rc != CURLE_OK) {
        set_err(err, errlen,
                "CloudStack client: libcurl lacks a required option (http/https, TLS)");
        cloudstack_free(cs);
        return -1;
    }
    *out = cs;
    return 0;
oom:
    cloudstack_free(cs);
    set_err(err, errlen, "CloudStack client: out of memory");
    return -1;
}

void cloudstack_set_deadline(struct cloudstack *cs, long long deadline_ms)
{
    cs->deadline_ms = deadline_ms;
}

void cs_reply_free(struct cs_reply *r)
{
    if (!r)
        return;
    json_doc_free(r->doc);
    memset(r, 0, sizeof *r);
}

static int valid_name(const char *s, int allow_punct)
{
    if (!s || !*s || strlen(s) > CS_MAX_COMMAND)
        return 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              (allow_punct && (c == '.' || c == '_' || c == '-' || c == '[' || c == ']'))))
            return 0;
    }
    return 1;
}

static int is_reserved(const char *name)
{
    static const char *const reserved[] = {"command",   "apikey",  "response",
                                           "signature", "expires", "signatureversion"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        if (strcasecmp(name, reserved[i]) == 0)
            return 1;
    }
    return 0;
}

/* The query string sent: parameters in caller order with their original case, then signature. */
static int build_url(struct cloudstack *cs, const struct cs_param *all, size_t n, const char *sig,
                     textbuf *url)
{
    if (textbuf_puts(url, cs->endpoint) != 0 || textbuf_putc(url, '?') != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (textbuf_puts(url, all[i].name) != 0 || textbuf_putc(url, '=') != 0 ||
            cloudstack_url_encode(url, all[i].value) != 0 || textbuf_putc(url, '&') != 0)
            return -1;
    }
    return (textbuf_puts(url, "signature=") != 0 || cloudstack_url_encode(url, sig) != 0) ? -1 : 0;
}

/* A server-supplied text, made one line and checked for our credentials before it goes in err. */
static void safe_text(struct cloudstack *cs, const char *in, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", in ? in : "");
    for (char *p = out; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7F)
            *p = ' ';
    }
    /* Keys too short to recognise are only caught through the parameter names. */
    if ((strlen(cs->api_key) >= 8 && strstr(out, cs->api_key)) ||
        (strlen(cs->secret) >= 8 && strstr(out, cs->secret)) || strcasestr(out, "signature=") ||
        strcasestr(out, "apikey="))
        snprintf(out, outlen, "details withheld: they contained request credentials");
}

/* CloudStack's error body: {"<command>response" or "errorresponse": {errorcode, errortext...}}. */
static const json_value *error_wrapper(const json_value *root, const char *wrapper)
{
    const json_value *w = json_get_ci(root, wrapper);
    if (!w || w->type != JSON_OBJECT)
        w = json_get(root, "errorresponse");
    if (!w || w->type != JSON_OBJECT || (!json_get(w, "errorcode") && !json_get(w, "errortext")))
        return NULL;
    return w;
}

static int json_int(const json_value *obj, const char *key)
{
    const json_value *v = json_get(obj, key);
    if (v && v->type == JSON_INT && v->u.i >= 0 && v->u.i < 100000)
        return (int)v->u.i;
    return 0;
}

static void wrapper_key(const char *command, char out[CS_MAX_COMMAND + 16])
{
    size_t i = 0;
    for (; command[i] && i < CS_MAX_COMMAND; i++)
        out[i] = (command[i] >= 'A' && command[i] <= 'Z') ? (char)(command[i] + 32) : command[i];
    memcpy(out + i, "response", sizeof "response");
}

/* Classifies a completed HTTP exchange whose body is in cs->body. */
static csp_status classify(struct cloudstack *cs, const char *command, struct cs_reply *r,
                           char *err, size_t errlen)
{
    char perr[128], wrapper[CS_MAX_COMMAND + 16];
    wrapper_key(command, wrapper);
    if (cs->body.len > 0 && json_parse(cs->body.buf, cs->body.len, &r->doc, perr, sizeof perr))
        r->doc = NULL;
    const json_value *root = r->doc ? json_root(r->doc) : NULL;
    int status = r->http_status;

    if (status == 200) {
        const json_value *res = root ? json_get_ci(root, wrapper) : NULL;
        if (res && res->type == JSON_OBJECT) {
            r->result = res;
            return CSP_OK;
        }
        set_err(err, errlen,
                "CloudStack %s: HTTP 200 from %s without a \"%s\" JSON object (check that "
                "CS_ENDPOINT is the /client/api URL)",
                command, cs->host, wrapper);
        return CSP_TRANSIENT;
    }

    const json_value *ew = root ? error_wrapper(root, wrapper) : NULL;
    char text[CS_MAX_ERRTEXT] = "";
    if (ew) {
        r->errorcode = json_int(ew, "errorcode");
        r->cserrorcode = json_int(ew, "cserrorcode");
        safe_text(cs, json_get_str(ew, "errortext"), text, sizeof text);
    }
    const char *hint = "";
    csp_status st = CSP_TRANSIENT;
    if (status == 401)
        hint = " (check CS_API_KEY, CS_SECRET_KEY, that the user is enabled, and the clock)";
    else if (status == 429)
        hint = " (API rate limit reached)";
    else if (status >= 400 && status < 500 && ew)
        st = CSP_PERMANENT;
    else if (status >= 300 && status < 400)
        hint = " (redirects are not followed: set CS_ENDPOINT to the final URL)";
    else if (status < 500 && !ew)
        hint = " (not a CloudStack API answer: check CS_ENDPOINT)";
    set_err(err, errlen, "CloudStack %s: HTTP %d from %s%s%s%s", command, status, cs->host,
            *text ? ": " : "", text, hint);
    return st;
}

static csp_status transport_error(struct cloudstack *cs, const char *command, CURLcode rc,
                                  long timeout_ms, int by_deadline, char *err, size_t errlen)
{
    char detail[CURL_ERROR_SIZE];
    if (cs->body_too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        set_err(err, errlen, "CloudStack %s: answer from %s exceeds %zu MB", command, cs->host,
                CS_MAX_RESPONSE >> 20);
        return CSP_TRANSIENT;
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        set_err(err, errlen, "CloudStack %s: no answer from %s within %ld ms (%s)", command,
                cs->host, timeout_ms, by_deadline ? "the event's deadline" : "CS_TIMEOUT");
        return CSP_TRANSIENT;
    }
    /* libcurl's error buffer names host and port, never the query; checked all the same. */
    safe_text(cs, strchr(cs->curl_err, '?') ? "" : cs->curl_err, detail, sizeof detail);
    const char *hint = "";
    if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
        rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_SSL_CERTPROBLEM)
        hint = " (check CS_CA_FILE, or CS_VERIFY_TLS=false for a test setup)";
    set_err(err, errlen, "CloudStack %s: cannot talk to %s: %s%s%s%s%s", command, cs->host,
            curl_easy_strerror(rc), *detail ? " (" : "", detail, *detail ? ")" : "", hint);
    return CSP_TRANSIENT;
}

/* Caller mistakes (or a policy's) that no retry can fix: checked before anything is sent. */
static int check_params(const char *command, const struct cs_param *params, size_t n, char *err,
                        size_t errlen)
{
    if (!valid_name(command, 0)) {
        set_err(err, errlen, "CloudStack: invalid command name (letters and digits only)");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = params[i].name;
        if (!valid_name(name, 1) || is_reserved(name)) {
            set_err(err, errlen, "CloudStack %s: parameter name \"%.64s\" is invalid or reserved",
                    command, name ? name : "(null)");
            return -1;
        }
        if (!params[i].value || !valid_utf8((const unsigned char *)params[i].value)) {
            set_err(err, errlen, "CloudStack %s: parameter %s has no value or is not UTF-8",
                    command, name);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(params[j].name, name) == 0) {
                set_err(err, errlen, "CloudStack %s: parameter %s given twice", command, name);
                return -1;
            }
        }
    }
    return 0;
}

void cloudstack_set_observer(struct cloudstack *cs, cloudstack_observer fn, void *ud)
{
    cs->observer = fn;
    cs->observer_ud = ud;
}

csp_status cloudstack_call(struct cloudstack *cs, const char *command,
                           const struct cs_param *params, size_t n, struct cs_reply *r, char *err,
                           size_t errlen)
{
    memset(r, 0, sizeof *r);
    if (err && errlen)
        err[0] = '\0';
    if (check_params(command, params, n, err, errlen) != 0)
        return CSP_PERMANENT;

    long timeout_ms = cs->timeout_ms;
    long long start = clock_ms();
    int by_deadline = 0;
    if (cs->deadline_ms > 0) {
        long long left = cs->deadline_ms - start;
        if (left <= 0) {
            set_err(err, errlen, "CloudStack %s: the event's deadline passed before the call",
                    command);
            return CSP_TRANSIENT;
        }
        if (left < timeout_ms) {
            timeout_ms = (long)left;
            by_deadline = 1;
        }
    }

    char expires[32], sig[CS_SIG_LEN];
    cloudstack_expires(CS_EXPIRES_AHEAD_S, expires);
    struct cs_param *all = calloc(n + 5, sizeof *all);
    textbuf url = TEXTBUF_INIT;
    csp_status st = CSP_TRANSIENT;
    if (!all) {
        set_err(err, errlen, "CloudStack %s: out of memory", command);
        return CSP_TRANSIENT;
    }
    all[0] = (struct cs_param){"command", command};
    if (n)
        memcpy(all + 1, params, n * sizeof *params);
    all[n + 1] = (struct cs_param){"apikey", cs->api_key};
    all[n + 2] = (struct cs_param){"response", "json"};
    all[n + 3] = (struct cs_param){"signatureversion", "3"};
    all[n + 4] = (struct cs_param){"expires", expires};
    if (cloudstack_sign(cs->secret, all, n + 5, sig, sizeof sig) != 0 ||
        build_url(cs, all, n + 5, sig, &url) != 0) {
        set_err(err, errlen, "CloudStack %s: cannot build the request (out of memory)", command);
        goto out;
    }

    textbuf_reset(&cs->body);
    cs->body_too_big = 0;
    cs->curl_err[0] = '\0';
    CURLcode rc = curl_easy_setopt(cs->curl, CURLOPT_URL, textbuf_str(&url));
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(cs->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(cs->curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    if (rc == CURLE_OK)
        rc = curl_easy_perform(cs->curl);
    long code = 0;
    curl_easy_getinfo(cs->curl, CURLINFO_RESPONSE_CODE, &code);
    r->http_status = (int)code;
    if (rc != CURLE_OK)
        st = transport_error(cs, command, rc, timeout_ms, by_deadline, err, errlen);
    else
        st = classify(cs, command, r, err, errlen);
    log_msg(LOG_LVL_DEBUG, "cloudstack", "%s http=%d outcome=%s bytes=%zu ms=%lld", command,
            r->http_status,
            st == CSP_OK          ? "ok"
            : st == CSP_PERMANENT ? "permanent"
                                  : "transient",
            cs->body.len, clock_ms() - start);
    if (cs->observer)
        cs->observer(cs->observer_ud, command, r->http_status, (clock_ms() - start) / 1000.0);
out:
    /* The URL carries the API key and a signature that stays valid until expires. */
    if (url.buf)
        OPENSSL_cleanse(url.buf, url.len);
    textbuf_free(&url);
    textbuf_free(&cs->body);
    OPENSSL_cleanse(sig, sizeof sig);
    free(all);
    return st;
}

/* ======================================== lookups ========================================= */

/* CloudStack answers 431 for an id that never existed or belongs to a removed row (§7). */
static int reply_says_gone(const struct cs_reply *r, const char *wrapper)
{
    if (r->http_status != 431)
        return 0;
    if (r->cserrorcode == 4350)
        return 1;
    const json_value *ew = r->doc ? error_wrapper(json_root(r->doc), wrapper) : NULL;
    const char *text = ew ? json_get_str(ew, "errortext") : NULL;
    return text && (strcasestr(text, "does not exist") || strcasestr(text, "doesn't exist") ||
                    strcasestr(text, "unable to find"));
}

struct lookup {
    const char *command;
    const char *list_key;  /* the array inside the wrapper */
    const char *match_key; /* the member that must equal match */
    const char *match;
    int match_ci;          /* ids compare case-insensitively, names exactly */
    const char *domain_id; /* when set, an item's domainid must match it too */
};

/* One call, then the first list item that matches. CSP_OK with *found NULL when none does. */
static csp_status lookup_once(struct cloudstack *cs, const struct lookup *lk,
                              const struct cs_param *params, size_t n, struct cs_reply *r,
                              const json_value **found, char *err, size_t errlen)
{
    char wrapper[CS_MAX_COMMAND + 16];
    *found = NULL;
    csp_status st = cloudstack_call(cs, lk->command, params, n, r, err, errlen);
    wrapper_key(lk->command, wrapper);
    if (st != CSP_OK) {
        if (st == CSP_PERMANENT && reply_says_gone(r, wrapper)) {
            if (err && errlen)
                err[0] = '\0';
            return CSP_OK;
        }
        return st;
    }
    const json_value *list = json_get(r->result, lk->list_key);
    if (!list)
        return CSP_OK;
    if (list->type != JSON_ARRAY) {
        set_err(err, errlen, "CloudStack %s: \"%s\" in the answer from %s is not a list",
                lk->command, lk->list_key, cs->host);
        return CSP_TRANSIENT;
    }
    for (size_t i = 0; i < list->len; i++) {
        const json_value *item = json_at(list, i);
        const char *v = json_get_str(item, lk->match_key);
        const char *dom = lk->domain_id ? json_get_str(item, "domainid") : NULL;
        if (!v || (lk->match_ci ? strcasecmp(v, lk->match) : strcmp(v, lk->match)) != 0)
            continue;
        if (dom && strcasecmp(dom, lk->domain_id) != 0)
            continue;
        *found = item;
        return CSP_OK;
    }
    return CSP_OK;
}

/* CloudStack parses UUIDs lower-case only; an upper-case one would be read as "no such entity". */
static int lower_id(const char *id, char *out, size_t outlen, const char *what, char *err,
                    size_t errlen)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len >= outlen || !valid_utf8((const unsigned char *)id)) {
        set_err(err, errlen, "CloudStack: the %s id is missing or malformed", what);
        return -1;
    }
    for (size_t i = 0; i <= len; i++)
        out[i] = (id[i] >= 'A' && id[i] <= 'Z') ? (char)(id[i] + 32) : id[i];
    return 0;
}

csp_status cloudstack_get_vm(struct cloudstack *cs, const char *vm_id, struct cs_reply *r,
                             const json_value **vm, char *err, size_t errlen)
{
    char id[128];
    *vm = NULL;
    memset(r, 0, sizeof *r);
    if (lower_id(vm_id, id, sizeof id, "VM", err, errlen) != 0)
        return CSP_PERMANENT;
    const struct lookup lk = {"listVirtualMachines", "virtualmachine", "id", id, 1, NULL};
    struct cs_param p[3] = {{"id", id}, {"listall", "true"}, {"projectid", "-1"}};
    csp_status st = lookup_once(cs, &lk, p, 2, r, vm, err, errlen);
    if (st != CSP_OK || *vm || r->http_status == 431)
        return st;
    /* Project VMs are hidden unless projectid=-1 is given. */
    cs_reply_free(r);
    return lookup_once(cs, &lk, p, 3, r, vm, err, errlen);
}

csp_status cloudstack_get_account(struct cloudstack *cs, const char *name, const char *domain_id,
                                  struct cs_reply *r, const json_value **account, char *err,
                                  size_t errlen)
{
    char dom[128];
    *account = NULL;
    memset(r, 0, sizeof *r);
    if (!name || !*name) {
        set_err(err, errlen, "CloudStack: account name is missing");
        return CSP_PERMANENT;
    }
    if (lower_id(domain_id, dom, sizeof dom, "domain", err, errlen) != 0)
        return CSP_PERMANENT;
    const struct lookup lk = {"listAccounts", "account", "name", name, 0, dom};
    const struct cs_param p[] = {{"name", name}, {"domainid", dom}, {"listall", "true"}};
    return lookup_once(cs, &lk, p, 3, r, account, err, errlen);
}

/* listDomains / listProjects: the one item whose id is id. */
static csp_status get_by_id(struct cloudstack *cs, const char *command, const char *list_key,
                            const char *raw_id, struct cs_reply *r, const json_value **out,
                            char *err, size_t errlen)
{
    char id[128];
    *out = NULL;
    memset(r, 0, sizeof *r);
    if (lower_id(raw_id, id, sizeof id, list_key, err, errlen) != 0)
        return CSP_PERMANENT;
    const struct lookup lk = {command, list_key, "id", id, 1, NULL};
    const struct cs_param p[] = {{"id", id}, {"listall", "true"}};
    return lookup_once(cs, &lk, p, 2, r, out, err, errlen);
}

csp_status cloudstack_get_domain(struct cloudstack *cs, const char *domain_id, struct cs_reply *r,
                                 const json_value **domain, char *err, size_t errlen)
{
    return get_by_id(cs, "listDomains", "domain", domain_id, r, domain, err, errlen);
}

csp_status cloudstack_get_project(struct cloudstack *cs, const char *project_id, struct cs_reply *r,
                                  const json_value **project, char *err, size_t errlen)
{
    return get_by_id(cs, "listProjects", "project", project_id, r, project, err, errlen);
}

/* ==================================== listing every VM ==================================== */

#define LISTING_MAX_FAILS 3

struct cs_vm_listing {
    struct cloudstack *cs;
    unsigned page_size;
    int pass;           /* 1, 2, or 3 when done */
    unsigned page;      /* next page of the pass, 1-based */
    long long count;    /* the pass's announced count; -1 until its first page answered */
    size_t pass_items;  /* VMs in the pass's pages, duplicates across passes included */
    unsigned pass_page; /* pages of the pass that answered */
    unsigned fails_in_row;
    unsigned failed_pages;
    unsigned pages;
    long long announced;
    struct cs_reply reply; /* the current page */
    const json_value **fresh;
    size_t nfresh, cap;
    struct strmap *seen; /* lower-case ids handed out */
    int incomplete;
    char why[320];
};

__attribute__((format(printf, 2, 3))) static void listing_incomplete(struct cs_vm_listing *l,
                                                                     const char *fmt, ...)
{
    if (l->incomplete)
        return; /* the first reason is the one worth reporting */
    l->incomplete = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->why, sizeof l->why, fmt, ap);
    va_end(ap);
}

int cloudstack_listing_new(struct cloudstack *cs, unsigned page_size, struct cs_vm_listing **out,
                           char *err, size_t errlen)
{
    *out = NULL;
    if (page_size < 1 || page_size > 500) {
        set_err(err, errlen, "RESYNC_PAGE_SIZE: %u is not from 1 to 500", page_size);
        return -1;
    }
    struct cs_vm_listing *l = calloc(1, sizeof *l);
    if (!l || strmap_new(&l->seen) != 0) {
        free(l);
        set_err(err, errlen, "CloudStack listing: out of memory");
        return -1;
    }
    l->cs = cs;
    l->page_size = page_size;
    l->pass = 1;
    l->page = 1;
    l->count = -1;
    l->announced = -1;
    *out = l;
    return 0;
}

void cloudstack_listing_free(struct cs_vm_listing *l)
{
    if (!l)
        return;
    cs_reply_free(&l->reply);
    free(l->fresh);
    strmap_free(l->seen, NULL);
    free(l);
}

static void listing_next_pass(struct cs_vm_listing *l)
{
    l->pass++;
    l->page = 1;
    l->count = -1;
    l->pass_items = 0;
    l->pass_page = 0;
}

/* Ends the pass when its last page came back: a short page, or as many VMs as announced. */
static void listing_page_done(struct cs_vm_listing *l, size_t page_len)
{
    if (page_len < l->page_size || (l->count >= 0 && (long long)l->pass_items >= l->count)) {
        if (l->count >= 0 && (long long)l->pass_items != l->count)
            listing_incomplete(l,
                               "pass %d (%s) listed %zu VMs but CloudStack announced %lld: the "
                               "listing is incomplete",
                               l->pass, l->pass == 1 ? "listall=true" : "projectid=-1",
                               l->pass_items, l->count);
        listing_next_pass(l);
        return;
    }
    l->page++;
    /* A server that ignores paging would hand out page 1 forever. */
    if (l->count >= 0 && (long long)(l->page - 1) * l->page_size > l->count + l->page_size) {
        listing_incomplete(l,
                           "pass %d: page %u is past the announced count %lld (is paging "
                           "ignored?)",
                           l->pass, l->page, l->count);
        listing_next_pass(l);
    }
}

static csp_status listing_take(struct cs_vm_listing *l, char *err, size_t errlen)
{
    const json_value *res = l->reply.result;
    const json_value *cnt = json_get(res, "count");
    const json_value *list = json_get(res, "virtualmachine");
    size_t len = list && list->type == JSON_ARRAY ? list->len : 0;

    if ((list && list->type != JSON_ARRAY) || (cnt && cnt->type != JSON_INT) ||
        (!cnt && list && len > 0)) {
        set_err(err, errlen,
                "CloudStack listVirtualMachines: page %u of pass %d has no count or no list",
                l->page, l->pass);
        return CSP_TRANSIENT;
    }
    long long count = cnt ? cnt->u.i : 0;
    if (l->count < 0) {
        l->count = count;
        if (l->pass == 1)
            l->announced = count;
    } else if (count != l->count) {
        listing_incomplete(l,
                           "the VM count changed from %lld to %lld while paging (VMs were created "
                           "or removed): some VMs may have been skipped",
                           l->count, count);
    }
    if (len > l->cap) {
        const json_value **f = realloc(l->fresh, len * sizeof *f);
        if (!f) {
            set_err(err, errlen, "CloudStack listing: out of memory");
            return CSP_TRANSIENT;
        }
        l->fresh = f;
        l->cap = len;
    }
    for (size_t i = 0; i < len; i++) {
        const json_value *vm = json_at(list, i);
        char id[128];
        if (lower_id(json_get_str(vm, "id"), id, sizeof id, "VM", NULL, 0) != 0) {
            listing_incomplete(l, "page %u of pass %d holds a VM without a valid id", l->page,
                               l->pass);
            continue;
        }
        l->pass_items++;
        int added = strmap_add(l->seen, id, NULL);
        if (added < 0) {
            set_err(err, errlen, "CloudStack listing: out of memory");
            return CSP_TRANSIENT;
        }
        if (added)
            l->fresh[l->nfresh++] = vm;
    }
    l->pages++;
    l->pass_page++;
    listing_page_done(l, len);
    return CSP_OK;
}

csp_status cloudstack_listing_next(struct cs_vm_listing *l, const json_value *const **vms,
                                   size_t *n, int *done, char *err, size_t errlen)
{
    char page[16], size[16];
    cs_reply_free(&l->reply);
    l->nfresh = 0;
    *vms = NULL;
    *n = 0;
    *done = l->pass > 2;
    if (*done)
        return CSP_OK;

    snprintf(page, sizeof page, "%u", l->page);
    snprintf(size, sizeof size, "%u", l->page_size);
    const struct cs_param p[] = {
        {"listall", "true"}, {"page", page}, {"pagesize", size}, {"projectid", "-1"}};
    csp_status st = cloudstack_call(l->cs, "listVirtualMachines", p, l->pass == 2 ? 4 : 3,
                                    &l->reply, err, errlen);
    if (st == CSP_OK)
        st = listing_take(l, err, errlen);
    if (st == CSP_OK) {
        l->fails_in_row = 0;
        *vms = l->fresh;
        *n = l->nfresh;
        return CSP_OK;
    }
    listing_incomplete(l, "page %u of pass %d failed: %.200s", l->page, l->pass, err);
    l->failed_pages++;
    l->nfresh = 0;
    cs_reply_free(&l->reply);
    /* Go on past the failed page while the pass's length is known, so the VMs after it are
     * still reconciled; without a count there is no telling where the pass ends. */
    if (++l->fails_in_row >= LISTING_MAX_FAILS)
        l->pass = 3;
    else if (l->count >= 0 && (long long)l->page * l->page_size < l->count)
        l->page++;
    else
        listing_next_pass(l);
    return st;
}

int cloudstack_listing_complete(const struct cs_vm_listing *l, char *why, size_t whylen)
{
    if (l->pass <= 2) {
        set_err(why, whylen, "the listing has not ended");
        return 0;
    }
    if (l->incomplete) {
        set_err(why, whylen, "%s", l->why);
        return 0;
    }
    return 1;
}

int cloudstack_listing_has(const struct cs_vm_listing *l, const char *vm_id)
{
    char id[128];
    if (lower_id(vm_id, id, sizeof id, "VM", NULL, 0) != 0)
        return 0;
    return strmap_get(l->seen, id, NULL);
}

void cloudstack_listing_progress(const struct cs_vm_listing *l, struct cs_listing_progress *out)
{
    out->pass = l->pass;
    out->pages = l->pages;
    out->pass_page = l->pass_page;
    out->pass_pages = l->count >= 0 ? (unsigned)((l->count + l->page_size - 1) / l->page_size) : 0;
    out->vms = strmap_count(l->seen);
    out->announced = l->announced;
    out->failed_pages = l->failed_pages;
}
