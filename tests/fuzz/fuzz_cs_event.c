/* fuzz_cs_event.c -- libFuzzer target: the event decoder (both CloudStack shapes, jobResult and
 * cmdInfo in their string and object forms, ctxDetails). Must not: call anything with I/O; the
 * decoder only reads the message. */
#include <ctype.h>
#include <string.h>

#include "cs_event.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cs_event ev;
    char err[512];
    int rc = cs_event_decode((const char *)data, size, &ev, err, sizeof err);
    if (rc != 0) {
        FUZZ_ASSERT(rc == -1);
        FUZZ_ASSERT(strlen(err) > 0);
    } else if (ev.kind == CS_EVENT_VM) {
        /* The id is what the pipeline puts into API calls, SQL parameters and log lines. */
        size_t n = strlen(ev.vm_id);
        FUZZ_ASSERT(n > 0 && n < sizeof ev.vm_id);
        for (size_t i = 0; i < n; i++)
            FUZZ_ASSERT(islower((unsigned char)ev.vm_id[i]) ||
                        isdigit((unsigned char)ev.vm_id[i]) || ev.vm_id[i] == '-');
        FUZZ_ASSERT(ev.root != NULL && ev.root->type == JSON_OBJECT);
        if (ev.vm)
            FUZZ_ASSERT(ev.vm->type == JSON_OBJECT);
    } else {
        FUZZ_ASSERT(ev.kind == CS_EVENT_IGNORED);
        FUZZ_ASSERT(ev.why_ignored != NULL);
        FUZZ_ASSERT(ev.vm == NULL);
    }
    FUZZ_ASSERT(strlen(ev.type) < sizeof ev.type);
    cs_event_clear(&ev);
    return 0;
}
