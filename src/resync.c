/* resync.c -- lists every VM, reconciles them through the caller's path in batches (each batch
 * written at once, set-based), then clears the VMs that are gone, safely; also the plan a dry run
 * prints, and the cs_mapping adoption. Must not: hold SQL or naming rules, or remove anything after
 * an incomplete listing or beyond the deletion guard. */
#define _GNU_SOURCE /* qsort_r */
#include "resync.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "kafka_partition.h"
#include "logger.h"
#include "strmap.h"

#define LOG_MOD "resync"
/* One listing page per transaction: a set-based apply costs about the same dozen round trips
 * for 500 VMs as for 50. */
#define DEFAULT_BATCH 500
/* This many VMs in a row failing transiently means CloudStack or the database is down. */
#define MAX_TRANSIENT_IN_ROW 5
#define PROGRESS_EVERY_MS 250
#define ID_BUFSZ 72

/* ========================================= the plan ========================================= */

struct plan_entry {
    enum pdns_change_kind kind;
    dns_rr_type type;
    int ttl, old_ttl, shared;
    size_t zone, name, content, vm; /* offsets into the arena */
};

struct resync_plan {
    struct plan_entry *e;
    size_t n, cap;
    textbuf arena;           /* NUL-separated strings */
    struct strmap *interned; /* zone and VM strings -> offset + 1 */
};

int resync_plan_new(struct resync_plan **out)
{
    struct resync_plan *pl = calloc(1, sizeof *pl);
    if (!pl || strmap_new(&pl->interned) != 0) {
        free(pl);
        *out = NULL;
        return -1;
    }
    *out = pl;
    return 0;
}

void resync_plan_free(struct resync_plan *pl)
{
    if (!pl)
        return;
    free(pl->e);
    textbuf_free(&pl->arena);
    strmap_free(pl->interned, NULL);
    free(pl);
}

static int arena_put(struct resync_plan *pl, const char *s, size_t *off)
{
    *off = pl->arena.len;
    return textbuf_append(&pl->arena, s, strlen(s) + 1);
}

/* Zones and VM ids repeat on every line: stored once. */
static int arena_intern(struct resync_plan *pl, const char *s, size_t *off)
{
    void *v;
    if (strmap_get(pl->interned, s, &v)) {
        *off = (size_t)(uintptr_t)v - 1;
        return 0;
    }
    if (arena_put(pl, s, off) != 0)
        return -1;
    return strmap_add(pl->interned, s, (void *)(uintptr_t)(*off + 1)) < 0 ? -1 : 0;
}

int resync_plan_add(struct resync_plan *pl, const char *vm_id, const struct pdns_change *c,
                    size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (pl->n == pl->cap) {
            size_t cap = pl->cap ? pl->cap * 2 : 64;
            struct plan_entry *e = realloc(pl->e, cap * sizeof *e);
            if (!e)
                return -1;
            pl->e = e;
            pl->cap = cap;
        }
        struct plan_entry *e = &pl->e[pl->n];
        e->kind = c[i].kind;
        e->type = c[i].rec.type;
        e->ttl = c[i].rec.ttl;
        e->old_ttl = c[i].old_ttl;
        e->shared = c[i].shared;
        if (arena_intern(pl, c[i].zone, &e->zone) || arena_intern(pl, vm_id, &e->vm) ||
            arena_put(pl, c[i].rec.name, &e->name) || arena_put(pl, c[i].rec.content, &e->content))
            return -1;
        pl->n++;
    }
    return 0;
}

static int skipped(const struct plan_entry *e)
{
    return e->kind == PDNS_CHANGE_NO_ZONE || e->kind == PDNS_CHANGE_FOREIGN;
}

static int cmp_entry(const void *a, const void *b, void *arena)
{
    const struct plan_entry *x = a, *y = b;
    const char *s = arena;
    int c = skipped(x) - skipped(y);
    if (!c)
        c = strcmp(s + x->zone, s + y->zone);
    if (!c)
        c = strcmp(s + x->name, s + y->name);
    if (!c)
        c = (int)x->type - (int)y->type;
    if (!c)
        c = strcmp(s + x->content, s + y->content);
    if (!c)
        c = (int)x->kind - (int)y->kind;
    if (!c)
        c = strcmp(s + x->vm, s + y->vm);
    return c;
}

static const char *type_name(dns_rr_type t)
{
    const char *n = dns_rr_type_name(t);
    return n ? n : "?";
}

