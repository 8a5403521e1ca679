"""Query/retrieve from dcmtk's ``dcmqrscp`` as a remote PACS: query a small database, then
retrieve a study into pacsbox by C-MOVE (received by pacsbox's SCP) and by C-GET (stored
from the retrieve association), and a series into a third node."""
from __future__ import annotations

import hashlib

import pydicom
import pytest
import requests
import io

from qr_helpers import make_instances, start_dcmqrscp, stop_process


def sop_uid(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def study():
    return make_instances(6, "DQR1", series=2)


@pytest.fixture
def setup(tmp_path, node, study):
    from pacsbox.testing import free_port
    dicom_port = free_port()
    qr = start_dcmqrscp(str(tmp_path), {"PACSBOX": dicom_port}, study + make_instances(2, "DQR2", series=1))
    n = node({"DicomPort": dicom_port, "DicomModalities": {"pacs": ["DCMQR", "127.0.0.1", qr.port]}})
    yield n, qr
    stop_process(qr.proc)


def dataset_part(data: bytes) -> bytes:
    """The data set of a Part-10 file (what follows the meta group)."""
    import struct
    assert data[128:132] == b"DICM" and data[132:138] == b"\x02\x00\x00\x00UL"
    return data[144 + struct.unpack("<I", data[140:144])[0]:]


def stored_files(n):
    out = {}
    for iid in requests.get(n.url + "/instances").json():
        data = requests.get(f"{n.url}/instances/{iid}/file").content
        out[sop_uid(data)] = hashlib.sha256(dataset_part(data)).hexdigest()
    return out


def test_query_study_level(setup, study):
    n, qr = setup
    r = requests.post(n.url + "/modalities/pacs/query", json={"Level": "Study", "Query": {"PatientID": "DQR*"}})
    assert r.status_code == 200, r.text
    q = r.json()["Path"]
    answers = requests.get(f"{n.url}{q}/answers?expand&simplify").json()
    assert sorted(a["PatientID"] for a in answers) == ["DQR1", "DQR2"]
    a = next(a for a in answers if a["PatientID"] == "DQR1")
    assert a["QueryRetrieveLevel"] == "STUDY"
    assert a["AccessionNumber"] == "ACCDQR1"
    assert a["StudyInstanceUID"] == str(pydicom.dcmread(io.BytesIO(study[0])).StudyInstanceUID)
    # one level down, constrained by the answer
    index = answers.index(a)
    r = requests.post(f"{n.url}{q}/answers/{index}/query-series", json={})
    series = requests.get(f"{n.url}{r.json()['Path']}/answers?expand&simplify").json()
    assert len(series) == 2 and {s["StudyInstanceUID"] for s in series} == {a["StudyInstanceUID"]}
    r = requests.post(f"{n.url}{q}/answers/{index}/query-instances", json={})
    instances = requests.get(f"{n.url}{r.json()['Path']}/answers?expand&simplify").json()
    assert sorted(i["SOPInstanceUID"] for i in instances) == sorted(sop_uid(d) for d in study)


@pytest.mark.parametrize("method", ["C-MOVE", "C-GET"])
def test_retrieve_study_into_pacsbox(setup, study, method):
    n, qr = setup
    q = requests.post(n.url + "/modalities/pacs/query",
                      json={"Level": "Study", "Query": {"PatientID": "DQR1"}}).json()["Path"]
    r = requests.post(f"{n.url}{q}/answers/0/retrieve", json={"RetrieveMethod": method})
    assert r.status_code == 200, r.text
    content = r.json()
    assert content["RemoteAet"] == "DCMQR" and content["LocalAet"] == "PACSBOX"
    assert content["Query"] == [{"0008,0050": "ACCDQR1", "0008,0052": "STUDY", "0010,0020": "DQR1",
                                 "0020,000d": str(pydicom.dcmread(io.BytesIO(study[0])).StudyInstanceUID)}]
    assert content["InstancesCount"] == 6 and content["FailedInstancesCount"] == 0
    assert content["RetrieveMethod"] == method
    # every data set arrived byte for byte (the meta group is the receiver's)
    expected = {sop_uid(d): hashlib.sha256(dataset_part(d)).hexdigest() for d in study}
    assert stored_files(n) == expected
    if method == "C-GET":   # stored from the retrieve association, as received
        iid = requests.get(n.url + "/instances").json()[0]
        meta = requests.get(f"{n.url}/instances/{iid}/metadata?expand").json()
        assert meta["Origin"] == "DicomProtocol" and meta["RemoteAET"] == "DCMQR"
    jobs = requests.get(n.url + "/jobs?expand").json()
    assert [j["Type"] for j in jobs] == ["DicomGetScu" if method == "C-GET" else "DicomMoveScu"]
    assert jobs[0]["State"] == "Success" and jobs[0]["Progress"] == 100


def test_move_route_series_level(setup, study):
    n, qr = setup
    ds = pydicom.dcmread(io.BytesIO(study[0]))
    r = requests.post(n.url + "/modalities/pacs/move", json={
        "Level": "Series", "Resources": [{"StudyInstanceUID": str(ds.StudyInstanceUID),
                                          "SeriesInstanceUID": str(ds.SeriesInstanceUID)}]})
    assert r.status_code == 200, r.text
    assert r.json()["InstancesCount"] == 3
    assert len(requests.get(n.url + "/instances").json()) == 3
    # asynchronous form (1.11+): a job
    r = requests.post(n.url + "/modalities/pacs/move", json={
        "Level": "Patient", "Resources": [{"PatientID": "DQR2"}], "Asynchronous": True, "Priority": 3})
    job = r.json()
    assert set(job) == {"ID", "Path"}
    from qr_helpers import wait_for
    info = wait_for(lambda: (lambda j: j if j["State"] in ("Success", "Failure") else None)(
        requests.get(n.url + job["Path"]).json()))
    assert info["State"] == "Success" and info["Priority"] == 3
    assert len(requests.get(n.url + "/instances").json()) == 5
