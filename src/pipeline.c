/* pipeline.c -- event in, records out: decode, fetch the VM's current state, ask the policy, apply.
 * Must not: hold naming rules (the policy has them) or SQL (the store has it). */
#include "pipeline.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloudstack.h"
#include "cs_event.h"
#include "http_server.h"
#include "kafka_source.h"
#include "logger.h"
#include "metrics.h"
#include "pdns_store.h"
#include "policy.h"
#include "resync.h"
#include "strmap.h"

struct pipeline {
    const struct settings *s;
    struct pipeline_signals *sig;
    struct cloudstack *cs;
    struct policy *policy;
    struct pdns_store *store;
    unsigned failures; /* consecutive RETRY outcomes, for the backoff */
    /* The resync in progress (run: interleaved with the events; one thread does both, so an
     * event and a resync never touch one VM at the same time), and its owner cache. */
    struct resync *resync;
    struct strmap *owner_cache;
    long long next_resync_ms; /* run: when the next resync starts; 0: never */
    long long last_step_ms;
    metrics *metrics;         /* always kept; served on METRICS_ADDR when that is set */
    struct http_server *http; /* NULL unless METRICS_ADDR is set */
};

static void owner_entry_free(void *v);

/* Where the event came from, for every log line about it. */
struct pos {
    const char *topic;
    int partition;
    long long offset;
};

/* Every CloudStack request, the pipeline's and the policy's alike. */
static void on_cs_request(void *ud, const char *command, int http_status, double secs)
{
    struct pipeline *p = ud;
    char status[16];
    snprintf(status, sizeof status, "%d", http_status);
    metrics_add(p->metrics, METRIC_CLOUDSTACK_REQUESTS_TOTAL, 1, command,
                http_status ? status : "error", NULL);
    metrics_observe(p->metrics, METRIC_CLOUDSTACK_REQUEST_DURATION, secs, command, NULL);
}

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
        .self_check = 1, /* a policy that would fail every event is refused up front */
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
    if (metrics_new(&p->metrics) != 0) {
        snprintf(err, errlen, "out of memory");
        pipeline_free(p);
        return PIPELINE_EXIT_RUNTIME;
    }
    if (s->kafka_bootstrap && kafka_source_check_config(s, err, errlen) != 0) {
        pipeline_free(p);
        return PIPELINE_EXIT_CONFIG;
    }
    if (s->cs_endpoint && cloudstack_new(s, &p->cs, err, errlen) != 0) {
        pipeline_free(p);
        return PIPELINE_EXIT_CONFIG;
    }
    if (p->cs)
        cloudstack_set_observer(p->cs, on_cs_request, p);
    if (p->cs && !s->cs_verify_tls)
        log_msg(LOG_LVL_WARN, "cloudstack",
                "CS_VERIFY_TLS=false: the CloudStack server's certificate is not checked, so "
                "anyone on the path can read the API key's requests and forge answers");
    char why[2048];
    if (load_policy(p, &p->policy, why, sizeof why) != 0) {
        snprintf(err, errlen, "POLICY_FILE: %s does not load: %s",
                 s->policy_file ? s->policy_file : "the built-in policy", why);
        pipeline_free(p);
        return PIPELINE_EXIT_CONFIG;
    }
    log_msg(LOG_LVL_INFO, "policy", "loaded policy %s from %s", policy_name(p->policy),
            s->policy_file ? s->policy_file : "(built-in)");
    metrics_set(p->metrics, METRIC_POLICY_LOADED, 1, NULL);
    *out = p;
    return PIPELINE_EXIT_OK;
}

void pipeline_free(struct pipeline *p)
{
    if (!p)
        return;
    http_server_stop(p->http);
    resync_free(p->resync);
    strmap_free(p->owner_cache, owner_entry_free);
    pdns_store_free(p->store);
    policy_free(p->policy);
    cloudstack_free(p->cs);
    metrics_free(p->metrics);
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
        metrics_set(p->metrics, METRIC_DB_REACHABLE, st == CSP_OK, NULL);
        if (st == CSP_OK)
            return PIPELINE_EXIT_OK;
        if (st == CSP_PERMANENT)
            return PIPELINE_EXIT_CONFIG;
        unsigned shift = attempt < 6 ? attempt : 6;
        int wait = (int)(250u << shift);
        attempt++;
        log_msg(LOG_LVL_WARN, "store", "waiting for the database (retry in %d ms): %s", wait, err);
        for (int t = 0; t < wait && !p->sig->stop; t += 50) {
            http_server_tick(p->http);
            sleep_ms(50);
        }
    }
    snprintf(err, errlen, "stopped while waiting for the database");
    return PIPELINE_EXIT_OK;
}

/* ---- the per-VM path, shared by events, resyncs and plans ---- */

/* An owner lookup kept for the length of one resync, so 20,000 VMs of 300 accounts cost 300
 * listAccounts calls, not 20,000. */
