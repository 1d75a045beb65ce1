#!/usr/bin/env python3
"""test_bad_input.py -- garbage on the bus and in the API: each bad message is logged with its
position and skipped, nothing is written for it, and the next good event on the same partition is
applied; hostile VM and group names and absurd addresses are rejected or sanitised.

Every bad message goes to a partition of its own choosing through kcat (bytes as they are: empty,
truncated, 16 MB, 10,000-deep, wrong types in each field cs-pdns reads, invalid UTF-8, NUL bytes,
unknown shapes), followed on that partition by a good event for a fresh VM. VMs with absurd names,
addresses and groups come from the simulator's API (POST /sim/vms). A second daemon runs a naive
policy that copies names unchecked, so the host's own record validation is what stops them.
Must not: skip, or judge by cs-pdns's own account of what it wrote.
"""
import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid

import faultkit as fk
import reliability
from harness import Results, Stack, eq, wait_until
from world import World

TEST = "bad_input"
TTL = 60
PARTITIONS = 4  # for the corpus; one more partition takes the 16 MB message alone
BIG = 16 * 1024 * 1024

st = Stack("bad")
w = World(st, 25)
r = Results()
zones = fk.world_zones(w)
produced = []  # (label, key, partition, kind) in production order
good_vms = {}
event_vms = []  # VMs that only exist inside job records of the corpus
known_offsets = {}  # {key: (partition, offset)} of messages the broker may have dropped since
fig = {"bad_messages": 0, "bad_vms": 0, "naive_rejected": 0, "largest": 0}
NAIVE_POLICY = """\
-- Copies names and addresses from CloudStack unchecked: only the host's validation stands
-- between these strings and the database. (Outside events, e.g. the load-time self-check, it
-- asks for no records, so that it loads.)
return {
    name = "naive", version = "1",
    records = function(vm, ctx)
        if ctx.trigger ~= "event" then
            return {}
        end
        local zone = ctx.account and ctx.account.networkdomain or "invalid"
        local out = {}
        for _, nic in ipairs(type(vm.nic) == "table" and vm.nic or {}) do
            out[#out + 1] = { name = tostring(vm.name) .. "." .. zone, type = "A",
                              content = tostring(nic.ipaddress) }
        end
        if vm.group then
            out[#out + 1] = { name = tostring(vm.group) .. "." .. zone, type = "A",
                              content = "10.0.0.1" }
        end
        return out
    end,
}
"""


def produce(key, value, partition, topic=None):
    """One message, bytes as given, to one partition (kcat with random delimiters)."""
    kd, md = "@@K" + secrets.token_hex(6) + "@@", "@@M" + secrets.token_hex(6) + "@@"
    data = key.encode() + kd.encode() + value + md.encode()
    subprocess.run(["kcat", "-P", "-b", st.state["kafka"]["bootstrap"], "-t", topic or st.topic,
                    "-p", str(partition), "-K", kd, "-D", md, "-z", "none",
                    "-X", "message.max.bytes=33554432"],
                   input=data, check=True, capture_output=True, timeout=120)


