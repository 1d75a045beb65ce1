/* resync.h -- converges PowerDNS to CloudStack's whole state: lists every VM, hands each to the
 * caller's per-VM path, then clears the records of VMs that are gone -- only after a complete
 * listing, and never more than the configured share of the owned records unless forced.
 * Must not: hold SQL or naming rules; it drives the listing, the store and the caller's
 * callback, and reports what happened (or, in a dry run, what would). */
#ifndef CSPDNS_RESYNC_H
#define CSPDNS_RESYNC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cloudstack.h"
#include "json.h"
#include "pdns_store.h"
#include "textbuf.h"

/* ---- the plan: changes grouped by zone, for dry runs and `cs-pdns plan` ---- */

struct resync_plan;

int resync_plan_new(struct resync_plan **out); /* 0, or -1 when memory ran out */
void resync_plan_free(struct resync_plan *pl);

/* Adds vm_id's changes (from pdns_store_plan). Returns 0, or -1 when memory ran out. */
int resync_plan_add(struct resync_plan *pl, const char *vm_id, const struct pdns_change *c,
                    size_t n);

/* Text: for each zone (sorted), "zone <name>" then one line per change, sorted by name:
 *   "  + <name> <type> <content> ttl=<ttl> vm=<id>"      added (", shared" when co-owned)
 *   "  - <name> <type> <content> ttl=<ttl> vm=<id>"      removed (", shared": the row stays)
 *   "  ~ <name> <type> <content> ttl=<old>-><new> vm=<id>"
 * then "skipped" with "  no zone: ..." and "  hand-made row exists: ..." lines; "no changes"
 * when there are none. JSON: {"zones":[{"zone","add":[..],"remove":[..],"ttl":[..]}],
 * "skipped":[..]} members (no braces around them), records as
 * {"name","type","content","ttl","vm"} plus "shared" (add/remove), "old_ttl" (ttl) and
 * "reason" ("no_zone" or "hand_made", skipped). Returns 0, or -1 when memory ran out. */
int resync_plan_write(const struct resync_plan *pl, int json, textbuf *out);

/* ---- the resync ---- */

/* How the caller's per-VM path ended for one VM. */
enum resync_vm_outcome {
    RESYNC_VM_OK = 0,           /* reconciled, or planned */
    RESYNC_VM_SKIPPED = 1,      /* cannot be reconciled as it is (a policy error): logged, nothing
                                   written for it, the open transaction intact */
    RESYNC_VM_RETRY = 2,        /* CloudStack failed transiently (also inside the policy):
                                   nothing written for it, the open transaction intact */
    RESYNC_VM_STORE_RETRY = 3,  /* the database failed transiently: the open transaction (if
                                   any) was rolled back */
    RESYNC_VM_STORE_FAILED = 4, /* the database refused the change: rolled back likewise */
};

/* The caller's per-VM path, the one its events use: makes vm_id's records match vm, the VM as
 * CloudStack returns it now (NULL: the VM no longer exists, so it has no records).
 * in_txn: apply inside the transaction the resync opened with pdns_store_begin (the resync
 * commits it); otherwise in a transaction of its own. plan: write nothing, add the changes to
 * plan instead. stats: add the apply's (or plan's) counts. */
typedef enum resync_vm_outcome (*resync_vm_fn)(void *ud, const char *vm_id, const json_value *vm,
                                               int in_txn, struct resync_plan *plan,
                                               struct pdns_apply_stats *stats);

/* The set-based path (optional, see resync_set_batch_path): one VM of a batch. */
struct resync_vm {
    const char *vm_id;
    const json_value *vm;    /* NULL: the VM no longer exists */
    struct dns_record *recs; /* want: malloc'ed desired records; the resync frees them */
    size_t n;
    int apply;                     /* want: recs are to be written (0: the policy left them) */
    struct pdns_apply_stats stats; /* the batch's apply for this VM (filled before applied) */
};

struct resync_batch_path {
    /* The first half of the per-VM path, writing nothing: fills v->recs, v->n and v->apply.
     * Returns RESYNC_VM_OK, RESYNC_VM_SKIPPED or RESYNC_VM_RETRY, as resync_vm_fn would. */
    enum resync_vm_outcome (*want)(void *ud, struct resync_vm *v);
    /* After the transaction that applied v (with pdns_store_apply_many) committed: v->stats
     * holds what it did; logs and counts it. */
    void (*applied)(void *ud, const struct resync_vm *v);
    /* Applies v's records in a transaction of its own (after the batch's failed), adding the
     * counts to stats. Returns RESYNC_VM_OK, RESYNC_VM_STORE_RETRY or RESYNC_VM_STORE_FAILED. */
    enum resync_vm_outcome (*store_one)(void *ud, const struct resync_vm *v,
                                        struct pdns_apply_stats *stats);
};

struct resync_config {
    unsigned page_size;     /* VMs per listVirtualMachines page, 1..500 */
    int max_delete_percent; /* refuse removals above this share of the owned records */
    int force;              /* ignore max_delete_percent */
    int dry_run;            /* write nothing: plan every change (the store may be read-only) */
    int progress;           /* draw a progress line on stderr (for a terminal) */
    unsigned batch;         /* VMs per transaction and per resync_step; 0: 500 */
    /* Scale-out: when partition_count > 0 the resync handles only the VMs whose id maps, by
     * Kafka's default partitioner (kafka_partition_for_key), to one of partitions[0..
     * npartitions) -- listing, reconciling and removing -- so instances of one consumer group
     * never resync the same VM. 0: every VM (the `resync` subcommand). Copied by resync_new. */
    int32_t partition_count;
    const int32_t *partitions;
    size_t npartitions;
};

