/* store_writer.c -- one batch's PowerDNS transaction on a thread of its own, overlapping the
 * next batch's preparation. Must not: touch anything but the store it is handed. */
#define _GNU_SOURCE
#include "store_writer.h"

#include <string.h>

#include "clock.h"

static void run_transaction(struct store_write *w)
{
    long long t0 = clock_ms();
    memset(&w->total, 0, sizeof w->total);
    w->err[0] = '\0';
    w->status = pdns_store_begin(w->store, w->err, sizeof w->err);
    if (w->status == CSP_OK)
        w->status = pdns_store_apply_many(w->store, w->vms, w->n, w->err, sizeof w->err);
    if (w->status == CSP_OK)
        w->status = pdns_store_commit(w->store, &w->total, w->err, sizeof w->err);
    if (w->status != CSP_OK)
        pdns_store_rollback(w->store);
    w->ms = clock_ms() - t0;
}

static void *writer_main(void *arg)
{
    /* Named for top -H and perf: the database's share of cs-pdns's CPU shows on its own. */
    pthread_setname_np(pthread_self(), "store-writer");
    run_transaction(arg);
    return NULL;
}

void store_writer_start(struct store_write *w, struct pdns_store *store,
                        struct pdns_vm_records *vms, size_t n)
{
    w->store = store;
    w->vms = vms;
    w->n = n;
    /* Without a thread the batch is written at once: slower, never wrong. */
    w->threaded = pthread_create(&w->thread, NULL, writer_main, w) == 0;
    if (!w->threaded)
        run_transaction(w);
}

csp_status store_writer_wait(struct store_write *w)
{
    if (w->threaded) {
        pthread_join(w->thread, NULL);
        w->threaded = 0;
    }
    return w->status;
}
