/* cs_event.c -- understands CloudStack's action-event and async-job records (4.11 to 4.20 shapes).
 * Must not: call the API or trust an action event's "Completed" as success; it only names the VM.
 */
#include "cs_event.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Jobs whose SUCCEEDED record names a VM whose addresses may have changed. */
static const char *const job_types[] = {
    "VM.CREATE",
    "VM.START",
    "NIC.CREATE",
    "NIC.DELETE",
    "NIC.UPDATE",
    "NIC.SECONDARY.IP.ASSIGN",
    "NIC.SECONDARY.IP.UNASSIGN",
    NULL,
};
/* Action events whose Completed record names such a VM. Completed does not mean success (a
 * failed destroy is Completed too); the VM's current state decides. */
static const char *const action_types[] = {
    "VM.DESTROY",
    "VM.EXPUNGE",
    "VM.RECOVER",
    "VM.UPDATE",
    "NIC.CREATE",
    "NIC.DELETE",
    "NIC.UPDATE",
    "NIC.SECONDARY.IP.ASSIGN",
    "NIC.SECONDARY.IP.UNASSIGN",
    NULL,
};

static int in_list(const char *type, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(type, *list) == 0)
            return 1;
    return 0;
}

static int malformed(char *err, size_t errlen, const char *fmt, const char *what)
{
    snprintf(err, errlen, fmt, what);
    return -1;
}

/* Reads member key as a string: absent -> *out NULL and 0; present with another type -> -1. */
static int opt_string(const json_value *obj, const char *key, const char **out, char *err,
                      size_t errlen)
{
    const json_value *v = json_get(obj, key);
    *out = NULL;
    if (!v || v->type == JSON_NULL)
        return 0;
    if (v->type != JSON_STRING)
        return malformed(err, errlen, "field \"%s\" is not a string", key);
    /* Read as C strings, "id\u0000junk" would silently become "id". */
    if (strlen(v->u.s) != v->len)
        return malformed(err, errlen, "field \"%s\" holds a NUL character", key);
    *out = v->u.s;
    return 0;
}

/* Whether a job's VM names its owner the way CloudStack's own responses do: an account name and
 * ids (letters, digits, hyphens) that are non-empty strings. Owner lookups of anything else fail
 * the same way forever, so such a result is not taken as the VM's state: the VM is read from the
 * API instead, and the event never blocks its partition. */
static int owner_refs_usable(const json_value *vm)
{
    static const char *const keys[] = {"account", "domainid", "projectid"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const json_value *v = json_get(vm, keys[i]);
        if (!v || v->type == JSON_NULL)
            continue;
        size_t max = i == 0 ? 255 : 64; /* CloudStack's account name and uuid columns */
        if (v->type != JSON_STRING || v->len == 0 || v->len > max || strlen(v->u.s) != v->len)
            return 0;
        for (size_t j = 0; i > 0 && j < v->len; j++)
            if (!isalnum((unsigned char)v->u.s[j]) && v->u.s[j] != '-')
                return 0;
    }
    return 1;
}

static int set_vm_id(struct cs_event *ev, const char *id, char *err, size_t errlen)
{
    size_t n = strlen(id);
    if (n == 0 || n >= sizeof ev->vm_id)
        return malformed(err, errlen, "VM id \"%.80s\" is not a CloudStack id", id);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!isalnum(c) && c != '-')
            return malformed(err, errlen, "VM id \"%.80s\" is not a CloudStack id", id);
        ev->vm_id[i] = (char)tolower(c);
    }
    ev->vm_id[n] = '\0';
    ev->kind = CS_EVENT_VM;
    return 0;
}

static void set_type(struct cs_event *ev, const char *type)
{
    size_t i = 0;
    for (; type[i] && i + 1 < sizeof ev->type; i++)
        ev->type[i] = (char)toupper((unsigned char)type[i]);
    ev->type[i] = '\0';
}

/* 4.11-4.15 put jobResult and cmdInfo on the bus as strings; 4.16+ as objects. A string jobResult
 * is "<response class>/<object name>/<json>" and the JSON itself may contain '/', so only the
 * first two separators count. */
