#!/usr/bin/env python3
"""test_lifecycle.py -- VM lifecycles through real Kafka, CloudStack simulator, MariaDB and PowerDNS.

Creates, starts, updates, destroys, recovers and expunges VMs through the simulator's signed API,
which publishes CloudStack's own event records; asserts what PowerDNS answers over DNS and what
rows the database holds. Must not: write records itself, or read cs-pdns's internals.
"""
import json
import re
import sys
import time

from harness import Results, Stack, eq, wait_until
from world import World

N = 11
st = Stack("life")
w = World(st, N)
r = Results()


def fqdn(name, zone=None):
    return f"{name}.{zone or w.acme_zone}"


def processed(vm_id, event, count=1):
    """Waits until cs-pdns logged `count` outcomes for this VM and event type."""
    pat = rf"vm={vm_id} event={re.escape(event)}"
    wait_until(f"{event} of {vm_id} processed", lambda: st.log_count(pat) >= count, 20)


def no_duplicates():
    rows = st.sql("SELECT name, type, content, COUNT(*) FROM records GROUP BY name, type, content "
                  "HAVING COUNT(*) > 1")
    eq(rows, [], "duplicate records rows")


def setup():
    w.create_zones()
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    st.start_daemon()


vms = {}


def create_416():
    before = st.serial(w.acme_zone)
    vm_id = w.deploy("Web-01", group="www")
    vms["web"] = vm_id
    nic = w.default_nic(vm_id)
    ip, ip6 = nic["ipaddress"], nic["ip6address"]
    t0 = time.time()
    wait_until("A record in DNS", lambda: st.dig(fqdn("web-01")) == [ip], 10)
    print(f"  event -> dig answer: {time.time() - t0:.2f}s after the API call returned")
    eq(st.dig(fqdn("web-01"), "AAAA"), [ip6], "AAAA")
    eq(st.dig_ptr(ip), [fqdn("web-01") + "."], "PTR v4")
    eq(st.dig_ptr(ip6), [fqdn("web-01") + "."], "PTR v6")
    group = f"www-{w.acme_id[:8]}"
    eq(st.dig(fqdn(group)), [ip], "group A")
    eq(st.dig(fqdn(group), "AAAA"), [ip6], "group AAAA")
    # The PTR of 10.n.1.x lives in the /16 reverse zone, the only one that holds it.
    eq(st.sql1(f"SELECT d.name FROM records r JOIN domains d ON d.id=r.domain_id "
               f"WHERE r.type='PTR' AND r.content='{fqdn('web-01')}' AND r.name LIKE '%in-addr%'"),
       w.rev16, "PTR zone")
    assert st.serial(w.acme_zone) > before, "forward zone serial did not advance"
    no_duplicates()


def create_411_domain_suffix():
    st.control("config", {"format": "4.11"})
    vm_id = w.deploy("db-01", account="beta")
    vms["db"] = vm_id
    ip = w.default_nic(vm_id)["ipaddress"]
    # beta has no network domain of its own: its CloudStack domain's suffix applies.
    wait_until("A in the domain's zone", lambda: st.dig(fqdn("db-01", w.cust_zone)) == [ip], 10)
    eq(st.dig(fqdn("db-01", w.cust_zone), "AAAA"), [], "no AAAA on an IPv4-only NIC")
    eq(st.dig_ptr(ip), [fqdn("db-01", w.cust_zone) + "."], "PTR v4")
    # 10.n.2.x is under both the /16 and the /24 reverse zone: the longest suffix wins.
    eq(st.sql1(f"SELECT d.name FROM records r JOIN domains d ON d.id=r.domain_id "
               f"WHERE r.type='PTR' AND r.content='{fqdn('db-01', w.cust_zone)}'"), w.rev24,
       "PTR zone")
    st.control("config", {"format": "4.16"})


def admin_for_customer():
    # The API key belongs to the root admin; the VM belongs to acme. The events' "account" is the
    # admin's, so naming must come from the VM's owner.
    vm_id = w.deploy("cust-app", group="")
    ip = w.default_nic(vm_id)["ipaddress"]
    wait_until("customer's zone", lambda: st.dig(fqdn("cust-app")) == [ip], 10)
    jobs = [json.loads(e["value"]) for e in st.control("events?since=0")["events"]
            if e["key"] == vm_id and '"jobId"' in e["value"] and "SUCCEEDED" in e["value"]]
    assert jobs, "no job record for the deploy"
    assert jobs[-1]["account"] != w.acme_id, "the event should name the caller, not the owner"
    eq(jobs[-1]["jobResult"]["account"], "acme", "owner in jobResult")


