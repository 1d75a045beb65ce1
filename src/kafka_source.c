/* kafka_source.c -- the librdkafka consumer: group membership, offsets, rewinds for retries.
 * Must not: parse payloads or commit an offset the pipeline has not finished with. */
#define _GNU_SOURCE
#include "kafka_source.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "logger.h"
#include "metrics.h"

#define WAKE_TIMEOUT_MS 100 /* the waker gives up on a watermark query after this long */

/* A partition waiting to redeliver the message at offset; paused until resume_ms. */
struct rewind {
    char *topic;
    int32_t partition;
    int64_t offset;
    long long resume_ms;
    int paused;
};

struct kafka_source {
    rd_kafka_t *rk;
    struct rewind *rewinds;
    size_t nrewinds;
    int assigned;
    char *topic;             /* KAFKA_TOPIC, for the partition count in its metadata */
    unsigned generation;     /* bumped by every assignment change */
    unsigned count_gen;      /* the generation partition_count was read in */
    int32_t partition_count; /* 0 until read */
    metrics *metrics;        /* consumer lag from librdkafka's statistics; NULL: not collected */
    kafka_revoke_fn on_revoke;
    void *revoke_ud;
    size_t kick_every; /* bytes consumed between two wake_fetcher calls; 0: never */
    size_t since_kick;
    rd_kafka_queue_t *queue; /* the consumer queue, whose length tells a backlog */
    /* The waker thread sends wake_fetcher's queries: the main thread only posts a partition. */
    pthread_t waker;
    int has_waker, waker_stop;
    pthread_mutex_t wake_mu;
    pthread_cond_t wake_cv;
    int32_t wake_partition; /* -1: none posted */
};

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    log_level lvl = level <= 3   ? LOG_LVL_ERROR
                    : level <= 4 ? LOG_LVL_WARN
                    : level <= 6 ? LOG_LVL_INFO
                                 : LOG_LVL_DEBUG;
    log_msg(lvl, "kafka", "%s: %s", fac, buf);
}

static void on_error(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    /* Transport errors are retried by librdkafka itself; only fatal ones stop us (see poll). */
    log_msg(code == RD_KAFKA_RESP_ERR__FATAL ? LOG_LVL_ERROR : LOG_LVL_WARN, "kafka", "%s: %s",
            rd_kafka_err2name((rd_kafka_resp_err_t)code), reason);
}

/* librdkafka's statistics, every statistics.interval.ms, on the polling thread. */
static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    struct kafka_source *ks = opaque;
    char err[256];
    if (ks->metrics && metrics_update_from_kafka_stats(ks->metrics, json, len, err, sizeof err))
        log_msg(LOG_LVL_DEBUG, "kafka", "statistics not understood: %s", err);
    return 0; /* librdkafka frees json */
}

