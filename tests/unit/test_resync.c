/* test_resync.c -- the resync's pure parts: the deletion guard's arithmetic, durations, and the
 * plan's text and JSON. Must not: need CloudStack or a database (tests/e2e/test_resync.py does). */
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "resync.h"
#include "unit.h"

static void test_guard(void)
{
    CHECK(resync_guard_allows(0, 0, 20, 0));    /* nothing to remove */
    CHECK(resync_guard_allows(0, 100, 0, 0));   /* nothing to remove, even at 0 % */
    CHECK(resync_guard_allows(20, 100, 20, 0)); /* exactly the limit is allowed */
    CHECK(!resync_guard_allows(21, 100, 20, 0));
    CHECK(!resync_guard_allows(1, 100, 0, 0));
    CHECK(resync_guard_allows(1, 100, 0, 1)); /* forced */
    CHECK(resync_guard_allows(100, 100, 100, 0));
    CHECK(!resync_guard_allows(1, 0, 100, 0)); /* more than all of nothing */
    CHECK(!resync_guard_allows(3, 14, 20, 0)); /* 21.4 % */
    CHECK(resync_guard_allows(1, 5, 20, 0));
    /* No overflow with large counts. */
    CHECK(resync_guard_allows(800000000UL, 4000000000UL, 20, 0));
    CHECK(!resync_guard_allows(800000001UL, 4000000000UL, 20, 0));
}

static void test_duration(void)
{
    char out[16];
    resync_format_duration(0, out);
    CHECK_STR(out, "0s");
    resync_format_duration(59.4, out);
    CHECK_STR(out, "59s");
    resync_format_duration(185, out);
    CHECK_STR(out, "3m05s");
    resync_format_duration(7265, out);
    CHECK_STR(out, "2h01m");
    resync_format_duration(1e12, out);
    CHECK_STR(out, "99h59m");
    resync_format_duration(-5, out);
    CHECK_STR(out, "0s");
}

static struct pdns_change change(enum pdns_change_kind kind, const char *zone, const char *name,
                                 dns_rr_type type, const char *content, int ttl)
{
    struct pdns_change c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    snprintf(c.zone, sizeof c.zone, "%s", zone);
    snprintf(c.rec.name, sizeof c.rec.name, "%s", name);
    snprintf(c.rec.content, sizeof c.rec.content, "%s", content);
    c.rec.type = type;
    c.rec.ttl = ttl;
    return c;
}

static void test_plan_text(void)
{
    struct resync_plan *pl;
    textbuf out = TEXTBUF_INIT;
    CHECK_INT(resync_plan_new(&pl), 0);
    CHECK_INT(resync_plan_write(pl, 0, &out), 0);
    CHECK_STR(textbuf_str(&out), "no changes\n");
    textbuf_reset(&out);

    struct pdns_change a[3] = {
        change(PDNS_CHANGE_ADD, "b.example", "web.b.example", DNS_RR_A, "10.0.0.2", 60),
        change(PDNS_CHANGE_NO_ZONE, "", "x.nowhere.example", DNS_RR_A, "10.0.0.2", 60),
        change(PDNS_CHANGE_ADD, "0.10.in-addr.arpa", "2.0.0.10.in-addr.arpa", DNS_RR_PTR,
               "web.b.example", 60),
    };
    struct pdns_change b[3] = {
        change(PDNS_CHANGE_REMOVE, "b.example", "old.b.example", DNS_RR_AAAA, "2001:db8::1", 60),
        change(PDNS_CHANGE_TTL, "a.example", "db.a.example", DNS_RR_A, "10.0.0.3", 300),
        change(PDNS_CHANGE_FOREIGN, "a.example", "db.a.example", DNS_RR_A, "10.0.0.9", 300),
    };
    b[0].shared = 1;
    b[1].old_ttl = 60;
    CHECK_INT(resync_plan_add(pl, "vm-1", a, 3), 0);
    CHECK_INT(resync_plan_add(pl, "vm-2", b, 3), 0);
    CHECK_INT(resync_plan_write(pl, 0, &out), 0);
    CHECK_STR(textbuf_str(&out),
              "zone 0.10.in-addr.arpa\n"
              "  + 2.0.0.10.in-addr.arpa PTR web.b.example ttl=60 vm=vm-1\n"
              "zone a.example\n"
              "  ~ db.a.example A 10.0.0.3 ttl=60->300 vm=vm-2\n"
              "zone b.example\n"
              "  - old.b.example AAAA 2001:db8::1 ttl=60 vm=vm-2, shared\n"
              "  + web.b.example A 10.0.0.2 ttl=60 vm=vm-1\n"
              "skipped\n"
              "  no zone: x.nowhere.example A 10.0.0.2 ttl=60 vm=vm-1\n"
              "  hand-made row exists: db.a.example A 10.0.0.9 ttl=300 vm=vm-2\n");
    textbuf_free(&out);
    resync_plan_free(pl);
    resync_plan_free(NULL);
}

