/* policy.c -- the C<->Lua boundary: sandboxed state, capped allocator, limit hook, host API, and
 * the checks that turn records(vm, ctx)'s answer into struct dns_record. Must not: write DNS,
 * touch Kafka, or reach CloudStack other than through the cs_call callback it is handed. */
#include "policy.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>
#include <lualib.h>

#include "clock.h"
#include "embedded_lua.h"
#include "logger.h"
#include "text_file.h"

/* Defaults for limits a caller leaves at 0; the same as the documented settings defaults. */
#define DEFAULT_MAX_INSTRUCTIONS 10000000L
#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_MAX_MEMORY_MB 64
#define DEFAULT_MAX_RECORDS 1000

#define HOOK_EVERY 1000             /* instructions between limit checks */
#define MAX_SOURCE_BYTES (4u << 20) /* policy files and modules; larger is surely a mistake */
#define CS_MAX_PARAMS 64
#define LABEL_MAX 64 /* declared name or version, truncated for logs */
#define SMALL_STEP 16
#define SMALL_CLASSES 16 /* blocks up to 256 bytes are kept for reuse */
#define KEY_SLOTS 512    /* JSON member names kept interned between calls */
#define KEY_SLOT_MAX 40  /* longer names are rare; Lua does not intern them either */

/* Registry keys: the addresses are unique, the values unused. */
static const char KEY_POLICY = 'p';    /* the table the policy file returned */
static const char KEY_CACHE = 'c';     /* cs.call answers of the current records() call */
static const char KEY_MODULES = 'm';   /* require()d modules of this state */
static const char KEY_LOADING = 'l';   /* module name -> call number while its chunk runs */
static const char KEY_CTX_MT = 'x';    /* metatable of ctx: builds ctx.event on first read */
static const char KEY_NAMES = 'n';     /* slot -> member name string, see struct key_slot */
static const char KEY_LAZY_DONE = 'd'; /* root -> { name = true } of the current call */
static const char KEY_LAZY_ROOT = 'r'; /* in a lazy metatable: its root's index */
#define REPLY_MT "cspdns.cs_reply"

enum trip { TRIP_NONE = 0, TRIP_INSTRUCTIONS, TRIP_DEADLINE, TRIP_MEMORY };

/* The JSON objects records() gets as tables built field by field (see lazy_index). */
enum lazy_root { LAZY_VM, LAZY_ACCOUNT, LAZY_DOMAIN, LAZY_PROJECT, LAZY_ROOTS };
static const char KEY_LAZY_MT[LAZY_ROOTS]; /* the metatable of each root's table */
static const char *const lazy_names[LAZY_ROOTS] = {"vm", "ctx.account", "ctx.domain",
                                                   "ctx.project"};

/* A member name string anchored in the KEY_NAMES table: every VM carries the same few dozen
 * names, and handing Lua the string it already has skips hashing, interning and allocating it
 * anew on every call. s points into the anchored string; NULL for an empty slot. */
struct key_slot {
    const char *s;
    size_t len;
};

struct policy {
    lua_State *L;
    /* configuration, owned copies */
    char *path;      /* NULL for the built-in policy */
    char *dir;       /* where require() looks; NULL for the built-in policy */
    char *chunkname; /* "@path" or "=policy.lua (built-in)" */
    char *src_owned; /* file text (NULL for the built-in one, which is static) */
    const char *src; /* kept so a rebuild loads exactly what policy_new checked */
    size_t src_len;
    char *common_zone; /* NULL when unset or empty */
    int ttl;
    int add_to_common_zone;
    long max_instructions;
    int timeout_ms;
    size_t max_memory;
    int max_records;
    policy_cs_fn cs_call;
    void *cs_ud;
    char label[2 * LABEL_MAX + 2]; /* "name/version" */
    /* state of the current protected call */
    int armed;
    long long seq; /* numbers protected calls, to tell a require loop from an old failure */
    enum trip tripped;
    const char *failure; /* why the last policy_records call failed, for metrics */
    long instructions;
    long long deadline_ms;
    int transient;
    char transient_msg[640];
    int rebuild;       /* the state must be rebuilt before the next call */
    int self_checking; /* cs.call is not answered: the self-check runs offline */
    const struct policy_input *in;
    const void *ctx;              /* the ctx of the running records() call; NULL between calls */
    const void *lazy[LAZY_ROOTS]; /* the running call's lazy tables; NULL between calls */
    size_t mem_used;              /* bytes the state holds */
    struct key_slot names[KEY_SLOTS]; /* valid for the current L only */
    void *spare[SMALL_CLASSES];       /* freed small blocks by size class, linked through */
};

/* [-0, +0, -] */
static struct policy *policy_of(lua_State *L)
{
    return *(struct policy **)lua_getextraspace(L);
}

/* Raises like luaL_error (with the caller's position), but takes full printf formats, which
 * lua_pushfstring does not. [-0, +1, v] */
static int raisef(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int raisef(lua_State *L, const char *fmt, ...)
{
    char buf[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return luaL_error(L, "%s", buf);
}

/* ---- limits ---- */

static const char *trip_text(enum trip t)
{
    switch (t) {
    case TRIP_INSTRUCTIONS:
        return "policy: instruction budget exceeded";
    case TRIP_DEADLINE:
        return "policy: deadline exceeded";
    case TRIP_MEMORY:
        return "policy: memory limit exceeded";
    default:
        return "policy: no limit exceeded";
    }
}

static void limit_hook(lua_State *L, lua_Debug *ar);

/* A pcall inside the policy would swallow the first error, so from now on every instruction
 * raises until the host's own pcall is reached. [-0, +0, -] */
static void trip(struct policy *p, enum trip why)
{
    if (p->tripped == TRIP_NONE)
        p->tripped = why;
    lua_sethook(p->L, limit_hook, LUA_MASKCOUNT, 1);
}

/* Raises once a limit is passed, and on every instruction after that. [-0, +0, v] */
static void limit_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct policy *p = policy_of(L);
    if (p->tripped == TRIP_NONE) {
        p->instructions += HOOK_EVERY;
        if (p->instructions > p->max_instructions)
            trip(p, TRIP_INSTRUCTIONS);
        else if (clock_ms() >= p->deadline_ms)
            trip(p, TRIP_DEADLINE);
        else
            return;
    }
    luaL_error(L, "%s", trip_text(p->tripped));
}

#if defined(__SANITIZE_ADDRESS__)
#define KEEP_SPARE 0 /* ASan must see every free to catch a use after it */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEEP_SPARE 0
#endif
#endif
#ifndef KEEP_SPARE
#define KEEP_SPARE 1
#endif

/* The spare list for blocks of n bytes; SMALL_CLASSES for blocks that go straight to malloc. */
static size_t small_class(size_t n)
{
    return KEEP_SPARE && n && n <= SMALL_STEP * SMALL_CLASSES ? (n - 1) / SMALL_STEP
                                                              : SMALL_CLASSES;
}

/* Every call builds and drops a few hundred small tables and strings; keeping freed blocks per
 * size class spares malloc and free most of that work. The cap counts what Lua holds, not the
 * spares, which never outgrow what the state once held. */
static void *small_get(struct policy *p, size_t c)
{
    void *b = p->spare[c];
    if (b) {
        p->spare[c] = *(void **)b;
        return b;
    }
    return malloc((c + 1) * SMALL_STEP);
}

static void small_put(struct policy *p, size_t c, void *b)
{
    *(void **)b = p->spare[c];
    p->spare[c] = b;
}

/* Counts every byte the state holds and refuses growth past the cap. Any refusal trips the
 * limit: lauxlib's buffers (string.rep, table.concat) report it as an ordinary error that a
 * pcall in the policy could swallow, and only Lua's own allocations get an emergency GC first. */
static void *policy_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct policy *p = ud;
    size_t old = ptr ? osize : 0; /* with ptr NULL, osize is a type tag */
    size_t oc = small_class(old), nc = small_class(nsize);
    if (nsize == 0) {
        if (oc < SMALL_CLASSES)
            small_put(p, oc, ptr);
        else
            free(ptr);
        p->mem_used -= old;
        return NULL;
    }
    if (nsize > old && p->mem_used - old + nsize > p->max_memory) {
        if (p->armed)
            trip(p, TRIP_MEMORY);
        return NULL;
    }
    void *np;
    if (ptr && oc == nc && nc < SMALL_CLASSES) {
        np = ptr;
    } else if (nc < SMALL_CLASSES || (ptr && oc < SMALL_CLASSES)) {
        np = nc < SMALL_CLASSES ? small_get(p, nc) : malloc(nsize);
        if (!np)
            return NULL;
        if (ptr) {
            memcpy(np, ptr, old < nsize ? old : nsize);
            if (oc < SMALL_CLASSES)
                small_put(p, oc, ptr);
            else
                free(ptr);
        }
    } else {
        np = realloc(ptr, nsize);
        if (!np)
            return NULL;
    }
    p->mem_used = p->mem_used - old + nsize;
    return np;
}

/* [-0, +0, -] */
static int on_panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    log_msg(LOG_LVL_ERROR, "policy", "unprotected Lua error, aborting: %s",
            msg ? msg : "(not a string)");
    abort();
}

