/* test_policy.c -- the C<->Lua boundary: sandbox contents, limits, the records() contract, cs.call.
 * Must not: depend on the network or on files outside its own temporary directory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy.h"
#include "unit.h"

static char tmpdir[64];

/* Writes src to <tmpdir>/<name> and returns the path (static storage, one per slot). */
static const char *write_file(const char *name, const char *src)
{
    static char paths[32][128];
    static int next;
    char *path = paths[next++ % 32];
    snprintf(path, 128, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(src, f);
    fclose(f);
    return path;
}

static json_doc *parse(const char *text)
{
    json_doc *d;
    char err[256];
    if (json_parse(text, strlen(text), &d, err, sizeof err) != 0) {
        fprintf(stderr, "bad test JSON: %s\n", err);
        exit(2);
    }
    return d;
}

static struct policy_config base_cfg(const char *path)
{
    struct policy_config c = {
        .path = path,
        .ttl = 60,
        .max_instructions = 1000000,
        .timeout_ms = 2000,
        .max_memory_mb = 16,
        .max_records = 100,
    };
    return c;
}

static struct policy *load(const struct policy_config *cfg)
{
    struct policy *p = NULL;
    char err[2048];
    if (policy_new(cfg, &p, err, sizeof err) != 0) {
        fprintf(stderr, "policy_new(%s): %s\n", cfg->path ? cfg->path : "built-in", err);
        exit(2);
    }
    return p;
}

/* A policy whose records() body is body (vm and ctx in scope), loaded with cfg's settings. */
static struct policy *load_body_cfg(const char *file, const char *body, struct policy_config cfg)
{
    char src[8192];
    snprintf(src, sizeof src,
             "return { name = 't', version = '0', records = function(vm, ctx)\n%s\nend }\n", body);
    cfg.path = write_file(file, src);
    return load(&cfg);
}

static struct policy *load_body(const char *file, const char *body)
{
    return load_body_cfg(file, body, base_cfg(NULL));
}

static const char *VM_JSON =
    "{\"id\":\"9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41\",\"name\":\"web-01\",\"state\":\"Running\","
    "\"cpunumber\":1,\"memory\":1024,\"secondarystoragetotal\":0.0,\"ratio\":1.5,"
    "\"gone\":null,\"arr\":[1,null,2],\"group\":\"www\","
    "\"nic\":[{\"ipaddress\":\"10.2.0.57\",\"isdefault\":false},"
    "{\"ipaddress\":\"10.1.1.23\",\"ip6address\":\"2001:db8:100:10:0:3cff:fe5e:1\","
    "\"isdefault\":true}]}";

/* Runs records() once; returns the result and leaves the message in err. */
static policy_result run(struct policy *p, const json_value *vm, char *err, size_t errlen,
                         size_t *n)
{
    struct policy_input in = {.vm = vm, .trigger = "test"};
    struct dns_record *recs;
    size_t cnt;
    policy_result r = policy_records(p, &in, &recs, &cnt, err, errlen);
    free(recs);
    if (n)
        *n = cnt;
    return r;
}

static policy_result run_vm(struct policy *p, char *err, size_t errlen)
{
    json_doc *d = parse(VM_JSON);
    policy_result r = run(p, json_root(d), err, errlen, NULL);
    json_doc_free(d);
    return r;
}

#define CHECK_PREFIX(s, prefix) CHECK(strncmp((s), (prefix), strlen(prefix)) == 0)
#define CHECK_HAS(s, part) CHECK(strstr((s), (part)) != NULL)

static void test_builtin_policy(void)
{
    struct policy_config cfg = base_cfg(NULL);
    struct policy *p = load(&cfg);
    CHECK_STR(policy_name(p), "default/1");
    json_doc *vm = parse(VM_JSON);
    json_doc *acc = parse("{\"id\":\"3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63\",\"name\":\"acme\","
                          "\"networkdomain\":\"acme.cloud.example.net\"}");
    struct policy_input in = {.vm = json_root(vm), .account = json_root(acc), .trigger = "test"};
    struct dns_record *recs;
    size_t n;
    char err[2048];
    CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_RECORDS);
    /* A, AAAA and two PTRs for the default NIC, then the group's A and AAAA */
    CHECK_INT(n, 6);
    if (n == 6) {
        CHECK_STR(recs[0].name, "1.0.0.0.e.5.e.f.f.f.c.3.0.0.0.0.0.1.0.0.0.0.1.0.8.b.d.0.1.0.0.2."
                                "ip6.arpa");
        CHECK_STR(recs[0].content, "web-01.acme.cloud.example.net");
        CHECK_STR(recs[1].name, "23.1.1.10.in-addr.arpa");
        CHECK_INT(recs[1].type, DNS_RR_PTR);
        CHECK_STR(recs[2].name, "web-01.acme.cloud.example.net");
        CHECK_INT(recs[2].type, DNS_RR_A);
        CHECK_STR(recs[2].content, "10.1.1.23");
        CHECK_INT(recs[2].ttl, 60);
        CHECK_INT(recs[3].type, DNS_RR_AAAA);
        CHECK_STR(recs[4].name, "www-3b8e2c4d.acme.cloud.example.net");
    }
    free(recs);
    json_doc_free(vm);
    json_doc_free(acc);
    policy_free(p);
}

static void test_limits(void)
{
    char err[4096];
    struct policy *p = load_body("loop.lua", "if vm.name == 'web-01' then while true do end end\n"
                                             "return {}");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_PREFIX(err, "policy: instruction budget exceeded");
    CHECK_HAS(err, "loop.lua:2:"); /* the traceback shows where the loop is */
    json_doc *other = parse("{\"name\":\"db\"}");
    CHECK_INT(run(p, json_root(other), err, sizeof err, NULL), POLICY_RECORDS);
    CHECK_INT(policy_stack_top(p), 0);
    json_doc_free(other);
    policy_free(p);

    /* a pcall inside the policy cannot swallow the trip */
    p = load_body("pcall_loop.lua",
                  "local function f() local x = 0 for i = 1, 10 do x = x + i end end\n"
                  "while true do pcall(f) end");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_PREFIX(err, "policy: instruction budget exceeded");
    policy_free(p);

    p = load_body("pcall_loop2.lua", "while true do pcall(function() while true do end end) end");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_PREFIX(err, "policy: instruction budget exceeded");
    policy_free(p);

    /* wall clock: a huge instruction budget, a short deadline */
    struct policy_config cfg = base_cfg(write_file("slow.lua", "return { records = function() "
                                                               "while true do end end }"));
    cfg.max_instructions = 1L << 40;
    cfg.timeout_ms = 100;
    p = load(&cfg);
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_PREFIX(err, "policy: deadline exceeded");
    policy_free(p);

    /* Lua runs finalizers with hooks off, so the sandbox refuses them; __close still counts */
    p = load_body("gc.lua", "setmetatable({}, { __gc = function() while true do end end })\n"
                            "return {}");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_HAS(err, "__gc finalizers are not allowed");
    policy_free(p);
    p = load_body("close.lua", "do local x <close> = setmetatable({}, { __close = function()\n"
                               "  while true do end end }) end\n"
                               "return {}");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_PREFIX(err, "policy: instruction budget exceeded");
    policy_free(p);

    /* loading has its own budget */
    cfg = base_cfg(write_file("loadloop.lua", "while true do end"));
    struct policy *bad = NULL;
    CHECK(policy_new(&cfg, &bad, err, sizeof err) != 0);
    CHECK(bad == NULL);
    CHECK_PREFIX(err, "policy: instruction budget exceeded");
}

