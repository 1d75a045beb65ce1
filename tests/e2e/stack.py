#!/usr/bin/env python3
"""stack.py -- starts and stops the real services the end-to-end tests and the demo run against.

MariaDB (PowerDNS schema loaded), pdns_server (gmysql, caches off) and a Kafka broker (librdkafka's
mock cluster behind tests/tools/kafka_mock.c), all on 127.0.0.1 at free ports, under one mktemp
directory. Must not: touch the machine's own MariaDB or PowerDNS configuration.

  stack.py up   --state FILE --kafka-mock PATH [--brokers N] [--pdns-caches]
  stack.py down --state FILE      (also stops pdns_servers that pdns_extra.py left running)
  stack.py env  --state FILE      (shell exports for cs-pdns and the tools)
  stack.py exec --state FILE -- COMMAND...   (runs COMMAND with those variables set)
  stack.py db-stop|db-start --state FILE   (stops MariaDB of a running stack / starts it again on
                                            the same datadir, port and socket)
  stack.py kafka-ctl --state FILE -- COMMAND...   (a kafka-mock control command, e.g.
                                            "leader TOPIC 0 2", "down 2"; prints the answer)
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SCHEMA = "/usr/share/pdns-backend-mysql/schema/schema.mysql.sql"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_tcp_port():
    """A port free for both TCP and UDP, since DNS serves both."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port for DNS")


def wait_for(what, check, timeout, proc=None, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    tail = ""
    if log and os.path.exists(log):
        with open(log, errors="replace") as f:
            tail = "".join(f.readlines()[-30:])
    raise RuntimeError(f"{what} did not come up within {timeout}s\n{tail}")


def spawn(argv, log, env=None):
    out = open(log, "ab")
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)


def mariadb_cli(state, *args, db=None, user="root"):
    argv = ["mariadb", "--no-defaults", f"--socket={state['mysql']['socket']}", f"-u{user}"]
    if db:
        argv.append(db)
    return subprocess.run(argv + list(args), check=True, capture_output=True, text=True)


def up(args):
    d = tempfile.mkdtemp(prefix="csp")
    state = {"dir": d, "pids": {}}
    try:
        start_mariadb(state)
        start_pdns(state, caches=args.pdns_caches)
        start_kafka(state, args.kafka_mock, args.brokers)
    except Exception:
        write_state(args.state, state)
        down_state(state)
        raise
    write_state(args.state, state)
    print(f"stack up in {d}: mysql 127.0.0.1:{state['mysql']['port']}, "
          f"dns 127.0.0.1:{state['dns']['port']}, kafka {state['kafka']['bootstrap']}")


def load_state_file(path):
    with open(path) as f:
        return json.load(f)


def write_state(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, path)


def start_mariadb(state):
    d = state["dir"]
    port = free_port()
    sock = os.path.join(d, "my.sock")
    datadir = os.path.join(d, "db")
    log = os.path.join(d, "mariadb.log")
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db",
                    "--skip-name-resolve"], check=True, capture_output=True)
    argv = ["mariadbd", "--no-defaults", "--user=root", f"--datadir={datadir}",
            "--bind-address=127.0.0.1", f"--port={port}", f"--socket={sock}",
            f"--pid-file={os.path.join(d, 'mariadb.pid')}", "--skip-name-resolve",
            f"--log-error={log}", "--innodb-buffer-pool-size=128M",
            "--innodb-flush-log-at-trx-commit=1", "--max-connections=500"]
    state["mysql"] = {"host": "127.0.0.1", "port": port, "socket": sock, "db": "pdns",
                      "user": "pdns", "password": "pdnspw", "server_argv": argv, "log": log}
    mariadb_spawn(state)
    mariadb_cli(state, "-e", "CREATE DATABASE pdns; "
                "CREATE USER 'pdns'@'127.0.0.1' IDENTIFIED BY 'pdnspw'; "
                "GRANT ALL ON pdns.* TO 'pdns'@'127.0.0.1'; "
                "GRANT PROCESS, CONNECTION ADMIN ON *.* TO 'pdns'@'127.0.0.1';")
    with open(SCHEMA) as f:
        subprocess.run(["mariadb", "--no-defaults", f"--socket={sock}", "-uroot", "pdns"],
                       stdin=f, check=True, capture_output=True)


