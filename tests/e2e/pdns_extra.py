"""pdns_extra.py -- extra pdns_server instances for end-to-end tests, beside the stack's own.

An ExtraPdns runs over the stack's MariaDB (the stack's database or one of its own, see create_db),
on free 127.0.0.1 ports with its API on (key "testkey"), with caches at their defaults or off, and
any pdns.conf overrides (primary/secondary, xfr-cycle-interval, ...). Its files live under the
stack's directory. Must not: touch the stack's own pdns_server, or outlive the test (stop() it,
or use it as a context manager).

    with ExtraPdns(state, "cache", caches=True) as p:
        p.query("x.example.", "A")     -> ("NXDOMAIN", [])
        p.api("PUT", "/cache/flush?domain=x.example.")
"""
import json
import os
import re
import subprocess
import urllib.error
import urllib.request

from stack import SCHEMA, free_port, free_udp_tcp_port, pdns_settings, run_pdns, stop_pid


def root_sql(state, query, db=None):
    """Runs SQL as MariaDB's root over the stack's socket; returns rows as lists of strings."""
    m = state["mysql"]
    argv = ["mariadb", "--no-defaults", f"--socket={m['socket']}", "-uroot", "-N", "-B"]
    r = subprocess.run(argv + ([db] if db else []) + ["-e", query], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"SQL failed: {query}\n{r.stderr}")
    return [line.split("\t") for line in r.stdout.splitlines()]


def create_db(state, name):
    """Creates database `name` in the stack's MariaDB with the PowerDNS schema, usable by the
    stack's pdns user; returns name. drop_db removes it."""
    if not re.fullmatch(r"[a-z0-9_]{1,64}", name):
        raise ValueError(f"database name {name!r}: use a-z, 0-9 and _ only")
    m = state["mysql"]
    root_sql(state, f"CREATE DATABASE {name}; GRANT ALL ON {name}.* TO '{m['user']}'@'127.0.0.1'")
    with open(SCHEMA) as f:
        subprocess.run(["mariadb", "--no-defaults", f"--socket={m['socket']}", "-uroot", name],
                       stdin=f, check=True, capture_output=True)
    return name


def drop_db(state, name):
    root_sql(state, f"DROP DATABASE IF EXISTS {name}")


class ExtraPdns:
    """One pdns_server. caches=True leaves the packet, query, negative and zone caches at their
    defaults; False turns them off like the stack's. overrides are pdns.conf settings applied last
    (a value of None removes a setting)."""

    def __init__(self, state, name, db=None, caches=True, overrides=None):
        self.state = state
        self.name = name
        self.dir = os.path.join(state["dir"], f"pdns-{name}")
        self.port = free_udp_tcp_port()
        self.api_port = free_port()
        self.api_key = "testkey"
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.log = os.path.join(self.dir, "pdns.log")
        self.settings = pdns_settings(state["mysql"], self.port, self.api_port, db=db,
                                      caches=caches)
        for k, v in (overrides or {}).items():
            if v is None:
                self.settings.pop(k, None)
            else:
                self.settings[k] = v
        self.proc = None

    def start(self):
        if self.proc is not None:
            raise RuntimeError(f"extra PowerDNS {self.name} is already running")
        self.proc = run_pdns(os.path.join(self.dir, "conf"), os.path.join(self.dir, "run"),
                             self.settings, self.log)
        return self

    def stop(self):
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def pdnsutil(self, *args, check=True):
        """Runs pdnsutil on this server's configuration (and so its database); returns the
        CompletedProcess. Needs start() first, which writes the configuration."""
        r = subprocess.run(["pdnsutil", f"--config-dir={os.path.join(self.dir, 'conf')}"] +
                           [str(a) for a in args], capture_output=True, text=True)
        if check and r.returncode:
            raise RuntimeError(f"pdnsutil {' '.join(map(str, args))} failed: {r.stdout}{r.stderr}")
        return r

    def log_text(self):
        if not os.path.exists(self.log):
            return ""
        with open(self.log, errors="replace") as f:
            return f.read()

    # ---- DNS ----
    def query(self, name, rtype="A"):
        """(rcode, sorted answer rdata) for name/rtype, e.g. ("NXDOMAIN", []) or
        ("NOERROR", ["10.1.1.5"]). One UDP query, no retries on the answer's content."""
        r = subprocess.run(["dig", "+noall", "+comments", "+answer", "+time=2", "+tries=2",
                            "@127.0.0.1", "-p", str(self.port), name, rtype],
                           capture_output=True, text=True)
        m = re.search(r"status: (\w+)", r.stdout)
        if r.returncode or not m:
            raise RuntimeError(f"dig {name} {rtype} at {self.name} failed: {r.stdout}{r.stderr}")
        answers = []
        for line in r.stdout.splitlines():
            if line.strip() and not line.startswith(";"):
                parts = line.split(None, 4)
                if len(parts) == 5 and parts[3] == rtype:
                    answers.append(parts[4].strip())
        return m.group(1), sorted(answers)

    def dig(self, name, rtype="A"):
        return self.query(name, rtype)[1]

    def soa_serial(self, zone):
        """The zone's SOA serial as this server answers it, or None if it does not."""
        rcode, answers = self.query(zone, "SOA")
        return int(answers[0].split()[2]) if rcode == "NOERROR" and answers else None

    # ---- HTTP API ----
    def api(self, method, path, body=None, key=None):
        """Calls /api/v1/servers/localhost<path>; returns (HTTP status, decoded JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.api_url}/api/v1/servers/localhost{path}", data=data,
                                     method=method,
                                     headers={"X-API-Key": self.api_key if key is None else key,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode(errors="replace")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text
