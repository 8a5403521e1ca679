"""The jobs engine: a priority queue, ``ConcurrentJobs`` workers, the state machine of
Orthanc's ``JobsRegistry``, a bounded history, persistence and synchronous waits.

Source: Orthanc ``JobsEngine``/``JobsRegistry``; reference section 3 (transition table in
3.4, options in 3.6, persistence in 3.7).
"""
from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ..errors import ErrorCode, OrthancError
from .base import Job, JobInfo, JobOutput, JobState, StepResult

if TYPE_CHECKING:  # pragma: no cover
    from ..context import ServerContext

log = logging.getLogger("pacsbox.jobs")

#: Global property of the index holding the saved registry (Orthanc ``GlobalProperty_JobsRegistry``).
REGISTRY_PROPERTY = "JobsRegistry"


def job_time(t: float) -> str:
    """Epoch seconds → ``YYYYMMDDTHHMMSS.ffffff`` UTC (Orthanc's job time format)."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m%dT%H%M%S.%f")


def parse_job_time(s: str) -> float:
    """Inverse of :func:`job_time`."""
    return datetime.strptime(s, "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc).timestamp()


class StartupError(RuntimeError):
    """A registration conflict found while building the app (names both plugins)."""


class JobTypeRegistry:
    """Job types by ``type_name``, filled from the ``register_job_types`` hook."""

    def __init__(self) -> None:
        self._types: dict[str, tuple[type[Job], str]] = {}

    def add(self, cls: type[Job], plugin: str) -> None:
        """Register ``cls`` for ``plugin``.

        Raises
        ------
        StartupError
            Same ``type_name`` already registered (both plugin names in the message), or
            an empty ``type_name``.
        """
        name = getattr(cls, "type_name", "")
        if not name:
            raise StartupError(f"plugin {plugin!r}: job class {cls.__name__} has no type_name")
        if name in self._types and self._types[name][0] is not cls:
            raise StartupError(f"job type {name!r} registered by both plugin {self._types[name][1]!r} "
                               f"and plugin {plugin!r}")
        self._types[name] = (cls, plugin)

    def get(self, name: str) -> type[Job] | None:
        """The class registered for ``name``, or None."""
        t = self._types.get(name)
        return t[0] if t else None

    def names(self) -> list[str]:
        """Registered type names, sorted."""
        return sorted(self._types)

    def by_plugin(self) -> dict[str, list[str]]:
        """plugin name → its job type names."""
        out: dict[str, list[str]] = {}
        for name, (_cls, plugin) in self._types.items():
            out.setdefault(plugin, []).append(name)
        return out


class JobRecord:
    """The engine's bookkeeping for one job (what ``/jobs/{id}`` shows)."""

    def __init__(self, job_id: str, job: Job, priority: int, now: float) -> None:
        self.id = job_id
        self.job = job
        self.priority = int(priority)
        self.state = JobState.PENDING
        self.creation_time = now
        self.last_change_time = now
        self.completion_time: float | None = None
        self.runtime = 0.0                 # seconds spent Running, before the current run
        self.run_started: float | None = None
        self.error_code = 0
        self.error_details = ""
        self.progress = 0
        self.pause_requested = False
        self.cancel_requested = False
        self.started = False               # job.start() called for the current run
        self.version = 0                   # bumped on every visible change (SSE)
        self.seq = 0

    @property
    def effective_runtime(self) -> float:
        """float: seconds spent ``Running``, across pauses."""
        if self.run_started is not None:
            return self.runtime + (time.monotonic() - self.run_started)
        return self.runtime

    def info(self, previous: JobState | None) -> JobInfo:
        """Snapshot for ``job_state_changed``."""
        return JobInfo(self.id, self.job.type_name, self.state.value, previous.value if previous else None,
                       self.priority, self.progress, self.error_code)


