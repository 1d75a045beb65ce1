/* pipeline.c -- event in, records out: decode, fetch the VM's current state, ask the policy, apply.
 * Must not: hold naming rules (the policy has them) or SQL (the store has it). */
#include "pipeline.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "cloudstack.h"
#include "cs_event.h"
#include "http_server.h"
#include "kafka_source.h"
#include "logger.h"
#include "metrics.h"
#include "pdns_api.h"
#include "pdns_store.h"
#include "policy.h"
#include "resync.h"
#include "store_writer.h"
#include "strmap.h"

/* Most owner lookups the events' cache keeps (about 4 KB each). */
#define OWNER_CACHE_MAX 10000

/* Consecutive transient failures of one partition's message in hand, for its backoff. */
struct part_failures {
    int32_t partition;
    unsigned failures;
};

struct owner_cache;
struct batch;

struct pipeline {
    const struct settings *s;
    struct pipeline_signals *sig;
    struct cloudstack *cs;
    struct policy *policy;
    struct pdns_store *store;
    struct pdns_api *api; /* purges PowerDNS's caches after each commit; NULL: PDNS_API_URL unset */
    int resync_wrote;     /* the resync step in progress wrote through resync_vm */
    /* Per partition, so a partition that keeps failing backs off to RETRY_MAX_BACKOFF_MS while
     * the others flow; a partition's counter starts again once one of its batches went through. */
    struct part_failures *failures;
    size_t nfailures;
    /* Owner lookups of events, kept OWNER_CACHE_TTL; NULL when that is 0. */
    struct owner_cache *event_owners;
    /* The resync in progress (run: interleaved with the events; one thread does both, so an
     * event and a resync never touch one VM at the same time), and its owner cache. */
    struct resync *resync;
    struct owner_cache *owner_cache;
    long long next_resync_ms; /* run: when the next resync starts; 0: never */
    long long last_step_ms;
    /* run: the consumer, for the resync's partition scope, and the assignment generation the
     * resync in progress was scoped to. */
    struct kafka_source *ks;
    unsigned resync_generation;
    /* run: while one batch's transaction runs on the writer thread (writing), the next is
     * gathered and named (filling); the two swap when the write completed. */
    struct batch *batches[2];
    struct batch *filling;
    struct batch *writing; /* NULL: no transaction in flight */
    struct store_writer *writer;
    struct store_write write;
    long long last_db_ms;     /* run: when the database last answered or failed */
    metrics *metrics;         /* always kept; served on METRICS_ADDR when that is set */
    struct http_server *http; /* NULL unless METRICS_ADDR is set */
};

static void owner_cache_free(struct owner_cache *c);
static int owner_cache_new(long long ttl_ms, size_t max, struct owner_cache **out);
static void batch_free(struct batch *b);
static void count_records(struct pipeline *p, const struct pdns_apply_stats *stats, int all);

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
    struct pdns_apply_stats none = {0};
    count_records(p, &none, 1);
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
    if (pdns_api_new(s, &p->api, err, errlen) != CSP_OK) {
        pipeline_free(p);
        return PIPELINE_EXIT_CONFIG;
    }
    if (s->owner_cache_ttl_s > 0 &&
        owner_cache_new(s->owner_cache_ttl_s * 1000LL, OWNER_CACHE_MAX, &p->event_owners) != 0) {
        snprintf(err, errlen, "out of memory");
        pipeline_free(p);
        return PIPELINE_EXIT_RUNTIME;
    }
    *out = p;
    return PIPELINE_EXIT_OK;
}