def created_stopped_then_started():
    vm_id = w.deploy("app-01", startvm="false")
    vms["app"] = vm_id
    ip = w.default_nic(vm_id)["ipaddress"]
    eq(w.vm(vm_id)["state"], "Stopped", "state after deploy")
    # Stopped VMs keep (and get) their names.
    wait_until("records of a stopped VM", lambda: st.dig(fqdn("app-01")) == [ip], 10)
    st.cs.call("startVirtualMachine", id=vm_id)
    processed(vm_id, "VM.START")
    eq(st.dig(fqdn("app-01")), [ip], "A after start")
    eq(st.rows(fqdn("app-01"), "A"), [("A", ip, "60")], "one A row")
    no_duplicates()


def failed_destroy_keeps_records():
    vm_id = vms["app"]
    ip = w.default_nic(vm_id)["ipaddress"]
    st.control("fail_next", {"command": "destroyVirtualMachine"})
    try:
        st.cs.call("destroyVirtualMachine", id=vm_id)
    except Exception:
        pass  # the simulator may report the failed job; the event still goes out
    processed(vm_id, "VM.DESTROY")
    eq(st.dig(fqdn("app-01")), [ip], "A after a failed destroy")


def destroy_removes_records():
    vm_id = vms["web"]
    ip = w.default_nic(vm_id)["ipaddress"]
    before = st.serial(w.acme_zone)
    st.control("config", {"format": "4.17"})
    st.cs.call("destroyVirtualMachine", id=vm_id)
    wait_until("A gone", lambda: st.dig(fqdn("web-01")) == [], 10)
    eq(st.dig(fqdn(f"www-{w.acme_id[:8]}")), [], "group record gone")
    eq(st.dig_ptr(ip), [], "PTR gone")
    eq(st.sql1(f"SELECT COUNT(*) FROM cspdns_record WHERE vm_id='{vm_id}'"), "0", "ownership")
    assert st.serial(w.acme_zone) > before, "serial did not advance on removal"
    st.control("config", {"format": "4.16"})


def recover_brings_back():
    vm_id = vms["web"]
    st.cs.call("recoverVirtualMachine", id=vm_id)
    ip = w.default_nic(vm_id)["ipaddress"]
    wait_until("A back after recover", lambda: st.dig(fqdn("web-01")) == [ip], 10)


def expunge_removes_records():
    vm_id = vms["app"]
    st.cs.call("destroyVirtualMachine", id=vm_id, expunge="true")
    wait_until("A gone after expunge", lambda: st.dig(fqdn("app-01")) == [], 10)
    eq(st.sql1(f"SELECT COUNT(*) FROM cspdns_vm WHERE vm_id='{vm_id}'"), "0", "VM row")


def rename_moves_records():
    vm_id = vms["db"]
    ip = w.default_nic(vm_id)["ipaddress"]
    st.cs.call("stopVirtualMachine", id=vm_id)
    st.cs.call("updateVirtualMachine", id=vm_id, name="db-02")
    wait_until("new name", lambda: st.dig(fqdn("db-02", w.cust_zone)) == [ip], 10)
    eq(st.dig(fqdn("db-01", w.cust_zone)), [], "old name gone")
    eq(st.dig_ptr(ip), [fqdn("db-02", w.cust_zone) + "."], "PTR follows")


def group_records_from_several_vms():
    a = w.deploy("node-a", group="My Cluster!")
    b = w.deploy("node-b", group="My Cluster!")
    ips = sorted(w.default_nic(x)["ipaddress"] for x in (a, b))
    name = fqdn(f"mycluster-{w.acme_id[:8]}")
    wait_until("both members", lambda: st.dig(name) == ips, 10)
    st.cs.call("destroyVirtualMachine", id=a, expunge="true")
    wait_until("one member left", lambda: st.dig(name) == [w.default_nic(b)["ipaddress"]], 10)