static void test_plan_json(void)
{
    struct resync_plan *pl;
    textbuf out = TEXTBUF_INIT;
    struct pdns_change c[3] = {
        change(PDNS_CHANGE_ADD, "a.example", "web.a.example", DNS_RR_A, "10.0.0.2", 60),
        change(PDNS_CHANGE_REMOVE, "a.example", "old.a.example", DNS_RR_A, "10.0.0.1", 60),
        change(PDNS_CHANGE_NO_ZONE, "", "x.nowhere.example", DNS_RR_A, "10.0.0.2", 60),
    };
    CHECK_INT(resync_plan_new(&pl), 0);
    CHECK_INT(resync_plan_add(pl, "vm-\"1\"", c, 3), 0);
    CHECK_INT(textbuf_putc(&out, '{'), 0);
    CHECK_INT(resync_plan_write(pl, 1, &out), 0);
    CHECK_INT(textbuf_putc(&out, '}'), 0);
    CHECK_STR(textbuf_str(&out),
              "{\"zones\":[{\"zone\":\"a.example\",\"add\":[{\"name\":\"web.a.example\","
              "\"type\":\"A\",\"content\":\"10.0.0.2\",\"ttl\":60,\"vm\":\"vm-\\\"1\\\"\","
              "\"shared\":false}],\"remove\":[{\"name\":\"old.a.example\",\"type\":\"A\","
              "\"content\":\"10.0.0.1\",\"ttl\":60,\"vm\":\"vm-\\\"1\\\"\",\"shared\":false}],"
              "\"ttl\":[]}],\"skipped\":[{\"name\":\"x.nowhere.example\",\"type\":\"A\","
              "\"content\":\"10.0.0.2\",\"ttl\":60,\"vm\":\"vm-\\\"1\\\"\","
              "\"reason\":\"no_zone\"}]}");
    json_doc *doc = NULL;
    char err[128];
    CHECK_INT(json_parse(out.buf, out.len, &doc, err, sizeof err), 0); /* well-formed */
    json_doc_free(doc);
    textbuf_free(&out);
    resync_plan_free(pl);
}

/* Many entries: the arena and interning keep every string where the entries point. */
static void test_plan_many(void)
{
    struct resync_plan *pl;
    textbuf out = TEXTBUF_INIT;
    CHECK_INT(resync_plan_new(&pl), 0);
    for (int i = 0; i < 3000; i++) {
        char name[64], vm[32];
        snprintf(name, sizeof name, "h%04d.z%d.example", i, i % 7);
        snprintf(vm, sizeof vm, "vm-%d", i / 3);
        char zone[32];
        snprintf(zone, sizeof zone, "z%d.example", i % 7);
        struct pdns_change c = change(PDNS_CHANGE_ADD, zone, name, DNS_RR_A, "10.1.2.3", 60);
        CHECK_INT(resync_plan_add(pl, vm, &c, 1), 0);
    }
    CHECK_INT(resync_plan_write(pl, 0, &out), 0);
    CHECK(strstr(textbuf_str(&out), "zone z6.example\n  + h0006.z6.example A 10.1.2.3 ttl=60 "
                                    "vm=vm-2\n") != NULL);
    CHECK(strstr(textbuf_str(&out), "  + h2999.z3.example A 10.1.2.3 ttl=60 vm=vm-999\n") != NULL);
    size_t lines = 0;
    for (const char *p = textbuf_str(&out); *p; p++)
        lines += *p == '\n';
    CHECK_INT(lines, 3000 + 7);
    textbuf_free(&out);
    resync_plan_free(pl);
}

int main(void)
{
    test_guard();
    test_duration();
    test_plan_text();
    test_plan_json();
    test_plan_many();
    return unit_done("resync");
}