struct owner_entry {
    struct cs_reply r;
    const json_value *obj; /* NULL: CloudStack has no such owner */
};

static void owner_entry_free(void *v)
{
    struct owner_entry *e = v;
    if (e)
        cs_reply_free(&e->r);
    free(e);
}

enum owner_kind { OWNER_ACCOUNT = 'a', OWNER_DOMAIN = 'd', OWNER_PROJECT = 'p' };

static csp_status lookup_owner_now(struct pipeline *p, enum owner_kind kind, const char *a,
                                   const char *b, struct cs_reply *r, const json_value **obj,
                                   char *err, size_t errlen)
{
    csp_status st;
    if (kind == OWNER_ACCOUNT)
        st = cloudstack_get_account(p->cs, a, b, r, obj, err, errlen);
    else if (kind == OWNER_DOMAIN)
        st = cloudstack_get_domain(p->cs, a, r, obj, err, errlen);
    else
        st = cloudstack_get_project(p->cs, a, r, obj, err, errlen);
    /* Refused before anything was sent: the VM names its owner with a value no request can carry
     * (empty, not an id). Asking again would fail forever and hold the partition, so the policy
     * gets no such owner. Answers from CloudStack itself keep their classification. */
    if (st == CSP_PERMANENT && r->http_status == 0) {
        log_msg(LOG_LVL_WARN, "pipeline", "owner of kind '%c' not looked up: %s", (char)kind, err);
        *obj = NULL;
        st = CSP_OK;
    }
    return st;
}

/* With a cache the answer stays owned by the cache and r is left empty. */
static csp_status lookup_owner(struct pipeline *p, struct strmap *cache, enum owner_kind kind,
                               const char *a, const char *b, struct cs_reply *r,
                               const json_value **obj, char *err, size_t errlen)
{
    char key[400];
    void *hit;
    if (!cache)
        return lookup_owner_now(p, kind, a, b, r, obj, err, errlen);
    snprintf(key, sizeof key, "%c:%s/%s", (char)kind, a, b ? b : "");
    if (strmap_get(cache, key, &hit)) {
        *obj = ((struct owner_entry *)hit)->obj;
        return CSP_OK;
    }
    struct owner_entry *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory caching an owner");
        return CSP_TRANSIENT;
    }
    csp_status st = lookup_owner_now(p, kind, a, b, &e->r, &e->obj, err, errlen);
    if (st == CSP_OK && strmap_add(cache, key, e) < 0) {
        snprintf(err, errlen, "out of memory caching an owner");
        st = CSP_TRANSIENT;
    }
    if (st != CSP_OK) {
        owner_entry_free(e);
        return st;
    }
    *obj = e->obj;
    return CSP_OK;
}

/* The VM's owner: decision 2 says jobResult/VM "account" (a name) + "domainid", or "projectid";
 * never the event's "account", which is whoever called the API. */
static csp_status fetch_owner(struct pipeline *p, const json_value *vm, struct strmap *cache,
                              struct cs_reply *acc_r, const json_value **account,
                              struct cs_reply *dom_r, const json_value **domain,
                              struct cs_reply *prj_r, const json_value **project, char *err,
                              size_t errlen)
{
    const char *acc = json_get_str(vm, "account"), *dom = json_get_str(vm, "domainid"),
               *prj = json_get_str(vm, "projectid");
    csp_status st = CSP_OK;
    if (dom && acc)
        st = lookup_owner(p, cache, OWNER_ACCOUNT, acc, dom, acc_r, account, err, errlen);
    if (st == CSP_OK && dom)
        st = lookup_owner(p, cache, OWNER_DOMAIN, dom, NULL, dom_r, domain, err, errlen);
    if (st == CSP_OK && prj)
        st = lookup_owner(p, cache, OWNER_PROJECT, prj, NULL, prj_r, project, err, errlen);
    return st;
}

/* How one VM's reconciliation ended; each caller maps it to its own outcome. */
enum rec_result {
    REC_DONE,          /* applied, planned, or the policy left the records as they are */
    REC_POLICY_FAILED, /* the policy failed or returned something invalid */
    REC_CS_RETRY,      /* CloudStack failed transiently (owner lookups, the policy's cs.call) */
    REC_STORE_RETRY,   /* the database failed transiently */
    REC_STORE_REFUSED, /* the database refused the change */
};

/* Who asked, and what to do with the answer. */
struct reconcile_ctx {
    const struct cs_event *ev; /* the triggering event, or NULL (resync, plan) */
    const struct pos *at;      /* its Kafka position, or NULL */
    const char *trigger;       /* ctx.trigger for the policy: "event", "resync" or "plan" */
    struct strmap *owners;     /* resync: owner lookups cached for its length */
    int in_txn;                /* apply inside the caller's open transaction */
    struct resync_plan *plan;  /* write nothing: add the changes here */
    struct pdns_apply_stats *stats;
};

