/* fuzz.h -- what every fuzz target and the replay driver share: libFuzzer's entry points and the
 * property check. Must not: hold target logic; each fuzz_*.c is one target. */
#ifndef CSPDNS_FUZZ_H
#define CSPDNS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* libFuzzer's contract: called once per input; must not keep the input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional one-time setup (argc/argv are libFuzzer's, left as they are). */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property every input must keep. A violation aborts, which libFuzzer reports as a crash and
 * saves the input, and which fails the replay test. */
#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz property violated: %s (%s:%d)\n", #cond, __FILE__, __LINE__);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
