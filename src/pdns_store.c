/* pdns_store.c -- applies VMs' record sets to PowerDNS's gmysql tables, a batch of VMs per
 * transaction with set-based statements, tracking which rows every VM owns and bumping the SOA
 * serial of each zone it changed.
 * Must not: touch a row it does not own, decide names, or put the password in a message. */
#include "pdns_store.h"

#include <ctype.h>
#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dns_name.h"
#include "json.h"
#include "logger.h"
#include "pdns_rectify.h"
#include "strmap.h"
#include "strpool.h"
#include "textbuf.h"

#define LOG_MOD "store"
#define VM_ID_MAX 64 /* cspdns_vm.vm_id VARCHAR(64) */
/* dns_name_suffixes stops at two labels and a name of at most 253 octets has at most 127 labels. */
#define ZONE_CANDIDATES 128
#define TYPE_BUFSZ 16
#define SOA_BUFSZ 1024
#define MAX_PARAMS 4
/* pdns_store_apply has always weighed at most this many identical rows per desired record; the
 * batch keeps that, so both decide alike. */
#define MAX_CANDIDATES 16
/* A batch is cut into chunks so that no statement's JSON parameter nears max_allowed_packet
 * (16 MB by default; a record is at most ~600 bytes of JSON). */
#define CHUNK_VMS 1000
#define CHUNK_RECORDS 8192
#define COLLATION_BUFSZ 64

/* Every statement that takes a list reads it from one JSON array parameter with JSON_TABLE, so a
 * chunk of any size costs one round trip per statement while SQL still only goes through
 * prepared statements. Prepared multi-row VALUES statements of 100, 500 and 1000 rows were no
 * faster (3000 rows inserted: 15-25 ms either way on MariaDB 10.11) and would need one statement
 * per size and a tail of single rows. {R} and {V} become the collation of records' and
 * cspdns_record's text columns: with any other collation the join could not use the tables'
 * indexes. */
enum q {
    Q_ZONES_SIG,
    Q_ZONES_ALL,
    Q_LOCK_VMS,
    Q_LOCK_ZONES,
    Q_OWNED,
    Q_OWNED_RO,
    Q_CAND,
    Q_SAME,
    Q_SAME_RO,
    Q_COUNT_OWNERS,
    Q_DISOWN,
    Q_DELETE,
    Q_SET_TTL,
    Q_INSERT,
    Q_NEW_IDS,
    Q_OWN,
    Q_DROP_VMS,
    Q_SOA,
    Q_SOA_APEX,
    Q_SET_SOA,
    Q_COUNT
};

/* A list's position is its FOR ORDINALITY column k (from 1), not a number in each element: every
 * column JSON_TABLE reads costs a path walk per row, and in the candidates' read of a 500-VM
 * batch the table's columns took more time than the 1,600 index lookups (MariaDB 10.11). The
 * writer maps k back to what it stands for (struct jsarg's ord). */
#define JT_VMS "JSON_TABLE(?, '$[*]' COLUMNS (k FOR ORDINALITY, v VARCHAR(64) {V} PATH '$')) j"
#define JT_IDS "JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH '$')) j"
/* c is as wide as the longest content the store holds (struct dns_record, DNS_NAME_BUFSZ), not
 * as records.content: rows of 64,000 characters made the sort of Q_INSERT about 15% slower.
 * Elements are [domain_id, name, type, content, ttl]; JT_REC_KEYS reads them without the TTL. */
#define JT_REC_COLS                                                                                \
    "k FOR ORDINALITY, d BIGINT PATH '$[0]', n VARCHAR(255) {R} PATH '$[1]', "                     \
    "t VARCHAR(10) {R} PATH '$[2]', c VARCHAR(255) {R} PATH '$[3]'"
#define JT_RECS "JSON_TABLE(?, '$[*]' COLUMNS (" JT_REC_COLS ", ttl INT PATH '$[4]')) j"
#define JT_REC_KEYS "JSON_TABLE(?, '$[*]' COLUMNS (" JT_REC_COLS ")) j"
/* The candidates' read: the fifth field is 1 for the first element at a name not yet known. */
#define JT_REC_FIRST "JSON_TABLE(?, '$[*]' COLUMNS (" JT_REC_COLS ", f INT PATH '$[4]')) j"
_Static_assert(DNS_NAME_BUFSZ - 1 <= 255, "JT_RECS's c column must hold any record's content");
#define OWNED_SQL                                                                                  \
    "SELECT j.k, o.record_id, r.id, r.domain_id, r.name, r.type, r.content, r.ttl FROM " JT_VMS    \
    " STRAIGHT_JOIN cspdns_record o ON o.vm_id = j.v LEFT JOIN records r ON r.id = o.record_id"
/* Rows identical to a desired record. The optimizer, knowing nothing of the JSON's size, would
 * reach records through its domain_id index and scan a whole zone per record; "+ 0" leaves it
 * only the (name, type) index. */
#define SAME_NAME "r.name = j.n AND r.domain_id + 0 = j.d"
#define SAME_ROW SAME_NAME " AND r.type = j.t AND r.content = j.c"
/* The rows identical to each desired record, "same" marking them (the candidates), and with the
 * first element at each name every other row there too: what the rectify needs at that name
 * (struct known), read here in the same index lookup instead of once more at commit. Only once
 * per name, and only for names few of the chunk's records share (read_candidates): joined by
 * name alone, each element visits every row at its name. */
#define CAND_SQL                                                                                   \
    "SELECT j.k, r.id, r.domain_id, r.name, r.type, r.content, r.ttl, "                            \
    "COALESCE(r.type = j.t AND r.content = j.c, 0), r.disabled, r.ordername, r.auth "              \
    "FROM " JT_REC_FIRST " STRAIGHT_JOIN records r ON " SAME_NAME                                  \
    " AND (j.f = 1 OR (r.type = j.t AND r.content = j.c))"
/* Only the identical rows, in CAND_SQL's columns: for names many of a chunk's records share (an
 * instance group's), and for plans. The (name, type) index does not hold the content, so a
 * lookup per record walks every row at its name and type: quadratic in the group's size (50
 * records of a 1,000-member group took 40 ms). Instead each name's rows are walked once and
 * matched against the records through the key MariaDB builds on a materialised derived table
 * (derived_with_keys; DISTINCT keeps it from being merged away): 2 ms. The statement takes the
 * JSON twice. */
#define SAME_SQL                                                                                   \
    "SELECT j.k, r.id, r.domain_id, r.name, r.type, r.content, r.ttl, 1, r.disabled, "             \
    "r.ordername, r.auth FROM (SELECT DISTINCT d, n FROM " JT_REC_KEYS ") nm STRAIGHT_JOIN "       \
    "records r ON r.name = nm.n AND r.domain_id + 0 = nm.d STRAIGHT_JOIN (SELECT DISTINCT * "      \
    "FROM " JT_REC_KEYS                                                                            \
    ") j ON j.d = r.domain_id AND j.n = r.name AND j.t = r.type AND j.c = r.content"

/* The reads below leave the order of their rows to the writer, which sorts what it keeps
 * (cmp_own, cmp_cand): with an ORDER BY, MariaDB copied the JSON table into a temporary table
 * and sorted it first, about a third of the candidates' read. read_owned sorts a VM's rows by
 * id, so that of duplicate owned rows the oldest is the one kept. Q_COUNT_OWNERS
 * takes no lock: it runs while the records rows are locked, and every change to a row's owners
 * happens under that lock. Plans (the _RO reads) take no locks: a dry run must never make the
 * daemon wait. */
static const char *const q_sql[Q_COUNT] = {
    [Q_ZONES_SIG] = "SELECT COUNT(*), COALESCE(MAX(id), 0), "
                    "COALESCE(BIT_XOR(CRC32(CONCAT(id, ' ', LOWER(name)))), 0) FROM domains",
    [Q_ZONES_ALL] = "SELECT id, name FROM domains",
    [Q_LOCK_VMS] = "INSERT INTO cspdns_vm (vm_id, updated_at) SELECT j.v, UTC_TIMESTAMP() "
                   "FROM " JT_VMS " ORDER BY j.k ON DUPLICATE KEY UPDATE updated_at = "
                   "UTC_TIMESTAMP()",
    [Q_LOCK_ZONES] = "SELECT d.id FROM " JT_IDS " JOIN domains d ON d.id = j.id "
                     "ORDER BY d.id FOR UPDATE",
    [Q_OWNED] = OWNED_SQL " FOR UPDATE",
    [Q_OWNED_RO] = OWNED_SQL,
    [Q_CAND] = CAND_SQL " FOR UPDATE",
    [Q_SAME] = SAME_SQL " FOR UPDATE",
    [Q_SAME_RO] = SAME_SQL,
    [Q_COUNT_OWNERS] = "SELECT o.record_id, COUNT(*) FROM " JT_IDS
                       " STRAIGHT_JOIN cspdns_record o ON o.record_id = j.id GROUP BY o.record_id",
    [Q_DISOWN] = "DELETE o FROM cspdns_record o JOIN JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT "
                 "PATH '$[0]', v VARCHAR(64) {V} PATH '$[1]')) j "
                 "ON o.record_id = j.id AND o.vm_id = j.v",
    [Q_DELETE] = "DELETE r FROM records r JOIN " JT_IDS " ON r.id = j.id",
    [Q_SET_TTL] = "UPDATE records r JOIN JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH '$[0]', "
                  "ttl INT PATH '$[1]')) j ON r.id = j.id SET r.ttl = j.ttl",
    [Q_INSERT] = "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, "
                 "ordername, auth) SELECT j.d, j.n, j.t, j.c, j.ttl, 0, 0, NULL, 1 FROM " JT_RECS
                 " ORDER BY j.k",
    /* The new rows' ids where AUTO_INCREMENT need not hand them out consecutively (see
     * db_collations): read back by content, among rows no older than the first id of the insert. */
    [Q_NEW_IDS] = "SELECT j.k, r.id, r.name, r.content FROM " JT_REC_KEYS
                  " STRAIGHT_JOIN records r ON " SAME_ROW " WHERE r.id >= ?",
    [Q_OWN] = "INSERT INTO cspdns_record (record_id, vm_id) SELECT j.id, j.v FROM JSON_TABLE(?, "
              "'$[*]' COLUMNS (id BIGINT PATH '$[0]', v VARCHAR(64) {V} PATH '$[1]')) j",
    [Q_DROP_VMS] = "DELETE x FROM cspdns_vm x JOIN " JT_VMS " ON x.vm_id = j.v",
    [Q_SOA] = "SELECT id, content FROM records WHERE domain_id = ? AND type = 'SOA' "
              "ORDER BY id FOR UPDATE",
    /* The same for every zone in memory at once, through the (name, type) index: each zone's
     * apex, where PowerDNS serves its SOA, instead of every row of a large zone. The JSON lists
     * the zones in id order, the order the rows are locked in. */
    [Q_SOA_APEX] = "SELECT r.domain_id, r.id, r.content FROM JSON_TABLE(?, '$[*]' COLUMNS (d "
                   "BIGINT PATH '$[0]', n VARCHAR(255) {R} PATH '$[1]')) j STRAIGHT_JOIN records "
                   "r FORCE INDEX (nametype_index) ON r.name = j.n AND r.type = 'SOA' AND "
                   "r.domain_id = j.d ORDER BY r.domain_id, r.id FOR UPDATE",
    [Q_SET_SOA] = "UPDATE records r JOIN JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH '$[0]', c "
                  "VARCHAR(1024) {R} PATH '$[1]')) j ON r.id = j.id SET r.content = j.c",
};

static const char *const ddl_vm =
    "CREATE TABLE IF NOT EXISTS cspdns_vm (vm_id VARCHAR(64) NOT NULL PRIMARY KEY, "
    "updated_at DATETIME NOT NULL) ENGINE=InnoDB";
static const char *const ddl_record =
    "CREATE TABLE IF NOT EXISTS cspdns_record (record_id BIGINT NOT NULL, "
    "vm_id VARCHAR(64) NOT NULL, PRIMARY KEY (record_id, vm_id), KEY vm_idx (vm_id)) ENGINE=InnoDB";

/* A zone of `domains`, as held in memory. */
struct zone {
    long long id;
    char name[DNS_NAME_BUFSZ]; /* lowercase, no trailing dot */
};

/* A name all of whose rows the open transaction has read, and those rows (enabled ones), for
 * pdns_rectify_zones. */
struct kname {
    long long domain_id;
    char *name; /* lowercase, no trailing dot */
};

struct krow {
    size_t name; /* index into names */
    long long domain_id, id;
    char type[TYPE_BUFSZ];
    int type_null;
    char *ord; /* NULL when NULL */
    int auth;
};

struct known {
    struct strmap *by_name; /* "domain_id name" -> index + 1 into names */
    struct kname *names;
    size_t nnames, names_cap;
    struct krow *rows; /* a row read twice is here twice, until known_settle */
    size_t nrows, rows_cap;
    long long *gone; /* ids of rows deleted since begin */
    size_t ngone, gone_cap;
};

/* An owner name whose records rows changed in the open transaction. */
struct changed {
    long long domain_id;
    char *name; /* no trailing dot */
};

struct pdns_store {
    char *host, *db, *user, *password;
    unsigned port;
    int tls; /* SETTINGS_TLS_* */
    char *tls_ca, *tls_cert, *tls_key;
    MYSQL *conn; /* NULL while disconnected; pdns_store_begin reconnects */
    MYSQL_STMT *q[Q_COUNT];
    struct pdns_rectify_stmts *rx; /* the rectify's statements on conn */
    int in_txn;
    int lost;     /* the last error killed the connection: close it instead of rolling back */
    int readonly; /* pdns_store_open_readonly: plans only, every write refused */
    /* Domain ids whose records rows changed since begin: only their SOA is bumped at commit, so
     * an apply that changes nothing (a redelivered event) leaves every serial alone. */
    long long *zones;
    size_t nzones, zones_cap;
    /* The owner names behind those changes (for DNSSEC rectification and cache purges), each
     * (zone, name) once; after commit, changed_out holds them as absolute names, zone by zone,
     * and zones_out says where each touched zone's run starts. */
    struct changed *chg;
    size_t nchg, chg_cap;
    struct strmap *chg_seen;
    /* What the rectify would read at the changed names, where the store has read it already
     * (every row at each desired record's name, from the candidates' read) and kept it up to
     * date (rows inserted added, rows deleted in gone). */
    struct known kn;
    char **changed_out;
    size_t nchanged_out;
    struct pdns_changed_zone *zones_out;
    size_t nzones_out;
    /* `domains` in memory: zv sorted by id, zmap from name to its entry. zsig is the table's
     * (count, max id, checksum) when it was read; checked once per transaction (zchecked). */
    struct zone *zv;
    size_t nzv;
    struct strmap *zmap;
    size_t zlabels; /* the most labels a zone's name has */
    long long zsig[3];
    int zloaded, zchecked;
    /* Ids one INSERT ... SELECT hands out are consecutive, this far apart (0: they need not be,
     * so the new rows' ids are read back). */
    long long id_step;
};

struct param {
    enum { P_NULL, P_STR, P_INT } kind;
    const char *s;
    long long i;
};

#define P_S(x) ((struct param){.kind = P_STR, .s = (x)})
#define P_I(x) ((struct param){.kind = P_INT, .i = (x)})

/* One result column; text columns are copied into buf (NUL-terminated by col_text). */
struct col {
    long long i;
    char *buf;
    size_t cap;
    unsigned long len;
    my_bool null, trunc;
};
/* ---- error classification ---------------------------------------------------------------- */

/* The connection is unusable after these: client errors (gone away, lost, cannot connect),
 * a KILL, a server shutdown, or the server's idle-timeout disconnect (4031). */
static int err_conn_lost(unsigned no)
{
    return (no >= 2000 && no <= 2999) || no == ER_CONNECTION_KILLED || no == ER_SERVER_SHUTDOWN ||
           no == 4031;
}

