#!/usr/bin/env python3
# CloudStack management-server simulator for tests and the demo: signed API, VMs, Kafka events.
# Must not: need more than the Python 3.11 standard library and kcat, or listen beyond 127.0.0.1.
"""CloudStack API + Kafka event-bus simulator.

Run it:
    python3 tests/sim/cloudstack_sim.py --port 0 --port-file FILE --api-key K --secret-key S \
        [--kafka-bootstrap HOST:PORT --topic T] [--format 4.11|4.16|4.17] [--kcat kcat]

or use it in-process:
    from cloudstack_sim import Simulator, sign_request, CloudStackClient

What it speaks (facts from /work/shared/design/cloudstack-formats.md):
  * /client/api, GET or POST form, verified like ApiServer.verifyRequest. Any signature, key or
    expiry problem is the same 401. The body is JSON when response=json, otherwise a small XML
    rendering of the same object (CloudStack's default is XML; nothing relies on its details).
  * Read commands: listVirtualMachines, listAccounts, listDomains, listProjects, listNics,
    queryAsyncJobResult. Write commands: deployVirtualMachine, start/stop/destroy/expunge/
    recover/updateVirtualMachine, addNicToVirtualMachine, removeNicFromVirtualMachine,
    updateDefaultNicForVirtualMachine, addIpToNic, removeIpFromNic.
  * Async jobs finish at once, but the events go out in CloudStack's order: action Created
    (create commands), Scheduled, job submit (IN_PROGRESS), Started, resource-state and usage
    records, Completed, job complete. Formats: 4.11 (jobResult/cmdInfo are strings), 4.16
    (objects) and 4.17 (objects, and the action-event entity is "VirtualMachine" instead of
    "com.cloud.vm.VirtualMachine").
  * listVirtualMachines with projectid=-1 returns project VMs only ("projects_only", the classic
    behaviour). Newer CloudStack returns everything for listall=true&projectid=-1; switch with
    POST /sim/config {"projectid_minus1": "all"}.

Kafka: one persistent `kcat -P -E ... -K '\\t' -z none` child fed "key<TAB>value" lines (a line
without a tab is a message with a null key). A writer thread feeds it, so API calls never wait on
Kafka. Each write is padded with newlines to the next 1024-byte boundary of kcat's input: kcat
1.7.1 reads stdin in blocking 1024-byte chunks (the last line would wait for more input) and skips
empty lines, so events reach Kafka within milliseconds.
POST /sim/flush guarantees delivery like this: it waits until every event queued before the call
was written to kcat, then closes kcat's stdin. At EOF kcat waits until librdkafka has a delivery
report for every message and exits 1 if any delivery failed; the simulator waits for that exit
and also counts "Delivery failed" lines on kcat's stderr. The next event starts a new kcat, so
per-key order is kept (the new producer only starts after the old one delivered everything).
Values that cannot go on one line (raw /sim/publish values with tabs or newlines) go through a
one-shot kcat with random delimiters, after flushing the persistent one.

Control API (unsigned, JSON), see Simulator.handle_control for the list. Extras beyond the
brief: GET /sim/events?since=N (the events published, also kept when Kafka is off), POST
/sim/config keys "state_events", "usage_events", "projectid_minus1", GET /sim/state?vms=0
(skip the VM list).
"""

import argparse
import base64
import collections
import hashlib
import hmac
import ipaddress
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FORMATS = ("4.11", "4.16", "4.17")
DEFAULT_FORMAT = "4.17"
MAX_PAGE_SIZE = 500
CLOUDSTACK_VERSION = {"4.11": "4.11.3.0", "4.16": "4.16.1.0", "4.17": "4.17.2.0"}

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HOSTNAME_RE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
EXPIRES_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?"
    r"(Z)?(?:([+-])(\d{2}):?(\d{2}))?$"
)

CS_INVALID_PARAM = 4350
CS_PERMISSION = 4365
CS_RUNTIME = 4250
CS_SERVER_API = 9999

AUTH_ERROR = "unable to verify user credentials and/or request signature"
NO_SUCH_COMMAND = "The given command does not exist or it is not available for user"
BAD_PARAM = (
    "Invalid parameter {name} value={value} due to incorrect long value format, or entity does not "
    "exist or due to incorrect parameter annotation for the field in api cmd class."
)

RESP_PKG = "org.apache.cloudstack.api.response."
VM_RESPONSE = RESP_PKG + "UserVmResponse"
EXCEPTION_RESPONSE = RESP_PKG + "ExceptionResponse"
SUCCESS_RESPONSE = RESP_PKG + "SuccessResponse"
SECIP_RESPONSE = RESP_PKG + "NicSecondaryIpResponse"
USER_VM_PKG = "org.apache.cloudstack.api.command.user.vm."
ADMIN_VM_PKG = "org.apache.cloudstack.api.command.admin.vm."

# Java interface of each first-class entity; ctxDetails keys are Class.toString() of these.
ENTITY_IFACE = {
    "VirtualMachine": "com.cloud.vm.VirtualMachine",
    "Nic": "com.cloud.vm.Nic",
    "NicSecondaryIp": "com.cloud.vm.NicSecondaryIp",
    "Network": "com.cloud.network.Network",
    "Domain": "com.cloud.domain.Domain",
    "Project": "com.cloud.projects.Project",
    "VirtualMachineTemplate": "com.cloud.template.VirtualMachineTemplate",
    "DataCenter": "com.cloud.dc.DataCenter",
    "ServiceOffering": "com.cloud.offering.ServiceOffering",
}

# EventTypes.entityEventDetails: drives entity/entityuuid and the Kafka key (VM.RECOVER: unmapped).
EVENT_ENTITY = {
    "VM.CREATE": "VirtualMachine",
    "VM.DESTROY": "VirtualMachine",
    "VM.START": "VirtualMachine",
    "VM.STOP": "VirtualMachine",
    "VM.UPDATE": "VirtualMachine",
    "VM.EXPUNGE": "VirtualMachine",
    "NIC.CREATE": "Nic",
    "NIC.DELETE": "Nic",
    "NIC.UPDATE": "Nic",
    "NIC.SECONDARY.IP.ASSIGN": "NicSecondaryIp",
    "NIC.SECONDARY.IP.UNASSIGN": "NicSecondaryIp",
    "NIC.SECONDARY.IP.CONFIGURE": "NicSecondaryIp",
}

# command name -> (response name, user command class, admin command class or None)
COMMANDS = {
    "listVirtualMachines": ("listvirtualmachinesresponse", None, None),
    "listAccounts": ("listaccountsresponse", None, None),
    "listDomains": ("listdomainsresponse", None, None),
    "listProjects": ("listprojectsresponse", None, None),
    "listNics": ("listnicsresponse", None, None),
    "queryAsyncJobResult": ("queryasyncjobresultresponse", None, None),
    "deployVirtualMachine": (
        "deployvirtualmachineresponse",
        USER_VM_PKG + "DeployVMCmd",
        ADMIN_VM_PKG + "DeployVMCmdByAdmin",
    ),
    "startVirtualMachine": (
        "startvirtualmachineresponse",
        USER_VM_PKG + "StartVMCmd",
        ADMIN_VM_PKG + "StartVMCmdByAdmin",
    ),
    "stopVirtualMachine": (
        "stopvirtualmachineresponse",
        USER_VM_PKG + "StopVMCmd",
        ADMIN_VM_PKG + "StopVMCmdByAdmin",
    ),
    "destroyVirtualMachine": (
        "destroyvirtualmachineresponse",
        USER_VM_PKG + "DestroyVMCmd",
        ADMIN_VM_PKG + "DestroyVMCmdByAdmin",
    ),
    "expungeVirtualMachine": ("expungevirtualmachineresponse", ADMIN_VM_PKG + "ExpungeVMCmd", None),
    "recoverVirtualMachine": ("recovervirtualmachineresponse", USER_VM_PKG + "RecoverVMCmd", None),
    "updateVirtualMachine": (
        "updatevirtualmachineresponse",
        USER_VM_PKG + "UpdateVMCmd",
        ADMIN_VM_PKG + "UpdateVMCmdByAdmin",
    ),
    "addNicToVirtualMachine": (
        "addnictovirtualmachineresponse",
        USER_VM_PKG + "AddNicToVMCmd",
        ADMIN_VM_PKG + "AddNicToVMCmdByAdmin",
    ),
    "removeNicFromVirtualMachine": (
        "removenicfromvirtualmachineresponse",
        USER_VM_PKG + "RemoveNicFromVMCmd",
        ADMIN_VM_PKG + "RemoveNicFromVMCmdByAdmin",
    ),
    "updateDefaultNicForVirtualMachine": (
        "updatedefaultnicforvirtualmachineresponse",
        USER_VM_PKG + "UpdateDefaultNicForVMCmd",
        ADMIN_VM_PKG + "UpdateDefaultNicForVMCmdByAdmin",
    ),
    "addIpToNic": ("addiptovmnicresponse", USER_VM_PKG + "AddIpToVmNicCmd", None),
    "removeIpFromNic": ("removeipfromnicresponse", USER_VM_PKG + "RemoveIpFromVmNicCmd", None),
}

# Domain admins and root admins only (ListDomainsCmd is authorized for Admin and DomainAdmin).
ADMIN_ONLY = {"listDomains"}

# UserVmResponse fields missing when a command answers with details=nics (the NIC commands).
NICS_VIEW_DROP = frozenset(
    "groupid group templateid templatename templatedisplaytext passwordenabled serviceofferingid "
    "serviceofferingname cpunumber cpuspeed memory".split()
)

LIMIT_FIELDS = (
    "vm",
    "ip",
    "volume",
    "snapshot",
    "template",
    "project",
    "network",
    "vpc",
    "cpu",
    "memory",
    "primarystorage",
    "secondarystorage",
)

GSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "=": "\\u003d",
    "'": "\\u0027",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
GSON_ESCAPE_RE = re.compile("[<>&='\u2028\u2029]")
JAVA_URL_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*_")
# kcat 1.7.1 (Debian 12) reads stdin in blocking 1024-byte chunks, so the last line of a write waits
# for more input or EOF. kcat skips empty lines: padding every write with newlines up to the next
# chunk boundary of the stream pushes each real line out at once.
KCAT_CHUNK = 1024
HTTP_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def log(msg):
    sys.stderr.write("cloudstack-sim: %s\n" % msg)
    sys.stderr.flush()


def new_uuid():
    return str(uuid.uuid4())


def gson_dumps(obj):
    """JSON exactly as CloudStack's `new Gson().toJson()` writes it: compact, HTML-safe escapes."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    # These characters can only occur inside JSON strings, so a textual replace is exact.
    return GSON_ESCAPE_RE.sub(lambda m: GSON_ESCAPES[m.group(0)], text)


def api_dumps(obj):
    # ApiResponseSerializer un-escapes Gson's \uXXXX, so HTTP bodies carry literal '=' and '&'.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def api_time(dt=None):
    return (dt or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S+0000")


def event_time():
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000")


def param_str(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(param_str(v) for v in value)
    return str(value)


def java_urlencode(value):
    """java.net.URLEncoder.encode(value, "UTF-8"): A-Z a-z 0-9 . - * _ stay, space becomes '+'."""
    out = []
    for byte in value.encode("utf-8"):
        if byte in JAVA_URL_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append("%%%02X" % byte)
    return "".join(out)


def signing_string(params):
    """The string ApiServer.verifyRequest signs: every parameter but signature, sorted by name."""
    items = sorted(
        ((str(k), param_str(v)) for k, v in params.items() if str(k).lower() != "signature"),
        key=lambda kv: kv[0],
    )
    return "&".join(k + "=" + java_urlencode(v).replace("+", "%20") for k, v in items).lower()


def sign_request(params, secret):
    """Base64(HMAC-SHA1(secret, signing_string(params))), as CloudStack computes it."""
    digest = hmac.new(
        secret.encode("utf-8"), signing_string(params).encode("utf-8"), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def parse_expires(text):
    """Expires forms CloudStack accepts (+0000, +00:00, Z, the old Z+0000, optional fraction)."""
    m = EXPIRES_RE.match(text or "")
    if not m or (m.group(7) is None and m.group(8) is None):
        return None
    try:
        when = datetime(*(int(m.group(i)) for i in range(1, 7)), tzinfo=timezone.utc)
    except ValueError:
        return None
    if m.group(8):
        offset = timedelta(hours=int(m.group(9)), minutes=int(m.group(10)))
        when = when - offset if m.group(8) == "+" else when + offset
    return when


def parse_bool(value):
    # Java's Boolean.parseBoolean: anything but "true" (any case) is false.
    return isinstance(value, str) and value.lower() == "true"


def eui64_address(network, mac):
    """SLAAC address from the MAC, the way CloudStack shows IPv6 on guest NICs."""
    octets = bytes(int(x, 16) for x in mac.split(":"))
    interface_id = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:6]
    return str(
        ipaddress.IPv6Address(int(network.network_address) | int.from_bytes(interface_id, "big"))
    )


def to_xml(obj, version):
    """CloudStack-style XML of a {"<name>response": {...}} object (lists repeat the element)."""

    def esc(text):
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def emit(out, key, value):
        if isinstance(value, dict):
            out.append("<%s>" % key)
            for k, v in value.items():
                emit(out, k, v)
            out.append("</%s>" % key)
        elif isinstance(value, list):
            for item in value:
                emit(out, key, item)
        elif isinstance(value, bool):
            out.append("<%s>%s</%s>" % (key, "true" if value else "false", key))
        else:
            out.append("<%s>%s</%s>" % (key, esc(str(value)), key))

    name, body = next(iter(obj.items()))
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<%s cloud-stack-version="%s">' % (name, version),
    ]
    for k, v in body.items():
        emit(out, k, v)
    out.append("</%s>" % name)
    return "".join(out)


class ApiError(Exception):
    """An API failure as CloudStack reports it: HTTP status = errorcode."""

    def __init__(self, code, text, cserrorcode=None, wrapper=None):
        super().__init__(text)
        self.code = code
        self.text = text
        self.cserrorcode = cserrorcode
        self.wrapper = wrapper


class JobError(Exception):
    """A failure inside an async job: the job ends FAILED with this code."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text