static int write_text_entry(textbuf *out, const char *s, const struct plan_entry *e)
{
    static const char sign[] = {
        [PDNS_CHANGE_ADD] = '+', [PDNS_CHANGE_REMOVE] = '-', [PDNS_CHANGE_TTL] = '~'};
    const char *tail = e->shared ? ", shared" : "";
    if (e->kind == PDNS_CHANGE_NO_ZONE || e->kind == PDNS_CHANGE_FOREIGN)
        return textbuf_printf(out, "  %s: %s %s %s ttl=%d vm=%s\n",
                              e->kind == PDNS_CHANGE_NO_ZONE ? "no zone" : "hand-made row exists",
                              s + e->name, type_name(e->type), s + e->content, e->ttl, s + e->vm);
    if (e->kind == PDNS_CHANGE_TTL)
        return textbuf_printf(out, "  ~ %s %s %s ttl=%d->%d vm=%s\n", s + e->name,
                              type_name(e->type), s + e->content, e->old_ttl, e->ttl, s + e->vm);
    return textbuf_printf(out, "  %c %s %s %s ttl=%d vm=%s%s\n", sign[e->kind], s + e->name,
                          type_name(e->type), s + e->content, e->ttl, s + e->vm, tail);
}

static int write_json_entry(textbuf *out, const char *s, const struct plan_entry *e)
{
    int rc = textbuf_puts(out, "{\"name\":");
    rc |= json_write_string(out, s + e->name, strlen(s + e->name));
    rc |= textbuf_printf(out, ",\"type\":\"%s\",\"content\":", type_name(e->type));
    rc |= json_write_string(out, s + e->content, strlen(s + e->content));
    rc |= textbuf_printf(out, ",\"ttl\":%d,\"vm\":", e->ttl);
    rc |= json_write_string(out, s + e->vm, strlen(s + e->vm));
    if (e->kind == PDNS_CHANGE_ADD || e->kind == PDNS_CHANGE_REMOVE)
        rc |= textbuf_printf(out, ",\"shared\":%s", e->shared ? "true" : "false");
    if (e->kind == PDNS_CHANGE_TTL)
        rc |= textbuf_printf(out, ",\"old_ttl\":%d", e->old_ttl);
    if (skipped(e))
        rc |= textbuf_printf(out, ",\"reason\":\"%s\"",
                             e->kind == PDNS_CHANGE_NO_ZONE ? "no_zone" : "hand_made");
    return rc | textbuf_putc(out, '}');
}

static int write_text(const struct plan_entry *e, size_t n, const char *s, textbuf *out)
{
    int rc = 0;
    if (n == 0)
        return textbuf_puts(out, "no changes\n");
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (skipped(&e[i]) && (i == 0 || !skipped(&e[i - 1])))
            rc |= textbuf_puts(out, "skipped\n");
        else if (!skipped(&e[i]) && (i == 0 || strcmp(s + e[i].zone, s + e[i - 1].zone) != 0))
            rc |= textbuf_printf(out, "zone %s\n", s + e[i].zone);
        rc |= write_text_entry(out, s, &e[i]);
    }
    return rc;
}

static int write_json(const struct plan_entry *e, size_t n, const char *s, textbuf *out)
{
    static const char *const lists[] = {
        [PDNS_CHANGE_ADD] = "add", [PDNS_CHANGE_REMOVE] = "remove", [PDNS_CHANGE_TTL] = "ttl"};
    int rc = textbuf_puts(out, "\"zones\":[");
    size_t i = 0;
    while (i < n && !skipped(&e[i]) && rc == 0) {
        size_t end = i;
        while (end < n && !skipped(&e[end]) && !strcmp(s + e[end].zone, s + e[i].zone))
            end++;
        rc |= textbuf_puts(out, i ? ",{\"zone\":" : "{\"zone\":");
        rc |= json_write_string(out, s + e[i].zone, strlen(s + e[i].zone));
        for (int k = PDNS_CHANGE_ADD; k <= PDNS_CHANGE_TTL; k++) {
            int first = 1;
            rc |= textbuf_printf(out, ",\"%s\":[", lists[k]);
            for (size_t j = i; j < end; j++) {
                if ((int)e[j].kind != k)
                    continue;
                rc |= first ? 0 : textbuf_putc(out, ',');
                rc |= write_json_entry(out, s, &e[j]);
                first = 0;
            }
            rc |= textbuf_putc(out, ']');
        }
        rc |= textbuf_putc(out, '}');
        i = end;
    }
    rc |= textbuf_puts(out, "],\"skipped\":[");
    for (size_t j = i; j < n; j++) {
        rc |= j > i ? textbuf_putc(out, ',') : 0;
        rc |= write_json_entry(out, s, &e[j]);
    }
    return rc | textbuf_putc(out, ']');
}

int resync_plan_write(const struct resync_plan *pl, int json, textbuf *out)
{
    const char *s = pl->arena.buf ? pl->arena.buf : "";
    struct plan_entry *e = NULL;
    if (pl->n) {
        e = malloc(pl->n * sizeof *e);
        if (!e)
            return -1;
        memcpy(e, pl->e, pl->n * sizeof *e);
        qsort_r(e, pl->n, sizeof *e, cmp_entry, (void *)s);
    }
    int rc = json ? write_json(e, pl->n, s, out) : write_text(e, pl->n, s, out);
    free(e);
    return rc ? -1 : 0;
}

