/* pdns_store.c -- applies each VM's record set to PowerDNS's gmysql tables in one transaction,
 * tracking which rows every VM owns and bumping the SOA serial of each zone it changed.
 * Must not: touch a row it does not own, decide names, or put the password in a message. */
#include "pdns_store.h"

#include <ctype.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dns_name.h"
#include "logger.h"

#define LOG_MOD "store"
#define VM_ID_MAX 64 /* cspdns_vm.vm_id VARCHAR(64) */
/* dns_name_suffixes stops at two labels and a name of at most 253 octets has at most 127 labels,
 * so this many candidates cover any name in one round trip. */
#define ZONE_CANDIDATES 128
#define TYPE_BUFSZ 16
#define SOA_BUFSZ 1024

enum q {
    Q_LOCK_VM,
    Q_DROP_VM,
    Q_OWNED,
    Q_ZONES,
    Q_LOCK_ZONE,
    Q_FIND,
    Q_OWNERS,
    Q_OWN,
    Q_DISOWN,
    Q_INSERT,
    Q_DELETE,
    Q_SET_TTL,
    Q_SOA,
    Q_SET_SOA,
    Q_OWNED_RO,
    Q_FIND_RO,
    Q_COUNT
};

/* Q_ZONES is built by zones_sql: its placeholder count is ZONE_CANDIDATES. Q_OWNED is ordered so
 * that of duplicate owned rows the oldest is the one kept. Q_OWNERS needs no lock: it runs while
 * the records row is locked, and every change to a row's owners happens under that lock. */
static const char *const q_sql[Q_COUNT] = {
    [Q_LOCK_VM] = "INSERT INTO cspdns_vm (vm_id, updated_at) VALUES (?, UTC_TIMESTAMP()) "
                  "ON DUPLICATE KEY UPDATE updated_at = UTC_TIMESTAMP()",
    [Q_DROP_VM] = "DELETE FROM cspdns_vm WHERE vm_id = ?",
    [Q_OWNED] = "SELECT o.record_id, r.id, r.domain_id, r.name, r.type, r.content, r.ttl "
                "FROM cspdns_record o LEFT JOIN records r ON r.id = o.record_id "
                "WHERE o.vm_id = ? ORDER BY o.record_id FOR UPDATE",
    [Q_LOCK_ZONE] = "SELECT id FROM domains WHERE id = ? FOR UPDATE",
    [Q_FIND] = "SELECT id, name, content, ttl FROM records "
               "WHERE domain_id = ? AND name = ? AND type = ? AND content = ? FOR UPDATE",
    [Q_OWNERS] = "SELECT COUNT(*) FROM cspdns_record WHERE record_id = ?",
    [Q_OWN] = "INSERT INTO cspdns_record (record_id, vm_id) VALUES (?, ?)",
    [Q_DISOWN] = "DELETE FROM cspdns_record WHERE record_id = ? AND vm_id = ?",
    [Q_INSERT] = "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, "
                 "ordername, auth) VALUES (?, ?, ?, ?, ?, 0, 0, NULL, 1)",
    [Q_DELETE] = "DELETE FROM records WHERE id = ?",
    [Q_SET_TTL] = "UPDATE records SET ttl = ? WHERE id = ?",
    [Q_SOA] = "SELECT id, content FROM records WHERE domain_id = ? AND type = 'SOA' "
              "ORDER BY id FOR UPDATE",
    [Q_SET_SOA] = "UPDATE records SET content = ? WHERE id = ?",
    /* Plans read without locks: a dry run must never make the daemon wait. */
    [Q_OWNED_RO] =
        "SELECT o.record_id, r.id, r.domain_id, r.name, r.type, r.content, r.ttl, d.name "
        "FROM cspdns_record o LEFT JOIN records r ON r.id = o.record_id "
        "LEFT JOIN domains d ON d.id = r.domain_id WHERE o.vm_id = ? ORDER BY o.record_id",
    [Q_FIND_RO] = "SELECT id, name, content, ttl FROM records "
                  "WHERE domain_id = ? AND name = ? AND type = ? AND content = ?",
};

static const char *const ddl_vm =
    "CREATE TABLE IF NOT EXISTS cspdns_vm (vm_id VARCHAR(64) NOT NULL PRIMARY KEY, "
    "updated_at DATETIME NOT NULL) ENGINE=InnoDB";
static const char *const ddl_record =
    "CREATE TABLE IF NOT EXISTS cspdns_record (record_id BIGINT NOT NULL, "
    "vm_id VARCHAR(64) NOT NULL, PRIMARY KEY (record_id, vm_id), KEY vm_idx (vm_id)) ENGINE=InnoDB";

