#!/usr/bin/env python3
"""test_dnssec.py -- cs-pdns keeps DNSSEC-signed zones valid while it writes rows directly.

A signed forward zone (NSEC3, VM names one label below an empty non-terminal), a signed /16
reverse zone (NSEC), a signed ip6.arpa zone (NSEC3, deep nibble ENTs) and a signed NSEC3 narrow
zone (the project's) take a stream of creates and destroys through the simulator and cs-pdns; a
project VM in another /24 of the /16 comes and goes, so its /24 empty non-terminal must too. Then PowerDNS's own `pdnsutil rectify-zone` must
change nothing (also when rectifying from scratch), `pdnsutil check-zone` must be clean, and
answers over DNS must be signed, with NSEC/NSEC3 denial for names between, validated by delv with
the zone's own key as trust anchor. Must not: write records itself, or read cs-pdns's internals.
"""
import ipaddress
import os
import re
import subprocess
import sys

from harness import Results, Stack, eq, wait_until
from world import World

st = Stack("dnssec")
w = World(st, 33)
r = Results()
SUB = "dc1"  # acme's VMs live in dc1.<acme zone>: dc1 is an empty non-terminal of that zone
vms = {}
proj = {}  # project VMs (names in the narrow zone, PTRs in another /24 of the /16)


def pdnsutil(*args, check=True):
    p = subprocess.run(["pdnsutil", f"--config-dir={st.state['dns']['config_dir']}", *args],
                       capture_output=True, text=True, timeout=120)
    if check and p.returncode:
        raise AssertionError(f"pdnsutil {' '.join(args)} failed:\n{p.stdout}{p.stderr}")
    return p


def signed_zone(name, nsec3=None):
    pdnsutil("create-zone", name, "ns1.example.net")
    pdnsutil("secure-zone", name)
    if nsec3:
        pdnsutil("set-nsec3", name, nsec3)
    pdnsutil("rectify-zone", name)


def fqdn(name):
    return f"{name}.{SUB}.{w.acme_zone}"


def setup():
    signed_zone(w.acme_zone, "1 0 1 ab")
    signed_zone(w.rev16)
    signed_zone(w.rev6, "1 0 0 -")
    signed_zone(w.cust_zone, "1 0 0 -")
    pdnsutil("set-nsec3", w.cust_zone, "1 0 0 -", "narrow")
    pdnsutil("rectify-zone", w.cust_zone)
    st.add_zone(w.rev24)
    st.start_sim("4.16")
    body = w.setup_body()
    for acct in body["accounts"]:
        if acct["id"] == w.acme_id:
            acct["networkdomain"] = f"{SUB}.{w.acme_zone}"
    st.control("setup", body)
    st.start_daemon()


def deploy(name):
    vm_id = w.deploy(name)
    nic = w.default_nic(vm_id)
    vms[name] = (vm_id, nic["ipaddress"], nic["ip6address"])
    return vm_id


def stream():
    for i in range(8):
        deploy(f"web-{i:02d}")
    for name, (_, ip, _) in vms.items():
        wait_until(f"A of {name}", lambda: st.dig(fqdn(name)) == [ip], 20)
    for name in ("web-01", "web-04", "web-07"):
        st.cs.call("destroyVirtualMachine", id=vms.pop(name)[0], expunge="true")
        wait_until(f"{name} gone", lambda: st.dig(fqdn(name)) == [], 20)
    for name in ("web-08", "web-09"):
        deploy(name)
        wait_until(f"A of {name}", lambda: st.dig(fqdn(name)) == [vms[name][1]], 20)
    # The project's network is another /24 of the /16: its VM's PTR needs a new ENT, which must
    # go with the VM. Their names live in the narrow zone.
    for name in ("proj-01", "proj-02"):
        vm_id = deploy_project(name)
        ip = w.default_nic(vm_id)["ipaddress"]
        proj[name] = (vm_id, ip)
        wait_until(f"PTR of {name}", lambda: st.dig_ptr(ip) == [f"{name}.{w.cust_zone}."], 20)
    ent = ptr_name(proj["proj-01"][1]).split(".", 1)[1]
    eq(ent_rows(ent), "1", f"ENT rows at {ent} while project VMs exist")
    # proj-02 is the /24's only VM once proj-01 is gone.
    vm_id, ip = proj.pop("proj-01")
    st.cs.call("destroyVirtualMachine", id=vm_id, expunge="true")
    wait_until("proj-01's PTR gone", lambda: st.dig_ptr(ip) == [], 20)
    eq(ent_rows(ent), "1", f"ENT rows at {ent} while proj-02 exists")
    st.cs.call("destroyVirtualMachine", id=proj["proj-02"][0], expunge="true")
    wait_until(f"the ENT row at {ent} to go with the /24's last VM", lambda: ent_rows(ent) == "0",
               20)
    proj["gone-ent"] = ent
    # beta's VMs are named in the narrow zone too, their PTRs in the unsigned /24 zone.
    w.deploy("db-01", account="beta")
    wait_until("A of db-01", lambda: st.dig(f"db-01.{w.cust_zone}") != [], 20)
    st.wait_quiet(2)
    eq(len(vms), 7, "VMs alive")


