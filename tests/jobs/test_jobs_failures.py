"""A failing step ends its job in ``Failure`` with an ``ErrorCode`` and ``ErrorDetails``;
the engine keeps running. Pause/cancel of a running job even when its step waits on a
silent network peer (no timeout: only the interruption gets it out)."""
from __future__ import annotations

import socket
import threading
import time

import falcon.testing
import pytest

from pacsbox import Job, StepResult, hookimpl
from jobtypes import BlockerJob, japp, jclient, jobs_app, PeerJob, StepsJob, wait_until  # noqa: F401 (fixtures)


@pytest.mark.parametrize("error, code, description, details", [
    ("value", -1, "Internal error", "ValueError: boom"),
    ("orthanc", 9, "Error in the network protocol", "peer refused"),
    ("result", 2018, "Cannot store an instance", "step said no"),
    ("garbage", -1, "Internal error", "TypeError: step() returned 'not a step result', not a StepResult"),
])
def test_failing_step(japp, jclient, error, code, description, details):
    rec = japp.ctx.jobs.submit(StepsJob(5, fail_at=2, error=error))
    wait_until(lambda: rec.state.value == "Failure")
    d = jclient.simulate_get(f"/jobs/{rec.id}").json
    assert d["ErrorCode"] == code
    assert d["ErrorDescription"] == description
    assert d["ErrorDetails"] == details
    assert d["Progress"] == 40 and "CompletionTime" in d
    assert rec.job.stops == ["Failure"]
    # the engine keeps running
    nxt = japp.ctx.jobs.submit(StepsJob(2))
    wait_until(lambda: nxt.state.value == "Success")


class BrokenStart(Job):
    type_name = "TestBrokenStart"

    def start(self, ctx):
        raise RuntimeError("no resources")

    def step(self, ctx):  # pragma: no cover - never reached
        return StepResult.SUCCESS


class BrokenProgress(Job):
    type_name = "TestBrokenProgress"

    def step(self, ctx):
        return StepResult.SUCCESS

    def progress(self):
        raise ZeroDivisionError

    def public_content(self):
        raise KeyError("Content")


class RaisesWhenStopped(Job):
    """Waits in its step and raises once a stop is requested; it does not override
    ``interrupt``, so the exception is a failure, not an interruption."""

    type_name = "TestRaisesWhenStopped"

    def step(self, ctx):
        if self.wait_stop(30):
            raise ValueError("disk vanished")
        return StepResult.SUCCESS


class MoreTypes:
    @hookimpl
    def register_job_types(self, ctx):
        return [BrokenStart, BrokenProgress, RaisesWhenStopped]


def test_exception_of_a_non_interruptible_job_is_a_failure_even_when_pausing(jobs_app):
    app = jobs_app(extra=[MoreTypes()])
    rec = app.ctx.jobs.submit(RaisesWhenStopped())
    assert not rec.job.interruptible and PeerJob(1).interruptible
    wait_until(lambda: rec.state.value == "Running")
    app.ctx.jobs.pause(rec.id)
    wait_until(lambda: rec.state.value == "Failure")
    assert (rec.error_code, rec.error_details) == (-1, "ValueError: disk vanished")


def test_start_raising_and_broken_accessors(jobs_app):
    app = jobs_app(extra=[MoreTypes()])
    client = falcon.testing.TestClient(app)
    a = app.ctx.jobs.submit(BrokenStart())
    b = app.ctx.jobs.submit(BrokenProgress())
    wait_until(lambda: a.state.value == "Failure" and b.state.value == "Success")
    assert (a.error_code, a.error_details) == (-1, "RuntimeError: no resources")
    d = client.simulate_get(f"/jobs/{b.id}").json
    assert d["Content"] == {} and d["Progress"] == 100
    assert client.simulate_get("/jobs?expand").status_code == 200


def test_submit_unregistered_type_raises(japp):
    class Stray(Job):
        type_name = "NotRegistered"

    with pytest.raises(ValueError, match="NotRegistered"):
        japp.ctx.jobs.submit(Stray())


class SilentPeer:
    """A TCP server on loopback that accepts connections and never sends a byte."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def silent_peer():
    p = SilentPeer()
    yield p
    p.close()


def test_pause_and_cancel_of_a_step_blocked_on_a_peer(japp, jclient, silent_peer):
    rec = japp.ctx.jobs.submit(PeerJob(silent_peer.port))
    wait_until(lambda: rec.state.value == "Running" and len(silent_peer.conns) == 1)
    time.sleep(0.2)   # the step is now blocked in recv()
    # the peer never sends a byte and recv() has no timeout: the step can only end by
    # being interrupted (the wait's timeout guards against a hang, it measures nothing)
    assert jclient.simulate_post(f"/jobs/{rec.id}/pause").status_code == 200
    wait_until(lambda: rec.state.value == "Paused", timeout=20)
    d = jclient.simulate_get(f"/jobs/{rec.id}").json
    assert d["State"] == "Paused" and d["ErrorCode"] == 0 and d["ErrorDetails"] == ""   # not a failure
    assert rec.job.stops == ["Paused"]
    # resume: a new run connects again and blocks again
    assert jclient.simulate_post(f"/jobs/{rec.id}/resume").status_code == 200
    wait_until(lambda: rec.state.value == "Running" and len(silent_peer.conns) == 2)
    time.sleep(0.2)
    assert jclient.simulate_post(f"/jobs/{rec.id}/cancel").status_code == 200
    wait_until(lambda: rec.state.value == "Failure", timeout=20)
    d = jclient.simulate_get(f"/jobs/{rec.id}").json
    assert (d["ErrorCode"], d["ErrorDescription"], d["ErrorDetails"]) == (37, "This job was canceled", "")
    assert rec.job.stops == ["Paused", "Canceled"] and rec.job.connections == 2


def test_cancel_of_a_long_waiting_step(japp):
    """A step that waits with ``wait_stop`` (here 30 s) is cut short by a cancel: over well
    before the 30 s (the bound guards against that wait, not the machine's speed)."""
    rec = japp.ctx.jobs.submit(BlockerJob())
    wait_until(lambda: rec.state.value == "Running")
    time.sleep(0.1)
    t0 = time.monotonic()
    japp.ctx.jobs.cancel(rec.id)
    wait_until(lambda: rec.state.value == "Failure", timeout=15)
    assert time.monotonic() - t0 < 15 and rec.error_code == 37
    assert rec.job.steps == 1     # the step that was cut short, and no other


def test_close_interrupts_a_blocked_job(jobs_app, silent_peer):
    """The shutdown interrupts a step blocked on a silent peer: the worker ends within the
    engine's stop timeout (it waits that long, then gives up on a worker still blocked,
    which would not have called ``stop``)."""
    app = jobs_app({"SaveJobs": True})
    rec = app.ctx.jobs.submit(PeerJob(silent_peer.port))
    wait_until(lambda: rec.state.value == "Running" and silent_peer.conns)
    app.close()
    assert rec.job.stops == ["Shutdown"]      # the worker left the step and stopped the job
    assert rec.state.value == "Running"       # saved as Running: requeued at the next start
