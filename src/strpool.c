/* strpool.c -- string copies in blocks of at least BLOCK_MIN bytes: one allocation per few
 * hundred short strings instead of one each. Must not: free a single copy. */
#include "strpool.h"

#include <stdlib.h>
#include <string.h>

struct strpool_block {
    struct strpool_block *next;
    size_t used, cap;
    char data[];
};

#define BLOCK_MIN 8192

const char *strpool_dup(struct strpool *p, const char *s)
{
    size_t len = strlen(s) + 1;
    struct strpool_block *b = p->blocks;
    if (!b || b->cap - b->used < len) {
        size_t cap = len > BLOCK_MIN ? len : BLOCK_MIN;
        if (!(b = malloc(sizeof *b + cap)))
            return NULL;
        b->next = p->blocks;
        b->used = 0;
        b->cap = cap;
        p->blocks = b;
    }
    char *copy = memcpy(b->data + b->used, s, len);
    b->used += len;
    return copy;
}

void strpool_clear(struct strpool *p)
{
    while (p->blocks) {
        struct strpool_block *next = p->blocks->next;
        free(p->blocks);
        p->blocks = next;
    }
}