/* Message handler: the error text plus a traceback. [-1, +1, m] */
void policy_push_traceback(lua_State *L, int level)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, level);
}

static int msgh(lua_State *L)
{
    policy_push_traceback(L, 1);
    return 1;
}

/* Runs f(ud) in protected mode under fresh limits. Leaves the message handler below f's nres
 * results, or below the error message; the caller restores the top. [-0, +1+nres|+2, -] */
static int call_limited(struct policy *p, lua_CFunction f, void *ud, int nres)
{
    lua_State *L = p->L;
    lua_pushcfunction(L, msgh);
    int h = lua_gettop(L);
    lua_pushcfunction(L, f);
    lua_pushlightuserdata(L, ud);
    p->seq++;
    p->tripped = TRIP_NONE;
    p->instructions = 0;
    p->deadline_ms = clock_ms() + p->timeout_ms;
    p->armed = 1;
    lua_sethook(L, limit_hook, LUA_MASKCOUNT, HOOK_EVERY);
    int st = lua_pcall(L, 1, nres, h);
    lua_sethook(L, NULL, 0, 0);
    p->armed = 0;
    return st;
}

/* Writes why a call_limited call failed into err; the error message is on top. A limit trip or
 * an allocation failure leaves the state unusable, so it is marked for a rebuild. [-0, +0, -] */
static void describe_failure(struct policy *p, int st, char *err, size_t errlen)
{
    const char *msg = lua_tostring(p->L, -1);
    if (p->tripped == TRIP_NONE && st != LUA_ERRMEM) {
        snprintf(err, errlen, "%s", msg ? msg : "(error object is not a string)");
        return;
    }
    p->rebuild = 1;
    enum trip t = p->tripped != TRIP_NONE ? p->tripped : TRIP_MEMORY;
    char detail[160];
    if (t == TRIP_INSTRUCTIONS)
        snprintf(detail, sizeof detail,
                 "more than %ld instructions: a loop that never ends? POLICY_MAX_INSTRUCTIONS",
                 p->max_instructions);
    else if (t == TRIP_DEADLINE)
        snprintf(detail, sizeof detail, "%d ms, CloudStack calls included; POLICY_TIMEOUT_MS",
                 p->timeout_ms);
    else
        snprintf(detail, sizeof detail, "%zu MB for the whole Lua state; POLICY_MAX_MEMORY_MB",
                 p->max_memory >> 20);
    const char *tb = msg ? strstr(msg, "\nstack traceback:") : NULL;
    snprintf(err, errlen, "%s (%s)%s", trip_text(t), detail, tb ? tb : "");
}

/* ---- JSON -> Lua ---- */

/* Pushes the member name key, from p's name slots when it is there (names at index names).
 * [-0, +1, m] */
static void push_name(lua_State *L, struct policy *p, int names, const char *key, size_t len)
{
    if (!p || len > KEY_SLOT_MAX) {
        lua_pushlstring(L, key, len);
        return;
    }
    /* a few bytes pick the slot: a collision only costs a miss, hashing every byte costs always */
    uint32_t h = (uint32_t)len * 0x9e3779b1u;
    if (len) {
        h ^= (uint32_t)(unsigned char)key[0] * 0x85ebca6bu;
        h ^= (uint32_t)(unsigned char)key[len - 1] * 0xc2b2ae35u;
        h ^= (uint32_t)(unsigned char)key[len / 2] * 0x27d4eb2fu;
        h ^= (uint32_t)(unsigned char)key[len / 3] * 0x165667b1u;
    }
    size_t slot = (h ^ (h >> 15)) % KEY_SLOTS;
    struct key_slot *ks = &p->names[slot];
    if (ks->s && ks->len == len && memcmp(ks->s, key, len) == 0) {
        lua_rawgeti(L, names, (lua_Integer)slot + 1);
        return;
    }
    lua_pushlstring(L, key, len);
    lua_pushvalue(L, -1);
    lua_rawseti(L, names, (lua_Integer)slot + 1);
    ks->s = lua_tostring(L, -1);
    ks->len = len;
}

/* policy_push_json, with member names from p's slots when p is not NULL (the KEY_NAMES table at
 * absolute index names). Recursion is bounded by JSON_MAX_DEPTH, which the parser enforces.
 * [-0, +1, m] */
static void push_json(lua_State *L, struct policy *p, int names, const json_value *v)
{
    luaL_checkstack(L, 3, "JSON nested too deeply");
    switch (v->type) {
    case JSON_NULL:
        lua_pushnil(L);
        break;
    case JSON_FALSE:
    case JSON_TRUE:
        lua_pushboolean(L, v->type == JSON_TRUE);
        break;
    case JSON_INT:
        lua_pushinteger(L, (lua_Integer)v->u.i);
        break;
    case JSON_DOUBLE:
        lua_pushnumber(L, v->u.d);
        break;
    case JSON_STRING:
        lua_pushlstring(L, v->u.s, v->len);
        break;
    case JSON_ARRAY: {
        lua_createtable(L, v->len > INT_MAX ? INT_MAX : (int)v->len, 0);
        lua_Integer i = 0;
        for (size_t k = 0; k < v->len; k++) {
            if (v->u.items[k].type == JSON_NULL)
                continue;
            push_json(L, p, names, &v->u.items[k]);
            lua_rawseti(L, -2, ++i);
        }
        break;
    }
    case JSON_OBJECT:
        lua_createtable(L, 0, v->len > INT_MAX ? INT_MAX : (int)v->len);
        for (size_t k = 0; k < v->len; k++) {
            const json_member *m = &v->u.members[k];
            if (m->value.type == JSON_NULL)
                continue;
            push_name(L, p, names, m->key, m->key_len);
            push_json(L, p, names, &m->value);
            lua_rawset(L, -3);
        }
        break;
    }
}

/* [-0, +1, m] */
void policy_push_json(lua_State *L, const json_value *v)
{
    push_json(L, NULL, 0, v);
}

/* Converts v with p's name slots. [-0, +1, m] */
static void push_json_named(lua_State *L, struct policy *p, const json_value *v)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_NAMES);
    push_json(L, p, lua_gettop(L), v);
    lua_remove(L, -2);
}

/* ---- ctx.event, built on first read ---- */

/* Converting the event costs a third of a call and most policies never read it, so ctx gets it
 * on first access (kept with rawset). The event's JSON is freed when the call returns, so a ctx
 * kept in module state has nothing left to build from: its unread event raises. Leaves the event
 * or nil on top. [-0, +1, e] */
static void ctx_build_event(lua_State *L, int ctx, int key)
{
    struct policy *p = policy_of(L);
    if (lua_topointer(L, ctx) != p->ctx || !p->in)
        luaL_error(L, "ctx.event is only available during the records() call that was given "
                      "this ctx; keep the table ctx.event itself if a later call needs it");
    const json_value *ev = p->in->event;
    if (!ev || ev->type == JSON_NULL) {
        lua_pushnil(L);
        return;
    }
    push_json_named(L, p, ev);
    lua_pushvalue(L, key);
    lua_pushvalue(L, -2);
    lua_rawset(L, ctx);
}

/* __index of ctx; upvalue 1 is the interned string "event". [-2, +1, e] */
static int ctx_index(lua_State *L)
{
    if (lua_rawequal(L, 2, lua_upvalueindex(1)))
        ctx_build_event(L, 1, 2);
    else
        lua_pushnil(L);
    return 1;
}

/* The next function __pairs hands out, immune to a policy reassigning the global. [-2, +2, e] */
static int raw_next(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (lua_next(L, 1))
        return 2;
    lua_pushnil(L);
    return 1;
}

/* What a __pairs returns for the table in slot 1: raw_next, the table, nil. [-(0|1), +3, -] */
static int pairs_of(lua_State *L)
{
    lua_settop(L, 1);
    lua_pushcfunction(L, raw_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

/* __pairs of ctx: builds the event first so iteration sees every documented field; a ctx kept
 * from an earlier call iterates without its (gone) event. [-1, +3, e] */
static int ctx_pairs(lua_State *L)
{
    struct policy *p = policy_of(L);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1)); /* 2 */
    if (lua_topointer(L, 1) == p->ctx && p->in && lua_rawget(L, 1) == LUA_TNIL) {
        lua_pushvalue(L, lua_upvalueindex(1)); /* 3 */
        ctx_build_event(L, 1, 3);
    }
    return pairs_of(L);
}

/* [-0, +0, e] */
static void new_ctx_metatable(lua_State *L)
{
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "event");
    lua_pushcclosure(L, ctx_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "event");
    lua_pushcclosure(L, ctx_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_CTX_MT);
}

/* ---- vm and the owner objects, built field by field ---- */

/* A VM as CloudStack lists it has some forty fields and nested objects, and most policies read
 * five of them: converting them all was a fifth of a call. So records() gets vm, ctx.account,
 * ctx.domain and ctx.project as tables that convert a field on its first read and keep it with
 * rawset. What would tell them from plain tables is covered: pairs, next, rawget, getmetatable,
 * setmetatable and json.encode see the whole table (lazy_fill first), and a field the policy
 * assigned or removed before reading it stays as the policy left it (the done table). The JSON
 * is freed when the call returns, so a table kept in module state raises when a later call reads
 * a field it never read; the policy must keep the fields, not the table. */

