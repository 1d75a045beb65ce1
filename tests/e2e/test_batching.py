#!/usr/bin/env python3
"""test_batching.py -- batches: a backlog with many events per VM ends exactly as the simulator's
final state says; a poison message and a VM the policy fails on hold nothing back; a partition
waiting on CloudStack waits alone; kill -9 in the middle of a backlog loses and duplicates nothing.

The backlog is produced before cs-pdns starts, on a 3-partition topic keyed by VM id, so cs-pdns
meets it as full batches (several events of one VM in one batch). Must not: skip, or read what to
expect from cs-pdns (the expected records come from the simulator's state, see faultkit).
"""
import os
import random
import re
import subprocess
import sys
import time

import faultkit as fk
from harness import Results, Stack, eq, wait_until
from stack import kafka_control
from world import World

SEED = int(os.environ.get("CSPDNS_FAULT_SEED", str(int(time.time()))))
TTL = 60
VMS = 120
# Fast rejoin after kill -9; no resyncs: they would repair what a lost event left wrong.
DAEMON_ENV = {"KAFKA_CFG_SESSION_TIMEOUT_MS": 3000, "KAFKA_CFG_HEARTBEAT_INTERVAL_MS": 500,
              "RESYNC_INTERVAL": 0, "RETRY_MAX_BACKOFF_MS": 1000, "BATCH_MAX_EVENTS": 500}

st = Stack("batch")
w = World(st, 27)
r = Results()
rng = random.Random(SEED)
zones = fk.world_zones(w)
serials = {}
bad = {}  # what the backlog holds that cannot be applied
POLICY = """
local default = require("cspdns.default")
return {
    name = "fails-on-bad", version = "1",
    records = function(vm, ctx)
        if tostring(vm.name):match("^bad%-") then
            error("refusing " .. vm.name)
        end
        return default.records(vm, ctx)
    end,
}
"""


def named(label):
    """Rows named label in this test's forward zones (other runs share the database)."""
    return int(st.sql1(f"SELECT COUNT(*) FROM records WHERE name LIKE '{label}.%' "
                       f"AND name LIKE '%{st.tag}.example'"))


def call(command, **params):
    return st.cs.call(command, **params)


def deploy(i):
    owner = ("acme", "beta", "proj")[i % 3]
    params = {"name": f"b{i:04d}", "zoneid": "zone-1", "templateid": "tmpl-1",
              "serviceofferingid": "so-1"}
    if owner == "proj":
        params.update(projectid=w.project_id, networkids=w.net_proj)
    else:
        params.update(account=owner, domainid=w.domain_id,
                      networkids=w.net_beta if owner == "beta" else w.net_acme)
    if i % 4 == 0:
        params["group"] = ("web", "db")[i % 2]
    return call("deployVirtualMachine", **params)["deployvirtualmachineresponse"]["id"]


def lifecycle(ids, first):
    """Several events per VM: stop, start, rename, and for some destroy, then expunge."""
    for n, vm in enumerate(ids):
        call("stopVirtualMachine", id=vm)
        call("startVirtualMachine", id=vm)
        call("updateVirtualMachine", id=vm, name=f"r{first + n:04d}")
        if n % 3 == 0:
            call("destroyVirtualMachine", id=vm)
            if n % 2 == 0:
                call("expungeVirtualMachine", id=vm)


def backlog(first, count):
    ids = [deploy(i) for i in range(first, first + count)]
    lifecycle(ids, first)
    return ids


def partition_of_keys():
    res = subprocess.run(["kcat", "-C", "-b", st.state["kafka"]["bootstrap"], "-t", st.topic,
                          "-e", "-q", "-f", "%k\t%p\t%o\n"], capture_output=True, check=True,
                         timeout=120, text=True, errors="replace")
    out = {}
    for line in res.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            out.setdefault(parts[0], []).append((int(parts[1]), int(parts[2])))
    return out


def exact(what, exclude=()):
    ends = fk.wait_caught_up(st, timeout=240)
    state = fk.sim_state(st)
    ids = [vm["id"] for vm in state["vms"] if vm["id"] not in exclude]
    v = fk.verify_exact(st, state, w.setup_body(), zones, TTL, serials, vm_ids=ids)
    gaps = fk.offset_gaps(st.log_text(False), st, ends)
    fk.assert_round(what, v, gaps, fk.duplicate_rows(st, zones))
    return ends, state


def setup():
    w.create_zones()
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    kafka_control(st.state, f"topic {st.topic} 3")
    serials.update(fk.zone_serials(st, zones))
    path = os.path.join(st.workdir, "policy.lua")
    with open(path, "w") as f:
        f.write(POLICY)
    DAEMON_ENV["POLICY_FILE"] = path
    print(f"  seed {SEED}")