static void test_memory(void)
{
    char err[4096];
    struct policy *p = load_body("bomb.lua", "if vm.name == 'web-01' then\n"
                                             "  local s = string.rep('x', 1 << 30)\n"
                                             "end\n"
                                             "return {}");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_PREFIX(err, "policy: memory limit exceeded");
    /* the state was rebuilt: the next call works */
    json_doc *other = parse("{\"name\":\"db\"}");
    CHECK_INT(run(p, json_root(other), err, sizeof err, NULL), POLICY_RECORDS);
    CHECK_INT(run(p, json_root(other), err, sizeof err, NULL), POLICY_RECORDS);
    policy_free(p);

    /* swallowed by pcall, the trip still fails the call */
    p = load_body("bomb_pcall.lua", "pcall(string.rep, 'x', 1 << 30)\nreturn {}");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_PREFIX(err, "policy: memory limit exceeded");
    policy_free(p);

    /* slow growth in small steps */
    p = load_body("grow.lua", "local t = {}\n"
                              "while true do t[#t + 1] = string.rep('y', 1000) .. #t end");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_PREFIX(err, "policy: memory limit exceeded");
    CHECK_INT(run(p, json_root(other), err, sizeof err, NULL), POLICY_FAILED);
    CHECK_PREFIX(err, "policy: memory limit exceeded");
    policy_free(p);

    /* garbage alone never trips the cap: it is collected */
    p = load_body("garbage.lua", "for i = 1, 20000 do local s = string.rep('z', 4000) .. i end\n"
                                 "return {}");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_RECORDS);
    policy_free(p);
    json_doc_free(other);
}

static void test_sandbox(void)
{
    char err[4096];
    struct policy *p =
        load_body("env.lua", "local names = {}\n"
                             "for k in pairs(_ENV) do names[#names + 1] = k end\n"
                             "table.sort(names)\n"
                             "local os_names = {}\n"
                             "for k in pairs(os) do os_names[#os_names + 1] = k end\n"
                             "table.sort(os_names)\n"
                             "error('ENV=' .. table.concat(names, ',') .. ' OS=' .."
                             " table.concat(os_names, ','), 0)");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_PREFIX(err, "ENV=_G,_VERSION,assert,cs,dns,error,getmetatable,ipairs,json,log,math,next,"
                      "os,pairs,pcall,print,rawequal,rawget,rawlen,rawset,require,select,"
                      "setmetatable,string,table,tonumber,tostring,type,utf8,xpcall "
                      "OS=clock,date,time\n");
    policy_free(p);

    p = load_body("absent.lua",
                  "local missing = {}\n"
                  "for _, k in ipairs({'io', 'debug', 'package', 'load', 'loadfile', 'dofile',\n"
                  "    'collectgarbage', 'coroutine', 'warn'}) do\n"
                  "  if rawget(_ENV, k) ~= nil then missing[#missing + 1] = k end\n"
                  "end\n"
                  "if os.execute or os.exit or os.getenv or os.remove or string.dump then\n"
                  "  missing[#missing + 1] = 'os/string extras'\n"
                  "end\n"
                  "if #missing > 0 then error('present: ' .. table.concat(missing, ','), 0) end\n"
                  "return false");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_UNCHANGED);
    CHECK_STR(err, "");
    policy_free(p);

    p = load_body("write.lua", "counter = 1\nreturn {}");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_HAS(err, "/write.lua:2: assignment to undefined global 'counter'");
    policy_free(p);

    p = load_body("read.lua", "return vm_nmae");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_HAS(err, "/read.lua:2: undefined global 'vm_nmae'");
    policy_free(p);

    p = load_body("meta.lua", "setmetatable(_ENV, nil)");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_HAS(err, "cannot change a protected metatable");
    policy_free(p);

    /* bytecode is refused, in the policy file and in modules */
    struct policy_config cfg = base_cfg(write_file("bin.lua", "\x1bLua\x54"));
    struct policy *bad = NULL;
    CHECK(policy_new(&cfg, &bad, err, sizeof err) != 0);
    CHECK_HAS(err, "is precompiled Lua bytecode");
    cfg = base_cfg(write_file("syntax.lua", "return {\n  records = function( end }"));
    CHECK(policy_new(&cfg, &bad, err, sizeof err) != 0);
    CHECK_HAS(err, "syntax.lua:2:");
    CHECK(strstr(err, "traceback") == NULL);
    cfg = base_cfg(write_file("notable.lua", "return 42"));
    CHECK(policy_new(&cfg, &bad, err, sizeof err) != 0);
    CHECK_HAS(err, "must return a table with a records function");
    cfg = base_cfg(write_file("badname.lua", "return { name = 5, records = function() end }"));
    CHECK(policy_new(&cfg, &bad, err, sizeof err) != 0);
    CHECK_HAS(err, "name must be a string");
    cfg = base_cfg(tmpdir);
    strcat(tmpdir, "/no-such-policy.lua");
    cfg.path = tmpdir;
    CHECK(policy_new(&cfg, &bad, err, sizeof err) != 0);
    CHECK_HAS(err, "no-such-policy.lua");
    *strrchr(tmpdir, '/') = '\0';
    cfg = base_cfg(NULL);
    cfg.ttl = 0;
    CHECK(policy_new(&cfg, &bad, err, sizeof err) != 0);
    CHECK_HAS(err, "ttl 0");
}

static void no_setup(struct lua_State *L, void *ud)
{
    (void)L;
    (void)ud;
}

static void test_require(void)
{
    char err[4096];
    write_file("helper.lua", "local n = 0\n"
                             "return { next = function() n = n + 1 return n end }");
    write_file("loopy.lua", "return require('loopy')");
    write_file("binmod.lua", "\x1bLua\x54");
    struct policy *p =
        load_body("req.lua", "local h = require('helper')\n"
                             "if require('helper') ~= h then error('not cached', 0) end\n"
                             "if vm.name == 'loop' then require('loopy') end\n"
                             "if vm.name == 'bin' then require('binmod') end\n"
                             "if vm.name == 'path' then require('../etc/passwd') end\n"
                             "return { { name = 'n' .. h.next() .. '.example.org', type = 'A',\n"
                             "           content = '192.0.2.1' } }");
    json_doc *d = parse("{\"name\":\"x\"}");
    struct policy_input in = {.vm = json_root(d)};
    struct dns_record *recs;
    size_t n;
    CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_RECORDS);
    CHECK(n == 1 && strcmp(recs[0].name, "n1.example.org") == 0);
    free(recs);
    /* module state lives as long as the Lua state */
    CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_RECORDS);
    CHECK(n == 1 && strcmp(recs[0].name, "n2.example.org") == 0);
    free(recs);
    json_doc_free(d);
    d = parse("{\"name\":\"loop\"}");
    CHECK_INT(run(p, json_root(d), err, sizeof err, NULL), POLICY_FAILED);
    CHECK_HAS(err, "require loop");
    json_doc_free(d);
    d = parse("{\"name\":\"bin\"}");
    CHECK_INT(run(p, json_root(d), err, sizeof err, NULL), POLICY_FAILED);
    CHECK_HAS(err, "is precompiled Lua bytecode");
    json_doc_free(d);
    d = parse("{\"name\":\"path\"}");
    CHECK_INT(run(p, json_root(d), err, sizeof err, NULL), POLICY_FAILED);
    CHECK_HAS(err, "a module name is");
    json_doc_free(d);
    policy_free(p);

    /* the built-in policy has no directory, and says so */
    struct policy_config cfg = base_cfg(NULL);
    p = load(&cfg);
    CHECK(policy_run_script(p, write_file("req_script.lua", "require('helper')"), no_setup, NULL,
                            err, sizeof err) != 0);
    CHECK_HAS(err, "require('helper'): the built-in policy has no directory");
    CHECK_INT(policy_stack_top(p), 0);
    policy_free(p);
}

