/* test_pdns_store.c -- pdns_store against a real MariaDB with PowerDNS's schema (MYSQL_PDNS_*).
 * Must not: touch rows of zones or VMs it did not create, or skip when MYSQL_PDNS_* is missing. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <mysql.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../unit/unit.h"
#include "dns_record.h"
#include "e2e_sql.h"
#include "pdns_store.h"
#include "settings.h"

#define MAX_RECS 32

struct zone {
    char name[128]; /* short enough that "label." + name always fits a DNS_NAME_BUFSZ buffer */
    long long id;
};

struct ctx {
    struct settings s;
    MYSQL *db; /* the test's own connection, autocommit, for setup and assertions */
    struct pdns_store *st;
    char p[16]; /* random prefix of every zone and VM id of this run */
    struct zone fwd, sub, nosoa, r24, r16, r6;
    struct zone extra[8]; /* zones single tests create (equivalence worlds, a late zone, SOAs) */
    size_t nextra;
    unsigned o1, o2, o3, o3b; /* IPv4 o1.o2.o3.* lies in r24, o1.o2.o3b.* only in r16 */
    unsigned char v6[16];     /* fdXX:XXXX:XXXX::/48 is r6 */
};

struct rset {
    struct dns_record r[MAX_RECS];
    size_t n;
};

static long long serial(struct ctx *t, const struct zone *z)
{
    char q[256];
    snprintf(q, sizeof q, "SELECT content FROM records WHERE domain_id = %lld AND type = 'SOA'",
             z->id);
    if (mysql_query(t->db, q))
        e2e_die("SQL failed: %s", mysql_error(t->db));
    MYSQL_RES *res = mysql_store_result(t->db);
    MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
    long long v = -1;
    if (row && row[0])
        sscanf(row[0], "%*s %*s %lld", &v);
    mysql_free_result(res);
    return v;
}

/* Rows at (zone, name, type, content), byte-exact. */
static long long nrows(struct ctx *t, const struct zone *z, const char *name, const char *type,
                       const char *content)
{
    return e2e_sql_int(t->db,
                       "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND BINARY name = '%s' "
                       "AND type = '%s' AND BINARY content = '%s'",
                       z->id, name, type, content);
}

static long long row_id(struct ctx *t, const struct zone *z, const char *name, const char *type,
                        const char *content)
{
    return e2e_sql_int(t->db,
                       "SELECT MIN(id) FROM records WHERE domain_id = %lld AND BINARY name = '%s' "
                       "AND type = '%s' AND BINARY content = '%s'",
                       z->id, name, type, content);
}

static long long owners(struct ctx *t, long long record_id)
{
    return e2e_sql_int(t->db, "SELECT COUNT(*) FROM cspdns_record WHERE record_id = %lld",
                       record_id);
}

static long long owned_by(struct ctx *t, const char *vm)
{
    return e2e_sql_int(t->db, "SELECT COUNT(*) FROM cspdns_record WHERE vm_id = '%s'", vm);
}

static long long vm_rows(struct ctx *t, const char *vm)
{
    return e2e_sql_int(t->db, "SELECT COUNT(*) FROM cspdns_vm WHERE vm_id = '%s'", vm);
}

/* ---- records ------------------------------------------------------------------------------- */

static void add(struct rset *s, dns_rr_type type, const char *name, const char *content, int ttl)
{
    if (s->n == MAX_RECS)
        e2e_die("test record set full");
    struct dns_record *r = &s->r[s->n++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->content, sizeof r->content, "%s", content);
    r->type = type;
    r->ttl = ttl;
}

/* Drops every record of s at name/type/content. */
static void del(struct rset *s, const char *name, const char *content)
{
    size_t o = 0;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->r[i].name, name) != 0 || strcmp(s->r[i].content, content) != 0)
            s->r[o++] = s->r[i];
    s->n = o;
}

static void set_ttl(struct rset *s, const char *name, const char *content, int ttl)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->r[i].name, name) && !strcmp(s->r[i].content, content))
            s->r[i].ttl = ttl;
}

/* What the daemon does before storing: check and normalise a copy. */
static size_t prepare(const struct rset *s, struct dns_record *out)
{
    char err[256];
    for (size_t i = 0; i < s->n; i++) {
        out[i] = s->r[i];
        if (dns_record_check(&out[i], err, sizeof err) != 0)
            e2e_die("test record %s %s is not valid: %s", s->r[i].name, s->r[i].content, err);
    }
    return dns_record_set_normalize(out, s->n);
}

static csp_status apply_in_txn(struct ctx *t, const char *vm, const struct rset *s,
                               struct pdns_apply_stats *stats)
{
    struct dns_record recs[MAX_RECS];
    char err[512];
    size_t n = s ? prepare(s, recs) : 0;
    csp_status rc = pdns_store_apply(t->st, vm, s ? recs : NULL, n, stats, err, sizeof err);
    if (rc != CSP_OK)
        fprintf(stderr, "  apply %s: status %d: %s\n", vm, rc, err);
    return rc;
}

static csp_status apply(struct ctx *t, const char *vm, const struct rset *s,
                        struct pdns_apply_stats *stats)
{
    struct dns_record recs[MAX_RECS];
    char err[512];
    size_t n = s ? prepare(s, recs) : 0;
    memset(stats, 0, sizeof *stats);
    csp_status rc = pdns_store_apply_vm(t->st, vm, s ? recs : NULL, n, stats, err, sizeof err);
    if (rc != CSP_OK)
        fprintf(stderr, "  apply_vm %s: status %d: %s\n", vm, rc, err);
    return rc;
}

#define CHECK_STATS(x, add_, rem_, upd_, same_, nozone_, foreign_, bumped_)                        \
    do {                                                                                           \
        CHECK_INT((x).added, add_);                                                                \
        CHECK_INT((x).removed, rem_);                                                              \
        CHECK_INT((x).updated, upd_);                                                              \
        CHECK_INT((x).unchanged, same_);                                                           \
        CHECK_INT((x).no_zone, nozone_);                                                           \
        CHECK_INT((x).foreign, foreign_);                                                          \
        CHECK_INT((x).zones_bumped, bumped_);                                                      \
    } while (0)

/* What the metrics count per record type. */
#define CHECK_TYPE(x, type_, add_, rem_, upd_, nozone_, foreign_)                                  \
    do {                                                                                           \
        CHECK_INT((x).by_type[type_].added, add_);                                                 \
        CHECK_INT((x).by_type[type_].removed, rem_);                                               \
        CHECK_INT((x).by_type[type_].updated, upd_);                                               \
        CHECK_INT((x).by_type[type_].no_zone, nozone_);                                            \
        CHECK_INT((x).by_type[type_].foreign, foreign_);                                           \
    } while (0)

/* ---- names --------------------------------------------------------------------------------- */

static void ip4(const struct ctx *t, unsigned third, unsigned host, char *out, size_t len)
{
    snprintf(out, len, "%u.%u.%u.%u", t->o1, t->o2, third, host);
}

static void ptr4(const struct ctx *t, unsigned third, unsigned host, char *out, size_t len)
{
    snprintf(out, len, "%u.%u.%u.%u.in-addr.arpa", host, third, t->o2, t->o1);
}

static void ip6(const struct ctx *t, unsigned host, char *out, size_t len)
{
    unsigned char a[16];
    memcpy(a, t->v6, sizeof a);
    a[14] = (unsigned char)(host >> 8);
    a[15] = (unsigned char)host;
    if (!inet_ntop(AF_INET6, a, out, (socklen_t)len))
        e2e_die("inet_ntop failed");
}

/* The ip6.arpa name of the first `nibbles` nibbles of the host's address (32: the PTR name). */
static void ptr6(const struct ctx *t, unsigned host, int nibbles, char *out, size_t len)
{
    unsigned char a[16];
    size_t off = 0;
    memcpy(a, t->v6, sizeof a);
    a[14] = (unsigned char)(host >> 8);
    a[15] = (unsigned char)host;
    for (int i = nibbles - 1; i >= 0; i--) {
        unsigned nib = i % 2 ? a[i / 2] & 0xf : a[i / 2] >> 4;
        off += (size_t)snprintf(out + off, len - off, "%x.", nib);
    }
    snprintf(out + off, len - off, "ip6.arpa");
}

/* ---- setup --------------------------------------------------------------------------------- */

static void random_bytes(unsigned char *buf, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, buf, n) != (ssize_t)n)
        e2e_die("cannot read /dev/urandom");
    close(fd);
}

static uint32_t today_utc(void)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    return (uint32_t)((tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday);
}

/* 1 when no zone in the database has this name or lies below it (another run's zones must not
 * capture this run's names). */
static int zone_free(struct ctx *t, const char *name)
{
    return e2e_sql_int(t->db, "SELECT COUNT(*) FROM domains WHERE name = '%s' OR name LIKE '%%.%s'",
                       name, name) == 0;
}

/* serial NULL: a zone without an SOA row. */
static void create_zone(struct ctx *t, struct zone *z, const char *serial)
{
    E2E_SQL(t->db, "INSERT INTO domains (name, type) VALUES ('%s', 'NATIVE')", z->name);
    z->id = (long long)mysql_insert_id(t->db);
    if (serial)
        E2E_SQL(
            t->db,
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) "
            "VALUES (%lld, '%s', 'SOA', 'ns1.%s hostmaster.%s %s 10800 3600 604800 60', 3600, 0, "
            "0, 1)",
            z->id, z->name, t->fwd.name, t->fwd.name, serial);
    E2E_SQL(t->db,
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) "
            "VALUES (%lld, '%s', 'NS', 'ns1.%s', 3600, 0, 0, 1)",
            z->id, z->name, t->fwd.name);
}

