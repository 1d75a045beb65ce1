/* pipeline.h -- turns each consumed event into the records its VM should have, and applies them.
 * Must not: be bypassed; it is the only module that knows Kafka, CloudStack, the policy and the
 * store. */
#ifndef CSPDNS_PIPELINE_H
#define CSPDNS_PIPELINE_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include "settings.h"

/* Flags the signal handlers set; the pipeline reads them between events. */
struct pipeline_signals {
    volatile sig_atomic_t stop;   /* SIGTERM/SIGINT: finish the event in hand, commit, leave */
    volatile sig_atomic_t reload; /* SIGHUP: reload the policy, keep the old one if the new fails */
};

/* What happened to one event. */
typedef enum {
    PIPE_DONE = 0,  /* applied, or nothing to do: commit it */
    PIPE_SKIP = 1,  /* unusable (malformed, policy error): logged, commit it */
    PIPE_RETRY = 2, /* a service failed transiently: process it again later */
} pipe_outcome;

/* Exit statuses of pipeline_run and the setup functions; GUARDED only from pipeline_resync. */
enum {
    PIPELINE_EXIT_OK = 0,
    PIPELINE_EXIT_RUNTIME = 1,
    PIPELINE_EXIT_CONFIG = 2,
    PIPELINE_EXIT_GUARDED = 3, /* the resync refused removals above RESYNC_MAX_DELETE_PERCENT */
};

struct pipeline;

/* Loads the policy and prepares the CloudStack client (no network yet). A policy that does not
 * load is a configuration error: returns PIPELINE_EXIT_CONFIG with err naming POLICY_FILE. */
int pipeline_new(const struct settings *s, struct pipeline_signals *sig, struct pipeline **out,
                 char *err, size_t errlen);
void pipeline_free(struct pipeline *p);

/* Connects to the database (waiting while it is unreachable) and Kafka, then consumes until
 * sig->stop. Returns PIPELINE_EXIT_* with err set on failure. */
int pipeline_run(struct pipeline *p, char *err, size_t errlen);

/* Processes one message as pipeline_run does, without Kafka (tests, replays). The store must be
 * connected (pipeline_run connects it; pipeline_connect_store for other callers). */
pipe_outcome pipeline_handle(struct pipeline *p, const char *topic, int partition, long long offset,
                             const char *payload, size_t len);
int pipeline_connect_store(struct pipeline *p, char *err, size_t errlen);

/* `cs-pdns resync`: lists every VM once and converges the database (see resync.h), or with
 * dry_run only plans, on a read-only connection. Prints the report to out. Returns
 * PIPELINE_EXIT_OK when converged, PIPELINE_EXIT_GUARDED when the deletion guard refused,
 * PIPELINE_EXIT_RUNTIME when it did not converge (err says why), PIPELINE_EXIT_CONFIG. */
struct pipeline_resync_opts {
    int dry_run;
    int json;
    int force;    /* ignore RESYNC_MAX_DELETE_PERCENT */
    int progress; /* draw a progress line on stderr */
    FILE *out;
};
int pipeline_resync(struct pipeline *p, const struct pipeline_resync_opts *o, char *err,
                    size_t errlen);

/* `cs-pdns plan`: decodes one event as the daemon does, reads what it needs from CloudStack,
 * runs the policy (ctx.trigger "plan") and prints the records to out; with MYSQL_PDNS_HOST set
 * also the changes against the database, read without writing. Returns PIPELINE_EXIT_*. */
int pipeline_plan_event(struct pipeline *p, const char *payload, size_t len, int json, FILE *out,
                        char *err, size_t errlen);

#endif