/* The root that the table at idx is the lazy table of, or -1 for any other value. [-0, +0, -] */
static int lazy_root_of(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx))
        return -1;
    int r = lua_rawgetp(L, -1, &KEY_LAZY_ROOT) == LUA_TNUMBER ? (int)lua_tointeger(L, -1) : -1;
    lua_pop(L, 2);
    return r;
}

/* The JSON object behind root r of the running call; raises for a table from an earlier call.
 * [-0, +0, e] */
static const json_value *lazy_source(lua_State *L, int idx, int r)
{
    struct policy *p = policy_of(L);
    if (!p->in || lua_topointer(L, idx) != p->lazy[r])
        luaL_error(L,
                   "%s: %s is only available during the records() call that received it; keep "
                   "the fields a later call needs (local name = vm.name), not the table",
                   lazy_names[r], lazy_names[r]);
    const json_value *roots[LAZY_ROOTS] = {p->in->vm, p->in->account, p->in->domain,
                                           p->in->project};
    return roots[r];
}

/* Pushes root r's { name = true } of the names this call already settled. [-0, +1, m] */
static void lazy_push_done(lua_State *L, int r)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_LAZY_DONE);
    if (lua_rawgeti(L, -1, r + 1) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 8);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, r + 1);
    }
    lua_remove(L, -2);
}

/* The last non-null member named key, as the eager conversion (last one wins) would keep it. */
static const json_value *lazy_member(const json_value *o, const char *key, size_t len)
{
    for (size_t j = o->len; j-- > 0;) {
        const json_member *m = &o->u.members[j];
        if (m->value.type != JSON_NULL && m->key_len == len && memcmp(m->key, key, len) == 0)
            return &m->value;
    }
    return NULL;
}

/* Converts every field not settled yet into the table at idx and makes it a plain table.
 * [-0, +0, e] */
static void lazy_fill(lua_State *L, int idx, int r)
{
    idx = lua_absindex(L, idx);
    const json_value *o = lazy_source(L, idx, r);
    struct policy *p = policy_of(L);
    lazy_push_done(L, r);
    int done = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_NAMES);
    int names = lua_gettop(L);
    /* from the end: the first member of a name met is the one that wins */
    for (size_t j = o->len; j-- > 0;) {
        const json_member *m = &o->u.members[j];
        if (m->value.type == JSON_NULL)
            continue;
        push_name(L, p, names, m->key, m->key_len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, done) != LUA_TNIL) {
            lua_pop(L, 2);
            continue;
        }
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, done);
        push_json(L, p, names, &m->value);
        lua_rawset(L, idx);
    }
    lua_pop(L, 2);
    lua_pushnil(L);
    lua_setmetatable(L, idx);
}

/* Fills the table at idx if it is a lazy one. [-0, +0, e] */
static void lazy_fill_any(lua_State *L, int idx)
{
    int r = lazy_root_of(L, idx);
    if (r >= 0)
        lazy_fill(L, idx, r);
}

/* __index of a lazy table; upvalue 1 is its root. [-2, +1, e] */
static int lazy_index(lua_State *L)
{
    int r = (int)lua_tointeger(L, lua_upvalueindex(1));
    if (lua_type(L, 2) != LUA_TSTRING) {
        lua_pushnil(L);
        return 1;
    }
    size_t len;
    const char *key = lua_tolstring(L, 2, &len);
    const json_value *o = lazy_source(L, 1, r);
    lazy_push_done(L, r); /* 3 */
    lua_pushvalue(L, 2);
    if (lua_rawget(L, 3) != LUA_TNIL) { /* read before, then removed by the policy */
        lua_pushnil(L);
        return 1;
    }
    const json_value *v = lazy_member(o, key, len);
    if (!v) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_pushboolean(L, 1);
    lua_rawset(L, 3);
    push_json_named(L, policy_of(L), v);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

/* __newindex of a lazy table: a field set (or set to nil) before it was read keeps the policy's
 * value. [-3, +0, e] */
static int lazy_newindex(lua_State *L)
{
    int r = (int)lua_tointeger(L, lua_upvalueindex(1));
    struct policy *p = policy_of(L);
    if (p->in && lua_topointer(L, 1) == p->lazy[r] && lua_type(L, 2) == LUA_TSTRING) {
        lazy_push_done(L, r);
        lua_pushvalue(L, 2);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 0;
}

/* __pairs of a lazy table. [-1, +3, e] */
static int lazy_pairs(lua_State *L)
{
    lazy_fill(L, 1, (int)lua_tointeger(L, lua_upvalueindex(1)));
    return pairs_of(L);
}

/* The base library's next, rawget and getmetatable, seeing a lazy table whole. */
static int l_next(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lazy_fill_any(L, 1);
    return raw_next(L);
}

static int l_rawget(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    lazy_fill_any(L, 1);
    lua_settop(L, 2);
    lua_rawget(L, 1);
    return 1;
}

static int l_getmetatable(lua_State *L)
{
    luaL_checkany(L, 1);
    lazy_fill_any(L, 1);
    if (!lua_getmetatable(L, 1)) {
        lua_pushnil(L);
        return 1;
    }
    luaL_getmetafield(L, 1, "__metatable");
    return 1;
}

/* fill(value) for the prelude's json.encode and setmetatable. [-1, +0, e] */
static int l_lazy_fill(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TTABLE)
        lazy_fill_any(L, 1);
    return 0;
}

/* [-0, +0, e] */
static void new_lazy_metatables(lua_State *L)
{
    for (int r = 0; r < LAZY_ROOTS; r++) {
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, r);
        lua_rawsetp(L, -2, &KEY_LAZY_ROOT);
        static const lua_CFunction fns[] = {lazy_index, lazy_newindex, lazy_pairs};
        static const char *const events[] = {"__index", "__newindex", "__pairs"};
        for (int i = 0; i < 3; i++) {
            lua_pushinteger(L, r);
            lua_pushcclosure(L, fns[i], 1);
            lua_setfield(L, -2, events[i]);
        }
        lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_LAZY_MT[r]);
    }
}

/* Pushes v as root r's table of the running call; anything but an object converts at once.
 * [-0, +1, m] */
static void lazy_push(lua_State *L, struct policy *p, int r, const json_value *v)
{
    if (v->type != JSON_OBJECT) {
        push_json_named(L, p, v);
        return;
    }
    lua_createtable(L, 0, 8);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_LAZY_MT[r]);
    lua_setmetatable(L, -2);
    p->lazy[r] = lua_topointer(L, -1);
}

/* ---- host API: dns ---- */

/* The string argument at arg, refused when it holds a NUL (C would silently cut it). [-0, +0, v] */
static const char *check_text(lua_State *L, int arg, const char *fn)
{
    size_t len;
    const char *s = luaL_checklstring(L, arg, &len);
    if (strlen(s) != len)
        raisef(L, "%s: argument #%d contains a NUL byte", fn, arg);
    return s;
}

/* dns.ptr(ip) -> "10.2.0.192.in-addr.arpa" [-1, +1, v] */
static int l_dns_ptr(lua_State *L)
{
    const char *ip = check_text(L, 1, "dns.ptr");
    char out[DNS_NAME_BUFSZ];
    if (dns_ptr_name(ip, out, sizeof out) != 0)
        return raisef(L, "dns.ptr: '%s' is not an IPv4 or IPv6 address", ip);
    lua_pushstring(L, out);
    return 1;
}

/* dns.label(text) -> LDH label, "" when nothing usable is left [-1, +1, v] */
static int l_dns_label(lua_State *L)
{
    const char *text = check_text(L, 1, "dns.label");
    char out[DNS_LABEL_MAX + 1];
    size_t n = dns_label_sanitize(text, out, sizeof out);
    lua_pushlstring(L, out, n);
    return 1;
}

/* dns.fqdn(label, zone) -> normalised name [-2, +1, v] */
static int l_dns_fqdn(lua_State *L)
{
    const char *label = check_text(L, 1, "dns.fqdn");
    const char *zone = check_text(L, 2, "dns.fqdn");
    char out[DNS_NAME_BUFSZ], e[256];
    if (dns_fqdn(label, zone, out, sizeof out, e, sizeof e) != 0)
        return raisef(L, "dns.fqdn('%s', '%s'): %s", label, zone, e);
    lua_pushstring(L, out);
    return 1;
}

/* dns.ip_version(s) -> 4, 6 or nil; never raises, so it can test anything [-1, +1, -] */
static int l_dns_ip_version(lua_State *L)
{
    size_t len;
    int v = 0;
    if (lua_type(L, 1) == LUA_TSTRING) {
        const char *s = lua_tolstring(L, 1, &len);
        if (strlen(s) == len)
            v = dns_ip_version(s);
    }
    if (v)
        lua_pushinteger(L, v);
    else
        lua_pushnil(L);
    return 1;
}

/* dns.canonical(ip) -> canonical address text [-1, +1, v] */
static int l_dns_canonical(lua_State *L)
{
    const char *ip = check_text(L, 1, "dns.canonical");
    char out[DNS_ADDR_BUFSZ];
    if (dns_ip_canonical(ip, out, sizeof out) == 0)
        return raisef(L, "dns.canonical: '%s' is not an IPv4 or IPv6 address", ip);
    lua_pushstring(L, out);
    return 1;
}

