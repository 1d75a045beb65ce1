/* pdns_rectify.c -- ordername, auth and empty non-terminals for the names cs-pdns changed, as
 * PowerDNS 4.7's `pdnsutil rectify-zone` computes them. Must not: start or end transactions,
 * or write rows other than those at the given names and their ancestors below the apex. */
#include "pdns_rectify.h"

#include <ctype.h>
#include <mysqld_error.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "strmap.h"
#include "strpool.h"
#include "textbuf.h"

#define NAME_BUFSZ 256
#define FIELD_BUFSZ 1024
/* Placeholders per IN (...) list: far below MySQL's 65535, and a statement stays small. */
#define CHUNK 400
/* PowerDNS clamps NSEC3 iterations to max-nsec3-iterations (default 100) when signing. */
#define MAX_NSEC3_ITERATIONS 100

enum mode { MODE_UNSIGNED, MODE_NSEC, MODE_NSEC3 };

struct zone_info {
    enum mode mode;
    int presigned, narrow, optout;
    unsigned iterations;
    unsigned char salt[255];
    size_t saltlen;
};

struct row {
    long long id;
    size_t node;
    int type_null, ord_null, auth;
    char type[16];
    const char *ord; /* in ctx's strs */
};

/* One name: a given one or an ancestor of one, strictly below the apex (or the apex itself when
 * given). Flags describe its enabled rows. */
struct node {
    const char *name; /* in ctx's strs: a given name, its ancestors point into its copy */
    int given, apex;
    int known; /* its rows came with the call (pdns_rectify_known): not read */
    int real, has_ns, has_ds, has_non_ns, ent_rows;
    int scan;                     /* descendants outside the node set decide its ENT state */
    size_t r0, rn;                /* its rows: rows[r0 .. r0 + rn) once read_rows sorted them */
    int d_exists, d_auth, d_elig; /* some real descendant; one authoritative; one NSEC3-listed */
};

struct ctx {
    MYSQL *db;
    struct pdns_rectify_stmts *stmts;
    const struct pdns_rectify_known *known;
    long long domain_id;
    const char *zone;
    size_t zlen;
    struct zone_info zi;
    struct node *nodes;
    size_t nn, ncap;
    struct row *rows;
    size_t nr, rcap;
    char **dnames; /* delegations (non-apex NS owners) found below scanned names, sorted */
    size_t nd, dcap;
    int any_ns;      /* some node is a delegation; without it and dnames none is */
    struct upd *upd; /* writes, gathered so that each kind goes out in few statements */
    size_t nu, ucap;
    const struct node **del, **ins;
    char (*ins_ord)[NAME_BUFSZ];
    int *ins_auth, *ins_hasord;
    size_t ndel, nins;
    char *err;
    size_t errlen;
    struct strpool strs; /* the node names and the orderings read */
};

struct upd {
    long long id;
    int has_ord, auth;
    char ord[NAME_BUFSZ];
};

struct prm {
    enum { P_STR, P_INT, P_NULL } kind;
    const char *s;
    long long i;
};

