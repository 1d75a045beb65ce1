/* strmap.c -- open-addressing string hash map (FNV-1a, linear probing, at most half full).
 * Must not: interpret keys or values; it only stores them. */
#include "strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strpool.h"

struct slot {
    const char *key; /* NULL: empty */
    void *value;
    uint64_t hash;
};

struct strmap {
    struct slot *slots;
    size_t cap; /* a power of two */
    size_t count;
    struct strpool keys; /* the copies of the keys: one allocation per few hundred, not per key */
};

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

int strmap_new(struct strmap **out)
{
    struct strmap *m = calloc(1, sizeof *m);
    if (m) {
        m->cap = 64;
        m->slots = calloc(m->cap, sizeof *m->slots);
    }
    if (!m || !m->slots) {
        free(m);
        *out = NULL;
        return -1;
    }
    *out = m;
    return 0;
}

void strmap_clear(struct strmap *m, void (*free_value)(void *))
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key && free_value)
            free_value(m->slots[i].value);
        m->slots[i].key = NULL;
        m->slots[i].value = NULL;
    }
    m->count = 0;
    strpool_clear(&m->keys);
}

void strmap_free(struct strmap *m, void (*free_value)(void *))
{
    if (!m)
        return;
    strmap_clear(m, free_value);
    free(m->slots);
    free(m);
}

static struct slot *find(struct slot *slots, size_t cap, const char *key, uint64_t h)
{
    size_t i = (size_t)h & (cap - 1);
    while (slots[i].key && (slots[i].hash != h || strcmp(slots[i].key, key) != 0))
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static int grow(struct strmap *m)
{
    size_t cap = m->cap * 2;
    struct slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key)
            *find(slots, cap, m->slots[i].key, m->slots[i].hash) = m->slots[i];
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int strmap_add(struct strmap *m, const char *key, void *value)
{
    if ((m->count + 1) * 2 > m->cap && grow(m) != 0)
        return -1;
    uint64_t h = hash(key);
    struct slot *s = find(m->slots, m->cap, key, h);
    if (s->key)
        return 0;
    if (!(s->key = strpool_dup(&m->keys, key)))
        return -1;
    s->value = value;
    s->hash = h;
    m->count++;
    return 1;
}

int strmap_get(const struct strmap *m, const char *key, void **value)
{
    const struct slot *s = find(m->slots, m->cap, key, hash(key));
    if (!s->key)
        return 0;
    if (value)
        *value = s->value;
    return 1;
}

size_t strmap_count(const struct strmap *m)
{
    return m->count;
}