void pipeline_free(struct pipeline *p)
{
    if (!p)
        return;
    http_server_stop(p->http);
    resync_free(p->resync);
    owner_cache_free(p->owner_cache);
    owner_cache_free(p->event_owners);
    store_writer_free(p->writer);
    batch_free(p->batches[0]);
    batch_free(p->batches[1]);
    free(p->failures);
    pdns_store_free(p->store);
    pdns_api_free(p->api);
    policy_free(p->policy);
    cloudstack_free(p->cs);
    metrics_free(p->metrics);
    free(p);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int backoff_ms(const struct pipeline *p, unsigned failures)
{
    unsigned shift = failures > 16 ? 16 : failures;
    long ms = 250L << shift;
    return ms > p->s->retry_max_backoff_ms ? p->s->retry_max_backoff_ms : (int)ms;
}

/* The partition's failure counter; NULL only when memory ran out. */
static struct part_failures *part_failures(struct pipeline *p, int32_t partition)
{
    for (size_t i = 0; i < p->nfailures; i++)
        if (p->failures[i].partition == partition)
            return &p->failures[i];
    struct part_failures *grown = realloc(p->failures, (p->nfailures + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    p->failures = grown;
    grown[p->nfailures] = (struct part_failures){partition, 0};
    return &grown[p->nfailures++];
}

static void publish_failures(struct pipeline *p)
{
    unsigned most = 0;
    for (size_t i = 0; i < p->nfailures; i++)
        most = p->failures[i].failures > most ? p->failures[i].failures : most;
    metrics_set(p->metrics, METRIC_CONSECUTIVE_FAILURES, most, NULL);
}

/* A zone with more changed names than this in one commit has only its apex flushed. PowerDNS
 * 4.7 flushes everything below the name it is asked to flush, so there the per-name requests (a
 * round trip each) add nothing, and they held a backlog's 250-VM batches for 200 ms each (1,100
 * instead of 7,800 events/s). Older servers that flush the exact name only serve such a commit's
 * other names from their caches until the entries expire; a commit of a few VMs still gets every
 * name flushed. */
#define PURGE_NAMES_PER_ZONE 16

/* The names one commit's purge flushes, copied out of the store, whose list lasts only until
 * the next transaction begins: one block, names[i] pointing into it. */
struct purge_list {
    const char **names;
    size_t n;
};

static int purge_whole_zone(const struct pdns_changed_zone *z)
{
    return z->apex && z->n > PURGE_NAMES_PER_ZONE;
}

/* Copies name to *at as l's next name. */
static void purge_add(struct purge_list *l, char **at, const char *name)
{
    size_t len = strlen(name) + 1;
    memcpy(*at, name, len);
    l->names[l->n++] = *at;
    *at += len;
}

/* After a commit: which names PowerDNS's caches must forget so they answer at once. The apexes
 * go first: on a server that flushes below a name they cover the whole commit. */
static void purge_collect(struct pipeline *p, struct purge_list *l)
{
    const struct pdns_changed_zone *zones;
    size_t nz = p->api ? pdns_store_changed_zones(p->store, &zones) : 0, n = 0, bytes = 0;
    l->names = NULL;
    l->n = 0;
    for (size_t z = 0; z < nz; z++) {
        int whole = purge_whole_zone(&zones[z]);
        if (zones[z].apex) {
            n++;
            bytes += strlen(zones[z].apex) + 1;
        }
        if (whole)
            log_msg(LOG_LVL_DEBUG, "pdns_api", "zone=%s names=%zu: flushing the apex only",
                    zones[z].apex, zones[z].n);
        for (size_t i = 0; i < zones[z].n && !whole; i++, n++)
            bytes += strlen(zones[z].names[i]) + 1;
    }
    if (n == 0)
        return;
    l->names = malloc(n * sizeof *l->names + bytes);
    if (!l->names) {
        log_msg(LOG_LVL_WARN, "pdns_api",
                "out of memory listing %zu names to purge; they answer with the new records once "
                "their cache entries expire",
                n);
        return;
    }
    char *at = (char *)(l->names + n);
    for (size_t z = 0; z < nz; z++)
        if (zones[z].apex)
            purge_add(l, &at, zones[z].apex);
    for (size_t z = 0; z < nz; z++)
        for (size_t i = 0; i < zones[z].n && !purge_whole_zone(&zones[z]); i++)
            purge_add(l, &at, zones[z].names[i]);
}

/* Flushes l's names and frees l. The records are committed either way, so a failed purge only
 * delays them until the cache entries expire: it is logged, never retried. */
static void purge_send(struct pipeline *p, struct purge_list *l)
{
    char err[1024];
    size_t purged = 0, n = l->n;
    csp_status st = n ? pdns_api_purge(p->api, l->names, n, &purged, err, sizeof err) : CSP_OK;
    free(l->names);
    l->names = NULL;
    l->n = 0;
    if (n == 0)
        return;
    metrics_add(p->metrics, METRIC_PDNS_CACHE_PURGES_TOTAL, (double)purged, "ok", NULL);
    metrics_add(p->metrics, METRIC_PDNS_CACHE_PURGES_TOTAL, (double)(n - purged), "failed", NULL);
    if (st != CSP_OK)
        log_msg(LOG_LVL_WARN, "pdns_api",
                "PowerDNS cache purge failed for %zu of %zu names; they answer with the new "
                "records once their cache entries expire (check PDNS_API_URL and "
                "PDNS_API_KEY): %s",
                n - purged, n, err);
}

/* After a commit: PowerDNS's caches forget the names it changed, so they answer at once. */
static void purge_changed(struct pipeline *p)
{
    struct purge_list l;
    purge_collect(p, &l);
    purge_send(p, &l);
}

/* Every database operation's outcome: what /readyz and cspdns_db_reachable report, and what
 * keeps the idle check (check_db_idle) quiet while the database is in use. */
static void note_db(struct pipeline *p, int reachable)
{
    metrics_set(p->metrics, METRIC_DB_REACHABLE, reachable, NULL);
    p->last_db_ms = clock_ms();
}

int pipeline_connect_store(struct pipeline *p, char *err, size_t errlen)
{
    unsigned attempt = 0;
    while (!p->sig->stop) {
        csp_status st = pdns_store_open(p->s, &p->store, err, errlen);
        note_db(p, st == CSP_OK);
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

/* Owner lookups kept for a while, so 20,000 VMs of 300 accounts cost 300 listAccounts calls,
 * not 20,000: for OWNER_CACHE_TTL (events), or for the length of one resync. */
struct owner_entry {
    struct cs_reply r;
    const json_value *obj; /* NULL: CloudStack has no such owner */
    long long fetched_ms;
};

struct owner_cache {
    struct strmap *map;
    long long ttl_ms; /* 0: kept as long as the cache */
    size_t max;       /* 0: unbounded */
};

static void owner_entry_free(void *v)
{
    struct owner_entry *e = v;
    if (e)
        cs_reply_free(&e->r);
    free(e);
}

static int owner_cache_new(long long ttl_ms, size_t max, struct owner_cache **out)
{
    struct owner_cache *c = calloc(1, sizeof *c);
    if (!c || strmap_new(&c->map) != 0) {
        free(c);
        return -1;
    }
    c->ttl_ms = ttl_ms;
    c->max = max;
    *out = c;
    return 0;
}

static void owner_cache_free(struct owner_cache *c)
{
    if (!c)
        return;
    strmap_free(c->map, owner_entry_free);
    free(c);
}

/* Called before a VM's (up to three) lookups, never between them, so the answers the VM holds
 * stay valid. Emptying the whole cache is crude but bounded, and a full cache is rare: it holds
 * the owners of the VMs seen within one OWNER_CACHE_TTL. */
static void owner_cache_make_room(struct owner_cache *c)
{
    if (c && c->max && strmap_count(c->map) + 3 > c->max) {
        log_msg(LOG_LVL_DEBUG, "pipeline", "owner cache full (%zu entries): emptied",
                strmap_count(c->map));
        strmap_clear(c->map, owner_entry_free);
    }
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

/* With a cache the answer usually stays owned by the cache and r is left empty; when it cannot
 * be kept (no memory, a key too long to be exact) r owns it. An expired entry is asked again,
 * never served stale: a failing CloudStack fails the event, which is retried. */
static csp_status lookup_owner(struct pipeline *p, struct owner_cache *cache, enum owner_kind kind,
                               const char *a, const char *b, struct cs_reply *r,
                               const json_value **obj, char *err, size_t errlen)
{
    char key[400];
    void *hit;
    struct owner_entry *e = NULL, fresh = {0};
    long long now = clock_ms();
    if (!cache ||
        snprintf(key, sizeof key, "%c:%s/%s", (char)kind, a, b ? b : "") >= (int)sizeof key)
        return lookup_owner_now(p, kind, a, b, r, obj, err, errlen);
    if (strmap_get(cache->map, key, &hit)) {
        e = hit;
        if (!cache->ttl_ms || now - e->fetched_ms < cache->ttl_ms) {
            *obj = e->obj;
            return CSP_OK;
        }
    }
    csp_status st = lookup_owner_now(p, kind, a, b, &fresh.r, &fresh.obj, err, errlen);
    if (st != CSP_OK) {
        cs_reply_free(&fresh.r);
        return st;
    }
    fresh.fetched_ms = now;
    if (e) {
        cs_reply_free(&e->r);
        *e = fresh;
        *obj = e->obj;
        return CSP_OK;
    }
    e = malloc(sizeof *e);
    if (!e || strmap_add(cache->map, key, e) < 0) {
        free(e);
        *r = fresh.r;
        *obj = fresh.obj;
        return CSP_OK;
    }
    *e = fresh;
    *obj = e->obj;
    return CSP_OK;
}

/* The VM's owner: decision 2 says jobResult/VM "account" (a name) + "domainid", or "projectid";
 * never the event's "account", which is whoever called the API. */
static csp_status fetch_owner(struct pipeline *p, const json_value *vm, struct owner_cache *cache,
                              struct cs_reply *acc_r, const json_value **account,
                              struct cs_reply *dom_r, const json_value **domain,
                              struct cs_reply *prj_r, const json_value **project, char *err,
                              size_t errlen)
{
    const char *acc = json_get_str(vm, "account"), *dom = json_get_str(vm, "domainid"),
               *prj = json_get_str(vm, "projectid");
    csp_status st = CSP_OK;
    owner_cache_make_room(cache);
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
    const struct cs_event *ev;  /* the triggering event, or NULL (resync, plan) */
    const struct pos *at;       /* its Kafka position, or NULL */
    const char *trigger;        /* ctx.trigger for the policy: "event", "resync" or "plan" */
    struct owner_cache *owners; /* owner lookups cached (events, resync), or NULL */
    int in_txn;                 /* apply inside the caller's open transaction */
    struct resync_plan *plan;   /* write nothing: add the changes here */
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
        cloudstack_set_deadline(p->cs, clock_ms() + p->s->policy_timeout_ms);
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

/* " event=VM.CREATE" for an event's lines, " resync"/" plan" for the others. */
static void who_asked(const struct reconcile_ctx *c, char *what, size_t len)
{
    snprintf(what, len, c->ev ? " event=%s" : " %s", c->ev ? c->ev->type : c->trigger);
}

/* The first half of reconciling a VM: the records vm (NULL: gone) should have. REC_DONE with
 * *apply set when recs[0..n) are to be written (possibly none: the VM has no records), unset when
 * the policy left the records as they are. Failures are logged here. */
static enum rec_result want_vm(struct pipeline *p, const char *vm_id, const json_value *vm,
                               const struct reconcile_ctx *c, struct dns_record **recs, size_t *n,
                               int *apply)
{
    char err[4096], what[96];
    const char *stage = "";
    int is_event = c->ev != NULL;
    const char *later = is_event ? "will retry" : "skipped in this resync";

    *recs = NULL;
    *n = 0;
    *apply = 1;
    if (!vm)
        return REC_DONE;
    who_asked(c, what, sizeof what);
    enum desire d = desire_vm(p, vm, c, recs, n, &stage, err, sizeof err);
    if (d == DESIRE_RETRY && !strcmp(stage, "owner")) {
        rlog(c, LOG_LVL_WARN, "pipeline", "vm=%s%s: cannot read the VM's owner, %s: %s", vm_id,
             what, later, err);
        return REC_CS_RETRY;
    }
    if (d == DESIRE_RETRY) {
        rlog(c, LOG_LVL_WARN, "policy", "vm=%s%s: a CloudStack call in the policy failed, %s: %s",
             vm_id, is_event ? "" : what, later, err);
        return REC_CS_RETRY;
    }
    if (d == DESIRE_POLICY_FAILED) {
        int retry = is_event && p->s->policy_on_error == POLICY_ON_ERROR_RETRY;
        char *nl = strchr(err, '\n');
        if (nl)
            *nl = '\0';
        rlog(c, LOG_LVL_ERROR, "policy", "vm=%s%s: policy %s failed, %s: %s", vm_id, what,
             policy_name(p->policy), retry ? "will retry (POLICY_ON_ERROR=retry)" : "skipped", err);
        if (nl)
            log_lines(LOG_LVL_ERROR, "policy", nl + 1);
        metrics_add(p->metrics, METRIC_POLICY_ERRORS_TOTAL, 1, policy_last_failure(p->policy),
                    NULL);
        return retry ? REC_CS_RETRY : REC_POLICY_FAILED;
    }
    if (d == DESIRE_UNCHANGED) {
        rlog(c, is_event ? LOG_LVL_INFO : LOG_LVL_DEBUG, "pipeline",
             "vm=%s%s: policy left the records unchanged", vm_id, what);
        *apply = 0;
    }
    return REC_DONE;
}

/* The record-type label of by_type[t]. */
static const char *type_label(int t)
{
    return t ? dns_rr_type_name((dns_rr_type)t) : "other";
}

/* Adds stats to the records counters. Only non-zero counts are added, so a VM costs a call per
 * kind of change it had; with all set (at the start) every series of the model is created at 0,
 * so a rate over the first change is right. */
static void count_records(struct pipeline *p, const struct pdns_apply_stats *stats, int all)
{
    for (int t = all ? 1 : 0; t < DNS_RR_TYPE_COUNT; t++) {
        const struct pdns_type_counts *k = &stats->by_type[t];
        const char *type = type_label(t);
        if (all || k->added)
            metrics_add(p->metrics, METRIC_RECORDS_CHANGED_TOTAL, k->added, "added", type, NULL);
        if (all || k->removed)
            metrics_add(p->metrics, METRIC_RECORDS_CHANGED_TOTAL, k->removed, "removed", type,
                        NULL);
        if (all || k->updated)
            metrics_add(p->metrics, METRIC_RECORDS_CHANGED_TOTAL, k->updated, "updated", type,
                        NULL);
        if (all || k->no_zone)
            metrics_add(p->metrics, METRIC_RECORDS_SKIPPED_TOTAL, k->no_zone, "no_zone", type,
                        NULL);
        if (all || k->foreign)
            metrics_add(p->metrics, METRIC_RECORDS_SKIPPED_TOTAL, k->foreign, "foreign", type,
                        NULL);
    }
}

/* vm's state for the log lines: "gone" when there is no VM. */
static const char *vm_state(const json_value *vm)
{
    const char *state = vm ? json_get_str(vm, "state") : "gone";
    return state ? state : "?";
}

/* The last half: after the records were written (or planned), says what changed. */
static void note_applied(struct pipeline *p, const struct reconcile_ctx *c, const char *vm_id,
                         const char *state, size_t n, const struct pdns_apply_stats *stats)
{
    char what[96];
    int changed = stats->added || stats->removed || stats->updated;
    who_asked(c, what, sizeof what);
    rlog(c, c->ev || (changed && !c->plan) ? LOG_LVL_INFO : LOG_LVL_DEBUG, "pipeline",
         "vm=%s%s state=%s records=%zu added=%u removed=%u updated=%u unchanged=%u "
         "no_zone=%u foreign=%u",
         vm_id, what, state, n, stats->added, stats->removed, stats->updated, stats->unchanged,
         stats->no_zone, stats->foreign);
    if (!c->plan)
        count_records(p, stats, 0);
    if (c->stats)
        pdns_apply_stats_add(c->stats, stats);
}

/* Writes (or plans) vm_id's records: inside the caller's transaction (c->in_txn), else in one of
 * its own, which is then purged from PowerDNS's caches. */
static enum rec_result store_vm(struct pipeline *p, const char *vm_id, const char *state,
                                const struct dns_record *recs, size_t n,
                                const struct reconcile_ctx *c)
{
    char err[4096], what[96];
    struct pdns_apply_stats stats = {0};
    const char *later = c->ev ? "will retry" : "skipped in this resync";
    csp_status st;
    long long t0 = clock_ms();

    who_asked(c, what, sizeof what);
    if (c->plan)
        st = plan_vm(p, vm_id, recs, n, c, &stats, err, sizeof err);
    else if (c->in_txn)
        st = pdns_store_apply(p->store, vm_id, recs, n, &stats, err, sizeof err);
    else
        st = pdns_store_apply_vm(p->store, vm_id, recs, n, &stats, err, sizeof err);
    if (!c->plan) {
        note_db(p, st != CSP_TRANSIENT);
        if (!c->in_txn)
            metrics_observe(p->metrics, METRIC_DB_TRANSACTION_DURATION, (clock_ms() - t0) / 1000.0,
                            NULL);
    }
    if (st == CSP_TRANSIENT) {
        rlog(c, LOG_LVL_WARN, "store", "vm=%s%s: database %s failed, %s: %s", vm_id,
             c->ev ? "" : what, c->plan ? "read" : "change", later, err);
        return REC_STORE_RETRY;
    }
    if (st == CSP_PERMANENT) {
        rlog(c, LOG_LVL_ERROR, "store", "vm=%s%s: database refused the change, skipped: %s", vm_id,
             c->ev ? "" : what, err);
        return REC_STORE_REFUSED;
    }
    if (!c->plan && !c->in_txn)
        purge_changed(p);
    note_applied(p, c, vm_id, state, n, &stats);
    return REC_DONE;
}

/* Makes vm_id's records match vm, its current state as CloudStack returns it (NULL: the VM no
 * longer exists, so it has no records). Single events, resyncs and plans come through here;
 * batches use its two halves. */
static enum rec_result reconcile_vm(struct pipeline *p, const char *vm_id, const json_value *vm,
                                    const struct reconcile_ctx *c)
{
    struct dns_record *recs;
    size_t n;
    int apply;
    enum rec_result out = want_vm(p, vm_id, vm, c, &recs, &n, &apply);
    if (out == REC_DONE && apply)
        out = store_vm(p, vm_id, vm_state(vm), recs, n, c);
    free(recs);
    return out;
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
    struct reconcile_ctx c = {.ev = ev, .at = at, .trigger = "event", .owners = p->event_owners};
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
/* run: VMs per resync step. A step holds the events back while it runs, so it stays short
 * (tens of milliseconds); the `resync` subcommand has no events to wait and takes the
 * resync's default, a listing page per transaction. */
#define RESYNC_RUN_BATCH 50

static enum resync_vm_outcome resync_outcome(enum rec_result r)
{
    switch (r) {
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

static enum resync_vm_outcome resync_vm(void *ud, const char *vm_id, const json_value *vm,
                                        int in_txn, struct resync_plan *plan,
                                        struct pdns_apply_stats *stats)
{
    struct pipeline *p = ud;
    p->resync_wrote |= in_txn && !plan;
    struct reconcile_ctx c = {.trigger = "resync",
                              .owners = p->owner_cache,
                              .in_txn = in_txn,
                              .plan = plan,
                              .stats = stats};
    return resync_outcome(reconcile_vm(p, vm_id, vm, &c));
}

/* The set-based resync path: the halves of reconcile_vm, with the resync applying a whole
 * batch between them. */
static enum resync_vm_outcome resync_want(void *ud, struct resync_vm *v)
{
    struct pipeline *p = ud;
    struct reconcile_ctx c = {.trigger = "resync", .owners = p->owner_cache};
    return resync_outcome(want_vm(p, v->vm_id, v->vm, &c, &v->recs, &v->n, &v->apply));
}

static void resync_applied(void *ud, const struct resync_vm *v)
{
    struct pipeline *p = ud;
    /* The resync adds v->stats to its totals itself. */
    struct reconcile_ctx c = {.trigger = "resync"};
    p->resync_wrote = 1;
    note_applied(p, &c, v->vm_id, vm_state(v->vm), v->n, &v->stats);
}

/* The resync's own transactions (its batches) and reads count like the events'. */
static void resync_store_done(void *ud, csp_status st, double txn_seconds)
{
    struct pipeline *p = ud;
    note_db(p, st != CSP_TRANSIENT);
    if (txn_seconds >= 0)
        metrics_observe(p->metrics, METRIC_DB_TRANSACTION_DURATION, txn_seconds, NULL);
}

static enum resync_vm_outcome resync_store_one(void *ud, const struct resync_vm *v,
                                               struct pdns_apply_stats *stats)
{
    struct pipeline *p = ud;
    struct reconcile_ctx c = {.trigger = "resync", .stats = stats};
    return resync_outcome(store_vm(p, v->vm_id, vm_state(v->vm), v->recs, v->n, &c));
}

/* scope: the partitions this instance consumes (run), so instances of one group never resync
 * the same VM; NULL: every VM (the `resync` subcommand).
 * A resync has an owner cache of its own, fresh at its start and unbounded: it exists to converge
 * to CloudStack's state now, so it must not reuse answers up to OWNER_CACHE_TTL old, and its
 * thousands of owners would otherwise push the events' hot entries out of their bounded cache. */
static int resync_begin(struct pipeline *p, int dry_run, int force, int progress,
                        const struct resync_config *scope, char *err, size_t errlen)
{
    struct resync_config cfg = {
        .page_size = (unsigned)p->s->resync_page_size,
        .max_delete_percent = p->s->resync_max_delete_percent,
        .force = force || p->s->resync_force,
        .dry_run = dry_run,
        .progress = progress,
        .batch = scope ? RESYNC_RUN_BATCH : 0,
    };
    if (scope) {
        cfg.partition_count = scope->partition_count;
        cfg.partitions = scope->partitions;
        cfg.npartitions = scope->npartitions;
    }
    if (owner_cache_new(0, 0, &p->owner_cache) != 0) {
        snprintf(err, errlen, "resync: out of memory");
        return -1;
    }
    if (resync_new(&cfg, p->cs, p->store, resync_vm, p, &p->resync, err, errlen) != 0) {
        owner_cache_free(p->owner_cache);
        p->owner_cache = NULL;
        return -1;
    }
    struct resync_batch_path path = {
        .want = resync_want, .applied = resync_applied, .store_one = resync_store_one};
    resync_set_batch_path(p->resync, &path);
    resync_set_store_observer(p->resync, resync_store_done);
    return 0;
}

static void resync_end(struct pipeline *p)
{
    resync_free(p->resync);
    p->resync = NULL;
    owner_cache_free(p->owner_cache);
    p->owner_cache = NULL;
}

/* run: the partitions assigned now. Returns 1 (scope filled; free scope->partitions), 0 when none
 * are assigned yet, -1 when they cannot be read (err says why). */
static int assigned_scope(struct pipeline *p, struct resync_config *scope, unsigned *generation,
                          char *err, size_t errlen)
{
    int assigned = kafka_source_assigned(p->ks);
    if (assigned <= 0)
        return 0;
    int32_t *parts = malloc((size_t)assigned * sizeof *parts);
    size_t n = 0;
    if (!parts) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (kafka_source_partitions(p->ks, parts, (size_t)assigned, &n, &scope->partition_count,
                                generation, err, errlen) != 0 ||
        n == 0) {
        free(parts);
        return n == 0 && scope->partition_count > 0 ? 0 : -1;
    }
    scope->partitions = parts;
    scope->npartitions = n;
    return 1;
}

/* How soon a resync that cannot learn its partition scope (Kafka metadata) tries again. */
#define RESYNC_SCOPE_RETRY_S 5

/* run: starts a resync scoped to the assigned partitions once some are assigned. */
static void resync_start(struct pipeline *p, long long now)
{
    char err[512];
    struct resync_config scope = {0};
    int got = assigned_scope(p, &scope, &p->resync_generation, err, sizeof err);
    if (got == 0)
        return; /* not in the group yet: the resync waits for its partitions */
    if (got < 0) {
        log_msg(LOG_LVL_WARN, "resync",
                "cannot learn the assigned partitions, next try in %d s: %s", RESYNC_SCOPE_RETRY_S,
                err);
        p->next_resync_ms = now + RESYNC_SCOPE_RETRY_S * 1000LL;
        return;
    }
    if (resync_begin(p, 0, 0, 0, &scope, err, sizeof err) != 0) {
        log_msg(LOG_LVL_WARN, "resync", "cannot start a resync, next try in %d s: %s",
                RESYNC_RETRY_S, err);
        p->next_resync_ms = now + RESYNC_RETRY_S * 1000LL;
    }
    free((void *)scope.partitions);
    p->last_step_ms = now;
}

/* run: 1 when the assignment changed since the resync in progress was scoped. */
static int assignment_changed(struct pipeline *p)
{
    int32_t part;
    size_t n;
    int32_t count;
    unsigned gen;
    char err[512];
    /* The generation is filled even when the topic's metadata cannot be read. */
    (void)kafka_source_partitions(p->ks, &part, 1, &n, &count, &gen, err, sizeof err);
    return gen != p->resync_generation;
}

/* One step of the resync in progress, then the purge of the names its commit changed, so a
 * resync's writes answer at once like an event's. Returns resync_step's result. */
static int resync_step_purge(struct pipeline *p)
{
    p->resync_wrote = 0;
    int more = resync_step(p->resync);
    /* A transaction the step rolled back left no names (they are kept only after a commit). */
    if (p->resync_wrote)
        purge_changed(p);
    return more;
}

/* run: starts the resync when it is due and gives it its steps between events. */
static void resync_tick(struct pipeline *p, int had_event)
{
    long long now = clock_ms();
    if (!p->resync) {
        if (p->next_resync_ms && now >= p->next_resync_ms)
            resync_start(p, now);
        return;
    }
    /* Events that queued up during a step all go first, within RESYNC_STEP_EVERY_MS. */
    if (had_event && now - p->last_step_ms < RESYNC_STEP_EVERY_MS)
        return;
    if (assignment_changed(p)) {
        /* Its scope is stale: VMs of partitions it lost are another instance's now, and those
         * of partitions it gained would be missed. Nothing half-done is left (each batch is one
         * transaction). */
        log_msg(LOG_LVL_INFO, "resync",
                "partition assignment changed: resync ended, a fresh one starts for the new "
                "assignment");
        resync_end(p);
        p->next_resync_ms = now;
        return;
    }
    int more = resync_step_purge(p);
    p->last_step_ms = clock_ms();
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
    p->next_resync_ms = clock_ms() + wait_s * 1000;
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
    if (resync_begin(p, o->dry_run, o->force, o->progress, NULL, err, errlen) != 0)
        return PIPELINE_EXIT_RUNTIME;
    while (!p->sig->stop && resync_step_purge(p))
        ;
    resync_stop(p->resync);
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

/* ---- batches (run) ---- */

/* One consumed message of a batch. */
struct batch_item {
    struct kafka_msg m;
    struct cs_event ev; /* its identity only: batch_want parses the message again */
    int vm;             /* index into batch.vms, or -1: no VM to reconcile */
    int skip;           /* unusable (malformed, refused): logged, committed with the batch */
    int handed_back;    /* retried or released before the batch's write completed */
    const char *kind;   /* metrics labels */
    const char *outcome;
};

/* One VM of a batch: its last event decides its records (a VM's events are on one partition,
 * in order, and each event's VM state is at least as new as the ones before). */
struct batch_vm {
    size_t last; /* the item of its last event */
    /* The VM's state for the log lines. The documents it came from are freed once the policy
     * named the VM: a batch being written holds its records, not its events' JSON. */
    char state[32];
    struct dns_record *recs;
    size_t n;
    int apply; /* recs are to be written */
    int applied;
    struct pdns_apply_stats stats;
};

/* One partition of a batch. A transient failure at item cut means nothing from cut on may be
 * applied or committed: cut comes again (kafka_source_retry), the items after it are released
 * and redelivered by the rewind. */
struct batch_part {
    int32_t partition;
    size_t first;
    size_t cut;
    int has_cut;
    /* The batch before cut this partition while this one was prepared: every item is released
     * (that retry's rewind delivers them again). has_cut is set with cut = first. */
    int dropped;
    /* The cut was handed back when the write started (early_cut: where it was then); the next
     * batch was fetched after that rewind. */
    int early;
    size_t early_cut;
};

struct batch {
    size_t cap;
    struct batch_item *items;
    size_t n;
    struct batch_vm *vms;
    size_t nvms;
    struct batch_part *parts;
    size_t nparts;
    struct strmap *vm_index; /* vm_id -> 1 + index into vms */
    int prepared;            /* decoded and named: parts and vms are filled */
    /* The VMs to write (indexes into vms, in the order of their last events) and what the
     * writer is handed for them. */
    size_t *order;
    struct pdns_vm_records *set;
    size_t nwrite;
    int written;             /* its transaction committed */
    struct purge_list purge; /* its commit's names, flushed by batch_finish_write */
};

static void batch_free(struct batch *b)
{
    if (!b)
        return;
    free(b->items);
    free(b->vms);
    free(b->parts);
    free(b->order);
    free(b->set);
    free(b->purge.names);
    strmap_free(b->vm_index, NULL);
    free(b);
}

static int batch_new(size_t cap, struct batch **out)
{
    struct batch *b = calloc(1, sizeof *b);
    if (!b)
        return -1;
    b->cap = cap;
    b->items = calloc(cap, sizeof *b->items);
    b->vms = calloc(cap, sizeof *b->vms);
    b->parts = calloc(cap, sizeof *b->parts);
    b->order = calloc(cap, sizeof *b->order);
    b->set = calloc(cap, sizeof *b->set);
    if (!b->items || !b->vms || !b->parts || !b->order || !b->set ||
        strmap_new(&b->vm_index) != 0) {
        batch_free(b);
        return -1;
    }
    *out = b;
    return 0;
}

static struct batch_part *batch_part_of(struct batch *b, size_t i)
{
    int32_t partition = b->items[i].m.partition;
    for (size_t k = 0; k < b->nparts; k++)
        if (b->parts[k].partition == partition)
            return &b->parts[k];
    b->parts[b->nparts] = (struct batch_part){.partition = partition, .first = i};
    return &b->parts[b->nparts++];
}

static void batch_cut(struct batch *b, size_t i)
{
    struct batch_part *bp = batch_part_of(b, i);
    if (!bp->has_cut || i < bp->cut) {
        bp->cut = i;
        bp->has_cut = 1;
    }
}

static int batch_is_cut(struct batch *b, size_t i)
{
    struct batch_part *bp = batch_part_of(b, i);
    return bp->has_cut && i >= bp->cut;
}

static struct pos item_pos(const struct batch_item *it)
{
    return (struct pos){it->m.topic, it->m.partition, it->m.offset};
}

/* Decodes item i and files it under its partition and VM. */
static void batch_decode(struct batch *b, size_t i)
{
    struct batch_item *it = &b->items[i];
    char err[512];
    void *hit;
    it->vm = -1;
    it->skip = 0;
    it->handed_back = 0;
    it->kind = "other";
    batch_part_of(b, i);
    if (cs_event_decode(it->m.payload, it->m.len, &it->ev, err, sizeof err) != 0) {
        log_at(LOG_LVL_ERROR, "pipeline", it->m.topic, it->m.partition, it->m.offset,
               "malformed message skipped (%zu bytes): %s", it->m.len, err);
        it->skip = 1;
        it->outcome = "bad_input";
        return;
    }
    /* Only the event's identity is kept; batch_want parses the VM's last event again. A batch
     * holds one event's JSON at a time then: a parse costs microseconds, the JSON of a batch of
     * events megabytes (about four times the message). */
    cs_event_drop_docs(&it->ev);
    if (it->ev.kind == CS_EVENT_IGNORED) {
        log_at(LOG_LVL_DEBUG, "pipeline", it->m.topic, it->m.partition, it->m.offset,
               "ignored %s: %s", it->ev.type[0] ? it->ev.type : "record", it->ev.why_ignored);
        it->outcome = "ignored";
        return;
    }
    it->kind = it->ev.type;
    it->outcome = "applied";
    if (strmap_get(b->vm_index, it->ev.vm_id, &hit)) {
        it->vm = (int)((uintptr_t)hit - 1);
    } else {
        it->vm = (int)b->nvms;
        memset(&b->vms[b->nvms], 0, sizeof b->vms[0]);
        if (strmap_add(b->vm_index, it->ev.vm_id, (void *)(uintptr_t)(b->nvms + 1)) < 0) {
            /* Without the index this VM's events cannot be merged: try the message again. */
            log_at(LOG_LVL_WARN, "pipeline", it->m.topic, it->m.partition, it->m.offset,
                   "out of memory filing the event, will retry");
            it->vm = -1;
            batch_cut(b, i);
            return;
        }
        b->nvms++;
    }
    b->vms[it->vm].last = i;
}

/* The records of the VM whose last event is item i. A transient failure cuts i's partition. */
static void batch_want(struct pipeline *p, struct batch *b, size_t i)
{
    struct batch_item *it = &b->items[i];
    struct batch_vm *bv = &b->vms[it->vm];
    struct pos at = item_pos(it);
    struct cs_event ev;
    struct cs_reply vm_r = {0};
    const json_value *vm = NULL;
    char err[4096];
    /* It decoded in batch_decode, so only memory can fail the parse now. */
    int ok = cs_event_decode(it->m.payload, it->m.len, &ev, err, sizeof err) == 0;
    if (ok && !(vm = ev.vm))
        ok = cloudstack_get_vm(p->cs, it->ev.vm_id, &vm_r, &vm, err, sizeof err) == CSP_OK;
    if (!ok) {
        log_at(LOG_LVL_WARN, "pipeline", at.topic, at.partition, at.offset,
               "vm=%s event=%s: cannot read the VM, will retry: %s", it->ev.vm_id, it->ev.type,
               err);
        cs_reply_free(&vm_r);
        cs_event_clear(&ev);
        batch_cut(b, i);
        return;
    }
    struct reconcile_ctx c = {.ev = &ev, .at = &at, .trigger = "event", .owners = p->event_owners};
    enum rec_result r = want_vm(p, it->ev.vm_id, vm, &c, &bv->recs, &bv->n, &bv->apply);
    snprintf(bv->state, sizeof bv->state, "%s", vm_state(vm));
    cs_reply_free(&vm_r);
    cs_event_clear(&ev);
    switch (r) {
    case REC_DONE:
        break;
    case REC_POLICY_FAILED:
    case REC_STORE_REFUSED:
        it->skip = 1;
        it->outcome = "skipped";
        break;
    case REC_CS_RETRY:
    case REC_STORE_RETRY:
        batch_cut(b, i);
        break;
    }
}

/* The VMs to write, in the order of their last events: items before a cut only. */
static size_t batch_writes(struct batch *b, size_t *order)
{
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++) {
        struct batch_item *it = &b->items[i];
        if (it->vm >= 0 && b->vms[it->vm].last == i && b->vms[it->vm].apply && !it->skip &&
            !batch_is_cut(b, i))
            order[n++] = (size_t)it->vm;
    }
    return n;
}

/* The database refused some change of the batch: one VM per transaction finds it, and the
 * others land. */
static void batch_store_each(struct pipeline *p, struct batch *b)
{
    for (size_t k = 0; k < b->nwrite; k++) {
        struct batch_vm *bv = &b->vms[b->order[k]];
        struct batch_item *it = &b->items[bv->last];
        struct pos at = item_pos(it);
        if (batch_is_cut(b, bv->last))
            continue;
        struct reconcile_ctx c = {.ev = &it->ev, .at = &at, .trigger = "event"};
        switch (store_vm(p, it->ev.vm_id, bv->state, bv->recs, bv->n, &c)) {
        case REC_DONE:
            bv->applied = 1;
            break;
        case REC_STORE_REFUSED:
        case REC_POLICY_FAILED:
            it->skip = 1;
            it->outcome = "skipped";
            break;
        case REC_STORE_RETRY:
        case REC_CS_RETRY:
            batch_cut(b, bv->last);
            break;
        }
    }
}

/* Decodes the batch, then names each VM by its last event (the policy; CloudStack when the event
 * did not carry the VM). Touches neither the store nor the consumer. */
static void batch_prepare(struct pipeline *p, struct batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        batch_decode(b, i);
    for (size_t i = 0; i < b->n; i++) {
        struct batch_item *it = &b->items[i];
        if (it->vm >= 0 && b->vms[it->vm].last == i && !batch_is_cut(b, i))
            batch_want(p, b, i);
    }
    /* A batch being written holds its messages' offsets only, not their fetch buffers. */
    for (size_t i = 0; i < b->n; i++)
        kafka_source_drop_payload(p->ks, &b->items[i].m);
    b->prepared = 1;
}

/* The message at a partition's cut comes again after the partition's backoff. */
static void retry_item(struct pipeline *p, struct batch_item *it)
{
    struct part_failures *pf = part_failures(p, it->m.partition);
    unsigned failures = pf ? ++pf->failures : 1;
    int wait = backoff_ms(p, failures);
    log_at(LOG_LVL_WARN, "pipeline", it->m.topic, it->m.partition, it->m.offset,
           "retrying in %d ms (attempt %u)", wait, failures);
    kafka_source_retry(p->ks, &it->m, wait);
    metrics_add(p->metrics, METRIC_EVENTS_TOTAL, 1, it->kind, "retried", NULL);
    it->handed_back = 1;
}

/* Items at and after a partition's cut: the one at the cut is retried, the later ones are
 * released (the rewind delivers them again); a dropped partition's are all released. */
static void batch_hand_back(struct pipeline *p, struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        struct batch_item *it = &b->items[i];
        struct batch_part *bp = batch_part_of(b, i);
        if (it->handed_back || !bp->has_cut || i < bp->cut)
            continue;
        if (i == bp->cut && !bp->dropped) {
            retry_item(p, it);
        } else {
            kafka_source_release(p->ks, &it->m);
            it->handed_back = 1;
        }
    }
}

/* After the batch: each message committed, retried or released, in order. */
static void batch_finish(struct pipeline *p, struct batch *b)
{
    batch_hand_back(p, b);
    for (size_t i = 0; i < b->n; i++) {
        struct batch_item *it = &b->items[i];
        if (it->handed_back)
            continue;
        if (it->vm >= 0 && !it->skip) {
            struct batch_vm *bv = &b->vms[it->vm];
            if (bv->last != i)
                log_at(LOG_LVL_INFO, "pipeline", it->m.topic, it->m.partition, it->m.offset,
                       "vm=%s event=%s state=superseded: its event at offset %lld in this batch "
                       "decides its records",
                       it->ev.vm_id, it->ev.type, (long long)b->items[bv->last].m.offset);
            else
                metrics_set_to_now(p->metrics, METRIC_LAST_EVENT_APPLIED_TIMESTAMP, NULL);
        }
        metrics_add(p->metrics, METRIC_EVENTS_TOTAL, 1, it->kind, it->outcome, NULL);
        kafka_source_done(p->ks, &it->m);
    }
    for (size_t k = 0; k < b->nparts; k++) {
        struct part_failures *pf =
            b->parts[k].has_cut ? NULL : part_failures(p, b->parts[k].partition);
        if (pf)
            pf->failures = 0;
    }
    publish_failures(p);
}

static void batch_clear(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        cs_event_clear(&b->items[i].ev);
    for (size_t k = 0; k < b->nvms; k++)
        free(b->vms[k].recs);
    strmap_clear(b->vm_index, NULL);
    free(b->purge.names);
    b->purge = (struct purge_list){NULL, 0};
    b->n = b->nvms = b->nparts = b->nwrite = 0;
    b->prepared = b->written = 0;
}

/* The batch is over: its offsets, retries and releases go to the consumer, and it is emptied. */
static void batch_done(struct pipeline *p, struct batch *b)
{
    /* A resync in progress must not apply an older listed state of these VMs over this. */
    for (size_t k = 0; k < b->nvms && p->resync; k++)
        resync_note_event(p->resync, b->items[b->vms[k].last].ev.vm_id);
    batch_finish(p, b);
    batch_clear(b);
}

/* The messages of the batch being gathered on these partitions will not be applied: a batch
 * before it cut them (its retry rewinds them), or the group took them away. Gathered only:
 * they are released now, and whatever the consumer delivers later is kept. Prepared: their
 * partitions are dropped, released by batch_finish. */
static void batch_drop(struct pipeline *p, struct batch *b, const int32_t *partitions, size_t n)
{
    if (b->prepared) {
        for (size_t k = 0; k < b->nparts; k++)
            for (size_t j = 0; j < n; j++)
                if (b->parts[k].partition == partitions[j]) {
                    b->parts[k].dropped = b->parts[k].has_cut = 1;
                    b->parts[k].cut = b->parts[k].first;
                }
        return;
    }
    size_t kept = 0;
    for (size_t i = 0; i < b->n; i++) {
        int drop = 0;
        for (size_t j = 0; j < n && !drop; j++)
            drop = b->items[i].m.partition == partitions[j];
        if (drop)
            kafka_source_release(p->ks, &b->items[i].m);
        else
            b->items[kept++] = b->items[i];
    }
    b->n = kept;
}

/* Waits for the write in flight, if any, and settles what the next write depends on: the
 * partitions it cut are dropped from the batch being gathered, a change the database refused is
 * found one VM per transaction, and the commit's names to purge are copied out of the store. The
 * rest (batch_finish_write) can run while the next batch is written. Returns the batch, or NULL
 * with no write in flight. */
static struct batch *batch_settle(struct pipeline *p)
{
    struct batch *b = p->writing;
    if (!b)
        return NULL;
    p->writing = NULL;
    csp_status st = store_writer_wait(p->writer, &p->write);
    note_db(p, st != CSP_TRANSIENT);
    metrics_observe(p->metrics, METRIC_DB_TRANSACTION_DURATION, p->write.ms / 1000.0, NULL);
    if (st == CSP_OK) {
        metrics_observe(p->metrics, METRIC_BATCH_VMS, (double)b->nwrite, NULL);
        purge_collect(p, &b->purge);
        b->written = 1;
    } else if (st == CSP_TRANSIENT) {
        /* Nothing of the batch was written: every partition comes again from its start. */
        log_msg(LOG_LVL_WARN, "store",
                "database change of a batch of %zu VMs (%zu messages) failed, will retry: %s",
                b->nwrite, b->n, p->write.err);
        for (size_t k = 0; k < b->nparts; k++)
            batch_cut(b, b->parts[k].first);
    } else {
        log_msg(LOG_LVL_WARN, "store",
                "database refused a change in a batch of %zu VMs; applying them one per "
                "transaction to find it: %s",
                b->nwrite, p->write.err);
        batch_store_each(p, b);
    }
    /* A cut made by the write rewinds behind messages the next batch already holds. */
    for (size_t k = 0; k < b->nparts; k++) {
        const struct batch_part *bp = &b->parts[k];
        if (bp->has_cut && (!bp->early || bp->cut < bp->early_cut))
            batch_drop(p, p->filling, &bp->partition, 1);
    }
    return b;
}

/* A settled write's cache purge, log lines, offsets, retries and releases. */
static void batch_finish_write(struct pipeline *p, struct batch *b)
{
    purge_send(p, &b->purge);
    for (size_t k = 0; k < b->nwrite && b->written; k++) {
        struct batch_vm *bv = &b->vms[b->order[k]];
        struct batch_item *it = &b->items[bv->last];
        struct pos at = item_pos(it);
        struct reconcile_ctx c = {.ev = &it->ev, .at = &at, .trigger = "event"};
        bv->applied = 1;
        bv->stats = b->set[k].stats;
        note_applied(p, &c, it->ev.vm_id, bv->state, bv->n, &bv->stats);
    }
    batch_done(p, b);
}

/* The write in flight, if any, is waited for and finished. */
static void batch_complete(struct pipeline *p)
{
    struct batch *b = batch_settle(p);
    if (b)
        batch_finish_write(p, b);
}

/* Hands the prepared batch to the writer thread (the write before it, prev, has been settled),
 * then finishes prev while the database works; a batch with nothing to write is finished at once,
 * after prev, whose offsets come first. Offsets become committable only after the batch's
 * transaction committed. */
static void batch_write_start(struct pipeline *p, struct batch *prev)
{
    struct batch *b = p->filling;
    b->nwrite = batch_writes(b, b->order);
    for (size_t k = 0; k < b->nwrite; k++) {
        struct batch_vm *bv = &b->vms[b->order[k]];
        b->set[k] = (struct pdns_vm_records){
            .vm_id = b->items[bv->last].ev.vm_id, .recs = bv->recs, .n = bv->n};
    }
    /* Before the next batch is fetched: it must not hold (and ask CloudStack about) messages
     * of these partitions that come again anyway. */
    batch_hand_back(p, b);
    for (size_t k = 0; k < b->nparts; k++)
        if (b->parts[k].has_cut) {
            b->parts[k].early = 1;
            b->parts[k].early_cut = b->parts[k].cut;
        }
    p->filling = p->batches[p->filling == p->batches[0]];
    if (b->nwrite == 0) {
        if (prev)
            batch_finish_write(p, prev);
        batch_done(p, b);
        return;
    }
    store_writer_start(p->writer, &p->write, p->store, b->set, b->nwrite);
    p->writing = b;
    if (prev)
        batch_finish_write(p, prev);
}

/* The group takes partitions away: what was written from them is finished (and so committed
 * with the revocation), what was only gathered is dropped for their next owner. */
static void on_revoke(void *ud, const int32_t *partitions, size_t n)
{
    struct pipeline *p = ud;
    batch_complete(p);
    batch_drop(p, p->filling, partitions, n);
}

/* Fills the batch after its first message: no wait while messages are queued, at most
 * BATCH_MAX_WAIT_MS in all. Returns 0, or -1 on a fatal consumer error (err says which). A
 * revocation during a poll may take messages out of the batch (on_revoke). */
static int batch_fill(struct pipeline *p, struct batch *b, char *err, size_t errlen)
{
    long long deadline = clock_ms() + p->s->batch_max_wait_ms;
    while (b->n < b->cap && !p->sig->stop) {
        long long left = deadline - clock_ms();
        struct kafka_msg m;
        int got = kafka_source_poll(p->ks, left > 0 ? (int)left : 0, &m, err, errlen);
        if (got < 0)
            return -1;
        if (got == 0)
            break;
        b->items[b->n++].m = m;
    }
    return 0;
}

/* With no database work for this long, the main loop asks the database whether it is still
 * there, so an idle instance's /readyz and cspdns_db_reachable follow an outage too. */
#define DB_IDLE_CHECK_MS 10000

/* Only with no write in flight: the store's one connection must not serve the writer thread's
 * transaction and this at once. A resync holds no transaction open between its steps. */
static void check_db_idle(struct pipeline *p)
{
    if (p->writing || clock_ms() - p->last_db_ms < DB_IDLE_CHECK_MS)
        return;
    char err[1024];
    double was = 1;
    metrics_get(p->metrics, METRIC_DB_REACHABLE, &was, NULL);
    csp_status st = pdns_store_ping(p->store, err, sizeof err);
    note_db(p, st == CSP_OK);
    if (st != CSP_OK && was == 1)
        log_msg(LOG_LVL_WARN, "store",
                "the database does not answer (checked while idle); /readyz says not ready until "
                "it does, checked every %d s: %s",
                DB_IDLE_CHECK_MS / 1000, err);
    else if (st == CSP_OK && was != 1)
        log_msg(LOG_LVL_INFO, "store", "the database answers again");
}

/* The resync shares the store with the writer: it takes its turns with no write in flight. */
static void resync_turn(struct pipeline *p, int had_event)
{
    if (p->resync || (p->next_resync_ms && clock_ms() >= p->next_resync_ms))
        batch_complete(p);
    resync_tick(p, had_event);
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
    for (int k = 0; k < 2; k++)
        if (!p->batches[k] && batch_new((size_t)p->s->batch_max_events, &p->batches[k]) != 0) {
            snprintf(err, errlen, "out of memory");
            return PIPELINE_EXIT_RUNTIME;
        }
    if (!p->writer && store_writer_new(&p->writer) != 0) {
        snprintf(err, errlen, "out of memory");
        return PIPELINE_EXIT_RUNTIME;
    }
    p->filling = p->batches[0];
    p->writing = NULL;
    if (kafka_source_new(p->s, p->http ? p->metrics : NULL, &ks, err, errlen) != 0)
        return PIPELINE_EXIT_CONFIG;
    p->ks = ks;
    kafka_source_on_revoke(ks, on_revoke, p);
    log_msg(LOG_LVL_INFO, "pipeline", "consuming %s as group %s", p->s->kafka_topic,
            p->s->kafka_group);
    rc = PIPELINE_EXIT_OK;
    /* The start-up resync heals whatever changed while cs-pdns was not running. */
    p->next_resync_ms = p->s->resync_interval_s > 0 ? clock_ms() : 0;
    while (!p->sig->stop) {
        maybe_reload(p);
        http_server_tick(p->http);
        check_db_idle(p);
        metrics_set(p->metrics, METRIC_KAFKA_PARTITIONS_ASSIGNED, kafka_source_assigned(ks), NULL);
        /* With a write in flight, an idle consumer finishes it at once (its log lines, cache
         * purge and offsets) rather than after the next message. */
        int wait = p->writing || p->resync ? 0 : 200;
        struct kafka_msg m;
        int got = kafka_source_poll(ks, wait, &m, err, errlen);
        if (got < 0) {
            rc = PIPELINE_EXIT_RUNTIME;
            break;
        }
        if (got == 0) {
            if (p->writing)
                batch_complete(p);
            else
                resync_turn(p, 0);
            continue;
        }
        struct batch *b = p->filling;
        b->items[b->n++].m = m;
        /* A fatal consumer error ends the run after the messages in hand were handled. */
        int fatal = batch_fill(p, b, err, errlen) != 0;
        batch_prepare(p, b);
        batch_write_start(p, batch_settle(p));
        if (fatal) {
            rc = PIPELINE_EXIT_RUNTIME;
            break;
        }
        resync_turn(p, 1);
    }
    batch_complete(p);
    if (p->resync) {
        log_msg(LOG_LVL_INFO, "resync",
                "resync interrupted by the shutdown; nothing half-done "
                "is left (each batch is one transaction)");
        resync_end(p);
    }
    log_msg(LOG_LVL_INFO, "pipeline", "stopping: committing offsets and leaving the group");
    kafka_source_close(ks);
    p->ks = NULL;
    return rc;
}