static void test_returns(void)
{
    static const struct {
        const char *body;
        policy_result want;
        const char *msg;
    } cases[] = {
        {"return nil", POLICY_FAILED,
         "records() returned nil: return {} to remove all records or false to leave them "
         "unchanged"},
        {"", POLICY_FAILED, "records() returned nil"},
        {"return 'x'", POLICY_FAILED, "records() returned a string: return a list of records"},
        {"return true", POLICY_FAILED, "records() returned true"},
        {"return false", POLICY_UNCHANGED, ""},
        {"return {}", POLICY_RECORDS, ""},
        {"return { name = 'a.example.org', type = 'A', content = '192.0.2.1' }", POLICY_FAILED,
         "records() returned a table with key "},
        {"return { 'x' }", POLICY_FAILED, "record 1 is a string, not a table"},
        {"return { { name = 'a.example.org', type = 'A', content = '192.0.2.1', prio = 1 } }",
         POLICY_FAILED, "record 1 has unknown key 'prio'"},
        {"return { { name = 'a.example.org', type = 'A', content = '192.0.2.1' },\n"
         "         { name = 'b.example.org', type = 'A', content = '2001:db8::1' } }",
         POLICY_FAILED, "record 2 (b.example.org A 2001:db8::1): "},
        {"return { { name = 'a.example.org', type = 'CNAME', content = 'b.example.org' } }",
         POLICY_FAILED, "record 1: type 'CNAME' is not A, AAAA or PTR"},
        {"return { { name = 'a.example.org', type = 'A' } }", POLICY_FAILED,
         "record 1 has no content"},
        {"return { { name = 'a.example.org', type = 'A', content = 3 } }", POLICY_FAILED,
         "record 1: content must be a string, not a number"},
        {"return { { name = 'a.example.org', type = 'A', content = '192.0.2.1', ttl = 1.5 } }",
         POLICY_FAILED, "record 1: ttl must be a whole number of seconds, not a fraction"},
        {"return { { name = 'a.example.org', type = 'A', content = '192.0.2.1', ttl = 0 } }",
         POLICY_FAILED, "record 1 (a.example.org A 192.0.2.1): ttl 0 is outside"},
        {"return { { name = 'a.example.org', type = 'A', content = '192.0.2.1', [5] = 1 } }",
         POLICY_FAILED, "record 1 has a key [5]"},
        {"return { [1] = {}, [3] = {} }", POLICY_FAILED, "records() returned a table with key [3]"},
        {"local t = {} for i = 1, 101 do\n"
         "  t[i] = { name = 'h' .. i .. '.example.org', type = 'A', content = '192.0.2.1' }\n"
         "end return t",
         POLICY_FAILED, "records() returned 101 records, more than the limit of 100"},
        {"error('boom', 0)", POLICY_FAILED, "boom\nstack traceback:\n"},
        {"error({})", POLICY_FAILED, "(error object is a table value)"},
    };
    char err[4096];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct policy *p = load_body("ret.lua", cases[i].body);
        policy_result r = run_vm(p, err, sizeof err);
        CHECK_INT(r, cases[i].want);
        if (strncmp(err, cases[i].msg, strlen(cases[i].msg)) != 0)
            fprintf(stderr, "case %zu: got \"%s\"\n", i, err);
        CHECK_PREFIX(err, cases[i].msg);
        CHECK_INT(policy_stack_top(p), 0);
        policy_free(p);
    }

    /* records are checked, normalised, sorted and de-duplicated; ttl defaults to settings */
    struct policy *p = load_body(
        "norm.lua", "return {\n"
                    "  { name = 'B.Example.ORG.', type = 'AAAA', content = '2001:DB8:0:0::1' },\n"
                    "  { name = 'a.example.org', type = 'A', content = '192.0.2.1', ttl = 300 },\n"
                    "  { name = 'b.example.org', type = 'AAAA', content = '2001:db8::1' } }");
    json_doc *d = parse(VM_JSON);
    struct policy_input in = {.vm = json_root(d)};
    struct dns_record *recs;
    size_t n;
    CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_RECORDS);
    CHECK_INT(n, 2);
    if (n == 2) {
        CHECK_STR(recs[0].name, "a.example.org");
        CHECK_INT(recs[0].ttl, 300);
        CHECK_STR(recs[1].name, "b.example.org");
        CHECK_STR(recs[1].content, "2001:db8::1");
        CHECK_INT(recs[1].ttl, 60);
    }
    free(recs);
    json_doc_free(d);
    policy_free(p);
}

