/* pipeline.c -- event in, records out: decode, fetch the VM's current state, ask the policy, apply.
 * Must not: hold naming rules (the policy has them) or SQL (the store has it). */
#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloudstack.h"
#include "cs_event.h"
#include "kafka_source.h"
#include "logger.h"
#include "pdns_store.h"
#include "policy.h"

struct pipeline {
    const struct settings *s;
    struct pipeline_signals *sig;
    struct cloudstack *cs;
    struct policy *policy;
    struct pdns_store *store;
    unsigned failures; /* consecutive RETRY outcomes, for the backoff */
};

/* Where the event came from, for every log line about it. */
struct pos {
    const char *topic;
    int partition;
    long long offset;
};

static csp_status policy_cs_call(void *ud, const char *command, const struct cs_param *params,
                                 size_t n, struct cs_reply *r, char *err, size_t errlen)
{
    return cloudstack_call(ud, command, params, n, r, err, errlen);
}

static int load_policy(struct pipeline *p, struct policy **out, char *err, size_t errlen)
{
    const struct settings *s = p->s;
    struct policy_config cfg = {
        .path = s->policy_file,
        .ttl = s->dns_ttl,
        .common_zone = s->dns_common_zone,
        .add_to_common_zone = s->dns_add_to_common_zone,
        .max_instructions = s->policy_max_instructions,
        .timeout_ms = s->policy_timeout_ms,
        .max_memory_mb = s->policy_max_memory_mb,
        .max_records = s->max_records_per_vm,
        .cs_call = p->cs ? policy_cs_call : NULL,
        .cs_ud = p->cs,
    };
    return policy_new(&cfg, out, err, errlen);
}

int pipeline_new(const struct settings *s, struct pipeline_signals *sig, struct pipeline **out,
                 char *err, size_t errlen)
{
    struct pipeline *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return PIPELINE_EXIT_RUNTIME;
    }
    p->s = s;
    p->sig = sig;
    if (s->kafka_bootstrap && kafka_source_check_config(s, err, errlen) != 0) {
        pipeline_free(p);
        return PIPELINE_EXIT_CONFIG;
    }
    if (s->cs_endpoint && cloudstack_new(s, &p->cs, err, errlen) != 0) {
        pipeline_free(p);
        return PIPELINE_EXIT_CONFIG;
    }
    char why[2048];
    if (load_policy(p, &p->policy, why, sizeof why) != 0) {
        snprintf(err, errlen, "POLICY_FILE: %s does not load: %s",
                 s->policy_file ? s->policy_file : "the built-in policy", why);
        pipeline_free(p);
        return PIPELINE_EXIT_CONFIG;
    }
    log_msg(LOG_LVL_INFO, "policy", "loaded policy %s from %s", policy_name(p->policy),
            s->policy_file ? s->policy_file : "(built-in)");
    *out = p;
    return PIPELINE_EXIT_OK;
}

void pipeline_free(struct pipeline *p)
{
    if (!p)
        return;
    pdns_store_free(p->store);
    policy_free(p->policy);
    cloudstack_free(p->cs);
    free(p);
}

static long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int backoff_ms(struct pipeline *p)
{
    unsigned shift = p->failures > 16 ? 16 : p->failures;
    long ms = 250L << shift;
    return ms > p->s->retry_max_backoff_ms ? p->s->retry_max_backoff_ms : (int)ms;
}

int pipeline_connect_store(struct pipeline *p, char *err, size_t errlen)
{
    unsigned attempt = 0;
    while (!p->sig->stop) {
        csp_status st = pdns_store_open(p->s, &p->store, err, errlen);
        if (st == CSP_OK)
            return PIPELINE_EXIT_OK;
        if (st == CSP_PERMANENT)
            return PIPELINE_EXIT_CONFIG;
        unsigned shift = attempt < 6 ? attempt : 6;
        int wait = (int)(250u << shift);
        attempt++;
        log_msg(LOG_LVL_WARN, "store", "waiting for the database (retry in %d ms): %s", wait, err);
        for (int t = 0; t < wait && !p->sig->stop; t += 50)
            sleep_ms(50);
    }
    snprintf(err, errlen, "stopped while waiting for the database");
    return PIPELINE_EXIT_OK;
}

/* The VM's owner: decision 2 says jobResult/VM "account" (a name) + "domainid", or "projectid";
 * never the event's "account", which is whoever called the API. */
