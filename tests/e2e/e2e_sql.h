/* e2e_sql.h -- what the C end-to-end tests share: stopping with a message, and SQL through the
 * test's own autocommit connection. Must not: keep state or know any test's tables. */
#ifndef CSPDNS_E2E_SQL_H
#define CSPDNS_E2E_SQL_H

#include <mysql.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* A failed setup makes every later check meaningless: the test stops at once. */
__attribute__((format(printf, 1, 2), noreturn)) static inline void e2e_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "setup failed, stopping: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* Runs a statement and drops its result. Other tests may share the database, so a deadlock is
 * theirs as much as ours: it is retried. Returns 0 or the MariaDB error number. */
__attribute__((format(printf, 2, 3))) static inline unsigned e2e_sql_try(MYSQL *db, const char *fmt,
                                                                         ...)
{
    char q[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    for (int attempt = 0;; attempt++) {
        if (mysql_query(db, q) == 0) {
            mysql_free_result(mysql_store_result(db));
            return 0;
        }
        if (mysql_errno(db) != 1213 || attempt == 5)
            return mysql_errno(db);
    }
}

/* The first column of the first row into out; returns 0 when there is no row or it is NULL
 * (out is then ""), 1 otherwise. A failing query stops the test. */
__attribute__((format(printf, 4, 5))) static inline int
e2e_sql_first(MYSQL *db, char *out, size_t len, const char *fmt, ...)
{
    char q[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    if (mysql_query(db, q))
        e2e_die("SQL failed: %s: %s", q, mysql_error(db));
    MYSQL_RES *res = mysql_store_result(db);
    if (!res)
        e2e_die("SQL returned no result: %s", q);
    MYSQL_ROW row = mysql_fetch_row(res);
    int found = row && row[0];
    snprintf(out, len, "%s", found ? row[0] : "");
    mysql_free_result(res);
    return found;
}

/* e2e_sql_first as a number; -1 when there is no row or it is NULL. */
__attribute__((format(printf, 2, 3))) static inline long long e2e_sql_int(MYSQL *db,
                                                                          const char *fmt, ...)
{
    char q[2048], v[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    return e2e_sql_first(db, v, sizeof v, "%s", q) ? strtoll(v, NULL, 10) : -1;
}

/* e2e_sql_try, stopping the test with the error and the line that ran the statement. */
#define E2E_SQL(db, ...)                                                                           \
    do {                                                                                           \
        if (e2e_sql_try((db), __VA_ARGS__))                                                        \
            e2e_die("%s:%d: SQL failed: %s", __FILE__, __LINE__, mysql_error(db));                 \
    } while (0)

#endif
