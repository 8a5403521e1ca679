"""Helpers of the crash tests (issue 13 cases 2-4 and the crash campaign): a real
``pacsbox serve`` killed with SIGKILL and restarted, and a consistency check of the index
against the storage folder."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import requests

from jobs.test_jobs_crash import make_study, wait_job  # noqa: F401  (re-exported)
from conftest import free_port
from pacsbox.testing import ServeProcess


def make_server(tmp_path: Path, **options) -> ServeProcess:
    """A :class:`pacsbox.testing.ServeProcess` (not started) on free ports with ``SaveJobs`` and ``ConcurrentJobs: 1``."""
    cfg = {"Name": "crash", "HttpPort": free_port(), "DicomPort": free_port(), "DicomAet": "CRASH",
           "DicomServerEnabled": False, "StorageDirectory": str(tmp_path / "db"), "SaveJobs": True,
           "ConcurrentJobs": 1, "JobsHistorySize": 10, "StableAge": 60}
    cfg.update(options)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return ServeProcess(str(path), str(tmp_path / "server.log"))


def upload(http: requests.Session, url: str, files: list[bytes]) -> str:
    """POST every file; returns the Orthanc ID of the (last) study."""
    study = None
    for data in files:
        r = http.post(f"{url}/instances", data=data, timeout=60)
        assert r.status_code == 200, r.text
        study = r.json()["ParentStudy"]
    return study


def storage_consistency(storage: Path) -> dict[str, list[str]]:
    """Compare the attachment rows of a stopped server's index with its storage files.

    Parameters
    ----------
    storage : Path
        The ``StorageDirectory`` (holding ``index.db``).

    Returns
    -------
    dict
        ``orphans`` (files no attachment row references), ``dangling`` (rows whose file
        is missing), ``temporary`` (``*.tmp`` files left).
    """
    con = sqlite3.connect(str(storage / "index.db"))
    try:
        rows = {r[0] for r in con.execute("SELECT uuid FROM attachments")}
    finally:
        con.close()
    files, tmp = set(), []
    for d1 in os.listdir(storage):
        p1 = storage / d1
        if len(d1) != 2 or not p1.is_dir():
            continue
        for d2 in os.listdir(p1):
            for name in os.listdir(p1 / d2):
                if name.endswith(".tmp"):
                    tmp.append(name)
                else:
                    files.add(name)
    return {"orphans": sorted(files - rows), "dangling": sorted(rows - files), "temporary": sorted(tmp)}
