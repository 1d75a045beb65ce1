#!/usr/bin/env python3
"""test_resync.py -- resync, dry runs, the deletion guard, plan and cs_mapping adoption, end to end.

Drift is made the way CloudStack makes it: VMs appear and vanish in the simulator without any event
(/sim/vms, /sim/delete_vm). Every check runs the real cs-pdns binary against the simulator and a
database of this file's own (resyncs weigh every owned record, so other files' leftovers must not
count). Must not: skip, or assert on timing.
"""
import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
import uuid

from harness import Results, eq, wait_until
from private_db import PrivateDbStack
from world import World

N = 14
PAGE = 4  # small pages, so a dozen VMs take several

st = PrivateDbStack("resync", page_size=PAGE)
w = World(st, N)
r = Results()
vms = {}  # name -> VM id


def fqdn(name, zone=None):
    return f"{name}.{zone or w.acme_zone}"


def cli(*args, stdin=None, drop=(), **env):
    e = st.daemon_env(**env)
    for k in drop:
        e.pop(k, None)
    p = subprocess.run([st.bin] + list(args), env=e, input=stdin, capture_output=True, text=True,
                       timeout=120)
    # Kept for secrets_scan.py, which checks every cs-pdns log of the run.
    with open(os.path.join(st.workdir, "cs-pdns-cli.log"), "a") as f:
        f.write(p.stderr + p.stdout)
    return p.returncode, p.stdout, p.stderr


def resync(*args, want=0, **env):
    rc, out, err = cli("resync", *args, **env)
    if rc != want:
        raise AssertionError(f"resync {' '.join(args)} exited {rc}, want {want}\n"
                             f"stdout:\n{out}\nstderr:\n{err[-3000:]}")
    return out, err


def make_vm(name, last, account="acme", state="Running", group=None):
    """A VM as listVirtualMachines returns it, on acme-net (10.N.1.x) or beta-net (10.N.2.x)."""
    beta = account == "beta"
    nic = {"id": str(uuid.uuid4()), "networkid": w.net_beta if beta else w.net_acme,
           "networkname": "beta-net" if beta else "acme-net", "isdefault": True,
           "ipaddress": f"10.{w.n}.{2 if beta else 1}.{last}", "traffictype": "Guest",
           "type": "Isolated", "macaddress": f"02:00:00:00:{w.n:02x}:{last:02x}"}
    if not beta:
        nic["ip6address"] = f"2001:db8:{w.n:x}:1::{last:x}"
    vm = {"id": str(uuid.uuid4()), "name": name, "displayname": name, "account": account,
          "domainid": w.domain_id, "state": state, "nic": [nic]}
    if group:
        vm["group"] = group
    return vm


def insert(*objs):
    ids = st.control("vms", {"vms": list(objs)})["ids"]
    for o, i in zip(objs, ids):
        vms[o["name"]] = i
    return ids


def a_rows(name, zone=None):
    return st.rows(fqdn(name, zone), "A")


def counts():
    """Row counts and every zone's SOA: what a dry run must leave exactly as it was."""
    return (st.sql1("SELECT COUNT(*) FROM records"), st.sql1("SELECT COUNT(*) FROM cspdns_record"),
            st.sql1("SELECT COUNT(*) FROM cspdns_vm"),
            st.sql("SELECT d.name, r.content FROM records r JOIN domains d ON d.id = r.domain_id "
                   "WHERE r.type = 'SOA' ORDER BY d.name"))


def no_duplicates():
    eq(st.sql("SELECT name, type, content FROM records GROUP BY name, type, content "
              "HAVING COUNT(*) > 1"), [], "duplicate records rows")


def setup():
    w.create_zones()
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    # Twelve VMs, so that one disappearing stays well under the 20 % deletion guard.
    insert(*[make_vm(f"base-{i:02d}", 10 + i) for i in range(10)],
           make_vm("db-01", 10, account="beta"), make_vm("web-01", 40, group="www"))


