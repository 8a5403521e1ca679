"""``POST /peers/{id}/store`` and ``/store-straight`` between real servers on loopback:
pacsbox → Orthanc 1.10.1, Orthanc → pacsbox (Orthanc configured with pacsbox in its
``OrthancPeers``), pacsbox → pacsbox; the receiver holds the same files byte for byte, and
the answers have the reference's shape and values."""
from __future__ import annotations

import io

import pydicom
import pytest
import requests

from peers_helpers import make_study, upload, wait_job


def files_of(url: str, instance_ids) -> dict[str, bytes]:
    return {i: requests.get(f"{url}/instances/{i}/file", timeout=30).content for i in instance_ids}


@pytest.fixture
def study():
    return make_study(5, "PEERSTORE")


def test_pacsbox_to_orthanc_and_orthanc_to_pacsbox(node, orthanc, study):
    receiver = node({"DicomServerEnabled": False})
    ref = orthanc({"OrthancPeers": {"pacsbox": [receiver.url + "/"]}, "DicomServerEnabled": False})
    sender = node({"DicomServerEnabled": False, "OrthancPeers": {"ref": [ref.url]}})

    # pacsbox -> Orthanc
    answers = upload(sender.url, study)
    ids = [a["ID"] for a in answers]
    study_id = answers[0]["ParentStudy"]
    r = requests.post(sender.url + "/peers/ref/store", json={"Resources": [study_id]})
    assert r.status_code == 200, r.text
    assert r.json() == {"Compress": False, "Description": "REST API", "FailedInstancesCount": 0,
                        "InstancesCount": 5, "ParentResources": [study_id], "Peer": [ref.url + "/"],
                        "Size": str(sum(map(len, study))), "SizeMB": 0}
    got = files_of(ref.url, ids)
    assert [got[i] for i in ids] == study

    # Orthanc -> pacsbox, with the same study: same answer shape, same bytes on arrival
    r2 = requests.post(ref.url + "/peers/pacsbox/store", json={"Resources": [study_id]})
    assert r2.status_code == 200, r2.text
    ours = requests.post(sender.url + "/peers/ref/store", json={"Resources": [study_id]}).json()
    theirs = r2.json()
    assert sorted(ours) == sorted(theirs)
    assert {k: v for k, v in ours.items() if k != "Peer"} == {k: v for k, v in theirs.items() if k != "Peer"}
    got = files_of(receiver.url, ids)
    assert [got[i] for i in ids] == study

    # Orthanc -> pacsbox with Compress (gzip bodies), into an empty receiver
    requests.delete(f"{receiver.url}/studies/{study_id}").raise_for_status()
    r3 = requests.post(ref.url + "/peers/pacsbox/store", json={"Resources": [study_id], "Compress": True})
    assert r3.status_code == 200 and r3.json()["Compress"] is True, r3.text
    assert int(r3.json()["Size"]) < sum(map(len, study))
    got = files_of(receiver.url, ids)
    assert [got[i] for i in ids] == study

    # /peers/{id}/system relays the peer's /system, in both directions
    assert requests.get(sender.url + "/peers/ref/system").json() == requests.get(ref.url + "/system").json()
    assert requests.get(ref.url + "/peers/pacsbox/system").json() == requests.get(receiver.url + "/system").json()


