/* test_json.c -- unit tests for the strict JSON parser, the lookups and the writer.
 * Must not: depend on anything but json, textbuf and the C library. */
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "textbuf.h"
#include "unit.h"

static json_doc *parse_ok(const char *text, size_t len)
{
    json_doc *doc = NULL;
    char err[256];
    if (json_parse(text, len, &doc, err, sizeof(err)) != 0) {
        fprintf(stderr, "unexpected parse failure: %s\n  input: %.200s\n", err, text);
        return NULL;
    }
    return doc;
}

#define PARSE_OK(s) parse_ok((s), sizeof(s) - 1)

/* Expects a rejection whose message names byte offset at and contains what. */
static int reject(const char *text, size_t len, size_t at, const char *what)
{
    json_doc *doc = (json_doc *)1;
    char err[256], where[48];
    int rc = json_parse(text, len, &doc, err, sizeof(err));
    if (rc == 0) {
        fprintf(stderr, "accepted invalid input: %.200s\n", text);
        json_doc_free(doc);
        return 0;
    }
    snprintf(where, sizeof(where), "at byte %zu:", at);
    if (doc != NULL || !strstr(err, where) || !strstr(err, what)) {
        fprintf(stderr, "wrong rejection for %.100s\n  got:  %s\n  want: %s ... %s\n", text, err,
                where, what);
        return 0;
    }
    return 1;
}

#define REJECT(s, at, what) CHECK(reject((s), sizeof(s) - 1, (at), (what)))

/* Deep equality of two trees (doubles bit-for-bit apart from NaN, which parsing never makes). */
static int same_tree(const json_value *a, const json_value *b)
{
    if (a->type != b->type || a->len != b->len)
        return 0;
    switch (a->type) {
    case JSON_NULL:
    case JSON_FALSE:
    case JSON_TRUE:
        return 1;
    case JSON_INT:
        return a->u.i == b->u.i;
    case JSON_DOUBLE:
        return a->u.d == b->u.d && signbit(a->u.d) == signbit(b->u.d);
    case JSON_STRING:
        return memcmp(a->u.s, b->u.s, a->len + 1) == 0;
    case JSON_ARRAY:
        for (size_t i = 0; i < a->len; i++)
            if (!same_tree(&a->u.items[i], &b->u.items[i]))
                return 0;
        return 1;
    case JSON_OBJECT:
        for (size_t i = 0; i < a->len; i++) {
            const json_member *x = &a->u.members[i], *y = &b->u.members[i];
            if (x->key_len != y->key_len || memcmp(x->key, y->key, x->key_len + 1) != 0 ||
                !same_tree(&x->value, &y->value))
                return 0;
        }
        return 1;
    }
    return 0;
}

/* Parses text, writes it, parses the output again and checks both trees and both texts agree. */
static int round_trip(const char *text, size_t len, const char *want_text)
{
    json_doc *a = parse_ok(text, len), *b = NULL;
    textbuf w1 = TEXTBUF_INIT, w2 = TEXTBUF_INIT;
    int ok = 0;
    if (a && json_write(&w1, json_root(a)) == 0 && (b = parse_ok(w1.buf, w1.len)) &&
        json_write(&w2, json_root(b)) == 0)
        ok = same_tree(json_root(a), json_root(b)) && w1.len == w2.len &&
             memcmp(w1.buf, w2.buf, w1.len) == 0 &&
             (!want_text || strcmp(textbuf_str(&w1), want_text) == 0);
    if (!ok)
        fprintf(stderr, "round trip failed for %.200s\n  wrote: %.200s\n", text, textbuf_str(&w1));
    json_doc_free(a);
    json_doc_free(b);
    textbuf_free(&w1);
    textbuf_free(&w2);
    return ok;
}

#define ROUND_TRIP(s, want) CHECK(round_trip((s), sizeof(s) - 1, (want)))