static void test_values(void)
{
    char err[4096];
    struct policy_config cfg = base_cfg(NULL);
    cfg.common_zone = "common.example.net";
    cfg.add_to_common_zone = 1;
    /* each check raises naming itself, so a failure says which one */
    struct policy *p = load_body_cfg(
        "values.lua",
        "local function want(ok, what) if not ok then error(what, 0) end end\n"
        "want(math.type(vm.cpunumber) == 'integer', 'cpunumber integer')\n"
        "want(math.type(vm.memory) == 'integer', 'memory integer')\n"
        "want(math.type(vm.secondarystoragetotal) == 'float', '0.0 stays a float')\n"
        "want(vm.ratio == 1.5, 'ratio')\n"
        "want(vm.gone == nil and rawget(vm, 'gone') == nil, 'null absent')\n"
        "want(#vm.arr == 2 and vm.arr[1] == 1 and vm.arr[2] == 2, 'null dropped from arrays')\n"
        "want(vm.nic[2].isdefault == true, 'booleans')\n"
        "local j = json.decode('{\"a\":3,\"b\":null,\"c\":[1,null,2],\"d\":1.5}')\n"
        "want(math.type(j.a) == 'integer' and j.b == nil and #j.c == 2 and j.d == 1.5, 'json')\n"
        "want(json.encode({1, 2}) == '[1,2]', 'json.encode')\n"
        "want(ctx.settings.ttl == 60 and math.type(ctx.settings.ttl) == 'integer', 'ttl')\n"
        "want(ctx.settings.common_zone == 'common.example.net', 'common zone')\n"
        "want(ctx.settings.add_to_common_zone == true, 'add_to_common_zone')\n"
        "want(ctx.kafka.topic == 'cs' and ctx.kafka.partition == 2, 'kafka topic')\n"
        "want(ctx.kafka.offset == 1234567890123, 'kafka offset')\n"
        "want(ctx.trigger == 'event' and ctx.account.name == 'acme', 'trigger, account')\n"
        "want(ctx.domain == nil and ctx.project == nil and ctx.event.event == 'VM.CREATE', 'ctx')\n"
        "want(dns.ptr('192.0.2.10') == '10.2.0.192.in-addr.arpa', 'dns.ptr')\n"
        "want(dns.label('My Web_Server!') == 'my-web-server', 'dns.label')\n"
        "want(dns.label('!!!') == '', 'dns.label empty')\n"
        "want(dns.fqdn('Web', 'Example.ORG') == 'web.example.org', 'dns.fqdn')\n"
        "want(dns.ip_version('192.0.2.1') == 4 and dns.ip_version('::1') == 6, 'ip_version')\n"
        "want(dns.ip_version('nope') == nil and dns.ip_version(nil) == nil, 'ip_version nil')\n"
        "want(dns.canonical('2001:DB8:0::1') == '2001:db8::1', 'dns.canonical')\n"
        "want(not pcall(dns.ptr, 'x'), 'dns.ptr raises')\n"
        "want(not pcall(dns.fqdn, 'a b', 'example.org'), 'dns.fqdn raises')\n"
        "want(not pcall(dns.canonical, '1.2.3'), 'dns.canonical raises')\n"
        "log.debug('debug %d', 1) log.info('info %s', 'x') log.warn('warn') log.error('%5.1f', 2)\n"
        "print('printed', 1, nil, true)\n"
        "return false",
        cfg);
    json_doc *vm = parse(VM_JSON);
    json_doc *acc = parse("{\"name\":\"acme\"}");
    json_doc *ev = parse("{\"event\":\"VM.CREATE\",\"x\":null}");
    struct policy_input in = {.vm = json_root(vm),
                              .account = json_root(acc),
                              .event = json_root(ev),
                              .trigger = NULL,
                              .topic = "cs",
                              .partition = 2,
                              .offset = 1234567890123LL};
    struct dns_record *recs;
    size_t n;
    CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_UNCHANGED);
    CHECK_STR(err, "");
    CHECK(recs == NULL && n == 0);
    policy_free(p);
    json_doc_free(vm);
    json_doc_free(acc);
    json_doc_free(ev);
}

/* ctx.event is built on first read; a ctx kept past its call must not reach the freed event. */
static void test_lazy_event(void)
{
    char err[4096];
    struct policy_config cfg = base_cfg(write_file(
        "lazy.lua",
        "local function want(ok, what) if not ok then error(what, 0) end end\n"
        "local calls, unread, read = 0, nil, nil\n"
        "local function stale(c)\n"
        "  local ok, e = pcall(function() return c.event end)\n"
        "  want(not ok and e:find('only available during the records', 1, true),\n"
        "       'stale: ' .. tostring(e))\n"
        "  local n = 0\n"
        "  for k in pairs(c) do want(k ~= 'event', 'stale pairs'); n = n + 1 end\n"
        "  want(n > 0, 'stale pairs sees the rest')\n"
        "end\n"
        "return { records = function(vm, ctx)\n"
        "  calls = calls + 1\n"
        "  if calls == 1 then unread = ctx return false end\n"
        "  if calls == 2 then\n"
        "    stale(unread)\n"
        "    read = ctx\n"
        "    local seen = {}\n"
        "    for k, v in pairs(ctx) do seen[k] = v end\n"
        "    want(seen.event == ctx.event and seen.trigger == 'event', 'pairs sees the event')\n"
        "    want(rawget(ctx, 'event') == ctx.event, 'kept after the first read')\n"
        "    want(ctx.event.event == 'VM.DESTROY' and ctx.event.x == nil, 'event fields')\n"
        "    want(ctx.event.nested.list[2] == 'b' and #ctx.event.nested.list == 2, 'nested')\n"
        "    want(json.encode(ctx.event.nested.list) == '[\"a\",\"b\"]', 'json.encode')\n"
        "    want(ctx.nothing == nil and ctx[1] == nil, 'other keys stay nil')\n"
        "    return false\n"
        "  end\n"
        "  stale(unread)\n"
        "  want(read.event.event == 'VM.DESTROY', 'an event read in its call stays')\n"
        "  want(ctx.event == nil and ctx.trigger == 'resync', 'no event')\n"
        "  local n = 0\n"
        "  for k in pairs(ctx) do n = n + 1 end\n"
        "  want(n > 0, 'pairs without event')\n"
        "  return false\n"
        "end }\n"));
    struct policy *p = load(&cfg);
    json_doc *vm = parse(VM_JSON);
    json_doc *ev1 = parse("{\"event\":\"VM.CREATE\"}");
    json_doc *ev2 =
        parse("{\"event\":\"VM.DESTROY\",\"x\":null,\"nested\":{\"list\":[\"a\",null,\"b\"]}}");
    struct policy_input in = {.vm = json_root(vm), .event = json_root(ev1), .topic = "cs"};
    struct dns_record *recs;
    size_t n;
    CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_UNCHANGED);
    CHECK_STR(err, "");
    json_doc_free(ev1); /* as the pipeline does: the event is gone after its call */
    in.event = json_root(ev2);
    CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_UNCHANGED);
    CHECK_STR(err, "");
    in.event = NULL;
    in.topic = NULL;
    in.trigger = "resync";
    CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_UNCHANGED);
    CHECK_STR(err, "");
    CHECK_INT(policy_stack_top(p), 0);
    policy_free(p);
    json_doc_free(vm);
    json_doc_free(ev2);
}

/* vm and the owner objects convert a field on first read; nothing a policy can do tells them from
 * plain tables, except keeping one past its call. */
