#!/usr/bin/env python3
"""test_faults_db.py -- the database goes away mid-stream: cs-pdns waits, says what it waits for,
reconnects by itself, and loses and duplicates nothing.

Runs on a stack of its own (MariaDB is stopped and frozen here). While a random workload streams
through the CloudStack simulator: MariaDB stopped for ~10 s and started again on the same datadir
and port; MariaDB frozen (SIGSTOP) for ~10 s; cs-pdns's connection killed (KILL <id>) several
times; a row lock held past cs-pdns's lock-wait timeout; a deadlock in which cs-pdns is the victim.
After each, the database must hold exactly what the simulator's state implies, and cs-pdns must
still be the same process. An idle cs-pdns must notice an outage too: /readyz says not ready while the
database is down and ready once it is back. Must not: skip, or restart cs-pdns.
"""
import os
import random
import signal
import socket
import sys
import time
import urllib.error
import urllib.request

import faultkit as fk
import reliability

TEST = "faults_db"
SEED = int(os.environ.get("CSPDNS_FAULT_SEED", str(int(time.time()))))
TTL = 60
CAP_MS = 2000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


METRICS = f"127.0.0.1:{free_port()}"
# No resyncs: they would repair what a lost event left wrong, and this tests the event path.
DAEMON_ENV = {"KAFKA_CFG_SESSION_TIMEOUT_MS": 3000, "KAFKA_CFG_HEARTBEAT_INTERVAL_MS": 500,
              "RETRY_MAX_BACKOFF_MS": CAP_MS, "RESYNC_INTERVAL": 0, "METRICS_ADDR": METRICS}

private = fk.PrivateStack(brokers=1)
from harness import Results, Stack, eq, wait_until  # noqa: E402
from world import World  # noqa: E402

st = Stack("fdb")
w = World(st, 22)
r = Results()
rng = random.Random(SEED)
zones = fk.world_zones(w)
serials = {}
work = None
pid = {}


def daemon_alive():
    assert st.daemon is not None and st.daemon.poll() is None, \
        f"cs-pdns exited (status {st.daemon.returncode if st.daemon else None})"
    eq(st.daemon.pid, pid["daemon"], "cs-pdns process (it must not need a restart)")