static int embedded_json(const json_value *v, int has_prefix, json_doc **doc,
                         const json_value **out, const char *field, char *err, size_t errlen)
{
    *out = NULL;
    if (!v || v->type == JSON_NULL)
        return 0;
    if (v->type == JSON_OBJECT) {
        *out = v;
        return 0;
    }
    if (v->type != JSON_STRING)
        return malformed(err, errlen, "field \"%s\" is neither an object nor a string", field);
    const char *text = v->u.s;
    size_t len = v->len;
    if (has_prefix) {
        for (int sep = 0; sep < 2; sep++) {
            const char *slash = memchr(text, '/', len);
            if (!slash)
                return malformed(err, errlen, "field \"%s\" is not \"<class>/<object>/<json>\"",
                                 field);
            len -= (size_t)(slash + 1 - text);
            text = slash + 1;
        }
    }
    char why[200];
    if (json_parse(text, len, doc, why, sizeof why) != 0) {
        snprintf(err, errlen, "field \"%s\" holds invalid JSON: %s", field, why);
        return -1;
    }
    *out = json_root(*doc);
    return 0;
}

/* Whether a job result is a UserVmResponse: 4.16+ says so in "class"/"object", 4.11-4.15 in the
 * "<class>/<object>/" prefix of the string form (raw, or NULL). */
static int is_vm_response(const json_value *result, const char *raw)
{
    const char *cls = json_get_str(result, "class"), *obj = json_get_str(result, "object");
    if ((cls && strstr(cls, "UserVmResponse")) || (obj && strcmp(obj, "virtualmachine") == 0))
        return 1;
    if (!raw)
        return 0;
    const char *slash = strchr(raw, '/');
    if (!slash)
        return 0;
    size_t cls_len = (size_t)(slash - raw);
    return (cls_len >= 14 && memcmp(slash - 14, "UserVmResponse", 14) == 0) ||
           strncmp(slash + 1, "virtualmachine/", 15) == 0;
}

static int decode_job(struct cs_event *ev, char *err, size_t errlen)
{
    const json_value *root = ev->root;
    const char *type, *status, *instance_type, *instance_uuid;
    if (opt_string(root, "commandEventType", &type, err, errlen) ||
        opt_string(root, "status", &status, err, errlen) ||
        opt_string(root, "instanceType", &instance_type, err, errlen) ||
        opt_string(root, "instanceUuid", &instance_uuid, err, errlen))
        return -1;
    ev->is_job = 1;
    if (!type || !status)
        return malformed(err, errlen, "async-job record without %s",
                         !type ? "commandEventType" : "status");
    set_type(ev, type);
    if (!in_list(ev->type, job_types)) {
        ev->why_ignored = "job type not handled";
        return 0;
    }
    if (strcasecmp(status, "SUCCEEDED") != 0) {
        ev->why_ignored = "job not SUCCEEDED";
        return 0;
    }

    const json_value *jr = json_get(root, "jobResult"), *result, *cmd, *details;
    if (embedded_json(jr, 1, &ev->result_doc, &result, "jobResult", err, errlen) ||
        embedded_json(json_get(root, "cmdInfo"), 0, &ev->cmdinfo_doc, &cmd, "cmdInfo", err, errlen))
        return -1;
    if (result && result->type != JSON_OBJECT)
        return malformed(err, errlen, "%s is not a JSON object", "jobResult");
    if (cmd && cmd->type != JSON_OBJECT)
        return malformed(err, errlen, "%s is not a JSON object", "cmdInfo");
    details = NULL;
    if (cmd && embedded_json(json_get(cmd, "ctxDetails"), 0, &ev->details_doc, &details,
                             "cmdInfo.ctxDetails", err, errlen))
        return -1;

    int vm_result =
        result && is_vm_response(result, jr && jr->type == JSON_STRING ? jr->u.s : NULL);
    const char *id = NULL;
    if (vm_result && opt_string(result, "id", &id, err, errlen))
        return -1;
    if (!id && instance_type && strcasecmp(instance_type, "VirtualMachine") == 0 && instance_uuid &&
        *instance_uuid)
        id = instance_uuid;
    if (!id && result && opt_string(result, "virtualmachineid", &id, err, errlen))
        return -1;
    if (!id && cmd && opt_string(cmd, "virtualmachineid", &id, err, errlen))
        return -1;
    if (!id && details &&
        opt_string(details, "interface com.cloud.vm.VirtualMachine", &id, err, errlen))
        return -1;
    if (!id) {
        ev->why_ignored = "no VM id in the job record";
        return 0;
    }
    if (set_vm_id(ev, id, err, errlen))
        return -1;
    /* NIC jobs answer with a VM response trimmed to its NICs (no group, no template), so only
     * create/start results are a whole, current VM. */
    if (vm_result && (strcmp(ev->type, "VM.CREATE") == 0 || strcmp(ev->type, "VM.START") == 0)) {
        const char *state;
        if (opt_string(result, "state", &state, err, errlen))
            return -1;
        if (state && json_get(result, "nic") && owner_refs_usable(result))
            ev->vm = result;
    }
    return 0;
}

