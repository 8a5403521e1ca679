"""``POST /peers/{id}/store`` against a stand-in peer that refuses some uploads (500/400),
answers 503 before accepting, or answers slowly: exact failed instances, Permissive,
bounded retries, several uploads in flight, pause/cancel of uploads the peer never
answers, resubmit."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from peers_helpers import make_study, start_standin, upload, wait_job


@pytest.fixture
def standin():
    st = start_standin()
    yield st
    if st.hold is not None:
        st.hold.set()             # uploads still held
    st.server.shutdown()


@pytest.fixture
def sender(node, standin):
    """A pacsbox with the stand-in as peer ``standin`` and 6 instances of one study."""
    n = node({"OrthancPeers": {"standin": [standin.url]}, "OrthancPeerStoreConcurrency": 3,
              "OrthancPeerStoreRetries": 2, "DicomServerEnabled": False})
    files = make_study(6)
    answers = upload(n.url, files)
    n.instances = [a["ID"] for a in answers]
    n.study = answers[0]["ParentStudy"]
    n.uid_of = {}
    import io

    import pydicom
    for a, f in zip(answers, files):
        n.uid_of[a["ID"]] = str(pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID)
    return n


def test_all_accepted_several_in_flight(sender, standin):
    # the peer holds the uploads until three are there at once (a delay per upload let a
    # slow sender start the third after the first was answered)
    standin.hold = threading.Event()

    def release_at_three():
        deadline = time.monotonic() + 30
        while standin.inflight < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        standin.hold.set()

    threading.Thread(target=release_at_three, daemon=True).start()
    r = requests.post(sender.url + "/peers/standin/store", json={"Resources": [sender.study]})
    assert r.status_code == 200, r.text
    body = r.json()
    sizes = sum(x["size"] for x in standin.received)
    assert body == {"Compress": False, "Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 6,
                    "ParentResources": [sender.study], "Peer": [standin.url], "Size": str(sizes), "SizeMB": 0}
    assert sorted(standin.uids()) == sorted(sender.uid_of.values())
    assert standin.max_inflight == 3          # OrthancPeerStoreConcurrency
    assert standin.received[0]["headers"]["Content-Type"] == "application/dicom"


def test_refused_uploads_fail_the_job_naming_the_instances(sender, standin):
    bad = sender.instances[2]
    standin.decide = lambda uid, attempt: 500 if uid == sender.uid_of[bad] else 200
    r = requests.post(sender.url + "/peers/standin/store", json={"Resources": [sender.study]})
    assert r.status_code == 500
    err = r.json()
    assert err["OrthancStatus"] == 9 and err["Message"] == "Error in the network protocol"
    assert "HTTP 500" in err["Details"] and bad in err["Details"]
    # 500 is not transient: sent once
    assert standin.attempts[sender.uid_of[bad]] == 1
    job = requests.get(sender.url + "/jobs?expand").json()[-1]
    assert job["State"] == "Failure" and job["ErrorCode"] == 9 and job["Progress"] < 100
    assert job["Content"]["FailedInstances"] == [bad] and job["Content"]["FailedInstancesCount"] == 1


def test_permissive_reports_exactly_the_refused_instances(sender, standin):
    refused = {sender.instances[1]: 500, sender.instances[4]: 400}
    by_uid = {sender.uid_of[i]: s for i, s in refused.items()}
    standin.decide = lambda uid, attempt: by_uid.get(uid, 200)
    r = requests.post(sender.url + "/peers/standin/store",
                      json={"Resources": sender.instances, "Permissive": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["FailedInstancesCount"] == 2
    assert body["FailedInstances"] == [sender.instances[1], sender.instances[4]]
    assert body["InstancesCount"] == 6
    assert sorted(standin.uids(200)) == sorted(sender.uid_of[i] for i in sender.instances if i not in refused)
    assert body["ParentResources"] == sorted(sender.instances)


def test_transient_errors_are_retried_with_backoff(sender, standin):
    # every instance: 503 on the first attempt, accepted on the second; one gets 503 twice
    twice = sender.uid_of[sender.instances[0]]
    standin.decide = lambda uid, attempt: 503 if attempt == 1 or (uid == twice and attempt == 2) else 200
    t0 = time.monotonic()
    r = requests.post(sender.url + "/peers/standin/store", json={"Resources": [sender.study]})
    assert r.status_code == 200, r.text
    assert r.json()["FailedInstancesCount"] == 0
    assert sorted(standin.uids(200)) == sorted(sender.uid_of.values())
    assert standin.attempts[twice] == 3
    assert time.monotonic() - t0 >= 0.25 + 0.5      # backoff 0.25 s then 0.5 s


def test_connections_closed_by_the_peer_between_uploads_are_reopened(node, standin):
    """Kept-alive connections the peer closed (its keep-alive timeout) are reopened
    without counting as a failed attempt: with no retries allowed, every instance is
    stored, each received once."""
    standin.close_after_answer = True
    n = node({"OrthancPeers": {"standin": [standin.url]}, "OrthancPeerStoreConcurrency": 2,
              "OrthancPeerStoreRetries": 0, "DicomServerEnabled": False})
    answers = upload(n.url, make_study(8))
    r = requests.post(n.url + "/peers/standin/store", json={"Resources": [answers[0]["ParentStudy"]],
                                                           "Synchronous": True})
    assert r.status_code == 200, r.text
    assert r.json()["FailedInstancesCount"] == 0 and r.json()["InstancesCount"] == 8
    assert len(standin.uids()) == 8 and set(standin.attempts.values()) == {1}


def test_retries_are_bounded(sender, standin):
    standin.decide = lambda uid, attempt: 503
    r = requests.post(sender.url + "/peers/standin/store",
                      json={"Resources": [sender.instances[0]], "Permissive": True})
    assert r.status_code == 200
    assert r.json()["FailedInstancesCount"] == 1
    assert standin.attempts[sender.uid_of[sender.instances[0]]] == 3    # 1 + OrthancPeerStoreRetries


@pytest.mark.parametrize("action", ["cancel", "pause"])
def test_cancel_and_pause_of_uploads_the_peer_never_answers(sender, standin, action):
    """The three uploads in flight wait at the peer until the test releases them: only the
    interruption of the uploads can end the job (the wait's timeout guards against a hang,
    it does not measure the machine)."""
    standin.hold = threading.Event()
    r = requests.post(sender.url + "/peers/standin/store",
                      json={"Resources": [sender.study], "Asynchronous": True})
    job_id = r.json()["ID"]
    deadline = time.monotonic() + 30
    while standin.inflight < 3:   # OrthancPeerStoreConcurrency uploads held by the peer
        assert time.monotonic() < deadline, standin.inflight
        time.sleep(0.01)
    assert requests.post(f"{sender.url}/jobs/{job_id}/{action}", json={}).status_code == 200
    want = "Failure" if action == "cancel" else "Paused"
    j = wait_job(sender.url, job_id, lambda j: j["State"] == want, timeout=20)
    assert standin.received == []     # not one answer came
    if action == "cancel":
        assert j["ErrorCode"] == 37
    else:
        standin.hold.set()            # the peer answers again, at once
        assert requests.post(f"{sender.url}/jobs/{job_id}/resume", json={}).status_code == 200
        j = wait_job(sender.url, job_id, lambda j: j["State"] in ("Success", "Failure"))
        assert j["State"] == "Success", j
        assert set(standin.uids()) == set(sender.uid_of.values())


def test_resubmit_sends_everything_again(sender, standin):
    bad = sender.uid_of[sender.instances[0]]
    standin.decide = lambda uid, attempt: 400 if uid == bad and attempt == 1 else 200
    r = requests.post(sender.url + "/peers/standin/store", json={"Resources": [sender.study], "Asynchronous": True})
    job_id = r.json()["ID"]
    wait_job(sender.url, job_id, lambda j: j["State"] == "Failure")
    before = len(standin.received)
    assert requests.post(f"{sender.url}/jobs/{job_id}/resubmit", json={}).status_code == 200
    j = wait_job(sender.url, job_id, lambda j: j["State"] in ("Success", "Failure"))
    assert j["State"] == "Success", j
    assert len(standin.received) - before == 6
    assert j["Content"]["FailedInstancesCount"] == 0 and "FailedInstances" not in j["Content"]


def test_peer_credentials_and_headers_are_sent(node, standin):
    n = node({"OrthancPeers": {"p": {"Url": standin.url, "Username": "alice", "Password": "secret",
                                     "HttpHeaders": {"X-Token": "abc"}}}, "DicomServerEnabled": False})
    iid = upload(n.url, make_study(1))[0]["ID"]
    r = requests.post(n.url + "/peers/p/store", data=iid)
    assert r.status_code == 200, r.text
    h = standin.received[0]["headers"]
    assert h["X-Token"] == "abc"
    assert h["Authorization"] == "Basic YWxpY2U6c2VjcmV0"
    # the job content shows the peer without the password and without the header values
    assert r.json()["Peer"] == {"HttpHeaders": {"X-Token": None}, "Pkcs11": False, "Timeout": 0,
                                "Url": standin.url, "Username": "alice"}
    s = requests.get(n.url + "/peers/p/system")
    assert s.status_code == 200 and s.json() == {"Name": "StandIn", "Version": "0"}


def test_cancel_stops_a_large_upload_in_flight(node, standin):
    """An 18 MB instance sent through a slow link (64 KB every 40 ms, 11 s for the whole
    body): canceled once the body has started to arrive, the job ends and the body stops
    being sent (the peer sees it cut short, after reading what the socket buffers held:
    3.7 MB here, and 1.6 MB more per second the cancel would take)."""
    n = node({"OrthancPeers": {"standin": [standin.url]}, "DicomServerEnabled": False})
    files = make_study(1, "BIG", size=3000)
    assert len(files[0]) > 18_000_000
    iid = upload(n.url, files)[0]["ID"]
    standin.read_delay = 0.04
    job_id = requests.post(n.url + "/peers/standin/store", json={"Resources": [iid], "Asynchronous": True}).json()["ID"]
    assert standin.reading.wait(30)        # the upload is in flight
    requests.post(f"{n.url}/jobs/{job_id}/cancel", json={})
    j = wait_job(n.url, job_id, lambda j: j["State"] == "Failure", timeout=20)
    assert j["ErrorCode"] == 37
    deadline = time.monotonic() + 30
    while not standin.truncated and time.monotonic() < deadline:
        time.sleep(0.05)
    assert standin.received == []
    assert standin.truncated and standin.truncated[0] < len(files[0]) // 2, (standin.truncated, len(files[0]))
    # a normal large upload carries its Content-Length
    standin.read_delay = 0
    r = requests.post(n.url + "/peers/standin/store", json=[iid])
    assert r.status_code == 200, r.text
    assert standin.received[-1]["headers"]["Content-Length"] == str(len(files[0]))
    assert r.json()["Size"] == str(len(files[0]))
