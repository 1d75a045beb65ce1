/* store_writer.c -- one batch's PowerDNS transaction on a thread of its own, overlapping the
 * next batch's preparation. Must not: touch anything but the store it is handed. */
#define _GNU_SOURCE
#include "store_writer.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

struct store_writer {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a transaction was posted or finished, or the thread must stop */
    pthread_t thread;
    int threaded;
    int stop;
    struct store_write *posted; /* the transaction in flight; NULL once it finished */
};

static void run_transaction(struct store_write *t)
{
    long long t0 = clock_ms();
    memset(&t->total, 0, sizeof t->total);
    t->err[0] = '\0';
    t->status = pdns_store_apply_many_txn(t->store, t->vms, t->n, &t->total, t->err, sizeof t->err);
    t->ms = clock_ms() - t0;
}

static void *writer_main(void *arg)
{
    struct store_writer *w = arg;
    /* Named for top -H and perf: the database's share of cs-pdns's CPU shows on its own. */
    pthread_setname_np(pthread_self(), "store-writer");
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->posted && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->posted)
            break;
        struct store_write *t = w->posted;
        pthread_mutex_unlock(&w->mu);
        run_transaction(t);
        pthread_mutex_lock(&w->mu);
        w->posted = NULL;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int store_writer_new(struct store_writer **out)
{
    struct store_writer *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    /* The thread starts with every signal blocked: SIGTERM and SIGHUP are the main thread's to
     * handle, and none interrupts a statement. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    w->threaded = pthread_create(&w->thread, NULL, writer_main, w) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    *out = w;
    return 0;
}

void store_writer_free(struct store_writer *w)
{
    if (!w)
        return;
    if (w->threaded) {
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        /* The thread finishes the transaction in flight before it sees stop. */
        pthread_join(w->thread, NULL);
    }
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

void store_writer_start(struct store_writer *w, struct store_write *t, struct pdns_store *store,
                        struct pdns_vm_records *vms, size_t n)
{
    t->store = store;
    t->vms = vms;
    t->n = n;
    if (!w->threaded) {
        run_transaction(t);
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->posted = t;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

csp_status store_writer_wait(struct store_writer *w, struct store_write *t)
{
    if (w->threaded) {
        pthread_mutex_lock(&w->mu);
        while (w->posted == t)
            pthread_cond_wait(&w->cv, &w->mu);
        pthread_mutex_unlock(&w->mu);
    }
    return t->status;
}
