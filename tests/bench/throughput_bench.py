#!/usr/bin/env python3
"""throughput_bench.py -- cs-pdns against the issue-6 targets on a real stack, as one table.

Starts the e2e tests' stack (MariaDB with innodb_flush_log_at_trx_commit=1, PowerDNS with caches
off, the Kafka mock broker) unless CSPDNS_STACK_STATE names a running one, plus the CloudStack
simulator, and measures:
  backlog   N VM.CREATE job events (CloudStack 4.16+ shape, jobResult carrying the VM, keyed by VM
            id with Kafka's murmur2 partitioner, 3 partitions) produced before cs-pdns starts;
            events/s from the first applied to the last applied, from the ts= of cs-pdns's
            per-VM log lines
  raw       the same records rows (the ones cs-pdns wrote) written again by 1,000-row INSERTs
            through the mariadb client into an empty PowerDNS schema on the same server
  latency   event handed to the producer -> PowerDNS answers the A query (UDP, polled every 5 ms),
            at a steady 200 events/s
  policy    default-policy evaluations/s on one core, no I/O (policy_bench)
  memory    cs-pdns's peak RSS, and RSS after --events-for-memory events produced in waves
  resync    duration and peak RSS of `cs-pdns resync` over 100,000 simulator VMs (resync_bench)

    python3 tests/bench/throughput_bench.py --build build [--events 20000] [--json out.json]

A benchmark, not a test: it checks only that every event was applied, never speed.
Must not: run under ctest, or leave its stack, simulator, cs-pdns or databases behind.
"""
import argparse
import datetime
import json
import os
import platform
import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, HERE)

from resync_bench import cpu_s  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "events", "job_start_4.16.json")
SCHEMA = "/usr/share/pdns-backend-mysql/schema/schema.mysql.sql"

TARGETS = {
    "backlog_eps": 10000, "ceiling_ratio": 0.4, "p99_ms": 50, "policy_eps": 100000,
    "rss_mb": 30, "resync_s": 60,
}


# ---------------------------------------------------------------- small helpers

def rss_kb(pid, key="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine(binary):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = "?"
    cache = os.path.join(os.path.dirname(binary), "CMakeCache.txt")
    if os.path.exists(cache):
        with open(cache) as f:
            m = re.search(r"^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$", f.read(), re.M)
        if m:
            src = m.group(1)
            r = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"],
                               capture_output=True, text=True)
            dirty = subprocess.run(["git", "-C", src, "status", "--porcelain",
                                    "--untracked-files=no"], capture_output=True, text=True)
            commit = r.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "commit": commit,
            "load": os.getloadavg()[0]}


class Metrics:
    """Reads cs-pdns's /metrics (METRICS_ADDR): counts of applied events."""

    def __init__(self, port):
        self.url = f"http://127.0.0.1:{port}"

    def text(self, path="/metrics"):
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return r.read().decode()

    def ready(self):
        try:
            return self.text("/readyz") is not None
        except Exception:
            return False

    def applied(self, kind="VM.CREATE"):
        n = 0
        for line in self.text().splitlines():
            if line.startswith("cspdns_events_total{") and f'kind="{kind}"' in line \
                    and 'outcome="applied"' in line:
                n += int(float(line.rsplit(" ", 1)[1]))
        return n

    def transactions(self):
        """(count, seconds) of the writer's batch transactions so far."""
        got = {}
        for line in self.text().splitlines():
            for k in ("sum", "count"):
                if line.startswith(f"cspdns_db_transaction_duration_seconds_{k} "):
                    got[k] = float(line.rsplit(" ", 1)[1])
        return int(got.get("count", 0)), got.get("sum", 0.0)


# ---------------------------------------------------------------- events

