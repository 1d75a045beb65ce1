#!/usr/bin/env python3
"""quickstart.py -- a guided run of cs-pdns on a local stack (called by quickstart.sh).

Starts the services with tests/e2e/stack.py, plays CloudStack with the simulator (signed API calls
that publish CloudStack's own Kafka events), runs build/cs-pdns, and shows PowerDNS answering.
Must not: touch anything outside its own temporary directory and build/quickstart.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
STATE = os.path.join(BUILD, "quickstart-stack.json")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))


def say(text):
    print(f"\n== {text}", flush=True)


def main():
    keep = "--keep" in sys.argv[1:]
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "e2e", "stack.py"), "down",
                    "--state", STATE], check=False, capture_output=True)
    say("starting MariaDB (PowerDNS schema), PowerDNS (gmysql) and a Kafka broker")
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "e2e", "stack.py"), "up",
                    "--state", STATE, "--kafka-mock", os.path.join(BUILD, "tests", "kafka-mock")],
                   check=True)
    os.environ["CSPDNS_STACK_STATE"] = STATE
    os.environ["CSPDNS_BIN"] = os.path.join(BUILD, "cs-pdns")
    from harness import Stack, wait_until
    from world import World

    st = Stack("demo")
    try:
        w = World(st, 1)
        say("creating the zones cs-pdns writes into (an operator does this once)")
        w.create_zones()
        for zone in (w.acme_zone, w.cust_zone, w.rev16, w.rev24, w.rev6):
            print(f"   zone {zone}")
        say("starting the CloudStack simulator (signed API, publishes events to Kafka)")
        st.start_sim("4.16")
        st.control("setup", w.setup_body())
        print(f"   API {st.endpoint}, topic {st.topic}")
        say("starting cs-pdns run")
        st.start_daemon(LOG_LEVEL="info")
        print(f"   log: {st.daemon_log}")

        say("deploying VMs through the CloudStack API")
        web1 = w.deploy("web-01", group="www")
        web2 = w.deploy("web-02", group="www")
        db1 = w.deploy("db-01", account="beta")
        for name, vm in (("web-01", web1), ("web-02", web2), ("db-01", db1)):
            nic = w.default_nic(vm)
            print(f"   {name}: {nic['ipaddress']} {nic.get('ip6address', '')}")

        dns = st.state["dns"]
        web1_ip = w.default_nic(web1)
        wait_until("web-01 in DNS", lambda: st.dig(f"web-01.{w.acme_zone}"), 15)
        wait_until("db-01 in DNS", lambda: st.dig(f"db-01.{w.cust_zone}"), 15)
        say(f"asking PowerDNS (dig @127.0.0.1 -p {dns['port']})")
        queries = [
            [f"web-01.{w.acme_zone}", "A"],
            [f"web-01.{w.acme_zone}", "AAAA"],
            ["-x", web1_ip["ipaddress"]],
            ["-x", web1_ip["ip6address"]],
            [f"www-{w.acme_id[:8]}.{w.acme_zone}", "A"],
            [f"db-01.{w.cust_zone}", "A"],
        ]
        for q in queries:
            argv = ["dig", "+noall", "+answer", "@127.0.0.1", "-p", str(dns["port"])] + q
            print("$ " + " ".join(argv[:1] + argv[3:]))
            print(subprocess.run(argv, capture_output=True, text=True).stdout.rstrip() or
                  "   (no answer)")

        say("destroying db-01: its records go away")
        st.cs.call("destroyVirtualMachine", id=db1, expunge="true")
        wait_until("db-01 gone", lambda: not st.dig(f"db-01.{w.cust_zone}"), 15)
        argv = ["dig", "+noall", "+comments", "@127.0.0.1", "-p", str(dns["port"]),
                f"db-01.{w.cust_zone}", "A"]
        status = [ln for ln in subprocess.run(argv, capture_output=True, text=True)
                  .stdout.splitlines() if "status:" in ln]
        print("$ dig " + f"db-01.{w.cust_zone} A  ->  " + (status[0].strip() if status else "?"))

        say("what cs-pdns logged")
        for line in st.log_text().splitlines():
            if "level=info mod=pipeline" in line and "vm=" in line:
                print("   " + line)
        if keep:
            say("stack left running; stop it with: python3 tests/e2e/stack.py down --state "
                f"{STATE} (and kill cs-pdns pid {st.daemon.pid}, simulator pid "
                f"{st.sim_proc.pid})")
            return
    finally:
        if not keep:
            st.close()
            subprocess.run([sys.executable, os.path.join(ROOT, "tests", "e2e", "stack.py"),
                            "down", "--state", STATE], check=False)


if __name__ == "__main__":
    main()
