/* pdns_rectify.h -- keeps DNSSEC fields of signed zones right after cs-pdns changes names:
 * ordername, auth and empty non-terminals, as `pdnsutil rectify-zone` leaves them.
 * Must not: open or end transactions, or touch rows outside the names it is given and their
 * ancestors up to the zone apex. */
#ifndef CSPDNS_PDNS_RECTIFY_H
#define CSPDNS_PDNS_RECTIFY_H

#include <mysql.h>
#include <stddef.h>

#include "status.h"

/* Told each name (no trailing dot) whose empty non-terminal row pdns_rectify_names inserted or
 * deleted in zone domain_id, once its writes went through: such a name turns from NXDOMAIN to
 * NODATA or back, so a cache holding its old answer must forget it. Returns 0, or -1 when memory
 * ran out. */
typedef int (*pdns_rectify_ent_fn)(void *ud, long long domain_id, const char *name);

/* The statements pdns_rectify_names prepared on one connection, kept for its later calls:
 * preparing them anew per batch cost a round trip and a parse each. Bound to that connection:
 * clear them before it closes, or once it was lost. */
struct pdns_rectify_stmts;

/* Returns 0 and *out, or -1 when memory ran out. */
int pdns_rectify_stmts_new(struct pdns_rectify_stmts **out);
/* Closes every kept statement; the object stays usable for the next connection. */
void pdns_rectify_stmts_clear(struct pdns_rectify_stmts *s);
void pdns_rectify_stmts_free(struct pdns_rectify_stmts *s);

/* Inside the caller's open transaction on db: when zone (domains.id domain_id, apex zone
 * without trailing dot, lowercase) is DNSSEC-signed (active keys in cryptokeys, or PRESIGNED),
 * sets ordername and auth on every records row at names[0..n) (names inside the zone, no
 * trailing dot, lowercase) and creates or deletes the empty non-terminals between each name
 * and the apex, for NSEC or NSEC3 (narrow or not) per the zone's NSEC3PARAM/NSEC3NARROW
 * metadata. For an unsigned zone it does what rectify-zone does there too. on_ent (may be NULL)
 * hears of every empty non-terminal it created or removed. stmts (may be NULL: every statement
 * is then prepared and closed within the call) keeps statements prepared on db. Returns CSP_OK,
 * CSP_TRANSIENT (connection/deadlock, or on_ent out of memory: the caller rolls back and retries)
 * or CSP_PERMANENT. */
csp_status pdns_rectify_names(MYSQL *db, struct pdns_rectify_stmts *stmts, long long domain_id,
                              const char *zone, const char *const *names, size_t n,
                              pdns_rectify_ent_fn on_ent, void *ud, char *err, size_t errlen);

/* A records row at a name the caller has just read or written (enabled rows only). */
struct pdns_rectify_row {
    const char *name; /* as in names[], no trailing dot */
    long long id;
    const char *type;      /* NULL: an empty non-terminal row */
    const char *ordername; /* NULL when NULL */
    int auth;
};

/* Every enabled row, as the open transaction sees it now, at each of names[0..nnames): the
 * rectify takes them instead of reading those names again. A name without rows is listed with
 * none. */
struct pdns_rectify_known {
    const char *const *names;
    size_t nnames;
    const struct pdns_rectify_row *rows;
    size_t nrows;
};

/* One zone's share of pdns_rectify_zones: pdns_rectify_names's arguments, and optionally the
 * rows at some of the names, which the rectify then takes from known instead of reading them. */
struct pdns_rectify_zone {
    long long domain_id;
    const char *zone;
    const char *const *names;
    size_t n;
    const struct pdns_rectify_known *known; /* NULL: reads every name */
};

/* pdns_rectify_names for each of zones[0..nzones) in turn, stopping at the first that fails;
 * the zones' keys and metadata are read with one statement for them all. */
csp_status pdns_rectify_zones(MYSQL *db, struct pdns_rectify_stmts *stmts,
                              const struct pdns_rectify_zone *zones, size_t nzones,
                              pdns_rectify_ent_fn on_ent, void *ud, char *err, size_t errlen);

#endif
