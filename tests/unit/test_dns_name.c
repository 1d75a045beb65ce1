/* test_dns_name.c -- unit tests for addresses, reverse names, name checks and zone matching.
 * Must not: depend on anything but dns_name and the C library. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "dns_name.h"
#include "unit.h"

static void test_ip_version(void)
{
    CHECK_INT(dns_ip_version("192.0.2.1"), 4);
    CHECK_INT(dns_ip_version("0.0.0.0"), 4);
    CHECK_INT(dns_ip_version("255.255.255.255"), 4);
    CHECK_INT(dns_ip_version("::1"), 6);
    CHECK_INT(dns_ip_version("::"), 6);
    CHECK_INT(dns_ip_version("2001:db8::1"), 6);
    CHECK_INT(dns_ip_version("2001:0DB8:0000::0001"), 6);
    CHECK_INT(dns_ip_version("::ffff:192.0.2.1"), 6); /* v4-mapped is an IPv6 address */

    static const char *const bad[] = {
        NULL,
        "",
        "300.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        " 1.2.3.4",
        "1.2.3.4 ",
        "1.2.3.4/24",
        "0x7f.0.0.1",
        "fe80::1%eth0",
        "[::1]",
        "2001:db8::1::2",
        "2001:db8:::1",
        "12345::",
        "example.com",
        "1.2.3.4.in-addr.arpa",
        "::ffff:300.0.2.1",
        "g::1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int v = dns_ip_version(bad[i]);
        CHECK_INT(v, 0);
        if (v)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
    }
}

static void test_ip_canonical(void)
{
    char out[DNS_ADDR_BUFSZ];
    CHECK_INT(dns_ip_canonical("2001:0DB8:0000::0001", out, sizeof(out)), 6);
    CHECK_STR(out, "2001:db8::1");
    CHECK_INT(dns_ip_canonical("2001:db8:0:0:1:0:0:1", out, sizeof(out)), 6);
    CHECK_STR(out, "2001:db8::1:0:0:1"); /* the first longest zero run is compressed */
    CHECK_INT(dns_ip_canonical("2001:DB8:100:10:0:3CFF:FE5E:1", out, sizeof(out)), 6);
    CHECK_STR(out, "2001:db8:100:10:0:3cff:fe5e:1");
    CHECK_INT(dns_ip_canonical("0:0:0:0:0:0:0:1", out, sizeof(out)), 6);
    CHECK_STR(out, "::1");
    CHECK_INT(dns_ip_canonical("::FFFF:192.0.2.1", out, sizeof(out)), 6);
    CHECK_STR(out, "::ffff:192.0.2.1");
    CHECK_INT(dns_ip_canonical("10.1.1.23", out, sizeof(out)), 4);
    CHECK_STR(out, "10.1.1.23");

    strcpy(out, "untouched");
    CHECK_INT(dns_ip_canonical("10.1.1.256", out, sizeof(out)), 0);
    CHECK_STR(out, "untouched");
    CHECK_INT(dns_ip_canonical(NULL, out, sizeof(out)), 0);
    CHECK_INT(dns_ip_canonical("2001:db8::1", out, 5), 0); /* too small: refused, not cut */
    CHECK_STR(out, "untouched");
}

/* dns_ip_canonical formats addresses itself; it must write exactly what glibc's inet_ntop
 * writes, for every pattern of zero groups (all 256) and many random addresses. */
