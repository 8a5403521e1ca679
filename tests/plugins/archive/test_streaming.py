"""Synchronous archives over a real waitress server: the ZIP is streamed (chunked,
``Connection: close``, no ``Content-Length``), and a client that hangs up mid-download
cancels the job and frees its worker within seconds."""
from __future__ import annotations

import os
import socket
import time

import requests
from archive_helpers import open_zip, synth

import pacsbox_archive.plugin as archive_plugin

ST = "1.2.826.0.1.3680043.8.498.501"


def _big_study(server, count: int, size: int) -> str:
    """``count`` instances of ``size`` random pixel bytes each in one study; its ID."""
    side = int((size // 2) ** 0.5)
    ctx = server.app.ctx
    sid = None
    for k in range(count):
        data = synth(patient_id="BIG", study_uid=ST, series_uid="1.2.826.0.1.3680043.8.498.511",
                     instance_number=k + 1, pixel_bytes=os.urandom(side * side * 2),
                     extra={"Rows": side, "Columns": side})
        sid = ctx.ingest.store(data).ids[1]
    return sid


def _jobs(server) -> list[dict]:
    return requests.get(server.url + "/jobs?expand", timeout=10).json()


def test_streamed_answer_headers(live_server):
    server = live_server({}, plugins=[archive_plugin])
    sid = _big_study(server, 3, 20000)
    r = requests.get(f"{server.url}/studies/{sid}/archive", timeout=30)
    assert r.status_code == 200
    assert r.headers["Connection"] == "close"
    assert r.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in r.headers
    assert r.headers["Content-Disposition"] == f'filename="{sid}.zip"'
    assert len(open_zip(r.content).namelist()) == 3


def test_file_answer_has_a_length(live_server):
    server = live_server({"SynchronousZipStream": False}, plugins=[archive_plugin])
    sid = _big_study(server, 3, 20000)
    r = requests.get(f"{server.url}/studies/{sid}/media", timeout=30)
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == len(r.content)
    assert "Transfer-Encoding" not in r.headers
    assert len(open_zip(r.content).namelist()) == 4


def test_client_hanging_up_cancels_the_job_and_frees_the_worker(live_server):
    # one worker only: a job stuck on a gone client would block every later job
    server = live_server({"ConcurrentJobs": 1}, plugins=[archive_plugin])
    sid = _big_study(server, 40, 2 * 1024 * 1024)        # ~80 MB of incompressible pixels
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"GET /studies/{sid}/archive HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    got = b""
    while len(got) < 8192:
        chunk = sock.recv(8192)
        assert chunk, "the server closed the connection early"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200 OK")
    running = [j for j in _jobs(server) if j["Type"] == "Archive"]
    assert len(running) == 1 and running[0]["State"] == "Running"
    sock.close()
    # the job blocks on the full socket until the hang-up is seen: canceled, not finished
    # (the deadline guards against a hang; how soon depends on the machine)
    deadline = time.time() + 60
    while time.time() < deadline:
        job = [j for j in _jobs(server) if j["Type"] == "Archive"][0]
        if job["State"] != "Running":
            break
        time.sleep(0.05)
    assert job["State"] == "Failure" and job["ErrorCode"] == 37, job
    assert job["ErrorDescription"] == "This job was canceled"
    assert job["Progress"] < 100
    # the server still serves, and the single worker runs the next job
    assert requests.get(server.url + "/system", timeout=10).status_code == 200
    r = requests.post(f"{server.url}/tools/create-archive",
                      json={"Resources": [sid], "Asynchronous": True}, timeout=10)
    jid = r.json()["ID"]
    deadline = time.time() + 60
    while requests.get(f"{server.url}/jobs/{jid}", timeout=10).json()["State"] != "Success":
        assert time.time() < deadline
        time.sleep(0.05)
    z = open_zip(requests.get(f"{server.url}/jobs/{jid}/archive", timeout=60).content)
    assert len(z.namelist()) == 40
