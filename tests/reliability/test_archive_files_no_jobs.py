"""Issue 13 case 4: files of archive jobs that no longer exist are removed at start.

SIGKILL during an asynchronous archive (a finished archive of another job kept beside
it), then restart with ``--no-jobs``: neither the partial file nor the finished output
stays in the archives folder. A plain restart keeps both (the jobs come back and use
them).
"""
from __future__ import annotations

import os

import requests

from crash_helpers import make_server, make_study, upload, wait_job
from saved_jobs import saved_state, wait_saved


def _files(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_sigkill_during_archive_then_no_jobs_leaves_no_archive_file(tmp_path):
    server = make_server(tmp_path, MediaArchiveSize=4)
    folder = tmp_path / "db" / "pacsbox-archives"
    server.start()
    try:
        with requests.Session() as http:
            url = server.url
            small = upload(http, url, make_study(3, "SMALL", size=64, series=1))
            big = upload(http, url, make_study(150, "BIG", size=512, series=3))
            r = http.post(f"{url}/studies/{small}/archive", json={"Asynchronous": True})
            done = wait_job(http, url, r.json()["ID"], lambda d: d["State"] == "Success", interval=0.02)
            assert len(_files(folder)) == 1
            r = http.post(f"{url}/studies/{big}/archive", json={"Asynchronous": True})
            job = r.json()["ID"]
            d = wait_job(http, url, job, lambda d: d["State"] != "Pending" and d["Progress"] >= 10, interval=0.002)
            # the engine saves the jobs ~60 ms after a change: on a fast machine both jobs could
            # still be unsaved here, and a job killed before its first save is lost by design:
            # killed once the saved registry holds both (a fixed sleep bet on the saver thread)
            wait_saved(tmp_path / "db", lambda jobs: saved_state(jobs, done["ID"]) == "Success"
                       and saved_state(jobs, job) is not None)
            server.kill()
            assert d["State"] == "Running", d
            assert len(_files(folder)) == 2
            # a plain restart keeps both: the finished one is still downloadable
            server.start()
            assert http.get(f"{url}/jobs/{done['ID']}/archive").status_code == 200
            server.kill()
            assert len(_files(folder)) == 2
            server.start("--no-jobs")
            assert http.get(f"{url}/jobs").json() == []
            assert _files(folder) == []
    finally:
        server.stop()
