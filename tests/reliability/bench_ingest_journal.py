"""Bench (not a test): wall and server CPU time of N REST uploads to a real ``pacsbox serve``.

It measures the cost of the pending-files journal's ``fdatasync`` (issue 13 case 3): run it
once with the code before the change and once after, on the same machine, e.g.::

    PYTHONPATH=/path/to/old/core python tests/reliability/bench_ingest_journal.py 500
    python tests/reliability/bench_ingest_journal.py 500

Each run uploads N distinct CT instances (pydicom's ``CT_small.dcm`` with new UIDs, 39 KB)
one after the other on one keep-alive connection, with ``SyncStorageArea`` true (the
default), three times, and prints the median wall time, uploads per second and the
server's CPU seconds (``utime + stime`` from ``/proc/PID/stat``).
"""
from __future__ import annotations

import io
import json
import os
import socket
import statistics
import sys
import tempfile
import time

import pydicom
import requests
from pydicom.data import get_testdata_file

import pacsbox
from pacsbox.testing import ServeProcess


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(n: int) -> list[bytes]:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    out = []
    for i in range(n):
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1013.9.{i // 100}"
        ds.SeriesInstanceUID = ds.StudyInstanceUID + ".1"
        ds.SOPInstanceUID = ds.SeriesInstanceUID + f".{i}"
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(files: list[bytes]) -> tuple[float, float]:
    """Upload ``files`` to a fresh server; returns (wall seconds, server CPU seconds)."""
    with tempfile.TemporaryDirectory() as d:
        serve = ServeProcess.write(d, {"HttpPort": _free_port(), "DicomServerEnabled": False,
                                       "StorageDirectory": os.path.join(d, "db"), "SyncStorageArea": True})
        serve.start()
        try:
            with requests.Session() as http:
                cpu0 = _cpu_seconds(serve.proc.pid)
                t0 = time.perf_counter()
                for data in files:
                    r = http.post(serve.url + "/instances", data=data, timeout=60)
                    assert r.status_code == 200, r.text
                wall = time.perf_counter() - t0
                cpu = _cpu_seconds(serve.proc.pid) - cpu0
        finally:
            serve.stop()
    return wall, cpu


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    files = _files(n)
    runs = [run_once(files) for _ in range(3)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    print(json.dumps({"pacsbox": os.path.dirname(pacsbox.__file__), "uploads": n, "wall_s": round(wall, 2),
                      "uploads_per_s": round(n / wall, 1), "server_cpu_s": round(cpu, 2),
                      "runs": [[round(w, 2), round(c, 2)] for w, c in runs]}))


if __name__ == "__main__":
    main()
