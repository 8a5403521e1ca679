"""/modalities, echo and store answered side by side by pacsbox and the real Orthanc 1.10.1:
same requests, same status codes, same JSON bodies (errors included)."""
from __future__ import annotations

import json

import pytest
import requests
from pydicom.data import get_testdata_file

from pacsbox.testing import free_port

CT = get_testdata_file("CT_small.dcm")


def _answer(r):
    try:
        body = r.json()
    except ValueError:
        body = r.content
    if isinstance(body, dict):
        body.pop("ID", None), body.pop("Path", None)  # job IDs differ
    return r.status_code, body


@pytest.fixture
def pair(node, orthanc, storage_scp):
    scp = storage_scp("STORESCP")
    closed = free_port()
    mods = {"short": ["SHORTAET", "127.0.0.1", closed],
            "long": {"AET": "LONGAET", "Host": "127.0.0.1", "Port": str(closed), "AllowEcho": False,
                     "Manufacturer": "GE", "Timeout": 3},
            "scp": ["STORESCP", "127.0.0.1", scp.port]}
    cfg = {"DicomAet": "REFAET", "DicomModalities": mods, "DicomScuTimeout": 3}
    ref = orthanc(cfg)
    ours = node(cfg)
    with open(CT, "rb") as f:
        data = f.read()
    ids = []
    for url in (ref.url, ours.url):
        r = requests.post(url + "/instances", data=data)
        assert r.status_code == 200
        ids.append(r.json())
    assert ids[0]["ID"] == ids[1]["ID"]
    return ref.url, ours.url, ids[0], scp, closed


def _both(ref, ours, method, path, data=None):
    a = requests.request(method, ref + path, data=data, timeout=30)
    b = requests.request(method, ours + path, data=data, timeout=30)
    return a, b


def test_modalities_routes_as_orthanc(pair):
    ref, ours, inst, scp, closed = pair
    study = inst["ParentStudy"]
    cases = [
        ("GET", "/modalities", None), ("GET", "/modalities?expand", None), ("GET", "/modalities/short", None),
        ("GET", "/modalities/nonexist", None), ("GET", "/modalities/long/configuration", None),
        ("GET", "/modalities/nonexist/configuration", None), ("DELETE", "/modalities/nonexist", None),
        ("PUT", "/modalities/new1", json.dumps(["NEW1", "127.0.0.1", closed])),
        ("PUT", "/modalities/new2", json.dumps({"AET": "NEW2", "Host": "127.0.0.1", "Port": 104, "Timeout": 2,
                                                "AllowStore": False, "AllowStorageCommitment": False})),
        ("PUT", "/modalities/new3", json.dumps({"AET": "NEW3", "Port": 104})),
        ("PUT", "/modalities/new4", "notjson"), ("PUT", "/modalities/new5", '["A"]'), ("PUT", "/modalities/new6", ""),
        ("PUT", "/modalities/new7", json.dumps({"AET": "X", "Host": "h", "Port": "abc"})),
        ("GET", "/modalities?expand", None), ("GET", "/modalities/new2/configuration", None),
        ("DELETE", "/modalities/new2", None), ("GET", "/modalities", None),
        # echo
        ("POST", "/modalities/scp/echo", "{}"), ("POST", "/modalities/scp/echo", None),
        ("POST", "/modalities/scp/echo", "[]"), ("POST", "/modalities/scp/echo", '{"Timeout": 5}'),
        ("POST", "/modalities/new1/echo", "{}"), ("POST", "/modalities/long/echo", "{}"),
        ("POST", "/modalities/nonexist/echo", "{}"), ("POST", "/modalities/scp/echo", "xx"),
        ("POST", "/modalities/scp/echo", '{"Timeout": "x"}'), ("POST", "/modalities/scp/echo", '{"CheckFind": "yes"}'),
        ("GET", "/modalities/scp/echo", None),
        ("POST", "/modalities/scp/echo", '{"CheckFind": true}'),
        ("POST", "/tools/dicom-echo", json.dumps({"AET": "STORESCP", "Host": "127.0.0.1", "Port": scp.port})),
        ("POST", "/tools/dicom-echo", json.dumps(["STORESCP", "127.0.0.1", scp.port])),
        ("POST", "/tools/dicom-echo", json.dumps({"AET": "X", "Port": scp.port})),
        ("POST", "/tools/dicom-echo", json.dumps({"AET": "X", "Host": "127.0.0.1", "Port": closed})),
        ("POST", "/tools/dicom-echo", ""),
        ("POST", "/tools/dicom-echo", json.dumps({"AET": "X", "Host": "127.0.0.1", "Port": scp.port,
                                                  "Timeout": -1})),
        # store
        ("POST", "/modalities/scp/store", inst["ID"]), ("POST", "/modalities/scp/store", f"  {study}  "),
        ("POST", "/modalities/scp/store", json.dumps(study)), ("POST", "/modalities/scp/store", json.dumps([study])),
        ("POST", "/modalities/scp/store", json.dumps({"Resources": [study], "LocalAet": "LOC",
                                                      "MoveOriginatorAet": "MOV", "MoveOriginatorID": 7})),
        ("POST", "/modalities/scp/store", json.dumps({"Resources": [study], "Timeout": 4, "Synchronous": True})),
        ("POST", "/modalities/scp/store", json.dumps({"Resources": []})),
        ("POST", "/modalities/scp/store", json.dumps({"Resources": ["nothex"]})),
        ("POST", "/modalities/scp/store", json.dumps({"Resources": ["d41d8cd9-8f00b204-e9800998-ecf8427e-00000000"]})),
        ("POST", "/modalities/scp/store", "d41d8cd9-8f00b204-e9800998-ecf8427e-00000000"),
        ("POST", "/modalities/scp/store", "{}"), ("POST", "/modalities/scp/store", '{"Resources": "x"}'),
        ("POST", "/modalities/scp/store", ""), ("POST", "/modalities/scp/store", "12"),
        ("POST", "/modalities/scp/store", "nothex"), ("POST", "/modalities/scp/store", "[5]"),
        ("POST", "/modalities/scp/store", json.dumps({"Resources": [5]})),
        ("POST", "/modalities/nonexist/store", json.dumps([study])),
        ("POST", "/modalities/new1/store", json.dumps([study])),
        ("POST", "/modalities/scp/store", json.dumps({"Resources": [study], "Timeout": "x"})),
        ("POST", "/modalities/scp/store", json.dumps({"Resources": [study], "LocalAet": 5})),
        ("POST", "/modalities/scp/store", json.dumps({"Resources": [study], "MoveOriginatorID": "x"})),
        ("POST", "/modalities/scp/store", json.dumps({"Resources": [study], "Synchronous": "x"})),
        ("POST", "/modalities/scp/store", json.dumps({"Resources": [study], "Asynchronous": True})),
    ]
    diffs = []
    for method, path, data in cases:
        a, b = _both(ref, ours, method, path, data)
        if _answer(a) != _answer(b):
            diffs.append((method, path, data, _answer(a), _answer(b)))
        if a.status_code == 200 and a.content:
            if a.headers.get("Content-Type") != b.headers.get("Content-Type"):
                diffs.append((method, path, data, a.headers.get("Content-Type"), b.headers.get("Content-Type")))
        if a.status_code == 200 and not a.content:
            assert b.content == b"" and b.headers.get("Content-Type") == a.headers.get("Content-Type"), path
    # both really sent: 6 successful synchronous stores each
    callers = [info["calling_aet"] for _, info in scp.received]
    assert callers.count("LOC") == 2 and len(callers) >= 12
    assert not diffs, "\n".join(map(repr, diffs))
