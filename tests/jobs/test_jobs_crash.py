"""Crash test (issue 3): ``pacsbox serve`` with ``SaveJobs`` and ``ConcurrentJobs: 1`` is
killed with SIGKILL while an asynchronous anonymization of a 300-instance study runs (it
was paused and resumed on the way, so a position in the middle is saved), with a paused
and a pending job behind it. After a restart the same jobs come back in the
right states, the anonymization resumes from its last saved step and finishes once, and
exactly one anonymized study of exactly 300 instances exists (no duplicates, nothing
half-made)."""
from __future__ import annotations

import io
import os
import time

import numpy as np
import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from conftest import free_port
from pacsbox.testing import ServeProcess
from conftest import testfile as sample_path
from saved_jobs import saved_position, saved_state, wait_saved


def make_study(n, patient_id, size=128, series=3):
    """``n`` CT instances of one new study, from pydicom's CT_small.dcm with new UIDs and
    ``size`` x ``size`` 16-bit pixels (512 gives ~0.5 MB files: slow enough to be killed
    in the middle of the job)."""
    template = pydicom.dcmread(sample_path("CT_small.dcm"))
    template.PatientID = patient_id
    template.PatientName = f"Crash^{patient_id}"
    template.StudyInstanceUID = generate_uid()
    if size != template.Rows:
        template.Rows = template.Columns = size
        template.PixelData = (np.arange(size * size, dtype=np.uint16) % 4096).tobytes()
    series_uids = [generate_uid() for _ in range(series)]
    out = []
    for i in range(n):
        ds = template.copy()
        ds.SeriesInstanceUID = series_uids[i % series]
        ds.SeriesNumber = i % series + 1
        ds.InstanceNumber = i // series + 1
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta = template.file_meta.copy()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


@pytest.fixture
def server(tmp_path):
    cfg = {"Name": "crash", "HttpPort": free_port(), "DicomPort": free_port(), "DicomAet": "CRASH",
           "StorageDirectory": str(tmp_path / "db"), "SaveJobs": True, "ConcurrentJobs": 1,
           "JobsHistorySize": 10, "StableAge": 60, "RemoteAccessAllowed": False}
    s = ServeProcess.write(tmp_path, cfg, tmp_path / "server.log")
    s.storage = cfg["StorageDirectory"]
    yield s
    s.stop()


def get_job(http, url, job_id):
    r = http.get(f"{url}/jobs/{job_id}", timeout=10)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def wait_job(http, url, job_id, pred, timeout=120, interval=0.005):
    deadline = time.monotonic() + timeout
    while True:
        d = get_job(http, url, job_id)
        if pred(d):
            return d
        assert time.monotonic() < deadline, d
        time.sleep(interval)


def anonymize(http, url, study_id):
    r = http.post(f"{url}/studies/{study_id}/anonymize", json={"Asynchronous": True})
    assert r.status_code == 200, r.text
    return r.json()["ID"]


def test_sigkill_during_anonymization(server):
    server.start()
    with requests.Session() as http:
        _scenario(server, server.url, http)


