"""Query SCU side by side with Orthanc 1.10.1: both servers query the same scripted
remote; every answer, error, status code and the identifier the remote received must be
the same (IDs aside)."""
from __future__ import annotations

import json
import re

import pytest
import requests

from qr_helpers import canned_answers, start_scripted_qr
from pacsbox.testing import free_port


@pytest.fixture
def remote():
    qr = start_scripted_qr("REMOTE")
    canned = canned_answers(2)

    def answers(ident):
        # PatientID "FAIL" makes the remote answer a failure status after one answer
        if str(ident.get("PatientID", "")) == "FAIL":
            return canned(ident)[:1] + [0xA700]
        return canned(ident)

    qr.find_answers = answers
    yield qr
    qr.stop()


def modalities(port):
    return {"remote": ["REMOTE", "127.0.0.1", port], "ge": ["REMOTE", "127.0.0.1", port, "GE"],
            "nwd": ["REMOTE", "127.0.0.1", port, "GenericNoWildcardInDates"],
            "nuw": ["REMOTE", "127.0.0.1", port, "GenericNoUniversalWildcard"],
            "closed": ["CLOSED", "127.0.0.1", free_port()],
            "wrongaet": ["NOTREMOTE", "127.0.0.1", port]}


@pytest.fixture
def pair(remote, node, orthanc):
    cfg = {"DicomModalities": modalities(remote.port), "QueryRetrieveSize": 3, "DicomScuTimeout": 5}
    ref = orthanc(dict(cfg))
    ours = node(dict(cfg))
    return ref.url, ours.url


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def drop_meta(body):
    """Orthanc 1.10.1 shows (0002,0003) in instance-level answers (its answers are kept as
    files whose meta header copies SOPInstanceUID); pacsbox does not."""
    if isinstance(body, list):
        return [drop_meta(b) for b in body]
    if isinstance(body, dict):
        return {k: drop_meta(v) for k, v in body.items()
                if k not in ("MediaStorageSOPInstanceUID", "0002,0003")}
    return body


def comparable(r):
    """Status, content type family and a body with query IDs masked."""
    ctype = (r.headers.get("content-type") or "").split(";")[0]
    if not r.content:
        return r.status_code, None
    if ctype == "application/json" or r.content[:1] in (b"{", b"["):
        body = r.json()
        if isinstance(body, dict) and "HttpStatus" in body:
            body = {k: body.get(k) for k in ("HttpStatus", "OrthancStatus", "Details", "Method")}
        if isinstance(body, dict) and "Path" in body and "ID" in body:
            body = {"ID": "<id>", "Path": body["Path"].rsplit("/", 1)[0]}
        return r.status_code, drop_meta(body)
    return r.status_code, r.text