static void forget_rewinds(struct kafka_source *ks, const rd_kafka_topic_partition_list_t *parts)
{
    for (size_t i = 0; i < ks->nrewinds;) {
        int hit = 0;
        for (int j = 0; parts && j < parts->cnt; j++)
            hit |= strcmp(parts->elems[j].topic, ks->rewinds[i].topic) == 0 &&
                   parts->elems[j].partition == ks->rewinds[i].partition;
        if (parts && !hit) {
            i++;
            continue;
        }
        free(ks->rewinds[i].topic);
        ks->rewinds[i] = ks->rewinds[--ks->nrewinds];
    }
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct kafka_source *ks = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    /* Work scoped to the old assignment (a scale-out resync) must notice and start over. */
    ks->generation++;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_msg(LOG_LVL_INFO, "kafka", "assigned %d partition(s)", parts->cnt);
        if (cooperative) {
            rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
            if (e) {
                log_msg(LOG_LVL_ERROR, "kafka", "incremental assign: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
            }
            ks->assigned += parts->cnt;
        } else {
            rd_kafka_assign(rk, parts);
            ks->assigned = parts->cnt;
        }
        return;
    }
    log_msg(LOG_LVL_INFO, "kafka", "revoked %d partition(s)", parts->cnt);
    if (ks->on_revoke && parts->cnt > 0) {
        int32_t *ids = malloc((size_t)parts->cnt * sizeof *ids);
        if (!ids) {
            /* Work on these partitions could land after another member took them over. */
            log_msg(LOG_LVL_ERROR, "kafka", "out of memory while partitions are revoked; aborting");
            abort();
        }
        for (int i = 0; i < parts->cnt; i++)
            ids[i] = parts->elems[i].partition;
        ks->on_revoke(ks->revoke_ud, ids, (size_t)parts->cnt);
        free(ids);
    }
    /* Commit what we finished before another member takes these partitions over. */
    rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
    if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        log_msg(LOG_LVL_WARN, "kafka", "commit on revoke: %s", rd_kafka_err2str(cerr));
    forget_rewinds(ks, parts);
    if (cooperative) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
        if (e)
            rd_kafka_error_destroy(e);
        ks->assigned -= parts->cnt;
    } else {
        rd_kafka_assign(rk, NULL);
        ks->assigned = 0;
    }
}

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, const char *env,
                    char *err, size_t errlen)
{
    char why[512];
    if (rd_kafka_conf_set(conf, key, value, why, sizeof why) == RD_KAFKA_CONF_OK)
        return 0;
    snprintf(err, errlen, "%s: %s", env, why);
    return -1;
}

/* KAFKA_CFG_* may set any property, but these two carry the commit-after-write guarantee: with
 * the store automatic, librdkafka commits a message when it is handed out, before its change
 * reached the database (a crash loses it); with the commit off, the finished offsets are only
 * committed at shutdown (a crash replays everything since the last clean stop). */
static int check_guarantees(rd_kafka_conf_t *conf, char *err, size_t errlen)
{
    static const struct {
        const char *key, *want, *env, *why;
    } guards[] = {
        {"enable.auto.offset.store", "false", "KAFKA_CFG_ENABLE_AUTO_OFFSET_STORE",
         "must stay false: cs-pdns stores an offset only after the event's change is committed "
         "to the database, or a crash loses events (unset it)"},
        {"enable.auto.commit", "true", "KAFKA_CFG_ENABLE_AUTO_COMMIT",
         "must stay true: cs-pdns commits its finished offsets in the background, or a crash "
         "replays every event since the last clean stop (unset it)"},
    };
    for (size_t i = 0; i < sizeof guards / sizeof guards[0]; i++) {
        char v[16];
        size_t n = sizeof v;
        if (rd_kafka_conf_get(conf, guards[i].key, v, &n) != RD_KAFKA_CONF_OK ||
            strcmp(v, guards[i].want) != 0) {
            snprintf(err, errlen, "%s: %s", guards[i].env, guards[i].why);
            return -1;
        }
    }
    return 0;
}

/* Builds the consumer configuration; shared by kafka_source_check_config so a bad property is
 * reported at start-up, before anything connects. */
