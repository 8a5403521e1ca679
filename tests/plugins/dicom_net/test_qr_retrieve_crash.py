"""A retrieve survives a SIGKILL of ``pacsbox serve``: the job comes back with the same ID,
does not retrieve again the identifiers it had finished, retrieves only the instances of the
interrupted one that had not arrived, and pacsbox ends with each instance exactly once."""
from __future__ import annotations

import io
import threading
import time

import pydicom
import requests

from pacsbox.testing import ServeProcess, free_port
from qr_helpers import make_instances, start_scripted_qr, wait_for
from saved_jobs import saved_position, wait_saved


def test_sigkill_during_cmove_resumes_without_duplicates(tmp_path):
    uids = {0: "1.2.3.100", 1: "1.2.3.200"}
    study_a = make_instances(3, "CRA", series=1, study_uid=uids[0])
    study_b = make_instances(12, "CRB", series=1, study_uid=uids[1])
    by_study = {uids[0]: study_a, uids[1]: study_b}
    gate = threading.Event()
    moves = []
    http_port, dicom_port = free_port(), free_port()

    qr = start_scripted_qr("REMOTE")

    parsed = {study: [pydicom.dcmread(io.BytesIO(f)) for f in files] for study, files in by_study.items()}

    def answers(ident):
        level = str(ident.QueryRetrieveLevel)
        out = []
        if level == "STUDY":
            for i in (0, 1):
                a = pydicom.Dataset()
                a.QueryRetrieveLevel = "STUDY"
                a.PatientID = f"CR{i}"
                a.StudyInstanceUID = uids[i]
                a.AccessionNumber = ""
                out.append(a)
            return out
        for ds in parsed[str(ident.StudyInstanceUID)]:
            if level == "IMAGE" and str(ds.SeriesInstanceUID) != str(ident.SeriesInstanceUID):
                continue
            a = pydicom.Dataset()
            a.QueryRetrieveLevel = level
            a.PatientID = ds.PatientID
            a.StudyInstanceUID = ds.StudyInstanceUID
            a.SeriesInstanceUID = ds.SeriesInstanceUID
            if level == "IMAGE":
                a.SOPInstanceUID = ds.SOPInstanceUID
            if level == "IMAGE" or not any(x.SeriesInstanceUID == a.SeriesInstanceUID for x in out):
                out.append(a)
        return out

    def move(event):
        ident = event.identifier
        study = str(ident.StudyInstanceUID)
        level = str(ident.QueryRetrieveLevel)
        moves.append(study if level == "STUDY" else (level, str(ident.get("SOPInstanceUID", ""))))
        first_b = study == uids[1] and level == "STUDY"
        files = [ds for ds in parsed[study]
                 if level != "IMAGE" or str(ds.SOPInstanceUID) == str(ident.SOPInstanceUID)]
        yield "127.0.0.1", dicom_port
        yield len(files)
        for i, ds in enumerate(files):
            if first_b and i == 1:
                time.sleep(1.2)       # a step ends more than 1 s after the last save: progress is saved
            if first_b and i == 6:
                gate.wait(60)         # silent until pacsbox was killed
                return
            yield 0xFF00, ds

    qr.find_answers = answers
    qr.move = move
    cfg = {"Name": "qrcrash", "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "PACSBOX",
           "StorageDirectory": str(tmp_path / "db"), "SaveJobs": True, "ConcurrentJobs": 1, "StableAge": 60,
           "RemoteAccessAllowed": False, "DicomScuTimeout": 30,
           "DicomModalities": {"remote": ["REMOTE", "127.0.0.1", qr.port]}}
    server = ServeProcess.write(tmp_path, cfg, tmp_path / "server.log")
    try:
        server.start()
        url = server.url
        q = requests.post(url + "/modalities/remote/query", json={"Level": "Study"}).json()["Path"]
        job_id = requests.post(f"{url}{q}/retrieve", json={"Asynchronous": True}).json()["ID"]
        wait_for(lambda: requests.get(url + "/statistics").json()["CountInstances"] == 3 + 6, timeout=30)
        # killed once the saved registry holds the snapshot taken after the 1.2 s pause:
        # study A done (Position 1), study B partly retrieved (a sleep for that save lost
        # the race on a slow machine: then A is moved again after the restart)
        wait_saved(tmp_path / "db", lambda jobs: saved_position(jobs, job_id) == 1
                   and jobs[job_id]["Job"]["Partial"] is True)
        before = requests.get(f"{url}/jobs/{job_id}").json()
        assert before["State"] == "Running" and before["Progress"] >= 50, before
        server.kill()
        gate.set()

        server.start()
        info = wait_for(lambda: (lambda j: j if j["State"] in ("Success", "Failure") else None)(
            requests.get(f"{url}/jobs/{job_id}").json()), timeout=60)
        assert info["State"] == "Success", info
        assert info["CreationTime"] == before["CreationTime"]
        # study A was not moved again; of study B, only the 6 instances that had not arrived
        # were asked for after the restart, one by one
        assert moves[:2] == [uids[0], uids[1]]
        assert sorted(moves[2:]) == sorted(("IMAGE", str(d.SOPInstanceUID)) for d in parsed[uids[1]][6:])
        assert info["Content"]["InstancesCount"] == 3 + 12
        stats = requests.get(url + "/statistics").json()
        assert stats["CountInstances"] == 15 and stats["CountStudies"] == 2
        instances = requests.get(url + "/instances?expand").json()
        assert len({i["MainDicomTags"]["SOPInstanceUID"] for i in instances}) == 15
        changes = requests.get(url + "/changes?limit=1000&since=0").json()["Changes"]
        assert sum(1 for c in changes if c["ChangeType"] == "NewInstance") == 15
    finally:
        server.stop()
        qr.stop()