static const luaL_Reg dns_funcs[] = {
    {"ptr", l_dns_ptr},
    {"label", l_dns_label},
    {"fqdn", l_dns_fqdn},
    {"ip_version", l_dns_ip_version},
    {"canonical", l_dns_canonical},
    {NULL, NULL},
};

/* ---- host API: log ---- */

/* log.<level>(fmt, ...): upvalue 1 = level, upvalue 2 = string.format as it was at start, so a
 * policy that reassigns string.format cannot break logging. [-n, +0, e] */
static int l_log(lua_State *L)
{
    struct policy *p = policy_of(L);
    int lvl = (int)lua_tointeger(L, lua_upvalueindex(1));
    luaL_checkstring(L, 1);
    if (!log_enabled((log_level)lvl))
        return 0;
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    const char *msg = lua_tostring(L, -1);
    const struct policy_input *in = p->in;
    if (in && in->topic)
        log_at((log_level)lvl, "policy", in->topic, in->partition, in->offset, "%s", msg);
    else
        log_msg((log_level)lvl, "policy", "%s", msg);
    return 0;
}

/* ---- host API: cs.call ---- */

/* __gc of a boxed struct cs_reply, so a raise between the callback and the explicit free
 * cannot leak the reply's document. [-0, +0, -] */
static int reply_gc(lua_State *L)
{
    cs_reply_free(luaL_checkudata(L, 1, REPLY_MT));
    return 0;
}

static int param_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cs_param *)a)->name, ((const struct cs_param *)b)->name);
}

/* Converts the params table at index 2 into out[], anchoring every string it makes in the table
 * at index 3. Returns the count. [-0, +0, v] */
static size_t collect_params(lua_State *L, const char *command, struct cs_param *out)
{
    size_t n = 0;
    if (lua_isnil(L, 2))
        return 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            raisef(L, "cs.call(%s): parameter names must be strings, not %s", command,
                   luaL_typename(L, -2));
        if (n == CS_MAX_PARAMS)
            raisef(L, "cs.call(%s): more than %d parameters", command, CS_MAX_PARAMS);
        size_t klen;
        const char *key = lua_tolstring(L, -2, &klen);
        char lower[64];
        if (klen == 0 || klen >= sizeof lower || strlen(key) != klen)
            raisef(L, "cs.call(%s): parameter name '%s' must be 1 to 63 characters", command, key);
        for (size_t i = 0; i <= klen; i++)
            lower[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] - 'A' + 'a' : key[i]);
        lua_pushstring(L, lower);
        out[n].name = lua_tostring(L, -1);
        lua_rawseti(L, 3, (lua_Integer)(2 * n + 1));
        int t = lua_type(L, -1);
        if (t == LUA_TBOOLEAN) {
            out[n].value = lua_toboolean(L, -1) ? "true" : "false";
        } else if (t == LUA_TSTRING) {
            size_t vlen;
            const char *v = lua_tolstring(L, -1, &vlen);
            if (strlen(v) != vlen)
                raisef(L, "cs.call(%s): parameter '%s' contains a NUL byte", command, lower);
            lua_pushvalue(L, -1);
            out[n].value = lua_tostring(L, -1);
            lua_rawseti(L, 3, (lua_Integer)(2 * n + 2));
        } else {
            int isint = 0;
            lua_Integer iv = t == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
            if (!isint)
                raisef(L,
                       "cs.call(%s): parameter '%s' must be a string, integer or boolean, not %s",
                       command, lower, t == LUA_TNUMBER ? "a fraction" : luaL_typename(L, -1));
            char num[32];
            snprintf(num, sizeof num, "%lld", (long long)iv);
            lua_pushstring(L, num);
            out[n].value = lua_tostring(L, -1);
            lua_rawseti(L, 3, (lua_Integer)(2 * n + 2));
        }
        n++;
        lua_pop(L, 1);
    }
    qsort(out, n, sizeof *out, param_cmp);
    for (size_t i = 1; i < n; i++)
        if (strcmp(out[i - 1].name, out[i].name) == 0)
            raisef(L, "cs.call(%s): parameter '%s' is given twice", command, out[i].name);
    return n;
}

/* The cache key: lower-case command and the sorted params, length-prefixed so no value can
 * imitate another parameter. [-0, +1, m] */
static void push_cache_key(lua_State *L, const char *command, const struct cs_param *ps, size_t n)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (const char *c = command; *c; c++)
        luaL_addchar(&b, (char)((*c >= 'A' && *c <= 'Z') ? *c - 'A' + 'a' : *c));
    for (size_t i = 0; i < n; i++) {
        char len[48];
        snprintf(len, sizeof len, "|%zu:%zu:", strlen(ps[i].name), strlen(ps[i].value));
        luaL_addstring(&b, len);
        luaL_addstring(&b, ps[i].name);
        luaL_addstring(&b, ps[i].value);
    }
    luaL_pushresult(&b);
}

/* Returns the answer stored in the cache entry at idx. [-0, +1|+3, -] */
static int push_cached(lua_State *L, int idx)
{
    lua_getfield(L, idx, "ok");
    int ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (ok) {
        lua_rawgeti(L, idx, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_rawgeti(L, idx, 2);
    lua_rawgeti(L, idx, 3);
    return 3;
}

static int valid_command(const char *c)
{
    if (strncasecmp(c, "list", 4) != 0 || strlen(c) > 64)
        return 0;
    for (; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
            return 0;
    return 1;
}

/* cs.call(command, params) -> result | nil, errmsg, http_status. [-2, +1|+3, v] */
static int l_cs_call(lua_State *L)
{
    struct policy *p = policy_of(L);
    const char *command = check_text(L, 1, "cs.call");
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    if (!valid_command(command))
        return raisef(L, "cs.call: only read-only list* commands are allowed, not '%s'", command);
    if (p->self_checking) {
        /* transient, so it ends the check even when the policy catches it */
        p->transient = 1;
        snprintf(p->transient_msg, sizeof p->transient_msg,
                 "cs.call(%s): CloudStack is not called during the self-check", command);
        return luaL_error(L, "%s", p->transient_msg);
    }
    if (!p->cs_call)
        return raisef(L, "cs.call(%s): no CloudStack API is available here", command);

    lua_newtable(L); /* 3: anchors the strings params[] points into */
    struct cs_param params[CS_MAX_PARAMS];
    size_t n = collect_params(L, command, params);
    push_cache_key(L, command, params, n);         /* 4 */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_CACHE); /* 5: nil outside records() */
    if (lua_istable(L, 5)) {
        lua_pushvalue(L, 4);
        if (lua_rawget(L, 5) == LUA_TTABLE)
            return push_cached(L, 6);
        lua_pop(L, 1);
    }
    if (p->armed && clock_ms() >= p->deadline_ms) {
        trip(p, TRIP_DEADLINE);
        return luaL_error(L, "%s", trip_text(TRIP_DEADLINE));
    }

    struct cs_reply *r = lua_newuserdatauv(L, sizeof *r, 0); /* 6 */
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, REPLY_MT);
    char e[512] = "";
    csp_status st = p->cs_call(p->cs_ud, command, params, n, r, e, sizeof e);
    if (st == CSP_TRANSIENT) {
        cs_reply_free(r);
        p->transient = 1;
        snprintf(p->transient_msg, sizeof p->transient_msg, "cs.call(%s): %s", command,
                 e[0] ? e : "transient failure");
        return luaL_error(L, "%s", p->transient_msg);
    }
    lua_createtable(L, 3, 1); /* 7: the cache entry */
    int nret;
    if (st == CSP_OK) {
        if (r->result)
            push_json_named(L, p, r->result);
        else
            lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawseti(L, 7, 1);
        lua_pushboolean(L, 1);
        lua_setfield(L, 7, "ok");
        nret = 1;
    } else {
        lua_pushnil(L);
        lua_pushstring(L, e[0] ? e : "CloudStack API error");
        lua_pushinteger(L, r->http_status);
        lua_pushvalue(L, -2);
        lua_rawseti(L, 7, 2);
        lua_pushvalue(L, -1);
        lua_rawseti(L, 7, 3);
        nret = 3;
    }
    cs_reply_free(r);
    if (lua_istable(L, 5)) {
        lua_pushvalue(L, 4);
        lua_pushvalue(L, 7);
        lua_rawset(L, 5);
    }
    return nret;
}

static const luaL_Reg cs_funcs[] = {
    {"call", l_cs_call},
    {NULL, NULL},
};

/* ---- host API: require ---- */

/* Binary chunks start with LUA_SIGNATURE. Loading uses mode "t", which refuses them anyway;
 * checking first gives a message that says what is wrong. */
static int is_bytecode(const char *src, size_t len)
{
    return len >= 4 && memcmp(src, LUA_SIGNATURE, 4) == 0;
}

#define BYTECODE_MSG "%s is precompiled Lua bytecode; only Lua source text is loaded"

/* Runs the module chunk on top for l_require (name at 1, modules at 2, loading at 3) and caches
 * its value. [-1, +1, e] */
static int run_module(lua_State *L, struct policy *p)
{
    lua_pushvalue(L, 1);
    lua_pushinteger(L, p->seq);
    lua_rawset(L, 3);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, 3);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, 2);
    return 1;
}

