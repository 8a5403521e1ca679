"""Retrieve routes side by side with Orthanc 1.10.1 against the same scripted remote (which
refuses every destination with 0xA801): status codes, error codes, the C-MOVE identifiers
and destinations the remote receives. pacsbox's details add the status's meaning."""
from __future__ import annotations

import json

import pytest
import requests

from qr_helpers import canned_answers, start_scripted_qr, wait_for
from test_qr_query_reference import UUID, modalities


@pytest.fixture
def remote():
    qr = start_scripted_qr("REMOTE")
    qr.find_answers = canned_answers(2)
    yield qr
    qr.stop()


@pytest.fixture
def pair(remote, node, orthanc):
    cfg = {"DicomModalities": modalities(remote.port), "DicomScuTimeout": 5}
    return orthanc(dict(cfg, DicomAet="SELF")).url, node(dict(cfg, DicomAet="SELF")).url


SCRIPT = [
    ("POST", "/modalities/remote/query", {"Level": "Study", "Query": {"PatientID": "P*"}}),
    ("POST", "{q}/retrieve", "TARGETX"),
    ("POST", "{q}/answers/1/retrieve", {"TargetAet": "T2"}),
    ("POST", "{q}/answers/1/retrieve", None),
    ("POST", "{q}/answers/1/retrieve", {"TargetAet": 3}),
    ("POST", "{q}/answers/4/retrieve", {"TargetAet": "T2"}),
    ("POST", "{q}/answers/0/retrieve", {"TargetAet": "T2", "Timeout": "x"}),
    ("POST", "{q}/answers/0/retrieve", {"TargetAet": "T2", "Timeout": -1}),
    ("POST", "{q}/answers/0/retrieve", {"TargetAet": "T2", "Synchronous": "yes"}),
    ("POST", "{q}/answers/x/retrieve", {"TargetAet": "T2"}),
    ("POST", "/queries/nonexist/retrieve", {}),
    ("POST", "{q}/retrieve", {"TargetAet": "T2", "Asynchronous": True}),
    ("POST", "/modalities/ge/query", {"Level": "Instance"}),
    ("POST", "{q}/answers/0/retrieve", {"TargetAet": "T3"}),
    ("POST", "/modalities/remote/query", {"Level": "Patient"}),
    ("POST", "{q}/answers/0/retrieve", {"TargetAet": "T3"}),
    ("POST", "/modalities/remote/move", {"Level": "Study", "TargetAet": "T3", "Resources": [
        {"StudyInstanceUID": "1.2.3", "PatientName": "x"}, {"0020,000d": "4.5"}]}),
    ("POST", "/modalities/remote/move", {"Level": "Series", "Resources": [
        {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.5"}]}),
    ("POST", "/modalities/remote/move", {"Level": "Study", "Resources": []}),
    ("POST", "/modalities/remote/move", {"Resources": []}),
    ("POST", "/modalities/remote/move", {"Level": "Study", "Resources": [], "Timeout": "x"}),
    ("POST", "/modalities/remote/move", {"Level": "Study", "Resources": [], "LocalAet": 3}),
    ("POST", "/modalities/remote/move", {"Level": "Study", "Resources": [{"StudyInstanceUID": 3}]}),
    ("POST", "/modalities/remote/move", {"Level": "Study", "Resources": ["1.2.3"]}),
    ("POST", "/modalities/remote/move", {"Level": "Study"}),
    ("POST", "/modalities/remote/move", {"Level": "Foo", "Resources": []}),
    ("POST", "/modalities/remote/move", "garbage"),
    ("POST", "/modalities/nonexist/move", {"Level": "Study", "Resources": []}),
]


def run(url, remote):
    out = []
    q = None
    for method, path, body in SCRIPT:
        path = path.replace("{q}", q or "/queries/none")
        data = body if isinstance(body, str) else (json.dumps(body) if body is not None else None)
        del remote.log[:]
        r = requests.request(method, url + path, data=data, timeout=30)
        if r.status_code == 200 and path.endswith("/query"):
            q = r.json()["Path"]
        if r.status_code == 200 and isinstance(body, dict) and body.get("Asynchronous"):
            job = r.json()["Path"]
            wait_for(lambda: requests.get(url + job).json()["State"] in ("Success", "Failure"))
        if r.content[:1] in (b"{", b"["):
            body_out = r.json()
        else:
            body_out = r.text
        if isinstance(body_out, dict) and "HttpStatus" in body_out:
            details = body_out.get("Details")
            if details and " (" in details and "DIMSE status" in details:
                details = details.split(" (")[0]        # pacsbox adds the status's meaning
            body_out = {"OrthancStatus": body_out["OrthancStatus"], "Details": details}
        elif isinstance(body_out, dict) and "ID" in body_out:
            body_out = sorted(body_out)
        else:
            body_out = None if r.status_code == 200 else body_out
        # Orthanc 1.10.1 also sends (0002,0003) in IMAGE-level identifiers (its identifiers
        # are files whose meta header copies SOPInstanceUID); pacsbox does not
        sent = [entry[:-1] + ([e for e in entry[-1] if not e[0].startswith("0002,")],) for entry in remote.log]
        out.append(((method, UUID.sub("{q}", path), body), r.status_code, body_out, sent))
    return out


def test_retrieve_routes_as_orthanc(pair, remote):
    ref = run(pair[0], remote)
    ours = run(pair[1], remote)
    diffs = [f"{a[0]}\n  reference: {a[1:]}\n  pacsbox:   {b[1:]}" for a, b in zip(ref, ours) if a != b]
    assert not diffs, "\n".join(diffs)


def test_move_route_is_a_job(pair):
    """Orthanc 1.10.1 answers ``{}`` once moved; pacsbox runs the 1.11+ ``DicomMoveScu`` job,
    whose synchronous answer is its content."""
    r = requests.post(pair[1] + "/modalities/remote/move", json={"Level": "Study", "Resources": []})
    assert r.status_code == 200
    assert r.json() == {"Description": "REST API", "LocalAet": "SELF", "RemoteAet": "REMOTE", "Query": [],
                        "TargetAet": "SELF", "RetrieveMethod": "C-MOVE", "InstancesCount": 0,
                        "FailedInstancesCount": 0, "WarningInstancesCount": 0}
    assert requests.post(pair[0] + "/modalities/remote/move",
                         json={"Level": "Study", "Resources": []}).json() == {}
