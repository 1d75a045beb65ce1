/* store_writer.h -- runs one batch's PowerDNS transaction on a thread of its own, so the host
 * decodes and names the next batch while the database works. Must not: touch Kafka, the policy,
 * metrics or anything but the store it is handed; run two transactions at once. */
#ifndef CSPDNS_STORE_WRITER_H
#define CSPDNS_STORE_WRITER_H

#include <stddef.h>

#include "pdns_store.h"
#include "status.h"

/* One transaction: filled by store_writer_start, read after store_writer_wait. */
struct store_write {
    struct pdns_store *store;
    struct pdns_vm_records *vms;
    size_t n;
    csp_status status;
    struct pdns_apply_stats total;
    char err[4096];
    long long ms; /* how long the transaction took */
};

/* The thread, started once and kept: a thread started per batch cost a few milliseconds of
 * latency on a quiet system. */
struct store_writer;

/* Returns 0, or -1 when out of memory. When no thread can be started, the writer runs each
 * transaction on the caller's thread: slower, never wrong. */
int store_writer_new(struct store_writer **out);

/* Waits for the transaction in flight, if any, and ends the thread. NULL is ignored. */
void store_writer_free(struct store_writer *w);

/* Runs pdns_store_apply_many_txn on vms[0..n) on the writer thread. One transaction at a time: the
 * previous one must have been waited for. Until store_writer_wait returns, the caller must not use
 * the store, t, vms, or what they point to. */
void store_writer_start(struct store_writer *w, struct store_write *t, struct pdns_store *store,
                        struct pdns_vm_records *vms, size_t n);

/* Waits for the transaction; returns its status (t->err says why on failure, t->total and each
 * vms[i].stats are filled on success, t->ms either way). */
csp_status store_writer_wait(struct store_writer *w, struct store_write *t);

#endif
