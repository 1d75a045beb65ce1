#!/usr/bin/env python3
"""test_faults_api.py -- the CloudStack API goes away or misbehaves mid-stream: events wait with
capped backoff and loud logs, without a busy loop, and are all applied once the API is back.

cs-pdns reaches the simulator through a TCP forwarder of this test, so the API can refuse
connections (the port closed) while the simulator keeps its state. Faults: connection refused,
timeouts (answers slower than CS_TIMEOUT), slow but timely answers, HTTP 503/500, and HTTP 401
after the API key's secret was rotated (then restored). During each, the API calls per second are
counted. Must not: skip, or restart cs-pdns.
"""
import os
import sys
import time

import faultkit as fk
import reliability
from harness import API_KEY, ROTATED_SECRET, SECRET, Results, Stack, eq, wait_until
from world import World

TEST = "faults_api"
SEED = int(os.environ.get("CSPDNS_FAULT_SEED", str(int(time.time()))))
TTL = 60
CAP_MS = 2000
LIST_COMMANDS = ["listVirtualMachines", "listAccounts", "listDomains", "listProjects"]
MAX_CALLS_PER_S = 20  # a busy loop makes hundreds; capped backoff makes a few

st = Stack("fapi")
w = World(st, 23)
r = Results()
zones = fk.world_zones(w)
serials = {}
work = None
proxy = None
pid = {}


def list_calls():
    calls = st.control("state?vms=0")["calls"]
    return sum(calls.get(c, 0) for c in LIST_COMMANDS)



def outage(seconds, begin, end):
    """Runs begin(), waits, end(); returns (API calls per second meanwhile, seconds)."""
    c0, t0 = list_calls(), time.time()
    begin()
    try:
        time.sleep(seconds)
    finally:
        end()
    dt = time.time() - t0
    return (list_calls() - c0) / dt, dt


def verify(what, fault, note, tried=1):
    assert st.daemon.poll() is None, f"cs-pdns exited with {st.daemon.returncode}"
    eq(st.daemon.pid, pid["daemon"], "cs-pdns process")
    v, gaps, dups = fk.check_round(st, w, zones, TTL)
    lost = v.lost + sum(len(g) for g in gaps.values())
    reliability.record(TEST, fault, tried, lost=lost, duplicates=len(v.duplicates) + len(dups),
                       ok=not (v.problems() or gaps or dups), note=note)
    fk.assert_round(what, v, gaps, dups)


def setup():
    global work, proxy
    w.create_zones()
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    serials.update(fk.zone_serials(st, zones))
    proxy = fk.TcpProxy(st.sim_port)
    work = fk.Workload(st, w, SEED, max_vms=150)
    print(f"  seed {SEED}")
    # No resyncs: they would repair what a lost event left wrong; this tests the event path.
    st.start_daemon(KAFKA_CFG_SESSION_TIMEOUT_MS=3000, KAFKA_CFG_HEARTBEAT_INTERVAL_MS=500,
                    RETRY_MAX_BACKOFF_MS=CAP_MS, CS_TIMEOUT=2, RESYNC_INTERVAL=0,
                    CS_ENDPOINT=f"http://127.0.0.1:{proxy.port}/client/api")
    pid["daemon"] = st.daemon.pid
    work.run(40)
    fk.wait_caught_up(st)


def check_waiting(text, cause, what, reach_cap=True):
    waits = fk.assert_capped_backoff(text, CAP_MS, what, reach_cap)
    lines = [line for line in text.splitlines() if "will retry" in line]
    assert lines and all("level=warn" in line for line in lines), f"{what}: no warn lines"
    assert any(cause in line for line in lines), f"{what}: no retry line names {cause!r}"
    return waits


def refused():
    res = {}

    def fault():
        t0 = time.time()
        proxy.down()
        try:
            time.sleep(10)
        finally:
            proxy.up()
        res["s"] = time.time() - t0

    text = work.during(60, 0.05, fault)
    attempts = text.count("cannot talk to")
    rate = attempts / res["s"]
    verify("after connection refused", "CloudStack API refuses connections ~10 s",
           f"{rate:.1f} attempts/s, backoff up to {max(fk.backoffs(text), default=0)} ms")
    waits = check_waiting(text, "Couldn't connect to server", "connection refused")
    print(f"  refused {res['s']:.0f} s: {attempts} attempts ({rate:.1f}/s), waits {waits[-3:]}")
    assert rate < MAX_CALLS_PER_S, f"{rate:.1f} attempts per second"