__attribute__((format(printf, 4, 5))) static void rlog(const struct reconcile_ctx *c, log_level lvl,
                                                       const char *mod, const char *fmt, ...)
{
    char msg[4096];
    if (!log_enabled(lvl))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->at)
        log_at(lvl, mod, c->at->topic, c->at->partition, c->at->offset, "%s", msg);
    else
        log_msg(lvl, mod, "%s", msg);
}

enum desire { DESIRE_RECORDS, DESIRE_UNCHANGED, DESIRE_POLICY_FAILED, DESIRE_RETRY };

/* The records vm should have: its owner, then the policy. err says why on failure; *stage
 * names what failed ("owner" or "policy"). */
static enum desire desire_vm(struct pipeline *p, const json_value *vm,
                             const struct reconcile_ctx *c, struct dns_record **recs, size_t *n,
                             const char **stage, char *err, size_t errlen)
{
    struct cs_reply acc_r = {0}, dom_r = {0}, prj_r = {0};
    const json_value *account = NULL, *domain = NULL, *project = NULL;
    enum desire out = DESIRE_RETRY;
    *recs = NULL;
    *n = 0;
    *stage = "owner";
    if (p->cs && fetch_owner(p, vm, c->owners, &acc_r, &account, &dom_r, &domain, &prj_r, &project,
                             err, errlen) != CSP_OK)
        goto out;
    struct policy_input in = {
        .vm = vm,
        .account = account,
        .domain = domain,
        .project = project,
        .event = c->ev ? c->ev->root : NULL,
        .trigger = c->trigger,
        .topic = c->at ? c->at->topic : NULL,
        .partition = c->at ? c->at->partition : 0,
        .offset = c->at ? c->at->offset : 0,
    };
    *stage = "policy";
    /* The policy's own cs.call requests must end within the policy's time budget. */
    if (p->cs)
        cloudstack_set_deadline(p->cs, monotonic_ms() + p->s->policy_timeout_ms);
    policy_result pr = policy_records(p->policy, &in, recs, n, err, errlen);
    if (p->cs)
        cloudstack_set_deadline(p->cs, 0);
    out = pr == POLICY_RECORDS     ? DESIRE_RECORDS
          : pr == POLICY_UNCHANGED ? DESIRE_UNCHANGED
          : pr == POLICY_FAILED    ? DESIRE_POLICY_FAILED
                                   : DESIRE_RETRY;
out:
    cs_reply_free(&acc_r);
    cs_reply_free(&dom_r);
    cs_reply_free(&prj_r);
    return out;
}

static csp_status plan_vm(struct pipeline *p, const char *vm_id, const struct dns_record *recs,
                          size_t n, const struct reconcile_ctx *c, struct pdns_apply_stats *stats,
                          char *err, size_t errlen)
{
    struct pdns_change *ch = NULL;
    size_t nch = 0;
    csp_status st = pdns_store_plan(p->store, vm_id, recs, n, &ch, &nch, stats, err, errlen);
    if (st == CSP_OK && resync_plan_add(c->plan, vm_id, ch, nch) != 0) {
        snprintf(err, errlen, "out of memory planning VM %s", vm_id);
        st = CSP_TRANSIENT;
    }
    free(ch);
    return st;
}

/* Makes vm_id's records match vm, its current state as CloudStack returns it (NULL: the VM no
 * longer exists, so it has no records). Events and resyncs both come through here. */