def deploy_project(name):
    resp = st.cs.call("deployVirtualMachine", name=name, projectid=w.project_id,
                      networkids=w.net_proj, zoneid="zone-1", templateid="tmpl-1",
                      serviceofferingid="so-1")
    return resp["deployvirtualmachineresponse"]["id"]


def ent_rows(name):
    return st.sql1(f"SELECT COUNT(*) FROM records WHERE name = '{name}' AND type IS NULL")


def snapshot(zone):
    return st.sql(f"SELECT r.name, IFNULL(r.type, '<ENT>'), IFNULL(r.ordername, '<NULL>'), "
                  f"r.auth, IFNULL(r.content, ''), IFNULL(r.ttl, -1), r.disabled FROM records r "
                  f"JOIN domains d ON d.id = r.domain_id WHERE d.name = '{zone}' "
                  f"ORDER BY BINARY r.name, r.type, r.content")


def rectify_changes_nothing():
    for zone in (w.acme_zone, w.rev16, w.rev6, w.cust_zone):
        ours = snapshot(zone)
        # The narrow zone's names sit right below its apex: no ENTs there.
        if zone != w.cust_zone:
            assert any(row[1] == "<ENT>" for row in ours), f"{zone}: no empty non-terminal rows"
        else:
            assert any(row[0].startswith("db-01.") for row in ours), f"{zone}: no VM: {ours}"
        pdnsutil("rectify-zone", zone)
        eq(snapshot(zone), ours, f"{zone} after pdnsutil rectify-zone")
        # rectify-zone leaves an ordername that reads back as the same name alone, so rectify
        # from scratch too: no ENT rows, no ordername, auth 1.
        zid = st.sql1(f"SELECT id FROM domains WHERE name = '{zone}'")
        st.sql(f"DELETE FROM records WHERE domain_id = {zid} AND type IS NULL")
        st.sql(f"UPDATE records SET ordername = NULL, auth = 1 WHERE domain_id = {zid}")
        pdnsutil("rectify-zone", zone)
        eq(snapshot(zone), ours, f"{zone} after rectifying from scratch")


def check_zone_clean():
    for zone in (w.acme_zone, w.rev16, w.rev6, w.cust_zone):
        p = pdnsutil("check-zone", zone, check=False)
        out = p.stdout + p.stderr
        clean = re.search(r"Checked \d+ records .* 0 errors, 0 warnings", out)
        assert p.returncode == 0 and clean, f"check-zone {zone}:\n{out}"


def dig_dnssec(name, rtype):
    """(status, answer rows, authority rows) of a DO query; rows are (owner, type, rdata)."""
    d = st.state["dns"]
    p = subprocess.run(["dig", "+dnssec", "+norec", "+time=2", "+tries=2", f"@{d['host']}", "-p",
                        str(d["port"]), name, rtype], capture_output=True, text=True)
    if p.returncode:
        raise AssertionError(f"dig {name} {rtype}: {p.stdout}{p.stderr}")
    status = re.search(r"status: (\w+)", p.stdout).group(1)
    sections, cur = {"ANSWER": [], "AUTHORITY": []}, None
    for line in p.stdout.splitlines():
        m = re.match(r";; (\w+) SECTION:", line)
        if m:
            cur = m.group(1)
            continue
        if cur in sections and line and not line.startswith(";"):
            f = line.split(None, 4)
            sections[cur].append((f[0].rstrip(".").lower(), f[3], f[4]))
    return status, sections["ANSWER"], sections["AUTHORITY"]


def types(rows):
    return {t if t != "RRSIG" else "RRSIG " + rd.split()[0] for _, t, rd in rows}


def signed_answer(name, rtype, want):
    status, ans, _ = dig_dnssec(name, rtype)
    eq(status, "NOERROR", f"{name} {rtype} status")
    eq(sorted(rd for _, t, rd in ans if t == rtype), sorted(want), f"{name} {rtype} records")
    assert f"RRSIG {rtype}" in types(ans), f"{name} {rtype}: no RRSIG in {ans}"


def denial(name, rtype, status_want, nsec3):
    status, ans, auth = dig_dnssec(name, rtype)
    eq(status, status_want, f"{name} {rtype} status")
    eq([a for a in ans if a[1] == rtype], [], f"{name} {rtype} answer")
    kind = "NSEC3" if nsec3 else "NSEC"
    t = types(auth)
    assert kind in t and f"RRSIG {kind}" in t and "RRSIG SOA" in t, \
        f"{name} {rtype}: no signed {kind} denial in {auth}"


def ptr_name(ip):
    return ipaddress.ip_address(ip).reverse_pointer