def _scenario(server, url, http):
    study = {}
    for name, n, size in (("big", 300, 512), ("small1", 2, 128), ("small2", 2, 128)):
        for data in make_study(n, f"CRASH-{name}", size):
            r = http.post(f"{url}/instances", data=data)
            assert r.status_code == 200, r.text
            study[name] = r.json()["ParentStudy"]
    assert len(http.get(f"{url}/studies/{study['big']}/instances").json()) == 300

    a = anonymize(http, url, study["big"])
    # pause it in the middle: the registry is saved with its position at that step
    wait_job(http, url, a, lambda d: d["State"] == "Running" and d["Progress"] >= 15)
    assert http.post(f"{url}/jobs/{a}/pause").status_code == 200
    paused = wait_job(http, url, a, lambda d: d["State"] == "Paused")
    assert 15 <= paused["Progress"] < 70
    # while it is paused, the file of an instance it has still to read (the 10th from the
    # end of its list) becomes a named pipe that nobody feeds: resumed, the job waits there,
    # Running until the kill, however fast the machine (a fast one otherwise finished the
    # remaining 30-85 % before the kill)
    saved = wait_saved(server.storage, lambda jobs: saved_state(jobs, a) == "Paused")
    order = saved[a]["Job"]["Instances"]
    assert len(order) == 300 and saved_position(saved, a) < 290
    uuid = http.get(f"{url}/instances/{order[-10]}/attachments/dicom/info").json()["Uuid"]
    held = os.path.join(server.storage, uuid[:2], uuid[2:4], uuid)
    os.rename(held, held + ".saved")
    os.mkfifo(held)
    assert http.post(f"{url}/jobs/{a}/resume").status_code == 200
    wait_job(http, url, a, lambda d: d["State"] == "Running")
    # behind it: a paused job and a pending job (ConcurrentJobs 1)
    p = anonymize(http, url, study["small1"])
    assert http.post(f"{url}/jobs/{p}/pause").status_code == 200
    q = anonymize(http, url, study["small2"])
    others = {j: get_job(http, url, j) for j in (p, q)}
    assert others[p]["State"] == "Paused" and others[q]["State"] == "Pending"
    # killed as soon as the saved registry holds the three jobs in these states (saved
    # within 0.1 s of a change): a fixed sleep let a fast machine finish the big job first
    wait_saved(server.storage, lambda jobs: (saved_state(jobs, a), saved_state(jobs, p), saved_state(jobs, q))
               == ("Running", "Paused", "Pending"))
    before = get_job(http, url, a)
    server.kill()
    assert before["State"] == "Running", before   # killed in the middle, not after the end
    os.remove(held)
    os.rename(held + ".saved", held)

    server.start()
    assert sorted(http.get(f"{url}/jobs").json()) == sorted([a, p, q])
    after = {j: get_job(http, url, j) for j in (a, p, q)}
    assert after[p]["State"] == "Paused"
    # back in the queue, or (on a fast or idle machine) already done by the time we look
    assert after[a]["State"] in ("Pending", "Running", "Success")
    # resumed from its saved step: restarted from the first one, it would show a few percent
    assert after[a]["Progress"] >= paused["Progress"]
    if after[a]["State"] != "Success":
        assert after[q]["State"] == "Pending"               # still behind it (ConcurrentJobs 1)
    assert after[a]["CreationTime"] == before["CreationTime"]
    for j in (p, q):
        assert after[j]["CreationTime"] == others[j]["CreationTime"]
    assert {after[j]["Type"] for j in (a, p, q)} == {"ResourceModification"}

    done = wait_job(http, url, a, lambda d: d["State"] in ("Success", "Failure"), interval=0.05)
    assert done["State"] == "Success", done
    assert done["Content"]["InstancesCount"] == 300 and done["Content"]["FailedInstancesCount"] == 0
    assert done["Content"]["IsAnonymization"] is True
    wait_job(http, url, q, lambda d: d["State"] == "Success", interval=0.05)

    anon_study = done["Content"]["ID"]
    instances = http.get(f"{url}/studies/{anon_study}/instances").json()
    assert len(instances) == 300
    assert len({i["ID"] for i in instances}) == 300
    assert len({i["MainDicomTags"]["SOPInstanceUID"] for i in instances}) == 300
    # the sources, one anonymized study from the big one and one from small2: nothing else
    studies = http.get(f"{url}/studies").json()
    assert len(studies) == 5 and anon_study in studies
    assert http.get(f"{url}/statistics").json()["CountInstances"] == 300 + 2 + 2 + 300 + 2
    # the anonymization finished once; the paused job is still paused
    time.sleep(0.3)
    final = get_job(http, url, a)
    assert final["State"] == "Success" and final["CompletionTime"] == done["CompletionTime"]
    assert get_job(http, url, p)["State"] == "Paused"

    # a clean stop saves the registry; `pacsbox serve --no-jobs` does not reload it, and
    # its own save at shutdown leaves an empty registry (reference section 3.7)
    http.close()
    server.stop()
    server.start()
    assert sorted(http.get(f"{url}/jobs").json()) == sorted([a, p, q])
    assert get_job(http, url, p)["State"] == "Paused"
    http.close()
    server.stop()
    server.start("--no-jobs")
    assert http.get(f"{url}/jobs").json() == []
    http.close()
    server.stop()
    server.start()
    assert http.get(f"{url}/jobs").json() == []
    assert len(http.get(f"{url}/studies").json()) == 5