struct pdns_store {
    char *host, *db, *user, *password;
    unsigned port;
    MYSQL *conn; /* NULL while disconnected; pdns_store_begin reconnects */
    MYSQL_STMT *q[Q_COUNT];
    int in_txn;
    int lost;     /* the last error killed the connection: close it instead of rolling back */
    int readonly; /* pdns_store_open_readonly: plans only, every write refused */
    /* Domain ids whose records rows changed since begin: only their SOA is bumped at commit, so
     * an apply that changes nothing (a redelivered event) leaves every serial alone. */
    long long *zones;
    size_t nzones, zones_cap;
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

/* One row of Q_OWNED. */
struct owned {
    long long record_id;
    int present; /* the records row still exists */
    int exact;   /* name, type and content were read whole: the row can match a desired record */
    long long id, domain_id, ttl;
    char name[DNS_NAME_BUFSZ];
    char type[TYPE_BUFSZ];
    char content[DNS_NAME_BUFSZ];
    char zone[DNS_NAME_BUFSZ]; /* read by Q_OWNED_RO only */
    int claimed;               /* matched to a desired record; unclaimed rows are removed */
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
        return "; check MYSQL_PDNS_USER, MYSQL_PDNS_PASSWORD and the user's grants";
    case ER_BAD_DB_ERROR:
        return "; check MYSQL_PDNS_NAME";
    case ER_TABLEACCESS_DENIED_ERROR:
    case ER_COLUMNACCESS_DENIED_ERROR:
    case ER_SPECIFIC_ACCESS_DENIED_ERROR:
        return "; grant the user SELECT, INSERT, UPDATE, DELETE and CREATE on the database";
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
    MYSQL_BIND b[ZONE_CANDIDATES];
    unsigned long len[ZONE_CANDIDATES];
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

static void db_close(struct pdns_store *st)
{
    for (int i = 0; i < Q_COUNT; i++) {
        if (st->q[i])
            mysql_stmt_close(st->q[i]);
        st->q[i] = NULL;
    }
    if (st->conn)
        mysql_close(st->conn);
    st->conn = NULL;
    st->lost = 0;
    st->in_txn = 0;
    st->nzones = 0;
}

static int zones_sql(char *buf, size_t len)
{
    size_t off = (size_t)snprintf(buf, len, "SELECT id, name FROM domains WHERE name IN (");
    for (int i = 0; i < ZONE_CANDIDATES && off + 3 < len; i++)
        off += (size_t)snprintf(buf + off, len - off, i ? ",?" : "?");
    if (off + 2 >= len)
        return -1;
    snprintf(buf + off, len - off, ")");
    return 0;
}

static csp_status db_prepare(struct pdns_store *st, char *err, size_t errlen)
{
    char zones[64 + 2 * ZONE_CANDIDATES];
    if (zones_sql(zones, sizeof zones))
        return plain_fail(CSP_PERMANENT, err, errlen, "internal error: zone query too long");
    for (int i = 0; i < Q_COUNT; i++) {
        const char *sql = i == Q_ZONES ? zones : q_sql[i];
        st->q[i] = mysql_stmt_init(st->conn);
        if (!st->q[i])
            return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory preparing statements");
        if (mysql_stmt_prepare(st->q[i], sql, (unsigned long)strlen(sql)))
            return stmt_fail(st, (enum q)i, err, errlen, "preparing \"%.60s...\"", sql);
    }
    return CSP_OK;
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

/* A read-only store must never create cs-pdns's tables. Where they are missing (cs-pdns has not
 * written to this database yet) empty TEMPORARY tables, visible to this session only, stand in
 * for them, so a plan shows every record as new. Checked on every connect: temporary tables
 * vanish with the connection. */
static csp_status db_readonly_tables(struct pdns_store *st, int at_open, char *err, size_t errlen)
{
    static const char sql[] = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                              "TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('cspdns_vm', "
                              "'cspdns_record') AND TABLE_TYPE = 'BASE TABLE'";
    csp_status rc = at_open ? db_check_schema(st, err, errlen) : CSP_OK;
    int have_vm = 0, have_record = 0;
    if (rc != CSP_OK)
        return rc;
    if (mysql_query(st->conn, sql))
        return conn_fail(st, at_open, err, errlen, "looking for cs-pdns's tables");
    MYSQL_RES *res = mysql_store_result(st->conn);
    if (!res)
        return conn_fail(st, at_open, err, errlen, "looking for cs-pdns's tables");
    for (MYSQL_ROW row; (row = mysql_fetch_row(res));) {
        have_vm |= row[0] && !strcmp(row[0], "cspdns_vm");
        have_record |= row[0] && !strcmp(row[0], "cspdns_record");
    }
    mysql_free_result(res);
    char ddl[512];
    if (!have_vm) {
        snprintf(ddl, sizeof ddl, "CREATE TEMPORARY TABLE%s", ddl_vm + strlen("CREATE TABLE"));
        if (mysql_query(st->conn, ddl))
            return conn_fail(st, at_open, err, errlen, "creating a temporary cspdns_vm");
    }
    if (!have_record) {
        snprintf(ddl, sizeof ddl, "CREATE TEMPORARY TABLE%s", ddl_record + strlen("CREATE TABLE"));
        if (mysql_query(st->conn, ddl))
            return conn_fail(st, at_open, err, errlen, "creating a temporary cspdns_record");
    }
    return CSP_OK;
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
    if (!mysql_real_connect(st->conn, st->host, st->user, st->password, st->db, st->port, NULL,
                            0)) {
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
        rc = db_check_schema(st, err, errlen);
        if (rc != CSP_OK)
            goto fail;
        if (mysql_query(st->conn, ddl_vm)) {
            rc = conn_fail(st, at_open, err, errlen, "creating table cspdns_vm");
            goto fail;
        }
        if (mysql_query(st->conn, ddl_record)) {
            rc = conn_fail(st, at_open, err, errlen, "creating table cspdns_record");
            goto fail;
        }
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
    if (!st->host || !st->db || !st->user || !st->password) {
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
    free(st->zones);
    free(st);
}

/* ---- transactions -------------------------------------------------------------------------- */

csp_status pdns_store_begin(struct pdns_store *st, char *err, size_t errlen)
{
    if (st->in_txn)
        pdns_store_rollback(st);
    if (st->lost)
        db_close(st);
    for (;;) {
        int fresh = !st->conn;
        if (fresh) {
            csp_status rc = db_connect(st, 0, err, errlen);
            if (rc != CSP_OK)
                return rc;
            log_msg(LOG_LVL_INFO, LOG_MOD, "reconnected to MySQL %s:%u/%s", st->host, st->port,
                    st->db);
        }
        if (mysql_query(st->conn, "START TRANSACTION") == 0)
            break;
        csp_status rc = conn_fail(st, 0, err, errlen, "starting a transaction");
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
    st->nzones = 0;
    return CSP_OK;
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
    st->nzones = 0;
}

static int touch_zone(struct pdns_store *st, long long domain_id)
{
    if (domain_id < 0)
        return 0;
    for (size_t i = 0; i < st->nzones; i++)
        if (st->zones[i] == domain_id)
            return 0;
    if (st->nzones == st->zones_cap) {
        size_t cap = st->zones_cap ? st->zones_cap * 2 : 16;
        long long *z = realloc(st->zones, cap * sizeof *z);
        if (!z)
            return -1;
        st->zones = z;
        st->zones_cap = cap;
    }
    st->zones[st->nzones++] = domain_id;
    return 0;
}

static csp_status touch(struct pdns_store *st, long long domain_id, char *err, size_t errlen)
{
    if (touch_zone(st, domain_id))
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory noting a changed zone");
    return CSP_OK;
}

/* ---- apply --------------------------------------------------------------------------------- */

/* The longest zone in `domains` that holds name: *domain_id, or -1 when there is none. */
static csp_status find_zone(struct pdns_store *st, const char *name, long long *domain_id,
                            char *zone, char *err, size_t errlen)
{
    const char *cand[ZONE_CANDIDATES];
    struct param p[ZONE_CANDIDATES];
    char names[ZONE_CANDIDATES][DNS_NAME_BUFSZ];
    const char *zp[ZONE_CANDIDATES];
    long long ids[ZONE_CANDIDATES];
    size_t nz = 0, nc = dns_name_suffixes(name, cand, ZONE_CANDIDATES);
    MYSQL_BIND res[2];
    struct col cid, cname;
    char buf[DNS_NAME_BUFSZ];
    csp_status rc;
    int more;

    *domain_id = -1;
    if (nc == 0)
        return CSP_OK;
    for (size_t i = 0; i < ZONE_CANDIDATES; i++)
        p[i] = i < nc ? P_S(cand[i]) : (struct param){.kind = P_NULL};
    if (q_exec(st, Q_ZONES, p, ZONE_CANDIDATES))
        return stmt_fail(st, Q_ZONES, err, errlen, "looking up the zone of %s", name);
    col_int(&res[0], &cid);
    col_str(&res[1], &cname, buf, sizeof buf);
    if (q_results(st, Q_ZONES, res)) {
        rc = stmt_fail(st, Q_ZONES, err, errlen, "looking up the zone of %s", name);
        q_done(st, Q_ZONES, rc);
        return rc;
    }
    while ((more = q_next(st, Q_ZONES)) == 1) {
        if (cid.null || !col_text(&cname) || nz == ZONE_CANDIDATES)
            continue;
        /* The collation is case-insensitive, so a hand-made upper-case zone name matches too. */
        for (char *c = buf; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        memcpy(names[nz], buf, sizeof buf);
        zp[nz] = names[nz];
        ids[nz++] = cid.i;
    }
    rc = more < 0 ? stmt_fail(st, Q_ZONES, err, errlen, "looking up the zone of %s", name) : CSP_OK;
    q_done(st, Q_ZONES, rc);
    if (rc == CSP_OK) {
        int k = dns_zone_match(name, zp, nz);
        if (k >= 0)
            *domain_id = ids[k];
        if (k >= 0 && zone)
            memcpy(zone, names[k], DNS_NAME_BUFSZ);
    }
    return rc;
}

/* q is Q_OWNED (locking, for apply) or Q_OWNED_RO (plans; also reads the zone name). */
static csp_status read_owned(struct pdns_store *st, enum q q, const char *vm_id, struct owned **out,
                             size_t *nout, char *err, size_t errlen)
{
    MYSQL_BIND res[8];
    struct col c[8];
    struct owned row, *own = NULL;
    size_t n = 0, cap = 0;
    csp_status rc = CSP_OK;
    int more;

    *out = NULL;
    *nout = 0;
    if (q_exec(st, q, (struct param[]){P_S(vm_id)}, 1))
        return stmt_fail(st, q, err, errlen, "reading the records VM %s owns", vm_id);
    col_int(&res[0], &c[0]);
    col_int(&res[1], &c[1]);
    col_int(&res[2], &c[2]);
    col_str(&res[3], &c[3], row.name, sizeof row.name);
    col_str(&res[4], &c[4], row.type, sizeof row.type);
    col_str(&res[5], &c[5], row.content, sizeof row.content);
    col_int(&res[6], &c[6]);
    if (q == Q_OWNED_RO)
        col_str(&res[7], &c[7], row.zone, sizeof row.zone);
    if (q_results(st, q, res)) {
        rc = stmt_fail(st, q, err, errlen, "reading the records VM %s owns", vm_id);
        goto out;
    }
    while ((more = q_next(st, q)) == 1) {
        int whole = col_text(&c[3]);
        whole &= col_text(&c[4]);
        whole &= col_text(&c[5]);
        if (q == Q_OWNED_RO)
            col_text(&c[7]);
        else
            row.zone[0] = '\0';
        row.record_id = c[0].i;
        row.present = !c[1].null;
        row.id = c[1].i;
        row.domain_id = c[2].null ? -1 : c[2].i;
        row.ttl = c[6].null ? -1 : c[6].i;
        row.exact = whole;
        row.claimed = 0;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct owned *o = realloc(own, ncap * sizeof *o);
            if (!o) {
                rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory reading VM %s", vm_id);
                goto out;
            }
            own = o;
            cap = ncap;
        }
        own[n++] = row;
    }
    if (more < 0)
        rc = stmt_fail(st, q, err, errlen, "reading the records VM %s owns", vm_id);
out:
    q_done(st, q, rc);
    if (rc != CSP_OK) {
        free(own);
        return rc;
    }
    *out = own;
    *nout = n;
    return CSP_OK;
}

static csp_status count_owners(struct pdns_store *st, long long record_id, long long *count,
                               char *err, size_t errlen)
{
    MYSQL_BIND res[1];
    struct col c;
    csp_status rc = CSP_OK;
    int more;

    if (q_exec(st, Q_OWNERS, (struct param[]){P_I(record_id)}, 1))
        return stmt_fail(st, Q_OWNERS, err, errlen, "counting the owners of record %lld",
                         record_id);
    col_int(&res[0], &c);
    if (q_results(st, Q_OWNERS, res) || (more = q_next(st, Q_OWNERS)) < 0)
        rc = stmt_fail(st, Q_OWNERS, err, errlen, "counting the owners of record %lld", record_id);
    else
        *count = more == 1 && !c.null ? c.i : 0;
    q_done(st, Q_OWNERS, rc);
    return rc;
}

/* Drops vm_id's ownership of o, and the row itself once nobody owns it any more. */
static csp_status drop_owned(struct pdns_store *st, const char *vm_id, const struct owned *o,
                             char *err, size_t errlen)
{
    long long owners = 0;
    csp_status rc;

    if (q_exec(st, Q_DISOWN, (struct param[]){P_I(o->record_id), P_S(vm_id)}, 2))
        return stmt_fail(st, Q_DISOWN, err, errlen, "dropping VM %s's ownership of record %lld",
                         vm_id, o->record_id);
    if (!o->present)
        return CSP_OK;
    rc = count_owners(st, o->id, &owners, err, errlen);
    if (rc != CSP_OK || owners > 0)
        return rc;
    if (q_exec(st, Q_DELETE, (struct param[]){P_I(o->id)}, 1))
        return stmt_fail(st, Q_DELETE, err, errlen, "deleting record %lld (%s %s %s) of VM %s",
                         o->id, o->name, o->type, o->content, vm_id);
    return touch(st, o->domain_id, err, errlen);
}

static int owned_by_vm(const struct owned *own, size_t nown, long long record_id)
{
    for (size_t i = 0; i < nown; i++)
        if (own[i].record_id == record_id)
            return 1;
    return 0;
}

/* A desired record vm_id does not own yet: co-own an identical row another VM owns, leave an
 * identical hand-made row alone, or insert a new row. *kept is set when vm_id owns it after. */
static csp_status add_record(struct pdns_store *st, const char *vm_id, const struct dns_record *r,
                             const char *type, long long domain_id, const struct owned *own,
                             size_t nown, struct pdns_apply_stats *sum, int *kept, char *err,
                             size_t errlen)
{
    struct param p[5] = {P_I(domain_id), P_S(r->name), P_S(type), P_S(r->content), P_I(r->ttl)};
    MYSQL_BIND res[4];
    struct col c[4];
    char name[DNS_NAME_BUFSZ], content[DNS_NAME_BUFSZ];
    long long cand_id[16], cand_ttl[16];
    int cand_exact[16];
    size_t ncand = 0;
    long long coown = -1, coown_ttl = 0, owners;
    int handmade = 0, more;
    csp_status rc = CSP_OK;

    *kept = 0;
    if (q_exec(st, Q_FIND, p, 4))
        return stmt_fail(st, Q_FIND, err, errlen, "looking for %s %s %s", r->name, type,
                         r->content);
    col_int(&res[0], &c[0]);
    col_str(&res[1], &c[1], name, sizeof name);
    col_str(&res[2], &c[2], content, sizeof content);
    col_int(&res[3], &c[3]);
    if (q_results(st, Q_FIND, res)) {
        rc = stmt_fail(st, Q_FIND, err, errlen, "looking for %s %s %s", r->name, type, r->content);
        q_done(st, Q_FIND, rc);
        return rc;
    }
    /* The rows found compare equal under the case-insensitive collation; only a byte-exact one
     * is co-owned, so later applies do not see it as a different record. */
    while ((more = q_next(st, Q_FIND)) == 1) {
        int whole = col_text(&c[1]);
        whole &= col_text(&c[2]);
        if (owned_by_vm(own, nown, c[0].i) || ncand == sizeof cand_id / sizeof cand_id[0])
            continue;
        cand_id[ncand] = c[0].i;
        cand_ttl[ncand] = c[3].null ? -1 : c[3].i;
        cand_exact[ncand++] = whole && !strcmp(name, r->name) && !strcmp(content, r->content);
    }
    if (more < 0)
        rc = stmt_fail(st, Q_FIND, err, errlen, "looking for %s %s %s", r->name, type, r->content);
    q_done(st, Q_FIND, rc);
    if (rc != CSP_OK)
        return rc;

    for (size_t i = 0; i < ncand; i++) {
        rc = count_owners(st, cand_id[i], &owners, err, errlen);
        if (rc != CSP_OK)
            return rc;
        if (owners == 0) {
            handmade = 1;
        } else if (cand_exact[i] && coown < 0) {
            coown = cand_id[i];
            coown_ttl = cand_ttl[i];
        }
    }

    if (coown >= 0) {
        if (q_exec(st, Q_OWN, (struct param[]){P_I(coown), P_S(vm_id)}, 2))
            return stmt_fail(st, Q_OWN, err, errlen, "recording VM %s as co-owner of %s %s %s",
                             vm_id, r->name, type, r->content);
        if (coown_ttl != r->ttl) {
            if (q_exec(st, Q_SET_TTL, (struct param[]){P_I(r->ttl), P_I(coown)}, 2))
                return stmt_fail(st, Q_SET_TTL, err, errlen, "setting the TTL of %s %s %s", r->name,
                                 type, r->content);
            rc = touch(st, domain_id, err, errlen);
            if (rc != CSP_OK)
                return rc;
        }
        sum->added++;
        *kept = 1;
        return CSP_OK;
    }
    if (handmade) {
        log_msg(LOG_LVL_INFO, LOG_MOD,
                "vm %s: %s %s %s already exists and cs-pdns does not own it; left as it is", vm_id,
                r->name, type, r->content);
        sum->foreign++;
        return CSP_OK;
    }
    if (q_exec(st, Q_INSERT, p, 5))
        return stmt_fail(st, Q_INSERT, err, errlen, "inserting %s %s %s for VM %s", r->name, type,
                         r->content, vm_id);
    long long id = (long long)mysql_stmt_insert_id(st->q[Q_INSERT]);
    if (q_exec(st, Q_OWN, (struct param[]){P_I(id), P_S(vm_id)}, 2))
        return stmt_fail(st, Q_OWN, err, errlen, "recording VM %s as owner of %s %s %s", vm_id,
                         r->name, type, r->content);
    sum->added++;
    *kept = 1;
    return touch(st, domain_id, err, errlen);
}

static int cmp_id(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Locks (the domains row of) every zone of the desired records, in id order, before any
 * records row is locked. Two VMs adding the same record are serialised this way, so the second
 * finds the first's row and co-owns it instead of inserting a duplicate; taking these locks
 * first keeps one lock order (VM, zones, records, SOA) and so avoids most deadlocks. */
static csp_status lock_zones(struct pdns_store *st, const long long *dom, size_t n, char *err,
                             size_t errlen)
{
    long long *ids = malloc((n ? n : 1) * sizeof *ids);
    size_t k = 0;
    csp_status rc = CSP_OK;

    if (!ids)
        return plain_fail(CSP_TRANSIENT, err, errlen, "out of memory locking zones");
    for (size_t i = 0; i < n; i++)
        if (dom[i] >= 0)
            ids[k++] = dom[i];
    qsort(ids, k, sizeof *ids, cmp_id);
    for (size_t i = 0; i < k && rc == CSP_OK; i++) {
        MYSQL_BIND res[1];
        struct col c;
        if (i > 0 && ids[i] == ids[i - 1])
            continue;
        if (q_exec(st, Q_LOCK_ZONE, (struct param[]){P_I(ids[i])}, 1)) {
            rc = stmt_fail(st, Q_LOCK_ZONE, err, errlen, "locking zone id %lld", ids[i]);
            break;
        }
        col_int(&res[0], &c);
        if (q_results(st, Q_LOCK_ZONE, res) || q_next(st, Q_LOCK_ZONE) < 0)
            rc = stmt_fail(st, Q_LOCK_ZONE, err, errlen, "locking zone id %lld", ids[i]);
        q_done(st, Q_LOCK_ZONE, rc);
    }
    free(ids);
    return rc;
}

static int owned_matches(const struct owned *o, long long domain_id, const struct dns_record *r,
                         const char *type)
{
    return o->present && o->exact && !o->claimed && o->domain_id == domain_id &&
           !strcmp(o->name, r->name) && !strcmp(o->type, type) && !strcmp(o->content, r->content);
}

static csp_status apply_vm(struct pdns_store *st, const char *vm_id, const struct dns_record *recs,
                           size_t n, struct pdns_apply_stats *sum, char *err, size_t errlen)
{
    struct owned *own = NULL;
    size_t nown = 0, kept = 0;
    long long *dom = calloc(n ? n : 1, sizeof *dom);
    long *match = calloc(n ? n : 1, sizeof *match);
    csp_status rc = CSP_OK;

    if (!dom || !match) {
        rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory applying VM %s", vm_id);
        goto out;
    }
    /* Serialises every change to this VM across instances until commit. */
    if (q_exec(st, Q_LOCK_VM, (struct param[]){P_S(vm_id)}, 1)) {
        rc = stmt_fail(st, Q_LOCK_VM, err, errlen, "locking VM %s", vm_id);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        match[i] = -1;
        rc = find_zone(st, recs[i].name, &dom[i], NULL, err, errlen);
        if (rc != CSP_OK)
            goto out;
        if (dom[i] < 0) {
            log_msg(LOG_LVL_WARN, LOG_MOD, "vm %s: no zone in domains holds %s; %s %s %s skipped",
                    vm_id, recs[i].name, recs[i].name, dns_rr_type_name(recs[i].type),
                    recs[i].content);
            sum->no_zone++;
        }
    }
    rc = lock_zones(st, dom, n, err, errlen);
    if (rc == CSP_OK)
        rc = read_owned(st, Q_OWNED, vm_id, &own, &nown, err, errlen);
    if (rc != CSP_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const char *type = dns_rr_type_name(recs[i].type);
        for (size_t j = 0; dom[i] >= 0 && j < nown; j++) {
            if (owned_matches(&own[j], dom[i], &recs[i], type)) {
                own[j].claimed = 1;
                match[i] = (long)j;
                break;
            }
        }
    }

    /* Unclaimed: no longer wanted, a duplicate of a claimed row, or an ownership whose row was
     * deleted by hand (only the ownership is dropped then). */
    for (size_t j = 0; j < nown; j++) {
        if (own[j].claimed)
            continue;
        if (!own[j].present)
            log_msg(LOG_LVL_WARN, LOG_MOD,
                    "vm %s: owned record %lld was deleted outside cs-pdns; forgetting it", vm_id,
                    own[j].record_id);
        rc = drop_owned(st, vm_id, &own[j], err, errlen);
        if (rc != CSP_OK)
            goto out;
        if (own[j].present)
            sum->removed++;
    }

    for (size_t i = 0; i < n; i++) {
        const char *type = dns_rr_type_name(recs[i].type);
        if (dom[i] < 0)
            continue;
        if (match[i] < 0) {
            int k = 0;
            rc = add_record(st, vm_id, &recs[i], type, dom[i], own, nown, sum, &k, err, errlen);
            if (rc != CSP_OK)
                goto out;
            kept += (size_t)k;
            continue;
        }
        const struct owned *o = &own[match[i]];
        kept++;
        if (o->ttl == recs[i].ttl) {
            sum->unchanged++;
            continue;
        }
        if (q_exec(st, Q_SET_TTL, (struct param[]){P_I(recs[i].ttl), P_I(o->id)}, 2)) {
            rc = stmt_fail(st, Q_SET_TTL, err, errlen, "setting the TTL of %s %s %s", o->name,
                           o->type, o->content);
            goto out;
        }
        rc = touch(st, o->domain_id, err, errlen);
        if (rc != CSP_OK)
            goto out;
        sum->updated++;
    }

    if (kept == 0 && q_exec(st, Q_DROP_VM, (struct param[]){P_S(vm_id)}, 1))
        rc = stmt_fail(st, Q_DROP_VM, err, errlen, "forgetting VM %s", vm_id);
out:
    free(own);
    free(dom);
    free(match);
    return rc;
}

static int type_known(dns_rr_type t)
{
    const char *name = dns_rr_type_name(t);
    return name && dns_rr_type_parse(name) == t;
}

csp_status pdns_store_apply(struct pdns_store *st, const char *vm_id, const struct dns_record *recs,
                            size_t n, struct pdns_apply_stats *stats, char *err, size_t errlen)
{
    struct pdns_apply_stats sum = {0};
    csp_status rc;

    if (!st->in_txn || !st->conn)
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "pdns_store_apply called outside a transaction: call pdns_store_begin");
    if (st->readonly) {
        pdns_store_rollback(st);
        return plain_fail(CSP_PERMANENT, err, errlen,
                          "the store was opened read-only (a plan): nothing may be written");
    }
    if (!vm_id || !*vm_id || strlen(vm_id) > VM_ID_MAX) {
        rc = plain_fail(CSP_PERMANENT, err, errlen, "VM id \"%.80s\" is empty or longer than %d",
                        vm_id ? vm_id : "", VM_ID_MAX);
    } else if (n > 0 && !recs) {
        rc = plain_fail(CSP_PERMANENT, err, errlen, "VM %s: %zu records but no array", vm_id, n);
    } else {
        rc = CSP_OK;
        for (size_t i = 0; i < n && rc == CSP_OK; i++)
            if (!type_known(recs[i].type))
                rc = plain_fail(CSP_PERMANENT, err, errlen, "VM %s: record %s has type %d", vm_id,
                                recs[i].name, (int)recs[i].type);
        if (rc == CSP_OK)
            rc = apply_vm(st, vm_id, recs, n, &sum, err, errlen);
    }
    if (rc != CSP_OK) {
        pdns_store_rollback(st);
        return rc;
    }
    if (stats) {
        stats->added += sum.added;
        stats->removed += sum.removed;
        stats->updated += sum.updated;
        stats->unchanged += sum.unchanged;
        stats->no_zone += sum.no_zone;
        stats->foreign += sum.foreign;
    }
    return CSP_OK;
}

/* ---- commit -------------------------------------------------------------------------------- */

static uint32_t utc_today(void)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    return (uint32_t)((tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday);
}

static csp_status bump_soa(struct pdns_store *st, long long domain_id, uint32_t today,
                           unsigned *bumped, char *err, size_t errlen)
{
    MYSQL_BIND res[2];
    struct col cid, ctext;
    char buf[SOA_BUFSZ], soa[SOA_BUFSZ], next[SOA_BUFSZ];
    long long id = -1;
    unsigned rows = 0;
    int whole = 0, more;
    csp_status rc = CSP_OK;

    if (q_exec(st, Q_SOA, (struct param[]){P_I(domain_id)}, 1))
        return stmt_fail(st, Q_SOA, err, errlen, "locking the SOA of zone id %lld", domain_id);
    col_int(&res[0], &cid);
    col_str(&res[1], &ctext, buf, sizeof buf);
    if (q_results(st, Q_SOA, res)) {
        rc = stmt_fail(st, Q_SOA, err, errlen, "locking the SOA of zone id %lld", domain_id);
        q_done(st, Q_SOA, rc);
        return rc;
    }
    while ((more = q_next(st, Q_SOA)) == 1) {
        if (rows++ > 0)
            continue;
        id = cid.i;
        whole = col_text(&ctext);
        memcpy(soa, buf, sizeof soa);
    }
    if (more < 0)
        rc = stmt_fail(st, Q_SOA, err, errlen, "locking the SOA of zone id %lld", domain_id);
    q_done(st, Q_SOA, rc);
    if (rc != CSP_OK)
        return rc;

    if (rows == 0) {
        log_msg(LOG_LVL_WARN, LOG_MOD, "zone id %lld has no SOA record; serial not bumped",
                domain_id);
        return CSP_OK;
    }
    if (rows > 1)
        log_msg(LOG_LVL_WARN, LOG_MOD, "zone id %lld has %u SOA records; bumping record %lld",
                domain_id, rows, id);
    if (!whole || pdns_soa_bump(soa, today, next, sizeof next) != 0) {
        log_msg(LOG_LVL_WARN, LOG_MOD,
                "zone id %lld: SOA content \"%.200s\" is not \"mname rname serial refresh retry "
                "expire minimum\"; serial not bumped",
                domain_id, soa);
        return CSP_OK;
    }
    if (q_exec(st, Q_SET_SOA, (struct param[]){P_S(next), P_I(id)}, 2))
        return stmt_fail(st, Q_SET_SOA, err, errlen, "bumping the SOA serial of zone id %lld",
                         domain_id);
    (*bumped)++;
    return CSP_OK;
}

csp_status pdns_store_commit(struct pdns_store *st, struct pdns_apply_stats *stats, char *err,
                             size_t errlen)
{
    uint32_t today = utc_today();
    unsigned bumped = 0;
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
        qsort(st->zones, st->nzones, sizeof *st->zones, cmp_id);
    for (size_t i = 0; i < st->nzones && rc == CSP_OK; i++)
        rc = bump_soa(st, st->zones[i], today, &bumped, err, errlen);
    if (rc == CSP_OK && mysql_commit(st->conn))
        rc = conn_fail(st, 0, err, errlen, "committing");
    if (rc != CSP_OK) {
        pdns_store_rollback(st);
        return rc;
    }
    st->in_txn = 0;
    st->nzones = 0;
    if (stats)
        stats->zones_bumped += bumped;
    return CSP_OK;
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

/* add_record's decision for a desired record vm_id does not own yet, read without locks:
 * co-own (ADD, shared), hand-made (FOREIGN) or a new row (ADD). */
static csp_status plan_add(struct pdns_store *st, const struct dns_record *r, const char *type,
                           long long domain_id, const struct owned *own, size_t nown,
                           enum pdns_change_kind *kind, int *shared, char *err, size_t errlen)
{
    struct param p[4] = {P_I(domain_id), P_S(r->name), P_S(type), P_S(r->content)};
    MYSQL_BIND res[4];
    struct col c[4];
    char name[DNS_NAME_BUFSZ], content[DNS_NAME_BUFSZ];
    long long cand_id[16];
    int cand_exact[16], handmade = 0, coown = 0, more;
    size_t ncand = 0;
    csp_status rc = CSP_OK;

    *kind = PDNS_CHANGE_ADD;
    *shared = 0;
    if (q_exec(st, Q_FIND_RO, p, 4))
        return stmt_fail(st, Q_FIND_RO, err, errlen, "looking for %s %s %s", r->name, type,
                         r->content);
    col_int(&res[0], &c[0]);
    col_str(&res[1], &c[1], name, sizeof name);
    col_str(&res[2], &c[2], content, sizeof content);
    col_int(&res[3], &c[3]);
    if (q_results(st, Q_FIND_RO, res)) {
        rc = stmt_fail(st, Q_FIND_RO, err, errlen, "looking for %s %s %s", r->name, type,
                       r->content);
        q_done(st, Q_FIND_RO, rc);
        return rc;
    }
    while ((more = q_next(st, Q_FIND_RO)) == 1) {
        int whole = col_text(&c[1]);
        whole &= col_text(&c[2]);
        if (owned_by_vm(own, nown, c[0].i) || ncand == sizeof cand_id / sizeof cand_id[0])
            continue;
        cand_id[ncand] = c[0].i;
        cand_exact[ncand++] = whole && !strcmp(name, r->name) && !strcmp(content, r->content);
    }
    if (more < 0)
        rc = stmt_fail(st, Q_FIND_RO, err, errlen, "looking for %s %s %s", r->name, type,
                       r->content);
    q_done(st, Q_FIND_RO, rc);
    for (size_t i = 0; i < ncand && rc == CSP_OK; i++) {
        long long owners = 0;
        rc = count_owners(st, cand_id[i], &owners, err, errlen);
        if (owners == 0)
            handmade = 1;
        else if (cand_exact[i])
            coown = 1;
    }
    if (coown)
        *shared = 1;
    else if (handmade)
        *kind = PDNS_CHANGE_FOREIGN;
    return rc;
}

static csp_status plan_vm(struct pdns_store *st, const char *vm_id, const struct dns_record *recs,
                          size_t n, struct pdns_change **changes, size_t *nchanges,
                          struct pdns_apply_stats *sum, char *err, size_t errlen)
{
    struct owned *own = NULL;
    size_t nown = 0, cap = 0;
    long long *dom = calloc(n ? n : 1, sizeof *dom);
    long *match = calloc(n ? n : 1, sizeof *match);
    char(*zone)[DNS_NAME_BUFSZ] = calloc(n ? n : 1, sizeof *zone);
    csp_status rc = CSP_OK;

    if (!dom || !match || !zone) {
        rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory planning VM %s", vm_id);
        goto out;
    }
    for (size_t i = 0; i < n && rc == CSP_OK; i++) {
        match[i] = -1;
        rc = find_zone(st, recs[i].name, &dom[i], zone[i], err, errlen);
    }
    if (rc == CSP_OK)
        rc = read_owned(st, Q_OWNED_RO, vm_id, &own, &nown, err, errlen);
    if (rc != CSP_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const char *type = dns_rr_type_name(recs[i].type);
        for (size_t j = 0; dom[i] >= 0 && j < nown; j++) {
            if (owned_matches(&own[j], dom[i], &recs[i], type)) {
                own[j].claimed = 1;
                match[i] = (long)j;
                break;
            }
        }
    }
    for (size_t j = 0; j < nown && rc == CSP_OK; j++) {
        long long owners = 0;
        if (own[j].claimed || !own[j].present)
            continue; /* an ownership of a row deleted by hand is dropped, not a change */
        rc = count_owners(st, own[j].id, &owners, err, errlen);
        if (rc != CSP_OK)
            break;
        if (change_push(changes, nchanges, &cap, PDNS_CHANGE_REMOVE, own[j].zone, own[j].name,
                        dns_rr_type_parse(own[j].type), own[j].content, own[j].ttl)) {
            rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory planning VM %s", vm_id);
            break;
        }
        (*changes)[*nchanges - 1].shared = owners > 1;
        sum->removed++;
    }
    for (size_t i = 0; i < n && rc == CSP_OK; i++) {
        const struct dns_record *r = &recs[i];
        enum pdns_change_kind kind = PDNS_CHANGE_ADD;
        int shared = 0, old_ttl = 0;
        if (dom[i] < 0) {
            kind = PDNS_CHANGE_NO_ZONE;
            zone[i][0] = '\0';
            sum->no_zone++;
        } else if (match[i] >= 0) {
            if (own[match[i]].ttl == r->ttl) {
                sum->unchanged++;
                continue;
            }
            kind = PDNS_CHANGE_TTL;
            old_ttl = (int)own[match[i]].ttl;
            sum->updated++;
        } else {
            rc = plan_add(st, r, dns_rr_type_name(r->type), dom[i], own, nown, &kind, &shared, err,
                          errlen);
            if (rc != CSP_OK)
                break;
            if (kind == PDNS_CHANGE_FOREIGN)
                sum->foreign++;
            else
                sum->added++;
        }
        if (change_push(changes, nchanges, &cap, kind, zone[i], r->name, r->type, r->content,
                        r->ttl)) {
            rc = plain_fail(CSP_TRANSIENT, err, errlen, "out of memory planning VM %s", vm_id);
            break;
        }
        (*changes)[*nchanges - 1].shared = shared;
        (*changes)[*nchanges - 1].old_ttl = old_ttl;
    }
out:
    free(own);
    free(dom);
    free(match);
    free(zone);
    return rc;
}

csp_status pdns_store_plan(struct pdns_store *st, const char *vm_id, const struct dns_record *recs,
                           size_t n, struct pdns_change **changes, size_t *nchanges,
                           struct pdns_apply_stats *stats, char *err, size_t errlen)
{
    struct pdns_apply_stats sum = {0};
    int own_txn = 0;
    csp_status rc;

    *changes = NULL;
    *nchanges = 0;
    if (!vm_id || !*vm_id || strlen(vm_id) > VM_ID_MAX)
        return plain_fail(CSP_PERMANENT, err, errlen, "VM id \"%.80s\" is empty or longer than %d",
                          vm_id ? vm_id : "", VM_ID_MAX);
    if (n > 0 && !recs)
        return plain_fail(CSP_PERMANENT, err, errlen, "VM %s: %zu records but no array", vm_id, n);
    for (size_t i = 0; i < n; i++)
        if (!type_known(recs[i].type))
            return plain_fail(CSP_PERMANENT, err, errlen, "VM %s: record %s has type %d", vm_id,
                              recs[i].name, (int)recs[i].type);
    rc = store_ro_begin(st, &own_txn, err, errlen);
    if (rc == CSP_OK)
        rc = plan_vm(st, vm_id, recs, n, changes, nchanges, &sum, err, errlen);
    store_ro_end(st, own_txn);
    if (rc != CSP_OK) {
        if (!own_txn)
            pdns_store_rollback(st); /* as after any failed apply */
        free(*changes);
        *changes = NULL;
        *nchanges = 0;
        return rc;
    }
    if (stats) {
        stats->added += sum.added;
        stats->removed += sum.removed;
        stats->updated += sum.updated;
        stats->unchanged += sum.unchanged;
        stats->no_zone += sum.no_zone;
        stats->foreign += sum.foreign;
    }
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
