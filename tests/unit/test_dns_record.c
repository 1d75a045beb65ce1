/* test_dns_record.c -- unit tests for record checks, canonical storage form and set ordering.
 * Must not: depend on anything but dns_record, dns_name and the C library. */
#include <stdlib.h>
#include <string.h>

#include "dns_record.h"
#include "unit.h"

static struct dns_record rec(const char *name, dns_rr_type type, const char *content, int ttl)
{
    struct dns_record r;
    memset(&r, 0, sizeof(r));
    snprintf(r.name, sizeof(r.name), "%s", name);
    r.type = type;
    snprintf(r.content, sizeof(r.content), "%s", content);
    r.ttl = ttl;
    return r;
}

/* Checks r and expects success with the given storage form. */
static int accepts(struct dns_record r, const char *name, const char *content)
{
    char err[512];
    if (dns_record_check(&r, err, sizeof(err)) != 0) {
        fprintf(stderr, "  rejected: %s\n", err);
        return 0;
    }
    if (strcmp(r.name, name) != 0 || strcmp(r.content, content) != 0) {
        fprintf(stderr, "  got %s / %s, want %s / %s\n", r.name, r.content, name, content);
        return 0;
    }
    return 1;
}

/* Checks r and expects a rejection with exactly want (or containing it when partial), leaving r
 * unchanged. */
static int rejects(struct dns_record r, const char *want, int partial)
{
    char err[512];
    struct dns_record before = r;
    if (dns_record_check(&r, err, sizeof(err)) == 0) {
        fprintf(stderr, "  accepted: %s %s %s\n", r.name, dns_rr_type_name(r.type), r.content);
        return 0;
    }
    if (partial ? !strstr(err, want) : strcmp(err, want) != 0) {
        fprintf(stderr, "  got:  %s\n  want: %s\n", err, want);
        return 0;
    }
    if (memcmp(&before, &r, sizeof(r)) != 0) {
        fprintf(stderr, "  a rejected record was modified\n");
        return 0;
    }
    return 1;
}

static void test_types(void)
{
    CHECK_INT(dns_rr_type_parse("A"), DNS_RR_A);
    CHECK_INT(dns_rr_type_parse("AAAA"), DNS_RR_AAAA);
    CHECK_INT(dns_rr_type_parse("PTR"), DNS_RR_PTR);
    CHECK_INT(dns_rr_type_parse("a"), 0);
    CHECK_INT(dns_rr_type_parse("ptr"), 0);
    CHECK_INT(dns_rr_type_parse("CNAME"), 0);
    CHECK_INT(dns_rr_type_parse(""), 0);
    CHECK_INT(dns_rr_type_parse("A "), 0);
    CHECK_INT(dns_rr_type_parse(NULL), 0);
    CHECK_STR(dns_rr_type_name(DNS_RR_A), "A");
    CHECK_STR(dns_rr_type_name(DNS_RR_AAAA), "AAAA");
    CHECK_STR(dns_rr_type_name(DNS_RR_PTR), "PTR");
    CHECK_STR(dns_rr_type_name((dns_rr_type)9), "UNKNOWN");
}

