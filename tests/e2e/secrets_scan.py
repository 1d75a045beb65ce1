#!/usr/bin/env python3
"""secrets_scan.py -- after every e2e test: no secret in any cs-pdns log the run wrote.

ctest runs it last (it DEPENDS on every e2e test) and before the stack fixture's cleanup removes
the run's directory. A cs-pdns log is any *.log file under that directory with a line in cs-pdns's
logfmt or JSON format, so a test that adds a log file is covered without registering it; tests on a
stack of their own (faultkit.PrivateStack: database and broker outages) copy their logs there
before removing that stack. Must not:
pass when it found no cs-pdns log at all (that would mean it looked in the wrong place).
"""
import os
import re
import sys

from harness import SECRETS, load_stack

CSPDNS_LINE = re.compile(r'^(ts=\S+ level=\w+ mod=\w+|\{"ts":"[^"]+","level":"\w+","mod":)')


def secrets(state):
    return [s for s in SECRETS + (state["mysql"]["password"], state["dns"]["api_key"],
                                  "signature=", "apikey=") if s]


def cspdns_logs(top):
    for d, _, files in os.walk(top):
        for name in sorted(files):
            if not name.endswith(".log"):
                continue
            path = os.path.join(d, name)
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
            if any(CSPDNS_LINE.match(line) for line in lines):
                yield path, lines


def main():
    state = load_stack()
    wanted = secrets(state)
    logs = found = lines_seen = 0
    for path, lines in cspdns_logs(state["dir"]):
        logs += 1
        lines_seen += len(lines)
        for n, line in enumerate(lines, 1):
            for s in wanted:
                if s in line:
                    found += 1
                    print(f"{path}:{n}: holds {s[:6]}... : {line[:200]}")
    print(f"{logs} cs-pdns logs, {lines_seen} lines, {len(wanted)} secrets looked for: "
          f"{found} found")
    if not logs:
        print(f"no cs-pdns log under {state['dir']}: run the e2e tests first (ctest -L e2e)")
        return 1
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
