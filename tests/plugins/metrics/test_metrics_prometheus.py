"""A real Prometheus (Debian's ``prometheus``, installed by ``.ci/run``) scrapes a real
``pacsbox serve`` every second, with HTTP Basic auth against ``RegisteredUsers``, and its
HTTP API returns the number of stored instances."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import requests
from conftest import free_port, read
from metrics_helpers import ServeProcess, http, http_get

USER, PASSWORD = "alice", "s3cret"
FILES = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm"]


def prometheus_config(target: str) -> str:
    # YAML is a superset of JSON: no YAML library needed.
    job = {"metrics_path": "/tools/metrics-prometheus", "scrape_interval": "1s", "scrape_timeout": "1s",
           "static_configs": [{"targets": [target]}]}
    return json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "pacsbox", **job, "basic_auth": {"username": USER, "password": PASSWORD}},
            {"job_name": "pacsbox_wrong_password", **job, "basic_auth": {"username": USER, "password": "nope"}},
        ]})


def query(prom: str, expr: str) -> list:
    status, _, body = http_get(prom + "/api/v1/query", params={"query": expr})
    assert status == 200, body
    data = json.loads(body)
    assert data["status"] == "success"
    return data["data"]["result"]


def wait_ready(prom: str, proc: subprocess.Popen, log_path, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
        try:
            if http_get(prom + "/-/ready")[0] == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"prometheus not ready in {timeout} s: {log_path.read_text()[-3000:]}")


def wait_for(fn, timeout: float = 40.0, what: str = ""):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: last answer {last!r}")


@pytest.fixture
def prometheus_bin():
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("prometheus is not installed (.ci/run installs Debian's package)")
    return path


def test_prometheus_scrapes_pacsbox_with_basic_auth(tmp_path, prometheus_bin):
    pacs = ServeProcess(tmp_path / "pacsbox", {
        "HttpPort": free_port(), "DicomPort": free_port(), "SaveJobs": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}})
    (tmp_path / "pacsbox").mkdir()
    pacs.start(auth=(USER, PASSWORD))
    prom_port = free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    (tmp_path / "prometheus.yml").write_text(prometheus_config(f"127.0.0.1:{pacs.port}"), encoding="utf-8")
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        # without credentials pacsbox refuses, as Orthanc does
        status, headers, _ = http_get(pacs.url + "/tools/metrics-prometheus")
        assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="Orthanc Secure Area"'

        wait_ready(prom_url, prom, tmp_path / "prometheus.log")
        wait_for(lambda: query(prom_url, 'orthanc_count_instances{job="pacsbox"}'), what="a first scrape")
        for name in FILES:
            status, _, body = http("POST", pacs.url + "/instances", data=read(name), auth=(USER, PASSWORD))
            assert status == 200 and json.loads(body)["Status"] == "Success"

        def instances():
            result = query(prom_url, 'orthanc_count_instances{job="pacsbox"}')
            return result if result and result[0]["value"][1] == str(len(FILES)) else None

        [series] = wait_for(instances, what=f"orthanc_count_instances == {len(FILES)}")
        assert series["metric"] == {"__name__": "orthanc_count_instances", "instance": f"127.0.0.1:{pacs.port}",
                                    "job": "pacsbox"}
        [uploads] = query(prom_url, 'pacsbox_rest_api_request_duration_seconds_count'
                                    '{job="pacsbox",method="POST",route="/instances"}')
        assert uploads["value"][1] == str(len(FILES))
        [written] = query(prom_url, 'orthanc_storage_written_bytes{job="pacsbox"}')
        assert int(written["value"][1]) == sum(len(read(n)) for n in FILES)

        status, _, body = http_get(prom_url + "/api/v1/targets")
        targets = {t["labels"]["job"]: t for t in json.loads(body)["data"]["activeTargets"]}
        assert targets["pacsbox"]["health"] == "up" and targets["pacsbox"]["lastError"] == ""
        assert targets["pacsbox_wrong_password"]["health"] == "down"
        assert "401" in targets["pacsbox_wrong_password"]["lastError"]
    finally:
        prom.terminate()                  # by PID
        try:
            prom.wait(20)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(5)
        log.close()
        pacs.stop()
