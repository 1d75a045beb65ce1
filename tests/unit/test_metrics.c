/* test_metrics.c -- unit tests for the metrics registry: exact exposition text, escaping, histogram
 * buckets, misuse, the series cap, librdkafka statistics, concurrent use.
 * Must not: depend on anything but metrics, json, textbuf and the fixtures under tests/fixtures. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "unit.h"

static char *render(metrics *m)
{
    textbuf tb = TEXTBUF_INIT;
    CHECK_INT(metrics_render(m, &tb), 0);
    char *s = strdup(textbuf_str(&tb));
    textbuf_free(&tb);
    return s;
}

/* The block of one metric: from its "# HELP" line up to the next metric's. Caller frees. */
static char *section(const char *doc, const char *name)
{
    char head[200];
    snprintf(head, sizeof head, "# HELP %s ", name);
    const char *start = strstr(doc, head);
    if (!start)
        return strdup("(missing)");
    const char *end = strstr(start + 1, "# HELP ");
    size_t n = end ? (size_t)(end - start) : strlen(start);
    char *s = malloc(n + 1);
    memcpy(s, start, n);
    s[n] = '\0';
    return s;
}

static void check_section(metrics *m, const char *name, const char *want)
{
    char *doc = render(m);
    char *got = section(doc, name);
    CHECK_STR(got, want);
    free(got);
    free(doc);
}

static void test_fresh(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    check_section(m, "cspdns_events_total",
                  "# HELP cspdns_events_total Kafka records consumed, by event type and outcome.\n"
                  "# TYPE cspdns_events_total counter\n");
    check_section(m, "cspdns_kafka_partitions_assigned",
                  "# HELP cspdns_kafka_partitions_assigned Partitions assigned to this instance.\n"
                  "# TYPE cspdns_kafka_partitions_assigned gauge\n"
                  "cspdns_kafka_partitions_assigned 0\n");
    check_section(m, "cspdns_build_info",
                  "# HELP cspdns_build_info Always 1; the version of cs-pdns in its label.\n"
                  "# TYPE cspdns_build_info gauge\n"
                  "cspdns_build_info{version=\"" CSPDNS_VERSION "\"} 1\n");

    /* Every line is a HELP, a TYPE or a sample of the metric named by the HELP before it, and
     * every metric is cspdns_-prefixed. */
    char *doc = render(m);
    int helps = 0, bad = 0;
    char current[200] = "";
    for (char *line = strtok(doc, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            helps++;
            sscanf(line + 7, "%199s", current);
            bad += strncmp(current, "cspdns_", 7) != 0;
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            bad += strncmp(line + 7, current, strlen(current)) != 0;
        } else {
            bad += strncmp(line, current, strlen(current)) != 0 || !strchr(line, ' ');
        }
    }
    CHECK_INT(helps, METRIC_COUNT);
    CHECK_INT(bad, 0);
    free(doc);
    metrics_free(m);
    metrics_free(NULL);
}