def dry_run_on_a_fresh_database():
    # cs-pdns never wrote here: its tables do not exist, and a dry run must not create them.
    eq(st.sql("SHOW TABLES LIKE 'cspdns%'"), [], "tables before")
    before = st.sql1("SELECT COUNT(*) FROM records")
    out, _ = resync("--dry-run")
    assert f"zone {w.acme_zone}" in out, out
    ip = f"10.{w.n}.1.40"
    assert re.search(rf"^  \+ {re.escape(fqdn('web-01'))} A {ip} ttl=60 vm={vms['web-01']}$",
                     out, re.M), out
    assert "result=converged dry_run=yes vms=12" in out, out
    eq(st.sql("SHOW TABLES LIKE 'cspdns%'"), [], "tables after a dry run")
    eq(st.sql1("SELECT COUNT(*) FROM records"), before, "records after a dry run")


def created_without_event():
    out, _ = resync()
    assert "result=converged dry_run=no vms=12 pages=" in out, out
    eq(a_rows("web-01"), [("A", f"10.{w.n}.1.40", "60")], "web-01 A")
    eq(st.rows(fqdn("web-01"), "AAAA"), [("AAAA", f"2001:db8:{w.n:x}:1::28", "60")], "AAAA")
    eq(st.rows(f"40.1.{w.n}.10.in-addr.arpa", "PTR"), [("PTR", fqdn("web-01"), "60")], "PTR")
    eq(a_rows("db-01", w.cust_zone), [("A", f"10.{w.n}.2.10", "60")], "beta's VM")
    eq(a_rows(f"www-{w.acme_id[:8]}"), [("A", f"10.{w.n}.1.40", "60")], "group record")
    # A VM that appears later, still without any event, is found by the next resync.
    insert(make_vm("late-01", 50))
    before = st.serial(w.acme_zone)
    out, _ = resync()
    assert "added=4 " in out, out  # A, AAAA and two PTRs
    eq(a_rows("late-01"), [("A", f"10.{w.n}.1.50", "60")], "late-01 A")
    assert st.serial(w.acme_zone) > before, "the zone's serial did not move"
    # Nothing changed since: a second resync changes nothing and bumps no serial.
    before = counts()
    out, _ = resync()
    assert "added=0 removed=0 updated=0 " in out, out
    eq(counts(), before, "rows and serials after a resync with nothing to do")
    no_duplicates()


def project_vms_and_dedup():
    proj = make_vm("proj-01", 30, account="beta")
    proj.pop("account")
    proj.update({"projectid": w.project_id, "project": "proj"})
    insert(proj)
    out, _ = resync()
    # Only the projectid=-1 pass lists it; the project's domain names it.
    assert "vms=14 " in out and "added=2 " in out, out
    eq(a_rows("proj-01", w.cust_zone), [("A", f"10.{w.n}.2.30", "60")], "project VM")
    # Newer CloudStack answers projectid=-1 with every VM: each is still reconciled once.
    st.control("config", {"projectid_minus1": "all"})
    try:
        out, _ = resync()
    finally:
        st.control("config", {"projectid_minus1": "projects_only"})
    assert "vms=14 " in out and "added=0 removed=0 updated=0 unchanged=54 " in out, out


def removed_without_event():
    name = fqdn("base-03")
    ip = f"10.{w.n}.1.13"
    # Hand-made neighbours: another type at the same name, and an A of another address there.
    acme = st.sql1(f"SELECT id FROM domains WHERE name = '{w.acme_zone}'")
    st.sql(f"INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) "
           f"VALUES ({acme}, '{name}', 'TXT', '\"hand made\"', 300, 0, 0, 1), "
           f"({acme}, '{name}', 'A', '192.0.2.7', 300, 0, 0, 1)")
    st.control("delete_vm", {"id": vms["base-03"]})  # the expunge thread: no event at all
    before = st.serial(w.acme_zone)
    out, _ = resync()
    assert "absent=1 gone=1" in out and "removed=4 " in out, out
    eq(st.rows(name), [("A", "192.0.2.7", "300"), ("TXT", '"hand made"', "300")],
       "hand-made neighbours")
    eq(st.rows(f"13.1.{w.n}.10.in-addr.arpa"), [], f"PTR of {ip}")
    eq(st.sql1(f"SELECT COUNT(*) FROM cspdns_record WHERE vm_id = '{vms['base-03']}'"), "0",
       "ownership")
    assert st.serial(w.acme_zone) > before, "the zone's serial did not move"
    del vms["base-03"]