static void setup_zones(struct ctx *t)
{
    unsigned char rnd[16];
    for (int attempt = 0;; attempt++) {
        if (attempt == 50)
            e2e_die("could not find unused reverse zones after 50 tries");
        random_bytes(rnd, sizeof rnd);
        snprintf(t->p, sizeof t->p, "t%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
        t->o1 = 1 + rnd[4] % 223u;
        t->o2 = rnd[5];
        t->o3 = rnd[6];
        t->o3b = (t->o3 + 1 + rnd[7] % 254u) % 256u;
        memset(t->v6, 0, sizeof t->v6);
        t->v6[0] = 0xfd;
        memcpy(t->v6 + 1, rnd + 8, 5);
        snprintf(t->fwd.name, sizeof t->fwd.name, "%s.test", t->p);
        snprintf(t->sub.name, sizeof t->sub.name, "sub.%.100s", t->fwd.name);
        snprintf(t->nosoa.name, sizeof t->nosoa.name, "nosoa.%.100s", t->fwd.name);
        snprintf(t->r16.name, sizeof t->r16.name, "%u.%u.in-addr.arpa", t->o2, t->o1);
        snprintf(t->r24.name, sizeof t->r24.name, "%u.%u.%u.in-addr.arpa", t->o3, t->o2, t->o1);
        ptr6(t, 0, 12, t->r6.name, sizeof t->r6.name);
        if (zone_free(t, t->fwd.name) && zone_free(t, t->r16.name) && zone_free(t, t->r6.name))
            break;
    }
    create_zone(t, &t->fwd, "1");
    create_zone(t, &t->sub, "2020010101");
    create_zone(t, &t->nosoa, NULL);
    create_zone(t, &t->r16, "7");
    create_zone(t, &t->r24, "100");
    create_zone(t, &t->r6, "1");
}

static void cleanup(struct ctx *t)
{
    const struct zone *zs[] = {&t->fwd, &t->sub, &t->nosoa, &t->r16, &t->r24, &t->r6};
    E2E_SQL(t->db, "DELETE FROM cspdns_record WHERE vm_id LIKE '%s-%%'", t->p);
    E2E_SQL(t->db, "DELETE FROM cspdns_vm WHERE vm_id LIKE '%s-%%'", t->p);
    for (size_t i = 0; i < sizeof zs / sizeof zs[0]; i++) {
        if (zs[i]->id <= 0)
            continue;
        E2E_SQL(t->db, "DELETE FROM records WHERE domain_id = %lld", zs[i]->id);
        E2E_SQL(t->db, "DELETE FROM domains WHERE id = %lld", zs[i]->id);
    }
    for (size_t i = 0; i < t->nextra; i++) {
        E2E_SQL(t->db, "DELETE FROM records WHERE domain_id = %lld", t->extra[i].id);
        E2E_SQL(t->db, "DELETE FROM domains WHERE id = %lld", t->extra[i].id);
    }
}

static MYSQL *connect_db(const struct settings *s)
{
    MYSQL *db = mysql_init(NULL);
    unsigned timeout = 10;
    if (!db)
        e2e_die("out of memory");
    mysql_options(db, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (!mysql_real_connect(db, s->mysql_host, s->mysql_user, s->mysql_password, s->mysql_name,
                            (unsigned)s->mysql_port, NULL, 0))
        e2e_die("cannot connect to MySQL %s:%d/%s as %s: %s", s->mysql_host, s->mysql_port,
                s->mysql_name, s->mysql_user, mysql_error(db));
    if (mysql_autocommit(db, 1) ||
        mysql_query(db, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"))
        e2e_die("session setup: %s", mysql_error(db));
    return db;
}

/* ---- finding and killing the store's connection -------------------------------------------- */

static int sock_port(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)a)->sin_port);
    if (a->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    return -1;
}

/* The server-side id of the store's connection: this process's TCP sockets to the database give
 * local ports, and PROCESSLIST shows each session's client host:port. */
static unsigned long long store_conn_id(struct ctx *t)
{
    int ports[64];
    size_t nports = 0;
    unsigned long long found = 0;
    int hits = 0;

    for (int fd = 0; fd < 4096 && nports < 64; fd++) {
        struct sockaddr_storage peer, self;
        socklen_t lp = sizeof peer, ls = sizeof self;
        if (getpeername(fd, (struct sockaddr *)&peer, &lp) != 0 ||
            sock_port(&peer) != t->s.mysql_port ||
            getsockname(fd, (struct sockaddr *)&self, &ls) != 0)
            continue;
        ports[nports++] = sock_port(&self);
    }
    if (mysql_query(t->db, "SELECT ID, HOST FROM information_schema.PROCESSLIST "
                           "WHERE ID <> CONNECTION_ID()"))
        e2e_die("PROCESSLIST: %s", mysql_error(t->db));
    MYSQL_RES *res = mysql_store_result(t->db);
    MYSQL_ROW row;
    while (res && (row = mysql_fetch_row(res))) {
        const char *colon = row[1] ? strrchr(row[1], ':') : NULL;
        if (!colon)
            continue;
        int port = atoi(colon + 1);
        for (size_t i = 0; i < nports; i++) {
            if (ports[i] == port) {
                found = strtoull(row[0], NULL, 10);
                hits++;
            }
        }
    }
    mysql_free_result(res);
    if (hits != 1)
        e2e_die("expected to find exactly one store connection in PROCESSLIST, found %d", hits);
    return found;
}

static void kill_conn(struct ctx *t, unsigned long long id)
{
    E2E_SQL(t->db, "KILL CONNECTION %llu", id);
    for (int i = 0; i < 100; i++) {
        if (e2e_sql_int(t->db,
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %llu",
                        id) == 0)
            return;
        usleep(50 * 1000);
    }
    e2e_die("connection %llu still listed 5 s after KILL", id);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_open_errors(struct ctx *t)
{
    struct settings bad = t->s;
    struct pdns_store *st = NULL;
    char err[512], pw[64];

    snprintf(pw, sizeof pw, "wrong-%s-secret", t->p);
    bad.mysql_password = pw;
    CHECK_INT(pdns_store_open(&bad, &st, err, sizeof err), CSP_PERMANENT);
    CHECK(st == NULL);
    CHECK(strstr(err, "errno 1045") != NULL);
    CHECK(strstr(err, "MYSQL_PDNS_PASSWORD") != NULL);
    CHECK(strstr(err, pw) == NULL);
    printf("  wrong password: %s\n", err);

    /* information_schema has no PowerDNS tables, and every user may open it. */
    bad = t->s;
    bad.mysql_name = "information_schema";
    CHECK_INT(pdns_store_open(&bad, &st, err, sizeof err), CSP_PERMANENT);
    CHECK(strstr(err, "PowerDNS schema not found in database information_schema") != NULL);
    printf("  no schema: %s\n", err);

    /* A port nobody listens on: bind one, note it, close it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &al))
        e2e_die("cannot find a free port");
    close(fd);
    bad = t->s;
    bad.mysql_host = "127.0.0.1";
    bad.mysql_port = ntohs(a.sin_port);
    CHECK_INT(pdns_store_open(&bad, &st, err, sizeof err), CSP_TRANSIENT);
    CHECK(strstr(err, "while connecting") != NULL);
    printf("  closed port: %s\n", err);

    bad = t->s;
    bad.mysql_host = NULL;
    CHECK_INT(pdns_store_open(&bad, &st, err, sizeof err), CSP_PERMANENT);
    CHECK(strstr(err, "MYSQL_PDNS_HOST") != NULL);
}

static void test_store(struct ctx *t)
{
    struct pdns_apply_stats x;
    struct rset v1 = {0}, v2 = {0}, v3 = {0};
    char vm1[64], vm2[64], vm3[64], vm4[64], vm5[64], vm6[64], vm7[64], vm9[64];
    char h1[DNS_NAME_BUFSZ], h1sub[DNS_NAME_BUFSZ], hnozone[DNS_NAME_BUFSZ], hnosoa[DNS_NAME_BUFSZ],
        www[DNS_NAME_BUFSZ], grp[DNS_NAME_BUFSZ], shared[DNS_NAME_BUFSZ];
    char a5[32], a7[32], a6[32], a77[32], a99[32], a50[32], p5[64], p7[64], v6a[64], p6a[128];
    char err[512];
    uint32_t today = today_utc();

    snprintf(vm1, sizeof vm1, "%s-vm1", t->p);
    snprintf(vm2, sizeof vm2, "%s-vm2", t->p);
    snprintf(vm3, sizeof vm3, "%s-vm3", t->p);
    snprintf(vm4, sizeof vm4, "%s-vm4", t->p);
    snprintf(vm5, sizeof vm5, "%s-vm5", t->p);
    snprintf(vm6, sizeof vm6, "%s-vm6", t->p);
    snprintf(vm7, sizeof vm7, "%s-vm7", t->p);
    snprintf(vm9, sizeof vm9, "%s-vm9", t->p);
    snprintf(h1, sizeof h1, "vm1.%s", t->fwd.name);
    snprintf(h1sub, sizeof h1sub, "vm1.%s", t->sub.name);
    snprintf(hnosoa, sizeof hnosoa, "vm1.%s", t->nosoa.name);
    snprintf(hnozone, sizeof hnozone, "vm1.%s-nozone.test", t->p);
    snprintf(www, sizeof www, "www.%s", t->fwd.name);
    snprintf(grp, sizeof grp, "grp.%s", t->fwd.name);
    snprintf(shared, sizeof shared, "shared.%s", t->fwd.name);
    ip4(t, t->o3, 5, a5, sizeof a5);
    ip4(t, t->o3b, 7, a7, sizeof a7);
    ip4(t, t->o3, 6, a6, sizeof a6);
    ip4(t, t->o3, 77, a77, sizeof a77);
    ip4(t, t->o3, 99, a99, sizeof a99);
    ip4(t, t->o3, 50, a50, sizeof a50);
    ptr4(t, t->o3, 5, p5, sizeof p5);
    ptr4(t, t->o3b, 7, p7, sizeof p7);
    ip6(t, 5, v6a, sizeof v6a);
    ptr6(t, 5, 32, p6a, sizeof p6a);

    /* apply outside a transaction is a caller bug, reported as such */
    CHECK_INT(pdns_store_apply(t->st, vm1, NULL, 0, &x, err, sizeof err), CSP_PERMANENT);
    CHECK(strstr(err, "pdns_store_begin") != NULL);

    printf("  insert into forward, sub, /24, /16 and ip6.arpa zones\n");
    add(&v1, DNS_RR_A, h1, a5, 300);
    add(&v1, DNS_RR_AAAA, h1, v6a, 300);
    add(&v1, DNS_RR_PTR, p5, h1, 300);
    add(&v1, DNS_RR_PTR, p7, h1, 300);
    add(&v1, DNS_RR_PTR, p6a, h1, 300);
    add(&v1, DNS_RR_A, h1sub, a5, 300);
    add(&v1, DNS_RR_A, hnosoa, a5, 300);
    add(&v1, DNS_RR_A, hnozone, a5, 300);
    CHECK_INT(apply(t, vm1, &v1, &x), CSP_OK);
    CHECK_STATS(x, 7, 0, 0, 0, 1, 0, 5); /* the SOA-less zone is changed but not bumped */
    CHECK_TYPE(x, DNS_RR_A, 3, 0, 0, 1, 0);
    CHECK_TYPE(x, DNS_RR_AAAA, 1, 0, 0, 0, 0);
    CHECK_TYPE(x, DNS_RR_PTR, 3, 0, 0, 0, 0);
    CHECK_TYPE(x, 0, 0, 0, 0, 0, 0);
    CHECK_INT(nrows(t, &t->fwd, h1, "A", a5), 1);
    CHECK_INT(nrows(t, &t->fwd, h1, "AAAA", v6a), 1);
    CHECK_INT(nrows(t, &t->r24, p5, "PTR", h1), 1);
    CHECK_INT(nrows(t, &t->r16, p7, "PTR", h1), 1);
    CHECK_INT(nrows(t, &t->r6, p6a, "PTR", h1), 1);
    CHECK_INT(nrows(t, &t->sub, h1sub, "A", a5), 1);
    CHECK_INT(nrows(t, &t->nosoa, hnosoa, "A", a5), 1);
    CHECK_INT(e2e_sql_int(t->db, "SELECT COUNT(*) FROM records WHERE name = '%s'", hnozone), 0);
    CHECK_INT(e2e_sql_int(t->db, "SELECT COUNT(*) FROM records WHERE domain_id = %lld", t->fwd.id),
              4);
    CHECK_INT(
        e2e_sql_int(t->db,
                    "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND type = 'A' AND "
                    "ttl = 300 AND prio = 0 AND disabled = 0 AND auth = 1 AND ordername IS NULL",
                    t->fwd.id),
        1);
    CHECK_INT(owned_by(t, vm1), 7);
    CHECK_INT(vm_rows(t, vm1), 1);
    CHECK_INT(serial(t, &t->fwd), 2);
    CHECK_INT(serial(t, &t->sub), (long long)today * 100);
    CHECK_INT(serial(t, &t->r24), 101);
    CHECK_INT(serial(t, &t->r16), 8);
    CHECK_INT(serial(t, &t->r6), 2);
    long long id_a = row_id(t, &t->fwd, h1, "A", a5);

    /* Decision: a transaction that changes no records row bumps no serial, so re-applying the
     * same set (every redelivered event) leaves the zones exactly as they were. */
    printf("  idempotent re-apply\n");
    CHECK_INT(apply(t, vm1, &v1, &x), CSP_OK);
    CHECK_STATS(x, 0, 0, 0, 7, 1, 0, 0);
    CHECK_INT(serial(t, &t->fwd), 2);
    CHECK_INT(serial(t, &t->sub), (long long)today * 100);
    CHECK_INT(serial(t, &t->r24), 101);
    CHECK_INT(row_id(t, &t->fwd, h1, "A", a5), id_a);
    CHECK_INT(owned_by(t, vm1), 7);

    printf("  TTL update\n");
    set_ttl(&v1, h1, a5, 600);
    CHECK_INT(apply(t, vm1, &v1, &x), CSP_OK);
    CHECK_STATS(x, 0, 0, 1, 6, 1, 0, 1);
    CHECK_TYPE(x, DNS_RR_A, 0, 0, 1, 1, 0);
    CHECK_TYPE(x, DNS_RR_PTR, 0, 0, 0, 0, 0);
    CHECK_INT(row_id(t, &t->fwd, h1, "A", a5), id_a);
    CHECK_INT(e2e_sql_int(t->db, "SELECT ttl FROM records WHERE id = %lld", id_a), 600);
    CHECK_INT(serial(t, &t->fwd), 3);
    CHECK_INT(serial(t, &t->r24), 101);

    printf("  hand-made records at the same name and identical to a desired one\n");
    E2E_SQL(
        t->db,
        "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) VALUES "
        "(%lld, '%s', 'A', '%s', 120, 0, 0, 1), (%lld, '%s', 'A', '%s', 120, 0, 0, 1)",
        t->fwd.id, h1, a99, t->fwd.id, www, a50);
    add(&v1, DNS_RR_A, www, a50, 600);
    CHECK_INT(apply(t, vm1, &v1, &x), CSP_OK);
    CHECK_STATS(x, 0, 0, 0, 7, 1, 1, 0);
    CHECK_TYPE(x, DNS_RR_A, 0, 0, 0, 1, 1);
    CHECK_INT(nrows(t, &t->fwd, www, "A", a50), 1);
    CHECK_INT(owners(t, row_id(t, &t->fwd, www, "A", a50)), 0);
    CHECK_INT(e2e_sql_int(t->db, "SELECT ttl FROM records WHERE id = %lld",
                          row_id(t, &t->fwd, www, "A", a50)),
              120);
    CHECK_INT(nrows(t, &t->fwd, h1, "A", a99), 1);
    CHECK_INT(serial(t, &t->fwd), 3);
    del(&v1, www, a50);

    printf("  removal\n");
    del(&v1, p7, h1);
    CHECK_INT(apply(t, vm1, &v1, &x), CSP_OK);
    CHECK_STATS(x, 0, 1, 0, 6, 1, 0, 1);
    CHECK_TYPE(x, DNS_RR_PTR, 0, 1, 0, 0, 0);
    CHECK_TYPE(x, DNS_RR_A, 0, 0, 0, 1, 0);
    CHECK_INT(nrows(t, &t->r16, p7, "PTR", h1), 0);
    CHECK_INT(serial(t, &t->r16), 9);
    CHECK_INT(serial(t, &t->fwd), 3);
    CHECK_INT(owned_by(t, vm1), 6);
    CHECK_INT(nrows(t, &t->fwd, h1, "A", a99), 1);

    printf("  group name (two rows) and identical record (one row, several owners)\n");
    add(&v1, DNS_RR_A, grp, a5, 600);
    add(&v1, DNS_RR_A, shared, a77, 600);
    CHECK_INT(apply(t, vm1, &v1, &x), CSP_OK);
    CHECK_STATS(x, 2, 0, 0, 6, 1, 0, 1);
    CHECK_INT(serial(t, &t->fwd), 4);
    add(&v2, DNS_RR_A, grp, a6, 600);
    add(&v2, DNS_RR_A, shared, a77, 600);
    CHECK_INT(apply(t, vm2, &v2, &x), CSP_OK);
    CHECK_STATS(x, 2, 0, 0, 0, 0, 0, 1);
    CHECK_INT(serial(t, &t->fwd), 5);
    CHECK_INT(e2e_sql_int(t->db, "SELECT COUNT(*) FROM records WHERE name = '%s'", grp), 2);
    CHECK_INT(owners(t, row_id(t, &t->fwd, grp, "A", a5)), 1);
    CHECK_INT(owners(t, row_id(t, &t->fwd, grp, "A", a6)), 1);
    CHECK_INT(nrows(t, &t->fwd, shared, "A", a77), 1);
    long long id_shared = row_id(t, &t->fwd, shared, "A", a77);
    CHECK_INT(owners(t, id_shared), 2);
    /* co-owning alone changes no records row: no bump */
    add(&v3, DNS_RR_A, shared, a77, 600);
    CHECK_INT(apply(t, vm3, &v3, &x), CSP_OK);
    CHECK_STATS(x, 1, 0, 0, 0, 0, 0, 0);
    CHECK_INT(owners(t, id_shared), 3);
    CHECK_INT(serial(t, &t->fwd), 5);
    /* dropping one owner keeps the row, and bumps nothing */
    del(&v1, shared, a77);
    CHECK_INT(apply(t, vm1, &v1, &x), CSP_OK);
    CHECK_STATS(x, 0, 1, 0, 7, 1, 0, 0);
    CHECK_INT(nrows(t, &t->fwd, shared, "A", a77), 1);
    CHECK_INT(owners(t, id_shared), 2);
    CHECK_INT(serial(t, &t->fwd), 5);
    /* a VM left with nothing is forgotten */
    CHECK_INT(apply(t, vm3, NULL, &x), CSP_OK);
    CHECK_STATS(x, 0, 1, 0, 0, 0, 0, 0);
    CHECK_INT(vm_rows(t, vm3), 0);
    CHECK_INT(owners(t, id_shared), 1);
    /* the last owner's removal deletes the row */
    del(&v2, shared, a77);
    CHECK_INT(apply(t, vm2, &v2, &x), CSP_OK);
    CHECK_STATS(x, 0, 1, 0, 1, 0, 0, 1);
    CHECK_INT(nrows(t, &t->fwd, shared, "A", a77), 0);
    CHECK_INT(owners(t, id_shared), 0);
    CHECK_INT(serial(t, &t->fwd), 6);
    CHECK_INT(nrows(t, &t->fwd, grp, "A", a5), 1);

    printf("  ownership rows whose records row was deleted by hand\n");
    long long id_aaaa = row_id(t, &t->fwd, h1, "AAAA", v6a);
    long long ghost = e2e_sql_int(t->db, "SELECT MAX(id) FROM records") + 1000000;
    E2E_SQL(t->db, "DELETE FROM records WHERE id = %lld", id_aaaa);
    E2E_SQL(t->db, "INSERT INTO cspdns_record (record_id, vm_id) VALUES (%lld, '%s')", ghost, vm1);
    CHECK_INT(apply(t, vm1, &v1, &x), CSP_OK);
    CHECK_STATS(x, 1, 0, 0, 6, 1, 0, 1);
    CHECK_INT(owners(t, id_aaaa), 0);
    CHECK_INT(
        e2e_sql_int(t->db,
                    "SELECT COUNT(*) FROM cspdns_record WHERE record_id = %lld AND vm_id = '%s'",
                    ghost, vm1),
        0);
    CHECK_INT(nrows(t, &t->fwd, h1, "AAAA", v6a), 1);
    CHECK_INT(owners(t, row_id(t, &t->fwd, h1, "AAAA", v6a)), 1);
    CHECK_INT(owned_by(t, vm1), 7);
    CHECK_INT(serial(t, &t->fwd), 7);

    printf("  duplicate owned rows are reduced to one\n");
    E2E_SQL(t->db,
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) "
            "VALUES (%lld, '%s', 'A', '%s', 600, 0, 0, 1)",
            t->fwd.id, h1, a5);
    E2E_SQL(t->db, "INSERT INTO cspdns_record (record_id, vm_id) VALUES (%lld, '%s')",
            (long long)mysql_insert_id(t->db), vm1);
    CHECK_INT(nrows(t, &t->fwd, h1, "A", a5), 2);
    CHECK_INT(apply(t, vm1, &v1, &x), CSP_OK);
    CHECK_STATS(x, 0, 1, 0, 7, 1, 0, 1);
    CHECK_INT(nrows(t, &t->fwd, h1, "A", a5), 1);
    CHECK_INT(row_id(t, &t->fwd, h1, "A", a5), id_a);
    CHECK_INT(owned_by(t, vm1), 7);
    CHECK_INT(serial(t, &t->fwd), 8);

    printf("  two VMs in one transaction: each touched zone bumped once\n");
    {
        struct rset b4 = {0}, b5 = {0};
        char n4[DNS_NAME_BUFSZ], n5[DNS_NAME_BUFSZ], a41[32], a42[32], p41[64];
        snprintf(n4, sizeof n4, "b4.%s", t->fwd.name);
        snprintf(n5, sizeof n5, "b5.%s", t->fwd.name);
        ip4(t, t->o3, 41, a41, sizeof a41);
        ip4(t, t->o3, 42, a42, sizeof a42);
        ptr4(t, t->o3, 41, p41, sizeof p41);
        add(&b4, DNS_RR_A, n4, a41, 60);
        add(&b4, DNS_RR_PTR, p41, n4, 60);
        add(&b5, DNS_RR_A, n5, a42, 60);
        memset(&x, 0, sizeof x);
        CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
        CHECK_INT(apply_in_txn(t, vm4, &b4, &x), CSP_OK);
        CHECK_INT(apply_in_txn(t, vm5, &b5, &x), CSP_OK);
        CHECK_INT(nrows(t, &t->fwd, n4, "A", a41), 0); /* not visible before commit */
        CHECK_INT(pdns_store_commit(t->st, &x, err, sizeof err), CSP_OK);
        CHECK_STATS(x, 3, 0, 0, 0, 0, 0, 2);
        CHECK_INT(nrows(t, &t->fwd, n4, "A", a41), 1);
        CHECK_INT(nrows(t, &t->r24, p41, "PTR", n4), 1);
        CHECK_INT(nrows(t, &t->fwd, n5, "A", a42), 1);
        CHECK_INT(serial(t, &t->fwd), 9);
        CHECK_INT(serial(t, &t->r24), 102);
    }

    printf("  rollback leaves nothing\n");
    {
        struct rset b6 = {0}, b7 = {0};
        char n6[DNS_NAME_BUFSZ], a60[32], p60[64], longvm[80];
        snprintf(n6, sizeof n6, "rb.%s", t->fwd.name);
        ip4(t, t->o3, 60, a60, sizeof a60);
        ptr4(t, t->o3, 60, p60, sizeof p60);
        add(&b6, DNS_RR_A, n6, a60, 60);
        add(&b6, DNS_RR_PTR, p60, n6, 60);
        memset(&x, 0, sizeof x);
        CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
        CHECK_INT(apply_in_txn(t, vm6, &b6, &x), CSP_OK);
        pdns_store_rollback(t->st);
        CHECK_INT(nrows(t, &t->fwd, n6, "A", a60), 0);
        CHECK_INT(nrows(t, &t->r24, p60, "PTR", n6), 0);
        CHECK_INT(vm_rows(t, vm6), 0);
        CHECK_INT(owned_by(t, vm6), 0);
        CHECK_INT(serial(t, &t->fwd), 9);
        CHECK_INT(serial(t, &t->r24), 102);
        /* a failing apply rolls back the VMs applied before it in the same transaction */
        add(&b7, DNS_RR_A, n6, a60, 60);
        memset(longvm, 'x', 65);
        longvm[65] = '\0';
        CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
        CHECK_INT(apply_in_txn(t, vm7, &b7, &x), CSP_OK);
        CHECK_INT(pdns_store_apply(t->st, longvm, NULL, 0, &x, err, sizeof err), CSP_PERMANENT);
        CHECK_INT(pdns_store_commit(t->st, &x, err, sizeof err), CSP_PERMANENT);
        CHECK_INT(nrows(t, &t->fwd, n6, "A", a60), 0);
        CHECK_INT(vm_rows(t, vm7), 0);
        CHECK_INT(serial(t, &t->fwd), 9);
    }

    printf("  a deadlock while reading owned rows is transient, and the next apply is quick\n");
    {
        struct rset by = {0};
        char ny[DNS_NAME_BUFSZ], py[64], lock_y[256];
        struct timespec t0, t1;
        snprintf(ny, sizeof ny, "y.%s", t->fwd.name);
        ptr4(t, t->o3b, 8, py, sizeof py);
        add(&by, DNS_RR_PTR, py, ny, 60);
        /* The store holds VM 6's row; the test's connection holds vm1's forward rows and then
         * waits for VM 6's row while the store waits for vm1's rows. InnoDB rolls back the
         * lighter transaction: the store's, as the test's has written hundreds of rows. */
        memset(&x, 0, sizeof x);
        CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
        CHECK_INT(apply_in_txn(t, vm6, &by, &x), CSP_OK);
        E2E_SQL(t->db, "START TRANSACTION");
        E2E_SQL(t->db, "UPDATE records SET ttl = ttl + 1 WHERE domain_id = %lld", t->fwd.id);
        /* weight, so that InnoDB picks the store's transaction as the victim (rolled back) */
        E2E_SQL(
            t->db,
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) "
            "SELECT %lld, CONCAT('pad', seq, '.%s'), 'TXT', 'pad', 60, 0, 0, 1 FROM seq_1_to_500",
            t->fwd.id, t->fwd.name);
        snprintf(lock_y, sizeof lock_y,
                 "INSERT INTO cspdns_vm (vm_id, updated_at) VALUES ('%s', UTC_TIMESTAMP()) "
                 "ON DUPLICATE KEY UPDATE updated_at = UTC_TIMESTAMP()",
                 vm6);
        if (mysql_send_query(t->db, lock_y, (unsigned long)strlen(lock_y)))
            e2e_die("send_query: %s", mysql_error(t->db));
        struct dns_record recs[MAX_RECS];
        size_t n = prepare(&v1, recs);
        csp_status rc = pdns_store_apply(t->st, vm1, recs, n, &x, err, sizeof err);
        printf("    %s\n", rc == CSP_OK ? "(no deadlock)" : err);
        CHECK_INT(rc, CSP_TRANSIENT);
        CHECK(strstr(err, "(errno 1213)") != NULL);
        if (mysql_read_query_result(t->db))
            e2e_die("the test's side of the deadlock failed: %s", mysql_error(t->db));
        E2E_SQL(t->db, "ROLLBACK");
        CHECK_INT(nrows(t, &t->r16, py, "PTR", ny), 0);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        CHECK_INT(apply(t, vm1, &v1, &x), CSP_OK);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        CHECK_STATS(x, 0, 0, 0, 7, 1, 0, 0);
        CHECK(t1.tv_sec - t0.tv_sec < 5);
        CHECK_INT(e2e_sql_int(t->db, "SELECT ttl FROM records WHERE id = %lld", id_a), 600);
    }

    printf("  a connection killed while idle is reopened by the next begin\n");
    {
        unsigned long long id = store_conn_id(t);
        kill_conn(t, id);
        CHECK_INT(apply(t, vm1, &v1, &x), CSP_OK);
        CHECK_STATS(x, 0, 0, 0, 7, 1, 0, 0);
        CHECK(store_conn_id(t) != id);
    }

    printf("  a connection killed inside a transaction: transient, then recovered\n");
    {
        struct rset b9 = {0};
        char n9[DNS_NAME_BUFSZ], a90[32], pw[256];
        snprintf(n9, sizeof n9, "k.%s", t->fwd.name);
        ip4(t, t->o3, 90, a90, sizeof a90);
        add(&b9, DNS_RR_A, n9, a90, 60);
        struct dns_record recs[MAX_RECS];
        size_t n = prepare(&b9, recs);
        CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
        kill_conn(t, store_conn_id(t));
        memset(&x, 0, sizeof x);
        CHECK_INT(pdns_store_apply(t->st, vm9, recs, n, &x, err, sizeof err), CSP_TRANSIENT);
        printf("    %s\n", err);
        CHECK(strncmp(err, "MySQL ", 6) == 0);
        CHECK(strstr(err, "(errno ") != NULL);
        CHECK(strstr(err, "while checking domains for new zones") != NULL);
        snprintf(pw, sizeof pw, "%s", t->s.mysql_password);
        CHECK(!*pw || strstr(err, pw) == NULL);
        CHECK_INT(apply(t, vm9, &b9, &x), CSP_OK);
        CHECK_STATS(x, 1, 0, 0, 0, 0, 0, 1);
        CHECK_INT(nrows(t, &t->fwd, n9, "A", a90), 1);
        CHECK_INT(serial(t, &t->fwd), 10);
    }

    printf("  removing every VM leaves only the hand-made records\n");
    {
        const char *vms[] = {vm1, vm2, vm3, vm4, vm5, vm6, vm7, vm9};
        for (size_t i = 0; i < sizeof vms / sizeof vms[0]; i++)
            CHECK_INT(apply(t, vms[i], NULL, &x), CSP_OK);
        CHECK_INT(
            e2e_sql_int(t->db, "SELECT COUNT(*) FROM cspdns_record WHERE vm_id LIKE '%s-%%'", t->p),
            0);
        CHECK_INT(
            e2e_sql_int(t->db, "SELECT COUNT(*) FROM cspdns_vm WHERE vm_id LIKE '%s-%%'", t->p), 0);
        CHECK_INT(e2e_sql_int(t->db,
                              "SELECT COUNT(*) FROM records WHERE domain_id IN "
                              "(%lld, %lld, %lld, %lld, %lld, %lld) AND type NOT IN ('SOA', 'NS')",
                              t->fwd.id, t->sub.id, t->nosoa.id, t->r16.id, t->r24.id, t->r6.id),
                  2);
        CHECK_INT(nrows(t, &t->fwd, h1, "A", a99), 1);
        CHECK_INT(nrows(t, &t->fwd, www, "A", a50), 1);
    }
}

/* ---- apply_many ------------------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A zone this run creates beyond the standard set (cleaned up with them). */
static struct zone *extra_zone(struct ctx *t, const char *fmt_suffix, const char *serial)
{
    if (t->nextra == sizeof t->extra / sizeof t->extra[0])
        e2e_die("too many extra zones");
    struct zone *z = &t->extra[t->nextra];
    snprintf(z->name, sizeof z->name, "%s%s", t->p, fmt_suffix);
    if (!zone_free(t, z->name))
        e2e_die("zone %s exists already", z->name);
    create_zone(t, z, serial);
    t->nextra++;
    return z;
}

/* Every row of the result, fields joined with '|' and rows with '\n', into out. */
__attribute__((format(printf, 4, 5))) static void dump(struct ctx *t, char *out, size_t len,
                                                       const char *fmt, ...)
{
    char q[2048];
    size_t off = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    if (mysql_query(t->db, q))
        e2e_die("SQL failed: %s: %s", q, mysql_error(t->db));
    MYSQL_RES *res = mysql_store_result(t->db);
    unsigned nf = res ? mysql_num_fields(res) : 0;
    out[0] = '\0';
    for (MYSQL_ROW row; res && (row = mysql_fetch_row(res));) {
        for (unsigned f = 0; f < nf && off < len; f++)
            off += (size_t)snprintf(out + off, len - off, "%s%s", f ? "|" : "",
                                    row[f] ? row[f] : "NULL");
        if (off < len)
            off += (size_t)snprintf(out + off, len - off, "\n");
    }
    if (off >= len)
        e2e_die("dump larger than %zu bytes", len);
    mysql_free_result(res);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

#define EQ_VMS 40
#define EQ_POOL 24
#define EQ_ROUNDS 8

/* Two worlds hold the same scenario: one applied with pdns_store_apply_many per round, the other
 * with pdns_store_apply per VM in the same order. */
struct world {
    char tag; /* 'a' or 'b' */
    struct zone *z;
    char nz[128]; /* a domain no zone holds */
    char vm[EQ_VMS][40];
};

/* Pool record k of a world: group names (several A rows at one name), AAAA, names no zone
 * holds, and names where a hand-made identical row exists. */
static void eq_record(const struct world *w, unsigned k, int ttl, struct dns_record *r)
{
    memset(r, 0, sizeof *r);
    r->ttl = ttl;
    if (k < 12) {
        r->type = DNS_RR_A;
        snprintf(r->name, sizeof r->name, "h%u.%s", k % 6, w->z->name);
        snprintf(r->content, sizeof r->content, "10.0.%u.%u", k / 6, k + 1);
    } else if (k < 18) {
        r->type = DNS_RR_AAAA;
        snprintf(r->name, sizeof r->name, "h%u.%s", k % 6, w->z->name);
        snprintf(r->content, sizeof r->content, "fd00::%x", k);
    } else if (k < 21) {
        r->type = DNS_RR_A;
        snprintf(r->name, sizeof r->name, "h%u.%s", k, w->nz);
        snprintf(r->content, sizeof r->content, "10.1.0.%u", k);
    } else {
        r->type = DNS_RR_A;
        snprintf(r->name, sizeof r->name, "hand%u.%s", k, w->z->name);
        snprintf(r->content, sizeof r->content, "10.9.9.%u", k);
    }
}

/* The world's rows and ownerships, with its own names replaced so two worlds compare equal. */
static void world_dump(struct ctx *t, const struct world *w, char *out, size_t len)
{
    char vmp[64];
    size_t off;
    snprintf(vmp, sizeof vmp, "%s-%c-", t->p, w->tag);
    dump(t, out, len,
         "SELECT REPLACE(r.name, '%s', 'Z'), r.type, r.content, r.ttl, "
         "COALESCE(GROUP_CONCAT(REPLACE(o.vm_id, '%s', '') ORDER BY o.vm_id), '') "
         "FROM records r LEFT JOIN cspdns_record o ON o.record_id = r.id "
         "WHERE r.domain_id = %lld AND r.type NOT IN ('SOA', 'NS') GROUP BY r.id "
         "ORDER BY 1, 2, 3, 4, 5",
         w->z->name, vmp, w->z->id);
    off = strlen(out);
    dump(t, out + off, len - off,
         "SELECT 'vms', COALESCE(GROUP_CONCAT(REPLACE(vm_id, '%s', '') ORDER BY vm_id), '') "
         "FROM cspdns_vm WHERE vm_id LIKE '%s%%'",
         vmp, vmp);
    off = strlen(out);
    dump(t, out + off, len - off,
         "SELECT 'orphans', COUNT(*) FROM cspdns_record o LEFT JOIN records r ON "
         "r.id = o.record_id WHERE o.vm_id LIKE '%s%%' AND r.id IS NULL",
         vmp);
}

static int stats_equal(const struct pdns_apply_stats *a, const struct pdns_apply_stats *b)
{
    return a->added == b->added && a->removed == b->removed && a->updated == b->updated &&
           a->unchanged == b->unchanged && a->no_zone == b->no_zone && a->foreign == b->foreign &&
           !memcmp(a->by_type, b->by_type, sizeof a->by_type);
}

/* pdns_store_changed_zones flattened, each zone's apex (when set) before its names. The array
 * is this function's, valid until its next call. */
static size_t changed_names(const struct pdns_store *st, const char *const **out)
{
    static const char **flat;
    static size_t cap;
    const struct pdns_changed_zone *z;
    size_t nz = pdns_store_changed_zones(st, &z), n = 0, need = 0;
    for (size_t i = 0; i < nz; i++)
        need += 1 + z[i].n;
    if (need > cap) {
        free(flat);
        cap = need;
        if (!(flat = malloc(cap * sizeof *flat)))
            e2e_die("out of memory");
    }
    for (size_t i = 0; i < nz; i++) {
        if (z[i].apex)
            flat[n++] = z[i].apex;
        for (size_t k = 0; k < z[i].n; k++)
            flat[n++] = z[i].names[k];
    }
    *out = flat;
    return n;
}

/* The apex of the zone pdns_store_changed_zones lists name under: "" for a zone without one,
 * "(not listed)" when name is not among any zone's names. */
static const char *changed_zone_of(const struct pdns_store *st, const char *name)
{
    const struct pdns_changed_zone *z;
    size_t nz = pdns_store_changed_zones(st, &z);
    for (size_t i = 0; i < nz; i++)
        for (size_t k = 0; k < z[i].n; k++)
            if (!strcmp(z[i].names[k], name))
                return z[i].apex ? z[i].apex : "";
    return "(not listed)";
}

static void test_equivalence(struct ctx *t)
{
    struct world w[2];
    static struct dns_record recs[2][EQ_VMS][8];
    struct pdns_vm_records batch[EQ_VMS];
    static char before[2][65536];
    unsigned char seedb[8];
    uint64_t seed = 0;
    char err[512];

    random_bytes(seedb, sizeof seedb);
    memcpy(&seed, seedb, sizeof seed);
    seed |= 1;
    printf("  apply_many equals apply per VM on random batches (seed %llu)\n",
           (unsigned long long)seed);
    for (int i = 0; i < 2; i++) {
        w[i].tag = (char)('a' + i);
        w[i].z = extra_zone(t, i ? "-eqb.test" : "-eqa.test", "1");
        snprintf(w[i].nz, sizeof w[i].nz, "%s-eq%c.invalid", t->p, w[i].tag);
        for (unsigned v = 0; v < EQ_VMS; v++)
            snprintf(w[i].vm[v], sizeof w[i].vm[v], "%s-%c-vm%02u", t->p, w[i].tag, v);
        for (unsigned k = 21; k < EQ_POOL; k++) {
            struct dns_record r;
            eq_record(&w[i], k, 60, &r);
            E2E_SQL(
                t->db,
                "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) "
                "VALUES (%lld, '%s', 'A', '%s', 60, 0, 0, 1)",
                w[i].z->id, r.name, r.content);
        }
    }
    for (int round = 0; round < EQ_ROUNDS; round++) {
        unsigned order[EQ_VMS], nb = 0;
        size_t nrec[EQ_VMS];
        for (unsigned v = 0; v < EQ_VMS; v++)
            order[v] = v;
        for (unsigned v = EQ_VMS - 1; v > 0; v--) {
            unsigned j = (unsigned)(rng_next(&seed) % (v + 1)), x = order[v];
            order[v] = order[j];
            order[j] = x;
        }
        /* Some VMs of the round, in random order, each wanting 0..5 pool records. */
        for (unsigned v = 0; v < EQ_VMS; v++) {
            if (rng_next(&seed) % 2)
                continue;
            unsigned vm = order[v], want = (unsigned)(rng_next(&seed) % 6);
            unsigned ttl = rng_next(&seed) % 3 ? 60 : 300;
            int used[EQ_POOL] = {0};
            nrec[nb] = 0;
            for (unsigned r = 0; r < want; r++) {
                unsigned k = (unsigned)(rng_next(&seed) % EQ_POOL);
                if (used[k]++)
                    continue;
                for (int i = 0; i < 2; i++)
                    eq_record(&w[i], k, (int)ttl, &recs[i][nb][nrec[nb]]);
                nrec[nb]++;
            }
            for (int i = 0; i < 2; i++)
                nrec[nb] = dns_record_set_normalize(recs[i][nb], nrec[nb]);
            order[nb++] = vm;
        }
        /* An operator deletes some owned rows by hand now and then. */
        if (round == 4)
            for (int i = 0; i < 2; i++)
                E2E_SQL(t->db, "DELETE FROM records WHERE domain_id = %lld AND name = 'h1.%s'",
                        w[i].z->id, w[i].z->name);

        struct pdns_apply_stats sa = {0}, sb = {0}, per[EQ_VMS];
        const char *const *names;
        size_t nnames[2];
        for (unsigned b = 0; b < nb; b++) {
            batch[b].vm_id = w[0].vm[order[b]];
            batch[b].recs = recs[0][b];
            batch[b].n = nrec[b];
        }
        CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
        CHECK_INT(pdns_store_apply_many(t->st, batch, nb, err, sizeof err), CSP_OK);
        CHECK_INT(pdns_store_commit(t->st, &sa, err, sizeof err), CSP_OK);
        nnames[0] = changed_names(t->st, &names);

        CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
        for (unsigned b = 0; b < nb; b++) {
            memset(&per[b], 0, sizeof per[b]);
            CHECK_INT(pdns_store_apply(t->st, w[1].vm[order[b]], recs[1][b], nrec[b], &per[b], err,
                                       sizeof err),
                      CSP_OK);
        }
        CHECK_INT(pdns_store_commit(t->st, &sb, err, sizeof err), CSP_OK);
        nnames[1] = changed_names(t->st, &names);

        for (unsigned b = 0; b < nb; b++) {
            if (!stats_equal(&batch[b].stats, &per[b])) {
                fprintf(stderr,
                        "  round %d vm %u: batch +%u -%u ~%u =%u nz%u f%u, apply +%u -%u ~%u "
                        "=%u nz%u f%u\n",
                        round, order[b], batch[b].stats.added, batch[b].stats.removed,
                        batch[b].stats.updated, batch[b].stats.unchanged, batch[b].stats.no_zone,
                        batch[b].stats.foreign, per[b].added, per[b].removed, per[b].updated,
                        per[b].unchanged, per[b].no_zone, per[b].foreign);
                CHECK(0);
            }
        }
        CHECK_INT(sa.zones_bumped, sb.zones_bumped);
        CHECK_INT(nnames[0], nnames[1]);
        CHECK_INT(serial(t, w[0].z), serial(t, w[1].z));
        world_dump(t, &w[0], before[0], sizeof before[0]);
        world_dump(t, &w[1], before[1], sizeof before[1]);
        CHECK_STR(before[0], before[1]);
    }
    printf("    %d rounds: identical rows, owners, stats, serials; final rows:\n%.400s\n",
           EQ_ROUNDS, before[0]);
    /* Every kind of decision occurred, or the comparison proved little. */
    CHECK(strstr(before[0], "hand21") || strstr(before[0], "hand22") ||
          strstr(before[0], "hand23"));
    CHECK(strstr(before[0], ",") != NULL); /* a row with two owners */
    for (unsigned v = 0; v < EQ_VMS; v++)
        for (int i = 0; i < 2; i++)
            CHECK_INT(pdns_store_apply_vm(t->st, w[i].vm[v], NULL, 0, NULL, err, sizeof err),
                      CSP_OK);
}

static int has_name(const char *const *names, size_t n, const char *want)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(names[i], want))
            return 1;
    return 0;
}