/* ======================================== the resync ======================================== */

enum phase { PH_LIST, PH_WEIGH, PH_ABSENT, PH_DONE, PH_ENDED };

struct item {
    char id[ID_BUFSZ];
    const json_value *vm;
    struct cs_reply r; /* when the VM was read again */
};

struct resync {
    struct resync_config cfg; /* cfg.partitions points at parts */
    int32_t *parts;
    struct cloudstack *cs;
    struct pdns_store *st;
    resync_vm_fn fn;
    struct resync_batch_path path; /* all NULL: each VM through fn */
    resync_store_fn store_done;    /* NULL: nobody watches the database */
    void *ud;
    enum phase phase;
    struct cs_vm_listing *listing;
    const json_value *const *page;
    size_t page_n, page_pos;
    struct strmap *touched; /* VMs whose events were processed since the page was fetched */
    struct pdns_owner *absent;
    size_t nabsent, absent_pos;
    struct item *items;
    enum resync_vm_outcome *outs;
    struct resync_vm *want;      /* the batch's desired records (set-based path) */
    struct pdns_vm_records *set; /* of those, the ones to write */
    size_t *which;               /* set[j] is want[which[j]] */
    struct resync_plan *plan;
    struct resync_stats stats;
    unsigned transient_in_row;
    enum resync_result result;
    char why[512];
    long long t0, last_draw;
};

int resync_guard_allows(unsigned long remove, unsigned long owned, int max_percent, int force)
{
    if (force || remove == 0)
        return 1;
    /* remove/owned <= max_percent/100, in integers. */
    return (unsigned long long)remove * 100 <= (unsigned long long)owned * (unsigned)max_percent;
}

void resync_format_duration(double seconds, char out[16])
{
    /* Capped at 99h59m so the text always fits. */
    unsigned s = seconds <= 0 ? 0 : seconds >= 359999 ? 359999 : (unsigned)(seconds + 0.5);
    if (s < 60)
        snprintf(out, 16, "%us", s % 60);
    else if (s < 3600)
        snprintf(out, 16, "%um%02us", s / 60 % 60, s % 60);
    else
        snprintf(out, 16, "%uh%02um", s / 3600 % 100, s % 3600 / 60 % 60);
}

int resync_in_scope(const struct resync_config *cfg, const char *vm_id)
{
    if (cfg->partition_count <= 0)
        return 1;
    int32_t p = kafka_partition_for_key(vm_id, strlen(vm_id), cfg->partition_count);
    for (size_t i = 0; i < cfg->npartitions; i++)
        if (cfg->partitions[i] == p)
            return 1;
    return 0;
}

/* "0,2,3" (or "none"): the partitions a scoped resync covers, for its log lines. */
static void format_partitions(const struct resync_config *cfg, char *out, size_t outlen)
{
    size_t len = 0;
    snprintf(out, outlen, "none");
    for (size_t i = 0; i < cfg->npartitions && len < outlen; i++) {
        int n = snprintf(out + len, outlen - len, "%s%d", i ? "," : "", (int)cfg->partitions[i]);
        if (n < 0)
            break;
        len += (size_t)n;
    }
}

int resync_new(const struct resync_config *cfg, struct cloudstack *cs, struct pdns_store *st,
               resync_vm_fn fn, void *ud, struct resync **out, char *err, size_t errlen)
{
    *out = NULL;
    struct resync *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "resync: out of memory");
        return -1;
    }
    r->cfg = *cfg;
    if (r->cfg.batch == 0)
        r->cfg.batch = DEFAULT_BATCH;
    /* The caller's partition list changes on a rebalance; this resync keeps the one it began
     * with (the caller restarts it when the assignment changes). */
    r->cfg.partitions = NULL;
    if (cfg->partition_count > 0 && cfg->npartitions > 0) {
        r->parts = malloc(cfg->npartitions * sizeof *r->parts);
        if (!r->parts) {
            free(r);
            snprintf(err, errlen, "resync: out of memory");
            return -1;
        }
        memcpy(r->parts, cfg->partitions, cfg->npartitions * sizeof *r->parts);
        r->cfg.partitions = r->parts;
    } else {
        r->cfg.npartitions = 0;
    }
    r->cs = cs;
    r->st = st;
    r->fn = fn;
    r->ud = ud;
    r->items = calloc(r->cfg.batch, sizeof *r->items);
    r->outs = calloc(r->cfg.batch, sizeof *r->outs);
    r->want = calloc(r->cfg.batch, sizeof *r->want);
    r->set = calloc(r->cfg.batch, sizeof *r->set);
    r->which = calloc(r->cfg.batch, sizeof *r->which);
    if (!r->items || !r->outs || !r->want || !r->set || !r->which || strmap_new(&r->touched) != 0 ||
        (cfg->dry_run && resync_plan_new(&r->plan) != 0)) {
        resync_free(r);
        snprintf(err, errlen, "resync: out of memory");
        return -1;
    }
    if (cloudstack_listing_new(cs, cfg->page_size, &r->listing, err, errlen) != 0) {
        resync_free(r);
        return -1;
    }
    r->t0 = clock_ms();
    if (r->cfg.partition_count > 0) {
        char parts[256];
        format_partitions(&r->cfg, parts, sizeof parts);
        log_msg(LOG_LVL_INFO, LOG_MOD,
                "resync started%s: listing every VM, %u per page, handling those of partitions "
                "%s of %d",
                cfg->dry_run ? " (dry run: nothing is written)" : "", cfg->page_size, parts,
                (int)r->cfg.partition_count);
    } else {
        log_msg(LOG_LVL_INFO, LOG_MOD, "resync started%s: listing every VM, %u per page",
                cfg->dry_run ? " (dry run: nothing is written)" : "", cfg->page_size);
    }
    *out = r;
    return 0;
}