static csp_status fail(struct ctx *c, csp_status rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static csp_status fail(struct ctx *c, csp_status rc, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Same classes as the store: a retry of the whole transaction can cure these. */
static csp_status classify(unsigned no)
{
    if ((no >= 2000 && no <= 2999) || no == ER_LOCK_DEADLOCK || no == ER_LOCK_WAIT_TIMEOUT ||
        no == ER_QUERY_INTERRUPTED || no == ER_CONNECTION_KILLED || no == ER_SERVER_SHUTDOWN ||
        no == ER_CON_COUNT_ERROR || no == ER_TABLEACCESS_DENIED_ERROR ||
        no == ER_COLUMNACCESS_DENIED_ERROR || no == 4031)
        return CSP_TRANSIENT;
    return CSP_PERMANENT;
}

/* ctx names a zone, or (domain_id 0) none: the statement was about several. */
static csp_status stmt_fail(struct ctx *c, MYSQL_STMT *st, const char *what)
{
    unsigned no = st ? mysql_stmt_errno(st) : mysql_errno(c->db);
    const char *msg = st ? mysql_stmt_error(st) : mysql_error(c->db);
    if (!c->domain_id)
        return fail(c, classify(no),
                    "MySQL: %s (errno %u) while %s; DNSSEC fields were not updated, the "
                    "transaction must be rolled back",
                    msg, no, what);
    return fail(c, classify(no),
                "MySQL: %s (errno %u) while %s for zone %s (id %lld); DNSSEC fields of the zone "
                "were not updated, the transaction must be rolled back",
                msg, no, what, c->zone, c->domain_id);
}

/* ---- kept statements ------------------------------------------------------------------------ */

/* Enough for every fixed statement and the padded sizes of the IN lists (pad_rows), with room
 * for the rarer statements whose text varies (scans, updates, ENT inserts) to come and go. */
#define STMT_SLOTS 24

struct stmt_slot {
    char *sql; /* NULL: free */
    MYSQL_STMT *st;
    unsigned long long used; /* when it last ran: the least recent one makes room */
};

struct pdns_rectify_stmts {
    struct stmt_slot slot[STMT_SLOTS];
    char collation[64]; /* of records.name on this connection; "" until read */
    unsigned long long clock;
};

int pdns_rectify_stmts_new(struct pdns_rectify_stmts **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : -1;
}

static void slot_close(struct stmt_slot *s)
{
    if (s->st)
        mysql_stmt_close(s->st);
    free(s->sql);
    memset(s, 0, sizeof *s);
}

void pdns_rectify_stmts_clear(struct pdns_rectify_stmts *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < STMT_SLOTS; i++)
        slot_close(&s->slot[i]);
    s->collation[0] = '\0';
}

void pdns_rectify_stmts_free(struct pdns_rectify_stmts *s)
{
    pdns_rectify_stmts_clear(s);
    free(s);
}

/* The kept statement for sql, prepared now when there is none. NULL with c->err filled. */
static MYSQL_STMT *stmt_get(struct ctx *c, const char *sql, const char *what, csp_status *rc)
{
    struct pdns_rectify_stmts *k = c->stmts;
    struct stmt_slot *lru = &k->slot[0];
    for (size_t i = 0; i < STMT_SLOTS; i++) {
        struct stmt_slot *s = &k->slot[i];
        if (s->sql && !strcmp(s->sql, sql)) {
            s->used = ++k->clock;
            return s->st;
        }
        if (!s->sql || (lru->sql && s->used < lru->used))
            lru = s;
    }
    slot_close(lru);
    MYSQL_STMT *st = mysql_stmt_init(c->db);
    char *copy = strdup(sql);
    if (!st || !copy) {
        if (st)
            mysql_stmt_close(st);
        free(copy);
        *rc = fail(c, CSP_TRANSIENT, "out of memory while %s for zone %s", what, c->zone);
        return NULL;
    }
    if (mysql_stmt_prepare(st, sql, (unsigned long)strlen(sql))) {
        *rc = stmt_fail(c, st, what);
        mysql_stmt_close(st);
        free(copy);
        return NULL;
    }
    *lru = (struct stmt_slot){copy, st, ++k->clock};
    return st;
}

/* Done with st's result: ok keeps the statement for the next run; after a failure its state is
 * unknown (a deadlock can be reported halfway through the rows), so it is closed. */
static void stmt_done(struct ctx *c, MYSQL_STMT *st, int ok)
{
    for (size_t i = 0; i < STMT_SLOTS; i++) {
        struct stmt_slot *s = &c->stmts->slot[i];
        if (s->st != st)
            continue;
        if (ok)
            mysql_stmt_free_result(st);
        else
            slot_close(s);
        return;
    }
}

/* Executes sql (a kept statement) with params; on CSP_OK *out holds the statement with its
 * results stored, for stmt_done, or nothing is returned when out is NULL (writes). */
static csp_status run(struct ctx *c, const char *sql, const struct prm *p, size_t np,
                      MYSQL_STMT **out, const char *what)
{
    MYSQL_BIND *b = np ? calloc(np, sizeof *b) : NULL;
    unsigned long *lens = np ? calloc(np, sizeof *lens) : NULL;
    MYSQL_STMT *st = NULL;
    csp_status rc = CSP_OK;

    if (out)
        *out = NULL;
    if (np && (!b || !lens)) {
        rc = fail(c, CSP_TRANSIENT, "out of memory while %s for zone %s", what, c->zone);
        goto done;
    }
    if (!(st = stmt_get(c, sql, what, &rc)))
        goto done;
    for (size_t i = 0; i < np; i++) {
        if (p[i].kind == P_STR) {
            lens[i] = (unsigned long)strlen(p[i].s);
            b[i].buffer_type = MYSQL_TYPE_STRING;
            b[i].buffer = (void *)p[i].s;
            b[i].buffer_length = lens[i];
            b[i].length = &lens[i];
        } else if (p[i].kind == P_INT) {
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = (void *)&p[i].i;
        } else {
            b[i].buffer_type = MYSQL_TYPE_NULL;
        }
    }
    if ((np && mysql_stmt_bind_param(st, b)) || mysql_stmt_execute(st) ||
        (mysql_stmt_field_count(st) && mysql_stmt_store_result(st))) {
        rc = stmt_fail(c, st, what);
        stmt_done(c, st, 0);
        goto done;
    }
    if (out)
        *out = st;
    else
        stmt_done(c, st, 1);
done:
    free(b);
    free(lens);
    return rc;
}

/* Fetches the next row of st into ncol string columns (NULL sets isnull). Returns 1 for a row,
 * 0 at the end, -1 on error (err filled). */
static int fetch(struct ctx *c, MYSQL_STMT *st, char cols[][FIELD_BUFSZ], my_bool *isnull,
                 unsigned ncol, const char *what, csp_status *rc)
{
    MYSQL_BIND b[8];
    unsigned long len[8];
    memset(b, 0, sizeof b);
    for (unsigned i = 0; i < ncol; i++) {
        b[i].buffer_type = MYSQL_TYPE_STRING;
        b[i].buffer = cols[i];
        b[i].buffer_length = FIELD_BUFSZ - 1;
        b[i].length = &len[i];
        b[i].is_null = &isnull[i];
    }
    if (mysql_stmt_bind_result(st, b)) {
        *rc = stmt_fail(c, st, what);
        return -1;
    }
    int r = mysql_stmt_fetch(st);
    if (r == MYSQL_NO_DATA)
        return 0;
    if (r == 1) {
        *rc = stmt_fail(c, st, what);
        return -1;
    }
    if (r == MYSQL_DATA_TRUNCATED) {
        *rc = fail(c, CSP_PERMANENT, "a value longer than %d bytes while %s for zone %s",
                   FIELD_BUFSZ - 1, what, c->zone);
        return -1;
    }
    for (unsigned i = 0; i < ncol; i++)
        cols[i][isnull[i] ? 0 : len[i]] = '\0';
    return 1;
}

/* ---- names ----------------------------------------------------------------------------------- */

/* The parent of name (text after the first dot); NULL for a single label. */
static const char *parent(const char *name)
{
    const char *dot = strchr(name, '.');
    return dot ? dot + 1 : NULL;
}

static int in_zone(const struct ctx *c, const char *name)
{
    size_t len = strlen(name);
    if (len == c->zlen)
        return strcmp(name, c->zone) == 0;
    return len > c->zlen && name[len - c->zlen - 1] == '.' &&
           strcmp(name + len - c->zlen, c->zone) == 0;
}

static int cmp_node(const void *a, const void *b)
{
    return strcmp(((const struct node *)a)->name, ((const struct node *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static struct node *find_node(struct ctx *c, const char *name)
{
    struct node key = {.name = name};
    return bsearch(&key, c->nodes, c->nn, sizeof *c->nodes, cmp_node);
}

/* Appends a node for name, which stays put as long as ctx (in its strs); collect adds each name
 * once and sorts the nodes afterwards. */
static int add_node(struct ctx *c, const char *name, int given)
{
    if (c->nn == c->ncap) {
        size_t cap = c->ncap ? 2 * c->ncap : 32;
        struct node *n = realloc(c->nodes, cap * sizeof *n);
        if (!n)
            return -1;
        c->nodes = n;
        c->ncap = cap;
    }
    struct node *n = &c->nodes[c->nn++];
    memset(n, 0, sizeof *n);
    n->name = name;
    n->given = given;
    n->apex = strcmp(name, c->zone) == 0;
    return 0;
}

/* Delegation (a non-apex NS owner) at name: from the node set or from the scan. */
static int is_deleg(struct ctx *c, const char *name)
{
    struct node *n = find_node(c, name);
    if (n)
        return n->has_ns;
    char *key = (char *)name;
    return c->nd && bsearch(&key, c->dnames, c->nd, sizeof *c->dnames, cmp_str) != NULL;
}

/* Whether a delegation sits at name (when self) or at an ancestor strictly below the apex. */
static int under_deleg(struct ctx *c, const char *name, int self)
{
    if (!c->any_ns && !c->nd)
        return 0;
    for (const char *a = self ? name : parent(name); a && strcmp(a, c->zone); a = parent(a))
        if (is_deleg(c, a))
            return 1;
    return 0;
}

/* ---- NSEC/NSEC3 ordername -------------------------------------------------------------------- */

/* NSEC: the name relative to the apex, labels reversed, space separated ("" at the apex). */
static void nsec_order(const struct ctx *c, const char *name, char *out, size_t outlen)
{
    size_t rel = strlen(name) == c->zlen ? 0 : strlen(name) - c->zlen - 1;
    size_t off = 0;
    out[0] = '\0';
    while (rel > 0) {
        size_t start = rel;
        while (start > 0 && name[start - 1] != '.')
            start--;
        off += (size_t)snprintf(out + off, outlen - off, "%s%.*s", off ? " " : "",
                                (int)(rel - start), name + start);
        rel = start ? start - 1 : 0;
        if (off >= outlen)
            break;
    }
}

/* NSEC3 (RFC 5155 section 5): iterated, salted SHA-1 of the canonical wire form, base32hex. */
static void nsec3_order(const struct ctx *c, const char *name, char *out)
{
    static const char b32[] = "0123456789abcdefghijklmnopqrstuv";
    unsigned char wire[NAME_BUFSZ + 2 + 255], md[SHA_DIGEST_LENGTH];
    size_t w = 0;
    for (const char *l = name; l; l = parent(l)) {
        const char *dot = strchr(l, '.');
        size_t len = dot ? (size_t)(dot - l) : strlen(l);
        wire[w++] = (unsigned char)len;
        for (size_t i = 0; i < len; i++)
            wire[w++] = (unsigned char)tolower((unsigned char)l[i]);
    }
    wire[w++] = 0;
    memcpy(wire + w, c->zi.salt, c->zi.saltlen);
    SHA1(wire, w + c->zi.saltlen, md);
    for (unsigned i = 0; i < c->zi.iterations; i++) {
        memcpy(wire, md, sizeof md);
        memcpy(wire + sizeof md, c->zi.salt, c->zi.saltlen);
        SHA1(wire, sizeof md + c->zi.saltlen, md);
    }
    size_t o = 0;
    for (size_t bit = 0; bit < 8 * sizeof md; bit += 5) {
        unsigned v = 0;
        for (size_t k = 0; k < 5; k++)
            v = (v << 1) | ((md[(bit + k) / 8] >> (7 - (bit + k) % 8)) & 1u);
        out[o++] = b32[v];
    }
    out[o] = '\0';
}

/* ---- reading --------------------------------------------------------------------------------- */

static int hexval(int ch)
{
    return isdigit(ch) ? ch - '0' : (isxdigit(ch) ? tolower(ch) - 'a' + 10 : -1);
}

/* NSEC3PARAM metadata text: "algorithm flags iterations salt", salt in hex or "-". */
static int parse_nsec3param(struct zone_info *zi, const char *s)
{
    unsigned alg, flags, iter;
    char salt[FIELD_BUFSZ];
    if (sscanf(s, "%u %u %u %1023s", &alg, &flags, &iter, salt) != 4)
        return -1;
    zi->optout = (flags & 1u) != 0;
    zi->iterations = iter > MAX_NSEC3_ITERATIONS ? MAX_NSEC3_ITERATIONS : iter;
    zi->saltlen = 0;
    if (strcmp(salt, "-")) {
        size_t len = strlen(salt);
        if (len % 2 || len / 2 > sizeof zi->salt)
            return -1;
        for (size_t i = 0; i < len; i += 2) {
            int hi = hexval((unsigned char)salt[i]), lo = hexval((unsigned char)salt[i + 1]);
            if (hi < 0 || lo < 0)
                return -1;
            zi->salt[zi->saltlen++] = (unsigned char)(hi * 16 + lo);
        }
    }
    return 0;
}

/* What a zone's keys and metadata say, as read (one zone's rows, or several zones' at once). */
struct zone_meta {
    int keys, presigned, narrow, seen_param, seen_narrow;
    char param[FIELD_BUFSZ];
};

static void meta_note(struct zone_meta *m, const char *kind, const char *v)
{
    if (!strcmp(kind, "#keys"))
        m->keys = atoi(v);
    else if (!strcmp(kind, "PRESIGNED"))
        m->presigned |= !strcmp(v, "1");
    else if (!strcmp(kind, "NSEC3PARAM") && !m->seen_param++)
        snprintf(m->param, sizeof m->param, "%s", v);
    else if (!strcmp(kind, "NSEC3NARROW") && !m->seen_narrow++)
        m->narrow = !strcmp(v, "1");
}

static csp_status zone_settle(struct ctx *c, const struct zone_meta *m)
{
    c->zi.presigned = m->presigned;
    c->zi.narrow = m->narrow;
    c->zi.mode = m->keys > 0 ? (m->param[0] ? MODE_NSEC3 : MODE_NSEC) : MODE_UNSIGNED;
    if (c->zi.mode == MODE_NSEC3 && parse_nsec3param(&c->zi, m->param))
        return fail(c, CSP_PERMANENT,
                    "zone %s: NSEC3PARAM metadata \"%s\" is not \"1 FLAGS ITERATIONS SALT\"; "
                    "fix it with pdnsutil set-nsec3",
                    c->zone, m->param);
    if (c->zi.mode != MODE_NSEC3)
        c->zi.narrow = 0;
    return CSP_OK;
}

/* The keys and metadata of zones ids[0..n), one statement for them all (ctx names no zone). */
static csp_status read_zones(struct ctx *c, const long long *ids, size_t n, struct zone_meta *out)
{
    static const char sql[] =
        "SELECT m.domain_id, m.kind, m.content FROM JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH "
        "'$')) j STRAIGHT_JOIN domainmetadata m ON m.domain_id = j.id AND m.kind IN ('PRESIGNED', "
        "'NSEC3PARAM', 'NSEC3NARROW') UNION ALL SELECT k.domain_id, '#keys', COUNT(*) FROM "
        "JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH '$')) j STRAIGHT_JOIN cryptokeys k ON "
        "k.domain_id = j.id AND k.active = 1 GROUP BY k.domain_id";
    const char *what = "reading the zones' keys and DNSSEC metadata";
    textbuf js = TEXTBUF_INIT;
    int oom = textbuf_putc(&js, '[') != 0;
    for (size_t i = 0; i < n; i++)
        oom |= textbuf_printf(&js, i ? ",%lld" : "%lld", ids[i]) != 0;
    oom |= textbuf_putc(&js, ']') != 0;
    if (oom) {
        textbuf_free(&js);
        return fail(c, CSP_TRANSIENT, "out of memory while %s", what);
    }
    struct prm p[2] = {{P_STR, textbuf_str(&js), 0}, {P_STR, textbuf_str(&js), 0}};
    char cols[3][FIELD_BUFSZ];
    my_bool isnull[3];
    MYSQL_STMT *st;
    csp_status rc = run(c, sql, p, 2, &st, what);
    int r = 0;
    textbuf_free(&js);
    if (rc != CSP_OK)
        return rc;
    while ((r = fetch(c, st, cols, isnull, 3, what, &rc)) == 1) {
        long long id = strtoll(cols[0], NULL, 10);
        for (size_t i = 0; i < n; i++)
            if (ids[i] == id)
                meta_note(&out[i], cols[1], isnull[2] ? "" : cols[2]);
    }
    stmt_done(c, st, r >= 0);
    return r < 0 ? rc : CSP_OK;
}

/* Copies src into dst[0..size), cut at size - 1 bytes: column widths bound every value here. */
static void copy(char *dst, size_t size, const char *src)
{
    size_t len = strnlen(src, size - 1);
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* Adds row id at node n; type and ord NULL where the column is NULL. Returns 0, or -1 when
 * memory ran out. */
static int add_row(struct ctx *c, const struct node *n, long long id, const char *type,
                   const char *ord, int auth)
{
    if (c->nr == c->rcap) {
        size_t cap = c->rcap ? 2 * c->rcap : 64;
        struct row *grown = realloc(c->rows, cap * sizeof *grown);
        if (!grown)
            return -1;
        c->rows = grown;
        c->rcap = cap;
    }
    struct row *w = &c->rows[c->nr++];
    *w = (struct row){.id = id, .node = (size_t)(n - c->nodes), .auth = auth != 0};
    w->type_null = type == NULL;
    copy(w->type, sizeof w->type, type ? type : "");
    w->ord_null = ord == NULL;
    w->ord = ord ? strpool_dup(&c->strs, ord) : "";
    return w->ord ? 0 : -1;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* The number of rows a statement of k rows is padded to (repeating its last row) where repeats
 * change nothing: a few sizes, so that a few kept statements serve every batch. */
static size_t pad_rows(size_t k)
{
    size_t n = 4;
    while (n < k && n < CHUNK)
        n *= 4;
    return n < CHUNK ? n : CHUNK;
}

/* Builds "<head> (?,?,...)<tail>" for k placeholders. */
static char *in_list_sql(const char *head, size_t k, const char *sep, const char *tail)
{
    size_t len = strlen(head) + k * (strlen(sep) + 1) + strlen(tail) + 4;
    char *sql = malloc(len);
    if (!sql)
        return NULL;
    size_t off = (size_t)snprintf(sql, len, "%s", head);
    for (size_t i = 0; i < k; i++)
        off += (size_t)snprintf(sql + off, len - off, "%s", i ? sep : "");
    snprintf(sql + off, len - off, "%s", tail);
    return sql;
}

static int cmp_row(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    return x->node != y->node ? (x->node > y->node) - (x->node < y->node)
                              : (x->id > y->id) - (x->id < y->id);
}

/* The collation of records.name, read once per connection: the names a statement joins with
 * must carry it, or the (name, type) index cannot serve the join. */
static csp_status name_collation(struct ctx *c)
{
    static const char sql[] =
        "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = 'records' AND COLUMN_NAME = 'name'";
    const char *what = "reading the collation of records.name";
    char *coll = c->stmts->collation, cols[1][FIELD_BUFSZ];
    my_bool isnull[1];
    MYSQL_STMT *st;
    csp_status rc;
    int r;

    if (coll[0])
        return CSP_OK;
    if ((rc = run(c, sql, NULL, 0, &st, what)) != CSP_OK)
        return rc;
    r = fetch(c, st, cols, isnull, 1, what, &rc);
    stmt_done(c, st, r >= 0);
    if (r < 0)
        return rc;
    size_t len = r == 1 && !isnull[0] ? strlen(cols[0]) : 0;
    int ok = len > 0 && len < sizeof c->stmts->collation;
    for (size_t i = 0; ok && i < len; i++)
        ok = isalnum((unsigned char)cols[0][i]) || cols[0][i] == '_';
    if (!ok)
        return fail(c, CSP_PERMANENT,
                    "cannot read the collation of records.name: load PowerDNS's schema.mysql.sql "
                    "(4.x) into the database");
    memcpy(coll, cols[0], len + 1);
    return CSP_OK;
}

/* Sorts the rows read, drops repeats (a row joined with two names that its collation holds
 * equal) and sets the node flags from them. */
static void index_rows(struct ctx *c)
{
    size_t u = 0;
    if (c->nr)
        qsort(c->rows, c->nr, sizeof *c->rows, cmp_row);
    for (size_t j = 0; j < c->nr; j++)
        if (!u || c->rows[u - 1].id != c->rows[j].id || c->rows[u - 1].node != c->rows[j].node)
            c->rows[u++] = c->rows[j];
    c->nr = u;
    for (size_t j = c->nr; j-- > 0;) {
        const struct row *w = &c->rows[j];
        struct node *n = &c->nodes[w->node];
        n->r0 = j;
        n->rn++;
        if (w->type_null) {
            n->ent_rows++;
            continue;
        }
        n->real = 1;
        if (!strcasecmp(w->type, "NS"))
            n->has_ns |= !n->apex;
        else
            n->has_non_ns = 1;
        n->has_ds |= !strcasecmp(w->type, "DS");
    }
    for (size_t i = 0; i < c->nn; i++)
        c->any_ns |= c->nodes[i].has_ns;
}

/* Marks the nodes whose rows the caller gave and adds those rows, as read_rows would read them:
 * the store has just read (or written) every row at most of the names it changed, and reading
 * them again was half the rectify's time in a backlog. */
static csp_status known_rows(struct ctx *c)
{
    const struct pdns_rectify_known *k = c->known;
    char buf[NAME_BUFSZ];
    if (!k)
        return CSP_OK;
    for (size_t i = 0; i < k->nnames; i++) {
        copy(buf, sizeof buf, k->names[i]);
        lower(buf);
        struct node *n = find_node(c, buf);
        if (n)
            n->known = 1;
    }
    for (size_t i = 0; i < k->nrows; i++) {
        const struct pdns_rectify_row *kr = &k->rows[i];
        copy(buf, sizeof buf, kr->name);
        lower(buf);
        struct node *n = find_node(c, buf);
        if (!n || !n->known)
            continue;
        if (add_row(c, n, kr->id, kr->type, kr->ordername, kr->auth))
            return fail(c, CSP_TRANSIENT, "out of memory taking the rows of zone %s", c->zone);
    }
    return CSP_OK;
}

/* All enabled rows at the node names (but those known_rows took), CHUNK names a statement. The
 * names come as one JSON array, so the statement's text never changes and one kept statement serves
 * every batch; joined through the (name, type) index, that is also about half the server time of an
 * IN list (whose range analysis costs per value). */
static csp_status read_rows(struct ctx *c)
{
    const char *what = "reading the rows at the changed names and their ancestors";
    char sql[512];
    textbuf js = TEXTBUF_INIT;
    csp_status rc = known_rows(c);
    size_t next = 0;

    if (rc == CSP_OK)
        rc = name_collation(c);
    if (rc != CSP_OK)
        return rc;
    snprintf(sql, sizeof sql,
             "SELECT r.id, r.name, r.type, r.ordername, r.auth FROM JSON_TABLE(?, '$[*]' COLUMNS "
             "(n VARCHAR(255) COLLATE %s PATH '$')) j STRAIGHT_JOIN records r FORCE INDEX "
             "(nametype_index) ON r.name = j.n WHERE r.domain_id = ? AND r.disabled = 0",
             c->stmts->collation);
    while (rc == CSP_OK) {
        size_t k = 0;
        int oom = 0;
        textbuf_reset(&js);
        oom |= textbuf_putc(&js, '[');
        for (; next < c->nn && k < CHUNK; next++) {
            const char *name = c->nodes[next].name;
            if (c->nodes[next].known)
                continue;
            oom |= (k++ && textbuf_putc(&js, ',')) || json_write_string(&js, name, strlen(name));
        }
        oom |= textbuf_putc(&js, ']');
        if (oom) {
            rc = fail(c, CSP_TRANSIENT, "out of memory while %s", what);
            break;
        }
        if (!k)
            break;
        struct prm p[2] = {{P_STR, textbuf_str(&js), 0}, {P_INT, NULL, c->domain_id}};
        MYSQL_STMT *st = NULL;
        if ((rc = run(c, sql, p, 2, &st, what)) != CSP_OK)
            break;
        char cols[5][FIELD_BUFSZ];
        my_bool isnull[5];
        int r;
        while ((r = fetch(c, st, cols, isnull, 5, what, &rc)) == 1) {
            lower(cols[1]);
            struct node *n = find_node(c, cols[1]);
            if (!n || n->known)
                continue;
            if (add_row(c, n, strtoll(cols[0], NULL, 10), isnull[2] ? NULL : cols[2],
                        isnull[3] ? NULL : cols[3], !isnull[4] && atoi(cols[4]) != 0)) {
                rc = fail(c, CSP_TRANSIENT, "out of memory while %s", what);
                r = -1;
                break;
            }
        }
        stmt_done(c, st, r >= 0);
    }
    textbuf_free(&js);
    if (rc == CSP_OK)
        index_rows(c);
    return rc;
}

/* ---- empty non-terminals ------------------------------------------------------------------- */

/* Folds a real name whose parent is p into the descendant flags of p and its ancestors. */
static void note_below(struct ctx *c, const char *p, int auth, int elig)
{
    for (const char *a = p; a && strcmp(a, c->zone); a = parent(a)) {
        struct node *e = find_node(c, a);
        if (!e || e->real || e->apex)
            continue;
        /* Whoever set e's flags set them on every ancestor too. */
        if (e->d_exists && (e->d_auth | auth) == e->d_auth && (e->d_elig | elig) == e->d_elig)
            break;
        e->d_exists = 1;
        e->d_auth |= auth;
        e->d_elig |= elig;
    }
}

/* Folds one real name below ENT candidates into their descendant flags. */
static void note_descendant(struct ctx *c, const char *name, const char *type)
{
    int auth = !under_deleg(c, name, 1);
    int elig = !under_deleg(c, name, 0) && (strcasecmp(type, "NS") || !c->zi.optout);
    note_below(c, parent(name), auth, elig);
}

static int add_dname(struct ctx *c, const char *name)
{
    if (c->nd == c->dcap) {
        size_t cap = c->dcap ? 2 * c->dcap : 16;
        char **n = realloc(c->dnames, cap * sizeof *n);
        if (!n)
            return -1;
        c->dnames = n;
        c->dcap = cap;
    }
    c->dnames[c->nd] = strdup(name);
    if (!c->dnames[c->nd])
        return -1;
    c->nd++;
    return 0;
}

struct found {
    char name[NAME_BUFSZ];
    char type[16];
};

static size_t labels(const char *name)
{
    size_t n = 1;
    for (; *name; name++)
        n += *name == '.';
    return n;
}

/* "(SUBSTRING_INDEX(name, '.', -L) IN (?, ...) OR ...)" matching the names below the top scan
 * candidates, one IN list per label count L; params p[1..] get the candidates in the same order.
 * An IN list is a binary search per row where "name LIKE '%.x' OR ..." tried every candidate. */
static char *below_filter(struct ctx *c, struct prm *p, size_t k)
{
    size_t len = 4, j = 1;
    for (size_t i = 0; i < c->nn; i++)
        len += c->nodes[i].scan == 2 ? 48 : 0;
    char *f = malloc(len);
    size_t off = 0;
    if (!f)
        return NULL;
    off += (size_t)snprintf(f + off, len - off, "(");
    for (size_t lab = 1; j <= k; lab++) {
        size_t n = 0;
        for (size_t i = 0; i < c->nn; i++) {
            if (c->nodes[i].scan != 2 || labels(c->nodes[i].name) != lab)
                continue;
            if (!n++)
                off +=
                    (size_t)snprintf(f + off, len - off, "%sSUBSTRING_INDEX(name, '.', -%zu) IN (?",
                                     j > 1 ? " OR " : "", lab);
            else
                off += (size_t)snprintf(f + off, len - off, ",?");
            p[j++] = (struct prm){P_STR, c->nodes[i].name, 0};
        }
        if (n)
            off += (size_t)snprintf(f + off, len - off, ")");
    }
    snprintf(f + off, len - off, ")");
    return f;
}

/* The rows below the top candidates, one by one: only needed when delegations sit below them. */
static csp_status scan_rows(struct ctx *c, const char *filter, const struct prm *p, size_t np)
{
    const char *what = "looking for remaining names below empty non-terminals";
    static const char head[] = "SELECT name, type FROM records WHERE domain_id = ? AND "
                               "disabled = 0 AND type IS NOT NULL AND ";
    char *sql = malloc(sizeof head + strlen(filter));
    struct found *fd = NULL;
    size_t nf = 0, fcap = 0;
    MYSQL_STMT *st = NULL;
    csp_status rc = CSP_OK;
    if (!sql)
        return fail(c, CSP_TRANSIENT, "out of memory while %s", what);
    strcpy(sql, head);
    strcat(sql, filter);
    rc = run(c, sql, p, np, &st, what);
    if (rc != CSP_OK)
        goto done;
    char cols[2][FIELD_BUFSZ];
    my_bool isnull[2];
    int r;
    while ((r = fetch(c, st, cols, isnull, 2, what, &rc)) == 1) {
        lower(cols[0]);
        if (strlen(cols[0]) >= NAME_BUFSZ)
            continue;
        if (nf == fcap) {
            size_t cap = fcap ? 2 * fcap : 256;
            struct found *n = realloc(fd, cap * sizeof *n);
            if (!n) {
                rc = fail(c, CSP_TRANSIENT, "out of memory while %s", what);
                goto done;
            }
            fd = n;
            fcap = cap;
        }
        copy(fd[nf].name, sizeof fd[nf].name, cols[0]);
        copy(fd[nf].type, sizeof fd[nf].type, cols[1]);
        if (!strcasecmp(cols[1], "NS") && !find_node(c, cols[0]) && add_dname(c, cols[0])) {
            rc = fail(c, CSP_TRANSIENT, "out of memory while %s", what);
            goto done;
        }
        nf++;
    }
    if (r < 0)
        goto done;
    if (c->nd)
        qsort(c->dnames, c->nd, sizeof *c->dnames, cmp_str);
    for (size_t i = 0; i < nf; i++)
        note_descendant(c, fd[i].name, fd[i].type);
done:
    if (st)
        stmt_done(c, st, rc == CSP_OK);
    free(sql);
    free(fd);
    return rc;
}

/* Settles the candidates whose ENT state the node set cannot decide. A name suffix cannot use an
 * index, so this reads the zone once, but returns only the distinct parents of the names below
 * the topmost candidates (whose descendants include those of the others). Without an NS row among
 * those names each of them is a plain authoritative name -- none is in the node set, or its
 * candidate would be settled -- so its parent alone fixes the flags; otherwise scan_rows reads
 * them one by one. */
static csp_status scan_descendants(struct ctx *c)
{
    const char *what = "looking for remaining names below empty non-terminals";
    static const char head[] =
        "SELECT SUBSTRING(name, LOCATE('.', name) + 1), MAX(type = 'NS') FROM records WHERE "
        "domain_id = ? AND disabled = 0 AND type IS NOT NULL AND ";
    size_t k = 0;
    for (size_t i = 0; i < c->nn; i++) {
        struct node *e = &c->nodes[i];
        if (!e->scan)
            continue;
        int top = 1;
        for (const char *a = parent(e->name); a && top && strcmp(a, c->zone); a = parent(a)) {
            struct node *an = find_node(c, a);
            top = !(an && an->scan);
        }
        e->scan = top ? 2 : 1;
        k += top;
    }
    if (!k)
        return CSP_OK;
    struct prm *p = calloc(k + 1, sizeof *p);
    char *filter = p ? below_filter(c, p, k) : NULL;
    char *sql = filter ? malloc(sizeof head + strlen(filter) + 16) : NULL;
    char(*par)[NAME_BUFSZ] = NULL;
    size_t np = 0, pcap = 0;
    int deleg = 0;
    MYSQL_STMT *st = NULL;
    csp_status rc = CSP_OK;
    if (!sql) {
        rc = fail(c, CSP_TRANSIENT, "out of memory while %s", what);
        goto done;
    }
    p[0] = (struct prm){P_INT, NULL, c->domain_id};
    snprintf(sql, sizeof head + strlen(filter) + 16, "%s%s GROUP BY 1", head, filter);
    rc = run(c, sql, p, k + 1, &st, what);
    if (rc != CSP_OK)
        goto done;
    char cols[2][FIELD_BUFSZ];
    my_bool isnull[2];
    int r;
    while ((r = fetch(c, st, cols, isnull, 2, what, &rc)) == 1) {
        deleg |= !isnull[1] && atoi(cols[1]) != 0;
        if (deleg)
            continue;
        lower(cols[0]);
        if (np == pcap) {
            size_t cap = pcap ? 2 * pcap : 64;
            char(*n)[NAME_BUFSZ] = realloc(par, cap * sizeof *n);
            if (!n) {
                rc = fail(c, CSP_TRANSIENT, "out of memory while %s", what);
                goto done;
            }
            par = n;
            pcap = cap;
        }
        copy(par[np++], NAME_BUFSZ, cols[0]);
    }
    if (r < 0)
        goto done;
    if (deleg) {
        rc = scan_rows(c, filter, p, k + 1);
        goto done;
    }
    for (size_t i = 0; i < np; i++) {
        int auth = !under_deleg(c, par[i], 1);
        note_below(c, par[i], auth, auth);
    }
done:
    if (st)
        stmt_done(c, st, rc == CSP_OK);
    free(sql);
    free(filter);
    free(p);
    free(par);
    return rc;
}

/* Decides, for each non-real node, whether it must be an empty non-terminal and how. */
static csp_status find_ents(struct ctx *c)
{
    for (size_t i = 0; i < c->nn; i++) {
        struct node *n = &c->nodes[i];
        if (!n->real)
            continue;
        for (size_t j = n->r0; j < n->r0 + n->rn; j++)
            if (!c->rows[j].type_null)
                note_descendant(c, n->name, c->rows[j].type);
    }
    for (size_t i = 0; i < c->nn; i++) {
        struct node *e = &c->nodes[i];
        /* Below a delegation only existence matters; elsewhere one authoritative name below
         * settles everything, since it is NSEC3-listed too. */
        int settled = under_deleg(c, e->name, 0) ? e->d_exists : e->d_auth;
        e->scan = !e->real && !e->apex && !settled;
    }
    return scan_descendants(c);
}

/* ---- writing --------------------------------------------------------------------------------- */

static csp_status write_row(struct ctx *c, const struct row *w, const char *ord, int auth)
{
    if (w->auth == auth && (ord ? !w->ord_null && !strcmp(w->ord, ord) : w->ord_null))
        return CSP_OK;
    if (c->nu == c->ucap) {
        size_t cap = c->ucap ? 2 * c->ucap : 64;
        struct upd *n = realloc(c->upd, cap * sizeof *n);
        if (!n)
            return fail(c, CSP_TRANSIENT, "out of memory setting ordername and auth");
        c->upd = n;
        c->ucap = cap;
    }
    struct upd *u = &c->upd[c->nu++];
    u->id = w->id;
    u->auth = auth;
    u->has_ord = ord != NULL;
    copy(u->ord, sizeof u->ord, ord ? ord : "");
    return CSP_OK;
}

/* c->del and c->ins hold room for every node: each node is deleted or inserted at most once. */
static csp_status delete_ents(struct ctx *c, const struct node *n)
{
    c->del[c->ndel++] = n;
    return CSP_OK;
}

static csp_status insert_ent(struct ctx *c, const struct node *n, const char *ord, int auth)
{
    c->ins[c->nins] = n;
    c->ins_hasord[c->nins] = ord != NULL;
    copy(c->ins_ord[c->nins], NAME_BUFSZ, ord ? ord : "");
    c->ins_auth[c->nins++] = auth;
    return CSP_OK;
}

/* Fills the parameters of rows [base, base + k) of one chunked statement. */
typedef void (*fill_rows_fn)(const struct ctx *c, size_t base, size_t k, struct prm *p);

/* Runs one statement per CHUNK of n rows: head, then more for every row after the first, then
 * tail (in_list_sql), with per_row parameters a row and lead before them. With pad (for
 * statements a repeated row does not change) the rows are padded as pad_rows says. */
static csp_status run_chunked(struct ctx *c, size_t n, const char *head, const char *more,
                              const char *tail, size_t lead, size_t per_row, int pad,
                              fill_rows_fn fill, const char *what)
{
    csp_status rc = CSP_OK;
    for (size_t base = 0; base < n && rc == CSP_OK; base += CHUNK) {
        size_t k = n - base < CHUNK ? n - base : CHUNK, kp = pad ? pad_rows(k) : k;
        char *sql = in_list_sql(head, kp, more, tail);
        struct prm *p = calloc(lead + per_row * kp, sizeof *p);
        if (sql && p) {
            fill(c, base, k, p);
            for (size_t i = k; i < kp; i++)
                memcpy(p + lead + per_row * i, p + lead + per_row * (k - 1), per_row * sizeof *p);
            rc = run(c, sql, p, lead + per_row * kp, NULL, what);
        } else {
            rc = fail(c, CSP_TRANSIENT, "out of memory %s", what);
        }
        free(sql);
        free(p);
    }
    return rc;
}

static void fill_deletes(const struct ctx *c, size_t base, size_t k, struct prm *p)
{
    p[0] = (struct prm){P_INT, NULL, c->domain_id};
    for (size_t i = 0; i < k; i++)
        p[i + 1] = (struct prm){P_STR, c->del[base + i]->name, 0};
}

static void fill_updates(const struct ctx *c, size_t base, size_t k, struct prm *p)
{
    for (size_t i = 0; i < k; i++) {
        const struct upd *u = &c->upd[base + i];
        p[3 * i] = (struct prm){P_INT, NULL, u->id};
        p[3 * i + 1] = (struct prm){u->has_ord ? P_STR : P_NULL, u->ord, 0};
        p[3 * i + 2] = (struct prm){P_INT, NULL, u->auth};
    }
}

static void fill_inserts(const struct ctx *c, size_t base, size_t k, struct prm *p)
{
    for (size_t i = 0; i < k; i++) {
        size_t x = base + i;
        p[4 * i] = (struct prm){P_INT, NULL, c->domain_id};
        p[4 * i + 1] = (struct prm){P_STR, c->ins[x]->name, 0};
        p[4 * i + 2] = (struct prm){c->ins_hasord[x] ? P_STR : P_NULL, c->ins_ord[x], 0};
        p[4 * i + 3] = (struct prm){P_INT, NULL, c->ins_auth[x]};
    }
}

/* Sends the gathered writes, CHUNK rows a statement: per-row statements cost a round trip each,
 * which dominated for signed zones. The rows written are disjoint, so order does not matter.
 * The updates join on the primary key with the new values as a derived table. */
static csp_status flush(struct ctx *c)
{
    csp_status rc = run_chunked(c, c->ndel,
                                "DELETE FROM records WHERE domain_id = ? AND type IS NULL AND "
                                "name IN (?",
                                ",?", ")", 1, 1, 1, fill_deletes, "deleting empty non-terminals");
    if (rc == CSP_OK)
        rc = run_chunked(c, c->nu, "UPDATE records r JOIN (SELECT ? AS id, ? AS o, ? AS a",
                         " UNION ALL SELECT ?, ?, ?",
                         ") v ON r.id = v.id SET r.ordername = v.o, r.auth = v.a", 0, 3, 0,
                         fill_updates, "setting ordername and auth");
    if (rc == CSP_OK)
        rc = run_chunked(c, c->nins,
                         "INSERT INTO records (type, domain_id, disabled, name, ordername, auth, "
                         "content, ttl, prio) VALUES (NULL, ?, 0, ?, ?, ?, NULL, NULL, NULL",
                         "), (NULL, ?, 0, ?, ?, ?, NULL, NULL, NULL", ")", 0, 4, 0, fill_inserts,
                         "inserting empty non-terminals");
    return rc;
}

/* A real name: ordername and auth per row, as rectify's per-name and per-type updates leave
 * them (DS stays authoritative at a delegation; glue A/AAAA and, with opt-out, unsigned
 * delegation NS lose their ordername). */
static csp_status fix_real(struct ctx *c, size_t i)
{
    struct node *n = &c->nodes[i];
    char ord[NAME_BUFSZ];
    const char *o = NULL;
    int auth = !under_deleg(c, n->name, 1);
    csp_status rc = CSP_OK;

    if (c->zi.mode == MODE_NSEC) {
        nsec_order(c, n->name, ord, sizeof ord);
        o = ord;
    } else if (c->zi.mode == MODE_NSEC3 && !c->zi.narrow && !under_deleg(c, n->name, 0) &&
               (n->has_non_ns || !c->zi.optout)) {
        nsec3_order(c, n->name, ord);
        o = ord;
    }
    if (n->ent_rows && (rc = delete_ents(c, n)) != CSP_OK)
        return rc;
    for (size_t j = n->r0; j < n->r0 + n->rn && rc == CSP_OK; j++) {
        const struct row *w = &c->rows[j];
        if (w->type_null)
            continue;
        int glue = !auth || n->has_ns;
        if (!strcasecmp(w->type, "DS"))
            rc = write_row(c, w, o, 1);
        else if (glue && (!strcasecmp(w->type, "A") || !strcasecmp(w->type, "AAAA") ||
                          (!strcasecmp(w->type, "NS") && c->zi.optout && !n->has_ds)))
            rc = write_row(c, w, NULL, 0);
        else
            rc = write_row(c, w, o, auth);
    }
    return rc;
}

static csp_status fix_ent(struct ctx *c, size_t i)
{
    struct node *n = &c->nodes[i];
    char ord[NAME_BUFSZ];
    const char *o = NULL;
    int auth = n->d_auth;
    csp_status rc = CSP_OK;

    if (!n->d_exists)
        return n->ent_rows ? delete_ents(c, n) : CSP_OK;
    if (c->zi.mode == MODE_NSEC3 && n->d_elig && (!c->zi.narrow || !c->zi.optout)) {
        if (!c->zi.narrow) {
            nsec3_order(c, n->name, ord);
            o = ord;
        }
        if (!c->zi.optout)
            auth = 1;
    }
    if (!n->ent_rows)
        return insert_ent(c, n, o, auth);
    for (size_t j = n->r0; j < n->r0 + n->rn && rc == CSP_OK; j++)
        rc = write_row(c, &c->rows[j], o, auth);
    return rc;
}

/* ---- entry point ----------------------------------------------------------------------------- */

/* Each name once, with its ancestors below the apex. A name already seen has had its ancestors
 * added, so the walk up stops there: the names of a batch share most of their ancestors (an
 * ip6.arpa name has twenty), and adding them per name made the node set several times larger
 * than the distinct names, all of it sorted and merged again. */
static csp_status collect(struct ctx *c, const char *const *names, size_t n)
{
    char buf[NAME_BUFSZ];
    struct strmap *seen = NULL;
    csp_status rc = CSP_OK;

    if (strmap_new(&seen))
        return fail(c, CSP_TRANSIENT, "out of memory collecting names of zone %s", c->zone);
    for (size_t i = 0; i < n && rc == CSP_OK; i++) {
        if (!names[i] || strlen(names[i]) >= sizeof buf) {
            rc = fail(c, CSP_PERMANENT, "internal error: name %zu given for rectify is %s", i,
                      names[i] ? "too long" : "NULL");
            break;
        }
        snprintf(buf, sizeof buf, "%s", names[i]);
        lower(buf);
        if (!in_zone(c, buf) || strchr(buf, '\\')) {
            rc = fail(c, CSP_PERMANENT,
                      "internal error: name \"%s\" given for rectify is not a plain name in "
                      "zone %s",
                      buf, c->zone);
            break;
        }
        const char *kept = strpool_dup(&c->strs, buf);
        if (!kept) {
            rc = fail(c, CSP_TRANSIENT, "out of memory collecting names of zone %s", c->zone);
            break;
        }
        int given = 1;
        for (const char *a = kept; a && rc == CSP_OK; a = parent(a)) {
            if (!given && !strcmp(a, c->zone))
                break;
            void *v;
            if (strmap_get(seen, a, &v)) {
                c->nodes[(uintptr_t)v - 1].given |= given;
                break;
            }
            if (add_node(c, a, given) || strmap_add(seen, a, (void *)(uintptr_t)c->nn) < 0)
                rc = fail(c, CSP_TRANSIENT, "out of memory collecting names of zone %s", c->zone);
            given = 0;
        }
    }
    strmap_free(seen, NULL);
    if (rc == CSP_OK)
        qsort(c->nodes, c->nn, sizeof *c->nodes, cmp_node);
    return rc;
}

/* The ENT rows flush wrote, to on_ent. A name that also has records and loses a stale ENT row
 * is reported too: its answer does not change, so a purge of it costs only the request. */
static csp_status report_ents(struct ctx *c, pdns_rectify_ent_fn on_ent, void *ud)
{
    for (size_t i = 0; on_ent && i < c->ndel + c->nins; i++) {
        const struct node *n = i < c->ndel ? c->del[i] : c->ins[i - c->ndel];
        if (on_ent(ud, c->domain_id, n->name))
            return fail(c, CSP_TRANSIENT, "out of memory noting the empty non-terminals of zone %s",
                        c->zone);
    }
    return CSP_OK;
}

csp_status pdns_rectify_names(MYSQL *db, struct pdns_rectify_stmts *stmts, long long domain_id,
                              const char *zone, const char *const *names, size_t n,
                              pdns_rectify_ent_fn on_ent, void *ud, char *err, size_t errlen)
{
    struct pdns_rectify_zone z = {domain_id, zone, names, n, NULL};
    return pdns_rectify_zones(db, stmts, &z, 1, on_ent, ud, err, errlen);
}

/* One zone, its keys and metadata already read into meta. */
static csp_status rectify_zone(MYSQL *db, struct pdns_rectify_stmts *stmts,
                               const struct pdns_rectify_zone *zone, const struct zone_meta *meta,
                               pdns_rectify_ent_fn on_ent, void *ud, char *err, size_t errlen)
{
    char z[NAME_BUFSZ];
    struct ctx c = {.db = db,
                    .stmts = stmts,
                    .known = zone->known,
                    .domain_id = zone->domain_id,
                    .zone = z,
                    .err = err,
                    .errlen = errlen};
    csp_status rc;

    snprintf(z, sizeof z, "%s", zone->zone);
    lower(z);
    c.zlen = strlen(z);
    rc = zone_settle(&c, meta);
    /* Rectify refuses presigned zones: their fields come with the transferred signatures. */
    if (rc != CSP_OK || c.zi.presigned)
        goto done;
    if ((rc = collect(&c, zone->names, zone->n)) != CSP_OK || (rc = read_rows(&c)) != CSP_OK ||
        (rc = find_ents(&c)) != CSP_OK)
        goto done;
    c.del = calloc(c.nn, sizeof *c.del);
    c.ins = calloc(c.nn, sizeof *c.ins);
    c.ins_ord = calloc(c.nn, sizeof *c.ins_ord);
    c.ins_auth = calloc(c.nn, sizeof *c.ins_auth);
    c.ins_hasord = calloc(c.nn, sizeof *c.ins_hasord);
    if (!c.del || !c.ins || !c.ins_ord || !c.ins_auth || !c.ins_hasord) {
        rc = fail(&c, CSP_TRANSIENT, "out of memory rectifying zone %s", c.zone);
        goto done;
    }
    for (size_t i = 0; i < c.nn && rc == CSP_OK; i++) {
        const struct node *nd = &c.nodes[i];
        if (nd->real)
            rc = nd->given || nd->ent_rows ? fix_real(&c, i) : CSP_OK;
        else if (!nd->apex)
            rc = fix_ent(&c, i);
    }
    if (rc == CSP_OK)
        rc = flush(&c);
    if (rc == CSP_OK)
        rc = report_ents(&c, on_ent, ud);
done:
    strpool_clear(&c.strs);
    free(c.upd);
    free(c.del);
    free(c.ins);
    free(c.ins_ord);
    free(c.ins_auth);
    free(c.ins_hasord);
    for (size_t i = 0; i < c.nd; i++)
        free(c.dnames[i]);
    free(c.dnames);
    free(c.nodes);
    free(c.rows);
    return rc;
}

csp_status pdns_rectify_zones(MYSQL *db, struct pdns_rectify_stmts *stmts,
                              const struct pdns_rectify_zone *zones, size_t nzones,
                              pdns_rectify_ent_fn on_ent, void *ud, char *err, size_t errlen)
{
    struct pdns_rectify_stmts own = {0};
    struct ctx c = {
        .db = db, .stmts = stmts ? stmts : &own, .zone = "", .err = err, .errlen = errlen};
    long long *ids = malloc((nzones ? nzones : 1) * sizeof *ids);
    struct zone_meta *meta = calloc(nzones ? nzones : 1, sizeof *meta);
    size_t nids = 0;
    csp_status rc = CSP_OK;

    if (err && errlen)
        err[0] = '\0';
    if (!ids || !meta)
        rc = fail(&c, CSP_TRANSIENT, "out of memory rectifying zones");
    for (size_t i = 0; i < nzones && rc == CSP_OK; i++) {
        if (!zones[i].zone || strlen(zones[i].zone) >= NAME_BUFSZ)
            rc = fail(&c, CSP_PERMANENT, "internal error: bad zone name given for rectify");
        else if (zones[i].n)
            ids[nids++] = zones[i].domain_id;
    }
    if (rc == CSP_OK && nids)
        rc = read_zones(&c, ids, nids, meta);
    for (size_t i = 0, k = 0; i < nzones && rc == CSP_OK; i++)
        if (zones[i].n)
            rc = rectify_zone(db, c.stmts, &zones[i], &meta[k++], on_ent, ud, err, errlen);
    pdns_rectify_stmts_clear(&own);
    free(ids);
    free(meta);
    return rc;
}
