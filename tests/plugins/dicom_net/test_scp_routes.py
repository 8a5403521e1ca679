"""The SCP's routes (``/tools/accepted-transfer-syntaxes``,
``/tools/unknown-sop-class-accepted``, ``/tools/dicom-conformance``), answered as a real
Orthanc 1.10.1 answers them, and the SCP's bind address."""
from __future__ import annotations

import re

import pytest
import requests

import pacsbox_dicom_net.scp as scp

#: (method, path, body, content type): sent in order to both servers.
CALLS = [
    ("GET", "/tools/accepted-transfer-syntaxes", None, None),
    ("PUT", "/tools/accepted-transfer-syntaxes", '["1.2.840.10008.1.2", "1.2.840.10008.1.2.4.5?"]', None),
    ("GET", "/tools/accepted-transfer-syntaxes", None, None),
    ("PUT", "/tools/accepted-transfer-syntaxes", '"1.2.840.10008.1.2.4.9*"', None),
    ("PUT", "/tools/accepted-transfer-syntaxes", "1.2.840.10008.1.2.?", "text/plain"),
    ("PUT", "/tools/accepted-transfer-syntaxes", "1.2.840.10008.1.2", "text/plain"),
    ("PUT", "/tools/accepted-transfer-syntaxes", "[1]", None),
    ("PUT", "/tools/accepted-transfer-syntaxes", "nothing.matches", "text/plain"),
    ("GET", "/tools/accepted-transfer-syntaxes", None, None),
    ("PUT", "/tools/accepted-transfer-syntaxes", "*", None),
    ("GET", "/tools/unknown-sop-class-accepted", None, None),
    ("PUT", "/tools/unknown-sop-class-accepted", "1", None),
    ("GET", "/tools/unknown-sop-class-accepted", None, None),
    ("PUT", "/tools/unknown-sop-class-accepted", " false\n", None),
    ("GET", "/tools/unknown-sop-class-accepted", None, None),
    ("PUT", "/tools/unknown-sop-class-accepted", "yes", None),
    ("PUT", "/tools/unknown-sop-class-accepted", "TRUE", None),
    ("GET", "/tools/unknown-sop-class-accepted", None, None),
]


def _answer(base, method, path, body, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    r = requests.request(method, base + path, data=body, headers=headers, timeout=10)
    if r.status_code >= 400:  # errors: the core renders them; compare the Orthanc status
        return r.status_code, r.json()["OrthancStatus"], r.json()["Message"]
    ct = r.headers.get("Content-Type", "").split(";")[0]
    if ct == "application/json":
        content = r.json()
        if isinstance(content, dict):
            content = {k: v for k, v in content.items() if k in ("HttpStatus", "OrthancStatus", "Message")}
    else:
        content = r.text
    return r.status_code, ct if r.text else "", content


def test_routes_answer_as_orthanc(node, orthanc):
    n = node()
    ref = orthanc()
    for method, path, body, ctype in CALLS:
        theirs = _answer(ref.url, method, path, body, ctype)
        ours = _answer(n.url, method, path, body, ctype)
        assert ours == theirs, (method, path, body)


def test_default_accepted_transfer_syntaxes_are_orthanc_s_42(node):
    n = node()
    got = requests.get(n.url + "/tools/accepted-transfer-syntaxes", timeout=10).json()
    assert len(got) == 42 and got[:4] == ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
                                          "1.2.840.10008.1.2.2"]


def test_dicom_conformance_follows_the_state(node):
    n = node()
    text = requests.get(n.url + "/tools/dicom-conformance", timeout=10).text
    assert "VerificationSOPClass" in text or "Verification" in text
    assert re.search(r"CTImageStorage +\| 1\.2\.840\.10008\.5\.1\.4\.1\.1\.2\n", text)
    assert "1.2.840.10008.5.1.4.31" not in text   # no worklist provider
    assert "1.2.840.10008.1.2.4.50" in text
    requests.put(n.url + "/tools/accepted-transfer-syntaxes", json="1.2.840.10008.1.2", timeout=10)
    text = requests.get(n.url + "/tools/dicom-conformance", timeout=10).text
    assert "1.2.840.10008.1.2.4.50" not in text
    assert re.search(r"ImplicitVRLittleEndian +\| 1\.2\.840\.10008\.1\.2(\n|$)", text)


@pytest.mark.parametrize("config,expected", [
    ({}, "127.0.0.1"),
    ({"RemoteAccessAllowed": True}, "0.0.0.0"),
    ({"RemoteAccessAllowed": True, "HttpBindAddress": "127.0.0.1"}, "127.0.0.1"),
    ({"HttpBindAddress": "127.0.0.2"}, "127.0.0.2"),
    ({"DicomBindAddress": "127.0.0.3", "RemoteAccessAllowed": True}, "127.0.0.3"),
])
def test_bind_address(pacsbox_make_app, config, expected):
    import pacsbox_dicom_net.plugin as dicom_net_plugin
    app = pacsbox_make_app({"DicomServerEnabled": False, **config}, plugins=[dicom_net_plugin])
    assert scp.bind_address(app.ctx) == expected
