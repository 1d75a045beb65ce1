"""faultkit.py -- what the fault and bad-input tests share: the records the simulator's VMs should
have (computed here, independently of cs-pdns), exact database checks, Kafka offset accounting,
private stacks, held-open SQL sessions and a random CloudStack workload.

Must not: ask cs-pdns what it wrote or how (the expected set comes from the simulator's state and
the built-in policy's documented rules), or touch a stack the test did not start or was not given.
"""
import collections
import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import stack as stackmod  # noqa: E402
from harness import wait_until  # noqa: E402

GONE_STATES = {"Destroyed", "Expunging", "Error"}
LDH_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
                      r"(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")


# ---------------------------------------------------------------- the built-in policy, in Python

def dns_label(text):
    """dns.label: [A-Za-z0-9] kept lower-cased, other byte runs become one '-' (a run of hyphens
    only is kept), leading and trailing hyphens dropped, at most 63 octets."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    out = []
    i = 0
    alnum = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    while i < len(data) and len(out) < 63:
        c = data[i]
        if c in alnum:
            out.append(chr(c).lower())
            i += 1
            continue
        start, only_hyphens = i, True
        while i < len(data) and data[i] not in alnum:
            if data[i] != ord("-"):
                only_hyphens = False
            i += 1
        if not out:
            continue
        k = (i - start) if only_hyphens else 1
        while k and len(out) < 63:
            out.append("-")
            k -= 1
    return "".join(out).rstrip("-")


def host_label(name):
    if not isinstance(name, str):
        return ""
    if "\0" in name:
        return None  # dns.label refuses NUL: the policy call fails, nothing is written
    lower = name.lower()
    if (len(lower.encode()) <= 63 and re.match(r"^[a-z0-9]", lower) and re.search(r"[a-z0-9]$",
                                                                                  lower)
            and not re.search(r"[^a-z0-9-]", lower)):
        return lower
    return dns_label(name)


def ip_version(s):
    if not isinstance(s, str) or s.strip() != s or "%" in s:
        return 0
    try:
        return ipaddress.ip_address(s).version
    except ValueError:
        return 0


def ptr_name(ip):
    return ipaddress.ip_address(ip).reverse_pointer


def canonical6(ip):
    """inet_ntop's text of an IPv6 address: compressed, lower case, and dotted when the address
    is IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d, not :: or ::1)."""
    a = ipaddress.IPv6Address(ip)
    if a.ipv4_mapped:
        return f"::ffff:{a.ipv4_mapped}"
    if int(a) >> 32 == 0 and int(a) > 0xFFFF:
        return f"::{ipaddress.IPv4Address(int(a) & 0xFFFFFFFF)}"
    return a.compressed


def policy_records(vm, accounts, domains, ttl):
    """The record set the built-in policy gives vm: {(name, type, content): ttl}, or None when the
    policy call fails (and so nothing may change for that VM)."""
    if vm.get("removed") or vm.get("state") in GONE_STATES:
        return {}
    label = host_label(vm.get("name"))
    if label is None:
        return None
    if label == "":
        return {}
    nics = vm.get("nic") if isinstance(vm.get("nic"), list) else []
    nic = next((n for n in nics if isinstance(n, dict) and n.get("isdefault") is True), None)
    if nic is None:
        return {}
    account = None
    if vm.get("account") and vm.get("domainid") and not vm.get("projectid"):
        account = accounts.get((vm["account"], vm["domainid"]))
    domain = domains.get(vm.get("domainid"))

    def nd(obj):
        v = obj and obj.get("networkdomain")
        return v if isinstance(v, str) and v else None

    suffix = nd(account) or nd(domain)
    if not suffix:
        return {}
    v4 = nic.get("ipaddress") if ip_version(nic.get("ipaddress")) == 4 else None
    v6 = nic.get("ip6address") if ip_version(nic.get("ip6address")) == 6 else None
    fqdn = f"{label}.{suffix}".lower()
    out = {}

    def addresses(name):
        if v4:
            out[(name, "A", str(ipaddress.ip_address(v4)))] = ttl
        if v6:
            out[(name, "AAAA", canonical6(v6))] = ttl

    addresses(fqdn)
    if v4:
        out[(ptr_name(v4), "PTR", fqdn)] = ttl
    if v6:
        out[(ptr_name(v6), "PTR", fqdn)] = ttl
    group = vm.get("group")
    if isinstance(group, str) and account and isinstance(account.get("id"), str):
        cleaned = re.sub(r"[^0-9A-Za-z]", "", group).lower()[:63 - 1 - 8]
        if cleaned:
            addresses(f"{cleaned}-{account['id'][:8].lower()}.{suffix}".lower())
    return out


def owner_refs_usable(vm):
    """Whether cs-pdns takes a job's VM as it stands (else it reads the VM from the API): the
    account a non-empty string, domainid and projectid ids of letters, digits and hyphens."""
    for i, key in enumerate(("account", "domainid", "projectid")):
        v = vm.get(key)
        if v is None:
            continue
        if not isinstance(v, str) or not v or "\0" in v or len(v.encode()) > (255 if i == 0
                                                                               else 64):
            return False
        if i > 0 and not re.fullmatch(r"[A-Za-z0-9-]+", v):
            return False
    return True


def expected_state(sim_state, setup_body, ttl, only_ids=None, zones=None):
    """From GET /sim/state: {record: owner vm ids} and {record: ttl}. With zones, only records
    that one of them holds (cs-pdns skips a record no zone holds)."""
    accounts = {(a["name"], a["domainid"]): a for a in setup_body["accounts"]}
    domains = {d["id"]: d for d in setup_body["domains"]}
    want = collections.defaultdict(set)
    ttls = {}
    for vm in sim_state["vms"]:
        if only_ids is not None and vm["id"] not in only_ids:
            continue
        recs = policy_records(vm, accounts, domains, ttl)
        for rec, t in (recs or {}).items():
            if zones is not None and rec_zone(rec[0], zones) is None:
                continue
            want[rec].add(vm["id"])
            ttls[rec] = t
    return dict(want), ttls


# ---------------------------------------------------------------- what the database holds

def quoted(values):
    return ",".join("'" + v.replace("\\", "\\\\").replace("'", "''") + "'" for v in values)


def db_rows(st, zones):
    """Every A/AAAA/PTR row in these zones: {(name, type, content): [ttl, ...]}."""
    rows = st.sql("SELECT r.name, r.type, r.content, r.ttl FROM records r JOIN domains d "
                  f"ON d.id = r.domain_id WHERE d.name IN ({quoted(zones)}) "
                  "AND r.type IN ('A','AAAA','PTR')")
    out = collections.defaultdict(list)
    for name, rtype, content, ttl in rows:
        out[(name, rtype, content)].append(int(ttl))
    return out


def db_owners(st, zones):
    rows = st.sql("SELECT r.name, r.type, r.content, o.vm_id FROM cspdns_record o JOIN records r "
                  "ON r.id = o.record_id JOIN domains d ON d.id = r.domain_id "
                  f"WHERE d.name IN ({quoted(zones)})")
    out = collections.defaultdict(set)
    for name, rtype, content, vm in rows:
        out[(name, rtype, content)].add(vm)
    return out


class Verdict:
    """The outcome of one exact comparison, in the numbers the Reliability table reports."""

    def __init__(self):
        self.missing, self.extra, self.duplicates, self.bad_owner, self.orphans = [], [], [], [], []
        self.bad_ttl, self.serial_not_advanced, self.vm_rows = [], [], []

    @property
    def lost(self):
        return len(self.missing)

    def problems(self):
        out = []
        for name in ("missing", "extra", "duplicates", "bad_owner", "orphans", "bad_ttl",
                     "serial_not_advanced", "vm_rows"):
            items = getattr(self, name)
            if items:
                out.append(f"{name} ({len(items)}): {sorted(map(str, items))[:8]}")
        return out

    def assert_ok(self, what):
        p = self.problems()
        if p:
            raise AssertionError(f"{what}: " + "; ".join(p))


def verify_exact(st, sim_state, setup_body, zones, ttl, serials_before=None, vm_ids=None):
    """Compares the database with what the simulator's final state implies: every record present
    once with its owners, nothing else in the zones, no ownership row without its record, no
    cspdns_vm row for a VM without records, and every zone whose rows changed has a new serial."""
    want, ttls = expected_state(sim_state, setup_body, ttl, vm_ids, zones)
    have = db_rows(st, zones)
    owners = db_owners(st, zones)
    v = Verdict()
    for rec in want:
        if rec not in have:
            v.missing.append(rec)
        elif len(have[rec]) > 1:
            v.duplicates.append(rec)
        elif have[rec][0] != ttls[rec]:
            v.bad_ttl.append((rec, have[rec][0]))
        if rec in have and owners.get(rec, set()) != want[rec]:
            v.bad_owner.append((rec, sorted(owners.get(rec, set())), sorted(want[rec])))
    for rec, ttl_list in have.items():
        if rec not in want:
            v.extra.append(rec)
        elif len(ttl_list) > 1 and rec not in v.duplicates:
            v.duplicates.append(rec)
    ids = {vm["id"] for vm in sim_state["vms"]} if vm_ids is None else set(vm_ids)
    v.orphans = [tuple(r) for r in st.sql(
        "SELECT o.record_id, o.vm_id FROM cspdns_record o "
        "LEFT JOIN records r ON r.id = o.record_id "
        "LEFT JOIN cspdns_vm m ON m.vm_id = o.vm_id WHERE (r.id IS NULL OR m.vm_id IS NULL) "
        f"AND o.vm_id IN ({quoted(ids) or 'NULL'})")]
    owning = {vm for o in want.values() for vm in o}
    vm_rows = {r[0] for r in st.sql("SELECT vm_id FROM cspdns_vm")} & ids
    v.vm_rows = sorted(vm_rows ^ owning)
    if serials_before is not None:
        for zone, before in serials_before.items():
            touched = any(rec_zone(rec[0], zones) == zone for rec in set(want) | set(have))
            if touched and st.serial(zone) <= before:
                v.serial_not_advanced.append(zone)
    return v


def rec_zone(name, zones):
    best = None
    for z in zones:
        if (name == z or name.endswith("." + z)) and (best is None or len(z) > len(best)):
            best = z
    return best


def duplicate_rows(st, zones):
    """Rows of these zones stored more than once (any type, hand-made ones included)."""
    return st.sql("SELECT r.name, r.type, r.content, COUNT(*) FROM records r JOIN domains d ON "
                  f"d.id = r.domain_id WHERE d.name IN ({quoted(zones)}) "
                  "GROUP BY r.domain_id, r.name, r.type, r.content HAVING COUNT(*) > 1")


# ---------------------------------------------------------------- Kafka offsets

POS_DONE = re.compile(r'pos=(\S+)/(\d+)@(\d+) msg="(?:vm=\S+ event=\S+ state=|ignored |'
                      r'malformed message skipped|vm=\S+ event=\S+: policy (?:left|\S+ failed, '
                      r'skipped)|vm=\S+: database refused)')


def processed_offsets(log_text, topic):
    """{partition: set(offsets)} of messages cs-pdns logged a final outcome for."""
    out = collections.defaultdict(set)
    for t, p, o in (m.groups()[:3] for m in POS_DONE.finditer(log_text)):
        if t == topic:
            out[int(p)].add(int(o))
    return out


def end_offsets(st, timeout=60):
    """{partition: next offset} of st.topic, read with kcat from the broker."""
    r = subprocess.run(["kcat", "-C", "-b", st.state["kafka"]["bootstrap"], "-t", st.topic, "-e",
                        "-q", "-o", "-1", "-f", "%p %o\n"], capture_output=True, text=True,
                       timeout=timeout)
    out = {}
    for line in r.stdout.splitlines():
        p, o = line.split()
        out[int(p)] = max(out.get(int(p), 0), int(o) + 1)
    return out


def offset_gaps(log_text, st, ends):
    """Offsets below each partition's end that cs-pdns never finished: events lost."""
    done = processed_offsets(log_text, st.topic)
    return {p: sorted(set(range(end)) - done.get(p, set())) for p, end in ends.items()
            if set(range(end)) - done.get(p, set())}