static void test_lazy_objects(void)
{
    char err[4096];
    struct policy_config cfg = base_cfg(write_file(
        "lazyobj.lua",
        "local function want(ok, what) if not ok then error(what, 0) end end\n"
        "local calls, kept, kacc = 0, nil, nil\n"
        "local function count(t) local n = 0 for _ in pairs(t) do n = n + 1 end return n end\n"
        "return { records = function(vm, ctx)\n"
        "  calls = calls + 1\n"
        "  if calls == 1 then\n"
        "    want(vm.name == 'web-01' and vm.nic[2].isdefault == true, 'fields')\n"
        "    want(vm.gone == nil and vm[1] == nil and vm.nosuch == nil, 'absent fields')\n"
        "    vm.state = nil\n"
        "    want(vm.state == nil, 'removed before its first read')\n"
        "    want(vm.group == 'www', 'group') vm.group = nil\n"
        "    want(vm.group == nil, 'removed after its first read')\n"
        "    vm.memory = 1\n"
        "    want(vm.memory == 1, 'set before its first read')\n"
        "    local seen = {}\n"
        "    for k, v in pairs(vm) do seen[k] = v end\n"
        "    want(seen.state == nil and seen.group == nil and seen.memory == 1, 'pairs: changes')\n"
        "    want(seen.id == vm.id and seen.ratio == 1.5 and #seen.arr == 2, 'pairs: fields')\n"
        "    want(count(seen) == 8, 'pairs: 8 fields, not ' .. count(seen))\n"
        "    want(getmetatable(vm) == nil, 'plain after pairs')\n"
        "    kept, kacc = ctx.domain, ctx.account\n"
        "    want(kept.name == 'customers', 'domain')\n"
        "    return false\n"
        "  end\n"
        "  if calls == 2 then\n"
        "    want(kept.name == 'customers', 'a field read in its call stays')\n"
        "    local ok, e = pcall(function() return kept.path end)\n"
        "    want(not ok and e:find('ctx.domain: ctx.domain is only available during the "
        "records',\n"
        "         1, true), 'stale read: ' .. tostring(e))\n"
        "    want(not pcall(pairs, kacc), 'stale pairs')\n"
        "    want(not pcall(json.encode, kacc), 'stale json.encode')\n"
        "    want(next(vm) ~= nil and count(vm) == 10, 'next sees the whole vm')\n"
        "    want(rawget(ctx.account, 'name') == 'acme', 'rawget sees an unread field')\n"
        "    want(getmetatable(ctx.domain) == nil, 'getmetatable: a plain table')\n"
        "    local j = json.encode({ d = ctx.domain })\n"
        "    want(j:find('\"path\":\"ROOT', 1, true), 'json.encode nested: ' .. j)\n"
        "    return false\n"
        "  end\n"
        "  if calls == 3 then\n"
        "    setmetatable(ctx.domain, { __index = function() return 'x' end })\n"
        "    want(ctx.domain.name == 'customers' and ctx.domain.zzz == 'x', 'setmetatable')\n"
        "    want(vm.name == 'second' and vm.dup == 1, 'duplicates as eagerly: ' .. vm.name)\n"
        "    return false\n"
        "  end\n"
        "  local seen = {}\n"
        "  for k, v in pairs(vm) do seen[k] = v end\n"
        "  want(seen.name == 'second' and seen.dup == 1 and count(seen) == 2, 'pairs duplicates')\n"
        "  return false\n"
        "end }\n"));
    struct policy *p = load(&cfg);
    json_doc *vm = parse(VM_JSON);
    json_doc *dup = parse("{\"name\":\"first\",\"name\":\"second\",\"dup\":1,\"dup\":null}");
    json_doc *acc = parse("{\"name\":\"acme\",\"id\":\"a1\"}");
    json_doc *dom = parse("{\"name\":\"customers\",\"path\":\"ROOT/customers\"}");
    struct policy_input in = {.vm = json_root(vm),
                              .account = json_root(acc),
                              .domain = json_root(dom),
                              .trigger = "test"};
    struct dns_record *recs;
    size_t n;
    for (int call = 1; call <= 4; call++) {
        in.vm = json_root(call <= 2 ? vm : dup);
        CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_UNCHANGED);
        CHECK_STR(err, "");
    }
    CHECK_INT(policy_stack_top(p), 0);
    policy_free(p);
    json_doc_free(vm);
    json_doc_free(dup);
    json_doc_free(acc);
    json_doc_free(dom);
}

static void test_stack_balance(void)
{
    struct policy_config cfg = base_cfg(NULL);
    struct policy *p = load(&cfg);
    json_doc *vm = parse(VM_JSON);
    json_doc *dom = parse("{\"networkdomain\":\"customers.cloud.example.net\"}");
    struct policy_input in = {.vm = json_root(vm), .domain = json_root(dom)};
    char err[2048];
    int ok = 0;
    for (int i = 0; i < 1000; i++) {
        struct dns_record *recs;
        size_t n;
        if (policy_records(p, &in, &recs, &n, err, sizeof err) == POLICY_RECORDS && n == 4)
            ok++;
        free(recs);
        if (policy_stack_top(p) != 0)
            break;
    }
    CHECK_INT(ok, 1000);
    CHECK_INT(policy_stack_top(p), 0);
    policy_free(p);

    p = load_body("fail.lua", "if vm.name == 'web-01' then error('x') end return { 1 }");
    for (int i = 0; i < 1000; i++)
        run_vm(p, err, sizeof err);
    CHECK_INT(policy_stack_top(p), 0);
    policy_free(p);
    json_doc_free(vm);
    json_doc_free(dom);
}

/* ---- cs.call ---- */

struct fake_cs {
    int calls;
    csp_status status;
    const char *body;
    char seen[512]; /* "command k=v k=v" of the last call */
};

static csp_status fake_call(void *ud, const char *command, const struct cs_param *params, size_t n,
                            struct cs_reply *r, char *err, size_t errlen)
{
    struct fake_cs *f = ud;
    f->calls++;
    size_t o = (size_t)snprintf(f->seen, sizeof f->seen, "%s", command);
    for (size_t i = 0; i < n && o < sizeof f->seen; i++)
        o += (size_t)snprintf(f->seen + o, sizeof f->seen - o, " %s=%s", params[i].name,
                              params[i].value);
    memset(r, 0, sizeof *r);
    if (f->status == CSP_TRANSIENT) {
        snprintf(err, errlen, "HTTP 503 from the management server");
        return CSP_TRANSIENT;
    }
    r->doc = parse(f->body);
    if (f->status == CSP_PERMANENT) {
        r->http_status = 431;
        r->errorcode = 431;
        snprintf(err, errlen, "431 entity does not exist");
        return CSP_PERMANENT;
    }
    r->http_status = 200;
    r->result = json_get(json_root(r->doc), "listnetworksresponse");
    return CSP_OK;
}

static struct policy *load_cs(const char *file, const char *body, struct fake_cs *f)
{
    char src[4096];
    snprintf(src, sizeof src, "return { records = function(vm, ctx)\n%s\nend }\n", body);
    struct policy_config cfg = base_cfg(write_file(file, src));
    cfg.cs_call = fake_call;
    cfg.cs_ud = f;
    return load(&cfg);
}

