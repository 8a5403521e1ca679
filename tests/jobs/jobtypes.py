"""Small job types, plugins and fixtures for the jobs-engine tests (registered per test
through ``make_app(plugins=[JobsTestPlugin(), ...])``).

Test modules import the fixtures they use by name (``from jobtypes import japp``): a
``conftest.py`` here would shadow the top-level one for ``from conftest import ...``.
"""
from __future__ import annotations

import os
import socket
import threading
import time

import falcon.testing
import pytest

from pacsbox import (ErrorCode, InstancesJob, Job, JobOutput, OrthancError, RouteSpec, StepResult, hookimpl,
                     read_json_body, send_json)


class StepsJob(Job):
    """``steps`` steps; each waits ``delay`` seconds (interruptible: a stop request makes
    the step return without counting). ``fail_at`` makes step number ``fail_at`` fail:
    ``error`` = ``"orthanc"`` (raises OrthancError 9 "peer refused"), ``"value"`` (raises
    ValueError "boom"), ``"result"`` (returns FAILURE with code 2018).

    ``executed`` lists the step numbers run by this object (not saved), ``stops`` the
    reasons given to :meth:`stop`, ``starts`` the number of runs.
    """

    type_name = "TestSteps"

    def __init__(self, steps: int = 3, delay: float = 0.0, fail_at: int | None = None, error: str = "value",
                 label: str = "") -> None:
        super().__init__()
        self.steps, self.delay, self.fail_at, self.error, self.label = steps, delay, fail_at, error, label
        self.done = 0
        self.executed: list[int] = []
        self.stops: list[str] = []
        self.starts = 0

    def start(self, ctx):
        self.starts += 1
        ctx.stash.setdefault("test-order", []).append(self.label)

    def step(self, ctx):
        if self.delay and self.wait_stop(self.delay):
            return StepResult.CONTINUE
        i = self.done
        if self.fail_at == i:
            if self.error == "orthanc":
                raise OrthancError(ErrorCode.NETWORK_PROTOCOL, "peer refused")
            if self.error == "result":
                self.error_code = int(ErrorCode.CANNOT_STORE_INSTANCE)
                self.error_details = "step said no"
                return StepResult.FAILURE
            if self.error == "garbage":
                return "not a step result"
            raise ValueError("boom")
        self.executed.append(i)
        self.done += 1
        return StepResult.SUCCESS if self.done >= self.steps else StepResult.CONTINUE

    def stop(self, reason):
        self.stops.append(reason)

    def reset(self):
        """Back to the first step; the failure was transient (``fail_at`` cleared)."""
        self.done = 0
        self.fail_at = None

    def progress(self):
        return 100.0 * self.done / self.steps

    def public_content(self):
        return {"Done": self.done, "Steps": self.steps, "Label": self.label}

    def serialize(self):
        return {"Steps": self.steps, "Delay": self.delay, "FailAt": self.fail_at, "Error": self.error,
                "Label": self.label, "Done": self.done}

    @classmethod
    def from_serialized(cls, data, ctx):
        job = cls(data["Steps"], data["Delay"], data["FailAt"], data["Error"], data["Label"])
        job.done = data["Done"]
        return job


class GatedStepsJob(StepsJob):
    """Like :class:`StepsJob` (no ``delay``), but each step first waits until the test
    releases it: ``gate.release()`` lets one step run, so the job cannot get ahead of the
    test however fast the machine is. A stop request (pause, cancel, shutdown) ends the wait
    without counting the step. Not saved (:meth:`serialize` is None): the gate lives in the
    test only.

    Parameters
    ----------
    steps : int
    gate : threading.Semaphore
        One ``release()`` per step the job may run.
    label : str
    """

    type_name = "TestGatedSteps"

    def __init__(self, steps: int, gate: threading.Semaphore, label: str = "") -> None:
        super().__init__(steps, label=label)
        self.gate = gate

    def step(self, ctx):
        while not self.gate.acquire(timeout=0.01):
            if self.stop_requested:
                return StepResult.CONTINUE
        return super().step(ctx)

    def serialize(self):
        return None


class RestartingStepsJob(StepsJob):
    """Like :class:`StepsJob` but not resumable: restarts from its first step after a reload."""

    type_name = "TestRestartingSteps"
    resumable = False


class BlockerJob(Job):
    """Runs until paused or canceled (steps of 30 s that wake on a stop request)."""

    type_name = "TestBlocker"

    def __init__(self, label: str = "blocker") -> None:
        super().__init__()
        self.label = label
        self.steps = 0

    def start(self, ctx):
        ctx.stash.setdefault("test-order", []).append(self.label)

    def step(self, ctx):
        self.wait_stop(30)
        self.steps += 1
        return StepResult.CONTINUE

    def public_content(self):
        return {"Label": self.label}

    def serialize(self):
        return {"Label": self.label}

    @classmethod
    def from_serialized(cls, data, ctx):
        return cls(data["Label"])


class RetryJob(Job):
    """First step asks for a retry (after ``delay`` s), the second succeeds."""

    type_name = "TestRetry"

    def __init__(self, delay: float = 60.0) -> None:
        super().__init__()
        self.retry_delay = delay
        self.calls = 0

    def step(self, ctx):
        self.calls += 1
        return StepResult.RETRY if self.calls == 1 else StepResult.SUCCESS

    def public_content(self):
        return {"Calls": self.calls}