static enum rec_result reconcile_vm(struct pipeline *p, const char *vm_id, const json_value *vm,
                                    const struct reconcile_ctx *c)
{
    char err[4096], what[96];
    struct dns_record *recs = NULL;
    size_t n = 0;
    enum rec_result out = REC_DONE;
    const char *stage = "";
    int is_event = c->ev != NULL, retry_policy = 0;
    const char *later = is_event ? "will retry" : "skipped in this resync";
    struct pdns_apply_stats stats = {0};
    csp_status st;

    /* Event lines keep the form "vm=<id> event=<type>"; the others say who asked. */
    snprintf(what, sizeof what, is_event ? " event=%s" : " %s",
             is_event ? c->ev->type : c->trigger);
    if (vm) {
        enum desire d = desire_vm(p, vm, c, &recs, &n, &stage, err, sizeof err);
        if (d == DESIRE_RETRY && !strcmp(stage, "owner")) {
            rlog(c, LOG_LVL_WARN, "pipeline", "vm=%s%s: cannot read the VM's owner, %s: %s", vm_id,
                 what, later, err);
            out = REC_CS_RETRY;
            goto out;
        }
        if (d == DESIRE_RETRY) {
            rlog(c, LOG_LVL_WARN, "policy",
                 "vm=%s%s: a CloudStack call in the policy failed, %s: %s", vm_id,
                 is_event ? "" : what, later, err);
            out = REC_CS_RETRY;
            goto out;
        }
        if (d == DESIRE_POLICY_FAILED) {
            retry_policy = is_event && p->s->policy_on_error == POLICY_ON_ERROR_RETRY;
            char *nl = strchr(err, '\n');
            if (nl)
                *nl = '\0';
            rlog(c, LOG_LVL_ERROR, "policy", "vm=%s%s: policy %s failed, %s: %s", vm_id, what,
                 policy_name(p->policy),
                 retry_policy ? "will retry (POLICY_ON_ERROR=retry)" : "skipped", err);
            if (nl)
                log_lines(LOG_LVL_ERROR, "policy", nl + 1);
            metrics_add(p->metrics, METRIC_POLICY_ERRORS_TOTAL, 1, policy_last_failure(p->policy),
                        NULL);
            out = REC_POLICY_FAILED;
            goto out;
        }
        if (d == DESIRE_UNCHANGED) {
            rlog(c, is_event ? LOG_LVL_INFO : LOG_LVL_DEBUG, "pipeline",
                 "vm=%s%s: policy left the records unchanged", vm_id, what);
            goto out;
        }
    }
    long long t0 = monotonic_ms();
    if (c->plan)
        st = plan_vm(p, vm_id, recs, n, c, &stats, err, sizeof err);
    else if (c->in_txn)
        st = pdns_store_apply(p->store, vm_id, recs, n, &stats, err, sizeof err);
    else
        st = pdns_store_apply_vm(p->store, vm_id, recs, n, &stats, err, sizeof err);
    if (!c->plan) {
        metrics_set(p->metrics, METRIC_DB_REACHABLE, st != CSP_TRANSIENT, NULL);
        if (!c->in_txn)
            metrics_observe(p->metrics, METRIC_DB_TRANSACTION_DURATION,
                            (monotonic_ms() - t0) / 1000.0, NULL);
    }
    if (st == CSP_TRANSIENT) {
        rlog(c, LOG_LVL_WARN, "store", "vm=%s%s: database %s failed, %s: %s", vm_id,
             is_event ? "" : what, c->plan ? "read" : "change", later, err);
        out = REC_STORE_RETRY;
        goto out;
    }
    if (st == CSP_PERMANENT) {
        rlog(c, LOG_LVL_ERROR, "store", "vm=%s%s: database refused the change, skipped: %s", vm_id,
             is_event ? "" : what, err);
        out = REC_STORE_REFUSED;
        goto out;
    }
    int changed = stats.added || stats.removed || stats.updated;
    rlog(c, is_event || (changed && !c->plan) ? LOG_LVL_INFO : LOG_LVL_DEBUG, "pipeline",
         "vm=%s%s state=%s records=%zu added=%u removed=%u updated=%u unchanged=%u "
         "no_zone=%u foreign=%u",
         vm_id, what, vm ? (json_get_str(vm, "state") ? json_get_str(vm, "state") : "?") : "gone",
         n, stats.added, stats.removed, stats.updated, stats.unchanged, stats.no_zone,
         stats.foreign);
    if (!c->plan) {
        metrics_add(p->metrics, METRIC_RECORDS_CHANGED_TOTAL, stats.added, "added", NULL);
        metrics_add(p->metrics, METRIC_RECORDS_CHANGED_TOTAL, stats.removed, "removed", NULL);
        metrics_add(p->metrics, METRIC_RECORDS_CHANGED_TOTAL, stats.updated, "updated", NULL);
        metrics_add(p->metrics, METRIC_RECORDS_SKIPPED_TOTAL, stats.no_zone, "no_zone", NULL);
        metrics_add(p->metrics, METRIC_RECORDS_SKIPPED_TOTAL, stats.foreign, "foreign", NULL);
    }
    if (c->stats) {
        c->stats->added += stats.added;
        c->stats->removed += stats.removed;
        c->stats->updated += stats.updated;
        c->stats->unchanged += stats.unchanged;
        c->stats->no_zone += stats.no_zone;
        c->stats->foreign += stats.foreign;
        c->stats->zones_bumped += stats.zones_bumped;
    }
out:
    free(recs);
    return retry_policy ? REC_CS_RETRY : out;
}

