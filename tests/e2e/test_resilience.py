#!/usr/bin/env python3
"""test_resilience.py -- nothing lost and nothing crashes: API failures, poison messages, restarts.

Must not: skip; every check here crosses real sockets to real services.
"""
import json
import os
import re
import signal
import sys
import time

from harness import API_KEY, SECRET, Results, Stack, eq, wait_until
from world import World

N = 12
st = Stack("resil")
w = World(st, N)
r = Results()


def fqdn(name):
    return f"{name}.{w.acme_zone}"


def setup():
    w.create_zones()
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    st.start_daemon()


def api_5xx_then_recovery():
    # The event's jobResult carries the VM, but its owner still needs the API: every call fails
    # with 503 for a while, then the API recovers and the event is applied, not lost.
    st.control("faults", {"mode": "http_status", "status": 503, "count": -1,
                          "commands": ["listAccounts", "listDomains", "listVirtualMachines"]})
    vm = w.deploy("retry-01")
    wait_until("retries logged", lambda: st.log_count(rf"vm={vm} .*will retry") >= 2, 20)
    eq(st.dig(fqdn("retry-01")), [], "nothing written while the API fails")
    st.control("faults", {"mode": "none"})
    ip = w.default_nic(vm)["ipaddress"]
    wait_until("applied after recovery", lambda: st.dig(fqdn("retry-01")) == [ip], 15)


def api_timeout_then_recovery():
    st.control("faults", {"mode": "delay", "delay_ms": 7000, "count": 1,
                          "commands": ["listAccounts"]})
    # beta's owner lookup is not cached yet (OWNER_CACHE_TTL): this event must ask the API.
    vm = w.deploy("slow-01", account="beta")
    ip = w.default_nic(vm)["ipaddress"]
    wait_until("applied after a timeout",
               lambda: st.dig(f"slow-01.{w.cust_zone}") == [ip], 30)
    assert st.log_has(rf"vm={vm} .*will retry"), "the timeout was not retried"


def poison_messages_skipped():
    poison = [
        "not json at all",
        "{",
        "[]",
        '{"jobId":"j","commandEventType":5,"status":"SUCCEEDED"}',
        '{"jobId":"j","commandEventType":"VM.CREATE","status":"SUCCEEDED","jobResult":"garbage"}',
        '{"event":"VM.DESTROY","status":"Completed","VirtualMachine":"../../etc/passwd"}',
        '{"event":"VM.DESTROY","status":"Completed","VirtualMachine":{"id":1}}',
        "[" * 10000,
        json.dumps({"event": "VM.DESTROY", "status": "Completed", "VirtualMachine": "x" * 5000}),
    ]
    before = st.log_count("malformed message skipped")
    for p in poison:
        st.publish(p, key="poison")
    vm = w.deploy("after-poison")
    ip = w.default_nic(vm)["ipaddress"]
    wait_until("the next good event applied", lambda: st.dig(fqdn("after-poison")) == [ip], 15)
    wait_until("every poison message logged",
               lambda: st.log_count("malformed message skipped") - before == len(poison), 10)
    positions = re.findall(r'pos=(\S+)/(\d+)@(\d+) msg="malformed', st.log_text(False))
    assert positions and all(t == st.topic for t, _, _ in positions), positions
    assert st.daemon.poll() is None, "cs-pdns died on poison input"


def sigterm_then_resume():
    rc = st.stop_daemon(signal.SIGTERM, timeout=20)
    eq(rc, 0, "exit status after SIGTERM")
    # While cs-pdns is down, two VMs are created; nothing of the earlier stream may be replayed.
    a, b = w.deploy("while-down-a"), w.deploy("while-down-b")
    st.start_daemon()
    for vm, name in ((a, "while-down-a"), (b, "while-down-b")):
        ip = w.default_nic(vm)["ipaddress"]
        wait_until(f"{name} after restart", lambda: st.dig(fqdn(name)) == [ip], 20)
    st.wait_quiet(2)
    replayed = re.findall(r"vm=(\S+) event=", st.log_text())
    assert set(replayed) <= {a, b}, f"events from before the restart were replayed: {replayed}"


def sigint_is_clean_too():
    rc = st.stop_daemon(signal.SIGINT, timeout=20)
    eq(rc, 0, "exit status after SIGINT")
    assert st.log_has("leaving the group"), "no clean leave logged"
    st.start_daemon()


def secrets_from_files_not_in_ps():
    # With every secret read from a *_FILE, neither `ps` (cmdline) nor /proc/<pid>/environ of the
    # running daemon holds one, and events are still applied (the files' secrets work).
    st.stop_daemon()
    files = {}
    for var, value in (("CS_API_KEY", API_KEY), ("CS_SECRET_KEY", SECRET),
                       ("MYSQL_PDNS_PASSWORD", st.state["mysql"]["password"])):
        files[var + "_FILE"] = os.path.join(st.workdir, var.lower())
        with open(files[var + "_FILE"], "w") as f:
            f.write(value + "\n")
    st.start_daemon(drop=("CS_API_KEY", "CS_SECRET_KEY", "MYSQL_PDNS_PASSWORD"), **files)
    vm = w.deploy("file-secrets")
    ip = w.default_nic(vm)["ipaddress"]
    wait_until("applied with secrets from files", lambda: st.dig(fqdn("file-secrets")) == [ip], 20)
    for what in ("cmdline", "environ"):
        with open(f"/proc/{st.daemon.pid}/{what}", "rb") as f:
            text = f.read().replace(b"\0", b" ").decode(errors="replace")
        assert "cs-pdns" in text or "CS_ENDPOINT" in text, f"/proc/<pid>/{what}: {text[:200]!r}"
        for secret in (API_KEY, SECRET, st.state["mysql"]["password"]):
            assert secret not in text, f"a secret appears in /proc/<pid>/{what}"


def idle_latency():
    samples = []
    for i in range(5):
        t0 = time.time()
        vm = w.deploy(f"lat-{i}")
        ip = w.default_nic(vm)["ipaddress"]
        wait_until("answer", lambda: st.dig(fqdn(f"lat-{i}")) == [ip], 10, interval=0.01)
        samples.append(time.time() - t0)
    print("  deploy call -> dig answer (s): " + " ".join(f"{s:.3f}" for s in samples))


def no_secrets_in_logs():
    text = st.log_text(since_start=False)
    assert len(text) > 1000, "the debug log is unexpectedly short"
    for secret in (API_KEY, SECRET, "signature=", "apikey=", st.state["mysql"]["password"]):
        assert secret not in text, f"{secret!r} appears in cs-pdns's log"


try:
    r.check("setup", setup)
    r.check("API 5xx: events wait and are applied after recovery", api_5xx_then_recovery)
    r.check("API timeout: retried, then applied", api_timeout_then_recovery)
    r.check("poison messages: logged with position, skipped, stream goes on",
            poison_messages_skipped)
    r.check("SIGTERM: exit 0; restart resumes without loss or replay", sigterm_then_resume)
    r.check("SIGINT: clean leave", sigint_is_clean_too)
    r.check("secrets from *_FILE: applied, and in neither cmdline nor environ",
            secrets_from_files_not_in_ps)
    r.check("idle latency from event to DNS", idle_latency)
    r.check("no key, secret, signature or password in the debug log", no_secrets_in_logs)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
sys.exit(r.finish())