/* Errors every event would hit alike until an operator fixes the server or the grants. */
static int err_config(unsigned no)
{
    switch (no) {
    case ER_DBACCESS_DENIED_ERROR:
    case ER_ACCESS_DENIED_ERROR:
    case ER_BAD_DB_ERROR:
    case ER_BAD_FIELD_ERROR:
    case ER_TABLEACCESS_DENIED_ERROR:
    case ER_COLUMNACCESS_DENIED_ERROR:
    case ER_NO_SUCH_TABLE:
    case ER_SPECIFIC_ACCESS_DENIED_ERROR:
    case ER_ACCESS_DENIED_NO_PASSWORD_ERROR:
    case ER_BINLOG_STMT_MODE_AND_ROW_ENGINE:
        return 1;
    default:
        return 0;
    }
}

/* Transient errors are retried with the same event: losing an event is worse than waiting, so
 * configuration errors count too once running. At open they are permanent, because the daemon
 * should stop and say what to fix rather than start half-configured. */
static csp_status err_classify(unsigned no, int at_open)
{
    if (err_conn_lost(no) || no == ER_LOCK_DEADLOCK || no == ER_LOCK_WAIT_TIMEOUT ||
        no == ER_CON_COUNT_ERROR || no == ER_QUERY_INTERRUPTED)
        return CSP_TRANSIENT;
    if (err_config(no))
        return at_open ? CSP_PERMANENT : CSP_TRANSIENT;
    return CSP_PERMANENT;
}

static const char *err_hint(unsigned no)
{
    switch (no) {
    case ER_DBACCESS_DENIED_ERROR:
    case ER_ACCESS_DENIED_ERROR:
    case ER_ACCESS_DENIED_NO_PASSWORD_ERROR:
        return "; check MYSQL_PDNS_USER, MYSQL_PDNS_PASSWORD, the user's grants, and "
               "MYSQL_PDNS_TLS when the account requires TLS";
    case ER_BAD_DB_ERROR:
        return "; check MYSQL_PDNS_NAME";
    case ER_TABLEACCESS_DENIED_ERROR:
    case ER_COLUMNACCESS_DENIED_ERROR:
    case ER_SPECIFIC_ACCESS_DENIED_ERROR:
        return "; grant the user SELECT, INSERT, UPDATE, DELETE on the database, and CREATE "
               "until cs-pdns has created its tables (README: Least privilege)";
    case ER_NO_SUCH_TABLE:
    case ER_BAD_FIELD_ERROR:
        return "; load PowerDNS's schema.mysql.sql (4.x) into the database";
    case ER_BINLOG_STMT_MODE_AND_ROW_ENGINE:
        return "; set binlog_format to MIXED or ROW, as PowerDNS's READ COMMITTED writes need too";
    case 2002: /* CR_CONNECTION_ERROR */
    case 2003: /* CR_CONN_HOST_ERROR */
    case 2005: /* CR_UNKNOWN_HOST */
        return "; check MYSQL_PDNS_HOST and MYSQL_PDNS_PORT and that MariaDB is up";
    default:
        return "";
    }
}

/* Formats "MySQL host:port/db: <msg> (errno N) while <what><hint>", marks the connection lost
 * when it is, and returns the class. The password never reaches this text. */
static csp_status fail_v(struct pdns_store *st, unsigned no, const char *msg, int at_open,
                         char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err && errlen) {
        int n = snprintf(err, errlen, "MySQL %s:%u/%s: %s (errno %u) while ", st->host, st->port,
                         st->db, msg, no);
        if (n >= 0 && (size_t)n < errlen) {
            int m = vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
            if (m >= 0 && (size_t)(n + m) < errlen)
                snprintf(err + n + m, errlen - (size_t)(n + m), "%s", err_hint(no));
        }
    }
    if (err_conn_lost(no))
        st->lost = 1;
    return err_classify(no, at_open);
}