/* Modules built into the binary, handed out by require() under names whose dot keeps them apart
 * from file modules (whose names cannot contain one): the built-in policy's table, so a policy
 * can wrap it, and the helpers it is built from. */
static const struct builtin_module {
    const char *name, *embedded, *chunk;
} BUILTIN_MODULES[] = {
    {"cspdns.default", "policy", "=policy.lua (built-in)"},
    {"cspdns.vm", "vm", "=vm.lua (built-in)"},
    {NULL, NULL, NULL},
};

/* require(name): <policy dir>/<name>.lua, text only, once per state, under the same limits; or
 * one of BUILTIN_MODULES. [-1, +1, v] */
static int l_require(lua_State *L)
{
    struct policy *p = policy_of(L);
    const char *name = check_text(L, 1, "require");
    const struct builtin_module *builtin = BUILTIN_MODULES;
    while (builtin->name && strcmp(name, builtin->name) != 0)
        builtin++;
    if (!builtin->name)
        builtin = NULL;
    size_t len = strlen(name);
    int ok = builtin || (len > 0 && len <= 64);
    for (const char *c = name; ok && !builtin && *c; c++)
        ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
             *c == '_' || *c == '-';
    if (!ok)
        return raisef(L,
                      "require('%s'): a module name is 1 to 64 letters, digits, '_' or '-' (or "
                      "'cspdns.default' for the built-in policy, 'cspdns.vm' for its helpers)",
                      name);
    lua_settop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_MODULES); /* 2 */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_LOADING); /* 3 */
    lua_pushvalue(L, 1);
    if (lua_rawget(L, 2) != LUA_TNIL)
        return 1;
    lua_pushvalue(L, 1);
    if (lua_rawget(L, 3) == LUA_TNUMBER && lua_tointeger(L, -1) == p->seq)
        return raisef(L, "require('%s'): the module requires itself (a require loop)", name);
    lua_pop(L, 2);
    if (builtin) {
        const struct embedded_lua *e = embedded_lua_find(builtin->embedded);
        if (!e)
            return raisef(L, "require('%s'): %s.lua is missing from this build", name,
                          builtin->embedded);
        if (luaL_loadbufferx(L, e->src, e->len, builtin->chunk, "t") != LUA_OK)
            return lua_error(L);
        return run_module(L, p);
    }
    if (!p->dir)
        return raisef(L,
                      "require('%s'): the built-in policy has no directory to load modules "
                      "from; use a policy file (POLICY_FILE) with its modules beside it",
                      name);
    char path[4096], chunk[4200], e[512];
    snprintf(path, sizeof path, "%s/%s.lua", p->dir, name);
    snprintf(chunk, sizeof chunk, "@%s", path);
    char *buf;
    size_t n;
    if (text_file_read(path, MAX_SOURCE_BYTES, &buf, &n, e, sizeof e) != 0)
        return raisef(L, "require('%s'): %s", name, e);
    /* lua_load does not raise, so buf cannot leak before it is freed */
    int bytecode = is_bytecode(buf, n);
    int st = bytecode ? LUA_OK : luaL_loadbufferx(L, buf, n, chunk, "t");
    free(buf);
    if (bytecode)
        return raisef(L, "require('%s'): " BYTECODE_MSG, name, path);
    if (st != LUA_OK)
        return lua_error(L);
    return run_module(L, p);
}

/* ---- building the state ---- */

/* Opens the allowed libraries, installs the host API and runs the prelude. Runs in protected
 * mode, before the prelude makes globals strict. [-1, +0, e] */
static int open_sandbox(lua_State *L)
{
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL},
    };
    static const char *const dropped[] = {"collectgarbage", "dofile", "load", "loadfile",
                                          "print",          "warn",   NULL};
    static const char *const os_kept[] = {"time", "clock", "date", NULL};
    static const char *const levels[] = {"debug", "info", "warn", "error"};

    lua_settop(L, 0);
    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    lua_pushglobaltable(L); /* 1 */
    for (const char *const *d = dropped; *d; d++) {
        lua_pushnil(L);
        lua_setfield(L, 1, *d);
    }
    lua_getfield(L, 1, LUA_STRLIBNAME); /* 2 */
    lua_pushnil(L);
    lua_setfield(L, 2, "dump");

    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0); /* 3: the full os, kept out of reach */
    lua_createtable(L, 0, 3);
    for (const char *const *k = os_kept; *k; k++) {
        lua_getfield(L, 3, *k);
        lua_setfield(L, -2, *k);
    }
    lua_setfield(L, 1, LUA_OSLIBNAME);
    lua_pop(L, 1);

    luaL_newlib(L, dns_funcs);
    lua_setfield(L, 1, "dns");
    luaL_newlib(L, cs_funcs);
    lua_setfield(L, 1, "cs");
    lua_createtable(L, 0, 4);
    for (int i = 0; i < 4; i++) {
        lua_pushinteger(L, i);
        lua_getfield(L, 2, "format");
        lua_pushcclosure(L, l_log, 2);
        lua_setfield(L, -2, levels[i]);
    }
    lua_setfield(L, 1, "log");
    lua_pushcfunction(L, l_require);
    lua_setfield(L, 1, "require");

    new_ctx_metatable(L);
    new_lazy_metatables(L);
    static const luaL_Reg lazy_aware[] = {
        {"next", l_next}, {"rawget", l_rawget}, {"getmetatable", l_getmetatable}, {NULL, NULL}};
    lua_pushvalue(L, 1);
    luaL_setfuncs(L, lazy_aware, 0);
    lua_pop(L, 1);
    lua_createtable(L, KEY_SLOTS, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_NAMES);
    luaL_newmetatable(L, REPLY_MT);
    lua_pushcfunction(L, reply_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_MODULES);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_LOADING);

    const struct embedded_lua *prelude = embedded_lua_find("prelude");
    if (!prelude)
        return luaL_error(L, "the built-in prelude.lua is missing from this build");
    if (luaL_loadbufferx(L, prelude->src, prelude->len, "=prelude.lua", "t") != LUA_OK)
        return lua_error(L);
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_pushcfunction(L, l_lazy_fill);
    lua_call(L, 2, 0);
    return 0;
}

struct load_ctx {
    struct policy *p;
    char *err;
    size_t errlen;
    int bad; /* the chunk ran but returned something that is not a policy */
};

/* Copies the optional string field key of the table at idx into out. [-0, +0, e] */
static int policy_label_field(lua_State *L, int idx, const char *key, const char *def, char *out,
                              struct load_ctx *lc)
{
    int t = lua_getfield(L, idx, key);
    if (t != LUA_TNIL && t != LUA_TSTRING) {
        snprintf(lc->err, lc->errlen, "%s: the policy's %s must be a string, not a %s",
                 lc->p->path ? lc->p->path : "built-in policy", key, lua_typename(L, t));
        lc->bad = 1;
        lua_pop(L, 1);
        return -1;
    }
    snprintf(out, LABEL_MAX, "%s", t == LUA_TSTRING ? lua_tostring(L, -1) : def);
    lua_pop(L, 1);
    return 0;
}

/* Runs the policy chunk and keeps the table it returns. [-1, +0, e] */
static int load_policy(lua_State *L)
{
    struct load_ctx *lc = lua_touserdata(L, 1);
    struct policy *p = lc->p;
    lua_settop(L, 0);
    if (is_bytecode(p->src, p->src_len)) {
        snprintf(lc->err, lc->errlen, BYTECODE_MSG, p->path ? p->path : "the policy");
        lc->bad = 1;
        return 0;
    }
    if (luaL_loadbufferx(L, p->src, p->src_len, p->chunkname, "t") != LUA_OK) {
        snprintf(lc->err, lc->errlen, "%s", lua_tostring(L, -1));
        lc->bad = 1;
        return 0;
    }
    lua_call(L, 0, 1);
    if (!lua_istable(L, 1) || lua_getfield(L, 1, "records") != LUA_TFUNCTION) {
        snprintf(lc->err, lc->errlen,
                 "%s: the policy must return a table with a records function, e.g. return { "
                 "name = \"mine\", version = \"1\", records = function(vm, ctx) ... end } "
                 "(it returned a %s%s)",
                 p->path ? p->path : "built-in policy", luaL_typename(L, 1),
                 lua_istable(L, 1) ? " without records" : "");
        lc->bad = 1;
        return 0;
    }
    lua_pop(L, 1);
    char name[LABEL_MAX], version[LABEL_MAX];
    if (policy_label_field(L, 1, "name", "unnamed", name, lc) ||
        policy_label_field(L, 1, "version", "unversioned", version, lc))
        return 0;
    snprintf(p->label, sizeof p->label, "%s/%s", name, version);
    lua_pushvalue(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_POLICY);
    return 0;
}

static void close_state(struct policy *p)
{
    if (p->L) {
        lua_sethook(p->L, NULL, 0, 0);
        lua_close(p->L);
        p->L = NULL;
    }
    p->mem_used = 0;
    memset(p->names, 0, sizeof p->names);
    for (size_t c = 0; c < SMALL_CLASSES; c++)
        while (p->spare[c]) {
            void *b = p->spare[c];
            p->spare[c] = *(void **)b;
            free(b);
        }
}

