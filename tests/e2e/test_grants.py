#!/usr/bin/env python3
"""test_grants.py -- cs-pdns works as a database user with exactly README's least-privilege grants.

The GRANT and REVOKE statements are read from README's "Least privilege" paragraph, so the
document and the test cannot drift apart. On a database of its own, a user with the grants for
before cs-pdns's tables exist makes a plan (no table may appear), then cs-pdns's first start
creates them; with CREATE revoked, cs-pdns starts again, applies a create and a destroy, a resync
heals a removed row, and a plan runs. Must not: run cs-pdns as any other user.
"""
import os
import re
import subprocess
import sys

from harness import LEAST_PRIV_PASSWORD, ROOT, Results, eq, wait_until
from private_db import PrivateDbStack
from world import World

USER = "cspdns_lp"


class GrantsStack(PrivateDbStack):
    """Every cs-pdns run here, daemon and commands, connects as the least-privilege user."""

    def daemon_env(self, drop=(), **extra):
        env = super().daemon_env(drop, **extra)
        env.update(MYSQL_PDNS_USER=USER, MYSQL_PDNS_PASSWORD=LEAST_PRIV_PASSWORD)
        return env


st = GrantsStack("grants")
w = World(st, 42)
r = Results()
vms = {}


def fqdn(name):
    return f"{name}.{w.acme_zone}"


def readme_statements():
    """README's grants, for this test's database and user: (base, until tables exist, revoke)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = re.search(r"\*\*Least privilege\.\*\*.*?```sql\n(.*?)```", text, re.S)
    assert block, "no ```sql block in README's Least privilege paragraph"
    stmts = [line for line in block.group(1).splitlines() if re.match(r"(GRANT|REVOKE) ", line)]
    eq(len(stmts), 3, f"README's grant statements {stmts}")
    return [s.replace("pdns.*", f"{st.db}.*").replace("'cs-pdns'@'host'", f"'{USER}'@'127.0.0.1'")
            for s in stmts]


def cli(*args, stdin=None):
    p = subprocess.run([st.bin] + list(args), env=st.daemon_env(), input=stdin,
                       capture_output=True, text=True, timeout=120)
    with open(os.path.join(st.workdir, "cs-pdns-cli.log"), "a") as f:
        f.write(p.stderr + p.stdout)
    return p.returncode, p.stdout, p.stderr


def own_tables():
    return st.sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                  f"'{st.db}' AND TABLE_NAME LIKE 'cspdns%'")


def event_of(vm_id):
    events = [e["value"] for e in st.control("events?since=0")["events"]
              if e["key"] == vm_id and '"jobId"' in e["value"] and "SUCCEEDED" in e["value"]]
    path = os.path.join(st.workdir, f"event-{vm_id}.json")
    with open(path, "w") as f:
        f.write(events[-1])
    return path


def setup():
    base, first, _ = readme_statements()
    st.root_sql(f"DROP USER IF EXISTS '{USER}'@'127.0.0.1'; CREATE USER '{USER}'@'127.0.0.1' "
                f"IDENTIFIED BY '{LEAST_PRIV_PASSWORD}'; {base}; {first}")
    w.create_zones()
    st.start_sim("4.16")
    st.control("setup", w.setup_body())


def plan_before_first_start():
    vms["a"] = w.deploy("lp-a")
    rc, out, err = cli("plan", "--event", event_of(vms["a"]))
    eq(rc, 0, f"plan exit status; stderr: {err[-2000:]}")
    assert f"  + {fqdn('lp-a')} A " in out, out
    eq(own_tables(), [], "tables created by a plan")


def first_start_creates_tables():
    st.start_daemon()
    ip = w.default_nic(vms["a"])["ipaddress"]
    wait_until("lp-a written", lambda: ("A", ip, "60") in st.rows(fqdn("lp-a")), 20)
    eq(sorted(t[0] for t in own_tables()), ["cspdns_record", "cspdns_vm"], "cs-pdns's tables")
    eq(st.stop_daemon(), 0, "exit status")


def without_create():
    st.stop_daemon()  # left running if the previous check failed
    st.root_sql(readme_statements()[2])
    grants = " ".join(g[0] for g in st.root_sql(f"SHOW GRANTS FOR '{USER}'@'127.0.0.1'"))
    assert "CREATE" not in grants and "SELECT, INSERT, UPDATE, DELETE" in grants, grants
    st.start_daemon()
    vms["b"] = w.deploy("lp-b")
    ip = w.default_nic(vms["b"])["ipaddress"]
    wait_until("lp-b created", lambda: ("A", ip, "60") in st.rows(fqdn("lp-b")), 20)
    st.cs.call("destroyVirtualMachine", id=vms["a"])
    wait_until("lp-a destroyed", lambda: st.rows(fqdn("lp-a")) == [], 20)
    eq(st.stop_daemon(), 0, "exit status")


def resync_and_plan_without_create():
    ip = w.default_nic(vms["b"])["ipaddress"]
    st.sql(f"DELETE FROM records WHERE name = '{fqdn('lp-b')}' AND type = 'A'")
    rc, out, err = cli("resync")
    eq(rc, 0, f"resync exit status; stderr: {err[-2000:]}")
    eq(st.rows(fqdn("lp-b"), "A"), [("A", ip, "60")], "row restored by the resync")
    vms["c"] = w.deploy("lp-c")
    rc, out, err = cli("plan", "--event", event_of(vms["c"]))
    eq(rc, 0, f"plan exit status; stderr: {err[-2000:]}")
    assert f"  + {fqdn('lp-c')} A " in out, out


try:
    r.check("setup: a user with README's grants for before the first start", setup)
    r.check("plan before the first start: works, creates no table", plan_before_first_start)
    r.check("first start creates cs-pdns's tables and applies the event",
            first_start_creates_tables)
    r.check("CREATE revoked: cs-pdns starts, applies a create and a destroy", without_create)
    r.check("CREATE revoked: a resync heals a removed row, a plan runs",
            resync_and_plan_without_create)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
    try:
        st.root_sql(f"DROP USER IF EXISTS '{USER}'@'127.0.0.1'")
    except RuntimeError as e:
        print(f"  (cleanup) {e}")
sys.exit(r.finish())