static void test_accept_and_canonicalise(void)
{
    CHECK(accepts(rec("Web-01.Example.com.", DNS_RR_A, "10.1.1.23", 300), "web-01.example.com",
                  "10.1.1.23"));
    CHECK(accepts(rec("web-01.example.com", DNS_RR_AAAA, "2001:0DB8:0000::0001", 60),
                  "web-01.example.com", "2001:db8::1"));
    CHECK(accepts(rec("web-01.example.com", DNS_RR_AAAA, "2001:DB8:100:10:0:3CFF:FE5E:1", 60),
                  "web-01.example.com", "2001:db8:100:10:0:3cff:fe5e:1"));
    CHECK(accepts(rec("v4mapped.example.com", DNS_RR_AAAA, "::FFFF:192.0.2.1", 60),
                  "v4mapped.example.com", "::ffff:192.0.2.1"));
    CHECK(accepts(rec("23.1.1.10.in-addr.arpa.", DNS_RR_PTR, "Web-01.Example.com.", 300),
                  "23.1.1.10.in-addr.arpa", "web-01.example.com"));
    CHECK(accepts(rec("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.IP6.ARPA",
                      DNS_RR_PTR, "web-01.example.com", 300),
                  "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
                  "web-01.example.com"));
    /* RFC 2317 classless delegation names are valid reverse names. */
    CHECK(accepts(rec("5.0-25.2.0.192.in-addr.arpa", DNS_RR_PTR, "a.example.com", 300),
                  "5.0-25.2.0.192.in-addr.arpa", "a.example.com"));
    /* TTL bounds are inclusive. */
    CHECK(accepts(rec("a.example.com", DNS_RR_A, "192.0.2.1", DNS_TTL_MIN), "a.example.com",
                  "192.0.2.1"));
    CHECK(accepts(rec("a.example.com", DNS_RR_A, "192.0.2.1", DNS_TTL_MAX), "a.example.com",
                  "192.0.2.1"));

    /* The canonical content replaces the whole field: no old bytes stay behind the NUL. */
    struct dns_record r =
        rec("a.example.com", DNS_RR_AAAA, "2001:0db8:0000:0000:0000:0000:0000:0001", 60);
    char err[256];
    CHECK_INT(dns_record_check(&r, err, sizeof(err)), 0);
    CHECK_STR(r.content, "2001:db8::1");
    struct dns_record z;
    memset(&z, 0, sizeof(z));
    CHECK(memcmp(r.content + 12, z.content + 12, sizeof(r.content) - 12) == 0);

    /* Checking twice changes nothing more. */
    struct dns_record again = r;
    CHECK_INT(dns_record_check(&again, err, sizeof(err)), 0);
    CHECK(memcmp(&again, &r, sizeof(r)) == 0);
}

