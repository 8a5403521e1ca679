"""``GET /jobs``, ``/jobs?expand``, ``/jobs/{id}`` fields and formats, outputs, ``DELETE``
and the history bound (reference sections 3.3-3.5)."""
from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone

import falcon.testing

from jobtypes import BlockerJob, japp, jclient, jobs_app, OutputJob, StepsJob, wait_until  # noqa: F401 (fixtures)

JOB_TIME = re.compile(r"^\d{8}T\d{6}\.\d{6}$")


def _utc(s):
    return datetime.strptime(s, "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc).timestamp()


def test_list_is_sorted_by_id_and_expand_matches(japp, jclient):
    jobs = japp.ctx.jobs
    recs = [jobs.submit(StepsJob(1, label=str(i))) for i in range(6)]
    wait_until(lambda: all(r.state.value == "Success" for r in recs))
    ids = jclient.simulate_get("/jobs").json
    assert ids == sorted(r.id for r in recs)
    expanded = jclient.simulate_get("/jobs?expand").json
    assert [j["ID"] for j in expanded] == ids
    assert {j["Content"]["Label"] for j in expanded} == {str(i) for i in range(6)}
    assert jclient.simulate_get("/jobs?expand=false").json == ids


def test_fields_of_a_finished_job(japp, jclient):
    t0, m0 = time.time(), time.monotonic()
    rec = japp.ctx.jobs.submit(StepsJob(4, delay=0.05, label="x"), priority=-3)
    wait_until(lambda: rec.state.value == "Success")
    window = time.monotonic() - m0   # the run lies within it
    r = jclient.simulate_get(f"/jobs/{rec.id}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    d = r.json
    assert sorted(d) == ["CompletionTime", "Content", "CreationTime", "EffectiveRuntime", "ErrorCode",
                         "ErrorDescription", "ErrorDetails", "ID", "Priority", "Progress", "State",
                         "Timestamp", "Type"]
    assert d["ID"] == rec.id and d["Type"] == "TestSteps" and d["State"] == "Success"
    assert d["Priority"] == -3
    assert d["Progress"] == 100 and isinstance(d["Progress"], int)
    assert d["ErrorCode"] == 0 and d["ErrorDescription"] == "Success" and d["ErrorDetails"] == ""
    assert d["Content"] == {"Done": 4, "Steps": 4, "Label": "x"}
    for k in ("CreationTime", "CompletionTime", "Timestamp"):
        assert JOB_TIME.match(d[k]), d[k]
    assert t0 - 1 < _utc(d["CreationTime"]) <= _utc(d["CompletionTime"]) <= _utc(d["Timestamp"]) < time.time() + 1
    assert isinstance(d["EffectiveRuntime"], float)
    assert 0.2 <= d["EffectiveRuntime"] <= window + 0.001   # 4 steps of 50 ms at least
    assert d["EffectiveRuntime"] == round(d["EffectiveRuntime"], 3)  # millisecond precision
    # Timestamp is the time of the answer
    time.sleep(0.01)
    assert jclient.simulate_get(f"/jobs/{rec.id}").json["Timestamp"] > d["Timestamp"]


def test_eta_only_while_running_and_runtime_across_pauses(japp, jclient):
    jobs = japp.ctx.jobs
    rec = jobs.submit(StepsJob(50, delay=0.02))
    wait_until(lambda: rec.progress > 5)
    d = jclient.simulate_get(f"/jobs/{rec.id}").json
    assert d["State"] == "Running"
    assert JOB_TIME.match(d["EstimatedTimeOfArrival"])
    assert _utc(d["EstimatedTimeOfArrival"]) >= _utc(d["Timestamp"])
    assert "CompletionTime" not in d
    jobs.pause(rec.id)
    wait_until(lambda: rec.state.value == "Paused")
    p1 = jclient.simulate_get(f"/jobs/{rec.id}").json
    assert "EstimatedTimeOfArrival" not in p1 and "CompletionTime" not in p1
    time.sleep(0.3)
    p2 = jclient.simulate_get(f"/jobs/{rec.id}").json
    assert p2["EffectiveRuntime"] == p1["EffectiveRuntime"]  # the clock stops while paused
    assert p2["Progress"] == p1["Progress"] > 0
    jobs.resume(rec.id)
    wait_until(lambda: rec.state.value == "Success")
    d = jclient.simulate_get(f"/jobs/{rec.id}").json
    assert "EstimatedTimeOfArrival" not in d
    assert p1["EffectiveRuntime"] < d["EffectiveRuntime"]
    # 50 steps of 20 ms: 1 s of running or more...
    assert 0.9 <= d["EffectiveRuntime"]
    # ...and the pause of 0.3 s or more is not counted, however slow the machine
    created, completed = _utc(d["CreationTime"]), _utc(d["CompletionTime"])
    assert completed - created >= d["EffectiveRuntime"] + 0.25


def test_pending_job_fields(japp, jclient):
    jobs = japp.ctx.jobs
    blocker = jobs.submit(BlockerJob())
    wait_until(lambda: blocker.state.value == "Running")
    rec = jobs.submit(StepsJob(2), priority=7)
    d = jclient.simulate_get(f"/jobs/{rec.id}").json
    assert d["State"] == "Pending" and d["Progress"] == 0 and d["EffectiveRuntime"] == 0.0
    assert d["Priority"] == 7
    assert "EstimatedTimeOfArrival" not in d and "CompletionTime" not in d
    jobs.cancel(blocker.id)


def test_unknown_job_is_404_empty(jclient):
    r = jclient.simulate_get("/jobs/0559f6c2-31c7-4fbe-8b78-72672a143d3f")
    assert r.status_code == 404 and r.content == b""
    r = jclient.simulate_delete("/jobs/0559f6c2-31c7-4fbe-8b78-72672a143d3f")
    assert r.status_code == 404 and r.content == b""


def test_outputs(japp, jclient, tmp_path):
    rec = japp.ctx.jobs.submit(OutputJob(str(tmp_path), b"0123456789"))
    wait_until(lambda: rec.state.value == "Success")
    r = jclient.simulate_get(f"/jobs/{rec.id}/report")
    assert r.status_code == 200 and r.content == b"0123456789"
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["content-disposition"] == 'filename="report.txt"'
    r = jclient.simulate_get(f"/jobs/{rec.id}/file")
    assert r.content == b"0123456789" * 3
    assert r.headers["content-length"] == "30"
    # no such output: the reference's 404 JSON error
    r = jclient.simulate_get(f"/jobs/{rec.id}/archive")
    assert r.status_code == 404
    assert r.json["OrthancStatus"] == 7 and r.json["Message"] == "Accessing an inexistent item"
    assert r.json["Details"] == "Job has no such output: archive"
    r = jclient.simulate_get("/jobs/0559f6c2-31c7-4fbe-8b78-72672a143d3f/archive")
    assert r.status_code == 404 and r.json["Details"] == "Job has no such output: archive"
    # DELETE of an output (1.12.1+), then it is gone
    path = rec.job.outputs["file"].path
    r = jclient.simulate_delete(f"/jobs/{rec.id}/file")
    assert r.status_code == 200 and r.content == b""
    assert not os.path.exists(path)
    assert jclient.simulate_get(f"/jobs/{rec.id}/file").status_code == 404
    assert jclient.simulate_delete(f"/jobs/{rec.id}/file").status_code == 404


def test_output_of_unfinished_job_is_404(japp, jclient, tmp_path):
    jobs = japp.ctx.jobs
    blocker = jobs.submit(BlockerJob())
    wait_until(lambda: blocker.state.value == "Running")
    rec = jobs.submit(OutputJob(str(tmp_path)))
    r = jclient.simulate_get(f"/jobs/{rec.id}/report")
    assert r.status_code == 404 and r.json["Details"] == "Job has no such output: report"
    jobs.cancel(blocker.id)


def test_delete_finished_job_refuses_unfinished(japp, jclient, tmp_path):
    jobs = japp.ctx.jobs
    done = jobs.submit(OutputJob(str(tmp_path)))
    wait_until(lambda: done.state.value == "Success")
    path = done.job.outputs["file"].path
    running = jobs.submit(BlockerJob())
    wait_until(lambda: running.state.value == "Running")
    pending = jobs.submit(StepsJob(1))
    r = jclient.simulate_delete(f"/jobs/{running.id}")
    assert r.status_code == 400 and r.json["OrthancStatus"] == 6
    assert jclient.simulate_delete(f"/jobs/{pending.id}").status_code == 400
    r = jclient.simulate_delete(f"/jobs/{done.id}")
    assert r.status_code == 200 and r.content == b""
    assert jclient.simulate_get(f"/jobs/{done.id}").status_code == 404
    assert done.id not in jclient.simulate_get("/jobs").json
    assert not os.path.exists(path)  # its outputs went with it
    jobs.cancel(running.id)
    wait_until(lambda: pending.state.value == "Success")
    assert jclient.simulate_delete(f"/jobs/{running.id}").status_code == 200
    assert sorted(jclient.simulate_get("/jobs").json) == [pending.id]


def test_history_keeps_the_newest_finished_jobs(jobs_app, tmp_path):
    app = jobs_app({"JobsHistorySize": 2})
    client = falcon.testing.TestClient(app)
    jobs = app.ctx.jobs
    paused = jobs.submit(BlockerJob("paused"), priority=-10)
    jobs.pause(paused.id)
    running = jobs.submit(BlockerJob("running"))
    wait_until(lambda: running.state.value == "Running")
    pending = jobs.submit(StepsJob(1), priority=-5)
    jobs.cancel(running.id)       # finished 1st
    wait_until(lambda: pending.state.value == "Success")   # finished 2nd
    first_out = jobs.submit(OutputJob(str(tmp_path)))
    wait_until(lambda: first_out.state.value == "Success")  # finished 3rd: evicts `running`
    path = first_out.job.outputs["file"].path
    assert set(client.simulate_get("/jobs").json) == {paused.id, pending.id, first_out.id}
    for _ in range(2):
        rec = jobs.submit(StepsJob(1))
        wait_until(lambda: rec.state.value == "Success")
    ids = set(client.simulate_get("/jobs").json)
    assert paused.id in ids and len(ids) == 3           # the paused job is never evicted
    assert first_out.id not in ids and not os.path.exists(path)   # evicted with its outputs
    assert client.simulate_get(f"/jobs/{running.id}").status_code == 404
    # Running and Pending jobs are never evicted either (canceled pending jobs finish
    # without a worker)
    blocker = jobs.submit(BlockerJob("blocker"))
    wait_until(lambda: blocker.state.value == "Running")
    waiting = jobs.submit(StepsJob(1))
    canceled = []
    for _ in range(4):
        rec = jobs.submit(StepsJob(1))
        jobs.cancel(rec.id)
        canceled.append(rec.id)
    ids = set(client.simulate_get("/jobs").json)
    assert ids == {paused.id, blocker.id, waiting.id, *canceled[-2:]}
    jobs.cancel(blocker.id)