def invalid_param(name, value):
    return ApiError(431, BAD_PARAM.format(name=name, value=value), CS_INVALID_PARAM)


class HttpResult:
    __slots__ = ("status", "ctype", "body", "close")

    def __init__(self, status=200, ctype="application/json; charset=UTF-8", body=b"", close=False):
        self.status = status
        self.ctype = ctype
        self.body = body if isinstance(body, bytes) else body.encode("utf-8")
        self.close = close


class Payload:
    """A response body: a dict, or pre-built JSON text (the fast path of big VM lists)."""

    __slots__ = ("obj", "text")

    def __init__(self, obj=None, text=None):
        self.obj = obj
        self.text = text

    def json(self):
        return self.text if self.text is not None else api_dumps(self.obj)

    def as_obj(self):
        return self.obj if self.obj is not None else json.loads(self.text)


class Network:
    def __init__(self, spec, index):
        self.id = spec.get("id") or new_uuid()
        self.name = spec.get("name") or "net-%d" % index
        self.type = spec.get("type") or "Isolated"
        self.vlan = str(spec.get("vlan") or 1000 + index)
        self.accountid = spec.get("accountid")
        self.domainid = spec.get("domainid")
        self.cidr = ipaddress.ip_network(spec["cidr"], strict=False) if spec.get("cidr") else None
        if self.cidr is not None and self.cidr.version != 4:
            raise ValueError("network %s: cidr must be IPv4 (use ip6cidr for IPv6)" % self.id)
        self.gateway = spec.get("gateway") or (
            str(self.cidr.network_address + 1) if self.cidr else None
        )
        self.ip6cidr = (
            ipaddress.ip_network(spec["ip6cidr"], strict=False) if spec.get("ip6cidr") else None
        )
        self.ip6gateway = spec.get("ip6gateway") or (
            str(self.ip6cidr.network_address + 1) if self.ip6cidr else None
        )
        self.used = set()
        self._next = int(self.cidr.network_address) + 1 if self.cidr else 0
        if self.gateway and self.cidr:
            self.used.add(int(ipaddress.IPv4Address(self.gateway)))

    def allocate(self, requested=None):
        """Take the requested IPv4 address, or the next free one after the last allocation."""
        if self.cidr is None:
            if requested:
                raise JobError(
                    431, "Network %s has no IPv4 range, cannot assign %s" % (self.id, requested)
                )
            return None
        if requested:
            try:
                addr = ipaddress.IPv4Address(requested)
            except ValueError:
                raise JobError(431, "Invalid ip address %s" % requested) from None
            if addr not in self.cidr or addr in (
                self.cidr.network_address,
                self.cidr.broadcast_address,
            ):
                raise JobError(
                    431, "IP address %s is not in the network range %s" % (requested, self.cidr)
                )
            if int(addr) in self.used:
                raise JobError(
                    431, "The IP address %s is already in use in network %s" % (requested, self.id)
                )
            self.used.add(int(addr))
            return str(addr)
        first = int(self.cidr.network_address) + 1
        last = int(self.cidr.broadcast_address) - 1
        size = last - first + 1
        for step in range(max(size, 0)):
            cand = first + (self._next - first + step) % size
            if cand not in self.used:
                self.used.add(cand)
                self._next = cand + 1
                return str(ipaddress.IPv4Address(cand))
        raise JobError(533, "Insufficient address capacity in network %s" % self.id)

    def mark_used(self, ip):
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            return
        if addr.version == 4 and self.cidr is not None and addr in self.cidr:
            self.used.add(int(addr))

    def release(self, ip):
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            return
        if addr.version == 4 and (not self.gateway or str(addr) != self.gateway):
            self.used.discard(int(addr))

    def check_ip6(self, requested):
        try:
            addr = ipaddress.IPv6Address(requested)
        except ValueError:
            raise JobError(431, "Invalid IPv6 address %s" % requested) from None
        if self.ip6cidr is None or addr not in self.ip6cidr:
            raise JobError(431, "IPv6 address %s is not in the network's IPv6 range" % requested)
        return str(addr)


class VM:
    __slots__ = ("iid", "id", "resp", "owner", "projectid", "removed", "raw", "cache")

    def __init__(self, iid, resp, owner, projectid, raw):
        self.iid = iid
        self.id = resp["id"]
        self.resp = resp
        self.owner = owner
        self.projectid = projectid
        self.removed = False
        self.raw = raw
        self.cache = None


class Job:
    __slots__ = (
        "id",
        "event_type",
        "cmd_class",
        "instance_type",
        "instance_uuid",
        "user",
        "account",
        "cmd_info",
        "status",
        "result",
        "error",
        "created",
        "completed",
    )

    def __init__(
        self, event_type, cmd_class, instance_type, instance_uuid, user, account, cmd_info
    ):
        self.id = new_uuid()
        self.event_type = event_type
        self.cmd_class = cmd_class
        self.instance_type = instance_type
        self.instance_uuid = instance_uuid
        self.user = user
        self.account = account
        self.cmd_info = cmd_info
        self.status = "IN_PROGRESS"
        self.result = None
        self.error = None
        self.created = api_time()
        self.completed = None


class CallCtx:
    """One API call: the caller, its parameters, and the CallContext entity map."""

    def __init__(self, account, user, params, method, command):
        self.account = account
        self.user = user
        self.params = params
        self.method = method
        self.command = command
        self.entities = {}
        self.project = None
        self.resource = None

    @property
    def root_admin(self):
        return self.account["accounttype"] == 1

    @property
    def normal_user(self):
        return self.account["accounttype"] in (0, 5)


