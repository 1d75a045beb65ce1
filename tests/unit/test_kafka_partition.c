/* test_kafka_partition.c -- Kafka's murmur2 and default partitioner against Kafka's published
 * vectors and librdkafka's own Java-compatible partitioner, and the resync scope built on them.
 * Must not: need a broker; every case is computed in process. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "kafka_partition.h"
#include "resync.h"
#include "unit.h"

/* org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed Java ints), plus the empty key. */
static void test_murmur2_vectors(void)
{
    static const struct {
        const char *key;
        int32_t want;
    } cases[] = {
        {"21", -973932308},
        {"foobar", -790332482},
        {"a-little-bit-long-string", -985981536},
        {"a-little-bit-longer-string", -1486304829},
        {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
        {"abc", 479470107},
        {"", 275646681},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t got = (int32_t)kafka_murmur2(cases[i].key, strlen(cases[i].key));
        if (got != cases[i].want)
            fprintf(stderr, "murmur2(\"%s\")\n", cases[i].key);
        CHECK_INT(got, cases[i].want);
    }
}

static void test_partition_vectors(void)
{
    /* toPositive(-790332482) = 1357151166; % 50 = 16, % 4 = 2. */
    CHECK_INT(kafka_partition_for_key("foobar", 6, 50), 16);
    CHECK_INT(kafka_partition_for_key("foobar", 6, 4), 2);
    /* A negative hash must not become a negative partition (Math.abs would differ too). */
    CHECK_INT(kafka_partition_for_key("21", 2, 7),
              (int32_t)((uint32_t)-973932308 & 0x7fffffffu) % 7);
    CHECK_INT(kafka_partition_for_key("abc", 3, 1), 0);
}

/* librdkafka's murmur2 partitioner is documented as the Java producer's: an independent
 * implementation to compare VM-id-like keys of every length remainder against. */
static void test_matches_librdkafka(void)
{
    char key[64];
    int mismatches = 0;
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(key, sizeof key, "%08x-%04x-4%03x-a%03x-%012x", (unsigned)i * 2654435761u,
                         (unsigned)i & 0xffff, (unsigned)i & 0xfff, (unsigned)(i * 7) & 0xfff,
                         (unsigned)i * 40503u);
        size_t len = (size_t)n - (size_t)(i % 4); /* all four tail lengths */
        for (int32_t count = 1; count <= 12; count += 3) {
            int32_t ours = kafka_partition_for_key(key, len, count);
            int32_t theirs = rd_kafka_msg_partitioner_murmur2(NULL, key, len, count, NULL, NULL);
            if (ours != theirs && mismatches++ < 3)
                fprintf(stderr, "key %.*s count %d: ours %d, librdkafka %d\n", (int)len, key, count,
                        ours, theirs);
        }
    }
    CHECK_INT(mismatches, 0);
}

static void test_resync_scope(void)
{
    const char *vm = "9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41";
    int32_t p = kafka_partition_for_key(vm, strlen(vm), 4);
    int32_t mine[1] = {p}, others[3], k = 0;
    for (int32_t i = 0; i < 4; i++)
        if (i != p)
            others[k++] = i;
    struct resync_config all = {.partition_count = 0};
    CHECK(resync_in_scope(&all, vm));
    struct resync_config one = {.partition_count = 4, .partitions = mine, .npartitions = 1};
    CHECK(resync_in_scope(&one, vm));
    struct resync_config rest = {.partition_count = 4, .partitions = others, .npartitions = 3};
    CHECK(!resync_in_scope(&rest, vm));
    struct resync_config none = {.partition_count = 4, .partitions = NULL, .npartitions = 0};
    CHECK(!resync_in_scope(&none, vm));

    /* Two instances splitting 4 partitions between them cover every VM exactly once. */
    int32_t a[] = {0, 2}, b[] = {1, 3};
    struct resync_config ca = {.partition_count = 4, .partitions = a, .npartitions = 2};
    struct resync_config cb = {.partition_count = 4, .partitions = b, .npartitions = 2};
    int in_a = 0, in_b = 0, twice = 0;
    char id[40];
    for (int i = 0; i < 400; i++) {
        snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", i);
        int x = resync_in_scope(&ca, id), y = resync_in_scope(&cb, id);
        in_a += x;
        in_b += y;
        twice += x && y;
    }
    CHECK_INT(in_a + in_b, 400);
    CHECK_INT(twice, 0);
    CHECK(in_a > 100 && in_b > 100); /* murmur2 spreads them: neither side is starved */
}

int main(void)
{
    test_murmur2_vectors();
    test_partition_vectors();
    test_matches_librdkafka();
    test_resync_scope();
    return unit_done("kafka_partition");
}
