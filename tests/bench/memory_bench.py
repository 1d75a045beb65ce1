#!/usr/bin/env python3
"""memory_bench.py -- a long event run: cs-pdns's resident memory while it works through tens of
thousands of CloudStack events, read from /proc every second.

A random workload (create/start/stop/destroy/recover/expunge/update over a few hundred VMs) goes
through the CloudStack simulator, which publishes CloudStack's records to Kafka (about eight
records per API call), in rounds; after each round, once cs-pdns has caught up (so librdkafka's
prefetch queue is empty and does not count), the RSS is read. It prints RSS per round, the
growth from the first round to the last and the slope over all rounds (a leak shows as a steady
slope). While a round streams, the RSS is sampled every second too (peak). At the end it checks
that the database holds exactly what the simulator's state implies. A benchmark, not a test: it
asserts correctness only.

Run it against a stack started as for the e2e tests:
    python3 tests/e2e/stack.py up --state /tmp/bench.json --kafka-mock build/tests/kafka-mock
    CSPDNS_BIN=$PWD/build/cs-pdns CSPDNS_STACK_STATE=/tmp/bench.json \\
        python3 tests/bench/memory_bench.py [--ops 5000]
    python3 tests/e2e/stack.py down --state /tmp/bench.json
Must not: run under ctest, or leave its simulator or cs-pdns behind.
"""
import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))

import faultkit as fk  # noqa: E402
from harness import Stack  # noqa: E402
from stack import kafka_control  # noqa: E402
from world import World  # noqa: E402

# librdkafka's mock broker keeps at most 5 MB per partition: 16 partitions hold the whole run even
# when cs-pdns falls behind for a while.
PARTITIONS = 16
TTL = 60


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Every second: (seconds, records finished, RSS in KB), reading only the new log lines."""

    def __init__(self, st):
        super().__init__(daemon=True)
        self.st = st
        self.samples = []
        self.done = 0
        self.stop = threading.Event()
        self.offset = 0

    def count_new(self):
        with open(self.st.daemon_log, errors="replace") as f:
            f.seek(self.offset)
            text = f.read()
        cut = text.rfind("\n") + 1
        self.offset += len(text[:cut].encode("utf-8", "replace"))
        self.done += sum(1 for _ in fk.POS_DONE.finditer(text[:cut]))

    def run(self):
        t0 = time.time()
        while not self.stop.wait(1.0):
            self.count_new()
            self.samples.append((time.time() - t0, self.done, rss_kb(self.st.daemon.pid)))


def slope_kb_per_1000(points):
    """Least-squares slope of RSS over records finished, in KB per 1,000 records."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[1] for p in points) / n
    my = sum(p[2] for p in points) / n
    sxx = sum((p[1] - mx) ** 2 for p in points)
    if sxx == 0:
        return 0.0
    return 1000 * sum((p[1] - mx) * (p[2] - my) for p in points) / sxx


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=6000, help="CloudStack API calls (default 6000, "
                    "about 50,000 Kafka records)")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    st = Stack("membench")
    w = World(st, 40)
    zones = fk.world_zones(w)
    try:
        w.create_zones()
        kafka_control(st.state, f"topic {st.topic} {PARTITIONS}")
        st.start_sim("4.16")
        st.control("setup", w.setup_body())
        # Production settings: info logs, no resyncs (this measures the event path).
        st.start_daemon(LOG_LEVEL="info", RESYNC_INTERVAL=0)
        # Info logs name only VM outcomes; debug would be needed to count every record, so the
        # sampler counts outcomes and the total comes from the broker at the end.
        sampler = Sampler(st)
        sampler.start()
        work = fk.Workload(st, w, args.seed, max_vms=400)
        t0 = time.time()
        rounds = []  # (records on the topic, VM events applied, RSS KB) once caught up
        for _ in range(args.rounds):
            work.run(args.ops // args.rounds)
            # Info logs show VM events only, so "caught up" is: no new one for 3 s (the records
            # in between are ignored in microseconds).
            st.wait_quiet(3, timeout=1800)
            sampler.count_new()
            rounds.append((sum(fk.end_offsets(st).values()), sampler.done,
                           rss_kb(st.daemon.pid)))
        run_s = time.time() - t0
        sampler.stop.set()
        sampler.join()
        ends = fk.end_offsets(st)
        records = sum(ends.values())
        state = fk.sim_state(st)
        v = fk.verify_exact(st, state, w.setup_body(), zones, TTL)
        print(f"{work.total()} API calls, {records} Kafka records on {PARTITIONS} partitions, "
              f"{sampler.done} VM events applied in {run_s:.0f} s; {len(state['vms'])} VMs; "
              f"final state {'exact' if not v.problems() else 'WRONG: ' + '; '.join(v.problems())}")
        print("\n  round  Kafka records  VM events  RSS MB (caught up)")
        for i, (recs, done, kb) in enumerate(rounds, 1):
            print(f"  {i:5d}  {recs:13d}  {done:9d}  {kb / 1024:6.1f}")
        first, last = rounds[0], rounds[-1]
        slope = slope_kb_per_1000([(0, r[0], r[2]) for r in rounds[1:]])
        print(f"\nRSS caught up after round 1: {first[2] / 1024:.1f} MB, after round "
              f"{len(rounds)}: {last[2] / 1024:.1f} MB ({(last[2] - first[2]) / 1024:+.1f} MB over "
              f"{last[0] - first[0]} more records); slope from round 2 on: {slope:+.2f} KB per "
              f"1,000 records; peak while streaming "
              f"{max(s[2] for s in sampler.samples) / 1024:.1f} MB")
        return 0 if not v.problems() else 1
    finally:
        st.close()


if __name__ == "__main__":
    sys.exit(main())
