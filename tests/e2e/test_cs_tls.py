#!/usr/bin/env python3
"""test_cs_tls.py -- the CloudStack API over HTTPS: verified by default, CS_CA_FILE, CS_VERIFY_TLS.

The simulator serves HTTPS with a certificate from a CA made for this run (openssl). With default
settings cs-pdns must refuse it (the event waits, its error names CS_CA_FILE, nothing is written);
with CS_CA_FILE naming that CA the same event is applied; with CS_VERIFY_TLS=false a new event is
applied and a warning logged. Must not: trust the CA anywhere but through cs-pdns's settings.
"""
import os
import subprocess
import sys

from harness import Results, Stack, eq, wait_until
from world import World

st = Stack("cstls")
w = World(st, 41)
r = Results()
tls = {}


def fqdn(name):
    return f"{name}.{w.acme_zone}"


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=st.workdir,
                   timeout=60)


def make_certs():
    d = st.workdir
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=cs-pdns test CA", "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
            "server.key", "-out", "server.csr")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    tls.update(cert=os.path.join(d, "server.pem"), key=os.path.join(d, "server.key"),
               ca=os.path.join(d, "ca.pem"))


def setup():
    make_certs()
    w.create_zones()
    st.start_sim("4.16", tls=(tls["cert"], tls["key"], tls["ca"]))
    assert st.endpoint.startswith("https://"), st.endpoint
    st.control("setup", w.setup_body())


def default_refuses_the_certificate():
    st.start_daemon()
    tls["vm"] = w.deploy("tls-a")
    wait_until("the refused certificate logged with what to set", lambda: st.log_has(
        rf"vm={tls['vm']}.*will retry.*certificate.*check CS_CA_FILE"), 30)
    eq(st.rows(fqdn("tls-a")), [], "records written although the certificate was refused")
    assert not st.log_has(r"CS_VERIFY_TLS=false: the CloudStack server's certificate is not"), \
        "a warning about CS_VERIFY_TLS=false with the default"
    st.stop_daemon()
    eq(st.rows(fqdn("tls-a")), [], "records written although the certificate was refused")


def ca_file_accepts_it():
    st.stop_daemon()  # left running if the previous check failed
    # The refused event was never committed: this start redelivers it and now applies it.
    st.start_daemon(CS_CA_FILE=tls["ca"])
    ip = w.default_nic(tls["vm"])["ipaddress"]
    wait_until("the VM's record with CS_CA_FILE", lambda: st.dig(fqdn("tls-a")) == [ip], 30)
    assert not st.log_has("certificate"), "a certificate error although CS_CA_FILE trusts it"
    st.stop_daemon()


def verify_off_works_and_warns():
    st.stop_daemon()  # left running if the previous check failed
    st.start_daemon(CS_VERIFY_TLS="false")
    assert st.log_has(r"level=warn mod=cloudstack .*CS_VERIFY_TLS=false"), "no warning logged"
    vm = w.deploy("tls-b")
    ip = w.default_nic(vm)["ipaddress"]
    wait_until("the VM's record with CS_VERIFY_TLS=false", lambda: st.dig(fqdn("tls-b")) == [ip],
               30)
    st.stop_daemon()


try:
    r.check("setup: a CA for the run, the simulator over HTTPS", setup)
    r.check("default settings refuse the certificate: logged, names CS_CA_FILE, nothing written",
            default_refuses_the_certificate)
    r.check("CS_CA_FILE trusts the CA: the waiting event is applied", ca_file_accepts_it)
    r.check("CS_VERIFY_TLS=false: applied, with a warning", verify_off_works_and_warns)
finally:
    if r.failed:
        st.dump_logs()
    st.close()
sys.exit(r.finish())
