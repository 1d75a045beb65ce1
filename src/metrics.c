/* metrics.c -- the metrics registry behind one mutex, its text exposition, and the librdkafka
 * statistics reader. Must not: block on anything but its own mutex, or log; a scrape and an update
 * only ever wait for each other. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"

#define MAX_LABELS 2

enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };

struct family_def {
    const char *name;
    const char *help;
    enum kind kind;
    size_t nlabels;
    const char *labels[MAX_LABELS];
    const double *bounds; /* histogram upper bounds, ascending; +Inf is implied */
    size_t nbounds;
};

/* CloudStack calls are bounded by CS_TIMEOUT (10 s by default) and retried; a database
 * transaction of one VM normally takes milliseconds, so its buckets start lower. */
static const double cs_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double batch_bounds[] = {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500};
static const double db_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                   0.25,  0.5,    1,     2.5,  5,     10};
#define BOUNDS(b) .bounds = (b), .nbounds = sizeof(b) / sizeof((b)[0])

static const struct family_def defs[METRIC_COUNT] = {
    [METRIC_EVENTS_TOTAL] = {.name = "cspdns_events_total",
                             .help = "Kafka records consumed, by event type and outcome.",
                             .kind = KIND_COUNTER,
                             .nlabels = 2,
                             .labels = {"kind", "outcome"}},
    [METRIC_RECORDS_CHANGED_TOTAL] = {.name = "cspdns_records_changed_total",
                                      .help = "DNS records changed in the PowerDNS database, "
                                              "by change and record type.",
                                      .kind = KIND_COUNTER,
                                      .nlabels = 2,
                                      .labels = {"change", "type"}},
    [METRIC_RECORDS_SKIPPED_TOTAL] = {.name = "cspdns_records_skipped_total",
                                      .help = "Records a policy wanted that were not written, "
                                              "by reason and record type.",
                                      .kind = KIND_COUNTER,
                                      .nlabels = 2,
                                      .labels = {"reason", "type"}},
    [METRIC_POLICY_ERRORS_TOTAL] = {.name = "cspdns_policy_errors_total",
                                    .help = "Policy calls that failed or tripped a limit.",
                                    .kind = KIND_COUNTER,
                                    .nlabels = 1,
                                    .labels = {"reason"}},
    [METRIC_CLOUDSTACK_REQUESTS_TOTAL] = {.name = "cspdns_cloudstack_requests_total",
                                          .help = "CloudStack API requests, by HTTP status.",
                                          .kind = KIND_COUNTER,
                                          .nlabels = 2,
                                          .labels = {"command", "status"}},
    [METRIC_PDNS_CACHE_PURGES_TOTAL] = {.name = "cspdns_pdns_cache_purges_total",
                                        .help = "Names purged from PowerDNS's caches after a "
                                                "commit, by outcome.",
                                        .kind = KIND_COUNTER,
                                        .nlabels = 1,
                                        .labels = {"outcome"}},
    [METRIC_SERIES_DROPPED_TOTAL] = {.name = "cspdns_metrics_series_dropped_total",
                                     .help = "Label sets not recorded: a metric had too many.",
                                     .kind = KIND_COUNTER},
    [METRIC_CLOUDSTACK_REQUEST_DURATION] = {.name = "cspdns_cloudstack_request_duration_seconds",
                                            .help = "Duration of CloudStack API requests.",
                                            .kind = KIND_HISTOGRAM,
                                            .nlabels = 1,
                                            .labels = {"command"},
                                            BOUNDS(cs_bounds)},
    [METRIC_BATCH_VMS] = {.name = "cspdns_batch_vms",
                          .help = "VMs written per event batch (one database transaction).",
                          .kind = KIND_HISTOGRAM,
                          BOUNDS(batch_bounds)},
    [METRIC_DB_TRANSACTION_DURATION] = {.name = "cspdns_db_transaction_duration_seconds",
                                        .help = "Duration of PowerDNS database transactions.",
                                        .kind = KIND_HISTOGRAM,
                                        BOUNDS(db_bounds)},
    [METRIC_KAFKA_CONSUMER_LAG] = {.name = "cspdns_kafka_consumer_lag",
                                   .help = "Records not yet processed, per assigned partition.",
                                   .kind = KIND_GAUGE,
                                   .nlabels = 2,
                                   .labels = {"topic", "partition"}},
    [METRIC_KAFKA_PARTITIONS_ASSIGNED] = {.name = "cspdns_kafka_partitions_assigned",
                                          .help = "Partitions assigned to this instance.",
                                          .kind = KIND_GAUGE},
    [METRIC_DB_REACHABLE] = {.name = "cspdns_db_reachable",
                             .help = "1 when the last database operation reached the database.",
                             .kind = KIND_GAUGE},
    [METRIC_POLICY_LOADED] = {.name = "cspdns_policy_loaded",
                              .help = "1 when a policy is loaded.",
                              .kind = KIND_GAUGE},
    [METRIC_CONSECUTIVE_FAILURES] = {.name = "cspdns_consecutive_failures",
                                     .help = "Transient failures in a row of the event in hand.",
                                     .kind = KIND_GAUGE},
    [METRIC_LAST_EVENT_APPLIED_TIMESTAMP] = {.name = "cspdns_last_event_applied_timestamp_seconds",
                                             .help = "Unix time the last event was applied.",
                                             .kind = KIND_GAUGE},
    [METRIC_LAST_RESYNC_SUCCESS_TIMESTAMP] = {.name =
                                                  "cspdns_last_resync_success_timestamp_seconds",
                                              .help = "Unix time the last resync completed.",
                                              .kind = KIND_GAUGE},
    [METRIC_BUILD_INFO] = {.name = "cspdns_build_info",
                           .help = "Always 1; the version of cs-pdns in its label.",
                           .kind = KIND_GAUGE,
                           .nlabels = 1,
                           .labels = {"version"}},
};