__attribute__((format(printf, 5, 6))) static csp_status
conn_fail(struct pdns_store *st, int at_open, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    csp_status rc =
        fail_v(st, mysql_errno(st->conn), mysql_error(st->conn), at_open, err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

__attribute__((format(printf, 5, 6))) static csp_status
stmt_fail(struct pdns_store *st, enum q id, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    csp_status rc = fail_v(st, mysql_stmt_errno(st->q[id]), mysql_stmt_error(st->q[id]), 0, err,
                           errlen, fmt, ap);
    va_end(ap);
    return rc;
}

__attribute__((format(printf, 4, 5))) static csp_status
plain_fail(csp_status rc, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- statements ---------------------------------------------------------------------------- */

/* Binds p[0..np) and executes; 0 or -1 (the error is on the statement). */
static int q_exec(struct pdns_store *st, enum q id, const struct param *p, size_t np)
{
    MYSQL_BIND b[MAX_PARAMS];
    unsigned long len[MAX_PARAMS];
    MYSQL_STMT *s = st->q[id];

    memset(b, 0, sizeof(b[0]) * np);
    for (size_t i = 0; i < np; i++) {
        switch (p[i].kind) {
        case P_STR:
            len[i] = (unsigned long)strlen(p[i].s);
            b[i].buffer_type = MYSQL_TYPE_STRING;
            b[i].buffer = (void *)p[i].s;
            b[i].buffer_length = len[i];
            b[i].length = &len[i];
            break;
        case P_INT:
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = (void *)&p[i].i;
            break;
        case P_NULL:
            b[i].buffer_type = MYSQL_TYPE_NULL;
            break;
        }
    }
    if (np && mysql_stmt_bind_param(s, b))
        return -1;
    return mysql_stmt_execute(s) ? -1 : 0;
}

static void col_int(MYSQL_BIND *b, struct col *c)
{
    memset(b, 0, sizeof *b);
    memset(c, 0, sizeof *c);
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = &c->i;
    b->is_null = &c->null;
    b->error = &c->trunc;
}

static void col_str(MYSQL_BIND *b, struct col *c, char *buf, size_t cap)
{
    memset(b, 0, sizeof *b);
    memset(c, 0, sizeof *c);
    c->buf = buf;
    c->cap = cap;
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = buf;
    b->buffer_length = cap - 1;
    b->length = &c->len;
    b->is_null = &c->null;
    b->error = &c->trunc;
}

/* After a fetch: NUL-terminates the text; 1 when the value is non-NULL and was read whole. */
static int col_text(struct col *c)
{
    if (c->null) {
        c->buf[0] = '\0';
        return 0;
    }
    c->buf[c->len < c->cap - 1 ? c->len : c->cap - 1] = '\0';
    return c->len < c->cap;
}

/* Binds the result columns and buffers the whole result, so other statements can run while the
 * caller walks it. */
static int q_results(struct pdns_store *st, enum q id, MYSQL_BIND *res)
{
    return mysql_stmt_bind_result(st->q[id], res) || mysql_stmt_store_result(st->q[id]) ? -1 : 0;
}

/* 1: a row was fetched, 0: no more rows, -1: error. Truncation is seen through col_text. */
static int q_next(struct pdns_store *st, enum q id)
{
    int rc = mysql_stmt_fetch(st->q[id]);
    if (rc == 0 || rc == MYSQL_DATA_TRUNCATED)
        return 1;
    return rc == MYSQL_NO_DATA ? 0 : -1;
}

/* Ends a result. After a failed read (a deadlock reported in the middle of the rows) libmariadb
 * leaves the statement expecting more rows, and its next execute would block until the read
 * timeout; a reset puts it back to "prepared". rc is the outcome so far, already in err. */
static void q_done(struct pdns_store *st, enum q id, csp_status rc)
{
    if (rc == CSP_OK) {
        mysql_stmt_free_result(st->q[id]);
        return;
    }
    if (!st->lost && mysql_stmt_reset(st->q[id]))
        st->lost = 1; /* an unusable statement: start over on a fresh connection */
}
/* ---- connection ---------------------------------------------------------------------------- */

/* Forgets what the open transaction changed (it was rolled back, or a new one starts). */
static void known_reset(struct known *k)
{
    for (size_t i = 0; i < k->nnames; i++)
        free(k->names[i].name);
    for (size_t i = 0; i < k->nrows; i++)
        free(k->rows[i].ord);
    k->nnames = k->nrows = k->ngone = 0;
    if (k->by_name)
        strmap_clear(k->by_name, NULL);
}

static void changes_reset(struct pdns_store *st)
{
    for (size_t i = 0; i < st->nchg; i++)
        free(st->chg[i].name);
    st->nchg = 0;
    st->nzones = 0;
    if (st->chg_seen)
        strmap_clear(st->chg_seen, NULL);
    known_reset(&st->kn);
}

static void changed_out_free(struct pdns_store *st)
{
    for (size_t i = 0; i < st->nchanged_out; i++)
        free(st->changed_out[i]);
    free(st->changed_out);
    st->changed_out = NULL;
    st->nchanged_out = 0;
    free(st->zones_out);
    st->zones_out = NULL;
    st->nzones_out = 0;
}

static void db_close(struct pdns_store *st)
{
    for (int i = 0; i < Q_COUNT; i++) {
        if (st->q[i])
            mysql_stmt_close(st->q[i]);
        st->q[i] = NULL;
    }
    pdns_rectify_stmts_clear(st->rx);
    if (st->conn)
        mysql_close(st->conn);
    st->conn = NULL;
    st->lost = 0;
    st->in_txn = 0;
    st->zchecked = 0;
    changes_reset(st);
}

/* A collation name as information_schema gives it: letters, digits and '_' only, so it can
 * stand in the statements' text. */
static int collation_ok(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return 0;
    return 1;
}

/* The collations of records.name and cspdns_record.vm_id (a TEMPORARY stand-in is not in
 * information_schema; it has the database's default), and st->id_step. InnoDB with
 * innodb_autoinc_lock_mode 0 or 1 holds the table's AUTO-INC lock for a whole INSERT ... SELECT,
 * so its ids are consecutive (auto_increment_increment apart); mode 2 (interleaved, as Galera
 * needs) and other engines promise nothing. */
static csp_status db_collations(struct pdns_store *st, char *rec, char *vm, char *err,
                                size_t errlen)
{
    static const char sql[] =
        "SELECT (SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
        "DATABASE() AND TABLE_NAME = 'records' AND COLUMN_NAME = 'name'), COALESCE((SELECT "
        "COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND "
        "TABLE_NAME = 'cspdns_record' AND COLUMN_NAME = 'vm_id'), @@collation_database), "
        "@@innodb_autoinc_lock_mode, @@auto_increment_increment, (SELECT ENGINE FROM "
        "information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'records')";
    if (mysql_query(st->conn, sql))
        return conn_fail(st, 0, err, errlen, "reading the tables' collations");
    MYSQL_RES *res = mysql_store_result(st->conn);
    if (!res)
        return conn_fail(st, 0, err, errlen, "reading the tables' collations");
    MYSQL_ROW row = mysql_fetch_row(res);
    snprintf(rec, COLLATION_BUFSZ, "%s", row && row[0] ? row[0] : "");
    snprintf(vm, COLLATION_BUFSZ, "%s", row && row[1] ? row[1] : "");
    st->id_step = 0;
    if (row && row[2] && row[3] && row[4] && atoi(row[2]) <= 1 && !strcasecmp(row[4], "InnoDB"))
        st->id_step = atoll(row[3]) > 0 ? atoll(row[3]) : 0;
    mysql_free_result(res);
    if (!collation_ok(rec) || !collation_ok(vm))
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "MySQL %s:%u/%s: cannot read the collation of records.name or "
                          "cspdns_record.vm_id: load PowerDNS's schema.mysql.sql (4.x)",
                          st->host, st->port, st->db);
    return CSP_OK;
}

/* Expands {R} and {V} in a statement template to "COLLATE <collation>". */
static int sql_expand(textbuf *out, const char *tpl, const char *rec, const char *vm)
{
    textbuf_reset(out);
    for (const char *p = tpl; *p;) {
        const char *c = NULL;
        if (!strncmp(p, "{R}", 3))
            c = rec;
        else if (!strncmp(p, "{V}", 3))
            c = vm;
        if (c) {
            if (textbuf_printf(out, "COLLATE %s", c))
                return -1;
            p += 3;
        } else if (textbuf_putc(out, *p++)) {
            return -1;
        }
    }
    return 0;
}

static csp_status db_prepare(struct pdns_store *st, char *err, size_t errlen)
{
    char rec[COLLATION_BUFSZ], vm[COLLATION_BUFSZ];
    textbuf sql = TEXTBUF_INIT;
    csp_status rc = db_collations(st, rec, vm, err, errlen);

    for (int i = 0; i < Q_COUNT && rc == CSP_OK; i++) {
        if (sql_expand(&sql, q_sql[i], rec, vm)) {
            rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory preparing statements");
            break;
        }
        st->q[i] = mysql_stmt_init(st->conn);
        if (!st->q[i]) {
            rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory preparing statements");
            break;
        }
        if (mysql_stmt_prepare(st->q[i], textbuf_str(&sql), (unsigned long)sql.len))
            rc = stmt_fail(st, (enum q)i, err, errlen, "preparing \"%.60s...\"", textbuf_str(&sql));
    }
    textbuf_free(&sql);
    return rc;
}

/* Refuses to create cs-pdns's tables in a database that is not PowerDNS's. */
static csp_status db_check_schema(struct pdns_store *st, char *err, size_t errlen)
{
    static const char sql[] = "SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                              "TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('records', 'domains')";
    if (mysql_query(st->conn, sql))
        return conn_fail(st, 1, err, errlen, "looking for PowerDNS's tables");
    MYSQL_RES *res = mysql_store_result(st->conn);
    if (!res)
        return conn_fail(st, 1, err, errlen, "looking for PowerDNS's tables");
    MYSQL_ROW row = mysql_fetch_row(res);
    int found = row && row[0] ? atoi(row[0]) : 0;
    mysql_free_result(res);
    if (found != 2)
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "MySQL %s:%u/%s: PowerDNS schema not found in database %s (no `records` "
                          "and `domains` tables): load schema.mysql.sql from pdns-backend-mysql",
                          st->host, st->port, st->db, st->db);
    return CSP_OK;
}

/* Which of cs-pdns's tables exist. Asked before creating them, because even CREATE TABLE IF NOT
 * EXISTS needs the CREATE privilege, which an operator may revoke once they exist. */
static csp_status db_own_tables(struct pdns_store *st, int at_open, int *have_vm, int *have_record,
                                char *err, size_t errlen)
{
    static const char sql[] = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                              "TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('cspdns_vm', "
                              "'cspdns_record') AND TABLE_TYPE = 'BASE TABLE'";
    *have_vm = *have_record = 0;
    if (mysql_query(st->conn, sql))
        return conn_fail(st, at_open, err, errlen, "looking for cs-pdns's tables");
    MYSQL_RES *res = mysql_store_result(st->conn);
    if (!res)
        return conn_fail(st, at_open, err, errlen, "looking for cs-pdns's tables");
    for (MYSQL_ROW row; (row = mysql_fetch_row(res));) {
        *have_vm |= row[0] && !strcmp(row[0], "cspdns_vm");
        *have_record |= row[0] && !strcmp(row[0], "cspdns_record");
    }
    mysql_free_result(res);
    return CSP_OK;
}

/* A read-only store must never create cs-pdns's tables. Where they are missing (cs-pdns has not
 * written to this database yet) empty TEMPORARY tables, visible to this session only, stand in
 * for them, so a plan shows every record as new. Checked on every connect: temporary tables
 * vanish with the connection. */
static csp_status db_readonly_tables(struct pdns_store *st, int at_open, char *err, size_t errlen)
{
    csp_status rc = at_open ? db_check_schema(st, err, errlen) : CSP_OK;
    int have_vm, have_record;
    if (rc == CSP_OK)
        rc = db_own_tables(st, at_open, &have_vm, &have_record, err, errlen);
    if (rc != CSP_OK)
        return rc;
    char ddl[512];
    if (!have_vm) {
        snprintf(ddl, sizeof ddl, "CREATE TEMPORARY TABLE%s", ddl_vm + strlen("CREATE TABLE"));
        if (mysql_query(st->conn, ddl))
            return conn_fail(st, at_open, err, errlen,
                             "creating a temporary cspdns_vm (CREATE TEMPORARY TABLES is needed "
                             "until cs-pdns has created its tables)");
    }
    if (!have_record) {
        snprintf(ddl, sizeof ddl, "CREATE TEMPORARY TABLE%s", ddl_record + strlen("CREATE TABLE"));
        if (mysql_query(st->conn, ddl))
            return conn_fail(st, at_open, err, errlen,
                             "creating a temporary cspdns_record (CREATE TEMPORARY TABLES is "
                             "needed until cs-pdns has created its tables)");
    }
    return CSP_OK;
}

/* The writer creates its tables at its first start only: afterwards it needs no CREATE. */
static csp_status db_create_tables(struct pdns_store *st, char *err, size_t errlen)
{
    int have_vm, have_record;
    csp_status rc = db_check_schema(st, err, errlen);
    if (rc == CSP_OK)
        rc = db_own_tables(st, 1, &have_vm, &have_record, err, errlen);
    if (rc != CSP_OK)
        return rc;
    if (!have_vm && mysql_query(st->conn, ddl_vm))
        return conn_fail(st, 1, err, errlen, "creating table cspdns_vm");
    if (!have_record && mysql_query(st->conn, ddl_record))
        return conn_fail(st, 1, err, errlen, "creating table cspdns_record");
    return CSP_OK;
}

/* Asks libmariadb for TLS as MYSQL_PDNS_TLS says: "required" refuses a plain connection,
 * "verify" also checks the certificate chain (MYSQL_PDNS_TLS_CA) and the host name. */
static void db_tls_options(struct pdns_store *st)
{
    my_bool on = 1, verify = st->tls == SETTINGS_TLS_VERIFY;
    if (st->tls == SETTINGS_TLS_OFF)
        return;
    mysql_options(st->conn, MYSQL_OPT_SSL_ENFORCE, &on);
    mysql_options(st->conn, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
    if (st->tls_ca)
        mysql_options(st->conn, MYSQL_OPT_SSL_CA, st->tls_ca);
    if (st->tls_cert)
        mysql_options(st->conn, MYSQL_OPT_SSL_CERT, st->tls_cert);
    if (st->tls_key)
        mysql_options(st->conn, MYSQL_OPT_SSL_KEY, st->tls_key);
}

/* A failed TLS handshake does not heal by waiting: it is permanent, and the message names the
 * setting to fix. */
static csp_status db_tls_fail(struct pdns_store *st, char *err, size_t errlen)
{
    const char *fix =
        st->tls == SETTINGS_TLS_VERIFY
            ? "the server's certificate was refused: check that MYSQL_PDNS_TLS_CA holds the CA "
              "that signed it and that the certificate names MYSQL_PDNS_HOST (or set "
              "MYSQL_PDNS_TLS=required to encrypt without checking it)"
            : "no TLS session could be set up: check that the server has TLS enabled (ssl_cert, "
              "ssl_key) and MYSQL_PDNS_TLS_CERT/MYSQL_PDNS_TLS_KEY, or set MYSQL_PDNS_TLS=off";
    if (err && errlen)
        snprintf(err, errlen,
                 "MySQL %s:%u/%s: %s (errno %u) while connecting with "
                 "MYSQL_PDNS_TLS=%s; %s",
                 st->host, st->port, st->db, mysql_error(st->conn), mysql_errno(st->conn),
                 st->tls == SETTINGS_TLS_VERIFY ? "verify" : "required", fix);
    return CSP_PERMANENT;
}

static csp_status db_connect(struct pdns_store *st, int at_open, char *err, size_t errlen)
{
    /* READ COMMITTED (PowerDNS's own gmysql default) takes no gap locks, which under REPEATABLE
     * READ made unrelated VMs in neighbouring zones deadlock; every read that decides a write is
     * a locking read after the VM or zone lock, so it sees the latest committed rows. Strict
     * mode turns bad data into an error instead of a silent truncation. The lock wait is
     * shorter than the 30 s read timeout, so a long wait ends as error 1205 on a live
     * connection instead of a client timeout that costs the connection. */
    static const char *const session[] = {
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', "
        "innodb_lock_wait_timeout = 20",
    };
    unsigned connect_s = 5, io_s = 30, tcp = MYSQL_PROTOCOL_TCP;
    my_bool off = 0;
    csp_status rc;

    st->conn = mysql_init(NULL);
    if (!st->conn)
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory connecting to MySQL");
    mysql_options(st->conn, MYSQL_OPT_CONNECT_TIMEOUT, &connect_s);
    mysql_options(st->conn, MYSQL_OPT_READ_TIMEOUT, &io_s);
    mysql_options(st->conn, MYSQL_OPT_WRITE_TIMEOUT, &io_s);
    /* A silent reconnect would drop the open transaction and every prepared statement. */
    mysql_options(st->conn, MYSQL_OPT_RECONNECT, &off);
    if (strcmp(st->host, "localhost") != 0)
        mysql_options(st->conn, MYSQL_OPT_PROTOCOL, &tcp);
    db_tls_options(st);
    if (!mysql_real_connect(st->conn, st->host, st->user, st->password, st->db, st->port, NULL,
                            0)) {
        if (st->tls != SETTINGS_TLS_OFF && mysql_errno(st->conn) == CR_SSL_CONNECTION_ERROR)
            rc = db_tls_fail(st, err, errlen);
        else
            rc = conn_fail(st, at_open, err, errlen, "connecting");
        goto fail;
    }
    if (mysql_autocommit(st->conn, 0)) {
        rc = conn_fail(st, at_open, err, errlen, "turning autocommit off");
        goto fail;
    }
    for (size_t i = 0; i < sizeof session / sizeof session[0]; i++) {
        if (mysql_query(st->conn, session[i])) {
            rc = conn_fail(st, at_open, err, errlen, "setting up the session");
            goto fail;
        }
    }
    if (st->readonly) {
        rc = db_readonly_tables(st, at_open, err, errlen);
        if (rc != CSP_OK)
            goto fail;
    } else if (at_open) {
        rc = db_create_tables(st, err, errlen);
        if (rc != CSP_OK)
            goto fail;
    }
    rc = db_prepare(st, err, errlen);
    if (rc == CSP_OK)
        return CSP_OK;
fail:
    db_close(st);
    return rc;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static csp_status store_open(const struct settings *s, int readonly, struct pdns_store **out,
                             char *err, size_t errlen)
{
    *out = NULL;
    const char *missing = !s->mysql_host || !*s->mysql_host   ? "MYSQL_PDNS_HOST"
                          : !s->mysql_name || !*s->mysql_name ? "MYSQL_PDNS_NAME"
                          : !s->mysql_user || !*s->mysql_user ? "MYSQL_PDNS_USER"
                                                              : NULL;
    if (missing)
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "%s is not set: the PowerDNS database needs it", missing);
    struct pdns_store *st = calloc(1, sizeof *st);
    if (!st)
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory");
    st->host = dup_or_empty(s->mysql_host);
    st->db = dup_or_empty(s->mysql_name);
    st->user = dup_or_empty(s->mysql_user);
    st->password = dup_or_empty(s->mysql_password);
    st->port = s->mysql_port > 0 ? (unsigned)s->mysql_port : 3306;
    st->readonly = readonly;
    st->tls = s->mysql_tls;
    st->tls_ca = s->mysql_tls_ca ? strdup(s->mysql_tls_ca) : NULL;
    st->tls_cert = s->mysql_tls_cert ? strdup(s->mysql_tls_cert) : NULL;
    st->tls_key = s->mysql_tls_key ? strdup(s->mysql_tls_key) : NULL;
    if (!st->host || !st->db || !st->user || !st->password || strmap_new(&st->chg_seen) ||
        strmap_new(&st->zmap) || pdns_rectify_stmts_new(&st->rx) || strmap_new(&st->kn.by_name) ||
        (s->mysql_tls_ca && !st->tls_ca) || (s->mysql_tls_cert && !st->tls_cert) ||
        (s->mysql_tls_key && !st->tls_key)) {
        pdns_store_free(st);
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory");
    }
    csp_status rc = db_connect(st, 1, err, errlen);
    if (rc != CSP_OK) {
        pdns_store_free(st);
        return rc;
    }
    *out = st;
    return CSP_OK;
}

csp_status pdns_store_open(const struct settings *s, struct pdns_store **out, char *err,
                           size_t errlen)
{
    return store_open(s, 0, out, err, errlen);
}

csp_status pdns_store_open_readonly(const struct settings *s, struct pdns_store **out, char *err,
                                    size_t errlen)
{
    return store_open(s, 1, out, err, errlen);
}

void pdns_store_free(struct pdns_store *st)
{
    if (!st)
        return;
    db_close(st);
    free(st->host);
    free(st->db);
    free(st->user);
    free(st->password);
    free(st->tls_ca);
    free(st->tls_cert);
    free(st->tls_key);
    free(st->zones);
    changed_out_free(st);
    free(st->chg);
    strmap_free(st->chg_seen, NULL);
    known_reset(&st->kn);
    free(st->kn.names);
    free(st->kn.rows);
    free(st->kn.gone);
    strmap_free(st->kn.by_name, NULL);
    strmap_free(st->zmap, NULL);
    free(st->zv);
    pdns_rectify_stmts_free(st->rx);
    free(st);
}
/* ---- transactions -------------------------------------------------------------------------- */

/* Opens a connection when there is none (the last one was lost) and says so. *fresh tells the
 * caller it is new: a failure on it is the server's now, not a stale idle connection's. */
static csp_status conn_ensure(struct pdns_store *st, int *fresh, char *err, size_t errlen)
{
    *fresh = !st->conn;
    if (!*fresh)
        return CSP_OK;
    csp_status rc = db_connect(st, 0, err, errlen);
    if (rc == CSP_OK)
        log_msg(LOG_LVL_INFO, LOG_MOD, "reconnected to MySQL %s:%u/%s", st->host, st->port, st->db);
    return rc;
}

csp_status pdns_store_begin(struct pdns_store *st, char *err, size_t errlen)
{
    if (st->in_txn)
        pdns_store_rollback(st);
    if (st->lost)
        db_close(st);
    changed_out_free(st);
    for (;;) {
        int fresh;
        csp_status rc = conn_ensure(st, &fresh, err, errlen);
        if (rc != CSP_OK)
            return rc;
        if (mysql_query(st->conn, "START TRANSACTION") == 0)
            break;
        rc = conn_fail(st, 0, err, errlen, "starting a transaction");
        int lost = st->lost;
        if (lost)
            db_close(st);
        /* A connection that died while idle (KILL, server restart, wait_timeout) is reopened
         * once; nothing has been done in this transaction yet, so that is safe. */
        if (!lost || fresh)
            return rc;
        log_msg(LOG_LVL_INFO, LOG_MOD, "%s; reconnecting", err ? err : "connection lost");
    }
    st->in_txn = 1;
    st->zchecked = 0;
    changes_reset(st);
    return CSP_OK;
}

csp_status pdns_store_ping(struct pdns_store *st, char *err, size_t errlen)
{
    if (st->in_txn)
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "pdns_store_ping called inside a transaction: commit or roll back first");
    for (;;) {
        if (st->lost)
            db_close(st);
        int fresh;
        csp_status rc = conn_ensure(st, &fresh, err, errlen);
        if (rc != CSP_OK)
            return rc;
        if (mysql_ping(st->conn) == 0)
            return CSP_OK;
        rc = conn_fail(st, 0, err, errlen, "checking that the database answers");
        /* A connection that died while idle (KILL, server restart) says nothing about the
         * server now: a fresh one does. */
        if (!st->lost || fresh)
            return rc;
    }
}

void pdns_store_rollback(struct pdns_store *st)
{
    if (!st)
        return;
    if (st->conn && st->lost) {
        db_close(st);
    } else if (st->conn && st->in_txn) {
        for (int i = 0; i < Q_COUNT; i++)
            if (st->q[i])
                mysql_stmt_free_result(st->q[i]);
        if (mysql_rollback(st->conn) && err_conn_lost(mysql_errno(st->conn)))
            db_close(st);
    }
    st->in_txn = 0;
    changes_reset(st);
}

static void lower_copy(char *out, const char *in, size_t outsz)
{
    size_t i = 0;
    for (; in[i] && i + 1 < outsz; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[i] = '\0';
}

/* The decimal text of v at out (which holds INT_TEXT_BUFSZ); returns its length. The store
 * writes thousands of map keys and JSON numbers per batch, where snprintf was a tenth of the
 * writer's CPU. */
#define INT_TEXT_BUFSZ 24
static size_t int_text(char *out, long long v)
{
    char tmp[INT_TEXT_BUFSZ];
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    size_t n = 0, len = 0;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        out[len++] = '-';
    while (n)
        out[len++] = tmp[--n];
    out[len] = '\0';
    return len;
}

/* The key of (domain_id, name) in the store's maps, "domain_id name" with the name lowercased
 * (names compare case-insensitively); key holds NAME_KEY_BUFSZ. Returns its length; the
 * lowercased name starts after the first space. */
#define NAME_KEY_BUFSZ (INT_TEXT_BUFSZ + DNS_NAME_BUFSZ)
static size_t name_key(char *key, long long domain_id, const char *name)
{
    size_t n = int_text(key, domain_id);
    key[n++] = ' ';
    lower_copy(key + n, name, DNS_NAME_BUFSZ);
    return n + strlen(key + n);
}

/* Notes name in zone domain_id for pdns_store_changed_zones (and the rectify, when noted before
 * it). Returns 0, or -1 when memory ran out. */
static int note_name(struct pdns_store *st, long long domain_id, const char *name)
{
    char key[NAME_KEY_BUFSZ];
    name_key(key, domain_id, name);
    int added = strmap_add(st->chg_seen, key, NULL);
    if (added <= 0)
        return added;
    if (st->nchg == st->chg_cap) {
        size_t cap = st->chg_cap ? st->chg_cap * 2 : 64;
        struct changed *c = realloc(st->chg, cap * sizeof *c);
        if (!c)
            return -1;
        st->chg = c;
        st->chg_cap = cap;
    }
    st->chg[st->nchg].domain_id = domain_id;
    char *copy = strdup(strchr(key, ' ') + 1);
    if (!copy)
        return -1;
    st->chg[st->nchg].name = copy;
    st->nchg++;
    return 0;
}

/* Notes that name in zone domain_id changed: its SOA is bumped at commit, and the name is
 * rectified and reported by pdns_store_changed_zones. */
static csp_status touch(struct pdns_store *st, long long domain_id, const char *name, char *err,
                        size_t errlen)
{
    int seen = 0;

    if (domain_id < 0)
        return CSP_OK;
    for (size_t i = 0; i < st->nzones && !seen; i++)
        seen = st->zones[i] == domain_id;
    if (!seen) {
        if (st->nzones == st->zones_cap) {
            size_t cap = st->zones_cap ? st->zones_cap * 2 : 16;
            long long *z = realloc(st->zones, cap * sizeof *z);
            if (!z)
                return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory noting a zone");
            st->zones = z;
            st->zones_cap = cap;
        }
        st->zones[st->nzones++] = domain_id;
    }
    if (note_name(st, domain_id, name))
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory noting a changed name");
    return CSP_OK;
}

/* ---- zones in memory ----------------------------------------------------------------------- */

static int cmp_zone_id(const void *a, const void *b)
{
    long long x = ((const struct zone *)a)->id, y = ((const struct zone *)b)->id;
    return (x > y) - (x < y);
}

static size_t label_count(const char *name)
{
    size_t n = 1;
    for (; *name; name++)
        n += *name == '.';
    return n;
}

static csp_status zones_load(struct pdns_store *st, char *err, size_t errlen)
{
    MYSQL_BIND res[2];
    struct col cid, cname;
    char buf[DNS_NAME_BUFSZ];
    struct zone *v = NULL;
    size_t n = 0, cap = 0;
    csp_status rc = CSP_OK;
    int more;

    if (q_exec(st, Q_ZONES_ALL, NULL, 0))
        return stmt_fail(st, Q_ZONES_ALL, err, errlen, "reading the zones in domains");
    col_int(&res[0], &cid);
    col_str(&res[1], &cname, buf, sizeof buf);
    if (q_results(st, Q_ZONES_ALL, res)) {
        rc = stmt_fail(st, Q_ZONES_ALL, err, errlen, "reading the zones in domains");
        q_done(st, Q_ZONES_ALL, rc);
        return rc;
    }
    while ((more = q_next(st, Q_ZONES_ALL)) == 1) {
        if (cid.null || !col_text(&cname))
            continue; /* a name longer than any DNS name holds no record cs-pdns writes */
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct zone *z = realloc(v, ncap * sizeof *z);
            if (!z) {
                rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory reading zones");
                break;
            }
            v = z;
            cap = ncap;
        }
        v[n].id = cid.i;
        /* The collation is case-insensitive, so a hand-made upper-case zone name holds names. */
        lower_copy(v[n].name, buf, sizeof v[n].name);
        n++;
    }
    if (rc == CSP_OK && more < 0)
        rc = stmt_fail(st, Q_ZONES_ALL, err, errlen, "reading the zones in domains");
    q_done(st, Q_ZONES_ALL, rc);
    if (rc != CSP_OK) {
        free(v);
        return rc;
    }
    qsort(v, n, sizeof *v, cmp_zone_id);
    strmap_clear(st->zmap, NULL);
    st->zlabels = 0;
    for (size_t i = 0; i < n; i++) {
        size_t labels = label_count(v[i].name);
        if (labels > st->zlabels)
            st->zlabels = labels;
        if (strmap_add(st->zmap, v[i].name, &v[i]) < 0) {
            strmap_clear(st->zmap, NULL);
            free(v);
            st->zloaded = 0;
            return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory indexing zones");
        }
    }
    free(st->zv);
    st->zv = v;
    st->nzv = n;
    return CSP_OK;
}

/* Once per transaction: reloads the zones when `domains` changed (a zone an operator adds is
 * used by the next transaction), for one cheap aggregate read. */
static csp_status zones_fresh(struct pdns_store *st, char *err, size_t errlen)
{
    MYSQL_BIND res[3];
    struct col c[3];
    long long sig[3] = {0, 0, 0};
    csp_status rc = CSP_OK;
    int more;

    if (st->zchecked)
        return CSP_OK;
    if (q_exec(st, Q_ZONES_SIG, NULL, 0))
        return stmt_fail(st, Q_ZONES_SIG, err, errlen, "checking domains for new zones");
    for (int i = 0; i < 3; i++)
        col_int(&res[i], &c[i]);
    if (q_results(st, Q_ZONES_SIG, res) || (more = q_next(st, Q_ZONES_SIG)) < 0)
        rc = stmt_fail(st, Q_ZONES_SIG, err, errlen, "checking domains for new zones");
    else
        for (int i = 0; i < 3 && more == 1; i++)
            sig[i] = c[i].null ? 0 : c[i].i;
    q_done(st, Q_ZONES_SIG, rc);
    if (rc != CSP_OK)
        return rc;
    if (!st->zloaded || memcmp(sig, st->zsig, sizeof sig)) {
        rc = zones_load(st, err, errlen);
        if (rc != CSP_OK)
            return rc;
        memcpy(st->zsig, sig, sizeof sig);
        st->zloaded = 1;
    }
    st->zchecked = 1;
    return CSP_OK;
}

/* The longest zone that holds name, or NULL. */
static const struct zone *zone_of(const struct pdns_store *st, const char *name)
{
    const char *cand[ZONE_CANDIDATES];
    char low[DNS_NAME_BUFSZ];

    lower_copy(low, name, sizeof low);
    size_t nc = dns_name_suffixes(low, cand, ZONE_CANDIDATES), labels = label_count(low);
    /* Longest first, so the first zone found is the one that holds the name; suffixes with more
     * labels than any zone are not looked up (an ip6.arpa name has twenty more than its zone). */
    for (size_t i = labels > st->zlabels ? labels - st->zlabels : 0; i < nc; i++) {
        void *v;
        if (strmap_get(st->zmap, cand[i], &v)) {
            const char *zp = ((const struct zone *)v)->name;
            return dns_zone_match(low, &zp, 1) == 0 ? v : NULL;
        }
    }
    return NULL;
}

static const struct zone *zone_by_id(const struct pdns_store *st, long long id)
{
    struct zone key = {.id = id};
    return st->nzv ? bsearch(&key, st->zv, st->nzv, sizeof *st->zv, cmp_zone_id) : NULL;
}

/* ---- batches ------------------------------------------------------------------------------- */

/* A chunk of VMs is applied in three steps: read everything the decisions depend on (the VMs'
 * owned rows, the rows identical to their desired records, the owner counts of both), replay
 * pdns_store_apply's per-VM decisions in memory in the callers' order, and write the net result
 * with one statement per kind of change. The replay is what keeps the batch equal to applying
 * the VMs one after the other: a row one VM inserts is co-owned by the next, a row one VM
 * deletes is inserted afresh by the next that wants it. Plans replay one VM without locks. */

struct brow {     /* a records row the chunk reads or inserts */
    long long id; /* 0 for a row the chunk inserts, until it is read back */
    long long domain_id, ttl, ttl0;
    long long owners; /* how many VMs own it at this point of the replay */
    int exact;        /* name, type and content were read whole */
    int deleted, fresh;
    long next_fresh; /* fresh rows: the next one with the same key, or -1 */
    long kn;         /* fresh rows: its name in the store's known names, or -1 */
    /* In the batch's strings (rows read) or the desired record's (rows inserted), both as long
     * as the batch: a chunk of renames holds thousands of rows, and two name buffers each were
     * most of the writer's memory. */
    const char *name, *content;
    char type[TYPE_BUFSZ];
};

struct bown { /* an ownership a VM of the chunk held when the chunk started */
    size_t vm;
    long long record_id;
    long row; /* -1: the records row was deleted outside cs-pdns */
    int claimed, dropped, shared;
};

struct brec { /* a desired record */
    size_t vm, i;
    const struct zone *zone; /* NULL: no zone holds it */
    long match;              /* the owned row (index into own) it keeps, or -1 */
    long kn;                 /* its name in the store's known names, or -1 */
    int by_name;             /* read by CAND_SQL (else SAME_SQL) */
    size_t cand, ncand;      /* rows that compare equal, as read: cand[cand .. cand+ncand) */
    enum pdns_change_kind kind;
    int unchanged, shared;
    long long old_ttl;
};

struct bcand { /* a row that compares equal to a desired record */
    size_t rec;
    long long id;
    long row;
};

struct bvm {
    size_t own0, nown; /* own[own0 .. own0+nown) */
    size_t rec0;       /* recs[rec0 .. rec0+n) */
    unsigned kept;     /* records it owns after the replay: none means its lock row goes */
};

struct bpair {
    long row;
    size_t vm;
};

/* A statement's JSON parameter being built: "[[1,\"a\"],[2,\"b\"]]" or "[1,2]". ord[k - 1] is
 * what the element of ordinal k stands for (an index into the batch's records or rows), where
 * the results name elements by their JT_* column k. */
struct jsarg {
    textbuf js;
    int oom; /* it ran out of memory */
    size_t *ord;
    size_t nord, ord_cap;
};

struct batch {
    struct pdns_vm_records *vms;
    size_t nvms;
    int plan; /* no locks, no logs, no writes */
    struct bvm *bv;
    struct brow *rows;
    size_t nrows, rows_cap;
    struct strmap *row_by_id;
    struct strmap *fresh_by_key;
    struct bown *own;
    size_t nown, own_cap;
    struct brec *recs;
    size_t nrecs;
    struct bcand *cand;
    size_t ncand, cand_cap;
    struct bpair *pairs;
    size_t npairs, pairs_cap;
    struct jsarg j;
    struct strpool strs; /* the names and contents of the rows read */
};

static void batch_free(struct batch *b)
{
    free(b->bv);
    free(b->rows);
    strmap_free(b->row_by_id, NULL);
    strmap_free(b->fresh_by_key, NULL);
    free(b->own);
    free(b->recs);
    free(b->cand);
    free(b->pairs);
    textbuf_free(&b->j.js);
    free(b->j.ord);
    strpool_clear(&b->strs);
    memset(b, 0, sizeof *b);
}

static int batch_init(struct batch *b, struct pdns_vm_records *vms, size_t n, int plan)
{
    size_t nrecs = 0;
    memset(b, 0, sizeof *b);
    b->vms = vms;
    b->nvms = n;
    b->plan = plan;
    for (size_t v = 0; v < n; v++)
        nrecs += vms[v].n;
    b->bv = calloc(n ? n : 1, sizeof *b->bv);
    b->recs = calloc(nrecs ? nrecs : 1, sizeof *b->recs);
    if (!b->bv || !b->recs || strmap_new(&b->row_by_id) || strmap_new(&b->fresh_by_key))
        return -1;
    for (size_t v = 0; v < n; v++) {
        b->bv[v].rec0 = b->nrecs;
        for (size_t i = 0; i < vms[v].n; i++) {
            struct brec *r = &b->recs[b->nrecs++];
            r->vm = v;
            r->i = i;
            r->match = -1;
            r->kn = -1;
        }
    }
    return 0;
}

#define GROW(arr, cnt, cap)                                                                        \
    ((cnt) < (cap) ? 0 : grow_array((void **)&(arr), &(cap), sizeof *(arr), (cap) ? (cap)*2 : 64))

static int grow_array(void **arr, size_t *cap, size_t size, size_t ncap)
{
    void *p = realloc(*arr, ncap * size);
    if (!p)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

static const struct dns_record *brec_rec(const struct batch *b, const struct brec *r)
{
    return &b->vms[r->vm].recs[r->i];
}

/* The index of the row with this id, adding it (from the columns just read) when new. */
static long row_get(struct batch *b, long long id, const struct brow *read)
{
    char key[INT_TEXT_BUFSZ];
    void *v;
    int_text(key, id);
    if (strmap_get(b->row_by_id, key, &v))
        return (long)(uintptr_t)v - 1;
    if (GROW(b->rows, b->nrows, b->rows_cap))
        return -1;
    b->rows[b->nrows] = *read;
    b->rows[b->nrows].id = id;
    b->rows[b->nrows].next_fresh = -1;
    b->rows[b->nrows].name = strpool_dup(&b->strs, read->name);
    b->rows[b->nrows].content = strpool_dup(&b->strs, read->content);
    if (!b->rows[b->nrows].name || !b->rows[b->nrows].content)
        return -1;
    if (strmap_add(b->row_by_id, key, (void *)(uintptr_t)(b->nrows + 1)) < 0)
        return -1;
    return (long)b->nrows++;
}

/* ---- the JSON parameters --------------------------------------------------------------------- */

static void js_open(struct jsarg *a)
{
    a->nord = 0;
    textbuf_reset(&a->js);
    a->oom = textbuf_putc(&a->js, '[') != 0;
}

/* Starts an element: "[" or ",[". */
static void js_item(struct jsarg *a)
{
    a->oom |= textbuf_puts(&a->js, a->js.len > 1 ? ",[" : "[") != 0;
}

static void js_int(struct jsarg *a, long long v, int first)
{
    char buf[INT_TEXT_BUFSZ + 1];
    size_t n = first ? 0 : 1;
    buf[0] = ',';
    n += int_text(buf + n, v);
    a->oom |= textbuf_append(&a->js, buf, n) != 0;
}

static void js_str(struct jsarg *a, const char *s)
{
    a->oom |= textbuf_putc(&a->js, ',') != 0;
    a->oom |= json_write_string(&a->js, s, strlen(s)) != 0;
}

/* An element that is a string: ["a","b"]. */
static void js_str_item(struct jsarg *a, const char *s)
{
    if (a->js.len > 1)
        a->oom |= textbuf_putc(&a->js, ',') != 0;
    a->oom |= json_write_string(&a->js, s, strlen(s)) != 0;
}

/* Notes that the next element stands for index i. */
static void js_ord(struct jsarg *a, size_t i)
{
    if (GROW(a->ord, a->nord, a->ord_cap)) {
        a->oom = 1;
        return;
    }
    a->ord[a->nord++] = i;
}

/* The index that element k (JT_* ordinality, from 1) of the last JSON stands for; -1 when no
 * element has that ordinal. */
static long js_ord_of(const struct jsarg *a, long long k)
{
    return k >= 1 && (unsigned long long)k <= a->nord ? (long)a->ord[k - 1] : -1;
}

static void js_close_item(struct jsarg *a)
{
    a->oom |= textbuf_putc(&a->js, ']') != 0;
}

/* Closes the array; 1 when it holds no element. */
static int js_close(struct jsarg *a)
{
    a->oom |= textbuf_putc(&a->js, ']') != 0;
    return a->js.len == 2;
}

/* Runs a statement whose only parameter (or first, with extra) is the JSON built in a. */
static csp_status js_exec(struct pdns_store *st, const struct jsarg *a, enum q id,
                          const long long *extra, const char *what, char *err, size_t errlen)
{
    struct param p[2] = {P_S(textbuf_str(&a->js)), P_I(extra ? *extra : 0)};
    if (a->oom)
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory while %s", what);
    if (q_exec(st, id, p, extra ? 2 : 1))
        return stmt_fail(st, id, err, errlen, "%s", what);
    return CSP_OK;
}

/* An element of JT_RECS / JT_REC_KEYS / JT_REC_FIRST standing for index i; last is the TTL, or
 * JT_REC_FIRST's f. */
static void js_rec(struct batch *b, size_t i, long long domain_id, const char *name,
                   const char *type, const char *content, long long last)
{
    js_ord(&b->j, i);
    js_item(&b->j);
    js_int(&b->j, domain_id, 1);
    js_str(&b->j, name);
    js_str(&b->j, type);
    js_str(&b->j, content);
    js_int(&b->j, last, 0);
    js_close_item(&b->j);
}

/* ---- step 1: read ------------------------------------------------------------------------------
 */

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Serialises every change to these VMs across instances until commit; in one order (by id) so
 * two instances with overlapping batches wait for each other instead of deadlocking. */
static csp_status lock_vms(struct pdns_store *st, struct batch *b, char *err, size_t errlen)
{
    const char **ids = malloc(b->nvms * sizeof *ids);
    if (!ids)
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory locking VMs");
    for (size_t v = 0; v < b->nvms; v++)
        ids[v] = b->vms[v].vm_id;
    qsort(ids, b->nvms, sizeof *ids, cmp_cstr);
    js_open(&b->j);
    for (size_t v = 0; v < b->nvms; v++)
        js_str_item(&b->j, ids[v]);
    js_close(&b->j);
    free(ids);
    return js_exec(st, &b->j, Q_LOCK_VMS, NULL, "locking the batch's VMs", err, errlen);
}

/* Locks (the domains row of) every zone of the desired records, in id order, before any records
 * row is locked. Two instances adding the same record are serialised this way, so the second
 * finds the first's row and co-owns it instead of inserting a duplicate; one lock order (VMs,
 * zones, records, SOA) avoids most deadlocks. */
static csp_status lock_zones(struct pdns_store *st, struct batch *b, char *err, size_t errlen)
{
    long long *ids = malloc((b->nrecs ? b->nrecs : 1) * sizeof *ids);
    size_t k = 0;
    csp_status rc;

    if (!ids)
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory locking zones");
    for (size_t i = 0; i < b->nrecs; i++)
        if (b->recs[i].zone)
            ids[k++] = b->recs[i].zone->id;
    qsort(ids, k, sizeof *ids, cmp_ll);
    js_open(&b->j);
    for (size_t i = 0; i < k; i++)
        if (i == 0 || ids[i] != ids[i - 1])
            js_int(&b->j, ids[i], b->j.js.len == 1);
    free(ids);
    if (js_close(&b->j))
        return CSP_OK;
    rc = js_exec(st, &b->j, Q_LOCK_ZONES, NULL, "locking the batch's zones", err, errlen);
    if (rc != CSP_OK)
        return rc;
    MYSQL_BIND res[1];
    struct col c;
    int more;
    col_int(&res[0], &c);
    if (q_results(st, Q_LOCK_ZONES, res))
        rc = stmt_fail(st, Q_LOCK_ZONES, err, errlen, "locking the batch's zones");
    while (rc == CSP_OK && (more = q_next(st, Q_LOCK_ZONES)) == 1)
        ;
    if (rc == CSP_OK && more < 0)
        rc = stmt_fail(st, Q_LOCK_ZONES, err, errlen, "locking the batch's zones");
    q_done(st, Q_LOCK_ZONES, rc);
    return rc;
}

/* Result columns k, <id>, r.id, r.domain_id, r.name, r.type, r.content, r.ttl: a records row
 * (columns 2..7) next to two leading integers. */
struct rowcols {
    MYSQL_BIND res[12];
    struct col c[12];
    struct brow row; /* name and content point at the buffers below until row_get copies them */
    char name[DNS_NAME_BUFSZ], content[DNS_NAME_BUFSZ];
    char ord[1024]; /* the candidates' read: ordername, wider than records.ordername */
};

static void rowcols_bind(struct rowcols *rc, int ncols)
{
    memset(&rc->row, 0, sizeof rc->row);
    rc->row.name = rc->name;
    rc->row.content = rc->content;
    int off = ncols - 6;
    for (int i = 0; i < off; i++)
        col_int(&rc->res[i], &rc->c[i]);
    col_int(&rc->res[off], &rc->c[off]);
    col_int(&rc->res[off + 1], &rc->c[off + 1]);
    col_str(&rc->res[off + 2], &rc->c[off + 2], rc->name, sizeof rc->name);
    col_str(&rc->res[off + 3], &rc->c[off + 3], rc->row.type, sizeof rc->row.type);
    col_str(&rc->res[off + 4], &rc->c[off + 4], rc->content, sizeof rc->content);
    col_int(&rc->res[off + 5], &rc->c[off + 5]);
}

/* After a fetch: fills row from the records columns; 0 when the row is absent (LEFT JOIN). */
static int rowcols_read(struct rowcols *rc, int ncols)
{
    int off = ncols - 6;
    int whole = col_text(&rc->c[off + 2]);
    whole &= col_text(&rc->c[off + 3]);
    whole &= col_text(&rc->c[off + 4]);
    if (rc->c[off].null)
        return 0;
    rc->row.domain_id = rc->c[off + 1].null ? -1 : rc->c[off + 1].i;
    rc->row.ttl = rc->c[off + 5].null ? -1 : rc->c[off + 5].i;
    rc->row.ttl0 = rc->row.ttl;
    rc->row.exact = whole;
    return 1;
}

static int cmp_own(const void *a, const void *b)
{
    const struct bown *x = a, *y = b;
    if (x->vm != y->vm)
        return (x->vm > y->vm) - (x->vm < y->vm);
    return (x->record_id > y->record_id) - (x->record_id < y->record_id);
}

static csp_status read_owned(struct pdns_store *st, struct batch *b, char *err, size_t errlen)
{
    enum q q = b->plan ? Q_OWNED_RO : Q_OWNED;
    struct rowcols rc;
    csp_status s;
    int more;

    js_open(&b->j);
    for (size_t v = 0; v < b->nvms; v++)
        js_str_item(&b->j, b->vms[v].vm_id);
    js_close(&b->j);
    s = js_exec(st, &b->j, q, NULL, "reading the records the batch's VMs own", err, errlen);
    if (s != CSP_OK)
        return s;
    rowcols_bind(&rc, 8);
    if (q_results(st, q, rc.res))
        s = stmt_fail(st, q, err, errlen, "reading the records the batch's VMs own");
    while (s == CSP_OK && (more = q_next(st, q)) == 1) {
        long long k = rc.c[0].i - 1; /* the VMs are listed in order */
        if (k < 0 || (size_t)k >= b->nvms || GROW(b->own, b->nown, b->own_cap)) {
            s = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory reading owned records");
            break;
        }
        struct bown *o = &b->own[b->nown];
        memset(o, 0, sizeof *o);
        o->vm = (size_t)k;
        o->record_id = rc.c[1].i;
        o->row = rowcols_read(&rc, 8) ? row_get(b, rc.c[2].i, &rc.row) : -1;
        if (!rc.c[2].null && o->row < 0) {
            s = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory reading owned records");
            break;
        }
        b->nown++;
    }
    if (s == CSP_OK && more < 0)
        s = stmt_fail(st, q, err, errlen, "reading the records the batch's VMs own");
    q_done(st, q, s);
    if (s != CSP_OK)
        return s;
    if (b->nown)
        qsort(b->own, b->nown, sizeof *b->own, cmp_own);
    for (size_t j = 0; j < b->nown; j++)
        if (b->bv[b->own[j].vm].nown++ == 0)
            b->bv[b->own[j].vm].own0 = j;
    return CSP_OK;
}

static int owned_matches(const struct brow *o, const struct zone *z, const struct dns_record *r,
                         const char *type)
{
    return o->exact && o->domain_id == z->id && !strcmp(o->name, r->name) &&
           !strcmp(o->type, type) && !strcmp(o->content, r->content);
}

/* Each desired record keeps the first owned row that is byte for byte the same. */
static void match_owned(struct batch *b)
{
    for (size_t i = 0; i < b->nrecs; i++) {
        struct brec *r = &b->recs[i];
        const struct bvm *v = &b->bv[r->vm];
        const char *type = dns_rr_type_name(brec_rec(b, r)->type);
        for (size_t j = v->own0; r->zone && j < v->own0 + v->nown; j++) {
            struct bown *o = &b->own[j];
            if (o->row >= 0 && !o->claimed &&
                owned_matches(&b->rows[o->row], r->zone, brec_rec(b, r), type)) {
                o->claimed = 1;
                r->match = (long)j;
                break;
            }
        }
    }
}

/* The known entry of (domain_id, name), added when absent (add; *added says so) or -1: absent,
 * or out of memory (add). */
static long known_name(struct known *k, long long domain_id, const char *name, int add, int *added)
{
    char key[NAME_KEY_BUFSZ];
    void *v;
    name_key(key, domain_id, name);
    if (strmap_get(k->by_name, key, &v))
        return (long)(uintptr_t)v - 1;
    if (!add || GROW(k->names, k->nnames, k->names_cap))
        return -1;
    char *copy = strdup(strchr(key, ' ') + 1);
    if (!copy || strmap_add(k->by_name, key, (void *)(uintptr_t)(k->nnames + 1)) < 0) {
        free(copy);
        return -1;
    }
    k->names[k->nnames] = (struct kname){domain_id, copy};
    if (added)
        *added = 1;
    return (long)k->nnames++;
}

/* Adds a row at known name `name` unless its id is there already. Returns 0, or -1 when memory
 * ran out. */
static int known_row(struct known *k, size_t name, long long id, const char *type, const char *ord,
                     int auth)
{
    if (GROW(k->rows, k->nrows, k->rows_cap))
        return -1;
    struct krow *w = &k->rows[k->nrows];
    memset(w, 0, sizeof *w);
    w->name = name;
    w->domain_id = k->names[name].domain_id;
    w->id = id;
    w->type_null = type == NULL;
    snprintf(w->type, sizeof w->type, "%s", type ? type : "");
    w->auth = auth;
    if (ord && !(w->ord = strdup(ord)))
        return -1;
    k->nrows++;
    return 0;
}

static int cmp_cand(const void *a, const void *b)
{
    const struct bcand *x = a, *y = b;
    if (x->rec != y->rec)
        return (x->rec > y->rec) - (x->rec < y->rec);
    return (x->id > y->id) - (x->id < y->id);
}

/* Runs Q_CAND, Q_SAME or Q_SAME_RO on the JSON in b->j and notes the candidates of each record
 * and, for the rectify, the rows at names the read made known. */
static csp_status cand_run(struct pdns_store *st, struct batch *b, enum q q, char *err,
                           size_t errlen)
{
    const char *what = "looking for existing copies of the batch's records";
    const char *js = textbuf_str(&b->j.js);
    struct param p[2] = {P_S(js), P_S(js)};
    struct rowcols rc;
    int more;

    if (b->j.oom)
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory while %s", what);
    if (q_exec(st, q, p, q == Q_CAND ? 1 : 2))
        return stmt_fail(st, q, err, errlen, "%s", what);
    csp_status s = CSP_OK;
    size_t start = b->ncand;
    rowcols_bind(&rc, 7);
    col_int(&rc.res[7], &rc.c[7]);
    col_int(&rc.res[8], &rc.c[8]);
    col_str(&rc.res[9], &rc.c[9], rc.ord, sizeof rc.ord);
    col_int(&rc.res[10], &rc.c[10]);
    if (q_results(st, q, rc.res))
        s = stmt_fail(st, q, err, errlen, "%s", what);
    while (s == CSP_OK && (more = q_next(st, q)) == 1) {
        long k = js_ord_of(&b->j, rc.c[0].i);
        int read = rowcols_read(&rc, 7), whole_ord = col_text(&rc.c[9]) || rc.c[9].null;
        if (k < 0 || (size_t)k >= b->nrecs || !read) {
            s = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory reading records");
            break;
        }
        struct brec *r = &b->recs[k];
        if (r->kn >= 0 && !rc.c[8].i) {
            if (!whole_ord) {
                s = plain_fail(CSP_PERMANENT, err, errlen,
                               "zone id %lld: records row %lld has an ordername longer than %zu "
                               "bytes; run pdnsutil rectify-zone on the zone",
                               r->zone->id, rc.c[1].i, sizeof rc.ord - 1);
                break;
            }
            if (known_row(&st->kn, (size_t)r->kn, rc.c[1].i, rc.c[4].null ? NULL : rc.row.type,
                          rc.c[9].null ? NULL : rc.ord, rc.c[10].i != 0)) {
                s = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory reading records");
                break;
            }
        }
        if (!rc.c[7].i)
            continue;
        long row = row_get(b, rc.c[1].i, &rc.row);
        if (row < 0 || GROW(b->cand, b->ncand, b->cand_cap)) {
            s = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory reading records");
            break;
        }
        b->cand[b->ncand++] = (struct bcand){(size_t)k, rc.c[1].i, row};
    }
    if (s == CSP_OK && more < 0)
        s = stmt_fail(st, q, err, errlen, "%s", what);
    q_done(st, q, s);
    if (s != CSP_OK)
        return s;
    if (b->ncand > start)
        qsort(b->cand + start, b->ncand - start, sizeof *b->cand, cmp_cand);
    for (size_t i = start; i < b->ncand; i++) {
        struct brec *r = &b->recs[b->cand[i].rec];
        if (r->ncand++ == 0)
            r->cand = i;
    }
    return CSP_OK;
}

/* A name more of a chunk's records share is read through the (name, type) index: it is most
 * likely an instance group's, which holds a row per member, and reading them all once per
 * record cost more than the rectify's read it saves. */
#define BY_NAME_MAX 4

/* Marks the records whose name at most BY_NAME_MAX of the chunk's records to look up share. */
static int cand_by_name(struct batch *b)
{
    struct strmap *seen = NULL;
    size_t *count = calloc(b->nrecs ? b->nrecs : 1, sizeof *count), n = 0;
    long *slot = calloc(b->nrecs ? b->nrecs : 1, sizeof *slot);
    int rc = !count || !slot || strmap_new(&seen) ? -1 : 0;

    for (size_t i = 0; i < b->nrecs && rc == 0; i++) {
        const struct brec *r = &b->recs[i];
        char key[NAME_KEY_BUFSZ];
        void *v;
        slot[i] = -1;
        if (!r->zone || r->match >= 0)
            continue;
        name_key(key, r->zone->id, brec_rec(b, r)->name);
        if (strmap_get(seen, key, &v)) {
            slot[i] = (long)(uintptr_t)v - 1;
        } else if (strmap_add(seen, key, (void *)(uintptr_t)(n + 1)) < 0) {
            rc = -1;
            break;
        } else {
            slot[i] = (long)n++;
        }
        count[slot[i]]++;
    }
    for (size_t i = 0; i < b->nrecs && rc == 0; i++)
        b->recs[i].by_name = slot[i] >= 0 && count[slot[i]] <= BY_NAME_MAX;
    strmap_free(seen, NULL);
    free(count);
    free(slot);
    return rc;
}

/* The rows that compare equal (under the table's collation) to each desired record not kept
 * from the VM's own rows; and, for the rectify, every enabled row at most of those records'
 * names (plans take no part in a commit, so they read only the candidates). */
static csp_status read_candidates(struct pdns_store *st, struct batch *b, char *err, size_t errlen)
{
    csp_status s = CSP_OK;

    if (!b->plan && cand_by_name(b))
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory reading records");
    js_open(&b->j);
    for (size_t i = 0; i < b->nrecs && s == CSP_OK && !b->plan; i++) {
        struct brec *r = &b->recs[i];
        const struct dns_record *d = brec_rec(b, r);
        if (!r->by_name)
            continue;
        int first = 0;
        if ((r->kn = known_name(&st->kn, r->zone->id, d->name, 1, &first)) < 0)
            s = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory reading records");
        js_rec(b, i, r->zone->id, d->name, dns_rr_type_name(d->type), d->content, first);
    }
    if (!js_close(&b->j) && s == CSP_OK)
        s = cand_run(st, b, Q_CAND, err, errlen);
    js_open(&b->j);
    for (size_t i = 0; i < b->nrecs && s == CSP_OK; i++) {
        struct brec *r = &b->recs[i];
        const struct dns_record *d = brec_rec(b, r);
        if (!r->zone || r->match >= 0 || r->by_name)
            continue;
        /* A name an earlier chunk made known stays so: the rows this one inserts there join. */
        if (!b->plan)
            r->kn = known_name(&st->kn, r->zone->id, d->name, 0, NULL);
        js_rec(b, i, r->zone->id, d->name, dns_rr_type_name(d->type), d->content, d->ttl);
    }
    if (!js_close(&b->j) && s == CSP_OK)
        s = cand_run(st, b, b->plan ? Q_SAME_RO : Q_SAME, err, errlen);
    return s;
}

static csp_status read_owner_counts(struct pdns_store *st, struct batch *b, char *err,
                                    size_t errlen)
{
    MYSQL_BIND res[2];
    struct col c[2];
    csp_status s;
    int more;

    js_open(&b->j);
    for (size_t i = 0; i < b->nrows; i++)
        js_int(&b->j, b->rows[i].id, i == 0);
    if (js_close(&b->j))
        return CSP_OK;
    s = js_exec(st, &b->j, Q_COUNT_OWNERS, NULL, "counting the owners of records", err, errlen);
    if (s != CSP_OK)
        return s;
    col_int(&res[0], &c[0]);
    col_int(&res[1], &c[1]);
    if (q_results(st, Q_COUNT_OWNERS, res))
        s = stmt_fail(st, Q_COUNT_OWNERS, err, errlen, "counting the owners of records");
    while (s == CSP_OK && (more = q_next(st, Q_COUNT_OWNERS)) == 1) {
        char key[INT_TEXT_BUFSZ];
        void *v;
        int_text(key, c[0].i);
        if (strmap_get(b->row_by_id, key, &v))
            b->rows[(uintptr_t)v - 1].owners = c[1].i;
    }
    if (s == CSP_OK && more < 0)
        s = stmt_fail(st, Q_COUNT_OWNERS, err, errlen, "counting the owners of records");
    q_done(st, Q_COUNT_OWNERS, s);
    return s;
}

/* ---- step 2: replay ------------------------------------------------------------------------- */

/* The per-type counts of a type outside the model (a row changed by hand) go to by_type[0]. */
static struct pdns_type_counts *type_counts(struct pdns_apply_stats *s, dns_rr_type t)
{
    return &s->by_type[t > 0 && t < DNS_RR_TYPE_COUNT ? t : 0];
}

static int owned_by_vm(const struct batch *b, size_t vm, long long record_id)
{
    const struct bvm *v = &b->bv[vm];
    for (size_t j = v->own0; j < v->own0 + v->nown; j++)
        if (b->own[j].record_id == record_id)
            return 1;
    return 0;
}

#define FRESH_KEY_BUFSZ (NAME_KEY_BUFSZ + TYPE_BUFSZ + DNS_NAME_BUFSZ)
static void fresh_key(char *key, long long domain_id, const char *name, const char *type,
                      const char *content)
{
    size_t n = name_key(key, domain_id, name), tlen = strnlen(type, TYPE_BUFSZ - 1);
    key[n++] = '\t';
    memcpy(key + n, type, tlen);
    n += tlen;
    key[n++] = '\t';
    lower_copy(key + n, content, DNS_NAME_BUFSZ);
}

static csp_status replay_touch(struct pdns_store *st, const struct batch *b, long long domain_id,
                               const char *name, char *err, size_t errlen)
{
    return b->plan ? CSP_OK : touch(st, domain_id, name, err, errlen);
}

static csp_status replay_pair(struct batch *b, long row, size_t vm, char *err, size_t errlen)
{
    if (GROW(b->pairs, b->npairs, b->pairs_cap))
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory applying VM %s",
                          b->vms[vm].vm_id);
    b->pairs[b->npairs].row = row;
    b->pairs[b->npairs++].vm = vm;
    b->rows[row].owners++;
    return CSP_OK;
}

/* A desired record the VM does not own yet: co-own an identical row another VM owns, leave an
 * identical hand-made row alone, or insert a new row. */
static csp_status replay_add(struct pdns_store *st, struct batch *b, struct brec *r, char *err,
                             size_t errlen)
{
    const struct dns_record *d = brec_rec(b, r);
    const char *type = dns_rr_type_name(d->type);
    struct pdns_apply_stats *sum = &b->vms[r->vm].stats;
    char key[FRESH_KEY_BUFSZ];
    long coown = -1, fresh = -1, first_fresh;
    size_t seen = 0;
    int handmade = 0;
    void *v;
    csp_status rc;

    fresh_key(key, r->zone->id, d->name, type, d->content);
    if (strmap_get(b->fresh_by_key, key, &v))
        fresh = (long)(uintptr_t)v - 1;
    first_fresh = fresh;
    /* In the order the database would list them: the rows read, then the ones inserted since. */
    for (size_t k = 0; seen < MAX_CANDIDATES && (k < r->ncand || fresh >= 0); k++) {
        long row = k < r->ncand ? b->cand[r->cand + k].row : fresh;
        if (k >= r->ncand)
            fresh = b->rows[fresh].next_fresh;
        const struct brow *w = &b->rows[row];
        if (w->deleted || (!w->fresh && owned_by_vm(b, r->vm, w->id)))
            continue;
        seen++;
        /* Rows equal under the case-insensitive collation; only a byte-exact one is co-owned,
         * so later applies do not see it as a different record. */
        if (w->owners == 0)
            handmade = 1;
        else if (coown < 0 && w->exact && !strcmp(w->name, d->name) &&
                 !strcmp(w->content, d->content))
            coown = row;
    }
    if (coown >= 0) {
        struct brow *w = &b->rows[coown];
        rc = replay_pair(b, coown, r->vm, err, errlen);
        if (rc == CSP_OK && w->ttl != d->ttl) {
            w->ttl = d->ttl;
            rc = replay_touch(st, b, w->domain_id, w->name, err, errlen);
        }
        r->kind = PDNS_CHANGE_ADD;
        r->shared = 1;
        sum->added++;
        type_counts(sum, d->type)->added++;
        b->bv[r->vm].kept++;
        return rc;
    }
    if (handmade) {
        if (!b->plan)
            log_msg(LOG_LVL_INFO, LOG_MOD,
                    "vm %s: %s %s %s already exists and cs-pdns does not own it; left as it is",
                    b->vms[r->vm].vm_id, d->name, type, d->content);
        r->kind = PDNS_CHANGE_FOREIGN;
        sum->foreign++;
        type_counts(sum, d->type)->foreign++;
        return CSP_OK;
    }
    struct brow row = {.domain_id = r->zone->id,
                       .ttl = d->ttl,
                       .ttl0 = d->ttl,
                       .exact = 1,
                       .fresh = 1,
                       .next_fresh = -1,
                       .kn = r->kn};
    row.name = d->name;
    row.content = d->content;
    snprintf(row.type, sizeof row.type, "%s", type);
    if (GROW(b->rows, b->nrows, b->rows_cap))
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory applying VM %s",
                          b->vms[r->vm].vm_id);
    long idx = (long)b->nrows;
    b->rows[b->nrows++] = row;
    if (first_fresh >= 0) {
        long last = first_fresh;
        while (b->rows[last].next_fresh >= 0)
            last = b->rows[last].next_fresh;
        b->rows[last].next_fresh = idx;
    } else if (strmap_add(b->fresh_by_key, key, (void *)(uintptr_t)(idx + 1)) < 0) {
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory applying VM %s",
                          b->vms[r->vm].vm_id);
    }
    r->kind = PDNS_CHANGE_ADD;
    sum->added++;
    type_counts(sum, d->type)->added++;
    b->bv[r->vm].kept++;
    rc = replay_pair(b, idx, r->vm, err, errlen);
    return rc == CSP_OK ? replay_touch(st, b, row.domain_id, row.name, err, errlen) : rc;
}

