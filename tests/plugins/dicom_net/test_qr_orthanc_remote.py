"""A real Orthanc 1.10.1 as the query/retrieve remote: pacsbox and a reference Orthanc
(the client) query it and retrieve from it side by side. Answers and the retrieve's
content must match the reference's; the instances arrive in pacsbox by C-MOVE (through
its SCP) and by C-GET, with the content Orthanc holds."""
from __future__ import annotations

import hashlib

import pytest
import requests

from pacsbox.testing import free_port
from qr_helpers import make_instances, wait_for

EXTRA_KEYS = {"RetrieveMethod", "TargetAet", "InstancesCount", "FailedInstancesCount", "WarningInstancesCount"}


@pytest.fixture
def nodes(node, orthanc):
    ours_port, client_port, remote_port = free_port(), free_port(), free_port()
    remote = orthanc({"DicomAet": "REMOTEORTHANC", "DicomPort": remote_port,
                      "DicomModalities": {"pacsbox": ["PACSBOX", "127.0.0.1", ours_port],
                                          "client": ["REFCLIENT", "127.0.0.1", client_port]}})
    files = make_instances(5, "ORQ1", series=2) + make_instances(2, "ORQ2", series=1)
    for f in files:
        assert requests.post(remote.url + "/instances", data=f).status_code == 200
    mods = {"remote": ["REMOTEORTHANC", "127.0.0.1", remote_port]}
    client = orthanc({"DicomAet": "REFCLIENT", "DicomPort": client_port, "DicomModalities": mods})
    ours = node({"DicomPort": ours_port, "DicomModalities": mods})
    return remote, client, ours


def files_by_sop(url):
    out = {}
    for iid in requests.get(url + "/instances").json():
        tags = requests.get(f"{url}/instances/{iid}/simplified-tags").json()
        pixels = requests.get(f"{url}/instances/{iid}/content/7fe0-0010/0").content
        out[tags["SOPInstanceUID"]] = (tags["PatientID"], tags["SeriesInstanceUID"], hashlib.sha256(pixels).hexdigest())
    return out


@pytest.mark.parametrize("level,query", [("Study", {"PatientID": "ORQ*"}), ("Series", {"PatientID": "ORQ1"}),
                                         ("Patient", {"PatientName": "QR^ORQ2"}),
                                         ("Instance", {"PatientID": "ORQ2", "InstanceNumber": ""})])
def test_query_answers_as_reference(nodes, level, query):
    remote, client, ours = nodes
    out = []
    for url in (client.url, ours.url):
        r = requests.post(url + "/modalities/remote/query", json={"Level": level, "Query": query})
        assert r.status_code == 200, r.text
        answers = requests.get(f"{url}{r.json()['Path']}/answers?expand").json()
        out.append(sorted((a for a in answers), key=lambda a: sorted(str(v) for v in a.items())))
    for a in out[0]:   # see test_qr_query_reference.drop_meta
        a.pop("0002,0003", None)
    assert out[0] == out[1]
    assert len(out[1]) == {"Study": 2, "Series": 2, "Patient": 1, "Instance": 2}[level]


@pytest.mark.parametrize("method", ["C-MOVE", "C-GET"])
def test_retrieve_study_as_reference(nodes, method):
    remote, client, ours = nodes
    contents = []
    for url, body in ((client.url, {}), (ours.url, {"RetrieveMethod": method})):
        q = requests.post(url + "/modalities/remote/query",
                          json={"Level": "Study", "Query": {"PatientID": "ORQ1"}}).json()["Path"]
        r = requests.post(f"{url}{q}/retrieve", json=body)
        assert r.status_code == 200, r.text
        contents.append(r.json())
    ref, got = contents
    assert (ref["LocalAet"], got["LocalAet"]) == ("REFCLIENT", "PACSBOX")
    ref["LocalAet"] = "PACSBOX"
    assert {k: v for k, v in got.items() if k not in EXTRA_KEYS} == ref
    assert got["InstancesCount"] == 5 and got["FailedInstancesCount"] == 0
    expected = {k: v for k, v in files_by_sop(remote.url).items() if v[0] == "ORQ1"}
    assert files_by_sop(ours.url) == expected
    assert files_by_sop(client.url) == expected


def test_retrieve_one_answer_text_body_and_async(nodes):
    remote, client, ours = nodes
    q = requests.post(ours.url + "/modalities/remote/query",
                      json={"Level": "Series", "Query": {"PatientID": "ORQ1"}}).json()["Path"]
    # a plain-text body names the target: here pacsbox itself
    r = requests.post(f"{ours.url}{q}/answers/1/retrieve", data="PACSBOX")
    assert r.status_code == 200, r.text
    assert r.json()["TargetAet"] == "PACSBOX"
    n1 = r.json()["InstancesCount"]
    assert n1 in (2, 3)
    job = requests.post(f"{ours.url}{q}/answers/0/retrieve", json={"Asynchronous": True, "Priority": 4}).json()
    info = wait_for(lambda: (lambda j: j if j["State"] in ("Success", "Failure") else None)(
        requests.get(ours.url + job["Path"]).json()))
    assert info["State"] == "Success" and info["Type"] == "DicomMoveScu" and info["Priority"] == 4
    assert info["Content"]["InstancesCount"] == 5 - n1
    assert len(requests.get(ours.url + "/instances").json()) == 5