void resync_free(struct resync *r)
{
    if (!r)
        return;
    cloudstack_listing_free(r->listing);
    strmap_free(r->touched, NULL);
    free(r->absent);
    free(r->parts);
    free(r->items);
    free(r->outs);
    free(r->want);
    free(r->set);
    free(r->which);
    resync_plan_free(r->plan);
    free(r);
}

void resync_set_batch_path(struct resync *r, const struct resync_batch_path *path)
{
    r->path = *path;
}

void resync_set_store_observer(struct resync *r, resync_store_fn fn)
{
    r->store_done = fn;
}

/* t0_ms: when the transaction began (clock_ms), or < 0 for a read outside one. */
static void store_done(struct resync *r, csp_status st, long long t0_ms)
{
    if (r->store_done)
        r->store_done(r->ud, st, t0_ms < 0 ? -1.0 : (double)(clock_ms() - t0_ms) / 1000.0);
}

void resync_note_event(struct resync *r, const char *vm_id)
{
    char id[ID_BUFSZ];
    size_t i = 0;
    if (!r || r->phase != PH_LIST || !vm_id)
        return;
    for (; vm_id[i] && i < sizeof id - 1; i++)
        id[i] = (vm_id[i] >= 'A' && vm_id[i] <= 'Z') ? (char)(vm_id[i] + 32) : vm_id[i];
    id[i] = '\0';
    if (strmap_add(r->touched, id, NULL) < 0)
        log_msg(LOG_LVL_WARN, LOG_MOD, "out of memory noting the event of VM %s", id);
}

/* A graver result replaces a lesser one; of equal ones the first is kept, as later ones are
 * mostly its consequences. */
__attribute__((format(printf, 3, 4))) static void
set_result(struct resync *r, enum resync_result res, const char *fmt, ...)
{
    if (r->result >= res)
        return;
    r->result = res;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
}