static void test_counters_and_order(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    CHECK_INT(metrics_add(m, METRIC_EVENTS_TOTAL, 1, "VM.DESTROY", "applied", NULL), 0);
    CHECK_INT(metrics_add(m, METRIC_EVENTS_TOTAL, 1, "VM.CREATE", "retried", NULL), 0);
    CHECK_INT(metrics_add(m, METRIC_EVENTS_TOTAL, 2, "VM.CREATE", "applied", NULL), 0);
    CHECK_INT(metrics_add(m, METRIC_EVENTS_TOTAL, 1, "VM.CREATE", "applied", NULL), 0);
    check_section(m, "cspdns_events_total",
                  "# HELP cspdns_events_total Kafka records consumed, by event type and outcome.\n"
                  "# TYPE cspdns_events_total counter\n"
                  "cspdns_events_total{kind=\"VM.CREATE\",outcome=\"applied\"} 3\n"
                  "cspdns_events_total{kind=\"VM.CREATE\",outcome=\"retried\"} 1\n"
                  "cspdns_events_total{kind=\"VM.DESTROY\",outcome=\"applied\"} 1\n");

    /* HTTP statuses sort as numbers; "error" (no response) sorts after them. */
    CHECK_INT(
        metrics_add(m, METRIC_CLOUDSTACK_REQUESTS_TOTAL, 1, "listVirtualMachines", "error", NULL),
        0);
    CHECK_INT(
        metrics_add(m, METRIC_CLOUDSTACK_REQUESTS_TOTAL, 1, "listVirtualMachines", "503", NULL), 0);
    CHECK_INT(
        metrics_add(m, METRIC_CLOUDSTACK_REQUESTS_TOTAL, 4, "listVirtualMachines", "200", NULL), 0);
    CHECK_INT(metrics_add(m, METRIC_CLOUDSTACK_REQUESTS_TOTAL, 1, "listAccounts", "200", NULL), 0);
    check_section(m, "cspdns_cloudstack_requests_total",
                  "# HELP cspdns_cloudstack_requests_total CloudStack API requests, by HTTP "
                  "status.\n"
                  "# TYPE cspdns_cloudstack_requests_total counter\n"
                  "cspdns_cloudstack_requests_total{command=\"listAccounts\",status=\"200\"} 1\n"
                  "cspdns_cloudstack_requests_total{command=\"listVirtualMachines\",status=\"200\"}"
                  " 4\n"
                  "cspdns_cloudstack_requests_total{command=\"listVirtualMachines\",status=\"503\"}"
                  " 1\n"
                  "cspdns_cloudstack_requests_total{command=\"listVirtualMachines\",status="
                  "\"error\"} 1\n");

    double v = -1;
    CHECK_INT(metrics_get(m, METRIC_EVENTS_TOTAL, &v, "VM.CREATE", "applied", NULL), 0);
    CHECK(v == 3);
    CHECK_INT(metrics_get(m, METRIC_EVENTS_TOTAL, &v, "VM.CREATE", "ignored", NULL), -1);
    CHECK(v == 0);

    /* Gauges: set, add either way, values printed so they read back exactly. */
    CHECK_INT(metrics_set(m, METRIC_KAFKA_PARTITIONS_ASSIGNED, 4, NULL), 0);
    CHECK_INT(metrics_add(m, METRIC_KAFKA_PARTITIONS_ASSIGNED, -2, NULL), 0);
    CHECK_INT(metrics_get(m, METRIC_KAFKA_PARTITIONS_ASSIGNED, &v, NULL), 0);
    CHECK(v == 2);
    CHECK_INT(metrics_set(m, METRIC_LAST_EVENT_APPLIED_TIMESTAMP, 1795634134.123, NULL), 0);
    check_section(m, "cspdns_last_event_applied_timestamp_seconds",
                  "# HELP cspdns_last_event_applied_timestamp_seconds Unix time the last event was "
                  "applied.\n"
                  "# TYPE cspdns_last_event_applied_timestamp_seconds gauge\n"
                  "cspdns_last_event_applied_timestamp_seconds 1795634134.123\n");
    CHECK_INT(metrics_set(m, METRIC_CONSECUTIVE_FAILURES, 0.1, NULL), 0);
    check_section(m, "cspdns_consecutive_failures",
                  "# HELP cspdns_consecutive_failures Transient failures in a row of the event in "
                  "hand.\n"
                  "# TYPE cspdns_consecutive_failures gauge\n"
                  "cspdns_consecutive_failures 0.1\n");
    CHECK_INT(metrics_set(m, METRIC_CONSECUTIVE_FAILURES, 1.0 / 3, NULL), 0);
    check_section(m, "cspdns_consecutive_failures",
                  "# HELP cspdns_consecutive_failures Transient failures in a row of the event in "
                  "hand.\n"
                  "# TYPE cspdns_consecutive_failures gauge\n"
                  "cspdns_consecutive_failures 0.33333333333333331\n");
    CHECK_INT(metrics_set(m, METRIC_CONSECUTIVE_FAILURES, INFINITY, NULL), 0);
    char *doc = render(m);
    CHECK(strstr(doc, "\ncspdns_consecutive_failures +Inf\n") != NULL);
    free(doc);

    struct timespec before, after;
    clock_gettime(CLOCK_REALTIME, &before);
    CHECK_INT(metrics_set_to_now(m, METRIC_LAST_RESYNC_SUCCESS_TIMESTAMP, NULL), 0);
    clock_gettime(CLOCK_REALTIME, &after);
    CHECK_INT(metrics_get(m, METRIC_LAST_RESYNC_SUCCESS_TIMESTAMP, &v, NULL), 0);
    CHECK(v >= (double)before.tv_sec && v <= (double)after.tv_sec + 1);
    CHECK(v != floor(v) || after.tv_nsec < 1000); /* sub-second precision is kept */
    metrics_free(m);
}

