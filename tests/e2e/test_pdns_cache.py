#!/usr/bin/env python3
"""test_pdns_cache.py -- with PDNS_API_URL set, changes answer at once from a caching PowerDNS.

An extra pdns_server runs over the stack's database with its packet, query, negative and zone
caches at their defaults (the stack's own runs with them off). Each VM's name and PTR are queried
before the VM exists, so PowerDNS holds a cached NXDOMAIN for them. With cs-pdns purging that
server's caches through its API, the new records answer within a second of the commit and a
removed VM's stop answering as fast; without the API, the cached NXDOMAIN is still served seconds
after the records are in the database. Must not: write records itself, or purge the cache itself
before the no-API check is done.
"""
import sys
import time

from harness import Results, Stack, eq, wait_until
from pdns_extra import ExtraPdns
from world import World

st = Stack("cache")
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
    pdns["p"] = ExtraPdns(st.state, f"cache-{st.tag}", caches=True).start()
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
    prime(name, ip)
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


def without_api_cached_nxdomain_persists():
    p = pdns["p"]
    if st.daemon:
        st.stop_daemon()
    st.start_daemon()
    ip = f"10.{w.n}.1.51"
    name = "slow-01"
    primed = prime(name, ip)
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
        r.check("setup: a PowerDNS with default caches over the stack's database", setup)
        if r.failed:
            return r.finish()
        r.check("without the API, a cached NXDOMAIN outlives the write",
                without_api_cached_nxdomain_persists)
        r.check("with the API, new and removed records answer within 1 s",
                with_api_new_and_removed_vm_answer_at_once)
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
