"""Retrieve job behaviour with scripted pynetdicom remotes: a refused move destination
(0xA801), failed sub-operations (Failure, or Success with the counts when Permissive),
progress following the Pending counts, cancel and pause while the remote is silent, and
two synchronous retrieves in parallel."""
from __future__ import annotations

import io
import threading

import pydicom
import pytest
import requests

from qr_helpers import canned_answers, make_instances, start_scripted_qr, wait_for


def datasets(files):
    return [pydicom.dcmread(io.BytesIO(f)) for f in files]


@pytest.fixture
def remotes():
    made = []

    def factory(aet="REMOTE"):
        qr = start_scripted_qr(aet)
        qr.find_answers = canned_answers(2)
        made.append(qr)
        return qr

    yield factory
    for qr in made:
        qr.stop()


def mover(destinations, files, gate=None):
    """A C-MOVE handler sending ``files`` to the destination (AET -> port); with ``gate``
    (a list of events), waits on ``gate[i]`` before sub-operation i."""
    dss = datasets(files)

    def move(event):
        port = destinations.get(event.move_destination.strip())
        if port is None:
            yield None, None
            return
        yield "127.0.0.1", port
        yield len(dss)
        for i, ds in enumerate(dss):
            if gate is not None:
                gate[i].wait(30)
            yield 0xFF00, ds

    return move


def query(url, modality="remote"):
    r = requests.post(f"{url}/modalities/{modality}/query", json={"Level": "Study"})
    assert r.status_code == 200, r.text
    return r.json()["Path"]


def test_unknown_destination_fails_with_reason(remotes, node):
    qr = remotes()
    n = node({"DicomModalities": {"remote": ["REMOTE", "127.0.0.1", qr.port]}})
    q = query(n.url)
    r = requests.post(f"{n.url}{q}/answers/0/retrieve", data="NOWHERE")
    assert r.status_code == 500
    err = r.json()
    assert err["OrthancStatus"] == 9
    assert err["Details"] == ('C-MOVE SCU to AET "REMOTE" has failed with DIMSE status 0xA801 '
                              '(Failure: Move destination unknown)')
    assert qr.log[-1][:2] == ("MOVE", "NOWHERE")
    job = requests.get(n.url + "/jobs?expand").json()[0]
    assert job["State"] == "Failure" and job["ErrorCode"] == 9 and "0xA801" in job["ErrorDetails"]
    assert job["Content"]["Failures"] == [{"Index": 0, "Status": "0xA801", "Completed": 0, "Failed": 0,
                                           "Warning": 0}]


def test_failed_suboperations(remotes, node, storage_scp):
    scp = storage_scp("DEST")
    files = make_instances(4, "FAIL1", series=1)
    bad = {str(d.SOPInstanceUID) for d in datasets(files)[1:3]}
    scp.status = lambda ds: 0xA700 if str(ds.SOPInstanceUID) in bad else 0x0000
    qr = remotes()
    qr.move = mover({"DEST": scp.port}, files)
    n = node({"DicomModalities": {"remote": ["REMOTE", "127.0.0.1", qr.port]}})
    q = query(n.url)
    r = requests.post(f"{n.url}{q}/answers/0/retrieve", json={"TargetAet": "DEST"})
    assert r.status_code == 500
    assert r.json()["Details"].startswith('C-MOVE SCU to AET "REMOTE": 2 sub-operation(s) failed, 2 completed, '
                                          '0 with warnings (DIMSE status 0xB000')
    job = requests.get(n.url + "/jobs?expand").json()[0]
    assert job["State"] == "Failure"
    assert job["Content"]["InstancesCount"] == 2 and job["Content"]["FailedInstancesCount"] == 2
    failure = job["Content"]["Failures"][0]
    assert failure["Status"] == "0xB000" and sorted(failure["FailedSOPInstanceUIDs"]) == sorted(bad)
    # Permissive: Success, with the same counts in the answer (never a silent success)
    r = requests.post(f"{n.url}{q}/retrieve", json={"TargetAet": "DEST", "Permissive": True})
    assert r.status_code == 200, r.text
    content = r.json()
    assert content["InstancesCount"] == 4 and content["FailedInstancesCount"] == 4
    assert [f["Index"] for f in content["Failures"]] == [0, 1]
    assert len(content["Query"]) == 2


