"""Store failures answered side by side by pacsbox and Orthanc 1.10.1."""
from __future__ import annotations

import json

import requests
from pydicom.data import get_testdata_file
from pynetdicom.sop_class import CTImageStorage

MR = get_testdata_file("MR_small.dcm")


def _pair(node, orthanc, scp):
    cfg = {"DicomAet": "REFAET", "DicomModalities": {"scp": ["STORESCP", "127.0.0.1", scp.port]}, "DicomScuTimeout": 3}
    ref, ours = orthanc(cfg), node(cfg)
    ids = [requests.post(u + "/instances", data=open(MR, "rb").read()).json()["ID"] for u in (ref.url, ours.url)]
    assert ids[0] == ids[1]
    return ref.url, ours.url, ids[0]


def _answers(ref, ours, body):
    out = []
    for url in (ref, ours):
        r = requests.post(url + "/modalities/scp/store", data=json.dumps(body), timeout=30)
        out.append((r.status_code, r.json()))
    return out


def test_refused_context_and_failure_status(node, orthanc, storage_scp):
    scp = storage_scp("STORESCP", contexts=[(CTImageStorage, ["1.2.840.10008.1.2"])])
    ref, ours, iid = _pair(node, orthanc, scp)
    a, b = _answers(ref, ours, [iid])
    a2, b2 = _answers(ref, ours, {"Resources": [iid], "Permissive": True})
    assert a == b
    # Orthanc 1.10.1 counts no failed instance in a permissive run; pacsbox counts them
    assert a2[1] == dict(b2[1], FailedInstancesCount=0) and b2[1]["FailedInstancesCount"] == 1


def test_failure_status(node, orthanc, storage_scp):
    scp = storage_scp("STORESCP")
    scp.status = lambda ds: 0xA700
    ref, ours, iid = _pair(node, orthanc, scp)
    a, b = _answers(ref, ours, [iid])
    a2, b2 = _answers(ref, ours, {"Resources": [iid], "Permissive": True})
    assert a == b
    assert a2[1] == dict(b2[1], FailedInstancesCount=0) and b2[1]["FailedInstancesCount"] == 1