/* pdns_store_apply's decisions for one VM, against the state the VMs before it left. */
static csp_status replay_vm(struct pdns_store *st, struct batch *b, size_t vm, char *err,
                            size_t errlen)
{
    struct pdns_vm_records *V = &b->vms[vm];
    struct bvm *bv = &b->bv[vm];
    csp_status rc = CSP_OK;

    for (size_t i = 0; i < V->n; i++) {
        const struct dns_record *d = &V->recs[i];
        if (b->recs[bv->rec0 + i].zone)
            continue;
        if (!b->plan)
            log_msg(LOG_LVL_WARN, LOG_MOD, "vm %s: no zone in domains holds %s; %s %s %s skipped",
                    V->vm_id, d->name, d->name, dns_rr_type_name(d->type), d->content);
        b->recs[bv->rec0 + i].kind = PDNS_CHANGE_NO_ZONE;
        V->stats.no_zone++;
        type_counts(&V->stats, d->type)->no_zone++;
    }
    /* Unclaimed: no longer wanted, a duplicate of a kept row, or an ownership whose row was
     * deleted by hand (only the ownership is dropped then). */
    for (size_t j = bv->own0; j < bv->own0 + bv->nown && rc == CSP_OK; j++) {
        struct bown *o = &b->own[j];
        if (o->claimed)
            continue;
        o->dropped = 1;
        if (o->row < 0) {
            if (!b->plan)
                log_msg(LOG_LVL_WARN, LOG_MOD,
                        "vm %s: owned record %lld was deleted outside cs-pdns; forgetting it",
                        V->vm_id, o->record_id);
            continue;
        }
        struct brow *w = &b->rows[o->row];
        o->shared = w->owners > 1;
        V->stats.removed++;
        type_counts(&V->stats, dns_rr_type_parse(w->type))->removed++;
        if (--w->owners <= 0) {
            w->deleted = 1;
            rc = replay_touch(st, b, w->domain_id, w->name, err, errlen);
        }
    }
    for (size_t i = 0; i < V->n && rc == CSP_OK; i++) {
        struct brec *r = &b->recs[bv->rec0 + i];
        if (!r->zone)
            continue;
        if (r->match < 0) {
            rc = replay_add(st, b, r, err, errlen);
            continue;
        }
        struct brow *w = &b->rows[b->own[r->match].row];
        bv->kept++;
        if (w->ttl == V->recs[i].ttl) {
            r->unchanged = 1;
            V->stats.unchanged++;
            continue;
        }
        r->kind = PDNS_CHANGE_TTL;
        r->old_ttl = w->ttl;
        w->ttl = V->recs[i].ttl;
        V->stats.updated++;
        type_counts(&V->stats, V->recs[i].type)->updated++;
        rc = replay_touch(st, b, w->domain_id, w->name, err, errlen);
    }
    return rc;
}

