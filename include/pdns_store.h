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

/* The counts of pdns_apply_stats that metrics break down by record type. */
struct pdns_type_counts {
    unsigned added, removed, updated, no_zone, foreign;
};

struct pdns_apply_stats {
    unsigned added;     /* records rows inserted (or, for a row another VM owns, co-owned) */
    unsigned removed;   /* ownerships dropped (rows deleted when no other owner remained) */
    unsigned updated;   /* owned rows whose TTL changed */
    unsigned unchanged; /* desired records already in place */
    unsigned no_zone;   /* desired records skipped: no zone in `domains` holds the name */
    unsigned foreign;   /* desired records skipped: an identical row exists that cs-pdns does
                           not own (hand-made); it is left as it is */
    unsigned zones_bumped;
    /* The same counts per record type, indexed by dns_rr_type; they add up to the totals. */
    struct pdns_type_counts by_type[DNS_RR_TYPE_COUNT];
};

/* Adds every count of from to to. */
void pdns_apply_stats_add(struct pdns_apply_stats *to, const struct pdns_apply_stats *from);

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

/* One VM's desired records in a batch, and what applying them did. */
struct pdns_vm_records {
    const char *vm_id;
    const struct dns_record *recs; /* checked and normalised, as for pdns_store_apply */
    size_t n;
    struct pdns_apply_stats stats; /* out: filled (not added to) by pdns_store_apply_many */
};

/* Inside a transaction opened with pdns_store_begin: does what pdns_store_apply does for each
 * of vms[0..n) (vm_ids distinct), with set-based statements (multi-row reads and writes), so a
 * batch of a thousand VMs costs a handful of round trips rather than thousands. All or nothing:
 * on failure the transaction is rolled back; CSP_PERMANENT means one of the VMs' changes was
 * refused, and the caller applies them one per transaction to find it. */
csp_status pdns_store_apply_many(struct pdns_store *st, struct pdns_vm_records *vms, size_t n,
                                 char *err, size_t errlen);

/* One zone's part of a commit: names are absolute with the trailing dot ("web1.example.com."). */
struct pdns_changed_zone {
    const char *apex;         /* "example.com." when its SOA was bumped, else NULL */
    const char *const *names; /* the zone's changed owner names (not the apex when it is set) */
    size_t n;
};

/* After a successful pdns_store_commit: every zone whose SOA it bumped or whose records rows it
 * inserted, deleted or changed, each once (in no particular order), with every owner name behind
 * those changes (empty
 * non-terminals included: their answers change between NXDOMAIN and NODATA), each once. Owned by
 * the store, valid until the next pdns_store_begin. Returns the number of zones. */
size_t pdns_store_changed_zones(const struct pdns_store *st,
                                const struct pdns_changed_zone **zones);

/* Bumps the SOA serial of every zone touched since begin (row locked; YYYYMMDDnn serials move to
 * today's date or the next revision, others +1) and commits. */
csp_status pdns_store_commit(struct pdns_store *st, struct pdns_apply_stats *stats, char *err,
                             size_t errlen);
void pdns_store_rollback(struct pdns_store *st);

/* begin + pdns_store_apply_many + commit, rolling back on failure: one batch's transaction.
 * *total gets the commit's counts (zones bumped); each vms[i].stats what it did to that VM. */
csp_status pdns_store_apply_many_txn(struct pdns_store *st, struct pdns_vm_records *vms, size_t n,
                                     struct pdns_apply_stats *total, char *err, size_t errlen);

/* begin + apply + commit, rolling back on failure. */
csp_status pdns_store_apply_vm(struct pdns_store *st, const char *vm_id,
                               const struct dns_record *recs, size_t n,
                               struct pdns_apply_stats *stats, char *err, size_t errlen);

/* Outside a transaction: one round trip that proves the database answers, so an idle caller
 * notices an outage (and its end) without an event to write. A lost connection is reopened
 * (once more when an idle connection turns out dead). Blocks at most the connect timeout (5 s)
 * plus the read timeout (30 s). Returns CSP_OK, CSP_TRANSIENT (unreachable: retry later), or
 * CSP_PERMANENT when called inside a transaction (a caller bug). */
csp_status pdns_store_ping(struct pdns_store *st, char *err, size_t errlen);

/* ---- read-only use: plans (dry runs) and the resync's view of ownership ---- */

