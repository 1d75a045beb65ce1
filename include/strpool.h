/* strpool.h -- copies of strings kept in large blocks and freed all at once: for many short
 * strings with one owner and one lifetime (a map's keys, the names a batch reads).
 * Must not: free or move a single copy, or know what the strings mean. */
#ifndef CSPDNS_STRPOOL_H
#define CSPDNS_STRPOOL_H

#include <stddef.h>

struct strpool_block;

struct strpool {
    struct strpool_block *blocks; /* the newest first */
};

#define STRPOOL_INIT                                                                               \
    {                                                                                              \
        NULL                                                                                       \
    }

/* A copy of s that stays where it is until strpool_clear; NULL when memory ran out. */
const char *strpool_dup(struct strpool *p, const char *s);

/* Frees every copy; the pool can be used again. */
void strpool_clear(struct strpool *p);

#endif
