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

/* Told about every request that reached the network: its command, the HTTP status (0 when no
 * answer came) and how long it took. For metrics; it must not call back into the client. */
typedef void (*cloudstack_observer)(void *ud, const char *command, int http_status, double secs);
void cloudstack_set_observer(struct cloudstack *cs, cloudstack_observer fn, void *ud);

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

/* ---- listing every VM (resync) ---- */

/* Walks listVirtualMachines listall=true page by page (page/pagesize), then again with
 * projectid=-1 (project VMs are hidden otherwise), and hands out each VM once: newer CloudStack
 * answers projectid=-1 with every VM, so the second pass is deduplicated by id.
 * The listing is complete only when every page came back, each pass's count stayed the same
 * from page to page, and each pass held exactly count VMs. Anything else (a failed page, VMs
 * created or removed while paging, fewer VMs than announced, a malformed answer) marks it
 * incomplete for good: its VMs are still usable, its absences are not. */
struct cs_vm_listing;

/* page_size: 1..500 (CloudStack refuses more than its default.page.size, 500 by default). */
int cloudstack_listing_new(struct cloudstack *cs, unsigned page_size, struct cs_vm_listing **out,
                           char *err, size_t errlen);
void cloudstack_listing_free(struct cs_vm_listing *l);

/* Fetches the next page. On CSP_OK *vms[0..*n) are that page's VMs not handed out before (they
 * point into the page, valid until the next call or free) and *done is set once both passes
 * ended (then *n is 0). On failure err says which page failed and why; the listing is marked
 * incomplete and the next call moves on (the rest of the pass, or the next pass), so the caller
 * may go on to reconcile what it can. After three failed pages in a row the listing ends. */
csp_status cloudstack_listing_next(struct cs_vm_listing *l, const json_value *const **vms,
                                   size_t *n, int *done, char *err, size_t errlen);

/* 1 when the listing ended complete; else 0 with why (one line) saying what went wrong. */
int cloudstack_listing_complete(const struct cs_vm_listing *l, char *why, size_t whylen);

/* 1 when the VM with this id (any case) was handed out by this listing. */
int cloudstack_listing_has(const struct cs_vm_listing *l, const char *vm_id);

struct cs_listing_progress {
    int pass;              /* 1: listall=true, 2: projectid=-1, 3: done */
    unsigned pages;        /* pages fetched so far, both passes */
    unsigned pass_page;    /* pages fetched in the current pass */
    unsigned pass_pages;   /* pages the current pass needs, from its count (0: not known yet) */
    size_t vms;            /* distinct VMs handed out so far */
    long long announced;   /* the first pass's count (-1 until known) */
    unsigned failed_pages; /* pages that failed (the listing is then incomplete) */
};
void cloudstack_listing_progress(const struct cs_vm_listing *l, struct cs_listing_progress *out);

#endif