class JobsEngine:
    """Runs jobs (``ctx.jobs``).

    Parameters
    ----------
    ctx : ServerContext
    registry : JobTypeRegistry
    concurrent_jobs : int
        Worker threads (Orthanc ``ConcurrentJobs``; 0 means the number of CPU cores).
    history_size : int
        Finished jobs kept (``JobsHistorySize``).
    save_jobs : bool
        Persist the registry in the index (``SaveJobs``).
    """

    SAVE_DELAY = 0.1
    SAVE_PERIOD = 10.0

    def __init__(self, ctx: "ServerContext", registry: JobTypeRegistry, *, concurrent_jobs: int = 2,
                 history_size: int = 10, save_jobs: bool = True) -> None:
        self.ctx = ctx
        self.registry = registry
        self.concurrent = concurrent_jobs if concurrent_jobs > 0 else (os.cpu_count() or 1)
        self.history_size = max(0, int(history_size))
        self.save_jobs = save_jobs
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, JobRecord] = {}
        self._queue: list[tuple[int, int, str]] = []
        self._history: "OrderedDict[str, None]" = OrderedDict()
        self._counter = itertools.count(1)
        self._workers: list[threading.Thread] = []
        self._stopping = False
        self._save_event = threading.Event()
        self._saver: threading.Thread | None = None
        self._dirty = False

    # ---- life cycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers and the saver thread."""
        self._stopping = False
        for i in range(self.concurrent):
            t = threading.Thread(target=self._worker, name=f"pacsbox-job-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        if self.save_jobs:
            self._saver = threading.Thread(target=self._save_loop, name="pacsbox-jobs-saver", daemon=True)
            self._saver.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers at their next step boundary, then save the registry.

        Running jobs stay ``Running`` in the saved registry and go back to ``Pending`` at
        the next start.
        """
        with self._lock:
            self._stopping = True
            for rec in self._jobs.values():
                if rec.state == JobState.RUNNING:
                    rec.job._stop_event.set()  # noqa: SLF001
            self._changed.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        self._workers = []
        self._save_event.set()
        if self._saver is not None:
            self._saver.join(5)
            self._saver = None
        if self.save_jobs:
            self.save()

    # ---- submission --------------------------------------------------------------------
    def submit(self, job: Job, priority: int = 0) -> JobRecord:
        """Queue a job.

        Parameters
        ----------
        job : Job
            An instance of a registered job type.
        priority : int
            Higher runs first; ties run first-in first-out; negative values allowed.

        Returns
        -------
        JobRecord
            ``.id`` is the new job's UUID.

        Raises
        ------
        ValueError
            The job's type is not registered.
        """
        if self.registry.get(job.type_name) is None:
            raise ValueError(f"job type {job.type_name!r} is not registered")
        now = time.time()
        rec = JobRecord(str(uuid.uuid4()), job, int(priority), now)
        with self._lock:
            self._jobs[rec.id] = rec
            self._enqueue(rec)
            self._touch(rec, None)
        return rec

    def _enqueue(self, rec: JobRecord) -> None:
        rec.seq = next(self._counter)
        heapq.heappush(self._queue, (-rec.priority, rec.seq, rec.id))
        self._changed.notify_all()

    def wait(self, rec: JobRecord, timeout: float | None = None) -> JobRecord:
        """Block until ``rec`` is ``Success`` or ``Failure`` (or ``timeout`` seconds)."""
        with self._lock:
            self._changed.wait_for(lambda: rec.state.is_final, timeout)
        return rec

    def run_sync(self, job: Job, priority: int = 0) -> dict[str, Any]:
        """Submit, wait, and return the job's content (Orthanc's ``Synchronous`` mode).

        Raises
        ------
        OrthancError
            The job failed: its ``ErrorCode`` and ``ErrorDetails``.
        """
        rec = self.submit(job, priority)
        self.wait(rec)
        if rec.state == JobState.SUCCESS:
            return rec.job.public_content()
        raise OrthancError(rec.error_code or ErrorCode.INTERNAL_ERROR, rec.error_details or None)

    def run_request(self, job: Job, body: Mapping[str, Any] | None, *, synchronous: bool = True) -> dict[str, Any]:
        """Run a job as a job-creating REST route does (reference section 3.2).

        Parameters
        ----------
        job : Job
        body : mapping or None
            The request's JSON object: ``Synchronous`` (wins), else ``Asynchronous``
            (inverted), else ``synchronous``; ``Priority`` (int, default 0).
        synchronous : bool
            The route's default mode.

        Returns
        -------
        dict
            Synchronous: the job's content. Asynchronous: ``{"ID": ..., "Path": "/jobs/..."}``.

        Raises
        ------
        OrthancError
            Synchronous mode and the job failed; or a malformed ``Priority``.
        """
        sync, priority = request_mode(body, synchronous)
        if sync:
            return self.run_sync(job, priority)
        rec = self.submit(job, priority)
        return {"ID": rec.id, "Path": f"/jobs/{rec.id}"}

    # ---- queries -------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        """The record of ``job_id``, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def ids(self) -> list[str]:
        """Every job ID, sorted alphabetically (as ``GET /jobs``)."""
        with self._lock:
            return sorted(self._jobs)

    def records(self) -> list[JobRecord]:
        """Every record, sorted by ID."""
        with self._lock:
            return [self._jobs[k] for k in sorted(self._jobs)]

    def describe(self, rec: JobRecord) -> dict[str, Any]:
        """The ``/jobs/{id}`` JSON object of a record (reference section 3.3)."""
        with self._lock:
            content = rec.job.public_content()
            d: dict[str, Any] = {}
            if rec.state.is_final and rec.completion_time is not None:
                d["CompletionTime"] = job_time(rec.completion_time)
            d["Content"] = content
            d["CreationTime"] = job_time(rec.creation_time)
            d["EffectiveRuntime"] = round(rec.effective_runtime, 3)
            d["ErrorCode"] = rec.error_code
            try:
                d["ErrorDescription"] = ErrorCode(rec.error_code).description
            except ValueError:
                d["ErrorDescription"] = "Unknown error"
            d["ErrorDetails"] = rec.error_details
            if rec.state == JobState.RUNNING and rec.progress > 1:
                elapsed = rec.effective_runtime
                remaining = elapsed * (100 - rec.progress) / rec.progress
                d["EstimatedTimeOfArrival"] = job_time(time.time() + remaining)
            d["ID"] = rec.id
            d["Priority"] = rec.priority
            d["Progress"] = rec.progress
            d["State"] = rec.state.value
            d["Timestamp"] = job_time(time.time())
            d["Type"] = rec.job.type_name
            return d

    def counts(self) -> dict[str, int]:
        """Number of jobs per state name (for metrics)."""
        with self._lock:
            out = {s.value: 0 for s in JobState}
            for rec in self._jobs.values():
                out[rec.state.value] += 1
            return out

    # ---- actions (reference section 3.4) ----------------------------------------------
    def pause(self, job_id: str) -> bool:
        """``POST /jobs/{id}/pause``; returns False when refused (unknown job)."""
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None:
                return False
            if rec.state in (JobState.PENDING, JobState.RETRY):
                self._set_state(rec, JobState.PAUSED)
            elif rec.state == JobState.RUNNING:
                rec.pause_requested = True
                rec.job._stop_event.set()  # noqa: SLF001
            return True

    def cancel(self, job_id: str) -> bool:
        """``POST /jobs/{id}/cancel``; returns False when refused (unknown job)."""
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None:
                return False
            if rec.state in (JobState.PENDING, JobState.RETRY, JobState.PAUSED):
                rec.error_code = int(ErrorCode.CANCELED_JOB)
                rec.error_details = ""
                self._finish(rec, JobState.FAILURE)
            elif rec.state == JobState.RUNNING:
                rec.cancel_requested = True
                rec.job._stop_event.set()  # noqa: SLF001
            return True

    def resume(self, job_id: str) -> bool:
        """``POST /jobs/{id}/resume``: only a ``Paused`` job goes back to ``Pending``."""
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None or rec.state != JobState.PAUSED:
                return False
            rec.pause_requested = False
            rec.job._stop_event.clear()  # noqa: SLF001
            self._set_state(rec, JobState.PENDING)
            self._enqueue(rec)
            return True

    def resubmit(self, job_id: str) -> bool:
        """``POST /jobs/{id}/resubmit``: only a ``Failure`` job restarts from its first step."""
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None or rec.state != JobState.FAILURE:
                return False
            rec.job.reset()
            rec.job._stop_event.clear()  # noqa: SLF001
            rec.job.error_code = 0
            rec.job.error_details = ""
            rec.runtime = 0.0
            rec.error_code = 0
            rec.error_details = ""
            rec.completion_time = None
            rec.cancel_requested = rec.pause_requested = False
            rec.started = False
            self._history.pop(rec.id, None)
            self._set_state(rec, JobState.PENDING)
            self._enqueue(rec)
            return True

    def delete(self, job_id: str) -> bool:
        """``DELETE /jobs/{id}``: forget a finished job and its outputs (Orthanc 1.12.2+)."""
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None or not rec.state.is_final:
                return False
            self._forget(rec)
            self._mark_dirty()
            return True

    def get_output(self, job_id: str, key: str) -> JobOutput | None:
        """Output ``key`` of a successful job, or None."""
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None or rec.state != JobState.SUCCESS:
                return None
            return rec.job.get_output(key)

    def delete_output(self, job_id: str, key: str) -> bool:
        """Drop output ``key`` of a job; returns whether it existed."""
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None:
                return False
            return rec.job.delete_output(key)

    # ---- server-sent events -------------------------------------------------------------
    def follow(self, rec: JobRecord, poll: float = 15.0) -> Iterator[dict[str, Any] | None]:
        """Yield ``describe(rec)`` at every visible change until the job is final.

        Yields None after ``poll`` seconds without change (callers send a keep-alive).
        """
        last = -1
        while True:
            with self._lock:
                if rec.version == last:
                    self._changed.wait_for(lambda: rec.version != last or self._stopping, poll)
                if rec.version == last:
                    if self._stopping:
                        return
                    snap = None
                else:
                    last = rec.version
                    snap = self.describe(rec)
                    final = rec.state.is_final
            yield snap
            if snap is not None and final:
                return

    # ---- internals ------------------------------------------------------------------------
    def _touch(self, rec: JobRecord, previous: JobState | None, notify: bool = True) -> None:
        rec.version += 1
        rec.last_change_time = time.time()
        self._changed.notify_all()
        if notify:
            self._mark_dirty()
            self.ctx.notifier.emit("job_state_changed", ctx=self.ctx, job_info=rec.info(previous))

    def _set_state(self, rec: JobRecord, state: JobState) -> None:
        previous = rec.state
        if rec.state == JobState.RUNNING and rec.run_started is not None:
            rec.runtime += time.monotonic() - rec.run_started
            rec.run_started = None
        rec.state = state
        if state == JobState.RUNNING:
            rec.run_started = time.monotonic()
        self._touch(rec, previous)

    def _finish(self, rec: JobRecord, state: JobState) -> None:
        rec.completion_time = time.time()
        if state == JobState.SUCCESS:
            rec.progress = 100
            rec.error_code = 0
            rec.error_details = ""
        self._set_state(rec, state)
        self._history[rec.id] = None
        self._history.move_to_end(rec.id)
        while len(self._history) > self.history_size:
            old_id, _ = self._history.popitem(last=False)
            old = self._jobs.get(old_id)
            if old is not None:
                self._forget(old)

    def _forget(self, rec: JobRecord) -> None:
        self._jobs.pop(rec.id, None)
        self._history.pop(rec.id, None)
        for key in ("archive",):
            try:
                rec.job.delete_output(key)
            except Exception:  # noqa: BLE001
                log.exception("could not delete output of job %s", rec.id)

    def _next(self) -> JobRecord | None:
        while self._queue:
            _p, _s, job_id = heapq.heappop(self._queue)
            rec = self._jobs.get(job_id)
            if rec is not None and rec.state == JobState.PENDING:
                return rec
        return None

    def _worker(self) -> None:
        while True:
            with self._lock:
                rec = None
                while not self._stopping:
                    rec = self._next()
                    if rec is not None:
                        break
                    self._changed.wait(1.0)
                if self._stopping or rec is None:
                    return
                rec.job._stop_event.clear()  # noqa: SLF001
                self._set_state(rec, JobState.RUNNING)
            self._run(rec)

    def _run(self, rec: JobRecord) -> None:
        job = rec.job
        ctx = self.ctx
        metrics = ctx.metrics
        try:
            if not rec.started:
                job.start(ctx)
                rec.started = True
            while True:
                with self._lock:
                    if rec.cancel_requested:
                        rec.cancel_requested = False
                        rec.pause_requested = False
                        rec.started = False
                        rec.error_code = int(ErrorCode.CANCELED_JOB)
                        rec.error_details = ""
                        self._finish(rec, JobState.FAILURE)
                        self._safe_stop(job, "Canceled")
                        return
                    if rec.pause_requested:
                        rec.pause_requested = False
                        rec.started = False
                        self._set_state(rec, JobState.PAUSED)
                        self._safe_stop(job, "Paused")
                        return
                    if self._stopping:
                        rec.started = False
                        if rec.run_started is not None:
                            rec.runtime += time.monotonic() - rec.run_started
                            rec.run_started = None
                        self._safe_stop(job, "Shutdown")
                        return
                t0 = time.perf_counter()
                result = job.step(ctx)
                metrics.observe("pacsbox_job_step_duration_seconds", time.perf_counter() - t0,
                                {"type": job.type_name})
                with self._lock:
                    p = int(round(max(0.0, min(100.0, job.progress()))))
                    if p != rec.progress:
                        rec.progress = p
                        self._touch(rec, None, notify=False)
                    if result == StepResult.CONTINUE:
                        continue
                    rec.started = False
                    if result == StepResult.SUCCESS:
                        self._finish(rec, JobState.SUCCESS)
                        self._safe_stop(job, "Success")
                    elif result == StepResult.FAILURE:
                        rec.error_code = int(job.error_code or ErrorCode.INTERNAL_ERROR)
                        rec.error_details = job.error_details or ""
                        self._finish(rec, JobState.FAILURE)
                        self._safe_stop(job, "Failure")
                    else:
                        self._set_state(rec, JobState.RETRY)
                        self._safe_stop(job, "Retry")
                        threading.Timer(job.retry_delay, self._retry, (rec.id,)).start()
                    return
        except Exception as e:  # noqa: BLE001 - a step's exception fails the job, never the engine
            if isinstance(e, OrthancError):
                code, details = int(e.code), e.details or ""
            else:
                log.exception("job %s (%s) failed", rec.id, job.type_name)
                code, details = int(ErrorCode.INTERNAL_ERROR), f"{type(e).__name__}: {e}"
            with self._lock:
                rec.started = False
                rec.error_code = code
                rec.error_details = details
                self._finish(rec, JobState.FAILURE)
            self._safe_stop(job, "Failure")

    def _retry(self, job_id: str) -> None:
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is not None and rec.state == JobState.RETRY:
                self._set_state(rec, JobState.PENDING)
                self._enqueue(rec)

    @staticmethod
    def _safe_stop(job: Job, reason: str) -> None:
        try:
            job.stop(reason)
        except Exception:  # noqa: BLE001
            log.exception("job %s: stop(%s) failed", job.type_name, reason)

    # ---- persistence (reference section 3.7) -------------------------------------------
    def _mark_dirty(self) -> None:
        if self.save_jobs:
            self._dirty = True
            self._save_event.set()

    def _save_loop(self) -> None:
        last = time.monotonic()
        while not self._stopping:
            triggered = self._save_event.wait(max(0.0, self.SAVE_PERIOD - (time.monotonic() - last)))
            if self._stopping:
                return
            if triggered:
                time.sleep(self.SAVE_DELAY / 2)  # coalesce bursts, still within 100 ms
            self._save_event.clear()
            try:
                self.save()
            except Exception:  # noqa: BLE001
                log.exception("could not save the jobs registry")
            last = time.monotonic()

    def serialize(self) -> dict[str, Any]:
        """The registry as saved in the index (jobs whose type cannot serialize are skipped)."""
        with self._lock:
            jobs = {}
            for rec in self._jobs.values():
                try:
                    data = rec.job.serialize()
                except Exception:  # noqa: BLE001
                    log.exception("job %s cannot be serialized", rec.id)
                    data = None
                if data is None:
                    continue
                entry = {
                    "State": rec.state.value,
                    "Priority": rec.priority,
                    "CreationTime": job_time(rec.creation_time),
                    "LastChangeTime": job_time(rec.last_change_time),
                    "Runtime": int(rec.effective_runtime * 1000),
                    "ErrorCode": rec.error_code,
                    "ErrorDetails": rec.error_details,
                    "Progress": rec.progress,
                    "Job": {"Type": rec.job.type_name, **data},
                }
                if rec.completion_time is not None:
                    entry["CompletionTime"] = job_time(rec.completion_time)
                jobs[rec.id] = entry
            order = list(self._history)
        return {"Type": "JobsRegistry", "MaxCompletedJobs": self.history_size, "Jobs": jobs,
                "History": [j for j in order if j in jobs]}

    def save(self) -> None:
        """Write the registry into the index now."""
        if not self.save_jobs:
            return
        self._dirty = False
        data = json.dumps(self.serialize())
        self.ctx.index.set_global(REGISTRY_PROPERTY, data)

    def load(self) -> int:
        """Reload the saved registry (start-up, unless ``--no-jobs``).

        ``Success``/``Failure`` return to the history, ``Paused`` stays paused,
        ``Pending``/``Running``/``Retry`` are queued again with the same IDs. Unreadable
        entries are skipped with a warning.

        Returns
        -------
        int
            Number of jobs reloaded.
        """
        raw = self.ctx.index.get_global(REGISTRY_PROPERTY)
        if not raw:
            return 0
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("the saved jobs registry is unreadable; starting empty")
            return 0
        jobs = data.get("Jobs", {})
        history = [j for j in data.get("History", []) if j in jobs]
        order = history + sorted((j for j in jobs if j not in history),
                                 key=lambda j: jobs[j].get("CreationTime", ""))
        n = 0
        with self._lock:
            for job_id in order:
                entry = jobs[job_id]
                try:
                    jd = dict(entry["Job"])
                    cls = self.registry.get(jd.get("Type", ""))
                    if cls is None:
                        raise ValueError(f"unknown job type {jd.get('Type')!r}")
                    job = cls.from_serialized(jd, self.ctx)
                    rec = JobRecord(job_id, job, int(entry.get("Priority", 0)),
                                    parse_job_time(entry["CreationTime"]))
                    rec.last_change_time = parse_job_time(entry.get("LastChangeTime", entry["CreationTime"]))
                    rec.runtime = float(entry.get("Runtime", 0)) / 1000.0
                    rec.error_code = int(entry.get("ErrorCode", 0))
                    rec.error_details = entry.get("ErrorDetails", "")
                    rec.progress = int(entry.get("Progress", 0))
                    state = JobState(entry.get("State", "Pending"))
                except Exception as e:  # noqa: BLE001
                    log.warning("skipping saved job %s: %s", job_id, e)
                    continue
                self._jobs[job_id] = rec
                if state.is_final:
                    rec.state = state
                    rec.completion_time = parse_job_time(entry["CompletionTime"]) if "CompletionTime" in entry \
                        else rec.last_change_time
                    self._history[job_id] = None
                elif state == JobState.PAUSED:
                    rec.state = JobState.PAUSED
                else:
                    rec.state = JobState.PENDING
                    self._enqueue(rec)
                n += 1
            while len(self._history) > self.history_size:
                old_id, _ = self._history.popitem(last=False)
                self._jobs.pop(old_id, None)
            self._changed.notify_all()
        return n


def request_mode(body: Mapping[str, Any] | None, default_synchronous: bool = True) -> tuple[bool, int]:
    """Read ``Synchronous``/``Asynchronous`` and ``Priority`` from a request body.

    Parameters
    ----------
    body : mapping or None
    default_synchronous : bool

    Returns
    -------
    (bool, int)
        Whether to run synchronously, and the priority.

    Raises
    ------
    OrthancError
        ``BAD_FILE_FORMAT`` (400) when a field has the wrong type.
    """
    body = body or {}
    sync = default_synchronous
    if "Synchronous" in body:
        v = body["Synchronous"]
        if not isinstance(v, bool):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Field \"Synchronous\" should be a Boolean")
        sync = v
    elif "Asynchronous" in body:
        v = body["Asynchronous"]
        if not isinstance(v, bool):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Field \"Asynchronous\" should be a Boolean")
        sync = not v
    priority = body.get("Priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Field \"Priority\" should be an integer")
    return sync, priority