def http_get(path):
    try:
        with urllib.request.urlopen(f"http://{METRICS}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def db_reachable_gauge():
    for line in http_get("/metrics")[1].splitlines():
        if line.startswith("cspdns_db_reachable "):
            return float(line.split()[1])
    raise AssertionError("no cspdns_db_reachable in /metrics")


def verify(what, fault, tried=1, note=""):
    daemon_alive()
    v, gaps, dups = fk.check_round(st, w, zones, TTL)
    lost = v.lost + sum(len(g) for g in gaps.values())
    ok = not (v.problems() or gaps or dups)
    reliability.record(TEST, fault, tried, lost=lost, duplicates=len(v.duplicates) + len(dups),
                       crashes=0 if st.daemon.poll() is None else 1, ok=ok, note=note)
    fk.assert_round(what, v, gaps, dups)


def setup():
    w.create_zones()
    st.start_sim("4.16")
    st.control("setup", w.setup_body())
    serials.update(fk.zone_serials(st, zones))
    global work
    work = fk.Workload(st, w, SEED, max_vms=150)
    print(f"  seed {SEED}")
    st.start_daemon(**DAEMON_ENV)
    pid["daemon"] = st.daemon.pid
    work.run(60)
    fk.wait_caught_up(st)


def db_stopped():
    down = {}
    start = len(st.log_text(False))

    def fault():
        private.db_stop()
        down["t"] = time.time()
        time.sleep(10)
        private.db_start()
        down["s"] = time.time() - down["t"]

    text = work.during(80, 0.05, fault)
    print(f"  MariaDB down {down['s']:.1f} s")
    waits = fk.backoffs(text)
    verify("after MariaDB stopped and started", "MariaDB stopped ~10 s mid-stream",
           note=f"{len(waits)} retries, backoff up to {max(waits, default=0)} ms")
    assert "will retry" in text and "errno" in text, "no log line saying what cs-pdns waits for"
    fk.assert_capped_backoff(text, CAP_MS, "database down")
    # No busy loop: with 250 ms..2 s between attempts, far fewer than one attempt per 100 ms.
    assert len(waits) <= down["s"] * 10, f"{len(waits)} retries in {down['s']:.0f} s"
    assert "reconnected" in st.log_text(False)[start:], "no reconnect logged after the outage"


def db_frozen():
    def fault():
        os.kill(private.db_pid(), signal.SIGSTOP)
        try:
            time.sleep(10)
        finally:
            os.kill(private.db_pid(), signal.SIGCONT)

    work.during(60, 0.05, fault)
    verify("after MariaDB was frozen", "MariaDB frozen (SIGSTOP) ~10 s mid-stream")


def connection_killed():
    kills = []

    def fault():
        for i in range(5):
            time.sleep(rng.uniform(0.3, 1.5))
            # After a KILL, cs-pdns connects again when its next event needs the database.
            w.deploy(f"kill-probe-{i}")
            ids = wait_until("cs-pdns's database connection",
                             lambda: fk.daemon_db_thread_ids(st), 30, interval=0.1)
            for i in ids:
                st.sql(f"KILL {i}")
            kills.extend(ids)

    text = work.during(80, 0.03, fault, settle=0.5)
    assert len(kills) >= 5, f"found cs-pdns's connection only {len(kills)} times"
    assert "reconnect" in text, "no reconnect logged after KILL"
    verify("after KILL of cs-pdns's connection", "KILL of cs-pdns's MariaDB connection",
           tried=len(kills))


def lock_wait_timeout():
    lock = fk.SqlSession(st)

    def fault():
        lock.run("SET SESSION innodb_lock_wait_timeout = 600; BEGIN; SELECT id FROM domains "
                 f"WHERE name IN ('{w.acme_zone}', '{w.cust_zone}') FOR UPDATE")
        try:
            fk.wait_lock_wait(st)
            # cs-pdns gives up waiting after its innodb_lock_wait_timeout (20 s), then retries.
            wait_until("a lock-wait timeout", lambda: "errno 1205" in st.log_text(False), 40,
                       interval=0.5)
        finally:
            lock.run("ROLLBACK")

    try:
        work.during(40, 0.05, fault)
    finally:
        lock.close()
    verify("after a lock-wait timeout", "lock-wait timeout on a zone row held by another client")


def deadlock():
    s = fk.SqlSession(st)
    text = {}
    try:
        s.run("CREATE TABLE IF NOT EXISTS cspf_weight (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; "
              "INSERT IGNORE INTO cspf_weight SELECT seq, 0 FROM seq_1_to_500")
        fk.wait_caught_up(st, 120)
        start = len(st.log_text(False))
        # This transaction is made heavy (500 changed rows), so InnoDB picks cs-pdns's as the
        # victim: cs-pdns must retry it, not lose it.
        s.run("SET SESSION innodb_lock_wait_timeout = 600; BEGIN; "
              "UPDATE cspf_weight SET v = v + 1; "
              f"SELECT id FROM domains WHERE name = '{w.acme_zone}' FOR UPDATE")
        vm = w.deploy("deadlock-victim")
        fk.wait_lock_wait(st)  # cs-pdns holds its VM row and waits for the zone
        s.run(f"SELECT vm_id FROM cspdns_vm WHERE vm_id = '{vm}' FOR UPDATE")
        s.run("ROLLBACK")
        wait_until("the deadlock victim retried and applied",
                   lambda: st.rows(f"deadlock-victim.{w.acme_zone}", "A"), 60, interval=0.2)
        text["log"] = st.log_text(False)[start:]
    finally:
        s.close()
    assert "errno 1213" in text["log"], "cs-pdns was not the deadlock victim (no errno 1213 logged)"
    verify("after a deadlock", "deadlock with another client (cs-pdns the victim)")


def final():
    daemon_alive()
    v = fk.verify_exact(st, fk.sim_state(st), w.setup_body(), zones, TTL, serials)
    v.assert_ok("final state")
    print(f"  {work.total()} API operations: {dict(work.ops)}")


def readyz_while_idle_and_db_down():
    # No event needs the database here: only cs-pdns's own idle check can notice the outage.
    daemon_alive()
    eq(http_get("/readyz")[0], 200, "/readyz before the outage")
    start = len(st.log_text(False))
    private.db_stop()
    try:
        t0 = time.time()
        status, body = wait_until("/readyz 503 while MariaDB is down", lambda: (
            lambda a: a if a[0] == 503 else None)(http_get("/readyz")), 30, interval=0.2)
        print(f"  /readyz 503 {time.time() - t0:.1f} s after MariaDB stopped")
        assert "database" in body, f"/readyz body does not name the database: {body!r}"
        eq(db_reachable_gauge(), 0.0, "cspdns_db_reachable while MariaDB is down")
        eq(http_get("/healthz")[0], 200, "/healthz (the loop is alive) while MariaDB is down")
        text = st.log_text(False)[start:]
        assert "will retry" not in text, "an event used the database: the instance was not idle"
    finally:
        private.db_start()
    t0 = time.time()
    wait_until("/readyz 200 after MariaDB is back", lambda: http_get("/readyz")[0] == 200, 30,
               interval=0.2)
    print(f"  /readyz 200 {time.time() - t0:.1f} s after MariaDB started")
    eq(db_reachable_gauge(), 1.0, "cspdns_db_reachable after MariaDB is back")
    daemon_alive()


def sigterm_while_db_down():
    # Events wait for the database; SIGTERM must still end cs-pdns promptly, leaving them for
    # the next start, which applies them.
    private.db_stop()
    try:
        start = len(st.log_text(False))
        work.run(20)
        wait_until("retries while the database is down",
                   lambda: "will retry" in st.log_text(False)[start:], 30)
        t0 = time.time()
        rc = st.stop_daemon(signal.SIGTERM, timeout=60)
        took = time.time() - t0
    finally:
        private.db_start()
    eq(rc, 0, "exit status after SIGTERM")
    assert took < 15, f"SIGTERM took {took:.1f} s while the database was down"
    print(f"  exit {took:.2f} s after SIGTERM")
    st.start_daemon(**DAEMON_ENV)
    pid["daemon"] = st.daemon.pid
    verify("after SIGTERM while the database was down", "SIGTERM while MariaDB is down",
           note=f"exit in {took:.1f} s; waiting events applied after the restart")


reliability.start(TEST)
try:
    r.check("setup (own stack: MariaDB, PowerDNS, Kafka mock)", setup)
    r.check("MariaDB stopped ~10 s mid-stream: waits, logs, reconnects, loses nothing", db_stopped)
    r.check("MariaDB frozen ~10 s mid-stream: nothing lost", db_frozen)
    r.check("KILL of cs-pdns's connection: reconnects, nothing lost", connection_killed)
    r.check("lock-wait timeout: retried, nothing lost", lock_wait_timeout)
    r.check("deadlock victim: retried, nothing lost", deadlock)
    r.check("same process throughout; final state exact, serials advanced", final)
    r.check("idle while MariaDB is down: /readyz 503 naming the database, 200 once it is back",
            readyz_while_idle_and_db_down)
    r.check("SIGTERM while the database is down: quick exit, events applied on restart",
            sigterm_while_db_down)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
    private.close()
sys.exit(r.finish())
