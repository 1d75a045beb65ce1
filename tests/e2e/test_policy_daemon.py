#!/usr/bin/env python3
"""test_policy_daemon.py -- a hostile policy against the running daemon, and SIGHUP reloads.

cs-pdns runs with a POLICY_FILE whose records() loops forever for VMs named evil-*, raises for
bad-*, returns garbage for junk-*, exhausts memory for bomb-* and names everything else as the
built-in policy does. Each hostile event must be logged with its Kafka position (and traceback)
and skipped, nothing written for it, and the next good event applied. SIGHUP must take a good
policy at once and refuse one that does not load or fails its self-check, keeping the old one.
With POLICY_ON_ERROR=retry a failing event is retried, never committed, and applied once the
policy is fixed. Must not: look inside cs-pdns; only its log, the database and DNS answers count.
"""
import os
import re
import signal
import subprocess
import sys

from harness import Results, Stack, eq, wait_until
from world import World

N = 13
st = Stack("policy")
w = World(st, N)
r = Results()

POLICY = os.path.join(st.workdir, "hostile.lua")

# {version}, {ttl} and {bad_raises} are filled in per stage; names other than the hostile ones
# get the built-in policy's records with the stage's TTL, so a reload is visible in the rows.
HOSTILE = """
local default = require("cspdns.default")
local BAD_RAISES = {bad_raises}

local function records(vm, ctx)
    local name = vm.name or ""
    if name:find("^evil%-") then
        while true do end
    elseif name:find("^bad%-") and BAD_RAISES then
        error("refusing " .. name)
    elseif name:find("^junk%-sql") then
        return {{ {{ name = "x');DROP TABLE records;--." .. ctx.account.networkdomain,
            type = "A", content = "10.0.0.1" }} }}
    elseif name:find("^junk%-") then
        return "garbage"
    elseif name:find("^bomb%-") then
        local t = {{}}
        while true do t[#t + 1] = string.rep("x", 65536) .. #t end
    end
    local out = default.records(vm, ctx)
    for _, rec in ipairs(out) do
        rec.ttl = {ttl}
    end
    return out
end

return {{ name = "hostile", version = "{version}", records = records }}
"""


def write_policy(text):
    tmp = POLICY + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, POLICY)  # a reload never sees half a file


def hostile(version, ttl=60, bad_raises=True):
    return HOSTILE.format(version=version, ttl=ttl, bad_raises="true" if bad_raises else "false")


def fqdn(name):
    return f"{name}.{w.acme_zone}"


def owned(vm_id):
    return int(st.sql1(f"SELECT COUNT(*) FROM cspdns_vm WHERE vm_id='{vm_id}'"))


def ttl_of(name):
    rows = st.rows(fqdn(name), "A")
    return int(rows[0][2]) if rows else None


def reload(expect):
    """Sends SIGHUP and waits for the log line matching expect (a regex)."""
    before = st.log_count(expect)
    st.daemon.send_signal(signal.SIGHUP)
    wait_until(f"log line {expect!r} after SIGHUP", lambda: st.log_count(expect) > before, 20)


def deploy_and_wait(name):
    vm = w.deploy(name)
    ip = w.default_nic(vm)["ipaddress"]
    wait_until(f"{name} in DNS", lambda: st.dig(fqdn(name)) == [ip], 20)
    return vm


def start(**extra):
    # No resync: every record here must come from the event under test.
    st.start_daemon(POLICY_FILE=POLICY, RESYNC_INTERVAL=0, **extra)


def setup():
    w.create_zones()
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    write_policy(hostile("1"))
    start()
    assert st.log_has(r"loaded policy hostile/1 from "), "the policy was not loaded"


hostile_vms = {}


def hostile_events_skipped():
    # The failures this stage expects in the log, per VM name: what the message must say.
    expected = {
        "evil-01": r"policy: instruction budget exceeded \(more than \d+ instructions",
        "bad-01": r"\S+hostile\.lua:\d+: refusing bad-01",
        "junk-01": r"records\(\) returned a string: return a list of records",
        "junk-sql-01": r"record 1 \(x'\);DROP TABLE records;--\.\S+ A 10\.0\.0\.1\): name ",
        "bomb-01": r"policy: memory limit exceeded",
    }
    for name in expected:
        hostile_vms[name] = w.deploy(name)
    good = deploy_and_wait("good-01")
    for name, why in expected.items():
        vm = hostile_vms[name]
        pat = (rf"level=error mod=policy pos={re.escape(st.topic)}/\d+@\d+ "
               rf"msg=\"vm={vm} event=\S+: policy hostile/1 failed, skipped: {why}")
        wait_until(f"{name}'s failure logged with its position", lambda: st.log_has(pat), 30)
    # a runtime error comes with its traceback, pointing into the policy file
    lines = st.log_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "refusing bad-01" in line)
    after = "\n".join(lines[at + 1:at + 8])
    assert 'msg="stack traceback:"' in after and re.search(r"hostile\.lua:\d+: in ", after), \
        f"no traceback after the bad-01 error:\n{after}"
    for name, vm in hostile_vms.items():
        eq(owned(vm), 0, f"{name} owns rows")
        eq(st.dig(fqdn(name)), [], f"{name} in DNS")
    # Only this file's zones: other test files share the database and their own hostile names.
    eq(st.sql1(f"SELECT COUNT(*) FROM records r JOIN domains d ON d.id = r.domain_id "
               f"WHERE r.name LIKE '%DROP%' AND d.name IN ('{w.acme_zone}', '{w.cust_zone}')"),
       "0", "SQL-ish name")
    assert owned(good) == 1, "good-01 owns no rows"
    # after all of them, the daemon still serves the next VM
    deploy_and_wait("good-02")
    assert st.daemon.poll() is None, "cs-pdns died"