class KafkaPublisher:
    """Feeds CloudStack events to a persistent kcat producer from a writer thread."""

    def __init__(self, kcat, bootstrap, topic, props=(), verbose=False, message_timeout_ms=60000):
        self.kcat = kcat
        self.bootstrap = bootstrap
        self.topic = topic
        self.props = list(props)
        self.verbose = verbose
        self.message_timeout_ms = message_timeout_ms
        self.errors = collections.deque(maxlen=50)
        # Everything that may have lost a message since the last flush; flush reports and clears it.
        self._problems = []
        self.stderr_tail = collections.deque(maxlen=200)
        self.delivery_failures = 0
        self.kcat_starts = 0
        self._cv = threading.Condition()
        self._queue = collections.deque()
        self._enqueued = 0
        self._written = 0
        self._stopping = False
        self._proc_lock = threading.Lock()
        self._proc = None
        self._proc_stats = None
        self._stderr_thread = None
        self._stream_bytes = 0
        self._writer = threading.Thread(target=self._run, name="kcat-writer", daemon=True)
        self._writer.start()

    def argv(self, key_delim="\\t", msg_delim=None):
        argv = [self.kcat, "-P", "-b", self.bootstrap, "-t", self.topic, "-K", key_delim]
        # -E: a broker outage is not fatal; librdkafka retries until message.timeout.ms.
        argv += ["-z", "none", "-E", "-X", "message.timeout.ms=%d" % self.message_timeout_ms]
        # Produce promptly, and hash keys like the Java producer (murmur2), so that on a topic with
        # several partitions each VM's records land in one partition as CloudStack's would.
        argv += ["-X", "linger.ms=5", "-X", "topic.partitioner=murmur2_random"]
        for prop in self.props:
            argv += ["-X", prop]
        if msg_delim:
            argv += ["-D", msg_delim]
        return argv

    def publish(self, key, value):
        """Queue one record; key None = null key, "" = empty key."""
        if (key is None and (not value or "\t" in value or "\n" in value)) or (
            key is not None and ("\t" in key or "\n" in key or "\n" in value)
        ):
            item = ("raw", key, value)
        else:
            item = ("line", (value if key is None else key + "\t" + value) + "\n", None)
        with self._cv:
            self._queue.append(item)
            self._enqueued += 1
            self._cv.notify_all()

    def stats(self):
        with self._cv:
            queued, written = self._enqueued, self._written
        return {
            "bootstrap": self.bootstrap,
            "topic": self.topic,
            "queued": queued,
            "written": written,
            "delivery_failures": self.delivery_failures,
            "kcat_starts": self.kcat_starts,
            "errors": list(self.errors),
        }

    def _run(self):
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if not self._queue:
                    return
                batch = []
                while self._queue and self._queue[0][0] == "line":
                    batch.append(self._queue.popleft()[1])
                raw = None if batch else self._queue.popleft()
            if batch:
                self._write_lines("".join(batch).encode("utf-8"))
                done = len(batch)
            else:
                self._write_raw(raw[1], raw[2])
                done = 1
            with self._cv:
                self._written += done
                self._cv.notify_all()

    def _problem(self, text):
        self.errors.append(text)
        self._problems.append(text)
        log(text)

    def _start_proc(self):
        try:
            proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            self._problem("cannot start %s: %s" % (self.kcat, exc))
            return None
        self.kcat_starts += 1
        self._stream_bytes = 0
        stats = {"failed": 0}
        thread = threading.Thread(
            target=self._read_stderr, args=(proc, stats), name="kcat-stderr", daemon=True
        )
        thread.start()
        self._proc, self._proc_stats, self._stderr_thread = proc, stats, thread
        return proc

    def _read_stderr(self, proc, stats):
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stderr_tail.append(line)
            if "Delivery failed" in line:
                stats["failed"] += 1
                self.delivery_failures += 1
            if self.verbose or "ERROR" in line or "FAIL" in line or "Delivery failed" in line:
                log("kcat: " + line)

    def _write_lines(self, data):
        with self._proc_lock:
            for attempt in range(2):
                proc = self._proc if self._proc is not None and self._proc.poll() is None else None
                if proc is None:
                    if self._proc is not None:
                        self._problem(
                            "kcat exited unexpectedly (status %s); earlier events may be lost; "
                            "stderr: %s"
                            % (self._proc.returncode, " | ".join(list(self.stderr_tail)[-3:]))
                        )
                        self._reap(self._proc, self._stderr_thread)
                        self._proc = None
                    proc = self._start_proc()
                    if proc is None:
                        break
                pad = b"\n" * (-(self._stream_bytes + len(data)) % KCAT_CHUNK)
                try:
                    proc.stdin.write(data + pad)
                    proc.stdin.flush()
                    self._stream_bytes += len(data) + len(pad)
                    return
                except (BrokenPipeError, OSError, ValueError) as exc:
                    self.errors.append(
                        "writing to kcat failed (%s), attempt %d" % (exc, attempt + 1)
                    )
                    proc.wait()
                    self._reap(proc, self._stderr_thread)
            self._problem("dropped %d bytes of events: kcat keeps failing" % len(data))

    def _write_raw(self, key, value):
        with self._proc_lock:
            self._close_proc(time.monotonic() + self.message_timeout_ms / 1000.0 + 30)
            key_delim = "@@K%s@@" % secrets.token_hex(8)
            msg_delim = "@@M%s@@" % secrets.token_hex(8)
            data = (value if key is None else key + key_delim + value) + msg_delim
            try:
                done = subprocess.run(
                    self.argv(key_delim, msg_delim),
                    input=data.encode("utf-8"),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    timeout=self.message_timeout_ms / 1000.0 + 30,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                self._problem("one-shot kcat failed: %s" % exc)
                return
            if done.returncode != 0:
                self._problem(
                    "one-shot kcat exited %d: %s"
                    % (done.returncode, done.stderr.decode("utf-8", "replace")[-500:])
                )

    @staticmethod
    def _reap(proc, thread):
        for pipe in (proc.stdin, proc.stderr):
            if thread is not None and pipe is proc.stderr:
                thread.join(5)
            try:
                pipe.close()
            except (OSError, ValueError):
                pass

    def _close_proc(self, deadline):
        """Close kcat's stdin and wait until it delivered everything (problems go to _problems)."""
        proc, stats, thread = self._proc, self._proc_stats, self._stderr_thread
        self._proc = None
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self._problem(
                "kcat did not finish delivering before the deadline; killed it "
                "(messages may be lost)"
            )
            self._reap(proc, thread)
            return
        self._reap(proc, thread)
        if rc != 0 or stats["failed"]:
            self._problem(
                "kcat exited %d with %d failed deliveries; last stderr: %s"
                % (rc, stats["failed"], " | ".join(list(self.stderr_tail)[-5:]))
            )

    def flush(self, timeout=None):
        """Block until every event queued so far is acknowledged; returns an error or None."""
        timeout = timeout if timeout is not None else self.message_timeout_ms / 1000.0 + 30
        deadline = time.monotonic() + timeout
        with self._cv:
            target = self._enqueued
            while self._written < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timed out: %d events not yet handed to kcat" % (target - self._written)
                self._cv.wait(remaining)
        with self._proc_lock:
            self._close_proc(deadline)
            problems, self._problems = self._problems, []
        return "; ".join(problems) or None

    def close(self, timeout=None):
        err = self.flush(timeout)
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._writer.join(5)
        with self._proc_lock:
            self._close_proc(time.monotonic() + 10)
            late = "; ".join(self._problems) or None
        return err or late


class Simulator:
    """All simulated CloudStack state; thread-safe; serves HTTP and publishes to Kafka."""

    def __init__(
        self,
        api_key,
        secret_key,
        kafka_bootstrap=None,
        topic="cloudstack",
        fmt=DEFAULT_FORMAT,
        kcat="kcat",
        port=0,
        kcat_props=(),
        verbose=False,
        state_events=True,
        usage_events=True,
        message_timeout_ms=60000,
        tls_cert=None,
        tls_key=None,
    ):
        self.tls = (tls_cert, tls_key) if tls_cert else None
        if fmt not in FORMATS:
            raise ValueError("format must be one of %s" % ", ".join(FORMATS))
        self.fmt = fmt
        self.verbose = verbose
        self.port = port
        self.state_events = state_events
        self.usage_events = usage_events
        self.projectid_minus1 = "projects_only"
        self._lock = threading.RLock()
        self._server = None
        self._thread = None
        if kafka_bootstrap and shutil.which(kcat) is None:
            raise ValueError("kcat binary %r not found; install kcat or pass --kcat PATH" % kcat)
        self.publisher = (
            KafkaPublisher(kcat, kafka_bootstrap, topic, kcat_props, verbose, message_timeout_ms)
            if kafka_bootstrap
            else None
        )
        self.events = collections.deque(maxlen=50000)
        self.event_seq = 0
        self._event_ids = itertools.count(1001)
        # Internal ids per table as CloudStack numbers them: ROOT is domain 1, admin is user 2.
        self._iids = {
            k: itertools.count(n)
            for k, n in (("domain", 1), ("account", 2), ("user", 2), ("project", 1), ("secip", 1))
        }
        self._vm_iids = itertools.count(1)
        self._macs = itertools.count(0x3C5E0001)
        self.domains = {}
        self.accounts = {}
        self.users = {}
        self.projects = {}
        self.networks = {}
        self.apikeys = {}
        self.vms = {}
        self.nic_vm = {}
        self.secip_vm = {}
        self.jobs = {}
        self.groups = {}
        self.calls = collections.Counter()
        self.statuses = collections.Counter()
        self.faults = {"mode": "none"}
        self.failures = {}
        self.version = 0
        self._list_cache = {}
        self.zone = {"id": new_uuid(), "name": "zone-a"}
        self.template = {"id": new_uuid(), "name": "Debian 12", "displaytext": "Debian 12 (64-bit)"}
        self.offering = {
            "id": new_uuid(),
            "name": "Small Instance",
            "cpunumber": 1,
            "cpuspeed": 1000,
            "memory": 1024,
        }
        self.guestos = {"id": new_uuid(), "iid": 142, "name": "Debian GNU/Linux 12 (64-bit)"}
        self.root = self._add_domain({"name": "ROOT", "path": "ROOT"})
        self.admin = self._add_account(
            {
                "name": "admin",
                "domainid": self.root["id"],
                "accounttype": 1,
                "users": [{"username": "admin"}],
            }
        )
        self.apikeys[api_key] = {
            "secret": secret_key,
            "accountid": self.admin["id"],
            "userid": self.admin["users"][0],
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self):
        """Bind 127.0.0.1:<port> (0 = any free port), serve in a thread; returns the port."""
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.sim = self
        if self.tls:
            # The handshake runs in accept(); a client refusing the certificate only costs that
            # connection (socketserver drops a failed accept).
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="cloudstack-sim-http",
            daemon=True,
        )
        self._thread.start()
        return self.port

    @property
    def endpoint(self):
        return "%s://127.0.0.1:%d/client/api" % ("https" if self.tls else "http", self.port)

    def stop(self):
        """Stop serving, then flush and stop kcat; returns a Kafka error text or None."""
        if self._server is not None:
            self._server.shutdown()
            # Keep-alive connections have their own threads; cut them, or they keep answering.
            with self._server.conn_lock:
                open_connections = list(self._server.open_connections)
            for conn in open_connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._server.server_close()
            self._server = None
        if self.publisher is not None:
            err = self.publisher.close()
            self.publisher = None
            return err
        return None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ entities

    def _add_domain(self, spec):
        path = spec.get("path")
        parent = None
        if spec.get("parentdomainid"):
            parent = self.domains.get(spec["parentdomainid"])
            if parent is None:
                raise ValueError(
                    "domain %s: unknown parentdomainid %s"
                    % (spec.get("id"), spec["parentdomainid"])
                )
        elif path and "/" in path:
            parent_path = path.rsplit("/", 1)[0]
            parent = next((d for d in self.domains.values() if d["path"] == parent_path), None)
            if parent is None:
                raise ValueError(
                    "domain %s: no domain with path %s" % (spec.get("id"), parent_path)
                )
        elif path != "ROOT":
            parent = self.root
        name = spec.get("name") or (path.rsplit("/", 1)[-1] if path else None)
        if not name:
            raise ValueError("domain needs a name or a path")
        if not path:
            path = parent["path"] + "/" + name
        dom = {
            "id": spec.get("id") or new_uuid(),
            "name": name,
            "path": path,
            "parentdomainid": parent["id"] if parent else None,
            "level": path.count("/"),
            "networkdomain": spec.get("networkdomain"),
            "iid": next(self._iids["domain"]),
            "created": api_time(),
        }
        self.domains[dom["id"]] = dom
        return dom

    def _add_account(self, spec):
        domainid = spec.get("domainid") or self.root["id"]
        if domainid not in self.domains:
            raise ValueError("account %s: unknown domainid %s" % (spec.get("name"), domainid))
        if not spec.get("name"):
            raise ValueError("account needs a name")
        acct = {
            "id": spec.get("id") or new_uuid(),
            "name": spec["name"],
            "domainid": domainid,
            "accounttype": int(spec.get("accounttype", 0)),
            "networkdomain": spec.get("networkdomain"),
            "iid": next(self._iids["account"]),
            "created": api_time(),
            "users": [],
            "projectid": spec.get("projectid"),
        }
        self.accounts[acct["id"]] = acct
        users = spec.get("users")
        if users is None and acct["accounttype"] != 5:
            users = [{"username": acct["name"]}]
        for user in users or []:
            self._add_user(acct, user)
        return acct

    def _add_user(self, acct, spec):
        user = {
            "id": spec.get("id") or new_uuid(),
            "username": spec.get("username") or acct["name"],
            "accountid": acct["id"],
            "iid": next(self._iids["user"]),
            "created": api_time(),
        }
        self.users[user["id"]] = user
        acct["users"].append(user["id"])
        return user

    def _find_account(self, ref, domainid=None):
        if ref in self.accounts:
            return self.accounts[ref]
        for acct in self.accounts.values():
            if (
                acct["name"] == ref
                and (domainid is None or acct["domainid"] == domainid)
                and acct["accounttype"] != 5
            ):
                return acct
        return None

    def setup(self, spec):
        """Add domains, accounts, projects, networks and API keys (see the module docstring)."""
        with self._lock:
            for d in spec.get("domains", []):
                if (
                    d.get("path") == "ROOT"
                    or d.get("name") == "ROOT"
                    and not d.get("parentdomainid")
                ):
                    self._rename_root(d)
                elif d.get("id") not in self.domains:
                    self._add_domain(d)
            for a in spec.get("accounts", []):
                if a.get("id") not in self.accounts:
                    self._add_account(a)
            for p in spec.get("projects", []):
                self._add_project(p)
            for n in spec.get("networks", []):
                if n.get("id") in self.networks:
                    continue
                net = Network(n, len(self.networks))
                if n.get("account"):
                    acct = self._find_account(n["account"], n.get("domainid"))
                    if acct is None:
                        raise ValueError("network %s: unknown account %s" % (net.id, n["account"]))
                    net.accountid, net.domainid = acct["id"], acct["domainid"]
                self.networks[net.id] = net
            for k in spec.get("apikeys", []):
                acct = self.accounts.get(k.get("accountid"))
                if acct is None or not k.get("apikey") or not k.get("secretkey"):
                    raise ValueError("apikey needs apikey, secretkey and a known accountid")
                userid = k.get("userid")
                if userid not in self.users:
                    userid = self._add_user(
                        acct,
                        {"id": userid, "username": "%s-api%d" % (acct["name"], len(acct["users"]))},
                    )["id"]
                elif self.users[userid]["accountid"] != acct["id"]:
                    raise ValueError(
                        "apikey %s: user %s is not in account %s"
                        % (k["apikey"], userid, acct["id"])
                    )
                self.apikeys[k["apikey"]] = {
                    "secret": k["secretkey"],
                    "accountid": acct["id"],
                    "userid": userid,
                }
            self._changed()
            return self.summary()

    def _rename_root(self, spec):
        old = self.root["id"]
        new = spec.get("id") or old
        if new != old:
            self.domains[new] = self.domains.pop(old)
            self.root["id"] = new
            for acct in self.accounts.values():
                if acct["domainid"] == old:
                    acct["domainid"] = new
            for dom in self.domains.values():
                if dom["parentdomainid"] == old:
                    dom["parentdomainid"] = new
        if spec.get("networkdomain"):
            self.root["networkdomain"] = spec["networkdomain"]

    def _add_project(self, spec):
        pid = spec.get("id") or new_uuid()
        if pid in self.projects:
            return self.projects[pid]
        domainid = spec.get("domainid") or self.root["id"]
        if domainid not in self.domains:
            raise ValueError("project %s: unknown domainid %s" % (pid, domainid))
        name = spec.get("name") or "project-%d" % len(self.projects)
        owner = None
        if spec.get("account"):
            owner = self._find_account(spec["account"], domainid)
            if owner is None:
                raise ValueError("project %s: unknown owner account %s" % (pid, spec["account"]))
        members = set()
        for ref in spec.get("accounts", []):
            member = self._find_account(ref, domainid)
            if member is None:
                raise ValueError("project %s: unknown member account %s" % (pid, ref))
            members.add(member["id"])
        if owner:
            members.add(owner["id"])
        acct = self._add_account(
            {
                "id": spec.get("projectaccountid"),
                "domainid": domainid,
                "accounttype": 5,
                "name": "PrjAcct-%s-%d" % (name, len(self.projects) + 1),
                "projectid": pid,
                "users": [],
            }
        )
        proj = {
            "id": pid,
            "name": name,
            "displaytext": spec.get("displaytext") or name,
            "domainid": domainid,
            "accountid": acct["id"],
            "owner": owner["id"] if owner else None,
            "members": members,
            "iid": next(self._iids["project"]),
            "created": api_time(),
        }
        self.projects[pid] = proj
        return proj

    def summary(self):
        admin_user = self.users[self.admin["users"][0]]
        return {
            "admin": {
                "accountid": self.admin["id"],
                "userid": admin_user["id"],
                "domainid": self.root["id"],
                "account": "admin",
            },
            "rootdomainid": self.root["id"],
            "zoneid": self.zone["id"],
            "domains": len(self.domains),
            "accounts": len(self.accounts),
            "projects": len(self.projects),
            "networks": len(self.networks),
            "apikeys": len(self.apikeys),
        }

    def _changed(self):
        self.version += 1
        if len(self._list_cache) > 64:
            self._list_cache.clear()

    def _touch(self, vm):
        vm.cache = None
        if not vm.raw:
            vm.resp["lastupdated"] = api_time()
        self._changed()

    # ------------------------------------------------------------------ access checks

    def _domain_under(self, domainid, scope_id, recursive=True):
        if domainid == scope_id:
            return True
        if not recursive:
            return False
        dom, scope = self.domains.get(domainid), self.domains.get(scope_id)
        return bool(dom and scope and dom["path"].startswith(scope["path"] + "/"))

    def _can_access_account(self, ctx, acct_id):
        acct = self.accounts.get(acct_id)
        if acct is None:
            return ctx.root_admin
        if ctx.root_admin or acct_id == ctx.account["id"]:
            return True
        if ctx.account["accounttype"] == 2 and self._domain_under(
            acct["domainid"], ctx.account["domainid"]
        ):
            return True
        if acct["accounttype"] == 5:
            proj = self.projects.get(acct["projectid"])
            return bool(proj and ctx.account["id"] in proj["members"])
        return False

    def _check_vm_access(self, ctx, vm):
        if not self._can_access_account(ctx, vm.owner):
            raise ApiError(
                531,
                "Account %s does not have permission to operate on vm %s"
                % (ctx.account["name"], vm.id),
                CS_PERMISSION,
            )

    # ------------------------------------------------------------------ parameter helpers

    def _require(self, ctx, name):
        value = ctx.params.get(name)
        if value is None or value == "":
            short = COMMANDS[ctx.command][0][: -len("response")]
            raise ApiError(
                431,
                "Unable to execute API command %s due to missing parameter %s" % (short, name),
                CS_SERVER_API,
            )
        return value

    def _vm_ref(self, ctx, name, required=True, include_removed=False):
        value = self._require(ctx, name) if required else ctx.params.get(name)
        if value is None:
            return None
        vm = self.vms.get(value)
        if vm is None and value.isdigit():
            vm = next((v for v in self.vms.values() if v.iid == int(value)), None)
        if vm is None:
            raise invalid_param(name, value)
        if vm.removed and not include_removed:
            raise ApiError(
                431, "Unable to find virtual machine with specified id %s" % value, CS_INVALID_PARAM
            )
        return vm

    def _net_ref(self, name, value):
        net = self.networks.get(value)
        if net is None:
            raise invalid_param(name, value)
        return net

    def _nic_ref(self, ctx, name):
        value = self._require(ctx, name)
        vmid = self.nic_vm.get(value)
        if vmid is None:
            raise invalid_param(name, value)
        vm = self.vms[vmid]
        nic = next((n for n in vm.resp.get("nic", []) if n.get("id") == value), None)
        if nic is None:
            raise invalid_param(name, value)
        return vm, nic

    def _paging(self, params):
        def as_int(name):
            value = params.get(name)
            if value is None:
                return None
            try:
                return int(value)
            except ValueError:
                raise invalid_param(name, value) from None

        page, pagesize = as_int("page"), as_int("pagesize")
        if page is None and pagesize is not None and pagesize != -1:
            raise ApiError(
                431, '"page" parameter is required when "pagesize" is specified', CS_SERVER_API
            )
        if pagesize is None and page is not None:
            raise ApiError(
                431, '"pagesize" parameter is required when "page" is specified', CS_SERVER_API
            )
        if pagesize is not None and pagesize > MAX_PAGE_SIZE:
            raise ApiError(
                431,
                "Page size can't exceed max allowed page size value: %d" % MAX_PAGE_SIZE,
                CS_INVALID_PARAM,
            )
        if pagesize == -1 and page is not None:
            raise ApiError(
                431,
                "Can't specify page parameter when pagesize is -1 (Unlimited)",
                CS_INVALID_PARAM,
            )
        if pagesize is not None and pagesize < -1:
            raise invalid_param("pagesize", pagesize)
        if pagesize == -1:
            return 0, None
        limit = pagesize if pagesize is not None else MAX_PAGE_SIZE
        start = limit * (page - 1) if page is not None and page > 0 else 0
        return start, limit

    @staticmethod
    def _list_payload(resp_name, obj_name, rows, start, limit):
        """{"x":{"count":N,"obj":[page]}}; {} without matches; {"count":N} past the end."""
        total = len(rows)
        page = rows[start:] if limit is None else rows[start : start + limit]
        if total == 0:
            return Payload({resp_name: {}})
        if not page:
            return Payload({resp_name: {"count": total}})
        return Payload({resp_name: {"count": total, obj_name: page}})

    # ------------------------------------------------------------------ VM views

    def _vm_view(self, vm, details="all"):
        resp = vm.resp
        if vm.raw:
            return resp
        if self.fmt == "4.11":
            resp = {k: v for k, v in resp.items() if k not in ("lastupdated", "osdisplayname")}
            resp["ostypeid"] = self.guestos["iid"]
            resp["nic"] = [
                {k: v for k, v in n.items() if k not in ("extradhcpoption", "deviceid")}
                for n in resp["nic"]
            ]
        if details == "nics":
            # NIC commands answer with details=nics: no group, template or offering.
            resp = {k: v for k, v in resp.items() if k not in NICS_VIEW_DROP}
        return resp

    def _vm_json(self, vm):
        cache = vm.cache
        if cache is not None and cache[0] == self.fmt:
            return cache[1]
        text = api_dumps(self._vm_view(vm))
        vm.cache = (self.fmt, text)
        return text

    def _new_nic(self, net, deviceid, isdefault, ipaddr=None, ip6addr=None):
        mac_n = next(self._macs)
        mac = "02:00:" + ":".join("%02x" % b for b in mac_n.to_bytes(4, "big"))
        nic = {"id": new_uuid(), "networkid": net.id, "networkname": net.name}
        ip = net.allocate(ipaddr)
        if net.cidr is not None:
            nic["netmask"] = str(net.cidr.netmask)
            nic["gateway"] = net.gateway
            nic["ipaddress"] = ip
        nic.update(
            {
                "isolationuri": "vlan://" + net.vlan,
                "broadcasturi": "vlan://" + net.vlan,
                "traffictype": "Guest",
                "type": net.type,
                "isdefault": isdefault,
                "macaddress": mac,
            }
        )
        if net.ip6cidr is not None:
            nic["ip6gateway"] = net.ip6gateway
            nic["ip6cidr"] = str(net.ip6cidr)
            nic["ip6address"] = (
                net.check_ip6(ip6addr) if ip6addr else eui64_address(net.ip6cidr, mac)
            )
        elif ip6addr:
            raise JobError(
                431, "Network %s has no IPv6 range, cannot assign %s" % (net.id, ip6addr)
            )
        nic["secondaryip"] = []
        nic["extradhcpoption"] = []
        nic["deviceid"] = str(deviceid)
        return nic

    def _release_nic(self, nic):
        net = self.networks.get(nic.get("networkid"))
        if net is not None:
            net.release(nic.get("ipaddress"))
            for sec in nic.get("secondaryip", []):
                net.release(sec.get("ipaddress"))
        for sec in nic.get("secondaryip", []):
            self.secip_vm.pop(sec.get("id"), None)
        self.nic_vm.pop(nic.get("id"), None)

    def _index_vm_nics(self, vm):
        for nic in vm.resp.get("nic", []):
            if nic.get("id"):
                self.nic_vm[nic["id"]] = vm.id
            net = self.networks.get(nic.get("networkid"))
            if net is not None:
                net.mark_used(nic.get("ipaddress"))
            for sec in nic.get("secondaryip", []):
                if sec.get("id"):
                    self.secip_vm[sec["id"]] = (vm.id, nic.get("id"))
                if net is not None:
                    net.mark_used(sec.get("ipaddress"))

    def _set_group(self, vm, group):
        resp, new = vm.resp, {}
        groupid = None
        if group:
            groupid = self.groups.setdefault((vm.owner, group), new_uuid())
        for k, v in resp.items():
            if k in ("groupid", "group"):
                continue
            new[k] = v
            if k == "haenable" and group:
                new["groupid"], new["group"] = groupid, group
        if group and "groupid" not in new:
            new["groupid"], new["group"] = groupid, group
        resp.clear()
        resp.update(new)

    # ------------------------------------------------------------------ events

    def _emit(self, key, obj):
        self._emit_raw(key, gson_dumps(obj))

    def _emit_raw(self, key, value):
        self.event_seq += 1
        self.events.append({"seq": self.event_seq, "key": key, "value": value})
        if self.publisher is not None:
            self.publisher.publish(key, value)

    def _event_account(self, ctx):
        return self.accounts[ctx.project["accountid"]] if ctx.project else ctx.account

    def _action(self, ctx, event_type, status, description, account=None):
        """ActionEventUtils.publishOnEventBus; returns the event id (ctxStartEventId material)."""
        account = account or self._event_account(ctx)
        entity, entity_uuid = None, None
        mapped = EVENT_ENTITY.get(event_type)
        if self.fmt == "4.17":
            if ctx.resource is not None:
                entity, entity_uuid = ctx.resource
            elif mapped and mapped in ctx.entities:
                entity, entity_uuid = mapped, ctx.entities[mapped]
        elif mapped and mapped in ctx.entities:
            entity, entity_uuid = ENTITY_IFACE[mapped], ctx.entities[mapped]
        ev = {"eventDateTime": event_time()}
        if entity_uuid:
            ev["entityuuid"] = entity_uuid
        ev["description"] = description
        ev["event"] = event_type
        ev["user"] = ctx.user["id"]
        ev["account"] = account["id"]
        if entity:
            ev["entity"] = entity
        ev["status"] = status
        if account["accounttype"] == 5 and account.get("projectid"):
            ev["project"] = account["projectid"]
        for name, value in ctx.entities.items():
            ev[name] = value
        self._emit(entity_uuid, ev)
        return next(self._event_ids)

    def _state_change(self, vm, states):
        """Walk the VM through states, publishing UserVmStateListener records on the way."""
        owner = self.accounts.get(vm.owner)
        for old, new in zip(states, states[1:]):
            if self.state_events:
                for status in ("preStateTransitionEvent", "postStateTransitionEvent"):
                    self._emit(
                        vm.id,
                        {
                            "resource": "VirtualMachine",
                            "id": vm.id,
                            "old-state": old,
                            "new-state": new,
                            "status": status,
                            "eventDateTime": event_time(),
                        },
                    )
            vm.resp["state"] = new
            usage = {"Running": "VM.START", "Destroyed": "VM.DESTROY"}.get(new)
            if new == "Stopped" and old == "Stopping":
                usage = "VM.STOP"
            if usage:
                self._usage(usage, vm, owner)
        self._touch(vm)

    def _usage(self, event_type, vm, owner):
        if self.usage_events and owner is not None:
            self._emit(
                vm.id,
                {
                    "account": owner["id"],
                    "zone": vm.resp.get("zoneid", self.zone["id"]),
                    "event": event_type,
                    "resource": "com.cloud.vm.VirtualMachine",
                    "id": vm.id,
                    "eventDateTime": event_time(),
                },
            )

    def _cmd_class(self, ctx):
        _, user_cls, admin_cls = COMMANDS[ctx.command]
        return admin_cls if ctx.root_admin and admin_cls else user_cls

    def _begin_job(
        self,
        ctx,
        event_type,
        owner,
        sched_desc,
        instance_type,
        instance_uuid,
        start_event_id=None,
        extra_info=None,
    ):
        """Scheduled action event (owner's account) then the job 'submit' record."""
        sched_id = self._action(
            ctx, event_type, "Scheduled", sched_desc, account=self.accounts.get(owner)
        )
        info = {k: v for k, v in ctx.params.items() if k != "command"}
        info["ctxUserId"] = str(ctx.user["iid"])
        info["httpmethod"] = ctx.method
        info["ctxStartEventId"] = str(start_event_id or sched_id)
        info.update(extra_info or {})
        info["ctxAccountId"] = str(ctx.account["iid"])
        if instance_uuid and "uuid" not in info:
            info["uuid"] = instance_uuid
        info["cmdEventType"] = event_type
        details = {"interface " + ENTITY_IFACE[k]: v for k, v in ctx.entities.items()}
        if self.fmt == "4.11":
            info["ctxDetails"] = gson_dumps(details)
            cmd_info = gson_dumps(info)
        else:
            info["ctxDetails"] = details
            cmd_info = info
        job = Job(
            event_type,
            self._cmd_class(ctx),
            instance_type,
            instance_uuid,
            ctx.user,
            ctx.account,
            cmd_info,
        )
        self.jobs[job.id] = job
        self._job_event(job)
        return job

    def _job_event(self, job):
        ev = {
            "jobId": job.id,
            "commandEventType": job.event_type,
            "processStatus": "0",
            "cmdInfo": job.cmd_info,
            "instanceType": job.instance_type or "unknown",
        }
        if job.status != "IN_PROGRESS":
            ev["jobResult"] = self._job_result_value(job)
        ev["resultCode"] = str(job.error[0]) if job.error else "0"
        ev["instanceUuid"] = job.instance_uuid or ""
        ev["user"] = job.user["id"]
        ev["command"] = job.cmd_class
        ev["account"] = job.account["id"]
        ev["status"] = job.status
        self._emit(job.instance_uuid or "", ev)

    def _job_result_value(self, job):
        if job.error:
            cls, obj = EXCEPTION_RESPONSE, None
            resp = {"uuidList": [], "errorcode": job.error[0], "errortext": job.error[1]}
        else:
            cls, obj, resp = job.result
        if self.fmt == "4.11":
            return "%s/%s/%s" % (cls, obj or "null", gson_dumps(resp))
        value = dict(resp)
        value["class"] = cls
        value["object"] = obj or "null"
        return value

    def _finish_job(self, job, result=None, error=None):
        job.completed = api_time()
        if error is not None:
            job.status, job.error = "FAILED", error
        else:
            job.status, job.result = "SUCCEEDED", result
        self._job_event(job)

    def _vm_result(self, vm, job, details="all"):
        resp = dict(self._vm_view(vm, details))
        resp["jobid"] = job.id
        resp["jobstatus"] = 0
        return VM_RESPONSE, "virtualmachine", resp

    def _take_failure(self, command):
        queue = self.failures.get(command)
        if not queue:
            return None
        failure = queue[0]
        failure["left"] -= 1
        if failure["left"] <= 0:
            queue.pop(0)
        return failure

    def _run_vm_job(
        self,
        ctx,
        vm,
        event_type,
        sched_desc,
        desc,
        work,
        default_error,
        details="all",
        instance_type="VirtualMachine",
        instance_uuid=None,
        start_event_id=None,
        extra_info=None,
        detail_text=None,
    ):
        """Scheduled, submit, Started, <work>, Completed, complete: one CloudStack async VM job."""
        failure = self._take_failure(ctx.command)
        job = self._begin_job(
            ctx,
            event_type,
            vm.owner,
            sched_desc,
            instance_type,
            instance_uuid or vm.id,
            start_event_id,
            extra_info,
        )
        self._action(ctx, event_type, "Started", desc)
        suffix = ". " + (detail_text or "Vm Id: %d" % vm.iid)
        try:
            if failure is not None:
                raise JobError(
                    failure.get("errorcode", 530), failure.get("errortext") or default_error
                )
            result = work(job)
        except JobError as exc:
            self._action(ctx, event_type, "Completed", "Error while " + desc + suffix)
            self._finish_job(job, error=(exc.code, exc.text))
        else:
            self._action(ctx, event_type, "Completed", "Successfully completed " + desc + suffix)
            self._finish_job(
                job, result=result if result is not None else self._vm_result(vm, job, details)
            )
        return job

    # ------------------------------------------------------------------ read commands

    def _cmd_listVirtualMachines(self, ctx):
        p = ctx.params
        start, limit = self._paging(p)
        listall = parse_bool(p.get("listall"))
        only = None
        if p.get("id"):
            only = [self._vm_ref(ctx, "id", include_removed=True)]
        ids = None
        if p.get("ids"):
            ids = []
            for token in p["ids"].split(","):
                token = token.strip()
                if not UUID_RE.match(token):
                    continue  # `ids` has a since= attribute: non-UUIDs are dropped silently
                if token not in self.vms:
                    raise invalid_param("ids", token)
                ids.append(token)
            ids = ids or None
        projectid = p.get("projectid")
        project = None
        if projectid and projectid != "-1":
            project = self.projects.get(projectid)
            if project is None:
                raise invalid_param("projectid", projectid)
        domainid = p.get("domainid")
        if domainid and domainid not in self.domains:
            raise invalid_param("domainid", domainid)
        if (
            domainid
            and not ctx.root_admin
            and not (
                ctx.account["accounttype"] == 2
                and self._domain_under(domainid, ctx.account["domainid"])
            )
            and domainid != ctx.account["domainid"]
        ):
            raise ApiError(
                531,
                "Account %s does not have permission to operate within domain id=%s"
                % (ctx.account["name"], domainid),
                CS_PERMISSION,
            )
        recursive = parse_bool(p.get("isrecursive")) or (listall and p.get("isrecursive") is None)

        # AccountManagerImpl.buildACLSearchParameters
        permitted = set()
        scope, criteria = None, None
        if p.get("account"):
            if projectid:
                raise ApiError(
                    431, "Account and projectId can't be specified together", CS_INVALID_PARAM
                )
            acct = self._find_account(p["account"], domainid or ctx.account["domainid"])
            if acct is None:
                raise ApiError(
                    431,
                    "could not find account %s in domain %s"
                    % (p["account"], domainid or ctx.account["domainid"]),
                    CS_INVALID_PARAM,
                )
            if not self._can_access_account(ctx, acct["id"]):
                raise ApiError(
                    531,
                    "Account %s does not have permission to access account %s"
                    % (ctx.account["name"], acct["name"]),
                    CS_PERMISSION,
                )
            permitted.add(acct["id"])
        if domainid:
            scope = (domainid, recursive)
        if projectid == "-1":
            criteria = "project_only"
            if not ctx.root_admin:
                member_of = {
                    pr["accountid"]
                    for pr in self.projects.values()
                    if ctx.account["id"] in pr["members"]
                }
                permitted |= member_of
                if not permitted or listall:
                    permitted.add(ctx.account["id"])
            if listall and self.projectid_minus1 == "all":
                criteria = None
        elif project is not None:
            if not self._can_access_account(ctx, project["accountid"]):
                raise ApiError(
                    531,
                    "Account %s can't access project id=%s" % (ctx.account["name"], project["id"]),
                    CS_PERMISSION,
                )
            permitted.add(project["accountid"])
        else:
            if only is None:
                criteria = "skip_project"
            if not permitted and not domainid:
                if ctx.normal_user:
                    permitted.add(ctx.account["id"])
                elif not listall:
                    if only is None:
                        permitted.add(ctx.account["id"])
                    elif not ctx.root_admin:
                        scope = (ctx.account["domainid"], True)
                elif ctx.account["accounttype"] == 2:
                    scope = (ctx.account["domainid"], True)
            elif domainid and ctx.normal_user:
                permitted.add(ctx.account["id"])

        state = p.get("state")
        name = (p.get("name") or "").lower()
        keyword = (p.get("keyword") or "").lower()
        networkid = p.get("networkid")
        if networkid:
            self._net_ref("networkid", networkid)
        zoneid = p.get("zoneid")
        hide_destroyed = state is None and ctx.normal_user

        key = (
            ctx.account["id"],
            only[0].id if only else None,
            tuple(ids) if ids else None,
            frozenset(permitted),
            scope,
            criteria,
            state,
            name,
            keyword,
            networkid,
            zoneid,
            hide_destroyed,
        )
        cached = self._list_cache.get(key)
        if cached is not None and cached[0] == self.version:
            rows = cached[1]
        else:
            candidates = only or ([self.vms[i] for i in ids] if ids else self.vms.values())
            domains = self.domains
            rows = []
            for vm in candidates:
                if vm.removed:
                    continue
                if permitted and vm.owner not in permitted:
                    continue
                resp = vm.resp
                if scope is not None:
                    if (
                        not self._domain_under(resp.get("domainid"), scope[0], scope[1])
                        or resp.get("domainid") not in domains
                    ):
                        continue
                if criteria == "skip_project" and vm.projectid:
                    continue
                if criteria == "project_only" and not vm.projectid:
                    continue
                vm_state = resp.get("state", "")
                if state is not None:
                    if state.lower() == "present":
                        if vm_state in ("Destroyed", "Expunging"):
                            continue
                    elif vm_state.lower() != state.lower():
                        continue
                elif hide_destroyed and vm_state in ("Destroyed", "Expunging"):
                    continue
                if name and name not in resp.get("name", "").lower():
                    continue
                if (
                    keyword
                    and keyword not in resp.get("name", "").lower()
                    and keyword not in resp.get("displayname", "").lower()
                    and keyword != vm_state.lower()
                ):
                    continue
                if networkid and not any(
                    n.get("networkid") == networkid for n in resp.get("nic", [])
                ):
                    continue
                if zoneid and resp.get("zoneid") != zoneid:
                    continue
                rows.append(vm)
            self._list_cache[key] = (self.version, rows)
        total = len(rows)
        page = rows[start:] if limit is None else rows[start : start + limit]
        if total == 0:
            return Payload(text='{"listvirtualmachinesresponse":{}}')
        if not page:
            return Payload(text='{"listvirtualmachinesresponse":{"count":%d}}' % total)
        return Payload(
            text='{"listvirtualmachinesresponse":{"count":%d,"virtualmachine":[%s]}}'
            % (total, ",".join(self._vm_json(vm) for vm in page))
        )

    def _domain_response(self, dom):
        parent = self.domains.get(dom["parentdomainid"]) if dom["parentdomainid"] else None
        d = {"id": dom["id"], "name": dom["name"], "level": dom["level"]}
        if parent:
            d["parentdomainid"], d["parentdomainname"] = parent["id"], parent["name"]
        d["haschild"] = any(x["parentdomainid"] == dom["id"] for x in self.domains.values())
        if dom.get("networkdomain"):
            d["networkdomain"] = dom["networkdomain"]
        d.update({"path": dom["path"], "state": "Active", "created": dom["created"]})
        vms = sum(
            1 for vm in self.vms.values() if not vm.removed and vm.resp.get("domainid") == dom["id"]
        )
        for res in LIMIT_FIELDS:
            d[res + "limit"] = "Unlimited"
            d[res + "total"] = vms if res == "vm" else (0.0 if res == "secondarystorage" else 0)
            d[res + "available"] = "Unlimited"
        return d

    def _cmd_listDomains(self, ctx):
        p = ctx.params
        start, limit = self._paging(p)
        rows = sorted(self.domains.values(), key=lambda d: d["iid"])
        if p.get("id"):
            dom = self.domains.get(p["id"])
            if dom is None:
                raise invalid_param("id", p["id"])
            if not ctx.root_admin and not self._domain_under(dom["id"], ctx.account["domainid"]):
                raise ApiError(
                    531,
                    "Account %s does not have permission to access domain %s"
                    % (ctx.account["name"], dom["id"]),
                    CS_PERMISSION,
                )
            rows = [dom]
        elif not ctx.root_admin:
            recursive = parse_bool(p.get("listall"))
            rows = [
                d for d in rows if self._domain_under(d["id"], ctx.account["domainid"], recursive)
            ]
        if p.get("name"):
            rows = [d for d in rows if d["name"].lower() == p["name"].lower()]
        if p.get("level"):
            rows = [d for d in rows if str(d["level"]) == p["level"]]
        if p.get("keyword"):
            rows = [d for d in rows if p["keyword"].lower() in d["name"].lower()]
        return self._list_payload(
            "listdomainsresponse", "domain", [self._domain_response(d) for d in rows], start, limit
        )

    def _account_response(self, acct):
        dom = self.domains[acct["domainid"]]
        role = {0: "User", 1: "Admin", 2: "DomainAdmin", 3: "ResourceAdmin", 4: "Admin"}.get(
            acct["accounttype"], "User"
        )
        vms = [vm for vm in self.vms.values() if not vm.removed and vm.owner == acct["id"]]
        d = {
            "id": acct["id"],
            "name": acct["name"],
            "accounttype": acct["accounttype"],
            "roletype": role,
            "rolename": role,
            "domainid": dom["id"],
            "domain": dom["name"],
            "domainpath": dom["path"],
            "receivedbytes": 0,
            "sentbytes": 0,
        }
        for res in LIMIT_FIELDS:
            d[res + "limit"] = "Unlimited"
            d[res + "total"] = (
                len(vms) if res == "vm" else (0.0 if res == "secondarystorage" else 0)
            )
            d[res + "available"] = "Unlimited"
        d["vmstopped"] = sum(1 for vm in vms if vm.resp.get("state") == "Stopped")
        d["vmrunning"] = sum(1 for vm in vms if vm.resp.get("state") == "Running")
        d["state"] = "enabled"
        d["created"] = acct["created"]
        users = []
        for uid in acct["users"]:
            user = self.users[uid]
            users.append(
                {
                    "id": uid,
                    "username": user["username"],
                    "created": user["created"],
                    "state": "enabled",
                    "account": acct["name"],
                    "accounttype": acct["accounttype"],
                    "roletype": role,
                    "rolename": role,
                    "domainid": dom["id"],
                    "domain": dom["name"],
                    "accountid": acct["id"],
                    "iscallerchilddomain": False,
                    "isdefault": acct["id"] == self.admin["id"],
                    "usersource": "native",
                }
            )
        d["user"] = users
        if acct.get("networkdomain"):
            d["networkdomain"] = acct["networkdomain"]
        d["isdefault"] = acct["id"] == self.admin["id"]
        d["groups"] = []
        return d

    def _cmd_listAccounts(self, ctx):
        p = ctx.params
        start, limit = self._paging(p)
        listall = parse_bool(p.get("listall"))
        rows = sorted(
            (a for a in self.accounts.values() if a["accounttype"] != 5), key=lambda a: a["iid"]
        )
        domainid = p.get("domainid")
        if domainid and domainid not in self.domains:
            raise invalid_param("domainid", domainid)
        if p.get("id"):
            acct = self.accounts.get(p["id"])
            if acct is None or acct["accounttype"] == 5:
                raise invalid_param("id", p["id"])
            if not self._can_access_account(ctx, acct["id"]):
                raise ApiError(
                    531,
                    "Account %s does not have permission to access account %s"
                    % (ctx.account["name"], acct["name"]),
                    CS_PERMISSION,
                )
            rows = [acct]
        elif ctx.normal_user:
            rows = [ctx.account]
        elif domainid:
            recursive = parse_bool(p.get("isrecursive")) or listall
            rows = [a for a in rows if self._domain_under(a["domainid"], domainid, recursive)]
        elif listall:
            rows = [a for a in rows if self._domain_under(a["domainid"], ctx.account["domainid"])]
        elif p.get("name"):
            rows = [a for a in rows if a["domainid"] == ctx.account["domainid"]]
        else:
            rows = [ctx.account]
        if p.get("name"):
            rows = [a for a in rows if a["name"].lower() == p["name"].lower()]
        if p.get("accounttype"):
            rows = [a for a in rows if str(a["accounttype"]) == p["accounttype"]]
        if p.get("keyword"):
            rows = [a for a in rows if p["keyword"].lower() in a["name"].lower()]
        return self._list_payload(
            "listaccountsresponse",
            "account",
            [self._account_response(a) for a in rows],
            start,
            limit,
        )

    def _cmd_listProjects(self, ctx):
        p = ctx.params
        start, limit = self._paging(p)
        rows = sorted(self.projects.values(), key=lambda pr: pr["iid"])
        if p.get("id"):
            proj = self.projects.get(p["id"])
            if proj is None:
                raise invalid_param("id", p["id"])
            rows = [proj] if self._can_access_account(ctx, proj["accountid"]) else []
        elif not (ctx.root_admin and parse_bool(p.get("listall"))):
            rows = [
                pr
                for pr in rows
                if ctx.account["id"] in pr["members"]
                or (
                    not ctx.normal_user
                    and parse_bool(p.get("listall"))
                    and self._domain_under(pr["domainid"], ctx.account["domainid"])
                )
            ]
        if p.get("name"):
            rows = [pr for pr in rows if pr["name"].lower() == p["name"].lower()]
        out = []
        for pr in rows:
            dom = self.domains[pr["domainid"]]
            d = {
                "id": pr["id"],
                "name": pr["name"],
                "displaytext": pr["displaytext"],
                "domainid": dom["id"],
                "domain": dom["name"],
            }
            if pr["owner"]:
                d["account"] = self.accounts[pr["owner"]]["name"]
            d.update({"state": "Active", "created": pr["created"], "tags": []})
            out.append(d)
        return self._list_payload("listprojectsresponse", "project", out, start, limit)

    def _cmd_listNics(self, ctx):
        p = ctx.params
        start, limit = self._paging(p)
        vm = self._vm_ref(ctx, "virtualmachineid", include_removed=True)
        if vm.removed:
            raise ApiError(431, "Virtual machine id does not exist", CS_INVALID_PARAM)
        self._check_vm_access(ctx, vm)
        rows = []
        for nic in self._vm_view(vm).get("nic", []):
            if p.get("nicid") and nic.get("id") != p["nicid"]:
                continue
            if p.get("networkid") and nic.get("networkid") != p["networkid"]:
                continue
            row = dict(nic)
            row["virtualmachineid"] = vm.id
            rows.append(row)
        return self._list_payload("listnicsresponse", "nic", rows, start, limit)

    def _cmd_queryAsyncJobResult(self, ctx):
        jobid = self._require(ctx, "jobid")
        job = self.jobs.get(jobid)
        if job is None:
            raise invalid_param("jobid", jobid)
        d = {
            "accountid": job.account["id"],
            "userid": job.user["id"],
            "cmd": job.cmd_class,
            "jobstatus": {"IN_PROGRESS": 0, "SUCCEEDED": 1}.get(job.status, 2),
            "jobprocstatus": 0,
            "jobresultcode": job.error[0] if job.error else 0,
            "jobresulttype": "object",
        }
        if job.error:
            d["jobresult"] = {"errorcode": job.error[0], "errortext": job.error[1]}
        elif job.result:
            _, obj, resp = job.result
            d["jobresult"] = {obj: resp} if obj else resp
        if job.instance_type:
            d["jobinstancetype"] = job.instance_type
        if job.instance_uuid:
            d["jobinstanceid"] = job.instance_uuid
        d["created"] = job.created
        if job.completed:
            d["completed"] = job.completed
        d["jobid"] = job.id
        return Payload({"queryasyncjobresultresponse": d})

    # ------------------------------------------------------------------ write commands

    def _owner_for_deploy(self, ctx):
        p = ctx.params
        if p.get("projectid"):
            project = self.projects.get(p["projectid"])
            if project is None:
                raise invalid_param("projectid", p["projectid"])
            if p.get("account"):
                raise ApiError(
                    431, "Account and projectId can't be specified together", CS_INVALID_PARAM
                )
            if not self._can_access_account(ctx, project["accountid"]):
                raise ApiError(
                    531,
                    "Account %s can't access project id=%s" % (ctx.account["name"], project["id"]),
                    CS_PERMISSION,
                )
            ctx.project = project
            ctx.entities["Project"] = project["id"]
            return self.accounts[project["accountid"]], project
        if p.get("account") or p.get("domainid"):
            if not (p.get("account") and p.get("domainid")):
                raise ApiError(
                    431, "Account and domainId should be specified together", CS_INVALID_PARAM
                )
            if p["domainid"] not in self.domains:
                raise invalid_param("domainid", p["domainid"])
            acct = self._find_account(p["account"], p["domainid"])
            if acct is None:
                raise ApiError(
                    431,
                    "could not find account %s in domain %s" % (p["account"], p["domainid"]),
                    CS_INVALID_PARAM,
                )
            if not self._can_access_account(ctx, acct["id"]):
                raise ApiError(
                    531,
                    "Account %s does not have permission to deploy for account %s"
                    % (ctx.account["name"], acct["name"]),
                    CS_PERMISSION,
                )
            ctx.entities["Domain"] = p["domainid"]
            return acct, None
        return ctx.account, None

    def _check_hostname(self, name, networks, skip_vm=None):
        if not HOSTNAME_RE.match(name):
            raise ApiError(
                431,
                "Invalid name. Vm name can contain ASCII letters 'a' through 'z', the digits '0' "
                "through '9', and the hyphen ('-'), must be between 1 and 63 characters long, and "
                "can't start or end with \"-\" and can't start with digit",
                CS_INVALID_PARAM,
            )
        net_ids = {n.id for n in networks}
        for vm in self.vms.values():
            if vm.removed or vm is skip_vm or vm.resp.get("name", "").lower() != name.lower():
                continue
            for nic in vm.resp.get("nic", []):
                if nic.get("networkid") in net_ids:
                    raise ApiError(
                        431,
                        "The vm with hostName %s already exists in the network domain: %s; "
                        "network=%s" % (name, nic.get("networkid"), nic.get("networkname")),
                        CS_INVALID_PARAM,
                    )

    def _cmd_deployVirtualMachine(self, ctx):
        p = ctx.params
        owner, project = self._owner_for_deploy(ctx)
        networks = []
        if p.get("networkids"):
            for netid in p["networkids"].split(","):
                networks.append(self._net_ref("networkids", netid.strip()))
        else:
            networks = [n for n in self.networks.values() if n.accountid == owner["id"]][:1] or [
                n for n in self.networks.values() if n.accountid is None
            ][:1]
            if not networks:
                raise ApiError(
                    431,
                    "Can't find a default network for the account; pass networkids",
                    CS_INVALID_PARAM,
                )
        vmid = new_uuid()
        name = p.get("name") or p.get("displayname") or "VM-" + vmid
        self._check_hostname(name, networks)
        if p.get("templateid"):
            ctx.entities["VirtualMachineTemplate"] = p["templateid"]
        if p.get("zoneid"):
            ctx.entities["DataCenter"] = p["zoneid"]
        if p.get("serviceofferingid"):
            ctx.entities["ServiceOffering"] = p["serviceofferingid"]
        start_vm = p.get("startvm") is None or parse_bool(p.get("startvm"))

        allocated = []
        try:
            nics = []
            for i, net in enumerate(networks):
                nic = self._new_nic(
                    net,
                    i,
                    i == 0,
                    p.get("ipaddress") if i == 0 else None,
                    p.get("ip6address") if i == 0 else None,
                )
                allocated.append((net, nic))
                nics.append(nic)
        except JobError as exc:
            for net, nic in allocated:
                net.release(nic.get("ipaddress"))
            # The failure is inside the create=true @ActionEvent method: CloudStack publishes it.
            self._action(
                ctx, "VM.CREATE", "Created", "Error while creating entity for deploying Vm"
            )
            raise ApiError(exc.code, exc.text, CS_INVALID_PARAM) from None

        if project is not None:
            user = ctx.user
        else:
            user = (
                ctx.user
                if owner["id"] == ctx.account["id"] or not owner["users"]
                else self.users[owner["users"][0]]
            )
        dom = self.domains[owner["domainid"]]
        now = api_time()
        resp = {"id": vmid, "name": name, "displayname": p.get("displayname") or name}
        if project is not None:
            resp["projectid"], resp["project"] = project["id"], project["name"]
        else:
            resp["account"] = owner["name"]
        resp.update(
            {
                "userid": user["id"],
                "username": user["username"],
                "domainid": dom["id"],
                "domain": dom["name"],
                "created": now,
                "state": "Stopped",
                "haenable": False,
                "zoneid": p.get("zoneid") or self.zone["id"],
                "zonename": self.zone["name"],
                "templateid": p.get("templateid") or self.template["id"],
                "templatename": self.template["name"],
                "templatedisplaytext": self.template["displaytext"],
                "passwordenabled": False,
                "serviceofferingid": p.get("serviceofferingid") or self.offering["id"],
                "serviceofferingname": self.offering["name"],
                "cpunumber": self.offering["cpunumber"],
                "cpuspeed": self.offering["cpuspeed"],
                "memory": self.offering["memory"],
                "guestosid": self.guestos["id"],
                "rootdeviceid": 0,
                "rootdevicetype": "ROOT",
                "securitygroup": [],
                "nic": nics,
                "hypervisor": "KVM",
                "details": {},
                "affinitygroup": [],
                "displayvm": True,
                "isdynamicallyscalable": False,
                "ostypeid": self.guestos["id"],
                "osdisplayname": self.guestos["name"],
                "tags": [],
                "lastupdated": now,
            }
        )
        vm = VM(
            next(self._vm_iids), resp, owner["id"], project["id"] if project else None, raw=False
        )
        self.vms[vmid] = vm
        if p.get("group"):
            self._set_group(vm, p["group"])
        self._index_vm_nics(vm)
        self._changed()
        ctx.entities = dict([("VirtualMachine", vmid)] + list(ctx.entities.items()))
        ctx.resource = ("VirtualMachine", vmid)
        self._usage("VM.CREATE", vm, owner)
        created_id = self._action(
            ctx, "VM.CREATE", "Created", "Successfully created entity for deploying Vm"
        )
        ref = vm.iid if self.fmt != "4.17" else vmid

        def work(job):
            if start_vm:
                self._state_change(vm, ["Stopped", "Starting", "Running"])
            return self._vm_result(vm, job)

        if start_vm:
            job = self._run_vm_job(
                ctx,
                vm,
                "VM.CREATE",
                "starting Vm. Vm Id: %s" % ref,
                "starting Vm",
                work,
                "Unable to create a deployment for VM[User|i-%d-%d-VM]" % (owner["iid"], vm.iid),
                start_event_id=created_id,
                extra_info={"id": str(vm.iid), "uuid": vmid},
            )
            if job.error:
                # A failed deployment leaves the VM in Error until the expunge thread removes it.
                vm.resp["state"] = "Error"
                self._touch(vm)
        else:
            # Without startvm the job never calls startVirtualMachine, so no Started/Completed.
            failure = self._take_failure(ctx.command)
            job = self._begin_job(
                ctx,
                "VM.CREATE",
                owner["id"],
                "starting Vm. Vm Id: %s" % ref,
                "VirtualMachine",
                vmid,
                created_id,
                {"id": str(vm.iid), "uuid": vmid},
            )
            if failure is not None:
                vm.resp["state"] = "Error"
                self._touch(vm)
                self._finish_job(
                    job,
                    error=(
                        failure.get("errorcode", 530),
                        failure.get("errortext") or "Failed to deploy vm uuid=" + vmid,
                    ),
                )
            else:
                self._finish_job(job, result=self._vm_result(vm, job))
        return Payload({"deployvirtualmachineresponse": {"id": vmid, "jobid": job.id}})

    def _vm_command(self, ctx):
        vm = self._vm_ref(ctx, "id")
        self._check_vm_access(ctx, vm)
        ctx.entities["VirtualMachine"] = vm.id
        ctx.resource = ("VirtualMachine", vm.id)
        return vm, (vm.iid if self.fmt != "4.17" else vm.id)

    def _cmd_startVirtualMachine(self, ctx):
        vm, ref = self._vm_command(ctx)

        def work(job):
            state = vm.resp.get("state")
            if state in ("Destroyed", "Expunging", "Error"):
                raise JobError(
                    431, "Unable to start VM instance %s as it is in state %s" % (vm.id, state)
                )
            if state != "Running":
                self._state_change(vm, [state, "Starting", "Running"])
            return None

        job = self._run_vm_job(
            ctx,
            vm,
            "VM.START",
            "starting user vm: %s" % ref,
            "starting Vm",
            work,
            "Unable to start VM instance",
        )
        return Payload({"startvirtualmachineresponse": {"jobid": job.id}})

    def _cmd_stopVirtualMachine(self, ctx):
        vm, ref = self._vm_command(ctx)

        def work(job):
            state = vm.resp.get("state")
            if state in ("Destroyed", "Expunging"):
                raise JobError(431, "Unable to stop VM %s as it is in state %s" % (vm.id, state))
            if state == "Running":
                self._state_change(vm, ["Running", "Stopping", "Stopped"])
            return None

        job = self._run_vm_job(
            ctx,
            vm,
            "VM.STOP",
            "stopping user vm: %s" % ref,
            "stopping Vm",
            work,
            "Failed to stop VM",
        )
        return Payload({"stopvirtualmachineresponse": {"jobid": job.id}})

    def _expunge(self, vm):
        self._state_change(vm, [vm.resp.get("state", "Destroyed"), "Expunging"])
        vm.removed = True
        for nic in vm.resp.get("nic", []):
            self._release_nic(nic)
        self._touch(vm)

    def _cmd_destroyVirtualMachine(self, ctx):
        vm, ref = self._vm_command(ctx)
        expunge = parse_bool(ctx.params.get("expunge"))

        def work(job):
            state = vm.resp.get("state")
            if state == "Running":
                self._state_change(vm, ["Running", "Stopping", "Stopped"])
                state = "Stopped"
            if state not in ("Destroyed", "Expunging"):
                self._state_change(vm, [state, "Destroyed"])
            if expunge:
                self._expunge(vm)
                return (
                    VM_RESPONSE,
                    None,
                    {"securitygroup": [], "nic": [], "affinitygroup": [], "tags": []},
                )
            return None

        job = self._run_vm_job(
            ctx,
            vm,
            "VM.DESTROY",
            "destroying vm: %s" % ref,
            "destroying Vm",
            work,
            "Failed to destroy vm with specified vmId",
        )
        return Payload({"destroyvirtualmachineresponse": {"jobid": job.id}})

    def _cmd_expungeVirtualMachine(self, ctx):
        vm, ref = self._vm_command(ctx)

        def work(job):
            if vm.resp.get("state") not in ("Destroyed", "Expunging"):
                raise JobError(
                    431,
                    "Please specify a VM that is in Destroyed state; VM %s is %s"
                    % (vm.id, vm.resp.get("state")),
                )
            self._expunge(vm)
            return SUCCESS_RESPONSE, None, {"success": True}

        job = self._run_vm_job(
            ctx,
            vm,
            "VM.EXPUNGE",
            "Expunging vm: %s" % ref,
            "expunging Vm",
            work,
            "Failed to expunge vm",
        )
        return Payload({"expungevirtualmachineresponse": {"jobid": job.id}})

    def _sync_vm_command(self, ctx, vm, event_type, desc, work, default_error):
        """Synchronous @ActionEvent command: only a Completed event."""
        failure = self._take_failure(ctx.command)
        suffix = ". Vm Id: %d" % vm.iid
        try:
            if failure is not None:
                raise JobError(
                    failure.get("errorcode", 530), failure.get("errortext") or default_error
                )
            work()
        except JobError as exc:
            self._action(ctx, event_type, "Completed", "Error while " + desc + suffix)
            raise ApiError(
                exc.code, exc.text, CS_RUNTIME if exc.code == 530 else CS_INVALID_PARAM
            ) from None
        self._action(ctx, event_type, "Completed", "Successfully completed " + desc + suffix)
        resp_name = COMMANDS[ctx.command][0]
        return Payload({resp_name: {"virtualmachine": self._vm_view(vm)}})

    def _cmd_recoverVirtualMachine(self, ctx):
        vm, _ = self._vm_command(ctx)

        def work():
            if vm.resp.get("state") != "Destroyed":
                raise JobError(
                    431,
                    "Unable to recover VM %s as it is in state %s" % (vm.id, vm.resp.get("state")),
                )
            self._state_change(vm, ["Destroyed", "Stopped"])

        return self._sync_vm_command(
            ctx, vm, "VM.RECOVER", "recovering Vm", work, "Failed to recover VM"
        )

    def _cmd_updateVirtualMachine(self, ctx):
        vm, _ = self._vm_command(ctx)
        p = ctx.params
        if p.get("name") and p["name"] != vm.resp.get("name"):
            nets = [
                self.networks[n["networkid"]]
                for n in vm.resp.get("nic", [])
                if n.get("networkid") in self.networks
            ]
            self._check_hostname(p["name"], nets, skip_vm=vm)

        def work():
            if p.get("name"):
                vm.resp["name"] = p["name"]
            if p.get("displayname"):
                vm.resp["displayname"] = p["displayname"]
            if p.get("group") is not None:
                self._set_group(vm, p["group"])
            self._touch(vm)

        return self._sync_vm_command(
            ctx, vm, "VM.UPDATE", "updating Vm", work, "Failed to update vm"
        )

    def _nic_job_vm(self, ctx, name="virtualmachineid"):
        vm = self._vm_ref(ctx, name)
        self._check_vm_access(ctx, vm)
        ctx.entities["VirtualMachine"] = vm.id
        ctx.resource = ("VirtualMachine", vm.id)
        return vm, (vm.iid if self.fmt != "4.17" else vm.id)

    def _cmd_addNicToVirtualMachine(self, ctx):
        vm, ref = self._nic_job_vm(ctx)
        net = self._net_ref("networkid", self._require(ctx, "networkid"))
        ctx.entities["Network"] = net.id

        def work(job):
            nics = vm.resp.setdefault("nic", [])
            if any(n.get("networkid") == net.id for n in nics):
                raise JobError(
                    431,
                    "A NIC already exists for VM: %s in network: %s"
                    % (vm.resp.get("name"), net.id),
                )
            if vm.resp.get("state") in ("Destroyed", "Expunging", "Error"):
                raise JobError(431, "Can't add a NIC to a VM in state %s" % vm.resp.get("state"))
            device = max([int(n.get("deviceid", 0)) for n in nics] + [-1]) + 1
            nic = self._new_nic(net, device, not nics, ctx.params.get("ipaddress"))
            nics.append(nic)
            self.nic_vm[nic["id"]] = vm.id
            self._touch(vm)
            return None

        net_ref = net.id
        job = self._run_vm_job(
            ctx,
            vm,
            "NIC.CREATE",
            "Adding network %s to user vm: %s" % (net_ref, ref),
            "Creating Nic",
            work,
            "Failed to add NIC to vm",
            details="nics",
            detail_text="Vm Id: %d Network Id: %s" % (vm.iid, net.id),
        )
        return Payload({"addnictovirtualmachineresponse": {"jobid": job.id}})

    def _vm_nic(self, ctx, vm):
        nicid = self._require(ctx, "nicid")
        if nicid not in self.nic_vm:
            raise invalid_param("nicid", nicid)
        ctx.entities["Nic"] = nicid
        return nicid

    def _cmd_removeNicFromVirtualMachine(self, ctx):
        vm, ref = self._nic_job_vm(ctx)
        nicid = self._vm_nic(ctx, vm)

        def work(job):
            nics = vm.resp.get("nic", [])
            nic = next((n for n in nics if n.get("id") == nicid), None)
            if nic is None:
                raise JobError(431, "Unable to find NIC %s on VM %s" % (nicid, vm.id))
            if nic.get("isdefault"):
                raise JobError(431, "Unable to remove VM %s default NIC" % vm.id)
            nics.remove(nic)
            self._release_nic(nic)
            self._touch(vm)
            return None

        job = self._run_vm_job(
            ctx,
            vm,
            "NIC.DELETE",
            "Removing NIC %s from user vm: %s" % (nicid, ref),
            "Removing Nic",
            work,
            "Failed to remove NIC from vm",
            details="nics",
        )
        return Payload({"removenicfromvirtualmachineresponse": {"jobid": job.id}})

    def _cmd_updateDefaultNicForVirtualMachine(self, ctx):
        vm, ref = self._nic_job_vm(ctx)
        nicid = self._vm_nic(ctx, vm)

        def work(job):
            nics = vm.resp.get("nic", [])
            if not any(n.get("id") == nicid for n in nics):
                raise JobError(431, "Unable to find NIC %s on VM %s" % (nicid, vm.id))
            for n in nics:
                n["isdefault"] = n.get("id") == nicid
            self._touch(vm)
            return None

        # "Creating Nic" is CloudStack's own (copy-pasted) description for NIC.UPDATE.
        job = self._run_vm_job(
            ctx,
            vm,
            "NIC.UPDATE",
            "Updating NIC %s on user vm: %s" % (nicid, ref),
            "Creating Nic",
            work,
            "Failed to set default nic",
            details="nics",
        )
        return Payload({"updatedefaultnicforvirtualmachineresponse": {"jobid": job.id}})

    def _cmd_addIpToNic(self, ctx):
        vm, nic = self._nic_ref(ctx, "nicid")
        self._check_vm_access(ctx, vm)
        ctx.entities["Nic"] = nic["id"]
        net = self.networks.get(nic.get("networkid"))
        requested = ctx.params.get("ipaddress")
        try:
            if net is None:
                raise JobError(431, "Can't find network id for specified nic")
            if requested and ":" in requested:
                ip = net.check_ip6(requested)
                if any(
                    s.get("ipaddress") == ip
                    for n in vm.resp.get("nic", [])
                    for s in n.get("secondaryip", [])
                ):
                    raise JobError(431, "IPv6 address %s is already in use" % ip)
            else:
                ip = net.allocate(requested)
                if ip is None:
                    raise JobError(
                        431, "Allocating guest ip for nic failed : the network has no IPv4 range"
                    )
        except JobError as exc:
            self._action(
                ctx,
                "NIC.SECONDARY.IP.ASSIGN",
                "Created",
                "Error while creating entity for assigning secondary ip to nic",
            )
            raise ApiError(431, exc.text, CS_INVALID_PARAM) from None
        sec = {"id": new_uuid(), "ipaddress": ip}
        sec_iid = next(self._iids["secip"])
        nic.setdefault("secondaryip", []).append(sec)
        self.secip_vm[sec["id"]] = (vm.id, nic["id"])
        self._touch(vm)
        ctx.entities["NicSecondaryIp"] = sec["id"]
        created_id = self._action(
            ctx,
            "NIC.SECONDARY.IP.ASSIGN",
            "Created",
            "Successfully created entity for assigning secondary ip to nic",
        )
        failure = self._take_failure(ctx.command)
        job = self._begin_job(
            ctx,
            "NIC.SECONDARY.IP.ASSIGN",
            vm.owner,
            "associating ip to nic id=%s belonging to network id=%s" % (nic["id"], net.id),
            "IpAddress",
            sec["id"],
            created_id,
            {"id": str(sec_iid), "uuid": sec["id"]},
        )
        # The job runs configureNicSecondaryIp, whose @ActionEvent is NIC.SECONDARY.IP.CONFIGURE.
        desc = "Configuring secondary IP rules"
        self._action(ctx, "NIC.SECONDARY.IP.CONFIGURE", "Started", desc)
        if failure is not None:
            self._action(ctx, "NIC.SECONDARY.IP.CONFIGURE", "Completed", "Error while " + desc)
            nic["secondaryip"].remove(sec)
            self.secip_vm.pop(sec["id"], None)
            net.release(ip)
            self._touch(vm)
            self._finish_job(
                job,
                error=(
                    failure.get("errorcode", 530),
                    failure.get("errortext") or "Failed to assign secondary ip to nic",
                ),
            )
        else:
            self._action(
                ctx,
                "NIC.SECONDARY.IP.CONFIGURE",
                "Completed",
                "Successfully completed " + desc + ". secondary Ip Id: " + sec["id"],
            )
            result = {"id": sec["id"], "ipaddress": ip, "nicid": nic["id"], "networkid": net.id}
            self._finish_job(job, result=(SECIP_RESPONSE, "nicsecondaryip", result))
        return Payload({"addiptovmnicresponse": {"id": sec["id"], "jobid": job.id}})

    def _cmd_removeIpFromNic(self, ctx):
        secid = self._require(ctx, "id")
        where = self.secip_vm.get(secid)
        if where is None:
            raise invalid_param("id", secid)
        vm = self.vms[where[0]]
        self._check_vm_access(ctx, vm)
        nic = next(n for n in vm.resp.get("nic", []) if n.get("id") == where[1])
        ctx.entities["NicSecondaryIp"] = secid
        event_type, desc = "NIC.SECONDARY.IP.UNASSIGN", "Removing secondary IP from NIC"
        failure = self._take_failure(ctx.command)
        job = self._begin_job(
            ctx,
            event_type,
            vm.owner,
            "Disassociating ip address with uuid=%s" % secid,
            "IpAddress",
            secid,
        )
        self._action(ctx, event_type, "Started", desc)
        if failure is not None:
            self._action(ctx, event_type, "Completed", "Error while " + desc)
            self._finish_job(
                job,
                error=(
                    failure.get("errorcode", 530),
                    failure.get("errortext") or "Failed to remove secondary ip address",
                ),
            )
        else:
            sec = next(s for s in nic.get("secondaryip", []) if s.get("id") == secid)
            nic["secondaryip"].remove(sec)
            self.secip_vm.pop(secid, None)
            net = self.networks.get(nic.get("networkid"))
            if net is not None:
                net.release(sec.get("ipaddress"))
            self._touch(vm)
            self._action(ctx, event_type, "Completed", "Successfully completed " + desc)
            self._finish_job(job, result=(SUCCESS_RESPONSE, None, {"success": True}))
        return Payload({"removeipfromnicresponse": {"jobid": job.id}})

    # ------------------------------------------------------------------ request handling

    def _verify(self, params):
        """ApiServer.verifyRequest: returns (account, user) or raises the one 401."""
        auth = ApiError(401, AUTH_ERROR)
        if not params.get("command"):
            raise auth
        signature = apikey = sigver = expires = None
        parts = []
        for name in sorted(params):
            value = params[name]
            lname = name.lower()
            if lname == "signature":
                signature = value
                continue
            if lname == "apikey":
                apikey = value
            elif lname == "signatureversion":
                sigver = value
            elif lname == "expires":
                expires = value
            parts.append(name + "=" + java_urlencode(value).replace("+", "%20"))
        if signature is None or apikey is None:
            raise auth
        if sigver == "3":
            when = parse_expires(expires) if expires is not None else None
            if when is None or when < datetime.now(timezone.utc):
                raise auth
        key = self.apikeys.get(apikey)
        if key is None:
            raise auth
        expected = base64.b64encode(
            hmac.new(
                key["secret"].encode("utf-8"), "&".join(parts).lower().encode("utf-8"), hashlib.sha1
            ).digest()
        )
        if not hmac.compare_digest(signature.encode("utf-8"), expected):
            raise auth
        return self.accounts[key["accountid"]], self.users[key["userid"]]

    def _take_fault(self, command, params):
        with self._lock:
            fault = self.faults
            if fault.get("mode", "none") == "none":
                return None
            commands = fault.get("commands")
            if commands and command not in commands:
                return None
            # "params": {"page": "2"} hits only requests carrying exactly these values.
            match = fault.get("params") or {}
            if any(params.get(k) != str(v) for k, v in match.items()):
                return None
            if fault.get("count", -1) == 0:
                return None
            if fault.get("count", -1) > 0:
                fault["count"] -= 1
            return dict(fault)

    def handle_api(self, method, query, body, content_type):
        params = {}
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, errors="replace")
        if (
            method == "POST"
            and body
            and "application/x-www-form-urlencoded" in (content_type or "").lower()
        ):
            pairs += urllib.parse.parse_qsl(
                body.decode("utf-8", "replace"), keep_blank_values=True, errors="replace"
            )
        for name, value in pairs:
            params.setdefault(name, value)  # the servlet's first value wins
        command = params.get("command")
        with self._lock:
            self.calls[command or "<none>"] += 1
        fault = self._take_fault(command, params)
        if fault is not None:
            mode = fault.get("mode")
            if mode == "delay":
                time.sleep(max(0, fault.get("delay_ms", 1000)) / 1000.0)
            elif mode == "http_status":
                status = int(fault.get("status", 503))
                return self._count(
                    HttpResult(
                        status,
                        "text/html; charset=UTF-8",
                        "<html><body><h1>%d %s</h1></body></html>"
                        % (status, HTTP_REASONS.get(status, "Error")),
                    )
                )
            elif mode == "close":
                with self._lock:
                    self.statuses["closed"] += 1
                return HttpResult(close=True)
        use_json = params.get("response", "").lower() == "json"
        with self._lock:
            try:
                account, user = self._verify(params)
                if command not in COMMANDS:
                    raise ApiError(432, NO_SUCH_COMMAND, CS_SERVER_API, wrapper="errorresponse")
                ctx = CallCtx(account, user, params, method, command)
                if command in ADMIN_ONLY and ctx.normal_user:
                    raise ApiError(432, NO_SUCH_COMMAND, CS_SERVER_API, wrapper="errorresponse")
                payload = getattr(self, "_cmd_" + command)(ctx)
                status = 200
            except ApiError as exc:
                name = exc.wrapper or (
                    COMMANDS[command][0] if command in COMMANDS else "errorresponse"
                )
                err = {"uuidList": [], "errorcode": exc.code}
                if exc.cserrorcode is not None:
                    err["cserrorcode"] = exc.cserrorcode
                err["errortext"] = exc.text
                payload, status = Payload({name: err}), exc.code
            if use_json:
                result = HttpResult(status, "application/json; charset=UTF-8", payload.json())
            else:
                result = HttpResult(
                    status,
                    "text/xml; charset=UTF-8",
                    to_xml(payload.as_obj(), CLOUDSTACK_VERSION[self.fmt]),
                )
        return self._count(result)

    def _count(self, result):
        with self._lock:
            self.statuses[str(result.status)] += 1
        return result

    # ------------------------------------------------------------------ control API

    def insert_vms(self, body):
        """POST /sim/vms: store VM objects as given (no events); returns their ids."""
        items = (
            body
            if isinstance(body, list)
            else body.get("vms", [body])
            if isinstance(body, dict)
            else None
        )
        if not isinstance(items, list):
            raise ValueError('body must be a VM object, a list of them, or {"vms": [...]}')
        ids = []
        with self._lock:
            for obj in items:
                resp = dict(obj)
                removed = bool(resp.pop("removed", False))
                resp.setdefault("id", new_uuid())
                if resp.get("projectid"):
                    project = self.projects.get(resp["projectid"])
                    if project is None:
                        raise ValueError(
                            "VM %s: unknown projectid %s" % (resp["id"], resp["projectid"])
                        )
                    owner, projectid = project["accountid"], project["id"]
                else:
                    acct = self._find_account(resp.get("account", ""), resp.get("domainid"))
                    if acct is None:
                        raise ValueError(
                            "VM %s: no account %r in domain %r "
                            "(set account + domainid, or projectid)"
                            % (resp["id"], resp.get("account"), resp.get("domainid"))
                        )
                    owner, projectid = acct["id"], None
                old = self.vms.get(resp["id"])
                if old is not None:
                    for nic in old.resp.get("nic", []):
                        self._release_nic(nic)
                vm = VM(old.iid if old else next(self._vm_iids), resp, owner, projectid, raw=True)
                vm.removed = removed
                self.vms[vm.id] = vm
                if not removed:
                    self._index_vm_nics(vm)
                ids.append(vm.id)
            self._changed()
        return ids

    def delete_vm(self, vmid):
        """POST /sim/delete_vm: the expunge thread removing a VM; no events."""
        with self._lock:
            vm = self.vms.get(vmid)
            if vm is None:
                raise ValueError("unknown VM %s" % vmid)
            if not vm.removed:
                vm.removed = True
                for nic in vm.resp.get("nic", []):
                    self._release_nic(nic)
                self._touch(vm)

    def publish(self, key, value):
        """POST /sim/publish: any message, in order with CloudStack's own events."""
        if not isinstance(value, str) or (key is not None and not isinstance(key, str)):
            raise ValueError("value must be a string and key a string or null")
        if key is None and value == "":
            raise ValueError("a null key with an empty value cannot be produced through kcat")
        with self._lock:
            self._emit_raw(key, value)

    def set_faults(self, spec):
        mode = spec.get("mode", "none")
        if mode not in ("none", "http_status", "delay", "close"):
            raise ValueError("mode must be none, http_status, delay or close")
        with self._lock:
            self.faults = {
                "mode": mode,
                "status": int(spec.get("status", 503)),
                "delay_ms": int(spec.get("delay_ms", 1000)),
                "count": int(spec.get("count", -1)),
                "commands": list(spec["commands"]) if spec.get("commands") else None,
                "params": dict(spec["params"]) if spec.get("params") else None,
            }

    def fail_next(self, spec):
        command = spec.get("command")
        if command not in COMMANDS:
            raise ValueError("unknown command %r" % command)
        with self._lock:
            self.failures.setdefault(command, []).append(
                {
                    "left": int(spec.get("count", 1)),
                    "errorcode": int(spec.get("errorcode", 530)),
                    "errortext": spec.get("errortext"),
                }
            )

    def rotate_key(self, spec):
        with self._lock:
            key = self.apikeys.get(spec.get("apikey"))
            if key is None or not spec.get("new_secret"):
                raise ValueError("need a known apikey and new_secret")
            key["secret"] = spec["new_secret"]
            if spec.get("new_apikey"):
                self.apikeys[spec["new_apikey"]] = self.apikeys.pop(spec["apikey"])

    def set_config(self, spec):
        with self._lock:
            if "format" in spec:
                if spec["format"] not in FORMATS:
                    raise ValueError("format must be one of %s" % ", ".join(FORMATS))
                self.fmt = spec["format"]
            if "state_events" in spec:
                self.state_events = bool(spec["state_events"])
            if "usage_events" in spec:
                self.usage_events = bool(spec["usage_events"])
            if "projectid_minus1" in spec:
                if spec["projectid_minus1"] not in ("projects_only", "all"):
                    raise ValueError("projectid_minus1 must be projects_only or all")
                self.projectid_minus1 = spec["projectid_minus1"]
            self._changed()
            return self.config()

    def config(self):
        return {
            "format": self.fmt,
            "state_events": self.state_events,
            "usage_events": self.usage_events,
            "projectid_minus1": self.projectid_minus1,
        }

    def state(self, with_vms=True):
        with self._lock:
            out = {
                "config": self.config(),
                "summary": self.summary(),
                "calls": dict(self.calls),
                "status": dict(self.statuses),
                "published": self.event_seq,
                "jobs": len(self.jobs),
                "vm_count": sum(1 for vm in self.vms.values() if not vm.removed),
                "kafka": self.publisher.stats() if self.publisher else None,
            }
            if with_vms:
                vms = []
                for vm in self.vms.values():
                    d = dict(self._vm_view(vm))
                    d["removed"] = vm.removed
                    vms.append(d)
                out["vms"] = vms
            return out

    def flush(self, timeout=None):
        """Wait until every published event is acknowledged by Kafka; returns an error or None."""
        if self.publisher is None:
            return None
        return self.publisher.flush(timeout)

    def events_since(self, since=0):
        with self._lock:
            return [e for e in self.events if e["seq"] > since]

    def handle_control(self, method, name, query, body):
        """Dispatch /sim/<name>; JSON in and out, errors as 400 {"error": ...}."""
        try:
            spec = json.loads(body.decode("utf-8")) if body else {}
            qs = dict(urllib.parse.parse_qsl(query))
            if method == "GET" and name == "state":
                out = self.state(with_vms=qs.get("vms", "1") not in ("0", "false"))
            elif method == "GET" and name == "events":
                out = {"events": self.events_since(int(qs.get("since", 0)))}
            elif method != "POST":
                return HttpResult(
                    404,
                    body=api_dumps({"error": "no such control endpoint: %s %s" % (method, name)}),
                )
            elif name == "setup":
                out = self.setup(spec)
            elif name == "vms":
                out = {"ids": self.insert_vms(spec)}
            elif name == "delete_vm":
                self.delete_vm(spec.get("id"))
                out = {"ok": True}
            elif name == "publish":
                self.publish(spec.get("key"), spec.get("value"))
                out = {"ok": True}
            elif name == "faults":
                self.set_faults(spec)
                out = {"ok": True}
            elif name == "fail_next":
                self.fail_next(spec)
                out = {"ok": True}
            elif name == "rotate_key":
                self.rotate_key(spec)
                out = {"ok": True}
            elif name == "config":
                out = self.set_config(spec)
            elif name == "flush":
                err = self.flush(spec.get("timeout_s"))
                if err:
                    return HttpResult(
                        504 if err.startswith("timed out") else 500,
                        body=api_dumps({"ok": False, "error": err}),
                    )
                out = {"ok": True, "published": self.event_seq}
            else:
                return HttpResult(
                    404, body=api_dumps({"error": "no such control endpoint: %s" % name})
                )
        except (ValueError, KeyError, TypeError) as exc:
            return HttpResult(400, body=api_dumps({"error": str(exc)}))
        return HttpResult(200, body=api_dumps(out))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.conn_lock = threading.Lock()
        self.open_connections = set()

    def handle_error(self, request, client_address):
        # Clients hanging up (or keep-alive connections cut on stop) are normal here.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, a keep-alive client waits for
    # the delayed ACK (about 40 ms) on every call, which no real management server makes it do.
    disable_nagle_algorithm = True
    server_version = "CloudStackSim/1.0"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are dropped after this many seconds

    def setup(self):
        super().setup()
        with self.server.conn_lock:
            self.server.open_connections.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.conn_lock:
                self.server.open_connections.discard(self.connection)

    def log_message(self, fmt, *args):
        if self.server.sim.verbose:
            log("%s %s" % (self.address_string(), fmt % args))

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method):
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        sim = self.server.sim
        if path in ("/client/api", "/client/api/"):
            result = sim.handle_api(method, query, body, self.headers.get("Content-Type", ""))
        elif path.startswith("/sim/"):
            result = sim.handle_control(method, path[len("/sim/") :], query, body)
        else:
            result = HttpResult(404, "text/plain; charset=UTF-8", "not found\n")
        if result.close:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(result.status, HTTP_REASONS.get(result.status, ""))
        self.send_header("Content-Type", result.ctype)
        self.send_header("Content-Length", str(len(result.body)))
        self.end_headers()
        self.wfile.write(result.body)


