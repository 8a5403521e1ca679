"""Side-by-side speed of the pdf plugin and the reference (Debian's Orthanc 1.10.1), issue 12.

Starts both servers on free loopback ports with scratch storage (``pacsbox serve`` as
installed, and ``/usr/sbin/Orthanc``), then measures them interleaved (request by
request, or in alternating half-second slices), each over one keep-alive connection, so
that a busy shared machine slows both alike:

1. ``POST /tools/create-dicom`` of a 1 MB PDF (a new random payload each time, so that
   every request stores a new instance): ``--creates`` requests each, p50/p90 latency;
2. ``GET /instances/{id}/pdf`` of one such instance, ``--seconds`` seconds each:
   requests/s and MB/s.

It prints both and the ratios (pacsbox / reference: latency below 1 and throughput above
1 mean pacsbox is faster)::

    python plugins/pdf/tools/bench_pdf.py [--creates 60] [--seconds 5] [--size 1048576]

Both servers are stopped (by their PIDs) at the end.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait until ``url/system`` answers (the process must stay alive)."""
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(url + "/system", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def start(kind: str, workdir: str) -> tuple[str, subprocess.Popen]:
    """Start ``kind`` ("pacsbox" or "orthanc") with scratch storage; returns (URL, process)."""
    port = free_port()
    d = os.path.join(workdir, kind)
    os.makedirs(d)
    cfg = {"Name": kind, "StorageDirectory": os.path.join(d, "db"), "IndexDirectory": os.path.join(d, "db"),
           "HttpPort": port, "DicomPort": free_port(), "DicomServerEnabled": False, "RemoteAccessAllowed": False,
           "AuthenticationEnabled": False, "WebDavEnabled": False, "StableAge": 60}
    path = os.path.join(d, "config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    log = open(os.path.join(d, "log.txt"), "wb")
    if kind == "orthanc":
        exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        cmd = [exe, f"--logdir={d}", path]
    else:
        env_exe = shutil.which("pacsbox")
        cmd = [env_exe, "serve", "--config", path] if env_exe else [sys.executable, "-m", "pacsbox.cli", "serve",
                                                                   "--config", path]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return url, proc


def make_pdf(size: int) -> bytes:
    """A PDF-like payload of ``size`` bytes with random content (``%PDF-`` first)."""
    head, tail = b"%PDF-1.4\n", b"\n%%EOF\n"
    return head + os.urandom(size - len(head) - len(tail)) + tail


def bench(urls: dict[str, str], creates: int, seconds: float, size: int) -> dict[str, dict]:
    """Measure the servers of ``urls`` (name → URL) *interleaved*: each create request
    goes to every server in turn, and ``/pdf`` is timed in alternating half-second slices,
    so that the load of a shared machine weighs on both alike."""
    sessions = {k: requests.Session() for k in urls}
    lat: dict[str, list[float]] = {k: [] for k in urls}
    last: dict[str, str] = {}
    for i in range(creates + 3):
        body = json.dumps({"Tags": {"PatientName": f"Bench^{i}"},
                           "Content": "data:application/pdf;base64," + base64.b64encode(make_pdf(size)).decode()})
        for k, url in urls.items():
            t0 = time.perf_counter()
            r = sessions[k].post(url + "/tools/create-dicom", data=body)
            dt = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            last[k] = r.json()["ID"]
            if i >= 3:  # warm-up
                lat[k].append(dt * 1000)
    count = {k: 0 for k in urls}
    spent = {k: 0.0 for k in urls}
    for k, url in urls.items():
        assert len(sessions[k].get(url + f"/instances/{last[k]}/pdf").content) == size
    end = time.perf_counter() + seconds * len(urls)
    while time.perf_counter() < end:
        for k, url in urls.items():
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.5:
                r = sessions[k].get(url + f"/instances/{last[k]}/pdf")
                assert r.status_code == 200 and len(r.content) == size
                count[k] += 1
            spent[k] += time.perf_counter() - t0
    out = {}
    for k in urls:
        q = statistics.quantiles(lat[k], n=10)
        out[k] = {"create_p50_ms": statistics.median(lat[k]), "create_p90_ms": q[8],
                  "pdf_req_per_s": count[k] / spent[k], "pdf_mb_per_s": count[k] * size / spent[k] / 1e6}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--creates", type=int, default=60)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--size", type=int, default=1 << 20)
    args = p.parse_args()
    procs = {}
    with tempfile.TemporaryDirectory() as work:
        try:
            urls = {}
            for kind in ("orthanc", "pacsbox"):
                urls[kind], procs[kind] = start(kind, work)
            results = bench(urls, args.creates, args.seconds, args.size)
        finally:
            for proc in procs.values():
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
    o, b = results["orthanc"], results["pacsbox"]
    print(f"{'':24} {'Orthanc 1.10.1':>15} {'pacsbox':>12} {'ratio':>8}")
    for key, better in (("create_p50_ms", "lower"), ("create_p90_ms", "lower"), ("pdf_req_per_s", "higher"),
                        ("pdf_mb_per_s", "higher")):
        print(f"{key:24} {o[key]:15.2f} {b[key]:12.2f} {b[key] / o[key]:8.2f}  ({better} is better)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
