/* testrun.c -- `cs-pdns test`: finds *_test.lua files and runs each in the policy sandbox with
 * lua/testing.lua. Must not: reach CloudStack, a database or Kafka; cs.mock answers cs.call. */
#include "testrun.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>

#include "embedded_lua.h"
#include "json.h"
#include "policy.h"
#include "text_file.h"
#include "textbuf.h"

/* The test file as a whole gets roomy limits; each records() call gets the product defaults. */
#define FILE_MAX_INSTRUCTIONS 200000000L
#define FILE_TIMEOUT_MS 60000
#define FILE_MAX_MEMORY_MB 512
#define DEFAULT_TTL 60 /* DNS_RECORD_TTL's default, so tests do not depend on the environment */
#define MAX_FIXTURE_BYTES (64u << 20)

static const char KEY_HARNESS = 'h'; /* registry: the table testing.lua returned */
#define BOX_MT "cspdns.testrun_box"

struct run {
    const char *policy_path; /* NULL: the built-in policy */
    int number, passed, failed;
};

struct file_ctx {
    struct run *run;
    const char *path;
    char dir[4096]; /* fixture() paths are relative to it */
    lua_State *L;   /* the test file's state, once setup ran */
    int tests;      /* test() calls that reported */
};

/* ---- output ---- */

static void report(struct run *r, const char *name, int ok, const char *message)
{
    r->number++;
    if (ok)
        r->passed++;
    else
        r->failed++;
    printf("%sok %d - ", ok ? "" : "not ", r->number);
    for (const char *c = name; *c; c++)
        putchar((unsigned char)*c < ' ' ? ' ' : *c);
    putchar('\n');
    if (!ok && message) {
        const char *line = message;
        while (*line) {
            size_t len = strcspn(line, "\n");
            printf("  %.*s\n", (int)len, line);
            line += len + (line[len] == '\n');
        }
    }
    fflush(stdout);
}

/* ---- resources a host function must not leak when Lua raises ---- */

struct box {
    json_doc *docs[5];
    struct dns_record *recs;
    struct policy *p;
};

static void box_clear(struct box *b)
{
    for (size_t i = 0; i < sizeof b->docs / sizeof b->docs[0]; i++)
        json_doc_free(b->docs[i]);
    free(b->recs);
    policy_free(b->p);
    memset(b, 0, sizeof *b);
}

/* [-1, +0, -] */
static int box_gc(lua_State *L)
{
    box_clear(luaL_checkudata(L, 1, BOX_MT));
    return 0;
}

/* [-0, +1, m] */
static struct box *push_box(lua_State *L)
{
    struct box *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BOX_MT);
    return b;
}

/* ---- Lua -> JSON text, for the real C path that takes json_value ---- */

static int encode(lua_State *L, int idx, textbuf *sb, int depth, char *err, size_t errlen);

/* The sequence at idx as a JSON array. Returns 0, -1 when out of memory, -2 with err.
 * [-0, +0, -] */
static int encode_array(lua_State *L, int idx, lua_Unsigned n, textbuf *sb, int depth, char *err,
                        size_t errlen)
{
    int rc = textbuf_putc(sb, '[');
    for (lua_Unsigned i = 1; rc == 0 && i <= n; i++) {
        if (i > 1)
            rc = textbuf_putc(sb, ',');
        lua_rawgeti(L, idx, (lua_Integer)i);
        if (rc == 0 && encode(L, -1, sb, depth + 1, err, errlen) != 0)
            rc = -2;
        lua_pop(L, 1);
    }
    return rc == 0 ? textbuf_putc(sb, ']') : rc;
}

/* The table at idx, whose keys are all strings, as a JSON object. Returns as encode_array.
 * [-0, +0, -] */
