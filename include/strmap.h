/* strmap.h -- a hash map from strings to caller pointers: sets of VM ids, per-resync caches.
 * Must not: know what it maps; values belong to the caller, who frees them through a callback. */
#ifndef CSPDNS_STRMAP_H
#define CSPDNS_STRMAP_H

#include <stddef.h>

struct strmap;

/* Returns 0, or -1 when memory ran out. */
int strmap_new(struct strmap **out);

/* Frees the map, its copies of the keys, and every value through free_value (may be NULL). */
void strmap_free(struct strmap *m, void (*free_value)(void *));

/* Empties the map but keeps its memory; values go through free_value (may be NULL). */
void strmap_clear(struct strmap *m, void (*free_value)(void *));

/* Adds key (copied) with value when key is absent. Returns 1 when added, 0 when the key was
 * already there (its value is left as it was), -1 when memory ran out. */
int strmap_add(struct strmap *m, const char *key, void *value);

/* 1 when key is present (and *value, when value is not NULL, is its value), else 0. */
int strmap_get(const struct strmap *m, const char *key, void **value);

size_t strmap_count(const struct strmap *m);

#endif