def good_reload():
    write_policy(hostile("2", ttl=123))
    reload(r"reloaded policy hostile/2 from .*hostile\.lua \(self-check passed\)")
    deploy_and_wait("good-03")
    eq(ttl_of("good-03"), 123, "TTL of a VM named after the reload")
    eq(ttl_of("good-01"), 60, "TTL of a VM named before it")


def refused(text, why):
    """Reloads text (None: no file at all) and checks that it is refused for why."""
    if text is None:
        os.remove(POLICY)
    else:
        write_policy(text)
    reload(r"level=error mod=policy msg=\"reload of \S+hostile\.lua refused, policy hostile/2 "
           rf"keeps running: {why}")


def broken_reloads_keep_the_old_policy():
    refused("return { records = function(vm, ctx) return {} end",  # no closing brace
            r"\S+hostile\.lua:1: '}' expected")
    refused("return { name = 'hostile', version = '3',\n"
            "  records = function(vm, ctx) require('cspdns.default').records(vm, ctx) end }",
            r"self-check: records\(\) failed for the sample account VM selfcheck-01: "
            r"records\(\) returned nil")
    refused(hostile("4", ttl=5).replace(
        "records = records }", "records = records,\n"
        "  self_test = function() assert(false, 'TTL 5 is too short for production') end }"),
        r"self-check: self_test\(\) failed: \S+hostile\.lua:\d+: TTL 5 is too short")
    refused("return 42", r"\S+hostile\.lua: the policy must return a table with a records function")
    refused(None, r"policy: cannot read \S+hostile\.lua: No such file")
    # the old policy is still the one at work
    deploy_and_wait("good-04")
    eq(ttl_of("good-04"), 123, "TTL after refused reloads")
    assert st.daemon.poll() is None, "cs-pdns died"


def retry_until_fixed():
    rc = st.stop_daemon(signal.SIGTERM, timeout=30)
    eq(rc, 0, "exit status")
    write_policy(hostile("5", ttl=123))
    start(POLICY_ON_ERROR="retry")
    vm = w.deploy("bad-02")
    pat = rf"vm={vm} event=\S+: policy hostile/5 failed, will retry \(POLICY_ON_ERROR=retry\)"
    wait_until("bad-02 retried", lambda: st.log_count(pat) >= 3, 30)
    pos = re.search(rf"pos=(\S+) msg=\"{pat}", st.log_text()).group(1)
    eq(owned(vm), 0, "bad-02 owns rows while it fails")
    # not committed: after a restart the same event comes back and fails again
    eq(st.stop_daemon(signal.SIGTERM, timeout=30), 0, "exit status while retrying")
    seen = st.log_count(pat)
    start(POLICY_ON_ERROR="retry")
    wait_until("bad-02 redelivered after the restart", lambda: st.log_count(pat) > seen, 30)
    # fixing the policy and reloading applies the event that was being retried
    write_policy(hostile("6", ttl=123, bad_raises=False))
    reload(r"reloaded policy hostile/6 from ")
    ip = w.default_nic(vm)["ipaddress"]
    wait_until("bad-02 in DNS after the fix", lambda: st.dig(fqdn("bad-02")) == [ip], 30)
    # by the very event that was being retried
    # (its log line follows the commit, so it may trail the answer by a moment)
    wait_until(f"the log line of the event at {pos}", lambda: st.log_has(
        rf"pos={re.escape(pos)} msg=\"vm={vm} event=\S+ state=Running records=4 "), 10)
    eq(ttl_of("bad-02"), 123, "bad-02 named by the fixed policy")
    assert st.daemon.poll() is None, "cs-pdns died"


def check_command():
    # cs-pdns check (the container's health check) runs the same self-check as a reload
    def check(text):
        path = os.path.join(st.workdir, "checked.lua")
        with open(path, "w") as f:
            f.write(text)
        env = st.daemon_env(POLICY_FILE=path)
        return subprocess.run([st.bin, "check"], env=env, capture_output=True, text=True,
                              timeout=60)
    good = check(hostile("7"))
    eq((good.returncode, good.stdout), (0, "settings and policy OK\n"), "good policy")
    bad = check("return { records = function(vm, ctx)\n"
                "  return { { name = vm.name .. '.' .. ctx.account.networkdomain, type = 'A',\n"
                "             content = vm.nic[1].ipaddress } }\nend }")
    eq(bad.returncode, 2, "exit status of a policy failing its self-check")
    assert re.search(r"POLICY_FILE: \S+checked\.lua does not load: self-check: records\(\) failed "
                     r"for the sample project VM selfcheck-02: \S+checked\.lua:2: attempt to "
                     r"index a nil value \(field 'account'\)", bad.stderr), bad.stderr


try:
    r.check("setup", setup)
    r.check("cs-pdns check: the self-check refuses a policy that fails on project VMs",
            check_command)
    r.check("hostile events: logged with position, skipped, nothing written; good ones applied",
            hostile_events_skipped)
    r.check("SIGHUP with a good policy: the next event uses it", good_reload)
    r.check("SIGHUP with a broken, self-check-failing or missing policy: the old one keeps running",
            broken_reloads_keep_the_old_policy)
    r.check("POLICY_ON_ERROR=retry: retried, not committed, applied after the fix and SIGHUP",
            retry_until_fixed)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
sys.exit(r.finish())
