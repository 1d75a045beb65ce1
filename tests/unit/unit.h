/* unit.h -- a minimal test harness for the C unit tests (one executable per module).
 * Must not: hide failures; every failed check prints file:line and makes the run fail. */
#ifndef CSPDNS_UNIT_H
#define CSPDNS_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unit_checks, unit_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        unit_checks++;                                                                             \
        if (!(cond)) {                                                                             \
            unit_failures++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        unit_checks++;                                                                             \
        if (!g_ || !w_ || strcmp(g_, w_) != 0) {                                                   \
            unit_failures++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK_STR failed: %s\n  got:  %s\n  want: %s\n", __FILE__,     \
                    __LINE__, #got, g_ ? g_ : "(null)", w_ ? w_ : "(null)");                       \
        }                                                                                          \
    } while (0)

#define CHECK_INT(got, want)                                                                       \
    do {                                                                                           \
        long long g_ = (long long)(got), w_ = (long long)(want);                                   \
        unit_checks++;                                                                             \
        if (g_ != w_) {                                                                            \
            unit_failures++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK_INT failed: %s\n  got:  %lld\n  want: %lld\n", __FILE__, \
                    __LINE__, #got, g_, w_);                                                       \
        }                                                                                          \
    } while (0)

/* Reads tests/fixtures/<dir>/<name> under CSPDNS_SOURCE_DIR (ctest sets it) into a NUL-terminated
 * buffer the caller frees; a missing fixture ends the test run, since every later check would be
 * meaningless. */
static inline char *unit_fixture(const char *dir, const char *name, size_t *len)
{
    const char *root = getenv("CSPDNS_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s/%s", root ? root : ".", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s (set CSPDNS_SOURCE_DIR)\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fprintf(stderr, "out of memory reading %s\n", path);
        exit(1);
    }
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

/* Makes the temporary directory named by tmpl (ending in XXXXXX, replaced in place) for a test's
 * files; without it no check could run, so the test run ends. */
static inline void unit_tmpdir(char *tmpl)
{
    if (!mkdtemp(tmpl)) {
        perror("mkdtemp");
        exit(2);
    }
}

/* Removes what unit_tmpdir made, with everything in it. */
static inline void unit_tmpdir_remove(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* Call at the end of main: prints a summary and returns the exit status. */
static inline int unit_done(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, unit_checks, unit_failures);
    return unit_failures ? 1 : 0;
}

#endif
