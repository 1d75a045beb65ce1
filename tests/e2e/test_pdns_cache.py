#!/usr/bin/env python3
"""test_pdns_cache.py -- with PDNS_API_URL set, changes answer at once from a caching PowerDNS.

An extra pdns_server runs over the stack's MariaDB with its packet, query, negative and zone
caches at their defaults (the stack's own runs with them off), over a database of this file's own
(`cs-pdns resync` weighs every owned record). Each VM's name and PTR are queried before the VM
exists, so PowerDNS holds a cached NXDOMAIN for them. With cs-pdns purging that server's caches
through its API, the new records answer within a second of the commit and a removed VM's stop
answering as fast -- written by the daemon for an event, or by `cs-pdns resync` for a VM that
appeared without one -- and so does the empty non-terminal of a new /24 in the /16 reverse zone;
without the API, the cached NXDOMAIN is still served seconds after the records are in the
database. Must not: write records itself, or purge the cache itself before the no-API check is
done.
"""
import re
import subprocess
import sys
import time
import uuid

from harness import Results, eq, wait_until
from pdns_extra import ExtraPdns
from private_db import PrivateDbStack
from world import World

st = PrivateDbStack("cache")
w = World(st, 31)
r = Results()
pdns = {}
# A purge follows the commit within milliseconds; the caches hold entries for 20 s (packet) and
# 60 s (negative query cache). One second tells the two apart on any machine.
VISIBLE_WITHIN_S = 1.0
# How long the unpurged NXDOMAIN must still be served after the records are in the database:
# well inside the 20 s packet cache TTL, counted from the moment the test sees the rows.
STALE_FOR_S = 3.0


def fqdn(name):
    return f"{name}.{w.acme_zone}"


def ptr_name(ip):
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


def setup():
    # The zones exist before PowerDNS starts: its zone cache knows them from the first query.
    w.create_zones()
    pdns["p"] = ExtraPdns(st.state, f"cache-{st.tag}", db=st.db, caches=True).start()
    eq(pdns["p"].settings.get("cache-ttl"), None, "packet cache at its default")
    st.start_sim("4.16")
    st.control("setup", w.setup_body())


def prime(name, ip):
    """Queries the VM's name and PTR before they exist: PowerDNS caches the NXDOMAIN."""
    p = pdns["p"]
    for _ in range(2):
        eq(p.query(fqdn(name)), ("NXDOMAIN", []), f"{name} before the VM exists")
        eq(p.query(ptr_name(ip), "PTR"), ("NXDOMAIN", []), f"PTR of {ip} before the VM exists")
    return time.time()


def cache_hits():
    """PowerDNS's packet and query cache hits so far, from its statistics."""
    status, stats = pdns["p"].api("GET", "/statistics")
    eq(status, 200, f"statistics: {stats}")
    hits = {s["name"]: int(s["value"]) for s in stats
            if s["name"] in ("packetcache-hit", "query-cache-hit")}
    eq(len(hits), 2, f"cache hit counters in {stats}")
    return sum(hits.values())


def prime_cached(name, ip):
    """prime, and proof that the NXDOMAIN answers come from the cache: with the caches off, the
    quick answers below would all miss it."""
    before = cache_hits()
    primed = prime(name, ip)
    assert cache_hits() > before, "the second NXDOMAIN queries did not hit a cache: caches are off"
    return primed


def rows_written(name, ip):
    return st.rows(fqdn(name), "A") and st.rows(ptr_name(ip), "PTR")


def time_to_answer(what, fn):
    t0 = time.time()
    wait_until(what, fn, VISIBLE_WITHIN_S, interval=0.02)
    return time.time() - t0


def with_api_new_and_removed_vm_answer_at_once():
    p = pdns["p"]
    if st.daemon:
        st.stop_daemon()
    st.start_daemon(PDNS_API_URL=p.api_url, PDNS_API_KEY=p.api_key)
    ip = f"10.{w.n}.1.50"
    name = "fast-01"
    prime_cached(name, ip)
    vm_id = w.deploy(name, ipaddress=ip)
    eq(w.default_nic(vm_id)["ipaddress"], ip, "the VM's address")
    wait_until("the rows in the database", lambda: rows_written(name, ip), 20, interval=0.02)
    a = time_to_answer("the A record from the caching PowerDNS",
                       lambda: p.query(fqdn(name)) == ("NOERROR", [ip]))
    b = time_to_answer("the PTR from the caching PowerDNS",
                       lambda: p.query(ptr_name(ip), "PTR") == ("NOERROR", [fqdn(name) + "."]))
    print(f"  after a cached NXDOMAIN: A answered {a:.2f}s, PTR {a + b:.2f}s after the rows were "
          f"seen in the database")
    # Both answers are in the packet cache now; removing the VM must purge them too.
    st.cs.call("destroyVirtualMachine", id=vm_id, expunge="true")
    wait_until("the rows to leave the database", lambda: not st.rows(fqdn(name)), 20,
               interval=0.02)
    a = time_to_answer("the A record to go", lambda: p.query(fqdn(name)) == ("NXDOMAIN", []))
    b = time_to_answer("the PTR to go", lambda: p.query(ptr_name(ip), "PTR")[1] == [])
    print(f"  removal: A gone {a:.2f}s, PTR {a + b:.2f}s after the rows left the database")
    wait_until("cs-pdns to log a successful purge",
               lambda: st.log_has(r"mod=pdns_api .*outcome=ok"), 10)
    st.stop_daemon()


