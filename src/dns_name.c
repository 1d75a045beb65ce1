/* dns_name.c -- DNS names and IP addresses: checks, storage form, reverse names, zone matching.
 * Must not: do I/O, resolve anything, or write past the caller's buffers; it is a pure helper. */
#include "dns_name.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Room for a quoted excerpt of untrusted text in an error message. */
#define QUOTE_BUFSZ 96

const char *dns_quote(const char *s, size_t n, char *out, size_t outsz)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        size_t need = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? 1 : 4;
        if (o + need + 4 > outsz) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (need == 1) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

static const char *quote(const char *s, size_t n, char out[QUOTE_BUFSZ])
{
    return dns_quote(s, n, out, QUOTE_BUFSZ);
}

static int ascii_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Equality of two byte ranges ignoring ASCII case. */
static int same_ci(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return 0;
    return 1;
}

int dns_ip_version(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (!s)
        return 0;
    if (inet_pton(AF_INET, s, buf) == 1)
        return 4;
    if (inet_pton(AF_INET6, s, buf) == 1)
        return 6;
    return 0;
}

int dns_ip_canonical(const char *s, char *out, size_t outlen)
{
    unsigned char buf[sizeof(struct in6_addr)];
    char text[INET6_ADDRSTRLEN];
    int af, version = dns_ip_version(s);
    if (version == 4)
        af = AF_INET;
    else if (version == 6)
        af = AF_INET6;
    else
        return 0;
    if (inet_pton(af, s, buf) != 1 || !inet_ntop(af, buf, text, sizeof(text)))
        return 0;
    size_t n = strlen(text);
    if (!out || n >= outlen)
        return 0;
    memcpy(out, text, n + 1);
    return version;
}

int dns_ptr_name(const char *ip, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char a[sizeof(struct in6_addr)];
    char name[DNS_NAME_BUFSZ];
    int n;
    switch (dns_ip_version(ip)) {
    case 4:
        if (inet_pton(AF_INET, ip, a) != 1)
            return -1;
        n = snprintf(name, sizeof(name), "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]);
        break;
    case 6: {
        if (inet_pton(AF_INET6, ip, a) != 1)
            return -1;
        /* Least significant nibble first: byte 15's low nibble, its high nibble, byte 14... */
        char *o = name;
        for (int i = 15; i >= 0; i--) {
            *o++ = hex[a[i] & 15];
            *o++ = '.';
            *o++ = hex[a[i] >> 4];
            *o++ = '.';
        }
        memcpy(o, "ip6.arpa", sizeof("ip6.arpa"));
        n = (int)(o - name) + (int)sizeof("ip6.arpa") - 1;
        break;
    }
    default:
        return -1;
    }
    if (!out || n < 0 || (size_t)n >= outlen)
        return -1;
    memcpy(out, name, (size_t)n + 1);
    return 0;
}

/* Checks label number no (1-based), s[0..n), of name; returns 0 or -1 with err set. */
static int check_label(const char *name, size_t name_len, int no, const char *s, size_t n,
                       int allow_underscore, char *err, size_t errlen)
{
    char qn[QUOTE_BUFSZ], ql[QUOTE_BUFSZ];
    if (n == 0) {
        set_err(err, errlen,
                "name \"%s\": label %d is empty (a leading dot or two dots in a row); remove the "
                "extra dot",
                quote(name, name_len, qn), no);
        return -1;
    }
    if (n > DNS_LABEL_MAX) {
        set_err(err, errlen, "name \"%s\": label %d (\"%s\") is %zu octets, at most %d are allowed",
                quote(name, name_len, qn), no, quote(s, n, ql), n, DNS_LABEL_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_alnum(c) || c == '-' || (c == '_' && allow_underscore))
            continue;
        const char *why = allow_underscore
                              ? "only letters, digits, hyphens and underscores are allowed"
                              : "only letters, digits and hyphens are allowed";
        if (c == '_')
            why = "underscores are not allowed in host names";
        else if (c >= 0x80)
            why = "non-ASCII names must be given in their xn-- (IDNA) form";
        if (c > 0x20 && c < 0x7f)
            set_err(err, errlen, "name \"%s\": label %d (\"%s\") contains '%c'; %s",
                    quote(name, name_len, qn), no, quote(s, n, ql), c, why);
        else
            set_err(err, errlen, "name \"%s\": label %d (\"%s\") contains byte 0x%02X; %s",
                    quote(name, name_len, qn), no, quote(s, n, ql), c, why);
        return -1;
    }
    if (s[0] == '-' || s[n - 1] == '-') {
        set_err(err, errlen,
                "name \"%s\": label %d (\"%s\") %s with a hyphen, which is not allowed",
                quote(name, name_len, qn), no, quote(s, n, ql), s[0] == '-' ? "starts" : "ends");
        return -1;
    }
    return 0;
}

int dns_name_normalize(const char *in, int allow_underscore, char *out, size_t outlen, char *err,
                       size_t errlen)
{
    char qn[QUOTE_BUFSZ];
    if (err && errlen)
        err[0] = '\0';
    if (!in || !in[0]) {
        set_err(err, errlen, "name is empty");
        return -1;
    }
    size_t len = strlen(in);
    size_t n = in[len - 1] == '.' ? len - 1 : len; /* one trailing dot: the absolute form */
    if (n == 0) {
        set_err(err, errlen, "name \".\" is the root, not a host name");
        return -1;
    }
    if (n > DNS_NAME_MAX) {
        set_err(err, errlen, "name \"%s\" is %zu octets long, at most %d are allowed",
                quote(in, n, qn), n, DNS_NAME_MAX);
        return -1;
    }
    int labels = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && in[i] != '.')
            continue;
        if (check_label(in, n, ++labels, in + start, i - start, allow_underscore, err, errlen) != 0)
            return -1;
        start = i + 1;
    }
    if (labels < 2) {
        set_err(err, errlen,
                "name \"%s\" has a single label; give a fully qualified name such as "
                "\"%s.example.com\"",
                quote(in, n, qn), qn);
        return -1;
    }
    if (!out || outlen <= n) {
        set_err(err, errlen, "name \"%s\" does not fit the output buffer", quote(in, n, qn));
        return -1;
    }
    /* Byte by byte at the same index, so out may be in itself. */
    for (size_t i = 0; i < n; i++)
        out[i] = (char)ascii_lower((unsigned char)in[i]);
    out[n] = '\0';
    return 0;
}

