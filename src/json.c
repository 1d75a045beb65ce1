/* json.c -- a strict RFC 8259 parser into an arena-owned read-only tree, and the JSON writer.
 * Must not: recurse while parsing (hostile nesting), depend on the locale, or read past the end. */
#define _GNU_SOURCE /* strtod_l: number conversion that ignores LC_NUMERIC */

#include "json.h"

#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

/* The document owns a short list of big chunks; every value block and string lives in them, so a
 * document costs a handful of mallocs and one walk to free. */
struct arena_chunk {
    struct arena_chunk *next;
    size_t size; /* usable bytes in data */
    size_t used;
    _Alignas(max_align_t) unsigned char data[];
};

struct arena {
    struct arena_chunk *head; /* the chunk allocations currently come from */
    size_t next_size;         /* usable size of the next chunk, grows geometrically */
};

#define ARENA_MIN_CHUNK ((size_t)4096)
#define ARENA_MAX_CHUNK ((size_t)4 << 20)

struct json_doc {
    json_value root;
    struct arena arena;
};

static void *arena_alloc(struct arena *a, size_t size, size_t align)
{
    struct arena_chunk *c = a->head;
    if (c) {
        size_t start = (c->used + align - 1) & ~(align - 1);
        if (start <= c->size && size <= c->size - start) {
            c->used = start + size;
            return c->data + start;
        }
    }
    size_t want = a->next_size;
    if (want < size)
        want = size;
    if (want > SIZE_MAX - sizeof(struct arena_chunk))
        return NULL;
    c = malloc(sizeof(struct arena_chunk) + want);
    if (!c)
        return NULL;
    c->next = a->head;
    c->size = want;
    c->used = size;
    a->head = c;
    if (a->next_size < ARENA_MAX_CHUNK)
        a->next_size *= 2;
    return c->data;
}

/* Gives back the unused tail of the most recent allocation p (strings are allocated at their
 * worst-case size before decoding). */
static void arena_trim_last(struct arena *a, const void *p, size_t used)
{
    struct arena_chunk *c = a->head;
    c->used = (size_t)((const unsigned char *)p - c->data) + used;
}

static void arena_free(struct arena *a)
{
    struct arena_chunk *c = a->head;
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}

/* ---- parser ---- */

struct frame {
    int is_object;
    size_t first;    /* index in the parser's pending stack of this container's first child */
    const char *key; /* objects: the key of the member being parsed */
    size_t key_len;
};

struct parser {
    const unsigned char *text;
    const unsigned char *p;
    const unsigned char *end;
    json_doc *doc;
    char *err;
    size_t errlen;
    /* Children of every open container wait here, in order, until their container closes and gets
     * one contiguous block in the arena. Each value is copied once, so parsing stays linear. */
    json_member *pending;
    size_t npending, cap_pending;
    struct frame frames[JSON_MAX_DEPTH];
    int depth;
    locale_t c_locale; /* created on the first non-integer number */
};