def dry_run_prints_the_plan():
    insert(make_vm("new-01", 60))
    st.control("delete_vm", {"id": vms["base-04"]})
    before = counts()
    out, _ = resync("--dry-run", DNS_RECORD_TTL="120")
    eq(counts(), before, "rows and serials after a dry run")
    lines = out.splitlines()
    zone_at = lines.index(f"zone {w.acme_zone}")
    new_a = (f"  + {fqdn('new-01')} A 10.{w.n}.1.60 ttl=120 vm={vms['new-01']}")
    gone_a = (f"  - {fqdn('base-04')} A 10.{w.n}.1.14 ttl=60 vm={vms['base-04']}")
    ttl_a = (f"  ~ {fqdn('base-05')} A 10.{w.n}.1.15 ttl=60->120 vm={vms['base-05']}")
    for want in (new_a, gone_a, ttl_a):
        assert want in lines[zone_at:], f"{want!r} not under zone {w.acme_zone}:\n{out}"
    rev = f"zone {w.rev16}"
    assert f"  - 14.1.{w.n}.10.in-addr.arpa PTR {fqdn('base-04')} ttl=60 vm={vms['base-04']}" \
        in lines[lines.index(rev):], out
    assert f"  vm={vms['base-04']} records=4" in lines, out

    # The same plan for machines.
    rc, text, err = cli("resync", "--dry-run", "--json", DNS_RECORD_TTL="120")
    eq(rc, 0, f"--json exit status; stderr: {err[-2000:]}")
    plan = json.loads(text)
    eq((plan["dry_run"], plan["result"], plan["listing"]["complete"]), (True, "converged", True),
       "summary")
    zone = next(z for z in plan["zones"] if z["zone"] == w.acme_zone)
    assert {"name": fqdn("new-01"), "type": "A", "content": f"10.{w.n}.1.60", "ttl": 120,
            "vm": vms["new-01"], "shared": False} in zone["add"], zone
    assert any(x["name"] == fqdn("base-04") and x["type"] == "A" for x in zone["remove"]), zone
    assert any(x["name"] == fqdn("base-05") and x["old_ttl"] == 60 and x["ttl"] == 120
               for x in zone["ttl"]), zone
    eq(plan["absent"], [{"vm": vms["base-04"], "records": 4}], "absent VMs")
    eq(plan["totals"]["added"], 4, "records to add")
    eq(counts(), before, "rows and serials after a JSON dry run")

    # The real run does what the plan said.
    out, _ = resync()
    assert "added=4 removed=4 " in out, out
    eq(a_rows("new-01"), [("A", f"10.{w.n}.1.60", "60")], "new-01 A")
    eq(a_rows("base-04"), [], "base-04 A")
    del vms["base-04"]


def middle_page_failure_removes_nothing():
    st.control("delete_vm", {"id": vms["base-06"]})
    insert(make_vm("new-02", 61))
    before = a_rows("base-06")
    assert before, "base-06 should still have its A record"
    st.control("faults", {"mode": "http_status", "status": 503, "count": -1,
                          "commands": ["listVirtualMachines"], "params": {"page": "2"}})
    try:
        out, err = resync(want=1)
    finally:
        st.control("faults", {"mode": "none"})
    assert "result=incomplete" in out and "listing is incomplete" in out, out
    assert "page 2 of pass 1 failed" in out, out
    eq(a_rows("base-06"), before, "records of a VM missing from an incomplete listing")
    # The pages after the failed one were still reconciled: new-02, listed last, is on page 3.
    eq(a_rows("new-02"), [("A", f"10.{w.n}.1.61", "60")], "new-02 A after the failed page")
    out, _ = resync()
    eq(a_rows("base-06"), [], "base-06 A once the listing is complete")
    del vms["base-06"]