def backlog_converges():
    ids = backlog(0, VMS // 2)
    # A poison message and a VM the policy fails on, in the middle of the backlog.
    st.publish("{\"event\": \"VM.CREATE\", truncated", key=ids[0])
    bad["vm"] = w.deploy("bad-01")
    call("stopVirtualMachine", id=bad["vm"])
    ids += backlog(VMS // 2, VMS // 2)
    st.control("flush", {})
    ends = fk.end_offsets(st)
    print(f"  backlog: {sum(ends.values())} messages on {len(ends)} partitions "
          f"({dict(sorted(ends.items()))})")
    assert len(ends) == 3 and sum(ends.values()) >= 2000, ends
    t0 = time.time()
    st.start_daemon(**DAEMON_ENV)
    ends, state = exact("backlog", exclude={bad["vm"]})
    print(f"  caught up in {time.time() - t0:.1f} s (from start, group join included)")
    text = st.log_text(False)
    supersede = len(re.findall(r"state=superseded", text))
    assert supersede > 0, "no event was superseded by a later one of its VM in a batch"
    gone = sum(1 for vm in state["vms"] if vm.get("removed") or vm["state"] == "Destroyed")
    assert gone >= VMS // 3, f"only {gone} VMs destroyed or expunged"
    bad["state"] = state


def poison_and_policy_failure_logged():
    text = st.log_text(False)
    where = partition_of_keys()
    poison = re.findall(rf'pos={re.escape(st.topic)}/(\d+)@(\d+) msg="malformed message skipped',
                        text)
    eq(len(poison), 1, "malformed message lines")
    p, o = map(int, poison[0])
    # It is on its key's partition, and the messages after it there were applied.
    assert (p, o) in [x for xs in where.values() for x in xs], (p, o)
    later = [x for xs in where.values() for x in xs if x[0] == p and x[1] > o]
    assert later, "nothing after the poison message on its partition"
    done = fk.processed_offsets(text, st.topic)[p]
    assert all(x[1] in done for x in later), "messages after the poison message not finished"
    failed = re.findall(rf'pos={re.escape(st.topic)}/(\d+)@(\d+) msg="vm={bad["vm"]} event=\S+: '
                        r"policy fails-on-bad/1 failed, skipped", text)
    assert failed, "the policy failure was not logged with its position"
    eq(st.sql1(f"SELECT COUNT(*) FROM cspdns_record WHERE vm_id='{bad['vm']}'"), "0",
       "rows of the VM the policy fails on")


def one_partition_waits_on_cloudstack():
    where = partition_of_keys()
    live = [vm for vm in bad["state"]["vms"] if vm["state"] == "Running" and not vm.get("removed")
            and vm["id"] != bad["vm"]]
    by_part = {}
    for vm in live:
        by_part.setdefault(where[vm["id"]][0][0], []).append(vm["id"])
    assert len(by_part) == 3, f"live VMs on partitions {sorted(by_part)}"
    stuck_p = rng.choice(sorted(by_part))
    victim, behind = by_part[stuck_p][:2]
    others = [by_part[q][0] for q in sorted(by_part) if q != stuck_p]
    st.control("faults", {"mode": "http_status", "status": 503,
                          "commands": ["listVirtualMachines"], "params": {"id": victim}})
    start = len(st.log_text(False))
    try:
        # The victim's rename needs the API (VM.UPDATE carries no VM); then, behind it on its
        # partition, a rename of another VM; and renames on the other partitions.
        call("updateVirtualMachine", id=victim, name="victim-x")
        call("updateVirtualMachine", id=behind, name="behind-x")
        for n, vm in enumerate(others):
            call("updateVirtualMachine", id=vm, name=f"other-{n}-x")
        st.control("flush", {})
        for n, vm in enumerate(others):
            wait_until(f"other partition's rename {n}",
                       lambda n=n: named(f"other-{n}-x") > 0, 30)
        time.sleep(3)
        text = st.log_text(False)[start:]
        waits = re.findall(rf'pos={re.escape(st.topic)}/(\d+)@\d+ msg="retrying in (\d+) ms',
                           text)
        assert waits and {int(p) for p, _ in waits} == {stuck_p}, waits
        assert len(waits) >= 2, f"no backoff: {waits}"
        assert max(int(ms) for _, ms in waits) <= 1000, waits
        eq(named("behind-x"), 0, "the event behind the waiting one on its partition was applied")
        eq(named("victim-x"), 0, "the failing event was applied")
    finally:
        st.control("faults", {"mode": "none"})
    for name in ("victim-x", "behind-x"):
        wait_until(f"{name} applied once CloudStack answers",
                   lambda name=name: named(name) > 0, 30)
    exact("after the partition waited", exclude={bad["vm"]})


def kill9_mid_backlog():
    eq(st.stop_daemon(), 0, "exit status")
    backlog(VMS, VMS // 2)
    st.control("flush", {})
    kills = 0
    for _ in range(3):
        st.start_daemon(**DAEMON_ENV)
        time.sleep(rng.uniform(0.05, 0.6))
        st.daemon.kill()
        st.daemon.wait()
        st.daemon = None
        kills += 1
    st.start_daemon(**DAEMON_ENV)
    exact("after kill -9 in the middle of a backlog", exclude={bad["vm"]})
    print(f"  {kills} kills; final state exact")


try:
    r.check("setup: 3-partition topic, a policy that fails on bad-*", setup)
    r.check("a backlog with many events per VM converges exactly", backlog_converges)
    r.check("the poison message and the policy failure: logged with position, others applied",
            poison_and_policy_failure_logged)
    r.check("CloudStack failing for one partition's event: that partition waits, others go on",
            one_partition_waits_on_cloudstack)
    r.check("kill -9 in the middle of a backlog: no loss, no duplicates", kill9_mid_backlog)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
sys.exit(r.finish())