def offsets_by_key(topic=None):
    """{key: (partition, offset)} read back from the broker."""
    res = subprocess.run(["kcat", "-C", "-b", st.state["kafka"]["bootstrap"], "-t",
                          topic or st.topic, "-e", "-q", "-f", "%k\t%p\t%o\n", "-X",
                          "fetch.max.bytes=40000000", "-X", "receive.message.max.bytes=50000000"],
                         capture_output=True, check=True, timeout=120)
    out = {}
    for line in res.stdout.decode(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            out[parts[0]] = (int(parts[1]), int(parts[2]))
    return out


def update_event(vm_id):
    return json.dumps({"eventDateTime": "2024-05-02 16:41:09 +0000", "entityuuid": vm_id,
                       "description": "updating Vm", "event": "VM.UPDATE",
                       "user": w.acme_id, "account": w.acme_id,
                       "entity": "com.cloud.vm.VirtualMachine", "status": "Completed"}).encode()


def raw_vm(name, ip, ip6=None, group=None, vm_id=None, account="acme"):
    vm = {"id": vm_id or str(uuid.uuid4()), "name": name, "displayname": name,
          "state": "Running", "account": account, "domainid": w.domain_id,
          "nic": [{"id": str(uuid.uuid4()), "isdefault": True, "ipaddress": ip,
                   "networkid": w.net_acme, "networkname": "acme-net"}]}
    if ip6 is not None:
        vm["nic"][0]["ip6address"] = ip6
    if group is not None:
        vm["group"] = group
    return vm


def good_after(label, partition, topic=None):
    """A fresh, valid VM and its update event, on the same partition as the bad message."""
    n = len(good_vms)
    vm = raw_vm(f"good-{n:03d}", f"10.{w.n}.1.{10 + n % 200}")
    st.control("vms", {"vms": [vm]})
    good_vms[vm["id"]] = (label, partition)
    key = f"good-{n:03d}"
    produce(key, update_event(vm["id"]), partition, topic)
    produced.append((f"good event after {label}", key, partition, "good"))


def job(cmd_type="VM.CREATE", status="SUCCEEDED", **fields):
    base = {"jobId": str(uuid.uuid4()), "commandEventType": cmd_type, "status": status,
            "processStatus": 0, "instanceType": "VirtualMachine"}
    base.update(fields)
    return json.dumps(base).encode()


def action(**fields):
    base = {"event": "VM.DESTROY", "status": "Completed",
            "entity": "com.cloud.vm.VirtualMachine", "entityuuid": str(uuid.uuid4())}
    base.update(fields)
    return json.dumps(base).encode()


def corpus():
    """(label, bytes) of every malformed or unexpected message sent through Kafka."""
    good = update_event(str(uuid.uuid4()))
    items = [
        ("empty message", b""),
        ("whitespace only", b"   \n\t "),
        ("truncated JSON", good[: len(good) // 2]),
        ("truncated inside a string", b'{"event":"VM.DESTROY","status":"Compl'),
        ("invalid JSON: bare word", b'{"event": VM.DESTROY}'),
        ("invalid JSON: single quotes", b"{'event': 'VM.DESTROY'}"),
        ("invalid JSON: trailing comma", b'{"event":"VM.DESTROY","status":"Completed",}'),
        ("invalid JSON: NaN", b'{"event":"VM.DESTROY","status":NaN}'),
        ("invalid JSON: leading zero", b'{"jobId":01}'),
        ("trailing garbage", good + b"}}garbage"),
        ("two documents", good + good),
        ("JSON array", b"[]"),
        ("JSON string", b'"VM.DESTROY"'),
        ("JSON number", b"42"),
        ("JSON null", b"null"),
        ("10,000-deep arrays", b"[" * 10000 + b"]" * 10000),
        ("10,000-deep objects", b'{"a":' * 10000 + b"1" + b"}" * 10000),
        ("deep jobResult string", job(jobResult="x/y/" + "[" * 10000 + "]" * 10000)),
        ("4 MB message", b'{"event":"VM.DESTROY","status":"Completed","description":"'
         + b"x" * (4 * 1024 * 1024) + b'","VirtualMachine":5}'),
        ("invalid UTF-8 byte", b'{"event":"VM.DESTROY","status":"Completed","VirtualMachine":'
         b'"\xff\xfe"}'),
        ("overlong UTF-8", b'{"event":"VM.DESTROY","status":"Completed","description":"\xc0\xaf"}'),
        ("lone surrogate escape", b'{"event":"VM.DESTROY","status":"Completed",'
         b'"VirtualMachine":"\\ud800"}'),
        ("raw NUL byte", b'{"event":"VM.DESTROY","status":"Completed","x":"a\x00b"}'),
        ("NUL byte alone", b"\x00"),
        ("escaped NUL in the VM id", b'{"event":"VM.DESTROY","status":"Completed",'
         b'"VirtualMachine":"9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41\\u0000x"}'),
        ("control character in a string", b'{"event":"VM.DESTROY\x01","status":"Completed"}'),
        ("unknown shape: other keys", b'{"foo":"bar","baz":[1,2,3]}'),
        ("unknown shape: action without status", b'{"event":"VM.DESTROY"}'),
        ("unknown shape: job without type", b'{"jobId":"j-1","status":"SUCCEEDED"}'),
        ("unknown shape: resource-state record", b'{"resource":"VirtualMachine","id":"x",'
         b'"event":"VM.DESTROY","status":"Completed","old-state":"Running"}'),
        ("unknown event type", action(event="VM.TELEPORT")),
        ("SQL in the VM id", action(VirtualMachine="x'; DROP TABLE records; --")),
        ("path in the VM id", action(VirtualMachine="../../etc/passwd")),
        ("empty VM id", action(VirtualMachine="")),
        ("300-character VM id", action(VirtualMachine="a" * 300)),
        ("VM id wrongly typed: object", action(VirtualMachine={"id": 1})),
        ("jobResult VM with SQL and absurd address",
         job(jobResult={**raw_vm("x'; DROP TABLE records;--", "999.1.1.1"), "id": "not an id!"})),
    ]
    # Wrong types in every field cs-pdns reads.
    wrong = [5, 5.5, True, [], {}, ["VM.CREATE"]]
    for field in ("commandEventType", "status", "instanceType", "instanceUuid"):
        for v in wrong[:2] + wrong[3:5]:
            items.append((f"job {field} = {json.dumps(v)}", job(**{field: v})))
    for v in (5, True, [], "garbage", "a/b/not json", "a/b/[1,2]", "a/b/\"str\""):
        items.append((f"job jobResult = {json.dumps(v)}", job(jobResult=v)))
    for v in (5, "not json", "[1]", "{\"ctxDetails\": 5}", "{\"ctxDetails\": \"{bad\"}",
              "{\"virtualmachineid\": 5}"):
        items.append((f"job cmdInfo = {json.dumps(v)}", job(cmdInfo=v, jobResult=None,
                                                           instanceUuid=None)))
    for field, v in (("id", 5), ("id", []), ("state", 5), ("virtualmachineid", {})):
        res = {"class": "UserVmResponse", "object": "virtualmachine", "nic": []}
        res.update({field: v} if field != "virtualmachineid" else {"virtualmachineid": v,
                                                                  "object": "x"})
        items.append((f"job jobResult.{field} = {json.dumps(v)}",
                      job(jobResult=res, instanceUuid=None)))
    for field in ("event", "status", "entity", "entityuuid", "VirtualMachine"):
        for v in (5, True, [], {}):
            items.append((f"action {field} = {json.dumps(v)}", action(**{field: v})))
    # A job carrying a VM whose own fields have the wrong types: the policy sees them.
    vm_fields = (("name", 5), ("nic", "x"), ("nic", [5]),
                 ("nic", [{"ipaddress": 5, "isdefault": True}]), ("account", 5), ("account", ""),
                 ("account", "nobody"), ("domainid", 5), ("domainid", ""), ("domainid", "d" * 200),
                 ("domainid", str(uuid.uuid4())), ("group", {}))
    for k, (field, v) in enumerate(vm_fields):
        vm = raw_vm(f"evm-{k}", f"10.{w.n}.1.{160 + k}")
        vm[field] = v
        event_vms.append(vm)
        vm = dict(vm, **{"class": "UserVmResponse", "object": "virtualmachine"})
        items.append((f"job VM {field} = {json.dumps(v)}", job(jobResult=vm)))
    return items


def hostile_vms():
    """(label, VM) whose names, groups and addresses are absurd; the built-in policy must write
    exactly what the model says (sanitised) or nothing."""
    n = w.n
    rows = [
        ("SQL in the name", raw_vm("x'; DROP TABLE records; --", f"10.{n}.1.201")),
        ("dots in the name (another zone)", raw_vm(f"evil.{w.cust_zone}", f"10.{n}.1.202")),
        ("wildcard name", raw_vm("*", f"10.{n}.1.203")),
        ("300-character name", raw_vm("a" * 300, f"10.{n}.1.204")),
        ("non-ASCII name", raw_vm("ünïcödé-vm", f"10.{n}.1.205")),
        ("name with a newline", raw_vm("evil\nname IN A 6.6.6.6", f"10.{n}.1.206")),
        ("name with NUL", raw_vm("nul\u0000name", f"10.{n}.1.207")),
        ("empty name", raw_vm("", f"10.{n}.1.208")),
        ("name of hyphens", raw_vm("---", f"10.{n}.1.209")),
        ("JNDI-style name", raw_vm("${jndi:ldap://x/a}", f"10.{n}.1.210")),
        ("address 999.1.1.1", raw_vm("absurd-ip-1", "999.1.1.1")),
        ("address with SQL", raw_vm("absurd-ip-2", "10.0.0.1'; DROP TABLE records; --")),
        ("address with spaces", raw_vm("absurd-ip-3", f" 10.{n}.1.211 ")),
        ("address with leading zeros", raw_vm("absurd-ip-4", f"010.{n}.001.212")),
        ("address of 3 octets", raw_vm("absurd-ip-5", "10.1.2")),
        ("address as a number", raw_vm("absurd-ip-6", 167772161)),
        ("address as a list", raw_vm("absurd-ip-7", [f"10.{n}.1.213"])),
        ("IPv6 with a zone index", raw_vm("absurd-ip-8", f"10.{n}.1.214", "fe80::1%eth0")),
        ("IPv6 not hex", raw_vm("absurd-ip-9", f"10.{n}.1.215", "2001:db8::g")),
        ("IPv4-mapped IPv6", raw_vm("mapped-v6", f"10.{n}.1.216", "::ffff:10.0.0.1")),
        ("IPv6 upper case, uncompressed", raw_vm("upper-v6", f"10.{n}.1.217",
                                                  f"2001:0DB8:{n:04X}:0001:0000:0000:0000:0001")),
        ("address outside every zone", raw_vm("outside", "192.0.2.77")),
        ("SQL in the group", raw_vm("grp-sql", f"10.{n}.1.218", group="x'; DELETE FROM records;")),
        ("wildcard group", raw_vm("grp-star", f"10.{n}.1.219", group="*.*")),
        ("group of symbols only", raw_vm("grp-sym", f"10.{n}.1.220", group="!!!")),
        ("group with dots", raw_vm("grp-dots", f"10.{n}.1.221", group=f"a.{w.cust_zone}")),
    ]
    return rows


def setup():
    w.create_zones()
    from stack import kafka_control
    kafka_control(st.state, f"topic {st.topic} {PARTITIONS + 1}")
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    # No resyncs: each message must stand on its own, and nothing may repair it afterwards.
    st.start_daemon(RESYNC_INTERVAL=0)


def big_message():
    """16 MB through Kafka. librdkafka 2.0.2's mock broker keeps at most 5 MB per partition and
    trims on append; a set larger than that is readable only as the first message of an empty
    partition, and the message appended right after it becomes unreadable too (the trim moves
    the log start past it). So the 16 MB message goes first on a partition of its own, and the
    good event after it goes twice: the broker drops the first copy, cs-pdns must apply the
    second."""
    p = PARTITIONS
    label = "16 MB message"
    # Malformed only at its very end, so the skip shows the whole message was read.
    payload = (b'{"event":"VM.DESTROY","status":"Completed","description":"' + b"x" * BIG
               + b'","VirtualMachine":5}')
    produce("bad-big", payload, p)
    known_offsets["bad-big"] = (p, 0)
    produced.append((label, "bad-big", p, "bad"))
    fig["largest"] = max(fig["largest"], len(payload))
    wait_until("cs-pdns to consume the 16 MB message",
               lambda: f"({len(payload)} bytes)" in st.log_text(False), 60, 0.5)
    produce("sacrificed", update_event(str(uuid.uuid4())), p)
    good_after(label, p)


def bad_messages():
    items = corpus()
    items_total = len(items) + 1  # and the 16 MB message
    # Empty non-terminals (type NULL) are PowerDNS bookkeeping the store keeps; records only.
    before_rows = st.sql1("SELECT COUNT(*) FROM records WHERE type IS NOT NULL")
    for i, (label, payload) in enumerate(items):
        p = i % PARTITIONS
        key = f"bad-{i:03d}"
        produce(key, payload, p)
        produced.append((label, key, p, "bad"))
        fig["largest"] = max(fig["largest"], len(payload))
        good_after(label, p)
    big_message()
    def not_applied():
        have = {row[0] for row in st.sql("SELECT vm_id FROM cspdns_vm")}
        return [label for vm, (label, _) in good_vms.items() if vm not in have]

    try:
        wait_until("every good event after a bad one applied", lambda: not not_applied(), 120,
                   interval=1.0)
    except AssertionError:
        raise AssertionError(f"good events not applied after: {not_applied()}")
    offsets = dict(offsets_by_key(), **known_offsets)
    text = st.log_text(False)
    missing = []
    for label, key, p, kind in produced:
        if kind != "bad":
            continue
        part, off = offsets[key]
        eq(part, p, f"partition of {label}")
        m = re.search(rf"pos={re.escape(st.topic)}/{p}@{off} msg=\"([^\n]*)", text)
        if not m:
            missing.append(label)
            continue
        fig["bad_messages"] += 1
    eq(missing, [], "bad messages without a log line at their position")
    # Nothing but the good VMs' records was written, and the records of the VMs that job
    # records carried whole (decision 1: a SUCCEEDED job's VM is taken as current), where a
    # field of the wrong type is one the policy ignores.
    state = fk.sim_state(st)
    vms = [vm for vm in state["vms"] if vm["id"] in good_vms] + [
        vm for vm in event_vms if fk.owner_refs_usable(vm)]
    want, _ = fk.expected_state({"vms": vms}, w.setup_body(), TTL, None, zones)
    eq(int(st.sql1("SELECT COUNT(*) FROM records WHERE type IS NOT NULL")) - int(before_rows),
       len(want),
       "rows written (only the good events' records)")
    v = fk.verify_exact(st, {"vms": vms}, w.setup_body(), zones, TTL,
                        vm_ids={vm["id"] for vm in vms})
    died = st.daemon.poll() is not None
    reliability.record(TEST, "malformed Kafka messages (empty, truncated, invalid JSON, 16 MB, "
                       "10,000-deep, invalid UTF-8, NUL, wrong types in each field, unknown "
                       "shapes)", items_total, lost=v.lost, duplicates=len(v.duplicates),
                       crashes=int(died), ok=not (v.problems() or died),
                       note=f"each logged at its position, skipped or its bad field ignored; largest "
                            f"{fig['largest'] // (1024 * 1024)} MB")
    v.assert_ok("after the corpus")
    assert not died, "cs-pdns died"
    assert f"({fig['largest']} bytes)" in text, "the 16 MB message did not reach cs-pdns whole"


def hostile_names():
    vms = hostile_vms()
    start = len(st.log_text(False))
    st.control("vms", {"vms": [vm for _, vm in vms]})
    for i, (label, vm) in enumerate(vms):
        produce(f"hostile-{i:03d}", update_event(vm["id"]), i % PARTITIONS)
    ids = {vm["id"] for _, vm in vms}
    wait_until("an outcome for every hostile VM", lambda: all(
        re.search(rf"vm={i}[ :]", st.log_text(False)[start:]) for i in ids), 60, interval=0.5)
    carried = [vm for vm in event_vms if fk.owner_refs_usable(vm)]
    state = {"vms": fk.sim_state(st)["vms"] + carried}
    v = fk.verify_exact(st, state, w.setup_body(), zones, TTL,
                        vm_ids=ids | set(good_vms) | {vm["id"] for vm in carried})
    died = st.daemon.poll() is not None
    reliability.record(TEST, "VMs with SQL/DNS-injection names and groups, absurd addresses",
                       len(vms), lost=v.lost, duplicates=len(v.duplicates), crashes=int(died),
                       ok=not (v.problems() or died), note="sanitised by the policy or not written")
    v.assert_ok("hostile VMs")
    odd = [row for row in st.sql(
        "SELECT r.name, r.type, r.content FROM records r JOIN domains d ON d.id = r.domain_id "
        f"WHERE d.name IN ({fk.quoted(zones)}) AND r.type IN ('A','AAAA','PTR')")
        if not fk.LDH_NAME.match(row[0]) or (row[1] == "PTR" and not fk.LDH_NAME.match(row[2]))]
    eq(odd, [], "names that are not LDH host names")
    fig["bad_vms"] = len(vms)


def naive_policy():
    # A second daemon on its own topic and group, whose policy copies names unchecked.
    st.stop_daemon()
    path = os.path.join(st.workdir, "naive.lua")
    with open(path, "w") as f:
        f.write(NAIVE_POLICY)
    topic = st.topic + "-naive"
    from stack import kafka_control
    kafka_control(st.state, f"topic {topic} 1")
    evil = [raw_vm("x'; DROP TABLE records; --", f"10.{w.n}.1.230"),
            raw_vm("a b", f"10.{w.n}.1.231"),
            raw_vm(f"evil.{w.cust_zone}\n@ IN NS ns.evil", f"10.{w.n}.1.232"),
            raw_vm("ok-name", "10.0.0.1'; --"),
            raw_vm("ok-name2", f"10.{w.n}.1.233", group="x'; DELETE FROM records;"),
            raw_vm("a" * 64, f"10.{w.n}.1.234"),
            raw_vm("-bad-", f"10.{w.n}.1.235"),
            raw_vm("ünï", f"10.{w.n}.1.236")]
    fine = raw_vm("naive-ok", f"10.{w.n}.1.237")
    st.control("vms", {"vms": evil + [fine]})
    for vm in evil + [fine]:
        produce(vm["id"][:8], update_event(vm["id"]), 0, topic)
    st.start_daemon(POLICY_FILE=path, KAFKA_TOPIC=topic, KAFKA_GROUP=st.group + "-naive",
                    RESYNC_INTERVAL=0)
    wait_until("the valid VM applied by the naive policy",
               lambda: st.rows(f"naive-ok.{w.acme_zone}", "A"), 60, interval=0.5)
    text = st.log_text()
    offsets = offsets_by_key(topic)
    for vm in evil:
        p, o = offsets[vm["id"][:8]]
        line = re.search(rf"pos={re.escape(topic)}/{p}@{o} msg=\"vm={vm['id']}[^\n]*", text)
        assert line and "failed, skipped" in line.group(0), \
            f"{vm['name']!r}: not refused by the host ({line.group(0) if line else 'no line'})"
        eq(st.sql1(f"SELECT COUNT(*) FROM cspdns_record WHERE vm_id = '{vm['id']}'"), "0",
           f"rows owned by {vm['name']!r}")
        fig["naive_rejected"] += 1
    odd = st.sql("SELECT r.name, r.content FROM records r "
                 "JOIN cspdns_record o ON o.record_id = r.id "
                 "WHERE r.name REGEXP '[^a-z0-9.-]' OR r.content REGEXP '[^a-z0-9.:-]'")
    eq(odd, [], "rows owned by cs-pdns, anywhere, with characters outside names and addresses")
    reliability.record(TEST, "injection names through a policy that does not sanitise",
                       len(evil), ok=True, note="each refused by the host's record checks")


def alive_and_no_secrets():
    assert st.daemon.poll() is None, "cs-pdns died"
    print(f"  figures: {fig}")


reliability.start(TEST)
try:
    r.check("setup", setup)
    r.check("malformed messages: logged at their position, skipped, next event applied",
            bad_messages)
    r.check("hostile names and absurd addresses: sanitised or not written", hostile_names)
    r.check("a policy that copies names unchecked: the host refuses them", naive_policy)
    r.check("cs-pdns still running", alive_and_no_secrets)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
sys.exit(r.finish())