def mariadb_spawn(state):
    m = state["mysql"]
    proc = spawn(m["server_argv"], m["log"])
    state["pids"]["mariadb"] = proc.pid
    wait_for("MariaDB", lambda: subprocess.run(
        ["mariadb-admin", "--no-defaults", f"--socket={m['socket']}", "-uroot", "ping"],
        capture_output=True).returncode == 0, 60, proc, m["log"])


def mariadb_stop(state):
    """Stops the stack's MariaDB (a clean shutdown: clients see the server go away)."""
    stop_pid(state["pids"].get("mariadb"), timeout=60)
    state["pids"]["mariadb"] = None


def mariadb_start(state):
    """Starts MariaDB again on the same datadir, port and socket, after mariadb_stop."""
    if state["pids"].get("mariadb") and alive(state["pids"]["mariadb"]):
        raise RuntimeError("MariaDB of this stack is still running")
    mariadb_spawn(state)


def kafka_control(state, command, timeout=30):
    """Sends one command line to the kafka-mock control socket; returns its answer after "ok",
    raises RuntimeError on "error ..."."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(state["kafka"]["control"])
        s.sendall(command.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    text = answer.decode(errors="replace").strip()
    if not text.startswith("ok"):
        raise RuntimeError(f"kafka-mock refused {command!r}: {text}")
    return text[2:].strip()


def pdns_settings(mysql, port, api_port, db=None, caches=False):
    """pdns.conf settings for a pdns_server on 127.0.0.1:port over the stack's MariaDB (database
    db, default the stack's), API on api_port with key "testkey"."""
    settings = {
        "launch": "gmysql", "gmysql-host": mysql["host"], "gmysql-port": mysql["port"],
        "gmysql-user": mysql["user"], "gmysql-password": mysql["password"],
        "gmysql-dbname": db or mysql["db"],
        "gmysql-dnssec": "yes", "local-address": "127.0.0.1", "local-port": port,
        "guardian": "no", "daemon": "no", "disable-syslog": "yes", "write-pid": "no",
        "security-poll-suffix": "", "webserver": "yes", "webserver-address": "127.0.0.1",
        "webserver-port": api_port, "webserver-allow-from": "127.0.0.1", "api": "yes",
        "api-key": "testkey", "loglevel": "4",
    }
    if not caches:
        # Tests read their writes at once: no packet, query or negative cache, no zone cache.
        settings.update({"cache-ttl": 0, "negquery-cache-ttl": 0, "query-cache-ttl": 0,
                         "zone-cache-refresh-interval": 0})
    return settings


def run_pdns(conf_dir, run_dir, settings, log):
    """Writes conf_dir/pdns.conf from settings, starts pdns_server on it and waits until it
    answers DNS; returns the process (stopped again if it never answers)."""
    os.makedirs(conf_dir, exist_ok=True)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(conf_dir, "pdns.conf"), "w") as f:
        for k, v in settings.items():
            f.write(f"{k}={v}\n")
    proc = spawn(["pdns_server", f"--config-dir={conf_dir}", f"--socket-dir={run_dir}"], log)
    port = settings["local-port"]
    try:
        wait_for("PowerDNS", lambda: subprocess.run(
            ["dig", "+short", "+time=1", "+tries=1", "@127.0.0.1", "-p", str(port), "id.server",
             "CH", "TXT"], capture_output=True).returncode == 0, 30, proc, log)
    except RuntimeError:
        stop_pid(proc.pid)
        raise
    return proc


def start_pdns(state, caches=False):
    d = state["dir"]
    conf_dir = os.path.join(d, "pdns")
    run_dir = os.path.join(d, "pdns-run")
    port, api_port = free_udp_tcp_port(), free_port()
    settings = pdns_settings(state["mysql"], port, api_port, caches=caches)
    log = os.path.join(d, "pdns.log")
    state["dns"] = {"host": "127.0.0.1", "port": port, "api_port": api_port, "api_key": "testkey",
                    "config_dir": conf_dir, "socket_dir": run_dir}
    proc = run_pdns(conf_dir, run_dir, settings, log)
    state["pids"]["pdns"] = proc.pid