/* A fresh state with the sandbox and the policy loaded, each step with its own budget; the new
 * state's stack is left empty. */
static int build_state(struct policy *p, char *err, size_t errlen)
{
    close_state(p);
    p->rebuild = 0;
    p->in = NULL;
    p->ctx = NULL;
    memset(p->lazy, 0, sizeof p->lazy);
    lua_State *L = lua_newstate(policy_alloc, p);
    if (!L) {
        snprintf(err, errlen, "policy: cannot create a Lua state (out of memory)");
        return -1;
    }
    p->L = L;
    *(struct policy **)lua_getextraspace(L) = p;
    lua_atpanic(L, on_panic);

    int st = call_limited(p, open_sandbox, p, 0);
    if (st == LUA_OK) {
        lua_settop(L, 0);
        struct load_ctx lc = {p, err, errlen, 0};
        st = call_limited(p, load_policy, &lc, 0);
        if (st == LUA_OK && !lc.bad) {
            lua_settop(L, 0);
            return 0;
        }
        if (lc.bad)
            st = LUA_OK;
    }
    if (st != LUA_OK)
        describe_failure(p, st, err, errlen);
    close_state(p);
    return -1;
}

/* ---- public API ---- */

static int self_check(struct policy *p, char *err, size_t errlen);

int policy_new(const struct policy_config *cfg, struct policy **out, char *err, size_t errlen)
{
    *out = NULL;
    if (cfg->ttl < DNS_TTL_MIN || cfg->ttl > DNS_TTL_MAX) {
        snprintf(err, errlen, "policy: ttl %d is outside %d..%d seconds (DNS_RECORD_TTL)", cfg->ttl,
                 DNS_TTL_MIN, DNS_TTL_MAX);
        return -1;
    }
    struct policy *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "policy: out of memory");
        return -1;
    }
    p->ttl = cfg->ttl;
    p->add_to_common_zone = cfg->add_to_common_zone;
    p->max_instructions =
        cfg->max_instructions > 0 ? cfg->max_instructions : DEFAULT_MAX_INSTRUCTIONS;
    p->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    p->max_memory = (size_t)(cfg->max_memory_mb > 0 ? cfg->max_memory_mb : DEFAULT_MAX_MEMORY_MB)
                    << 20;
    p->max_records = cfg->max_records > 0 ? cfg->max_records : DEFAULT_MAX_RECORDS;
    p->cs_call = cfg->cs_call;
    p->cs_ud = cfg->cs_ud;
    int oom = 0;
    if (cfg->common_zone && cfg->common_zone[0])
        oom |= !(p->common_zone = strdup(cfg->common_zone));
    if (cfg->path) {
        char e[512];
        if (text_file_read(cfg->path, MAX_SOURCE_BYTES, &p->src_owned, &p->src_len, e, sizeof e) !=
            0) {
            snprintf(err, errlen, "policy: %s", e);
            policy_free(p);
            return -1;
        }
        p->src = p->src_owned;
        p->path = strdup(cfg->path);
        p->dir = strdup(cfg->path);
        p->chunkname = malloc(strlen(cfg->path) + 2);
        oom |= !p->path || !p->dir || !p->chunkname;
        if (!oom) {
            char *slash = strrchr(p->dir, '/');
            if (!slash)
                strcpy(p->dir, ".");
            else if (slash == p->dir)
                p->dir[1] = '\0'; /* "/policy.lua" lives in "/" */
            else
                *slash = '\0';
            sprintf(p->chunkname, "@%s", cfg->path);
        }
    } else {
        const struct embedded_lua *e = embedded_lua_find("policy");
        if (!e) {
            snprintf(err, errlen, "policy: the built-in policy.lua is missing from this build");
            policy_free(p);
            return -1;
        }
        p->src = e->src;
        p->src_len = e->len;
        oom |= !(p->chunkname = strdup("=policy.lua (built-in)"));
    }
    if (oom) {
        snprintf(err, errlen, "policy: out of memory");
        policy_free(p);
        return -1;
    }
    if (build_state(p, err, errlen) != 0 || (cfg->self_check && self_check(p, err, errlen) != 0)) {
        policy_free(p);
        return -1;
    }
    *out = p;
    return 0;
}

void policy_free(struct policy *p)
{
    if (!p)
        return;
    close_state(p);
    free(p->path);
    free(p->dir);
    free(p->chunkname);
    free(p->src_owned);
    free(p->common_zone);
    free(p);
}

const char *policy_name(const struct policy *p)
{
    return p->label;
}

int policy_stack_top(const struct policy *p)
{
    return p->L ? lua_gettop(p->L) : 0;
}

struct records_call {
    struct policy *p;
    const struct policy_input *in;
    policy_result result;    /* valid when the call did not raise */
    struct dns_record *recs; /* malloc'ed by convert_result; policy_records owns it */
    size_t n;                /* records in recs */
    char *err;
    size_t errlen;
};

static int call_fail(struct records_call *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int call_fail(struct records_call *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    c->result = POLICY_FAILED;
    return 0;
}

/* Builds ctx as README documents it; event comes on first read (ctx_build_event). [-0, +1, m] */
static void push_ctx(lua_State *L, struct policy *p, const struct policy_input *in)
{
    lua_createtable(L, 0, 8);
    const struct {
        const char *key;
        const json_value *v;
        int root;
    } objs[] = {{"account", in->account, LAZY_ACCOUNT},
                {"domain", in->domain, LAZY_DOMAIN},
                {"project", in->project, LAZY_PROJECT}};
    for (size_t i = 0; i < sizeof objs / sizeof objs[0]; i++) {
        if (!objs[i].v || objs[i].v->type == JSON_NULL)
            continue;
        lazy_push(L, p, objs[i].root, objs[i].v);
        lua_setfield(L, -2, objs[i].key);
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, p->ttl);
    lua_setfield(L, -2, "ttl");
    if (p->common_zone) {
        lua_pushstring(L, p->common_zone);
        lua_setfield(L, -2, "common_zone");
    }
    lua_pushboolean(L, p->add_to_common_zone);
    lua_setfield(L, -2, "add_to_common_zone");
    lua_setfield(L, -2, "settings");
    if (in->topic) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, in->topic);
        lua_setfield(L, -2, "topic");
        lua_pushinteger(L, in->partition);
        lua_setfield(L, -2, "partition");
        lua_pushinteger(L, (lua_Integer)in->offset);
        lua_setfield(L, -2, "offset");
        lua_setfield(L, -2, "kafka");
    }
    lua_pushstring(L, in->trigger ? in->trigger : "event");
    lua_setfield(L, -2, "trigger");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_CTX_MT);
    lua_setmetatable(L, -2);
}

/* Describes a table key for messages without disturbing lua_next (no in-place conversion).
 * [-0, +0, -] */
static void key_text(lua_State *L, int idx, char *out, size_t outlen)
{
    if (lua_type(L, idx) == LUA_TSTRING)
        snprintf(out, outlen, "'%s'", lua_tostring(L, idx));
    else if (lua_isinteger(L, idx))
        snprintf(out, outlen, "[%lld]", (long long)lua_tointeger(L, idx));
    else if (lua_type(L, idx) == LUA_TNUMBER)
        snprintf(out, outlen, "[%g]", (double)lua_tonumber(L, idx));
    else
        snprintf(out, outlen, "of type %s", luaL_typename(L, idx));
}

/* One entry of the returned list (on top) into r; records are numbered from 1 as in Lua.
 * Returns 0, or -1 after call_fail. [-0, +0, m] */