static void draw_progress(struct resync *r, int final)
{
    long long now = clock_ms();
    if (!r->cfg.progress || (!final && now - r->last_draw < PROGRESS_EVERY_MS))
        return;
    r->last_draw = now;
    struct cs_listing_progress pg;
    cloudstack_listing_progress(r->listing, &pg);
    double elapsed = (double)(now - r->t0) / 1000.0;
    char el[16], left[16] = "?";
    resync_format_duration(elapsed, el);
    if (r->phase == PH_LIST && pg.pass == 1 && pg.pass_pages > 0 && pg.pages > 0) {
        /* The second pass (project VMs) usually takes a page or a few: counted as one. */
        unsigned todo = pg.pass_pages - (pg.pass_page < pg.pass_pages ? pg.pass_page : 0) + 1;
        resync_format_duration(elapsed / pg.pages * todo, left);
    } else if (r->phase != PH_LIST) {
        snprintf(left, sizeof left, "0s");
    }
    if (r->phase == PH_LIST)
        fprintf(stderr, "\r\033[Kresync: pass %d, page %u/%u, %zu VMs, %s elapsed, ~%s left",
                pg.pass > 2 ? 2 : pg.pass, pg.pass_page, pg.pass_pages, pg.vms, el, left);
    else
        fprintf(stderr, "\r\033[Kresync: %zu VMs listed, %zu absent VMs checked, %s elapsed",
                pg.vms, r->absent_pos, el);
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

static void account(struct resync *r, const struct item *it, enum resync_vm_outcome out)
{
    switch (out) {
    case RESYNC_VM_OK:
        r->transient_in_row = 0;
        if (r->phase == PH_ABSENT && !it->vm)
            r->stats.vms_gone++;
        return;
    case RESYNC_VM_SKIPPED:
    case RESYNC_VM_STORE_FAILED:
        r->transient_in_row = 0;
        r->stats.vms_failed++;
        return;
    case RESYNC_VM_RETRY:
    case RESYNC_VM_STORE_RETRY:
        r->stats.vms_failed++;
        if (++r->transient_in_row >= MAX_TRANSIENT_IN_ROW) {
            set_result(r, RESYNC_ABORTED,
                       "%d VMs in a row failed on CloudStack or the database (see the log): "
                       "the resync stopped early; nothing was removed that was not confirmed",
                       MAX_TRANSIENT_IN_ROW);
            r->phase = PH_DONE;
        }
        return;
    }
}

/* Several VMs per transaction: far fewer commits and SOA bumps. When the batch fails in the
 * database, its VMs are applied again one per transaction, so one bad VM costs only itself. */
static int run_batch_txn(struct resync *r, size_t k)
{
    struct pdns_apply_stats chunk = {0};
    char err[1024] = "";
    long long t0 = clock_ms();
    csp_status st = pdns_store_begin(r->st, err, sizeof err);
    for (size_t i = 0; st == CSP_OK && i < k; i++) {
        r->outs[i] = r->fn(r->ud, r->items[i].id, r->items[i].vm, 1, NULL, &chunk);
        if (r->outs[i] == RESYNC_VM_STORE_RETRY || r->outs[i] == RESYNC_VM_STORE_FAILED) {
            st = r->outs[i] == RESYNC_VM_STORE_RETRY ? CSP_TRANSIENT : CSP_PERMANENT;
            snprintf(err, sizeof err, "VM %s failed (see above)", r->items[i].id);
        }
    }
    if (st == CSP_OK)
        st = pdns_store_commit(r->st, &chunk, err, sizeof err);
    store_done(r, st, t0);
    if (st == CSP_OK) {
        pdns_apply_stats_add(&r->stats.records, &chunk);
        return 1;
    }
    log_msg(LOG_LVL_WARN, LOG_MOD,
            "a batch of %zu VMs failed in the database, applying them one by one: %s", k, err);
    return 0;
}

/* The writes of one batch (want[set[j]] for j < m) in one transaction of set-based statements.
 * Returns 1 when committed, 0 when rolled back (err says why). */
static int apply_set(struct resync *r, const size_t *which, size_t m, char *err, size_t errlen)
{
    struct pdns_apply_stats bumps = {0};
    for (size_t j = 0; j < m; j++) {
        const struct resync_vm *v = &r->want[which[j]];
        r->set[j] = (struct pdns_vm_records){.vm_id = v->vm_id, .recs = v->recs, .n = v->n};
    }
    long long t0 = clock_ms();
    csp_status st = pdns_store_apply_many_txn(r->st, r->set, m, &bumps, err, errlen);
    store_done(r, st, t0);
    if (st != CSP_OK)
        return 0;
    r->stats.records.zones_bumped += bumps.zones_bumped;
    for (size_t j = 0; j < m; j++) {
        struct resync_vm *v = &r->want[which[j]];
        v->stats = r->set[j].stats;
        pdns_apply_stats_add(&r->stats.records, &v->stats);
        r->path.applied(r->ud, v);
    }
    return 1;
}

/* The set-based batch: every VM's records first (CloudStack and the policy, no transaction
 * open), then one apply of them all. A VM the policy skipped or CloudStack failed on is left
 * out, as it would have been written nothing; when the database fails the batch, its VMs are
 * applied one per transaction, so one bad VM costs only itself. A service that keeps failing
 * is not asked for the rest of the batch (each try may last a timeout): those VMs count as
 * failed, and account ends the resync as it would have after their tries. */
static void run_batch_set(struct resync *r, size_t k)
{
    char err[1024];
    size_t m = 0;
    unsigned in_row = 0;
    for (size_t i = 0; i < k; i++) {
        struct resync_vm *v = &r->want[i];
        *v = (struct resync_vm){.vm_id = r->items[i].id, .vm = r->items[i].vm};
        if (in_row >= MAX_TRANSIENT_IN_ROW) {
            r->outs[i] = RESYNC_VM_RETRY;
            continue;
        }
        r->outs[i] = r->path.want(r->ud, v);
        in_row = r->outs[i] == RESYNC_VM_RETRY ? in_row + 1 : 0;
        if (r->outs[i] == RESYNC_VM_OK && v->apply)
            r->which[m++] = i;
    }
    /* One VM alone gains nothing from a batch, and would be applied twice when refused. */
    int one_by_one = m == 1;
    if (m > 1 && !apply_set(r, r->which, m, err, sizeof err)) {
        log_msg(LOG_LVL_WARN, LOG_MOD,
                "a batch of %zu VMs failed in the database, applying them one by one: %s", m, err);
        one_by_one = 1;
    }
    in_row = 0;
    for (size_t j = 0; j < m && one_by_one; j++) {
        enum resync_vm_outcome *out = &r->outs[r->which[j]];
        *out = in_row >= MAX_TRANSIENT_IN_ROW
                   ? RESYNC_VM_STORE_RETRY
                   : r->path.store_one(r->ud, &r->want[r->which[j]], &r->stats.records);
        in_row = *out == RESYNC_VM_STORE_RETRY ? in_row + 1 : 0;
    }
    for (size_t i = 0; i < k; i++) {
        free(r->want[i].recs);
        r->want[i].recs = NULL;
    }
}

static void run_batch(struct resync *r, size_t k)
{
    if (k == 0)
        return;
    if (!r->cfg.dry_run && r->path.want) {
        run_batch_set(r, k);
    } else if (r->cfg.dry_run || k == 1 || !run_batch_txn(r, k)) {
        for (size_t i = 0; i < k; i++)
            r->outs[i] =
                r->fn(r->ud, r->items[i].id, r->items[i].vm, 0, r->plan, &r->stats.records);
    }
    for (size_t i = 0; i < k && r->phase != PH_DONE; i++)
        account(r, &r->items[i], r->outs[i]);
}

static void free_items(struct resync *r, size_t k)
{
    for (size_t i = 0; i < k; i++)
        cs_reply_free(&r->items[i].r);
}

static void copy_id(char out[ID_BUFSZ], const char *id)
{
    size_t i = 0;
    for (; id && id[i] && i < ID_BUFSZ - 1; i++)
        out[i] = (id[i] >= 'A' && id[i] <= 'Z') ? (char)(id[i] + 32) : id[i];
    out[i] = '\0';
}

/* Reads vm_id now, into it. Returns 0, or -1 (logged, counted) when CloudStack failed. */
static int read_vm(struct resync *r, struct item *it, const char *why_reading)
{
    char err[1024];
    memset(&it->r, 0, sizeof it->r);
    csp_status st = cloudstack_get_vm(r->cs, it->id, &it->r, &it->vm, err, sizeof err);
    if (st == CSP_OK)
        return 0;
    log_msg(LOG_LVL_WARN, LOG_MOD, "vm=%s: cannot read the VM %s, left as it is: %s", it->id,
            why_reading, err);
    cs_reply_free(&it->r);
    account(r, it, st == CSP_TRANSIENT ? RESYNC_VM_RETRY : RESYNC_VM_SKIPPED);
    return -1;
}

static void step_page(struct resync *r)
{
    size_t k = 0;
    while (r->page_pos < r->page_n && k < r->cfg.batch && r->phase != PH_DONE) {
        struct item *it = &r->items[k];
        it->vm = r->page[r->page_pos++];
        memset(&it->r, 0, sizeof it->r);
        copy_id(it->id, json_get_str(it->vm, "id"));
        /* Another instance of the group owns its partition, and resyncs it. */
        if (!resync_in_scope(&r->cfg, it->id))
            continue;
        r->stats.vms_in_scope++;
        /* An event for it was applied after this page was read: the page is older. */
        if (strmap_get(r->touched, it->id, NULL) && read_vm(r, it, "again after its event") != 0)
            continue;
        k++;
    }
    run_batch(r, k);
    free_items(r, k);
}

static void step_fetch(struct resync *r)
{
    char err[1024];
    int done = 0;
    csp_status st =
        cloudstack_listing_next(r->listing, &r->page, &r->page_n, &done, err, sizeof err);
    struct cs_listing_progress pg;
    cloudstack_listing_progress(r->listing, &pg);
    r->stats.pages = pg.pages;
    r->page_pos = 0;
    strmap_clear(r->touched, NULL);
    if (st != CSP_OK) {
        r->page_n = 0;
        log_msg(LOG_LVL_WARN, LOG_MOD, "a listing page failed, so this resync removes nothing: %s",
                err);
        return;
    }
    r->stats.vms_listed += r->page_n;
    if (!done)
        return;
    char why[400];
    if (!cloudstack_listing_complete(r->listing, why, sizeof why)) {
        set_result(r, RESYNC_INCOMPLETE, "the listing is incomplete, so nothing was removed: %s",
                   why);
        r->phase = PH_DONE;
        return;
    }
    r->phase = PH_WEIGH;
}

static void step_weigh(struct resync *r)
{
    struct pdns_owner *own = NULL;
    size_t n = 0, k = 0;
    unsigned long total = 0, absent = 0;
    char err[1024];
    csp_status st = pdns_store_owners(r->st, &own, &n, &total, err, sizeof err);
    store_done(r, st, -1);
    if (st != CSP_OK) {
        set_result(r, RESYNC_ABORTED, "cannot read which VMs own records: %s", err);
        r->phase = PH_DONE;
        return;
    }
    /* Scoped: the guard weighs this instance's share only, as the other instances weigh theirs
     * (else a whole instance's VMs vanishing would hide below the group-wide percentage). */
    if (r->cfg.partition_count > 0)
        total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!resync_in_scope(&r->cfg, own[i].vm_id))
            continue;
        if (r->cfg.partition_count > 0)
            total += own[i].records;
        if (cloudstack_listing_has(r->listing, own[i].vm_id))
            continue;
        own[k++] = own[i];
        absent += own[i].records;
    }
    r->absent = own;
    r->nabsent = k;
    r->stats.vms_absent = k;
    r->stats.owned = total;
    r->stats.absent_recs = absent;
    r->phase = PH_ABSENT;
    if (resync_guard_allows(absent, total, r->cfg.max_delete_percent, r->cfg.force))
        return;
    set_result(r, RESYNC_GUARDED,
               "%zu VMs absent from CloudStack own %lu of the %lu owned records (%.1f%%, above "
               "RESYNC_MAX_DELETE_PERCENT=%d%%): nothing was removed. If these VMs are really "
               "gone, run `cs-pdns resync --force` (or set RESYNC_FORCE=true for one run)",
               k, absent, total, total ? 100.0 * (double)absent / (double)total : 0.0,
               r->cfg.max_delete_percent);
    log_msg(LOG_LVL_ERROR, LOG_MOD, "deletion guard: %s", r->why);
    r->phase = PH_DONE;
}