static rd_kafka_conf_t *build_conf(const struct settings *s, int stats, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char env[300];
    /* Offsets are stored by kafka_source_done only, then committed in the background and on
     * close: a message is never committed before its change reached the database. The read-ahead
     * is 2 MB instead of librdkafka's 64 MB: with wake_fetcher and batches of 500 a backlog drains
     * at 13,600-14,500 events/s in the benchmark at a 27 MB peak; 4 MB is no faster, 2 MB more. */
    static const char *const defaults[][2] = {
        {"enable.auto.commit", "true"},         {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},      {"client.id", "cs-pdns"},
        {"fetch.wait.max.ms", "100"},           {"log.connection.close", "false"},
        {"queued.max.messages.kbytes", "2048"}, /* with wake_fetcher */
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (conf_set(conf, defaults[i][0], defaults[i][1], "built-in default", err, errlen))
            goto fail;
    if (stats) {
        if (conf_set(conf, "statistics.interval.ms", "15000", "built-in default", err, errlen))
            goto fail;
        rd_kafka_conf_set_stats_cb(conf, on_stats);
    }
    if (conf_set(conf, "bootstrap.servers", s->kafka_bootstrap, "KAFKA_BOOTSTRAP", err, errlen) ||
        conf_set(conf, "group.id", s->kafka_group, "KAFKA_GROUP", err, errlen))
        goto fail;
    for (size_t i = 0; i < s->kafka_cfg_n; i++) {
        snprintf(env, sizeof env, "KAFKA_CFG_%s", s->kafka_cfg[i].key);
        for (char *p = env + 10; *p; p++)
            *p = *p == '.' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        if (conf_set(conf, s->kafka_cfg[i].key, s->kafka_cfg[i].value, env, err, errlen))
            goto fail;
    }
    if (check_guarantees(conf, err, errlen))
        goto fail;
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

int kafka_source_check_config(const struct settings *s, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = build_conf(s, 0, err, errlen);
    if (!conf)
        return -1;
    rd_kafka_conf_destroy(conf);
    return 0;
}

/* librdkafka 2.0 stops fetching while its read-ahead is full and looks again only when the
 * partition's broker thread wakes, about once a second: a backlog with a read-ahead that drains
 * in less than that stalled between refills (2,219 events/s with 4 MB, 7,600 with 16 MB). Any
 * request to the broker wakes that thread; a watermark query is a small read-only one. Called
 * after each quarter of the read-ahead consumed, so the queue is refilled long before it runs
 * dry, but only while at least half of it is queued: a caught-up consumer's broker holds the
 * query behind a fetch that waits for data (fetch.wait.max.ms), which delayed events at 200/s
 * (p99 49 instead of 24 ms), and there is nothing to refill. (librdkafka 2.1 has
 * fetch.queue.backoff.ms for this.) The query is the waker thread's to wait for: a broker
 * answers in request order, so it can wait behind a fetch, and in the main loop these waits
 * (up to 100 ms, 0.35 s in a 20,000-event backlog) left the writer idle between batches. A
 * query posted while one is in flight is dropped: that one wakes the broker thread already. */
static void wake_fetcher(struct kafka_source *ks, int32_t partition, size_t msg_len)
{
    if (rd_kafka_queue_length(ks->queue) * msg_len < 2 * ks->kick_every)
        return;
    ks->since_kick = 0;
    if (!ks->has_waker)
        return;
    pthread_mutex_lock(&ks->wake_mu);
    if (ks->wake_partition < 0) {
        ks->wake_partition = partition;
        pthread_cond_signal(&ks->wake_cv);
    }
    pthread_mutex_unlock(&ks->wake_mu);
}

static void *waker_main(void *arg)
{
    struct kafka_source *ks = arg;
    pthread_setname_np(pthread_self(), "kafka-waker");
    pthread_mutex_lock(&ks->wake_mu);
    for (;;) {
        while (ks->wake_partition < 0 && !ks->waker_stop)
            pthread_cond_wait(&ks->wake_cv, &ks->wake_mu);
        if (ks->waker_stop)
            break;
        int32_t partition = ks->wake_partition;
        pthread_mutex_unlock(&ks->wake_mu);
        int64_t lo, hi;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(ks->rk, ks->topic, partition, &lo,
                                                                 &hi, WAKE_TIMEOUT_MS);
        if (e)
            log_msg(LOG_LVL_DEBUG, "kafka", "waking the fetcher of %s/%" PRId32 ": %s", ks->topic,
                    partition, rd_kafka_err2str(e));
        pthread_mutex_lock(&ks->wake_mu);
        ks->wake_partition = -1;
    }
    pthread_mutex_unlock(&ks->wake_mu);
    return NULL;
}

/* Starts the waker with every signal blocked: they are the main thread's to handle. Without it
 * (pthread_create failed) the fetcher is not woken: slower backlogs, nothing lost. */
static void waker_start(struct kafka_source *ks)
{
    sigset_t all, old;
    pthread_mutex_init(&ks->wake_mu, NULL);
    pthread_cond_init(&ks->wake_cv, NULL);
    ks->wake_partition = -1;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    ks->has_waker = pthread_create(&ks->waker, NULL, waker_main, ks) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!ks->has_waker)
        log_msg(LOG_LVL_WARN, "kafka",
                "cannot start the fetcher's waker thread: backlogs drain slower");
}

/* Before rd_kafka_destroy: the waker may be inside a query. */
static void waker_stop(struct kafka_source *ks)
{
    if (!ks->has_waker)
        return;
    pthread_mutex_lock(&ks->wake_mu);
    ks->waker_stop = 1;
    pthread_cond_signal(&ks->wake_cv);
    pthread_mutex_unlock(&ks->wake_mu);
    pthread_join(ks->waker, NULL);
    pthread_cond_destroy(&ks->wake_cv);
    pthread_mutex_destroy(&ks->wake_mu);
    ks->has_waker = 0;
}

int kafka_source_new(const struct settings *s, metrics *m, struct kafka_source **out, char *err,
                     size_t errlen)
{
    struct kafka_source *ks = calloc(1, sizeof *ks);
    if (!ks) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ks->metrics = m;
    ks->topic = strdup(s->kafka_topic);
    if (!ks->topic) {
        snprintf(err, errlen, "out of memory");
        free(ks);
        return -1;
    }
    rd_kafka_conf_t *conf = build_conf(s, m != NULL, err, errlen);
    if (!conf)
        goto fail;
    rd_kafka_conf_set_opaque(conf, ks);
    char kb[32];
    size_t kblen = sizeof kb;
    if (rd_kafka_conf_get(conf, "queued.max.messages.kbytes", kb, &kblen) == RD_KAFKA_CONF_OK)
        ks->kick_every = (size_t)strtoul(kb, NULL, 10) * 1024 / 4;
    char why[512];
    ks->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!ks->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "Kafka consumer: %s", why);
        goto fail;
    }
    rd_kafka_poll_set_consumer(ks->rk);
    ks->queue = rd_kafka_queue_get_consumer(ks->rk);
    if (ks->kick_every)
        waker_start(ks);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, s->kafka_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t rerr = rd_kafka_subscribe(ks->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (rerr) {
        snprintf(err, errlen, "KAFKA_TOPIC: cannot subscribe to %s: %s", s->kafka_topic,
                 rd_kafka_err2str(rerr));
        goto fail;
    }
    *out = ks;
    return 0;
fail:
    waker_stop(ks);
    if (ks->queue)
        rd_kafka_queue_destroy(ks->queue);
    if (ks->rk)
        rd_kafka_destroy(ks->rk);
    free(ks->topic);
    free(ks);
    return -1;
}

