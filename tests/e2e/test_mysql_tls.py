#!/usr/bin/env python3
"""test_mysql_tls.py -- MYSQL_PDNS_TLS off/required/verify against a MariaDB that requires TLS.

Starts a private mariadbd (own mktemp datadir, socket and port) with a CA and a server
certificate (CN and SAN 127.0.0.1) made with openssl for this run, loads PowerDNS's schema and
creates a user that must connect with TLS (REQUIRE SSL), then runs the real cs-pdns binary
(`adopt-cs-mapping --dry-run`, which only connects, reads and writes nothing) with each setting.
A run that succeeds proves the session was encrypted: the server refuses this user otherwise,
which the "off" case shows. The server also reports the cipher of the test's own TLS session.
Must not: touch the shared stack's database, or leave its server or files behind.
"""
import os
import shutil
import subprocess
import sys
import tempfile

from harness import MYSQL_TLS_PASSWORD, Results, binary, eq
from stack import free_port, spawn, stop_pid, wait_for

SCHEMA = "/usr/share/pdns-backend-mysql/schema/schema.mysql.sql"
USER, PASSWORD, DB = "tlsuser", MYSQL_TLS_PASSWORD, "pdns"


def run(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60, **kw)


def make_pki(d):
    """A CA that signs the server certificate, and a second CA that signs nothing."""
    for ca in ("ca", "otherca"):
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN=cs-pdns test {ca}", "-keyout", f"{d}/{ca}.key", "-out",
             f"{d}/{ca}.pem"])
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr"])
    with open(f"{d}/san.ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.pem", "-CAkey",
         f"{d}/ca.key", "-CAcreateserial", "-days", "2", "-extfile", f"{d}/san.ext", "-out",
         f"{d}/server.pem"])


class TlsDb:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cstls")  # short: the socket path has a size limit
        self.pid = None
        make_pki(self.dir)
        self.port = free_port()
        self.sock = os.path.join(self.dir, "s")
        datadir = os.path.join(self.dir, "db")
        self.log = os.path.join(self.dir, "mariadb.log")
        run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"])
        d = self.dir
        proc = spawn(["mariadbd", "--no-defaults", "--user=root", f"--datadir={datadir}",
                      "--bind-address=127.0.0.1", f"--port={self.port}", f"--socket={self.sock}",
                      f"--pid-file={d}/mariadb.pid", "--skip-name-resolve",
                      f"--log-error={self.log}", "--innodb-buffer-pool-size=32M",
                      f"--ssl-ca={d}/ca.pem", f"--ssl-cert={d}/server.pem",
                      f"--ssl-key={d}/server.key"], self.log)
        self.pid = proc.pid
        wait_for("private MariaDB", lambda: subprocess.run(
            ["mariadb-admin", "--no-defaults", f"--socket={self.sock}", "-uroot", "ping"],
            capture_output=True).returncode == 0, 60, proc, self.log)
        self.root(f"CREATE DATABASE {DB}; CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY "
                  f"'{PASSWORD}' REQUIRE SSL; GRANT ALL ON {DB}.* TO '{USER}'@'127.0.0.1'")
        with open(SCHEMA) as f:
            subprocess.run(["mariadb", "--no-defaults", f"--socket={self.sock}", "-uroot", DB],
                           stdin=f, check=True, capture_output=True, timeout=60)
        # adopt-cs-mapping --dry-run reads this table (cs-powerdns-integration's) and writes nothing
        self.root("CREATE TABLE cs_mapping (uuid VARCHAR(64), record VARCHAR(255), "
                  "ipaddress VARCHAR(64))", DB)

    def root(self, sql, db=None):
        argv = ["mariadb", "--no-defaults", f"--socket={self.sock}", "-uroot", "-N", "-B"]
        return run(argv + ([db] if db else []) + ["-e", sql]).stdout

    def close(self):
        stop_pid(self.pid, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def cs_pdns(db, tls, ca=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL_PDNS")}
    env.update(MYSQL_PDNS_HOST="127.0.0.1", MYSQL_PDNS_PORT=str(db.port), MYSQL_PDNS_NAME=DB,
               MYSQL_PDNS_USER=USER, MYSQL_PDNS_PASSWORD=PASSWORD, MYSQL_PDNS_TLS=tls)
    if ca:
        env["MYSQL_PDNS_TLS_CA"] = ca
    p = subprocess.run([binary(), "adopt-cs-mapping", "--dry-run"], env=env, capture_output=True,
                       text=True, timeout=60)
    out = p.stdout + p.stderr
    print("    " + out.strip().replace("\n", "\n    ")[:600])
    if PASSWORD in out:
        raise AssertionError("the database password appeared in cs-pdns's output")
    return p.returncode, out


def main():
    db = TlsDb()
    r = Results()
    try:
        def server_has_tls():
            have = db.root("SHOW GLOBAL VARIABLES LIKE 'have_ssl'").split()
            eq(have[-1], "YES", "have_ssl")
            # The test's own TLS session, for comparison: the server names its cipher.
            cipher = run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{db.port}", f"-u{USER}",
                          f"-p{PASSWORD}", "--ssl", f"--ssl-ca={db.dir}/ca.pem", "-N", "-B",
                          "-e", "SHOW SESSION STATUS LIKE 'Ssl_cipher'"]).stdout.split()
            assert len(cipher) == 2 and cipher[1], cipher

        def tls_off_refused():
            rc, out = cs_pdns(db, "off")
            assert rc != 0, "a plain connection was accepted by a REQUIRE SSL user"
            assert "Access denied" in out and "errno 1045" in out, out
            assert "MYSQL_PDNS_TLS" in out, "the error does not point at MYSQL_PDNS_TLS"

        def tls_required_works():
            rc, out = cs_pdns(db, "required")
            eq(rc, 0, "exit status with MYSQL_PDNS_TLS=required")

        def tls_verify_right_ca_works():
            rc, out = cs_pdns(db, "verify", f"{db.dir}/ca.pem")
            eq(rc, 0, "exit status with MYSQL_PDNS_TLS=verify and the right CA")

        def tls_verify_wrong_ca_refused():
            rc, out = cs_pdns(db, "verify", f"{db.dir}/otherca.pem")
            assert rc != 0, "a certificate from another CA was accepted"
            assert "MYSQL_PDNS_TLS_CA" in out, out
            # Permanent: refused at once, not retried forever as an outage would be.
            assert "errno 2026" in out, out

        r.check("the private server offers TLS", server_has_tls)
        r.check("MYSQL_PDNS_TLS=off: refused by a REQUIRE SSL account, error names "
                "MYSQL_PDNS_TLS", tls_off_refused)
        r.check("MYSQL_PDNS_TLS=required: connects (encrypted: the account takes nothing else)",
                tls_required_works)
        r.check("MYSQL_PDNS_TLS=verify with the signing CA: connects", tls_verify_right_ca_works)
        r.check("MYSQL_PDNS_TLS=verify with another CA: refused, naming MYSQL_PDNS_TLS_CA",
                tls_verify_wrong_ca_refused)
    finally:
        db.close()
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