/* Each absent VM is asked for once more before its records go: the listing may have missed a
 * VM created meanwhile, and a VM that exists is simply reconciled with its current state. */
static void step_absent(struct resync *r)
{
    size_t k = 0;
    while (r->absent_pos < r->nabsent && k < r->cfg.batch && r->phase != PH_DONE) {
        struct item *it = &r->items[k];
        copy_id(it->id, r->absent[r->absent_pos++].vm_id);
        if (read_vm(r, it, "to confirm it is gone") == 0)
            k++;
    }
    run_batch(r, k);
    free_items(r, k);
    if (r->absent_pos >= r->nabsent && r->phase == PH_ABSENT)
        r->phase = PH_DONE;
}

static const char *result_name(enum resync_result res)
{
    static const char *const names[] = {"converged", "incomplete", "guarded", "aborted"};
    return names[res];
}

static void finish(struct resync *r)
{
    const struct resync_stats *s = &r->stats;
    if (r->result == RESYNC_CONVERGED && s->vms_failed > 0)
        set_result(r, RESYNC_INCOMPLETE, "%zu VMs could not be reconciled (see the log)",
                   s->vms_failed);
    r->stats.seconds = (double)(clock_ms() - r->t0) / 1000.0;
    draw_progress(r, 1);
    char scope[320] = "";
    if (r->cfg.partition_count > 0) {
        char parts[256];
        format_partitions(&r->cfg, parts, sizeof parts);
        snprintf(scope, sizeof scope, " in_scope=%zu partitions=%s/%d", s->vms_in_scope, parts,
                 (int)r->cfg.partition_count);
    }
    log_msg(r->result == RESYNC_CONVERGED ? LOG_LVL_INFO : LOG_LVL_WARN, LOG_MOD,
            "resync %s%s in %.1fs: vms=%zu%s pages=%u added=%u removed=%u updated=%u "
            "unchanged=%u no_zone=%u foreign=%u failed=%zu absent=%zu gone=%zu%s%s",
            result_name(r->result), r->cfg.dry_run ? " (dry run, nothing written)" : "", s->seconds,
            s->vms_listed, scope, s->pages, s->records.added, s->records.removed,
            s->records.updated, s->records.unchanged, s->records.no_zone, s->records.foreign,
            s->vms_failed, s->vms_absent, s->vms_gone, *r->why ? ": " : "", r->why);
    r->phase = PH_ENDED;
}