static int encode_object(lua_State *L, int idx, textbuf *sb, int depth, char *err, size_t errlen)
{
    int rc = textbuf_putc(sb, '{'), first = 1;
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, idx)) {
        size_t klen;
        const char *k = lua_tolstring(L, -2, &klen);
        if (!first)
            rc = textbuf_putc(sb, ',');
        first = 0;
        if (rc == 0)
            rc = json_write_string(sb, k, klen);
        if (rc == 0)
            rc = textbuf_putc(sb, ':');
        if (rc == 0 && encode(L, -1, sb, depth + 1, err, errlen) != 0)
            rc = -2;
        lua_pop(L, rc == 0 ? 1 : 2);
    }
    return rc == 0 ? textbuf_putc(sb, '}') : rc;
}

/* Appends the JSON text of the value at idx. It makes no Lua call that can raise, so the
 * malloc'ed buffer cannot leak. Returns 0, or -1 with err. [-0, +0, -] */
static int encode(lua_State *L, int idx, textbuf *sb, int depth, char *err, size_t errlen)
{
    idx = lua_absindex(L, idx);
    if (depth >= JSON_MAX_DEPTH - 2 || !lua_checkstack(L, 3)) {
        snprintf(err, errlen, "tables nested too deeply (a table that contains itself?)");
        return -1;
    }
    int rc = 0;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        rc = textbuf_puts(sb, "null");
        break;
    case LUA_TBOOLEAN:
        rc = textbuf_puts(sb, lua_toboolean(L, idx) ? "true" : "false");
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            rc = textbuf_printf(sb, "%lld", (long long)lua_tointeger(L, idx));
        } else {
            double d = lua_tonumber(L, idx);
            char num[40];
            if (!isfinite(d)) {
                snprintf(err, errlen, "%g is not a JSON number", d);
                return -1;
            }
            snprintf(num, sizeof num, "%.17g", d);
            /* keep it a float on the way back: JSON 2 would come back as an integer */
            rc = textbuf_puts(sb, num);
            if (rc == 0 && !strpbrk(num, ".eE"))
                rc = textbuf_puts(sb, ".0");
        }
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        rc = json_write_string(sb, s, len);
        break;
    }
    case LUA_TTABLE: {
        lua_Unsigned n = lua_rawlen(L, idx), count = 0;
        int sequence = 1, strings = 1;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            count++;
            if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 ||
                (lua_Unsigned)lua_tointeger(L, -2) > n)
                sequence = 0;
            if (lua_type(L, -2) != LUA_TSTRING)
                strings = 0;
            lua_pop(L, 1);
        }
        if (count == 0)
            rc = textbuf_puts(sb, "{}");
        else if (sequence && count == n)
            rc = encode_array(L, idx, n, sb, depth, err, errlen);
        else if (strings)
            rc = encode_object(L, idx, sb, depth, err, errlen);
        else {
            snprintf(err, errlen, "a table mixes list items and other keys");
            return -1;
        }
        if (rc < -1)
            return -1;
        break;
    }
    default:
        snprintf(err, errlen, "a %s value has no JSON form", lua_typename(L, lua_type(L, idx)));
        return -1;
    }
    if (rc != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* The value at idx as a parsed document in *slot (a box field). [-0, +0, v] */
static void value_to_doc(lua_State *L, int idx, const char *what, json_doc **slot)
{
    textbuf sb = TEXTBUF_INIT;
    char err[512];
    int rc = encode(L, idx, &sb, 0, err, sizeof err);
    if (rc == 0 && json_parse(textbuf_str(&sb), sb.len, slot, err, sizeof err) != 0)
        rc = -1;
    textbuf_free(&sb);
    if (rc != 0)
        luaL_error(L, "records(): %s cannot be passed as JSON: %s", what, err);
}

/* ---- host functions for testing.lua; upvalue 1 is the struct file_ctx ---- */

/* [-0, +0, -] */
static struct file_ctx *ctx_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* host.report(name, ok, message) [-3, +0, v] */
static int tr_report(lua_State *L)
{
    struct file_ctx *f = ctx_of(L);
    const char *name = luaL_checkstring(L, 1);
    f->tests++;
    report(f->run, name, lua_toboolean(L, 2), lua_tostring(L, 3));
    return 0;
}

/* host.traceback(err): the message handler of test(). [-1, +1, m] */
static int tr_traceback(lua_State *L)
{
    policy_push_traceback(L, 2);
    return 1;
}

/* host.where(level) -> "file:line" of the function level calls up. [-1, +1, m] */
static int tr_where(lua_State *L)
{
    lua_Debug ar;
    int level = (int)luaL_checkinteger(L, 1);
    if (lua_getstack(L, level, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
        lua_pushfstring(L, "%s:%d", ar.short_src, ar.currentline);
    else
        lua_pushliteral(L, "?");
    return 1;
}

/* host.fixture(relpath): a JSON file beside the test, converted as the policy's vm is.
 * [-1, +1, v] */
static int tr_fixture(lua_State *L)
{
    struct file_ctx *f = ctx_of(L);
    const char *rel = luaL_checkstring(L, 1);
    char path[4352], err[4608];
    int plen = rel[0] == '/' ? snprintf(path, sizeof path, "%s", rel)
                             : snprintf(path, sizeof path, "%s/%s", f->dir, rel);
    if (plen < 0 || (size_t)plen >= sizeof path)
        return luaL_error(L, "fixture('%s'): the path is too long", rel);
    struct box *b = push_box(L);
    char *text;
    size_t len;
    int rc = text_file_read(path, MAX_FIXTURE_BYTES, &text, &len, err, sizeof err);
    if (rc == 0) {
        rc = json_parse(text, len, &b->docs[0], err, sizeof err);
        free(text);
    }
    if (rc != 0)
        return luaL_error(L, "fixture('%s'): %s", rel, err);
    policy_push_json(L, json_root(b->docs[0]));
    box_clear(b);
    return 1;
}

struct mock_req {
    const char *command;
    const struct cs_param *params;
    size_t n;
    struct cs_reply *r;
    char *err;
    size_t errlen;
    csp_status status;
};

/* Asks testing.lua's harness.answer about one cs.call and fills the reply. The reply is boxed
 * by the caller (policy.c), so a raise here cannot leak its document. [-1, +0, e] */
static int mock_answer(lua_State *L)
{
    struct mock_req *q = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_HARNESS);
    lua_getfield(L, 1, "answer");
    lua_pushstring(L, q->command);
    lua_createtable(L, 0, (int)q->n);
    for (size_t i = 0; i < q->n; i++) {
        lua_pushstring(L, q->params[i].value);
        lua_setfield(L, 4, q->params[i].name);
    }
    lua_call(L, 2, 4); /* 2..5: kind, a, b, c */
    const char *kind = lua_tostring(L, 2);
    if (kind && strcmp(kind, "ok") == 0) {
        char key[96];
        size_t k = 0;
        for (const char *c = q->command; *c && k < sizeof key - 10; c++)
            key[k++] = (char)((*c >= 'A' && *c <= 'Z') ? *c - 'A' + 'a' : *c);
        strcpy(key + k, "response");
        textbuf sb = TEXTBUF_INIT;
        char err[512] = "out of memory";
        int rc = textbuf_printf(&sb, "{\"%s\":", key);
        if (rc == 0)
            rc = encode(L, 3, &sb, 1, err, sizeof err);
        if (rc == 0)
            rc = textbuf_putc(&sb, '}');
        if (rc == 0)
            rc = json_parse(textbuf_str(&sb), sb.len, &q->r->doc, err, sizeof err);
        textbuf_free(&sb);
        if (rc != 0)
            return luaL_error(L, "the cs.mock answer for %s cannot be JSON: %s", q->command, err);
        q->r->result = json_get(json_root(q->r->doc), key);
        q->r->http_status = 200;
        q->status = CSP_OK;
    } else if (kind && strcmp(kind, "error") == 0) {
        const char *msg = lua_tostring(L, 3);
        snprintf(q->err, q->errlen, "%s", msg ? msg : "API error");
        if (lua_toboolean(L, 5)) {
            q->status = CSP_TRANSIENT;
        } else {
            q->r->http_status = (int)lua_tointeger(L, 4);
            q->r->errorcode = q->r->http_status;
            q->status = CSP_PERMANENT;
        }
    } else {
        const char *msg = lua_tostring(L, 3);
        snprintf(q->err, q->errlen, "%s", msg ? msg : "no cs.mock answer");
        q->status = CSP_TRANSIENT;
    }
    return 0;
}

/* policy_cs_fn for the test file's state and every policy records() builds: the mocks live in
 * the test file's state, which is suspended in a host function while a policy runs. Balanced on
 * that state, and never raises into it. [-0, +0, -] */
static csp_status tr_cs_call(void *ud, const char *command, const struct cs_param *params, size_t n,
                             struct cs_reply *r, char *err, size_t errlen)
{
    struct file_ctx *f = ud;
    lua_State *L = f->L;
    memset(r, 0, sizeof *r);
    if (!L || !lua_checkstack(L, 4)) {
        snprintf(err, errlen, "cs.call(%s) outside test(): mock it with cs.mock inside a test",
                 command);
        return CSP_TRANSIENT;
    }
    int top = lua_gettop(L);
    struct mock_req q = {command, params, n, r, err, errlen, CSP_TRANSIENT};
    lua_pushcfunction(L, mock_answer);
    lua_pushlightuserdata(L, &q);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        snprintf(err, errlen, "test harness: %s", msg ? msg : "error");
        cs_reply_free(r);
        q.status = CSP_TRANSIENT;
    }
    lua_settop(L, top);
    return q.status;
}

/* Checks that the table at idx has only the allowed string keys. [-0, +0, v] */
static void check_keys(lua_State *L, int idx, const char *what, const char *const *allowed)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int ok = 0;
        for (const char *const *a = allowed; k && *a && !ok; a++)
            ok = strcmp(k, *a) == 0;
        if (!ok)
            luaL_error(L, "records(): %s has an unknown key %s", what, k ? k : "(not a string)");
        lua_pop(L, 1);
    }
}

