/* kafka_source.h -- consumes the CloudStack topic in a consumer group, message by message.
 * Must not: interpret messages; it hands out bytes with their position and tracks offsets. */
#ifndef CSPDNS_KAFKA_SOURCE_H
#define CSPDNS_KAFKA_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "settings.h"

struct kafka_msg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const char *key; /* NULL when the record has no key */
    size_t key_len;
    const char *payload;
    size_t len;
    void *handle; /* the librdkafka message, until kafka_source_drop_payload (or _done, ...) */
};

struct kafka_source;

/* Builds the consumer from KAFKA_* settings (KAFKA_CFG_* override the defaults: offsets committed
 * only for processed messages, auto.offset.reset=earliest) and subscribes to KAFKA_TOPIC.
 * With m, librdkafka's statistics (every 15 s unless KAFKA_CFG_STATISTICS_INTERVAL_MS says
 * otherwise) feed m's consumer-lag gauges.
 * A property librdkafka rejects fails with err naming the KAFKA_CFG_ variable. */
int kafka_source_new(const struct settings *s, metrics *m, struct kafka_source **out, char *err,
                     size_t errlen);

/* Checks the consumer configuration without connecting; err names the bad KAFKA_ variable. */
int kafka_source_check_config(const struct settings *s, char *err, size_t errlen);

/* Waits up to timeout_ms for the next message. Returns 1 (m filled), 0 (none yet), or -1 when the
 * consumer hit a fatal error (err says which); the caller then stops. */
int kafka_source_poll(struct kafka_source *ks, int timeout_ms, struct kafka_msg *m, char *err,
                      size_t errlen);

/* The message was applied or judged unusable: its offset+1 becomes committable. Releases m. */
void kafka_source_done(struct kafka_source *ks, struct kafka_msg *m);

/* The message must be processed again: rewinds its partition to it and pauses that partition for
 * backoff_ms (other partitions keep flowing). Later messages of the partition that were already
 * fetched are dropped until it comes back, so nothing past it is ever committed. Releases m. */
void kafka_source_retry(struct kafka_source *ks, struct kafka_msg *m, int backoff_ms);

/* Releases m without making its offset committable: for messages fetched after one of the same
 * partition that was handed to kafka_source_retry (the rewind delivers them again), and for
 * messages of a partition being revoked (its next owner starts from the committed offset). */
void kafka_source_release(struct kafka_source *ks, struct kafka_msg *m);

/* The message's payload and key were read: frees librdkafka's message (and with the last one,
 * the fetch buffer it came in) before the message is done, retried or released, which then
 * need only its topic, partition and offset. */
void kafka_source_drop_payload(struct kafka_source *ks, struct kafka_msg *m);

/* Called from inside kafka_source_poll (or _close) when the group takes partitions[0..n) of
 * KAFKA_TOPIC away, before their offsets are committed: the caller finishes what it applied
 * from them (so it is committed) and drops messages of theirs it holds without having applied
 * them (kafka_source_release; the next owner starts from the committed offset). */
typedef void (*kafka_revoke_fn)(void *ud, const int32_t *partitions, size_t n);
void kafka_source_on_revoke(struct kafka_source *ks, kafka_revoke_fn fn, void *ud);

/* The partitions of the topic currently assigned to this instance, sorted, in parts[0..*n)
 * (at most max), and how many partitions the topic has in *partition_count (0 while unknown).
 * *generation changes whenever the assignment does (rebalance); it is filled even on failure.
 * Returns 0, or -1 when the topic's metadata cannot be read now (err says why). */
int kafka_source_partitions(struct kafka_source *ks, int32_t *parts, size_t max, size_t *n,
                            int32_t *partition_count, unsigned *generation, char *err,
                            size_t errlen);

/* Partitions currently assigned to this instance. */
int kafka_source_assigned(const struct kafka_source *ks);

/* Commits what is committable, leaves the group and frees everything. NULL is a no-op. */
void kafka_source_close(struct kafka_source *ks);

#endif