static int convert_entry(lua_State *L, struct records_call *c, lua_Integer i, struct dns_record *r)
{
    if (!lua_istable(L, -1)) {
        call_fail(c, "record %lld is a %s, not a table {name=, type=, content=, ttl=}",
                  (long long)i, luaL_typename(L, -1));
        return -1;
    }
    const char *f[3] = {NULL, NULL, NULL}; /* name, type, content */
    static const char *const fnames[3] = {"name", "type", "content"};
    static const size_t fname_len[3] = {4, 4, 7};
    int have_ttl = 0;
    lua_Integer ttl = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        char kt[96];
        if (lua_type(L, -2) != LUA_TSTRING) {
            key_text(L, -2, kt, sizeof kt);
            call_fail(c, "record %lld has a key %s; allowed keys are name, type, content, ttl",
                      (long long)i, kt);
            return -1;
        }
        size_t klen;
        const char *k = lua_tolstring(L, -2, &klen);
        int which = -1;
        for (int j = 0; j < 3 && which < 0; j++)
            if (klen == fname_len[j] && memcmp(k, fnames[j], klen) == 0)
                which = j;
        if (which >= 0) {
            size_t len;
            if (lua_type(L, -1) != LUA_TSTRING) {
                call_fail(c, "record %lld: %s must be a string, not a %s", (long long)i, k,
                          luaL_typename(L, -1));
                return -1;
            }
            f[which] = lua_tolstring(L, -1, &len);
            if (strlen(f[which]) != len) {
                call_fail(c, "record %lld: %s contains a NUL byte", (long long)i, k);
                return -1;
            }
            if (len >= DNS_NAME_BUFSZ) {
                call_fail(c, "record %lld: %s is %zu characters, longer than a DNS name can be",
                          (long long)i, k, len);
                return -1;
            }
        } else if (klen == 3 && memcmp(k, "ttl", 3) == 0) {
            int isint = 0;
            if (lua_type(L, -1) == LUA_TNUMBER)
                ttl = lua_tointegerx(L, -1, &isint);
            if (!isint) {
                call_fail(c, "record %lld: ttl must be a whole number of seconds, not %s",
                          (long long)i,
                          lua_type(L, -1) == LUA_TNUMBER ? "a fraction" : luaL_typename(L, -1));
                return -1;
            }
            have_ttl = 1;
        } else {
            call_fail(c,
                      "record %lld has unknown key '%s'; allowed keys are name, type, "
                      "content, ttl",
                      (long long)i, k);
            return -1;
        }
        lua_pop(L, 1);
    }
    for (int j = 0; j < 3; j++)
        if (!f[j]) {
            call_fail(c, "record %lld has no %s", (long long)i, fnames[j]);
            return -1;
        }
    memset(r, 0, sizeof *r);
    r->type = dns_rr_type_parse(f[1]);
    if (r->type == 0) {
        call_fail(c, "record %lld: type '%s' is not A, AAAA or PTR", (long long)i, f[1]);
        return -1;
    }
    if (have_ttl && (ttl < DNS_TTL_MIN || ttl > DNS_TTL_MAX)) {
        call_fail(c, "record %lld (%s %s %s): ttl %lld is outside %d..%d", (long long)i, f[0], f[1],
                  f[2], (long long)ttl, DNS_TTL_MIN, DNS_TTL_MAX);
        return -1;
    }
    strcpy(r->name, f[0]);
    strcpy(r->content, f[2]);
    r->ttl = have_ttl ? (int)ttl : c->p->ttl;
    char e[256];
    if (dns_record_check(r, e, sizeof e) != 0) {
        call_fail(c, "record %lld (%s %s %s): %s", (long long)i, f[0], f[1], f[2], e);
        return -1;
    }
    return 0;
}

/* Checks records()'s answer at idx into c->recs and c->n. Returns the number of results for
 * do_records (none). [-0, +0, m] */
static int convert_result(lua_State *L, struct records_call *c, int idx)
{
    static const char hint[] =
        "return a list of records, {} to remove all records or false to leave them unchanged";
    int t = lua_type(L, idx);
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, idx)) {
        c->result = POLICY_UNCHANGED;
        return 0;
    }
    if (t == LUA_TNIL)
        return call_fail(c, "records() returned nil: return {} to remove all records or false "
                            "to leave them unchanged");
    if (t == LUA_TBOOLEAN)
        return call_fail(c, "records() returned true: %s", hint);
    if (t != LUA_TTABLE)
        return call_fail(c, "records() returned a %s: %s", lua_typename(L, t), hint);
    lua_Unsigned n = lua_rawlen(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_Integer k = lua_isinteger(L, -2) ? lua_tointeger(L, -2) : 0;
        if (k < 1 || (lua_Unsigned)k > n) {
            char kt[96];
            key_text(L, -2, kt, sizeof kt);
            return call_fail(c,
                             "records() returned a table with key %s, not a list: return "
                             "{ {name=, type=, content=}, ... }",
                             kt);
        }
        lua_pop(L, 1);
    }
    if (n > (lua_Unsigned)c->p->max_records)
        return call_fail(c,
                         "records() returned %llu records, more than the limit of %d per VM "
                         "(MAX_RECORDS_PER_VM)",
                         (unsigned long long)n, c->p->max_records);
    if (n == 0) {
        c->result = POLICY_RECORDS;
        return 0;
    }
    /* straight into the caller's array: no userdata to allocate and copy out of */
    c->recs = malloc((size_t)n * sizeof *c->recs);
    if (!c->recs)
        return call_fail(c, "policy: out of memory for %llu records", (unsigned long long)n);
    for (lua_Unsigned i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i);
        if (convert_entry(L, c, (lua_Integer)i, &c->recs[i - 1]) != 0)
            return 0;
        lua_pop(L, 1);
    }
    c->n = (size_t)n;
    c->result = POLICY_RECORDS;
    return 0;
}

/* The body of one policy_records call, in protected mode. [-1, +0, e] */
static int do_records(lua_State *L)
{
    struct records_call *c = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_CACHE);
    lua_createtable(L, LAZY_ROOTS, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_LAZY_DONE);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_POLICY);     /* 1 */
    if (lua_getfield(L, 1, "records") != LUA_TFUNCTION) /* 2 */
        return call_fail(c, "the policy's table no longer has a records function");
    lazy_push(L, c->p, LAZY_VM, c->in->vm);
    push_ctx(L, c->p, c->in);
    /* anchored in slot 1 so no other table can take its address while the call runs */
    lua_pushvalue(L, -1);
    lua_replace(L, 1);
    c->p->ctx = lua_topointer(L, 1);
    lua_call(L, 2, 1); /* 2: the answer */
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_CACHE);
    return convert_result(L, c, 2);
}

/* Leaves p's stack as it found it, on every path. [-0, +0, -] */
policy_result policy_records(struct policy *p, const struct policy_input *in,
                             struct dns_record **recs, size_t *n, char *err, size_t errlen)
{
    *recs = NULL;
    *n = 0;
    err[0] = '\0';
    p->failure = "error";
    if (!in->vm) {
        snprintf(err, errlen, "policy: no VM given");
        return POLICY_FAILED;
    }
    if ((!p->L || p->rebuild) && build_state(p, err, errlen) != 0)
        return POLICY_FAILED;
    lua_State *L = p->L;
    int top = lua_gettop(L);
    assert(top == 0); /* nothing survives between calls */
    struct records_call c = {p, in, POLICY_FAILED, NULL, 0, err, errlen};
    p->transient = 0;
    p->in = in;
    int st = call_limited(p, do_records, &c, 1);
    p->ctx = NULL;
    memset(p->lazy, 0, sizeof p->lazy);
    assert(lua_gettop(L) == top + 2); /* the handler, then the answer or the error */
    policy_result res = c.result;
    if (p->transient) {
        snprintf(err, errlen, "%s", p->transient_msg);
        res = POLICY_TRANSIENT;
        if (st != LUA_OK && (p->tripped != TRIP_NONE || st == LUA_ERRMEM))
            p->rebuild = 1;
    } else if (st != LUA_OK || p->tripped != TRIP_NONE) {
        describe_failure(p, st == LUA_OK ? LUA_ERRRUN : st, err, errlen);
        res = POLICY_FAILED;
    } else if (res == POLICY_RECORDS && c.n > 0) {
        *recs = c.recs;
        c.recs = NULL;
        *n = dns_record_set_normalize(*recs, c.n);
    }
    free(c.recs);
    p->in = NULL;
    lua_settop(L, top);
    if (res == POLICY_FAILED)
        p->failure = p->tripped == TRIP_INSTRUCTIONS                 ? "instructions"
                     : p->tripped == TRIP_DEADLINE                   ? "timeout"
                     : p->tripped == TRIP_MEMORY || st == LUA_ERRMEM ? "memory"
                     : st != LUA_OK                                  ? "error"
                                                                     : "invalid";
    return res;
}

const char *policy_last_failure(const struct policy *p)
{
    return p->failure ? p->failure : "error";
}

struct script_ctx {
    const char *path;
    policy_script_setup setup;
    void *ud;
    char *err;
    size_t errlen;
    int bad; /* the file could not be read or compiled; err says why */
};

/* setup, then the script file. [-1, +0, e] */
static int run_script(lua_State *L)
{
    struct script_ctx *s = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_POLICY);
    s->setup(L, s->ud);
    lua_settop(L, 0);
    char *buf, chunk[4200];
    size_t n;
    if (text_file_read(s->path, MAX_SOURCE_BYTES, &buf, &n, s->err, s->errlen) != 0) {
        s->bad = 1;
        return 0;
    }
    snprintf(chunk, sizeof chunk, "@%s", s->path);
    int bytecode = is_bytecode(buf, n);
    int st = bytecode ? LUA_OK : luaL_loadbufferx(L, buf, n, chunk, "t");
    free(buf);
    if (bytecode || st != LUA_OK) {
        if (bytecode)
            snprintf(s->err, s->errlen, BYTECODE_MSG, s->path);
        else
            snprintf(s->err, s->errlen, "%s", lua_tostring(L, -1));
        s->bad = 1;
        return 0;
    }
    lua_call(L, 0, 0);
    return 0;
}

/* [-0, +0, -] */
int policy_run_script(struct policy *p, const char *path, policy_script_setup setup, void *ud,
                      char *err, size_t errlen)
{
    if ((!p->L || p->rebuild) && build_state(p, err, errlen) != 0)
        return -1;
    lua_State *L = p->L;
    int top = lua_gettop(L);
    assert(top == 0);
    struct script_ctx s = {path, setup, ud, err, errlen, 0};
    p->in = NULL;
    int st = call_limited(p, run_script, &s, 0);
    assert(lua_gettop(L) == top + (st == LUA_OK ? 1 : 2));
    int rc = s.bad ? -1 : 0;
    if (st != LUA_OK || p->tripped != TRIP_NONE) {
        describe_failure(p, st == LUA_OK ? LUA_ERRRUN : st, err, errlen);
        rc = -1;
    }
    lua_settop(L, top);
    return rc;
}

