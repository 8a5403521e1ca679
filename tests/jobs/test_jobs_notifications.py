"""``job_state_changed`` fires on every transition, on the notifier thread."""
from __future__ import annotations

import threading

from jobtypes import (BlockerJob, GatedStepsJob, jobs_app, RetryJob, StateRecorder, StepsJob,  # noqa: F401 (fixtures)
                      wait_until)


def test_every_transition_is_notified(jobs_app):
    rec_plugin = StateRecorder()
    app = jobs_app(extra=[rec_plugin])
    jobs = app.ctx.jobs
    gate = threading.Semaphore(0)
    a = jobs.submit(GatedStepsJob(5, gate), priority=4)   # paused before it can end
    gate.release(3)
    wait_until(lambda: a.job.done == 3)
    jobs.pause(a.id)
    wait_until(lambda: a.state.value == "Paused")
    jobs.resume(a.id)
    gate.release(2)
    wait_until(lambda: a.state.value == "Success")

    blocker = jobs.submit(BlockerJob())
    wait_until(lambda: blocker.state.value == "Running")
    b = jobs.submit(StepsJob(1))
    jobs.pause(b.id)
    jobs.cancel(b.id)
    jobs.resubmit(b.id)
    jobs.cancel(blocker.id)
    wait_until(lambda: b.state.value == "Success")

    r = jobs.submit(RetryJob(delay=0.05))
    wait_until(lambda: r.state.value == "Success")
    f = jobs.submit(StepsJob(2, fail_at=0, error="orthanc"))
    wait_until(lambda: f.state.value == "Failure")

    assert app.ctx.notifier.wait_idle()
    assert rec_plugin.transitions(a.id) == [
        (None, "Pending"), ("Pending", "Running"), ("Running", "Paused"), ("Paused", "Pending"),
        ("Pending", "Running"), ("Running", "Success")]
    assert rec_plugin.transitions(b.id) == [
        (None, "Pending"), ("Pending", "Paused"), ("Paused", "Failure"), ("Failure", "Pending"),
        ("Pending", "Running"), ("Running", "Success")]
    assert rec_plugin.transitions(blocker.id) == [(None, "Pending"), ("Pending", "Running"), ("Running", "Failure")]
    assert rec_plugin.transitions(r.id) == [
        (None, "Pending"), ("Pending", "Running"), ("Running", "Retry"), ("Retry", "Pending"),
        ("Pending", "Running"), ("Running", "Success")]
    assert rec_plugin.transitions(f.id) == [(None, "Pending"), ("Pending", "Running"), ("Running", "Failure")]
    last_a = [e for e in rec_plugin.events if e.id == a.id][-1]
    assert (last_a.type, last_a.priority, last_a.progress, last_a.error_code) == ("TestGatedSteps", 4, 100, 0)
    last_f = [e for e in rec_plugin.events if e.id == f.id][-1]
    assert last_f.error_code == 9
    last_blocker = [e for e in rec_plugin.events if e.id == blocker.id][-1]
    assert last_blocker.error_code == 37
    assert rec_plugin.threads == {"pacsbox-notify"}
