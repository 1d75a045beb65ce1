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

# KAFKA_CFG_* must not switch off commit-after-write, however the value is spelled; the same
# properties set to cs-pdns's own values are harmless and stay allowed.
for var, value in (("KAFKA_CFG_ENABLE_AUTO_OFFSET_STORE", "true"),
                   ("KAFKA_CFG_ENABLE_AUTO_OFFSET_STORE", "1"),
                   ("KAFKA_CFG_ENABLE_AUTO_COMMIT", "false")):
    expect_config_error(f"{var}={value} is refused", dict(GOOD, **{var: value}), var)
r = run(["check"], dict(GOOD, KAFKA_CFG_ENABLE_AUTO_OFFSET_STORE="false",
                        KAFKA_CFG_ENABLE_AUTO_COMMIT="true", KAFKA_CFG_AUTO_COMMIT_INTERVAL_MS="1000"))
check("the offset settings at cs-pdns's own values are allowed", r.returncode == 0, r.stderr)

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

# --config FILE: the environment's keys in a file; the environment wins; errors name file:line.
with tempfile.TemporaryDirectory() as d:
    conf = os.path.join(d, "cs-pdns.conf")
    with open(conf, "w") as f:
        f.write("# settings for the CLI test\n\n")
        for k, v in GOOD.items():
            f.write(f"{k}='{v}'\n")
        f.write("LOG_FORMAT=json\n")
    r = run(["check", "--config", conf], {})
    check("check --config FILE takes every setting from the file", r.returncode == 0
          and r.stderr.lstrip().startswith("{"), r.stdout + r.stderr)
    r = run([f"--config={conf}", "check"], {})
    check("--config=FILE may come before the command", r.returncode == 0, r.stderr)
    r = run(["check", "--config", conf], {"LOG_FORMAT": "logfmt"})
    check("the environment wins over the file", r.returncode == 0 and "level=info" in r.stderr
          and not r.stderr.lstrip().startswith("{"), r.stderr)
    expect_config_error("a bad value in the environment is named without the file",
                        {"DNS_RECORD_TTL": "0"}, "DNS_RECORD_TTL:",
                        args=("check", "--config", conf))
    r = run(["check", "--config", conf], {"DNS_RECORD_TTL": "0"})
    check("... and the file is not blamed for it", conf not in r.stderr, r.stderr)

    bad = os.path.join(d, "bad.conf")
    with open(bad, "w") as f:
        f.write("# line 1\nKAFKA_TOPIC=cloudstack\nthis is not a setting\n")
    expect_config_error("a line that is not NAME=value is named by file:line", {}, f"{bad}:3:",
                        args=("check", "--config", bad))
    for line in ("MYSQL_PDNS_PASSWORD hunter2", "export MYSQL_PDNS_PASSWORD=hunter2"):
        with open(bad, "w") as f:
            f.write(f"KAFKA_TOPIC=cloudstack\n{line}\n")
        r = run(["check", "--config", bad], GOOD)
        check(f"a malformed line ({line.split()[0]} ...) is named by file:line, never echoed",
              r.returncode == 2 and f"{bad}:2:" in r.stderr and "hunter2" not in r.stderr,
              r.stderr)
    with open(bad, "w") as f:
        f.write("KAFKA_TOPIC=cloudstack\nDNS_RECORD_TTL=sixty\n")
    for cmd in (["check"], ["run"], ["resync", "--dry-run"], ["plan", "--event", "-"],
                ["adopt-cs-mapping"]):
        expect_config_error(f"{cmd[0]} --config: a bad value from the file is named by file:line",
                            GOOD, f"{bad}:2: DNS_RECORD_TTL", args=cmd + ["--config", bad])
    with open(bad, "w") as f:
        f.write("KAFKA_BOOTSTRAPS=127.0.0.1:1\n")
    expect_config_error("a misspelt setting in the file is refused", GOOD,
                        f"{bad}:1: KAFKA_BOOTSTRAPS is not a cs-pdns setting",
                        args=("check", "--config", bad))
    expect_config_error("a missing config file is named", GOOD, os.path.join(d, "nope.conf"),
                        args=("check", "--config", os.path.join(d, "nope.conf")))
    expect_config_error("--config without a file", GOOD, "--config", args=("check", "--config"))
    expect_config_error("--config twice", GOOD, "twice",
                        args=("check", "--config", conf, "--config", conf))
    partial = os.path.join(d, "partial.conf")
    with open(partial, "w") as f:
        f.write("KAFKA_TOPIC=cloudstack\n")
    expect_config_error("a setting in neither is named with the file", {}, partial,
                        args=("check", "--config", partial))

    secret = os.path.join(d, "secret")
    with open(secret, "w") as f:
        f.write("from-a-file\n")
    with open(conf, "a") as f:
        f.write(f"MYSQL_PDNS_PASSWORD_FILE={secret}\n")
    r = run(["check", "--config", conf], {})
    check("a *_FILE secret works from the config file", r.returncode == 0, r.stderr)
    with open(conf, "a") as f:
        f.write(f"CS_API_KEY_FILE={secret}\n")
    expect_config_error("a secret and its _FILE both in the file are refused", {},
                        f"{conf}:7: CS_API_KEY: set only one", args=("check", "--config", conf))
    r = run(["check", "--config", conf], {"CS_API_KEY_FILE": os.path.join(d, "missing")})
    check("the environment's NAME_FILE wins over the file's NAME and NAME_FILE",
          r.returncode == 2 and "CS_API_KEY_FILE: cannot read" in r.stderr
          and conf not in r.stderr, r.stderr)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
