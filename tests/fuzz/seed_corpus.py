#!/usr/bin/env python3
"""seed_corpus.py -- writes the fuzz targets' seed corpus under tests/fuzz/corpus/<target>/.

Seeds are real CloudStack records (the event fixtures, and what the simulator publishes in each of
its formats for a VM's life), small malformed variants, JSON edge cases, name/address/record
lines for fuzz_dns and VM objects for fuzz_policy. Crash inputs found later are added beside them
by hand (crash-<sha1>) and are never rewritten here. Must not: write anything outside the corpus
directories, or remove a file it did not write (its own files are named seed-*).

    python3 tests/fuzz/seed_corpus.py
"""
import glob
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))

from cloudstack_sim import CloudStackClient, Simulator  # noqa: E402

KEY, SECRET = "seed-key-" + "k" * 20, "seed-secret-" + "s" * 20


def sim_events():
    """Every record the simulator publishes for a VM's whole life, in each CloudStack format."""
    out = []
    for fmt in ("4.11", "4.16", "4.17"):
        sim = Simulator(KEY, SECRET, fmt=fmt)
        sim.start()
        try:
            dom, acct, net = ("6f0c2b1e-8d3a-4c5e-9b7f-1a2d3e4f5a6b",
                              "3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63",
                              "5b9d2f7a-1c4e-4a8b-b3d6-0e2f5a8c1d74")
            net2 = "0f4a7c2e-9d1b-4e6a-8c3f-2b5d8a1e6f90"
            sim.setup({"domains": [{"id": dom, "name": "customers", "path": "ROOT/customers",
                                    "networkdomain": "cust.example"}],
                       "accounts": [{"id": acct, "name": "acme", "domainid": dom,
                                     "networkdomain": "acme.example"}],
                       "networks": [{"id": net, "name": "acme-net", "cidr": "10.1.1.0/24",
                                     "gateway": "10.1.1.1", "ip6cidr": "2001:db8:1:1::/64",
                                     "ip6gateway": "2001:db8:1:1::1"},
                                    {"id": net2, "name": "back", "cidr": "10.1.2.0/24",
                                     "gateway": "10.1.2.1"}]})
            cs = CloudStackClient(sim.endpoint, KEY, SECRET)
            vm = cs.call("deployVirtualMachine", name="web-01", account="acme", domainid=dom,
                         networkids=net, zoneid="z", templateid="t", serviceofferingid="s",
                         group="www")["deployvirtualmachineresponse"]["id"]
            cs.call("stopVirtualMachine", id=vm)
            cs.call("startVirtualMachine", id=vm)
            cs.call("updateVirtualMachine", id=vm, group="db")
            cs.call("addNicToVirtualMachine", virtualmachineid=vm, networkid=net2)
            cs.call("destroyVirtualMachine", id=vm)
            cs.call("recoverVirtualMachine", id=vm)
            cs.call("destroyVirtualMachine", id=vm, expunge="true")
            out += [(fmt, e["value"]) for e in sim.events_since(0)]
        finally:
            sim.stop()
    return out


def malformed(text):
    """A few broken variants of one good record."""
    out = [text[: len(text) // 2], text + "}", text.replace('"', "'", 2)]
    try:
        obj = json.loads(text)
    except ValueError:
        return out
    if isinstance(obj, dict):
        for key in list(obj)[:6]:
            out.append(json.dumps(dict(obj, **{key: 5})))
            out.append(json.dumps(dict(obj, **{key: []})))
    return out


JSON_CASES = [
    "{}", "[]", "0", "-0", "1e308", "-1.5E-3", "9223372036854775807", "9223372036854775808",
    "\"\\u00e9\\ud83d\\ude00\"", "\"\\u0000\"", "\"\\ud800\"", "[1,2,[3,[4,[5]]]]",
    "{\"a\":1,\"a\":2}", "{\"\":\"\"}", " \n\t{\"k\" : [ true , false , null ] } ",
    "[" * 64 + "]" * 64, "[" * 65 + "]" * 65, "\"\xc3\xa9\"", "\"\\/\\b\\f\\n\\r\\t\"",
    "{\"a\":01}", "[1,]", "NaN", "\"unterminated",
]

DNS_CASES = [
    "10.2.0.192\nexample.com\nA\n60",
    "web-01\nacme.example\nA\n300",
    "web-01.acme.example\n10.1.1.5\nA\n60",
    "web-01.acme.example\n2001:db8:1:1::5\nAAAA\n60",
    "5.1.1.10.in-addr.arpa\nweb-01.acme.example\nPTR\n60",
    "2001:0DB8:0000:0000:0000:0000:0000:0001\n::ffff:10.0.0.1\nAAAA\n1",
    "_sip._tcp.example.com\nexample.com\nPTR\n604800",
    "Web Servers!\ncust.example\nA\n0",
    "a..b.example\nexample\nA\n604801",
    "-bad-.example.com\n999.1.1.1\nA\n60",
    "fe80::1%eth0\nexample.com.\nAAAA\n60",
    "x" * 64 + ".example\n" + "y" * 250 + "\nPTR\n60",
    "1.2.3\n010.1.1.1\nA\n-1",
    "\u00fcn\u00efc\u00f6d\u00e9\nexample.com\nA\n60",
]


def policy_cases():
    out = []
    fixtures = os.path.join(ROOT, "tests", "policy", "fixtures")
    accounts = {}
    for path in glob.glob(os.path.join(fixtures, "listAccounts_*.json")):
        with open(path) as f:
            for a in json.load(f)["listaccountsresponse"].get("account", []):
                accounts[(a["name"], a["domainid"])] = a
    domains = {}
    for path in glob.glob(os.path.join(fixtures, "listDomains_*.json")):
        with open(path) as f:
            for d in json.load(f)["listdomainsresponse"].get("domain", []):
                domains[d["id"]] = d
    for path in sorted(glob.glob(os.path.join(fixtures, "listVirtualMachines_*.json"))):
        with open(path) as f:
            for vm in json.load(f)["listvirtualmachinesresponse"].get("virtualmachine", []):
                out.append(json.dumps(vm))
                case = {"vm": vm, "account": accounts.get((vm.get("account"), vm.get("domainid"))),
                        "domain": domains.get(vm.get("domainid"))}
                out.append(json.dumps({k: v for k, v in case.items() if v is not None}))
                odd = dict(vm, name="x'; DROP TABLE records; --", group="*.evil")
                out.append(json.dumps(dict(case, vm=odd)))
    return out


def write(target, items):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        if name.startswith("seed-"):
            os.remove(os.path.join(d, name))
    seen = set()
    for text in items:
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        digest = hashlib.sha1(data).hexdigest()[:16]
        if digest in seen:
            continue
        seen.add(digest)
        with open(os.path.join(d, f"seed-{digest}"), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seen)} seeds")


def main():
    records = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "events", "*.json"))):
        with open(path) as f:
            records.append(f.read().strip())
    # One record of each kind (format, record type, event, status) is enough to start from.
    kinds = set()
    for fmt, value in sim_events():
        obj = json.loads(value)
        kind = (fmt, tuple(sorted(obj))[:3], obj.get("event") or obj.get("commandEventType"),
                obj.get("status"))
        if kind not in kinds:
            kinds.add(kind)
            records.append(value)
    bad = [variant for text in records[:6] for variant in malformed(text)]
    write("fuzz_cs_event", records + bad)
    write("fuzz_json", records[:20] + JSON_CASES + bad[:20])
    write("fuzz_dns", DNS_CASES)
    write("fuzz_policy", policy_cases())


if __name__ == "__main__":
    main()
