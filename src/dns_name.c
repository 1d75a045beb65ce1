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

/* The address in s as bytes (4 or 16 of them in buf) and its version, 0 when s is neither. */
static int parse_ip(const char *s, unsigned char buf[16])
{
    if (!s)
        return 0;
    if (inet_pton(AF_INET, s, buf) == 1)
        return 4;
    if (inet_pton(AF_INET6, s, buf) == 1)
        return 6;
    return 0;
}

int dns_ip_version(const char *s)
{
    unsigned char buf[16];
    return parse_ip(s, buf);
}

/* Writes 0..255 in decimal; returns the end. */
static char *put_octet(char *o, unsigned v)
{
    if (v >= 100)
        *o++ = (char)('0' + v / 100);
    if (v >= 10)
        *o++ = (char)('0' + v / 10 % 10);
    *o++ = (char)('0' + v % 10);
    return o;
}

/* a[0..4) dotted, least significant first when reversed (for in-addr.arpa); returns the end. */
static char *put_v4(char *o, const unsigned char *a, int reversed)
{
    for (int i = 0; i < 4; i++) {
        if (i)
            *o++ = '.';
        o = put_octet(o, a[reversed ? 3 - i : i]);
    }
    return o;
}

/* a[0..16) in RFC 5952 form, exactly as glibc's inet_ntop writes it: the first longest run of
 * two or more zero groups as "::", lower-case hex without leading zeros. A formatted address
 * costs a tenth of inet_ntop's sprintf calls. Returns the length, or -1 for the forms with an
 * embedded IPv4 address (a zero run of five or more groups at the start), left to inet_ntop. */
static int put_v6(char *out, const unsigned char *a)
{
    static const char hex[] = "0123456789abcdef";
    unsigned w[8];
    int best = -1, best_len = 0, cur = -1;
    for (int i = 0; i < 8; i++) {
        w[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
        if (w[i] == 0 && cur < 0)
            cur = i;
        if (cur >= 0 && (w[i] != 0 || i == 7)) {
            int len = (w[i] == 0 ? i + 1 : i) - cur;
            if (len > best_len) {
                best = cur;
                best_len = len;
            }
            cur = -1;
        }
    }
    if (best_len < 2)
        best = -1;
    if (best == 0 && best_len >= 5)
        return -1;
    char *o = out;
    for (int i = 0; i < 8; i++) {
        if (best >= 0 && i >= best && i < best + best_len) {
            if (i == best)
                *o++ = ':';
            continue;
        }
        if (i)
            *o++ = ':';
        int started = 0;
        for (int shift = 12; shift >= 0; shift -= 4) {
            unsigned nib = w[i] >> shift & 15;
            if (nib || started || shift == 0) {
                *o++ = hex[nib];
                started = 1;
            }
        }
    }
    if (best >= 0 && best + best_len == 8)
        *o++ = ':';
    *o = '\0';
    return (int)(o - out);
}

int dns_ip_canonical(const char *s, char *out, size_t outlen)
{
    unsigned char buf[16];
    char text[INET6_ADDRSTRLEN];
    int version = parse_ip(s, buf);
    size_t n;
    if (version == 4) {
        n = (size_t)(put_v4(text, buf, 0) - text);
        text[n] = '\0';
    } else if (version == 6) {
        int len = put_v6(text, buf);
        if (len < 0 && !inet_ntop(AF_INET6, buf, text, sizeof(text)))
            return 0;
        n = len < 0 ? strlen(text) : (size_t)len;
    } else {
        return 0;
    }
    if (!out || n >= outlen)
        return 0;
    memcpy(out, text, n + 1);
    return version;
}

int dns_ptr_name(const char *ip, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char a[16];
    char name[DNS_NAME_BUFSZ];
    char *o = name;
    switch (parse_ip(ip, a)) {
    case 4:
        o = put_v4(o, a, 1);
        memcpy(o, ".in-addr.arpa", sizeof(".in-addr.arpa"));
        o += sizeof(".in-addr.arpa") - 1;
        break;
    case 6:
        /* Least significant nibble first: byte 15's low nibble, its high nibble, byte 14... */
        for (int i = 15; i >= 0; i--) {
            *o++ = hex[a[i] & 15];
            *o++ = '.';
            *o++ = hex[a[i] >> 4];
            *o++ = '.';
        }
        memcpy(o, "ip6.arpa", sizeof("ip6.arpa"));
        o += sizeof("ip6.arpa") - 1;
        break;
    default:
        return -1;
    }
    size_t n = (size_t)(o - name);
    if (!out || n >= outlen)
        return -1;
    memcpy(out, name, n + 1);
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
