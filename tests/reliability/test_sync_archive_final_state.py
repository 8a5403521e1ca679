"""Issue 13 case 5: ``test_synchronous_job_is_listed_and_priority_used`` failed about
1 time in 12 under CPU load: the streamed answer of a synchronous media request ended
before its job showed ``Success`` (the engine publishes the state after the job's last
step returns). The code was wrong, not the test: as Orthanc, the answer now ends only once
the job's final state is published. Made deterministic here by slowing the job's
``stop`` (run by the engine between the last step and the state change)."""
from __future__ import annotations

import time

import falcon.testing
import pytest

from pacsbox_archive.jobs import ArchiveJob

from plugins.archive.archive_helpers import archive_app, synth, upload


@pytest.mark.parametrize("kind", ["media", "archive"])
def test_synchronous_answer_ends_after_the_final_state(make_app, monkeypatch, kind):
    client = falcon.testing.TestClient(archive_app(make_app))
    ans = [upload(client, synth(sop_uid=f"1.2.826.0.1.3680043.8.498.9{k}", instance_number=k + 1)) for k in range(3)]
    real_stop = ArchiveJob.stop

    def slow_stop(self, reason):
        time.sleep(0.3)
        return real_stop(self, reason)

    monkeypatch.setattr("pacsbox_archive.jobs.ArchiveJob.stop", slow_stop)
    r = client.simulate_post(f"/studies/{ans[0]['ParentStudy']}/{kind}", json={"Synchronous": True, "Priority": -3})
    assert r.status_code == 200 and r.content[:2] == b"PK"
    jobs = client.simulate_get("/jobs?expand").json
    assert [(j["Type"], j["State"], j["Priority"]) for j in jobs] == \
        [("Media" if kind == "media" else "Archive", "Success", -3)]
