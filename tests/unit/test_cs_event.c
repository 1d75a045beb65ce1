/* test_cs_event.c -- the event decoder against CloudStack's real record shapes and broken input.
 * Must not: need services; fixtures come from tests/fixtures/events. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cs_event.h"
#include "unit.h"

static int decode_file(const char *name, struct cs_event *ev, char *err, size_t errlen)
{
    size_t len;
    char *text = unit_fixture("events", name, &len);
    int rc = cs_event_decode(text, len, ev, err, errlen);
    free(text);
    return rc;
}

static int decode_str(const char *s, struct cs_event *ev, char *err, size_t errlen)
{
    return cs_event_decode(s, strlen(s), ev, err, errlen);
}

static void test_job_create_411(void)
{
    struct cs_event ev;
    char err[256] = "";
    CHECK_INT(decode_file("job_create_4.11.json", &ev, err, sizeof err), 0);
    CHECK_INT(ev.kind, CS_EVENT_VM);
    CHECK_STR(ev.type, "VM.CREATE");
    CHECK_STR(ev.vm_id, "9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41");
    CHECK(ev.is_job);
    /* The string-encoded jobResult is a whole VM: used as current state, no API call. */
    CHECK(ev.vm != NULL);
    CHECK_STR(json_get_str(ev.vm, "name"), "web-01");
    CHECK_STR(json_get_str(ev.vm, "account"), "acme");
    const json_value *nic = json_at(json_get(ev.vm, "nic"), 0);
    CHECK_STR(json_get_str(nic, "isolationuri"), "vlan://1203");
    cs_event_clear(&ev);
}

static void test_job_start_416(void)
{
    struct cs_event ev;
    char err[256] = "";
    CHECK_INT(decode_file("job_start_4.16.json", &ev, err, sizeof err), 0);
    CHECK_INT(ev.kind, CS_EVENT_VM);
    CHECK_STR(ev.type, "VM.START");
    CHECK(ev.vm != NULL);
    CHECK_STR(json_get_str(ev.vm, "state"), "Running");
    CHECK_INT(json_get(ev.vm, "cpunumber")->type, JSON_INT);
    cs_event_clear(&ev);

    CHECK_INT(decode_file("job_start_failed_4.16.json", &ev, err, sizeof err), 0);
    CHECK_INT(ev.kind, CS_EVENT_IGNORED);
    cs_event_clear(&ev);
}

static void test_actions(void)
{
    struct cs_event ev;
    char err[256] = "";
    CHECK_INT(decode_file("action_destroy_completed_4.11.json", &ev, err, sizeof err), 0);
    CHECK_INT(ev.kind, CS_EVENT_VM);
    CHECK_STR(ev.type, "VM.DESTROY");
    CHECK_STR(ev.vm_id, "9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41");
    CHECK(ev.vm == NULL);
    cs_event_clear(&ev);

    /* A failed destroy is published as Completed too: it still triggers a look at the VM. */
    CHECK_INT(decode_file("action_destroy_failed_4.17.json", &ev, err, sizeof err), 0);
    CHECK_INT(ev.kind, CS_EVENT_VM);
    cs_event_clear(&ev);

    const char *ignored[] = {"action_destroy_scheduled_4.11.json", "usage_vm_destroy.json",
                             "state_vm_stopped.json", "contrail_vm_start.json"};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        CHECK_INT(decode_file(ignored[i], &ev, err, sizeof err), 0);
        CHECK_INT(ev.kind, CS_EVENT_IGNORED);
        CHECK(ev.why_ignored != NULL);
        cs_event_clear(&ev);
    }

    /* Entity only (no first-class key), short 4.17 entity name, mixed-case event type. */
    CHECK_INT(decode_str("{\"event\":\"vm.expunge\",\"status\":\"completed\",\"entity\":"
                         "\"VirtualMachine\",\"entityuuid\":\"AB-12\"}",
                         &ev, err, sizeof err),
              0);
    CHECK_INT(ev.kind, CS_EVENT_VM);
    CHECK_STR(ev.type, "VM.EXPUNGE");
    CHECK_STR(ev.vm_id, "ab-12");
    cs_event_clear(&ev);

    /* VM.RECOVER has no entity mapping; the VirtualMachine key carries the id. */
    CHECK_INT(decode_str("{\"event\":\"VM.RECOVER\",\"status\":\"Completed\",\"VirtualMachine\":"
                         "\"0f4a7c2e-9d1b-4e6a-8c3f-2b5d8a1e6f90\"}",
                         &ev, err, sizeof err),
              0);
    CHECK_INT(ev.kind, CS_EVENT_VM);
    cs_event_clear(&ev);

    /* Other entities are not VMs. */
    CHECK_INT(decode_str("{\"event\":\"VM.DESTROY\",\"status\":\"Completed\",\"entity\":"
                         "\"Network\",\"entityuuid\":\"ab\"}",
                         &ev, err, sizeof err),
              0);
    CHECK_INT(ev.kind, CS_EVENT_IGNORED);
    cs_event_clear(&ev);
}

