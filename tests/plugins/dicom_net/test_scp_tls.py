"""DICOM TLS on the SCP (``DicomTlsEnabled``): dcmtk's echoscu/storescu with a client
certificate signed by the trusted CA succeed; without one, or with an untrusted one, the
association fails."""
from __future__ import annotations

import datetime

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from scp_helpers import run_dcmtk, sample


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(subject_key, cn, issuer_key=None, issuer_name=None, ca=False):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return builder.sign(issuer_key or subject_key, hashes.SHA256())


def _write(path, key=None, cert=None):
    if key is not None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    else:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


@pytest.fixture
def pki(tmp_path):
    """A CA, a server and a client certificate signed by it, and a stranger's self-signed
    certificate; returns a dict of file paths."""
    ca_key = _key()
    ca = _cert(ca_key, "pacsbox test CA", ca=True)
    out = {"ca": _write(tmp_path / "ca.crt", cert=ca)}
    for who in ("server", "client"):
        k = _key()
        c = _cert(k, who, issuer_key=ca_key, issuer_name=ca.subject)
        out[who + "_key"] = _write(tmp_path / f"{who}.key", key=k)
        out[who + "_crt"] = _write(tmp_path / f"{who}.crt", cert=c)
    k = _key()
    out["stranger_key"] = _write(tmp_path / "stranger.key", key=k)
    out["stranger_crt"] = _write(tmp_path / "stranger.crt", cert=_cert(k, "stranger"))
    return out


@pytest.fixture
def tls_node(node, pki):
    return node({"DicomTlsEnabled": True, "DicomTlsCertificate": pki["server_crt"],
                 "DicomTlsPrivateKey": pki["server_key"], "DicomTlsTrustedCertificates": pki["ca"]})


def test_echo_and_store_over_tls_with_a_trusted_client(tls_node, pki):
    n = tls_node
    tls = ["+tls", pki["client_key"], pki["client_crt"], "+cf", pki["ca"]]
    r = run_dcmtk("echoscu", "-v", *tls, "-aec", "PACSBOX", "127.0.0.1", str(n.dicom_port), timeout=30)
    assert r.returncode == 0, r.stderr
    assert "Received Echo Response (Success)" in r.stderr
    r = run_dcmtk("storescu", *tls, "-aec", "PACSBOX", "127.0.0.1", str(n.dicom_port), sample("CT_small.dcm"),
                  timeout=30)
    assert r.returncode == 0, r.stderr
    assert len(requests.get(n.url + "/instances", timeout=10).json()) == 1


def test_tls_refuses_clients_without_a_trusted_certificate(tls_node, pki):
    n = tls_node
    # no client certificate (anonymous TLS)
    r = run_dcmtk("echoscu", "+tla", "+cf", pki["ca"], "127.0.0.1", str(n.dicom_port), timeout=30)
    assert r.returncode != 0
    # a certificate no trusted CA signed
    r = run_dcmtk("echoscu", "+tls", pki["stranger_key"], pki["stranger_crt"], "+cf", pki["ca"], "127.0.0.1",
                  str(n.dicom_port), timeout=30)
    assert r.returncode != 0
    # plain TCP on a TLS port
    r = run_dcmtk("echoscu", "127.0.0.1", str(n.dicom_port), timeout=30)
    assert r.returncode != 0
    # the server still serves a trusted client afterwards
    r = run_dcmtk("echoscu", "+tls", pki["client_key"], pki["client_crt"], "+cf", pki["ca"], "127.0.0.1",
                  str(n.dicom_port), timeout=30)
    assert r.returncode == 0, r.stderr


def test_a_silent_peer_does_not_block_the_tls_server(tls_node, pki):
    import socket
    n = tls_node
    silent = socket.create_connection(("127.0.0.1", n.dicom_port))
    try:
        r = run_dcmtk("echoscu", "+tls", pki["client_key"], pki["client_crt"], "+cf", pki["ca"], "127.0.0.1",
                      str(n.dicom_port), timeout=10)
        assert r.returncode == 0, r.stderr
    finally:
        silent.close()
