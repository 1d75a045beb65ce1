/* policy_bench.c -- default-policy evaluations per second on one core: policy_records on a
 * CloudStack 4.16 VM.CREATE job's VM, called exactly as the pipeline calls it, no I/O timed.
 * Must not: run under ctest, touch a database, Kafka or CloudStack, or time anything but the
 * policy call (parsing, owner lookups and the database are other benchmarks' business). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "policy.h"

/* The owner objects as listAccounts and listDomains return them for the fixture's VM (account
 * "acme" in domain "customers"), so the policy takes its usual account-networkdomain path. */
static const char ACCOUNT_JSON[] =
    "{\"id\":\"3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63\",\"name\":\"acme\",\"accounttype\":0,"
    "\"roletype\":\"User\",\"domainid\":\"4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f\","
    "\"domain\":\"customers\",\"domainpath\":\"ROOT/customers\",\"state\":\"enabled\","
    "\"networkdomain\":\"acme.cloud.example\",\"isdefault\":false}";
static const char DOMAIN_JSON[] =
    "{\"id\":\"4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f\",\"name\":\"customers\",\"level\":1,"
    "\"parentdomainid\":\"0d5e9c1a-2b3c-11ef-8f1e-525400a1b2c3\",\"parentdomainname\":\"ROOT\","
    "\"haschild\":false,\"path\":\"ROOT/customers\",\"state\":\"Active\","
    "\"networkdomain\":\"cloud.example\"}";

struct bench_args {
    const char *event_file;
    double seconds;
    int json;
    int no_event; /* ctx.event absent: shows what handing the policy the whole event costs */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "policy_bench: cannot open %s: %s (pass --event FILE)\n", path,
                strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    fclose(f);
    if (!buf) {
        fprintf(stderr, "policy_bench: out of memory reading %s\n", path);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

static int parse(const char *what, const char *text, size_t len, json_doc **doc)
{
    char err[256];
    if (json_parse(text, len, doc, err, sizeof err) == 0)
        return 0;
    fprintf(stderr, "policy_bench: %s is not JSON: %s\n", what, err);
    return -1;
}

static int parse_args(int argc, char **argv, struct bench_args *a)
{
    a->event_file = CSPDNS_BENCH_EVENT;
    a->seconds = 3.0;
    a->json = 0;
    a->no_event = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--event") && i + 1 < argc) {
            a->event_file = argv[++i];
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            a->seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--json")) {
            a->json = 1;
        } else if (!strcmp(argv[i], "--no-event")) {
            a->no_event = 1;
        } else {
            fprintf(stderr, "usage: policy_bench [--event JOB_EVENT.json] [--seconds S] [--json] "
                            "[--no-event]\n");
            return -1;
        }
    }
    if (a->seconds <= 0) {
        fprintf(stderr, "policy_bench: --seconds must be positive\n");
        return -1;
    }
    return 0;
}

/* One call, exactly the pipeline's: the VM from jobResult, owner objects, the event, its position.
 * Returns the number of records, or -1 with the reason printed. */
static long evaluate(struct policy *p, const struct policy_input *in)
{
    char err[4096];
    struct dns_record *recs = NULL;
    size_t n = 0;
    policy_result r = policy_records(p, in, &recs, &n, err, sizeof err);
    free(recs);
    if (r != POLICY_RECORDS || n == 0) {
        fprintf(stderr, "policy_bench: the policy did not name the VM (result %d): %s\n", (int)r,
                r == POLICY_FAILED ? err : "no records");
        return -1;
    }
    return (long)n;
}

static int run(struct policy *p, const struct policy_input *in, const struct bench_args *a)
{
    long nrec = 0;
    for (int i = 0; i < 1000; i++) /* warm-up: Lua's allocator and the caches settle */
        if ((nrec = evaluate(p, in)) < 0)
            return -1;
    long calls = 0;
    double t0 = now_s(), t = t0;
    while (t - t0 < a->seconds) {
        for (int i = 0; i < 256; i++)
            if (evaluate(p, in) < 0)
                return -1;
        calls += 256;
        t = now_s();
    }
    double rate = (double)calls / (t - t0);
    int cpu = sched_getcpu();
    if (a->json)
        printf("{\"policy\":\"%s\",\"evaluations\":%ld,\"seconds\":%.3f,\"per_second\":%.0f,"
               "\"records_per_vm\":%ld,\"cpu\":%d,\"ctx_event\":%s}\n",
               policy_name(p), calls, t - t0, rate, nrec, cpu, a->no_event ? "false" : "true");
    else
        printf("policy %s: %ld evaluations in %.2f s on CPU %d = %.0f evaluations/s "
               "(%ld records per VM%s)\n",
               policy_name(p), calls, t - t0, cpu, rate, nrec, a->no_event ? ", no ctx.event" : "");
    return 0;
}

int main(int argc, char **argv)
{
    struct bench_args a;
    if (parse_args(argc, argv, &a) != 0)
        return 2;
    /* One core: the figure must not depend on the scheduler moving the process around. */
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu() < 0 ? 0 : sched_getcpu(), &one);
    sched_setaffinity(0, sizeof one, &one);

    char *text = NULL;
    size_t len = 0;
    json_doc *ev = NULL, *acc = NULL, *dom = NULL;
    struct policy *p = NULL;
    int rc = 1;
    if (read_file(a.event_file, &text, &len) != 0 || parse(a.event_file, text, len, &ev) != 0 ||
        parse("account", ACCOUNT_JSON, strlen(ACCOUNT_JSON), &acc) != 0 ||
        parse("domain", DOMAIN_JSON, strlen(DOMAIN_JSON), &dom) != 0)
        goto out;
    const json_value *vm = json_get(json_root(ev), "jobResult");
    if (!vm || vm->type != JSON_OBJECT) {
        fprintf(stderr, "policy_bench: %s has no jobResult object (use a 4.16+ job event)\n",
                a.event_file);
        goto out;
    }
    struct policy_config cfg = {
        .path = NULL,
        .ttl = 60,
        .max_instructions = 10000000,
        .timeout_ms = 5000,
        .max_memory_mb = 64,
        .max_records = 1000,
        .self_check = 1,
    };
    char err[4096];
    if (policy_new(&cfg, &p, err, sizeof err) != 0) {
        fprintf(stderr, "policy_bench: the default policy does not load: %s\n", err);
        goto out;
    }
    struct policy_input in = {
        .vm = vm,
        .account = json_root(acc),
        .domain = json_root(dom),
        .event = a.no_event ? NULL : json_root(ev),
        .trigger = "event",
        .topic = "cloudstack",
        .partition = 1,
        .offset = 4242,
    };
    rc = run(p, &in, &a) == 0 ? 0 : 1;
out:
    policy_free(p);
    json_doc_free(ev);
    json_doc_free(acc);
    json_doc_free(dom);
    free(text);
    return rc;
}