/* Pushes the raw field key of the table at idx; raises unless it is nil or of type t.
 * [-0, +1, v] */
static int field_of(lua_State *L, int idx, const char *key, int t, const char *what)
{
    lua_pushstring(L, key);
    int got = lua_rawget(L, idx);
    if (got != LUA_TNIL && got != t)
        luaL_error(L, "records(): %s.%s must be a %s, not a %s", what, key, lua_typename(L, t),
                   lua_typename(L, got));
    return got != LUA_TNIL;
}

/* host.records(vm, ctx): the policy under test through policy_new and policy_records, exactly
 * as the daemon calls it; returns the checked records sorted, or false, or raises. [-2, +1, v] */
static int tr_records(lua_State *L)
{
    static const char *const ctx_keys[] = {"account",  "domain", "project", "event",
                                           "settings", "kafka",  "trigger", NULL};
    static const char *const settings_keys[] = {"ttl", "common_zone", "add_to_common_zone", NULL};
    static const char *const kafka_keys[] = {"topic", "partition", "offset", NULL};
    struct file_ctx *f = ctx_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    check_keys(L, 2, "ctx", ctx_keys);
    struct box *b = push_box(L); /* 3 */
    value_to_doc(L, 1, "vm", &b->docs[0]);
    const json_value *objs[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4; i++) {
        if (field_of(L, 2, ctx_keys[i], LUA_TTABLE, "ctx")) {
            value_to_doc(L, -1, ctx_keys[i], &b->docs[i + 1]);
            objs[i] = json_root(b->docs[i + 1]);
        }
        lua_pop(L, 1);
    }

    struct policy_config cfg = {
        .path = f->run->policy_path,
        .ttl = DEFAULT_TTL,
        .cs_call = tr_cs_call,
        .cs_ud = f,
    };
    struct policy_input in = {.vm = json_root(b->docs[0]),
                              .account = objs[0],
                              .domain = objs[1],
                              .project = objs[2],
                              .event = objs[3],
                              .trigger = "test"};
    /* the tables stay on the stack (4, 5), so the strings read from them stay valid */
    if (field_of(L, 2, "settings", LUA_TTABLE, "ctx")) {
        check_keys(L, 4, "ctx.settings", settings_keys);
        if (field_of(L, 4, "ttl", LUA_TNUMBER, "ctx.settings")) {
            if (!lua_isinteger(L, -1))
                return luaL_error(L, "records(): ctx.settings.ttl must be an integer");
            cfg.ttl = (int)lua_tointeger(L, -1);
        }
        if (field_of(L, 4, "common_zone", LUA_TSTRING, "ctx.settings"))
            cfg.common_zone = lua_tostring(L, -1);
        if (field_of(L, 4, "add_to_common_zone", LUA_TBOOLEAN, "ctx.settings"))
            cfg.add_to_common_zone = lua_toboolean(L, -1);
        lua_settop(L, 4);
    }
    if (field_of(L, 2, "kafka", LUA_TTABLE, "ctx")) {
        int k = lua_gettop(L);
        check_keys(L, k, "ctx.kafka", kafka_keys);
        if (field_of(L, k, "topic", LUA_TSTRING, "ctx.kafka"))
            in.topic = lua_tostring(L, -1);
        if (field_of(L, k, "partition", LUA_TNUMBER, "ctx.kafka"))
            in.partition = (int32_t)lua_tointeger(L, -1);
        if (field_of(L, k, "offset", LUA_TNUMBER, "ctx.kafka"))
            in.offset = (int64_t)lua_tointeger(L, -1);
        lua_settop(L, k);
    }
    if (field_of(L, 2, "trigger", LUA_TSTRING, "ctx"))
        in.trigger = lua_tostring(L, -1);

    char err[8192];
    if (policy_new(&cfg, &b->p, err, sizeof err) != 0)
        return luaL_error(L, "records(): the policy did not load: %s", err);
    size_t n = 0;
    policy_result r = policy_records(b->p, &in, &b->recs, &n, err, sizeof err);
    if (r == POLICY_FAILED || r == POLICY_TRANSIENT) {
        if (r == POLICY_TRANSIENT)
            lua_pushfstring(L, "records(): transient CloudStack failure (the host would retry): %s",
                            err);
        else
            lua_pushstring(L, err);
        box_clear(b);
        return lua_error(L);
    }
    if (r == POLICY_UNCHANGED) {
        lua_pushboolean(L, 0);
    } else {
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            lua_createtable(L, 0, 4);
            lua_pushstring(L, b->recs[i].name);
            lua_setfield(L, -2, "name");
            lua_pushstring(L, dns_rr_type_name(b->recs[i].type));
            lua_setfield(L, -2, "type");
            lua_pushstring(L, b->recs[i].content);
            lua_setfield(L, -2, "content");
            lua_pushinteger(L, b->recs[i].ttl);
            lua_setfield(L, -2, "ttl");
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
    }
    box_clear(b);
    return 1;
}

