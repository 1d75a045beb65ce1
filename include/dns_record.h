/* dns_record.h -- the record set a policy returns, and the checks it passes before any write.
 * Must not: pick names or talk to a database; it validates and canonicalises what it is given. */
#ifndef CSPDNS_DNS_RECORD_H
#define CSPDNS_DNS_RECORD_H

#include <stddef.h>

#include "dns_name.h"

typedef enum { DNS_RR_A = 1, DNS_RR_AAAA = 2, DNS_RR_PTR = 3 } dns_rr_type;
/* One past the largest dns_rr_type: the size of arrays indexed by type (0 stands for a type
 * outside the model, e.g. a row changed by hand). */
#define DNS_RR_TYPE_COUNT 4

#define DNS_TTL_MIN 1
#define DNS_TTL_MAX 604800 /* one week */

struct dns_record {
    char name[DNS_NAME_BUFSZ];
    dns_rr_type type;
    char content[DNS_NAME_BUFSZ]; /* address text, or a host name for PTR */
    int ttl;
};

/* "A", "AAAA", "PTR" -> type; 0 for anything else (case-sensitive, as PowerDNS stores it). */
dns_rr_type dns_rr_type_parse(const char *s);
const char *dns_rr_type_name(dns_rr_type t);

/* Checks one record and rewrites it to storage form (decision 7): name normalised; A content an
 * IPv4 address, AAAA an IPv6 address (canonical compressed form); PTR name under in-addr.arpa or
 * ip6.arpa and content a host name without trailing dot; TTL within [DNS_TTL_MIN, DNS_TTL_MAX].
 * Returns 0, or -1 with err naming the field and the problem. */
int dns_record_check(struct dns_record *r, char *err, size_t errlen);

/* Orders records by (name, type, content) and removes exact duplicates (same name, type, content;
 * the first TTL wins). Returns the new count. */
size_t dns_record_set_normalize(struct dns_record *rs, size_t n);

/* strcmp-style ordering on (name, type, content). */
int dns_record_cmp(const struct dns_record *a, const struct dns_record *b);

#endif
