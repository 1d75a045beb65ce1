/* replay.c -- runs a fuzz target without libFuzzer: every file of the given corpus directories
 * (seeds and the crashes found so far), then inputs too big for a checked-in corpus (16 MB,
 * 10,000-deep nesting). Linked with one fuzz_*.c into a plain ctest unit test.
 * Must not: stop at the first input that fails quietly; a failed property aborts the run. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#define BIG (16u * 1024u * 1024u)
#define DEEP 10000u

struct tally {
    size_t inputs, largest;
};

static void feed(struct tally *t, const uint8_t *data, size_t len)
{
    LLVMFuzzerTestOneInput(data, len);
    t->inputs++;
    if (len > t->largest)
        t->largest = len;
}

static int feed_file(struct tally *t, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            uint8_t *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(f);
                return -1;
            }
            buf = grown;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    fclose(f);
    feed(t, buf, len);
    free(buf);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Files in name order, so a run is reproducible. */
static int feed_dir(struct tally *t, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char **grown = realloc(names, (n + 1) * sizeof *names);
        if (!grown) {
            rc = -1;
            break;
        }
        names = grown;
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (rc == 0 && names[i] && feed_file(t, path) != 0)
            rc = -1;
        free(names[i]);
    }
    free(names);
    return rc;
}

static void feed_generated(struct tally *t)
{
    static const char head[] = "{\"jobId\":\"j\",\"commandEventType\":\"VM.CREATE\","
                               "\"status\":\"SUCCEEDED\",\"jobResult\":\"a/b/{\\\"id\\\":\\\"";
    static const char tail[] = "\\\"}\"}";
    uint8_t *buf = malloc(BIG + sizeof head + sizeof tail);
    if (!buf) {
        fprintf(stderr, "replay: out of memory\n");
        exit(1);
    }
    /* A CloudStack-shaped record of 16 MB: its jobResult string holds a 16 MB VM id. */
    memcpy(buf, head, sizeof head - 1);
    memset(buf + sizeof head - 1, 'a', BIG);
    memcpy(buf + sizeof head - 1 + BIG, tail, sizeof tail - 1);
    feed(t, buf, sizeof head - 1 + BIG + sizeof tail - 1);
    /* 16 MB of one JSON string, and 16 MB of opening brackets. */
    buf[0] = '"';
    memset(buf + 1, 'x', BIG - 2);
    buf[BIG - 1] = '"';
    feed(t, buf, BIG);
    memset(buf, '[', BIG);
    feed(t, buf, BIG);
    /* 10,000-deep arrays and objects, closed properly. */
    memset(buf, '[', DEEP);
    memset(buf + DEEP, ']', DEEP);
    feed(t, buf, 2 * DEEP);
    size_t len = 0;
    for (unsigned i = 0; i < DEEP; i++, len += 5)
        memcpy(buf + len, "{\"a\":", 5);
    buf[len++] = '1';
    memset(buf + len, '}', DEEP);
    feed(t, buf, len + DEEP);
    /* Deterministic noise. */
    unsigned long long x = 88172645463325252ULL;
    for (size_t i = 0; i < BIG; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    feed(t, buf, BIG);
    free(buf);
}

int main(int argc, char **argv)
{
    struct tally t = {0, 0};
    int generated = 0, rc = 0;
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (!strcmp(argv[i], "--generated"))
            generated = 1;
        else if (stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode))
            rc |= feed_dir(&t, argv[i]);
        else
            rc |= feed_file(&t, argv[i]);
    }
    size_t from_files = t.inputs;
    if (generated)
        feed_generated(&t);
    printf("replayed %zu inputs (%zu from files, %zu generated), largest %zu bytes\n", t.inputs,
           from_files, t.inputs - from_files, t.largest);
    if (rc != 0 || from_files == 0) {
        fprintf(stderr, "replay: %s\n", rc ? "an input could not be read" : "no input files");
        return 1;
    }
    return 0;
}
