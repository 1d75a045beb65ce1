/* text_file.c -- a whole file read into one bounded, NUL-terminated buffer (text_file.h).
 * Must not: parse or trim what it reads; the caller decides what the bytes mean. */
#include "text_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int text_file_read(const char *path, size_t max_bytes, char **out, size_t *len, char *err,
                   size_t errlen)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    const char *why = NULL;
    /* Reads in doubling chunks rather than asking the size first: secret mounts and pipes
     * report none. One byte past the bound tells a file at the bound from a larger one. */
    for (size_t got = 1; got > 0 && n <= max_bytes; n += got) {
        if (n == cap) {
            size_t want = cap ? cap * 2 : 4096;
            want = want > max_bytes + 1 ? max_bytes + 1 : want;
            char *grown = realloc(buf, want + 1);
            if (!grown) {
                why = "out of memory";
                break;
            }
            buf = grown;
            cap = want;
        }
        got = fread(buf + n, 1, cap - n, f);
    }
    int bad = ferror(f);
    fclose(f);
    if (!why && bad)
        why = "read error";
    if (!why && n > max_bytes) {
        snprintf(err, errlen, "%s is larger than %zu KB", path, max_bytes / 1024);
        free(buf);
        return -1;
    }
    if (why) {
        snprintf(err, errlen, "cannot read %s: %s", path, why);
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}