static void test_changed_names(struct ctx *t)
{
    char vm[64], n1[256], n2[256], n3[256], n4[300], ent[256], want[320];
    const char *const *names;
    struct rset s = {.n = 0};
    struct pdns_apply_stats x;
    size_t n;

    printf("  changed names: inserted, re-TTLed and deleted names, the empty non-terminals "
           "created or removed, plus bumped apexes\n");
    snprintf(vm, sizeof vm, "%s-cn", t->p);
    snprintf(n1, sizeof n1, "cn1.%s", t->fwd.name);
    snprintf(n2, sizeof n2, "cn2.%s", t->sub.name);
    snprintf(n3, sizeof n3, "cn3.%s", t->nosoa.name);
    snprintf(ent, sizeof ent, "entcn.%s", t->fwd.name);
    snprintf(n4, sizeof n4, "cn4.%s", ent);
    add(&s, DNS_RR_A, n1, "10.3.0.1", 60);
    add(&s, DNS_RR_A, n2, "10.3.0.2", 60);
    add(&s, DNS_RR_A, n3, "10.3.0.3", 60);
    add(&s, DNS_RR_A, n4, "10.3.0.4", 60);
    CHECK_INT(apply(t, vm, &s, &x), CSP_OK);
    n = changed_names(t->st, &names);
    CHECK_INT(n, 7); /* four names, the ENT above cn4, two apexes (nosoa has no SOA to bump) */
    snprintf(want, sizeof want, "%s.", ent);
    CHECK(has_name(names, n, want));
    snprintf(want, sizeof want, "%s.", n1);
    CHECK(has_name(names, n, want));
    snprintf(want, sizeof want, "%s.", n2);
    CHECK(has_name(names, n, want));
    snprintf(want, sizeof want, "%s.", n3);
    CHECK(has_name(names, n, want));
    snprintf(want, sizeof want, "%s.", t->fwd.name);
    CHECK(has_name(names, n, want));
    snprintf(want, sizeof want, "%s.", t->sub.name);
    CHECK(has_name(names, n, want));
    /* Each name under its own zone; nosoa's without an apex, as its SOA was not bumped. */
    char apex[300];
    snprintf(apex, sizeof apex, "%s.", t->fwd.name);
    snprintf(want, sizeof want, "%s.", n1);
    CHECK_STR(changed_zone_of(t->st, want), apex);
    snprintf(want, sizeof want, "%s.", ent);
    CHECK_STR(changed_zone_of(t->st, want), apex);
    snprintf(want, sizeof want, "%s.", n4);
    CHECK_STR(changed_zone_of(t->st, want), apex);
    snprintf(apex, sizeof apex, "%s.", t->sub.name);
    snprintf(want, sizeof want, "%s.", n2);
    CHECK_STR(changed_zone_of(t->st, want), apex);
    snprintf(want, sizeof want, "%s.", n3);
    CHECK_STR(changed_zone_of(t->st, want), "");
    snprintf(want, sizeof want, "%s.", t->fwd.name);
    CHECK_STR(changed_zone_of(t->st, want), "(not listed)"); /* an apex is not among its names */

    CHECK_INT(apply(t, vm, &s, &x), CSP_OK);
    CHECK_INT(changed_names(t->st, &names), 0);

    set_ttl(&s, n2, "10.3.0.2", 120);
    CHECK_INT(apply(t, vm, &s, &x), CSP_OK);
    n = changed_names(t->st, &names);
    CHECK_INT(n, 2);
    snprintf(want, sizeof want, "%s.", n2);
    CHECK(has_name(names, n, want));
    snprintf(want, sizeof want, "%s.", t->sub.name);
    CHECK(has_name(names, n, want));

    CHECK_INT(apply(t, vm, NULL, &x), CSP_OK);
    CHECK_INT(x.removed, 4);
    n = changed_names(t->st, &names);
    CHECK_INT(n, 7); /* the ENT went with cn4 */
    snprintf(want, sizeof want, "%s.", ent);
    CHECK(has_name(names, n, want));
    /* A new transaction forgets them. */
    char err[512];
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    CHECK_INT(changed_names(t->st, &names), 0);
    pdns_store_rollback(t->st);
}

