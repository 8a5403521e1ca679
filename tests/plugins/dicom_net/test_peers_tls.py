"""HTTPS peers: ``HttpsVerifyPeers``, ``HttpsCACertificates`` and the client certificate
(``CertificateFile``, ``CertificateKeyFile``, ``CertificateKeyPassword``), against a TLS
stand-in on loopback with certificates made by ``openssl``."""
from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest
import requests

from peers_helpers import make_study, start_standin, upload


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate whose key has a password."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=peers-test-ca", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "san.cnf", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-passout", "pass:kpw", "-keyout", "client.key", "-out", "client.csr",
             "-subj", "/CN=pacsbox-client", cwd=d)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "client.pem", "-days", "2", cwd=d)
    return d


@pytest.fixture
def tls_standin(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    ctx.load_verify_locations(pki / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED          # a client certificate is required
    st = start_standin(ctx)
    yield st
    st.server.shutdown()


def test_https_peer_with_ca_and_client_certificate(node, pki, tls_standin):
    peer = {"Url": tls_standin.url, "CertificateFile": str(pki / "client.pem"),
            "CertificateKeyFile": str(pki / "client.key"), "CertificateKeyPassword": "kpw"}
    n = node({"DicomServerEnabled": False, "HttpsCACertificates": str(pki / "ca.pem"),
              "OrthancPeers": {"tls": peer, "nocert": [tls_standin.url]}})
    r = requests.get(n.url + "/peers/tls/system")
    assert r.status_code == 200, r.text
    assert tls_standin.received[-1]["client_cert"] == {"commonName": "pacsbox-client"}
    iid = upload(n.url, make_study(1, "TLS"))[0]["ID"]
    r = requests.post(n.url + "/peers/tls/store", json={"Resources": [iid], "Compress": True})
    assert r.status_code == 200 and r.json()["FailedInstancesCount"] == 0, r.text
    assert r.json()["Peer"]["CertificateFile"] == str(pki / "client.pem")
    conf = requests.get(n.url + "/peers/tls/configuration").json()
    assert conf["CertificateKeyFile"] is None and conf["CertificateKeyPassword"] is None
    # without a client certificate the handshake is refused
    r = requests.get(n.url + "/peers/nocert/system")
    assert r.status_code == 500 and r.json()["OrthancStatus"] == 9


def test_https_verification(node, pki, tls_standin):
    peer = {"Url": tls_standin.url, "CertificateFile": str(pki / "client.pem"),
            "CertificateKeyFile": str(pki / "client.key"), "CertificateKeyPassword": "kpw"}
    # the server's CA is unknown: refused...
    n = node({"DicomServerEnabled": False, "OrthancPeers": {"tls": peer}})
    r = requests.get(n.url + "/peers/tls/system")
    assert r.status_code == 500 and r.json()["Details"].startswith("libCURL error: SSL"), r.text
    # ...unless HttpsVerifyPeers is false
    n2 = node({"DicomServerEnabled": False, "HttpsVerifyPeers": False, "OrthancPeers": {"tls": peer}})
    assert requests.get(n2.url + "/peers/tls/system").status_code == 200