struct series {
    char *labels[MAX_LABELS]; /* cleaned values (valid UTF-8, length-capped), owned */
    double value;             /* counter or gauge value; the sum of a histogram */
    uint64_t count;           /* histogram observations */
    uint64_t *buckets;        /* histogram, per bound, not cumulative; owned */
};

struct family {
    struct series *s; /* sorted by compare_labels */
    size_t n, cap;
};

struct metrics {
    pthread_mutex_t mu;
    struct family fam[METRIC_COUNT];
};

enum op { OP_ADD, OP_SET, OP_OBSERVE, OP_GET };

/* Length of the valid UTF-8 sequence at p, or 0 when the byte cannot start one there. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    size_t n;
    unsigned min;
    unsigned cp;
    if (*p < 0x80)
        return 1;
    if ((*p & 0xe0) == 0xc0) {
        n = 2, min = 0x80, cp = *p & 0x1f;
    } else if ((*p & 0xf0) == 0xe0) {
        n = 3, min = 0x800, cp = *p & 0x0f;
    } else if ((*p & 0xf8) == 0xf0) {
        n = 4, min = 0x10000, cp = *p & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Prometheus requires UTF-8 label values: invalid bytes become U+FFFD, and the value is cut at a
 * character boundary so that it fits METRICS_MAX_LABEL_LEN. */
static void clean_label(const char *s, char out[METRICS_MAX_LABEL_LEN + 1])
{
    const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
    size_t o = 0;
    while (p < end) {
        size_t n = utf8_len(p, end);
        const char *src = n ? (const char *)p : "\xef\xbf\xbd";
        size_t w = n ? n : 3;
        if (o + w > METRICS_MAX_LABEL_LEN)
            break;
        memcpy(out + o, src, w);
        o += w;
        p += n ? n : 1;
    }
    out[o] = '\0';
}

static int all_digits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* Label values that are both numbers (partitions, HTTP statuses) sort numerically. */
static int compare_labels(size_t n, char *const *a, char *const *b)
{
    for (size_t i = 0; i < n; i++) {
        int c;
        if (all_digits(a[i]) && all_digits(b[i])) {
            size_t la = strlen(a[i]), lb = strlen(b[i]);
            c = la != lb ? (la < lb ? -1 : 1) : strcmp(a[i], b[i]);
        } else {
            c = strcmp(a[i], b[i]);
        }
        if (c)
            return c;
    }
    return 0;
}

static void series_clear(struct series *s)
{
    for (size_t i = 0; i < MAX_LABELS; i++)
        free(s->labels[i]);
    free(s->buckets);
}