static pipe_outcome sync_vm(struct pipeline *p, const struct cs_event *ev, const struct pos *at)
{
    char err[4096];
    struct cs_reply vm_r = {0};
    const json_value *vm = ev->vm;
    pipe_outcome out = PIPE_RETRY;

    if (!vm) {
        if (!p->cs) {
            log_at(LOG_LVL_ERROR, "pipeline", at->topic, at->partition, at->offset,
                   "vm=%s: no CloudStack API configured (CS_ENDPOINT)", ev->vm_id);
            return PIPE_RETRY;
        }
        csp_status st = cloudstack_get_vm(p->cs, ev->vm_id, &vm_r, &vm, err, sizeof err);
        if (st != CSP_OK) {
            log_at(LOG_LVL_WARN, "pipeline", at->topic, at->partition, at->offset,
                   "vm=%s event=%s: cannot read the VM, will retry: %s", ev->vm_id, ev->type, err);
            cs_reply_free(&vm_r);
            return PIPE_RETRY;
        }
    }
    struct reconcile_ctx c = {.ev = ev, .at = at, .trigger = "event"};
    switch (reconcile_vm(p, ev->vm_id, vm, &c)) {
    case REC_DONE:
        out = PIPE_DONE;
        break;
    case REC_POLICY_FAILED:
    case REC_STORE_REFUSED:
        out = PIPE_SKIP;
        break;
    case REC_CS_RETRY:
    case REC_STORE_RETRY:
        out = PIPE_RETRY;
        break;
    }
    /* A resync in progress must not apply an older listed state of this VM over this result. */
    resync_note_event(p->resync, ev->vm_id);
    cs_reply_free(&vm_r);
    return out;
}

pipe_outcome pipeline_handle(struct pipeline *p, const char *topic, int partition, long long offset,
                             const char *payload, size_t len)
{
    struct pos at = {topic, partition, offset};
    struct cs_event ev;
    char err[512];
    pipe_outcome out;
    const char *kind = "other", *outcome;
    if (cs_event_decode(payload, len, &ev, err, sizeof err) != 0) {
        log_at(LOG_LVL_ERROR, "pipeline", topic, partition, offset,
               "malformed message skipped (%zu bytes): %s", len, err);
        out = PIPE_SKIP;
        outcome = "bad_input";
    } else if (ev.kind == CS_EVENT_IGNORED) {
        log_at(LOG_LVL_DEBUG, "pipeline", topic, partition, offset, "ignored %s: %s",
               ev.type[0] ? ev.type : "record", ev.why_ignored);
        out = PIPE_DONE;
        outcome = "ignored";
    } else {
        out = sync_vm(p, &ev, &at);
        kind = ev.type;
        outcome = out == PIPE_DONE ? "applied" : out == PIPE_SKIP ? "skipped" : "retried";
        if (out == PIPE_DONE)
            metrics_set_to_now(p->metrics, METRIC_LAST_EVENT_APPLIED_TIMESTAMP, NULL);
    }
    /* Only the handled types become label values, so input cannot grow the series. */
    metrics_add(p->metrics, METRIC_EVENTS_TOTAL, 1, kind, outcome, NULL);
    cs_event_clear(&ev);
    return out;
}

static void maybe_reload(struct pipeline *p)
{
    if (!p->sig->reload)
        return;
    p->sig->reload = 0;
    struct policy *fresh;
    char err[4096];
    if (load_policy(p, &fresh, err, sizeof err) != 0) {
        char *nl = strchr(err, '\n'); /* a traceback follows on its own lines */
        if (nl)
            *nl = '\0';
        log_msg(LOG_LVL_ERROR, "policy", "reload of %s refused, policy %s keeps running: %s",
                p->s->policy_file ? p->s->policy_file : "the built-in policy",
                policy_name(p->policy), err);
        if (nl)
            log_lines(LOG_LVL_ERROR, "policy", nl + 1);
        return;
    }
    policy_free(p->policy);
    p->policy = fresh;
    log_msg(LOG_LVL_INFO, "policy", "reloaded policy %s from %s (self-check passed)",
            policy_name(p->policy), p->s->policy_file ? p->s->policy_file : "(built-in)");
}

/* ---- resync ---- */

/* While a resync runs, events come first, but after this long of events it gets a step. */
#define RESYNC_STEP_EVERY_MS 100
/* A resync that failed in a way that may pass (resync_retry_soon) is tried again this soon, or
 * at RESYNC_INTERVAL when that is shorter. */
#define RESYNC_RETRY_S 60

static enum resync_vm_outcome resync_vm(void *ud, const char *vm_id, const json_value *vm,
                                        int in_txn, struct resync_plan *plan,
                                        struct pdns_apply_stats *stats)
{
    struct pipeline *p = ud;
    struct reconcile_ctx c = {.trigger = "resync",
                              .owners = p->owner_cache,
                              .in_txn = in_txn,
                              .plan = plan,
                              .stats = stats};
    switch (reconcile_vm(p, vm_id, vm, &c)) {
    case REC_DONE:
        return RESYNC_VM_OK;
    case REC_POLICY_FAILED:
        return RESYNC_VM_SKIPPED;
    case REC_CS_RETRY:
        return RESYNC_VM_RETRY;
    case REC_STORE_RETRY:
        return RESYNC_VM_STORE_RETRY;
    case REC_STORE_REFUSED:
        break;
    }
    return RESYNC_VM_STORE_FAILED;
}