class Events:
    """CloudStack 4.16+ VM.CREATE job 'complete' records for make_vm's VMs, built on the
    deployVirtualMachine shape of cloudstack-formats.md (the fixture is its VM.START twin)."""

    def __init__(self, w):
        with open(FIXTURE) as f:
            self.proto = json.load(f)
        self.w = w
        self.nic_proto = {k: v for k, v in self.proto["jobResult"]["nic"][0].items()
                          if k not in ("secondaryip", "ip6address", "ip6cidr", "ip6gateway")}

    def value(self, vm):
        ev = dict(self.proto)
        job = str(uuid.uuid4())
        res = dict(self.proto["jobResult"])
        res.update({k: vm[k] for k in ("id", "name", "displayname", "account", "domainid",
                                       "state")})
        res.pop("group", None)
        res.pop("groupid", None)
        if "group" in vm:
            res["group"] = vm["group"]
            res["groupid"] = str(uuid.uuid5(uuid.NAMESPACE_OID, vm["group"]))
        res["domain"] = "customers"
        nics = []
        for n in vm["nic"]:
            nic = dict(self.nic_proto)
            nic.update(n)
            nics.append(nic)
        res["nic"] = nics
        res["jobid"] = job
        info = dict(self.proto["cmdInfo"])
        info.update({"uuid": vm["id"], "id": "36", "cmdEventType": "VM.CREATE",
                     "name": vm["name"], "networkids": vm["nic"][0]["networkid"],
                     "zoneid": res["zoneid"], "templateid": res["templateid"],
                     "serviceofferingid": res["serviceofferingid"],
                     "ctxDetails": {"interface com.cloud.vm.VirtualMachine": vm["id"]}})
        ev.update({"jobId": job, "commandEventType": "VM.CREATE", "cmdInfo": info,
                   "jobResult": res, "instanceUuid": vm["id"],
                   "command": "org.apache.cloudstack.api.command.user.vm.DeployVMCmd"})
        return json.dumps(ev, separators=(",", ":"))

    def line(self, vm):
        return f"{vm['id']}\t{self.value(vm)}\n".encode()


def kcat_producer(st, topic, extra=()):
    # CloudStack's Java producer partitions keys with murmur2; librdkafka's default is CRC32.
    # lz4 (compression.type in kafka.producer.properties) because the mock broker keeps only
    # 5 MB per partition: 20,000 events of 2.8 KB would lose their first two thirds uncompressed.
    return ["kcat", "-P", "-b", st.state["kafka"]["bootstrap"], "-t", topic, "-K", "\t",
            "-z", "lz4", "-X", "partitioner=murmur2_random", *extra]


def produce(st, topic, data):
    r = subprocess.run(kcat_producer(st, topic), input=data, capture_output=True, timeout=600)
    if r.returncode:
        raise RuntimeError(f"kcat could not produce to {topic}: {r.stderr.decode()[-500:]}")


def retained(st, topic):
    """How many messages the broker still holds on topic, read from the start."""
    r = subprocess.run(["kcat", "-C", "-b", st.state["kafka"]["bootstrap"], "-t", topic, "-e",
                        "-q", "-o", "beginning", "-f", "%o\n"], capture_output=True, text=True,
                       timeout=300)
    return len(r.stdout.splitlines())