/* Loads testing.lua into the test file's state; it hands back the harness table and the helpers,
 * which become globals here (Lua code cannot create globals in the sandbox). Runs with the
 * policy's table on top. [-0, +0, e] */
static void tr_setup(lua_State *L, void *ud)
{
    static const luaL_Reg host_funcs[] = {
        {"report", tr_report},   {"traceback", tr_traceback}, {"where", tr_where},
        {"fixture", tr_fixture}, {"records", tr_records},     {NULL, NULL},
    };
    struct file_ctx *f = ud;
    int policy_idx = lua_gettop(L);
    f->L = L;
    luaL_newmetatable(L, BOX_MT);
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    const struct embedded_lua *t = embedded_lua_find("testing");
    if (!t)
        luaL_error(L, "the built-in testing.lua is missing from this build");
    if (luaL_loadbufferx(L, t->src, t->len, "=testing.lua", "t") != LUA_OK)
        lua_error(L);
    lua_newtable(L);
    lua_pushlightuserdata(L, f);
    luaL_setfuncs(L, host_funcs, 1);
    lua_pushvalue(L, policy_idx);
    lua_call(L, 2, 2);
    if (!lua_istable(L, -1) || !lua_istable(L, -2))
        luaL_error(L, "the built-in testing.lua did not return its harness and helpers");
    lua_pushglobaltable(L);
    lua_pushnil(L);
    while (lua_next(L, -3)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    lua_pop(L, 2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_HARNESS);
}

static void run_file(struct run *r, const char *path)
{
    struct file_ctx f = {.run = r, .path = path};
    snprintf(f.dir, sizeof f.dir, "%s", path);
    char *slash = strrchr(f.dir, '/');
    if (!slash)
        strcpy(f.dir, ".");
    else if (slash == f.dir)
        f.dir[1] = '\0';
    else
        *slash = '\0';
    struct policy_config cfg = {
        .path = r->policy_path,
        .ttl = DEFAULT_TTL,
        .max_instructions = FILE_MAX_INSTRUCTIONS,
        .timeout_ms = FILE_TIMEOUT_MS,
        .max_memory_mb = FILE_MAX_MEMORY_MB,
        .cs_call = tr_cs_call,
        .cs_ud = &f,
    };
    struct policy *p;
    char err[8192];
    if (policy_new(&cfg, &p, err, sizeof err) != 0) {
        report(r, path, 0, err);
        return;
    }
    int rc = policy_run_script(p, path, tr_setup, &f, err, sizeof err);
    policy_free(p);
    if (rc != 0)
        report(r, path, 0, err);
    else if (f.tests == 0)
        report(r, path, 0, "this file has no test(name, fn) calls");
}

struct file_list {
    char **v;
    size_t n, cap;
};

static int list_add(struct file_list *l, const char *path)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(path)))
        return -1;
    l->n++;
    return 0;
}