/* ---- step 3: write -------------------------------------------------------------------------- */

/* Reads back the ids of the rows just inserted: of the rows identical to each, the one that is
 * byte-exact and was not there before, from first_id on. */
static csp_status read_new_ids(struct pdns_store *st, struct batch *b, long long first_id,
                               char *err, size_t errlen)
{
    MYSQL_BIND res[4];
    struct col c[4];
    char name[DNS_NAME_BUFSZ], content[DNS_NAME_BUFSZ];
    csp_status s =
        js_exec(st, &b->j, Q_NEW_IDS, &first_id, "reading the ids of new records", err, errlen);
    int more;

    if (s != CSP_OK)
        return s;
    col_int(&res[0], &c[0]);
    col_int(&res[1], &c[1]);
    col_str(&res[2], &c[2], name, sizeof name);
    col_str(&res[3], &c[3], content, sizeof content);
    if (q_results(st, Q_NEW_IDS, res))
        s = stmt_fail(st, Q_NEW_IDS, err, errlen, "reading the ids of new records");
    while (s == CSP_OK && (more = q_next(st, Q_NEW_IDS)) == 1) {
        char key[INT_TEXT_BUFSZ];
        long k = js_ord_of(&b->j, c[0].i);
        long long id = c[1].i;
        int whole = col_text(&c[2]);
        whole &= col_text(&c[3]);
        int_text(key, id);
        if (k < 0 || (size_t)k >= b->nrows || !b->rows[k].fresh || !whole ||
            strcmp(name, b->rows[k].name) || strcmp(content, b->rows[k].content) ||
            strmap_get(b->row_by_id, key, NULL))
            continue;
        if (b->rows[k].id == 0 || id < b->rows[k].id)
            b->rows[k].id = id;
    }
    if (s == CSP_OK && more < 0)
        s = stmt_fail(st, Q_NEW_IDS, err, errlen, "reading the ids of new records");
    q_done(st, Q_NEW_IDS, s);
    for (size_t i = 0; i < b->nrows && s == CSP_OK; i++)
        if (b->rows[i].fresh && b->rows[i].id == 0)
            s = plain_fail(CSP_TRANSIENT, err, errlen,
                           "record %s %s %s vanished right after it was inserted; retrying",
                           b->rows[i].name, b->rows[i].type, b->rows[i].content);
    return s;
}

