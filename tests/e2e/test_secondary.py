#!/usr/bin/env python3
"""test_secondary.py -- a secondary PowerDNS learns cs-pdns's changes through NOTIFY and AXFR.

An extra pdns_server runs as PRIMARY over the stack's database (its zones of type MASTER); a second
one runs as SECONDARY over a database of its own, holding the same zones as SLAVE, with its caches
at their defaults. cs-pdns writes the primary's database only: the SOA serial bump it makes must
get the primary to NOTIFY, the secondary to transfer, a new VM's records to answer from the
secondary and a destroyed VM's records to go from it, even where the secondary had cached the
NXDOMAIN or the old answer. Must not: write records itself, or let the secondary refresh by timer
(its SOA refresh is hours; only NOTIFY can explain a transfer within seconds).
"""
import sys

from harness import Results, Stack, eq, wait_until
from pdns_extra import ExtraPdns, create_db, drop_db, root_sql
from world import World

st = Stack("sec")
w = World(st, 32)
r = Results()
sec_db = "pdns_sec_" + st.tag.replace("-", "_")
master_zones = (w.acme_zone, w.rev16)
servers = {}


def fqdn(name):
    return f"{name}.{w.acme_zone}"


def setup():
    for z in (w.cust_zone, w.rev24, w.rev6):
        st.add_zone(z)
    for z in master_zones:
        st.add_zone(z, kind="MASTER")
    sec = ExtraPdns(st.state, f"sec-{st.tag}", db=create_db(st.state, sec_db), caches=True,
                    overrides={"secondary": "yes", "allow-notify-from": "127.0.0.0/8",
                               "loglevel": 6})
    # The zones' NS (ns1.example.net) is no server here: only also-notify reaches the secondary.
    pri = ExtraPdns(st.state, f"pri-{st.tag}", caches=False,
                    overrides={"primary": "yes", "xfr-cycle-interval": 1, "only-notify": "",
                               "also-notify": f"127.0.0.1:{sec.port}",
                               "allow-axfr-ips": "127.0.0.0/8", "loglevel": 6})
    for z in master_zones:
        root_sql(st.state, f"INSERT INTO domains(name, type, master) "
                 f"VALUES('{z}', 'SLAVE', '127.0.0.1:{pri.port}')", db=sec_db)
    servers["pri"] = pri.start()
    servers["sec"] = sec.start()
    for z in master_zones:
        wait_until(f"the secondary's first transfer of {z}",
                   lambda z=z: sec.soa_serial(z) == st.serial(z), 30)
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    st.start_daemon()


def transferred(zone, serial_before):
    """Waits until the secondary serves a serial of zone newer than serial_before, and it is the
    database's."""
    sec = servers["sec"]
    wait_until(f"the database's serial of {zone} to move past {serial_before}",
               lambda: st.serial(zone) > serial_before, 15)
    wait_until(f"the secondary to serve {zone} at the database's serial",
               lambda: sec.soa_serial(zone) == st.serial(zone), 15)


vm = {}


def new_vm_reaches_secondary():
    pri, sec = servers["pri"], servers["sec"]
    fwd0, rev0 = st.serial(w.acme_zone), st.serial(w.rev16)
    ip = f"10.{w.n}.1.60"
    ptr = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    # The secondary caches these NXDOMAINs: it must drop them when a transfer brings the names.
    eq(sec.query(fqdn("sec-01")), ("NXDOMAIN", []), "secondary before the VM exists")
    eq(sec.query(ptr, "PTR"), ("NXDOMAIN", []), "secondary's PTR before the VM exists")
    mark = len(sec.log_text())
    vm["id"] = w.deploy("sec-01", ipaddress=ip)
    vm["ip"] = w.default_nic(vm["id"])["ipaddress"]
    eq(vm["ip"], ip, "the VM's address")
    transferred(w.acme_zone, fwd0)
    transferred(w.rev16, rev0)
    eq(sec.query(fqdn("sec-01")), ("NOERROR", [vm["ip"]]), "A from the secondary")
    eq(pri.dig(fqdn("sec-01")), [vm["ip"]], "A from the primary")
    eq(sec.dig(ptr, "PTR"), [fqdn("sec-01") + "."], "PTR from the secondary")
    log = sec.log_text()[mark:]
    for z in master_zones:
        assert f"Received NOTIFY for {z} from 127.0.0.1" in log, \
            f"the secondary logged no NOTIFY for {z} after the VM was created"


def destroyed_vm_leaves_secondary():
    sec = servers["sec"]
    fwd0 = st.serial(w.acme_zone)
    st.cs.call("destroyVirtualMachine", id=vm["id"], expunge="true")
    transferred(w.acme_zone, fwd0)
    eq(sec.query(fqdn("sec-01")), ("NXDOMAIN", []), "secondary after the VM is gone")
    ptr = ".".join(reversed(vm["ip"].split("."))) + ".in-addr.arpa"
    wait_until("the PTR to go from the secondary", lambda: sec.dig(ptr, "PTR") == [], 15)


def main():
    try:
        r.check("setup: primary, secondary with its own database, first transfer", setup)
        if r.failed:
            return r.finish()
        r.check("a new VM's records transfer to the secondary via NOTIFY",
                new_vm_reaches_secondary)
        r.check("a destroyed VM's records leave the secondary", destroyed_vm_leaves_secondary)
        if r.failed:
            st.dump_logs()
            for s in servers.values():
                print(f"---- {s.name} log (last 40 lines) ----")
                print("\n".join(s.log_text().splitlines()[-40:]))
        return r.finish()
    finally:
        st.close()
        for s in servers.values():
            s.stop()
        drop_db(st.state, sec_db)


if __name__ == "__main__":
    sys.exit(main())
