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
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from ..errors import ErrorCode, OrthancError, StartupError
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

    def classes(self) -> list[type[Job]]:
        """The registered classes, by type name."""
        return [self._types[name][0] for name in sorted(self._types)]

    def by_plugin(self) -> dict[str, list[str]]:
        """plugin name → its job type names."""
        out: dict[str, list[str]] = {}
        for name, (_cls, plugin) in self._types.items():
            out.setdefault(plugin, []).append(name)
        return out


class JobRecord:
    """The engine's bookkeeping for one job (what ``/jobs/{id}`` shows).

    Attributes
    ----------
    id : str
        Job UUID.
    job : Job
        The job object.
    priority : int
        ``Priority`` (higher runs first).
    state : JobState
    creation_time, last_change_time : float
        Epoch seconds (UTC) of the submission and of the last state change.
    completion_time : float or None
        Epoch seconds of the move to ``Success``/``Failure``.
    progress : int
        0-100 percent, as of the last completed step.
    error_code : int
        Orthanc error code of the last failure (0 = none, 37 = canceled).
    error_details : str
    """

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
        self.queue_token = 0               # the valid entry of this job in the queue
        self.retry_token = 0
        self.snapshot: str | None = None   # JSON of {"Type", **job.serialize()}, last boundary
        self.snapshot_time = 0.0           # time.monotonic() of that snapshot
        self.holds = 0                     # synchronous callers waiting on this record
        self.forgotten = False             # evicted/deleted while held: outputs dropped on release
        self.serialize_failed = False      # job.serialize() raised (logged once)

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


def _error_code(code: int) -> ErrorCode:
    try:
        return ErrorCode(int(code))
    except ValueError:
        return ErrorCode.INTERNAL_ERROR