static void test_rejections(void)
{
    CHECK(rejects(rec("a.example.com", DNS_RR_A, "300.1.1.1", 300),
                  "content \"300.1.1.1\" is not an IPv4 address (type A)", 0));
    CHECK(rejects(rec("a.example.com", DNS_RR_A, "", 300),
                  "content \"\" is not an IPv4 address (type A)", 0));
    CHECK(rejects(rec("a.example.com", DNS_RR_A, " 192.0.2.1", 300),
                  "content \" 192.0.2.1\" is not an IPv4 address (type A)", 0));
    CHECK(rejects(rec("a.example.com", DNS_RR_A, "2001:db8::1", 300),
                  "content \"2001:db8::1\" is an IPv6 address; use type AAAA (type A)", 0));
    CHECK(rejects(rec("a.example.com", DNS_RR_AAAA, "192.0.2.1", 300),
                  "content \"192.0.2.1\" is an IPv4 address; use type A (type AAAA)", 0));
    CHECK(rejects(rec("a.example.com", DNS_RR_AAAA, "fe80::1%eth0", 300),
                  "content \"fe80::1%eth0\" is not an IPv6 address (type AAAA)", 0));
    CHECK(rejects(rec("a.example.com", DNS_RR_AAAA, "web.example.com", 300),
                  "content \"web.example.com\" is not an IPv6 address (type AAAA)", 0));
    CHECK(rejects(rec("a.example.com", DNS_RR_A, "1.2.3.4\n", 300),
                  "content \"1.2.3.4\\x0a\" is not an IPv4 address (type A)", 0));

    CHECK(rejects(rec("a..example.com", DNS_RR_A, "192.0.2.1", 300),
                  "name \"a..example.com\": label 2 is empty (a leading dot or two dots in a row); "
                  "remove the extra dot (type A)",
                  0));
    CHECK(rejects(rec("web", DNS_RR_A, "192.0.2.1", 300), "name \"web\" has a single label", 1));
    CHECK(rejects(rec("", DNS_RR_AAAA, "::1", 300), "name is empty (type AAAA)", 0));
    CHECK(rejects(rec("my_vm.example.com", DNS_RR_A, "192.0.2.1", 300),
                  "underscores are not allowed in host names (type A)", 1));
    CHECK(rejects(rec("_dmarc.example.com", DNS_RR_A, "192.0.2.1", 300), "contains '_'", 1));
    CHECK(rejects(rec("web 1.example.com", DNS_RR_A, "192.0.2.1", 300), "contains byte 0x20", 1));
    CHECK(rejects(rec("-web.example.com", DNS_RR_AAAA, "::1", 300), "starts with a hyphen", 1));

    CHECK(rejects(rec("web.example.com", DNS_RR_PTR, "web.example.com", 300),
                  "name \"web.example.com\" is not a reverse name; a PTR name must end in "
                  ".in-addr.arpa or .ip6.arpa (type PTR)",
                  0));
    CHECK(
        rejects(rec("in-addr.arpa", DNS_RR_PTR, "web.example.com", 300), "not a reverse name", 1));
    CHECK(rejects(rec("1.2.3.4.in-addr.arpa.com", DNS_RR_PTR, "a.example.com", 300),
                  "not a reverse name", 1));
    CHECK(rejects(rec("1.2.3.4xin-addr.arpa", DNS_RR_PTR, "a.example.com", 300),
                  "not a reverse name", 1));
    CHECK(rejects(rec("1..3.4.in-addr.arpa", DNS_RR_PTR, "a.example.com", 300),
                  "name \"1..3.4.in-addr.arpa\": label 2 is empty", 1));
    CHECK(rejects(rec("4.3.2.1.in-addr.arpa", DNS_RR_PTR, "web", 300),
                  "content \"web\" has a single label; give a fully qualified name such as "
                  "\"web.example.com\" (type PTR)",
                  0));
    CHECK(rejects(rec("4.3.2.1.in-addr.arpa", DNS_RR_PTR, "", 300), "content is empty (type PTR)",
                  0));
    CHECK(rejects(rec("4.3.2.1.in-addr.arpa", DNS_RR_PTR, "10.1.1.23.", 300),
                  "content \"10.1.1.23\" is an IPv4 address, not a host name (type PTR)", 0));
    CHECK(rejects(rec("192.0.2.1", DNS_RR_A, "192.0.2.1", 300),
                  "name \"192.0.2.1\" is an IPv4 address, not a host name (type A)", 0));
    CHECK(rejects(rec("4.3.2.1.in-addr.arpa", DNS_RR_PTR, "web_1.example.com", 300),
                  "content \"web_1.example.com\": label 1 (\"web_1\") contains '_'", 1));
    CHECK(rejects(rec("4.3.2.1.in-addr.arpa", DNS_RR_PTR, "web..example.com", 300),
                  "content \"web..example.com\": label 2 is empty", 1));

    CHECK(rejects(rec("a.example.com", DNS_RR_A, "192.0.2.1", 0),
                  "ttl 0 is out of range 1..604800 (type A)", 0));
    CHECK(rejects(rec("a.example.com", DNS_RR_A, "192.0.2.1", -5), "ttl -5 is out of range", 1));
    CHECK(rejects(rec("a.example.com", DNS_RR_A, "192.0.2.1", DNS_TTL_MAX + 1),
                  "ttl 604801 is out of range", 1));

    CHECK(rejects(rec("a.example.com", (dns_rr_type)0, "192.0.2.1", 300),
                  "type 0 is not supported; use A, AAAA or PTR", 0));
    CHECK(rejects(rec("a.example.com", (dns_rr_type)5, "192.0.2.1", 300), "type 5 is not", 1));

    /* Fields filled to the brim without a terminator. */
    struct dns_record r = rec("a.example.com", DNS_RR_A, "192.0.2.1", 300);
    memset(r.name, 'a', sizeof(r.name));
    CHECK(rejects(r, "name is longer than 253 bytes (type A)", 0));
    r = rec("a.example.com", DNS_RR_PTR, "", 300);
    memset(r.content, 'b', sizeof(r.content));
    CHECK(rejects(r, "content is longer than 253 bytes (type PTR)", 0));
    /* Long but terminated: quoted in full, still rejected. */
    r = rec("", DNS_RR_A, "192.0.2.1", 300);
    memset(r.name, 'c', sizeof(r.name) - 1);
    CHECK(rejects(r, "is 255 octets long, at most 253", 1));

    char err[8];
    r = rec("a.example.com", DNS_RR_A, "300.1.1.1", 300);
    CHECK_INT(dns_record_check(&r, err, sizeof(err)), -1);
    CHECK_INT(strlen(err), sizeof(err) - 1);
    CHECK_INT(dns_record_check(&r, NULL, 0), -1);
    CHECK_INT(dns_record_check(NULL, NULL, 0), -1);
}

