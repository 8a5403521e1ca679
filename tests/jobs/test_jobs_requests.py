"""Job-creating requests: ``Synchronous``/``Asynchronous``/``Priority``/``Permissive``
(reference section 3.2), synchronous errors, ``JobsHistorySize: 0``."""
from __future__ import annotations

import os

import falcon.testing
import pytest

from jobtypes import japp, jclient, jobs_app, ListJob, OutputJob, wait_until  # noqa: F401 (fixtures)


def test_asynchronous_answer(japp, jclient):
    r = jclient.simulate_post("/test-jobs/steps", json={"Asynchronous": True, "Priority": -4, "Label": "z"})
    assert r.status_code == 200
    assert sorted(r.json) == ["ID", "Path"]
    assert r.json["Path"] == f"/jobs/{r.json['ID']}"
    rec = japp.ctx.jobs.get(r.json["ID"])
    assert rec.priority == -4
    wait_until(lambda: rec.state.value == "Success")
    assert jclient.simulate_get(r.json["Path"]).json["Content"]["Label"] == "z"


@pytest.mark.parametrize("body, sync", [
    ({}, True), ({"Synchronous": True}, True), ({"Synchronous": False}, False),
    ({"Asynchronous": True}, False), ({"Asynchronous": False}, True),
    ({"Synchronous": True, "Asynchronous": True}, True),      # Synchronous wins
    ({"Synchronous": False, "Asynchronous": False}, False),
])
def test_mode_fields(jclient, body, sync):
    r = jclient.simulate_post("/test-jobs/steps", json={**body, "Steps": 2})
    assert r.status_code == 200
    if sync:
        assert r.json == {"Done": 2, "Steps": 2, "Label": ""}
    else:
        assert sorted(r.json) == ["ID", "Path"]


@pytest.mark.parametrize("body, details", [
    ({"Synchronous": "yes"}, "Boolean value expected in field: Synchronous"),
    ({"Synchronous": None}, "Boolean value expected in field: Synchronous"),
    ({"Asynchronous": 1}, "Boolean value expected in field: Asynchronous"),
    ({"Priority": "3"}, "Integer value expected in field: Priority"),
    ({"Priority": 2.0}, "Integer value expected in field: Priority"),
    ({"Priority": True}, "Integer value expected in field: Priority"),
    ({"Permissive": "x"}, "Boolean value expected in field: Permissive"),
])
def test_malformed_fields_are_400(japp, jclient, body, details):
    r = jclient.simulate_post("/test-jobs/steps", json=body)
    assert r.status_code == 400
    assert r.json["OrthancStatus"] == 15 and r.json["Message"] == "Bad file format"
    assert r.json["Details"] == details
    assert japp.ctx.jobs.ids() == []    # no job was created


def test_synchronous_failure_is_the_jobs_error(japp, jclient):
    r = jclient.simulate_post("/test-jobs/steps", json={"FailAt": 1, "Error": "orthanc"})
    assert r.status_code == 500
    assert r.json["OrthancStatus"] == 9
    assert r.json["Message"] == "Error in the network protocol"
    assert r.json["Details"] == "peer refused"
    assert r.json["Method"] == "POST" and r.json["Uri"] == "/test-jobs/steps"
    (rec,) = japp.ctx.jobs.records()
    assert rec.state.value == "Failure" and rec.error_code == 9
    r = jclient.simulate_post("/test-jobs/steps", json={"FailAt": 0, "Error": "result"})
    assert r.status_code == 500 and r.json["OrthancStatus"] == 2018 and r.json["Details"] == "step said no"
    r = jclient.simulate_post("/test-jobs/steps", json={"FailAt": 0, "Error": "value"})
    assert r.status_code == 500 and r.json["OrthancStatus"] == -1
    assert r.json["Details"] == "ValueError: boom"


def test_history_size_zero_synchronous_still_answers(jobs_app, tmp_path):
    app = jobs_app({"JobsHistorySize": 0})
    client = falcon.testing.TestClient(app)
    r = client.simulate_post("/test-jobs/steps", json={"Steps": 3, "Label": "h0"})
    assert r.status_code == 200
    assert r.json == {"Done": 3, "Steps": 3, "Label": "h0"}
    assert client.simulate_get("/jobs").json == []      # evicted at once
    r = client.simulate_post("/test-jobs/steps", json={"FailAt": 1, "Error": "orthanc"})
    assert r.status_code == 500 and r.json["Details"] == "peer refused"
    # outputs stay readable until on_success returns, then go with the evicted job
    job = OutputJob(str(tmp_path), b"abc")
    seen = {}

    def take(j):
        out = j.get_output("file")
        seen["path"] = out.path
        return open(out.path, "rb")

    f = app.ctx.jobs.run_sync(job, on_success=take)
    assert not os.path.exists(seen["path"])   # deleted once the caller had it
    assert f.read() == b"abcabcabc"           # still readable through the open file
    f.close()
    assert app.ctx.jobs.ids() == []


def test_async_then_history_zero_forgets(jobs_app):
    app = jobs_app({"JobsHistorySize": 0})
    client = falcon.testing.TestClient(app)
    r = client.simulate_post("/test-jobs/steps", json={"Asynchronous": True})
    wait_until(lambda: client.simulate_get(r.json["Path"]).status_code == 404)


def test_permissive(japp, jclient):
    ids = ["i1", "bad2", "i3", "raise4", "i5"]
    r = jclient.simulate_post("/test-jobs/list", json={"Instances": ids, "Permissive": True})
    assert r.status_code == 200
    assert r.json == {"Description": "REST API", "InstancesCount": 5, "FailedInstancesCount": 2}
    rec = japp.ctx.jobs.records()[0]
    assert rec.job.failed == ["bad2", "raise4"] and rec.job.processed == ["i1", "i3", "i5"]
    # without Permissive, the first failing instance fails the job with its error
    r = jclient.simulate_post("/test-jobs/list", json={"Instances": ["i1", "raise2", "i3"]})
    assert r.status_code == 500 and r.json["OrthancStatus"] == 2018 and r.json["Details"] == "cannot store raise2"
    r = jclient.simulate_post("/test-jobs/list", json={"Instances": ["i1", "bad2", "i3"], "Permissive": False})
    assert r.status_code == 500 and r.json["OrthancStatus"] == -1
    assert r.json["Details"] == "Cannot process instance bad2"
    failed = [x for x in japp.ctx.jobs.records() if x.state.value == "Failure"]
    assert sorted(x.job.processed for x in failed) == [["i1"], ["i1"]]


def test_run_request_reads_permissive_only_for_jobs_that_have_it(japp):
    job = ListJob(["i1"])
    japp.ctx.jobs.run_request(job, {"Permissive": True})
    assert job.permissive is True
    # a non-object body (bare array/ID forms of some routes) counts as {}
    assert japp.ctx.jobs.run_request(ListJob(["x"]), ["x"]) == {
        "Description": "REST API", "InstancesCount": 1, "FailedInstancesCount": 0}