def wait_caught_up(st, timeout=180, quiet=20):
    """Waits until cs-pdns finished every message now on the topic, or until its log stood still
    for `quiet` seconds with messages unfinished (they are lost: the caller reports them).
    Returns the end offsets."""
    ends = end_offsets(st)
    deadline = time.time() + timeout
    size, since = -1, time.time()
    while time.time() < deadline:
        text = st.log_text(False)
        if not offset_gaps(text, st, ends):
            return ends
        if len(text) != size:
            size, since = len(text), time.time()
        elif time.time() - since >= quiet:
            return ends
        time.sleep(0.5)
    return ends


# ---------------------------------------------------------------- private stacks and sessions

def kafka_mock_path(shared_state):
    path = shared_state.get("kafka", {}).get("mock")
    if path and os.access(path, os.X_OK):
        return path
    guess = os.path.join(os.path.dirname(os.environ["CSPDNS_BIN"]), "tests", "kafka-mock")
    if not os.access(guess, os.X_OK):
        raise RuntimeError("cannot find the kafka-mock binary (build target kafka-mock)")
    return guess


class PrivateStack:
    """A stack of this test's own (MariaDB, PowerDNS, Kafka mock with `brokers` brokers), so that
    stopping its database or brokers cannot disturb any other test."""

    def __init__(self, brokers=1):
        shared = stackmod.load_state_file(os.environ["CSPDNS_STACK_STATE"]) \
            if os.environ.get("CSPDNS_STACK_STATE") else {}
        self.dir = tempfile.mkdtemp(prefix="cspf")
        self.shared_dir = shared.get("dir")
        self.path = os.path.join(self.dir, "stack.json")
        args = type("A", (), {"state": self.path, "kafka_mock": kafka_mock_path(shared),
                              "brokers": brokers, "pdns_caches": False})
        stackmod.up(args)
        self.saved_env = os.environ.get("CSPDNS_STACK_STATE")
        os.environ["CSPDNS_STACK_STATE"] = self.path

    def state(self):
        return stackmod.load_state_file(self.path)

    def db_stop(self):
        s = self.state()
        stackmod.mariadb_stop(s)
        stackmod.write_state(self.path, s)

    def db_start(self):
        s = self.state()
        stackmod.mariadb_start(s)
        stackmod.write_state(self.path, s)

    def db_pid(self):
        return self.state()["pids"]["mariadb"]

    def kafka(self, command):
        return stackmod.kafka_control(self.state(), command)

    def close(self):
        if os.path.exists(self.path):
            s = self.state()
            self.keep_logs(s["dir"])
            stackmod.down_state(s)
        if self.saved_env is not None:
            os.environ["CSPDNS_STACK_STATE"] = self.saved_env
        subprocess.run(["rm", "-rf", self.dir])

    def keep_logs(self, top):
        """Copies the logs under top (this stack's directory, about to be removed) under the
        shared stack's directory, so that e2e.secrets_in_logs, which runs last, also reads the
        logs of outages, where a password in an error message would show."""
        if not self.shared_dir or not os.path.isdir(self.shared_dir):
            return
        dest = os.path.join(self.shared_dir, "private-stacks", os.path.basename(top))
        for d, _, files in os.walk(top):
            for name in files:
                if name.endswith(".log"):
                    rel = os.path.relpath(os.path.join(d, name), top)
                    os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
                    shutil.copyfile(os.path.join(d, name), os.path.join(dest, rel))