static void set_paused(struct kafka_source *ks, struct rewind *r, int pause)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, r->topic, r->partition);
    rd_kafka_resp_err_t e =
        pause ? rd_kafka_pause_partitions(ks->rk, l) : rd_kafka_resume_partitions(ks->rk, l);
    if (e)
        log_msg(LOG_LVL_WARN, "kafka", "%s %s/%" PRId32 ": %s", pause ? "pause" : "resume",
                r->topic, r->partition, rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
    r->paused = pause;
}

static struct rewind *find_rewind(struct kafka_source *ks, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < ks->nrewinds; i++)
        if (ks->rewinds[i].partition == partition && strcmp(ks->rewinds[i].topic, topic) == 0)
            return &ks->rewinds[i];
    return NULL;
}

int kafka_source_poll(struct kafka_source *ks, int timeout_ms, struct kafka_msg *m, char *err,
                      size_t errlen)
{
    long long now = clock_ms(), deadline = now + timeout_ms;
    for (;;) {
        long long wait = deadline - now;
        for (size_t i = 0; i < ks->nrewinds; i++) {
            struct rewind *r = &ks->rewinds[i];
            if (r->paused && r->resume_ms <= now)
                set_paused(ks, r, 0);
            else if (r->paused && r->resume_ms - now < wait)
                wait = r->resume_ms - now;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(ks->rk, wait > 0 ? (int)wait : 0);
        now = clock_ms();
        if (!msg) {
            if (now >= deadline)
                return 0;
            continue;
        }
        if (msg->err) {
            if (msg->err == RD_KAFKA_RESP_ERR__FATAL) {
                char why[512];
                rd_kafka_fatal_error(ks->rk, why, sizeof why);
                snprintf(err, errlen, "Kafka fatal error: %s", why);
                rd_kafka_message_destroy(msg);
                return -1;
            }
            if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                log_msg(LOG_LVL_WARN, "kafka", "consumer: %s", rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
            if (now >= deadline)
                return 0;
            continue;
        }
        const char *topic = rd_kafka_topic_name(msg->rkt);
        struct rewind *r = find_rewind(ks, topic, msg->partition);
        if (r) {
            /* Fetched before the rewind took effect: it comes again after the retried one. */
            if (msg->offset != r->offset) {
                rd_kafka_message_destroy(msg);
                continue;
            }
            free(r->topic);
            *r = ks->rewinds[--ks->nrewinds];
        }
        ks->since_kick += msg->len;
        if (ks->kick_every && ks->since_kick >= ks->kick_every)
            wake_fetcher(ks, msg->partition, msg->len);
        m->topic = ks->topic; /* the subscribed topic; outlives the message (drop_payload) */
        m->partition = msg->partition;
        m->offset = msg->offset;
        m->key = msg->key;
        m->key_len = msg->key_len;
        m->payload = msg->payload ? msg->payload : "";
        m->len = msg->len;
        m->handle = msg;
        return 1;
    }
}

void kafka_source_done(struct kafka_source *ks, struct kafka_msg *m)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, m->topic, m->partition)->offset = m->offset + 1;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(ks->rk, l);
    if (e)
        log_at(LOG_LVL_WARN, "kafka", m->topic, m->partition, m->offset, "store offset: %s",
               rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
    kafka_source_drop_payload(ks, m);
}

void kafka_source_retry(struct kafka_source *ks, struct kafka_msg *m, int backoff_ms)
{
    struct rewind *r = find_rewind(ks, m->topic, m->partition);
    if (!r) {
        struct rewind *grown = realloc(ks->rewinds, (ks->nrewinds + 1) * sizeof *grown);
        char *topic = strdup(m->topic);
        if (!grown || !topic) {
            /* Without bookkeeping we cannot filter: better to fail loudly than skip. */
            log_msg(LOG_LVL_ERROR, "kafka", "out of memory while rewinding; aborting");
            abort();
        }
        ks->rewinds = grown;
        r = &ks->rewinds[ks->nrewinds++];
        r->topic = topic;
        r->partition = m->partition;
        r->paused = 0;
    }
    r->offset = m->offset;
    r->resume_ms = clock_ms() + backoff_ms;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, m->topic, m->partition)->offset = m->offset;
    rd_kafka_error_t *e = rd_kafka_seek_partitions(ks->rk, l, 5000);
    if (e) {
        log_at(LOG_LVL_WARN, "kafka", m->topic, m->partition, m->offset, "rewind: %s",
               rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (l->elems[0].err) {
        log_at(LOG_LVL_WARN, "kafka", m->topic, m->partition, m->offset, "rewind: %s",
               rd_kafka_err2str(l->elems[0].err));
    }
    rd_kafka_topic_partition_list_destroy(l);
    set_paused(ks, r, 1);
    kafka_source_drop_payload(ks, m);
}

void kafka_source_on_revoke(struct kafka_source *ks, kafka_revoke_fn fn, void *ud)
{
    ks->on_revoke = fn;
    ks->revoke_ud = ud;
}

void kafka_source_release(struct kafka_source *ks, struct kafka_msg *m)
{
    kafka_source_drop_payload(ks, m);
}

void kafka_source_drop_payload(struct kafka_source *ks, struct kafka_msg *m)
{
    (void)ks;
    if (m->handle)
        rd_kafka_message_destroy(m->handle);
    m->handle = NULL;
    m->payload = m->key = NULL;
    m->len = m->key_len = 0;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The topic's partition count, read from the brokers once per assignment generation: Kafka
 * rebalances the group when partitions are added, so a count read in this generation holds. */
static int read_partition_count(struct kafka_source *ks, char *err, size_t errlen)
{
    if (ks->partition_count > 0 && ks->count_gen == ks->generation)
        return 0;
    rd_kafka_topic_t *t = rd_kafka_topic_new(ks->rk, ks->topic, NULL);
    if (!t) {
        snprintf(err, errlen, "KAFKA_TOPIC %s: %s", ks->topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(ks->rk, 0, t, &md, 2000);
    rd_kafka_topic_destroy(t);
    if (e) {
        snprintf(err, errlen, "cannot read the metadata of topic %s from KAFKA_BOOTSTRAP: %s",
                 ks->topic, rd_kafka_err2str(e));
        return -1;
    }
    int rc = -1;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, ks->topic) != 0)
            continue;
        if (md->topics[i].err) {
            snprintf(err, errlen, "topic %s: %s", ks->topic, rd_kafka_err2str(md->topics[i].err));
        } else if (md->topics[i].partition_cnt > 0) {
            ks->partition_count = md->topics[i].partition_cnt;
            rc = 0;
        } else {
            snprintf(err, errlen, "topic %s has no partitions yet", ks->topic);
        }
    }
    if (md->topic_cnt == 0)
        snprintf(err, errlen, "the brokers did not describe topic %s", ks->topic);
    rd_kafka_metadata_destroy(md);
    if (rc == 0)
        ks->count_gen = ks->generation;
    return rc;
}

int kafka_source_partitions(struct kafka_source *ks, int32_t *parts, size_t max, size_t *n,
                            int32_t *partition_count, unsigned *generation, char *err,
                            size_t errlen)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    *n = 0;
    *partition_count = 0;
    *generation = ks->generation;
    rd_kafka_resp_err_t e = rd_kafka_assignment(ks->rk, &l);
    if (e) {
        snprintf(err, errlen, "cannot read the partition assignment: %s", rd_kafka_err2str(e));
        return -1;
    }
    for (int i = 0; i < l->cnt && *n < max; i++)
        if (strcmp(l->elems[i].topic, ks->topic) == 0)
            parts[(*n)++] = l->elems[i].partition;
    rd_kafka_topic_partition_list_destroy(l);
    qsort(parts, *n, sizeof *parts, cmp_i32);
    if (read_partition_count(ks, err, errlen) != 0)
        return -1;
    *partition_count = ks->partition_count;
    return 0;
}

int kafka_source_assigned(const struct kafka_source *ks)
{
    return ks->assigned;
}

void kafka_source_close(struct kafka_source *ks)
{
    if (!ks)
        return;
    waker_stop(ks);
    rd_kafka_resp_err_t e = rd_kafka_commit(ks->rk, NULL, 0);
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
        log_msg(LOG_LVL_WARN, "kafka", "final commit: %s", rd_kafka_err2str(e));
    e = rd_kafka_consumer_close(ks->rk);
    if (e)
        log_msg(LOG_LVL_WARN, "kafka", "leaving the group: %s", rd_kafka_err2str(e));
    rd_kafka_queue_destroy(ks->queue);
    rd_kafka_destroy(ks->rk);
    forget_rewinds(ks, NULL);
    free(ks->rewinds);
    free(ks->topic);
    free(ks);
}
