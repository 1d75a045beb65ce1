#!/usr/bin/env python3
"""test_metrics.py -- /metrics, /healthz and /readyz over real HTTP while events flow.

Must not: read cs-pdns's internals; everything is scraped from the endpoint it serves.
"""
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from harness import Results, Stack, eq, wait_until
from world import World

N = 13
st = Stack("metrics")
w = World(st, N)
r = Results()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()
BASE = f"http://127.0.0.1:{PORT}"
seen = []


def get(path):
    try:
        with urllib.request.urlopen(BASE + path, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(name, **labels):
    """The value of one series, 0 when absent."""
    _, text = get("/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return 0.0


def metric_sum(name, **labels):
    """The sum of every series of name whose labels include these."""
    _, text = get("/metrics")
    want = {f'{k}="{v}"' for k, v in labels.items()}
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name and want <= set((m.group(2) or "").split(",")):
            total += float(m.group(3))
    return total


def setup():
    w.create_zones()
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    # Not through start_daemon: the endpoint must be watched before the group is joined.
    st.daemon_log = os.path.join(st.workdir, "cs-pdns.log")
    st._log_offset = 0
    st.daemon = subprocess.Popen([st.bin, "run"], env=st.daemon_env(
        METRICS_ADDR=f"127.0.0.1:{PORT}", RESYNC_INTERVAL=0), stdout=open(st.daemon_log, "ab"),
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def first_answer():
        try:
            return get("/readyz")
        except OSError:
            return None
    status, body = wait_until("the HTTP endpoint", first_answer, 20, interval=0.02)
    seen.append((status, body))


def not_ready_before_assignment():
    status, body = seen[0]
    eq(status, 503, "/readyz before the consumer group assigned partitions")
    assert "partition" in body, body


def ready_and_healthy():
    wait_until("/readyz 200", lambda: get("/readyz")[0] == 200, 30)
    eq(get("/healthz")[0], 200, "/healthz")
    eq(get("/nope")[0], 404, "unknown path")
    assert metric("cspdns_kafka_partitions_assigned") > 0
    eq(metric("cspdns_db_reachable"), 1.0, "db reachable")
    eq(metric("cspdns_policy_loaded"), 1.0, "policy loaded")
    assert metric("cspdns_build_info", version=re.search(
        r'version="([^"]+)"', get("/metrics")[1]).group(1)) == 1.0


def counters_move_when_applied():
    before = metric("cspdns_events_total", kind="VM.CREATE", outcome="applied")
    added = metric_sum("cspdns_records_changed_total", change="added")
    vm = w.deploy("m-01")
    ip = w.default_nic(vm)["ipaddress"]
    wait_until("A", lambda: st.dig(f"m-01.{w.acme_zone}") == [ip], 15)
    wait_until("applied counter", lambda: metric(
        "cspdns_events_total", kind="VM.CREATE", outcome="applied") == before + 1, 10)
    assert metric_sum("cspdns_records_changed_total", change="added") >= added + 4
    assert metric("cspdns_cloudstack_requests_total", command="listAccounts", status="200") >= 1
    assert metric("cspdns_cloudstack_request_duration_seconds_count", command="listAccounts") >= 1
    assert metric("cspdns_db_transaction_duration_seconds_count") >= 1
    assert metric("cspdns_last_event_applied_timestamp_seconds") > 1.7e9


def retries_and_bad_input_counted():
    st.control("faults", {"mode": "http_status", "status": 503, "count": -1,
                          "commands": ["listAccounts"]})
    # beta's owner lookup is not cached yet (OWNER_CACHE_TTL): this event must ask the API.
    vm = w.deploy("m-02", account="beta")
    wait_until("retried counter", lambda: metric(
        "cspdns_events_total", kind="VM.CREATE", outcome="retried") >= 2, 20)
    assert metric("cspdns_consecutive_failures") >= 1
    assert metric("cspdns_cloudstack_requests_total", command="listAccounts", status="503") >= 2
    st.control("faults", {"mode": "none"})
    ip = w.default_nic(vm)["ipaddress"]
    wait_until("applied after recovery", lambda: st.dig(f"m-02.{w.cust_zone}") == [ip], 20)
    wait_until("failures reset", lambda: metric("cspdns_consecutive_failures") == 0, 10)
    bad = metric("cspdns_events_total", kind="other", outcome="bad_input")
    st.publish("{not json", key="x")
    wait_until("bad_input counter", lambda: metric(
        "cspdns_events_total", kind="other", outcome="bad_input") == bad + 1, 15)


def clean_stop():
    eq(st.stop_daemon(), 0, "exit status")


try:
    r.check("setup", setup)
    r.check("/readyz is 503 before partitions are assigned", not_ready_before_assignment)
    r.check("ready, healthy, gauges set", ready_and_healthy)
    r.check("counters and histograms move as events are applied", counters_move_when_applied)
    r.check("retries, consecutive failures and bad input are counted",
            retries_and_bad_input_counted)
    r.check("SIGTERM with the HTTP server running", clean_stop)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
sys.exit(r.finish())
