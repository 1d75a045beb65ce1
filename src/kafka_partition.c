/* kafka_partition.c -- Kafka's murmur2 and the Java producer's default partitioner for keyed
 * records. Must not: depend on anything of ours or keep state; the results must match Kafka's bit
 * for bit. */
#include "kafka_partition.h"

uint32_t kafka_murmur2(const void *key, size_t len)
{
    const uint8_t *p = key;
    const uint32_t m = 0x5bd1e995;
    const int r = 24;
    /* Java's int arithmetic wraps and `>>>` is a logical shift: uint32_t behaves the same. */
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    size_t blocks = len / 4;
    for (size_t i = 0; i < blocks; i++, p += 4) {
        /* Little-endian words, whatever the host's byte order, as Utils.murmur2 reads them. */
        uint32_t k =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)p[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)p[1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)p[0];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

int32_t kafka_partition_for_key(const void *key, size_t len, int32_t partition_count)
{
    /* Utils.toPositive: the sign bit cleared, not Math.abs. */
    return (int32_t)((kafka_murmur2(key, len) & 0x7fffffffu) % (uint32_t)partition_count);
}
