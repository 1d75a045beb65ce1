#!/usr/bin/env python3
"""resync_bench.py -- a resync of 20,000 VMs (or --vms N): its duration and cs-pdns's peak memory.

Inserts the VMs into the CloudStack simulator without events, runs `cs-pdns resync` (which
creates every record), then again (which must change nothing), and prints wall time and the peak
RSS of each cs-pdns run. A benchmark, not a test: it asserts only correctness, never speed.

Run it against a stack started as for the e2e tests:
    python3 tests/e2e/stack.py up --state /tmp/bench.json --kafka-mock build/tests/kafka-mock
    CSPDNS_BIN=$PWD/build/cs-pdns CSPDNS_STACK_STATE=/tmp/bench.json \\
        python3 tests/bench/resync_bench.py [--vms 20000]
    python3 tests/e2e/stack.py down --state /tmp/bench.json
throughput_bench.py runs the first resync of this file (bench) as its resync section.
Must not: run under ctest, or leave its database or simulator behind.
"""
import argparse
import os
import re
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))

from private_db import PrivateDbStack  # noqa: E402
from world import World  # noqa: E402


# One /16 of IPv4 addresses (10.B.16.1 to 10.B.255.250) holds 60,000 VMs; larger runs take the
# next /16s, each with its own reverse zone (extra_zones).
PER_BLOCK = 60000


def vm_v4(w, i):
    j = i % PER_BLOCK
    return f"10.{w.n + i // PER_BLOCK}.{16 + j // 250}.{1 + j % 250}"


def extra_zones(w, vms):
    """The reverse zones beyond World's own /16 that vm_v4 needs for vms VMs."""
    return [f"{w.n + b}.10.in-addr.arpa" for b in range(1, (vms + PER_BLOCK - 1) // PER_BLOCK)]


def make_vm(w, i, acme=None):
    """VM i on acme-net or beta-net: distinct IPv4 in the /16 reverse zones, IPv6 for acme."""
    acme = i % 2 == 0 if acme is None else acme
    nic = {"id": str(uuid.uuid4()), "networkid": w.net_acme if acme else w.net_beta,
           "networkname": "acme-net" if acme else "beta-net", "isdefault": True,
           "ipaddress": vm_v4(w, i), "traffictype": "Guest", "type": "Isolated"}
    if acme:
        nic["ip6address"] = f"2001:db8:{w.n:x}:2::{i >> 16:x}:{i & 0xffff:x}"
    vm = {"id": str(uuid.uuid4()), "name": f"bench-{i:06d}", "displayname": f"bench {i}",
          "account": "acme" if acme else "beta", "domainid": w.domain_id, "state": "Running",
          "nic": [nic]}
    if i % 10 == 0:
        vm["group"] = f"grp{i // 1000}"
    return vm


def hwm_kb(pid):
    """VmHWM (peak RSS) of a running process in KB, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_resync(st, *args):
    """Runs cs-pdns resync; returns (seconds, peak RSS in MiB, stdout, CPU seconds).

    The peak is cs-pdns's own VmHWM, sampled until it exits: wait4's ru_maxrss would also count
    the pages the child shared with this (possibly large) Python process before exec."""
    env = st.daemon_env(LOG_LEVEL="info")
    log = open(os.path.join(st.workdir, "resync.log"), "ab")
    t0 = time.monotonic()
    p = subprocess.Popen([st.bin, "resync", *args], env=env, stdout=subprocess.PIPE, stderr=log)
    peak, done = [0], threading.Event()

    def sample():  # never waits for the child: wait4 below must be the one to reap it
        while not done.is_set():
            peak[0] = max(peak[0], hwm_kb(p.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = p.stdout.read().decode()
    done.set()
    sampler.join()
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"resync {' '.join(args)} exited {p.returncode}:\n{out}\n(see {log.name})")
    return seconds, peak[0] / 1024.0, out, usage.ru_utime + usage.ru_stime


def cpu_s(pid):
    """User + system CPU seconds pid has used so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def field(out, name):
    m = re.search(rf"\b{name}=(\S+)", out)
    return m.group(1) if m else "?"


def bench(vms, again=True):
    """Inserts vms VMs into a simulator, resyncs once (and, with again, twice more: unchanged and
    dry run); returns the first resync's figures."""
    st = PrivateDbStack("bench")
    try:
        w = World(st, 15)
        w.create_zones()
        for z in extra_zones(w, vms):
            st.add_zone(z)
        st.start_sim("4.16")
        st.control("setup", w.setup_body())
        t0 = time.monotonic()
        for start in range(0, vms, 2000):
            st.control("vms", {"vms": [make_vm(w, i)
                                       for i in range(start, min(vms, start + 2000))]})
        print(f"inserted {vms} VMs into the simulator in {time.monotonic() - t0:.1f}s", flush=True)

        # Who works during the resync: cs-pdns (its CPU comes from wait4), the simulator
        # answering listVirtualMachines, MariaDB.
        others = {"simulator": st.sim_proc.pid, "mariadb": st.state["pids"]["mariadb"]}
        cpu0 = {k: cpu_s(p) for k, p in others.items()}
        first = run_resync(st)
        cpu = {k: round(cpu_s(p) - cpu0[k], 1) for k, p in others.items()}
        rows = st.sql1("SELECT COUNT(*) FROM records WHERE type IN ('A', 'AAAA', 'PTR')")
        owned = st.sql1("SELECT COUNT(*) FROM cspdns_record")
        print(f"first resync:  {first[0]:6.1f}s  cpu {first[3]:5.1f}s  peak RSS "
              f"{first[1]:6.1f} MiB  vms={field(first[2], 'vms')} pages={field(first[2], 'pages')} "
              f"added={field(first[2], 'added')} (records rows: {rows}, owned: {owned}); "
              f"CPU s: simulator {cpu['simulator']}, MariaDB {cpu['mariadb']}", flush=True)
        if field(first[2], "vms") != str(vms):
            sys.exit(f"the resync saw {field(first[2], 'vms')} VMs, not {vms}")
        result = {"vms": vms, "seconds": round(first[0], 2), "cpu_seconds": round(first[3], 2),
                  "peak_rss_mib": round(first[1], 1), "records": int(rows),
                  "simulator_cpu_seconds": cpu["simulator"], "mariadb_cpu_seconds": cpu["mariadb"]}
        if not again:
            return result
        serials = st.sql("SELECT domain_id, content FROM records WHERE type = 'SOA'")
        second = run_resync(st)
        changed = [field(second[2], k) for k in ("added", "removed", "updated")]
        print(f"second resync: {second[0]:6.1f}s  cpu {second[3]:5.1f}s  peak RSS "
              f"{second[1]:6.1f} MiB  unchanged={field(second[2], 'unchanged')} "
              f"added/removed/updated={'/'.join(changed)}")
        if changed != ["0", "0", "0"] or st.sql("SELECT domain_id, content FROM records WHERE "
                                                "type = 'SOA'") != serials:
            sys.exit("the second resync changed something")
        dry = run_resync(st, "--dry-run", "--json")
        print(f"dry run:       {dry[0]:6.1f}s  cpu {dry[3]:5.1f}s  peak RSS {dry[1]:6.1f} MiB")
        return result
    finally:
        st.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=20000)
    args = ap.parse_args()
    bench(args.vms)


if __name__ == "__main__":
    main()
