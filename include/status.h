/* status.h -- the three outcomes every fallible I/O step reports.
 * Must not: grow into a catch-all header; it holds only this enum. */
#ifndef CSPDNS_STATUS_H
#define CSPDNS_STATUS_H

/* TRANSIENT means "the same input may succeed later" (unreachable service, timeout, 5xx, deadlock):
 * the caller retries the event. PERMANENT means retrying the same input cannot help. */
typedef enum { CSP_OK = 0, CSP_TRANSIENT = 1, CSP_PERMANENT = 2 } csp_status;

#endif
