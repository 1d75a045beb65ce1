#!/usr/bin/env python3
"""test_faults_broker.py -- Kafka trouble on a 3-broker cluster: partition leaders move, a broker
goes down mid-stream (its partitions fail over), the group coordinator moves and its broker goes
down; consumption carries on with no event lost and no row duplicated.

Runs on a stack of its own whose Kafka mock has three brokers; the trouble is made through the
mock's control socket while a random workload streams. Must not: skip, or restart cs-pdns.
"""
import os
import random
import sys
import time

import faultkit as fk
import reliability

TEST = "faults_broker"
SEED = int(os.environ.get("CSPDNS_FAULT_SEED", str(int(time.time()))))
TTL = 60
PARTITIONS = 4

private = fk.PrivateStack(brokers=3)
from harness import Results, Stack, eq  # noqa: E402
from world import World  # noqa: E402

st = Stack("fbrk")
w = World(st, 24)
r = Results()
rng = random.Random(SEED)
zones = fk.world_zones(w)
serials = {}
work = None
leaders = {}
pid = {}
done = {"moves": 0, "downs": 0, "coordinator_moves": 0}


def ctl(command):
    private.kafka(command)
    print(f"  kafka: {command}")


def set_leader(p, broker):
    ctl(f"leader {st.topic} {p} {broker}")
    leaders[p] = broker



def verify(what, fault, tried, note=""):
    assert st.daemon.poll() is None, f"cs-pdns exited with {st.daemon.returncode}"
    eq(st.daemon.pid, pid["daemon"], "cs-pdns process")
    v, gaps, dups = fk.check_round(st, w, zones, TTL)
    lost = v.lost + sum(len(g) for g in gaps.values())
    reliability.record(TEST, fault, tried, lost=lost, duplicates=len(v.duplicates) + len(dups),
                       ok=not (v.problems() or gaps or dups), note=note)
    fk.assert_round(what, v, gaps, dups)


def setup():
    global work
    w.create_zones()
    ctl(f"topic {st.topic} {PARTITIONS} 3")
    for p in range(PARTITIONS):
        set_leader(p, p % 3 + 1)
    ctl(f"coordinator group {st.group} 1")
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    serials.update(fk.zone_serials(st, zones))
    work = fk.Workload(st, w, SEED, max_vms=150)
    print(f"  seed {SEED}")
    # No resyncs: they would repair what a lost event left wrong; this tests the event path.
    st.start_daemon(KAFKA_CFG_SESSION_TIMEOUT_MS=3000, KAFKA_CFG_HEARTBEAT_INTERVAL_MS=500,
                    RESYNC_INTERVAL=0)
    pid["daemon"] = st.daemon.pid
    work.run(40)
    fk.wait_caught_up(st)


def leaders_move():
    def trouble():
        for _ in range(3):
            for p in range(PARTITIONS):
                set_leader(p, leaders[p] % 3 + 1)
                done["moves"] += 1
                time.sleep(rng.uniform(0.2, 1.0))

    work.during(150, 0.05, trouble, join_s=180)
    verify("after leader moves", "partition leaders moved mid-stream (3 brokers)", done["moves"])


def broker_down():
    def trouble():
        victim = leaders[0]
        ctl(f"down {victim}")
        done["downs"] += 1
        time.sleep(2)  # unavailable until the controller elects new leaders
        for p in range(PARTITIONS):
            if leaders[p] == victim:
                set_leader(p, victim % 3 + 1)
        time.sleep(5)
        ctl(f"up {victim}")
        time.sleep(1)
        for p in range(PARTITIONS):
            set_leader(p, p % 3 + 1)

    work.during(150, 0.05, trouble, join_s=180)
    verify("after a broker went down", "a partition leader's broker down ~7 s mid-stream, "
           "leaders failed over", 1)


def coordinator_down():
    def trouble():
        ctl(f"coordinator group {st.group} 2")
        done["coordinator_moves"] += 1
        time.sleep(3)
        ctl("down 2")
        done["downs"] += 1
        for p in range(PARTITIONS):
            if leaders[p] == 2:
                set_leader(p, 3)
        time.sleep(1)
        ctl(f"coordinator group {st.group} 3")
        done["coordinator_moves"] += 1
        time.sleep(5)
        ctl("up 2")

    work.during(150, 0.05, trouble, join_s=180)
    verify("after the coordinator moved and its broker went down",
           "group coordinator moved, then its broker down ~6 s", 1)


def final():
    v = fk.verify_exact(st, fk.sim_state(st), w.setup_body(), zones, TTL, serials)
    v.assert_ok("final state")
    text = st.log_text(False)
    print(f"  {work.total()} API operations; Kafka warnings logged by cs-pdns: "
          f"{text.count('level=warn mod=kafka')}; figures {done}")


reliability.start(TEST)
try:
    r.check("setup (own stack, Kafka mock with 3 brokers)", setup)
    r.check("partition leaders move mid-stream: nothing lost or duplicated", leaders_move)
    r.check("a broker goes down mid-stream: nothing lost or duplicated", broker_down)
    r.check("the group coordinator moves and goes down: nothing lost", coordinator_down)
    r.check("same process throughout; final state exact, serials advanced", final)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
    private.close()
sys.exit(r.finish())
