/* metrics.h -- the process's Prometheus metrics: a fixed set of counters, gauges and histograms,
 * updated by the main loop and rendered in the text exposition format 0.0.4 by the HTTP thread.
 * Must not: do I/O or know the modules it counts for; callers push values into it. */
#ifndef CSPDNS_METRICS_H
#define CSPDNS_METRICS_H

#include <stddef.h>

#include "textbuf.h"

/* Every metric cs-pdns exports. Label names are fixed per metric and listed here in the order
 * callers pass the values. The suggested label values keep the series set small and stable;
 * any value is accepted (escaped on output, truncated to METRICS_MAX_LABEL_LEN bytes). */
typedef enum {
    /* Counters (metrics_add with delta >= 0). */
    METRIC_EVENTS_TOTAL,              /* cspdns_events_total{kind,outcome}: every consumed record.
                                         kind: the event type ("VM.CREATE") or "other";
                                         outcome: applied|ignored|bad_input|retried|skipped */
    METRIC_RECORDS_CHANGED_TOTAL,     /* cspdns_records_changed_total{change,type}:
                                         change added|removed|updated; type A|AAAA|PTR|other */
    METRIC_RECORDS_SKIPPED_TOTAL,     /* cspdns_records_skipped_total{reason,type}:
                                         reason no_zone|foreign; type as above */
    METRIC_POLICY_ERRORS_TOTAL,       /* cspdns_policy_errors_total{reason}:
                                         error|invalid|instructions|timeout|memory */
    METRIC_CLOUDSTACK_REQUESTS_TOTAL, /* cspdns_cloudstack_requests_total{command,status}:
                                         status is the HTTP status, or "error" without one */
    METRIC_PDNS_CACHE_PURGES_TOTAL,   /* cspdns_pdns_cache_purges_total{outcome}: names whose
                                         PowerDNS cache purge after a commit ok|failed */
    METRIC_SERIES_DROPPED_TOTAL,      /* cspdns_metrics_series_dropped_total: label sets refused
                                         because a metric already had METRICS_MAX_SERIES */
    /* Histograms (metrics_observe, in seconds). */
    METRIC_CLOUDSTACK_REQUEST_DURATION, /* cspdns_cloudstack_request_duration_seconds{command} */
    METRIC_BATCH_VMS,                   /* cspdns_batch_vms: VMs written per event batch (one
                                           transaction; not seconds) */
    METRIC_DB_TRANSACTION_DURATION,     /* cspdns_db_transaction_duration_seconds: begin to
                                           commit or rollback of one store transaction */
    /* Gauges (metrics_set, metrics_add with any sign). */
    METRIC_KAFKA_CONSUMER_LAG,            /* cspdns_kafka_consumer_lag{topic,partition}: filled only
                                             by metrics_update_from_kafka_stats */
    METRIC_KAFKA_PARTITIONS_ASSIGNED,     /* cspdns_kafka_partitions_assigned */
    METRIC_DB_REACHABLE,                  /* cspdns_db_reachable: 1 after the last database
                                             operation succeeded, 0 after it could not connect */
    METRIC_POLICY_LOADED,                 /* cspdns_policy_loaded: 1 while a policy is loaded */
    METRIC_CONSECUTIVE_FAILURES,          /* cspdns_consecutive_failures: transient failures in a
                                             row of the event in hand; 0 once it went through */
    METRIC_LAST_EVENT_APPLIED_TIMESTAMP,  /* cspdns_last_event_applied_timestamp_seconds */
    METRIC_LAST_RESYNC_SUCCESS_TIMESTAMP, /* cspdns_last_resync_success_timestamp_seconds */
    METRIC_BUILD_INFO,                    /* cspdns_build_info{version} = 1, set by metrics_new */
    METRIC_COUNT
} metric_id;

/* A metric holds at most this many label sets; more are refused and counted in
 * METRIC_SERIES_DROPPED_TOTAL, so a label fed from input (a policy's cs.call command) cannot
 * grow memory or the scrape without bound. */
#define METRICS_MAX_SERIES 1000
/* Longer label values are cut (at a UTF-8 character boundary). */
#define METRICS_MAX_LABEL_LEN 128

typedef struct metrics metrics;

/* Creates the registry with every metric at zero (labelled ones with no series yet) and
 * cspdns_build_info{version=CSPDNS_VERSION} 1. Returns 0, or -1 when memory ran out. */
int metrics_new(metrics **out);
/* Frees the registry once nothing else uses it (stop the HTTP server first). NULL is a no-op. */
void metrics_free(metrics *m);

/* Updates one series. After the value come the metric's label values, in the order listed above,
 * then NULL: metrics_add(m, METRIC_EVENTS_TOTAL, 1, "VM.CREATE", "applied", NULL);
 * metrics_set(m, METRIC_DB_REACHABLE, 1, NULL). A series is created on first use.
 * All are thread-safe. They return 0, or -1 when the call does not fit the metric (wrong kind,
 * wrong number of labels, a negative counter delta), the series cap was hit, or memory ran out;
 * the registry is then unchanged, so callers may ignore the result. */
int metrics_add(metrics *m, metric_id id, double delta, ...) __attribute__((sentinel));
int metrics_set(metrics *m, metric_id id, double value, ...) __attribute__((sentinel));
/* Sets a gauge to the current Unix time in seconds (with sub-second precision). */
int metrics_set_to_now(metrics *m, metric_id id, ...) __attribute__((sentinel));
/* Records one observation in a histogram. */
int metrics_observe(metrics *m, metric_id id, double value, ...) __attribute__((sentinel));

/* Reads a series: a counter's or gauge's value, a histogram's observation count. Returns 0, or -1
 * (*out = 0) when the series does not exist yet or the labels do not fit the metric. */
int metrics_get(metrics *m, metric_id id, double *out, ...) __attribute__((sentinel));

/* Appends the whole registry in the Prometheus text format 0.0.4 (Content-Type
 * "text/plain; version=0.0.4; charset=utf-8"): per metric "# HELP" and "# TYPE", then its series
 * sorted by label values (numbers numerically). Returns 0, or -1 when memory ran out. */
int metrics_render(metrics *m, textbuf *out);

/* Replaces METRIC_KAFKA_CONSUMER_LAG with the partitions of one librdkafka statistics document
 * (the JSON given to rd_kafka_conf_set_stats_cb; enable it with statistics.interval.ms). Only
 * partitions this consumer fetches count ("desired": true, not the internal partition -1). The
 * lag is consumer_lag_stored (high watermark minus the last offset cs-pdns finished), else
 * consumer_lag (minus the committed offset); a partition where neither is known yet (nothing
 * stored or committed) has no series. Partitions no longer assigned disappear.
 * Returns 0, or -1 with err saying what is wrong with the document (the gauges are then kept). */
int metrics_update_from_kafka_stats(metrics *m, const char *json, size_t len, char *err,
                                    size_t errlen);

#endif
