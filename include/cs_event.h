/* cs_event.h -- classifies one CloudStack event-bus message: which VM it concerns, if any.
 * Must not: call CloudStack or decide records; it only reads the message it is given. */
#ifndef CSPDNS_CS_EVENT_H
#define CSPDNS_CS_EVENT_H

#include <stddef.h>

#include "json.h"

enum cs_event_kind {
    CS_EVENT_IGNORED = 0, /* well-formed, but nothing that can change a VM's names or addresses */
    CS_EVENT_VM = 1,      /* the VM vm_id may have changed: reconcile it */
};

struct cs_event {
    enum cs_event_kind kind;
    char type[64];           /* event type, upper case ("VM.CREATE"); "" when none */
    char vm_id[65];          /* lower case; set when kind == CS_EVENT_VM */
    const char *why_ignored; /* static text when kind == CS_EVENT_IGNORED */
    int is_job;              /* an async-job record (else an action event) */
    const json_value *root;  /* the whole message (an object), owned by doc */
    /* The VM's state as the SUCCEEDED VM.CREATE/VM.START job returned it: current by decision 1,
     * so no API call is needed. NULL otherwise. Owned by doc or result_doc. */
    const json_value *vm;
    json_doc *doc;
    json_doc *result_doc;  /* jobResult parsed from its 4.11-4.15 string form */
    json_doc *cmdinfo_doc; /* cmdInfo parsed from its string form */
    json_doc *details_doc; /* cmdInfo.ctxDetails parsed from its string form */
};

/* Decodes payload[0..len). Returns 0 (ev->kind says what to do), or -1 when the message is
 * malformed (not JSON, not an object, a field cs-pdns reads has the wrong type, a VM id that is
 * not an id); err then says why. Always call cs_event_clear afterwards. */
int cs_event_decode(const char *payload, size_t len, struct cs_event *ev, char *err, size_t errlen);
void cs_event_clear(struct cs_event *ev);

/* Frees the parsed message and leaves kind, type, vm_id and is_job: for an event whose JSON was
 * read (root and vm become NULL). cs_event_clear is still needed afterwards. */
void cs_event_drop_docs(struct cs_event *ev);

#endif
