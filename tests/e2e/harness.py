"""harness.py -- shared plumbing for the end-to-end tests: zones, the simulator, cs-pdns, dig, SQL.

Each test file runs against the stack that stack.py started (its state file is named by
CSPDNS_STACK_STATE) and uses its own Kafka topic, consumer group and zones, so test files never see
each other's data. Must not: mock anything that crosses a socket in production.
"""
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import traceback
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sim"))

from cloudstack_sim import CloudStackClient  # noqa: E402

API_KEY = "e2e-admin-key-" + "x" * 20
SECRET = "e2e-admin-secret-" + "y" * 20
ROTATED_SECRET = SECRET + "-rotated"
MYSQL_TLS_PASSWORD = "tls-pw-7f3a"
LEAST_PRIV_PASSWORD = "lp-pw-" + "z" * 12
# Every secret a test hands cs-pdns (the stack's own are in its state): secrets_scan.py looks for
# each in every cs-pdns log of the run.
SECRETS = (API_KEY, SECRET, ROTATED_SECRET, MYSQL_TLS_PASSWORD, LEAST_PRIV_PASSWORD)


def load_stack():
    path = os.environ.get("CSPDNS_STACK_STATE")
    if not path or not os.path.exists(path):
        sys.exit("CSPDNS_STACK_STATE does not name a running stack (start it with stack.py up, "
                 "or run the tests through ctest, whose fixture does)")
    with open(path) as f:
        return json.load(f)


def binary():
    b = os.environ.get("CSPDNS_BIN")
    if not b or not os.access(b, os.X_OK):
        sys.exit("CSPDNS_BIN does not name the cs-pdns executable")
    return b