__attribute__((format(printf, 3, 4))) static int fail_at(struct parser *ps, const unsigned char *at,
                                                         const char *fmt, ...)
{
    if (ps->err && ps->errlen) {
        int n = snprintf(ps->err, ps->errlen, "JSON error at byte %zu: ", (size_t)(at - ps->text));
        if (n >= 0 && (size_t)n < ps->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

static int fail_oom(struct parser *ps)
{
    return fail_at(ps, ps->p, "out of memory");
}

/* Describes the byte at p for an error message: the end of input, a printable character, or
 * its hex value. */
static const char *byte_desc(const struct parser *ps, const unsigned char *p, char buf[16])
{
    if (p >= ps->end)
        return "end of input";
    if (*p >= 0x21 && *p < 0x7f)
        snprintf(buf, 16, "'%c'", *p);
    else
        snprintf(buf, 16, "byte 0x%02X", *p);
    return buf;
}

static void skip_ws(struct parser *ps)
{
    const unsigned char *p = ps->p;
    while (p < ps->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    ps->p = p;
}

static int push_pending(struct parser *ps, const char *key, size_t key_len, const json_value *v)
{
    if (ps->npending == ps->cap_pending) {
        size_t cap = ps->cap_pending ? ps->cap_pending * 2 : 64;
        if (cap > SIZE_MAX / sizeof(json_member))
            return fail_oom(ps);
        json_member *np = realloc(ps->pending, cap * sizeof(json_member));
        if (!np)
            return fail_oom(ps);
        ps->pending = np;
        ps->cap_pending = cap;
    }
    json_member *m = &ps->pending[ps->npending++];
    m->key = key;
    m->key_len = key_len;
    m->value = *v;
    return 0;
}

/* Length of the valid UTF-8 sequence starting at p (2..4), or 0 when it is invalid: overlong
 * forms, UTF-16 surrogates and code points above U+10FFFF are all rejected (RFC 3629 table). */
static size_t utf8_seq_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t avail = (size_t)(end - p);
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static size_t utf8_encode(unsigned cp, unsigned char *o)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the \u escape at *pp (the backslash) into o; advances *pp past it (and past the low half
 * of a surrogate pair), never reading at or past limit (the closing quote). Returns the bytes
 * written, or 0 after reporting an error. */
static size_t parse_u_escape(struct parser *ps, const unsigned char **pp,
                             const unsigned char *limit, unsigned char *o)
{
    const unsigned char *p = *pp;
    unsigned cp;
    if (limit - p < 6 || hex4(p + 2, &cp) != 0) {
        fail_at(ps, p, "\\u must be followed by four hex digits");
        return 0;
    }
    p += 6;
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
        fail_at(ps, *pp, "lone low surrogate \\u%04X in string", cp);
        return 0;
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (limit - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) != 0 || lo < 0xDC00 ||
            lo > 0xDFFF) {
            fail_at(ps, *pp, "high surrogate \\u%04X is not followed by a low surrogate escape",
                    cp);
            return 0;
        }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        p += 6;
    }
    *pp = p;
    return utf8_encode(cp, o);
}

/* Parses the string whose opening quote is at ps->p into the arena. */
static int parse_string(struct parser *ps, const char **out, size_t *out_len)
{
    const unsigned char *start = ps->p + 1;
    /* Find the closing quote first: the decoded string is never longer than its source, so the
     * source length bounds the arena allocation. */
    const unsigned char *q = start;
    for (;;) {
        q = memchr(q, '"', (size_t)(ps->end - q));
        if (!q)
            return fail_at(ps, ps->p, "unterminated string");
        const unsigned char *b = q;
        while (b > start && b[-1] == '\\')
            b--;
        if ((q - b) % 2 == 0)
            break;
        q++;
    }
    size_t cap = (size_t)(q - start) + 1;
    unsigned char *buf = arena_alloc(&ps->doc->arena, cap, 1);
    if (!buf)
        return fail_oom(ps);
    unsigned char *o = buf;
    const unsigned char *p = start;
    while (p < q) {
        const unsigned char *run = p;
        while (p < q && *p >= 0x20 && *p < 0x80 && *p != '\\')
            p++;
        memcpy(o, run, (size_t)(p - run));
        o += p - run;
        if (p == q)
            break;
        unsigned char c = *p;
        if (c < 0x20)
            return fail_at(ps, p, "control character 0x%02X must be escaped in a string", c);
        if (c >= 0x80) {
            size_t n = utf8_seq_len(p, q);
            if (!n)
                return fail_at(ps, p, "invalid UTF-8 byte 0x%02X in string", c);
            memcpy(o, p, n);
            o += n;
            p += n;
            continue;
        }
        if (q - p < 2)
            return fail_at(ps, p, "unterminated escape in string");
        char esc = (char)p[1];
        switch (esc) {
        case '"':
        case '\\':
        case '/':
            *o++ = (unsigned char)esc;
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            size_t n = parse_u_escape(ps, &p, q, o);
            if (!n)
                return -1;
            o += n;
            continue;
        }
        default: {
            char d[16];
            return fail_at(ps, p, "invalid escape \\%s in string", byte_desc(ps, p + 1, d));
        }
        }
        p += 2;
    }
    *o = '\0';
    arena_trim_last(&ps->doc->arena, buf, (size_t)(o - buf) + 1);
    *out = (const char *)buf;
    *out_len = (size_t)(o - buf);
    ps->p = q + 1;
    return 0;
}

static int parse_number(struct parser *ps, json_value *v)
{
    const unsigned char *start = ps->p, *p = ps->p, *end = ps->end;
    int neg = 0, is_int = 1;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9')
        return fail_at(ps, start, "'-' must be followed by a digit");
    /* Accumulate the magnitude while it still fits in long long; 2^63 is allowed when negative. */
    unsigned long long mag = 0, limit = neg ? (unsigned long long)LLONG_MAX + 1 : LLONG_MAX;
    int overflow = 0;
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9')
            return fail_at(ps, start, "numbers must not have leading zeros");
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            unsigned d = *p - '0';
            if (!overflow && mag <= (limit - d) / 10)
                mag = mag * 10 + d;
            else
                overflow = 1;
            p++;
        }
    }
    if (p < end && *p == '.') {
        is_int = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return fail_at(ps, p, "a digit must follow the decimal point");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return fail_at(ps, p, "a digit must follow the exponent mark");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    ps->p = p;
    if (is_int && !overflow) {
        v->type = JSON_INT;
        v->u.i = neg ? (mag == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)mag)
                     : (long long)mag;
        return 0;
    }
    /* strtod needs a terminated copy; the syntax is already checked, so it consumes all of it. */
    size_t n = (size_t)(p - start);
    char small[64];
    char *copy = n < sizeof(small) ? small : malloc(n + 1);
    if (!copy)
        return fail_oom(ps);
    memcpy(copy, start, n);
    copy[n] = '\0';
    if (!ps->c_locale) {
        ps->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
        if (!ps->c_locale) {
            if (copy != small)
                free(copy);
            return fail_oom(ps);
        }
    }
    double d = strtod_l(copy, NULL, ps->c_locale);
    if (copy != small)
        free(copy);
    if (!isfinite(d))
        return fail_at(ps, start, "number is too large for a double");
    v->type = JSON_DOUBLE;
    v->u.d = d;
    return 0;
}