static void test_escaping(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    CHECK_INT(metrics_add(m, METRIC_POLICY_ERRORS_TOTAL, 1, "say \"hi\"\\now\nthere", NULL), 0);
    /* Invalid UTF-8 becomes U+FFFD; valid multi-byte text is kept. */
    CHECK_INT(metrics_add(m, METRIC_POLICY_ERRORS_TOTAL, 1, "bad\xff\xc3 z\xc3\xa9", NULL), 0);
    check_section(m, "cspdns_policy_errors_total",
                  "# HELP cspdns_policy_errors_total Policy calls that failed or tripped a "
                  "limit.\n"
                  "# TYPE cspdns_policy_errors_total counter\n"
                  "cspdns_policy_errors_total{reason=\"bad\xef\xbf\xbd\xef\xbf\xbd z\xc3\xa9\"} 1\n"
                  "cspdns_policy_errors_total{reason=\"say \\\"hi\\\"\\\\now\\nthere\"} 1\n");

    /* A long value is cut at a character boundary: 127 bytes + a 2-byte character would be 129. */
    char longv[300];
    memset(longv, 'x', 127);
    strcpy(longv + 127, "\xc3\xa9tail");
    CHECK_INT(metrics_add(m, METRIC_RECORDS_SKIPPED_TOTAL, 1, longv, "A", NULL), 0);
    longv[127] = '\0';
    double v = 0;
    CHECK_INT(metrics_get(m, METRIC_RECORDS_SKIPPED_TOTAL, &v, longv, "A", NULL), 0);
    CHECK(v == 1);
    char *doc = render(m);
    char want[400];
    snprintf(want, sizeof want, "cspdns_records_skipped_total{reason=\"%s\",type=\"A\"} 1\n",
             longv);
    CHECK(strstr(doc, want) != NULL);
    free(doc);
    metrics_free(m);
}

