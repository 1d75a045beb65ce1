#!/usr/bin/env python3
"""test_cli.py -- the command-line contract: help, version, exit statuses and setting errors.

Runs the built binary with crafted environments; needs no services, because every failure here
must happen before anything connects. Must not: depend on the machine's environment variables.
"""
import os
import subprocess
import sys
import tempfile

BIN = os.environ.get("CSPDNS_BIN") or sys.exit("CSPDNS_BIN must name the cs-pdns executable")

GOOD = {
    "KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "KAFKA_TOPIC": "cloudstack",
    "KAFKA_GROUP": "cs-pdns",
    "CS_ENDPOINT": "http://127.0.0.1:1/client/api",
    "CS_API_KEY": "k",
    "CS_SECRET_KEY": "s",
    "MYSQL_PDNS_HOST": "127.0.0.1",
    "MYSQL_PDNS_NAME": "pdns",
    "MYSQL_PDNS_USER": "pdns",
}

passed = failed = 0


def run(args, env=None, drop=()):
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            e[k] = os.environ[k]
    if env is not None:
        e.update(env)
    for k in drop:
        e.pop(k, None)
    return subprocess.run([BIN] + args, env=e, capture_output=True, text=True, timeout=60)


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok - {name}")
    else:
        failed += 1
        print(f"not ok - {name}\n  {detail}")


def expect_config_error(name, env, variable, drop=(), args=("check",)):
    r = run(list(args), env, drop)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    check(name, r.returncode == 2 and len(lines) == 1 and variable in lines[0],
          f"rc={r.returncode} stderr={r.stderr!r}")


r = run(["--help"])
check("--help exits 0 and lists commands and settings",
      r.returncode == 0 and "run" in r.stdout and "KAFKA_BOOTSTRAP" in r.stdout
      and "DNS_ADD_TO_COMMON_ZONE" in r.stdout, r.stdout + r.stderr)
r = run(["--version"])
check("--version prints the version", r.returncode == 0 and r.stdout.startswith("cs-pdns "),
      r.stdout)
r = run([])
check("no command is a usage error", r.returncode == 2, r.stderr)
r = run(["frobnicate"])
check("an unknown command names itself", r.returncode == 2 and "frobnicate" in r.stderr, r.stderr)
r = run(["run", "extra"], GOOD)
check("run takes no arguments", r.returncode == 2, r.stderr)

for var in ("KAFKA_BOOTSTRAP", "KAFKA_TOPIC", "KAFKA_GROUP", "CS_ENDPOINT", "CS_API_KEY",
            "CS_SECRET_KEY", "MYSQL_PDNS_HOST", "MYSQL_PDNS_NAME", "MYSQL_PDNS_USER"):
    expect_config_error(f"missing {var} is named", GOOD, var, drop=(var,), args=("run",))

bad_values = {
    "DNS_RECORD_TTL": "sixty",
    "MYSQL_PDNS_PORT": "70000",
    "DNS_ADD_TO_COMMON_ZONE": "maybe",
    "CS_ENDPOINT": "ftp://cloud/client/api",
    "KAFKA_TOPIC": "bad topic",
    "DNS_COMMON_ZONE": "bad zone..example",
    "LOG_LEVEL": "loud",
    "CS_TIMEOUT": "0",
    "POLICY_ON_ERROR": "explode",
    "KAFKA_CFG_SESSION_TIMEOUT_MS": "soon",
    "KAFKA_CFG_NO_SUCH_PROPERTY": "1",
}
for var, value in bad_values.items():
    expect_config_error(f"invalid {var} is named", dict(GOOD, **{var: value}), var)

expect_config_error("DNS_ADD_TO_COMMON_ZONE without DNS_COMMON_ZONE",
                    dict(GOOD, DNS_ADD_TO_COMMON_ZONE="true"), "DNS_COMMON_ZONE")
expect_config_error("an empty setting is named", dict(GOOD, KAFKA_GROUP=""), "KAFKA_GROUP")

with tempfile.TemporaryDirectory() as d:
    broken = os.path.join(d, "broken.lua")
    with open(broken, "w") as f:
        f.write("return { records = function(vm, ctx) return {} end\n")
    expect_config_error("a policy with a syntax error is named", dict(GOOD, POLICY_FILE=broken),
                        "POLICY_FILE")
    expect_config_error("a missing policy file is named",
                        dict(GOOD, POLICY_FILE=os.path.join(d, "nope.lua")), "POLICY_FILE")
    secret = os.path.join(d, "secret")
    with open(secret, "w") as f:
        f.write("from-a-file\n")
    env = dict(GOOD, CS_SECRET_KEY_FILE=secret)
    env.pop("CS_SECRET_KEY")
    r = run(["check"], env)
    check("secrets can come from *_FILE", r.returncode == 0, r.stderr)
    expect_config_error("a secret and its _FILE together are refused",
                        dict(GOOD, CS_SECRET_KEY_FILE=secret), "CS_SECRET_KEY")

r = run(["check"], GOOD)
check("check accepts good settings and the built-in policy", r.returncode == 0,
      r.stdout + r.stderr)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