static int expect_literal(struct parser *ps, const char *lit, size_t n)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0)
        return fail_at(ps, ps->p, "invalid literal (expected %s)", lit);
    ps->p += n;
    return 0;
}

/* Parses an object key and the colon after it; ps->p is at the key's opening quote or at whatever
 * stands there instead. */
static int parse_key(struct parser *ps, struct frame *f)
{
    char d[16];
    if (ps->p >= ps->end || *ps->p != '"')
        return fail_at(ps, ps->p, "expected a string key, found %s", byte_desc(ps, ps->p, d));
    if (parse_string(ps, &f->key, &f->key_len) != 0)
        return -1;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':')
        return fail_at(ps, ps->p, "expected ':' after object key, found %s",
                       byte_desc(ps, ps->p, d));
    ps->p++;
    skip_ws(ps);
    return 0;
}

/* Moves the pending children of the innermost container into one arena block and turns them into
 * the container's value. */
static int close_container(struct parser *ps, json_value *v)
{
    struct frame *f = &ps->frames[--ps->depth];
    size_t n = ps->npending - f->first;
    const json_member *kids = n ? ps->pending + f->first : NULL; /* pending is NULL until used */
    v->len = n;
    if (f->is_object) {
        v->type = JSON_OBJECT;
        v->u.members = NULL;
        if (n) {
            json_member *m = arena_alloc(&ps->doc->arena, n * sizeof(*m), _Alignof(json_member));
            if (!m)
                return fail_oom(ps);
            memcpy(m, kids, n * sizeof(*m));
            v->u.members = m;
        }
    } else {
        v->type = JSON_ARRAY;
        v->u.items = NULL;
        if (n) {
            json_value *items =
                arena_alloc(&ps->doc->arena, n * sizeof(*items), _Alignof(json_value));
            if (!items)
                return fail_oom(ps);
            for (size_t i = 0; i < n; i++)
                items[i] = kids[i].value;
            v->u.items = items;
        }
    }
    ps->npending = f->first;
    return 0;
}