static void test_jobs_without_vm_result(void)
{
    struct cs_event ev;
    char err[256] = "";
    /* addIpToNic answers with a NicSecondaryIpResponse that names the VM. */
    CHECK_INT(
        decode_str("{\"jobId\":\"j\",\"commandEventType\":\"NIC.SECONDARY.IP.ASSIGN\","
                   "\"status\":\"SUCCEEDED\",\"instanceType\":\"None\",\"instanceUuid\":\"\","
                   "\"jobResult\":\"org.apache.cloudstack.api.response.NicSecondaryIpResponse/"
                   "nicsecondaryip/{\\\"id\\\":\\\"s1\\\",\\\"ipaddress\\\":\\\"10.1.1.9\\\","
                   "\\\"virtualmachineid\\\":\\\"VM-1\\\"}\"}",
                   &ev, err, sizeof err),
        0);
    CHECK_INT(ev.kind, CS_EVENT_VM);
    CHECK_STR(ev.vm_id, "vm-1");
    CHECK(ev.vm == NULL);
    cs_event_clear(&ev);

    /* A NIC job's VM response is trimmed to NICs: it must not be taken as the whole VM. */
    CHECK_INT(
        decode_str("{\"jobId\":\"j\",\"commandEventType\":\"NIC.CREATE\",\"status\":"
                   "\"SUCCEEDED\",\"jobResult\":{\"id\":\"vm-2\",\"state\":\"Running\","
                   "\"nic\":[],\"class\":\"org.apache.cloudstack.api.response.UserVmResponse\","
                   "\"object\":\"virtualmachine\"}}",
                   &ev, err, sizeof err),
        0);
    CHECK_INT(ev.kind, CS_EVENT_VM);
    CHECK_STR(ev.vm_id, "vm-2");
    CHECK(ev.vm == NULL);
    cs_event_clear(&ev);

    /* An expunging destroy's result has no id: the instance uuid names the VM. */
    CHECK_INT(decode_str("{\"jobId\":\"j\",\"commandEventType\":\"VM.START\",\"status\":"
                         "\"SUCCEEDED\",\"instanceType\":\"VirtualMachine\",\"instanceUuid\":"
                         "\"vm-3\",\"jobResult\":\"org.apache.cloudstack.api.response."
                         "UserVmResponse/null/{\\\"nic\\\":[]}\"}",
                         &ev, err, sizeof err),
              0);
    CHECK_INT(ev.kind, CS_EVENT_VM);
    CHECK_STR(ev.vm_id, "vm-3");
    CHECK(ev.vm == NULL);
    cs_event_clear(&ev);

    /* cmdInfo as a 4.11 string with ctxDetails as a string inside it. */
    CHECK_INT(decode_str("{\"jobId\":\"j\",\"commandEventType\":\"NIC.DELETE\",\"status\":"
                         "\"SUCCEEDED\",\"cmdInfo\":\"{\\\"ctxDetails\\\":\\\"{\\\\\\\"interface "
                         "com.cloud.vm.VirtualMachine\\\\\\\":\\\\\\\"vm-4\\\\\\\"}\\\"}\"}",
                         &ev, err, sizeof err),
              0);
    CHECK_INT(ev.kind, CS_EVENT_VM);
    CHECK_STR(ev.vm_id, "vm-4");
    cs_event_clear(&ev);

    CHECK_INT(decode_str("{\"jobId\":\"j\",\"commandEventType\":\"VM.STOP\",\"status\":"
                         "\"SUCCEEDED\",\"instanceUuid\":\"vm-5\"}",
                         &ev, err, sizeof err),
              0);
    CHECK_INT(ev.kind, CS_EVENT_IGNORED);
    cs_event_clear(&ev);
}

static void test_malformed(void)
{
    const char *bad[] = {
        "",
        "not json",
        "{",
        "[]",
        "\"a string\"",
        "{\"jobId\":\"j\"}",
        "{\"jobId\":\"j\",\"commandEventType\":5,\"status\":\"SUCCEEDED\"}",
        "{\"jobId\":\"j\",\"commandEventType\":\"VM.CREATE\",\"status\":\"SUCCEEDED\","
        "\"jobResult\":\"no-slashes\"}",
        "{\"jobId\":\"j\",\"commandEventType\":\"VM.CREATE\",\"status\":\"SUCCEEDED\","
        "\"jobResult\":\"a/b/{broken\"}",
        "{\"jobId\":\"j\",\"commandEventType\":\"VM.CREATE\",\"status\":\"SUCCEEDED\","
        "\"jobResult\":42}",
        "{\"jobId\":\"j\",\"commandEventType\":\"VM.CREATE\",\"status\":\"SUCCEEDED\","
        "\"jobResult\":{\"id\":7,\"class\":\"UserVmResponse\"}}",
        "{\"event\":\"VM.DESTROY\",\"status\":\"Completed\",\"VirtualMachine\":\"../../etc\"}",
        "{\"event\":\"VM.DESTROY\",\"status\":\"Completed\",\"VirtualMachine\":[1]}",
        "{\"event\":null,\"status\":\"Completed\"}",
        "{\"event\":\"VM.DESTROY\",\"status\":7}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cs_event ev;
        char err[256] = "";
        int rc = decode_str(bad[i], &ev, err, sizeof err);
        if (rc != -1)
            fprintf(stderr, "accepted malformed input %zu: %s\n", i, bad[i]);
        CHECK_INT(rc, -1);
        CHECK(err[0] != '\0');
        cs_event_clear(&ev);
    }
    /* NUL bytes inside the payload are not JSON. */
    struct cs_event ev;
    char err[256];
    CHECK_INT(cs_event_decode("{\"a\":1}\0garbage", 15, &ev, err, sizeof err), -1);
    cs_event_clear(&ev);
}

int main(void)
{
    test_job_create_411();
    test_job_start_416();
    test_actions();
    test_jobs_without_vm_result();
    test_malformed();
    return unit_done("cs_event");
}