def answers_signed():
    for name, (_, ip, ip6) in vms.items():
        signed_answer(fqdn(name), "A", [ip])
        signed_answer(fqdn(name), "AAAA", [ip6])
        signed_answer(ptr_name(ip), "PTR", [fqdn(name) + "."])
        signed_answer(ptr_name(ip6), "PTR", [fqdn(name) + "."])


def denials():
    # Names between the VMs' names, destroyed ones, and the empty non-terminals (NODATA, not
    # NXDOMAIN) of each zone.
    denial(fqdn("web-00a"), "A", "NXDOMAIN", True)
    denial(fqdn("web-04"), "A", "NXDOMAIN", True)
    denial(f"{SUB}.{w.acme_zone}", "A", "NOERROR", True)
    denial(fqdn("web-02"), "TXT", "NOERROR", True)
    ip = vms["web-02"][1]
    a, b, c, d = ip.split(".")
    denial(f"{int(d) + 100}.{c}.{b}.{a}.in-addr.arpa", "PTR", "NXDOMAIN", False)
    denial(f"{c}.{b}.{a}.in-addr.arpa", "PTR", "NOERROR", False)
    six = ptr_name(vms["web-02"][2])
    denial(("f" if six[0] != "f" else "e") + six[1:], "PTR", "NXDOMAIN", True)
    denial(six.split(".", 8)[8], "PTR", "NOERROR", True)


def anchor_file(zone):
    d = st.state["dns"]
    p = subprocess.run(["dig", "+short", f"@{d['host']}", "-p", str(d["port"]), zone, "DNSKEY"],
                       capture_output=True, text=True, check=True)
    keys = [line.split(None, 3) for line in p.stdout.splitlines() if line.startswith("257 ")]
    assert keys, f"{zone}: no KSK/CSK in DNSKEY answer {p.stdout!r}"
    path = os.path.join(st.workdir, f"anchor-{zone}.conf")
    with open(path, "w") as f:
        f.write("trust-anchors {\n")
        for flags, proto, alg, key in keys:
            f.write(f'  "{zone}." static-key {flags} {proto} {alg} "{key.replace(" ", "")}";\n')
        f.write("};\n")
    return path


def delv(zone, name, rtype):
    d = st.state["dns"]
    p = subprocess.run(["delv", f"@{d['host']}", "-p", str(d["port"]), "-a", anchor_file(zone),
                        f"+root={zone}", name, rtype], capture_output=True, text=True, timeout=30)
    return p.stdout + p.stderr


def validated():
    name, (_, ip, ip6) = next(iter(vms.items()))
    yes, nxdomain, nodata = "; fully validated", "ncache nxdomain", "ncache nxrrset"
    cases = [(w.acme_zone, fqdn(name), "A", yes),
             (w.acme_zone, fqdn(name), "AAAA", yes),
             (w.acme_zone, fqdn(name), "TXT", nodata),
             (w.acme_zone, fqdn("web-04"), "A", nxdomain),
             (w.acme_zone, f"{SUB}.{w.acme_zone}", "A", nodata),
             (w.rev16, ptr_name(ip), "PTR", yes),
             (w.rev16, ptr_name(ip), "TXT", nodata),
             (w.rev16, ptr_name(ip).split(".", 1)[1], "PTR", nodata),
             # The /24 label whose last VM was destroyed, a host missing from a /24 in use,
             # and a forward name sorting between two VMs' names: validated denials.
             (w.rev16, proj["gone-ent"], "PTR", nxdomain),
             (w.rev16, "254." + ptr_name(ip).split(".", 1)[1], "PTR", nxdomain),
             (w.acme_zone, fqdn("web-02a"), "A", nxdomain),
             (w.cust_zone, f"db-01.{w.cust_zone}", "A", yes),
             (w.cust_zone, f"db-00.{w.cust_zone}", "A", nxdomain),
             (w.rev6, ptr_name(ip6), "PTR", yes),
             (w.rev6, ptr_name(ip6).split(".", 8)[8], "PTR", nodata)]
    for zone, qname, rtype, want in cases:
        out = delv(zone, qname, rtype)
        ok = want in out and (want == yes or "; negative response, fully validated" in out)
        assert ok and "validation failure" not in out, \
            f"delv {qname} {rtype} (anchor {zone}), want {want!r}:\n{out}"


try:
    r.check("setup: signed zones (NSEC3, NSEC, NSEC3 ip6.arpa, NSEC3 narrow)", setup)
    r.check("a stream of creates and destroys", stream)
    r.check("pdnsutil rectify-zone changes nothing", rectify_changes_nothing)
    r.check("pdnsutil check-zone is clean", check_zone_clean)
    r.check("new names answer with RRSIGs", answers_signed)
    r.check("names between answer with signed NSEC/NSEC3 denial", denials)
    r.check("delv validates answers and denials with the zones' keys", validated)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
sys.exit(r.finish())