class PeerJob(Job):
    """Each step waits for one byte from a TCP peer, with no timeout: only
    :meth:`interrupt` (which shuts the socket down) gets it out of a silent peer."""

    type_name = "TestPeer"

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.sock: socket.socket | None = None
        self.received = 0
        self.stops: list[str] = []
        self.connections = 0

    def start(self, ctx):
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.connections += 1

    def step(self, ctx):
        data = self.sock.recv(1)
        if not data:
            raise ConnectionError("connection closed by the peer")
        self.received += 1
        return StepResult.CONTINUE

    def interrupt(self):
        s = self.sock
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self, reason):
        self.stops.append(reason)
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def public_content(self):
        return {"Received": self.received}


class OutputJob(Job):
    """One step; on success holds output ``report`` (bytes) and ``file`` (a file under
    ``directory``)."""

    type_name = "TestOutput"

    def __init__(self, directory: str, payload: bytes = b"hello output") -> None:
        super().__init__()
        self.directory, self.payload = directory, payload
        self.outputs: dict[str, JobOutput] = {}

    def step(self, ctx):
        path = os.path.join(self.directory, f"out-{id(self)}.bin")
        with open(path, "wb") as f:
            f.write(self.payload * 3)
        self.outputs = {"report": JobOutput("text/plain", "report.txt", data=self.payload),
                        "file": JobOutput("application/octet-stream", "file.bin", path=path)}
        return StepResult.SUCCESS

    def get_output(self, key):
        return self.outputs.get(key)

    def output_keys(self):
        return list(self.outputs)

    def delete_output(self, key):
        out = self.outputs.pop(key, None)
        if out is None:
            return False
        if out.path:
            os.remove(out.path)
        return True

    def public_content(self):
        return {"Outputs": sorted(self.outputs)}


class ListJob(InstancesJob):
    """An :class:`InstancesJob` over made-up IDs: ``bad*`` returns False, ``raise*``
    raises OrthancError 2018."""

    type_name = "TestList"

    def __init__(self, instances=None, permissive=False):
        super().__init__(instances, permissive)
        self.processed: list[str] = []

    def process_instance(self, ctx, instance_id):
        if instance_id.startswith("raise"):
            raise OrthancError(ErrorCode.CANNOT_STORE_INSTANCE, f"cannot store {instance_id}")
        if instance_id.startswith("bad"):
            return False
        self.processed.append(instance_id)
        return True

    def serialize(self):
        return self.base_state()

    @classmethod
    def from_serialized(cls, data, ctx):
        job = cls()
        job.load_base_state(data)
        return job


JOB_TYPES = [StepsJob, GatedStepsJob, RestartingStepsJob, BlockerJob, RetryJob, PeerJob, OutputJob, ListJob]


class SubmitRoute:
    """``POST /test-jobs/{kind}``: builds a job from the body and runs it as a
    job-creating route does (``ctx.jobs.run_request``), synchronous by default."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp, kind):
        body = read_json_body(req)
        if body is None:
            body = {}
        params = body if isinstance(body, dict) else {}
        if kind == "steps":
            job = StepsJob(params.get("Steps", 3), params.get("Delay", 0.0), params.get("FailAt"),
                           params.get("Error", "value"), params.get("Label", ""))
        elif kind == "list":
            job = ListJob(params.get("Instances", []))
        else:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"no test job {kind}")
        send_json(resp, self.ctx.jobs.run_request(job, body))


class JobsTestPlugin:
    """Registers the test job types and ``POST /test-jobs/{kind}``."""

    @hookimpl
    def register_job_types(self, ctx):
        return JOB_TYPES

    @hookimpl
    def register_routes(self, ctx):
        return [RouteSpec("/test-jobs/{kind}", SubmitRoute)]


class StateRecorder:
    """Records every ``job_state_changed`` notification (with the delivering thread)."""

    def __init__(self):
        self.events = []
        self.threads = set()
        self.lock = threading.Lock()

    @hookimpl
    def job_state_changed(self, ctx, job_info):
        with self.lock:
            self.events.append(job_info)
            self.threads.add(threading.current_thread().name)

    def transitions(self, job_id):
        with self.lock:
            return [(e.previous_state, e.state) for e in self.events if e.id == job_id]


def wait_until(predicate, timeout=60.0, interval=0.005):
    """Poll ``predicate`` until it is true; returns the time it took (seconds).

    The default ``timeout`` only guards against a hang: a loaded CI machine can be many
    times slower than a workstation, and no test may depend on how fast a job runs.

    Raises
    ------
    AssertionError
        Still false after ``timeout`` seconds.
    """
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - t0


@pytest.fixture
def jobs_app(make_app):
    """Factory: ``jobs_app(config=None, extra=(), **create_app_kwargs)`` → app with the test
    job types; ``ConcurrentJobs`` 1 unless the config says otherwise."""

    def factory(config=None, extra=(), **kw):
        cfg = {"ConcurrentJobs": 1}
        cfg.update(config or {})
        return make_app(cfg, plugins=[JobsTestPlugin(), *extra], **kw)

    return factory


@pytest.fixture
def japp(jobs_app):
    """An app with the test job types, ``ConcurrentJobs`` 1."""
    return jobs_app()


@pytest.fixture
def jclient(japp):
    """falcon TestClient of :func:`japp`."""
    return falcon.testing.TestClient(japp)