static void test_cmp(void)
{
    struct dns_record a = rec("a.example.com", DNS_RR_A, "192.0.2.1", 300);
    struct dns_record b = rec("a.example.com", DNS_RR_A, "192.0.2.1", 60);
    CHECK_INT(dns_record_cmp(&a, &b), 0); /* TTL is not part of the identity */
    b = rec("a.example.com", DNS_RR_A, "192.0.2.2", 300);
    CHECK(dns_record_cmp(&a, &b) < 0 && dns_record_cmp(&b, &a) > 0);
    b = rec("a.example.com", DNS_RR_AAAA, "::1", 300);
    CHECK(dns_record_cmp(&a, &b) < 0); /* type orders before content */
    b = rec("b.example.com", DNS_RR_A, "0.0.0.0", 300);
    CHECK(dns_record_cmp(&a, &b) < 0 && dns_record_cmp(&b, &a) > 0); /* name first */
    b = rec("a.example.co", DNS_RR_PTR, "z", 300);
    CHECK(dns_record_cmp(&a, &b) > 0);
}

static void test_set_normalize(void)
{
    struct dns_record rs[] = {
        rec("web.example.com", DNS_RR_AAAA, "2001:db8::1", 300),
        rec("web.example.com", DNS_RR_A, "10.1.1.24", 300),
        rec("23.1.1.10.in-addr.arpa", DNS_RR_PTR, "web.example.com", 300),
        rec("web.example.com", DNS_RR_A, "10.1.1.23", 111), /* first of a duplicate pair */
        rec("web.example.com", DNS_RR_A, "10.1.1.23", 222),
        rec("app.example.com", DNS_RR_A, "10.1.1.23", 300),
        rec("web.example.com", DNS_RR_A, "10.1.1.23", 333),
    };
    size_t n = dns_record_set_normalize(rs, sizeof(rs) / sizeof(rs[0]));
    CHECK_INT(n, 5);
    CHECK_STR(rs[0].name, "23.1.1.10.in-addr.arpa");
    CHECK_STR(rs[1].name, "app.example.com");
    CHECK_STR(rs[2].content, "10.1.1.23");
    CHECK_INT(rs[2].ttl, 111);
    CHECK_STR(rs[3].content, "10.1.1.24");
    CHECK(rs[4].type == DNS_RR_AAAA);
    for (size_t i = 1; i < n; i++)
        CHECK(dns_record_cmp(&rs[i - 1], &rs[i]) < 0);

    CHECK_INT(dns_record_set_normalize(rs, 0), 0);
    CHECK_INT(dns_record_set_normalize(rs, 1), 1);
    CHECK_INT(dns_record_set_normalize(NULL, 3), 3);
    struct dns_record same[] = {rec("a.example.com", DNS_RR_A, "192.0.2.1", 5),
                                rec("a.example.com", DNS_RR_A, "192.0.2.1", 6)};
    CHECK_INT(dns_record_set_normalize(same, 2), 1);
    CHECK_INT(same[0].ttl, 5);

    /* A large set goes through the allocating sort: same rules, and still stable. */
    size_t big = 1000;
    struct dns_record *many = calloc(big, sizeof(*many));
    CHECK(many != NULL);
    if (!many)
        return;
    for (size_t i = 0; i < big; i++) {
        char name[64];
        snprintf(name, sizeof(name), "h%zu.example.com", (i * 7919) % 250);
        int a = (int)(i / 250) % 2;
        many[i] = rec(name, a ? DNS_RR_A : DNS_RR_AAAA, a ? "192.0.2.1" : "::1", (int)i + 1);
    }
    n = dns_record_set_normalize(many, big);
    CHECK_INT(n, 500);
    int sorted = 1, first_ttl = 1;
    for (size_t i = 1; i < n; i++)
        if (dns_record_cmp(&many[i - 1], &many[i]) >= 0)
            sorted = 0;
    /* Record (h, type) first appears at the lowest index i with that key; its TTL is i + 1. */
    for (size_t i = 0; i < n; i++) {
        size_t h = (size_t)atoi(many[i].name + 1), want = 0;
        int a = many[i].type == DNS_RR_A;
        for (size_t j = 0; j < big; j++)
            if ((j * 7919) % 250 == h && (int)(j / 250) % 2 == a) {
                want = j + 1;
                break;
            }
        if ((size_t)many[i].ttl != want)
            first_ttl = 0;
    }
    CHECK(sorted);
    CHECK(first_ttl);
    free(many);
}

int main(void)
{
    test_types();
    test_accept_and_canonicalise();
    test_rejections();
    test_cmp();
    test_set_normalize();
    return unit_done("test_dns_record");
}