static csp_status fetch_owner(struct pipeline *p, const json_value *vm, struct cs_reply *acc_r,
                              const json_value **account, struct cs_reply *dom_r,
                              const json_value **domain, struct cs_reply *prj_r,
                              const json_value **project, char *err, size_t errlen)
{
    const char *acc = json_get_str(vm, "account"), *dom = json_get_str(vm, "domainid"),
               *prj = json_get_str(vm, "projectid");
    csp_status st = CSP_OK;
    if (dom && acc)
        st = cloudstack_get_account(p->cs, acc, dom, acc_r, account, err, errlen);
    if (st == CSP_OK && dom)
        st = cloudstack_get_domain(p->cs, dom, dom_r, domain, err, errlen);
    if (st == CSP_OK && prj)
        st = cloudstack_get_project(p->cs, prj, prj_r, project, err, errlen);
    return st;
}

static pipe_outcome sync_vm(struct pipeline *p, const struct cs_event *ev, const struct pos *at)
{
    char err[4096];
    struct cs_reply vm_r = {0}, acc_r = {0}, dom_r = {0}, prj_r = {0};
    const json_value *vm = ev->vm, *account = NULL, *domain = NULL, *project = NULL;
    struct dns_record *recs = NULL;
    size_t n = 0;
    pipe_outcome out = PIPE_RETRY;
    csp_status st;

    if (!vm) {
        if (!p->cs) {
            log_at(LOG_LVL_ERROR, "pipeline", at->topic, at->partition, at->offset,
                   "vm=%s: no CloudStack API configured (CS_ENDPOINT)", ev->vm_id);
            goto out;
        }
        st = cloudstack_get_vm(p->cs, ev->vm_id, &vm_r, &vm, err, sizeof err);
        if (st != CSP_OK) {
            log_at(LOG_LVL_WARN, "pipeline", at->topic, at->partition, at->offset,
                   "vm=%s event=%s: cannot read the VM, will retry: %s", ev->vm_id, ev->type, err);
            goto out;
        }
    }
    if (vm) {
        if (p->cs) {
            st = fetch_owner(p, vm, &acc_r, &account, &dom_r, &domain, &prj_r, &project, err,
                             sizeof err);
            if (st == CSP_TRANSIENT || (st == CSP_PERMANENT)) {
                log_at(LOG_LVL_WARN, "pipeline", at->topic, at->partition, at->offset,
                       "vm=%s event=%s: cannot read the VM's owner, will retry: %s", ev->vm_id,
                       ev->type, err);
                goto out;
            }
        }
        struct policy_input in = {
            .vm = vm,
            .account = account,
            .domain = domain,
            .project = project,
            .event = ev->root,
            .trigger = "event",
            .topic = at->topic,
            .partition = at->partition,
            .offset = at->offset,
        };
        /* The policy's own cs.call requests must end within the policy's time budget. */
        if (p->cs)
            cloudstack_set_deadline(p->cs, monotonic_ms() + p->s->policy_timeout_ms);
        policy_result pr = policy_records(p->policy, &in, &recs, &n, err, sizeof err);
        if (p->cs)
            cloudstack_set_deadline(p->cs, 0);
        if (pr == POLICY_TRANSIENT) {
            log_at(LOG_LVL_WARN, "policy", at->topic, at->partition, at->offset,
                   "vm=%s: a CloudStack call in the policy failed, will retry: %s", ev->vm_id, err);
            goto out;
        }
        if (pr == POLICY_FAILED) {
            int retry = p->s->policy_on_error == POLICY_ON_ERROR_RETRY;
            char *nl = strchr(err, '\n');
            if (nl)
                *nl = '\0';
            log_at(LOG_LVL_ERROR, "policy", at->topic, at->partition, at->offset,
                   "vm=%s event=%s: policy %s failed, %s: %s", ev->vm_id, ev->type,
                   policy_name(p->policy), retry ? "will retry (POLICY_ON_ERROR=retry)" : "skipped",
                   err);
            if (nl)
                log_lines(LOG_LVL_ERROR, "policy", nl + 1);
            out = retry ? PIPE_RETRY : PIPE_SKIP;
            goto out;
        }
        if (pr == POLICY_UNCHANGED) {
            log_at(LOG_LVL_INFO, "pipeline", at->topic, at->partition, at->offset,
                   "vm=%s event=%s: policy left the records unchanged", ev->vm_id, ev->type);
            out = PIPE_DONE;
            goto out;
        }
    }
    struct pdns_apply_stats stats = {0};
    st = pdns_store_apply_vm(p->store, ev->vm_id, recs, n, &stats, err, sizeof err);
    if (st == CSP_TRANSIENT) {
        log_at(LOG_LVL_WARN, "store", at->topic, at->partition, at->offset,
               "vm=%s: database change failed, will retry: %s", ev->vm_id, err);
        goto out;
    }
    if (st == CSP_PERMANENT) {
        log_at(LOG_LVL_ERROR, "store", at->topic, at->partition, at->offset,
               "vm=%s: database refused the change, skipped: %s", ev->vm_id, err);
        out = PIPE_SKIP;
        goto out;
    }
    log_at(LOG_LVL_INFO, "pipeline", at->topic, at->partition, at->offset,
           "vm=%s event=%s state=%s records=%zu added=%u removed=%u updated=%u unchanged=%u "
           "no_zone=%u foreign=%u",
           ev->vm_id, ev->type,
           vm ? (json_get_str(vm, "state") ? json_get_str(vm, "state") : "?") : "gone", n,
           stats.added, stats.removed, stats.updated, stats.unchanged, stats.no_zone,
           stats.foreign);
    out = PIPE_DONE;
out:
    free(recs);
    cs_reply_free(&vm_r);
    cs_reply_free(&acc_r);
    cs_reply_free(&dom_r);
    cs_reply_free(&prj_r);
    return out;
}