# ---------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args, st, w, res):
        self.args = args
        self.st = st
        self.w = w
        self.events = Events(w)
        self.res = res
        self.next_vm = 0

    def vms(self, n, acme=None):
        from resync_bench import make_vm
        out = [make_vm(self.w, i, acme) for i in range(self.next_vm, self.next_vm + n)]
        self.next_vm += n
        return out

    def new_topic(self, name, partitions):
        from stack import kafka_control
        self.st.topic = f"cs-{self.st.tag}-{name}"
        self.st.group = f"g-{self.st.tag}-{name}"
        kafka_control(self.st.state, f"topic {self.st.topic} {partitions}")
        return self.st.topic

    def start_daemon(self, log_level, **defaults):
        st = self.st
        port = free_port()
        st.daemon_log = os.path.join(st.workdir, f"cs-pdns-{st.topic}.log")
        st._log_offset = 0
        env = st.daemon_env(LOG_LEVEL=log_level, METRICS_ADDR=f"127.0.0.1:{port}",
                            **dict(defaults, **dict(kv.split("=", 1) for kv in self.args.env)))
        log = open(st.daemon_log, "ab")
        st.daemon = subprocess.Popen([st.bin, "run"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        m = Metrics(port)
        deadline = time.time() + 60
        while not m.ready():
            if st.daemon.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"cs-pdns did not get ready; see {st.daemon_log}")
            time.sleep(0.05)
        return m

    def wait_applied(self, m, want, timeout, on_sample=None):
        """Polls /metrics until want events were applied; fails after `timeout` s without
        progress. Returns the peak VmRSS seen (KB)."""
        pid = self.st.daemon.pid
        last, since, peak = -1, time.time(), 0
        self.samples = []  # (time, applied): the timing when the log cannot give it
        while True:
            n = m.applied()
            self.samples.append((time.time(), n))
            peak = max(peak, rss_kb(pid))
            if on_sample:
                on_sample(n)
            if n >= want:
                return peak
            if n != last:
                last, since = n, time.time()
            elif time.time() - since > timeout:
                raise RuntimeError(f"cs-pdns stopped at {n} of {want} applied events; see "
                                   f"{self.st.daemon_log}")
            if self.st.daemon.poll() is not None:
                raise RuntimeError(f"cs-pdns exited {self.st.daemon.returncode}; see "
                                   f"{self.st.daemon_log}")
            time.sleep(0.1)

    # ---- backlog and raw ceiling
    def backlog(self):
        n = self.args.events
        topic = self.new_topic("backlog", 3)
        t0 = time.monotonic()
        data = b"".join(self.events.line(vm) for vm in self.vms(n))
        produce(self.st, topic, data)
        held = retained(self.st, topic)
        if held != n:
            raise RuntimeError(f"the broker holds {held} of {n} events (use fewer --events)")
        print(f"backlog: {n} events ({len(data) / n:.0f} bytes each) on 3 partitions in "
              f"{time.monotonic() - t0:.1f}s; starting cs-pdns", flush=True)
        m = self.start_daemon("info")
        perf = None
        if self.args.perf:
            # DWARF unwinding: the release build has no frame pointers.
            perf = subprocess.Popen(["perf", "record", "--call-graph", "dwarf,16384", "-F",
                                     str(self.args.perf_freq),
                                     "-o", self.args.perf, "-p", str(self.st.daemon.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Who works while cs-pdns drains the backlog: itself, MariaDB, the simulator (API).
        pids = {"cs-pdns": self.st.daemon.pid, "mariadb": self.st.state["pids"]["mariadb"],
                "simulator": self.st.sim_proc.pid}
        cpu0 = {k: cpu_s(p) for k, p in pids.items()}
        w0 = time.monotonic()
        peak = self.wait_applied(m, n, 120)
        wall = time.monotonic() - w0
        cpu = {k: round(cpu_s(p) - cpu0[k], 2) for k, p in pids.items()}
        ntxn, txn_s = m.transactions()
        if perf:
            perf.send_signal(2)
            perf.wait(120)
        hwm = rss_kb(self.st.daemon.pid, "VmHWM")
        self.st.stop_daemon()
        pat = re.compile(r'^ts=(\S+) .*msg="vm=\S+ event=VM\.CREATE state=', re.M)
        stamps = [datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
                  for t in pat.findall(self.st.log_text(False))]
        vms = int(self.st.sql1("SELECT COUNT(*) FROM cspdns_vm"))
        rows = int(self.st.sql1("SELECT COUNT(*) FROM records WHERE type IN ('A','AAAA','PTR')"))
        if vms != n:
            raise RuntimeError(f"cs-pdns applied {n} events but owns {vms} VMs")
        timing = "ts= of cs-pdns's per-VM info log lines"
        if len(stamps) != n:
            # Without one log line per event, /metrics polled every 0.1 s times the run.
            stamps = [next(t for t, k in self.samples if k > 0), self.samples[-1][0]]
            timing = "/metrics polled every 0.1 s (the log did not name every event)"
        span = max(stamps) - min(stamps)
        eps = (n - 1) / span if span > 0 else float("inf")
        self.res["backlog"] = {"events": n, "seconds": round(span, 3), "events_per_s": round(eps),
                               "rows": rows, "rows_per_s": round(rows / span) if span else None,
                               "rss_peak_mb": round(max(peak, hwm) / 1024, 1),
                               "timing": timing,
                               "cpu_seconds": cpu, "wall_seconds": round(wall, 2),
                               "transactions": ntxn, "transaction_seconds": round(txn_s, 3)}
        print(f"backlog: {n} events applied in {span:.2f}s = {eps:.0f} events/s "
              f"({rows} records rows, {rows / span:.0f} rows/s); peak RSS "
              f"{max(peak, hwm) / 1024:.1f} MB", flush=True)
        print(f"backlog: CPU seconds over {wall:.1f}s from start to the last applied: " +
              ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()), flush=True)
        # The writer's share alone: steadier than events/s for changes to the database path.
        print(f"backlog: {ntxn} batch transactions took {txn_s:.2f}s in all "
              f"({1000 * txn_s / max(ntxn, 1):.1f} ms each)", flush=True)
        if not self.args.skip_raw:
            self.raw_ceiling()

    def raw_ceiling(self):
        st = self.st
        rows = st.sql("SELECT domain_id, name, type, content, ttl FROM records "
                      "WHERE type IN ('A','AAAA','PTR')")
        db = st.db + "_raw"
        m = st.state["mysql"]
        st.root_sql(f"CREATE DATABASE {db}; GRANT ALL ON {db}.* TO '{m['user']}'@'127.0.0.1'")
        try:
            with open(SCHEMA) as f:
                subprocess.run(["mariadb", "--no-defaults", f"--socket={m['socket']}", "-uroot",
                                db], stdin=f, check=True, capture_output=True)

            def q(s):
                return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
            stmts = []
            for i in range(0, len(rows), 1000):
                values = ",".join(f"({int(d)},{q(nm)},{q(t)},{q(c)},{int(ttl)},0,0,1)"
                                  for d, nm, t, c, ttl in rows[i:i + 1000])
                stmts.append("INSERT INTO records (domain_id,name,type,content,ttl,prio,disabled,"
                             f"auth) VALUES {values};\n")
            sql = "".join(stmts).encode()
            # The same path as cs-pdns: TCP to 127.0.0.1 as the PowerDNS user, autocommit, so
            # every statement is one durable commit (innodb_flush_log_at_trx_commit=1).
            t0 = time.monotonic()
            subprocess.run(["mariadb", "--no-defaults", "-h", m["host"], "-P", str(m["port"]),
                            f"-u{m['user']}", f"-p{m['password']}", db], input=sql, check=True,
                           capture_output=True)
            secs = time.monotonic() - t0
            got = int(st.root_sql("SELECT COUNT(*) FROM records", db)[0][0])
            if got != len(rows):
                raise RuntimeError(f"the raw INSERTs wrote {got} of {len(rows)} rows")
        finally:
            st.root_sql(f"DROP DATABASE IF EXISTS {db}")
        rps = len(rows) / secs
        b = self.res["backlog"]
        self.res["raw"] = {"rows": len(rows), "seconds": round(secs, 3),
                           "rows_per_s": round(rps),
                           "ratio_rows": round(b["rows_per_s"] / rps, 3),
                           "ratio_events": round(b["events_per_s"] / rps, 3)}
        print(f"raw ceiling: {len(rows)} rows in {len(stmts)} INSERTs in {secs:.2f}s = "
              f"{rps:.0f} rows/s; cs-pdns rows/s / raw = {b['rows_per_s'] / rps:.3f}, "
              f"cs-pdns events/s / raw rows/s = {b['events_per_s'] / rps:.2f}", flush=True)

    # ---- latency
    def latency(self):
        rate, secs = self.args.rate, self.args.latency_seconds
        total = int(rate * secs)
        topic = self.new_topic("latency", 3)
        # librdkafka's mock broker answers a fetch that found no data only when its
        # fetch.wait.max.ms ends, even if records arrive meanwhile (p50 follows the setting: 87 ms
        # at cs-pdns's default 100, 19 ms at 10); a real broker answers a waiting fetch as soon
        # as data arrives. 10 ms takes the mock's wait out of the figure; --env overrides it.
        self.start_daemon("info", KAFKA_CFG_FETCH_WAIT_MAX_MS="10")
        vms = self.vms(total, acme=True)
        lines = [self.events.line(vm) for vm in vms]
        names = [f"{vm['name']}.{self.w.acme_zone}" for vm in vms]
        prod = subprocess.Popen(kcat_producer(self.st, topic, ("-X", "linger.ms=0")),
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(self.st.workdir, "kcat.log"), "ab"))
        produced = []  # (index, time handed to the producer)
        wall = []  # the same times by the wall clock, to compare with cs-pdns's log
        lock = threading.Lock()

        def producer():
            written = 0
            t0 = time.monotonic()
            for i, line in enumerate(lines):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                # kcat reads its input in 1,024-byte blocks: pad so this line is read at once
                # (it skips empty lines).
                pad = -(written + len(line)) % 1024
                prod.stdin.write(line + b"\n" * pad)
                prod.stdin.flush()
                written += len(line) + pad
                with lock:
                    produced.append((i, time.monotonic()))
                    wall.append(time.time())
            prod.stdin.close()

        thread = threading.Thread(target=producer, daemon=True)
        d = self.st.state["dns"]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((d["host"], d["port"]))
        sock.setblocking(False)
        # One query in flight per name (a lost one is given up after 100 ms) and at most 64 in
        # all, so a slow cs-pdns cannot turn the poller into a flood that slows PowerDNS down.
        pending = {}  # index -> [produced at, next poll, query sent at or 0]
        by_id = {}  # query id -> (index, question bytes)
        lat = {}
        qid = 0
        poll = 0.005
        inflight = 0
        thread.start()
        taken = 0
        deadline = None
        while True:
            now = time.monotonic()
            with lock:
                fresh = produced[taken:]
                taken = len(produced)
            for i, t in fresh:
                pending[i] = [t, t, 0]
            if taken == total and deadline is None:
                deadline = now + 10
            if (deadline and now > deadline) or (taken == total and not pending):
                break
            for i, p in list(pending.items()):
                if p[2] and now - p[2] > 0.1:
                    p[2] = 0
                    inflight -= 1
                if p[1] <= now and not p[2] and inflight < 64:
                    qid = (qid + 1) & 0xFFFF
                    q = b"".join(bytes([len(x)]) + x.encode() for x in names[i].split(".")) + \
                        b"\x00\x00\x01\x00\x01"
                    sock.send(struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0) + q)
                    by_id[qid] = (i, q)
                    p[2] = now
                    inflight += 1
            r, _, _ = select.select([sock], [], [], 0.001)
            while r:
                try:
                    msg = sock.recv(4096)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                got = time.monotonic()
                rid, flags, _, ancount = struct.unpack(">HHHH", msg[:8])
                i, q = by_id.pop(rid, (None, None))
                if i not in pending or msg[12:12 + len(q)] != q or not pending[i][2]:
                    continue
                p = pending[i]
                p[2] = 0
                inflight -= 1
                if flags & 0xF == 0 and ancount:
                    lat[i] = got - pending.pop(i)[0]
                else:
                    p[1] = got + poll
        thread.join()
        prod.wait(30)
        sock.close()
        self.st.stop_daemon()
        warm = int(rate)  # the first second: the consumer's first fetches
        steady = sorted(v for i, v in lat.items() if i >= warm)
        if not steady:
            raise RuntimeError("no name was answered")
        # Where the time goes: produced -> cs-pdns logs the VM applied (its ts=, 1 ms steps).
        applied_at = {m.group(2): datetime.datetime.fromisoformat(
            m.group(1).replace("Z", "+00:00")).timestamp() for m in re.finditer(
            r'^ts=(\S+) .*msg="vm=(\S+) event=VM\.CREATE state=', self.st.log_text(False), re.M)}
        to_log = sorted(applied_at[vms[i]["id"]] - wall[i] for i in range(warm, len(wall))
                        if vms[i]["id"] in applied_at)

        def pct(p, xs=steady):
            return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000
        self.res["latency"] = {"rate": rate, "events": total, "answered": len(lat),
                               "lost": total - len(lat), "p50_ms": round(pct(50), 1),
                               "p99_ms": round(pct(99), 1), "max_ms": round(steady[-1] * 1000, 1),
                               "poll_ms": poll * 1000, "warmup_excluded": warm,
                               "to_applied_log_p50_ms": round(pct(50, to_log), 1) if to_log
                               else None,
                               "to_applied_log_p99_ms": round(pct(99, to_log), 1) if to_log
                               else None}
        print(f"latency: {total} events at {rate}/s, {len(lat)} answered; steady state "
              f"(first {warm} excluded): p50 {pct(50):.1f} ms, p99 {pct(99):.1f} ms, max "
              f"{steady[-1] * 1000:.1f} ms (polled every {poll * 1000:.0f} ms)", flush=True)
        if to_log:
            print(f"latency: produced -> cs-pdns logged it applied: p50 {pct(50, to_log):.1f} ms, "
                  f"p99 {pct(99, to_log):.1f} ms", flush=True)

    # ---- memory
    def memory(self):
        total = self.args.events_for_memory
        wave = max(500, min(5000, total // 10))
        pool = min(10000, total)
        topic = self.new_topic("memory", 3)
        m = self.start_daemon("warn")
        pid = self.st.daemon.pid
        vms = self.vms(pool)
        base = {vm["id"]: vm["name"] for vm in vms}
        produced = 0
        checkpoints = []  # (events applied, RSS KB once caught up)
        step = max(wave, total // 10)
        t0 = time.monotonic()
        peak = 0
        while produced < total:
            peak = max(peak, self.wait_applied(m, produced - wave, 300))
            k = min(wave, total - produced)
            batch = []
            for j in range(produced, produced + k):
                vm = vms[j % pool]
                # Every pass over the pool renames the VMs, so each event changes records.
                vm["name"] = base[vm["id"]] + ("-b" if (j // pool) % 2 else "-a")
                batch.append(self.events.line(vm))
            produce(self.st, topic, b"".join(batch))
            produced += k
            if produced % step < k or produced == total:
                peak = max(peak, self.wait_applied(m, produced, 300))
                checkpoints.append((produced, rss_kb(pid)))
                print(f"  memory: {produced} events applied, RSS {checkpoints[-1][1] / 1024:.1f} "
                      f"MB ({time.monotonic() - t0:.0f}s)", flush=True)
        hwm = rss_kb(pid, "VmHWM")
        self.st.stop_daemon()
        pts = checkpoints[1:] if len(checkpoints) > 2 else checkpoints
        n = len(pts)
        mx = sum(p[0] for p in pts) / n
        my = sum(p[1] for p in pts) / n
        sxx = sum((p[0] - mx) ** 2 for p in pts)
        slope = 100000 * sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else 0.0
        self.res["memory"] = {
            "events": total, "rss_peak_mb": round(max(peak, hwm) / 1024, 1),
            "rss_first_mb": round(checkpoints[0][1] / 1024, 1),
            "rss_after_mb": round(checkpoints[-1][1] / 1024, 1),
            "slope_kb_per_100k": round(slope, 1),
            "checkpoints": [[e, round(kb / 1024, 1)] for e, kb in checkpoints]}
        print(f"memory: {total} events; RSS after {checkpoints[0][0]}: "
              f"{checkpoints[0][1] / 1024:.1f} MB, after {total}: {checkpoints[-1][1] / 1024:.1f} "
              f"MB, slope {slope:+.1f} KB per 100,000 events; peak {max(peak, hwm) / 1024:.1f} MB",
              flush=True)

    # ---- policy
    def policy(self):
        exe = self.args.policy_bench or os.path.join(os.path.dirname(self.st.bin), "tests",
                                                     "bench", "policy_bench")
        # The best of three runs: one core's rate, not what else the machine was doing (the
        # stack's services settle in the first seconds after they start).
        runs = []
        for _ in range(3):
            r = subprocess.run([exe, "--seconds", "3", "--json"], capture_output=True, text=True,
                               timeout=120)
            if r.returncode:
                raise RuntimeError(f"policy_bench failed: {r.stderr}")
            runs.append(json.loads(r.stdout))
        self.res["policy"] = max(runs, key=lambda x: x["per_second"])
        self.res["policy"]["runs_per_second"] = [round(x["per_second"]) for x in runs]
        # The same without ctx.event: how much of a call goes into converting the event.
        r = subprocess.run([exe, "--seconds", "3", "--json", "--no-event"], capture_output=True,
                           text=True, timeout=120)
        if r.returncode == 0:
            self.res["policy"]["per_second_without_ctx_event"] = \
                json.loads(r.stdout)["per_second"]
        print(f"policy: {self.res['policy']['per_second']:.0f} evaluations/s, best of "
              f"{self.res['policy']['runs_per_second']} "
              f"({self.res['policy'].get('per_second_without_ctx_event', 0):.0f} without "
              f"ctx.event)", flush=True)


def table(res, mach):
    T = TARGETS
    rows = []

    def row(what, value, target, ok):
        rows.append((what, value, target, "-" if ok is None else ("ok" if ok else "MISSED")))
    b, raw, lat = res.get("backlog"), res.get("raw"), res.get("latency")
    mem, pol, rs = res.get("memory"), res.get("policy"), res.get("resync")
    if b:
        row(f"backlog, {b['events']:,} VM.CREATE events", f"{b['events_per_s']:,} events/s "
            f"({b['rows_per_s']:,} rows/s)", f">= {T['backlog_eps']:,} events/s",
            b["events_per_s"] >= T["backlog_eps"])
    if raw:
        row(f"raw ceiling, {raw['rows']:,} rows", f"{raw['rows_per_s']:,} rows/s", "", None)
        row("cs-pdns / raw ceiling (rows/s)", f"{raw['ratio_rows']:.3f} x "
            f"(events/s / rows/s: {raw['ratio_events']:.2f})", f">= {T['ceiling_ratio']} x",
            raw["ratio_rows"] >= T["ceiling_ratio"])
    if lat:
        row(f"event -> DNS at {lat['rate']}/s, p50", f"{lat['p50_ms']} ms", "", None)
        row(f"event -> DNS at {lat['rate']}/s, p99", f"{lat['p99_ms']} ms "
            f"({lat['lost']} unanswered)", f"<= {T['p99_ms']} ms",
            lat["p99_ms"] <= T["p99_ms"] and lat["lost"] == 0)
    if pol:
        bare = pol.get("per_second_without_ctx_event")
        row("default policy, one core", f"{pol['per_second']:,.0f} evaluations/s" +
            (f" ({bare:,.0f} without ctx.event)" if bare else ""),
            f">= {T['policy_eps']:,}/s", pol["per_second"] >= T["policy_eps"])
    peaks = [x["rss_peak_mb"] for x in (b, mem) if x]
    if peaks:
        row("peak RSS (backlog, memory run)", f"{max(peaks)} MB", f"<= {T['rss_mb']} MB",
            max(peaks) <= T["rss_mb"])
    if mem:
        row(f"RSS after {mem['events']:,} events", f"{mem['rss_after_mb']} MB (after "
            f"{mem['checkpoints'][0][0]:,}: {mem['rss_first_mb']} MB; then "
            f"{mem['slope_kb_per_100k']:+.0f} KB/100k)", "<= 30 MB, flat",
            mem["rss_after_mb"] <= T["rss_mb"] and mem["slope_kb_per_100k"] < 256)
    if rs:
        row(f"resync of {rs['vms']:,} VMs", f"{rs['seconds']} s, peak RSS "
            f"{rs['peak_rss_mib']} MB", f"<= {T['resync_s']} s", rs["seconds"] <= T["resync_s"])
    for name, why in res.get("errors", {}).items():
        row(name, "FAILED: " + why[:60], "", False)
    head = (f"cs-pdns {mach['commit']} on {mach['nproc']} x {mach['cpu']}, MariaDB "
            f"{mach.get('mariadb', '?')} (innodb_flush_log_at_trx_commit=1), load "
            f"{mach['load']:.2f} at start")
    w = [max(len(r[i]) for r in rows + [("figure", "measured", "target", "")]) for i in range(4)]
    out = [head, "", "| " + " | ".join(h.ljust(w[i]) for i, h in
                                       enumerate(("figure", "measured", "target", ""))) + " |",
           "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    out += ["| " + " | ".join(r[i].ljust(w[i]) for i in range(4)) + " |" for r in rows]
    return "\n".join(out)


def perf_summary(path):
    """The top of perf's report: where cs-pdns's CPU time went (self, then with callees)."""
    out = []
    for mode, title in (("--no-children", "self"), ("--children", "inclusive")):
        r = subprocess.run(["perf", "report", "-i", path, "--stdio", mode, "--sort", "symbol",
                            "-g", "none", "--percent-limit", "1.5"], capture_output=True,
                           text=True)
        lines = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
        out.append(f"perf, {title} (top 20):")
        out += ["  " + ln.strip() for ln in lines[:20]]
    return "\n".join(out)


def start_stack(build):
    state = os.path.join(tempfile.mkdtemp(prefix="tput"), "stack.json")
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "e2e", "stack.py"), "up",
                    "--state", state, "--kafka-mock", os.path.join(build, "tests", "kafka-mock")],
                   check=True)
    return state


def stop_stack(state):
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "e2e", "stack.py"), "down",
                    "--state", state], check=False)
    os.rmdir(os.path.dirname(state))


def section(res, name, fn):
    """Runs one section; a failure is recorded and reported, and the other sections still run."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 -- any failure ends only this section
        res.setdefault("errors", {})[name] = str(e)
        print(f"{name}: FAILED: {e}", flush=True)


def run(args, res, mach):
    from harness import Stack
    from private_db import PrivateDbStack
    from world import World
    from resync_bench import extra_zones

    st = PrivateDbStack("tput")
    try:
        mach["mariadb"] = st.sql1("SELECT VERSION()")
        w = World(st, 15)
        w.create_zones()
        for z in extra_zones(w, args.events + 20000 + int(args.rate * args.latency_seconds)):
            st.add_zone(z)
        st.start_sim("4.16")
        st.control("setup", w.setup_body())
        bench = Bench(args, st, w, res)
        if not args.skip_policy:
            section(res, "policy", bench.policy)
        if not args.skip_backlog:
            section(res, "backlog", bench.backlog)
        if not args.skip_latency:
            # PowerDNS serves the stack's own database, so this run cannot use the private one.
            lst = Stack("tputlat")
            try:
                lw = World(lst, 15)
                lw.create_zones()
                lst.start_sim("4.16")
                lst.control("setup", lw.setup_body())
                section(res, "latency", Bench(args, lst, lw, res).latency)
            finally:
                lst.close()
        if not args.skip_memory:
            section(res, "memory", bench.memory)
    finally:
        st.close()
    if not args.skip_resync:
        import resync_bench

        def resync():
            res["resync"] = resync_bench.bench(args.resync_vms, again=False)
        section(res, "resync", resync)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="build directory holding cs-pdns, tests/kafka-mock and "
                    "tests/bench/policy_bench (default: ./build); CSPDNS_BIN overrides cs-pdns")
    ap.add_argument("--events", type=int, default=20000, help="backlog events (default 20,000)")
    ap.add_argument("--events-for-memory", type=int, default=1000000,
                    help="events of the memory run (default 1,000,000)")
    ap.add_argument("--resync-vms", type=int, default=100000)
    ap.add_argument("--rate", type=int, default=200, help="latency run: events/s (default 200)")
    ap.add_argument("--latency-seconds", type=float, default=30)
    ap.add_argument("--policy-bench", help="policy_bench executable (default: in --build)")
    ap.add_argument("--perf", metavar="FILE",
                    help="perf record -g cs-pdns during the backlog into FILE")
    ap.add_argument("--env", metavar="NAME=VALUE", action="append", default=[],
                    help="a setting for cs-pdns in every section but resync (repeatable), "
                    "e.g. --env BATCH_MAX_WAIT_MS=2 to try a value")
    ap.add_argument("--perf-freq", type=int, default=999, help="perf samples/s (default 999)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    for s in ("backlog", "raw", "latency", "policy", "memory", "resync"):
        ap.add_argument(f"--skip-{s}", action="store_true")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    os.environ.setdefault("CSPDNS_BIN", os.path.join(build, "cs-pdns"))
    own_stack = None
    if not os.environ.get("CSPDNS_STACK_STATE"):
        own_stack = start_stack(build)
        os.environ["CSPDNS_STACK_STATE"] = own_stack
    res = {}
    mach = machine(os.environ["CSPDNS_BIN"])
    try:
        run(args, res, mach)
    except KeyboardInterrupt:
        print("interrupted: the table holds the sections that finished", flush=True)
    finally:
        if own_stack:
            stop_stack(own_stack)
    print()
    print(table(res, mach))
    if args.perf and os.path.exists(args.perf):
        print()
        print(perf_summary(args.perf))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": mach, "results": res, "targets": TARGETS}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