static void test_new_zone(struct ctx *t)
{
    char vm[64], name[256], late[128];
    struct rset s = {.n = 0};
    struct pdns_apply_stats x;

    printf("  a zone added to domains is used by the next transaction\n");
    snprintf(vm, sizeof vm, "%s-late", t->p);
    snprintf(late, sizeof late, "%s-late.test", t->p);
    snprintf(name, sizeof name, "x.%s", late);
    add(&s, DNS_RR_A, name, "10.4.0.1", 60);
    CHECK_INT(apply(t, vm, &s, &x), CSP_OK);
    CHECK_INT(x.no_zone, 1);
    CHECK_INT(x.added, 0);
    struct zone *z = extra_zone(t, "-late.test", "3");
    CHECK_INT(apply(t, vm, &s, &x), CSP_OK);
    CHECK_INT(x.no_zone, 0);
    CHECK_INT(x.added, 1);
    CHECK_INT(x.zones_bumped, 1);
    CHECK_INT(nrows(t, z, name, "A", "10.4.0.1"), 1);
    CHECK_INT(serial(t, z), 4);
    /* And one removed from domains is no longer used: the name has no zone again. */
    CHECK_INT(apply(t, vm, NULL, &x), CSP_OK);
    CHECK_INT(x.removed, 1);
    E2E_SQL(t->db, "DELETE FROM records WHERE domain_id = %lld", z->id);
    E2E_SQL(t->db, "DELETE FROM domains WHERE id = %lld", z->id);
    CHECK_INT(apply(t, vm, &s, &x), CSP_OK);
    CHECK_INT(x.no_zone, 1);
    CHECK_INT(apply(t, vm, NULL, &x), CSP_OK);
}