def test_compress_sends_gzip_and_counts_bytes_sent(node, orthanc, study):
    ref = orthanc({"DicomServerEnabled": False})
    sender = node({"DicomServerEnabled": False, "OrthancPeers": {"ref": [ref.url]}})
    answers = upload(sender.url, study)
    ids = [a["ID"] for a in answers]
    r = requests.post(sender.url + "/peers/ref/store", json={"Resources": ids, "Compress": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["Compress"] is True and body["InstancesCount"] == 5
    assert 0 < int(body["Size"]) < sum(map(len, study))
    got = files_of(ref.url, ids)
    assert [got[i] for i in ids] == study
    # the reference, same request: same answer shape
    ref_ids = [a["ID"] for a in upload(ref.url, study)]
    other = orthanc({"DicomServerEnabled": False})
    requests.put(ref.url + "/peers/other", json=[other.url]).raise_for_status()
    theirs = requests.post(ref.url + "/peers/other/store", json={"Resources": ref_ids, "Compress": True}).json()
    assert sorted(theirs) == sorted(body)
    assert 0 < int(theirs["Size"]) < sum(map(len, study))


def test_pacsbox_to_pacsbox_transcode_async_and_bare_id(node, study):
    receiver = node({"DicomServerEnabled": False})
    sender = node({"DicomServerEnabled": False, "OrthancPeers": {"rx": {"Url": receiver.url, "Timeout": 5}}})
    answers = upload(sender.url, study)
    ids = [a["ID"] for a in answers]

    # bare ID as text, synchronous
    r = requests.post(sender.url + "/peers/rx/store", data=ids[0])
    assert r.status_code == 200, r.text
    assert r.json()["ParentResources"] == [ids[0]]
    assert files_of(receiver.url, ids[:1])[ids[0]] == study[0]

    # Transcode to implicit little endian, asynchronous, JSON-string body form not allowed with fields
    r = requests.post(sender.url + "/peers/rx/store",
                      json={"Resources": ids[1:3], "Transcode": "1.2.840.10008.1.2", "Asynchronous": True,
                            "Priority": 3})
    assert r.status_code == 200 and set(r.json()) == {"ID", "Path"}
    job = wait_job(sender.url, r.json()["ID"], lambda j: j["State"] == "Success")
    assert job["Type"] == "OrthancPeerStore" and job["Priority"] == 3 and job["Progress"] == 100
    assert job["Content"]["Transcode"] == "1.2.840.10008.1.2"
    assert job["Content"]["Peer"] == {"HttpHeaders": {}, "Pkcs11": False, "Timeout": 5, "Url": receiver.url + "/"}
    for i in ids[1:3]:
        data = requests.get(f"{receiver.url}/instances/{i}/file").content
        assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"

    # JSON string form
    r = requests.post(sender.url + "/peers/rx/store", json=ids[3])
    assert r.status_code == 200 and r.json()["InstancesCount"] == 1


def test_store_straight(node, orthanc, study):
    ref = orthanc({"DicomServerEnabled": False})
    sender = node({"DicomServerEnabled": False, "OrthancPeers": {"ref": [ref.url]}})
    r = requests.post(sender.url + "/peers/ref/store-straight", data=study[0])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["Status"] == "Success" and set(answer) == {"ID", "ParentPatient", "ParentSeries", "ParentStudy",
                                                             "Path", "Status"}
    assert requests.get(f"{ref.url}/instances/{answer['ID']}/file").content == study[0]
    assert requests.get(sender.url + "/instances").json() == []       # not stored locally
    # the reference relays the same answer (AlreadyStored now)
    requests.put(ref.url + "/peers/self", json=[ref.url]).raise_for_status()
    theirs = requests.post(ref.url + "/peers/self/store-straight", data=study[0]).json()
    ours = requests.post(sender.url + "/peers/ref/store-straight", data=study[0]).json()
    assert ours == theirs and ours["Status"] == "AlreadyStored"


def test_log_exported_resources(node, orthanc, study):
    """``LogExportedResources``: each resource of the request is in ``/exports`` with the
    peer's name, as the reference records it."""
    files = study[:1]
    ref = orthanc({"DicomServerEnabled": False, "LogExportedResources": True,
                   "OrthancPeers": {"dead": ["http://127.0.0.1:9/"]}})
    ours = node({"DicomServerEnabled": False, "LogExportedResources": True, "OrthancPeerStoreRetries": 0,
                 "OrthancPeers": {"dead": ["http://127.0.0.1:9/"]}})
    out = {}
    for name, url in (("ref", ref.url), ("ours", ours.url)):
        a = upload(url, files)[0]
        r = requests.post(url + "/peers/dead/store", json={"Resources": [a["ParentStudy"], a["ID"]],
                                                           "Permissive": True})
        assert r.status_code == 200
        exports = requests.get(url + "/exports").json()["Exports"]
        out[name] = [{k: v for k, v in e.items() if k != "Date"} for e in exports]
    assert out["ours"] == out["ref"] and len(out["ours"]) == 2
    assert out["ours"][0]["RemoteModality"] == "dead"