size_t dns_label_sanitize(const char *in, char *out, size_t outlen)
{
    if (!out || !outlen)
        return 0;
    size_t cap = outlen - 1 < DNS_LABEL_MAX ? outlen - 1 : DNS_LABEL_MAX;
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)(in ? in : "");
    while (*p && o < cap) {
        if (is_alnum(*p)) {
            out[o++] = (char)ascii_lower(*p++);
            continue;
        }
        /* A run of other bytes, with any hyphens next to it, becomes one hyphen; a run made only
         * of hyphens is kept as it is. Leading hyphens are never written. */
        const unsigned char *run = p;
        int only_hyphens = 1;
        while (*p && !is_alnum(*p)) {
            if (*p != '-')
                only_hyphens = 0;
            p++;
        }
        if (o == 0)
            continue;
        size_t k = only_hyphens ? (size_t)(p - run) : 1;
        while (k-- && o < cap)
            out[o++] = '-';
    }
    while (o > 0 && out[o - 1] == '-')
        o--;
    out[o] = '\0';
    return o;
}

int dns_fqdn(const char *label, const char *zone, char *out, size_t outlen, char *err,
             size_t errlen)
{
    char name[DNS_NAME_MAX + 2];
    if (!label || !label[0]) {
        set_err(err, errlen, "label is empty");
        return -1;
    }
    if (!zone || !zone[0]) {
        set_err(err, errlen, "zone is empty");
        return -1;
    }
    size_t ll = strlen(label), zl = strlen(zone);
    if (zl > 0 && zone[zl - 1] == '.')
        zl--;
    if (ll > DNS_NAME_MAX || zl > DNS_NAME_MAX || ll + 1 + zl > DNS_NAME_MAX) {
        char ql[QUOTE_BUFSZ], qz[QUOTE_BUFSZ];
        set_err(err, errlen,
                "name \"%s\" + \".\" + \"%s\" is %zu octets long, at most %d are allowed",
                quote(label, ll, ql), quote(zone, zl, qz), ll + 1 + zl, DNS_NAME_MAX);
        return -1;
    }
    memcpy(name, label, ll);
    name[ll] = '.';
    memcpy(name + ll + 1, zone, zl);
    name[ll + 1 + zl] = '\0';
    return dns_name_normalize(name, 0, out, outlen, err, errlen);
}

/* 1 when zone is name itself or a parent of it at a label boundary (ASCII case ignored). */
static int zone_covers(const char *name, size_t nl, const char *zone, size_t zl)
{
    if (zl > nl)
        return 0;
    if (zl < nl && name[nl - zl - 1] != '.')
        return 0;
    return same_ci(name + nl - zl, zone, zl);
}

int dns_zone_match(const char *name, const char *const *zones, size_t nzones)
{
    if (!name || !zones)
        return -1;
    size_t nl = strlen(name), best_len = 0;
    int best = -1;
    for (size_t i = 0; i < nzones && i <= (size_t)INT_MAX; i++) {
        const char *z = zones[i];
        /* The root zone would cover every name; cs-pdns never writes records there. */
        if (!z || !z[0] || (z[0] == '.' && !z[1]))
            continue;
        size_t zl = strlen(z);
        if (zl > best_len && zone_covers(name, nl, z, zl)) {
            best = (int)i;
            best_len = zl;
        }
    }
    return best;
}

size_t dns_name_suffixes(const char *name, const char **out, size_t max)
{
    if (!name || !name[0] || !out || !max)
        return 0;
    size_t labels = 1;
    for (const char *p = name; *p; p++)
        if (*p == '.')
            labels++;
    size_t k = 0;
    const char *p = name;
    out[k++] = name;
    while (labels > 2 && k < max) {
        p = strchr(p, '.') + 1;
        out[k++] = p;
        labels--;
    }
    return k;
}
