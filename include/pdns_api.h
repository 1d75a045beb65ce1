/* pdns_api.h -- the PowerDNS HTTP API client: purges the server's caches for names cs-pdns just
 * changed. Must not: write zones or records, or log the API key. */
#ifndef CSPDNS_PDNS_API_H
#define CSPDNS_PDNS_API_H

#include <stddef.h>

#include "settings.h"
#include "status.h"

struct pdns_api;

/* From PDNS_API_URL, PDNS_API_KEY, PDNS_SERVER_ID (no network yet). *out is NULL when
 * PDNS_API_URL is unset (purging off). Returns CSP_OK or CSP_PERMANENT with err. */
csp_status pdns_api_new(const struct settings *s, struct pdns_api **out, char *err, size_t errlen);
void pdns_api_free(struct pdns_api *api);

/* Purges the packet, query and negative caches for each of names[0..n) (absolute, trailing
 * dot; PUT /api/v1/servers/<id>/cache/flush?domain=<name>), reusing one connection. Returns
 * CSP_OK when every purge succeeded; otherwise the status of the worst failure with err (the
 * records are committed either way: a failed purge only delays visibility until the cache
 * entries expire, so callers log it and go on). *purged counts the names purged. */
csp_status pdns_api_purge(struct pdns_api *api, const char *const *names, size_t n, size_t *purged,
                          char *err, size_t errlen);

#endif