static void family_clear(struct family *f)
{
    for (size_t i = 0; i < f->n; i++)
        series_clear(&f->s[i]);
    free(f->s);
    f->s = NULL;
    f->n = f->cap = 0;
}

/* Finds the series with these (cleaned) labels; *pos is where it is or would be inserted. */
static struct series *family_find(const struct family *f, size_t nlabels, char *const *labels,
                                  size_t *pos)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = compare_labels(nlabels, f->s[mid].labels, labels);
        if (c == 0) {
            *pos = mid;
            return &f->s[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return NULL;
}

/* Inserts a zeroed series at pos. Returns it, or NULL when memory ran out or the family is full
 * (*full says which). */
static struct series *family_insert(struct family *f, const struct family_def *d, size_t pos,
                                    char *const *labels, int *full)
{
    *full = f->n >= METRICS_MAX_SERIES;
    if (*full)
        return NULL;
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        struct series *s = realloc(f->s, cap * sizeof *s);
        if (!s)
            return NULL;
        f->s = s;
        f->cap = cap;
    }
    struct series ns = {{NULL, NULL}, 0, 0, NULL};
    int ok = 1;
    for (size_t i = 0; i < d->nlabels; i++)
        ok &= (ns.labels[i] = strdup(labels[i])) != NULL;
    if (d->kind == KIND_HISTOGRAM)
        ok &= (ns.buckets = calloc(d->nbounds, sizeof *ns.buckets)) != NULL;
    if (!ok) {
        series_clear(&ns);
        return NULL;
    }
    memmove(&f->s[pos + 1], &f->s[pos], (f->n - pos) * sizeof *f->s);
    f->s[pos] = ns;
    f->n++;
    return &f->s[pos];
}

static int op_fits(const struct family_def *d, enum op op, double v)
{
    switch (op) {
    case OP_ADD:
        if (d->kind == KIND_COUNTER)
            return v >= 0 && !isinf(v);
        return d->kind == KIND_GAUGE && !isnan(v);
    case OP_SET:
        return d->kind == KIND_GAUGE && !isnan(v);
    case OP_OBSERVE:
        return d->kind == KIND_HISTOGRAM && !isnan(v);
    case OP_GET:
        return 1;
    }
    return 0;
}