class SqlSession:
    """A MariaDB client held open, for locks another connection must wait on."""

    def __init__(self, st):
        m = st.state["mysql"]
        self.proc = subprocess.Popen(
            ["mariadb", "--no-defaults", f"--socket={m['socket']}", "-uroot", "-N", "-B", "-n",
             "--unbuffered", m["db"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.n = 0
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.cv = threading.Condition()
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()
        with self.cv:
            self.lines.append(None)
            self.cv.notify_all()

    def send(self, sql):
        """Sends statements without waiting for them (they may block on a lock)."""
        self.proc.stdin.write(sql.rstrip().rstrip(";") + ";\n")
        self.proc.stdin.flush()

    def run(self, sql, timeout=60):
        """Runs statements and returns their output lines once they all finished."""
        self.n += 1
        mark = f"__done_{self.n}__"
        with self.cv:
            start = len(self.lines)
        self.send(sql)
        self.send(f"SELECT '{mark}'")
        deadline = time.time() + timeout
        with self.cv:
            while True:
                if mark in self.lines[start:]:
                    out = self.lines[start:self.lines.index(mark, start)]
                    return out
                if None in self.lines[start:]:
                    raise RuntimeError(f"SQL session ended: {self.lines[start:]}")
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"SQL did not finish in {timeout}s: {sql}")
                self.cv.wait(left)

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_lock_wait(st, timeout=30):
    """Waits until some transaction waits for a row lock. InnoDB refreshes innodb_trx only when
    it was not read for 100 ms, so polling faster would never see a change."""
    wait_until("a transaction waiting for a lock", lambda: st.sql1(
        "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'")
        != "0", timeout, interval=0.3)


def daemon_db_thread_ids(st):
    """MariaDB connection ids of the running cs-pdns (matched by its client TCP port)."""
    pid = st.daemon.pid
    port = st.state["mysql"]["port"]
    r = subprocess.run(["ss", "-Htnp", "state", "established", f"dport = :{port}"],
                       capture_output=True, text=True)
    ports = [int(m.group(1)) for line in r.stdout.splitlines() if f"pid={pid}," in line
             for m in [re.search(r"127\.0\.0\.1:(\d+)\s", line)] if m]
    if not ports:
        return []
    hosts = quoted([f"127.0.0.1:{p}" for p in ports])
    return [int(r[0]) for r in st.sql(f"SELECT id FROM information_schema.processlist "
                                      f"WHERE host IN ({hosts})")]


def check_round(st, w, zones, ttl, serials=None, timeout=240):
    """After a fault: waits until cs-pdns finished every message, then compares everything.
    Returns (verdict, offset gaps, duplicate rows)."""
    ends = wait_caught_up(st, timeout=timeout)
    state = sim_state(st)
    v = verify_exact(st, state, w.setup_body(), zones, ttl, serials)
    return v, offset_gaps(st.log_text(False), st, ends), duplicate_rows(st, zones)


def assert_round(what, v, gaps, dups):
    if gaps:
        raise AssertionError(f"{what}: offsets never finished (lost events): {gaps}")
    if dups:
        raise AssertionError(f"{what}: duplicate rows: {dups}")
    v.assert_ok(what)


RETRY_IN = re.compile(r"pos=[^ ]*/(\d+)@\d+ msg=\"retrying in (\d+) ms \(attempt (\d+)\)")


def backoffs(text):
    """The waits cs-pdns announced between retries, in order (all partitions)."""
    return [int(m.group(2)) for m in RETRY_IN.finditer(text)]


def backoffs_by_partition(text):
    """{partition: [waits in order]}: each partition backs off on its own."""
    out = collections.defaultdict(list)
    for m in RETRY_IN.finditer(text):
        out[int(m.group(1))].append(int(m.group(2)))
    return dict(out)


def assert_capped_backoff(text, cap_ms, what, reach_cap=True):
    """Some partition retried at least twice; in every partition each wait doubles the one
    before up to RETRY_MAX_BACKOFF_MS (it starts again at the bottom only after a message of
    that partition succeeded), none goes past the cap, and with reach_cap the longest reaches
    it. Returns all waits."""
    per = backoffs_by_partition(text)
    waits = backoffs(text)
    if max((len(w) for w in per.values()), default=0) < 2:
        raise AssertionError(f"{what}: no partition logged two retries ({per})")
    if max(waits) > cap_ms or (reach_cap and max(waits) != cap_ms):
        raise AssertionError(f"{what}: the backoff never reached RETRY_MAX_BACKOFF_MS={cap_ms} "
                             f"or went past it: {per}")
    for part, seq in per.items():
        for a, b in zip(seq, seq[1:]):
            if b != min(2 * a, cap_ms) and b > 500:
                raise AssertionError(f"{what}: partition {part}'s backoff does not double up "
                                     f"to the cap: {seq}")
    return waits


class TcpProxy:
    """A TCP forwarder on a fixed local port; down() closes the port (clients get connection
    refused, open connections are cut) and up() opens it again."""

    def __init__(self, target_port):
        import socket
        self.socket = socket
        self.target = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = set()
        self.listener = None
        self.up()

    def up(self):
        s = self.socket.socket()
        s.setsockopt(self.socket.SOL_SOCKET, self.socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self):
        s, self.listener = self.listener, None
        try:
            s.shutdown(self.socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
        with self.lock:
            conns, self.conns = self.conns, set()
        for c in conns:
            try:
                c.shutdown(self.socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = self.socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.conns.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for c in (src, dst):
            try:
                c.shutdown(self.socket.SHUT_RDWR)
            except OSError:
                pass


# ---------------------------------------------------------------- a CloudStack workload

class Workload:
    """Random create/start/stop/destroy/recover/expunge/update calls over a few hundred VMs of the
    world's accounts and project, through the simulator's signed API (which publishes the events,
    keyed by VM id)."""

    def __init__(self, st, w, seed, max_vms=240, groups=("web", "db", "cache", "batch")):
        self.st, self.w = st, w
        self.rng = random.Random(seed)
        self.max_vms = max_vms
        self.groups = groups
        self.vms = {}  # id -> {"state": ..., "owner": ...}
        self.ops = collections.Counter()
        self.errors = collections.Counter()
        self.seq = 0

    def _call(self, command, **params):
        from cloudstack_sim import CloudStackError
        try:
            return self.st.cs.call(command, **params)
        except CloudStackError as e:
            self.errors[f"{command} {e.status}"] += 1
            return None

    def deploy(self):
        self.seq += 1
        owner = self.rng.choice(("acme", "acme", "beta", "proj"))
        name = f"vm{self.seq:05d}"
        params = {"name": name, "zoneid": "zone-1", "templateid": "tmpl-1",
                  "serviceofferingid": "so-1"}
        if owner == "proj":
            params.update(projectid=self.w.project_id, networkids=self.w.net_proj)
        else:
            params.update(account=owner, domainid=self.w.domain_id,
                          networkids=self.w.net_beta if owner == "beta" else self.w.net_acme)
        if self.rng.random() < 0.5:
            params["group"] = self.rng.choice(self.groups)
        resp = self._call("deployVirtualMachine", **params)
        if resp:
            self.vms[resp["deployvirtualmachineresponse"]["id"]] = {"state": "Running",
                                                                   "owner": owner}
            self.ops["create"] += 1

    def step(self):
        live = [v for v, d in self.vms.items() if d["state"] != "Expunged"]
        if len(live) < self.max_vms and (not live or self.rng.random() < 0.25):
            return self.deploy()
        vm = self.rng.choice(live)
        d = self.vms[vm]
        s = d["state"]
        r = self.rng.random()
        if s == "Running":
            if r < 0.35:
                op, cmd, new = "stop", "stopVirtualMachine", "Stopped"
            elif r < 0.7:
                op, cmd, new = "destroy", "destroyVirtualMachine", "Destroyed"
            else:
                op, cmd, new = "update", "updateVirtualMachine", "Running"
        elif s == "Stopped":
            if r < 0.5:
                op, cmd, new = "start", "startVirtualMachine", "Running"
            elif r < 0.75:
                op, cmd, new = "destroy", "destroyVirtualMachine", "Destroyed"
            else:
                op, cmd, new = "update", "updateVirtualMachine", "Stopped"
        else:  # Destroyed
            if r < 0.4:
                op, cmd, new = "recover", "recoverVirtualMachine", "Stopped"
            else:
                op, cmd, new = "expunge", "expungeVirtualMachine", "Expunged"
        params = {"id": vm}
        if op == "update":
            params["group"] = self.rng.choice(self.groups + ("",))
        if self._call(cmd, **params) is not None:
            d["state"] = new
            self.ops[op] += 1

    def run(self, n, stop=None, pace=0.0):
        for _ in range(n):
            if stop is not None and stop.is_set():
                break
            self.step()
            if pace:
                time.sleep(pace)

    def during(self, ops, pace, fault, settle=1.0, join_s=120):
        """Runs fault() once `settle` seconds into a stream of `ops` operations (one every
        `pace` s) and returns the daemon log written meanwhile."""
        start = len(self.st.log_text(False))
        stop = threading.Event()
        t = threading.Thread(target=self.run, args=(ops, stop, pace), daemon=True)
        t.start()
        try:
            time.sleep(settle)
            fault()
        finally:
            t.join(join_s)
            stop.set()
        return self.st.log_text(False)[start:]

    def total(self):
        return sum(self.ops.values())

    def vm_world_body(self):
        return self.w.setup_body()


def world_zones(w):
    return [w.cust_zone, w.acme_zone, w.rev16, w.rev24, w.rev6]


def zone_serials(st, zones):
    return {z: st.serial(z) for z in zones}


def sim_state(st):
    return st.control("state")


def json_dump(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