/* The ids of the rows just inserted: counted from the first when the server promises
 * consecutive ids and every row went in (Q_INSERT's ORDER BY j.k inserts them in row order, so
 * it fixes which row gets which id), read back otherwise. */
static csp_status new_ids(struct pdns_store *st, struct batch *b, char *err, size_t errlen)
{
    long long first = (long long)mysql_stmt_insert_id(st->q[Q_INSERT]);
    unsigned long long nfresh = 0;

    for (size_t i = 0; i < b->nrows; i++)
        nfresh += b->rows[i].fresh != 0;
    if (!st->id_step || first <= 0 || mysql_stmt_affected_rows(st->q[Q_INSERT]) != nfresh)
        return read_new_ids(st, b, first, err, errlen);
    for (size_t i = 0; i < b->nrows; i++)
        if (b->rows[i].fresh) {
            b->rows[i].id = first;
            first += st->id_step;
        }
    return CSP_OK;
}

static csp_status batch_write(struct pdns_store *st, struct batch *b, char *err, size_t errlen)
{
    csp_status rc = CSP_OK;

    js_open(&b->j);
    for (size_t j = 0; j < b->nown; j++) {
        if (!b->own[j].dropped)
            continue;
        js_item(&b->j);
        js_int(&b->j, b->own[j].record_id, 1);
        js_str(&b->j, b->vms[b->own[j].vm].vm_id);
        js_close_item(&b->j);
    }
    if (!js_close(&b->j))
        rc = js_exec(st, &b->j, Q_DISOWN, NULL, "dropping ownerships", err, errlen);

    js_open(&b->j);
    for (size_t i = 0; i < b->nrows && rc == CSP_OK; i++)
        if (b->rows[i].deleted && !b->rows[i].fresh)
            js_int(&b->j, b->rows[i].id, b->j.js.len == 1);
    if (rc == CSP_OK && !js_close(&b->j))
        rc =
            js_exec(st, &b->j, Q_DELETE, NULL, "deleting records no VM owns any more", err, errlen);
    for (size_t i = 0; i < b->nrows && rc == CSP_OK; i++) {
        if (!b->rows[i].deleted || b->rows[i].fresh)
            continue;
        if (GROW(st->kn.gone, st->kn.ngone, st->kn.gone_cap))
            rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory deleting records");
        else
            st->kn.gone[st->kn.ngone++] = b->rows[i].id;
    }

    js_open(&b->j);
    for (size_t i = 0; i < b->nrows && rc == CSP_OK; i++) {
        const struct brow *w = &b->rows[i];
        if (w->fresh || w->deleted || w->ttl == w->ttl0)
            continue;
        js_item(&b->j);
        js_int(&b->j, w->id, 1);
        js_int(&b->j, w->ttl, 0);
        js_close_item(&b->j);
    }
    if (rc == CSP_OK && !js_close(&b->j))
        rc = js_exec(st, &b->j, Q_SET_TTL, NULL, "setting TTLs", err, errlen);

    js_open(&b->j);
    for (size_t i = 0; i < b->nrows && rc == CSP_OK; i++) {
        const struct brow *w = &b->rows[i];
        if (w->fresh)
            js_rec(b, i, w->domain_id, w->name, w->type, w->content, w->ttl);
    }
    if (rc == CSP_OK && !js_close(&b->j)) {
        rc = js_exec(st, &b->j, Q_INSERT, NULL, "inserting records", err, errlen);
        if (rc == CSP_OK)
            rc = new_ids(st, b, err, errlen);
    }
    /* As Q_INSERT wrote them, at names the candidates' read made known. */
    for (size_t i = 0; i < b->nrows && rc == CSP_OK; i++) {
        const struct brow *w = &b->rows[i];
        if (w->fresh && w->kn >= 0 && known_row(&st->kn, (size_t)w->kn, w->id, w->type, NULL, 1))
            rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory inserting records");
    }

    js_open(&b->j);
    for (size_t i = 0; i < b->npairs && rc == CSP_OK; i++) {
        js_item(&b->j);
        js_int(&b->j, b->rows[b->pairs[i].row].id, 1);
        js_str(&b->j, b->vms[b->pairs[i].vm].vm_id);
        js_close_item(&b->j);
    }
    if (rc == CSP_OK && !js_close(&b->j))
        rc = js_exec(st, &b->j, Q_OWN, NULL, "recording ownerships", err, errlen);

    js_open(&b->j);
    for (size_t v = 0; v < b->nvms && rc == CSP_OK; v++)
        if (!b->bv[v].kept)
            js_str_item(&b->j, b->vms[v].vm_id);
    if (rc == CSP_OK && !js_close(&b->j))
        rc = js_exec(st, &b->j, Q_DROP_VMS, NULL, "forgetting VMs that own nothing", err, errlen);
    return rc;
}

/* Reads, replays and (unless planning) writes one chunk. */
static csp_status batch_run(struct pdns_store *st, struct batch *b, char *err, size_t errlen)
{
    csp_status rc = zones_fresh(st, err, errlen);
    for (size_t i = 0; i < b->nrecs && rc == CSP_OK; i++)
        b->recs[i].zone = zone_of(st, brec_rec(b, &b->recs[i])->name);
    if (rc == CSP_OK && !b->plan)
        rc = lock_vms(st, b, err, errlen);
    if (rc == CSP_OK && !b->plan)
        rc = lock_zones(st, b, err, errlen);
    if (rc == CSP_OK)
        rc = read_owned(st, b, err, errlen);
    if (rc == CSP_OK) {
        match_owned(b);
        rc = read_candidates(st, b, err, errlen);
    }
    if (rc == CSP_OK)
        rc = read_owner_counts(st, b, err, errlen);
    for (size_t v = 0; v < b->nvms && rc == CSP_OK; v++)
        rc = replay_vm(st, b, v, err, errlen);
    if (rc == CSP_OK && !b->plan)
        rc = batch_write(st, b, err, errlen);
    return rc;
}

static int type_known(dns_rr_type t)
{
    const char *name = dns_rr_type_name(t);
    return name && dns_rr_type_parse(name) == t;
}

static csp_status check_vm(const char *vm_id, const struct dns_record *recs, size_t n, char *err,
                           size_t errlen)
{
    if (!vm_id || !*vm_id || strlen(vm_id) > VM_ID_MAX)
        return plain_fail(CSP_PERMANENT, err, errlen, "VM id \"%.80s\" is empty or longer than %d",
                          vm_id ? vm_id : "", VM_ID_MAX);
    if (n > 0 && !recs)
        return plain_fail(CSP_PERMANENT, err, errlen, "VM %s: %zu records but no array", vm_id, n);
    for (size_t i = 0; i < n; i++)
        if (!type_known(recs[i].type))
            return plain_fail(CSP_PERMANENT, err, errlen, "VM %s: record %s has type %d", vm_id,
                              recs[i].name, (int)recs[i].type);
    return CSP_OK;
}

