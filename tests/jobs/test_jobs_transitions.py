"""The transition table of reference section 3.4, action by action and state by state,
through ``POST /jobs/{id}/{action}`` (200 ``{}`` or 400 with an empty body)."""
from __future__ import annotations

import threading
import time

import falcon.testing
import pytest

from jobtypes import BlockerJob, japp, jclient, jobs_app, RetryJob, StepsJob, wait_until  # noqa: F401 (fixtures)

STATES = ["Pending", "Running", "Paused", "Retry", "Success", "Failure"]

# (state, action) -> (HTTP status, state right after the answer)
# "Running" pause/cancel are scheduled: the state changes at the next step boundary.
TABLE = {
    ("Pending", "pause"): (200, "Paused"), ("Pending", "cancel"): (200, "Failure"),
    ("Pending", "resume"): (400, "Pending"), ("Pending", "resubmit"): (400, "Pending"),
    ("Running", "pause"): (200, "Paused"), ("Running", "cancel"): (200, "Failure"),
    ("Running", "resume"): (400, "Running"), ("Running", "resubmit"): (400, "Running"),
    ("Paused", "pause"): (200, "Paused"), ("Paused", "cancel"): (200, "Failure"),
    ("Paused", "resume"): (200, "Pending"), ("Paused", "resubmit"): (400, "Paused"),
    ("Retry", "pause"): (200, "Paused"), ("Retry", "cancel"): (200, "Failure"),
    ("Retry", "resume"): (400, "Retry"), ("Retry", "resubmit"): (400, "Retry"),
    ("Success", "pause"): (200, "Success"), ("Success", "cancel"): (200, "Success"),
    ("Success", "resume"): (400, "Success"), ("Success", "resubmit"): (400, "Success"),
    ("Failure", "pause"): (200, "Failure"), ("Failure", "cancel"): (200, "Failure"),
    ("Failure", "resume"): (400, "Failure"), ("Failure", "resubmit"): (200, "Pending"),
}


def _make(app, state):
    """A job in ``state``; returns its ID and the blocker's ID (or None). The app has
    ConcurrentJobs 1; for Pending and Paused a blocker occupies the worker."""
    jobs = app.ctx.jobs
    blocker = None
    if state in ("Pending", "Paused"):
        blocker = jobs.submit(BlockerJob())
        wait_until(lambda: blocker.state.value == "Running")
        rec = jobs.submit(StepsJob(2))
        if state == "Paused":
            assert jobs.pause(rec.id)
    elif state == "Running":
        rec = jobs.submit(BlockerJob())
    elif state == "Retry":
        rec = jobs.submit(RetryJob(delay=60))
    elif state == "Success":
        rec = jobs.submit(StepsJob(2))
    else:
        rec = jobs.submit(StepsJob(2, fail_at=1, error="orthanc"))
    wait_until(lambda: rec.state.value == state)
    return rec.id, blocker.id if blocker else None


@pytest.mark.parametrize("action", ["pause", "cancel", "resume", "resubmit"])
@pytest.mark.parametrize("state", STATES)
def test_transition_table(jobs_app, state, action):
    app = jobs_app()
    client = falcon.testing.TestClient(app)
    job_id, blocker_id = _make(app, state)
    if (state, action) == ("Failure", "resubmit"):
        app.ctx.jobs.get(job_id).runtime = 100.0   # as after a long first run
    before = client.simulate_get(f"/jobs/{job_id}").json
    t_action = time.monotonic()
    r = client.simulate_post(f"/jobs/{job_id}/{action}")
    status, expected = TABLE[(state, action)]
    assert r.status_code == status
    if status == 200:
        assert r.json == {}
        assert r.headers["content-type"] == "application/json"
    else:
        assert r.content == b""
    if state == "Running" and action in ("pause", "cancel"):
        wait_until(lambda: client.simulate_get(f"/jobs/{job_id}").json["State"] == expected)
    after = client.simulate_get(f"/jobs/{job_id}").json
    if (state, action) in (("Paused", "resume"), ("Failure", "resubmit")):
        # back to Pending: with the worker free it may already run (and finish)
        assert after["State"] in ("Pending", "Running", "Success")
        if blocker_id:
            assert app.ctx.jobs.cancel(blocker_id)
        wait_until(lambda: client.simulate_get(f"/jobs/{job_id}").json["State"] == "Success")
        rerun = time.monotonic() - t_action   # the new run lies within this window
    else:
        assert after["State"] == expected
    if expected == "Failure" and before["State"] != "Failure":
        assert after["ErrorCode"] == 37
        assert after["ErrorDescription"] == "This job was canceled"
        assert after["ErrorDetails"] == ""
        assert "CompletionTime" in after
    if (state, action) == ("Failure", "resubmit"):
        done = client.simulate_get(f"/jobs/{job_id}").json
        assert done["ErrorCode"] == 0 and done["ErrorDetails"] == ""
        assert done["Content"]["Done"] == 2
        rec = app.ctx.jobs.get(job_id)
        assert rec.job.executed == [0, 0, 1]  # restarted from its first step
        # zeroed by the resubmission: the runtime of the new run only, whatever its speed
        assert before["EffectiveRuntime"] == 100.0
        assert done["EffectiveRuntime"] <= rerun + 0.001