def timeouts():
    res = {}

    def fault():
        res["rate"], res["s"] = outage(
            12, lambda: st.control("faults", {"mode": "delay", "delay_ms": 4000,
                                              "commands": LIST_COMMANDS}),
            lambda: st.control("faults", {"mode": "none"}))

    text = work.during(40, 0.1, fault)
    verify("after timeouts", "CloudStack API answers after CS_TIMEOUT (timeouts) ~12 s",
           f"{res['rate']:.1f} calls/s, backoff up to {max(fk.backoffs(text), default=0)} ms")
    # Each attempt itself takes CS_TIMEOUT here, so fewer retries fit: the cap may not be reached.
    check_waiting(text, "no answer from", "timeouts", reach_cap=False)
    print(f"  timeouts {res['s']:.0f} s: {res['rate']:.1f} calls/s")
    assert res["rate"] < MAX_CALLS_PER_S


def slow():
    res = {}
    before = len(st.log_text(False))

    def fault():
        res["rate"], res["s"] = outage(
            8, lambda: st.control("faults", {"mode": "delay", "delay_ms": 700,
                                             "commands": LIST_COMMANDS}),
            lambda: st.control("faults", {"mode": "none"}))

    work.during(30, 0.1, fault)
    text = st.log_text(False)[before:]
    retries = [line for line in text.splitlines() if "will retry" in line]
    eq(retries, [], "retries for answers slower than usual but within CS_TIMEOUT")
    verify("after slow answers", "CloudStack API slow (0.7 s per call, within CS_TIMEOUT) ~8 s",
           "applied without retries")


def http_5xx():
    res = {}

    def fault():
        r1, s1 = outage(6, lambda: st.control("faults", {"mode": "http_status", "status": 503,
                                                         "commands": LIST_COMMANDS}),
                        lambda: None)
        r2, s2 = outage(6, lambda: st.control("faults", {"mode": "http_status", "status": 500,
                                                         "commands": LIST_COMMANDS}),
                        lambda: st.control("faults", {"mode": "none"}))
        res["rate"], res["s"] = (r1 * s1 + r2 * s2) / (s1 + s2), s1 + s2

    text = work.during(60, 0.05, fault)
    verify("after HTTP 5xx", "CloudStack API answers HTTP 503, then 500, ~12 s",
           f"{res['rate']:.1f} calls/s, backoff up to {max(fk.backoffs(text), default=0)} ms")
    check_waiting(text, "HTTP 503", "HTTP 5xx")
    assert "HTTP 500" in text, "no retry line for HTTP 500"
    print(f"  5xx {res['s']:.0f} s: {res['rate']:.1f} calls/s")
    assert res["rate"] < MAX_CALLS_PER_S


def http_401_rotation():
    res = {}
    rotated = ROTATED_SECRET

    def begin():
        st.control("rotate_key", {"apikey": API_KEY, "new_secret": rotated})
        st.cs.secret = rotated  # the operator's own client knows the new secret

    def end():
        st.control("rotate_key", {"apikey": API_KEY, "new_secret": SECRET})
        st.cs.secret = SECRET

    def fault():
        res["rate"], res["s"] = outage(10, begin, end)

    text = work.during(50, 0.05, fault)
    verify("after key rotation and restore", "HTTP 401 after an API key rotation ~10 s, restored",
           f"{res['rate']:.1f} calls/s, backoff up to {max(fk.backoffs(text), default=0)} ms")
    check_waiting(text, "HTTP 401", "HTTP 401")
    assert "check CS_API_KEY" in text, "the 401 retry line does not say what to check"
    print(f"  401 {res['s']:.0f} s: {res['rate']:.1f} calls/s")
    assert res["rate"] < MAX_CALLS_PER_S


def final():
    v = fk.verify_exact(st, fk.sim_state(st), w.setup_body(), zones, TTL, serials)
    v.assert_ok("final state")
    print(f"  {work.total()} API operations: {dict(work.ops)}; refused {dict(work.errors)}")


reliability.start(TEST)
try:
    r.check("setup (cs-pdns reaches the API through a forwarder)", setup)
    r.check("connection refused: events wait, then applied", refused)
    r.check("timeouts: events wait, then applied", timeouts)
    r.check("slow answers: applied, no retries", slow)
    r.check("HTTP 503/500: events wait, then applied", http_5xx)
    r.check("HTTP 401 after key rotation: events wait, applied after restore", http_401_rotation)
    r.check("same process throughout; final state exact, serials advanced", final)
finally:
    if r.failed:
        st.dump_logs()
    if proxy:
        proxy.down()
    st.close()
sys.exit(r.finish())