static csp_status apply_many(struct pdns_store *st, struct pdns_vm_records *vms, size_t n,
                             char *err, size_t errlen)
{
    struct strmap *seen = NULL;
    csp_status rc = CSP_OK;

    if (strmap_new(&seen))
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory applying a batch");
    for (size_t v = 0; v < n && rc == CSP_OK; v++) {
        memset(&vms[v].stats, 0, sizeof vms[v].stats);
        rc = check_vm(vms[v].vm_id, vms[v].recs, vms[v].n, err, errlen);
        if (rc == CSP_OK) {
            int added = strmap_add(seen, vms[v].vm_id, NULL);
            if (added < 0)
                rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory applying a batch");
            else if (added == 0)
                rc = plain_fail(CSP_PERMANENT, err, errlen,
                                "VM %s appears twice in one batch: merge its events first",
                                vms[v].vm_id);
        }
    }
    strmap_free(seen, NULL);
    for (size_t start = 0; start < n && rc == CSP_OK;) {
        size_t end = start, nrec = 0;
        while (end < n && end - start < CHUNK_VMS &&
               (end == start || nrec + vms[end].n <= CHUNK_RECORDS))
            nrec += vms[end++].n;
        struct batch b;
        if (batch_init(&b, vms + start, end - start, 0))
            rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory applying a batch");
        else
            rc = batch_run(st, &b, err, errlen);
        batch_free(&b);
        start = end;
    }
    return rc;
}

void pdns_apply_stats_add(struct pdns_apply_stats *to, const struct pdns_apply_stats *from)
{
    to->added += from->added;
    to->removed += from->removed;
    to->updated += from->updated;
    to->unchanged += from->unchanged;
    to->no_zone += from->no_zone;
    to->foreign += from->foreign;
    to->zones_bumped += from->zones_bumped;
    for (int t = 0; t < DNS_RR_TYPE_COUNT; t++) {
        to->by_type[t].added += from->by_type[t].added;
        to->by_type[t].removed += from->by_type[t].removed;
        to->by_type[t].updated += from->by_type[t].updated;
        to->by_type[t].no_zone += from->by_type[t].no_zone;
        to->by_type[t].foreign += from->by_type[t].foreign;
    }
}

csp_status pdns_store_apply_many(struct pdns_store *st, struct pdns_vm_records *vms, size_t n,
                                 char *err, size_t errlen)
{
    if (!st->in_txn || !st->conn)
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "pdns_store_apply_many called outside a transaction: call "
                          "pdns_store_begin");
    if (st->readonly) {
        pdns_store_rollback(st);
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "the store was opened read-only (a plan): nothing may be written");
    }
    if (n > 0 && !vms) {
        pdns_store_rollback(st);
        return plain_fail(CSP_PERMANENT, err, errlen, "%zu VMs but no array", n);
    }
    csp_status rc = apply_many(st, vms, n, err, errlen);
    if (rc != CSP_OK)
        pdns_store_rollback(st);
    return rc;
}

csp_status pdns_store_apply(struct pdns_store *st, const char *vm_id, const struct dns_record *recs,
                            size_t n, struct pdns_apply_stats *stats, char *err, size_t errlen)
{
    struct pdns_vm_records one = {.vm_id = vm_id, .recs = recs, .n = n};
    if (!st->in_txn || !st->conn)
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "pdns_store_apply called outside a transaction: call pdns_store_begin");
    csp_status rc = pdns_store_apply_many(st, &one, 1, err, errlen);
    if (rc == CSP_OK && stats)
        pdns_apply_stats_add(stats, &one.stats);
    return rc;
}

/* ---- commit -------------------------------------------------------------------------------- */

static uint32_t utc_today(void)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    return (uint32_t)((tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday);
}

/* A touched zone's SOA as locked: the first row by id, and how many there are. */
struct soa {
    long long domain_id, id;
    unsigned rows;
    int whole; /* content read without truncation */
    char content[SOA_BUFSZ];
};

/* Notes one SOA row read for zone domain_id (soas sorted by zone id). */
static void soa_note(struct soa *soas, size_t n, long long domain_id, long long id,
                     const char *content, int whole)
{
    for (size_t i = 0; i < n; i++) {
        struct soa *s = &soas[i];
        if (s->domain_id != domain_id || s->rows++ > 0)
            continue;
        s->id = id;
        s->whole = whole;
        snprintf(s->content, sizeof s->content, "%s", content);
    }
}

/* Runs a locking SOA read (Q_SOA_APEX, or Q_SOA for one zone) and notes its rows. */
static csp_status soa_read(struct pdns_store *st, enum q q, const struct param *p, size_t np,
                           struct soa *soas, size_t n, char *err, size_t errlen)
{
    MYSQL_BIND res[3];
    struct col c[3];
    char buf[SOA_BUFSZ];
    int apex = q == Q_SOA_APEX, more = 0;
    csp_status rc = CSP_OK;

    if (q_exec(st, q, p, np))
        return stmt_fail(st, q, err, errlen, "locking the SOA records of the zones changed");
    if (apex)
        col_int(&res[0], &c[0]);
    col_int(&res[apex], &c[apex]);
    col_str(&res[apex + 1], &c[apex + 1], buf, sizeof buf);
    if (q_results(st, q, res))
        rc = stmt_fail(st, q, err, errlen, "locking the SOA records of the zones changed");
    while (rc == CSP_OK && (more = q_next(st, q)) == 1) {
        int whole = col_text(&c[apex + 1]);
        soa_note(soas, n, apex ? c[0].i : soas[0].domain_id, c[apex].i, buf, whole);
    }
    if (rc == CSP_OK && more < 0)
        rc = stmt_fail(st, q, err, errlen, "locking the SOA records of the zones changed");
    q_done(st, q, rc);
    return rc;
}

/* Locks the SOA rows of soas[0..n) (sorted by zone id): the zones in memory with one read at
 * their apexes, any other (deleted from domains meanwhile) by its id. */
static csp_status soa_lock(struct pdns_store *st, struct soa *soas, size_t n, char *err,
                           size_t errlen)
{
    struct jsarg a = {.js = TEXTBUF_INIT};
    csp_status rc = CSP_OK;

    js_open(&a);
    for (size_t i = 0; i < n; i++) {
        const struct zone *z = zone_by_id(st, soas[i].domain_id);
        if (!z)
            continue;
        js_item(&a);
        js_int(&a, z->id, 1);
        js_str(&a, z->name);
        js_close_item(&a);
    }
    int none = js_close(&a);
    if (a.oom)
        rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory locking SOA records");
    else if (!none)
        rc = soa_read(st, Q_SOA_APEX, (struct param[]){P_S(textbuf_str(&a.js))}, 1, soas, n, err,
                      errlen);
    textbuf_free(&a.js);
    for (size_t i = 0; i < n && rc == CSP_OK; i++)
        if (!zone_by_id(st, soas[i].domain_id))
            rc = soa_read(st, Q_SOA, (struct param[]){P_I(soas[i].domain_id)}, 1, &soas[i], 1, err,
                          errlen);
    return rc;
}

/* Bumps the serial of every zone in soas[0..n) (sorted by zone id) with one read and one write;
 * did[] gets the zones bumped, *bumped their count. A zone without a usable SOA keeps it, with a
 * warning, as before. */
static csp_status bump_soas(struct pdns_store *st, struct soa *soas, size_t n, uint32_t today,
                            long long *did, unsigned *bumped, char *err, size_t errlen)
{
    struct jsarg a = {.js = TEXTBUF_INIT};
    char next[SOA_BUFSZ];
    unsigned k = 0;
    csp_status rc = soa_lock(st, soas, n, err, errlen);

    js_open(&a);
    for (size_t i = 0; i < n && rc == CSP_OK; i++) {
        const struct soa *s = &soas[i];
        if (s->rows == 0) {
            log_msg(LOG_LVL_WARN, LOG_MOD, "zone id %lld has no SOA record; serial not bumped",
                    s->domain_id);
            continue;
        }
        if (s->rows > 1)
            log_msg(LOG_LVL_WARN, LOG_MOD, "zone id %lld has %u SOA records; bumping record %lld",
                    s->domain_id, s->rows, s->id);
        if (!s->whole || pdns_soa_bump(s->content, today, next, sizeof next) != 0) {
            log_msg(LOG_LVL_WARN, LOG_MOD,
                    "zone id %lld: SOA content \"%.200s\" is not \"mname rname serial refresh "
                    "retry expire minimum\"; serial not bumped",
                    s->domain_id, s->content);
            continue;
        }
        js_item(&a);
        js_int(&a, s->id, 1);
        js_str(&a, next);
        js_close_item(&a);
        did[k++] = s->domain_id;
    }
    if (!js_close(&a) && rc == CSP_OK)
        rc = js_exec(st, &a, Q_SET_SOA, NULL, "bumping the SOA serials of the zones changed", err,
                     errlen);
    textbuf_free(&a.js);
    if (rc == CSP_OK)
        *bumped = k;
    return rc;
}

/* An empty non-terminal the rectify created or removed changed its answer (NXDOMAIN <-> NODATA)
 * like a record would: it is reported with the names the batch wrote. */
static int note_ent(void *ud, long long domain_id, const char *name)
{
    return note_name(ud, domain_id, name);
}

static int cmp_krow(const void *a, const void *b)
{
    const struct krow *x = a, *y = b;
    if (x->domain_id != y->domain_id)
        return (x->domain_id > y->domain_id) - (x->domain_id < y->domain_id);
    return (x->id > y->id) - (x->id < y->id);
}

/* Sorts the known rows by zone and id, leaving each row once and none the transaction deleted. */
static void known_settle(struct known *k)
{
    size_t u = 0;
    if (k->nrows)
        qsort(k->rows, k->nrows, sizeof *k->rows, cmp_krow);
    if (k->ngone)
        qsort(k->gone, k->ngone, sizeof *k->gone, cmp_ll);
    for (size_t i = 0; i < k->nrows; i++) {
        struct krow *w = &k->rows[i];
        int dup = u && k->rows[u - 1].domain_id == w->domain_id && k->rows[u - 1].id == w->id;
        if (dup || (k->ngone && bsearch(&w->id, k->gone, k->ngone, sizeof *k->gone, cmp_ll))) {
            free(w->ord);
            continue;
        }
        k->rows[u++] = *w;
    }
    k->nrows = u;
}

/* The names of zone domain_id whose rows the store knows, and those rows (from *next on, the
 * settled rows being sorted by zone), for the rectify. */
/* The known names of zone domain_id and their rows, at names and rows (which have room for all
 * of k's): the rows from *next on, which known_settle sorted by zone. */
static struct pdns_rectify_known known_for_zone(const struct known *k, long long domain_id,
                                                size_t *next, const char **names,
                                                struct pdns_rectify_row *rows)
{
    size_t nn = 0, nr = 0, i = *next;
    for (size_t j = 0; j < k->nnames; j++)
        if (k->names[j].domain_id == domain_id)
            names[nn++] = k->names[j].name;
    for (; i < k->nrows && k->rows[i].domain_id <= domain_id; i++) {
        const struct krow *w = &k->rows[i];
        if (w->domain_id < domain_id)
            continue;
        rows[nr++] = (struct pdns_rectify_row){
            .name = k->names[w->name].name,
            .id = w->id,
            .type = w->type_null ? NULL : w->type,
            .ordername = w->ord,
            .auth = w->auth,
        };
    }
    *next = i;
    return (struct pdns_rectify_known){names, nn, rows, nr};
}

/* Rectifies (DNSSEC ordername/auth, empty non-terminals) the names changed in each touched zone,
 * inside the transaction, before its serial moves. zones is sorted. */
static csp_status rectify_zones(struct pdns_store *st, char *err, size_t errlen)
{
    /* Only the names written are rectified; note_ent appends the ENTs behind them. */
    size_t nchg = st->nchg, nz = 0, nnames = 0, nkn = 0, nrows = 0, next = 0;
    const char **names = malloc((nchg ? nchg : 1) * sizeof *names);
    const char **kn = malloc((st->kn.nnames ? st->kn.nnames : 1) * sizeof *kn);
    struct pdns_rectify_row *rows = malloc((st->kn.nrows ? st->kn.nrows : 1) * sizeof *rows);
    struct pdns_rectify_known *known = malloc((st->nzones ? st->nzones : 1) * sizeof *known);
    struct pdns_rectify_zone *zones = malloc((st->nzones ? st->nzones : 1) * sizeof *zones);
    csp_status rc = CSP_OK;

    if (!names || !kn || !rows || !known || !zones) {
        rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory rectifying zones");
        goto done;
    }
    known_settle(&st->kn);
    for (size_t z = 0; z < st->nzones; z++) {
        const struct zone *zone = zone_by_id(st, st->zones[z]);
        if (!zone)
            continue; /* deleted from domains meanwhile: nothing left to rectify */
        size_t n0 = nnames;
        for (size_t i = 0; i < nchg; i++)
            if (st->chg[i].domain_id == zone->id)
                names[nnames++] = st->chg[i].name;
        known[nz] = known_for_zone(&st->kn, zone->id, &next, kn + nkn, rows + nrows);
        nkn += known[nz].nnames;
        nrows += known[nz].nrows;
        zones[nz] =
            (struct pdns_rectify_zone){zone->id, zone->name, names + n0, nnames - n0, &known[nz]};
        nz++;
    }
    rc = pdns_rectify_zones(st->conn, st->rx, zones, nz, note_ent, st, err, errlen);
    if (rc != CSP_OK && mysql_errno(st->conn) && err_conn_lost(mysql_errno(st->conn)))
        st->lost = 1;
done:
    free(names);
    free(kn);
    free(rows);
    free(known);
    free(zones);
    return rc;
}

/* Appends "name." to changed_out. Returns 0, or -1 when memory ran out. */
static int changed_out_add(struct pdns_store *st, const char *name)
{
    size_t len = strlen(name);
    char *abs = malloc(len + 2);
    if (!abs)
        return -1;
    memcpy(abs, name, len);
    memcpy(abs + len, ".", 2);
    st->changed_out[st->nchanged_out++] = abs;
    return 0;
}

/* After commit: zone by zone (every touched zone: each changed name, ENTs included, was noted
 * with its zone by touch), its apex when its SOA was bumped and then its changed names (the apex
 * not again), absolute. note_name keeps (zone, name) pairs unique, and a name lies in one zone. */
static int changed_out_build(struct pdns_store *st, const long long *bumped, size_t nbumped)
{
    changed_out_free(st);
    st->changed_out = calloc(st->nchg + st->nzones + 1, sizeof *st->changed_out);
    st->zones_out = calloc(st->nzones + 1, sizeof *st->zones_out);
    if (!st->changed_out || !st->zones_out)
        return -1;
    int rc = 0;
    for (size_t z = 0; z < st->nzones && rc == 0; z++) {
        long long id = st->zones[z];
        const struct zone *zone = NULL;
        for (size_t b = 0; b < nbumped && !zone; b++)
            if (bumped[b] == id)
                zone = zone_by_id(st, id);
        size_t first = st->nchanged_out;
        if (zone)
            rc = changed_out_add(st, zone->name);
        for (size_t i = 0; i < st->nchg && rc == 0; i++)
            if (st->chg[i].domain_id == id && !(zone && !strcmp(st->chg[i].name, zone->name)))
                rc = changed_out_add(st, st->chg[i].name);
        size_t names = first + (zone ? 1 : 0);
        st->zones_out[st->nzones_out++] = (struct pdns_changed_zone){
            .apex = zone ? st->changed_out[first] : NULL,
            .names = (const char *const *)st->changed_out + names,
            .n = st->nchanged_out - names,
        };
    }
    return rc;
}

size_t pdns_store_changed_zones(const struct pdns_store *st, const struct pdns_changed_zone **zones)
{
    *zones = st->zones_out;
    return st->nzones_out;
}