/* The serial of the SOA row of z that comes first (first == 1) or second by id. */
static long long nth_serial(struct ctx *t, const struct zone *z, int first)
{
    char v[1024];
    long long serial = -1;
    if (e2e_sql_first(t->db, v, sizeof v,
                      "SELECT content FROM records WHERE domain_id = %lld AND type = 'SOA' "
                      "ORDER BY id LIMIT %d, 1",
                      z->id, first ? 0 : 1))
        sscanf(v, "%*s %*s %lld", &serial);
    return serial;
}

/* Every zone a transaction touched has its SOA bumped at commit, in one read and one write for
 * the zones in memory, by id for one deleted from domains meanwhile; two SOA rows: the first by
 * id moves; content that is no SOA: left alone. */
static void test_soa_kinds(struct ctx *t)
{
    struct zone *two = extra_zone(t, "-soa2.test", "10"), *bad = extra_zone(t, "-soabad.test", "7"),
                *gone = extra_zone(t, "-gone.test", "20");
    char vm[3][64], name[3][256], err[512];
    struct rset s[3] = {{.n = 0}, {.n = 0}, {.n = 0}};
    struct dns_record recs[3][MAX_RECS];
    struct pdns_apply_stats x;

    printf("  SOA serials of several zones in one commit\n");
    E2E_SQL(t->db,
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) "
            "VALUES (%lld, '%s', 'SOA', 'ns1.%s hostmaster.%s 50 10800 3600 604800 60', 3600, 0, "
            "0, 1)",
            two->id, two->name, two->name, two->name);
    E2E_SQL(t->db,
            "UPDATE records SET content = 'not an soa' WHERE domain_id = %lld AND type = "
            "'SOA'",
            bad->id);
    const struct zone *zs[] = {two, bad, gone};
    for (int i = 0; i < 3; i++) {
        snprintf(vm[i], sizeof vm[i], "%s-soa%d", t->p, i);
        snprintf(name[i], sizeof name[i], "vm.%s", zs[i]->name);
        add(&s[i], DNS_RR_A, name[i], "10.6.0.1", 60);
    }
    CHECK_INT(apply(t, vm[2], &s[2], &x), CSP_OK);
    CHECK_INT(serial(t, gone), 21);
    /* The zone leaves domains, its rows stay: the VM's removal still bumps it. */
    E2E_SQL(t->db, "DELETE FROM domains WHERE id = %lld", gone->id);
    struct pdns_vm_records vms[3];
    for (int i = 0; i < 3; i++)
        vms[i] = (struct pdns_vm_records){
            .vm_id = vm[i], .recs = recs[i], .n = i < 2 ? prepare(&s[i], recs[i]) : 0};
    memset(&x, 0, sizeof x);
    CHECK_INT(pdns_store_apply_many_txn(t->st, vms, 3, &x, err, sizeof err), CSP_OK);
    CHECK_INT(vms[0].stats.added + vms[1].stats.added, 2);
    CHECK_INT(vms[2].stats.removed, 1);
    CHECK_INT(x.zones_bumped, 2);
    CHECK_INT(nth_serial(t, two, 1), 11);
    CHECK_INT(nth_serial(t, two, 0), 50);
    CHECK_INT(e2e_sql_int(t->db,
                          "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND type = 'SOA' "
                          "AND content = 'not an soa'",
                          bad->id),
              1);
    CHECK_INT(serial(t, gone), 22);
    for (int i = 0; i < 2; i++)
        CHECK_INT(apply(t, vm[i], NULL, &x), CSP_OK);
}

