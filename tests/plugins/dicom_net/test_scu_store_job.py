"""The DicomModalityStore job: real peers (Orthanc 1.10.1, scriptable SCPs, a mute TCP
listener), failures, permissive runs, pause/cancel of a store blocked on its peer, /exports,
and the modalities registry across a restart."""
from __future__ import annotations

import select
import socket
import time

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

import pacsbox_dicom_net.plugin as dicom_net_plugin
from pacsbox import read_file_meta
from pacsbox.testing import free_port

CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")
JPEG = get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _upload(url, *paths):
    out = []
    for p in paths:
        r = requests.post(url + "/instances", data=_bytes(p))
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def _wait(url, job_id, states, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        j = requests.get(f"{url}/jobs/{job_id}").json()
        if j["State"] in states or time.monotonic() > deadline:
            return j
        time.sleep(0.02)


def test_store_to_real_orthanc_holds_same_instances(node, orthanc):
    ref = orthanc()
    n = node({"DicomModalities": {"ref": [ref.aet, "127.0.0.1", ref.dicom_port]}})
    infos = _upload(n.url, CT, MR, JPEG)
    r = requests.post(n.url + "/modalities/ref/store", json={"Resources": [i["ParentPatient"] for i in infos]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["InstancesCount"] == 3 and body["FailedInstancesCount"] == 0 and body["RemoteAet"] == ref.aet
    assert sorted(requests.get(ref.url + "/instances").json()) == sorted(i["ID"] for i in infos)
    for i in infos:
        ours = requests.get(f"{n.url}/instances/{i['ID']}/file").content
        theirs = requests.get(f"{ref.url}/instances/{i['ID']}/file").content
        mo, mt = read_file_meta(ours), read_file_meta(theirs)
        assert mo.transfer_syntax == mt.transfer_syntax
        assert ours[mo.dataset_offset:] == theirs[mt.dataset_offset:]


def test_failure_fails_the_job_unless_permissive(node, storage_scp):
    scp = storage_scp("FAILS")
    scp.status = lambda ds: 0xA700
    n = node({"DicomModalities": {"f": ["FAILS", "127.0.0.1", scp.port]}})
    infos = _upload(n.url, CT, MR)
    r = requests.post(n.url + "/modalities/f/store", json=[i["ID"] for i in infos])
    assert r.status_code == 500
    err = r.json()
    assert err["OrthancStatus"] == 9 and err["Details"] == 'C-STORE SCU to AET "FAILS" has failed with DIMSE status 0xA700'
    r = requests.post(n.url + "/modalities/f/store", json={"Resources": [i["ID"] for i in infos], "Permissive": True})
    assert r.status_code == 200
    assert r.json()["FailedInstancesCount"] == 2 and r.json()["InstancesCount"] == 2
    # warnings count as sent
    scp.status = lambda ds: 0xB007
    r = requests.post(n.url + "/modalities/f/store", json=[i["ID"] for i in infos])
    assert r.status_code == 200 and r.json()["FailedInstancesCount"] == 0


def test_job_content_move_originator_and_exports(node, storage_scp):
    scp = storage_scp("DEST")
    n = node({"DicomModalities": {"d": ["DEST", "127.0.0.1", scp.port]}, "LogExportedResources": True})
    (info,) = _upload(n.url, CT)
    r = requests.post(n.url + "/modalities/d/store",
                      json={"Resources": [info["ParentStudy"]], "MoveOriginatorAet": "MOV", "MoveOriginatorID": 9,
                            "LocalAet": "LOCAL", "Asynchronous": True, "Priority": 3})
    job = _wait(n.url, r.json()["ID"], ("Success", "Failure"))
    assert job["State"] == "Success" and job["Type"] == "DicomModalityStore" and job["Priority"] == 3
    assert job["Content"] == {"Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 1,
                              "LocalAet": "LOCAL", "MoveOriginatorAET": "MOV", "MoveOriginatorID": 9,
                              "ParentResources": [info["ParentStudy"]], "RemoteAet": "DEST"}
    _, meta = scp.received[-1]
    assert (meta["calling_aet"], meta["move_originator_aet"], meta["move_originator_id"]) == ("LOCAL", "MOV", 9)
    exports = requests.get(n.url + "/exports").json()["Exports"]
    ds = pydicom.dcmread(CT, stop_before_pixels=True)
    assert [(e["ResourceType"], e["ID"], e["RemoteModality"], e["PatientID"], e["StudyInstanceUID"])
            for e in exports] == [("Study", info["ParentStudy"], "d", ds.PatientID, ds.StudyInstanceUID)]


def test_per_call_called_aet_host_port(node, storage_scp):
    scp = storage_scp("OTHER")
    n = node({"DicomModalities": {"x": ["NOBODY", "127.0.0.1", free_port()]}})
    (info,) = _upload(n.url, CT)
    r = requests.post(n.url + "/modalities/x/store",
                      json={"Resources": [info["ID"]], "CalledAet": "OTHER", "Host": "127.0.0.1", "Port": scp.port})
    assert r.status_code == 200 and r.json()["RemoteAet"] == "OTHER"
    assert len(scp.received) == 1


def _interrupt_blocked_store(n, modality, action, reached):
    """Start a store to ``modality``, wait until ``reached()`` says it is blocked on the
    peer, then ``action`` (pause or cancel) it. The peer never answers and its timeout
    is 60 s: reaching Paused/Failure within the 20 s hang guard is the interruption."""
    (info,) = _upload(n.url, CT)
    r = requests.post(f"{n.url}/modalities/{modality}/store", json={"Resources": [info["ID"]], "Asynchronous": True})
    job_id = r.json()["ID"]
    deadline = time.monotonic() + 30
    while not reached():
        assert time.monotonic() < deadline, "the store did not reach the peer"
        time.sleep(0.01)
    assert requests.get(f"{n.url}/jobs/{job_id}").json()["State"] == "Running"
    assert requests.post(f"{n.url}/jobs/{job_id}/{action}").status_code == 200
    job = _wait(n.url, job_id, ("Failure", "Paused"), timeout=20)
    return job_id, job


def test_cancel_while_peer_is_mute(node):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(5)
    try:
        n = node({"DicomModalities": {"mute": {"AET": "MUTE", "Host": "127.0.0.1", "Port": lsock.getsockname()[1],
                                               "Timeout": 60}}})
        # blocked once its connection waits to be accepted by the mute listener
        job_id, job = _interrupt_blocked_store(n, "mute", "cancel",
                                               lambda: bool(select.select([lsock], [], [], 0)[0]))
        assert job["State"] == "Failure" and job["ErrorCode"] == 37
    finally:
        lsock.close()


def test_pause_while_scp_is_silent_then_resume(node, storage_scp):
    scp = storage_scp("SILENT")
    scp.silent = True
    n = node({"DicomModalities": {"s": {"AET": "SILENT", "Host": "127.0.0.1", "Port": scp.port, "Timeout": 60}}})
    # blocked once the association is up (the C-STORE request is never answered)
    job_id, job = _interrupt_blocked_store(n, "s", "pause", lambda: bool(scp.server.active_associations))
    assert job["State"] == "Paused"
    scp.silent = False
    assert requests.post(f"{n.url}/jobs/{job_id}/resume").status_code == 200
    job = _wait(n.url, job_id, ("Success", "Failure"))
    assert job["State"] == "Success" and job["Content"]["FailedInstancesCount"] == 0
    assert len(scp.received) == 1


def test_store_straight(node, storage_scp):
    scp = storage_scp("STRAIGHT")
    n = node({"DicomModalities": {"s": ["STRAIGHT", "127.0.0.1", scp.port]}})
    data = _bytes(CT)
    r = requests.post(n.url + "/modalities/s/store-straight", data=data)
    ds = pydicom.dcmread(CT, stop_before_pixels=True)
    assert r.status_code == 200 and r.json() == {"SOPClassUID": ds.SOPClassUID, "SOPInstanceUID": ds.SOPInstanceUID}
    m = read_file_meta(data)
    assert scp.received[0][1]["raw"] == data[m.dataset_offset:]
    assert requests.get(n.url + "/instances").json() == []  # not stored


def test_modalities_in_database_survive_a_restart(make_app, tmp_path):
    cfg = {"StorageDirectory": str(tmp_path / "db"), "DicomModalitiesInDatabase": True, "DicomServerEnabled": False,
           "DicomModalities": {"conf": ["CONF", "127.0.0.1", 104]}}
    from falcon import testing
    app = make_app(cfg, plugins=[dicom_net_plugin])
    c = testing.TestClient(app)
    assert c.simulate_put("/modalities/added", body='{"AET": "ADDED", "Host": "10.0.0.1", "Port": 11112}').status_code == 200
    assert c.simulate_delete("/modalities/conf").status_code == 200
    app.close()
    app2 = make_app(cfg, plugins=[dicom_net_plugin])
    c2 = testing.TestClient(app2)
    assert c2.simulate_get("/modalities").json == ["added"]
    assert c2.simulate_get("/modalities/added/configuration").json["Host"] == "10.0.0.1"
    # without the option, REST changes live in memory only
    cfg2 = dict(cfg, StorageDirectory=str(tmp_path / "db2"), DicomModalitiesInDatabase=False)
    app3 = make_app(cfg2, plugins=[dicom_net_plugin])
    testing.TestClient(app3).simulate_put("/modalities/added", body='["ADDED", "h", 1]')
    app3.close()
    assert testing.TestClient(make_app(cfg2, plugins=[dicom_net_plugin])).simulate_get("/modalities").json == ["conf"]