static int open_container(struct parser *ps, int is_object)
{
    if (ps->depth >= JSON_MAX_DEPTH)
        return fail_at(ps, ps->p, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    struct frame *f = &ps->frames[ps->depth++];
    f->is_object = is_object;
    f->first = ps->npending;
    f->key = NULL;
    f->key_len = 0;
    ps->p++;
    skip_ws(ps);
    return 0;
}

/* Iterative: the open containers live in ps->frames, so nesting costs no C stack. */
static int parse_document(struct parser *ps)
{
    json_value v;
    char d[16];

    skip_ws(ps);
    if (ps->p >= ps->end)
        return fail_at(ps, ps->p, "empty input, expected a JSON value");
    for (;;) {
        /* Parse one value into v (containers are opened here and finished below). */
        if (ps->p >= ps->end)
            return fail_at(ps, ps->p, "unexpected end of input, expected a value");
        memset(&v, 0, sizeof(v));
        switch (*ps->p) {
        case '{':
        case '[': {
            int is_object = *ps->p == '{';
            if (open_container(ps, is_object) != 0)
                return -1;
            if (ps->p < ps->end && *ps->p == (is_object ? '}' : ']')) {
                ps->p++;
                if (close_container(ps, &v) != 0)
                    return -1;
                break;
            }
            if (is_object && parse_key(ps, &ps->frames[ps->depth - 1]) != 0)
                return -1;
            continue;
        }
        case '"':
            v.type = JSON_STRING;
            if (parse_string(ps, &v.u.s, &v.len) != 0)
                return -1;
            break;
        case 't':
            v.type = JSON_TRUE;
            if (expect_literal(ps, "true", 4) != 0)
                return -1;
            break;
        case 'f':
            v.type = JSON_FALSE;
            if (expect_literal(ps, "false", 5) != 0)
                return -1;
            break;
        case 'n':
            v.type = JSON_NULL;
            if (expect_literal(ps, "null", 4) != 0)
                return -1;
            break;
        default:
            if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) {
                if (parse_number(ps, &v) != 0)
                    return -1;
                break;
            }
            return fail_at(ps, ps->p, "expected a JSON value, found %s", byte_desc(ps, ps->p, d));
        }

        /* v is complete: hand it to its container, closing containers as their ends arrive. */
        for (;;) {
            if (ps->depth == 0) {
                ps->doc->root = v;
                skip_ws(ps);
                if (ps->p != ps->end)
                    return fail_at(ps, ps->p, "unexpected %s after the JSON value",
                                   byte_desc(ps, ps->p, d));
                return 0;
            }
            struct frame *f = &ps->frames[ps->depth - 1];
            if (push_pending(ps, f->key, f->key_len, &v) != 0)
                return -1;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                skip_ws(ps);
                if (f->is_object && parse_key(ps, f) != 0)
                    return -1;
                break;
            }
            if (ps->p < ps->end && *ps->p == (f->is_object ? '}' : ']')) {
                ps->p++;
                if (close_container(ps, &v) != 0)
                    return -1;
                continue;
            }
            return fail_at(ps, ps->p, "expected ',' or '%c', found %s", f->is_object ? '}' : ']',
                           byte_desc(ps, ps->p, d));
        }
    }
}

int json_parse(const char *text, size_t len, json_doc **out, char *err, size_t errlen)
{
    if (!out)
        return -1;
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    json_doc *doc = calloc(1, sizeof(*doc));
    if (!doc) {
        if (err && errlen)
            snprintf(err, errlen, "JSON error at byte 0: out of memory");
        return -1;
    }
    doc->arena.next_size = len < ARENA_MIN_CHUNK   ? ARENA_MIN_CHUNK
                           : len > ARENA_MAX_CHUNK ? ARENA_MAX_CHUNK
                                                   : len;
    static const unsigned char empty[1];
    struct parser ps = {0};
    ps.text = text ? (const unsigned char *)text : empty;
    ps.p = ps.text;
    ps.end = ps.text + (text ? len : 0);
    ps.doc = doc;
    ps.err = err;
    ps.errlen = errlen;
    int rc = parse_document(&ps);
    free(ps.pending);
    if (ps.c_locale)
        freelocale(ps.c_locale);
    if (rc != 0) {
        json_doc_free(doc);
        return -1;
    }
    *out = doc;
    return 0;
}

const json_value *json_root(const json_doc *doc)
{
    return doc ? &doc->root : NULL;
}

void json_doc_free(json_doc *doc)
{
    if (!doc)
        return;
    arena_free(&doc->arena);
    free(doc);
}

/* ---- lookup ---- */

static int ascii_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static const json_value *find_member(const json_value *v, const char *key, int ci)
{
    if (!v || v->type != JSON_OBJECT || !key)
        return NULL;
    size_t klen = strlen(key);
    /* Backwards, so that with duplicate keys the last one wins. */
    for (size_t i = v->len; i-- > 0;) {
        const json_member *m = &v->u.members[i];
        if (m->key_len != klen)
            continue;
        if (!ci) {
            if (memcmp(m->key, key, klen) == 0)
                return &m->value;
            continue;
        }
        size_t j = 0;
        while (j < klen &&
               ascii_lower((unsigned char)m->key[j]) == ascii_lower((unsigned char)key[j]))
            j++;
        if (j == klen)
            return &m->value;
    }
    return NULL;
}

const json_value *json_get(const json_value *v, const char *key)
{
    return find_member(v, key, 0);
}

const json_value *json_get_ci(const json_value *v, const char *key)
{
    return find_member(v, key, 1);
}

const char *json_get_str(const json_value *v, const char *key)
{
    const json_value *m = json_get(v, key);
    return m && m->type == JSON_STRING ? m->u.s : NULL;
}

