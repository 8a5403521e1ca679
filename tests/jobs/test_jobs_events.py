"""``GET /jobs/{id}/events``: Server-Sent Events of state and progress until the job ends,
through a real waitress server."""
from __future__ import annotations

import json
import threading

import requests

from jobtypes import BlockerJob, GatedStepsJob, JobsTestPlugin, wait_until


def _events(resp):
    """Parse an SSE stream into (event, id, data) tuples until it ends."""
    event = ident = None
    data = []
    for line in resp.iter_lines(decode_unicode=True):
        if line == "":
            if data:
                yield event, ident, json.loads("\n".join(data))
            event = ident = None
            data = []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "id":
                ident = value
            elif field == "data":
                data.append(value)


def test_events_follow_a_job_to_its_end(live_server):
    """One event per change: the job runs one step per event received (a gated job), so
    no change can come before the previous one was sent, however fast the job or slow the
    stream (events of changes that follow each other closely are merged: the latest state
    is sent)."""
    server = live_server({"ConcurrentJobs": 1}, plugins=[JobsTestPlugin()])
    jobs = server.app.ctx.jobs
    blocker = jobs.submit(BlockerJob())
    wait_until(lambda: blocker.state.value == "Running")
    gate = threading.Semaphore(0)
    rec = jobs.submit(GatedStepsJob(10, gate, label="sse"))
    received = []
    with requests.get(f"{server.url}/jobs/{rec.id}/events", stream=True, timeout=20) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["Cache-Control"] == "no-cache"
        it = _events(r)
        received.append(next(it))                 # the current state comes first
        assert received[0][0] == "Pending" and received[0][2]["Progress"] == 0
        jobs.cancel(blocker.id)                   # now it runs
        for ev in it:
            received.append(ev)
            if ev[0] == "Running":
                gate.release()                    # one more step
    assert [(e[0], e[2]["Progress"]) for e in received] == [
        ("Pending", 0), ("Running", 0), *(("Running", p) for p in range(10, 100, 10)), ("Success", 100)]
    assert [int(e[1]) for e in received] == list(range(1, len(received) + 1))
    last = received[-1][2]
    assert last["ID"] == rec.id and last["Content"] == {"Done": 10, "Steps": 10, "Label": "sse"}
    assert "CompletionTime" in last


def test_events_of_a_canceled_job_and_of_a_finished_one(live_server):
    server = live_server({"ConcurrentJobs": 1}, plugins=[JobsTestPlugin()])
    jobs = server.app.ctx.jobs
    rec = jobs.submit(BlockerJob())
    wait_until(lambda: rec.state.value == "Running")
    with requests.get(f"{server.url}/jobs/{rec.id}/events", stream=True, timeout=20) as r:
        it = _events(r)
        evs = [next(it)]
        # canceled once the stream is open (a timer could fire before a slow request
        # arrived, and the stream would hold the final event only)
        jobs.cancel(rec.id)
        evs += list(it)
    assert [e[0] for e in evs] == ["Running", "Failure"]
    assert evs[-1][2]["ErrorCode"] == 37
    # a finished job: one event, then the stream ends
    with requests.get(f"{server.url}/jobs/{rec.id}/events", stream=True, timeout=20) as r:
        evs = list(_events(r))
    assert [e[0] for e in evs] == ["Failure"]
    r = requests.get(f"{server.url}/jobs/0559f6c2-31c7-4fbe-8b78-72672a143d3f/events", timeout=5)
    assert r.status_code == 404 and r.content == b""
