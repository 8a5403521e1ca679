"""The real ``pacsbox serve`` process (waitress on a free loopback port, its own
configuration in ``tmp_path``) driven with ``requests`` and with the public client
``pyorthanc``, then stopped by its PID."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port, read
from conftest import testfile as data_path

from pacsbox import orthanc_id

PACSBOX = str(Path(sys.executable).parent / "pacsbox")
AUTH = ("alice", "s3cret")


@pytest.fixture
def server(tmp_path):
    port = free_port()
    config = tmp_path / "pacsbox.json"
    config.write_text("// pacsbox test configuration\n" + json.dumps({
        "Name": "IntegrationBox", "HttpPort": port, "DicomPort": free_port(), "DicomAet": "INTEG",
        "StorageDirectory": str(tmp_path / "storage"), "AuthenticationEnabled": True,
        "RegisteredUsers": {AUTH[0]: AUTH[1]}, "StableAge": 1, "MyPluginSection": {"x": 1},
    }, indent=2))
    env = {k: v for k, v in os.environ.items() if k != "PACSBOX_TRACE_PLUGINS"}
    proc = subprocess.Popen([PACSBOX, "serve", "--config", str(config)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"pacsbox serve exited: {proc.communicate()[1]}")
        try:
            if requests.get(url + "/system", auth=AUTH, timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "pacsbox serve did not start"
        time.sleep(0.1)
    yield url, proc, tmp_path
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)


def test_serve_with_requests_and_pyorthanc(server):
    from pyorthanc import Orthanc, find_patients, find_studies, upload

    url, proc, workdir = server
    # --- requests
    assert requests.get(url + "/system", timeout=30).status_code == 401
    system = requests.get(url + "/system", auth=AUTH, timeout=30).json()
    assert (system["Name"], system["DicomAet"], system["Version"], system["ApiVersion"]) == (
        "IntegrationBox", "INTEG", "1.10.1", 16)
    ct = read("CT_small.dcm")
    answer = requests.post(url + "/instances", data=ct, auth=AUTH, timeout=30).json()
    ct_study = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert answer["ParentPatient"] == orthanc_id("1CT1") and answer["ParentStudy"] == orthanc_id("1CT1", ct_study)
    assert answer["Status"] == "Success"
    assert requests.get(url + f"/instances/{answer['ID']}/file", auth=AUTH, timeout=30).content == ct
    assert requests.post(url + "/instances", data=ct, auth=AUTH, timeout=30).json()["Status"] == "AlreadyStored"
    stored = list((workdir / "storage").glob("??/??/*"))
    assert len(stored) == 1 and stored[0].read_bytes() == ct

    # --- pyorthanc
    client = Orthanc(url, username=AUTH[0], password=AUTH[1])
    assert client.get_system()["Name"] == "IntegrationBox"
    mr_path = data_path("MR_small.dcm")
    instances = upload(client, mr_path)
    assert len(instances) == 1 and instances[0].get_dicom_file_content() == read("MR_small.dcm")
    assert instances[0].uid == "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457"
    assert sorted(client.get_patients()) == sorted([orthanc_id("1CT1"), orthanc_id("4MR1")])
    patients = find_patients(client, query={"PatientName": "CompressedSamples*"})
    assert sorted(p.patient_id for p in patients) == ["1CT1", "4MR1"]
    mr = [p for p in patients if p.patient_id == "4MR1"][0]
    assert mr.name == "CompressedSamples^MR1" and mr.sex == "F"
    study = mr.studies[0]
    assert study.uid == "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"
    series = study.series[0]
    assert series.modality == "MR" and len(series.instances) == 1
    assert series.instances[0].simplified_tags["PatientID"] == "4MR1"
    studies = find_studies(client, query={"StudyDate": "20040101-20041231"})
    assert sorted(s.uid for s in studies) == sorted([ct_study, study.uid])
    assert client.post_tools_lookup("4MR1") == [{"ID": orthanc_id("4MR1"), "Path": f"/patients/{orthanc_id('4MR1')}",
                                                 "Type": "Patient"}]
    stats = client.get_statistics()
    assert (stats["CountPatients"], stats["CountInstances"]) == (2, 2)
    assert client.delete_patients_id(orthanc_id("1CT1")) == {"RemainingAncestor": None}
    assert client.get_patients() == [orthanc_id("4MR1")]
    assert len(list((workdir / "storage").glob("??/??/*"))) == 1
    # stability with StableAge 1
    deadline = time.monotonic() + 60
    while not requests.get(url + f"/patients/{orthanc_id('4MR1')}", auth=AUTH, timeout=30).json()["IsStable"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    # --- stop by PID
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(60)
    assert proc.returncode == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/system", auth=AUTH, timeout=5)
