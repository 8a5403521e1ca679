"""Issue 13 case 17: with ``JobsHistorySize: 2``, 5 successful jobs give
``orthanc_jobs_total_success`` 5, and the totals never decrease between scrapes
(``orthanc_jobs_total_failed``, ``orthanc_jobs_total_completed`` likewise, Orthanc 1.13's
names); the seed's ``orthanc_jobs_success`` and siblings stay history counts."""
from __future__ import annotations

import re

import falcon.testing
import pacsbox_metrics.plugin as metrics_plugin

from builtin.builtin_helpers import make_study, post, upload


def scrape(client) -> dict[str, float]:
    text = client.simulate_get("/tools/metrics-prometheus").text
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(orthanc_jobs_\w+) (\S+)(?: \d+)?$", text, re.M)}


def test_job_totals_only_grow(make_app):
    client = falcon.testing.TestClient(make_app({"JobsHistorySize": 2}, plugins=[metrics_plugin]))
    study = upload(client, make_study(1, patient_id="TOT", series=1))["ParentStudy"]
    seen = []
    for i in range(5):
        assert post(client, f"/studies/{study}/modify", {"Replace": {"StudyDescription": f"S{i}"}}).status_code == 200
        seen.append(scrape(client))
    # the source's file gone from the storage: the next jobs fail while reading it
    iid = client.simulate_get(f"/studies/{study}/instances").json[0]["ID"]
    uuid = client.simulate_get(f"/instances/{iid}/attachments/dicom/info").json["Uuid"]
    client.app.ctx.storage.remove(uuid, 1)
    for i in range(2):
        r = post(client, f"/studies/{study}/modify", {"Replace": {"StudyDescription": "F"}})
        assert r.status_code >= 400
        seen.append(scrape(client))
    last = seen[-1]
    assert (last["orthanc_jobs_total_success"], last["orthanc_jobs_total_failed"],
            last["orthanc_jobs_total_completed"]) == (5, 2, 7)
    for name in ("orthanc_jobs_total_success", "orthanc_jobs_total_failed", "orthanc_jobs_total_completed"):
        values = [s[name] for s in seen]
        assert values == sorted(values), (name, values)
    assert [s["orthanc_jobs_total_success"] for s in seen[:5]] == [1, 2, 3, 4, 5]
    # the history-based metrics keep their meaning (at most JobsHistorySize jobs)
    assert last["orthanc_jobs_completed"] == 2 and last["orthanc_jobs_success"] + last["orthanc_jobs_failed"] == 2