static int resync_begin(struct pipeline *p, int dry_run, int force, int progress, char *err,
                        size_t errlen)
{
    struct resync_config cfg = {
        .page_size = (unsigned)p->s->resync_page_size,
        .max_delete_percent = p->s->resync_max_delete_percent,
        .force = force || p->s->resync_force,
        .dry_run = dry_run,
        .progress = progress,
    };
    if (strmap_new(&p->owner_cache) != 0) {
        snprintf(err, errlen, "resync: out of memory");
        return -1;
    }
    if (resync_new(&cfg, p->cs, p->store, resync_vm, p, &p->resync, err, errlen) != 0) {
        strmap_free(p->owner_cache, owner_entry_free);
        p->owner_cache = NULL;
        return -1;
    }
    return 0;
}

static void resync_end(struct pipeline *p)
{
    resync_free(p->resync);
    p->resync = NULL;
    strmap_free(p->owner_cache, owner_entry_free);
    p->owner_cache = NULL;
}

/* run: starts the resync when it is due and gives it its steps between events. */
static void resync_tick(struct pipeline *p, int had_event)
{
    long long now = monotonic_ms();
    char err[512];
    if (!p->resync) {
        if (!p->next_resync_ms || now < p->next_resync_ms)
            return;
        if (resync_begin(p, 0, 0, 0, err, sizeof err) != 0) {
            log_msg(LOG_LVL_WARN, "resync", "cannot start a resync, next try in %d s: %s",
                    RESYNC_RETRY_S, err);
            p->next_resync_ms = now + RESYNC_RETRY_S * 1000LL;
        }
        p->last_step_ms = now;
        return;
    }
    /* Events that queued up during a step all go first, within RESYNC_STEP_EVERY_MS. */
    if (had_event && now - p->last_step_ms < RESYNC_STEP_EVERY_MS)
        return;
    int more = resync_step(p->resync);
    p->last_step_ms = monotonic_ms();
    if (more)
        return;
    if (resync_result(p->resync, NULL, 0) == RESYNC_CONVERGED)
        metrics_set_to_now(p->metrics, METRIC_LAST_RESYNC_SUCCESS_TIMESTAMP, NULL);
    long long wait_s = p->s->resync_interval_s;
    /* A failing service is worth another try soon; a guard trip, a listing that changed while
     * it was read (a busy cloud) or a VM the policy cannot name are not: at most every
     * RESYNC_INTERVAL, so a large cloud is not listed again and again. */
    if (resync_retry_soon(p->resync) && wait_s > RESYNC_RETRY_S)
        wait_s = RESYNC_RETRY_S;
    p->next_resync_ms = monotonic_ms() + wait_s * 1000;
    log_msg(LOG_LVL_DEBUG, "resync", "next resync in %lld s", wait_s);
    resync_end(p);
}

int pipeline_resync(struct pipeline *p, const struct pipeline_resync_opts *o, char *err,
                    size_t errlen)
{
    char why[512];
    textbuf out = TEXTBUF_INIT;
    if (!p->cs) {
        snprintf(err, errlen, "CS_ENDPOINT: is required but not set");
        return PIPELINE_EXIT_CONFIG;
    }
    csp_status st = o->dry_run ? pdns_store_open_readonly(p->s, &p->store, err, errlen)
                               : pdns_store_open(p->s, &p->store, err, errlen);
    if (st != CSP_OK)
        return st == CSP_PERMANENT ? PIPELINE_EXIT_CONFIG : PIPELINE_EXIT_RUNTIME;
    if (resync_begin(p, o->dry_run, o->force, o->progress, err, errlen) != 0)
        return PIPELINE_EXIT_RUNTIME;
    resync_run(p->resync, &p->sig->stop);
    enum resync_result res = resync_result(p->resync, why, sizeof why);
    int rc = resync_report(p->resync, o->json, &out);
    resync_end(p);
    if (rc != 0) {
        textbuf_free(&out);
        snprintf(err, errlen, "out of memory writing the report");
        return PIPELINE_EXIT_RUNTIME;
    }
    fputs(textbuf_str(&out), o->out);
    fflush(o->out);
    textbuf_free(&out);
    if (res == RESYNC_CONVERGED)
        return PIPELINE_EXIT_OK;
    snprintf(err, errlen, "resync %s: %s",
             res == RESYNC_GUARDED ? "refused to remove records" : "did not converge", why);
    return res == RESYNC_GUARDED ? PIPELINE_EXIT_GUARDED : PIPELINE_EXIT_RUNTIME;
}

/* ---- plan ---- */

static int write_records(textbuf *out, const struct dns_record *recs, size_t n, int json)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const char *type = dns_rr_type_name(recs[i].type);
        if (!json) {
            rc |= textbuf_printf(out, "  %s %s %s ttl=%d\n", recs[i].name, type, recs[i].content,
                                 recs[i].ttl);
            continue;
        }
        rc |= textbuf_puts(out, i ? ",{\"name\":" : "{\"name\":");
        rc |= json_write_string(out, recs[i].name, strlen(recs[i].name));
        rc |= textbuf_printf(out, ",\"type\":\"%s\",\"content\":", type);
        rc |= json_write_string(out, recs[i].content, strlen(recs[i].content));
        rc |= textbuf_printf(out, ",\"ttl\":%d}", recs[i].ttl);
    }
    return rc;
}

