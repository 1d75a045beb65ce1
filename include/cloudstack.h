/* cloudstack.h -- a signed, read-only client for the CloudStack API and the lookups cs-pdns needs.
 * Must not: decide names or write DNS; never log the API key, the secret key or a signature. */
#ifndef CSPDNS_CLOUDSTACK_H
#define CSPDNS_CLOUDSTACK_H

#include <stddef.h>

#include "json.h"
#include "settings.h"
#include "status.h"
#include "textbuf.h"

struct cs_param {
    const char *name; /* send lower-case names: CloudStack sorts names case-sensitively */
    const char *value;
};

/* ---- signing (pure; unit-tested against CloudStack's own algorithm) ---- */

/* Java URLEncoder.encode(s, "UTF-8") with '+' turned into "%20": only A-Z a-z 0-9 . - * _ stay. */
int cloudstack_url_encode(textbuf *out, const char *s);

/* The string CloudStack signs: params sorted by name (byte order), "name=encode(value)" joined
 * with '&', then lower-cased as a whole. */
int cloudstack_canonical_query(const struct cs_param *params, size_t n, textbuf *out);

/* base64(HMAC-SHA1(secret, canonical query)); out must hold at least 29 bytes.
 * Returns 0, or -1 on error. */
int cloudstack_sign(const char *secret, const struct cs_param *params, size_t n, char *out,
                    size_t outlen);

/* expires value for signatureversion 3: now + seconds, "yyyy-MM-dd'T'HH:mm:ss+0000" (UTC). */
void cloudstack_expires(long seconds_ahead, char out[32]);

/* ---- the client ---- */

struct cloudstack;

/* Uses CS_ENDPOINT, CS_API_KEY, CS_SECRET_KEY, CS_TIMEOUT, CS_VERIFY_TLS, CS_CA_FILE. */
int cloudstack_new(const struct settings *s, struct cloudstack **out, char *err, size_t errlen);
void cloudstack_free(struct cloudstack *cs);

/* Bounds the next calls' total time (ms since the monotonic epoch of clock_gettime
 * CLOCK_MONOTONIC); 0 clears. A call started after the deadline fails as CSP_TRANSIENT. */
void cloudstack_set_deadline(struct cloudstack *cs, long long deadline_ms);

/* The outcome of one call. */
struct cs_reply {
    json_doc *doc;            /* the whole response body when it was JSON; owned, free with
                                 cs_reply_free */
    const json_value *result; /* the "<command lower-case>response" object inside doc, or NULL */
    int http_status;          /* 0 when no HTTP response came back */
    int errorcode;            /* CloudStack errorcode from an error body, else 0 */
    int cserrorcode;          /* CloudStack cserrorcode, else 0 */
};
void cs_reply_free(struct cs_reply *r);

/* Calls command with params (apikey, response=json, signatureversion=3, expires and signature are
 * added here). Classification:
 *   CSP_OK         HTTP 200 and a JSON body with the expected wrapper; r->result set.
 *   CSP_PERMANENT  an API error answer that retrying cannot fix (HTTP 4xx other than 401/429,
 *                  with a JSON error body); r->errorcode/cserrorcode/http_status set.
 *   CSP_TRANSIENT  connection/TLS/timeout errors, HTTP 5xx, 401 (credentials may be rotated), 429,
 *                  and any body that is not the JSON CloudStack sends.
 * err holds a one-line reason (never a key or signature) for both failures. */
csp_status cloudstack_call(struct cloudstack *cs, const char *command,
                           const struct cs_param *params, size_t n, struct cs_reply *r, char *err,
                           size_t errlen);

/* ---- lookups (each unwraps its list and returns one object, or NULL when gone) ---- */

/* The VM with this id as listVirtualMachines returns it; tries listall=true, then with
 * projectid=-1 (project VMs are hidden otherwise). A VM that no longer exists (empty answer or
 * CloudStack's 431 "entity does not exist") gives CSP_OK with *vm NULL.
 * On CSP_OK *vm (when not NULL) points into r->doc. */
csp_status cloudstack_get_vm(struct cloudstack *cs, const char *vm_id, struct cs_reply *r,
                             const json_value **vm, char *err, size_t errlen);

/* listAccounts name=<name> domainid=<domain_id> listall=true. */
csp_status cloudstack_get_account(struct cloudstack *cs, const char *name, const char *domain_id,
                                  struct cs_reply *r, const json_value **account, char *err,
                                  size_t errlen);

/* listDomains id=<domain_id> listall=true. */
csp_status cloudstack_get_domain(struct cloudstack *cs, const char *domain_id, struct cs_reply *r,
                                 const json_value **domain, char *err, size_t errlen);

/* listProjects id=<project_id> listall=true. */
csp_status cloudstack_get_project(struct cloudstack *cs, const char *project_id, struct cs_reply *r,
                                  const json_value **project, char *err, size_t errlen);

#endif
