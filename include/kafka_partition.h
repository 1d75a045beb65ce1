/* kafka_partition.h -- Kafka's default partitioner (murmur2 of the key bytes), as the Java
 * producer CloudStack uses computes it. Must not: depend on anything of ours; pure functions. */
#ifndef CSPDNS_KAFKA_PARTITION_H
#define CSPDNS_KAFKA_PARTITION_H

#include <stddef.h>
#include <stdint.h>

/* Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2, seed 0x9747b28c). */
uint32_t kafka_murmur2(const void *key, size_t len);

/* The partition the Java producer's default partitioner picks for a keyed record:
 * (murmur2(key) & 0x7fffffff) % partition_count. partition_count must be > 0. */
int32_t kafka_partition_for_key(const void *key, size_t len, int32_t partition_count);

#endif