pipe_outcome pipeline_handle(struct pipeline *p, const char *topic, int partition, long long offset,
                             const char *payload, size_t len)
{
    struct pos at = {topic, partition, offset};
    struct cs_event ev;
    char err[512];
    pipe_outcome out;
    if (cs_event_decode(payload, len, &ev, err, sizeof err) != 0) {
        log_at(LOG_LVL_ERROR, "pipeline", topic, partition, offset,
               "malformed message skipped (%zu bytes): %s", len, err);
        out = PIPE_SKIP;
    } else if (ev.kind == CS_EVENT_IGNORED) {
        log_at(LOG_LVL_DEBUG, "pipeline", topic, partition, offset, "ignored %s: %s",
               ev.type[0] ? ev.type : "record", ev.why_ignored);
        out = PIPE_DONE;
    } else {
        out = sync_vm(p, &ev, &at);
    }
    cs_event_clear(&ev);
    return out;
}

static void maybe_reload(struct pipeline *p)
{
    if (!p->sig->reload)
        return;
    p->sig->reload = 0;
    struct policy *fresh;
    char err[2048];
    if (load_policy(p, &fresh, err, sizeof err) != 0) {
        log_msg(LOG_LVL_ERROR, "policy", "reload failed, keeping policy %s: %s",
                policy_name(p->policy), err);
        return;
    }
    policy_free(p->policy);
    p->policy = fresh;
    log_msg(LOG_LVL_INFO, "policy", "reloaded policy %s", policy_name(p->policy));
}

int pipeline_run(struct pipeline *p, char *err, size_t errlen)
{
    int rc = pipeline_connect_store(p, err, errlen);
    if (rc != PIPELINE_EXIT_OK || p->sig->stop)
        return rc;
    struct kafka_source *ks;
    if (kafka_source_new(p->s, &ks, err, errlen) != 0)
        return PIPELINE_EXIT_CONFIG;
    log_msg(LOG_LVL_INFO, "pipeline", "consuming %s as group %s", p->s->kafka_topic,
            p->s->kafka_group);
    rc = PIPELINE_EXIT_OK;
    while (!p->sig->stop) {
        maybe_reload(p);
        struct kafka_msg m;
        int got = kafka_source_poll(ks, 200, &m, err, errlen);
        if (got < 0) {
            rc = PIPELINE_EXIT_RUNTIME;
            break;
        }
        if (got == 0)
            continue;
        pipe_outcome out = pipeline_handle(p, m.topic, m.partition, m.offset, m.payload, m.len);
        if (out == PIPE_RETRY) {
            p->failures++;
            int wait = backoff_ms(p);
            log_at(LOG_LVL_WARN, "pipeline", m.topic, m.partition, m.offset,
                   "retrying in %d ms (attempt %u)", wait, p->failures);
            kafka_source_retry(ks, &m, wait);
        } else {
            p->failures = 0;
            kafka_source_done(ks, &m);
        }
    }
    log_msg(LOG_LVL_INFO, "pipeline", "stopping: committing offsets and leaving the group");
    kafka_source_close(ks);
    return rc;
}