def guard_trips_then_force():
    victims = [n for n in sorted(vms) if n.startswith("base-")][:5]
    for n in victims:
        st.control("delete_vm", {"id": vms[n]})
    before = counts()
    out, err = resync(want=3)
    assert "result=guarded" in out and "RESYNC_MAX_DELETE_PERCENT=20%" in out, out
    assert "deletion guard" in err and "--force" in err, err
    eq(counts(), before, "nothing removed when the guard trips")
    rc, text, _ = cli("resync", "--json")
    eq(rc, 3, "exit status with --json")
    guard = json.loads(text)["guard"]
    eq((guard["tripped"], guard["absent_records"]), (True, 20), "guard figures")
    # A higher limit lets the same resync through, and so does --force.
    out, _ = resync("--dry-run", RESYNC_MAX_DELETE_PERCENT="90")
    assert "result=converged" in out, out
    out, _ = resync("--force")
    assert "absent=5 gone=5" in out and "removed=20 " in out, out
    for n in victims:
        eq(a_rows(n), [], f"{n} after the forced resync")
        del vms[n]


def plan_one_event():
    # A VM deployed through the API publishes its events; cs-pdns is not running to see them.
    vm_id = w.deploy("plan-01", group="")
    vms["plan-01"] = vm_id
    ip = w.default_nic(vm_id)["ipaddress"]
    events = [e["value"] for e in st.control("events?since=0")["events"]
              if e["key"] == vm_id and '"jobId"' in e["value"] and "SUCCEEDED" in e["value"]]
    path = os.path.join(st.workdir, "event.json")
    with open(path, "w") as f:
        f.write(events[-1])
    before = counts()
    rc, out, err = cli("plan", "--event", path)
    eq(rc, 0, f"plan exit status; stderr: {err[-2000:]}")
    assert f"event VM.CREATE vm={vm_id}" in out, out
    assert f"  {fqdn('plan-01')} A {ip} ttl=60\n" in out, out
    assert f"  + {fqdn('plan-01')} A {ip} ttl=60 vm={vm_id}" in out, out
    rc, text, err = cli("plan", "--json", stdin=events[-1])
    eq(rc, 0, f"plan --json exit status; stderr: {err[-2000:]}")
    plan = json.loads(text)
    assert {"name": fqdn("plan-01"), "type": "A", "content": ip, "ttl": 60} in plan["records"]
    eq(len(plan["changes"]["zones"]), 3, "zones changed (forward, reverse v4, reverse v6)")
    eq(counts(), before, "rows and serials after plan")
    # Without a database configured only the records are printed.
    rc, out, _ = cli("plan", "--event", path, drop=("MYSQL_PDNS_HOST",))
    eq(rc, 0, "plan without a database")
    assert "not computed" in out and f"{fqdn('plan-01')} A {ip}" in out, out
    rc, out, _ = cli("plan", stdin='{"event":"VM.DESTROY","status":"Scheduled",'
                     f'"entityuuid":"{vm_id}","VirtualMachine":"{vm_id}"}}')
    eq(rc, 0, "plan of an ignored event")
    assert "ignored" in out, out


def command_line_errors():
    rc, _, err = cli("resync", "--dryrun")
    eq(rc, 2, "an unknown flag")
    assert '"--dryrun"' in err and "--dry-run" in err, err
    rc, _, err = cli("plan", "--event", "/nonexistent/event.json")
    eq(rc, 1, "plan of a missing file")
    assert "/nonexistent/event.json" in err, err
    rc, _, err = cli("plan", stdin="{not json")
    eq(rc, 1, "plan of a malformed event")
    assert "malformed" in err, err
    rc, _, err = cli("adopt-cs-mapping")
    eq(rc, 1, "adoption without a cs_mapping table")
    assert "no cs_mapping table" in err and "MYSQL_PDNS_NAME" in err, err
    rc, _, err = cli("resync", drop=("MYSQL_PDNS_HOST",))
    eq(rc, 2, "resync without a database")
    assert "MYSQL_PDNS_HOST" in err, err