static void test_scalars(void)
{
    json_doc *d;

    d = PARSE_OK(" null ");
    CHECK(d && json_root(d)->type == JSON_NULL);
    json_doc_free(d);
    d = PARSE_OK("\t\r\ntrue\n");
    CHECK(d && json_root(d)->type == JSON_TRUE);
    json_doc_free(d);
    d = PARSE_OK("false");
    CHECK(d && json_root(d)->type == JSON_FALSE);
    json_doc_free(d);

    struct {
        const char *text;
        long long want;
    } ints[] = {
        {"0", 0},
        {"-0", 0},
        {"7", 7},
        {"-42", -42},
        {"9223372036854775807", 9223372036854775807LL},
        {"-9223372036854775808", -9223372036854775807LL - 1},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        d = parse_ok(ints[i].text, strlen(ints[i].text));
        CHECK(d && json_root(d)->type == JSON_INT && json_root(d)->u.i == ints[i].want);
        json_doc_free(d);
    }

    struct {
        const char *text;
        double want;
    } dbls[] = {
        {"1.5", 1.5},
        {"-0.25", -0.25},
        {"1e3", 1000.0},
        {"1E+2", 100.0},
        {"2e-2", 0.02},
        {"0.1", 0.1},
        {"9223372036854775808", 9223372036854775808.0},
        {"-9223372036854775809", -9223372036854775809.0},
        {"123456789012345678901234567890", 123456789012345678901234567890.0},
        {"1.7976931348623157e308", 1.7976931348623157e308},
        {"4.9406564584124654e-324", 4.9406564584124654e-324},
        {"1e-400", 0.0}, /* underflow is not an error: the nearest double is 0 */
    };
    for (size_t i = 0; i < sizeof(dbls) / sizeof(dbls[0]); i++) {
        d = parse_ok(dbls[i].text, strlen(dbls[i].text));
        CHECK(d && json_root(d)->type == JSON_DOUBLE && json_root(d)->u.d == dbls[i].want);
        json_doc_free(d);
    }
    d = PARSE_OK("-0.0");
    CHECK(d && json_root(d)->type == JSON_DOUBLE && json_root(d)->u.d == 0.0 &&
          signbit(json_root(d)->u.d));
    json_doc_free(d);
}