static void test_cs_call(void)
{
    char err[4096];
    struct fake_cs f = {0, CSP_OK,
                        "{\"listnetworksresponse\":{\"count\":1,\"network\":[{\"id\":\"n1\","
                        "\"networkdomain\":\"net.example.org\",\"dns1\":null}]}}",
                        ""};
    struct policy *p =
        load_cs("cs_ok.lua",
                "local r = cs.call('listNetworks', { id = 'n1', listAll = true, page = 1 })\n"
                "local again = cs.call('listNetworks', { page = 1, id = 'n1', listall = true })\n"
                "if again ~= r then error('not cached', 0) end\n"
                "if math.type(r.count) ~= 'integer' or r.network[1].dns1 ~= nil then "
                "error('shape', 0) end\n"
                "return { { name = 'x.' .. r.network[1].networkdomain, type = 'A',\n"
                "           content = '192.0.2.1' } }",
                &f);
    json_doc *d = parse(VM_JSON);
    struct policy_input in = {.vm = json_root(d)};
    struct dns_record *recs;
    size_t n;
    CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_RECORDS);
    CHECK(n == 1 && strcmp(recs[0].name, "x.net.example.org") == 0);
    free(recs);
    CHECK_INT(f.calls, 1);
    CHECK_STR(f.seen, "listNetworks id=n1 listall=true page=1");
    /* the cache lives for one records() call only */
    CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_RECORDS);
    free(recs);
    CHECK_INT(f.calls, 2);
    policy_free(p);

    /* an API error is an answer: nil, message, HTTP status */
    f.status = CSP_PERMANENT;
    f.calls = 0;
    p = load_cs("cs_perm.lua",
                "local r, msg, status = cs.call('listNetworks', { id = 'gone' })\n"
                "if r ~= nil or status ~= 431 or not msg:find('does not exist') then\n"
                "  error('got ' .. tostring(r) .. tostring(msg) .. tostring(status), 0) end\n"
                "return false",
                &f);
    CHECK_INT(run(p, json_root(d), err, sizeof err, NULL), POLICY_UNCHANGED);
    CHECK_STR(err, "");
    policy_free(p);

    /* a transient failure is a retry, even when the policy swallowed the error */
    f.status = CSP_TRANSIENT;
    p = load_cs("cs_trans.lua",
                "local ok = pcall(cs.call, 'listNetworks', { id = 'n1' })\n"
                "if ok then error('cs.call should have raised', 0) end\n"
                "return {}",
                &f);
    CHECK_INT(run(p, json_root(d), err, sizeof err, NULL), POLICY_TRANSIENT);
    CHECK_STR(err, "cs.call(listNetworks): HTTP 503 from the management server");
    /* and the next call starts clean */
    f.status = CSP_OK;
    CHECK_INT(run(p, json_root(d), err, sizeof err, NULL), POLICY_FAILED);
    CHECK_HAS(err, "cs.call should have raised");
    policy_free(p);

    /* only list* commands; parameters must be scalars */
    f.calls = 0;
    p = load_cs("cs_refuse.lua",
                "if vm.name == 'web-01' then cs.call('deployVirtualMachine', {}) end\n"
                "cs.call('listNetworks', { id = {} })",
                &f);
    CHECK_INT(run(p, json_root(d), err, sizeof err, NULL), POLICY_FAILED);
    CHECK_HAS(err, "only read-only list* commands are allowed, not 'deployVirtualMachine'");
    json_doc *other = parse("{\"name\":\"x\"}");
    CHECK_INT(run(p, json_root(other), err, sizeof err, NULL), POLICY_FAILED);
    CHECK_HAS(err, "parameter 'id' must be a string, integer or boolean");
    CHECK_INT(f.calls, 0);
    json_doc_free(other);
    policy_free(p);

    /* no callback: a clear error */
    p = load_body("cs_none.lua", "cs.call('listZones')");
    CHECK_INT(run(p, json_root(d), err, sizeof err, NULL), POLICY_FAILED);
    CHECK_HAS(err, "cs.call(listZones): no CloudStack API is available here");
    policy_free(p);
    json_doc_free(d);
}

/* ---- hostile and broken policies not covered above ---- */

/* Each body is tried with the policy's other work done, so that without the guard it would
 * succeed (POLICY_RECORDS) and the test would fail. */
static void test_escapes(void)
{
    char pwned[128], body[512], err[4096];
    snprintf(pwned, sizeof pwned, "%s/pwned", tmpdir);
    static const struct {
        const char *body; /* %s is the path of a file that must never be created */
        const char *msg;
    } cases[] = {
        {"os.execute('touch %s')", "attempt to call a nil value (field 'execute')"},
        {"io.open('%s', 'w'):write('x')", "undefined global 'io'"},
        {"load('return 1')() -- %s", "undefined global 'load'"},
        {"loadfile('%s')", "undefined global 'loadfile'"},
        {"dofile('%s')", "undefined global 'dofile'"},
        {"require('io') -- %s", "require('io'): cannot read "},
        {"require('../../etc/passwd') -- %s", "a module name is"},
        {"local f = string.dump(function() end) -- %s",
         "attempt to call a nil value (field 'dump')"},
        {"debug.sethook() -- %s", "undefined global 'debug'"},
        {"package.loadlib('%s', 'x')", "undefined global 'package'"},
        {"collectgarbage('stop') -- %s", "undefined global 'collectgarbage'"},
        {"coroutine.wrap(function() end)() -- %s", "undefined global 'coroutine'"},
        {"counter = (counter or 0) + 1 -- %s", "undefined global 'counter'"},
        {"_G.seen = true -- %s", "assignment to undefined global 'seen'"},
        {"rawset(_ENV, 'seen', true) -- %s", "rawset: cannot create the global 'seen'"},
        {"rawset(_G, 'seen', true) -- %s", "rawset: cannot create the global 'seen'"},
        {"setmetatable(_G, nil) -- %s", "cannot change a protected metatable"},
        {"getmetatable(_G).__newindex = nil -- %s", "attempt to index a string value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(body, sizeof body, cases[i].body, pwned);
        strcat(body, "\nreturn {}");
        struct policy *p = load_body("escape.lua", body);
        CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
        if (!strstr(err, cases[i].msg))
            fprintf(stderr, "escape case %zu: got \"%s\"\n", i, err);
        CHECK_HAS(err, cases[i].msg);
        CHECK_HAS(err, "escape.lua:2:"); /* where, for the operator */
        CHECK_INT(policy_stack_top(p), 0);
        policy_free(p);
    }
    CHECK(access(pwned, F_OK) != 0);

    /* a global written by one call never reaches the next: there is nowhere to keep it */
    struct policy *p = load_body("counter.lua", "local ok = pcall(rawset, _G, 'n', 1)\n"
                                                "if ok or rawget(_G, 'n') ~= nil then\n"
                                                "  error('a global was created', 0) end\n"
                                                "return {}");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_RECORDS);
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_RECORDS);
    policy_free(p);
}

static void test_recursion(void)
{
    static const struct {
        const char *body;
        const char *msg;
    } cases[] = {
        /* Lua recursion: Lua's stack limit, or the memory cap, whichever comes first */
        {"local function f(n) return 1 + f(n + 1) end\nreturn f(1)", NULL},
        /* recursion through C (gsub callbacks) ends at Lua's C-stack limit */
        {"local function f(s) return (s:gsub('.', f)) end\nreturn f('x')", "stack overflow"},
        /* a metamethod that calls itself */
        {"local t = setmetatable({}, { __index = function(t, k) return t[k] end })\n"
         "return t.x",
         "stack overflow"},
        /* swallowing each overflow with pcall and starting again only runs out the budget */
        {"local function f(n) return 1 + f(n + 1) end\n"
         "while true do pcall(f, 1) end",
         "policy: "},
    };
    char err[4096];
    json_doc *other = parse("{\"name\":\"db\"}");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[512];
        snprintf(body, sizeof body, "if vm.name == 'web-01' then\n%s\nend\nreturn {}",
                 cases[i].body);
        struct policy *p = load_body("recurse.lua", body);
        CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
        if (cases[i].msg)
            CHECK_HAS(err, cases[i].msg);
        else
            CHECK(strstr(err, "stack overflow") || strstr(err, "policy: memory limit exceeded"));
        /* the next VM is named as if nothing happened */
        CHECK_INT(run(p, json_root(other), err, sizeof err, NULL), POLICY_RECORDS);
        CHECK_INT(policy_stack_top(p), 0);
        policy_free(p);
    }
    json_doc_free(other);
}