def adopt_cs_mapping():
    # Records written by cs-powerdns-integration for one VM, with its cs_mapping rows.
    vm = make_vm("legacy-01", 70, group="www")
    vm_id = insert(vm)[0]
    ip, ip6 = vm["nic"][0]["ipaddress"], vm["nic"][0]["ip6address"]
    name, grp = fqdn("legacy-01"), fqdn(f"www-{w.acme_id[:8]}")
    acme = st.sql1(f"SELECT id FROM domains WHERE name = '{w.acme_zone}'")
    rev4 = st.sql1(f"SELECT id FROM domains WHERE name = '{w.rev16}'")
    ptr4 = f"70.1.{w.n}.10.in-addr.arpa"
    st.sql("CREATE TABLE cs_mapping(uuid CHAR(36), record VARCHAR(255), ipaddress CHAR(39), "
           "UNIQUE(uuid, record, ipaddress))")
    rows = [(acme, name, "A", ip), (acme, name, "A", ip),  # REPLACE INTO made duplicates
            (acme, name, "AAAA", ip6), (acme, grp, "A", ip), (rev4, ptr4, "PTR", name),
            (acme, name, "TXT", '"kept"')]
    st.sql("INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, ordername, "
           "auth) VALUES " + ",".join(f"({d}, '{n}', '{t}', '{c}', 60, 0, 0, 'legacy-01', 1)"
                                      for d, n, t, c in rows))
    st.sql(f"INSERT INTO cs_mapping VALUES ('{vm_id}', '{name}', NULL), "
           f"('{vm_id}', '{name}', NULL), ('{vm_id}', '{ptr4}', NULL), "
           f"('{vm_id}', '{grp}', '{ip}'), ('{vm_id}', 'gone.{w.acme_zone}', NULL)")
    before = counts()
    rc, out, err = cli("adopt-cs-mapping", "--dry-run")
    eq(rc, 0, f"adopt --dry-run; stderr: {err}")
    assert "5 mappings of 1 VMs name 5 records; would adopt 5 ownerships" in out, out
    assert "1 mappings name no record" in out, out
    eq(counts(), before, "rows after a dry adoption")
    rc, out, err = cli("adopt-cs-mapping")
    eq(rc, 0, f"adopt; stderr: {err}")
    assert "adopted 5 ownerships" in out, out
    eq(st.sql1(f"SELECT COUNT(*) FROM cspdns_record WHERE vm_id = '{vm_id}'"), "5", "owned")
    rc, out, _ = cli("adopt-cs-mapping")
    assert "adopted 0 ownerships (5 were owned already)" in out, out
    # The resync now manages them: the duplicate goes, the missing PTR v6 comes, TXT stays.
    resync()
    eq(st.rows(name), [("A", ip, "60"), ("AAAA", ip6, "60"), ("TXT", '"kept"', "60")],
       "legacy-01 after the resync")
    no_duplicates()
    st.control("delete_vm", {"id": vm_id})
    resync()
    eq(st.rows(name), [("TXT", '"kept"', "60")], "legacy-01 gone, its hand-made TXT kept")
    eq(st.rows(ptr4), [], "adopted PTR removed")