static void test_strings(void)
{
    json_doc *d;
    const json_value *v;

    d = PARSE_OK("\"a\\u003db \\u0026 \\u003c\\u003e\\u0027\"");
    v = json_root(d);
    CHECK(d && v->type == JSON_STRING);
    CHECK_STR(v->u.s, "a=b & <>'");
    CHECK_INT(v->len, 9);
    json_doc_free(d);

    d = PARSE_OK("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"");
    CHECK(d && json_root(d)->len == 8 && memcmp(json_root(d)->u.s, "\"\\/\b\f\n\r\t", 9) == 0);
    json_doc_free(d);

    /* NUL inside a string is kept, and len counts it. */
    d = PARSE_OK("\"a\\u0000b\"");
    CHECK(d && json_root(d)->len == 3 && memcmp(json_root(d)->u.s, "a\0b", 4) == 0);
    json_doc_free(d);

    /* Escapes decode to UTF-8: 2-, 3- and 4-byte forms, the last from a surrogate pair. */
    d = PARSE_OK("\"\\u00e9\\u20AC\\ud83d\\ude00\\uFFFF\"");
    CHECK(d && json_root(d)->len == 2 + 3 + 4 + 3 &&
          memcmp(json_root(d)->u.s, "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xEF\xBF\xBF", 13) == 0);
    json_doc_free(d);
    d = PARSE_OK("\"\\uDBFF\\uDFFF\""); /* U+10FFFF, the highest code point */
    CHECK(d && json_root(d)->len == 4 && memcmp(json_root(d)->u.s, "\xF4\x8F\xBF\xBF", 5) == 0);
    json_doc_free(d);

    /* Raw UTF-8 at every sequence length and at the edges of the valid ranges. */
    d = PARSE_OK("\"\xC2\x80 \xC3\xA9 \xDF\xBF \xE0\xA0\x80 \xE2\x82\xAC \xED\x9F\xBF \xEE\x80\x80 "
                 "\xF0\x90\x80\x80 \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF \x7F\"");
    CHECK(d && json_root(d)->type == JSON_STRING && json_root(d)->len == 41);
    json_doc_free(d);

    d = PARSE_OK("\"\"");
    CHECK(d && json_root(d)->len == 0 && json_root(d)->u.s[0] == '\0');
    json_doc_free(d);

    /* An escaped quote right before the closing one, and escaped backslashes before it. */
    d = PARSE_OK("[\"a\\\"\", \"b\\\\\", \"\\\\\\\"\"]");
    v = json_root(d);
    CHECK(d && v->len == 3);
    CHECK_STR(json_at(v, 0)->u.s, "a\"");
    CHECK_STR(json_at(v, 1)->u.s, "b\\");
    CHECK_STR(json_at(v, 2)->u.s, "\\\"");
    json_doc_free(d);
}

static void test_containers(void)
{
    json_doc *d = PARSE_OK("{ \"a\" : [1, 2.5, \"x\", null, true, false, {}, []], \"b\": {\"c\": "
                           "{\"d\": \"deep\"}}, \"a\": \"second\", \"Name\": \"web-01\"}");
    const json_value *r = json_root(d);
    CHECK(d && r->type == JSON_OBJECT && r->len == 4);
    if (!d)
        return;
    CHECK_STR(r->u.members[0].key, "a");
    CHECK(r->u.members[0].value.type == JSON_ARRAY && r->u.members[0].value.len == 8);
    const json_value *arr = &r->u.members[0].value;
    CHECK(json_at(arr, 0)->type == JSON_INT && json_at(arr, 0)->u.i == 1);
    CHECK(json_at(arr, 1)->type == JSON_DOUBLE && json_at(arr, 1)->u.d == 2.5);
    CHECK_STR(json_at(arr, 2)->u.s, "x");
    CHECK(json_at(arr, 3)->type == JSON_NULL);
    CHECK(json_at(arr, 4)->type == JSON_TRUE);
    CHECK(json_at(arr, 5)->type == JSON_FALSE);
    CHECK(json_at(arr, 6)->type == JSON_OBJECT && json_at(arr, 6)->len == 0);
    CHECK(json_at(arr, 7)->type == JSON_ARRAY && json_at(arr, 7)->len == 0);
    CHECK(json_at(arr, 8) == NULL);
    CHECK(json_at(r, 0) == NULL); /* not an array */
    CHECK(json_at(NULL, 0) == NULL);

    /* Duplicate key: the last one wins. */
    CHECK_STR(json_get_str(r, "a"), "second");
    CHECK(json_get(r, "A") == NULL);
    CHECK(json_get_ci(r, "A") != NULL && json_get_ci(r, "A")->type == JSON_STRING);
    CHECK_STR(json_get_str(r, "Name"), "web-01");
    CHECK(json_get_str(r, "name") == NULL);
    CHECK_STR(json_get_ci(r, "NAME")->u.s, "web-01");
    CHECK(json_get_ci(r, "nam") == NULL);
    CHECK(json_get(r, "missing") == NULL);
    CHECK(json_get_str(r, "b") == NULL); /* present, but not a string */
    CHECK_STR(json_get_str(json_get(json_get(r, "b"), "c"), "d"), "deep");
    CHECK(json_get(json_get(r, "nope"), "c") == NULL);
    CHECK(json_get(arr, "a") == NULL); /* not an object */
    CHECK(json_get(NULL, "a") == NULL);
    CHECK(json_get_str(NULL, "a") == NULL);
    json_doc_free(d);

    /* Keys of an inner object must not leak into the outer object's member. */
    d = PARSE_OK("{\"outer\":{\"inner\":1,\"x\":[{\"y\":2}]},\"next\":3}");
    r = json_root(d);
    CHECK(d && r->len == 2);
    CHECK_STR(r->u.members[0].key, "outer");
    CHECK_STR(r->u.members[1].key, "next");
    CHECK(json_get(json_at(json_get(json_get(r, "outer"), "x"), 0), "y")->u.i == 2);
    json_doc_free(d);

    /* Keys may hold escapes and NUL; json_get on a C string cannot match past the NUL. */
    d = PARSE_OK("{\"k\\u0000z\":1,\"\\u00e9t\\u00e9\":2}");
    r = json_root(d);
    CHECK(d && r->u.members[0].key_len == 3 && memcmp(r->u.members[0].key, "k\0z", 4) == 0);
    CHECK(json_get(r, "k") == NULL);
    CHECK(json_get(r, "\xC3\xA9t\xC3\xA9") != NULL && json_get(r, "\xC3\xA9t\xC3\xA9")->u.i == 2);
    json_doc_free(d);

    CHECK(json_root(NULL) == NULL);
    json_doc_free(NULL);
}

/* Shapes from CloudStack's Kafka event bus (cloudstack-formats.md), with Gson's HTML-safe escapes.
 */
static void test_cloudstack_samples(void)
{
    static const char action[] =
        "{\"account\":\"3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63\",\"zone\":\"6e0d2b8a-3c4f-4a1e-b7d9-"
        "5f2c8e0a1d36\",\"event\":\"VM.DESTROY\",\"resource\":\"com.cloud.vm.VirtualMachine\","
        "\"id\":\"9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41\",\"eventDateTime\":\"2024-05-02 16:41:09 "
        "+0000\",\"description\":\"deleting User test4 (id: 28) and accountId \\u003d 28\"}";
    json_doc *d = PARSE_OK(action);
    const json_value *r = json_root(d);
    CHECK(d && r->len == 7);
    CHECK_STR(json_get_str(r, "event"), "VM.DESTROY");
    CHECK_STR(json_get_str(r, "description"), "deleting User test4 (id: 28) and accountId = 28");
    json_doc_free(d);

    /* 4.11-4.15 async job: jobResult is a string "<class>/<object>/<json>", cmdInfo a JSON string
     * that itself holds a JSON string (ctxDetails), so '=' arrives as \\u003d one level down. */
    static const char job[] =
        "{\"jobId\":\"d5a8c1f4-7e2b-4d9a-b6c3-0f5e8a1d4b27\",\"commandEventType\":\"VM.CREATE\","
        "\"processStatus\":\"0\",\"cmdInfo\":\"{\\\"response\\\":\\\"json\\\",\\\"ctxDetails\\\":"
        "\\\"{\\\\\\\"interface com.cloud.vm.VirtualMachine\\\\\\\":\\\\\\\"9c2f4e1a\\\\\\\"}\\\","
        "\\\"signature\\\":\\\"3qX0k7bLr1ZpQw9sT2vY5uN8mA4\\\\u003d\\\"}\",\"instanceType\":"
        "\"VirtualMachine\",\"jobResult\":\"org.apache.cloudstack.api.response.UserVmResponse/"
        "virtualmachine/{\\\"id\\\":\\\"9c2f4e1a\\\",\\\"name\\\":\\\"web-01\\\",\\\"nic\\\":[{"
        "\\\"ipaddress\\\":\\\"10.1.1.23\\\",\\\"isolationuri\\\":\\\"vlan://1203\\\","
        "\\\"isdefault\\\":true,\\\"ip6address\\\":\\\"2001:db8:100:10:0:3cff:fe5e:1\\\"}],"
        "\\\"cpunumber\\\":1,\\\"memory\\\":1024,\\\"haenable\\\":false}\",\"resultCode\":\"0\","
        "\"status\":\"SUCCEEDED\"}";
    d = PARSE_OK(job);
    r = json_root(d);
    CHECK(d != NULL);
    if (!d)
        return;
    CHECK_STR(json_get_str(r, "status"), "SUCCEEDED");

    const char *cmd = json_get_str(r, "cmdInfo");
    json_doc *cd = cmd ? parse_ok(cmd, strlen(cmd)) : NULL;
    CHECK(cd != NULL);
    CHECK_STR(json_get_str(json_root(cd), "signature"), "3qX0k7bLr1ZpQw9sT2vY5uN8mA4=");
    const char *details = json_get_str(json_root(cd), "ctxDetails");
    json_doc *dd = details ? parse_ok(details, strlen(details)) : NULL;
    CHECK_STR(json_get_str(json_root(dd), "interface com.cloud.vm.VirtualMachine"), "9c2f4e1a");
    json_doc_free(dd);
    json_doc_free(cd);

    const char *res = json_get_str(r, "jobResult");
    const char *slash = res ? strchr(res, '/') : NULL;
    slash = slash ? strchr(slash + 1, '/') : NULL; /* the JSON part itself contains '/' */
    json_doc *vd = slash ? parse_ok(slash + 1, strlen(slash + 1)) : NULL;
    const json_value *vm = json_root(vd);
    CHECK(vd && vm->type == JSON_OBJECT);
    CHECK_STR(json_get_str(vm, "name"), "web-01");
    CHECK(json_get(vm, "memory") && json_get(vm, "memory")->type == JSON_INT &&
          json_get(vm, "memory")->u.i == 1024);
    const json_value *nic = json_at(json_get(vm, "nic"), 0);
    CHECK_STR(json_get_str(nic, "isolationuri"), "vlan://1203");
    CHECK(json_get(nic, "isdefault") && json_get(nic, "isdefault")->type == JSON_TRUE);
    CHECK_STR(json_get_str(nic, "ip6address"), "2001:db8:100:10:0:3cff:fe5e:1");
    json_doc_free(vd);
    json_doc_free(d);

    /* 4.16+: the same data as nested objects; listVirtualMachines-style wrapper with a count. */
    static const char api[] =
        "{ \"listvirtualmachinesresponse\" : { \"count\":1 ,\"virtualmachine\" : [  {\"id\":"
        "\"9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41\",\"name\":\"web-01\",\"displayname\":\"web "
        "\\u0026 db\",\"details\":{},\"tags\":[],\"nic\":[{\"ipaddress\":\"10.1.1.23\","
        "\"secondaryip\":[{\"ipaddress\":\"10.1.1.24\"}]}],\"jobstatus\":0} ] } }";
    d = PARSE_OK(api);
    const json_value *lvm = json_get_ci(json_root(d), "listVirtualMachinesResponse");
    CHECK(json_get(lvm, "count") && json_get(lvm, "count")->u.i == 1);
    vm = json_at(json_get(lvm, "virtualmachine"), 0);
    CHECK_STR(json_get_str(vm, "displayname"), "web & db");
    CHECK_STR(json_get_str(json_at(json_get(json_at(json_get(vm, "nic"), 0), "secondaryip"), 0),
                           "ipaddress"),
              "10.1.1.24");
    json_doc_free(d);
}

static void test_rejections(void)
{
    /* Empty input and trailing garbage. */
    CHECK(reject("", 0, 0, "empty input"));
    CHECK(reject(NULL, 0, 0, "empty input"));
    REJECT(" \n\t ", 4, "empty input");
    REJECT("1 2", 2, "after the JSON value");
    REJECT("{} x", 3, "after the JSON value");
    REJECT("[1]]", 3, "after the JSON value");
    REJECT("1\0", 1, "after the JSON value");
    REJECT("\"a\"\"b\"", 3, "after the JSON value");
    REJECT("\xEF\xBB\xBF{}", 0, "expected a JSON value"); /* a byte order mark is not JSON */
    REJECT(" \f1", 1, "expected a JSON value");           /* form feed is not whitespace */

    /* Literals. */
    REJECT("tru", 0, "expected true");
    REJECT("nul", 0, "expected null");
    REJECT("[falsy]", 1, "expected false");
    REJECT("True", 0, "expected a JSON value");
    REJECT("NaN", 0, "expected a JSON value");
    REJECT("Infinity", 0, "expected a JSON value");
    REJECT("-Infinity", 0, "must be followed by a digit");
    REJECT("'a'", 0, "expected a JSON value");
    REJECT("undefined", 0, "expected a JSON value");

    /* Numbers. */
    REJECT("01", 0, "leading zeros");
    REJECT("-01", 0, "leading zeros");
    REJECT("-", 0, "must be followed by a digit");
    REJECT("- 1", 0, "must be followed by a digit");
    REJECT("+1", 0, "expected a JSON value");
    REJECT(".5", 0, "expected a JSON value");
    REJECT("1.", 2, "decimal point");
    REJECT("1.e5", 2, "decimal point");
    REJECT("1e", 2, "exponent");
    REJECT("1e+", 3, "exponent");
    REJECT("[1E-x]", 4, "exponent");
    REJECT("0x10", 1, "after the JSON value");
    REJECT("1e999", 0, "too large");
    REJECT("[-1e400]", 1, "too large");

    /* Strings. */
    REJECT("\"abc", 0, "unterminated string");
    REJECT("[\"abc\\\"]", 1, "unterminated string");
    REJECT("\"a\x01z\"", 2, "control character 0x01");
    REJECT("\"line\nbreak\"", 5, "control character 0x0A");
    REJECT("\"tab\there\"", 4, "control character 0x09");
    REJECT("\"a\\xb\"", 2, "invalid escape \\'x'");
    REJECT("\"a\\'\"", 2, "invalid escape");
    REJECT("\"\\u12\"", 1, "four hex digits");
    REJECT("\"\\u12G4\"", 1, "four hex digits");
    REJECT("\"\\u\"", 1, "four hex digits");
    REJECT("\"\\ud800\"", 1, "not followed by a low surrogate");
    REJECT("\"\\ud800x\"", 1, "not followed by a low surrogate");
    REJECT("\"\\ud800\\u0041\"", 1, "not followed by a low surrogate");
    REJECT("\"\\ud800\\ud800\"", 1, "not followed by a low surrogate");
    REJECT("\"\\udc00\"", 1, "lone low surrogate");
    REJECT("\"ok\\uDFFF\"", 3, "lone low surrogate");

    /* UTF-8: overlongs, surrogates, beyond U+10FFFF, stray and truncated sequences. */
    REJECT("\"\xC0\x80\"", 1, "invalid UTF-8 byte 0xC0");
    REJECT("\"\xC1\xBF\"", 1, "invalid UTF-8 byte 0xC1");
    REJECT("\"\xE0\x80\x80\"", 1, "invalid UTF-8");
    REJECT("\"\xE0\x9F\xBF\"", 1, "invalid UTF-8");
    REJECT("\"\xF0\x8F\xBF\xBF\"", 1, "invalid UTF-8");
    REJECT("\"\xED\xA0\x80\"", 1, "invalid UTF-8 byte 0xED");
    REJECT("\"\xED\xBF\xBF\"", 1, "invalid UTF-8");
    REJECT("\"\xF4\x90\x80\x80\"", 1, "invalid UTF-8 byte 0xF4");
    REJECT("\"\xF5\x80\x80\x80\"", 1, "invalid UTF-8 byte 0xF5");
    REJECT("\"\xFF\"", 1, "invalid UTF-8 byte 0xFF");
    REJECT("\"ab\x80\"", 3, "invalid UTF-8 byte 0x80");
    REJECT("\"\xE2\x82\"", 1, "invalid UTF-8");
    REJECT("\"\xE2\x82", 0, "unterminated string");
    REJECT("\"\xF0\x9F\x98\"", 1, "invalid UTF-8");
    REJECT("\"\xC3\x28\"", 1, "invalid UTF-8");
    REJECT("[\xC3\xA9]", 1, "expected a JSON value, found byte 0xC3");

    /* Structure. */
    REJECT("[1,]", 3, "expected a JSON value, found ']'");
    REJECT("[,1]", 1, "expected a JSON value, found ','");
    REJECT("[1 2]", 3, "expected ',' or ']'");
    REJECT("[1", 2, "expected ',' or ']', found end of input");
    REJECT("[", 1, "expected a value");
    REJECT("]", 0, "expected a JSON value");
    REJECT("{", 1, "expected a string key, found end of input");
    REJECT("{\"a\":1,}", 7, "expected a string key, found '}'");
    REJECT("{\"a\" 1}", 5, "expected ':'");
    REJECT("{a:1}", 1, "expected a string key, found 'a'");
    REJECT("{1:2}", 1, "expected a string key");
    REJECT("{\"a\":}", 5, "expected a JSON value, found '}'");
    REJECT("{\"a\"", 4, "expected ':' after object key, found end of input");
    REJECT("{\"a\":1 \"b\":2}", 7, "expected ',' or '}'");
    REJECT("{\"a\":1]", 6, "expected ',' or '}'");
    REJECT("[1}", 2, "expected ',' or ']'");
    REJECT("{\"a\":{\"b\":1}", 12, "expected ',' or '}'");

    /* Errors are reported without a buffer too, and a short buffer is truncated, terminated. */
    json_doc *doc;
    CHECK_INT(json_parse("[", 1, &doc, NULL, 0), -1);
    CHECK(doc == NULL);
    char tiny[10];
    CHECK_INT(json_parse("[", 1, &doc, tiny, sizeof(tiny)), -1);
    CHECK_INT(strlen(tiny), sizeof(tiny) - 1);
}

static void test_depth(void)
{
    char buf[2 * (JSON_MAX_DEPTH + 1) + 1];
    /* Exactly JSON_MAX_DEPTH levels parse; one more is rejected where it opens. */
    for (int depth = JSON_MAX_DEPTH; depth <= JSON_MAX_DEPTH + 1; depth++) {
        memset(buf, '[', (size_t)depth);
        memset(buf + depth, ']', (size_t)depth);
        json_doc *d = NULL;
        char err[128];
        int rc = json_parse(buf, 2 * (size_t)depth, &d, err, sizeof(err));
        if (depth == JSON_MAX_DEPTH) {
            CHECK_INT(rc, 0);
            const json_value *v = json_root(d);
            int levels = 0;
            while (v && v->type == JSON_ARRAY) {
                levels++;
                v = json_at(v, 0);
            }
            CHECK_INT(levels, JSON_MAX_DEPTH);
            json_doc_free(d);
        } else {
            CHECK_INT(rc, -1);
            CHECK(strstr(err, "at byte 64:") && strstr(err, "nesting deeper than 64"));
        }
    }

    /* Mixed objects and arrays count alike. */
    textbuf sb = TEXTBUF_INIT;
    for (int i = 0; i < JSON_MAX_DEPTH / 2; i++)
        textbuf_puts(&sb, "{\"a\":[");
    textbuf_puts(&sb, "{}");
    for (int i = 0; i < JSON_MAX_DEPTH / 2; i++)
        textbuf_puts(&sb, "]}");
    CHECK(reject(sb.buf, sb.len, (size_t)(6 * JSON_MAX_DEPTH / 2), "nesting deeper"));
    textbuf_free(&sb);

    /* A hostile 10,000-deep input fails cleanly. */
    char *deep = malloc(10000);
    if (deep) {
        memset(deep, '[', 10000);
        CHECK(reject(deep, 10000, JSON_MAX_DEPTH, "nesting deeper"));
        memset(deep, 'a', 10000);
        memcpy(deep, "{\"", 2); /* a 10,000-byte unterminated key */
        CHECK(reject(deep, 10000, 1, "unterminated string"));
        free(deep);
    }
}

static void test_big_inputs(void)
{
    /* About 16 MB of CloudStack-like objects. */
    textbuf sb = TEXTBUF_INIT;
    textbuf_putc(&sb, '[');
    size_t n = 0;
    while (sb.len < ((size_t)16 << 20) - 200) {
        textbuf_printf(&sb,
                       "%s{\"id\":\"vm-%zu\",\"n\":%zu,\"x\":%zu.5,\"s\":\"a\\u003db\xC3\xA9\","
                       "\"t\":[true,null]}",
                       n ? "," : "", n, n, n);
        n++;
    }
    textbuf_putc(&sb, ']');
    json_doc *d = parse_ok(sb.buf, sb.len);
    const json_value *r = json_root(d);
    CHECK(d && r->type == JSON_ARRAY && r->len == n);
    const json_value *last = json_at(r, n - 1);
    char want[32];
    snprintf(want, sizeof(want), "vm-%zu", n - 1);
    CHECK_STR(json_get_str(last, "id"), want);
    CHECK(json_get(last, "n") && json_get(last, "n")->u.i == (long long)(n - 1));
    CHECK(json_get(last, "x") && json_get(last, "x")->u.d == (double)(n - 1) + 0.5);
    CHECK_STR(json_get_str(last, "s"), "a=b\xC3\xA9");
    json_doc_free(d);

    /* One 16 MB string of escaped quotes: the end-of-string search must stay linear. */
    textbuf_reset(&sb);
    textbuf_putc(&sb, '"');
    while (sb.len < ((size_t)16 << 20))
        textbuf_puts(&sb, "\\\"\\\\\\\"x");
    textbuf_putc(&sb, '"');
    d = parse_ok(sb.buf, sb.len);
    CHECK(d && json_root(d)->len == (sb.len - 2) / 7 * 4);
    json_doc_free(d);

    /* 16 MB of whitespace, a 1M-digit number, and a flat array of 4M small integers. */
    textbuf_reset(&sb);
    for (size_t i = 0; i < ((size_t)16 << 20) / 16; i++)
        textbuf_puts(&sb, "               \n");
    textbuf_puts(&sb, "[1");
    for (size_t i = 0; i < 1000000; i++)
        textbuf_putc(&sb, '0');
    textbuf_puts(&sb, "e-999990]");
    d = parse_ok(sb.buf, sb.len);
    CHECK(d && json_at(json_root(d), 0)->type == JSON_DOUBLE &&
          json_at(json_root(d), 0)->u.d == 1e10);
    json_doc_free(d);

    textbuf_reset(&sb);
    textbuf_putc(&sb, '[');
    for (size_t i = 0; i < ((size_t)4 << 20); i++)
        textbuf_puts(&sb, i ? ",7" : "7");
    textbuf_putc(&sb, ']');
    d = parse_ok(sb.buf, sb.len);
    CHECK(d && json_root(d)->len == ((size_t)4 << 20) &&
          json_at(json_root(d), ((size_t)4 << 20) - 1)->u.i == 7);
    json_doc_free(d);
    textbuf_free(&sb);
}

static void test_writer(void)
{
    textbuf sb = TEXTBUF_INIT;
    CHECK_INT(json_write_string(&sb, "a\"b\\c\n\t\x01\x1f\x7f/", 11), 0);
    CHECK_STR(textbuf_str(&sb), "\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\x7f/\"");
    textbuf_reset(&sb);
    CHECK_INT(json_write_string(&sb, "x\0y", 3), 0);
    CHECK_STR(textbuf_str(&sb), "\"x\\u0000y\"");
    textbuf_reset(&sb);
    CHECK_INT(json_write_string(&sb, "", 0), 0);
    CHECK_STR(textbuf_str(&sb), "\"\"");

    /* Valid UTF-8 is kept; invalid bytes become U+FFFD so the output is always valid JSON. */
    textbuf_reset(&sb);
    CHECK_INT(json_write_string(&sb, "\xC3\xA9\xF0\x9F\x98\x80", 6), 0);
    CHECK_STR(textbuf_str(&sb), "\"\xC3\xA9\xF0\x9F\x98\x80\"");
    textbuf_reset(&sb);
    CHECK_INT(json_write_string(&sb, "a\xFF\xC0\x80\xED\xA0\x80z\xE2\x82", 10), 0);
    CHECK_STR(textbuf_str(&sb), "\"a\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffdz\\ufffd\\ufffd\"");
    json_doc *d = parse_ok(sb.buf, sb.len);
    CHECK(d && json_root(d)->type == JSON_STRING);
    json_doc_free(d);

    /* Hand-built values: non-finite doubles cannot be JSON numbers. */
    json_value v = {.type = JSON_DOUBLE, .u.d = INFINITY};
    textbuf_reset(&sb);
    CHECK_INT(json_write(&sb, &v), 0);
    CHECK_STR(textbuf_str(&sb), "null");
    textbuf_free(&sb);

    ROUND_TRIP(" { \"a\" : [ 1 , -2 , 3.25 ] , \"b\" : { } , \"c\" : [ ] , \"d\" : null , "
               "\"e\" : true , \"f\" : false } ",
               "{\"a\":[1,-2,3.25],\"b\":{},\"c\":[],\"d\":null,\"e\":true,\"f\":false}");
    ROUND_TRIP("[1.0, -0.0, 0.1, 1e300, 5e-324, 1.7976931348623157e308, 100e0]",
               "[1.0,-0.0,0.10000000000000001,1.0000000000000001e+300,4.9406564584124654e-324,"
               "1.7976931348623157e+308,100.0]");
    ROUND_TRIP("[9223372036854775807,-9223372036854775808,9223372036854775808]",
               "[9223372036854775807,-9223372036854775808,9.2233720368547758e+18]");
    ROUND_TRIP("\"\\u0000\\u001f\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\\u2028\"",
               "\"\\u0000\\u001f\\\"\\\\/\\b\\f\\n\\r\\t\xC3\xA9\xF0\x9F\x98\x80\xE2\x80\xA8\"");
    ROUND_TRIP("{\"k\\u0000\":{\"a\":[[[{}]]]},\"k\\u0000\":1}",
               "{\"k\\u0000\":{\"a\":[[[{}]]]},\"k\\u0000\":1}");
    ROUND_TRIP("[0.5e-3, 2E+10, 123456789.123456789]",
               "[0.00050000000000000001,20000000000.0,123456789.12345679]");
}

/* The decimal point must not follow LC_NUMERIC, in either direction. Only testable when a locale
 * with a comma decimal point is installed. */
static void test_locale(void)
{
    static const char *const names[] = {"de_DE.UTF-8", "de_DE.utf8",  "fr_FR.UTF-8",
                                        "fr_FR.utf8",  "ru_RU.UTF-8", "nl_NL.UTF-8"};
    const char *used = NULL;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !used; i++)
        if (setlocale(LC_NUMERIC, names[i]) && strcmp(localeconv()->decimal_point, ".") != 0)
            used = names[i];
    if (!used) {
        setlocale(LC_NUMERIC, "C");
        printf("test_json: no comma-decimal locale installed; locale checks skipped\n");
        return;
    }
    json_doc *d = PARSE_OK("[1.5, 2e-1]");
    CHECK(d && json_at(json_root(d), 0)->u.d == 1.5 && json_at(json_root(d), 1)->u.d == 0.2);
    textbuf sb = TEXTBUF_INIT;
    CHECK(d && json_write(&sb, json_root(d)) == 0);
    CHECK_STR(textbuf_str(&sb), "[1.5,0.20000000000000001]");
    textbuf_free(&sb);
    json_doc_free(d);
    setlocale(LC_NUMERIC, "C");
}

int main(void)
{
    test_scalars();
    test_strings();
    test_containers();
    test_cloudstack_samples();
    test_rejections();
    test_depth();
    test_big_inputs();
    test_writer();
    test_locale();
    return unit_done("test_json");
}