enum resync_result {
    RESYNC_CONVERGED = 0,  /* every VM reconciled, the records of VMs that are gone removed */
    RESYNC_INCOMPLETE = 1, /* the listing was incomplete (then nothing was removed) or some VMs
                              could not be reconciled */
    RESYNC_GUARDED = 2,    /* removals above max_delete_percent were refused: none was done */
    RESYNC_ABORTED = 3,    /* CloudStack or the database kept failing: stopped early */
};

struct resync_stats {
    size_t vms_listed;         /* distinct VMs CloudStack listed */
    size_t vms_in_scope;       /* of those, in this instance's partitions (all when unscoped) */
    size_t vms_failed;         /* listed or absent VMs that could not be reconciled */
    size_t vms_absent;         /* VMs owning records that the listing did not hold */
    size_t vms_gone;           /* of those, confirmed gone by CloudStack and cleared */
    unsigned pages;            /* listing pages fetched */
    unsigned long owned;       /* owned records when the removals were weighed */
    unsigned long absent_recs; /* of those, owned by absent VMs */
    struct pdns_apply_stats records;
    double seconds;
};

struct resync;

int resync_new(const struct resync_config *cfg, struct cloudstack *cs, struct pdns_store *st,
               resync_vm_fn fn, void *ud, struct resync **out, char *err, size_t errlen);
void resync_free(struct resync *r);

/* Writes each batch set-based (path's functions, all required): every VM's records are
 * computed first, then applied with one pdns_store_apply_many and committed, so a batch costs
 * a handful of round trips; when that fails each VM is applied in a transaction of its own
 * (store_one). Without it each VM goes through resync_new's fn. Dry runs always use fn. */
void resync_set_batch_path(struct resync *r, const struct resync_batch_path *path);

/* Told after each database operation the resync runs itself -- the batches' transactions and
 * the read of who owns records; the per-VM path reports its own: its status, and for a
 * transaction how long it took from begin to commit or rollback, in seconds (< 0 for the read).
 * Lets the caller keep its database health and latency figures without the resync knowing them. */
typedef void (*resync_store_fn)(void *ud, csp_status st, double txn_seconds);

/* Optional; fn gets resync_new's ud. */
void resync_set_store_observer(struct resync *r, resync_store_fn fn);

/* Does one bounded slice of work -- fetch a page, reconcile one batch of VMs, weigh the
 * removals -- so the caller can interleave its events. Returns 1 while work remains, 0 once
 * the resync has ended (it then logged its summary line). */
int resync_step(struct resync *r);

/* Ends a resync that resync_step has not ended (a signal stopped its caller): the result is
 * RESYNC_ABORTED and it logs its summary line. Does nothing once the resync has ended. */
void resync_stop(struct resync *r);

/* The caller just processed an event for vm_id. If that VM is in the page in hand and not yet
 * reconciled, the resync re-reads it instead of using its (older) listed state, so the event's
 * result is never overwritten by a stale listing. */
void resync_note_event(struct resync *r, const char *vm_id);

/* After the end: the outcome, with why (one line) when it is not RESYNC_CONVERGED. */
enum resync_result resync_result(const struct resync *r, char *why, size_t whylen);
const struct resync_stats *resync_get_stats(const struct resync *r);
/* 1 when the resync failed in a way that may pass soon (a listing page failed, or CloudStack or
 * the database kept failing), so trying again before the next interval is worth it. 0 for a
 * guard trip, VMs changing during the listing, or a policy failing on some VM. */
int resync_retry_soon(const struct resync *r);

/* The report of an ended resync: the plan (dry run), the VMs absent from the listing, the
 * deletion guard's figures and the totals, as text or JSON (documented in README, "Resync").
 * Returns 0, or -1 when memory ran out. */
int resync_report(const struct resync *r, int json, textbuf *out);

/* Pure: 1 when the resync under cfg handles vm_id (lower-case, as CloudStack writes VM ids and
 * keys its events): always when cfg->partition_count is 0, else when kafka_partition_for_key of
 * its bytes is one of cfg->partitions. */
int resync_in_scope(const struct resync_config *cfg, const char *vm_id);

/* Pure: 1 when removing remove of owned records is allowed under max_percent (or force). */
int resync_guard_allows(unsigned long remove, unsigned long owned, int max_percent, int force);

/* Pure: "12s", "3m05s", "2h01m"; out must hold 16 bytes. */
void resync_format_duration(double seconds, char out[16]);

/* ---- migrating from cs-powerdns-integration ---- */

/* `cs-pdns adopt-cs-mapping [--dry-run]`: opens the database of s, adopts cs_mapping (see
 * pdns_store_adopt_cs_mapping) and prints what it did to out. Returns 0, 1 (database failure)
 * or 2 (settings); err holds the message for 1 and 2. */
int resync_adopt_cs_mapping(const struct settings *s, int dry_run, FILE *out, char *err,
                            size_t errlen);

#endif