def startup_and_periodic_resync_in_run():
    # Drift while cs-pdns is down: one VM appears, one vanishes, both without events.
    insert(make_vm("boot-01", 80), *[make_vm(f"bulk-{i:03d}", 100 + i, account="beta")
                                    for i in range(120)])
    st.control("delete_vm", {"id": vms["base-08"]})
    doomed = w.deploy("doomed-01", group="")  # listed last; its events wait in Kafka
    # Every resync page takes 2 s until the live events below went through, so the start-up
    # resync is certainly still running while they are processed.
    st.control("faults", {"mode": "delay", "delay_ms": 2000, "count": -1,
                          "commands": ["listVirtualMachines"], "params": {"pagesize": str(PAGE)}})
    lists = lambda: st.control("state?vms=0")["calls"].get("listVirtualMachines", 0)  # noqa: E731
    before = lists()
    try:
        st.start_daemon(RESYNC_INTERVAL="3")
        # The start-up resync waits for the group to assign partitions; the VMs change only once
        # its first page was asked for, so its listing certainly sees them change.
        wait_until("the start-up resync's first page", lambda: lists() > before, 60, 0.01)
        live = w.deploy("live-01", group="")
        ip = w.default_nic(live)["ipaddress"]
        wait_until("the live VM's event", lambda: a_rows("live-01") == [("A", ip, "60")], 60)
        st.cs.call("destroyVirtualMachine", id=doomed, expunge="true")
        wait_until("the destroy event", lambda: st.log_has(rf"vm={doomed} event=VM.DESTROY"), 60)
        assert not st.log_has(r"resync converged in"), "the resync was meant to be still running"
    finally:
        st.control("faults", {"mode": "none"})
    # VMs came and went while it paged, so the start-up resync created and updated but removed
    # nothing; the next one, over a listing that stayed still, removes.
    wait_until("the start-up resync", lambda: st.log_has(r"resync (converged|incomplete) in"),
               120)
    first = re.search(r'msg="resync (\w+) in .*', st.log_text()).group(0)
    assert "resync incomplete" in first and "count changed" in first and "removed=0 " in first, \
        first
    eq(a_rows("boot-01"), [("A", f"10.{w.n}.1.80", "60")], "boot-01 created at start-up")
    wait_until("a converged resync", lambda: st.log_has(r"resync converged in"), 60)
    eq(a_rows("base-08"), [], "base-08 removed by a complete resync")
    eq(a_rows("bulk-119", w.cust_zone), [("A", f"10.{w.n}.2.219", "60")], "last bulk VM")
    eq(a_rows("doomed-01"), [], "a VM destroyed during the resync stays without records")
    eq(a_rows("live-01"), [("A", ip, "60")], "a VM created during the resync keeps its records")
    # The next resync (every 3 s) heals new drift.
    insert(make_vm("tick-01", 81))
    wait_until("a periodic resync", lambda: a_rows("tick-01") ==
               [("A", f"10.{w.n}.1.81", "60")], 60)
    # Its records are written before that resync has finished paging and logs its summary.
    wait_until("the periodic resync's summary", lambda: st.log_count(r"resync converged in") >= 2,
               60)
    summary = re.findall(r'msg="resync converged in [0-9.]+s: vms=\d+ .*?"', st.log_text())
    assert summary and "added=" in summary[0] and "unchanged=" in summary[0], summary
    eq(st.stop_daemon(), 0, "exit status")
    no_duplicates()


def event_during_resync_wins():
    if st.daemon is not None and st.daemon.poll() is None:
        st.stop_daemon()  # left running by a failed check before this one
    victim = w.deploy("victim-01", group="")
    ip = w.default_nic(victim)["ipaddress"]
    # One page holds every VM, applied in batches with events in between.
    st.start_daemon(RESYNC_INTERVAL="3", RESYNC_PAGE_SIZE="500")
    wait_until("the victim's create event", lambda: st.log_has(rf"vm={victim} event=VM.CREATE"),
               60)
    eq(a_rows("victim-01"), [("A", ip, "60")], "the victim's records")
    calls = lambda: st.control("state?vms=0")["calls"].get("listAccounts", 0)  # noqa: E731
    before = calls()
    # The next resync's first owner lookup takes 3 s: its page, with the victim Running, is in
    # hand by then. The victim is destroyed meanwhile, and its event goes through before the
    # resync reaches the victim's batch: the resync must read it again, not recreate it.
    st.control("faults", {"mode": "delay", "delay_ms": 3000, "count": 1,
                          "commands": ["listAccounts"]})
    wait_until("a resync's first owner lookup", lambda: calls() > before, 60, 0.01)
    done = st.log_count(r"resync \w+ in ")
    st.cs.call("destroyVirtualMachine", id=victim, expunge="true")
    wait_until("that resync's end", lambda: st.log_count(r"resync \w+ in ") > done, 60)
    eq(a_rows("victim-01"), [], "the victim after the resync")
    log = st.log_text()
    destroyed = log.find(f"vm={victim} event=VM.DESTROY")
    reread = log.find(f"vm={victim} resync state=gone")
    assert 0 <= destroyed < reread, "the resync did not read the victim again after its event"
    assert not re.search(rf"vm={victim} resync state=Running", log[destroyed:]), \
        "the resync applied the victim's stale page after its event"
    eq(st.stop_daemon(), 0, "exit status")