/* What the daemon would do with one event, against the database when one is configured. */
static int plan_changes(struct pipeline *p, const char *vm_id, const struct dns_record *recs,
                        size_t n, struct resync_plan **plan, struct pdns_apply_stats *stats,
                        char *err, size_t errlen)
{
    struct pdns_change *ch = NULL;
    size_t nch = 0;
    csp_status st = pdns_store_open_readonly(p->s, &p->store, err, errlen);
    if (st == CSP_OK)
        st = pdns_store_plan(p->store, vm_id, recs, n, &ch, &nch, stats, err, errlen);
    if (st == CSP_OK &&
        (resync_plan_new(plan) != 0 || resync_plan_add(*plan, vm_id, ch, nch) != 0)) {
        snprintf(err, errlen, "out of memory");
        st = CSP_TRANSIENT;
    }
    free(ch);
    if (st == CSP_PERMANENT)
        return PIPELINE_EXIT_CONFIG;
    return st == CSP_OK ? PIPELINE_EXIT_OK : PIPELINE_EXIT_RUNTIME;
}

static int write_plan(textbuf *tb, const struct cs_event *ev, const json_value *vm, enum desire d,
                      const struct dns_record *recs, size_t n, const struct resync_plan *plan,
                      int json)
{
    const char *state = vm ? json_get_str(vm, "state") : NULL;
    int rc = 0;
    if (json) {
        rc |= textbuf_puts(tb, "{\"event\":{\"type\":");
        rc |= json_write_string(tb, ev->type, strlen(ev->type));
        rc |= textbuf_puts(tb, ",\"vm\":");
        rc |= json_write_string(tb, ev->vm_id, strlen(ev->vm_id));
        rc |= textbuf_printf(tb, ",\"job\":%s},", ev->is_job ? "true" : "false");
        rc |= textbuf_printf(tb, "\"vm\":{\"exists\":%s,\"state\":", vm ? "true" : "false");
        rc |= state ? json_write_string(tb, state, strlen(state)) : textbuf_puts(tb, "null");
        rc |= textbuf_printf(tb, "},\"policy\":\"%s\",\"records\":[",
                             d == DESIRE_UNCHANGED ? "unchanged" : "records");
        rc |= write_records(tb, recs, n, 1);
        rc |= textbuf_puts(tb, "],\"changes\":");
        if (plan) {
            rc |= textbuf_putc(tb, '{');
            rc |= resync_plan_write(plan, 1, tb);
            rc |= textbuf_putc(tb, '}');
        } else {
            rc |= textbuf_puts(tb, "null");
        }
        return rc | textbuf_puts(tb, "}\n");
    }
    rc |= textbuf_printf(tb, "event %s vm=%s (%s)\n", ev->type, ev->vm_id,
                         ev->is_job ? "async job" : "action event");
    if (!vm)
        rc |= textbuf_puts(tb, "vm gone: CloudStack no longer lists it, so it has no records\n");
    else
        rc |= textbuf_printf(tb, "vm state=%s\n", state ? state : "?");
    if (d == DESIRE_UNCHANGED)
        rc |= textbuf_puts(tb, "policy: leave this VM's records as they are (nothing changes)\n");
    else
        rc |= textbuf_printf(tb, "records (%zu):\n", n);
    rc |= write_records(tb, recs, n, 0);
    if (plan) {
        rc |= textbuf_puts(tb, "changes against the database:\n");
        rc |= resync_plan_write(plan, 0, tb);
    } else if (d != DESIRE_UNCHANGED) {
        rc |= textbuf_puts(tb, "changes against the database: not computed (MYSQL_PDNS_HOST is "
                               "not set)\n");
    }
    return rc;
}