static void test_ip_canonical_matches_libc(void)
{
    uint64_t x = 0x9e3779b97f4a7c15u;
    int mismatches = 0;
    for (int k = 0; k < 200000; k++) {
        unsigned char a[16];
        unsigned mask = (unsigned)k & 255; /* which groups are zero */
        for (int g = 0; g < 8; g++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            unsigned v = (mask >> g & 1) ? 0 : (unsigned)(x >> 16) & (k & 256 ? 0xf : 0xffff);
            a[2 * g] = (unsigned char)(v >> 8);
            a[2 * g + 1] = (unsigned char)v;
        }
        char want[INET6_ADDRSTRLEN], full[64], got[DNS_ADDR_BUFSZ];
        inet_ntop(AF_INET6, a, want, sizeof(want));
        snprintf(full, sizeof(full), "%X:%X:%X:%X:%X:%X:%X:%X", a[0] << 8 | a[1], a[2] << 8 | a[3],
                 a[4] << 8 | a[5], a[6] << 8 | a[7], a[8] << 8 | a[9], a[10] << 8 | a[11],
                 a[12] << 8 | a[13], a[14] << 8 | a[15]);
        if (dns_ip_canonical(full, got, sizeof(got)) != 6 || strcmp(got, want) != 0) {
            if (mismatches++ < 5)
                fprintf(stderr, "  %s: got %s, inet_ntop writes %s\n", full, got, want);
        }
        char v4[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, a, v4, sizeof(v4));
        if (dns_ip_canonical(v4, got, sizeof(got)) != 4 || strcmp(got, v4) != 0) {
            if (mismatches++ < 5)
                fprintf(stderr, "  %s: got %s\n", v4, got);
        }
    }
    CHECK_INT(mismatches, 0);
}