static void test_garbage(void)
{
    static const struct {
        const char *ret; /* the returned list */
        const char *msg; /* the message starts with this */
    } cases[] = {
        {"{ { name = 'web 01.example.org', type = 'A', content = '192.0.2.1' } }",
         "record 1 (web 01.example.org A 192.0.2.1): name \"web 01.example.org\": label 1 "
         "(\"web 01\") contains byte 0x20"},
        {"{ { name = 'web\"01.example.org', type = 'A', content = '192.0.2.1' } }",
         "record 1 (web\"01.example.org A 192.0.2.1): name "},
        {"{ { name = \"o'brien.example.org\", type = 'A', content = '192.0.2.1' } }",
         "record 1 (o'brien.example.org A 192.0.2.1): name "},
        {"{ { name = \"x');DROP TABLE records;--.example.org\", type = 'A',\n"
         "    content = '192.0.2.1' } }",
         "record 1 (x');DROP TABLE records;--.example.org A 192.0.2.1): name "},
        {"{ { name = '10.2.0.192.in-addr.arpa', type = 'PTR',\n"
         "    content = \"web.example.org'; DELETE FROM records; --\" } }",
         "record 1 (10.2.0.192.in-addr.arpa PTR web.example.org'; DELETE FROM records; --): "
         "content"},
        {"{ { name = 'a.example.org', type = 'A', content = \"192.0.2.1' OR '1'='1\" } }",
         "record 1 (a.example.org A 192.0.2.1' OR '1'='1): content \"192.0.2.1' OR '1'='1\" is not "
         "an IPv4"},
        {"{ { name = string.rep('a', 64) .. '.example.org', type = 'A', content = '192.0.2.1' } }",
         "record 1 (aaaa"},
        {"{ { name = string.rep(string.rep('a', 60) .. '.', 4) .. 'example.org', type = 'A',\n"
         "    content = '192.0.2.1' } }",
         "record 1 (aaaa"},
        {"{ { name = string.rep('x', 4000), type = 'A', content = '192.0.2.1' } }",
         "record 1: name is 4000 characters, longer than a DNS name can be"},
        {"{ { name = 'a\\0b.example.org', type = 'A', content = '192.0.2.1' } }",
         "record 1: name contains a NUL byte"},
        {"{ { name = '', type = 'A', content = '192.0.2.1' } }", "record 1 ( A 192.0.2.1): name"},
        /* a PTR whose name is a forward name, to a name that only has an A record */
        {"{ { name = 'web.example.org', type = 'A', content = '192.0.2.1' },\n"
         "  { name = 'web.example.org', type = 'PTR', content = 'web.example.org' } }",
         "record 2 (web.example.org PTR web.example.org): name \"web.example.org\" is not a "
         "reverse name"},
        {"{ { name = '1.2.0.192.in-addr.arpa', type = 'PTR', content = '192.0.2.1' } }",
         "record 1 (1.2.0.192.in-addr.arpa PTR 192.0.2.1): content \"192.0.2.1\" is an IPv4 "
         "address, not a host name"},
        {"{ { name = 'web.example.org', type = 'A', content = '192.0.2.256' } }",
         "record 1 (web.example.org A 192.0.2.256): content \"192.0.2.256\" is not an IPv4 "
         "address"},
        {"{ { name = 'web.example.org', type = 'A', content = 'web.example.org' } }",
         "record 1 (web.example.org A web.example.org): content \"web.example.org\" is not an "
         "IPv4 address"},
        {"{ { name = 'web.example.org', type = 'AAAA', content = '2001:db8::g' } }",
         "record 1 (web.example.org AAAA 2001:db8::g): content \"2001:db8::g\" is not an IPv6"},
        {"{ { name = 'web.example.org', type = 'AAAA', content = '192.0.2.1' } }",
         "record 1 (web.example.org AAAA 192.0.2.1): content \"192.0.2.1\" is an IPv4 address; "
         "use type A"},
        {"{ { name = {}, type = 'A', content = '192.0.2.1' } }",
         "record 1: name must be a string, not a table"},
        {"{ { name = 'web.example.org', type = 1, content = '192.0.2.1' } }",
         "record 1: type must be a string, not a number"},
        {"{ { name = 'web.example.org', type = 'a', content = '192.0.2.1' } }",
         "record 1: type 'a' is not A, AAAA or PTR"},
        {"{ { name = 'web.example.org', type = 'A', content = '192.0.2.1', ttl = '60' } }",
         "record 1: ttl must be a whole number of seconds, not string"},
        {"{ { name = 'web.example.org', type = 'A', content = '192.0.2.1', ttl = 1 << 40 } }",
         "record 1 (web.example.org A 192.0.2.1): ttl 1099511627776 is outside"},
        {"{ print }", "record 1 is a function, not a table"},
        {"{ { name = 'web.example.org', type = 'A', content = '192.0.2.1' }, n = 1 }",
         "records() returned a table with key 'n', not a list"},
        {"42", "records() returned a number"},
    };
    char err[4096], body[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(body, sizeof body, "return %s", cases[i].ret);
        struct policy *p = load_body("garbage_ret.lua", body);
        struct dns_record *recs = (struct dns_record *)&err; /* must be reset to NULL */
        size_t n = 99;
        json_doc *d = parse(VM_JSON);
        struct policy_input in = {.vm = json_root(d)};
        CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_FAILED);
        CHECK(recs == NULL && n == 0); /* nothing for the caller to write */
        if (strncmp(err, cases[i].msg, strlen(cases[i].msg)) != 0)
            fprintf(stderr, "garbage case %zu: got \"%s\"\n", i, err);
        CHECK_PREFIX(err, cases[i].msg);
        json_doc_free(d);
        policy_free(p);
    }

    /* 100k records against the default cap of 1000: refused before any is converted */
    struct policy_config cfg = base_cfg(NULL);
    cfg.max_records = 0;
    cfg.max_memory_mb = 128;
    cfg.max_instructions = 0;
    struct policy *p =
        load_body_cfg("flood.lua",
                      "local t = {}\n"
                      "for i = 1, 100000 do\n"
                      "  t[i] = { name = 'h' .. i .. '.example.org', type = 'A', content = "
                      "'192.0.2.1' }\n"
                      "end\n"
                      "return t",
                      cfg);
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_STR(err, "records() returned 100000 records, more than the limit of 1000 per VM "
                   "(MAX_RECORDS_PER_VM)");
    policy_free(p);
}

/* ---- the self-check ---- */

static int self_check_fails(const char *file, const char *src, const char *msg)
{
    struct policy_config cfg = base_cfg(write_file(file, src));
    struct policy *p = NULL;
    char err[4096];
    /* without the self-check the policy loads: it is the check that refuses it */
    if (policy_new(&cfg, &p, err, sizeof err) != 0) {
        fprintf(stderr, "%s does not even load: %s\n", file, err);
        return 0;
    }
    policy_free(p);
    p = NULL;
    cfg.self_check = 1;
    int refused = policy_new(&cfg, &p, err, sizeof err) != 0 && p == NULL;
    /* file names in messages without the temporary directory, so msg can spell them */
    size_t dl = strlen(tmpdir);
    for (char *at; (at = strstr(err, tmpdir)) != NULL && at[dl] == '/';)
        memmove(at, at + dl + 1, strlen(at + dl + 1) + 1);
    if (!refused || strncmp(err, msg, strlen(msg)) != 0) {
        fprintf(stderr, "%s: refused=%d err=\"%s\"\n", file, refused, err);
        policy_free(p);
        return 0;
    }
    return 1;
}