class JobsEngine:
    """Runs jobs (``ctx.jobs``): Orthanc's ``JobsEngine`` and ``JobsRegistry``.

    Parameters
    ----------
    ctx : ServerContext
    registry : JobTypeRegistry
    concurrent_jobs : int
        Worker threads (Orthanc ``ConcurrentJobs``; 0 means the number of CPU cores).
    history_size : int
        Finished jobs kept (``JobsHistorySize``); 0 keeps none.
    save_jobs : bool
        Persist the registry in the index (``SaveJobs``).

    Notes
    -----
    Pending jobs wait in a max-heap on ``Priority``; ties run first-in first-out (a job
    resumed or resubmitted goes behind those already waiting with its priority).

    States and actions follow reference section 3.4 exactly. A pause or cancel of a
    running job is applied at its next step boundary: the job's :attr:`Job.stop_requested`
    becomes True, :meth:`Job.wait_stop` returns and :meth:`Job.interrupt` is called so that
    a step waiting on a peer returns early.

    Persistence (reference section 3.7): the registry is written to the index global
    property ``JobsRegistry`` within :attr:`SAVE_DELAY` of a submission or state change,
    every :attr:`SAVE_PERIOD` seconds and at :meth:`stop`. A running job's state is
    captured between two steps, at most every :attr:`PROGRESS_SAVE_PERIOD` seconds, so that
    after a crash it resumes near where it was.
    """

    #: Seconds between a change and the save that records it (Orthanc: 100 ms).
    SAVE_DELAY = 0.1
    #: Seconds between two periodic saves (Orthanc: 10 s).
    SAVE_PERIOD = 10.0
    #: Seconds between two captures of a running job's progress for the saved registry.
    PROGRESS_SAVE_PERIOD = 1.0

    def __init__(self, ctx: "ServerContext", registry: JobTypeRegistry, *, concurrent_jobs: int = 2,
                 history_size: int = 10, save_jobs: bool = True) -> None:
        self.ctx = ctx
        self.registry = registry
        self.concurrent = int(concurrent_jobs) if int(concurrent_jobs) > 0 else (os.cpu_count() or 1)
        self.history_size = max(0, int(history_size))
        self.save_jobs = bool(save_jobs)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)   # any visible change: waiters, SSE
        self._work = threading.Condition(self._lock)      # queue or stop: workers
        self._jobs: dict[str, JobRecord] = {}
        self._queue: list[tuple[int, int, JobRecord]] = []
        self._history: "OrderedDict[str, None]" = OrderedDict()
        self._counter = itertools.count(1)
        self._totals: dict[str, int] = {JobState.SUCCESS.value: 0, JobState.FAILURE.value: 0}
        self._workers: list[threading.Thread] = []
        self._timers: set[threading.Timer] = set()
        self._stopping = False
        self._save_event = threading.Event()
        self._saver_stop = threading.Event()
        self._save_lock = threading.Lock()
        self._saver: threading.Thread | None = None

    # ---- life cycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers and the saver thread (idempotent)."""
        with self._lock:
            if self._workers:
                return
            self._stopping = False
            for i in range(self.concurrent):
                t = threading.Thread(target=self._worker, name=f"pacsbox-job-worker-{i}", daemon=True)
                self._workers.append(t)
                t.start()
        if self.save_jobs and self._saver is None:
            self._saver_stop.clear()
            self._saver = threading.Thread(target=self._save_loop, name="pacsbox-jobs-saver", daemon=True)
            self._saver.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers at their next step boundary, then save the registry.

        Running jobs are asked to stop (:meth:`Job.interrupt`); they stay ``Running`` in
        the saved registry and go back to the queue at the next start, resuming after
        their last completed step.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the workers.
        """
        with self._lock:
            self._stopping = True
            running = [rec for rec in self._jobs.values() if rec.state == JobState.RUNNING]
            for rec in running:
                rec.job.request_stop()
            for t in self._timers:
                t.cancel()
            self._timers.clear()
            self._work.notify_all()
            self._changed.notify_all()
            workers, self._workers = self._workers, []
        for rec in running:
            self._safe_interrupt(rec.job)
        deadline = time.monotonic() + timeout
        for t in workers:
            t.join(max(0.0, deadline - time.monotonic()))
        self._saver_stop.set()
        self._save_event.set()
        if self._saver is not None:
            self._saver.join(5)
            self._saver = None
        if self.save_jobs:
            try:
                self.save()
            except Exception:  # noqa: BLE001
                log.exception("could not save the jobs registry at shutdown")

    # ---- submission --------------------------------------------------------------------
    def submit(self, job: Job, priority: int = 0) -> JobRecord:
        """Queue a job (``Pending``).

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
        return self._submit(job, priority, hold=False)

    def _submit(self, job: Job, priority: int, hold: bool) -> JobRecord:
        if self.registry.get(job.type_name) is None:
            raise ValueError(f"job type {job.type_name!r} is not registered")
        rec = JobRecord(str(uuid.uuid4()), job, int(priority), time.time())
        if self.save_jobs:
            rec.snapshot = self._snapshot(rec)
            rec.snapshot_time = time.monotonic()
        with self._lock:
            if hold:
                rec.holds += 1
            self._jobs[rec.id] = rec
            self._enqueue(rec)
            self._touch(rec, None)
        return rec

    def wait(self, rec: JobRecord, timeout: float | None = None) -> JobRecord:
        """Block until ``rec`` is ``Success`` or ``Failure``.

        Parameters
        ----------
        rec : JobRecord
        timeout : float, optional
            Seconds; None waits as long as needed (or until the engine stops).

        Returns
        -------
        JobRecord
            ``rec`` (check ``rec.state``).
        """
        with self._lock:
            self._changed.wait_for(lambda: rec.state.is_final or self._stopping, timeout)
        return rec

    def run_sync(self, job: Job, priority: int = 0, *,
                 on_success: Callable[[Job], Any] | None = None) -> Any:
        """Submit, wait, and return the job's content (Orthanc's ``Synchronous`` mode).

        The job goes through the queue like any other (``Priority``, ``ConcurrentJobs``)
        and stays visible in ``/jobs``. The result is taken before the job can be evicted
        from the history, so this works with ``JobsHistorySize: 0``.

        Parameters
        ----------
        job : Job
        priority : int
        on_success : callable, optional
            Called with the job once it succeeded, while its outputs are still kept (an
            output file may be opened here: it is deleted only after this returns, and an
            open file stays readable). Its return value is returned instead of the
            content.

        Returns
        -------
        dict or any
            ``job.public_content()``, or what ``on_success`` returned.

        Raises
        ------
        OrthancError
            The job failed (its ``ErrorCode`` and ``ErrorDetails``; 37 when canceled), or
            the server is shutting down before it ended (``InternalError``).
        """
        rec = self._submit(job, priority, hold=True)
        try:
            self.wait(rec)
            with self._lock:
                state = rec.state
            if state == JobState.SUCCESS:
                return on_success(rec.job) if on_success is not None else rec.job.public_content()
            if state == JobState.FAILURE:
                raise OrthancError(_error_code(rec.error_code or ErrorCode.INTERNAL_ERROR),
                                   rec.error_details or None)
            raise OrthancError(ErrorCode.INTERNAL_ERROR, "The server is shutting down")
        finally:
            with self._lock:
                rec.holds -= 1
                drop = rec.forgotten and rec.holds == 0
            if drop:
                self._drop_outputs(rec)

    def run_request(self, job: Job, body: Any, *, synchronous: bool = True,
                    on_success: Callable[[Job], Any] | None = None) -> Any:
        """Run a job as a job-creating REST route does (reference section 3.2).

        Parameters
        ----------
        job : Job
        body : mapping or any
            The request's JSON body. From an object: ``Permissive`` (bool; sets
            ``job.permissive`` when the job has that attribute, e.g. an
            :class:`InstancesJob`), ``Synchronous`` (wins), else ``Asynchronous``
            (inverted), else ``synchronous``; ``Priority`` (int, default 0). A body that is
            not an object (the bare array/ID forms of some routes) counts as ``{}``.
        synchronous : bool
            The route's default mode.
        on_success : callable, optional
            See :meth:`run_sync` (synchronous mode only).

        Returns
        -------
        dict or any
            Synchronous: the job's content (or ``on_success``'s result). Asynchronous:
            ``{"ID": ..., "Path": "/jobs/..."}``.

        Raises
        ------
        OrthancError
            ``BadFileFormat`` (400) for a malformed ``Permissive``/``Synchronous``/
            ``Asynchronous``/``Priority``; in synchronous mode, the job's error.
        """
        if not isinstance(body, Mapping):
            body = {}
        permissive = request_permissive(body)
        sync, priority = request_mode(body, synchronous)
        if permissive is not None and hasattr(job, "permissive"):
            job.permissive = permissive
        if sync:
            return self.run_sync(job, priority, on_success=on_success)
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
        """The ``/jobs/{id}`` JSON object of a record (reference section 3.3).

        Returns
        -------
        dict
            ``CompletionTime`` (finished jobs), ``Content``, ``CreationTime``,
            ``EffectiveRuntime`` (seconds, millisecond precision), ``ErrorCode``,
            ``ErrorDescription``, ``ErrorDetails``, ``EstimatedTimeOfArrival`` (only while
            ``Running`` past 1 %), ``ID``, ``Priority``, ``Progress`` (0-100), ``State``,
            ``Timestamp``, ``Type``; times as ``YYYYMMDDTHHMMSS.ffffff`` UTC.
        """
        with self._lock:
            try:
                content = rec.job.public_content()
            except Exception:  # noqa: BLE001 - a broken job must not break /jobs
                log.exception("job %s: public_content() failed", rec.id)
                content = {}
            now = time.time()
            runtime = rec.effective_runtime
            d: dict[str, Any] = {}
            if rec.state.is_final and rec.completion_time is not None:
                d["CompletionTime"] = job_time(rec.completion_time)
            d["Content"] = content
            d["CreationTime"] = job_time(rec.creation_time)
            d["EffectiveRuntime"] = round(runtime, 3)
            d["ErrorCode"] = rec.error_code
            try:
                d["ErrorDescription"] = ErrorCode(rec.error_code).description
            except ValueError:
                d["ErrorDescription"] = "Unknown error"
            d["ErrorDetails"] = rec.error_details
            if rec.state == JobState.RUNNING and rec.progress > 1:
                remaining = runtime * (100 - rec.progress) / rec.progress
                d["EstimatedTimeOfArrival"] = job_time(now + remaining)
            d["ID"] = rec.id
            d["Priority"] = rec.priority
            d["Progress"] = rec.progress
            d["State"] = rec.state.value
            d["Timestamp"] = job_time(now)
            d["Type"] = rec.job.type_name
            return d

    def counts(self) -> dict[str, int]:
        """Number of jobs per state name (for metrics)."""
        with self._lock:
            out = {s.value: 0 for s in JobState}
            for rec in self._jobs.values():
                out[rec.state.value] += 1
            return out

    def totals(self) -> dict[str, int]:
        """Jobs that ended in ``Success`` and in ``Failure`` since the engine started.

        Unlike :meth:`counts`, these only grow: a job leaving the history
        (``JobsHistorySize``) is still counted (Orthanc 1.13's
        ``orthanc_jobs_total_*`` metrics).

        Returns
        -------
        dict
            ``{"Success": n, "Failure": m}``.
        """
        with self._lock:
            return dict(self._totals)

    # ---- actions (reference section 3.4) ----------------------------------------------
    def pause(self, job_id: str) -> bool:
        """``POST /jobs/{id}/pause``.

        Pending/Retry → Paused; Running: scheduled (Paused before its next step);
        Paused/Success/Failure: no-op.

        Returns
        -------
        bool
            False only for an unknown job.
        """
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None:
                return False
            if rec.state in (JobState.PENDING, JobState.RETRY):
                self._set_state(rec, JobState.PAUSED)
                return True
            job = self._schedule_stop(rec, "pause_requested")
        if job is not None:
            self._safe_interrupt(job)
        return True

    def cancel(self, job_id: str) -> bool:
        """``POST /jobs/{id}/cancel``.

        Pending/Retry/Paused → Failure (``ErrorCode`` 37); Running: scheduled (Failure
        before its next step); Success/Failure: no-op.

        Returns
        -------
        bool
            False only for an unknown job.
        """
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None:
                return False
            if rec.state in (JobState.PENDING, JobState.RETRY, JobState.PAUSED):
                rec.error_code = int(ErrorCode.CANCELED_JOB)
                rec.error_details = ""
                self._finish(rec, JobState.FAILURE)
                return True
            job = self._schedule_stop(rec, "cancel_requested")
        if job is not None:
            self._safe_interrupt(job)
        return True

    @staticmethod
    def _schedule_stop(rec: JobRecord, flag: str) -> Job | None:
        """Ask a running job to pause or cancel at its next step boundary (``flag`` is
        ``"pause_requested"`` or ``"cancel_requested"``); returns the job to interrupt,
        or None when it is not running or was already asked."""
        if rec.state != JobState.RUNNING or getattr(rec, flag):
            return None
        setattr(rec, flag, True)
        rec.job.request_stop()
        return rec.job

    def resume(self, job_id: str) -> bool:
        """``POST /jobs/{id}/resume``: only a ``Paused`` job goes back to ``Pending``.

        Returns
        -------
        bool
            False (refused) for an unknown job or a job that is not paused.
        """
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None or rec.state != JobState.PAUSED:
                return False
            rec.pause_requested = False
            self._set_state(rec, JobState.PENDING)
            self._enqueue(rec)
            return True

    def resubmit(self, job_id: str) -> bool:
        """``POST /jobs/{id}/resubmit``: a ``Failure`` job restarts from its first step
        (:meth:`Job.reset`), with ``EffectiveRuntime`` zeroed.

        Returns
        -------
        bool
            False (refused) for an unknown job or a job not in ``Failure``.
        """
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None or rec.state != JobState.FAILURE:
                return False
            try:
                rec.job.reset()
            except Exception:  # noqa: BLE001
                log.exception("job %s: reset() failed; resubmit refused", rec.id)
                return False
            rec.job.error_code = 0
            rec.job.error_details = ""
            rec.runtime = 0.0
            rec.error_code = 0
            rec.error_details = ""
            rec.completion_time = None
            rec.cancel_requested = rec.pause_requested = False
            rec.started = False
            self._history.pop(rec.id, None)
            if self.save_jobs:
                rec.snapshot = self._snapshot(rec)
            self._set_state(rec, JobState.PENDING)
            self._enqueue(rec)
            return True

    def delete(self, job_id: str) -> bool:
        """``DELETE /jobs/{id}``: forget a finished job and its outputs (Orthanc 1.12.2+).

        Returns
        -------
        bool
            False for an unknown or unfinished job.
        """
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None or not rec.state.is_final:
                return False
            self._forget(rec)
            self._mark_dirty()
            return True

    def get_output(self, job_id: str, key: str) -> JobOutput | None:
        """Output ``key`` of a successful job, or None (unknown job, not ``Success``, no
        such output)."""
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
        """Yield ``describe(rec)`` at every state or progress change until the job ends.

        The first item is the current state. Yields None after ``poll`` seconds without
        a change (callers send a keep-alive). Ends after the ``Success``/``Failure``
        snapshot, or when the engine stops.
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
                    final = False
                else:
                    last = rec.version
                    snap = self.describe(rec)
                    final = rec.state.is_final
            yield snap
            if final:
                return

    # ---- internals: state machine ----------------------------------------------------------
    def _enqueue(self, rec: JobRecord) -> None:
        rec.queue_token = next(self._counter)
        heapq.heappush(self._queue, (-rec.priority, rec.queue_token, rec))
        self._work.notify()

    def _next(self) -> JobRecord | None:
        while self._queue:
            _p, token, rec = heapq.heappop(self._queue)
            if rec.state == JobState.PENDING and rec.queue_token == token:
                return rec
        return None

    def _touch(self, rec: JobRecord, previous: JobState | None) -> None:
        """A state change (or the submission when ``previous`` is None)."""
        rec.version += 1
        rec.last_change_time = time.time()
        self._changed.notify_all()
        self._mark_dirty()
        self.ctx.notifier.emit("job_state_changed", ctx=self.ctx, job_info=rec.info(previous))

    def _set_state(self, rec: JobRecord, state: JobState) -> None:
        previous = rec.state
        if rec.run_started is not None:
            rec.runtime += time.monotonic() - rec.run_started
            rec.run_started = None
        rec.state = state
        if state == JobState.RUNNING:
            rec.run_started = time.monotonic()
        self._touch(rec, previous)

    def _finish(self, rec: JobRecord, state: JobState) -> None:
        self._totals[state.value] = self._totals.get(state.value, 0) + 1
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
        rec.forgotten = True
        if rec.holds == 0:
            self._drop_outputs(rec)

    @staticmethod
    def _drop_outputs(rec: JobRecord) -> None:
        try:
            keys = list(rec.job.output_keys())
        except Exception:  # noqa: BLE001
            log.exception("job %s: output_keys() failed; its outputs are not deleted", rec.id)
            return
        for key in keys:
            try:
                rec.job.delete_output(key)
            except Exception:  # noqa: BLE001
                log.exception("could not delete output %s of job %s", key, rec.id)

    # ---- internals: workers ----------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            with self._lock:
                rec = None
                while not self._stopping:
                    rec = self._next()
                    if rec is not None:
                        break
                    self._work.wait()
                if rec is None:
                    return
                rec.job.clear_stop_request()
                rec.pause_requested = rec.cancel_requested = False
                self._set_state(rec, JobState.RUNNING)
            try:
                self._run(rec)
            except Exception:  # noqa: BLE001 - never lose a worker
                log.exception("jobs engine: unexpected error while running job %s", rec.id)

    def _stop_reason(self, rec: JobRecord) -> str | None:
        with self._lock:
            if rec.cancel_requested:
                return "Canceled"
            if rec.pause_requested:
                return "Paused"
            if self._stopping:
                return "Shutdown"
            return None

    def _run(self, rec: JobRecord) -> None:
        job = rec.job
        ctx = self.ctx
        try:
            if not rec.started:
                job.start(ctx)
                rec.started = True
            while True:
                reason = self._stop_reason(rec)
                if reason is not None:
                    self._leave(rec, reason)
                    return
                t0 = time.perf_counter()
                result = job.step(ctx)
                ctx.metrics.observe("pacsbox_job_step_duration_seconds", time.perf_counter() - t0,
                                    {"type": job.type_name})
                if result is StepResult.CONTINUE:
                    self._after_step(rec)
                    continue
                if not isinstance(result, StepResult):
                    raise TypeError(f"step() returned {result!r}, not a StepResult")
                self._leave(rec, result.value)
                return
        except Exception as e:  # noqa: BLE001 - a step's exception fails the job, never the engine
            reason = self._stop_reason(rec) if job.stop_requested and job.interruptible else None
            if reason is not None:
                log.info("job %s (%s): step interrupted by %s: %s", rec.id, job.type_name, reason, e)
                self._leave(rec, reason, interrupted=True)
            else:
                self._leave(rec, "Failure", error=e)

    def _after_step(self, rec: JobRecord) -> None:
        progress = self._job_progress(rec)
        snap = None
        if self.save_jobs and time.monotonic() - rec.snapshot_time >= self.PROGRESS_SAVE_PERIOD:
            snap = self._snapshot(rec)
        if progress == rec.progress and snap is None:
            return
        with self._lock:
            if progress != rec.progress:
                rec.progress = progress
                rec.version += 1
                self._changed.notify_all()
            if snap is not None:
                rec.snapshot = snap
                rec.snapshot_time = time.monotonic()
                self._mark_dirty()

    def _leave(self, rec: JobRecord, outcome: str, *, error: BaseException | None = None,
               interrupted: bool = False) -> None:
        """End the current run: ``outcome`` is a StepResult value or a stop reason."""
        job = rec.job
        self._safe_stop(job, outcome)
        progress = self._job_progress(rec)
        snap = self._snapshot(rec) if self.save_jobs and not interrupted else None
        if error is not None:
            if isinstance(error, OrthancError):
                code, details = int(error.code), error.details or ""
            else:
                log.error("job %s (%s) failed", rec.id, job.type_name, exc_info=error)
                code, details = int(ErrorCode.INTERNAL_ERROR), f"{type(error).__name__}: {error}"
        with self._lock:
            rec.started = False
            rec.progress = progress
            if snap is not None:
                rec.snapshot = snap
                rec.snapshot_time = time.monotonic()
            if outcome == "Shutdown":
                if rec.run_started is not None:   # stays Running in the saved registry
                    rec.runtime += time.monotonic() - rec.run_started
                    rec.run_started = None
                return
            if outcome == "Paused" and rec.cancel_requested:
                outcome = "Canceled"
            rec.pause_requested = rec.cancel_requested = False
            if outcome == "Canceled":
                rec.error_code = int(ErrorCode.CANCELED_JOB)
                rec.error_details = ""
                self._finish(rec, JobState.FAILURE)
            elif outcome == "Paused":
                self._set_state(rec, JobState.PAUSED)
            elif outcome == StepResult.SUCCESS.value:
                self._finish(rec, JobState.SUCCESS)
            elif outcome == StepResult.FAILURE.value:
                if error is None:
                    code = int(job.error_code or ErrorCode.INTERNAL_ERROR)
                    details = job.error_details or ""
                rec.error_code = code
                rec.error_details = details
                self._finish(rec, JobState.FAILURE)
            else:  # Retry
                self._set_state(rec, JobState.RETRY)
                rec.retry_token += 1
                timer = threading.Timer(max(0.0, float(job.retry_delay)), self._retry,
                                        (rec, rec.retry_token))
                timer.daemon = True
                timer.name = f"pacsbox-job-retry-{rec.id[:8]}"
                self._timers.add(timer)
                timer.start()

    def _retry(self, rec: JobRecord, token: int) -> None:
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive() and t is not threading.current_thread()}
            if rec.state == JobState.RETRY and rec.retry_token == token and not self._stopping:
                self._set_state(rec, JobState.PENDING)
                self._enqueue(rec)

    @staticmethod
    def _job_progress(rec: JobRecord) -> int:
        try:
            p = float(rec.job.progress())
        except Exception:  # noqa: BLE001
            return rec.progress
        if p != p:  # NaN
            return rec.progress
        return int(max(0.0, min(100.0, p)) + 0.5)

    @staticmethod
    def _safe_stop(job: Job, reason: str) -> None:
        try:
            job.stop(reason)
        except Exception:  # noqa: BLE001
            log.exception("job %s: stop(%s) failed", job.type_name, reason)

    @staticmethod
    def _safe_interrupt(job: Job) -> None:
        try:
            job.interrupt()
        except Exception:  # noqa: BLE001
            log.exception("job %s: interrupt() failed", job.type_name)

    # ---- persistence (reference section 3.7) -------------------------------------------
    def _snapshot(self, rec: JobRecord) -> str | None:
        """JSON text of ``{"Type": ..., **job.serialize()}``, or None (not saved)."""
        try:
            data = rec.job.serialize()
            if data is None:
                return None
            return json.dumps({**data, "Type": rec.job.type_name})
        except Exception:  # noqa: BLE001
            if not rec.serialize_failed:   # once per job, not at every capture
                rec.serialize_failed = True
                log.exception("job %s (%s) cannot be serialized; it is not saved", rec.id, rec.job.type_name)
            return None

    def _mark_dirty(self) -> None:
        if self.save_jobs:
            self._save_event.set()

    def _save_loop(self) -> None:
        last = time.monotonic()
        while not self._saver_stop.is_set():
            triggered = self._save_event.wait(max(0.0, self.SAVE_PERIOD - (time.monotonic() - last)))
            if self._saver_stop.is_set():
                return
            if triggered:  # coalesce a burst of changes, still within SAVE_DELAY
                self._saver_stop.wait(self.SAVE_DELAY / 2)
            self._save_event.clear()
            try:
                self.save()
            except Exception:  # noqa: BLE001
                log.exception("could not save the jobs registry")
            last = time.monotonic()

    def serialize_json(self) -> str:
        """The registry as saved in the index, as JSON text.

        ``{"Type": "JobsRegistry", "MaxCompletedJobs": n, "History": [ids of finished
        jobs, oldest first], "Jobs": {id: {"State", "Priority", "CreationTime",
        "LastChangeTime", "CompletionTime" (finished jobs), "Runtime" (ms), "ErrorCode",
        "ErrorDetails", "Progress", "Job": {"Type", ...job.serialize()}}}}``. Jobs whose type
        cannot serialize are skipped; a running job is saved as of its last captured step.
        """
        with self._lock:
            parts = []
            for rec in self._jobs.values():
                if rec.snapshot is None:
                    continue
                head: dict[str, Any] = {
                    "State": rec.state.value,
                    "Priority": rec.priority,
                    "CreationTime": job_time(rec.creation_time),
                    "LastChangeTime": job_time(rec.last_change_time),
                    "Runtime": int(rec.effective_runtime * 1000),
                    "ErrorCode": rec.error_code,
                    "ErrorDetails": rec.error_details,
                    "Progress": rec.progress,
                }
                if rec.completion_time is not None:
                    head["CompletionTime"] = job_time(rec.completion_time)
                parts.append((rec.id, head, rec.snapshot))
            saved = {p[0] for p in parts}
            history = [j for j in self._history if j in saved]
        entries = []
        for job_id, head, snap in parts:
            h = json.dumps(head)
            entries.append(f'{json.dumps(job_id)}: {h[:-1]}, "Job": {snap}}}')
        return ('{"Type": "JobsRegistry", "MaxCompletedJobs": %d, "History": %s, "Jobs": {%s}}'
                % (self.history_size, json.dumps(history), ", ".join(entries)))

    def serialize(self) -> dict[str, Any]:
        """The saved registry as a dict (see :meth:`serialize_json`)."""
        return json.loads(self.serialize_json())

    def save(self) -> None:
        """Write the registry into the index now (no-op unless ``SaveJobs``)."""
        if not self.save_jobs:
            return
        with self._save_lock:
            self.ctx.index.set_global(REGISTRY_PROPERTY, self.serialize_json())

    def load(self) -> int:
        """Reload the saved registry (start-up, unless ``--no-jobs``).

        ``Success``/``Failure`` return to the history (trimmed to ``JobsHistorySize``),
        ``Paused`` stays paused, ``Pending``/``Running``/``Retry`` are queued again with the
        same IDs and priorities, in their submission order, and continue from their saved
        state (or from their first step when the type is not :attr:`Job.resumable`).
        Unreadable entries and unknown types are skipped with a warning.

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
            jobs = dict(data.get("Jobs", {}))
        except (ValueError, TypeError, AttributeError):
            log.warning("the saved jobs registry is unreadable; starting empty")
            return 0
        history = [j for j in data.get("History", []) if j in jobs]
        order = history + sorted((j for j in jobs if j not in set(history)),
                                 key=lambda j: str(jobs[j].get("CreationTime", "")))
        n = 0
        with self._lock:
            for job_id in order:
                entry = jobs[job_id]
                try:
                    jd = dict(entry["Job"])
                    cls = self.registry.get(jd.get("Type", ""))
                    if cls is None:
                        raise ValueError(f"unknown job type {jd.get('Type')!r}")
                    state = JobState(entry.get("State", "Pending"))
                    job = cls.from_serialized(jd, self.ctx)
                    if not state.is_final and state != JobState.PAUSED and not getattr(cls, "resumable", True):
                        job.reset()
                    rec = JobRecord(job_id, job, int(entry.get("Priority", 0)),
                                    parse_job_time(entry["CreationTime"]))
                    rec.last_change_time = parse_job_time(entry.get("LastChangeTime", entry["CreationTime"]))
                    rec.runtime = float(entry.get("Runtime", 0)) / 1000.0
                    rec.error_code = int(entry.get("ErrorCode", 0))
                    rec.error_details = str(entry.get("ErrorDetails", ""))
                    rec.progress = int(entry.get("Progress", 0))
                    if state.is_final:
                        rec.completion_time = parse_job_time(entry["CompletionTime"]) \
                            if "CompletionTime" in entry else rec.last_change_time
                    rec.snapshot = self._snapshot(rec) if self.save_jobs else None
                    rec.snapshot_time = time.monotonic()
                except Exception as e:  # noqa: BLE001
                    log.warning("skipping saved job %s: %s", job_id, e)
                    continue
                self._jobs[job_id] = rec
                if state.is_final:
                    rec.state = state
                    self._history[job_id] = None
                elif state == JobState.PAUSED:
                    rec.state = JobState.PAUSED
                else:
                    rec.state = JobState.PENDING
                    self._enqueue(rec)
                n += 1
            while len(self._history) > self.history_size:
                old_id, _ = self._history.popitem(last=False)
                old = self._jobs.get(old_id)
                if old is not None:
                    self._forget(old)
            self._changed.notify_all()
        return n


