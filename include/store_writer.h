/* store_writer.h -- runs one batch's PowerDNS transaction on a thread of its own, so the host
 * decodes and names the next batch while the database works. Must not: touch Kafka, the policy,
 * metrics or anything but the store it is handed; run two transactions at once. */
#ifndef CSPDNS_STORE_WRITER_H
#define CSPDNS_STORE_WRITER_H

#include <pthread.h>
#include <stddef.h>

#include "pdns_store.h"
#include "status.h"

/* One transaction in flight. Filled by store_writer_start; read after store_writer_wait. */
struct store_write {
    struct pdns_store *store;
    struct pdns_vm_records *vms;
    size_t n;
    csp_status status;
    struct pdns_apply_stats total;
    char err[4096];
    long long ms; /* how long the transaction took */
    pthread_t thread;
    int threaded; /* 0: it ran on the caller's thread (no thread could be started) */
};

/* Begins, applies vms[0..n) with pdns_store_apply_many and commits (rolls back on failure). Until
 * store_writer_wait returns, the caller must not use the store nor vms, nor what they point to. */
void store_writer_start(struct store_write *w, struct pdns_store *store,
                        struct pdns_vm_records *vms, size_t n);

/* Waits for the transaction; returns its status (w->err says why on failure, w->total and each
 * vms[i].stats are filled on success, w->ms either way). */
csp_status store_writer_wait(struct store_write *w);

#endif
