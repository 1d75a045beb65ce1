#!/usr/bin/env python3
"""test_scaleout.py -- two cs-pdns instances in one consumer group share a 4-partition topic.

A random workload goes through the CloudStack simulator onto a 4-partition topic, keyed by VM id as
CloudStack keys it. Two instances in one group must split the partitions and apply every event
once (no offset finished by both, no duplicate rows, the database exactly what the simulator's
state implies); after a kill -9 of one, the other must take its partitions over (session timeout
6 s on the mock broker) and finish the stream; and with RESYNC_INTERVAL set, each VM must be
resynced by exactly one instance -- the one whose partitions its id hashes to under Kafka's
murmur2, computed here independently. Uses a database of its own (resyncs weigh every owned
record). Must not: skip, or assert on timing.
"""
import os
import re
import signal
import subprocess
import sys
import uuid

import faultkit as fk
from harness import Results, eq, wait_until
from private_db import PrivateDbStack
from world import World

TTL = 60
PARTITIONS = 4
SEED = int(os.environ.get("CSPDNS_SCALEOUT_SEED", "4242"))
# No resync while the event path is under test: it would repair what a lost event left wrong.
QUIET = {"RESYNC_INTERVAL": 0}

st = PrivateDbStack("scaleout")
w = World(st, 33)
r = Results()
zones = fk.world_zones(w)
work = fk.Workload(st, w, SEED, max_vms=160)
serials = {}


def murmur2(data):
    """Kafka's Utils.murmur2, written from its definition: the oracle the instances must match."""
    m, length = 0x5BD1E995, len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[length - length % 4:]
    if tail:
        for j in reversed(range(len(tail))):
            h ^= tail[j] << (8 * j)
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(vm_id):
    return (murmur2(vm_id.encode()) & 0x7FFFFFFF) % PARTITIONS