def request_permissive(body: Mapping[str, Any] | None) -> bool | None:
    """Read ``Permissive`` from a job-creating request body (reference section 3.2).

    Parameters
    ----------
    body : mapping or None

    Returns
    -------
    bool or None
        None when absent.

    Raises
    ------
    OrthancError
        ``BadFileFormat`` (400) "Boolean value expected in field: Permissive".
    """
    if not body or "Permissive" not in body:
        return None
    v = body["Permissive"]
    if not isinstance(v, bool):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Boolean value expected in field: Permissive")
    return v


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
        ``BadFileFormat`` (400) when a field has the wrong type, with the reference's
        details: "Boolean value expected in field: Synchronous" (or ``Asynchronous``),
        "Integer value expected in field: Priority".
    """
    if not isinstance(body, Mapping):
        body = {}
    sync = default_synchronous
    if "Synchronous" in body:
        v = body["Synchronous"]
        if not isinstance(v, bool):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Boolean value expected in field: Synchronous")
        sync = v
    elif "Asynchronous" in body:
        v = body["Asynchronous"]
        if not isinstance(v, bool):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Boolean value expected in field: Asynchronous")
        sync = not v
    priority = body.get("Priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not -2 ** 31 <= priority < 2 ** 31:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Integer value expected in field: Priority")
    return sync, priority