int resync_step(struct resync *r)
{
    switch (r->phase) {
    case PH_LIST:
        if (r->page_pos < r->page_n)
            step_page(r);
        else
            step_fetch(r);
        break;
    case PH_WEIGH:
        step_weigh(r);
        break;
    case PH_ABSENT:
        step_absent(r);
        break;
    case PH_DONE:
        finish(r);
        return 0;
    case PH_ENDED:
        return 0;
    }
    draw_progress(r, 0);
    return 1;
}

void resync_stop(struct resync *r)
{
    if (r->phase != PH_ENDED) {
        set_result(r, RESYNC_ABORTED, "stopped by a signal before the end");
        r->phase = PH_DONE;
        finish(r);
    }
}

enum resync_result resync_result(const struct resync *r, char *why, size_t whylen)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", r->why);
    return r->result;
}

const struct resync_stats *resync_get_stats(const struct resync *r)
{
    return &r->stats;
}

int resync_retry_soon(const struct resync *r)
{
    struct cs_listing_progress pg;
    cloudstack_listing_progress(r->listing, &pg);
    return r->result == RESYNC_ABORTED || pg.failed_pages > 0;
}

static int report_text(const struct resync *r, textbuf *out)
{
    const struct resync_stats *s = &r->stats;
    int rc = 0;
    char dur[16];
    if (r->plan)
        rc |= resync_plan_write(r->plan, 0, out);
    if (r->nabsent && (r->plan || r->result == RESYNC_GUARDED)) {
        rc |= textbuf_puts(out, "absent from CloudStack\n");
        for (size_t i = 0; i < r->nabsent; i++)
            rc |= textbuf_printf(out, "  vm=%s records=%u\n", r->absent[i].vm_id,
                                 r->absent[i].records);
    }
    resync_format_duration(s->seconds, dur);
    rc |= textbuf_printf(out,
                         "result=%s dry_run=%s vms=%zu pages=%u added=%u removed=%u updated=%u "
                         "unchanged=%u no_zone=%u hand_made=%u failed=%zu absent=%zu gone=%zu "
                         "owned=%lu duration=%s\n",
                         result_name(r->result), r->cfg.dry_run ? "yes" : "no", s->vms_listed,
                         s->pages, s->records.added, s->records.removed, s->records.updated,
                         s->records.unchanged, s->records.no_zone, s->records.foreign,
                         s->vms_failed, s->vms_absent, s->vms_gone, s->owned, dur);
    if (*r->why)
        rc |= textbuf_printf(out, "why: %s\n", r->why);
    return rc;
}