const json_value *json_at(const json_value *v, size_t i)
{
    if (!v || v->type != JSON_ARRAY || i >= v->len)
        return NULL;
    return &v->u.items[i];
}

/* ---- writer ---- */

int json_write_string(textbuf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)(s ? s : ""), *end = p + (s ? len : 0);
    if (textbuf_putc(out, '"') != 0)
        return -1;
    while (p < end) {
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        if (p > run && textbuf_append(out, (const char *)run, (size_t)(p - run)) != 0)
            return -1;
        if (p == end)
            break;
        unsigned char c = *p;
        int rc;
        if (c >= 0x80) {
            /* Valid UTF-8 is kept; a byte that cannot start a valid sequence becomes U+FFFD so the
             * output is always valid JSON. */
            size_t n = utf8_seq_len(p, end);
            if (n) {
                rc = textbuf_append(out, (const char *)p, n);
                p += n;
            } else {
                rc = textbuf_append(out, "\\ufffd", 6);
                p++;
            }
            if (rc != 0)
                return -1;
            continue;
        }
        switch (c) {
        case '"':
            rc = textbuf_append(out, "\\\"", 2);
            break;
        case '\\':
            rc = textbuf_append(out, "\\\\", 2);
            break;
        case '\b':
            rc = textbuf_append(out, "\\b", 2);
            break;
        case '\f':
            rc = textbuf_append(out, "\\f", 2);
            break;
        case '\n':
            rc = textbuf_append(out, "\\n", 2);
            break;
        case '\r':
            rc = textbuf_append(out, "\\r", 2);
            break;
        case '\t':
            rc = textbuf_append(out, "\\t", 2);
            break;
        default: {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            rc = textbuf_append(out, e, sizeof(e));
        }
        }
        if (rc != 0)
            return -1;
        p++;
    }
    return textbuf_putc(out, '"');
}

/* %.17g round-trips every double, but its decimal point follows LC_NUMERIC, and an integral value
 * prints without one (and would read back as JSON_INT). Both are fixed up here. */
static int write_double(textbuf *out, double d)
{
    if (!isfinite(d))
        return textbuf_puts(out, "null"); /* JSON has no such number; the parser never makes one */
    char raw[64], fixed[72];
    int n = snprintf(raw, sizeof(raw), "%.17g", d);
    if (n < 0 || (size_t)n >= sizeof(raw))
        return -1;
    size_t o = 0;
    int has_point_or_exp = 0;
    for (int i = 0; i < n;) {
        char c = raw[i];
        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e') {
            if (c == 'e')
                has_point_or_exp = 1;
            fixed[o++] = c;
            i++;
            continue;
        }
        /* Any other run of bytes is the locale's decimal point (possibly multi-byte). */
        while (i < n && !((raw[i] >= '0' && raw[i] <= '9') || raw[i] == 'e'))
            i++;
        fixed[o++] = '.';
        has_point_or_exp = 1;
    }
    if (!has_point_or_exp) {
        fixed[o++] = '.';
        fixed[o++] = '0';
    }
    return textbuf_append(out, fixed, o);
}

/* Recursive, which is safe for trees from json_parse: they are at most JSON_MAX_DEPTH deep. */
int json_write(textbuf *out, const json_value *v)
{
    switch (v->type) {
    case JSON_NULL:
        return textbuf_puts(out, "null");
    case JSON_FALSE:
        return textbuf_puts(out, "false");
    case JSON_TRUE:
        return textbuf_puts(out, "true");
    case JSON_INT:
        return textbuf_printf(out, "%lld", v->u.i);
    case JSON_DOUBLE:
        return write_double(out, v->u.d);
    case JSON_STRING:
        return json_write_string(out, v->u.s, v->len);
    case JSON_ARRAY:
        if (textbuf_putc(out, '[') != 0)
            return -1;
        for (size_t i = 0; i < v->len; i++) {
            if (i && textbuf_putc(out, ',') != 0)
                return -1;
            if (json_write(out, &v->u.items[i]) != 0)
                return -1;
        }
        return textbuf_putc(out, ']');
    case JSON_OBJECT:
        if (textbuf_putc(out, '{') != 0)
            return -1;
        for (size_t i = 0; i < v->len; i++) {
            const json_member *m = &v->u.members[i];
            if (i && textbuf_putc(out, ',') != 0)
                return -1;
            if (json_write_string(out, m->key, m->key_len) != 0 || textbuf_putc(out, ':') != 0 ||
                json_write(out, &m->value) != 0)
                return -1;
        }
        return textbuf_putc(out, '}');
    }
    return -1;
}