static void test_histogram(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    check_section(m, "cspdns_db_transaction_duration_seconds",
                  "# HELP cspdns_db_transaction_duration_seconds Duration of PowerDNS database "
                  "transactions.\n"
                  "# TYPE cspdns_db_transaction_duration_seconds histogram\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"0.001\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"0.0025\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"0.005\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"0.01\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"0.025\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"0.05\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"0.1\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"0.25\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"0.5\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"1\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"2.5\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"5\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"10\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_bucket{le=\"+Inf\"} 0\n"
                  "cspdns_db_transaction_duration_seconds_sum 0\n"
                  "cspdns_db_transaction_duration_seconds_count 0\n");

    /* A bound is inclusive (le); above the last bound only +Inf counts it. */
    CHECK_INT(metrics_observe(m, METRIC_CLOUDSTACK_REQUEST_DURATION, 0.005, "listDomains", NULL),
              0);
    CHECK_INT(metrics_observe(m, METRIC_CLOUDSTACK_REQUEST_DURATION, 0.3, "listDomains", NULL), 0);
    CHECK_INT(metrics_observe(m, METRIC_CLOUDSTACK_REQUEST_DURATION, 31, "listDomains", NULL), 0);
    CHECK_INT(metrics_observe(m, METRIC_CLOUDSTACK_REQUEST_DURATION, 0.75, "listAccounts", NULL),
              0);
    check_section(m, "cspdns_cloudstack_request_duration_seconds",
                  "# HELP cspdns_cloudstack_request_duration_seconds Duration of CloudStack API "
                  "requests.\n"
                  "# TYPE cspdns_cloudstack_request_duration_seconds histogram\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"0.005\"} 0\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"0.01\"} 0\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"0.025\"} 0\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"0.05\"} 0\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"0.1\"} 0\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"0.25\"} 0\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"0.5\"} 0\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"1\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"2.5\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"5\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"10\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"30\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listAccounts\","
                  "le=\"+Inf\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_sum{command=\"listAccounts\"} 0.75\n"
                  "cspdns_cloudstack_request_duration_seconds_count{command=\"listAccounts\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"0.005\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"0.01\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"0.025\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"0.05\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"0.1\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"0.25\"} 1\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"0.5\"} 2\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"1\"} 2\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"2.5\"} 2\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"5\"} 2\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"10\"} 2\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"30\"} 2\n"
                  "cspdns_cloudstack_request_duration_seconds_bucket{command=\"listDomains\","
                  "le=\"+Inf\"} 3\n"
                  "cspdns_cloudstack_request_duration_seconds_sum{command=\"listDomains\"} 31.305\n"
                  "cspdns_cloudstack_request_duration_seconds_count{command=\"listDomains\"} 3\n");
    double v = 0;
    CHECK_INT(metrics_get(m, METRIC_CLOUDSTACK_REQUEST_DURATION, &v, "listDomains", NULL), 0);
    CHECK(v == 3);
    CHECK_INT(metrics_observe(m, METRIC_DB_TRANSACTION_DURATION, 0.002, NULL), 0);
    char *doc = render(m);
    CHECK(strstr(doc, "cspdns_db_transaction_duration_seconds_bucket{le=\"0.001\"} 0\n"
                      "cspdns_db_transaction_duration_seconds_bucket{le=\"0.0025\"} 1\n") != NULL);
    CHECK(strstr(doc, "cspdns_db_transaction_duration_seconds_sum 0.002\n"
                      "cspdns_db_transaction_duration_seconds_count 1\n") != NULL);
    free(doc);
    metrics_free(m);
}

/* Calls that do not fit the metric are refused and change nothing. */
static void test_misuse(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    CHECK_INT(metrics_add(m, METRIC_EVENTS_TOTAL, 1, "VM.CREATE", "applied", NULL), 0);
    char *before = render(m);
    CHECK_INT(metrics_add(m, METRIC_EVENTS_TOTAL, 1, "VM.CREATE", NULL), -1);
    CHECK_INT(metrics_add(m, METRIC_EVENTS_TOTAL, 1, "VM.CREATE", "applied", "extra", NULL), -1);
    CHECK_INT(metrics_add(m, METRIC_EVENTS_TOTAL, -1, "VM.CREATE", "applied", NULL), -1);
    CHECK_INT(metrics_add(m, METRIC_EVENTS_TOTAL, NAN, "VM.CREATE", "applied", NULL), -1);
    CHECK_INT(metrics_set(m, METRIC_EVENTS_TOTAL, 5, "VM.CREATE", "applied", NULL), -1);
    CHECK_INT(metrics_observe(m, METRIC_DB_REACHABLE, 1, NULL), -1);
    CHECK_INT(metrics_add(m, METRIC_DB_TRANSACTION_DURATION, 1, NULL), -1);
    CHECK_INT(metrics_set(m, METRIC_DB_REACHABLE, NAN, NULL), -1);
    CHECK_INT(metrics_set(m, METRIC_COUNT, 1, NULL), -1);
    CHECK_INT(metrics_set(NULL, METRIC_DB_REACHABLE, 1, NULL), -1);
    char *after = render(m);
    CHECK_STR(after, before);
    free(before);
    free(after);
    metrics_free(m);
}

static void test_series_cap(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    int failures = 0;
    char cmd[32];
    for (int i = 0; i < METRICS_MAX_SERIES; i++) {
        snprintf(cmd, sizeof cmd, "list%d", i);
        failures += metrics_add(m, METRIC_CLOUDSTACK_REQUESTS_TOTAL, 1, cmd, "200", NULL) != 0;
    }
    CHECK_INT(failures, 0);
    /* A known label set still counts; a new one is refused and the refusal counted. */
    CHECK_INT(metrics_add(m, METRIC_CLOUDSTACK_REQUESTS_TOTAL, 1, "list7", "200", NULL), 0);
    CHECK_INT(metrics_add(m, METRIC_CLOUDSTACK_REQUESTS_TOTAL, 1, "listMore", "200", NULL), -1);
    double v = 0;
    CHECK_INT(metrics_get(m, METRIC_SERIES_DROPPED_TOTAL, &v, NULL), 0);
    CHECK(v == 1);
    CHECK_INT(metrics_get(m, METRIC_CLOUDSTACK_REQUESTS_TOTAL, &v, "list7", "200", NULL), 0);
    CHECK(v == 2);
    /* Other metrics are not affected by one metric's cap. */
    CHECK_INT(metrics_add(m, METRIC_EVENTS_TOTAL, 1, "VM.START", "applied", NULL), 0);
    metrics_free(m);
}

#define LAG_HEAD                                                                                   \
    "# HELP cspdns_kafka_consumer_lag Records not yet processed, per assigned partition.\n"        \
    "# TYPE cspdns_kafka_consumer_lag gauge\n"

static void test_kafka_stats(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    size_t len;
    char *json = unit_fixture("kafka", "stats_consumer_2.0.2.json", &len);
    char err[300] = "";
    /* The fixture is librdkafka 2.0.2's statistics of a consumer of two topics. On "cloudstack":
     * partition 0 has a stored offset (lag 3, while the committed lag says 5), 1 only a committed
     * one (6), 2 was revoked (desired false), 3 has neither offset, 10 is caught up; -1 is
     * librdkafka's internal partition. */
    CHECK_INT(metrics_update_from_kafka_stats(m, json, len, err, sizeof err), 0);
    CHECK_STR(err, "");
    check_section(m, "cspdns_kafka_consumer_lag",
                  LAG_HEAD "cspdns_kafka_consumer_lag{topic=\"cloudstack\",partition=\"0\"} 3\n"
                           "cspdns_kafka_consumer_lag{topic=\"cloudstack\",partition=\"1\"} 6\n"
                           "cspdns_kafka_consumer_lag{topic=\"cloudstack\",partition=\"10\"} 0\n"
                           "cspdns_kafka_consumer_lag{topic=\"cloudstack-dr\",partition=\"0\"} "
                           "1000\n");
    double v = -1;
    CHECK_INT(metrics_get(m, METRIC_KAFKA_CONSUMER_LAG, &v, "cloudstack", "1", NULL), 0);
    CHECK(v == 6);

    /* A later document: partition 0 was revoked (gone), 9 is new; partitions sort as numbers. */
    const char *later = "{\"name\":\"cs-pdns#consumer-2\",\"type\":\"consumer\",\"topics\":{"
                        "\"cloudstack\":{\"topic\":\"cloudstack\",\"partitions\":{"
                        "\"1\":{\"partition\":1,\"desired\":true,\"consumer_lag\":2,"
                        "\"consumer_lag_stored\":1},"
                        "\"10\":{\"partition\":10,\"desired\":true,\"consumer_lag\":0,"
                        "\"consumer_lag_stored\":0},"
                        "\"9\":{\"partition\":9,\"desired\":true,\"consumer_lag\":-1,"
                        "\"consumer_lag_stored\":7},"
                        "\"-1\":{\"partition\":-1,\"desired\":false,\"consumer_lag\":-1,"
                        "\"consumer_lag_stored\":-1}}}}}";
    CHECK_INT(metrics_update_from_kafka_stats(m, later, strlen(later), err, sizeof err), 0);
    check_section(m, "cspdns_kafka_consumer_lag",
                  LAG_HEAD "cspdns_kafka_consumer_lag{topic=\"cloudstack\",partition=\"1\"} 1\n"
                           "cspdns_kafka_consumer_lag{topic=\"cloudstack\",partition=\"9\"} 7\n"
                           "cspdns_kafka_consumer_lag{topic=\"cloudstack\",partition=\"10\"} 0\n");

    /* Broken documents are refused with a reason and the gauges stay as they were. */
    CHECK_INT(metrics_update_from_kafka_stats(m, json, len / 2, err, sizeof err), -1);
    CHECK(strstr(err, "librdkafka statistics: ") == err);
    CHECK_INT(metrics_update_from_kafka_stats(m, "[1,2]", 5, err, sizeof err), -1);
    CHECK(strstr(err, "\"topics\"") != NULL);
    CHECK_INT(metrics_update_from_kafka_stats(m, "{\"topics\":[]}", 13, err, sizeof err), -1);
    CHECK_INT(metrics_get(m, METRIC_KAFKA_CONSUMER_LAG, &v, "cloudstack", "1", NULL), 0);
    CHECK(v == 1);

    /* Before the first metadata there are no topics: no lag series at all. */
    const char *early = "{\"name\":\"cs-pdns#consumer-2\",\"type\":\"consumer\",\"topics\":{}}";
    CHECK_INT(metrics_update_from_kafka_stats(m, early, strlen(early), err, sizeof err), 0);
    check_section(m, "cspdns_kafka_consumer_lag", LAG_HEAD);
    free(json);
    metrics_free(m);
}

#define THREAD_ADDS 20000

static void *adder(void *arg)
{
    metrics *m = arg;
    for (int i = 0; i < THREAD_ADDS; i++) {
        metrics_add(m, METRIC_EVENTS_TOTAL, 1, "VM.CREATE", "applied", NULL);
        metrics_observe(m, METRIC_DB_TRANSACTION_DURATION, 0.01, NULL);
    }
    return NULL;
}

static void *renderer(void *arg)
{
    metrics *m = arg;
    for (int i = 0; i < 200; i++) {
        textbuf tb = TEXTBUF_INIT;
        metrics_render(m, &tb);
        textbuf_free(&tb);
    }
    return NULL;
}

static void test_threads(void)
{
    metrics *m = NULL;
    CHECK_INT(metrics_new(&m), 0);
    pthread_t t[3];
    pthread_create(&t[0], NULL, adder, m);
    pthread_create(&t[1], NULL, adder, m);
    pthread_create(&t[2], NULL, renderer, m);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    double v = 0;
    CHECK_INT(metrics_get(m, METRIC_EVENTS_TOTAL, &v, "VM.CREATE", "applied", NULL), 0);
    CHECK(v == 2 * THREAD_ADDS);
    CHECK_INT(metrics_get(m, METRIC_DB_TRANSACTION_DURATION, &v, NULL), 0);
    CHECK(v == 2 * THREAD_ADDS);
    metrics_free(m);
}

int main(void)
{
    test_fresh();
    test_counters_and_order();
    test_escaping();
    test_histogram();
    test_misuse();
    test_series_cap();
    test_kafka_stats();
    test_threads();
    return unit_done("test_metrics");
}
