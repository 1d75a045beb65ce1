/* fuzz_dns.c -- libFuzzer target: name and address checks, reverse names, labels from free text,
 * zone matching and the record check, with the properties the store relies on.
 * Must not: trust a check by not crashing alone; every accepted output must check again. */
#include <string.h>

#include "dns_name.h"
#include "dns_record.h"
#include "fuzz.h"

#define FIELDS 4

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static int ldh_or_dot(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

/* An accepted name is in storage form: normalising it again changes nothing. */
static void check_normal(const char *name)
{
    char again[DNS_NAME_BUFSZ], err[256];
    FUZZ_ASSERT(strlen(name) <= DNS_NAME_MAX);
    for (const char *p = name; *p; p++)
        FUZZ_ASSERT(ldh_or_dot(*p));
    FUZZ_ASSERT(dns_name_normalize(name, 1, again, sizeof again, err, sizeof err) == 0);
    FUZZ_ASSERT(strcmp(again, name) == 0);
}

static void addresses(const char *s)
{
    char canon[DNS_ADDR_BUFSZ], canon2[DNS_ADDR_BUFSZ], ptr[DNS_NAME_BUFSZ];
    int v = dns_ip_version(s);
    FUZZ_ASSERT(v == 0 || v == 4 || v == 6);
    FUZZ_ASSERT(dns_ip_canonical(s, canon, sizeof canon) == v);
    FUZZ_ASSERT((dns_ptr_name(s, ptr, sizeof ptr) == 0) == (v != 0));
    if (!v)
        return;
    FUZZ_ASSERT(dns_ip_version(canon) == v);
    FUZZ_ASSERT(dns_ip_canonical(canon, canon2, sizeof canon2) == v);
    FUZZ_ASSERT(strcmp(canon, canon2) == 0);
    check_normal(ptr);
    FUZZ_ASSERT(strstr(ptr, v == 4 ? ".in-addr.arpa" : ".ip6.arpa") != NULL);
}

static void labels(const char *s, const char *zone)
{
    char label[DNS_LABEL_MAX + 1], again[DNS_LABEL_MAX + 1], fqdn[DNS_NAME_BUFSZ], err[256];
    size_t n = dns_label_sanitize(s, label, sizeof label);
    FUZZ_ASSERT(n == strlen(label) && n <= DNS_LABEL_MAX);
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT(ldh_or_dot(label[i]) && label[i] != '.' && label[i] != '_');
    FUZZ_ASSERT(n == 0 || (label[0] != '-' && label[n - 1] != '-'));
    FUZZ_ASSERT(dns_label_sanitize(label, again, sizeof again) == n);
    FUZZ_ASSERT(strcmp(label, again) == 0);
    if (dns_fqdn(s, zone, fqdn, sizeof fqdn, err, sizeof err) == 0)
        check_normal(fqdn);
    char name[DNS_NAME_BUFSZ];
    for (int u = 0; u < 2; u++)
        if (dns_name_normalize(s, u, name, sizeof name, err, sizeof err) == 0)
            check_normal(name);
}

/* Zone matching is defined on names in storage form, as the store calls it. */
static void zones(const char *raw_name, const char *raw_a, const char *raw_b)
{
    char name[DNS_NAME_BUFSZ], a[DNS_NAME_BUFSZ], b[DNS_NAME_BUFSZ], err[256];
    if (dns_name_normalize(raw_name, 1, name, sizeof name, err, sizeof err) != 0 ||
        dns_name_normalize(raw_a, 1, a, sizeof a, err, sizeof err) != 0 ||
        dns_name_normalize(raw_b, 1, b, sizeof b, err, sizeof err) != 0)
        return;
    const char *zs[2] = {a, b};
    int i = dns_zone_match(name, zs, 2);
    FUZZ_ASSERT(i >= -1 && i < 2);
    if (i >= 0) {
        size_t nl = strlen(name), zl = strlen(zs[i]);
        FUZZ_ASSERT(zl <= nl && strcmp(name + nl - zl, zs[i]) == 0);
        FUZZ_ASSERT(zl == nl || name[nl - zl - 1] == '.');
    }
    const char *suffixes[130];
    size_t n = dns_name_suffixes(name, suffixes, 130);
    FUZZ_ASSERT(n <= 130);
    for (size_t k = 0; k < n; k++)
        FUZZ_ASSERT(strstr(name, suffixes[k]) != NULL);
}

static void record(const char *name, const char *content, const char *type, const char *ttl)
{
    struct dns_record r, again;
    char err[512];
    memset(&r, 0, sizeof r);
    /* Inputs longer than a field are cut to it: the check only ever sees full fields. */
    snprintf(r.name, sizeof r.name, "%.*s", (int)sizeof r.name - 1, name);
    snprintf(r.content, sizeof r.content, "%.*s", (int)sizeof r.content - 1, content);
    r.type = dns_rr_type_parse(type);
    r.ttl = atoi(ttl);
    if (dns_record_check(&r, err, sizeof err) != 0) {
        FUZZ_ASSERT(strlen(err) > 0);
        return;
    }
    /* Accepted records are in storage form: a second check keeps them as they are. */
    check_normal(r.name);
    FUZZ_ASSERT(r.ttl >= DNS_TTL_MIN && r.ttl <= DNS_TTL_MAX);
    if (r.type == DNS_RR_PTR)
        check_normal(r.content);
    else
        FUZZ_ASSERT(dns_ip_version(r.content) == (r.type == DNS_RR_A ? 4 : 6));
    again = r;
    FUZZ_ASSERT(dns_record_check(&again, err, sizeof err) == 0);
    FUZZ_ASSERT(dns_record_cmp(&again, &r) == 0 && again.ttl == r.ttl);
    struct dns_record set[2] = {r, again};
    FUZZ_ASSERT(dns_record_set_normalize(set, 2) == 1);
}

/* Input: up to four fields separated by newlines (name or address, zone or content, type, ttl). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char buf[4097];
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *f[FIELDS] = {"", "", "", ""};
    char *p = buf;
    for (int i = 0; i < FIELDS && p; i++) {
        f[i] = p;
        p = strchr(p, '\n');
        if (p)
            *p++ = '\0';
    }
    addresses(f[0]);
    addresses(f[1]);
    labels(f[0], f[1]);
    zones(f[0], f[1], f[2]);
    record(f[0], f[1], f[2], f[3]);
    return 0;
}