class CloudStackError(Exception):
    def __init__(self, status, body):
        super().__init__("HTTP %s: %s" % (status, body))
        self.status = status
        self.body = body


class CloudStackClient:
    """Minimal signed CloudStack client (signature version 3) for tests and the demo."""

    def __init__(
        self,
        endpoint,
        apikey,
        secret,
        signature_version=3,
        expires_in=600,
        method="GET",
        timeout=30,
        context=None,
    ):
        self.endpoint = endpoint
        self.context = context  # an ssl.SSLContext for an https endpoint with a private CA
        self.apikey = apikey
        self.secret = secret
        self.signature_version = signature_version
        self.expires_in = expires_in
        self.method = method
        self.timeout = timeout

    def signed_params(self, command, **params):
        out = {"command": command, "response": "json"}
        out.update({k: param_str(v) for k, v in params.items() if v is not None})
        out["apikey"] = self.apikey
        if self.signature_version == 3:
            out["signatureversion"] = "3"
            out["expires"] = api_time(
                datetime.now(timezone.utc) + timedelta(seconds=self.expires_in)
            )
        out["signature"] = sign_request(out, self.secret)
        return out

    def request(self, command, **params):
        """Returns (HTTP status, parsed JSON or None, body text)."""
        query = urllib.parse.urlencode(
            self.signed_params(command, **params), quote_via=urllib.parse.quote
        )
        if self.method == "POST":
            req = urllib.request.Request(
                self.endpoint,
                data=query.encode("ascii"),
                method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            req = urllib.request.Request(self.endpoint + "?" + query)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                status, text = resp.status, resp.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode("utf-8", "replace")
        try:
            return status, json.loads(text), text
        except ValueError:
            return status, None, text

    def call(self, command, **params):
        """The parsed JSON of a 200 answer; CloudStackError otherwise."""
        status, obj, text = self.request(command, **params)
        if status != 200 or obj is None:
            raise CloudStackError(status, text)
        return obj

    def query_job(self, jobid):
        return self.call("queryAsyncJobResult", jobid=jobid)["queryasyncjobresultresponse"]


def write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="ascii") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="CloudStack API + Kafka event-bus simulator (tests only)"
    )
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port)")
    ap.add_argument("--port-file", help="write the real port here (atomically) once serving")
    ap.add_argument("--api-key", required=True, help="API key of the root admin account 'admin'")
    ap.add_argument("--secret-key", required=True, help="secret key for --api-key")
    ap.add_argument("--kafka-bootstrap", help="publish events to this Kafka bootstrap (HOST:PORT)")
    ap.add_argument(
        "--topic", default="cloudstack", help="Kafka topic (default: cloudstack, as CloudStack)"
    )
    ap.add_argument(
        "--format", default=DEFAULT_FORMAT, choices=FORMATS, help="CloudStack event/API shape"
    )
    ap.add_argument("--kcat", default="kcat", help="kcat binary")
    ap.add_argument(
        "--kcat-prop",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka property for the producer (repeatable)",
    )
    ap.add_argument(
        "--message-timeout-ms", type=int, default=60000, help="producer message.timeout.ms"
    )
    ap.add_argument(
        "--no-state-events", action="store_true", help="do not publish resource-state records"
    )
    ap.add_argument("--no-usage-events", action="store_true", help="do not publish usage records")
    ap.add_argument(
        "--verbose", action="store_true", help="log every HTTP request and kcat's stderr"
    )
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM, chain first)")
    ap.add_argument("--tls-key", help="private key (PEM) of --tls-cert")
    args = ap.parse_args(argv)

    if args.kafka_bootstrap and shutil.which(args.kcat) is None:
        log("kcat binary %r not found; install kcat or pass --kcat PATH" % args.kcat)
        return 2
    sim = Simulator(
        args.api_key,
        args.secret_key,
        kafka_bootstrap=args.kafka_bootstrap,
        topic=args.topic,
        fmt=args.format,
        kcat=args.kcat,
        port=args.port,
        kcat_props=args.kcat_prop,
        verbose=args.verbose,
        state_events=not args.no_state_events,
        usage_events=not args.no_usage_events,
        message_timeout_ms=args.message_timeout_ms,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        port = sim.start()
    except OSError as exc:
        log("cannot listen on 127.0.0.1:%d: %s" % (args.port, exc))
        return 1
    if args.port_file:
        write_port_file(args.port_file, port)
    log(
        "serving %s (format %s, kafka %s)"
        % (
            sim.endpoint,
            args.format,
            "%s topic %s" % (args.kafka_bootstrap, args.topic) if args.kafka_bootstrap else "off",
        )
    )
    while not stop.wait(0.5):
        pass
    err = sim.stop()
    if err:
        log("shutdown: Kafka delivery problem: %s" % err)
        return 1
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
