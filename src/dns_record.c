/* dns_record.c -- checks and canonicalises the records a policy returns, and orders record sets.
 * Must not: choose names or talk to a database; a record that fails a check is left unchanged. */
#include "dns_record.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

dns_rr_type dns_rr_type_parse(const char *s)
{
    if (!s)
        return (dns_rr_type)0;
    if (strcmp(s, "A") == 0)
        return DNS_RR_A;
    if (strcmp(s, "AAAA") == 0)
        return DNS_RR_AAAA;
    if (strcmp(s, "PTR") == 0)
        return DNS_RR_PTR;
    return (dns_rr_type)0;
}

const char *dns_rr_type_name(dns_rr_type t)
{
    switch (t) {
    case DNS_RR_A:
        return "A";
    case DNS_RR_AAAA:
        return "AAAA";
    case DNS_RR_PTR:
        return "PTR";
    }
    return "UNKNOWN";
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Room for a whole field value quoted in an error message: at most 255 bytes, each printed as
 * \xHH when not printable. */
#define QUOTED_FIELD_BUFSZ (4 * DNS_NAME_BUFSZ + 4)

static const char *quote_field(const char *s, char *out)
{
    return dns_quote(s, strnlen(s, DNS_NAME_BUFSZ), out, QUOTED_FIELD_BUFSZ);
}

/* Normalises the host name in field (in place) and reports a failure under the field's own name.
 * dns_name_normalize's messages begin with "name", which is replaced by field. */
static int check_host_name(char *value, const char *field, const char *type, char *err,
                           size_t errlen)
{
    char why[512];
    if (dns_name_normalize(value, 0, value, DNS_NAME_BUFSZ, why, sizeof(why)) == 0) {
        /* All-digit labels are valid (reverse names), but a dotted quad is a policy mistake. */
        if (dns_ip_version(value) == 4)
            return fail(err, errlen, "%s \"%s\" is an IPv4 address, not a host name (type %s)",
                        field, value, type);
        return 0;
    }
    const char *rest = strncmp(why, "name", 4) == 0 ? why + 4 : why;
    return fail(err, errlen, "%s%s%s (type %s)", field, rest == why ? ": " : "", rest, type);
}

/* 1 when name (normalised) lies strictly below the reverse tree root (label boundary). */
static int is_reverse_name(const char *name)
{
    static const char *const roots[] = {".in-addr.arpa", ".ip6.arpa"};
    size_t nl = strlen(name);
    for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
        size_t rl = strlen(roots[i]);
        if (nl > rl && memcmp(name + nl - rl, roots[i], rl) == 0)
            return 1;
    }
    return 0;
}