def scrape(port):
    """{series: value} of cs-pdns's /metrics, series as printed ('name{labels}')."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(\S+) (\S+)$", text, re.M) if not m.group(1).startswith("#")}


def resync_metrics_in_run():
    if st.daemon is not None and st.daemon.poll() is None:
        st.stop_daemon()  # left running by a failed check before this one
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    st.start_daemon(RESYNC_INTERVAL="2", METRICS_ADDR=f"127.0.0.1:{port}")
    stamp = "cspdns_last_resync_success_timestamp_seconds"
    txns = "cspdns_db_transaction_duration_seconds_count"
    events = lambda m: sum(v for k, v in m.items() if k.startswith("cspdns_events_total"))  # noqa

    def next_converged(after):
        """Scraped just after the resync following `after` converged: the next one starts 2 s
        later, so the scrape sees exactly the resyncs up to it."""
        return wait_until("a converged resync", lambda: (
            lambda m: m if m.get(stamp, 0) > after else None)(scrape(port)), 60, interval=0.02)
    before = next_converged(1.7e9)
    # Drift without an event, resynced by the next resync: only its transactions can count.
    insert(make_vm("metric-01", 82), make_vm("metric-02", 83))
    after = next_converged(before[stamp])
    eq(a_rows("metric-02"), [("A", f"10.{w.n}.1.83", "60")], "the drift resynced")
    eq(events(after), events(before), "events consumed meanwhile")
    # Each page of RESYNC_PAGE_SIZE VMs is one transaction; not counting the set-based ones
    # would leave only the rare page with a single VM to write.
    pages = int(re.findall(r"resync converged in \S+ vms=\d+ .*?pages=(\d+)", st.log_text())[-1])
    observed = after.get(txns, 0) - before.get(txns, 0)
    assert observed * 2 >= pages, \
        f"{observed} transactions observed for a resync of {pages} pages"
    eq(st.stop_daemon(), 0, "exit status")


try:
    r.check("setup", setup)
    r.check("a dry run on a database cs-pdns never wrote to writes nothing",
            dry_run_on_a_fresh_database)
    r.check("VMs created without events get their records", created_without_event)
    r.check("project VMs come from the projectid=-1 pass, deduplicated when it lists all",
            project_vms_and_dedup)
    r.check("a VM removed without an event loses its records; hand-made ones stay",
            removed_without_event)
    r.check("--dry-run prints the plan per zone (text and JSON) and writes nothing",
            dry_run_prints_the_plan)
    r.check("a failed middle page: the listing is incomplete and nothing is removed",
            middle_page_failure_removes_nothing)
    r.check("the deletion guard refuses a mass disappearance; --force proceeds",
            guard_trips_then_force)
    r.check("plan prints one event's records and changes, writing nothing", plan_one_event)
    r.check("command-line errors name what is wrong", command_line_errors)
    r.check("adopt-cs-mapping hands the original tool's records to the resync", adopt_cs_mapping)
    r.check("run: the start-up resync heals drift, events interleave, the timer repeats",
            startup_and_periodic_resync_in_run)
    r.check("an event processed during a resync wins: the resync reads its VM again",
            event_during_resync_wins)
    r.check("run: a converged resync sets its timestamp, its transactions are observed",
            resync_metrics_in_run)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
sys.exit(r.finish())
