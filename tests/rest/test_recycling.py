"""Protection and recycling (issue 16 item 10): ``/patients/{id}/protected``,
``MaximumPatientCount``, ``MaximumStorageSize`` side by side with the reference Orthanc
1.10.1 started with the same limits; ``MaximumStorageMode: "Reject"`` (Orthanc 1.11+,
absent from the reference) on pacsbox alone."""
from __future__ import annotations

import io
import json
import subprocess
import time

import pydicom
import pytest
import requests

from conftest import ORTHANC, free_port, read

pytestmark = pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")


def _orthanc(tmp_path, **options):
    """Start a scratch reference Orthanc with ``options``; (url, process)."""
    port = free_port()
    cfg = {"Name": "Ref", "StorageDirectory": str(tmp_path / "db"), "IndexDirectory": str(tmp_path / "db"),
           "HttpPort": port, "DicomPort": free_port(), "DicomServerEnabled": False, "RemoteAccessAllowed": False,
           "AuthenticationEnabled": False, "StableAge": 60, "WebDavEnabled": False, **options}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    log = open(tmp_path / "stdout.log", "wb")
    proc = subprocess.Popen([ORTHANC, f"--logdir={tmp_path}", str(tmp_path / "config.json")], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            requests.get(url + "/system", timeout=1)
            return url, proc, log
        except requests.ConnectionError:
            assert proc.poll() is None, (tmp_path / "stdout.log").read_text()
            time.sleep(0.05)
    pytest.fail("the reference Orthanc did not start")


@pytest.fixture
def pair(tmp_path, live_server):
    """Factory: ``pair(**limits)`` → (reference URL, pacsbox URL) with the same limits."""
    started = []

    def make(**options):
        d = tmp_path / f"ref{len(started)}"
        d.mkdir()
        url, proc, log = _orthanc(d, **options)
        started.append((proc, log))
        return url, live_server({"StableAge": 60, **options}).url

    yield make
    for proc, log in started:
        proc.terminate()
        proc.wait(10)
        log.close()


def patient_file(patient: int, instance: int = 0, pixels: int = 0) -> bytes:
    """A CT of patient ``P<patient>`` (``pixels`` extra bytes of private data for size)."""
    ds = pydicom.dcmread(io.BytesIO(read("CT_small.dcm")))
    root = "1.2.826.0.1.3680043.10.1404.10"
    ds.PatientID = f"P{patient}"
    ds.PatientName = f"Patient^{patient}"
    ds.StudyInstanceUID = f"{root}.{patient}"
    ds.SeriesInstanceUID = f"{root}.{patient}.1"
    ds.SOPInstanceUID = f"{root}.{patient}.1.{instance}"
    if pixels:
        ds.add_new(0x00091010, "LO", "PACSBOX")
        ds.add_new(0x00091100, "OB", b"\0" * pixels)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _patients(url: str) -> list[str]:
    return sorted(p["MainDicomTags"]["PatientID"] for p in requests.get(url + "/patients?expand").json())


def _pid(url: str, patient: str) -> str:
    return requests.post(url + "/tools/lookup", data=patient).json()[0]["ID"]


def _step(urls, data: bytes) -> list[int]:
    return [requests.post(u + "/instances", data=data).status_code for u in urls]


def test_protected_route_as_the_reference(pair):
    urls = pair()
    for u in urls:
        requests.post(u + "/instances", data=patient_file(1))
    pid = _pid(urls[0], "P1")
    study = requests.get(f"{urls[0]}/patients/{pid}").json()["Studies"][0]
    for method, path, body in (("GET", f"/patients/{pid}/protected", None),
                               ("PUT", f"/patients/{pid}/protected", "1"), ("GET", f"/patients/{pid}/protected", None),
                               ("PUT", f"/patients/{pid}/protected", " 0 "), ("GET", f"/patients/{pid}/protected", None),
                               ("PUT", f"/patients/{pid}/protected", "true"), ("GET", f"/patients/{pid}/protected", None),
                               ("PUT", f"/patients/{pid}/protected", "false"),
                               ("PUT", f"/patients/{pid}/protected", "2"), ("PUT", f"/patients/{pid}/protected", ""),
                               ("PUT", f"/patients/{pid}/protected", "True"),
                               ("GET", "/patients/nope/protected", None), ("PUT", "/patients/nope/protected", "1"),
                               ("GET", f"/patients/{study}/protected", None),
                               ("GET", f"/studies/{study}/protected", None), ("DELETE", f"/patients/{pid}/protected", None)):
        a, b = (requests.request(method, u + path, data=body) for u in urls)
        ja = a.json() if a.content.startswith(b"{") else a.content
        jb = b.json() if b.content.startswith(b"{") else b.content
        assert (a.status_code, ja) == (b.status_code, jb), (method, path, body)
        if a.status_code == 200:
            assert a.headers["Content-Type"] == b.headers["Content-Type"] == "text/plain"


def test_patient_count_recycling_as_the_reference(pair):
    urls = pair(MaximumPatientCount=2)
    assert _step(urls, patient_file(1)) == [200, 200]
    assert _step(urls, patient_file(2)) == [200, 200]
    for u in urls:
        assert requests.put(f"{u}/patients/{_pid(u, 'P1')}/protected", data="1").status_code == 200
    assert _step(urls, patient_file(3)) == [200, 200]       # P2 recycled (P1 protected)
    assert _patients(urls[0]) == _patients(urls[1]) == ["P1", "P3"]
    assert _step(urls, patient_file(4)) == [200, 200]       # P3 recycled
    assert _patients(urls[0]) == _patients(urls[1]) == ["P1", "P4"]
    for u in urls:
        requests.put(f"{u}/patients/{_pid(u, 'P1')}/protected", data="0")
    assert _step(urls, patient_file(4, 1)) == [200, 200]    # P4 stored again: now the most recent
    assert _step(urls, patient_file(5)) == [200, 200]       # the oldest, P1, goes
    assert _patients(urls[0]) == _patients(urls[1]) == ["P4", "P5"]
    for u in urls:  # every patient protected: no room
        for p in ("P4", "P5"):
            requests.put(f"{u}/patients/{_pid(u, p)}/protected", data="1")
    a, b = (requests.post(u + "/instances", data=patient_file(6)) for u in urls)
    assert (a.status_code, a.json()) == (b.status_code, b.json()), (a.text, b.text)
    assert _patients(urls[0]) == _patients(urls[1]) == ["P4", "P5"]
    # the change log of both: no row left for a recycled patient, none written for the deletion
    for u in urls:
        ids = {c["ID"] for c in requests.get(u + "/changes?limit=1000").json()["Changes"]}
        assert ids <= set(requests.get(u + "/patients").json()) | set(requests.get(u + "/studies").json()) \
            | set(requests.get(u + "/series").json()) | set(requests.get(u + "/instances").json())


def test_storage_size_recycling_as_the_reference(pair):
    urls = pair(MaximumStorageSize=1)
    size = len(patient_file(1, pixels=300_000))
    assert 300_000 < size < 340_000
    for p in (1, 2, 3):
        assert _step(urls, patient_file(p, pixels=300_000)) == [200, 200]
    assert _patients(urls[0]) == _patients(urls[1]) == ["P1", "P2", "P3"]
    for u in urls:
        requests.put(f"{u}/patients/{_pid(u, 'P1')}/protected", data="1")
    assert _step(urls, patient_file(4, pixels=300_000)) == [200, 200]
    assert _patients(urls[0]) == _patients(urls[1]) == ["P1", "P3", "P4"]
    # a new instance of P3 does not recycle P3 itself
    assert _step(urls, patient_file(3, 1, pixels=300_000)) == [200, 200]
    assert _patients(urls[0]) == _patients(urls[1])
    # an instance larger than the whole storage
    a, b = (requests.post(u + "/instances", data=patient_file(9, pixels=1_100_000)) for u in urls)
    assert (a.status_code, a.json()) == (b.status_code, b.json()), (a.text, b.text)
    stats = [requests.get(u + "/statistics").json() for u in urls]
    assert stats[0]["CountInstances"] == stats[1]["CountInstances"]
    assert int(stats[1]["TotalDiskSize"]) <= 1024 * 1024


def test_reject_mode_stores_nothing(live_server):
    s = live_server({"MaximumPatientCount": 2, "MaximumStorageMode": "Reject"})
    for p in (1, 2):
        assert requests.post(s.url + "/instances", data=patient_file(p)).status_code == 200
    before = requests.get(s.url + "/changes?last").json()["Last"]
    r = requests.post(s.url + "/instances", data=patient_file(3))
    assert (r.status_code, r.json()["OrthancStatus"], r.json()["OrthancError"]) == (500, 19, "The file storage is full")
    assert _patients(s.url) == ["P1", "P2"]
    assert requests.get(s.url + "/changes?last").json()["Last"] == before
    assert requests.get(s.url + "/statistics").json()["CountInstances"] == 2
    # an instance of a stored patient still fits (the count does not grow)
    assert requests.post(s.url + "/instances", data=patient_file(2, 1)).status_code == 200
    files = [p for p in (s.app.ctx.config.path("StorageDirectory")).rglob("*") if p.is_file()
             and len(p.name) == 36]
    assert len(files) == 3  # nothing left behind by the refused upload
    s2 = live_server({"MaximumStorageSize": 1, "MaximumStorageMode": "Reject"})
    assert requests.post(s2.url + "/instances", data=patient_file(1, pixels=600_000)).status_code == 200
    r = requests.post(s2.url + "/instances", data=patient_file(2, pixels=600_000))
    assert r.status_code == 500 and _patients(s2.url) == ["P1"]
