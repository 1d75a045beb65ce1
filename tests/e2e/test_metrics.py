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

import faultkit as fk
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
        METRICS_ADDR=f"127.0.0.1:{PORT}", RESYNC_INTERVAL=0,
        KAFKA_CFG_STATISTICS_INTERVAL_MS=1000), stdout=open(st.daemon_log, "ab"),
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


def owned_rows(fqdn):
    """The VM's A rows and the PTR rows naming it, as the database holds them."""
    a = len(st.rows(fqdn, "A"))
    ptr = int(st.sql1(f"SELECT COUNT(*) FROM records WHERE type='PTR' AND content='{fqdn}'"))
    return a, ptr


def changed(change):
    return {t: metric("cspdns_records_changed_total", change=change, type=t)
            for t in ("A", "AAAA", "PTR")}


def counters_move_when_applied():
    before = metric("cspdns_events_total", kind="VM.CREATE", outcome="applied")
    added = changed("added")
    vm = w.deploy("m-01")
    ip = w.default_nic(vm)["ipaddress"]
    fqdn = f"m-01.{w.acme_zone}"
    wait_until("A", lambda: st.dig(fqdn) == [ip], 15)
    wait_until("applied counter", lambda: metric(
        "cspdns_events_total", kind="VM.CREATE", outcome="applied") == before + 1, 10)
    n_a, n_ptr = owned_rows(fqdn)
    assert n_a >= 1 and n_ptr >= 1, (n_a, n_ptr)
    now = changed("added")
    eq(now["A"] - added["A"], n_a, "records_changed_total{change=added,type=A} delta")
    eq(now["PTR"] - added["PTR"], n_ptr, "records_changed_total{change=added,type=PTR} delta")
    assert now["AAAA"] - added["AAAA"] >= 1, "the acme network has IPv6: an AAAA was added"
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


def removals_counted_by_type():
    vm = w.deploy("m-03")
    fqdn = f"m-03.{w.acme_zone}"
    wait_until("m-03's records", lambda: owned_rows(fqdn)[0] >= 1, 15)
    n_a, n_ptr = owned_rows(fqdn)
    removed = changed("removed")
    st.cs.call("destroyVirtualMachine", id=vm, expunge="true")
    wait_until("m-03's records removed", lambda: owned_rows(fqdn) == (0, 0), 15)
    wait_until("removed{type=A}", lambda: changed("removed")["A"] - removed["A"] == n_a, 10)
    eq(changed("removed")["PTR"] - removed["PTR"], n_ptr, "removed{type=PTR} delta")


def ignored_event_counted():
    # The simulator publishes ignored records of its own with each API call: none come now.
    st.wait_quiet(1.0, timeout=30)
    ignored = metric("cspdns_events_total", kind="other", outcome="ignored")
    # Only a VM.DESTROY job's completion is acted on; its "Scheduled" record is ignored.
    st.publish('{"event":"VM.DESTROY","status":"Scheduled","entityuuid":"00000000-0000-4000-8000-'
               '000000000001","VirtualMachine":"00000000-0000-4000-8000-000000000001"}', key="y")
    wait_until("ignored counter", lambda: metric(
        "cspdns_events_total", kind="other", outcome="ignored") == ignored + 1, 15)


def missing_zone_counted():
    skipped = {t: metric("cspdns_records_skipped_total", reason="no_zone", type=t)
               for t in ("A", "PTR")}
    # gamma's network domain has no zone in PowerDNS; beta-net's reverse zone exists.
    vm = w.deploy("m-04", account="gamma", network=w.net_beta)
    ip = w.default_nic(vm)["ipaddress"]
    wait_until("m-04's PTR", lambda: st.dig_ptr(ip) == [f"m-04.{w.nozone}."], 15)
    wait_until("no_zone{type=A}", lambda: metric(
        "cspdns_records_skipped_total", reason="no_zone", type="A") == skipped["A"] + 1, 10)
    eq(metric("cspdns_records_skipped_total", reason="no_zone", type="PTR"), skipped["PTR"],
       "no_zone{type=PTR}: the reverse zone exists")


def consumer_lag_per_partition():
    # KAFKA_CFG_STATISTICS_INTERVAL_MS=1000: librdkafka reports every second. Every partition
    # that holds messages has a lag series, and it reaches 0 once cs-pdns has caught up.
    ends = {p: o for p, o in fk.end_offsets(st).items() if o > 0}
    assert ends, "no messages on the topic"

    def lags():
        _, text = get("/metrics")
        found = {}
        for m in re.finditer(r'^cspdns_kafka_consumer_lag\{topic="([^"]+)",partition="(\d+)"\} '
                             r'(\S+)$', text, re.M):
            if m.group(1) == st.topic:
                found[int(m.group(2))] = float(m.group(3))
        return found
    got = wait_until("a zero lag series for every partition with messages", lambda: (
        lambda g: g if set(ends) <= set(g) and all(g[p] == 0 for p in ends) else None)(lags()),
        20, interval=0.2)
    assert set(got) <= set(range(int(metric("cspdns_kafka_partitions_assigned")))), got


def clean_stop():
    eq(st.stop_daemon(), 0, "exit status")


try:
    r.check("setup", setup)
    r.check("/readyz is 503 before partitions are assigned", not_ready_before_assignment)
    r.check("ready, healthy, gauges set", ready_and_healthy)
    r.check("counters and histograms move as events are applied", counters_move_when_applied)
    r.check("retries, consecutive failures and bad input are counted",
            retries_and_bad_input_counted)
    r.check("records removed are counted by type", removals_counted_by_type)
    r.check("an ignored event is counted as ignored", ignored_event_counted)
    r.check("a record without a zone is counted as skipped, by type", missing_zone_counted)
    r.check("consumer lag per partition from librdkafka's statistics", consumer_lag_per_partition)
    r.check("SIGTERM with the HTTP server running", clean_stop)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
sys.exit(r.finish())
