/* dns_name.h -- DNS names and IP addresses: normalising, checking, reverse names, zone matching.
 * Must not: decide which names a VM gets, or touch I/O; it is a pure helper. */
#ifndef CSPDNS_DNS_NAME_H
#define CSPDNS_DNS_NAME_H

#include <stddef.h>

#define DNS_NAME_MAX 253 /* presentation form without the trailing dot */
#define DNS_LABEL_MAX 63
#define DNS_NAME_BUFSZ 256
#define DNS_ADDR_BUFSZ 64 /* >= INET6_ADDRSTRLEN */

/* 4 or 6 when s is a textual IPv4/IPv6 address (inet_pton rules; no zone index, no brackets, no
 * leading/trailing space), else 0. */
int dns_ip_version(const char *s);

/* Canonical text of an address: IPv4 dotted quad; IPv6 lower-case compressed (inet_ntop form).
 * Returns 4 or 6, or 0 (out untouched) when s is not an address. out must hold DNS_ADDR_BUFSZ. */
int dns_ip_canonical(const char *s, char *out, size_t outlen);

/* Reverse name without trailing dot: "10.2.0.192.in-addr.arpa", or the 32-nibble ip6.arpa name.
 * Returns 0, or -1 when ip is not an address. out must hold DNS_NAME_BUFSZ. */
int dns_ptr_name(const char *ip, char *out, size_t outlen);

/* Normalises a host name to PowerDNS storage form: ASCII lower case, one trailing dot removed.
 * Checks: non-empty, labels 1..63 octets of letters, digits and hyphens (LDH) with no hyphen at
 * either end of a label, total at most 253 octets, at least two labels.
 * When allow_underscore is set, '_' is also accepted inside labels (service-style names).
 * Returns 0, or -1 with err saying which label is wrong and why. */
int dns_name_normalize(const char *in, int allow_underscore, char *out, size_t outlen, char *err,
                       size_t errlen);

/* Turns free text into a label: keeps [A-Za-z0-9-] lower-cased, maps every other byte run to a
 * single '-', trims hyphens at both ends, truncates to 63. Returns the length (0: nothing usable).
 */
size_t dns_label_sanitize(const char *in, char *out, size_t outlen);

/* "label" + "." + "zone", normalised and checked as dns_name_normalize. */
int dns_fqdn(const char *label, const char *zone, char *out, size_t outlen, char *err,
             size_t errlen);

/* The index of the longest zone that equals name or is a suffix of it at a label boundary
 * (both in normalised form), or -1 when none matches. "example.com" matches "a.example.com" and
 * "example.com", never "badexample.com". */
int dns_zone_match(const char *name, const char *const *zones, size_t nzones);

/* Fills out with name and every parent of it at a label boundary, longest first, down to the
 * last two labels ("a.b.example.com" -> itself, "b.example.com", "example.com"); returns how
 * many. Used to ask the database only for zones that could hold a name. */
size_t dns_name_suffixes(const char *name, const char **out, size_t max);

/* Copies s[0..n) into out (outsz >= 8) for an error message: printable ASCII as is, everything
 * else (and '"', '\\') as \xHH, cut short with "..." when out is full, so hostile input cannot
 * flood or corrupt a log line. Returns out. */
const char *dns_quote(const char *s, size_t n, char *out, size_t outsz);

#endif