def hand_made_records_untouched():
    name = fqdn("web-02")
    st.sql(f"INSERT INTO records(domain_id,name,type,content,ttl,prio,disabled,auth) "
           f"SELECT id,'{name}','TXT','\"hand made\"',300,0,0,1 FROM domains "
           f"WHERE name='{w.acme_zone}'")
    st.sql(f"INSERT INTO records(domain_id,name,type,content,ttl,prio,disabled,auth) "
           f"SELECT id,'{name}','A','192.0.2.99',300,0,0,1 FROM domains WHERE name='{w.acme_zone}'")
    vm_id = w.deploy("web-02")
    ip = w.default_nic(vm_id)["ipaddress"]
    wait_until("both A records", lambda: st.dig(name) == sorted([ip, "192.0.2.99"]), 10)
    st.cs.call("destroyVirtualMachine", id=vm_id, expunge="true")
    wait_until("ours gone", lambda: st.dig(name) == ["192.0.2.99"], 10)
    eq(st.dig(name, "TXT"), ['"hand made"'], "hand-made TXT")


def missing_zone_skipped():
    vm_id = w.deploy("lost-01", account="gamma", network=w.net_beta)
    ip = w.default_nic(vm_id)["ipaddress"]
    processed(vm_id, "VM.CREATE")
    assert st.log_has(rf"vm={vm_id} event=VM.CREATE .*no_zone=1"), "no_zone not counted"
    eq(st.rows(fqdn("lost-01", w.nozone)), [], "no rows without a zone")
    # The reverse zone exists, so the PTR is still written.
    eq(st.dig_ptr(ip), [fqdn("lost-01", w.nozone) + "."], "PTR still applied")


def redelivery_is_a_noop():
    """The same job record delivered twice more: no row and no serial changes."""
    vm_id = vms["web"]
    events = st.control("events?since=0")["events"]
    job = [e for e in events if e["key"] == vm_id and '"jobId"' in e["value"]
           and '"VM.CREATE"' in e["value"] and "SUCCEEDED" in e["value"]][-1]
    snapshot = st.sql("SELECT id, domain_id, name, type, content, ttl FROM records ORDER BY id")
    serial = st.serial(w.acme_zone)
    seen = st.log_count(rf"vm={vm_id} event=")
    st.publish(job["value"], key=vm_id)
    st.publish(job["value"], key=vm_id)
    wait_until("both copies processed", lambda: st.log_count(rf"vm={vm_id} event=") >= seen + 2)
    eq(st.sql("SELECT id, domain_id, name, type, content, ttl FROM records ORDER BY id"), snapshot,
       "rows after redelivery")
    eq(st.serial(w.acme_zone), serial, "serial after redelivery")


def replay_converges():
    """A new consumer group replays the whole topic: the rows end exactly as they were.

    Replayed VM.CREATE/VM.START results are taken as current (decision 1), so a replay may pass
    through old states on its way; only the end state and the serials' direction are fixed."""
    rows = "SELECT domain_id, name, type, content, ttl FROM records WHERE type <> 'SOA' ORDER BY 1,2,3,4"
    snapshot = st.sql(rows)
    serials = {z: st.serial(z) for z in (w.acme_zone, w.cust_zone, w.rev16, w.rev24, w.rev6)}
    eq(st.stop_daemon(), 0, "exit status on SIGTERM")
    st.group += "-replay"
    st.start_daemon()
    st.wait_quiet(3)
    eq(st.sql(rows), snapshot, "records after replay")
    for z, before in serials.items():
        assert st.serial(z) >= before, f"serial of {z} went backwards"
    no_duplicates()


try:
    r.check("setup", setup)
    r.check("create (4.16 job): A, AAAA, PTR v4/v6, group records", create_416)
    r.check("create (4.11 job): domain suffix, IPv4 only, /24 beats /16", create_411_domain_suffix)
    r.check("admin deploys for a customer: the owner's zone", admin_for_customer)
    r.check("created stopped, then started: one set of rows", created_stopped_then_started)
    r.check("failed destroy (Completed + error) keeps records", failed_destroy_keeps_records)
    r.check("destroy (4.17 action) removes records", destroy_removes_records)
    r.check("recover brings records back", recover_brings_back)
    r.check("expunge removes records", expunge_removes_records)
    r.check("rename (VM.UPDATE) moves records", rename_moves_records)
    r.check("group record with several members", group_records_from_several_vms)
    r.check("hand-made records untouched", hand_made_records_untouched)
    r.check("record whose zone is missing is skipped", missing_zone_skipped)
    r.check("redelivered event changes nothing", redelivery_is_a_noop)
    r.check("replaying the whole topic converges to the same rows", replay_converges)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
sys.exit(r.finish())
