#!/usr/bin/env python3
# Self-test of the CloudStack simulator: signing, API shapes, paging, events, Kafka delivery.
# Must not: need more than the Python standard library and kcat, or leave a started process running.
"""Run: python3 -m unittest tests/sim/test_cloudstack_sim.py   (or run this file directly).

The Kafka tests need kcat. They use CSPDNS_KAFKA_BOOTSTRAP if set, else CSPDNS_KAFKA_MOCK (a
kafka-mock helper binary), else a librdkafka mock cluster hosted by kcat itself. Without kcat they
are skipped.
Set CSPDNS_SIM_SCALE=N to change the VM count of the paging scale test (default 100000).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPConnection, HTTPException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cloudstack_sim import (
    CloudStackClient,
    Simulator,
    gson_dumps,
    java_urlencode,  # noqa: E402
    sign_request,
    signing_string,
)

SIM_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cloudstack_sim.py")

# Test vector, cloudstack-formats.md section 6.
V_SECRET = "Cz8sQ2tAx6Wf0hnhK-VkWj9x3yNbZ7e2Pq1LmR4oTgUs5vAaB3cD6eF8gH0iJ2kL4mN6pQ8rS0tU2vW4xY6z7A"
V_APIKEY = "bT4kV2mX9pQ1rS7uW3yZ5aC8dE0fG2hJ4kL6mN8pQ0rS2tU4vW6xY8zA1bC3dE5fG7hJ9kL1mN3pQ5rS7tU9vA"
V1_PARAMS = {
    "command": "listVirtualMachines",
    "response": "json",
    "listall": "true",
    "page": "1",
    "pagesize": "500",
    "keyword": "web server~1",
    "apikey": V_APIKEY,
    "signatureversion": "3",
    "expires": "2024-05-02T14:20:00+0000",
}
V1_SIGNED = (
    "apikey=bt4kv2mx9pq1rs7uw3yz5ac8de0fg2hj4kl6mn8pq0rs2tu4vw6xy8za1bc3de5fg7hj9kl1mn3pq5rs7tu9va"
    "&command=listvirtualmachines&expires=2024-05-02t14%3a20%3a00%2b0000&keyword=web%20server%7e1"
    "&listall=true&page=1&pagesize=500&response=json&signatureversion=3"
)
V1_SIGNATURE = "HfWT5B1yA9SJU6vkCPZHuQv+fmk="
V1_URL = (
    "/client/api?command=listVirtualMachines&response=json&listall=true&page=1&pagesize=500"
    "&keyword=web%20server%7E1&apikey=" + V_APIKEY + "&signatureversion=3"
    "&expires=2024-05-02T14%3A20%3A00%2B0000&signature=HfWT5B1yA9SJU6vkCPZHuQv%2Bfmk%3D"
)
V2_DOMAIN = "4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f"
V2_PARAMS = {"command": "listDomains", "response": "json", "id": V2_DOMAIN, "apikey": V_APIKEY}
V2_SIGNATURE = "9n7o2hx3a0TIbbkRopMKMpLrE7E="
V2_URL = (
    "/client/api?command=listDomains&response=json&id="
    + V2_DOMAIN
    + "&apikey="
    + V_APIKEY
    + "&signature="
    + urllib.parse.quote(V2_SIGNATURE, safe="")
)

# Bodies quoted from cloudstack-formats.md sections 6 and 7.
BODY_401 = (
    '{"listdomainsresponse":{"uuidList":[],"errorcode":401,"errortext":'
    '"unable to verify user credentials and/or request signature"}}'
)
BODY_431 = (
    '{"listdomainsresponse":{"uuidList":[],"errorcode":431,"cserrorcode":4350,"errortext":'
    '"Invalid parameter id value=4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f due to incorrect long value '
    "format, or entity does not exist or due to incorrect parameter annotation for the field "
    'in api cmd class."}}'
)

ADMIN_KEY, ADMIN_SECRET = "admin-api-key", "admin-secret-key"
DOM = "1d7a2c3e-0000-4000-8000-00000000d001"
ACME = "3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63"
ALICE = "7d1a9e3f-5b2c-4a8d-8e6f-0c3b9a2d4e15"
BOB = "3b8e2c4d-1f6a-4e7b-9c0d-00000000b0b0"
PROJ = "5e3f1a2b-0000-4000-8000-0000000000a1"
NET_V6 = "5b9d2f7a-1c4e-4a8b-b3d6-0e2f5a8c1d74"
NET_V4 = "0f4a7c2e-9d1b-4e6a-8c3f-2b5d8a1e6f90"
NET_PROJ = "0f4a7c2e-9d1b-4e6a-8c3f-000000000001"
ALICE_KEY, ALICE_SECRET = "alice-api-key", "alice-secret"
VM_RESPONSE = "org.apache.cloudstack.api.response.UserVmResponse"

WORLD = {
    "domains": [
        {
            "id": DOM,
            "name": "customers",
            "path": "ROOT/customers",
            "networkdomain": "customers.cloud.example.net",
        }
    ],
    "accounts": [
        {
            "id": ACME,
            "name": "acme",
            "domainid": DOM,
            "networkdomain": "acme.cloud.example.net",
            "users": [{"id": ALICE, "username": "alice"}],
        },
        {"id": BOB, "name": "bob", "domainid": DOM},
    ],
    "projects": [{"id": PROJ, "name": "webshop", "domainid": DOM, "account": ACME}],
    "networks": [
        {
            "id": NET_V6,
            "name": "acme-net",
            "cidr": "10.1.1.0/24",
            "gateway": "10.1.1.1",
            "ip6cidr": "2001:db8:100:10::/64",
            "ip6gateway": "2001:db8:100:10::1",
            "account": ACME,
            "vlan": 1203,
        },
        {
            "id": NET_V4,
            "name": "acme-backend",
            "cidr": "10.2.0.0/24",
            "gateway": "10.2.0.1",
            "account": ACME,
            "vlan": 1207,
        },
        {"id": NET_PROJ, "name": "webshop-net", "cidr": "10.3.0.0/24"},
    ],
    "apikeys": [
        {"apikey": ALICE_KEY, "secretkey": ALICE_SECRET, "accountid": ACME, "userid": ALICE}
    ],
}


def http(port, path, method="GET", data=None, headers=None):
    """(status, body text) of one request to the simulator."""
    req = urllib.request.Request(
        "http://127.0.0.1:%d%s" % (port, path), data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def control(port, name, body=None):
    status, text = http(
        port,
        "/sim/" + name,
        "POST" if body is not None else "GET",
        json.dumps(body).encode() if body is not None else None,
        {"Content-Type": "application/json"},
    )
    return status, json.loads(text)


def parsed_events(sim, since=0):
    return [(e["key"], json.loads(e["value"])) for e in sim.events if e["seq"] > since]


def action_events(events, event_type=None):
    return [
        (k, v)
        for k, v in events
        if "event" in v
        and v.get("status") in ("Created", "Scheduled", "Started", "Completed")
        and "details" not in v
        and (event_type is None or v["event"] == event_type)
    ]


def job_events(events):
    return [(k, v) for k, v in events if "jobId" in v]


def split_job_result(value):
    """4.11-4.15 jobResult '<class>/<object>/<json>': split at the first two '/' only."""
    cls, obj, text = value.split("/", 2)
    return cls, obj, json.loads(text)


class SigningTest(unittest.TestCase):
    def test_vector_one(self):
        self.assertEqual(signing_string(V1_PARAMS), V1_SIGNED)
        self.assertEqual(sign_request(V1_PARAMS, V_SECRET), V1_SIGNATURE)

    def test_vector_one_ignores_signature_param(self):
        params = dict(V1_PARAMS, signature="whatever")
        self.assertEqual(sign_request(params, V_SECRET), V1_SIGNATURE)

    def test_vector_two(self):
        self.assertEqual(sign_request(V2_PARAMS, V_SECRET), V2_SIGNATURE)

    def test_java_urlencoder_rules(self):
        self.assertEqual(java_urlencode("a b~c*d.e-f_g"), "a+b%7Ec*d.e-f_g")
        self.assertEqual(java_urlencode("é/+="), "%C3%A9%2F%2B%3D")

    def test_case_sensitive_name_order(self):
        # Collections.sort on names: upper case sorts before lower case.
        self.assertTrue(signing_string({"b": "1", "Z": "2", "a": "3"}).startswith("z=2&a=3&b=1"))

    def test_gson_html_escapes(self):
        self.assertEqual(
            gson_dumps({"d": "id = 2 & <x> 'y'"}),
            '{"d":"id \\u003d 2 \\u0026 \\u003cx\\u003e \\u0027y\\u0027"}',
        )


class SimTestCase(unittest.TestCase):
    fmt = "4.16"

    def setUp(self):
        self.sim = Simulator(ADMIN_KEY, ADMIN_SECRET, fmt=self.fmt)
        self.port = self.sim.start()
        self.sim.setup(WORLD)
        self.admin = CloudStackClient(self.sim.endpoint, ADMIN_KEY, ADMIN_SECRET)
        self.alice = CloudStackClient(self.sim.endpoint, ALICE_KEY, ALICE_SECRET)
        self.admin_account = self.sim.admin["id"]
        self.admin_user = self.sim.admin["users"][0]

    def tearDown(self):
        self.sim.stop()

    def deploy(self, client=None, **params):
        params.setdefault("networkids", NET_V6)
        if "projectid" not in params:
            params.setdefault("account", "acme")
            params.setdefault("domainid", DOM)
        out = (client or self.admin).call("deployVirtualMachine", **params)[
            "deployvirtualmachineresponse"
        ]
        return out["id"], out["jobid"]

    def get_vm(self, vmid, client=None):
        out = (client or self.admin).call("listVirtualMachines", id=vmid)[
            "listvirtualmachinesresponse"
        ]
        return out["virtualmachine"][0] if "virtualmachine" in out else None


class AuthTest(SimTestCase):
    def test_vector_two_url_exact_431_then_200(self):
        self.sim.setup(
            {
                "apikeys": [
                    {
                        "apikey": V_APIKEY,
                        "secretkey": V_SECRET,
                        "accountid": self.admin_account,
                        "userid": self.admin_user,
                    }
                ]
            }
        )
        status, body = http(self.port, V2_URL)
        self.assertEqual((status, body), (431, BODY_431))
        self.sim.setup({"domains": [{"id": V2_DOMAIN, "name": "vector", "path": "ROOT/vector"}]})
        status, body = http(self.port, V2_URL)
        self.assertEqual(status, 200)
        domains = json.loads(body)["listdomainsresponse"]
        self.assertEqual(domains["count"], 1)
        self.assertEqual(domains["domain"][0]["path"], "ROOT/vector")

    def test_vector_one_url_is_expired(self):
        self.sim.setup(
            {
                "apikeys": [
                    {
                        "apikey": V_APIKEY,
                        "secretkey": V_SECRET,
                        "accountid": self.admin_account,
                        "userid": self.admin_user,
                    }
                ]
            }
        )
        status, body = http(self.port, V1_URL)
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(body)["listvirtualmachinesresponse"]["errorcode"], 401)
        # The same request with a future expiry and a fresh signature passes.
        params = dict(V1_PARAMS, expires="2099-01-01T00:00:00+0000")
        params["signature"] = sign_request(params, V_SECRET)
        status, _ = http(
            self.port, "/client/api?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        )
        self.assertEqual(status, 200)

    def signed_url(self, params, secret=ADMIN_SECRET, raw_signature=False):
        params = dict(params)
        sig = sign_request(params, secret)
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        return (
            "/client/api?"
            + query
            + "&signature="
            + (sig if raw_signature else urllib.parse.quote(sig, safe=""))
        )

    def test_every_auth_failure_is_the_same_401(self):
        base = {"command": "listDomains", "response": "json", "apikey": ADMIN_KEY}
        cases = {
            "unsigned": "/client/api?" + urllib.parse.urlencode(base),
            "bad signature": self.signed_url(base, secret="wrong"),
            "unknown apikey": self.signed_url(dict(base, apikey="nobody")),
            "expired": self.signed_url(
                dict(base, signatureversion="3", expires="2020-01-01T00:00:00+0000")
            ),
            "v3 without expires": self.signed_url(dict(base, signatureversion="3")),
            "v3 unparsable expires": self.signed_url(
                dict(base, signatureversion="3", expires="tomorrow")
            ),
            "missing apikey": self.signed_url({"command": "listDomains", "response": "json"}),
        }
        # A signature containing '+' sent raw decodes to a space and must fail.
        for n in range(200):
            params = dict(base, nonce=str(n))
            if "+" in sign_request(params, ADMIN_SECRET):
                cases["raw plus in signature"] = self.signed_url(params, raw_signature=True)
                ok_url = self.signed_url(params)
                break
        self.assertIn("raw plus in signature", cases)
        for name, url in cases.items():
            with self.subTest(name):
                self.assertEqual(http(self.port, url), (401, BODY_401))
        self.assertEqual(http(self.port, ok_url)[0], 200)

    def test_old_signature_without_version_ignores_expires(self):
        url = self.signed_url(
            {
                "command": "listDomains",
                "response": "json",
                "apikey": ADMIN_KEY,
                "expires": "2000-01-01T00:00:00+0000",
            }
        )
        self.assertEqual(http(self.port, url)[0], 200)

    def test_post_form_is_verified(self):
        client = CloudStackClient(self.sim.endpoint, ADMIN_KEY, ADMIN_SECRET, method="POST")
        self.assertIn("listdomainsresponse", client.call("listDomains", listall=True))
        params = client.signed_params("listDomains")
        params["signature"] = "AAAA" + params["signature"][4:]
        status, body = http(
            self.port,
            "/client/api",
            "POST",
            urllib.parse.urlencode(params).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual((status, body), (401, BODY_401))

    def test_rotate_key(self):
        self.assertEqual(self.alice.request("listVirtualMachines")[0], 200)
        status, _ = control(self.port, "rotate_key", {"apikey": ALICE_KEY, "new_secret": "fresh"})
        self.assertEqual(status, 200)
        self.assertEqual(self.alice.request("listVirtualMachines")[0], 401)
        fresh = CloudStackClient(self.sim.endpoint, ALICE_KEY, "fresh")
        self.assertEqual(fresh.request("listVirtualMachines")[0], 200)

    def test_unknown_command_and_xml_default(self):
        status, body, _ = self.admin.request("listFoo")
        self.assertEqual(status, 432)
        self.assertEqual(
            body,
            {
                "errorresponse": {
                    "uuidList": [],
                    "errorcode": 432,
                    "cserrorcode": 9999,
                    "errortext": "The given command does not exist or it is not "
                    "available for user",
                }
            },
        )
        params = self.admin.signed_params("listDomains")
        del params["response"]
        params["signature"] = sign_request(params, ADMIN_SECRET)
        status, text = http(self.port, "/client/api?" + urllib.parse.urlencode(params))
        self.assertEqual(status, 200)
        self.assertTrue(
            text.startswith('<?xml version="1.0" encoding="UTF-8"?><listdomainsresponse'), text
        )
        self.assertIn("<path>ROOT/customers</path>", text)

    def test_normal_user_cannot_list_domains(self):
        self.assertEqual(self.alice.request("listDomains")[0], 432)


class ListTest(SimTestCase):
    def test_unknown_ids_are_431_and_empty_filters_are_empty(self):
        missing = "00000000-1111-4222-8333-444444444444"
        for command, param, wrapper in (
            ("listVirtualMachines", "id", "listvirtualmachinesresponse"),
            ("listAccounts", "id", "listaccountsresponse"),
            ("listDomains", "id", "listdomainsresponse"),
            ("listProjects", "id", "listprojectsresponse"),
            ("listNics", "virtualmachineid", "listnicsresponse"),
            ("listVirtualMachines", "domainid", "listvirtualmachinesresponse"),
        ):
            with self.subTest(command=command, param=param):
                status, body, _ = self.admin.request(command, **{param: missing})
                self.assertEqual(status, 431)
                err = body[wrapper]
                self.assertEqual(err["cserrorcode"], 4350)
                self.assertEqual(
                    err["errortext"],
                    "Invalid parameter %s value=%s due to incorrect long value "
                    "format, or entity does not exist or due to incorrect parameter annotation for "
                    "the field in api cmd class." % (param, missing),
                )
        self.assertEqual(self.admin.call("listDomains", name="nosuch"), {"listdomainsresponse": {}})
        self.assertEqual(
            self.admin.call("listVirtualMachines", listall=True),
            {"listvirtualmachinesresponse": {}},
        )
        # `ids` (since 4.4) drops non-UUIDs silently, but an unknown UUID is still 431.
        self.assertEqual(
            self.admin.call("listVirtualMachines", ids="not-a-uuid"),
            {"listvirtualmachinesresponse": {}},
        )
        self.assertEqual(self.admin.request("listVirtualMachines", ids=missing)[0], 431)

    def test_expunged_vm_lists_as_empty(self):
        vmid, _ = self.deploy(name="gone")
        self.assertEqual(self.get_vm(vmid)["state"], "Running")
        self.admin.call("destroyVirtualMachine", id=vmid, expunge=True)
        _, _, text = self.admin.request("listVirtualMachines", id=vmid)
        self.assertEqual(text, '{"listvirtualmachinesresponse":{}}')
        # Silent removal (the expunge thread) looks the same.
        vmid2, _ = self.deploy(name="gone2")
        self.assertEqual(control(self.port, "delete_vm", {"id": vmid2})[0], 200)
        self.assertEqual(
            self.admin.call("listVirtualMachines", id=vmid2), {"listvirtualmachinesresponse": {}}
        )

    def test_destroyed_vm_visible_to_admin_not_to_user(self):
        vmid, _ = self.deploy(name="dead")
        self.admin.call("destroyVirtualMachine", id=vmid)
        self.assertEqual(self.get_vm(vmid)["state"], "Destroyed")
        self.assertIsNone(self.get_vm(vmid, self.alice))
        destroyed = self.alice.call("listVirtualMachines", id=vmid, state="Destroyed")
        self.assertEqual(destroyed["listvirtualmachinesresponse"]["count"], 1)

    def test_paging_count_and_errors(self):
        vms = [
            {
                "id": "00000000-0000-4000-8000-%012d" % i,
                "name": "vm-%04d" % i,
                "account": "acme",
                "domainid": DOM,
                "state": "Running",
                "nic": [],
            }
            for i in range(1234)
        ]
        status, out = control(self.port, "vms", {"vms": vms})
        self.assertEqual((status, len(out["ids"])), (200, 1234))
        seen = []
        for page in (1, 2, 3):
            body = self.admin.call("listVirtualMachines", listall=True, page=page, pagesize=500)
            resp = body["listvirtualmachinesresponse"]
            self.assertEqual(resp["count"], 1234)
            seen += [vm["id"] for vm in resp["virtualmachine"]]
        self.assertEqual(seen, [vm["id"] for vm in vms])
        self.assertEqual(
            self.admin.call("listVirtualMachines", listall=True, page=4, pagesize=500),
            {"listvirtualmachinesresponse": {"count": 1234}},
        )
        default = self.admin.call("listVirtualMachines", listall=True)[
            "listvirtualmachinesresponse"
        ]
        self.assertEqual((default["count"], len(default["virtualmachine"])), (1234, 500))
        unlimited = self.admin.call("listVirtualMachines", listall=True, pagesize=-1)[
            "listvirtualmachinesresponse"
        ]
        self.assertEqual(len(unlimited["virtualmachine"]), 1234)
        errors = {
            (("page", 1), ("pagesize", 501)): (
                4350,
                "Page size can't exceed max allowed page size value: 500",
            ),
            (("pagesize", 10),): (
                9999,
                '"page" parameter is required when "pagesize" is specified',
            ),
            (("page", 2),): (9999, '"pagesize" parameter is required when "page" is specified'),
            (("page", 1), ("pagesize", -1)): (
                4350,
                "Can't specify page parameter when pagesize is -1 (Unlimited)",
            ),
        }
        for params, (cs, text) in errors.items():
            with self.subTest(params=params):
                status, body, _ = self.admin.request(
                    "listVirtualMachines", listall=True, **dict(params)
                )
                self.assertEqual(status, 431)
                self.assertEqual(body["listvirtualmachinesresponse"]["cserrorcode"], cs)
                self.assertEqual(body["listvirtualmachinesresponse"]["errortext"], text)
        named = self.admin.call("listVirtualMachines", listall=True, name="vm-012")[
            "listvirtualmachinesresponse"
        ]
        self.assertEqual(named["count"], 10)
        self.assertEqual(
            self.admin.call("listVirtualMachines", listall=True, keyword="VM-1233")[
                "listvirtualmachinesresponse"
            ]["count"],
            1,
        )

    def test_scope_without_listall(self):
        vmid, _ = self.deploy(name="mine")
        # Root admin without listall sees only its own account's VMs, but finds any VM by id.
        self.assertEqual(
            self.admin.call("listVirtualMachines"), {"listvirtualmachinesresponse": {}}
        )
        self.assertEqual(self.get_vm(vmid)["id"], vmid)
        self.assertEqual(
            self.alice.call("listVirtualMachines")["listvirtualmachinesresponse"]["count"], 1
        )
        bob_view = self.admin.call("listVirtualMachines", account="bob", domainid=DOM)
        self.assertEqual(bob_view, {"listvirtualmachinesresponse": {}})
        acme_view = self.admin.call("listVirtualMachines", account="acme", domainid=DOM)
        self.assertEqual(acme_view["listvirtualmachinesresponse"]["count"], 1)

    def test_project_vms_need_projectid_minus_one(self):
        plain, _ = self.deploy(name="plain")
        projvm, _ = self.deploy(self.alice, name="proj-vm", projectid=PROJ, networkids=NET_PROJ)

        def ids(**params):
            out = self.admin.call("listVirtualMachines", **params)["listvirtualmachinesresponse"]
            return {vm["id"] for vm in out.get("virtualmachine", [])}

        self.assertEqual(ids(listall=True), {plain})
        self.assertEqual(ids(listall=True, projectid=-1), {projvm})
        self.assertEqual(ids(projectid=PROJ), {projvm})
        self.assertEqual(ids(id=projvm), {projvm})
        vm = self.get_vm(projvm)
        self.assertEqual((vm["projectid"], vm["project"]), (PROJ, "webshop"))
        self.assertNotIn("account", vm)
        alice_ids = {
            vm["id"]
            for vm in self.alice.call("listVirtualMachines", projectid=-1)[
                "listvirtualmachinesresponse"
            ]["virtualmachine"]
        }
        self.assertIn(projvm, alice_ids)
        control(self.port, "config", {"projectid_minus1": "all"})
        self.assertEqual(ids(listall=True, projectid=-1), {plain, projvm})

    def test_vm_shape_nics_and_ipv6(self):
        vmid, _ = self.deploy(
            name="web-01",
            displayname="Web 01",
            group="www",
            networkids=NET_V6 + "," + NET_V4,
            ipaddress="10.1.1.23",
        )
        vm = self.get_vm(vmid)
        self.assertEqual(
            (vm["name"], vm["displayname"], vm["account"], vm["domainid"], vm["domain"]),
            ("web-01", "Web 01", "acme", DOM, "customers"),
        )
        self.assertEqual((vm["group"], vm["state"], vm["username"]), ("www", "Running", "alice"))
        self.assertNotIn("accountid", vm)
        v6, v4 = vm["nic"]
        self.assertEqual((v6["isdefault"], v4["isdefault"]), (True, False))
        self.assertEqual(
            (v6["ipaddress"], v6["netmask"], v6["gateway"]),
            ("10.1.1.23", "255.255.255.0", "10.1.1.1"),
        )
        self.assertEqual(v6["ip6cidr"], "2001:db8:100:10::/64")
        self.assertTrue(v6["ip6address"].startswith("2001:db8:100:10:"))
        for field in ("ip6address", "ip6cidr", "ip6gateway"):
            self.assertNotIn(field, v4)
        self.assertEqual(v4["isolationuri"], "vlan://1207")
        self.assertEqual(v4["ipaddress"], "10.2.0.2")
        # The same address again in the same network is refused, and so is the same host name.
        self.assertEqual(
            self.admin.request(
                "deployVirtualMachine",
                name="other",
                account="acme",
                domainid=DOM,
                networkids=NET_V6,
                ipaddress="10.1.1.23",
            )[0],
            431,
        )
        self.assertEqual(
            self.admin.request(
                "deployVirtualMachine",
                name="web-01",
                account="acme",
                domainid=DOM,
                networkids=NET_V6,
            )[0],
            431,
        )
        self.assertEqual(
            self.admin.request(
                "deployVirtualMachine", name="1bad", account="acme", domainid=DOM, networkids=NET_V6
            )[0],
            431,
        )
        nics = self.admin.call("listNics", virtualmachineid=vmid)["listnicsresponse"]
        self.assertEqual(nics["count"], 2)
        self.assertTrue(all(n["virtualmachineid"] == vmid for n in nics["nic"]))

    def test_accounts_and_domains(self):
        accounts = self.admin.call("listAccounts", listall=True)["listaccountsresponse"]
        self.assertEqual({a["name"] for a in accounts["account"]}, {"admin", "acme", "bob"})
        acme = self.admin.call("listAccounts", id=ACME)["listaccountsresponse"]["account"][0]
        self.assertEqual(
            (acme["name"], acme["domainid"], acme["networkdomain"], acme["accounttype"]),
            ("acme", DOM, "acme.cloud.example.net", 0),
        )
        self.assertEqual(acme["user"][0]["id"], ALICE)
        bob = self.admin.call("listAccounts", name="bob", domainid=DOM)["listaccountsresponse"][
            "account"
        ][0]
        self.assertNotIn("networkdomain", bob)
        dom = self.admin.call("listDomains", id=DOM)["listdomainsresponse"]["domain"][0]
        self.assertEqual(
            (dom["name"], dom["path"], dom["level"], dom["networkdomain"], dom["parentdomainname"]),
            ("customers", "ROOT/customers", 1, "customers.cloud.example.net", "ROOT"),
        )
        root = self.admin.call("listDomains", name="ROOT")["listdomainsresponse"]["domain"][0]
        self.assertNotIn("parentdomainid", root)
        self.assertNotIn("networkdomain", root)
        projects = self.admin.call("listProjects", listall=True)["listprojectsresponse"]
        self.assertEqual(projects["project"][0]["id"], PROJ)
        self.assertEqual(
            self.alice.call("listAccounts")["listaccountsresponse"]["account"][0]["id"], ACME
        )


class EventTest(SimTestCase):
    def test_admin_deploy_for_customer(self):
        vmid, jobid = self.deploy(name="web-01", group="www")
        events = parsed_events(self.sim)
        actions = action_events(events, "VM.CREATE")
        self.assertEqual(
            [v["status"] for _, v in actions], ["Created", "Scheduled", "Started", "Completed"]
        )
        self.assertTrue(all(k == vmid for k, _ in actions))
        accounts = {v["status"]: v["account"] for _, v in actions}
        self.assertEqual(accounts["Scheduled"], ACME)  # the entity owner
        for status in ("Created", "Started", "Completed"):
            self.assertEqual(accounts[status], self.admin_account)  # the caller
        self.assertTrue(
            all(v["user"] == self.admin_user and v["VirtualMachine"] == vmid for _, v in actions)
        )
        self.assertEqual(
            actions[-1][1]["description"], "Successfully completed starting Vm. Vm Id: 1"
        )
        jobs = job_events(events)
        self.assertEqual([v["status"] for _, v in jobs], ["IN_PROGRESS", "SUCCEEDED"])
        submit, done = jobs[0][1], jobs[1][1]
        self.assertNotIn("jobResult", submit)
        self.assertTrue(all(k == vmid for k, _ in jobs))
        self.assertEqual(
            (done["jobId"], done["account"], done["user"]),
            (jobid, self.admin_account, self.admin_user),
        )
        self.assertEqual(
            done["command"], "org.apache.cloudstack.api.command.admin.vm.DeployVMCmdByAdmin"
        )
        result = done["jobResult"]
        self.assertEqual(
            (result["account"], result["domainid"], result["class"], result["object"]),
            ("acme", DOM, VM_RESPONSE, "virtualmachine"),
        )
        self.assertEqual(
            (result["state"], result["group"], result["jobid"]), ("Running", "www", jobid)
        )
        info = done["cmdInfo"]
        self.assertEqual(
            (info["apikey"], info["name"], info["id"], info["uuid"]),
            (ADMIN_KEY, "web-01", "1", vmid),
        )
        self.assertIn("signature", info)
        self.assertNotIn("command", info)
        self.assertEqual(info["ctxDetails"]["interface com.cloud.vm.VirtualMachine"], vmid)
        order = [
            v.get("status")
            for _, v in events
            if "jobId" in v or v.get("event") == "VM.CREATE" and "entity" in v
        ]
        self.assertEqual(
            order, ["Created", "Scheduled", "IN_PROGRESS", "Started", "Completed", "SUCCEEDED"]
        )
        states = [
            (v["old-state"], v["new-state"])
            for _, v in events
            if "new-state" in v and v["status"] == "postStateTransitionEvent"
        ]
        self.assertEqual(states, [("Stopped", "Starting"), ("Starting", "Running")])
        job = self.admin.query_job(jobid)
        self.assertEqual(
            (job["jobstatus"], job["jobresultcode"], job["jobinstanceid"]), (1, 0, vmid)
        )
        self.assertEqual(job["jobresult"]["virtualmachine"]["id"], vmid)

    def test_project_vm_events_carry_project(self):
        vmid, _ = self.deploy(self.alice, name="proj-vm", projectid=PROJ, networkids=NET_PROJ)
        events = parsed_events(self.sim)
        proj_account = self.sim.projects[PROJ]["accountid"]
        for _, v in action_events(events, "VM.CREATE"):
            self.assertEqual((v["account"], v["project"], v["Project"]), (proj_account, PROJ, PROJ))
        done = job_events(events)[-1][1]
        self.assertEqual(done["account"], ACME)
        self.assertEqual(
            (done["jobResult"]["projectid"], done["jobResult"]["project"]), (PROJ, "webshop")
        )
        self.assertNotIn("account", done["jobResult"])

    def test_failed_destroy(self):
        vmid, _ = self.deploy(name="sturdy")
        since = self.sim.event_seq
        self.assertEqual(
            control(self.port, "fail_next", {"command": "destroyVirtualMachine"})[0], 200
        )
        jobid = self.admin.call("destroyVirtualMachine", id=vmid)["destroyvirtualmachineresponse"][
            "jobid"
        ]
        events = parsed_events(self.sim, since)
        actions = action_events(events, "VM.DESTROY")
        self.assertEqual([v["status"] for _, v in actions], ["Scheduled", "Started", "Completed"])
        self.assertEqual(actions[-1][1]["description"], "Error while destroying Vm. Vm Id: 1")
        self.assertEqual(actions[0][1]["description"], "destroying vm: 1")
        self.assertTrue(all(k == vmid for k, _ in actions))
        done = job_events(events)[-1][1]
        self.assertEqual((done["status"], done["resultCode"]), ("FAILED", "530"))
        self.assertEqual(
            done["jobResult"]["class"], "org.apache.cloudstack.api.response.ExceptionResponse"
        )
        self.assertEqual(done["jobResult"]["errorcode"], 530)
        self.assertFalse([v for _, v in events if "new-state" in v])
        self.assertEqual(self.get_vm(vmid)["state"], "Running")
        job = self.admin.query_job(jobid)
        self.assertEqual((job["jobstatus"], job["jobresultcode"]), (2, 530))
        # The failure was for one call only.
        self.admin.call("destroyVirtualMachine", id=vmid)
        self.assertEqual(self.get_vm(vmid)["state"], "Destroyed")

    def test_lifecycle_and_nic_commands(self):
        vmid, _ = self.deploy(name="life")
        self.admin.call("stopVirtualMachine", id=vmid)
        self.assertEqual(self.get_vm(vmid)["state"], "Stopped")
        self.admin.call("startVirtualMachine", id=vmid)
        self.assertEqual(self.get_vm(vmid)["state"], "Running")
        out = self.admin.call(
            "updateVirtualMachine", id=vmid, name="life2", displayname="Life 2", group="g1"
        )
        self.assertEqual(out["updatevirtualmachineresponse"]["virtualmachine"]["name"], "life2")
        self.assertEqual(self.get_vm(vmid)["group"], "g1")
        job = self.admin.query_job(
            self.admin.call("addNicToVirtualMachine", virtualmachineid=vmid, networkid=NET_V4)[
                "addnictovirtualmachineresponse"
            ]["jobid"]
        )
        self.assertEqual(job["jobstatus"], 1)
        nics = self.get_vm(vmid)["nic"]
        self.assertEqual(len(nics), 2)
        new_nic = next(n for n in nics if n["networkid"] == NET_V4)
        self.assertFalse(new_nic["isdefault"])
        self.assertNotIn("group", job["jobresult"]["virtualmachine"])  # details=nics view
        add = self.admin.call("addIpToNic", nicid=new_nic["id"], ipaddress="10.2.0.77")[
            "addiptovmnicresponse"
        ]
        job = self.admin.query_job(add["jobid"])
        self.assertEqual(
            job["jobresult"]["nicsecondaryip"],
            {
                "id": add["id"],
                "ipaddress": "10.2.0.77",
                "nicid": new_nic["id"],
                "networkid": NET_V4,
            },
        )
        nic = next(n for n in self.get_vm(vmid)["nic"] if n["id"] == new_nic["id"])
        self.assertEqual(nic["secondaryip"], [{"id": add["id"], "ipaddress": "10.2.0.77"}])
        self.admin.call(
            "updateDefaultNicForVirtualMachine", virtualmachineid=vmid, nicid=new_nic["id"]
        )
        nics = self.get_vm(vmid)["nic"]
        self.assertEqual([n["isdefault"] for n in nics], [False, True])
        self.admin.call("removeIpFromNic", id=add["id"])
        nic = next(n for n in self.get_vm(vmid)["nic"] if n["id"] == new_nic["id"])
        self.assertEqual(nic["secondaryip"], [])
        old_default = nics[0]["id"]
        self.admin.call("removeNicFromVirtualMachine", virtualmachineid=vmid, nicid=old_default)
        self.assertEqual([n["id"] for n in self.get_vm(vmid)["nic"]], [new_nic["id"]])
        # Removing the default NIC fails inside the job.
        jobid = self.admin.call(
            "removeNicFromVirtualMachine", virtualmachineid=vmid, nicid=new_nic["id"]
        )["removenicfromvirtualmachineresponse"]["jobid"]
        self.assertEqual(self.admin.query_job(jobid)["jobresultcode"], 431)
        self.admin.call("destroyVirtualMachine", id=vmid)
        self.admin.call("recoverVirtualMachine", id=vmid)
        self.assertEqual(self.get_vm(vmid)["state"], "Stopped")
        self.admin.call("destroyVirtualMachine", id=vmid)
        self.admin.call("expungeVirtualMachine", id=vmid)
        self.assertIsNone(self.get_vm(vmid))
        events = parsed_events(self.sim)
        kinds = {v["event"] for _, v in action_events(events)}
        self.assertTrue(
            {
                "VM.STOP",
                "VM.START",
                "VM.UPDATE",
                "NIC.CREATE",
                "NIC.SECONDARY.IP.ASSIGN",
                "NIC.SECONDARY.IP.CONFIGURE",
                "NIC.UPDATE",
                "NIC.SECONDARY.IP.UNASSIGN",
                "NIC.DELETE",
                "VM.DESTROY",
                "VM.RECOVER",
                "VM.EXPUNGE",
            }
            <= kinds,
            kinds,
        )
        recover = action_events(events, "VM.RECOVER")
        self.assertEqual([v["status"] for _, v in recover], ["Completed"])  # synchronous command
        self.assertIsNone(recover[0][0])  # VM.RECOVER is not mapped to an entity before 4.17
        self.assertNotIn("entity", recover[0][1])
        self.assertEqual(recover[0][1]["VirtualMachine"], vmid)

    def test_formats(self):
        for fmt, entity in (
            ("4.11", "com.cloud.vm.VirtualMachine"),
            ("4.16", "com.cloud.vm.VirtualMachine"),
            ("4.17", "VirtualMachine"),
        ):
            with self.subTest(fmt=fmt):
                self.assertEqual(control(self.port, "config", {"format": fmt})[1]["format"], fmt)
                since = self.sim.event_seq
                vmid, _ = self.deploy(
                    name="fmt-" + fmt.replace(".", "-"), networkids=NET_V6 + "," + NET_V4
                )
                raw = [e for e in self.sim.events if e["seq"] > since]
                events = parsed_events(self.sim, since)
                self.assertTrue(
                    all(v["entity"] == entity for _, v in action_events(events, "VM.CREATE"))
                )
                done_raw = next(e["value"] for e in raw if '"status":"SUCCEEDED"' in e["value"])
                done = json.loads(done_raw)
                if fmt == "4.11":
                    self.assertIsInstance(done["jobResult"], str)
                    cls, obj, vm = split_job_result(done["jobResult"])
                    self.assertEqual((cls, obj, vm["id"]), (VM_RESPONSE, "virtualmachine", vmid))
                    self.assertEqual(vm["nic"][0]["isolationuri"], "vlan://1203")
                    self.assertIsInstance(vm["ostypeid"], int)
                    self.assertNotIn("deviceid", vm["nic"][0])
                    info = json.loads(done["cmdInfo"])
                    self.assertEqual(
                        json.loads(info["ctxDetails"])["interface com.cloud.vm.VirtualMachine"],
                        vmid,
                    )
                    self.assertTrue(info["signature"].endswith("="))
                    self.assertIn("\\\\u003d", done_raw)  # '=' escaped twice: inner and outer Gson
                else:
                    self.assertIsInstance(done["jobResult"], dict)
                    self.assertEqual(done["jobResult"]["object"], "virtualmachine")
                    self.assertIsInstance(done["cmdInfo"]["ctxDetails"], dict)
                    self.assertIn("\\u003d", done_raw)
                    self.assertNotIn("\\\\u003d", done_raw)
                    self.assertEqual(done["jobResult"]["nic"][0]["deviceid"], "0")
                api_vm = self.get_vm(vmid)
                self.assertEqual(isinstance(api_vm["ostypeid"], int), fmt == "4.11")
                self.assertEqual("lastupdated" in api_vm, fmt != "4.11")
                self.assertNotIn("\\u003d", json.dumps(api_vm, ensure_ascii=False))
                since = self.sim.event_seq
                self.admin.call("destroyVirtualMachine", id=vmid, expunge=True)
                done = job_events(parsed_events(self.sim, since))[-1][1]
                empty = {"securitygroup": [], "nic": [], "affinitygroup": [], "tags": []}
                if fmt == "4.11":
                    self.assertEqual(
                        split_job_result(done["jobResult"]), (VM_RESPONSE, "null", empty)
                    )
                else:
                    self.assertEqual(
                        done["jobResult"], dict(empty, **{"class": VM_RESPONSE, "object": "null"})
                    )
                since = self.sim.event_seq
                other, _ = self.deploy(name="rec-" + fmt.replace(".", "-"))
                self.admin.call("destroyVirtualMachine", id=other)
                since = self.sim.event_seq
                self.admin.call("recoverVirtualMachine", id=other)
                key, recover = action_events(parsed_events(self.sim, since), "VM.RECOVER")[0]
                self.assertEqual(key, other if fmt == "4.17" else None)

    def test_publish_and_state_counts(self):
        self.assertEqual(control(self.port, "publish", {"key": None, "value": "not json"})[0], 200)
        self.assertEqual(control(self.port, "publish", {"key": "", "value": "{}"})[0], 200)
        self.assertEqual(
            [(e["key"], e["value"]) for e in list(self.sim.events)[-2:]],
            [(None, "not json"), ("", "{}")],
        )
        self.admin.call("listDomains")
        self.admin.request("listFoo")
        self.alice.request("listDomains")
        bad = CloudStackClient(self.sim.endpoint, ADMIN_KEY, "wrong")
        bad.request("listDomains")
        status, state = control(self.port, "state")
        self.assertEqual(status, 200)
        self.assertEqual(state["calls"]["listDomains"], 3)
        self.assertEqual(state["status"], {"200": 1, "432": 2, "401": 1})
        self.assertEqual(state["vms"], [])
        vmid, _ = self.deploy(name="x")
        control(self.port, "delete_vm", {"id": vmid})
        state = control(self.port, "state")[1]
        self.assertEqual([(v["id"], v["removed"]) for v in state["vms"]], [(vmid, True)])
        self.assertEqual(
            control(self.port, "events?since=%d" % (self.sim.event_seq - 1))[1]["events"][0]["seq"],
            self.sim.event_seq,
        )


class FaultTest(SimTestCase):
    def test_http_status_count_and_filter(self):
        control(
            self.port,
            "faults",
            {"mode": "http_status", "status": 503, "count": 2, "commands": ["listVirtualMachines"]},
        )
        self.assertEqual(self.admin.request("listDomains")[0], 200)
        self.assertEqual(self.admin.request("listVirtualMachines")[0], 503)
        self.assertEqual(self.admin.request("listVirtualMachines")[0], 503)
        self.assertEqual(self.admin.request("listVirtualMachines")[0], 200)

    def test_until_cleared(self):
        control(self.port, "faults", {"mode": "http_status", "status": 500})
        for _ in range(3):
            self.assertEqual(self.admin.request("listDomains")[0], 500)
        control(self.port, "faults", {"mode": "none"})
        self.assertEqual(self.admin.request("listDomains")[0], 200)

    def test_delay_and_close(self):
        control(self.port, "faults", {"mode": "delay", "delay_ms": 300, "count": 1})
        start = time.monotonic()
        self.assertEqual(self.admin.request("listDomains")[0], 200)
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        control(self.port, "faults", {"mode": "close", "count": 1})
        with self.assertRaises((urllib.error.URLError, ConnectionError, OSError)):
            self.admin.request("listDomains")
        self.assertEqual(self.admin.request("listDomains")[0], 200)
        self.assertEqual(control(self.port, "state")[1]["status"].get("closed"), 1)

    def test_bad_control_requests(self):
        self.assertEqual(control(self.port, "faults", {"mode": "explode"})[0], 400)
        self.assertEqual(control(self.port, "fail_next", {"command": "nope"})[0], 400)
        self.assertEqual(control(self.port, "vms", {"id": "x", "account": "nobody"})[0], 400)
        self.assertEqual(control(self.port, "nosuch", {})[0], 404)


class ConcurrencyTest(SimTestCase):
    def test_parallel_clients_keep_per_vm_event_order(self):
        errors, vmids, lock = [], [], threading.Lock()

        def worker(n):
            try:
                client = CloudStackClient(self.sim.endpoint, ADMIN_KEY, ADMIN_SECRET)
                for i in range(10):
                    vmid, _ = self.deploy(client, name="par-%d-%d" % (n, i), networkids=NET_V4)
                    client.call("stopVirtualMachine", id=vmid)
                    client.call("listVirtualMachines", listall=True, page=1, pagesize=50)
                    with lock:
                        vmids.append(vmid)
            except Exception as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.assertEqual(len(set(vmids)), 80)
        events = parsed_events(self.sim)
        for vmid in vmids:
            mine = [v for k, v in events if k == vmid]
            statuses = [v["status"] for v in mine if "jobId" in v or ("entity" in v)]
            self.assertEqual(
                statuses,
                [
                    "Created",
                    "Scheduled",
                    "IN_PROGRESS",
                    "Started",
                    "Completed",
                    "SUCCEEDED",
                    "Scheduled",
                    "IN_PROGRESS",
                    "Started",
                    "Completed",
                    "SUCCEEDED",
                ],
            )
        ips = [
            vm["nic"][0]["ipaddress"]
            for vm in self.admin.call("listVirtualMachines", listall=True)[
                "listvirtualmachinesresponse"
            ]["virtualmachine"]
        ]
        self.assertEqual(len(ips), len(set(ips)))

    def test_stop_cuts_keepalive_connections(self):
        conn = HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/sim/state?vms=0")
        self.assertEqual(conn.getresponse().read() and 200, 200)
        self.sim.stop()
        with self.assertRaises((HTTPException, OSError)):
            conn.request("GET", "/sim/state?vms=0")
            conn.getresponse().read()
        conn.close()


class CliTest(unittest.TestCase):
    def test_cli_serves_and_stops_on_sigint(self):
        with tempfile.TemporaryDirectory() as tmp:
            port_file = os.path.join(tmp, "port")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    SIM_PATH,
                    "--port",
                    "0",
                    "--port-file",
                    port_file,
                    "--api-key",
                    ADMIN_KEY,
                    "--secret-key",
                    ADMIN_SECRET,
                    "--format",
                    "4.11",
                ],
                stderr=subprocess.PIPE,
            )
            try:
                deadline = time.monotonic() + 15
                while not os.path.exists(port_file):
                    self.assertIsNone(proc.poll(), "simulator exited early")
                    self.assertLess(time.monotonic(), deadline, "no port file")
                    time.sleep(0.05)
                with open(port_file, encoding="ascii") as f:
                    port = int(f.read())
                client = CloudStackClient(
                    "http://127.0.0.1:%d/client/api" % port, ADMIN_KEY, ADMIN_SECRET
                )
                root = client.call("listDomains")["listdomainsresponse"]["domain"][0]
                self.assertEqual(root["path"], "ROOT")
                self.assertEqual(control(port, "state")[1]["config"]["format"], "4.11")
            finally:
                proc.send_signal(signal.SIGINT)
                _, stderr = proc.communicate(timeout=30)
            self.assertEqual(proc.returncode, 0, stderr.decode("utf-8", "replace"))

    def test_cli_refuses_missing_kcat(self):
        out = subprocess.run(
            [
                sys.executable,
                SIM_PATH,
                "--api-key",
                "k",
                "--secret-key",
                "s",
                "--kafka-bootstrap",
                "127.0.0.1:9",
                "--kcat",
                "/nonexistent/kcat",
            ],
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(out.returncode, 2)
        self.assertIn(b"kcat binary", out.stderr)


class ScaleTest(unittest.TestCase):
    def test_paging_through_many_vms(self):
        count = int(os.environ.get("CSPDNS_SIM_SCALE", "100000"))
        sim = Simulator(ADMIN_KEY, ADMIN_SECRET)
        port = sim.start()
        try:
            sim.setup(
                {
                    "accounts": [{"id": ACME, "name": "acme"}],
                    "networks": [
                        {"id": NET_V4, "name": "big", "cidr": "10.64.0.0/12", "account": ACME}
                    ],
                }
            )
            client = CloudStackClient(sim.endpoint, ADMIN_KEY, ADMIN_SECRET)
            # Clone a real deployed VM so every listed object has the full UserVmResponse size.
            model_id = client.call(
                "deployVirtualMachine",
                name="model",
                account="acme",
                domainid=sim.root["id"],
                networkids=NET_V4,
            )["deployvirtualmachineresponse"]["id"]
            model = json.loads(json.dumps(sim.vms[model_id].resp))
            control(port, "delete_vm", {"id": model_id})
            vms = []
            for i in range(count):
                vm = dict(
                    model,
                    id="00000000-0000-4000-8000-%012d" % i,
                    name="vm-%06d" % i,
                    displayname="vm-%06d" % i,
                )
                vm["nic"] = [
                    dict(
                        model["nic"][0],
                        id="00000000-0000-4000-9000-%012d" % i,
                        ipaddress="10.64.%d.%d" % (i // 250, i % 250 + 2),
                    )
                ]
                vms.append(vm)
            sim.insert_vms(vms)
            start = time.monotonic()
            seen, page = 0, 1
            while True:
                resp = client.call("listVirtualMachines", listall=True, page=page, pagesize=500)[
                    "listvirtualmachinesresponse"
                ]
                self.assertEqual(resp["count"], count)
                batch = resp.get("virtualmachine", [])
                seen += len(batch)
                if len(batch) < 500:
                    break
                page += 1
            elapsed = time.monotonic() - start
            self.assertEqual(seen, count)
            print(
                "\nscale: paged %d VMs in %.1f s (%d pages)" % (count, elapsed, page),
                file=sys.stderr,
            )
            self.assertLess(elapsed, max(30.0, count / 2000.0))
        finally:
            sim.stop()


class KafkaBroker:
    """A Kafka broker for the tests: an existing one, a kafka-mock helper, or kcat's own mock."""

    def __init__(self):
        self.proc = None
        self.bootstrap = os.environ.get("CSPDNS_KAFKA_BOOTSTRAP")
        if self.bootstrap:
            return
        mock = os.environ.get("CSPDNS_KAFKA_MOCK")
        if mock:
            self.proc = subprocess.Popen([mock], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self.bootstrap = self.proc.stdout.readline().decode().strip()
            self.proc.stdout.close()
            return
        self.proc = subprocess.Popen(
            [
                "kcat",
                "-b",
                "127.0.0.1:1",
                "-X",
                "test.mock.num.brokers=1",
                "-d",
                "mock",
                "-C",
                "-t",
                "mock-host",
                "-o",
                "end",
                "-q",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        for raw in self.proc.stderr:
            m = re.search(r"bootstrap\.servers=(127\.0\.0\.1:\d+)", raw.decode("utf-8", "replace"))
            if m:
                self.bootstrap = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.bootstrap:
            self.close()
            raise RuntimeError("kcat did not start a mock cluster")
        # kcat's debug log keeps coming; drain it so the mock never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def consume(self, topic):
        """All records of the topic as (partition, offset, key, payload)."""
        out = subprocess.run(
            ["kcat", "-C", "-b", self.bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        records = [
            json.loads(line) for line in out.stdout.decode("utf-8").splitlines() if line.strip()
        ]
        return [(r["partition"], r["offset"], r["key"], r["payload"]) for r in records]

    def close(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        self.proc = None


@unittest.skipIf(
    shutil.which("kcat") is None, "kcat is not installed: the Kafka wire tests need it"
)
class KafkaTest(unittest.TestCase):
    broker = None
    topics = 0

    @classmethod
    def setUpClass(cls):
        cls.broker = KafkaBroker()

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()

    def topic(self):
        KafkaTest.topics += 1
        return "cs-sim-test-%d-%d" % (os.getpid(), KafkaTest.topics)

    def assert_wire_matches(self, sent, wire):
        """Same records; each partition in publish order; one partition per key."""
        self.assertEqual(
            sorted((k or "", str(k is None), v) for k, v in sent),
            sorted((k or "", str(k is None), v) for _, _, k, v in wire),
        )
        index = {}
        for i, (k, v) in enumerate(sent):
            index.setdefault((k, v), []).append(i)
        by_partition = {}
        partition_of_key = {}
        for part, _, k, v in sorted(wire, key=lambda r: (r[0], r[1])):
            by_partition.setdefault(part, []).append(index[(k, v)].pop(0))
            if k:
                self.assertEqual(
                    partition_of_key.setdefault(k, part), part, "key %s split over partitions" % k
                )
        for part, order in by_partition.items():
            self.assertEqual(order, sorted(order), "partition %d out of publish order" % part)

    def test_events_reach_kafka_in_order(self):
        topic = self.topic()
        sim = Simulator(
            ADMIN_KEY, ADMIN_SECRET, kafka_bootstrap=self.broker.bootstrap, topic=topic, fmt="4.11"
        )
        port = sim.start()
        try:
            sim.setup(WORLD)
            admin = CloudStackClient(sim.endpoint, ADMIN_KEY, ADMIN_SECRET)
            vmid = admin.call(
                "deployVirtualMachine",
                name="kafka-vm",
                account="acme",
                domainid=DOM,
                networkids=NET_V6,
            )["deployvirtualmachineresponse"]["id"]
            control(port, "fail_next", {"command": "destroyVirtualMachine"})
            admin.call("destroyVirtualMachine", id=vmid)
            control(port, "config", {"format": "4.17"})
            admin.call("stopVirtualMachine", id=vmid)
            control(port, "publish", {"key": None, "value": "a\tnull-key value with a tab"})
            control(port, "publish", {"key": "poison", "value": "line one\nline two"})
            control(port, "publish", {"key": "", "value": '{"empty":"key"}'})
            control(port, "publish", {"key": vmid, "value": ""})
            status, out = control(port, "flush", {})
            self.assertEqual((status, out["ok"]), (200, True))
            sent = [(e["key"], e["value"]) for e in sim.events]
            wire = self.broker.consume(topic)
            self.assert_wire_matches(sent, wire)
            wire_values = {(k, v) for _, _, k, v in wire}
            self.assertIn((None, "a\tnull-key value with a tab"), wire_values)
            self.assertIn(("poison", "line one\nline two"), wire_values)
            self.assertIn(("", '{"empty":"key"}'), wire_values)
            self.assertIn((vmid, ""), wire_values)
            done = [
                json.loads(v) for _, _, k, v in wire if k == vmid and '"status":"SUCCEEDED"' in v
            ]
            cls, obj, vm = split_job_result(done[0]["jobResult"])
            self.assertEqual(
                (cls, obj, vm["id"], vm["account"]), (VM_RESPONSE, "virtualmachine", vmid, "acme")
            )
            failed = [
                json.loads(v) for _, _, k, v in wire if k == vmid and "Error while destroying" in v
            ]
            self.assertEqual(failed[0]["status"], "Completed")
            stop = [
                json.loads(v)
                for _, _, k, v in wire
                if k == vmid and '"VM.STOP"' in v and '"entity"' in v
            ]
            self.assertTrue(stop and all(e["entity"] == "VirtualMachine" for e in stop))
            # Flushing again with nothing new is fine, and later events still flow.
            self.assertEqual(control(port, "flush", {})[0], 200)
            admin.call("startVirtualMachine", id=vmid)
            self.assertEqual(control(port, "flush", {})[0], 200)
            self.assertEqual(len(self.broker.consume(topic)), len(sim.events))
        finally:
            self.assertIsNone(sim.stop())

    def test_events_flow_without_flush(self):
        # The daemon consumes live: events must reach Kafka promptly, not only on /sim/flush.
        topic = self.topic()
        sim = Simulator(ADMIN_KEY, ADMIN_SECRET, kafka_bootstrap=self.broker.bootstrap, topic=topic)
        sim.start()
        try:
            sim.setup(WORLD)
            admin = CloudStackClient(sim.endpoint, ADMIN_KEY, ADMIN_SECRET)
            # Several rounds: each write to kcat must get through on its own, whatever its size.
            for n, group in enumerate((None, "g" * 900, None, "h" * 3000)):
                admin.call(
                    "deployVirtualMachine",
                    name="live-%d" % n,
                    account="acme",
                    domainid=DOM,
                    networkids=NET_V6,
                    group=group,
                )
                deadline = time.monotonic() + 10
                while len(self.broker.consume(topic)) < len(sim.events):
                    self.assertLess(time.monotonic(), deadline, "events stuck without a flush")
                    time.sleep(0.05)
            self.assert_wire_matches(
                [(e["key"], e["value"]) for e in sim.events], self.broker.consume(topic)
            )
        finally:
            self.assertIsNone(sim.stop())

    def test_cli_sigterm_flushes(self):
        topic = self.topic()
        with tempfile.TemporaryDirectory() as tmp:
            port_file = os.path.join(tmp, "port")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    SIM_PATH,
                    "--port",
                    "0",
                    "--port-file",
                    port_file,
                    "--api-key",
                    ADMIN_KEY,
                    "--secret-key",
                    ADMIN_SECRET,
                    "--kafka-bootstrap",
                    self.broker.bootstrap,
                    "--topic",
                    topic,
                    "--format",
                    "4.16",
                ],
                stderr=subprocess.PIPE,
            )
            try:
                deadline = time.monotonic() + 15
                while not os.path.exists(port_file):
                    self.assertIsNone(proc.poll(), "simulator exited early")
                    self.assertLess(time.monotonic(), deadline, "no port file")
                    time.sleep(0.05)
                with open(port_file, encoding="ascii") as f:
                    port = int(f.read())
                control(port, "setup", WORLD)
                admin = CloudStackClient(
                    "http://127.0.0.1:%d/client/api" % port, ADMIN_KEY, ADMIN_SECRET
                )
                for n in range(5):
                    admin.call(
                        "deployVirtualMachine",
                        name="sig-%d" % n,
                        account="acme",
                        domainid=DOM,
                        networkids=NET_V6,
                    )
                sent = [(e["key"], e["value"]) for e in control(port, "events")[1]["events"]]
            finally:
                proc.send_signal(signal.SIGTERM)
                _, stderr = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0, stderr.decode("utf-8", "replace"))
            self.assert_wire_matches(sent, self.broker.consume(topic))

    def test_flush_reports_undeliverable(self):
        sim = Simulator(
            ADMIN_KEY,
            ADMIN_SECRET,
            kafka_bootstrap="127.0.0.1:9",
            topic="nowhere",
            message_timeout_ms=1500,
        )
        sim.start()
        try:
            sim.publish("k", "v")
            err = sim.flush(timeout=30)
            self.assertIsNotNone(err)
            self.assertIn("failed deliveries", err)
        finally:
            sim.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