def test_progress_follows_pending_counts(remotes, node):
    files = make_instances(4, "PROG1", series=1)
    gate = [threading.Event() for _ in files]
    qr = remotes()
    n = node({"DicomModalities": {"remote": ["REMOTE", "127.0.0.1", qr.port]}})
    qr.move = mover({"PACSBOX": n.dicom_port}, files, gate)
    q = requests.post(f"{n.url}/modalities/remote/query", json={"Level": "Study"}).json()["Path"]
    job = requests.post(f"{n.url}{q}/answers/0/retrieve", json={"Asynchronous": True}).json()
    gate[0].set()
    gate[1].set()
    info = wait_for(lambda: (lambda j: j if j["Progress"] == 50 else None)(requests.get(n.url + job["Path"]).json()))
    assert info["State"] == "Running"
    gate[2].set()
    wait_for(lambda: requests.get(n.url + job["Path"]).json()["Progress"] == 75)
    gate[3].set()
    info = wait_for(lambda: (lambda j: j if j["State"] == "Success" else None)(requests.get(n.url + job["Path"]).json()))
    assert info["Progress"] == 100 and info["Content"]["InstancesCount"] == 4
    assert len(requests.get(n.url + "/instances").json()) == 4


def test_cancel_and_pause_while_remote_is_silent(remotes, node):
    qr = remotes()
    n = node({"DicomModalities": {"remote": ["REMOTE", "127.0.0.1", qr.port]}, "DicomScuTimeout": 60})
    files = make_instances(2, "SIL1", series=1)
    qr.move = mover({"PACSBOX": n.dicom_port}, files)
    q = query(n.url)
    qr.hang.set()
    job = requests.post(f"{n.url}{q}/answers/0/retrieve", json={"Asynchronous": True}).json()
    wait_for(lambda: any(e[0] == "MOVE" for e in qr.log))
    # the remote never answers and DicomScuTimeout is 60 s: Failure within the 20 s hang
    # guard is the interruption (the time it takes depends on the machine)
    assert requests.post(f"{n.url}{job['Path']}/cancel").status_code == 200
    info = wait_for(lambda: (lambda j: j if j["State"] == "Failure" else None)(requests.get(n.url + job["Path"]).json()),
                    timeout=20, interval=0.01)
    assert info["ErrorCode"] == 37

    # pause while silent, then resume once the remote speaks again: the retrieve completes
    del qr.log[:]
    job = requests.post(f"{n.url}{q}/answers/0/retrieve", json={"Asynchronous": True}).json()
    wait_for(lambda: any(e[0] == "MOVE" for e in qr.log))
    assert requests.post(f"{n.url}{job['Path']}/pause").status_code == 200
    wait_for(lambda: requests.get(n.url + job["Path"]).json()["State"] == "Paused", timeout=20, interval=0.01)
    qr.hang.clear()
    qr.release.set()
    assert requests.post(f"{n.url}{job['Path']}/resume").status_code == 200
    info = wait_for(lambda: (lambda j: j if j["State"] in ("Success", "Failure") else None)(
        requests.get(n.url + job["Path"]).json()))
    assert info["State"] == "Success", info
    assert info["Content"]["InstancesCount"] == 2
    assert len(requests.get(n.url + "/instances").json()) == 2


def test_two_synchronous_retrieves_in_parallel(remotes, node):
    slow, fast = remotes("SLOW"), remotes("FAST")
    n = node({"DicomModalities": {"slow": ["SLOW", "127.0.0.1", slow.port], "fast": ["FAST", "127.0.0.1", fast.port]},
              "ConcurrentJobs": 2, "DicomScuTimeout": 60})
    slow.move = mover({"PACSBOX": n.dicom_port}, make_instances(1, "SLOW1"))
    fast.move = mover({"PACSBOX": n.dicom_port}, make_instances(3, "FAST1"))
    qs, qf = query(n.url, "slow"), query(n.url, "fast")
    slow.hang.set()
    results = {}
    t = threading.Thread(target=lambda: results.setdefault(
        "slow", requests.post(f"{n.url}{qs}/answers/0/retrieve", json={})))
    t.start()
    wait_for(lambda: any(e[0] == "MOVE" for e in slow.log))
    # the slow retrieve waits until released, which comes after this one's answer: this one
    # cannot wait behind it (no speed bound needed)
    r = requests.post(f"{n.url}{qf}/answers/0/retrieve", json={}, timeout=60)
    assert r.status_code == 200 and r.json()["InstancesCount"] == 3
    assert "slow" not in results          # still waiting on its silent remote
    slow.release.set()
    t.join(30)
    assert results["slow"].status_code == 200 and results["slow"].json()["InstancesCount"] == 1