def with_api_new_empty_non_terminal_answers_at_once():
    """A VM in a new /24 of the /16 reverse zone makes its /24 label an empty non-terminal: that
    name's cached NXDOMAIN must go as fast as the VM's own names'."""
    p = pdns["p"]
    if st.daemon:
        st.stop_daemon()
    st.start_daemon(PDNS_API_URL=p.api_url, PDNS_API_KEY=p.api_key)
    ent = f"3.{w.n}.10.in-addr.arpa"

    def ent_rows():
        return st.sql1(f"SELECT COUNT(*) FROM records WHERE name = '{ent}' AND type IS NULL")

    eq(ent_rows(), "0", f"ENT rows at {ent} before the VM")
    before = cache_hits()
    for _ in range(2):
        eq(p.query(ent, "PTR"), ("NXDOMAIN", []), f"{ent} before the VM exists")
    assert cache_hits() > before, f"the second query of {ent} did not hit a cache"
    # The project's network is the /16 zone's only /24 nobody used yet (10.n.3.0/24).
    resp = st.cs.call("deployVirtualMachine", name="ent-01", projectid=w.project_id,
                      networkids=w.net_proj, zoneid="zone-1", templateid="tmpl-1",
                      serviceofferingid="so-1")
    vm_id = resp["deployvirtualmachineresponse"]["id"]
    ip = w.default_nic(vm_id)["ipaddress"]
    assert ip.startswith(f"10.{w.n}.3."), f"project VM's address {ip}"
    wait_until("the PTR and its ENT row in the database",
               lambda: st.rows(ptr_name(ip), "PTR") and ent_rows() == "1", 20, interval=0.02)
    t = time_to_answer(f"{ent} to answer NODATA", lambda: p.query(ent, "PTR") == ("NOERROR", []))
    print(f"  new ENT {ent}: NODATA {t:.2f}s after its row was seen in the database")
    st.stop_daemon()


def with_api_large_commit_flushes_apexes_and_answers_at_once():
    """A backlog's commit changes dozens of names in one zone: cs-pdns then flushes the zone's apex
    only, one request instead of one per name. This PowerDNS flushes everything below a name it
    is asked to flush, so each new name still answers within a second."""
    p = pdns["p"]
    if st.daemon:
        st.stop_daemon()
    # 60 VMs on 3 partitions: even a batch of one partition's events has more than 16 names in
    # each zone, the most that are still flushed one by one.
    vms = [(f"bulk-{i:02d}", f"10.{w.n}.1.{100 + i}") for i in range(60)]
    primed = prime_cached(*vms[0])
    for name, ip in vms[1:]:
        prime(name, ip)
    for name, ip in vms:
        w.deploy(name, ipaddress=ip)
    st.start_daemon(PDNS_API_URL=p.api_url, PDNS_API_KEY=p.api_key, LOG_LEVEL="debug")
    wait_until("every VM's rows in the database",
               lambda: all(rows_written(name, ip) for name, ip in vms), 30, interval=0.05)
    seen = time.time()
    for name, ip in vms:
        time_to_answer(f"{name}'s A from the caching PowerDNS",
                       lambda: p.query(fqdn(name)) == ("NOERROR", [ip]))
        time_to_answer(f"{name}'s PTR from the caching PowerDNS",
                       lambda: p.query(ptr_name(ip), "PTR") == ("NOERROR", [fqdn(name) + "."]))
    t = time.time() - seen
    # Unpurged, the NXDOMAIN answers primed first would be served for 20 s after priming.
    assert time.time() - primed < 20, \
        f"{time.time() - primed:.1f}s passed since priming: the check would mean nothing"
    # The purge after a commit whose zones were flushed at their apexes only: a request per zone
    # (and per name of any small zone), never one per name of the large ones.
    apex_only, commits = False, []
    for line in st.log_text().splitlines():
        if "mod=pdns_api" in line and "flushing the apex only" in line:
            apex_only = True
        m = re.search(r"mod=pdns_api .*purged=\d+ of=(\d+)", line)
        if m and apex_only:
            commits.append(int(m.group(1)))
            apex_only = False
    assert commits, "no commit was large enough to flush its zones' apexes only"
    assert max(commits) <= 16, f"purge requests of the apex-only commits: {commits}"
    requests = commits
    print(f"  60 VMs: commits flushed at their apexes took {requests} purge requests; all 120 "
          f"names answered within {t:.2f}s of their rows being seen in the database")
    st.stop_daemon()