/* ---- self-check ---- */

/* What the self-check shows records(): objects as CloudStack's list* commands return them. The
 * account VM exercises what policies most often get wrong: a default NIC that is not the first,
 * dual-stack, a second network, an instance group; the project VM has no account. */
static const char SAMPLE_DOMAIN[] =
    "{\"id\":\"5d0c8e1a-3f4b-4c6d-9e2f-7a8b1c2d3e4f\",\"name\":\"selfcheck\",\"level\":1,"
    "\"path\":\"ROOT/selfcheck\",\"parentdomainname\":\"ROOT\",\"state\":\"Active\","
    "\"networkdomain\":\"selfcheck.example.net\"}";

static const char SAMPLE_ACCOUNT[] =
    "{\"id\":\"0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d\",\"name\":\"selfcheck\",\"accounttype\":0,"
    "\"domainid\":\"5d0c8e1a-3f4b-4c6d-9e2f-7a8b1c2d3e4f\",\"domain\":\"selfcheck\","
    "\"state\":\"enabled\",\"networkdomain\":\"acct.selfcheck.example.net\"}";

static const char SAMPLE_ACCOUNT_VM[] =
    "{\"id\":\"c4ec0000-1b2c-4d3e-8f4a-5b6c7d8e9f01\",\"name\":\"selfcheck-01\","
    "\"displayname\":\"Self-check VM #1\",\"account\":\"selfcheck\","
    "\"domainid\":\"5d0c8e1a-3f4b-4c6d-9e2f-7a8b1c2d3e4f\",\"domain\":\"selfcheck\","
    "\"state\":\"Running\",\"group\":\"Self Check\",\"zonename\":\"zone-a\",\"cpunumber\":1,"
    "\"memory\":1024,\"tags\":[{\"key\":\"role\",\"value\":\"check\"}],\"nic\":["
    "{\"id\":\"c4ec0001-0000-4000-8000-000000000001\",\"networkid\":"
    "\"c4ec0002-0000-4000-8000-000000000002\",\"networkname\":\"selfcheck-backend\","
    "\"ipaddress\":\"192.0.2.10\",\"gateway\":\"192.0.2.1\",\"netmask\":\"255.255.255.0\","
    "\"isdefault\":false,\"traffictype\":\"Guest\",\"type\":\"Isolated\",\"secondaryip\":[],"
    "\"deviceid\":\"1\"},"
    "{\"id\":\"c4ec0003-0000-4000-8000-000000000003\",\"networkid\":"
    "\"c4ec0004-0000-4000-8000-000000000004\",\"networkname\":\"Self Check Net\","
    "\"ipaddress\":\"10.0.0.10\",\"gateway\":\"10.0.0.1\",\"netmask\":\"255.255.255.0\","
    "\"ip6address\":\"2001:db8::10\",\"ip6gateway\":\"2001:db8::1\",\"ip6cidr\":\"2001:db8::/64\","
    "\"isdefault\":true,\"traffictype\":\"Guest\",\"type\":\"Isolated\","
    "\"secondaryip\":[{\"id\":\"c4ec0005-0000-4000-8000-000000000005\","
    "\"ipaddress\":\"10.0.0.11\"}],\"deviceid\":\"0\"}]}";

static const char SAMPLE_PROJECT[] =
    "{\"id\":\"c4ec0006-0000-4000-8000-000000000006\",\"name\":\"selfcheck-project\","
    "\"displaytext\":\"Self-check project\",\"domainid\":\"5d0c8e1a-3f4b-4c6d-9e2f-7a8b1c2d3e4f\","
    "\"domain\":\"selfcheck\",\"state\":\"Active\"}";

static const char SAMPLE_PROJECT_VM[] =
    "{\"id\":\"c4ec0007-0000-4000-8000-000000000007\",\"name\":\"selfcheck-02\","
    "\"displayname\":\"selfcheck-02\",\"projectid\":\"c4ec0006-0000-4000-8000-000000000006\","
    "\"project\":\"selfcheck-project\",\"domainid\":\"5d0c8e1a-3f4b-4c6d-9e2f-7a8b1c2d3e4f\","
    "\"domain\":\"selfcheck\",\"state\":\"Running\",\"zonename\":\"zone-a\",\"tags\":[],"
    "\"nic\":[{\"id\":\"c4ec0008-0000-4000-8000-000000000008\",\"networkid\":"
    "\"c4ec0009-0000-4000-8000-000000000009\",\"networkname\":\"selfcheck-project-net\","
    "\"ipaddress\":\"10.0.1.20\",\"isdefault\":true,\"traffictype\":\"Guest\","
    "\"type\":\"Isolated\",\"secondaryip\":[],\"deviceid\":\"0\"}]}";

static const char SAMPLE_EVENT[] =
    "{\"eventDateTime\":\"2024-05-02 14:03:11 +0000\",\"event\":\"VM.UPDATE\","
    "\"status\":\"Completed\",\"entity\":\"com.cloud.vm.VirtualMachine\","
    "\"entityuuid\":\"c4ec0000-1b2c-4d3e-8f4a-5b6c7d8e9f01\",\"description\":\"self-check\"}";

struct sample {
    const char *what;
    const char *json[5]; /* vm, account, domain, project, event */
};

static const struct sample samples[] = {
    {"account VM selfcheck-01",
     {SAMPLE_ACCOUNT_VM, SAMPLE_ACCOUNT, SAMPLE_DOMAIN, NULL, SAMPLE_EVENT}},
    {"project VM selfcheck-02",
     {SAMPLE_PROJECT_VM, NULL, SAMPLE_DOMAIN, SAMPLE_PROJECT, SAMPLE_EVENT}},
};

/* records() on one sample. A cs.call ends the sample early and passes: only CloudStack could
 * answer it. Returns 0, or -1 with err. */
static int check_sample(struct policy *p, const struct sample *smp, char *err, size_t errlen)
{
    json_doc *docs[5] = {NULL, NULL, NULL, NULL, NULL};
    const json_value *v[5] = {NULL, NULL, NULL, NULL, NULL};
    char why[4096];
    int rc = 0;
    for (int i = 0; i < 5 && rc == 0; i++) {
        if (!smp->json[i])
            continue;
        rc = json_parse(smp->json[i], strlen(smp->json[i]), &docs[i], why, sizeof why);
        if (rc == 0)
            v[i] = json_root(docs[i]);
        else
            snprintf(err, errlen, "self-check: the built-in sample is not JSON: %s", why);
    }
    if (rc == 0) {
        struct policy_input in = {.vm = v[0],
                                  .account = v[1],
                                  .domain = v[2],
                                  .project = v[3],
                                  .event = v[4],
                                  .trigger = "check"};
        struct dns_record *recs;
        size_t n;
        p->self_checking = 1;
        policy_result r = policy_records(p, &in, &recs, &n, why, sizeof why);
        p->self_checking = 0;
        free(recs);
        if (r == POLICY_FAILED) {
            snprintf(err, errlen, "self-check: records() failed for the sample %s: %s", smp->what,
                     why);
            rc = -1;
        }
    }
    for (int i = 0; i < 5; i++)
        json_doc_free(docs[i]);
    return rc;
}

struct self_test_call {
    int bad; /* self_test is there but not a function; err says so */
    char *err;
    size_t errlen;
};

/* Calls the policy table's self_test, when it has one. [-1, +0, e] */
static int do_self_test(lua_State *L)
{
    struct self_test_call *c = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_POLICY);
    int t = lua_getfield(L, 1, "self_test");
    if (t == LUA_TNIL)
        return 0;
    if (t != LUA_TFUNCTION) {
        snprintf(c->err, c->errlen,
                 "self-check: the policy's self_test must be a function, not a %s",
                 lua_typename(L, t));
        c->bad = 1;
        return 0;
    }
    lua_call(L, 0, 0);
    return 0;
}

/* See policy_new. Leaves p's stack as it found it. */
static int self_check(struct policy *p, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++)
        if (check_sample(p, &samples[i], err, errlen) != 0)
            return -1;
    if ((!p->L || p->rebuild) && build_state(p, err, errlen) != 0)
        return -1;
    lua_State *L = p->L;
    int top = lua_gettop(L);
    struct self_test_call c = {0, err, errlen};
    p->transient = 0;
    p->in = NULL;
    p->self_checking = 1;
    int st = call_limited(p, do_self_test, &c, 0);
    p->self_checking = 0;
    int rc = 0;
    if (p->transient) {
        snprintf(err, errlen,
                 "self-check: self_test() called CloudStack (%s); it runs offline, so test "
                 "what needs CloudStack with cs-pdns test and cs.mock",
                 p->transient_msg);
        rc = -1;
    } else if (st != LUA_OK || p->tripped != TRIP_NONE) {
        char why[4096];
        describe_failure(p, st == LUA_OK ? LUA_ERRRUN : st, why, sizeof why);
        snprintf(err, errlen, "self-check: self_test() failed: %s", why);
        rc = -1;
    } else if (c.bad) {
        rc = -1;
    }
    lua_settop(L, top);
    return rc;
}