/* Like pdns_store_open, but writes nothing, ever: cs-pdns's tables are not created (where they
 * are missing, empty TEMPORARY tables of this session stand in, so a plan against a database
 * cs-pdns never wrote to shows every record as new), and pdns_store_apply, pdns_store_commit and
 * a real adoption refuse to run. */
csp_status pdns_store_open_readonly(const struct settings *s, struct pdns_store **out, char *err,
                                    size_t errlen);

enum pdns_change_kind {
    PDNS_CHANGE_ADD = 0,     /* the VM would own the record: a new row, or (shared) an
                                identical row another VM owns already */
    PDNS_CHANGE_REMOVE = 1,  /* the VM would stop owning it; the row goes unless shared */
    PDNS_CHANGE_TTL = 2,     /* an owned row whose TTL would change from old_ttl to rec.ttl */
    PDNS_CHANGE_NO_ZONE = 3, /* skipped: no zone in `domains` holds the name */
    PDNS_CHANGE_FOREIGN = 4, /* skipped: an identical hand-made row exists */
};

struct pdns_change {
    enum pdns_change_kind kind;
    struct dns_record rec;     /* the desired record; for REMOVE the row as stored */
    char zone[DNS_NAME_BUFSZ]; /* domains.name of the zone that holds it; "" for NO_ZONE */
    int old_ttl;               /* TTL only */
    int shared;                /* ADD/REMOVE: another VM owns the same row */
};

/* What pdns_store_apply would do to make vm_id own exactly recs[0..n), computed with reads that
 * take no locks, writing nothing. *changes (malloc'ed, caller frees; NULL when *nchanges is 0)
 * lists every difference, desired records in recs order after the removals; records already in
 * place are only counted (stats->unchanged). stats adds up as pdns_store_apply's would. Works
 * outside a transaction (it opens and ends its own) or inside one (a failure then rolls it
 * back, as a failed apply does). */
csp_status pdns_store_plan(struct pdns_store *st, const char *vm_id, const struct dns_record *recs,
                           size_t n, struct pdns_change **changes, size_t *nchanges,
                           struct pdns_apply_stats *stats, char *err, size_t errlen);

struct pdns_owner {
    char vm_id[65];
    unsigned records; /* existing records rows the VM owns */
};

/* Every VM id in cspdns_record with the number of existing rows it owns; *total is their sum
 * (the owned records a resync's deletion guard measures against). *owners is malloc'ed (caller
 * frees), NULL when *n is 0. */
csp_status pdns_store_owners(struct pdns_store *st, struct pdns_owner **owners, size_t *n,
                             unsigned long *total, char *err, size_t errlen);

/* ---- migrating from cs-powerdns-integration ---- */

struct pdns_adopt_stats {
    unsigned long mappings; /* cs_mapping rows */
    unsigned long vms;      /* distinct VM ids in them */
    unsigned long records;  /* records rows they name (A, AAAA, PTR) */
    unsigned long adopted;  /* ownerships added (dry run: that would be added) */
    unsigned long already;  /* of those rows, ownerships cs-pdns had already */
    unsigned long missing;  /* mappings that name no existing row */
};

/* Makes the VMs in the original tool's cs_mapping(uuid, record, ipaddress) table own the rows it
 * wrote for them, in one transaction: a mapping without ipaddress adopts the A, AAAA and PTR
 * rows at that name, one with an address the A/AAAA row at that name with that content. Other
 * types and rows are never adopted. Idempotent; cs_mapping itself is left as it is. With
 * dry_run only counts. CSP_PERMANENT when there is no cs_mapping table. */
csp_status pdns_store_adopt_cs_mapping(struct pdns_store *st, int dry_run,
                                       struct pdns_adopt_stats *stats, char *err, size_t errlen);

/* Pure: the next SOA serial. today is YYYYMMDD (e.g. 20261125). A serial that reads as a date
 * (YYYYMMDDnn with a plausible date) becomes today*100 when that is larger, else serial+1;
 * any other serial becomes serial+1 (mod 2^32, skipping 0). */
uint32_t pdns_serial_next(uint32_t serial, uint32_t today);

/* Pure: rewrites the serial (third field) of SOA content "mname rname serial refresh retry expire
 * minimum". Returns 0, or -1 when content is not a well-formed SOA. */
int pdns_soa_bump(const char *content, uint32_t today, char *out, size_t outlen);

#endif