class Results:
    """Counts checks; prints ctest-friendly lines and the closing 'N passed, N failed'."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, fn):
        t0 = time.time()
        try:
            fn()
            self.passed += 1
            print(f"ok - {name} ({time.time() - t0:.1f}s)", flush=True)
        except Exception:
            self.failed += 1
            print(f"not ok - {name}", flush=True)
            print("  " + traceback.format_exc().replace("\n", "\n  "), flush=True)

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed or not self.passed else 0


def wait_until(what, fn, timeout=15.0, interval=0.05):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


def eq(got, want, what=""):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


class Stack:
    def __init__(self, name):
        self.state = load_stack()
        self.bin = binary()
        self.tag = f"{name}-{uuid.uuid4().hex[:6]}"
        self.topic = f"cs-{self.tag}"
        self.group = f"g-{self.tag}"
        self.workdir = os.path.join(self.state["dir"], self.tag)
        os.makedirs(self.workdir)
        self.sim_proc = None
        self.daemon = None
        self.daemon_log = None
        self.sim = None

    # ---- SQL and DNS ----
    def sql(self, query):
        m = self.state["mysql"]
        r = subprocess.run(["mariadb", "--no-defaults", f"--socket={m['socket']}", "-uroot", "-N",
                            "-B", m["db"], "-e", query], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"SQL failed: {query}\n{r.stderr}")
        return [line.split("\t") for line in r.stdout.splitlines()]

    def sql1(self, query):
        rows = self.sql(query)
        return rows[0][0] if rows else None

    def add_zone(self, name, serial=1, kind="NATIVE"):
        self.sql(f"INSERT INTO domains(name,type) VALUES('{name}','{kind}')")
        self.sql(f"INSERT INTO records(domain_id,name,type,content,ttl,prio,disabled,auth) "
                 f"SELECT id,name,'SOA','ns1.{name} hostmaster.{name} {serial} 10800 3600 "
                 f"604800 60',3600,0,0,1 FROM domains WHERE name='{name}'")
        self.sql(f"INSERT INTO records(domain_id,name,type,content,ttl,prio,disabled,auth) "
                 f"SELECT id,name,'NS','ns1.example.net',3600,0,0,1 FROM domains "
                 f"WHERE name='{name}'")

    def serial(self, zone):
        content = self.sql1(f"SELECT r.content FROM records r JOIN domains d ON d.id=r.domain_id "
                            f"WHERE d.name='{zone}' AND r.type='SOA'")
        return int(content.split()[2])

    def rows(self, name, rtype=None):
        q = f"SELECT type, content, ttl FROM records WHERE name='{name}'"
        if rtype:
            q += f" AND type='{rtype}'"
        return sorted(tuple(r) for r in self.sql(q + " AND type IS NOT NULL"))

    def dig(self, name, rtype="A"):
        d = self.state["dns"]
        r = subprocess.run(["dig", "+short", "+time=2", "+tries=2", f"@{d['host']}", "-p",
                            str(d["port"]), name, rtype], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"dig {name} {rtype} failed: {r.stdout}{r.stderr}")
        return sorted(line.strip() for line in r.stdout.splitlines() if line.strip())

    def dig_ptr(self, ip):
        d = self.state["dns"]
        r = subprocess.run(["dig", "+short", "+time=2", "+tries=2", f"@{d['host']}", "-p",
                            str(d["port"]), "-x", ip], capture_output=True, text=True)
        return sorted(line.strip() for line in r.stdout.splitlines() if line.strip())

    # ---- the CloudStack simulator ----
    def start_sim(self, fmt="4.16", tls=None):
        """tls: (certificate, key, CA file) to serve HTTPS; the tests' own calls trust the CA."""
        port_file = os.path.join(self.workdir, "sim.port")
        log = open(os.path.join(self.workdir, "sim.log"), "ab")
        self.sim_proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "sim", "cloudstack_sim.py"), "--port", "0",
             "--port-file", port_file, "--api-key", API_KEY, "--secret-key", SECRET,
             "--kafka-bootstrap", self.state["kafka"]["bootstrap"], "--topic", self.topic,
             "--format", fmt] + (["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else []),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until("the CloudStack simulator", lambda: os.path.exists(port_file), 20)
        with open(port_file) as f:
            self.sim_port = int(f.read().strip())
        self.sim_base = f"{'https' if tls else 'http'}://127.0.0.1:{self.sim_port}"
        self.sim_ssl = ssl.create_default_context(cafile=tls[2]) if tls else None
        self.endpoint = f"{self.sim_base}/client/api"
        self.cs = CloudStackClient(self.endpoint, API_KEY, SECRET, context=self.sim_ssl)
        return self

    def control(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.sim_base}/sim/{path}", data=data,
                                     method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30, context=self.sim_ssl) as r:
            text = r.read().decode()
            return json.loads(text) if text else None

    def publish(self, value, key=None):
        self.control("publish", {"key": key, "value": value})
        self.control("flush", {})

    # ---- cs-pdns ----
    def daemon_env(self, drop=(), **extra):
        m = self.state["mysql"]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KAFKA_BOOTSTRAP": self.state["kafka"]["bootstrap"],
            "KAFKA_TOPIC": self.topic,
            "KAFKA_GROUP": self.group,
            "KAFKA_CFG_SESSION_TIMEOUT_MS": "6000",
            "KAFKA_CFG_HEARTBEAT_INTERVAL_MS": "1000",
            "CS_ENDPOINT": self.endpoint,
            "CS_API_KEY": API_KEY,
            "CS_SECRET_KEY": SECRET,
            "CS_TIMEOUT": "5",
            "MYSQL_PDNS_HOST": m["host"],
            "MYSQL_PDNS_PORT": str(m["port"]),
            "MYSQL_PDNS_NAME": m["db"],
            "MYSQL_PDNS_USER": m["user"],
            "MYSQL_PDNS_PASSWORD": m["password"],
            "RETRY_MAX_BACKOFF_MS": "1000",
            "LOG_LEVEL": "debug",
            # Test files share one database: a resync would judge other files' VMs, which this
            # file's simulator does not know. Resync tests turn it on with their own database.
            "RESYNC_INTERVAL": "0",
        }
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
        env.update({k: str(v) for k, v in extra.items()})
        for k in drop:
            env.pop(k, None)
        return env

    def start_daemon(self, drop=(), **extra):
        self.daemon_log = os.path.join(self.workdir, "cs-pdns.log")
        self._log_offset = os.path.getsize(self.daemon_log) if os.path.exists(self.daemon_log) \
            else 0
        log = open(self.daemon_log, "ab")
        self.daemon = subprocess.Popen([self.bin, "run"], env=self.daemon_env(drop, **extra),
                                       stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        wait_until("cs-pdns to join the group", lambda: self.log_has("assigned"), 30)
        return self.daemon

    def stop_daemon(self, sig=signal.SIGTERM, timeout=30):
        if not self.daemon:
            return None
        self.daemon.send_signal(sig)
        try:
            rc = self.daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            rc = self.daemon.wait()
            raise AssertionError(f"cs-pdns did not stop within {timeout}s of signal {sig}")
        self.daemon = None
        return rc

    def log_text(self, since_start=True):
        if not self.daemon_log or not os.path.exists(self.daemon_log):
            return ""
        with open(self.daemon_log, errors="replace") as f:
            if since_start:
                f.seek(self._log_offset)
            return f.read()

    def log_has(self, pattern):
        return re.search(pattern, self.log_text()) is not None

    def log_count(self, pattern):
        return len(re.findall(pattern, self.log_text(since_start=False)))

    def wait_quiet(self, seconds, timeout=90):
        """Waits until cs-pdns has logged nothing for `seconds`: it has caught up with the topic."""
        deadline = time.time() + timeout
        last_size, since = -1, time.time()
        while time.time() < deadline:
            size = os.path.getsize(self.daemon_log)
            if size != last_size:
                last_size, since = size, time.time()
            elif time.time() - since >= seconds:
                return
            time.sleep(0.1)
        raise AssertionError(f"cs-pdns kept logging for {timeout}s")

    def close(self):
        if self.daemon:
            try:
                self.stop_daemon()
            except AssertionError:
                pass
        if self.sim_proc:
            self.sim_proc.terminate()
            try:
                self.sim_proc.wait(15)
            except subprocess.TimeoutExpired:
                self.sim_proc.kill()
        if os.environ.get("CSPDNS_E2E_VERBOSE") and self.daemon_log:
            print(self.log_text(since_start=False))

    def dump_logs(self):
        """Prints the tail of cs-pdns's log: called when a check failed, to say why."""
        text = self.log_text(since_start=False).splitlines()
        print("---- cs-pdns log (last 60 lines) ----")
        print("\n".join(text[-60:]))
