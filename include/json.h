/* json.h -- a strict JSON parser into a read-only tree, and JSON string escaping.
 * Must not: know CloudStack's shapes or Lua; it is a pure helper that imports nothing of ours. */
#ifndef CSPDNS_JSON_H
#define CSPDNS_JSON_H

#include <stddef.h>

#include "textbuf.h"

/* Nesting deeper than this is rejected, so hostile input cannot exhaust the stack. */
#define JSON_MAX_DEPTH 64

typedef enum {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_INT,    /* a number without fraction or exponent that fits in long long */
    JSON_DOUBLE, /* any other number */
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT
} json_type;

typedef struct json_value json_value;
typedef struct json_member json_member;

struct json_value {
    json_type type;
    size_t len; /* bytes of a string (it may hold NUL), items of an array, members of an object */
    union {
        long long i;
        double d;
        const char *s;        /* UTF-8 (validated), NUL-terminated */
        json_value *items;    /* array items, in order */
        json_member *members; /* object members, in document order */
    } u;
};

struct json_member {
    const char *key; /* NUL-terminated UTF-8 */
    size_t key_len;
    json_value value;
};

/* A parsed document owns every value and string reachable from its root. */
typedef struct json_doc json_doc;

/* Parses exactly one JSON value (surrounding whitespace allowed) from text[0..len).
 * Rejects: invalid UTF-8 (also inside escapes: lone surrogates), control characters in strings,
 * nesting deeper than JSON_MAX_DEPTH, trailing garbage, empty input.
 * Returns 0 and sets *out, or -1 with a message in err that says what and where (byte offset). */
int json_parse(const char *text, size_t len, json_doc **out, char *err, size_t errlen);
const json_value *json_root(const json_doc *doc);
void json_doc_free(json_doc *doc); /* NULL is a no-op */

/* Object member by exact key; NULL when v is not an object or has no such key.
 * With duplicate keys the last one wins, as in most JSON readers. */
const json_value *json_get(const json_value *v, const char *key);
/* Same, but case-insensitive on ASCII letters. */
const json_value *json_get_ci(const json_value *v, const char *key);
/* The string value of member key, or NULL when absent or not a string. */
const char *json_get_str(const json_value *v, const char *key);
/* Array item i, or NULL when v is not an array or i is out of range. */
const json_value *json_at(const json_value *v, size_t i);

/* Appends s[0..len) as a quoted JSON string (control characters and non-ASCII kept as valid
 * UTF-8 or escaped). Returns 0 or -1 on out-of-memory. */
int json_write_string(textbuf *out, const char *s, size_t len);
/* Appends the compact JSON text of v. Returns 0 or -1 on out-of-memory. */
int json_write(textbuf *out, const json_value *v);

#endif