#: (method, path, body or raw text); ``{q}`` is the path of the last query created.
SCRIPT = [
    ("POST", "/modalities/remote/query", {"Level": "Study", "Query": {
        "PatientName": "D*", "StudyDate": "*", "ModalitiesInStudy": "CT", "SeriesDescription": "x",
        "0008,0005": "ISO_IR 192"}}),
    ("POST", "/modalities/ge/query", {"Level": "Instance", "Query": {"StudyDate": "*", "PatientName": "*"}}),
    ("POST", "/modalities/nwd/query", {"Level": "Series", "Query": {"StudyDate": "*", "PatientName": "*"}}),
    ("POST", "/modalities/nuw/query", {"Level": "Patient", "Query": {"StudyDate": "*", "PatientName": "*",
                                                                   "PatientID": ""}}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "Normalize": False,
                                          "Query": {"SeriesDescription": "x", "SeriesNumber": "3"}}),
    ("POST", "/modalities/remote/query", {"Query": {}}),
    ("POST", "/modalities/remote/query", {"Level": "Foo"}),
    ("POST", "/modalities/remote/query", {"Level": "studies"}),
    ("POST", "/modalities/remote/query", {"Level": "IMAGE"}),
    ("POST", "/modalities/remote/query", {"Level": 3}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "Query": {"Foo": "x"}}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "Query": {"PatientName": 3}}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "Query": []}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "Normalize": "yes"}),
    ("POST", "/modalities/remote/query", "garbage"),
    ("POST", "/modalities/remote/query", "[]"),
    ("POST", "/modalities/nonexist/query", {"Level": "Study"}),
    ("POST", "/modalities/closed/query", {"Level": "Study"}),
    ("POST", "/modalities/wrongaet/query", {"Level": "Study"}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "LocalAet": "MYAET", "Timeout": 2}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "Timeout": "5"}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "Timeout": -1}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "Timeout": 1.5}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "LocalAet": 5}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "LocalAet": ""}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "Query": {"PatientID": "P*"}}),
    ("GET", "{q}", None),
    ("GET", "{q}/answers", None),
    ("GET", "{q}/answers?expand", None),
    ("GET", "{q}/answers?expand&simplify", None),
    ("GET", "{q}/answers?expand&short", None),
    ("GET", "{q}/answers?simplify", None),
    ("GET", "{q}/answers/0", None),
    ("GET", "{q}/answers/5", None),
    ("GET", "{q}/answers/x", None),
    ("GET", "{q}/answers/0/content", None),
    ("GET", "{q}/answers/0/content?simplify", None),
    ("GET", "{q}/answers/0/content?short", None),
    ("GET", "{q}/answers/7/content", None),
    ("GET", "{q}/answers/-1/content", None),
    ("GET", "{q}/level", None),
    ("GET", "{q}/modality", None),
    ("GET", "{q}/query", None),
    ("GET", "{q}/query?simplify", None),
    ("GET", "{q}/query?short", None),
    ("POST", "{q}/answers/0/query-studies", {}),
    ("POST", "{q}/answers/9/query-series", {}),
    ("POST", "{q}/answers/0/query-series", "garbage"),
    ("POST", "{q}/answers/0/query-series", ""),
    ("POST", "{q}/answers/0/query-series", {}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "Query": {"PatientID": "P*"}}),
    ("POST", "{q}/answers/0/query-instances", {"Query": {"InstanceNumber": "1"}}),
    ("POST", "/modalities/remote/query", {"Level": "Patient"}),
    ("GET", "{q}/answers/0", None),
    ("POST", "{q}/answers/0/query-studies", {}),
    ("POST", "/modalities/remote/query", {"Level": "Patient"}),
    ("POST", "{q}/answers/1/query-series", {"Query": {"Modality": "MR"}}),
    ("POST", "/modalities/remote/query", {"Level": "Series"}),
    ("GET", "{q}/answers/0", None),
    ("POST", "/modalities/remote/query", {"Level": "Instance"}),
    ("GET", "{q}/answers/0", None),
    ("GET", "{q}/answers/1/content?simplify", None),
    ("DELETE", "{q}", None),
    ("DELETE", "{q}", None),
    ("GET", "{q}", None),
    ("GET", "/queries/nonexist", None),
    ("GET", "/queries/nonexist/answers", None),
    ("GET", "/modalities/remote/query", None),
    ("GET", "/queries/x/retrieve", None),
    ("POST", "/modalities/remote/find-patient", {"PatientName": "D*"}),
    ("POST", "/modalities/remote/find-study", {"PatientID": "P1"}),
    ("POST", "/modalities/remote/find-study", {"PatientID": "P12"}),
    ("POST", "/modalities/remote/find-series", {"PatientID": "P12", "StudyInstanceUID": "1.2"}),
    ("POST", "/modalities/remote/find-series", {"PatientID": "P12", "StudyInstanceUID": "1.2.3"}),
    ("POST", "/modalities/remote/find-instance", {"PatientID": "P12", "StudyInstanceUID": "1.2.3",
                                                  "SeriesInstanceUID": "1.2.3.4"}),
    ("POST", "/modalities/remote/find-patient", "garbage"),
    ("POST", "/modalities/remote/find-patient", "[]"),
    ("POST", "/modalities/remote/find", {"PatientName": "D*"}),
    ("POST", "/modalities/remote/find-worklist", {"PatientName": "D*"}),
    ("POST", "/modalities/remote/find-worklist", {"Query": {"PatientName": "D*"}, "Short": True}),
    ("POST", "/modalities/remote/find-worklist", {"Query": {"PatientName": "D*"}, "Full": True}),
    ("POST", "/modalities/remote/find-worklist", "garbage"),
    ("POST", "/modalities/remote/find-worklist", {"Query": {
        "PatientName": "", "AccessionNumber": "",
        "ScheduledProcedureStepSequence": [{"Modality": "CT", "ScheduledStationAETitle": "",
                                            "ScheduledProcedureStepStartDate": "20240101-"}]}}),
    ("POST", "/modalities/remote/query", {"Level": "Study", "Query": {"PatientID": "FAIL"}}),
    ("POST", "/modalities/remote/find-patient", {"PatientID": "FAIL"}),
]


def run(url, remote):
    out = []
    q = None
    for method, path, body in SCRIPT:
        path = path.replace("{q}", q or "/queries/none")
        data = body if isinstance(body, str) else (json.dumps(body) if body is not None else None)
        del remote.log[:]
        r = requests.request(method, url + path, data=data, timeout=30)
        if r.status_code == 200 and path.endswith("query") and method == "POST":
            q = r.json()["Path"]
        elif r.status_code == 200 and "/query-" in path:
            q = r.json()["Path"]
        # Orthanc 1.10.1 also sends (0002,0003) in instance-level identifiers (same cause)
        sent = [entry[:-1] + ([e for e in entry[-1] if not e[0].startswith("0002,")],) for entry in remote.log]
        out.append(((method, UUID.sub("{q}", path), body), comparable(r), sent))
    ids = requests.get(url + "/queries").json()
    out.append(("queries kept", len(ids)))
    return out


def test_query_routes_as_orthanc(pair, remote):
    ref_url, our_url = pair
    ref = run(ref_url, remote)
    ours = run(our_url, remote)
    diffs = []
    for a, b in zip(ref, ours):
        if a != b:
            diffs.append(f"{a[0]}\n  reference: {a[1:]}\n  pacsbox:   {b[1:]}")
    assert not diffs, "\n".join(diffs)
