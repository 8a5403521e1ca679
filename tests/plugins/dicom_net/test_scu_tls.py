"""DICOM TLS on the SCU side: a modality with ``UseDicomTls`` is reached over TLS (echo and
store), with the DicomTls* certificate options, against a pynetdicom TLS SCP."""
from __future__ import annotations

import datetime
import ssl

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydicom.data import get_testdata_file
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from pacsbox import read_file_meta
from pacsbox.testing import free_port


def _pair(folder, name):
    """A self-signed certificate (its own trust anchor) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, pem = folder / f"{name}.crt", folder / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return str(crt), str(pem)


@pytest.fixture
def tls_scp(tmp_path):
    server_crt, server_key = _pair(tmp_path, "server")
    client_crt, client_key = _pair(tmp_path, "client")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(server_crt, server_key)
    ctx.load_verify_locations(client_crt)
    ctx.verify_mode = ssl.CERT_REQUIRED
    received = []

    def on_store(event):
        received.append((event.request.DataSet.getvalue(), event.assoc.requestor.ae_title))
        return 0x0000

    ae = AE("TLSSCP")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax)
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, ssl_context=ctx,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    yield {"port": port, "received": received, "server_crt": server_crt, "client_crt": client_crt,
           "client_key": client_key}
    server.shutdown()


def test_echo_and_store_over_tls(node, tls_scp):
    port = tls_scp["port"]
    n = node({"DicomTlsCertificate": tls_scp["client_crt"], "DicomTlsPrivateKey": tls_scp["client_key"],
              "DicomTlsTrustedCertificates": tls_scp["server_crt"],
              "DicomModalities": {"tls": {"AET": "TLSSCP", "Host": "127.0.0.1", "Port": port, "UseDicomTls": True},
                                  "plain": {"AET": "TLSSCP", "Host": "127.0.0.1", "Port": port, "Timeout": 3}}})
    assert requests.post(n.url + "/modalities/tls/echo", data="{}").status_code == 200
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    iid = requests.post(n.url + "/instances", data=data).json()["ID"]
    r = requests.post(n.url + "/modalities/tls/store", data=iid)
    assert r.status_code == 200 and r.json()["FailedInstancesCount"] == 0
    raw, caller = tls_scp["received"][0]
    assert raw == data[read_file_meta(data).dataset_offset:] and caller == "PACSBOX"
    # without UseDicomTls the TLS server cannot be spoken to
    r = requests.post(n.url + "/modalities/plain/echo", data="{}")
    assert r.status_code == 500 and r.json()["OrthancStatus"] == 9


def test_tls_refused_when_server_not_trusted(node, tls_scp, tmp_path):
    other_crt, _ = _pair(tmp_path, "other")
    n = node({"DicomTlsCertificate": tls_scp["client_crt"], "DicomTlsPrivateKey": tls_scp["client_key"],
              "DicomTlsTrustedCertificates": other_crt,
              "DicomModalities": {"tls": {"AET": "TLSSCP", "Host": "127.0.0.1", "Port": tls_scp["port"],
                                          "UseDicomTls": True, "Timeout": 3}}})
    r = requests.post(n.url + "/modalities/tls/echo", data="{}")
    assert r.status_code == 500 and r.json()["OrthancStatus"] == 9
    assert tls_scp["received"] == []