static int update(metrics *m, metric_id id, enum op op, double v, double *out, va_list ap)
{
    if (out)
        *out = 0;
    if (!m || (unsigned)id >= METRIC_COUNT || !op_fits(&defs[id], op, v))
        return -1;
    const struct family_def *d = &defs[id];
    char buf[MAX_LABELS][METRICS_MAX_LABEL_LEN + 1];
    char *labels[MAX_LABELS] = {buf[0], buf[1]};
    size_t n = 0;
    for (const char *s; (s = va_arg(ap, const char *)) != NULL; n++) {
        if (n == d->nlabels)
            return -1;
        clean_label(s, buf[n]);
    }
    if (n != d->nlabels)
        return -1;

    pthread_mutex_lock(&m->mu);
    struct family *f = &m->fam[id];
    size_t pos;
    struct series *s = family_find(f, d->nlabels, labels, &pos);
    int rc = 0, full = 0;
    if (!s && op != OP_GET) {
        s = family_insert(f, d, pos, labels, &full);
        if (full)
            m->fam[METRIC_SERIES_DROPPED_TOTAL].s[0].value += 1;
    }
    if (!s) {
        rc = -1;
    } else if (op == OP_GET) {
        *out = d->kind == KIND_HISTOGRAM ? (double)s->count : s->value;
    } else if (op == OP_ADD) {
        s->value += v;
    } else if (op == OP_SET) {
        s->value = v;
    } else {
        size_t b = 0;
        while (b < d->nbounds && v > d->bounds[b])
            b++;
        if (b < d->nbounds)
            s->buckets[b]++;
        s->count++;
        s->value += v;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int metrics_add(metrics *m, metric_id id, double delta, ...)
{
    va_list ap;
    va_start(ap, delta);
    int rc = update(m, id, OP_ADD, delta, NULL, ap);
    va_end(ap);
    return rc;
}

int metrics_set(metrics *m, metric_id id, double value, ...)
{
    va_list ap;
    va_start(ap, value);
    int rc = update(m, id, OP_SET, value, NULL, ap);
    va_end(ap);
    return rc;
}

int metrics_set_to_now(metrics *m, metric_id id, ...)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    va_list ap;
    va_start(ap, id);
    int rc = update(m, id, OP_SET, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9, NULL, ap);
    va_end(ap);
    return rc;
}

int metrics_observe(metrics *m, metric_id id, double value, ...)
{
    va_list ap;
    va_start(ap, value);
    int rc = update(m, id, OP_OBSERVE, value, NULL, ap);
    va_end(ap);
    return rc;
}

int metrics_get(metrics *m, metric_id id, double *out, ...)
{
    va_list ap;
    va_start(ap, out);
    int rc = update(m, id, OP_GET, 0, out, ap);
    va_end(ap);
    return rc;
}

int metrics_new(metrics **out)
{
    *out = NULL;
    metrics *m = calloc(1, sizeof *m);
    if (!m)
        return -1;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return -1;
    }
    /* Unlabelled metrics exist from the start, so a scrape shows them at zero. */
    int rc = 0;
    char *none[MAX_LABELS] = {NULL, NULL};
    for (int id = 0; id < METRIC_COUNT && rc == 0; id++) {
        int full;
        if (defs[id].nlabels == 0 && !family_insert(&m->fam[id], &defs[id], 0, none, &full))
            rc = -1;
    }
    if (rc == 0)
        rc = metrics_set(m, METRIC_BUILD_INFO, 1, CSPDNS_VERSION, NULL);
    if (rc != 0) {
        metrics_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    for (int id = 0; id < METRIC_COUNT; id++)
        family_clear(&m->fam[id]);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* Shortest text that reads back as v, in the spellings Prometheus parses. */
static void format_value(double v, char out[32])
{
    if (isnan(v)) {
        strcpy(out, "NaN");
    } else if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(out, 32, "%.15g", v);
        if (strtod(out, NULL) != v)
            snprintf(out, 32, "%.17g", v);
    }
}

/* HELP text escapes backslash and newline; label values also escape the double quote. */
static int put_escaped(textbuf *out, const char *s, int is_label)
{
    int rc = 0;
    for (; *s && rc == 0; s++) {
        if (*s == '\\')
            rc = textbuf_append(out, "\\\\", 2);
        else if (*s == '\n')
            rc = textbuf_append(out, "\\n", 2);
        else if (*s == '"' && is_label)
            rc = textbuf_append(out, "\\\"", 2);
        else
            rc = textbuf_putc(out, *s);
    }
    return rc;
}

/* Writes name{labels,le="bound"} value: le is given for histogram buckets only. */
static int put_sample(textbuf *out, const struct family_def *d, const char *suffix,
                      const struct series *s, const char *le, double value)
{
    char num[32];
    int rc = textbuf_puts(out, d->name) | textbuf_puts(out, suffix);
    if (d->nlabels || le) {
        rc |= textbuf_putc(out, '{');
        for (size_t i = 0; i < d->nlabels; i++) {
            rc |= textbuf_printf(out, "%s%s=\"", i ? "," : "", d->labels[i]);
            rc |= put_escaped(out, s->labels[i], 1) | textbuf_putc(out, '"');
        }
        if (le)
            rc |= textbuf_printf(out, "%sle=\"%s\"", d->nlabels ? "," : "", le);
        rc |= textbuf_putc(out, '}');
    }
    format_value(value, num);
    rc |= textbuf_printf(out, " %s\n", num);
    return rc ? -1 : 0;
}

static int render_family(textbuf *out, const struct family_def *d, const struct family *f)
{
    static const char *const kinds[] = {"counter", "gauge", "histogram"};
    int rc = textbuf_printf(out, "# HELP %s ", d->name) | put_escaped(out, d->help, 0);
    rc |= textbuf_printf(out, "\n# TYPE %s %s\n", d->name, kinds[d->kind]);
    for (size_t i = 0; i < f->n && rc == 0; i++) {
        const struct series *s = &f->s[i];
        if (d->kind != KIND_HISTOGRAM) {
            rc = put_sample(out, d, "", s, NULL, s->value);
            continue;
        }
        uint64_t cum = 0;
        char le[32];
        for (size_t b = 0; b < d->nbounds && rc == 0; b++) {
            cum += s->buckets[b];
            format_value(d->bounds[b], le);
            rc = put_sample(out, d, "_bucket", s, le, (double)cum);
        }
        rc |= put_sample(out, d, "_bucket", s, "+Inf", (double)s->count);
        rc |= put_sample(out, d, "_sum", s, NULL, s->value);
        rc |= put_sample(out, d, "_count", s, NULL, (double)s->count);
    }
    return rc ? -1 : 0;
}

int metrics_render(metrics *m, textbuf *out)
{
    int rc = 0;
    pthread_mutex_lock(&m->mu);
    for (int id = 0; id < METRIC_COUNT && rc == 0; id++)
        rc = render_family(out, &defs[id], &m->fam[id]);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* The lag of one partition entry of the statistics, or -1 when it has none (not fetched by this
 * consumer, or no offset stored or committed yet). */
static long long partition_lag(const json_value *p)
{
    const json_value *num = json_get(p, "partition");
    const json_value *desired = json_get(p, "desired");
    if (!num || num->type != JSON_INT || num->u.i < 0 || !desired || desired->type != JSON_TRUE)
        return -1;
    static const char *const keys[] = {"consumer_lag_stored", "consumer_lag"};
    for (size_t i = 0; i < 2; i++) {
        const json_value *lag = json_get(p, keys[i]);
        if (lag && lag->type == JSON_INT && lag->u.i >= 0)
            return lag->u.i;
    }
    return -1;
}

/* Builds the new lag series in f, outside the lock. Returns 0, or -1 when memory ran out. */
static int lag_series(const json_value *topics, struct family *f, unsigned *dropped)
{
    const struct family_def *d = &defs[METRIC_KAFKA_CONSUMER_LAG];
    for (size_t t = 0; t < topics->len; t++) {
        const json_member *topic = &topics->u.members[t];
        const json_value *parts = json_get(&topic->value, "partitions");
        if (!parts || parts->type != JSON_OBJECT)
            continue;
        char name[METRICS_MAX_LABEL_LEN + 1];
        clean_label(topic->key, name);
        for (size_t i = 0; i < parts->len; i++) {
            const json_value *p = &parts->u.members[i].value;
            long long lag = partition_lag(p);
            if (lag < 0)
                continue;
            char num[24];
            snprintf(num, sizeof num, "%lld", json_get(p, "partition")->u.i);
            char *labels[MAX_LABELS] = {name, num};
            size_t pos;
            struct series *s = family_find(f, d->nlabels, labels, &pos);
            int full = 0;
            if (!s)
                s = family_insert(f, d, pos, labels, &full);
            if (full) {
                (*dropped)++;
                continue;
            }
            if (!s)
                return -1;
            s->value = (double)lag;
        }
    }
    return 0;
}

int metrics_update_from_kafka_stats(metrics *m, const char *json, size_t len, char *err,
                                    size_t errlen)
{
    json_doc *doc = NULL;
    char why[256];
    if (json_parse(json, len, &doc, why, sizeof why) != 0) {
        snprintf(err, errlen, "librdkafka statistics: %s", why);
        return -1;
    }
    const json_value *root = json_root(doc);
    const json_value *topics = json_get(root, "topics");
    if (root->type != JSON_OBJECT || (topics && topics->type != JSON_OBJECT)) {
        snprintf(err, errlen,
                 "librdkafka statistics: expected an object with a \"topics\" "
                 "object (is this the JSON of the stats callback?)");
        json_doc_free(doc);
        return -1;
    }
    struct family fresh = {NULL, 0, 0};
    unsigned dropped = 0;
    if (topics && lag_series(topics, &fresh, &dropped) != 0) {
        family_clear(&fresh);
        json_doc_free(doc);
        snprintf(err, errlen, "librdkafka statistics: out of memory");
        return -1;
    }
    json_doc_free(doc);
    pthread_mutex_lock(&m->mu);
    struct family old = m->fam[METRIC_KAFKA_CONSUMER_LAG];
    m->fam[METRIC_KAFKA_CONSUMER_LAG] = fresh;
    m->fam[METRIC_SERIES_DROPPED_TOTAL].s[0].value += dropped;
    pthread_mutex_unlock(&m->mu);
    family_clear(&old);
    return 0;
}