#define BIG 1000

/* 1000 VMs with an A, an AAAA and a PTR each. */
static void big_records(struct ctx *t, const char *tag, unsigned host0, struct dns_record (*r)[3],
                        char (*ids)[40], struct pdns_vm_records *vms)
{
    for (unsigned v = 0; v < BIG; v++) {
        snprintf(ids[v], sizeof ids[v], "%s-%s%u", t->p, tag, v);
        memset(r[v], 0, sizeof r[v]);
        snprintf(r[v][0].name, sizeof r[v][0].name, "%s%u.%s", tag, v, t->fwd.name);
        r[v][0].type = DNS_RR_A;
        snprintf(r[v][0].content, sizeof r[v][0].content, "10.5.%u.%u", v / 250, v % 250 + 1);
        snprintf(r[v][1].name, sizeof r[v][1].name, "%s", r[v][0].name);
        r[v][1].type = DNS_RR_AAAA;
        ip6(t, host0 + v, r[v][1].content, sizeof r[v][1].content);
        ptr6(t, host0 + v, 32, r[v][2].name, sizeof r[v][2].name);
        r[v][2].type = DNS_RR_PTR;
        snprintf(r[v][2].content, sizeof r[v][2].content, "%s", r[v][0].name);
        for (int k = 0; k < 3; k++)
            r[v][k].ttl = 60;
        vms[v].vm_id = ids[v];
        vms[v].recs = r[v];
        vms[v].n = dns_record_set_normalize(r[v], 3);
    }
}