static int is_test_file(const struct dirent *e)
{
    size_t len = strlen(e->d_name);
    return len > 9 && strcmp(e->d_name + len - 9, "_test.lua") == 0;
}

/* A file as given, or a directory's *_test.lua files in name order. */
static int collect(struct file_list *l, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "cs-pdns test: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return list_add(l, path);
    struct dirent **names;
    int n = scandir(path, &names, is_test_file, alphasort);
    if (n < 0) {
        fprintf(stderr, "cs-pdns test: %s: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char full[8192];
        snprintf(full, sizeof full, "%s/%s", path, names[i]->d_name);
        if (rc == 0)
            rc = list_add(l, full);
        free(names[i]);
    }
    free(names);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: cs-pdns test [--policy FILE] FILES_OR_DIRS...\n"
                 "Runs the policy tests (*_test.lua; a directory gives all of its *_test.lua\n"
                 "files) against the policy FILE, by default the built-in policy.\n");
}

int testrun_main(int argc, char **argv)
{
    struct run r = {0};
    struct file_list files = {0};
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    size_t npaths = 0;
    int rc = 2;
    if (!paths) {
        fprintf(stderr, "cs-pdns test: out of memory\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--policy") == 0 && i + 1 < argc) {
            r.policy_path = argv[++i];
        } else if (strncmp(argv[i], "--policy=", 9) == 0) {
            r.policy_path = argv[i] + 9;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "cs-pdns test: unknown option %s\n", argv[i]);
            usage(stderr);
            goto out;
        } else {
            paths[npaths++] = argv[i];
        }
    }
    if (npaths == 0) {
        usage(stderr);
        goto out;
    }
    for (size_t i = 0; i < npaths; i++)
        if (collect(&files, paths[i]) != 0)
            goto out;

    /* a policy that does not load or fails its self-check fails once, not in every test */
    struct policy_config cfg = {.path = r.policy_path, .ttl = DEFAULT_TTL, .self_check = 1};
    struct policy *p;
    char err[8192];
    if (policy_new(&cfg, &p, err, sizeof err) != 0) {
        char name[4200];
        snprintf(name, sizeof name, "policy %s loads and passes its self-check",
                 r.policy_path ? r.policy_path : "(built-in)");
        report(&r, name, 0, err);
    } else {
        policy_free(p);
        for (size_t i = 0; i < files.n; i++)
            run_file(&r, files.v[i]);
    }
    if (r.number == 0)
        fprintf(stderr, "cs-pdns test: no *_test.lua files found\n");
    printf("%d passed, %d failed\n", r.passed, r.failed);
    rc = r.failed == 0 && r.passed > 0 ? 0 : 1;
out:
    for (size_t i = 0; i < files.n; i++)
        free(files.v[i]);
    free(files.v);
    free(paths);
    return rc;
}
