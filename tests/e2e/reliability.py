#!/usr/bin/env python3
"""reliability.py -- the Reliability figures: each fault and bad-input test records what it tried
and what came out; this script prints README's table from those records.

Tests call record(...), which appends one JSON line to <dir>/<test>.jsonl, where <dir> is
$CSPDNS_RELIABILITY_DIR or reliability/ next to the cs-pdns binary under test (the build dir).
    python3 tests/e2e/reliability.py [--dir DIR]
prints a Markdown table: fault or input, times tried, events lost, duplicates, crashes, outcome.
Shell scripts record through --start TEST and --record TEST FAULT TRIED CRASHES.
Must not: compute outcomes itself; it only reports what the tests measured.
"""
import argparse
import collections
import json
import os
import platform
import sys
import time


def out_dir(d=None):
    d = d or os.environ.get("CSPDNS_RELIABILITY_DIR")
    if not d:
        d = os.path.join(os.path.dirname(os.path.abspath(os.environ.get("CSPDNS_BIN", "."))),
                         "reliability")
    os.makedirs(d, exist_ok=True)
    return d


def start(test):
    """Starts a fresh record file for this test run (an earlier run's figures are replaced)."""
    path = os.path.join(out_dir(), f"{test}.jsonl")
    with open(path, "w"):
        pass
    return path


def record(test, fault, tried, lost=0, duplicates=0, crashes=0, ok=True, note=""):
    """lost and duplicates None: not about events (fuzzing), shown as a dash."""
    row = {"test": test, "fault": fault, "tried": tried, "lost": lost, "duplicates": duplicates,
           "crashes": crashes, "ok": bool(ok), "note": note, "time": time.time()}
    with open(os.path.join(out_dir(), f"{test}.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def load(d):
    rows = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".jsonl"):
            with open(os.path.join(d, name)) as f:
                rows += [json.loads(line) for line in f if line.strip()]
    return rows


def table(rows):
    merged = collections.OrderedDict()
    for r in rows:
        key = (r["test"], r["fault"])
        m = merged.setdefault(key, dict(r, tried=0, lost=0, duplicates=0, crashes=0, ok=True,
                                        notes=[]))
        m["tried"] += r["tried"]
        for key in ("lost", "duplicates"):
            m[key] = None if r[key] is None else (m[key] or 0) + r[key]
        m["crashes"] += r["crashes"]
        m["ok"] = m["ok"] and r["ok"]
        if r.get("note") and r["note"] not in m["notes"]:
            m["notes"].append(r["note"])
    lines = ["| fault or input | times | events lost | duplicates | crashes | outcome |",
             "|---|---:|---:|---:|---:|---|"]
    for m in merged.values():
        outcome = "pass" if m["ok"] else "**FAIL**"
        if m["notes"]:
            outcome += ": " + "; ".join(m["notes"])
        lost, dups = ("-" if m[k] is None else m[k] for k in ("lost", "duplicates"))
        lines.append(f"| {m['fault']} | {m['tried']:,} | {lost} | {dups} | {m['crashes']} | "
                     f"{outcome} |")
    return "\n".join(lines)


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/etc/os-release") as f:
            osname = dict(line.rstrip().split("=", 1) for line in f if "=" in line)
        osname = osname.get("PRETTY_NAME", "").strip('"')
    except OSError:
        osname = platform.system()
    return f"{osname}, {os.cpu_count()} x {cpu}"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", help="where the tests wrote their records (default: as record())")
    ap.add_argument("--start", metavar="TEST", help="start TEST's records afresh, print nothing")
    ap.add_argument("--record", nargs=4, metavar=("TEST", "FAULT", "TRIED", "CRASHES"),
                    help="append one record (for shell scripts), print nothing")
    args = ap.parse_args()
    if args.dir:
        os.environ["CSPDNS_RELIABILITY_DIR"] = args.dir
    if args.start:
        start(args.start)
        return
    if args.record:
        test, fault, tried, crashes = args.record
        record(test, fault, int(tried), lost=None, duplicates=None, crashes=int(crashes),
               ok=int(crashes) == 0)
        return
    d = out_dir()
    rows = load(d) if os.path.isdir(d) else []
    if not rows:
        sys.exit(f"no reliability records under {d}: run the e2e and fuzz tests first")
    when = time.strftime("%Y-%m-%d", time.localtime(max(r["time"] for r in rows)))
    print(f"Measured {when} on {machine()}:\n")
    print(table(rows))


if __name__ == "__main__":
    main()
