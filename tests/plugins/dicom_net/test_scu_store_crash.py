"""A DicomModalityStore job survives a SIGKILL of ``pacsbox serve``: after the restart it
continues from the last instance whose sending was saved (not from the first), and every
instance reaches the peer."""
from __future__ import annotations

import io
import time

import pydicom
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from pacsbox.testing import ServeProcess, free_port
from saved_jobs import saved_position, wait_saved

N = 120


def _instances(n):
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    template.StudyInstanceUID = generate_uid()
    out = []
    for i in range(n):
        ds = template.copy()
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.file_meta = template.file_meta.copy()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append((ds.SOPInstanceUID, buf.getvalue()))
    return out


def test_store_job_resumes_after_sigkill(tmp_path, storage_scp):
    scp = storage_scp("SLOWSCP")

    def slow(ds):
        time.sleep(0.02)  # about 40 instances per second
        return 0x0000

    scp.status = slow
    port = free_port()
    cfg = {"HttpPort": port, "DicomPort": free_port(), "DicomAet": "CRASHSCU", "StorageDirectory": str(tmp_path / "db"),
           "SaveJobs": True, "ConcurrentJobs": 1, "StableAge": 60,
           "DicomModalities": {"slow": ["SLOWSCP", "127.0.0.1", scp.port]}}
    server = ServeProcess.write(tmp_path, cfg, tmp_path / "server.log")
    server.start()
    try:
        instances = _instances(N)
        for _, data in instances:
            assert requests.post(server.url + "/instances", data=data).status_code == 200
        study = requests.get(server.url + "/studies").json()[0]
        job_id = requests.post(server.url + "/modalities/slow/store",
                               json={"Resources": [study], "Asynchronous": True}).json()["ID"]
        deadline = time.monotonic() + 30
        while len(scp.received) < N // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # and the saved registry holds a position past the start (saved at most every
        # second: at ~50 instances with a margin of ~0.2 s, which a loaded saver thread
        # could miss, and the whole job was sent again)
        wait_saved(tmp_path / "db", lambda jobs: saved_position(jobs, job_id) > 0)
        server.kill()
        before = len(scp.received)
        assert N // 2 <= before < N
        server.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = requests.get(f"{server.url}/jobs/{job_id}").json()
            if job["State"] in ("Success", "Failure"):
                break
            time.sleep(0.05)
        assert job["State"] == "Success", job
        assert job["Content"]["InstancesCount"] == N and job["Content"]["FailedInstancesCount"] == 0
        received = [ds.SOPInstanceUID for ds, _ in scp.received]
        assert set(received) == {uid for uid, _ in instances}
        after = len(received) - before
        # continued from the saved position (saved at most every second, ~40 instances),
        # not from the first instance
        assert after < N - before + 60, (before, after)
        assert after < N
    finally:
        server.stop()
