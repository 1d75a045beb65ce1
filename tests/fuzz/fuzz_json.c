/* fuzz_json.c -- libFuzzer target: the strict JSON parser, its lookups and the writer.
 * Must not: accept a crash-free run as enough; it checks that what is written parses back to
 * the same text. */
#include <string.h>

#include "fuzz.h"
#include "json.h"
#include "textbuf.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* Walks every value, as the decoder and the policy conversion do. */
static size_t walk(const json_value *v, int depth)
{
    FUZZ_ASSERT(depth <= JSON_MAX_DEPTH + 1);
    size_t n = 1;
    if (v->type == JSON_STRING)
        FUZZ_ASSERT(v->u.s[v->len] == '\0');
    if (v->type == JSON_ARRAY) {
        for (size_t i = 0; i < v->len; i++)
            n += walk(json_at(v, i), depth + 1);
        FUZZ_ASSERT(json_at(v, v->len) == NULL);
    }
    if (v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->len; i++) {
            const json_member *m = &v->u.members[i];
            FUZZ_ASSERT(m->key[m->key_len] == '\0');
            /* Keys compare by length too: "a\u0000b" is not "a". Where a key has no NUL, a
             * lookup finds it (the last duplicate wins, for json_get and so for everyone). */
            if (strlen(m->key) == m->key_len) {
                FUZZ_ASSERT(json_get(v, m->key) != NULL);
                FUZZ_ASSERT(json_get_ci(v, m->key) != NULL);
            } else {
                const json_value *cut = json_get(v, m->key);
                FUZZ_ASSERT(cut == NULL || cut != &m->value);
            }
            n += walk(&m->value, depth + 1);
        }
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_doc *doc = NULL;
    char err[256];
    if (json_parse((const char *)data, size, &doc, err, sizeof err) != 0) {
        FUZZ_ASSERT(strlen(err) > 0);
        return 0;
    }
    walk(json_root(doc), 0);
    textbuf a = TEXTBUF_INIT, b = TEXTBUF_INIT;
    FUZZ_ASSERT(json_write(&a, json_root(doc)) == 0);
    json_doc *again = NULL;
    if (json_parse(a.buf, a.len, &again, err, sizeof err) != 0) {
        fprintf(stderr, "written JSON does not parse: %s\n%.300s\n", err, a.buf);
        abort();
    }
    FUZZ_ASSERT(json_write(&b, json_root(again)) == 0);
    FUZZ_ASSERT(a.len == b.len && memcmp(a.buf, b.buf, a.len) == 0);
    textbuf_free(&a);
    textbuf_free(&b);
    json_doc_free(again);
    json_doc_free(doc);
    return 0;
}
