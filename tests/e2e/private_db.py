"""private_db.py -- a Stack whose cs-pdns and SQL use a PowerDNS database of its own.

A resync weighs every record cs-pdns owns in its database, so a test or benchmark of resyncs must
not share the stack's database with other test files' leftovers. Must not: touch the shared
database, or leave its own behind (close drops it).
"""
import re
import subprocess

from harness import Stack

SCHEMA = "/usr/share/pdns-backend-mysql/schema/schema.mysql.sql"


class PrivateDbStack(Stack):
    def __init__(self, name, page_size=None):
        super().__init__(name)
        self.page_size = page_size
        self.db = "pdns_" + re.sub(r"[^a-z0-9]", "_", self.tag)
        m = self.state["mysql"]
        self.root_sql(f"CREATE DATABASE {self.db}; GRANT ALL ON {self.db}.* TO "
                      f"'{m['user']}'@'127.0.0.1'")
        with open(SCHEMA) as f:
            subprocess.run(["mariadb", "--no-defaults", f"--socket={m['socket']}", "-uroot",
                            self.db], stdin=f, check=True, capture_output=True)

    def root_sql(self, query, db=None):
        m = self.state["mysql"]
        argv = ["mariadb", "--no-defaults", f"--socket={m['socket']}", "-uroot", "-N", "-B"]
        r = subprocess.run(argv + ([db] if db else []) + ["-e", query], capture_output=True,
                           text=True)
        if r.returncode:
            raise RuntimeError(f"SQL failed: {query}\n{r.stderr}")
        return [line.split("\t") for line in r.stdout.splitlines()]

    def sql(self, query):
        return self.root_sql(query, self.db)

    def daemon_env(self, drop=(), **extra):
        env = super().daemon_env(drop, **extra)
        if self.page_size:
            env.setdefault("RESYNC_PAGE_SIZE", str(self.page_size))
        env["MYSQL_PDNS_NAME"] = self.db
        return env

    def close(self):
        super().close()
        try:
            self.root_sql(f"DROP DATABASE IF EXISTS {self.db}")
        except RuntimeError as e:
            print(f"  (cleanup) {e}")