def resync_purges_what_it_wrote():
    """`cs-pdns resync` (no daemon) writes a VM that appeared without an event: it must purge
    the names it wrote before it returns."""
    p = pdns["p"]
    if st.daemon:
        st.stop_daemon()
    ip = f"10.{w.n}.1.52"
    name = "resync-01"
    prime_cached(name, ip)
    nic = {"id": str(uuid.uuid4()), "networkid": w.net_acme, "networkname": "acme-net",
           "isdefault": True, "ipaddress": ip, "traffictype": "Guest", "type": "Isolated",
           "macaddress": f"02:00:00:00:{w.n:02x}:52"}
    vm = {"id": str(uuid.uuid4()), "name": name, "displayname": name, "account": "acme",
          "domainid": w.domain_id, "state": "Running", "nic": [nic]}
    st.control("vms", {"vms": [vm]})
    env = st.daemon_env(PDNS_API_URL=p.api_url, PDNS_API_KEY=p.api_key)
    res = subprocess.run([st.bin, "resync"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"resync exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    assert rows_written(name, ip), f"resync did not write {name}:\n{res.stderr[-3000:]}"
    a = time_to_answer("the A record after the resync",
                       lambda: p.query(fqdn(name)) == ("NOERROR", [ip]))
    b = time_to_answer("the PTR after the resync",
                       lambda: p.query(ptr_name(ip), "PTR") == ("NOERROR", [fqdn(name) + "."]))
    print(f"  resync: A answered {a:.2f}s, PTR {a + b:.2f}s after `cs-pdns resync` returned")


def without_api_cached_nxdomain_persists():
    p = pdns["p"]
    if st.daemon:
        st.stop_daemon()
    st.start_daemon()
    ip = f"10.{w.n}.1.51"
    name = "slow-01"
    primed = prime_cached(name, ip)
    w.deploy(name, ipaddress=ip)
    wait_until("the rows in the database", lambda: rows_written(name, ip), 20, interval=0.02)
    seen = time.time()
    # The negative answer lives 20 s in the packet cache and 60 s in the query cache: STALE_FOR_S
    # after the rows appear it must still be served, unless the test itself took most of that.
    assert seen - primed < 20 - STALE_FOR_S, \
        f"{seen - primed:.1f}s passed between priming and the write: the check would mean nothing"
    while time.time() - seen < STALE_FOR_S:
        eq(p.query(fqdn(name)), ("NXDOMAIN", []), "A without purging (cached NXDOMAIN)")
        eq(p.query(ptr_name(ip), "PTR"), ("NXDOMAIN", []), "PTR without purging")
        time.sleep(0.2)
    print(f"  without the API: NXDOMAIN still served {time.time() - seen:.1f}s after the rows were "
          f"in the database")
    # It was the cache: one purge through the API, and the records answer.
    for n in (fqdn(name) + ".", ptr_name(ip) + "."):
        status, body = p.api("PUT", f"/cache/flush?domain={n}")
        eq(status, 200, f"manual flush of {n}: {body}")
    eq(p.query(fqdn(name)), ("NOERROR", [ip]), "A after a manual purge")
    eq(p.query(ptr_name(ip), "PTR"), ("NOERROR", [fqdn(name) + "."]), "PTR after a manual purge")
    st.stop_daemon()


def main():
    try:
        r.check("setup: a PowerDNS with default caches over this file's database", setup)
        if r.failed:
            return r.finish()
        r.check("without the API, a cached NXDOMAIN outlives the write",
                without_api_cached_nxdomain_persists)
        r.check("with the API, new and removed records answer within 1 s",
                with_api_new_and_removed_vm_answer_at_once)
        r.check("with the API, a new empty non-terminal answers within 1 s",
                with_api_new_empty_non_terminal_answers_at_once)
        r.check("with the API, a large commit flushes apexes only and answers within 1 s",
                with_api_large_commit_flushes_apexes_and_answers_at_once)
        r.check("`cs-pdns resync` with the API: what it wrote answers within 1 s",
                resync_purges_what_it_wrote)
        if r.failed:
            st.dump_logs()
            print("\n".join(pdns["p"].log_text().splitlines()[-30:]))
        return r.finish()
    finally:
        st.close()
        if "p" in pdns:
            pdns["p"].stop()


if __name__ == "__main__":
    sys.exit(main())