static int decode_action(struct cs_event *ev, char *err, size_t errlen)
{
    const json_value *root = ev->root;
    const char *type, *status, *entity, *entity_uuid, *vm;
    if (opt_string(root, "event", &type, err, errlen) ||
        opt_string(root, "status", &status, err, errlen) ||
        opt_string(root, "entity", &entity, err, errlen) ||
        opt_string(root, "entityuuid", &entity_uuid, err, errlen) ||
        opt_string(root, "VirtualMachine", &vm, err, errlen))
        return -1;
    if (!type || !status)
        return malformed(err, errlen, "action event without %s", !type ? "event" : "status");
    set_type(ev, type);
    if (!in_list(ev->type, action_types)) {
        ev->why_ignored = "event type not handled";
        return 0;
    }
    if (strcasecmp(status, "Completed") != 0) {
        ev->why_ignored = "action not Completed";
        return 0;
    }
    if (!vm && entity && entity_uuid &&
        (strcmp(entity, "com.cloud.vm.VirtualMachine") == 0 ||
         strcmp(entity, "VirtualMachine") == 0))
        vm = entity_uuid;
    if (!vm) {
        ev->why_ignored = "no VM id in the action event";
        return 0;
    }
    return set_vm_id(ev, vm, err, errlen);
}

int cs_event_decode(const char *payload, size_t len, struct cs_event *ev, char *err, size_t errlen)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = CS_EVENT_IGNORED;
    if (len == 0)
        return malformed(err, errlen, "%s", "empty message");
    char why[200];
    if (json_parse(payload, len, &ev->doc, why, sizeof why) != 0) {
        snprintf(err, errlen, "not JSON: %s", why);
        return -1;
    }
    ev->root = json_root(ev->doc);
    if (ev->root->type != JSON_OBJECT)
        return malformed(err, errlen, "%s", "not a JSON object");

    /* The bus carries no envelope: the record's keys tell its category. */
    if (json_get(ev->root, "jobId"))
        return decode_job(ev, err, errlen);
    const json_value *ev_type = json_get(ev->root, "event"),
                     *ev_status = json_get(ev->root, "status");
    if (ev_type && ev_status && !json_get(ev->root, "resource"))
        return decode_action(ev, err, errlen);
    ev->why_ignored = "not an action event or async-job record";
    return 0;
}

void cs_event_drop_docs(struct cs_event *ev)
{
    json_doc_free(ev->details_doc);
    json_doc_free(ev->cmdinfo_doc);
    json_doc_free(ev->result_doc);
    json_doc_free(ev->doc);
    ev->details_doc = ev->cmdinfo_doc = ev->result_doc = ev->doc = NULL;
    ev->root = ev->vm = NULL;
}

void cs_event_clear(struct cs_event *ev)
{
    cs_event_drop_docs(ev);
    memset(ev, 0, sizeof *ev);
}