static void test_ptr_name(void)
{
    char out[DNS_NAME_BUFSZ];
    CHECK_INT(dns_ptr_name("192.0.2.10", out, sizeof(out)), 0);
    CHECK_STR(out, "10.2.0.192.in-addr.arpa");
    CHECK_INT(dns_ptr_name("10.1.1.23", out, sizeof(out)), 0);
    CHECK_STR(out, "23.1.1.10.in-addr.arpa");
    CHECK_INT(dns_ptr_name("0.0.0.0", out, sizeof(out)), 0);
    CHECK_STR(out, "0.0.0.0.in-addr.arpa");
    CHECK_INT(dns_ptr_name("::1", out, sizeof(out)), 0);
    CHECK_STR(out, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa");
    CHECK_INT(dns_ptr_name("2001:db8::1", out, sizeof(out)), 0);
    CHECK_STR(out, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    CHECK_INT(dns_ptr_name("2001:DB8:100:10:0:3CFF:FE5E:ABCD", out, sizeof(out)), 0);
    CHECK_STR(out, "d.c.b.a.e.5.e.f.f.f.c.3.0.0.0.0.0.1.0.0.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa");
    /* v4-mapped is an IPv6 address, so its reverse name is in ip6.arpa. */
    CHECK_INT(dns_ptr_name("::ffff:192.0.2.1", out, sizeof(out)), 0);
    CHECK_STR(out, "1.0.2.0.0.0.0.c.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa");
    CHECK_INT(strlen(out), 72);

    /* Every reverse name is itself a valid normalised name. */
    char norm[DNS_NAME_BUFSZ], err[256];
    CHECK_INT(dns_name_normalize(out, 0, norm, sizeof(norm), err, sizeof(err)), 0);
    CHECK_STR(norm, out);

    CHECK_INT(dns_ptr_name("web-01.example.com", out, sizeof(out)), -1);
    CHECK_INT(dns_ptr_name("", out, sizeof(out)), -1);
    CHECK_INT(dns_ptr_name(NULL, out, sizeof(out)), -1);
    CHECK_INT(dns_ptr_name("::1", out, 72), -1); /* needs 73 bytes */
    CHECK_INT(dns_ptr_name("::1", out, 73), 0);
}

/* Expects dns_name_normalize to refuse in, with err containing what. */
static int norm_rejects(const char *in, int allow_underscore, const char *what)
{
    char out[DNS_NAME_BUFSZ], err[256];
    strcpy(out, "untouched");
    if (dns_name_normalize(in, allow_underscore, out, sizeof(out), err, sizeof(err)) == 0) {
        fprintf(stderr, "  accepted: %s -> %s\n", in ? in : "(null)", out);
        return 0;
    }
    if (!strstr(err, what) || strcmp(out, "untouched") != 0) {
        fprintf(stderr, "  for %s\n  got:  %s\n  want: %s\n", in ? in : "(null)", err, what);
        return 0;
    }
    return 1;
}

static void test_normalize(void)
{
    char out[DNS_NAME_BUFSZ], err[256];
    CHECK_INT(dns_name_normalize("Web-01.Example.COM.", 0, out, sizeof(out), err, sizeof(err)), 0);
    CHECK_STR(out, "web-01.example.com");
    CHECK_INT(dns_name_normalize("10.2.0.192.in-addr.arpa", 0, out, sizeof(out), err, sizeof(err)),
              0);
    CHECK_STR(out, "10.2.0.192.in-addr.arpa");
    CHECK_INT(dns_name_normalize("a.b", 0, out, sizeof(out), err, sizeof(err)), 0);
    CHECK_STR(out, "a.b");
    CHECK_INT(dns_name_normalize("xn--bcher-kva.example", 0, out, sizeof(out), err, sizeof(err)),
              0);
    CHECK_STR(out, "xn--bcher-kva.example");
    CHECK_INT(dns_name_normalize("_dmarc.Example.com", 1, out, sizeof(out), err, sizeof(err)), 0);
    CHECK_STR(out, "_dmarc.example.com");
    CHECK_INT(dns_name_normalize("_sip._tcp.example.com", 1, out, sizeof(out), err, sizeof(err)),
              0);

    /* In place. */
    char buf[DNS_NAME_BUFSZ] = "MAIL.Example.ORG.";
    CHECK_INT(dns_name_normalize(buf, 0, buf, sizeof(buf), err, sizeof(err)), 0);
    CHECK_STR(buf, "mail.example.org");

    /* Limits: a 63-octet label and a 253-octet name are fine, one more is not. */
    char name[300];
    memset(name, 'a', 63);
    strcpy(name + 63, ".example.com");
    CHECK_INT(dns_name_normalize(name, 0, out, sizeof(out), err, sizeof(err)), 0);
    memset(name, 'a', 64);
    strcpy(name + 64, ".example.com");
    CHECK(norm_rejects(name, 0, "label 1 (\"aaaa"));
    CHECK(norm_rejects(name, 0, "is 64 octets, at most 63"));
    /* 4 labels of 63 + 3 dots = 255; trim to 253 with the last label of 61. */
    for (int i = 0; i < 4; i++) {
        memset(name + i * 64, 'b', 63);
        name[i * 64 + 63] = '.';
    }
    name[253] = '\0';
    CHECK_INT(strlen(name), 253);
    CHECK_INT(dns_name_normalize(name, 0, out, sizeof(out), err, sizeof(err)), 0);
    CHECK_INT(strlen(out), 253);
    name[253] = '.';
    name[254] = '\0';
    CHECK_INT(dns_name_normalize(name, 0, out, sizeof(out), err, sizeof(err)), 0); /* + root dot */
    name[253] = 'b';
    CHECK(norm_rejects(name, 0, "is 254 octets long, at most 253"));
    CHECK_INT(dns_name_normalize("a.example.com", 0, out, 13, err, sizeof(err)), -1);
    CHECK(strstr(err, "does not fit") != NULL);
    CHECK_INT(dns_name_normalize("a.example.com", 0, out, 14, err, sizeof(err)), 0);

    CHECK(norm_rejects(NULL, 0, "name is empty"));
    CHECK(norm_rejects("", 0, "name is empty"));
    CHECK(norm_rejects(".", 0, "is the root"));
    CHECK(norm_rejects("a..b", 0, "label 2 is empty"));
    CHECK(norm_rejects(".a.b", 0, "label 1 is empty"));
    CHECK(norm_rejects("a.b..", 0, "label 3 is empty"));
    CHECK(norm_rejects("localhost", 0, "single label"));
    CHECK(norm_rejects("localhost.", 0, "single label"));
    CHECK(norm_rejects("web 01.example.com", 0, "label 1 (\"web 01\") contains byte 0x20"));
    CHECK(norm_rejects("web\".example.com", 0, "contains '\"'"));
    CHECK(norm_rejects("web'.example.com", 0, "contains '''"));
    CHECK(norm_rejects("a.b/c.com", 0, "label 2 (\"b/c\") contains '/'"));
    CHECK(norm_rejects("my_vm.example.com", 0, "underscores are not allowed"));
    CHECK(norm_rejects("my_vm.ex ample.com", 1, "label 2 (\"ex ample\") contains byte 0x20"));
    CHECK(norm_rejects("b\xC3\xBC"
                       "cher.example",
                       0, "byte 0xC3; non-ASCII names must be given in their xn-- (IDNA) form"));
    CHECK(norm_rejects("-web.example.com", 0, "label 1 (\"-web\") starts with a hyphen"));
    CHECK(norm_rejects("web-.example.com", 0, "ends with a hyphen"));
    CHECK(norm_rejects("web.example.com-", 0, "label 3"));
    CHECK(norm_rejects("web\n.example.com", 0, "label 1 (\"web\\x0a\") contains byte 0x0A"));
    CHECK(norm_rejects("a\tb.c", 0, "contains byte 0x09"));

    /* A long hostile name is quoted, cut short, in the message; the message stays bounded. */
    char hostile[2000];
    memset(hostile, '\x01', sizeof(hostile) - 1);
    hostile[sizeof(hostile) - 1] = '\0';
    char big_err[4096];
    CHECK_INT(dns_name_normalize(hostile, 0, out, sizeof(out), big_err, sizeof(big_err)), -1);
    CHECK(strstr(big_err, "...") != NULL && strlen(big_err) < 300);
    CHECK_INT(dns_name_normalize("a..b", 0, out, sizeof(out), NULL, 0), -1);
}

static void test_label_sanitize(void)
{
    char out[DNS_NAME_BUFSZ];
    CHECK_INT(dns_label_sanitize("Web Server~1", out, sizeof(out)), 12);
    CHECK_STR(out, "web-server-1");
    CHECK_INT(dns_label_sanitize("my_vm", out, sizeof(out)), 5);
    CHECK_STR(out, "my-vm");
    CHECK_INT(dns_label_sanitize("  --Hello, World!--  ", out, sizeof(out)), 11);
    CHECK_STR(out, "hello-world");
    CHECK_INT(dns_label_sanitize("a--b", out, sizeof(out)), 4); /* hyphens alone are kept */
    CHECK_STR(out, "a--b");
    CHECK_INT(dns_label_sanitize("a - b", out, sizeof(out)), 3);
    CHECK_STR(out, "a-b");
    CHECK_INT(dns_label_sanitize("b\xC3\xBC"
                                 "cher",
                                 out, sizeof(out)),
              6);
    CHECK_STR(out, "b-cher");
    CHECK_INT(dns_label_sanitize("___", out, sizeof(out)), 0);
    CHECK_STR(out, "");
    CHECK_INT(dns_label_sanitize("", out, sizeof(out)), 0);
    CHECK_INT(dns_label_sanitize(NULL, out, sizeof(out)), 0);
    CHECK_STR(out, "");

    /* Truncated to 63, and no hyphen left at the cut. */
    char in[200];
    memset(in, 'x', 62);
    strcpy(in + 62, " tail-of-it");
    CHECK_INT(dns_label_sanitize(in, out, sizeof(out)), 62);
    CHECK(out[61] == 'x' && out[62] == '\0');
    memset(in, 'Y', 150);
    in[150] = '\0';
    CHECK_INT(dns_label_sanitize(in, out, sizeof(out)), 63);
    CHECK(out[0] == 'y' && strlen(out) == 63);

    /* A small output buffer limits the result too. */
    char small[4];
    CHECK_INT(dns_label_sanitize("abcdef", small, sizeof(small)), 3);
    CHECK_STR(small, "abc");
    CHECK_INT(dns_label_sanitize("ab cd", small, sizeof(small)), 2);
    CHECK_STR(small, "ab");
    CHECK_INT(dns_label_sanitize("abc", small, 0), 0);
}

static void test_fqdn(void)
{
    char out[DNS_NAME_BUFSZ], err[256];
    CHECK_INT(dns_fqdn("Web-01", "Example.COM.", out, sizeof(out), err, sizeof(err)), 0);
    CHECK_STR(out, "web-01.example.com");
    CHECK_INT(dns_fqdn("web-01", "acme.cloud.example.com", out, sizeof(out), err, sizeof(err)), 0);
    CHECK_STR(out, "web-01.acme.cloud.example.com");
    CHECK_INT(dns_fqdn("a.b", "example.com", out, sizeof(out), err, sizeof(err)), 0);
    CHECK_STR(out, "a.b.example.com");

    CHECK_INT(dns_fqdn("", "example.com", out, sizeof(out), err, sizeof(err)), -1);
    CHECK(strstr(err, "label is empty") != NULL);
    CHECK_INT(dns_fqdn("web", "", out, sizeof(out), err, sizeof(err)), -1);
    CHECK(strstr(err, "zone is empty") != NULL);
    CHECK_INT(dns_fqdn(NULL, "example.com", out, sizeof(out), err, sizeof(err)), -1);
    CHECK_INT(dns_fqdn("web_1", "example.com", out, sizeof(out), err, sizeof(err)), -1);
    CHECK(strstr(err, "underscores") != NULL);
    CHECK_INT(dns_fqdn("web.", "example.com", out, sizeof(out), err, sizeof(err)), -1);
    CHECK(strstr(err, "label 2 is empty") != NULL);
    CHECK_INT(dns_fqdn("web", "com", out, sizeof(out), err, sizeof(err)), 0);
    CHECK_STR(out, "web.com");

    char label[300];
    memset(label, 'a', 250);
    label[250] = '\0';
    CHECK_INT(dns_fqdn(label, "example.com", out, sizeof(out), err, sizeof(err)), -1);
    CHECK(strstr(err, "262 octets long, at most 253") != NULL);
    memset(label, 'a', 299);
    label[299] = '\0';
    CHECK_INT(dns_fqdn(label, "example.com", out, sizeof(out), err, sizeof(err)), -1);
}

static void test_zone_match(void)
{
    static const char *const zones[] = {
        "example.com",
        "cloud.example.com",
        "10.in-addr.arpa",
        "1.10.in-addr.arpa",
        "2.0.192.in-addr.arpa",
        "8.b.d.0.1.0.0.2.ip6.arpa",                 /* 2001:db8::/32 */
        "0.1.0.0.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa", /* 2001:db8:100:10::/64 */
        "1.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa",       /* 2001:db8:100:1000::/52, odd nibble */
        "168.192.in-addr.arpa",                     /* /16 */
        NULL,
        "",
        ".",
    };
    size_t nz = sizeof(zones) / sizeof(zones[0]);
    CHECK_INT(dns_zone_match("web.example.com", zones, nz), 0);
    CHECK_INT(dns_zone_match("example.com", zones, nz), 0);
    CHECK_INT(dns_zone_match("web.cloud.example.com", zones, nz), 1);
    CHECK_INT(dns_zone_match("cloud.example.com", zones, nz), 1);
    CHECK_INT(dns_zone_match("a.b.cloud.example.com", zones, nz), 1);
    CHECK_INT(dns_zone_match("WEB.Cloud.Example.com", zones, nz), 1);
    /* Label boundary: a zone is never matched inside a label. */
    CHECK_INT(dns_zone_match("badexample.com", zones, nz), -1);
    CHECK_INT(dns_zone_match("web.badexample.com", zones, nz), -1);
    CHECK_INT(dns_zone_match("xcloud.example.com", zones, nz), 0);
    CHECK_INT(dns_zone_match("com", zones, nz), -1);
    CHECK_INT(dns_zone_match("example.org", zones, nz), -1);

    char ptr[DNS_NAME_BUFSZ];
    dns_ptr_name("10.2.3.4", ptr, sizeof(ptr)); /* /8 */
    CHECK_INT(dns_zone_match(ptr, zones, nz), 2);
    dns_ptr_name("10.1.1.23", ptr, sizeof(ptr)); /* /16 inside the /8: the longer wins */
    CHECK_INT(dns_zone_match(ptr, zones, nz), 3);
    dns_ptr_name("192.0.2.10", ptr, sizeof(ptr)); /* /24 */
    CHECK_INT(dns_zone_match(ptr, zones, nz), 4);
    dns_ptr_name("192.168.7.1", ptr, sizeof(ptr));
    CHECK_INT(dns_zone_match(ptr, zones, nz), 8);
    dns_ptr_name("192.0.3.10", ptr, sizeof(ptr));
    CHECK_INT(dns_zone_match(ptr, zones, nz), -1);
    CHECK_INT(dns_zone_match("2.10.in-addr.arpa", zones, nz), 2);
    CHECK_INT(dns_zone_match("110.in-addr.arpa", zones, nz), -1);

    dns_ptr_name("2001:db8::1", ptr, sizeof(ptr));
    CHECK_INT(dns_zone_match(ptr, zones, nz), 5);
    dns_ptr_name("2001:db8:100:10:0:3cff:fe5e:1", ptr, sizeof(ptr));
    CHECK_INT(dns_zone_match(ptr, zones, nz), 6);
    dns_ptr_name("2001:db8:100:1abc::1", ptr, sizeof(ptr)); /* in the /52 */
    CHECK_INT(dns_zone_match(ptr, zones, nz), 7);
    dns_ptr_name("2001:db8:100:2000::1", ptr, sizeof(ptr)); /* just outside it */
    CHECK_INT(dns_zone_match(ptr, zones, nz), 5);
    dns_ptr_name("2001:db9::1", ptr, sizeof(ptr));
    CHECK_INT(dns_zone_match(ptr, zones, nz), -1);

    /* The first of equally long zones wins; no zones, no match. */
    static const char *const dup[] = {"example.com", "example.com"};
    CHECK_INT(dns_zone_match("a.example.com", dup, 2), 0);
    CHECK_INT(dns_zone_match("a.example.com", dup, 0), -1);
    CHECK_INT(dns_zone_match(NULL, dup, 2), -1);
    CHECK_INT(dns_zone_match("a.example.com", NULL, 2), -1);
}

static void test_suffixes(void)
{
    const char *out[8];
    const char *name = "a.b.example.com";
    CHECK_INT(dns_name_suffixes(name, out, 8), 3);
    CHECK_STR(out[0], "a.b.example.com");
    CHECK_STR(out[1], "b.example.com");
    CHECK_STR(out[2], "example.com");
    CHECK(out[1] == name + 2); /* pointers into name, not copies */

    CHECK_INT(dns_name_suffixes("example.com", out, 8), 1);
    CHECK_STR(out[0], "example.com");
    CHECK_INT(dns_name_suffixes("com", out, 8), 1);
    CHECK_INT(dns_name_suffixes("", out, 8), 0);
    CHECK_INT(dns_name_suffixes(NULL, out, 8), 0);
    CHECK_INT(dns_name_suffixes(name, out, 2), 2);
    CHECK_STR(out[1], "b.example.com");
    CHECK_INT(dns_name_suffixes(name, out, 0), 0);

    char ptr[DNS_NAME_BUFSZ];
    dns_ptr_name("10.1.1.23", ptr, sizeof(ptr));
    CHECK_INT(dns_name_suffixes(ptr, out, 8), 5);
    CHECK_STR(out[3], "10.in-addr.arpa");
    CHECK_STR(out[4], "in-addr.arpa");
    const char *many[40];
    dns_ptr_name("2001:db8::1", ptr, sizeof(ptr));
    CHECK_INT(dns_name_suffixes(ptr, many, 40), 33);
    CHECK_STR(many[32], "ip6.arpa");
    CHECK_STR(many[24], "8.b.d.0.1.0.0.2.ip6.arpa");
}

static void test_quote(void)
{
    char q[16], big[32];
    CHECK_STR(dns_quote("web-1", 5, q, sizeof q), "web-1");
    CHECK_STR(dns_quote("a\"b\\c\n", 6, big, sizeof big), "a\\x22b\\x5cc\\x0a");
    CHECK_STR(dns_quote("a\0b", 3, q, sizeof q), "a\\x00b");
    /* Cut with "..." before the buffer fills, never mid-escape. */
    CHECK_STR(dns_quote("abcdefghijklmnopqrstuvwxyz", 26, q, sizeof q), "abcdefghijkl...");
    CHECK_STR(dns_quote("abcdefghij\xff", 11, q, sizeof q), "abcdefghij...");
    CHECK_STR(dns_quote("a\"b\\c\n", 6, q, sizeof q), "a\\x22b\\x5cc...");
}

int main(void)
{
    test_ip_version();
    test_ip_canonical();
    test_ip_canonical_matches_libc();
    test_ptr_name();
    test_normalize();
    test_label_sanitize();
    test_fqdn();
    test_zone_match();
    test_suffixes();
    test_quote();
    return unit_done("test_dns_name");
}