static int report_json(const struct resync *r, textbuf *out)
{
    const struct resync_stats *s = &r->stats;
    char why[400];
    int complete = cloudstack_listing_complete(r->listing, why, sizeof why);
    int rc = textbuf_printf(out, "{\"dry_run\":%s,\"result\":\"%s\",\"why\":",
                            r->cfg.dry_run ? "true" : "false", result_name(r->result));
    rc |= *r->why ? json_write_string(out, r->why, strlen(r->why)) : textbuf_puts(out, "null");
    rc |= textbuf_printf(out, ",\"listing\":{\"complete\":%s,\"pages\":%u,\"vms\":%zu},",
                         complete ? "true" : "false", s->pages, s->vms_listed);
    if (r->plan)
        rc |= resync_plan_write(r->plan, 1, out);
    else
        rc |= textbuf_puts(out, "\"zones\":[],\"skipped\":[]");
    rc |= textbuf_puts(out, ",\"absent\":[");
    for (size_t i = 0; i < r->nabsent; i++) {
        rc |= textbuf_puts(out, i ? ",{\"vm\":" : "{\"vm\":");
        rc |= json_write_string(out, r->absent[i].vm_id, strlen(r->absent[i].vm_id));
        rc |= textbuf_printf(out, ",\"records\":%u}", r->absent[i].records);
    }
    rc |= textbuf_printf(out,
                         "],\"guard\":{\"owned_records\":%lu,\"absent_records\":%lu,"
                         "\"max_percent\":%d,\"forced\":%s,\"tripped\":%s},",
                         s->owned, s->absent_recs, r->cfg.max_delete_percent,
                         r->cfg.force ? "true" : "false",
                         r->result == RESYNC_GUARDED ? "true" : "false");
    rc |= textbuf_printf(out,
                         "\"totals\":{\"vms\":%zu,\"failed\":%zu,\"absent\":%zu,\"gone\":%zu,"
                         "\"added\":%u,\"removed\":%u,\"updated\":%u,\"unchanged\":%u,"
                         "\"no_zone\":%u,\"hand_made\":%u},\"seconds\":%.3f}\n",
                         s->vms_listed, s->vms_failed, s->vms_absent, s->vms_gone, s->records.added,
                         s->records.removed, s->records.updated, s->records.unchanged,
                         s->records.no_zone, s->records.foreign, s->seconds);
    return rc;
}

int resync_report(const struct resync *r, int json, textbuf *out)
{
    return (json ? report_json(r, out) : report_text(r, out)) ? -1 : 0;
}

/* ======================================= migration ======================================== */

int resync_adopt_cs_mapping(const struct settings *s, int dry_run, FILE *out, char *err,
                            size_t errlen)
{
    struct pdns_store *st;
    struct pdns_adopt_stats a;
    csp_status rc = dry_run ? pdns_store_open_readonly(s, &st, err, errlen)
                            : pdns_store_open(s, &st, err, errlen);
    if (rc != CSP_OK)
        return rc == CSP_PERMANENT ? 2 : 1;
    rc = pdns_store_adopt_cs_mapping(st, dry_run, &a, err, errlen);
    pdns_store_free(st);
    if (rc != CSP_OK)
        return 1;
    fprintf(out,
            "cs_mapping: %lu mappings of %lu VMs name %lu records; %s %lu ownerships (%lu were "
            "owned already); %lu mappings name no record\n",
            a.mappings, a.vms, a.records, dry_run ? "would adopt" : "adopted", a.adopted, a.already,
            a.missing);
    if (dry_run)
        fprintf(out, "dry run: nothing was written; run without --dry-run to adopt\n");
    else
        fprintf(out, "next: `cs-pdns resync --dry-run` shows what a resync would change, then "
                     "`cs-pdns resync` converges the adopted records\n");
    return 0;
}
