/* test_pdns_rectify.c -- pdns_rectify_names against the stack's MariaDB and PowerDNS 4.7's own
 * `pdnsutil rectify-zone`: after each step the zone must be exactly as rectify would leave it.
 * Must not: touch zones it did not create, or skip when the stack's variables are missing. */
#include <fcntl.h>
#include <mysql.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../unit/unit.h"
#include "e2e_sql.h"
#include "json.h"
#include "pdns_rectify.h"

#define SNAP_BUFSZ 65536

struct zone {
    char name[128];
    const char *nsec3; /* NSEC3PARAM for set-nsec3, NULL for NSEC */
    int narrow, signed_;
    long long id;
};

struct ctx {
    MYSQL *db;
    /* Kept across every call, as the store keeps them per connection: each check then also
     * proves that statements prepared for one zone and batch size serve the others right. */
    struct pdns_rectify_stmts *stmts;
    char confdir[512];
    char p[16];
};

__attribute__((format(printf, 4, 5))) static int pdnsutil(struct ctx *t, char *out, size_t len,
                                                          const char *fmt, ...)
{
    char args[512], cmd[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "pdnsutil --config-dir='%s' %s 2>&1", t->confdir, args);
    FILE *f = popen(cmd, "r");
    if (!f)
        e2e_die("cannot run %s", cmd);
    size_t n = fread(out, 1, len - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void pdnsutil_ok(struct ctx *t, const char *args, const char *zone)
{
    char out[8192];
    if (pdnsutil(t, out, sizeof out, "%s %s", args, zone))
        e2e_die("pdnsutil %s %s failed:\n%s", args, zone, out);
}

/* Every row of the zone but its id, one line each, in a fixed order. */
static void snapshot(struct ctx *t, const struct zone *z, char *out, size_t len)
{
    char q[512];
    snprintf(q, sizeof q,
             "SELECT name, IFNULL(type, '<ENT>'), IFNULL(ordername, '<NULL>'), auth, "
             "IFNULL(content, '<NULL>'), IFNULL(ttl, -1), IFNULL(prio, -1), disabled FROM records "
             "WHERE domain_id = %lld ORDER BY BINARY name, type, content",
             z->id);
    if (mysql_query(t->db, q))
        e2e_die("SQL failed: %s", mysql_error(t->db));
    MYSQL_RES *res = mysql_store_result(t->db);
    size_t off = 0;
    out[0] = '\0';
    for (MYSQL_ROW r; res && (r = mysql_fetch_row(res));) {
        int n = snprintf(out + off, len - off, "%s %s [%s] auth=%s %s %s %s %s\n", r[0], r[1], r[2],
                         r[3], r[4], r[5], r[6], r[7]);
        if (n < 0 || (size_t)n >= len - off)
            e2e_die("zone %s does not fit the snapshot buffer", z->name);
        off += (size_t)n;
    }
    mysql_free_result(res);
}

static void random_hex(char *out, size_t bytes)
{
    unsigned char b[16];
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, b, bytes) != (ssize_t)bytes)
        e2e_die("cannot read /dev/urandom");
    close(fd);
    for (size_t i = 0; i < bytes; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static void create_zone(struct ctx *t, struct zone *z)
{
    char id[32], args[256];
    snprintf(args, sizeof args, "%s ns1.example.net", z->name);
    pdnsutil_ok(t, "create-zone", args);
    if (z->signed_)
        pdnsutil_ok(t, "secure-zone", z->name);
    if (z->nsec3) {
        snprintf(args, sizeof args, "set-nsec3 %s '%s'%s", z->name, z->nsec3,
                 z->narrow ? " narrow" : "");
        pdnsutil_ok(t, args, "");
    }
    pdnsutil_ok(t, "rectify-zone", z->name);
    e2e_sql_first(t->db, id, sizeof id, "SELECT id FROM domains WHERE name = '%s'", z->name);
    z->id = atoll(id);
    if (z->id <= 0)
        e2e_die("zone %s was not created", z->name);
}

static void drop_zone(struct ctx *t, const struct zone *z)
{
    E2E_SQL(t->db, "DELETE FROM records WHERE domain_id = %lld", z->id);
    E2E_SQL(t->db, "DELETE FROM cryptokeys WHERE domain_id = %lld", z->id);
    E2E_SQL(t->db, "DELETE FROM domainmetadata WHERE domain_id = %lld", z->id);
    E2E_SQL(t->db, "DELETE FROM domains WHERE id = %lld", z->id);
}

/* As the store writes: ordername NULL, auth 1. rel "" is the apex. */
static void add(struct ctx *t, const struct zone *z, const char *rel, const char *type,
                const char *content)
{
    E2E_SQL(t->db,
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, ordername, "
            "auth) VALUES (%lld, '%s%s%s', '%s', '%s', 300, 0, 0, NULL, 1)",
            z->id, rel, *rel ? "." : "", z->name, type, content);
}

static void del(struct ctx *t, const struct zone *z, const char *rel)
{
    E2E_SQL(t->db,
            "DELETE FROM records WHERE domain_id = %lld AND name = '%s.%s' AND type IS NOT NULL",
            z->id, rel, z->name);
}

/* pdns_rectify_names inside a transaction for the relative names rels[], as the store calls it. */
static csp_status rectify(struct ctx *t, const struct zone *z, const char *const *rels, size_t n)
{
    char full[16][1024], err[512];
    const char *names[16];
    if (n > 16)
        e2e_die("too many names");
    for (size_t i = 0; i < n; i++) {
        snprintf(full[i], sizeof full[i], "%s%s%s", rels[i], *rels[i] ? "." : "", z->name);
        names[i] = full[i];
    }
    E2E_SQL(t->db, "START TRANSACTION");
    csp_status rc =
        pdns_rectify_names(t->db, t->stmts, z->id, z->name, names, n, NULL, NULL, err, sizeof err);
    if (rc == CSP_OK)
        E2E_SQL(t->db, "COMMIT");
    else {
        fprintf(stderr, "pdns_rectify_names(%s): %s\n", z->name, err);
        E2E_SQL(t->db, "ROLLBACK");
    }
    return rc;
}

/* The zone as pdns_rectify_names left it must be what `pdnsutil rectify-zone` makes of it, and
 * `pdnsutil check-zone` must find nothing wrong. rectify-zone skips rows whose ordername reads
 * back as the same name (it would keep "c.b.a" for "c b a"), so the zone is also rectified from
 * scratch -- no ordername, auth 1, no ENT rows -- and must come out the same again. */
static void same_as_pdnsutil(struct ctx *t, const struct zone *z, const char *step)
{
    static char ours[SNAP_BUFSZ], again[SNAP_BUFSZ], scratch[SNAP_BUFSZ];
    char out[8192];
    snapshot(t, z, ours, sizeof ours);
    pdnsutil_ok(t, "rectify-zone", z->name);
    snapshot(t, z, again, sizeof again);
    CHECK_STR(ours, again);
    E2E_SQL(t->db, "DELETE FROM records WHERE domain_id = %lld AND type IS NULL", z->id);
    E2E_SQL(t->db, "UPDATE records SET ordername = NULL, auth = 1 WHERE domain_id = %lld", z->id);
    pdnsutil_ok(t, "rectify-zone", z->name);
    snapshot(t, z, scratch, sizeof scratch);
    CHECK_STR(ours, scratch);
    if (strcmp(ours, again) || strcmp(ours, scratch))
        fprintf(stderr, "zone %s, step %s differs from pdnsutil rectify-zone (got, want above)\n",
                z->name, step);
    int rc = pdnsutil(t, out, sizeof out, "check-zone %s", z->name);
    CHECK_INT(rc, 0);
    /* A warning (e.g. an ENT row check-zone does not expect) is a difference from rectify too. */
    int clean = strstr(out, "Checked") != NULL && strstr(out, " 0 errors, 0 warnings") != NULL;
    CHECK(clean);
    if (rc || !clean)
        fprintf(stderr, "check-zone %s after %s:\n%s", z->name, step, out);
}

static long long count(struct ctx *t, const struct zone *z, const char *rel, const char *cond)
{
    char v[32];
    e2e_sql_first(t->db, v, sizeof v,
                  "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND name = '%s.%s' "
                  "AND %s",
                  z->id, rel, z->name, cond);
    return atoll(v);
}

/* A stream of changes in a forward zone: names several labels deep, a delegation with glue and a
 * name below it, names that turn from empty non-terminal into real ones and back. */
static void forward_steps(struct ctx *t, const struct zone *z)
{
    /* Operator content the store never writes, rectified by PowerDNS beforehand. */
    add(t, z, "del", "NS", "ns.elsewhere.example");
    add(t, z, "ns.del", "A", "192.0.2.53");
    pdnsutil_ok(t, "rectify-zone", z->name);

    add(t, z, "a.b.c", "A", "192.0.2.1");
    add(t, z, "a.b.c", "AAAA", "2001:db8::1");
    add(t, z, "d.b.c", "A", "192.0.2.2");
    add(t, z, "vm1", "A", "192.0.2.3");
    add(t, z, "e.f.g.h", "A", "192.0.2.4");
    add(t, z, "vm.sub.del", "A", "192.0.2.5");
    static const char *const s1[] = {"a.b.c", "d.b.c", "vm1", "e.f.g.h", "vm.sub.del"};
    CHECK_INT(rectify(t, z, s1, 5), CSP_OK);
    CHECK_INT(count(t, z, "b.c", "type IS NULL"), 1);
    CHECK_INT(count(t, z, "f.g.h", "type IS NULL"), 1);
    CHECK_INT(count(t, z, "vm.sub.del", "auth = 0"), 1);
    same_as_pdnsutil(t, z, "creates");

    /* b.c turns real (its ENT row must go), h.. chain empties, a.b.c goes but d.b.c stays. */
    add(t, z, "b.c", "A", "192.0.2.6");
    del(t, z, "a.b.c");
    del(t, z, "e.f.g.h");
    del(t, z, "vm1");
    static const char *const s2[] = {"b.c", "a.b.c", "e.f.g.h", "vm1"};
    CHECK_INT(rectify(t, z, s2, 4), CSP_OK);
    CHECK_INT(count(t, z, "b.c", "type IS NULL"), 0);
    CHECK_INT(count(t, z, "h", "type IS NULL"), 0);
    CHECK_INT(count(t, z, "c", "type IS NULL"), 1);
    same_as_pdnsutil(t, z, "mixed");

    /* b.c loses its record while d.b.c remains: b.c becomes an ENT again. Then a name at the
     * former ENT c itself. */
    del(t, z, "b.c");
    add(t, z, "c", "A", "192.0.2.7");
    add(t, z, "x.y.z.w", "AAAA", "2001:db8::7");
    /* Delegations below an ENT, one signed (DS) with glue: what rectify does for names the
     * caller gives, whatever their types. */
    add(t, z, "d2.ent2", "NS", "ns.elsewhere.example");
    add(t, z, "d3.ent2", "NS", "ns.d3.ent2");
    add(t, z, "d3.ent2", "DS",
        "12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    add(t, z, "ns.d3.ent2", "A", "192.0.2.8");
    /* Names whose removal below leaves an ENT whose remaining descendants are only
     * delegations (ent2), or names below a delegation (sub2.del). */
    add(t, z, "x.ent2", "A", "192.0.2.10");
    add(t, z, "vm.sub2.del", "A", "192.0.2.11");
    add(t, z, "vm2.sub2.del", "A", "192.0.2.12");
    static const char *const s3[] = {"b.c",        "c",           "x.y.z.w",
                                     "d2.ent2",    "d3.ent2",     "x.ent2",
                                     "ns.d3.ent2", "vm.sub2.del", "vm2.sub2.del"};
    CHECK_INT(rectify(t, z, s3, 9), CSP_OK);
    CHECK_INT(count(t, z, "b.c", "type IS NULL"), 1);
    same_as_pdnsutil(t, z, "ent-again");

    del(t, z, "d.b.c");
    del(t, z, "vm.sub.del");
    del(t, z, "c");
    del(t, z, "x.ent2");
    del(t, z, "vm.sub2.del");
    static const char *const s4[] = {"d.b.c", "vm.sub.del", "c", "x.ent2", "vm.sub2.del"};
    CHECK_INT(rectify(t, z, s4, 5), CSP_OK);
    CHECK_INT(count(t, z, "b.c", "1"), 0);
    CHECK_INT(count(t, z, "sub.del", "1"), 0);
    CHECK_INT(count(t, z, "ent2", "type IS NULL"), 1);
    CHECK_INT(count(t, z, "sub2.del", "type IS NULL AND auth = 0"), 1);
    same_as_pdnsutil(t, z, "deletes");

    /* Only names outside the batch keep sub2.del (below a delegation) an ENT. */
    add(t, z, "vm3.sub2.del", "A", "192.0.2.13");
    pdnsutil_ok(t, "rectify-zone", z->name);
    del(t, z, "vm2.sub2.del");
    static const char *const s5[] = {"vm2.sub2.del"};
    CHECK_INT(rectify(t, z, s5, 1), CSP_OK);
    CHECK_INT(count(t, z, "sub2.del", "type IS NULL AND auth = 0"), 1);
    same_as_pdnsutil(t, z, "delete-below-delegation");
}

/* PTRs in a /16: every /24 label is an empty non-terminal while it holds a PTR. */
static void reverse_steps(struct ctx *t, const struct zone *z)
{
    add(t, z, "1.7", "PTR", "vm1.example");
    add(t, z, "2.7", "PTR", "vm2.example");
    add(t, z, "9.200", "PTR", "vm3.example");
    add(t, z, "10.201", "PTR", "vm4.example");
    static const char *const s1[] = {"1.7", "2.7", "9.200", "10.201"};
    CHECK_INT(rectify(t, z, s1, 4), CSP_OK);
    CHECK_INT(count(t, z, "7", "type IS NULL"), 1);
    same_as_pdnsutil(t, z, "ptr-creates");

    del(t, z, "1.7");
    del(t, z, "9.200");
    add(t, z, "3.201", "PTR", "vm5.example");
    static const char *const s2[] = {"1.7", "9.200", "3.201"};
    CHECK_INT(rectify(t, z, s2, 3), CSP_OK);
    CHECK_INT(count(t, z, "7", "type IS NULL"), 1);
    CHECK_INT(count(t, z, "200", "type IS NULL"), 0);
    same_as_pdnsutil(t, z, "ptr-deletes");
}

/* The NSEC3 ordername is PowerDNS's own hash of the name. */
static void check_hash(struct ctx *t, const struct zone *z, const char *rel)
{
    char want[256], got[256];
    if (pdnsutil(t, want, sizeof want, "hash-zone-record %s %s.%s", z->name, rel, z->name))
        e2e_die("pdnsutil hash-zone-record failed: %s", want);
    want[strcspn(want, "\n")] = '\0';
    e2e_sql_first(t->db, got, sizeof got,
                  "SELECT ordername FROM records WHERE domain_id = %lld AND name = '%s.%s'", z->id,
                  rel, z->name);
    CHECK_STR(got, want);
}

static void confdir_from_state(struct ctx *t)
{
    const char *path = getenv("CSPDNS_STACK_STATE");
    char err[256];
    json_doc *doc;
    if (!path)
        e2e_die("CSPDNS_STACK_STATE is not set: run this test under `stack.py exec`");
    FILE *f = fopen(path, "rb");
    if (!f)
        e2e_die("cannot open the stack state %s", path);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (json_parse(buf, n, &doc, err, sizeof err))
        e2e_die("stack state %s: %s", path, err);
    const json_value *dir = json_get(json_get(json_root(doc), "dns"), "config_dir");
    if (!dir || dir->type != JSON_STRING)
        e2e_die("stack state %s has no dns.config_dir", path);
    snprintf(t->confdir, sizeof t->confdir, "%s", dir->u.s);
    json_doc_free(doc);
}

/* ---- --bench: ms per pdns_rectify_names call on large zones (a measurement, not a test) ---- */

#define BENCH_BATCH 1000
#define BENCH_ROUNDS 3

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Relative name i of a batch: new VMs in the forward zone; in the /16, four more PTRs in each
 * /24, of which 16 /24s are new (their ENTs appear with the batch and go with its deletion). */
static void bench_name(const struct zone *z, int reverse, int i, char *out, size_t len)
{
    if (reverse)
        snprintf(out, len, "%d.%d.%s", 251 + i / 256, i % 256, z->name);
    else
        snprintf(out, len, "new%d.%s", i, z->name);
}

/* One call for BENCH_BATCH names inside a transaction after the batch's rows were written (or
 * deleted); returns the call's ms. */
static double bench_call(struct ctx *t, const struct zone *z, int reverse, int create)
{
    static char full[BENCH_BATCH][256];
    const char *names[BENCH_BATCH];
    char err[512];
    E2E_SQL(t->db, "START TRANSACTION");
    if (create && reverse)
        E2E_SQL(
            t->db,
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, ordername, "
            "auth) SELECT %lld, CONCAT(251 + seq DIV 256, '.', seq MOD 256, '.%s'), 'PTR', "
            "CONCAT('vm', seq, '.example'), 300, 0, 0, NULL, 1 FROM seq_0_to_%d",
            z->id, z->name, BENCH_BATCH - 1);
    else if (create)
        E2E_SQL(
            t->db,
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, ordername, "
            "auth) SELECT %lld, CONCAT('new', seq, '.%s'), ty, IF(ty = 'A', '192.0.2.1', "
            "'2001:db8::1'), 300, 0, 0, NULL, 1 FROM seq_0_to_%d, (SELECT 'A' AS ty UNION ALL "
            "SELECT 'AAAA') AS t",
            z->id, z->name, BENCH_BATCH - 1);
    else
        E2E_SQL(t->db, "DELETE FROM records WHERE domain_id = %lld AND type IS NOT NULL AND %s",
                z->id,
                reverse ? "SUBSTRING_INDEX(name, '.', 1) IN ('251', '252', '253', '254')"
                        : "name LIKE 'new%'");
    for (int i = 0; i < BENCH_BATCH; i++) {
        bench_name(z, reverse, i, full[i], sizeof full[i]);
        names[i] = full[i];
    }
    double t0 = now_ms();
    csp_status rc = pdns_rectify_names(t->db, t->stmts, z->id, z->name, names, BENCH_BATCH, NULL,
                                       NULL, err, sizeof err);
    double ms = now_ms() - t0;
    if (rc != CSP_OK)
        e2e_die("pdns_rectify_names(%s): %s", z->name, err);
    E2E_SQL(t->db, "COMMIT");
    return ms;
}

/* Whether the zone is as `pdnsutil rectify-zone` leaves it, by a checksum of every row. */
static int bench_rectified(struct ctx *t, const struct zone *z)
{
    char q[512], before[64], after[64];
    snprintf(q, sizeof q,
             "SELECT CONCAT(COUNT(*), '/', SUM(CRC32(CONCAT_WS('|', name, IFNULL(type, '-'), "
             "IFNULL(ordername, '-'), auth, IFNULL(content, '-'))))) FROM records WHERE "
             "domain_id = %lld",
             z->id);
    e2e_sql_first(t->db, before, sizeof before, "%s", q);
    pdnsutil_ok(t, "rectify-zone", z->name);
    e2e_sql_first(t->db, after, sizeof after, "%s", q);
    return !strcmp(before, after);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Zones of ~100k rows (forward) and 60k PTRs (/16), loaded with INSERT ... SELECT and rectified
 * by pdnsutil; then create and delete batches. With CSPDNS_BENCH_EXPLAIN set, the session's
 * statements go to the slow log with their EXPLAIN (the server's slow_query_log must be on). */
static int bench(struct ctx *t)
{
    static const char *const kinds[] = {"plain", "nsec", "nsec3"};
    char hex[8];
    random_hex(hex, 3);
    snprintf(t->p, sizeof t->p, "b%s", hex);
    unsigned b = 16 + (unsigned)strtoul(hex, NULL, 16) % 16u;
    printf("%-6s %-6s %10s %10s  %s  (median of %d calls, %d names each)\n", "zone", "dnssec",
           "create ms", "delete ms", "as rectify-zone", BENCH_ROUNDS, BENCH_BATCH);
    for (int reverse = 0; reverse < 2; reverse++)
        for (int k = 0; k < 3; k++) {
            struct zone z = {.signed_ = k > 0, .nsec3 = k == 2 ? "1 0 1 ab" : NULL};
            if (reverse)
                snprintf(z.name, sizeof z.name, "%u.172.in-addr.arpa", b + (unsigned)k);
            else
                snprintf(z.name, sizeof z.name, "%s-%s.test", kinds[k], t->p);
            create_zone(t, &z);
            if (reverse)
                E2E_SQL(t->db,
                        "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, "
                        "ordername, auth) SELECT %lld, CONCAT(seq MOD 250 + 1, '.', seq DIV 250, "
                        "'.%s'), 'PTR', CONCAT('vm', seq, '.example'), 300, 0, 0, NULL, 1 FROM "
                        "seq_0_to_59999",
                        z.id, z.name);
            else
                E2E_SQL(
                    t->db,
                    "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, "
                    "ordername, auth) SELECT %lld, CONCAT('vm', seq DIV 2, '.%s'), IF(seq MOD 2, "
                    "'AAAA', 'A'), IF(seq MOD 2, '2001:db8::1', '192.0.2.1'), 300, 0, 0, NULL, 1 "
                    "FROM seq_0_to_99999",
                    z.id, z.name);
            pdnsutil_ok(t, "rectify-zone", z.name);
            if (getenv("CSPDNS_BENCH_EXPLAIN"))
                E2E_SQL(
                    t->db,
                    "SET SESSION long_query_time = 0, log_slow_verbosity = 'query_plan,explain'");
            double cr[BENCH_ROUNDS], de[BENCH_ROUNDS];
            int same = 1;
            for (int r = 0; r < BENCH_ROUNDS; r++) {
                cr[r] = bench_call(t, &z, reverse, 1);
                same &= r || bench_rectified(t, &z);
                de[r] = bench_call(t, &z, reverse, 0);
                same &= r || bench_rectified(t, &z);
            }
            if (getenv("CSPDNS_BENCH_EXPLAIN"))
                E2E_SQL(t->db,
                        "SET SESSION long_query_time = DEFAULT, log_slow_verbosity = DEFAULT");
            qsort(cr, BENCH_ROUNDS, sizeof *cr, cmp_double);
            qsort(de, BENCH_ROUNDS, sizeof *de, cmp_double);
            printf("%-6s %-6s %10.1f %10.1f  %s\n", reverse ? "/16" : "fwd", kinds[k],
                   cr[BENCH_ROUNDS / 2], de[BENCH_ROUNDS / 2], same ? "yes" : "NO");
            fflush(stdout);
            drop_zone(t, &z);
        }
    pdns_rectify_stmts_free(t->stmts);
    mysql_close(t->db);
    return 0;
}

int main(int argc, char **argv)
{
    static const char *const vars[] = {"MYSQL_PDNS_HOST", "MYSQL_PDNS_PORT", "MYSQL_PDNS_NAME",
                                       "MYSQL_PDNS_USER", "MYSQL_PDNS_PASSWORD"};
    struct ctx t;
    char err[512];
    memset(&t, 0, sizeof t);
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (!getenv(vars[i]))
            e2e_die("%s is not set: run this test under `stack.py exec`", vars[i]);
    confdir_from_state(&t);
    t.db = mysql_init(NULL);
    if (!t.db || !mysql_real_connect(t.db, getenv("MYSQL_PDNS_HOST"), getenv("MYSQL_PDNS_USER"),
                                     getenv("MYSQL_PDNS_PASSWORD"), getenv("MYSQL_PDNS_NAME"),
                                     (unsigned)atoi(getenv("MYSQL_PDNS_PORT")), NULL, 0))
        e2e_die("cannot connect to MariaDB: %s", t.db ? mysql_error(t.db) : "out of memory");
    if (pdns_rectify_stmts_new(&t.stmts))
        e2e_die("out of memory");
    if (argc > 1 && !strcmp(argv[1], "--bench"))
        return bench(&t);

    char hex[8];
    random_hex(hex, 3);
    snprintf(t.p, sizeof t.p, "r%s", hex);
    unsigned b = 16 + (unsigned)strtoul(hex, NULL, 16) % 16u,
             c = (unsigned)strtoul(hex + 2, NULL, 16) % 256u;
    struct zone zs[] = {
        {.signed_ = 1},
        {.signed_ = 1, .nsec3 = "1 0 1 ab"},
        {.signed_ = 1, .nsec3 = "1 0 0 -", .narrow = 1},
        {.signed_ = 1, .nsec3 = "1 1 2 cafe"},
        {.signed_ = 0},
    };
    static const char *const kinds[] = {"nsec", "nsec3", "narrow", "optout", "plain"};
    size_t nz = sizeof zs / sizeof zs[0];
    for (size_t i = 0; i < nz; i++) {
        snprintf(zs[i].name, sizeof zs[i].name, "%s-%s.test", kinds[i], t.p);
        create_zone(&t, &zs[i]);
    }
    /* 172.16.0.0/12 leaves World's 10.n zones alone; two reverse zones, NSEC and NSEC3. */
    struct zone rev[2] = {{.signed_ = 1}, {.signed_ = 1, .nsec3 = "1 0 0 -"}};
    for (int i = 0; i < 2; i++) {
        char n[32];
        for (int tries = 0;; tries++) {
            if (tries == 256)
                e2e_die("no free 172.x.y.in-addr.arpa zone");
            snprintf(rev[i].name, sizeof rev[i].name, "%u.%u.172.in-addr.arpa",
                     (c + (unsigned)tries) % 256u, b);
            e2e_sql_first(t.db, n, sizeof n, "SELECT COUNT(*) FROM domains WHERE name = '%s'",
                          rev[i].name);
            if (!strcmp(n, "0"))
                break;
        }
        create_zone(&t, &rev[i]);
    }
    printf("test_pdns_rectify: zones %s %s %s %s %s %s %s\n", zs[0].name, zs[1].name, zs[2].name,
           zs[3].name, zs[4].name, rev[0].name, rev[1].name);

    for (size_t i = 0; i < nz; i++)
        forward_steps(&t, &zs[i]);
    add(&t, &zs[1], "q.r", "A", "192.0.2.9");
    static const char *const qr[] = {"q.r"};
    CHECK_INT(rectify(&t, &zs[1], qr, 1), CSP_OK);
    check_hash(&t, &zs[1], "q.r");
    check_hash(&t, &zs[1], "r");
    for (int i = 0; i < 2; i++)
        reverse_steps(&t, &rev[i]);

    /* A name outside the zone is a caller's bug, not something to retry. */
    const char *outside[] = {"vm.elsewhere.test"};
    CHECK_INT(pdns_rectify_names(t.db, t.stmts, zs[0].id, zs[0].name, outside, 1, NULL, NULL, err,
                                 sizeof err),
              CSP_PERMANENT);
    CHECK(strstr(err, "vm.elsewhere.test") != NULL);

    for (size_t i = 0; i < nz; i++)
        drop_zone(&t, &zs[i]);
    for (int i = 0; i < 2; i++)
        drop_zone(&t, &rev[i]);
    pdns_rectify_stmts_free(t.stmts);
    mysql_close(t.db);
    return unit_done("pdns_rectify");
}