static void test_self_check(void)
{
    char err[4096];
    struct policy_config cfg = base_cfg(NULL);
    cfg.self_check = 1;
    struct policy *p = NULL;
    CHECK_INT(policy_new(&cfg, &p, err, sizeof err), 0); /* the built-in policy passes */
    policy_free(p);

    /* the typical bug: project VMs have no account */
    CHECK(self_check_fails(
        "noacct.lua",
        "return { records = function(vm, ctx)\n"
        "  local zone = ctx.account.networkdomain\n"
        "  return { { name = dns.fqdn(vm.name, zone), type = 'A', content = vm.nic[1].ipaddress"
        " } }\n"
        "end }",
        "self-check: records() failed for the sample project VM selfcheck-02: "));
    CHECK_HAS(err, ""); /* keeps err used for the next checks */
    CHECK(self_check_fails("nic1.lua",
                           "return { records = function(vm, ctx)\n"
                           "  local nic = vm.nic[1]\n" /* not the default NIC */
                           "  return { { name = dns.ptr(nic.ip6address), type = 'PTR',\n"
                           "             content = vm.name .. '.example.org' } }\n"
                           "end }",
                           "self-check: records() failed for the sample account VM selfcheck-01: "
                           "nic1.lua:3: bad argument #1 to 'ptr'"));
    CHECK(self_check_fails("badrec.lua",
                           "return { records = function(vm, ctx)\n"
                           "  return { { name = vm.displayname .. '.example.org', type = 'A',\n"
                           "             content = '192.0.2.1' } }\n"
                           "end }",
                           "self-check: records() failed for the sample account VM selfcheck-01: "
                           "record 1 (Self-check VM #1.example.org A 192.0.2.1): name"));
    CHECK(self_check_fails("nilret.lua", "return { records = function(vm, ctx) end }",
                           "self-check: records() failed for the sample account VM selfcheck-01: "
                           "records() returned nil"));
    CHECK(self_check_fails("spin.lua", "return { records = function() while true do end end }",
                           "self-check: records() failed for the sample account VM selfcheck-01: "
                           "policy: instruction budget exceeded"));
    CHECK(self_check_fails("trigger.lua",
                           "return { records = function(vm, ctx)\n"
                           "  if ctx.trigger == 'check' and ctx.kafka == nil then\n"
                           "    error('trigger ' .. ctx.trigger, 0) end\n"
                           "  return {}\n"
                           "end }",
                           "self-check: records() failed for the sample account VM selfcheck-01: "
                           "trigger check"));

    /* self_test: the policy's own assertions */
    CHECK(self_check_fails("selftest_fail.lua",
                           "local function records(vm, ctx) return {} end\n"
                           "return { records = records, self_test = function()\n"
                           "  assert(#records({ name = 'x' }, {}) == 1, 'want one record')\n"
                           "end }",
                           "self-check: self_test() failed: selftest_fail.lua:3: want one record"
                           "\nstack traceback:"));
    CHECK(self_check_fails("selftest_type.lua",
                           "return { records = function() return {} end,\n"
                           "  self_test = true }",
                           "self-check: the policy's self_test must be a function, not a boolean"));
    CHECK(self_check_fails("selftest_spin.lua",
                           "return { records = function() return {} end,\n"
                           "  self_test = function() while true do end end }",
                           "self-check: self_test() failed: policy: instruction budget exceeded"));
    CHECK(self_check_fails("selftest_cs.lua",
                           "return { records = function() return {} end,\n"
                           "  self_test = function() pcall(cs.call, 'listZones') end }",
                           "self-check: self_test() called CloudStack (cs.call(listZones): "
                           "CloudStack is not called during the self-check)"));
    cfg = base_cfg(write_file("selftest_ok.lua",
                              "local function records(vm, ctx)\n"
                              "  return { { name = vm.name .. '.example.org', type = 'A',\n"
                              "             content = '192.0.2.1' } }\n"
                              "end\n"
                              "return { records = records, self_test = function()\n"
                              "  assert(records({ name = 'x' }, {})[1].name == 'x.example.org')\n"
                              "end }"));
    cfg.self_check = 1;
    CHECK_INT(policy_new(&cfg, &p, err, sizeof err), 0);
    policy_free(p);

    /* records() that calls CloudStack: checked up to the call, which is never made */
    struct fake_cs f = {0, CSP_OK, "{\"listnetworksresponse\":{}}", ""};
    cfg = base_cfg(write_file("selfcheck_cs.lua",
                              "return { records = function(vm, ctx)\n"
                              "  local ok = pcall(cs.call, 'listNetworks', { id = 'n1' })\n"
                              "  return ok and {} or 'swallowed'\n"
                              "end }"));
    cfg.cs_call = fake_call;
    cfg.cs_ud = &f;
    cfg.self_check = 1;
    CHECK_INT(policy_new(&cfg, &p, err, sizeof err), 0);
    CHECK_INT(f.calls, 0);
    /* and afterwards cs.call answers as usual */
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_RECORDS);
    CHECK_INT(f.calls, 1);
    CHECK_INT(policy_stack_top(p), 0);
    policy_free(p);
}

/* require('cspdns.default'): the built-in policy as a module a policy can wrap */
static void test_builtin_module(void)
{
    char err[4096];
    struct policy *p =
        load_body("wrap.lua", "local default = require('cspdns.default')\n"
                              "if require('cspdns.default') ~= default then error('cache', 0) end\n"
                              "local out = {}\n"
                              "for _, r in ipairs(default.records(vm, ctx)) do\n"
                              "  if r.type ~= 'PTR' then out[#out + 1] = r end\n"
                              "end\n"
                              "return out");
    json_doc *vm = parse(VM_JSON);
    json_doc *acc = parse("{\"id\":\"3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63\",\"name\":\"acme\","
                          "\"networkdomain\":\"acme.cloud.example.net\"}");
    struct policy_input in = {.vm = json_root(vm), .account = json_root(acc)};
    struct dns_record *recs;
    size_t n;
    CHECK_INT(policy_records(p, &in, &recs, &n, err, sizeof err), POLICY_RECORDS);
    CHECK_INT(n, 4); /* the built-in's six, without the two PTRs */
    for (size_t i = 0; i < n; i++)
        CHECK(recs[i].type != DNS_RR_PTR);
    if (n == 4)
        CHECK_STR(recs[0].name, "web-01.acme.cloud.example.net");
    free(recs);
    policy_free(p);

    /* the built-in policy itself can require it too: no directory is needed */
    struct policy_config cfg = base_cfg(NULL);
    p = load(&cfg);
    CHECK_INT(policy_run_script(p,
                                write_file("req_builtin.lua",
                                           "local d = require('cspdns.default')\n"
                                           "assert(d.name == 'default' and d.records)"),
                                no_setup, NULL, err, sizeof err),
              0);
    policy_free(p);

    p = load_body("req_other.lua", "require('cspdns.other')");
    CHECK_INT(run_vm(p, err, sizeof err), POLICY_FAILED);
    CHECK_HAS(err, "a module name is 1 to 64 letters");
    policy_free(p);
    json_doc_free(vm);
    json_doc_free(acc);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_policy.XXXXXX");
    unit_tmpdir(tmpdir);
    test_builtin_policy();
    test_limits();
    test_memory();
    test_sandbox();
    test_require();
    test_returns();
    test_values();
    test_lazy_event();
    test_lazy_objects();
    test_stack_balance();
    test_cs_call();
    test_escapes();
    test_recursion();
    test_garbage();
    test_self_check();
    test_builtin_module();
    unit_tmpdir_remove(tmpdir);
    return unit_done("test_policy");
}