static void test_big_batch(struct ctx *t)
{
    static struct dns_record r[2][BIG][3];
    static char ids[2][BIG][40];
    static struct pdns_vm_records vms[2][BIG];
    struct pdns_apply_stats x = {0};
    const char *const *names;
    char err[512];
    long long s0 = serial(t, &t->fwd), s6 = serial(t, &t->r6);

    printf("  a batch of %d VMs x 3 records\n", BIG);
    big_records(t, "big", 20000, r[0], ids[0], vms[0]);
    big_records(t, "seq", 30000, r[1], ids[1], vms[1]);

    const char *count_ents = "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND type IS NULL";
    long long ents0 = e2e_sql_int(t->db, count_ents, t->r6.id);
    double t0 = now_s();
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_apply_many(t->st, vms[0], BIG, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_commit(t->st, &x, err, sizeof err), CSP_OK);
    double batched = now_s() - t0;
    CHECK_INT(x.zones_bumped, 2);
    CHECK_INT(serial(t, &t->fwd), s0 + 1);
    CHECK_INT(serial(t, &t->r6), s6 + 1);
    unsigned added = 0;
    for (unsigned v = 0; v < BIG; v++)
        added += vms[0][v].stats.added;
    CHECK_INT(added, 3 * BIG);
    /* Names, apexes, and the nibble ENTs the PTRs created in the ip6.arpa zone. */
    CHECK_INT(changed_names(t->st, &names),
              2 * BIG + 2 + (e2e_sql_int(t->db, count_ents, t->r6.id) - ents0));
    CHECK_INT(
        e2e_sql_int(t->db,
                    "SELECT COUNT(*) FROM cspdns_record o JOIN records r ON r.id = o.record_id "
                    "WHERE o.vm_id LIKE '%s-big%%'",
                    t->p),
        3 * BIG);
    CHECK_INT(
        e2e_sql_int(t->db,
                    "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND name LIKE 'big%%'",
                    t->fwd.id),
        2 * BIG);

    t0 = now_s();
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    for (unsigned v = 0; v < BIG; v++)
        CHECK_INT(pdns_store_apply(t->st, vms[1][v].vm_id, vms[1][v].recs, vms[1][v].n, NULL, err,
                                   sizeof err),
                  CSP_OK);
    CHECK_INT(pdns_store_commit(t->st, NULL, err, sizeof err), CSP_OK);
    double single = now_s() - t0;
    printf("    timing (not asserted): %d VMs x 3 records in one transaction: "
           "pdns_store_apply_many %.3f s, pdns_store_apply per VM %.3f s\n",
           BIG, batched, single);

    /* Again with changed TTLs, then everything removed, in one batch of 2000. */
    static struct pdns_vm_records all[2 * BIG];
    for (unsigned v = 0; v < BIG; v++)
        for (int k = 0; k < 3; k++)
            r[0][v][k].ttl = 120;
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_apply_many(t->st, vms[0], BIG, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_commit(t->st, NULL, err, sizeof err), CSP_OK);
    CHECK_INT(vms[0][7].stats.updated, 3);
    CHECK_INT(
        e2e_sql_int(t->db,
                    "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND name LIKE 'big%%' "
                    "AND ttl = 120",
                    t->fwd.id),
        2 * BIG);
    for (unsigned v = 0; v < 2 * BIG; v++) {
        all[v] = vms[v / BIG][v % BIG];
        all[v].n = 0;
    }
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_apply_many(t->st, all, 2 * BIG, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_commit(t->st, NULL, err, sizeof err), CSP_OK);
    CHECK_INT(all[1999].stats.removed, 3);
    CHECK_INT(e2e_sql_int(t->db,
                          "SELECT COUNT(*) FROM cspdns_record WHERE vm_id LIKE '%s-big%%' OR "
                          "vm_id LIKE '%s-seq%%'",
                          t->p, t->p),
              0);
    CHECK_INT(
        e2e_sql_int(t->db, "SELECT COUNT(*) FROM cspdns_vm WHERE vm_id LIKE '%s-big%%'", t->p), 0);
    CHECK_INT(e2e_sql_int(t->db,
                          "SELECT COUNT(*) FROM records WHERE domain_id IN (%lld, %lld) AND "
                          "(name LIKE 'big%%' OR name LIKE 'seq%%' OR content LIKE 'big%%' OR "
                          "content LIKE 'seq%%')",
                          t->fwd.id, t->r6.id),
              0);
}

static void test_batch_refusals(struct ctx *t)
{
    struct dns_record r = {.type = DNS_RR_A, .ttl = 60};
    struct pdns_vm_records v[2];
    char err[512], vm[64];

    printf("  a batch naming one VM twice, or with a bad record, is refused and rolled back\n");
    snprintf(vm, sizeof vm, "%s-twice", t->p);
    snprintf(r.name, sizeof r.name, "twice.%s", t->fwd.name);
    snprintf(r.content, sizeof r.content, "10.6.0.1");
    v[0] = (struct pdns_vm_records){.vm_id = vm, .recs = &r, .n = 1};
    v[1] = v[0];
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_apply_many(t->st, v, 2, err, sizeof err), CSP_PERMANENT);
    CHECK(strstr(err, "appears twice") != NULL);
    CHECK_INT(pdns_store_commit(t->st, NULL, err, sizeof err), CSP_PERMANENT); /* rolled back */
    CHECK_INT(nrows(t, &t->fwd, r.name, "A", "10.6.0.1"), 0);
}

static void test_kill_mid_batch(struct ctx *t)
{
    static struct dns_record r[100];
    static char ids[100][40];
    struct pdns_vm_records v[100];
    struct pdns_apply_stats x = {0};
    char err[512];
    long long s0 = serial(t, &t->fwd);

    printf("  a connection killed between two parts of a batch: rolled back, retry works\n");
    for (unsigned i = 0; i < 100; i++) {
        snprintf(ids[i], sizeof ids[i], "%s-kill%u", t->p, i);
        memset(&r[i], 0, sizeof r[i]);
        snprintf(r[i].name, sizeof r[i].name, "kill%u.%s", i, t->fwd.name);
        r[i].type = DNS_RR_A;
        r[i].ttl = 60;
        snprintf(r[i].content, sizeof r[i].content, "10.7.0.%u", i + 1);
        v[i] = (struct pdns_vm_records){.vm_id = ids[i], .recs = &r[i], .n = 1};
    }
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_apply_many(t->st, v, 50, err, sizeof err), CSP_OK);
    kill_conn(t, store_conn_id(t));
    CHECK_INT(pdns_store_apply_many(t->st, v + 50, 50, err, sizeof err), CSP_TRANSIENT);
    printf("    %s\n", err);
    CHECK_INT(e2e_sql_int(t->db,
                          "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND name LIKE "
                          "'kill%%'",
                          t->fwd.id),
              0);
    CHECK_INT(
        e2e_sql_int(t->db, "SELECT COUNT(*) FROM cspdns_vm WHERE vm_id LIKE '%s-kill%%'", t->p), 0);
    CHECK_INT(serial(t, &t->fwd), s0);
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_apply_many(t->st, v, 100, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_commit(t->st, &x, err, sizeof err), CSP_OK);
    CHECK_INT(e2e_sql_int(t->db,
                          "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND name LIKE "
                          "'kill%%'",
                          t->fwd.id),
              100);
    CHECK_INT(serial(t, &t->fwd), s0 + 1);
    for (unsigned i = 0; i < 100; i++)
        v[i].n = 0;
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_apply_many(t->st, v, 100, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_commit(t->st, &x, err, sizeof err), CSP_OK);
    CHECK_INT(owned_by(t, ids[3]), 0);
}

static long long ent_rows(struct ctx *t, const char *name)
{
    return e2e_sql_int(t->db,
                       "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND name = '%s' AND "
                       "type IS NULL",
                       t->fwd.id, name);
}

/* name made an empty non-terminal by hand: an A row (addr) at a.name and the ENT row at name. */
static void hand_made_ent(struct ctx *t, const char *name, const char *addr)
{
    E2E_SQL(t->db,
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, ordername, "
            "auth) VALUES (%lld, 'a.%s', 'A', '%s', 60, 0, 0, NULL, 1), (%lld, '%s', NULL, NULL, "
            "NULL, NULL, 0, NULL, 1)",
            t->fwd.id, name, addr, t->fwd.id, name);
}

/* The rectify takes the rows at a batch's names from the store's own read instead of reading
 * them again: that read must hold every row at the name (not only copies of the records), and
 * what the transaction deleted since must not count. */
static void test_rectify_known_rows(struct ctx *t)
{
    char vm[64], x[256], y[256], z[256], below[300], err[512];
    struct rset s = {.n = 0};
    struct pdns_apply_stats st;

    printf("  the rectify sees every row at a changed name as the transaction left it\n");
    snprintf(vm, sizeof vm, "%s-kn", t->p);
    snprintf(x, sizeof x, "kx.%s", t->fwd.name);
    snprintf(y, sizeof y, "ky.%s", t->fwd.name);
    snprintf(z, sizeof z, "kz.%s", t->fwd.name);
    snprintf(below, sizeof below, "a.%s", y);

    /* Hand-made rows at x that rectify-zone would fix once a record makes x real: a stale empty
     * non-terminal goes, a TXT row's auth becomes 1. */
    E2E_SQL(t->db,
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, ordername, "
            "auth) VALUES (%lld, '%s', NULL, NULL, NULL, NULL, 0, NULL, 1), (%lld, '%s', 'TXT', "
            "'hand made', 60, 0, 0, NULL, 0)",
            t->fwd.id, x, t->fwd.id, x);
    add(&s, DNS_RR_A, x, "10.9.0.1", 60);
    CHECK_INT(apply(t, vm, &s, &st), CSP_OK);
    CHECK_INT(ent_rows(t, x), 0);
    CHECK_INT(e2e_sql_int(t->db,
                          "SELECT auth FROM records WHERE domain_id = %lld AND name = '%s' AND "
                          "type = 'TXT'",
                          t->fwd.id, x),
              1);

    /* z is an empty non-terminal (a hand-made name below it) until a record arrives there: the
     * row just inserted makes it real, so its ENT row goes. */
    hand_made_ent(t, z, "10.9.0.8");
    s.n = 0;
    add(&s, DNS_RR_A, x, "10.9.0.1", 60);
    add(&s, DNS_RR_A, z, "10.9.0.3", 60);
    CHECK_INT(apply(t, vm, &s, &st), CSP_OK);
    CHECK_INT(ent_rows(t, z), 0);

    /* y is an empty non-terminal (a hand-made name below it). One transaction gives y a record
     * and takes it away again: y is still empty at commit, so its ENT row stays. */
    hand_made_ent(t, y, "10.9.0.9");
    s.n = 0;
    add(&s, DNS_RR_A, y, "10.9.0.2", 60);
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    memset(&st, 0, sizeof st);
    CHECK_INT(apply_in_txn(t, vm, &s, &st), CSP_OK);
    CHECK_INT(apply_in_txn(t, vm, NULL, &st), CSP_OK);
    CHECK_INT(pdns_store_commit(t->st, &st, err, sizeof err), CSP_OK);
    CHECK_INT(ent_rows(t, y), 1);
    CHECK_INT(e2e_sql_int(t->db,
                          "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND name = '%s'",
                          t->fwd.id, y),
              1);
    E2E_SQL(t->db,
            "DELETE FROM records WHERE domain_id = %lld AND (name IN ('%s', '%s', '%s') OR name "
            "LIKE '%%%s')",
            t->fwd.id, x, y, below, z);
}

/* A name many records of a chunk share (an instance group's) is looked up by its records, not
 * read whole, so the rectify must read it itself; and a name an earlier part of the transaction
 * made known stays complete when such a part adds rows there. */
