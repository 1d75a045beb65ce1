/* pdns_store.h -- writes a VM's desired records into PowerDNS's gmysql tables, owning what it
 * wrote. Must not: decide a name or a record (it stores exactly the set it is given); never touch a
 * row it does not own; never log the database password. */
#ifndef CSPDNS_PDNS_STORE_H
#define CSPDNS_PDNS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "dns_record.h"
#include "settings.h"
#include "status.h"

/* cs-pdns's own tables, created on connect when missing (in the PowerDNS database):
 *   cspdns_vm(vm_id PK, updated_at)                 one row per VM that owns records; locked
 *                                                   (INSERT .. ON DUPLICATE KEY UPDATE) at the
 *                                                   start of every change, so changes to one VM
 *                                                   are serialised across instances.
 *   cspdns_record(record_id, vm_id, PK(record_id, vm_id), KEY(vm_id))
 *                                                   which records rows each VM owns. A row two
 *                                                   VMs both want (same name, type, content) is
 *                                                   one row with two owners. */

struct pdns_store;

/* Connects (MYSQL_PDNS_*; TCP unless the host is "localhost") and creates the ownership tables.
 * Returns CSP_OK, CSP_TRANSIENT when the server cannot be reached (callers may wait and retry),
 * or CSP_PERMANENT (bad credentials, no PowerDNS schema) with err saying what to fix. */
csp_status pdns_store_open(const struct settings *s, struct pdns_store **out, char *err,
                           size_t errlen);
void pdns_store_free(struct pdns_store *st);

struct pdns_apply_stats {
    unsigned added;     /* records rows inserted (or, for a row another VM owns, co-owned) */
    unsigned removed;   /* ownerships dropped (rows deleted when no other owner remained) */
    unsigned updated;   /* owned rows whose TTL changed */
    unsigned unchanged; /* desired records already in place */
    unsigned no_zone;   /* desired records skipped: no zone in `domains` holds the name */
    unsigned foreign;   /* desired records skipped: an identical row exists that cs-pdns does
                           not own (hand-made); it is left as it is */
    unsigned zones_bumped;
};

/* One transaction may hold the changes of several VMs (batching); SOA serials of every zone
 * touched are bumped once, at commit. After any failure the transaction is rolled back and the
 * caller starts again with pdns_store_begin (which reconnects when the connection was lost). */
csp_status pdns_store_begin(struct pdns_store *st, char *err, size_t errlen);

/* Makes vm_id own exactly recs[0..n) (already checked and normalised with dns_record_check and
 * dns_record_set_normalize): inserts what is missing, deletes what it owns and no longer wants,
 * fixes TTLs. n == 0 removes everything the VM owns. Adds to *stats. A record whose zone is
 * missing is skipped, logged and counted; the rest are applied. */
csp_status pdns_store_apply(struct pdns_store *st, const char *vm_id, const struct dns_record *recs,
                            size_t n, struct pdns_apply_stats *stats, char *err, size_t errlen);

/* Bumps the SOA serial of every zone touched since begin (row locked; YYYYMMDDnn serials move to
 * today's date or the next revision, others +1) and commits. */
csp_status pdns_store_commit(struct pdns_store *st, struct pdns_apply_stats *stats, char *err,
                             size_t errlen);
void pdns_store_rollback(struct pdns_store *st);

/* begin + apply + commit, rolling back on failure. */
csp_status pdns_store_apply_vm(struct pdns_store *st, const char *vm_id,
                               const struct dns_record *recs, size_t n,
                               struct pdns_apply_stats *stats, char *err, size_t errlen);

/* Pure: the next SOA serial. today is YYYYMMDD (e.g. 20261125). A serial that reads as a date
 * (YYYYMMDDnn with a plausible date) becomes today*100 when that is larger, else serial+1;
 * any other serial becomes serial+1 (mod 2^32, skipping 0). */
uint32_t pdns_serial_next(uint32_t serial, uint32_t today);

/* Pure: rewrites the serial (third field) of SOA content "mname rname serial refresh retry expire
 * minimum". Returns 0, or -1 when content is not a well-formed SOA. */
int pdns_soa_bump(const char *content, uint32_t today, char *out, size_t outlen);

#endif
