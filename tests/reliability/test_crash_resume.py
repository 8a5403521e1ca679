"""Issue 13 cases 2 and 3: a job resumed after a SIGKILL produces exactly what an
uninterrupted run produces (same count, one new instance per source, no duplicate
InstanceNumber under fresh UIDs), with and without ``Transcode``, for modify, anonymize,
split and merge, at several kill points; and the storage folder and the index agree
afterwards (no orphan file, no dangling row).

Before the fix, ``Transcode`` to RLE drew a random SOP Instance UID for each written
instance (pydicom's ``compress``), so the chunk redone after the restart was stored again
under fresh UIDs; and the file written just before the kill stayed on disk, referenced by
no attachment.
"""
from __future__ import annotations

import collections

import pytest
import requests

from crash_helpers import make_server, make_study, storage_consistency, upload, wait_job

RLE = "1.2.840.10008.1.2.5"
N = 96


def _kill_at(server, http, job, progress):
    """SIGKILL the server once the job's progress reaches ``progress`` (percent)."""
    d = wait_job(http, server.url, job, lambda d: d["State"] in ("Success", "Failure") or d["Progress"] >= progress,
                 interval=0.002)
    assert d["State"] == "Running", f"the job ended before the kill point: {d}"
    server.kill()
    return d["Progress"]


@pytest.mark.parametrize("kind, transcode, progress", [
    ("anonymize", RLE, 20), ("anonymize", RLE, 60), ("anonymize", None, 40),
    ("modify", RLE, 40), ("modify", None, 70), ("split", None, 40), ("merge", None, 40),
])
def test_job_resumed_after_sigkill_gives_the_uninterrupted_result(tmp_path, kind, transcode, progress):
    server = make_server(tmp_path)
    server.start()
    try:
        with requests.Session() as http:
            url = server.url
            src = make_study(N, "SRC", size=256, series=3)
            study = upload(http, url, src)
            other = upload(http, url, make_study(N, "OTHER", size=256, series=3)) if kind == "merge" else None
            body = {"Asynchronous": True}
            if transcode:
                body["Transcode"] = transcode
            if kind == "anonymize":
                r = http.post(f"{url}/studies/{study}/anonymize", json=body)
            elif kind == "modify":
                body.update({"Replace": {"StudyDescription": "MODIFIED"}})
                r = http.post(f"{url}/studies/{study}/modify", json=body)
            elif kind == "split":
                series = http.get(f"{url}/studies/{study}/series").json()
                body.update({"Series": [s["ID"] for s in series], "KeepSource": True})
                r = http.post(f"{url}/studies/{study}/split", json=body)
            else:
                body.update({"Resources": [other], "KeepSource": False})
                r = http.post(f"{url}/studies/{study}/merge", json=body)
            assert r.status_code == 200, r.text
            job = r.json()["ID"]
            _kill_at(server, http, job, progress)
            server.start()
            done = wait_job(http, url, job, lambda d: d["State"] in ("Success", "Failure"), interval=0.05)
            assert done["State"] == "Success", done
            assert done["Content"]["InstancesCount"] == N and done["Content"]["FailedInstancesCount"] == 0

            if kind in ("anonymize", "modify"):
                target = done["Content"]["ID"]
                expected = N
            elif kind == "split":
                target = done["Content"]["TargetStudy"]
                expected = N
            else:
                target = study
                expected = 2 * N
            instances = http.get(f"{url}/studies/{target}/instances?expand").json()
            assert len(instances) == expected
            assert len({i["MainDicomTags"]["SOPInstanceUID"] for i in instances}) == expected
            # one instance per (series, InstanceNumber): no duplicate under fresh UIDs
            per_series = collections.Counter((i["ParentSeries"], i["MainDicomTags"]["InstanceNumber"])
                                             for i in instances)
            assert max(per_series.values()) == 1
            if kind in ("anonymize", "modify"):
                name = "AnonymizedFrom" if kind == "anonymize" else "ModifiedFrom"
                sources = {http.get(f"{url}/instances/{i['ID']}/metadata/{name}").text for i in instances}
                assert len(sources) == N
            if transcode:
                ts = {http.get(f"{url}/instances/{i['ID']}/metadata/TransferSyntax").text for i in instances[:5]}
                assert ts == {transcode}
            total = {"anonymize": 2 * N, "modify": 2 * N, "split": 2 * N, "merge": 2 * N}[kind]
            assert http.get(f"{url}/statistics").json()["CountInstances"] == total
    finally:
        server.stop()
    assert storage_consistency(tmp_path / "db") == {"orphans": [], "dangling": [], "temporary": []}