class Instance:
    """One cs-pdns process of the group, with a log of its own."""

    def __init__(self, name):
        self.name = name
        self.log = os.path.join(st.workdir, f"{name}.log")
        self.proc = None
        self.offset = 0

    def start(self, **env):
        self.offset = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([st.bin, "run"], env=st.daemon_env(**env), stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()

    def text(self, since_start=True):
        if not os.path.exists(self.log):
            return ""
        with open(self.log, errors="replace") as f:
            if since_start:
                f.seek(self.offset)
            return f.read()

    def assigned_now(self):
        """Partitions held after the last assignment, or None while a rebalance is under way."""
        events = re.findall(r'msg="(assigned|revoked) (\d+) partition', self.text())
        if not events or events[-1][0] != "assigned":
            return None
        return int(events[-1][1])

    def kill9(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited on its own with {self.proc.returncode}")
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self):
        if not self.proc:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop within 60 s of SIGTERM")
        self.proc = None
        return rc


a, b = Instance("a"), Instance("b")


def both_logs():
    return a.text(False) + b.text(False)


def wait_split(*insts):
    """Waits until the group settled with every partition assigned to one of insts."""
    wait_until("the group to settle with every partition assigned",
               lambda: all(i.assigned_now() for i in insts)
               and sum(i.assigned_now() for i in insts) == PARTITIONS, 90, 0.2)


def wait_all_done(timeout=240):
    """Every message now on the topic finished by one of the instances; returns the end offsets."""
    ends = fk.end_offsets(st)
    wait_until("every offset to be finished by the group",
               lambda: not fk.offset_gaps(both_logs(), st, ends), timeout, 0.5)
    return ends


def exact(what):
    v = fk.verify_exact(st, fk.sim_state(st), w.setup_body(), zones, TTL, serials)
    v.assert_ok(what)
    eq(fk.duplicate_rows(st, zones), [], "duplicate records rows")


def setup():
    w.create_zones()
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    from stack import kafka_control
    kafka_control(st.state, f"topic {st.topic} {PARTITIONS}")
    serials.update(fk.zone_serials(st, zones))
    a.start(**QUIET)
    b.start(**QUIET)
    wait_split(a, b)


def every_event_once():
    work.run(500)
    ends = wait_all_done()
    done_a = fk.processed_offsets(a.text(False), st.topic)
    done_b = fk.processed_offsets(b.text(False), st.topic)
    print(f"  {sum(ends.values())} messages on partitions {sorted(ends)}; a finished partitions "
          f"{sorted(done_a)}, b {sorted(done_b)}; {dict(work.ops)}")
    eq(sorted(ends), list(range(PARTITIONS)), "partitions holding messages")
    # Each instance saw only its own partitions, and no message was finished twice.
    eq(set(done_a) & set(done_b), set(), "partitions both instances finished messages of")
    assert done_a and done_b, f"one instance did nothing: a {sorted(done_a)}, b {sorted(done_b)}"
    twice = {p: done_a.get(p, set()) & done_b.get(p, set()) for p in range(PARTITIONS)}
    eq({p: o for p, o in twice.items() if o}, {}, "offsets finished by both instances")
    exact("after the shared stream")


def takeover_after_kill():
    before_a = set(fk.processed_offsets(a.text(False), st.topic))
    b_mark = len(b.text(False))
    # kill -9 one second into a paced stream: its partitions stall until its session times out,
    # then the survivor gets them and the stream completes.
    work.during(400, 0.01, a.kill9)
    wait_until("b to hold every partition",
               lambda: b.assigned_now() == PARTITIONS, 60, 0.2)
    wait_all_done()
    after_b = set(fk.processed_offsets(b.text(False)[b_mark:], st.topic))
    print(f"  a had partitions {sorted(before_a)}; b finished {sorted(after_b)} after the kill")
    assert before_a <= after_b, f"b did not take over {sorted(before_a - after_b)}"
    exact("after the takeover")


def make_vm(name, last):
    """A VM stored in the simulator without any event: drift only a resync can find."""
    nic = {"id": str(uuid.uuid4()), "networkid": w.net_acme, "networkname": "acme-net",
           "isdefault": True, "ipaddress": f"10.{w.n}.1.{last}", "traffictype": "Guest",
           "type": "Isolated", "macaddress": f"02:00:00:00:{w.n:02x}:{last:02x}"}
    return {"id": str(uuid.uuid4()), "name": name, "displayname": name, "account": "acme",
            "domainid": w.domain_id, "state": "Running", "nic": [nic]}


RESYNC_START = re.compile(r'msg="resync started: .* handling those of partitions '
                          r'([\d,]+) of (\d+)"')
RESYNC_DONE = re.compile(r'msg="resync (\w+) in [\d.]+s: vms=(\d+) in_scope=(\d+) '
                         r'partitions=([\d,]+)/(\d+) ')
RESYNC_VM = re.compile(r'msg="vm=(\S+) resync state=')


def first_complete_resync(inst, since):
    """(result, partitions, in_scope, VMs it reconciled) of the instance's first resync that
    started after offset `since` of its log (since its start) and ran to its end, or None."""
    text = inst.text()[since:]
    for st_m in RESYNC_START.finditer(text):
        done = RESYNC_DONE.search(text, st_m.end())
        if not done:
            continue
        nxt = RESYNC_START.search(text, st_m.end())
        if nxt and nxt.start() < done.start():
            continue  # that one was ended by a rebalance
        body = text[st_m.end():done.start()]
        parts = frozenset(int(p) for p in done.group(4).split(","))
        return (done.group(1), parts, int(done.group(3)),
                [m.group(1) for m in RESYNC_VM.finditer(body)])
    return None


def resync_split():
    b.stop()
    a.stop()
    # Resyncs every few seconds: the first of each instance that starts once the group has
    # settled and the drift below exists is measured (a resync that began while one instance
    # still held every partition rightly covered all VMs).
    env = {"RESYNC_INTERVAL": 4}
    a.start(**env)
    b.start(**env)
    wait_split(a, b)
    # Drift without events: VMs only a resync can find, and one that vanished unnoticed.
    fresh = st.control("vms", {"vms": [make_vm(f"drift-{i:02d}", 200 + i) for i in range(12)]})
    live = [vm for vm, d in work.vms.items() if d["state"] == "Running"]
    gone = live[0]
    st.control("delete_vm", {"id": gone})
    work.vms[gone]["state"] = "Expunged"
    mark_a, mark_b = len(a.text()), len(b.text())

    def settled():
        ra, rb = first_complete_resync(a, mark_a), first_complete_resync(b, mark_b)
        if not ra or not rb or ra[1] | rb[1] != frozenset(range(PARTITIONS)) or ra[1] & rb[1]:
            return None
        return ra, rb
    ra, rb = wait_until("a resync on each instance over the settled assignment", settled, 180,
                        0.5)
    listed = {vm["id"] for vm in fk.sim_state(st)["vms"] if not vm["removed"]}
    print(f"  a: {ra[0]} partitions {sorted(ra[1])} in_scope={ra[2]}; b: {rb[0]} partitions "
          f"{sorted(rb[1])} in_scope={rb[2]}; {len(listed)} VMs listed")
    eq((ra[0], rb[0]), ("converged", "converged"), "resync results")
    # A VM may be logged twice by one resync: when its batch's transaction fails (two instances
    # writing the same zones can deadlock), the batch is applied again one VM at a time.
    seen_a, seen_b = set(ra[3]), set(rb[3])
    eq(seen_a & seen_b, set(), "VMs both instances resynced")
    # Each resynced exactly the listed VMs (and the vanished one) that hash to its partitions.
    for name, res, seen in (("a", ra, seen_a), ("b", rb, seen_b)):
        want = {v for v in listed | {gone} if partition_of(v) in res[1]}
        eq(sorted(seen), sorted(want), f"VMs {name} resynced (its partitions {sorted(res[1])})")
        eq(res[2], len(want - {gone}), f"{name}'s in_scope count")
    owner, other = (a, b) if partition_of(gone) in ra[1] else (b, a)
    since = {a: mark_a, b: mark_b}
    assert re.search(rf'msg="vm={gone} resync state=gone ', owner.text()[since[owner]:]), \
        "the vanished VM was not cleared by the instance of its partition"
    assert gone not in other.text()[since[other]:], \
        f"{other.name} handled the vanished VM of {owner.name}"
    for vm_id in fresh["ids"]:
        assert vm_id in (seen_a | seen_b), f"drift VM {vm_id} not resynced"
    exact("after the scoped resyncs")


try:
    r.check("setup: two instances in one group split 4 partitions", setup)
    r.check("every event applied once: disjoint partitions, no offset twice, exact rows",
            every_event_once)
    r.check("kill -9 one instance: the other takes its partitions and the stream completes",
            takeover_after_kill)
    r.check("RESYNC_INTERVAL: each VM is resynced by exactly one instance (murmur2 scope)",
            resync_split)
finally:
    if r.failed:
        for inst in (a, b):
            print(f"---- {inst.name} log (last 40 lines) ----")
            print("\n".join(inst.text(False).splitlines()[-40:]))
    for inst in (a, b):
        if inst.proc:
            try:
                inst.stop()
            except AssertionError as e:
                print(f"  (cleanup) {e}")
    st.close()
sys.exit(r.finish())
