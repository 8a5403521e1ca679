"""``POST /tools/reset`` restarts ``pacsbox serve`` in the same process with the configuration
read again (issue 16 item 17; the reference Orthanc 1.10.1 answers ``{}`` and restarts)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import requests

from conftest import free_port


def _wait(url: str, proc, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return requests.get(url + "/system", timeout=1).json()
        except requests.ConnectionError:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
    raise AssertionError("pacsbox serve did not answer")


def test_reset_restarts_with_the_new_configuration(tmp_path):
    port = free_port()
    cfg = tmp_path / "config.json"
    base = {"HttpPort": port, "StorageDirectory": str(tmp_path / "db"), "DicomServerEnabled": False,
            "Name": "before", "PluginsBlocklist": ["dicom_net", "lua", "archive", "pdf", "metrics", "example"]}
    cfg.write_text(json.dumps(base))
    proc = subprocess.Popen([sys.executable, "-m", "pacsbox.cli", "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert _wait(url, proc)["Name"] == "before"
        from conftest import read
        iid = requests.post(url + "/instances", data=read("CT_small.dcm")).json()["ID"]
        cfg.write_text(json.dumps(dict(base, Name="after")))
        r = requests.post(url + "/tools/reset")
        assert (r.status_code, r.json(), r.headers["Content-Type"]) == (200, {}, "application/json")
        deadline = time.monotonic() + 30
        while True:
            try:
                name = requests.get(url + "/system", timeout=1).json()["Name"]
                if name == "after":
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        assert requests.get(f"{url}/instances/{iid}").status_code == 200  # same storage and index
        assert requests.get(url + "/tools/reset").status_code == 405
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "restarting (POST /tools/reset)" in out


def test_reset_of_an_embedded_app_only_answers(client):
    r = client.simulate_post("/tools/reset")
    assert (r.status_code, r.json) == (200, {})
    assert client.simulate_get("/system").status_code == 200
