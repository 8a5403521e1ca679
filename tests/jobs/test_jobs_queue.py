"""The pending queue: higher ``Priority`` first, ties first-in first-out, negative values
allowed; ``ConcurrentJobs`` workers (reference sections 3.2, 3.6)."""
from __future__ import annotations

import os
import threading

import falcon.testing

from jobtypes import BlockerJob, jobs_app, StepsJob, wait_until  # noqa: F401 (fixtures)


def test_start_order_with_one_worker(jobs_app):
    app = jobs_app({"ConcurrentJobs": 1})
    jobs = app.ctx.jobs
    blocker = jobs.submit(BlockerJob("blocker"))
    wait_until(lambda: blocker.state.value == "Running")
    plan = [("a", -5), ("b", 10), ("c", 0), ("d", 10), ("e", -5), ("f", 0), ("g", -100), ("h", 3)]
    recs = [jobs.submit(StepsJob(1, label=label), priority=p) for label, p in plan]
    jobs.cancel(blocker.id)
    wait_until(lambda: all(r.state.value == "Success" for r in recs))
    assert app.ctx.stash["test-order"] == ["blocker", "b", "d", "h", "c", "f", "a", "e", "g"]


def test_resumed_job_goes_behind_its_equals(jobs_app):
    app = jobs_app({"ConcurrentJobs": 1})
    jobs = app.ctx.jobs
    blocker = jobs.submit(BlockerJob("blocker"))
    wait_until(lambda: blocker.state.value == "Running")
    a = jobs.submit(StepsJob(1, label="a"))
    b = jobs.submit(StepsJob(1, label="b"))
    jobs.pause(a.id)
    jobs.resume(a.id)
    jobs.cancel(blocker.id)
    wait_until(lambda: a.state.value == b.state.value == "Success")
    assert app.ctx.stash["test-order"] == ["blocker", "b", "a"]


def test_concurrent_jobs_two_workers(jobs_app):
    app = jobs_app({"ConcurrentJobs": 2})
    jobs = app.ctx.jobs
    b1, b2, b3 = (jobs.submit(BlockerJob(f"b{i}")) for i in range(3))
    wait_until(lambda: b1.state.value == b2.state.value == "Running")
    assert b3.state.value == "Pending"
    assert jobs.counts()["Running"] == 2
    jobs.cancel(b1.id)
    wait_until(lambda: b3.state.value == "Running")
    for b in (b2, b3):
        jobs.cancel(b.id)


def test_concurrent_jobs_zero_means_cores(jobs_app):
    app = jobs_app({"ConcurrentJobs": 0})
    assert app.ctx.jobs.concurrent == (os.cpu_count() or 1)
    workers = [t for t in threading.enumerate() if t.name.startswith("pacsbox-job-worker-")
               and t in app.ctx.jobs._workers]  # noqa: SLF001
    assert len(workers) == (os.cpu_count() or 1)


def test_synchronous_jobs_are_queued_with_their_priority(jobs_app):
    """A synchronous call waits in the queue like the others: with one worker busy, a
    sync job of priority 5 runs before an async one of priority 0 submitted earlier."""
    app = jobs_app({"ConcurrentJobs": 1})
    client = falcon.testing.TestClient(app)
    jobs = app.ctx.jobs
    blocker = jobs.submit(BlockerJob("blocker"))
    wait_until(lambda: blocker.state.value == "Running")
    low = client.simulate_post("/test-jobs/steps", json={"Label": "low", "Asynchronous": True}).json
    answers = {}

    def sync_call():
        answers["r"] = client.simulate_post("/test-jobs/steps", json={"Label": "high", "Priority": 5})

    t = threading.Thread(target=sync_call)
    t.start()
    wait_until(lambda: len(jobs.ids()) == 3)
    high = next(r for r in jobs.records() if r.job.public_content()["Label"] == "high")
    assert high.state.value == "Pending"     # queued, not run on the request thread
    jobs.cancel(blocker.id)
    t.join(60)
    assert answers["r"].status_code == 200
    assert answers["r"].json == {"Done": 3, "Steps": 3, "Label": "high"}
    wait_until(lambda: jobs.get(low["ID"]).state.value == "Success")
    assert app.ctx.stash["test-order"] == ["blocker", "high", "low"]
    assert high.id in client.simulate_get("/jobs").json   # still visible afterwards
