/* policy.h -- the one boundary between C and the operator's Lua policy: sandbox, limits, contract.
 * Must not: write to the database, touch Kafka, or call CloudStack except through the callback
 * the caller hands it. */
#ifndef CSPDNS_POLICY_H
#define CSPDNS_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "cloudstack.h"
#include "dns_record.h"
#include "json.h"
#include "status.h"

/* Answers the policy's cs.call(command, params) from the host. Same classification and reply
 * ownership as cloudstack_call. The policy module only allows commands starting with "list". */
typedef csp_status (*policy_cs_fn)(void *ud, const char *command, const struct cs_param *params,
                                   size_t n, struct cs_reply *r, char *err, size_t errlen);

struct policy_config {
    const char *path;        /* policy file; NULL = the built-in default policy */
    int ttl;                 /* settings.ttl */
    const char *common_zone; /* settings.common_zone (may be NULL) */
    int add_to_common_zone;  /* settings.add_to_common_zone */
    long max_instructions;   /* per call */
    int timeout_ms;          /* per call, wall clock, CloudStack calls included */
    int max_memory_mb;       /* whole Lua state */
    int max_records;         /* per VM */
    policy_cs_fn cs_call;    /* may be NULL: cs.call then raises "no CloudStack API" */
    void *cs_ud;
    int self_check; /* policy_new also runs the self-check (see policy_new) */
};

/* What the policy is asked about. Any of account/domain/project/event may be NULL. */
struct policy_input {
    const json_value *vm;      /* the VM as CloudStack returns it */
    const json_value *account; /* owner account (listAccounts object) */
    const json_value *domain;  /* owner's CloudStack domain (listDomains object) */
    const json_value *project; /* project (listProjects object) when the VM belongs to one */
    const json_value *event;   /* the decoded triggering event */
    const char *trigger;       /* "event", "resync", "plan", "test" or "check" */
    const char *topic;         /* Kafka position of the event, or NULL */
    int32_t partition;
    int64_t offset;
};

typedef enum {
    POLICY_RECORDS = 0,   /* recs and n hold the desired set (n may be 0) */
    POLICY_UNCHANGED = 1, /* the policy said: leave this VM's records as they are */
    POLICY_FAILED = 2,    /* the policy failed or returned something invalid; err says what */
    POLICY_TRANSIENT = 3, /* a CloudStack call inside the policy failed transiently: retry */
} policy_result;

struct policy;

/* Builds a sandboxed Lua state and loads the policy (with its own budget), then checks that it
 * returned a table with a records function. err says what is wrong, with file:line.
 * With cfg->self_check it then runs the self-check, each step under the per-call limits, and
 * refuses the policy when a step fails (err starts "self-check:"):
 *   1. records(vm, ctx) on built-in sample VMs (an account VM with two NICs, dual-stack, in an
 *      instance group; a project VM), ctx.trigger "check": it must not raise or trip a limit,
 *      and its answer must pass the same checks as in production. cs.call is not answered here:
 *      a sample call that reaches it counts as passed up to that point.
 *   2. the policy table's optional self_test function, called without arguments: it fails the
 *      check by raising (assert), and it may not call cs.call.
 * The daemon uses it at start, on SIGHUP and in `cs-pdns check`, so a reload that would fail
 * every event is refused while the old policy keeps running. */
int policy_new(const struct policy_config *cfg, struct policy **out, char *err, size_t errlen);
void policy_free(struct policy *p);

/* Why the last policy_records call returned POLICY_FAILED: "error" (the policy raised),
 * "invalid" (it returned something the contract or the record checks refuse), "instructions",
 * "timeout" or "memory" (a limit tripped). */
const char *policy_last_failure(const struct policy *p);

/* The policy's declared name and version ("default", "1"), for logs. */
const char *policy_name(const struct policy *p);

/* Calls records(vm, ctx) under the limits. On POLICY_RECORDS the records are checked with
 * dns_record_check and normalised; one bad record fails the whole call, naming it.
 * *recs is malloc'ed (caller frees), NULL when n is 0. On POLICY_FAILED err holds the message
 * and, for runtime errors, the traceback on following lines. */
policy_result policy_records(struct policy *p, const struct policy_input *in,
                             struct dns_record **recs, size_t *n, char *err, size_t errlen);

/* ---- for tests and `cs-pdns test` (src/testrun.c); the daemon needs none of these ---- */

/* Lua stack depth of p's state between calls: 0 unless the boundary leaks (unit tests check). */
int policy_stack_top(const struct policy *p);

struct lua_State;

/* Pushes v exactly as a policy sees its vm: integers stay integers, doubles are floats, null is
 * absent (dropped from arrays too, so they stay sequences). [-0, +1, m] */
void policy_push_json(struct lua_State *L, const json_value *v);

/* The error message at stack index 1 (made a string as lua.c does) followed by a traceback from
 * level up; the message handler of every policy call. [-0, +1|+2, m] */
void policy_push_traceback(struct lua_State *L, int level);

/* Installs helpers before a script runs: called in protected mode with the policy's table on top
 * of the stack; it may raise, and must leave the stack as it found it. Globals are strict by
 * then, so new ones are set with lua_rawset on the global table. */
typedef void (*policy_script_setup)(struct lua_State *L, void *ud);

/* Runs the Lua file at path (text only) in p's sandbox after setup, under one budget of p's
 * limits for the whole file. Returns 0, or -1 with err (message, then traceback lines); after a
 * limit trip p's state is rebuilt before its next use. */
int policy_run_script(struct policy *p, const char *path, policy_script_setup setup, void *ud,
                      char *err, size_t errlen);

#endif
