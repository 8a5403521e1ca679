"""Crash test: ``pacsbox serve`` (``SaveJobs``) is killed with SIGKILL while an
asynchronous ``OrthancPeerStore`` job uploads 40 instances to a slow stand-in peer, two at
a time. After a restart the job resumes with the same ID and ends in ``Success``; the
instances the peer confirmed before the kill are not sent again (only the uploads that
were in flight at the kill can be), and every instance reached the peer."""
from __future__ import annotations

import os
import time

import pytest
import requests

from pacsbox.testing import ServeProcess, free_port
from peers_helpers import make_study, start_standin, upload, wait_job

CONCURRENCY = 2


@pytest.fixture
def standin():
    st = start_standin()
    yield st
    st.server.shutdown()


@pytest.fixture
def serve(tmp_path, standin):
    port = free_port()
    cfg = {"Name": "peercrash", "HttpPort": port, "DicomServerEnabled": False, "StorageDirectory": str(tmp_path / "db"),
           "SaveJobs": True, "ConcurrentJobs": 1, "StableAge": 60, "RemoteAccessAllowed": False,
           "OrthancPeers": {"standin": [standin.url]}, "OrthancPeerStoreConcurrency": CONCURRENCY}
    s = ServeProcess.write(tmp_path, cfg, tmp_path / "server.log")
    s.journals = tmp_path / "db" / "pacsbox-peer-journals"
    yield s
    s.stop()


@pytest.mark.timeout(180)
def test_sigkill_during_peer_store_resumes_without_resending(serve, standin):
    serve.start()
    files = make_study(40, "PEERCRASH")
    answers = upload(serve.url, files)
    study = answers[0]["ParentStudy"]
    standin.delay = 0.1
    job_id = requests.post(serve.url + "/peers/standin/store",
                           json={"Resources": [study], "Asynchronous": True}).json()["ID"]
    deadline = time.monotonic() + 60
    while len(standin.uids()) < 15:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    serve.kill()
    # the uploads in flight at the kill may still be answered (recorded) by the peer later:
    # what follows counts every upload the peer answered, whenever it did
    before = len(standin.uids())
    assert 15 <= before < 40
    assert os.listdir(serve.journals)     # the confirmations since the last save are journaled

    serve.start()
    job = wait_job(serve.url, job_id, lambda j: j["State"] in ("Success", "Failure"), timeout=60)
    assert job["State"] == "Success", job
    assert job["Content"]["InstancesCount"] == 40 and job["Content"]["FailedInstancesCount"] == 0
    import io

    import pydicom
    all_uids = {str(pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID) for f in files}
    sent = standin.uids()
    assert set(sent) == all_uids
    # each instance once, but those in flight at the kill (unconfirmed to the sender, so
    # sent again); without the journal, up to one second of confirmations (~20 here) would
    # be sent again too
    resent = len(sent) - len(all_uids)
    assert resent <= CONCURRENCY, (resent, before)
    print(f"confirmed before the kill: {before}, sent again: {resent}")
    assert not os.listdir(serve.journals)  # dropped when the job is over