static void test_rectify_shared_name(struct ctx *t)
{
    enum { N = 6 };
    static struct dns_record r[N];
    static char ids[N][48];
    struct pdns_vm_records v[N];
    struct pdns_apply_stats st;
    struct rset s = {.n = 0};
    char g[256], vm[64], err[512];

    printf("  the rectify reads a name many records of a batch share, and keeps one it knows\n");
    snprintf(g, sizeof g, "kg.%s", t->fwd.name);
    snprintf(vm, sizeof vm, "%s-kga", t->p);
    hand_made_ent(t, g, "10.9.2.9");
    for (unsigned i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "%s-kg%u", t->p, i);
        memset(&r[i], 0, sizeof r[i]);
        snprintf(r[i].name, sizeof r[i].name, "%s", g);
        r[i].type = DNS_RR_A;
        r[i].ttl = 60;
        snprintf(r[i].content, sizeof r[i].content, "10.9.2.%u", i + 1);
        v[i] = (struct pdns_vm_records){.vm_id = ids[i], .recs = &r[i], .n = 1};
    }
    /* One batch: N records at g, whose ENT row must go. */
    CHECK_INT(pdns_store_apply_many_txn(t->st, v, N, &st, err, sizeof err), CSP_OK);
    CHECK_INT(ent_rows(t, g), 0);

    /* All gone again: g is an empty non-terminal once more. */
    for (unsigned i = 0; i < N; i++)
        v[i].n = 0;
    CHECK_INT(pdns_store_apply_many_txn(t->st, v, N, &st, err, sizeof err), CSP_OK);
    CHECK_INT(ent_rows(t, g), 1);

    /* One transaction: a VM's record makes g known, goes again, and a batch sharing g adds N
     * rows there. g is real at commit: its ENT row goes. */
    for (unsigned i = 0; i < N; i++)
        v[i].n = 1;
    add(&s, DNS_RR_A, g, "10.9.2.100", 60);
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    memset(&st, 0, sizeof st);
    CHECK_INT(apply_in_txn(t, vm, &s, &st), CSP_OK);
    CHECK_INT(apply_in_txn(t, vm, NULL, &st), CSP_OK);
    CHECK_INT(pdns_store_apply_many(t->st, v, N, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_commit(t->st, &st, err, sizeof err), CSP_OK);
    CHECK_INT(ent_rows(t, g), 0);
    CHECK_INT(e2e_sql_int(t->db,
                          "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND name = '%s' "
                          "AND type = 'A'",
                          t->fwd.id, g),
              N);
    for (unsigned i = 0; i < N; i++)
        v[i].n = 0;
    CHECK_INT(pdns_store_apply_many_txn(t->st, v, N, &st, err, sizeof err), CSP_OK);
    E2E_SQL(t->db, "DELETE FROM records WHERE domain_id = %lld AND name LIKE '%%%s'", t->fwd.id, g);
}

/* The rows identical to records at a name many records of a batch share (read once per name,
 * matched by the whole row): a hand-made row at the name that is identical to none of them
 * blocks none, one identical to a record blocks that record, and a second batch wanting the
 * same rows co-owns them. */
static void test_shared_name_copies(struct ctx *t)
{
    enum { N = 6 };
    static struct dns_record r[N];
    static char ids[2][N][48];
    struct pdns_vm_records v[N];
    struct pdns_apply_stats total;
    char g[256], err[512];

    printf("  identical rows at a name many records of a batch share\n");
    snprintf(g, sizeof g, "sg.%s", t->fwd.name);
    E2E_SQL(t->db,
            "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) "
            "VALUES (%lld, '%s', 'A', '10.9.3.50', 60, 0, 0, 1), "
            "(%lld, '%s', 'A', '10.9.3.3', 60, 0, 0, 1)",
            t->fwd.id, g, t->fwd.id, g);
    for (unsigned i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof r[i]);
        snprintf(r[i].name, sizeof r[i].name, "%s", g);
        r[i].type = DNS_RR_A;
        r[i].ttl = 60;
        snprintf(r[i].content, sizeof r[i].content, "10.9.3.%u", i + 1);
    }
    for (unsigned b = 0; b < 2; b++) {
        for (unsigned i = 0; i < N; i++) {
            snprintf(ids[b][i], sizeof ids[b][i], "%s-sg%u-%u", t->p, b, i);
            v[i] = (struct pdns_vm_records){.vm_id = ids[b][i], .recs = &r[i], .n = 1};
        }
        CHECK_INT(pdns_store_apply_many_txn(t->st, v, N, &total, err, sizeof err), CSP_OK);
        for (unsigned i = 0; i < N; i++) {
            CHECK_INT(v[i].stats.foreign, i == 2);
            CHECK_INT(v[i].stats.added, i != 2);
        }
    }
    CHECK_INT(e2e_sql_int(t->db,
                          "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND name = '%s'",
                          t->fwd.id, g),
              N + 1);
    for (unsigned i = 0; i < N; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "10.9.3.%u", i + 1);
        CHECK_INT(nrows(t, &t->fwd, g, "A", ip), 1);
        CHECK_INT(owners(t, row_id(t, &t->fwd, g, "A", ip)), i == 2 ? 0 : 2);
    }
    for (unsigned b = 0; b < 2; b++) {
        for (unsigned i = 0; i < N; i++)
            v[i] = (struct pdns_vm_records){.vm_id = ids[b][i], .recs = NULL, .n = 0};
        CHECK_INT(pdns_store_apply_many_txn(t->st, v, N, &total, err, sizeof err), CSP_OK);
    }
    CHECK_INT(e2e_sql_int(t->db,
                          "SELECT COUNT(*) FROM records WHERE domain_id = %lld AND name = '%s'",
                          t->fwd.id, g),
              2);
    E2E_SQL(t->db, "DELETE FROM records WHERE domain_id = %lld AND name = '%s'", t->fwd.id, g);
}

/* Of identical rows other VMs own, a VM that wants the same record co-owns the oldest (the
 * candidates are taken in id order). */
static void test_coown_oldest(struct ctx *t)
{
    struct pdns_apply_stats x;
    struct rset d = {0};
    char dn[DNS_NAME_BUFSZ], vmd[3][64];
    long long ids[2];

    printf("  of two identical rows other VMs own, a third VM co-owns the older\n");
    snprintf(dn, sizeof dn, "dup.%s", t->fwd.name);
    for (int i = 0; i < 2; i++) {
        snprintf(vmd[i], sizeof vmd[i], "%s-dup%d", t->p, i);
        E2E_SQL(t->db,
                "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) "
                "VALUES (%lld, '%s', 'A', '10.9.4.1', 600, 0, 0, 1)",
                t->fwd.id, dn);
        ids[i] = (long long)mysql_insert_id(t->db);
        E2E_SQL(t->db, "INSERT INTO cspdns_record (record_id, vm_id) VALUES (%lld, '%s')", ids[i],
                vmd[i]);
    }
    snprintf(vmd[2], sizeof vmd[2], "%s-dup2", t->p);
    add(&d, DNS_RR_A, dn, "10.9.4.1", 600);
    CHECK_INT(apply(t, vmd[2], &d, &x), CSP_OK);
    CHECK_STATS(x, 1, 0, 0, 0, 0, 0, 0);
    CHECK_INT(owners(t, ids[0]), 2);
    CHECK_INT(owners(t, ids[1]), 1);
    for (int i = 0; i < 3; i++)
        CHECK_INT(apply(t, vmd[i], NULL, &x), CSP_OK);
    CHECK_INT(nrows(t, &t->fwd, dn, "A", "10.9.4.1"), 0);
}

static void test_ping(struct ctx *t)
{
    char err[512];
    unsigned long long before;

    printf("  ping: answers, reconnects after a KILL, refuses inside a transaction\n");
    CHECK_INT(pdns_store_ping(t->st, err, sizeof err), CSP_OK);
    before = store_conn_id(t);
    kill_conn(t, before);
    /* The dead idle connection is replaced at once: the server is up, so the ping says so. */
    CHECK_INT(pdns_store_ping(t->st, err, sizeof err), CSP_OK);
    CHECK(store_conn_id(t) != before);
    CHECK_INT(pdns_store_begin(t->st, err, sizeof err), CSP_OK);
    CHECK_INT(pdns_store_ping(t->st, err, sizeof err), CSP_PERMANENT);
    CHECK(strstr(err, "inside a transaction") != NULL);
    pdns_store_rollback(t->st);
    CHECK_INT(pdns_store_ping(t->st, err, sizeof err), CSP_OK);
}

int main(void)
{
    static const char *const vars[] = {"MYSQL_PDNS_HOST", "MYSQL_PDNS_PORT", "MYSQL_PDNS_NAME",
                                       "MYSQL_PDNS_USER", "MYSQL_PDNS_PASSWORD"};
    struct ctx t;
    char err[512];

    memset(&t, 0, sizeof t);
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (!getenv(vars[i]))
            e2e_die("%s is not set. This test needs a MariaDB with PowerDNS's schema loaded: set "
                    "MYSQL_PDNS_HOST, MYSQL_PDNS_PORT, MYSQL_PDNS_NAME, MYSQL_PDNS_USER and "
                    "MYSQL_PDNS_PASSWORD",
                    vars[i]);
    t.s.mysql_host = getenv("MYSQL_PDNS_HOST");
    t.s.mysql_port = atoi(getenv("MYSQL_PDNS_PORT"));
    t.s.mysql_name = getenv("MYSQL_PDNS_NAME");
    t.s.mysql_user = getenv("MYSQL_PDNS_USER");
    t.s.mysql_password = getenv("MYSQL_PDNS_PASSWORD");
    if (t.s.mysql_port <= 0 || t.s.mysql_port > 65535)
        e2e_die("MYSQL_PDNS_PORT=%s is not a port number", getenv("MYSQL_PDNS_PORT"));
    if (!strcmp(t.s.mysql_host, "localhost"))
        e2e_die("MYSQL_PDNS_HOST=localhost uses the unix socket; this test finds the store's "
                "connection by its TCP port, so give an address such as 127.0.0.1");

    t.db = connect_db(&t.s);
    test_open_errors(&t);
    /* pdns_store_open creates the ownership tables, which setup and cleanup use. */
    if (pdns_store_open(&t.s, &t.st, err, sizeof err) != CSP_OK)
        e2e_die("pdns_store_open: %s", err);
    setup_zones(&t);
    printf("test_pdns_store: prefix %s, zones %s %s %s %s %s %s\n", t.p, t.fwd.name, t.sub.name,
           t.nosoa.name, t.r24.name, t.r16.name, t.r6.name);
    test_store(&t);
    test_changed_names(&t);
    test_new_zone(&t);
    test_soa_kinds(&t);
    test_batch_refusals(&t);
    test_kill_mid_batch(&t);
    test_ping(&t);
    test_rectify_known_rows(&t);
    test_rectify_shared_name(&t);
    test_shared_name_copies(&t);
    test_coown_oldest(&t);
    test_equivalence(&t);
    test_big_batch(&t);
    cleanup(&t);
    pdns_store_free(t.st);
    mysql_close(t.db);
    return unit_done("pdns_store");
}