int dns_record_check(struct dns_record *r, char *err, size_t errlen)
{
    char q[QUOTED_FIELD_BUFSZ];
    if (err && errlen)
        err[0] = '\0';
    if (!r)
        return fail(err, errlen, "record is missing");
    if (r->type != DNS_RR_A && r->type != DNS_RR_AAAA && r->type != DNS_RR_PTR)
        return fail(err, errlen, "type %d is not supported; use A, AAAA or PTR", (int)r->type);
    const char *type = dns_rr_type_name(r->type);
    if (!memchr(r->name, '\0', sizeof(r->name)))
        return fail(err, errlen, "name is longer than %d bytes (type %s)", DNS_NAME_MAX, type);
    if (!memchr(r->content, '\0', sizeof(r->content)))
        return fail(err, errlen, "content is longer than %d bytes (type %s)", DNS_NAME_MAX, type);

    /* Work on a copy so that a failed check leaves the caller's record as it was. */
    struct dns_record c = *r;
    if (check_host_name(c.name, "name", type, err, errlen) != 0)
        return -1;

    char addr[DNS_ADDR_BUFSZ];
    int version;
    switch (c.type) {
    case DNS_RR_A:
    case DNS_RR_AAAA: {
        int want = c.type == DNS_RR_A ? 4 : 6;
        version = dns_ip_canonical(c.content, addr, sizeof(addr));
        if (version == want)
            break;
        if (version)
            return fail(err, errlen, "content \"%s\" is an IPv%d address; use type %s (type %s)",
                        quote_field(c.content, q), version, want == 4 ? "AAAA" : "A", type);
        return fail(err, errlen, "content \"%s\" is not an IPv%d address (type %s)",
                    quote_field(c.content, q), want, type);
    }
    case DNS_RR_PTR:
        if (!is_reverse_name(c.name))
            return fail(err, errlen,
                        "name \"%s\" is not a reverse name; a PTR name must end in .in-addr.arpa "
                        "or .ip6.arpa (type %s)",
                        quote_field(c.name, q), type);
        if (check_host_name(c.content, "content", type, err, errlen) != 0)
            return -1;
        break;
    }
    if (c.type != DNS_RR_PTR) {
        memset(c.content, 0, sizeof(c.content));
        memcpy(c.content, addr, strlen(addr) + 1);
    }
    if (c.ttl < DNS_TTL_MIN || c.ttl > DNS_TTL_MAX)
        return fail(err, errlen, "ttl %d is out of range %d..%d (type %s)", c.ttl, DNS_TTL_MIN,
                    DNS_TTL_MAX, type);
    *r = c;
    return 0;
}

int dns_record_cmp(const struct dns_record *a, const struct dns_record *b)
{
    int c = strncmp(a->name, b->name, sizeof(a->name));
    if (c)
        return c < 0 ? -1 : 1;
    if (a->type != b->type)
        return a->type < b->type ? -1 : 1;
    c = strncmp(a->content, b->content, sizeof(a->content));
    return c < 0 ? -1 : c > 0;
}

/* Ties are broken by position in the array, which makes qsort stable. */
static int cmp_ptr(const void *x, const void *y)
{
    const struct dns_record *a = *(const struct dns_record *const *)x;
    const struct dns_record *b = *(const struct dns_record *const *)y;
    int c = dns_record_cmp(a, b);
    if (c)
        return c;
    return a < b ? -1 : a > b;
}

/* O(n log n) stable sort through a pointer array; returns -1 when memory ran out. */
static int sort_large(struct dns_record *rs, size_t n)
{
    const struct dns_record **ptrs = malloc(n * sizeof(*ptrs));
    struct dns_record *sorted = malloc(n * sizeof(*sorted));
    if (!ptrs || !sorted) {
        free(ptrs);
        free(sorted);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &rs[i];
    qsort(ptrs, n, sizeof(*ptrs), cmp_ptr);
    for (size_t i = 0; i < n; i++)
        sorted[i] = *ptrs[i];
    memcpy(rs, sorted, n * sizeof(*rs));
    free(ptrs);
    free(sorted);
    return 0;
}

/* Stable and allocation-free; a VM's record set is usually a handful of records. */
static void sort_small(struct dns_record *rs, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        if (dns_record_cmp(&rs[i - 1], &rs[i]) <= 0)
            continue;
        struct dns_record tmp = rs[i];
        size_t j = i;
        while (j > 0 && dns_record_cmp(&rs[j - 1], &tmp) > 0) {
            rs[j] = rs[j - 1];
            j--;
        }
        rs[j] = tmp;
    }
}

#define SMALL_SET 32

size_t dns_record_set_normalize(struct dns_record *rs, size_t n)
{
    if (!rs || n < 2)
        return n;
    if (n <= SMALL_SET || n > SIZE_MAX / sizeof(*rs) || sort_large(rs, n) != 0)
        sort_small(rs, n);
    /* The sort is stable, so the first of equal records is the one that came first. */
    size_t k = 1;
    for (size_t i = 1; i < n; i++) {
        if (dns_record_cmp(&rs[k - 1], &rs[i]) == 0)
            continue;
        if (k != i)
            rs[k] = rs[i];
        k++;
    }
    return k;
}
