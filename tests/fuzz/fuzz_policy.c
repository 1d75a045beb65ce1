/* fuzz_policy.c -- libFuzzer target: JSON from CloudStack into the built-in policy's Lua state and
 * its records back through the host's checks (the C<->Lua conversion and the contract).
 * Must not: call CloudStack; the policy gets no cs.call here, as in `cs-pdns test`. */
#include <string.h>

#include "dns_record.h"
#include "fuzz.h"
#include "json.h"
#include "policy.h"

#define MAX_RECORDS 1000

/* libFuzzer calls the target once per input, so the Lua state lives from one input to the next:
 * that also catches state that one input leaves behind for the next. */
static struct policy *shared_policy(void)
{
    static struct policy *p;
    if (!p) {
        char err[2048];
        struct policy_config cfg = {.ttl = 60,
                                    .common_zone = "common.example",
                                    .add_to_common_zone = 1,
                                    .max_instructions = 2000000,
                                    .timeout_ms = 2000,
                                    .max_memory_mb = 64,
                                    .max_records = MAX_RECORDS};
        if (policy_new(&cfg, &p, err, sizeof err) != 0) {
            fprintf(stderr, "fuzz_policy: the built-in policy does not load: %s\n", err);
            abort();
        }
    }
    return p;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    shared_policy();
    return 0;
}

static const json_value *object_or_null(const json_value *v)
{
    return v && v->type == JSON_OBJECT ? v : NULL;
}

/* Input: a VM object, or {"vm": {...}, "account": {...}, "domain": {...}, "project": {...}}. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_doc *doc = NULL;
    char err[4096];
    if (json_parse((const char *)data, size, &doc, err, sizeof err) != 0)
        return 0;
    const json_value *root = json_root(doc);
    const json_value *vm = object_or_null(json_get(root, "vm"));
    struct policy_input in = {
        .vm = vm ? vm : root,
        .account = vm ? object_or_null(json_get(root, "account")) : NULL,
        .domain = vm ? object_or_null(json_get(root, "domain")) : NULL,
        .project = vm ? object_or_null(json_get(root, "project")) : NULL,
        .event = root,
        .trigger = "event",
        .topic = "fuzz",
    };
    struct policy *p = shared_policy();
    struct dns_record *recs = NULL;
    size_t n = 0;
    policy_result r = policy_records(p, &in, &recs, &n, err, sizeof err);
    FUZZ_ASSERT(policy_stack_top(p) == 0);
    if (r == POLICY_RECORDS) {
        FUZZ_ASSERT(n <= MAX_RECORDS);
        FUZZ_ASSERT((n == 0) == (recs == NULL));
        for (size_t i = 0; i < n; i++) {
            /* Whatever the policy made of the input went through the host's check. */
            struct dns_record again = recs[i];
            FUZZ_ASSERT(dns_record_check(&again, err, sizeof err) == 0);
            FUZZ_ASSERT(dns_record_cmp(&again, &recs[i]) == 0);
            FUZZ_ASSERT(i == 0 || dns_record_cmp(&recs[i - 1], &recs[i]) < 0);
        }
    } else {
        FUZZ_ASSERT(n == 0 && recs == NULL);
        FUZZ_ASSERT(r != POLICY_FAILED || strlen(err) > 0);
    }
    free(recs);
    json_doc_free(doc);
    return 0;
}