csp_status pdns_store_commit(struct pdns_store *st, struct pdns_apply_stats *stats, char *err,
                             size_t errlen)
{
    uint32_t today = utc_today();
    unsigned bumped = 0;
    long long *did = NULL;
    struct soa *soas = NULL;
    csp_status rc = CSP_OK;

    if (!st->in_txn || !st->conn)
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "pdns_store_commit called outside a transaction: call pdns_store_begin");
    if (st->readonly) {
        pdns_store_rollback(st);
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "the store was opened read-only (a plan): nothing may be written");
    }
    /* One lock order for every instance makes deadlocks between commits rarer. */
    if (st->nzones > 1)
        qsort(st->zones, st->nzones, sizeof *st->zones, cmp_ll);
    did = malloc((st->nzones ? st->nzones : 1) * sizeof *did);
    soas = calloc(st->nzones ? st->nzones : 1, sizeof *soas);
    if (!did || !soas)
        rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory committing");
    if (rc == CSP_OK)
        rc = rectify_zones(st, err, errlen);
    for (size_t i = 0; i < st->nzones && rc == CSP_OK; i++)
        soas[i].domain_id = st->zones[i];
    if (rc == CSP_OK && st->nzones)
        rc = bump_soas(st, soas, st->nzones, today, did, &bumped, err, errlen);
    free(soas);
    if (rc == CSP_OK && mysql_commit(st->conn))
        rc = conn_fail(st, 0, err, errlen, "committing");
    if (rc != CSP_OK) {
        free(did);
        pdns_store_rollback(st);
        return rc;
    }
    st->in_txn = 0;
    /* Committed: running out of memory now only costs the report of what changed. */
    if (changed_out_build(st, did, bumped))
        log_msg(LOG_LVL_WARN, LOG_MOD, "out of memory listing the names just changed");
    free(did);
    changes_reset(st);
    if (stats)
        stats->zones_bumped += bumped;
    return CSP_OK;
}

csp_status pdns_store_apply_many_txn(struct pdns_store *st, struct pdns_vm_records *vms, size_t n,
                                     struct pdns_apply_stats *total, char *err, size_t errlen)
{
    csp_status rc = pdns_store_begin(st, err, errlen);
    if (rc == CSP_OK)
        rc = pdns_store_apply_many(st, vms, n, err, errlen);
    if (rc == CSP_OK)
        rc = pdns_store_commit(st, total, err, errlen);
    if (rc != CSP_OK)
        pdns_store_rollback(st);
    return rc;
}

csp_status pdns_store_apply_vm(struct pdns_store *st, const char *vm_id,
                               const struct dns_record *recs, size_t n,
                               struct pdns_apply_stats *stats, char *err, size_t errlen)
{
    csp_status rc = pdns_store_begin(st, err, errlen);
    if (rc == CSP_OK)
        rc = pdns_store_apply(st, vm_id, recs, n, stats, err, errlen);
    if (rc == CSP_OK)
        rc = pdns_store_commit(st, stats, err, errlen);
    return rc;
}

/* ---- plans and the resync's view of ownership ---------------------------------------------- */

/* Reads happen in a transaction of their own unless the caller has one open; *own_txn says
 * whether to end it with store_ro_end. */
static csp_status store_ro_begin(struct pdns_store *st, int *own_txn, char *err, size_t errlen)
{
    *own_txn = !st->in_txn;
    return *own_txn ? pdns_store_begin(st, err, errlen) : CSP_OK;
}

static void store_ro_end(struct pdns_store *st, int own_txn)
{
    if (own_txn)
        pdns_store_rollback(st);
}

static int change_push(struct pdns_change **v, size_t *n, size_t *cap, enum pdns_change_kind kind,
                       const char *zone, const char *name, dns_rr_type type, const char *content,
                       long long ttl)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct pdns_change *c = realloc(*v, ncap * sizeof *c);
        if (!c)
            return -1;
        *v = c;
        *cap = ncap;
    }
    struct pdns_change *c = &(*v)[(*n)++];
    memset(c, 0, sizeof *c);
    c->kind = kind;
    snprintf(c->zone, sizeof c->zone, "%s", zone ? zone : "");
    snprintf(c->rec.name, sizeof c->rec.name, "%s", name);
    snprintf(c->rec.content, sizeof c->rec.content, "%s", content);
    c->rec.type = type;
    c->rec.ttl = (int)ttl;
    return 0;
}

/* The plan replays the same decisions as an apply (batch_run without locks or writes). */
static csp_status plan_changes(const struct pdns_store *st, const struct batch *b,
                               struct pdns_change **changes, size_t *nchanges, char *err,
                               size_t errlen)
{
    const struct pdns_vm_records *V = &b->vms[0];
    const struct bvm *bv = &b->bv[0];
    size_t cap = 0;

    for (size_t j = bv->own0; j < bv->own0 + bv->nown; j++) {
        const struct bown *o = &b->own[j];
        if (!o->dropped || o->row < 0)
            continue; /* an ownership of a row deleted by hand is dropped, not a change */
        const struct brow *w = &b->rows[o->row];
        const struct zone *z = zone_by_id(st, w->domain_id);
        if (change_push(changes, nchanges, &cap, PDNS_CHANGE_REMOVE, z ? z->name : "", w->name,
                        dns_rr_type_parse(w->type), w->content, w->ttl0))
            return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory planning VM %s", V->vm_id);
        (*changes)[*nchanges - 1].shared = o->shared;
    }
    for (size_t i = 0; i < V->n; i++) {
        const struct brec *r = &b->recs[bv->rec0 + i];
        const struct dns_record *d = &V->recs[i];
        if (r->unchanged)
            continue;
        if (change_push(changes, nchanges, &cap, r->kind, r->zone ? r->zone->name : "", d->name,
                        d->type, d->content, d->ttl))
            return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory planning VM %s", V->vm_id);
        (*changes)[*nchanges - 1].shared = r->shared;
        (*changes)[*nchanges - 1].old_ttl = r->kind == PDNS_CHANGE_TTL ? (int)r->old_ttl : 0;
    }
    return CSP_OK;
}

csp_status pdns_store_plan(struct pdns_store *st, const char *vm_id, const struct dns_record *recs,
                           size_t n, struct pdns_change **changes, size_t *nchanges,
                           struct pdns_apply_stats *stats, char *err, size_t errlen)
{
    struct pdns_vm_records one = {.vm_id = vm_id, .recs = recs, .n = n};
    struct batch b;
    int own_txn = 0;
    csp_status rc;

    *changes = NULL;
    *nchanges = 0;
    rc = check_vm(vm_id, recs, n, err, errlen);
    if (rc != CSP_OK)
        return rc;
    rc = store_ro_begin(st, &own_txn, err, errlen);
    if (rc != CSP_OK)
        return rc;
    if (batch_init(&b, &one, 1, 1))
        rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory planning VM %s", vm_id);
    else
        rc = batch_run(st, &b, err, errlen);
    if (rc == CSP_OK)
        rc = plan_changes(st, &b, changes, nchanges, err, errlen);
    batch_free(&b);
    store_ro_end(st, own_txn);
    if (rc != CSP_OK) {
        if (!own_txn)
            pdns_store_rollback(st); /* as after any failed apply */
        free(*changes);
        *changes = NULL;
        *nchanges = 0;
        return rc;
    }
    if (stats)
        pdns_apply_stats_add(stats, &one.stats);
    return CSP_OK;
}

csp_status pdns_store_owners(struct pdns_store *st, struct pdns_owner **owners, size_t *n,
                             unsigned long *total, char *err, size_t errlen)
{
    static const char sql[] = "SELECT o.vm_id, COUNT(r.id) FROM cspdns_record o "
                              "LEFT JOIN records r ON r.id = o.record_id GROUP BY o.vm_id";
    struct pdns_owner *v = NULL;
    size_t cnt = 0, cap = 0;
    int own_txn = 0;
    csp_status rc;

    *owners = NULL;
    *n = 0;
    *total = 0;
    rc = store_ro_begin(st, &own_txn, err, errlen);
    if (rc != CSP_OK)
        return rc;
    if (mysql_query(st->conn, sql)) {
        rc = conn_fail(st, 0, err, errlen, "listing the VMs that own records");
        goto out;
    }
    MYSQL_RES *res = mysql_use_result(st->conn);
    if (!res) {
        rc = conn_fail(st, 0, err, errlen, "listing the VMs that own records");
        goto out;
    }
    for (MYSQL_ROW row; (row = mysql_fetch_row(res));) {
        if (!row[0] || strlen(row[0]) > VM_ID_MAX)
            continue;
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            struct pdns_owner *o = realloc(v, ncap * sizeof *o);
            if (!o) {
                rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory listing owners");
                break;
            }
            v = o;
            cap = ncap;
        }
        snprintf(v[cnt].vm_id, sizeof v[cnt].vm_id, "%s", row[0]);
        v[cnt].records = row[1] ? (unsigned)strtoul(row[1], NULL, 10) : 0;
        *total += v[cnt].records;
        cnt++;
    }
    if (rc == CSP_OK && mysql_errno(st->conn))
        rc = conn_fail(st, 0, err, errlen, "listing the VMs that own records");
    mysql_free_result(res);
out:
    store_ro_end(st, own_txn);
    if (rc != CSP_OK) {
        if (!own_txn)
            pdns_store_rollback(st);
        free(v);
        *total = 0;
        return rc;
    }
    *owners = v;
    *n = cnt;
    return CSP_OK;
}

/* ---- adopting cs-powerdns-integration's cs_mapping ---------------------------------------- */

/* The original tool wrote cs_mapping(uuid, record, ipaddress): with ipaddress NULL the VM owned
 * every row at that name (it deleted by name: its A, AAAA and PTR), with an address only the
 * group row with that content. Only the types it wrote are adopted. */
#define ADOPT_MATCH                                                                                \
    "r.name = m.record AND r.type IN ('A', 'AAAA', 'PTR') AND (m.ipaddress IS NULL OR "            \
    "m.ipaddress = '' OR (r.content = m.ipaddress AND r.type IN ('A', 'AAAA')))"
#define ADOPT_PAIRS                                                                                \
    "SELECT DISTINCT r.id AS record_id, LOWER(m.uuid) AS vm_id FROM cs_mapping m "                 \
    "JOIN records r ON " ADOPT_MATCH " WHERE m.uuid IS NOT NULL AND m.uuid <> ''"

static csp_status adopt_count(struct pdns_store *st, const char *sql, unsigned long *out, char *err,
                              size_t errlen)
{
    if (mysql_query(st->conn, sql))
        return conn_fail(st, 0, err, errlen, "reading cs_mapping");
    MYSQL_RES *res = mysql_store_result(st->conn);
    if (!res)
        return conn_fail(st, 0, err, errlen, "reading cs_mapping");
    MYSQL_ROW row = mysql_fetch_row(res);
    *out = row && row[0] ? strtoul(row[0], NULL, 10) : 0;
    mysql_free_result(res);
    return CSP_OK;
}

static csp_status adopt_exec(struct pdns_store *st, const char *sql, unsigned long *affected,
                             char *err, size_t errlen)
{
    if (mysql_query(st->conn, sql))
        return conn_fail(st, 0, err, errlen, "adopting cs_mapping");
    if (affected)
        *affected = (unsigned long)mysql_affected_rows(st->conn);
    return CSP_OK;
}

csp_status pdns_store_adopt_cs_mapping(struct pdns_store *st, int dry_run,
                                       struct pdns_adopt_stats *stats, char *err, size_t errlen)
{
    static const char *const counts[] = {
        "SELECT COUNT(*) FROM cs_mapping",
        "SELECT COUNT(DISTINCT LOWER(uuid)) FROM cs_mapping WHERE uuid IS NOT NULL AND uuid <> ''",
        "SELECT COUNT(DISTINCT x.record_id) FROM (" ADOPT_PAIRS ") x",
        "SELECT COUNT(*) FROM (" ADOPT_PAIRS ") x JOIN cspdns_record o "
        "ON o.record_id = x.record_id AND o.vm_id = x.vm_id",
        "SELECT COUNT(*) FROM (" ADOPT_PAIRS ") x",
        "SELECT COUNT(*) FROM cs_mapping m WHERE NOT EXISTS (SELECT 1 FROM records r "
        "WHERE " ADOPT_MATCH ")",
    };
    unsigned long v[6] = {0}, found = 0;
    csp_status rc;

    memset(stats, 0, sizeof *stats);
    if (!dry_run && st->readonly)
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "the store was opened read-only: use --dry-run, or open it for writing");
    rc = pdns_store_begin(st, err, errlen);
    if (rc != CSP_OK)
        return rc;
    rc = adopt_count(st,
                     "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                     "DATABASE() AND TABLE_NAME = 'cs_mapping'",
                     &found, err, errlen);
    if (rc == CSP_OK && !found)
        rc = plain_fail(CSP_PERMANENT, err, errlen,
                        "MySQL %s:%u/%s: no cs_mapping table, so nothing to adopt (it is the "
                        "table cs-powerdns-integration keeps in the PowerDNS database; check "
                        "MYSQL_PDNS_NAME)",
                        st->host, st->port, st->db);
    for (size_t i = 0; i < 6 && rc == CSP_OK; i++)
        rc = adopt_count(st, counts[i], &v[i], err, errlen);
    if (rc == CSP_OK) {
        stats->mappings = v[0];
        stats->vms = v[1];
        stats->records = v[2];
        stats->already = v[3];
        stats->adopted = v[4] - v[3];
        stats->missing = v[5];
    }
    if (rc == CSP_OK && !dry_run) {
        rc = adopt_exec(st,
                        "INSERT IGNORE INTO cspdns_record (record_id, vm_id) "
                        "SELECT record_id, vm_id FROM (" ADOPT_PAIRS ") x",
                        &stats->adopted, err, errlen);
        if (rc == CSP_OK)
            rc = adopt_exec(st,
                            "INSERT IGNORE INTO cspdns_vm (vm_id, updated_at) SELECT DISTINCT "
                            "x.vm_id, UTC_TIMESTAMP() FROM (" ADOPT_PAIRS ") x",
                            NULL, err, errlen);
        if (rc == CSP_OK && mysql_commit(st->conn))
            rc = conn_fail(st, 0, err, errlen, "committing the adoption");
        if (rc == CSP_OK)
            st->in_txn = 0;
    }
    if (rc != CSP_OK || dry_run)
        pdns_store_rollback(st);
    return rc;
}

/* ---- SOA serials --------------------------------------------------------------------------- */

static int plausible_date(uint32_t ymd)
{
    static const unsigned char mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    uint32_t y = ymd / 10000, m = ymd / 100 % 100, d = ymd % 100;
    if (m < 1 || m > 12)
        return 0;
    uint32_t last = mdays[m - 1] + (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0));
    return d >= 1 && d <= last;
}

uint32_t pdns_serial_next(uint32_t serial, uint32_t today)
{
    if (serial >= 1979010100u && serial <= 2999123199u && plausible_date(serial / 100)) {
        uint64_t dated = (uint64_t)today * 100;
        if (dated > serial && dated <= UINT32_MAX)
            return (uint32_t)dated;
    }
    return serial == UINT32_MAX ? 1 : serial + 1;
}

int pdns_soa_bump(const char *content, uint32_t today, char *out, size_t outlen)
{
    const char *start[7], *end[7];
    size_t nf = 0;
    uint64_t serial = 0;

    if (!content || !out)
        return -1;
    for (const char *p = content;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        if (nf == 7)
            return -1;
        start[nf] = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        end[nf++] = p;
    }
    if (nf != 7)
        return -1;
    /* serial refresh retry expire minimum: unsigned 32-bit numbers, as PowerDNS stores them. */
    for (size_t f = 2; f < 7; f++) {
        uint64_t v = 0;
        if (end[f] - start[f] > 10)
            return -1;
        for (const char *c = start[f]; c < end[f]; c++) {
            if (*c < '0' || *c > '9')
                return -1;
            v = v * 10 + (uint64_t)(*c - '0');
        }
        if (v > UINT32_MAX)
            return -1;
        if (f == 2)
            serial = v;
    }
    int n = snprintf(out, outlen, "%.*s%lu%s", (int)(start[2] - content), content,
                     (unsigned long)pdns_serial_next((uint32_t)serial, today), end[2]);
    return n >= 0 && (size_t)n < outlen ? 0 : -1;
}