@pytest.mark.parametrize("action", ["pause", "cancel", "resume", "resubmit"])
def test_action_on_unknown_job_is_400_empty(jclient, action):
    r = jclient.simulate_post(f"/jobs/0559f6c2-31c7-4fbe-8b78-72672a143d3f/{action}")
    assert r.status_code == 400
    assert r.content == b""


def test_unknown_action_is_405(japp, jclient):
    rec = japp.ctx.jobs.submit(StepsJob(1))
    wait_until(lambda: rec.state.value == "Success")
    r = jclient.simulate_post(f"/jobs/{rec.id}/restart")
    assert r.status_code == 405
    assert "POST" not in r.headers["allow"] and "GET" in r.headers["allow"]
    # GET on an action path is the output route, as in the reference
    r = jclient.simulate_get(f"/jobs/{rec.id}/pause")
    assert r.status_code == 404
    assert r.json["Details"] == "Job has no such output: pause"
    r = jclient.simulate_put(f"/jobs/{rec.id}/pause")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET,POST"   # as the reference


def test_pause_resume_running_keeps_progress(jobs_app):
    """Running → (pause) → Paused after the current step → (resume) → Pending → Running,
    continuing with the next step (no step repeated)."""
    app = jobs_app()
    jobs = app.ctx.jobs
    rec = jobs.submit(StepsJob(40, delay=0.02))
    wait_until(lambda: rec.job.done >= 5)
    assert jobs.pause(rec.id)
    wait_until(lambda: rec.state.value == "Paused")
    done = rec.job.done
    assert rec.progress == int(100 * done / 40 + 0.5)  # rounded half up, as Orthanc
    time.sleep(0.1)
    assert rec.job.done == done  # nothing runs while paused
    assert jobs.resume(rec.id)
    assert not jobs.resume(rec.id) or rec.state.value == "Pending"
    wait_until(lambda: rec.state.value == "Success")
    assert rec.job.executed == list(range(40))
    assert rec.job.stops == ["Paused", "Success"]
    assert rec.job.starts == 2


def test_retry_goes_back_to_pending_after_its_delay(jobs_app):
    app = jobs_app()
    t0 = time.monotonic()
    rec = app.ctx.jobs.submit(RetryJob(delay=0.2))
    wait_until(lambda: rec.state.value == "Retry")
    wait_until(lambda: rec.state.value == "Success")
    # it waited its delay in Retry: measured from before the submission, a lower bound that
    # holds on any machine (an upper bound would only measure the machine)
    assert time.monotonic() - t0 >= 0.2
    assert rec.job.calls == 2


def test_paused_retry_job_is_not_requeued_by_its_timer(jobs_app):
    app = jobs_app()
    jobs = app.ctx.jobs
    # a delay no machine outlasts between the Retry and the pause (with 0.1 s, a machine
    # that took longer than that let the timer fire first: Pending, Running, Success)...
    rec = jobs.submit(RetryJob(delay=60))
    wait_until(lambda: rec.state.value == "Retry")
    (timer,) = jobs._timers  # noqa: SLF001 - the job's retry timer
    assert timer.interval == 60
    assert jobs.pause(rec.id)
    assert rec.state.value == "Paused"
    # ...then the timer fires now: what it runs at the end of its delay, on its thread
    timer.cancel()
    fired = threading.Thread(target=timer.function, args=timer.args)
    fired.start()
    fired.join(30)
    assert not fired.is_alive()
    assert rec.state.value == "Paused"
    assert jobs.resume(rec.id)
    wait_until(lambda: rec.state.value == "Success")
