"""world.py -- one test's CloudStack world: domains, accounts, networks, and the zones they need.

Every test file builds its world with its own net index n (10.n.x.x, 2001:db8:n::), so reverse zones
of different test files never collide in the shared database. Must not: reuse a range whose zones
exist (a rerun on the same stack moves on to a free one).
"""
import ipaddress
import uuid


def rev6_zone(prefix):
    """The ip6.arpa zone of an IPv6 network whose prefix length is a multiple of 4."""
    net = ipaddress.IPv6Network(prefix)
    nibbles = net.network_address.exploded.replace(":", "")[: net.prefixlen // 4]
    return ".".join(reversed(nibbles)) + ".ip6.arpa"


class World:
    def __init__(self, st, n):
        tag = st.tag
        # Another run on the same stack may hold this range's reverse zones: take the next one.
        while st.sql1(f"SELECT COUNT(*) FROM domains WHERE name='{n}.10.in-addr.arpa'") != "0":
            n = n + 16 if n + 16 < 255 else n % 16 + 1
        self.n = n
        self.root_domain = "ROOT"
        self.domain_id = str(uuid.uuid4())
        self.acme_id = str(uuid.uuid4())
        self.beta_id = str(uuid.uuid4())
        self.gamma_id = str(uuid.uuid4())
        self.project_id = str(uuid.uuid4())
        self.cust_zone = f"cust-{tag}.example"
        self.acme_zone = f"acme-{tag}.example"
        self.nozone = f"nozone-{tag}.example"
        self.net_acme = str(uuid.uuid4())
        self.net_beta = str(uuid.uuid4())
        self.net_proj = str(uuid.uuid4())
        self.rev16 = f"{n}.10.in-addr.arpa"        # holds 10.n.1.x (acme)
        self.rev24 = f"2.{n}.10.in-addr.arpa"      # holds 10.n.2.x (beta): longest suffix wins
        self.v6_prefix = f"2001:db8:{n:x}::/48"
        self.rev6 = rev6_zone(self.v6_prefix)
        self.st = st

    def create_zones(self):
        for z in (self.cust_zone, self.acme_zone, self.rev16, self.rev24, self.rev6):
            self.st.add_zone(z)

    def setup_body(self):
        n = self.n
        return {
            "domains": [{"id": self.domain_id, "name": "customers", "path": "ROOT/customers",
                         "networkdomain": self.cust_zone}],
            "accounts": [
                {"id": self.acme_id, "name": "acme", "domainid": self.domain_id,
                 "networkdomain": self.acme_zone},
                {"id": self.beta_id, "name": "beta", "domainid": self.domain_id},
                {"id": self.gamma_id, "name": "gamma", "domainid": self.domain_id,
                 "networkdomain": self.nozone},
            ],
            "projects": [{"id": self.project_id, "name": "proj", "domainid": self.domain_id}],
            "networks": [
                {"id": self.net_acme, "name": "acme-net", "cidr": f"10.{n}.1.0/24",
                 "gateway": f"10.{n}.1.1", "ip6cidr": f"2001:db8:{n:x}:1::/64",
                 "ip6gateway": f"2001:db8:{n:x}:1::1"},
                {"id": self.net_beta, "name": "beta-net", "cidr": f"10.{n}.2.0/24",
                 "gateway": f"10.{n}.2.1"},
                {"id": self.net_proj, "name": "proj-net", "cidr": f"10.{n}.3.0/24",
                 "gateway": f"10.{n}.3.1"},
            ],
        }

    def deploy(self, name, account="acme", network=None, **params):
        net = network or (self.net_beta if account == "beta" else self.net_acme)
        args = {"name": name, "account": account, "domainid": self.domain_id, "networkids": net,
                "zoneid": "zone-1", "templateid": "tmpl-1", "serviceofferingid": "so-1"}
        args.update(params)
        resp = self.st.cs.call("deployVirtualMachine", **args)
        return resp["deployvirtualmachineresponse"]["id"]

    def vm(self, vm_id):
        resp = self.st.cs.call("listVirtualMachines", id=vm_id, listall="true")
        items = resp["listvirtualmachinesresponse"].get("virtualmachine", [])
        if not items:
            resp = self.st.cs.call("listVirtualMachines", id=vm_id, listall="true",
                                   projectid="-1")
            items = resp["listvirtualmachinesresponse"].get("virtualmachine", [])
        return items[0] if items else None

    def default_nic(self, vm_id):
        vm = self.vm(vm_id)
        return next(nic for nic in vm["nic"] if nic.get("isdefault"))