def start_kafka(state, kafka_mock, brokers):
    d = state["dir"]
    bfile = os.path.join(d, "kafka.bootstrap")
    log = os.path.join(d, "kafka.log")
    control = os.path.join(d, "kafka.ctl")
    proc = spawn([kafka_mock, "-b", str(brokers), "-f", bfile, "-c", control], log)
    state["pids"]["kafka"] = proc.pid
    wait_for("Kafka mock", lambda: os.path.exists(bfile), 30, proc, log)
    with open(bfile) as f:
        state["kafka"] = {"bootstrap": f.read().strip(), "brokers": brokers, "control": control,
                          "mock": os.path.abspath(kafka_mock), "log": log}


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_pid(pid, timeout=30):
    if not pid or not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            if not alive(pid):
                return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def leftover_pids(state):
    """pdns_server processes a test started under the stack's directory (pdns_extra.py) and left
    running, e.g. because the test was killed."""
    prefix = f"--config-dir={state['dir']}/"
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a.startswith(prefix) for a in argv) and int(entry) != state["pids"].get("pdns"):
            pids.append(int(entry))
    return pids


def down_state(state):
    for pid in leftover_pids(state):
        stop_pid(pid)
    for name in ("kafka", "pdns", "mariadb"):
        stop_pid(state["pids"].get(name))
    shutil.rmtree(state["dir"], ignore_errors=True)


def down(args):
    if not os.path.exists(args.state):
        print("no stack state file; nothing to stop")
        return
    with open(args.state) as f:
        state = json.load(f)
    down_state(state)
    os.remove(args.state)
    print("stack down")


def env(args):
    with open(args.state) as f:
        s = json.load(f)
    m = s["mysql"]
    print(f"export KAFKA_BOOTSTRAP={s['kafka']['bootstrap']}")
    print(f"export MYSQL_PDNS_HOST={m['host']} MYSQL_PDNS_PORT={m['port']} "
          f"MYSQL_PDNS_NAME={m['db']} MYSQL_PDNS_USER={m['user']} "
          f"MYSQL_PDNS_PASSWORD={m['password']}")
    print(f"export DNS_PORT={s['dns']['port']} MYSQL_SOCKET={m['socket']}")


def exec_with_env(args):
    """Runs a command with the stack's coordinates in its environment (MYSQL_PDNS_*,
    KAFKA_BOOTSTRAP, DNS_PORT, DNS_API_PORT, DNS_API_KEY), for test programs that are not
    Python."""
    with open(args.state) as f:
        s = json.load(f)
    m = s["mysql"]
    env = dict(os.environ, KAFKA_BOOTSTRAP=s["kafka"]["bootstrap"], MYSQL_PDNS_HOST=m["host"],
               MYSQL_PDNS_PORT=str(m["port"]), MYSQL_PDNS_NAME=m["db"], MYSQL_PDNS_USER=m["user"],
               MYSQL_PDNS_PASSWORD=m["password"], MYSQL_SOCKET=m["socket"],
               DNS_PORT=str(s["dns"]["port"]), DNS_API_PORT=str(s["dns"]["api_port"]),
               DNS_API_KEY=s["dns"]["api_key"], CSPDNS_STACK_STATE=os.path.abspath(args.state))
    if not args.argv:
        sys.exit("exec needs a command after --")
    os.execvpe(args.argv[0], args.argv, env)


def db_stop_start(args):
    with open(args.state) as f:
        state = json.load(f)
    if args.command == "db-stop":
        mariadb_stop(state)
    else:
        mariadb_start(state)
    write_state(args.state, state)


def kafka_ctl(args):
    with open(args.state) as f:
        state = json.load(f)
    print(kafka_control(state, " ".join(args.argv)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", choices=["up", "down", "env", "exec", "db-stop", "db-start",
                                        "kafka-ctl"])
    ap.add_argument("--state", required=True)
    ap.add_argument("--kafka-mock")
    ap.add_argument("--brokers", type=int, default=1)
    ap.add_argument("--pdns-caches", action="store_true",
                    help="leave PowerDNS's caches at their defaults")
    argv = sys.argv[1:]
    rest = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1:]
    args = ap.parse_args(argv)
    args.argv = rest
    if args.command == "up":
        if not args.kafka_mock:
            ap.error("up needs --kafka-mock")
        up(args)
    elif args.command == "down":
        down(args)
    elif args.command == "exec":
        exec_with_env(args)
    elif args.command in ("db-stop", "db-start"):
        db_stop_start(args)
    elif args.command == "kafka-ctl":
        kafka_ctl(args)
    else:
        env(args)


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None)
        print(f"stack.py: {e}" + (f"\n{detail}" if detail else ""), file=sys.stderr)
        sys.exit(1)