int pipeline_plan_event(struct pipeline *p, const char *payload, size_t len, int json, FILE *out,
                        char *err, size_t errlen)
{
    struct cs_event ev;
    struct cs_reply vm_r = {0};
    const json_value *vm;
    struct dns_record *recs = NULL;
    struct resync_plan *plan = NULL;
    struct pdns_apply_stats stats = {0};
    textbuf tb = TEXTBUF_INIT;
    enum desire d = DESIRE_RECORDS;
    size_t n = 0;
    char why[4096];
    int rc = PIPELINE_EXIT_RUNTIME;

    if (cs_event_decode(payload, len, &ev, why, sizeof why) != 0) {
        snprintf(err, errlen, "the event is malformed, the daemon would skip it: %s", why);
        cs_event_clear(&ev);
        return PIPELINE_EXIT_RUNTIME;
    }
    if (ev.kind == CS_EVENT_IGNORED) {
        if (json) {
            textbuf_puts(&tb, "{\"event\":{\"type\":");
            json_write_string(&tb, ev.type, strlen(ev.type));
            textbuf_puts(&tb, "},\"ignored\":");
            json_write_string(&tb, ev.why_ignored, strlen(ev.why_ignored));
            textbuf_puts(&tb, "}\n");
        } else {
            textbuf_printf(&tb, "event %s ignored: %s\n", ev.type[0] ? ev.type : "(none)",
                           ev.why_ignored);
        }
        rc = PIPELINE_EXIT_OK;
        goto print;
    }
    vm = ev.vm;
    if (!vm && !p->cs) {
        snprintf(err, errlen, "CS_ENDPOINT: is required to read the VM of this event");
        rc = PIPELINE_EXIT_CONFIG;
        goto out;
    }
    if (!vm && cloudstack_get_vm(p->cs, ev.vm_id, &vm_r, &vm, why, sizeof why) != CSP_OK) {
        snprintf(err, errlen, "vm=%s: cannot read the VM: %s", ev.vm_id, why);
        goto out;
    }
    if (vm) {
        struct reconcile_ctx c = {.ev = &ev, .trigger = "plan"};
        const char *stage;
        d = desire_vm(p, vm, &c, &recs, &n, &stage, why, sizeof why);
        if (d == DESIRE_RETRY || d == DESIRE_POLICY_FAILED) {
            snprintf(err, errlen, "vm=%s: %s: %s", ev.vm_id,
                     d == DESIRE_POLICY_FAILED ? "the policy failed"
                     : !strcmp(stage, "owner") ? "cannot read the VM's owner"
                                               : "a CloudStack call in the policy failed",
                     why);
            goto out;
        }
    }
    if (p->s->mysql_host && d == DESIRE_RECORDS) {
        rc = plan_changes(p, ev.vm_id, recs, n, &plan, &stats, err, errlen);
        if (rc != PIPELINE_EXIT_OK)
            goto out;
    }
    rc =
        write_plan(&tb, &ev, vm, d, recs, n, plan, json) ? PIPELINE_EXIT_RUNTIME : PIPELINE_EXIT_OK;
    if (rc != PIPELINE_EXIT_OK)
        snprintf(err, errlen, "out of memory writing the plan");
print:
    if (rc == PIPELINE_EXIT_OK) {
        fputs(textbuf_str(&tb), out);
        fflush(out);
    }
out:
    textbuf_free(&tb);
    resync_plan_free(plan);
    free(recs);
    cs_reply_free(&vm_r);
    cs_event_clear(&ev);
    return rc;
}

int pipeline_run(struct pipeline *p, char *err, size_t errlen)
{
    if (p->s->metrics_addr) {
        struct http_server_config hc = {
            .addr = p->s->metrics_addr,
            .metrics = p->metrics,
            .stale_after_s = 60,
        };
        char why[512];
        if (http_server_start(&hc, &p->http, why, sizeof why) != 0) {
            snprintf(err, errlen, "METRICS_ADDR: %s", why);
            return PIPELINE_EXIT_CONFIG;
        }
    }
    int rc = pipeline_connect_store(p, err, errlen);
    if (rc != PIPELINE_EXIT_OK || p->sig->stop)
        return rc;
    struct kafka_source *ks;
    if (kafka_source_new(p->s, p->http ? p->metrics : NULL, &ks, err, errlen) != 0)
        return PIPELINE_EXIT_CONFIG;
    log_msg(LOG_LVL_INFO, "pipeline", "consuming %s as group %s", p->s->kafka_topic,
            p->s->kafka_group);
    rc = PIPELINE_EXIT_OK;
    /* The start-up resync heals whatever changed while cs-pdns was not running. */
    p->next_resync_ms = p->s->resync_interval_s > 0 ? monotonic_ms() : 0;
    while (!p->sig->stop) {
        maybe_reload(p);
        http_server_tick(p->http);
        metrics_set(p->metrics, METRIC_KAFKA_PARTITIONS_ASSIGNED, kafka_source_assigned(ks), NULL);
        struct kafka_msg m;
        int got = kafka_source_poll(ks, p->resync ? 0 : 200, &m, err, errlen);
        if (got < 0) {
            rc = PIPELINE_EXIT_RUNTIME;
            break;
        }
        if (got == 0) {
            resync_tick(p, 0);
            continue;
        }
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
        metrics_set(p->metrics, METRIC_CONSECUTIVE_FAILURES, p->failures, NULL);
        resync_tick(p, 1);
    }
    if (p->resync) {
        log_msg(LOG_LVL_INFO, "resync",
                "resync interrupted by the shutdown; nothing half-done "
                "is left (each batch is one transaction)");
        resync_end(p);
    }
    log_msg(LOG_LVL_INFO, "pipeline", "stopping: committing offsets and leaving the group");
    kafka_source_close(ks);
    return rc;
}
