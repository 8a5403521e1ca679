"""The jobs engine: a priority queue, ``ConcurrentJobs`` workers, the state machine of
Orthanc's ``JobsRegistry``, a bounded history, persistence and synchronous waits.

Source: Orthanc ``JobsEngine``/``JobsRegistry``; reference section 3 (transition table in
3.4, options in 3.6, persistence in 3.7).

:class:`JobsEngine` holds the public API (submission, queries, actions, events); its
parts live beside it: the types and records in :mod:`.registry`, the queue, state machine
and workers in :mod:`.scheduler`, the saved registry in :mod:`.persistence`, and the
reading of a request's job options (``Synchronous``, ``Priority``...) in
:mod:`pacsbox.web`.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from ..errors import ErrorCode, OrthancError, StartupError  # noqa: F401  (StartupError: its old home)
from ..web import request_mode, request_permissive
from .base import Job, JobOutput, JobState
from .persistence import REGISTRY_PROPERTY, RegistryPersistence
from .registry import JobRecord, JobTypeRegistry, _error_code, job_time, parse_job_time
from .scheduler import JobScheduler

if TYPE_CHECKING:  # pragma: no cover
    from ..context import ServerContext

log = logging.getLogger("pacsbox.jobs")

#: The names importable from here before the engine was split (kept for callers).
__all__ = ["JobsEngine", "JobRecord", "JobTypeRegistry", "REGISTRY_PROPERTY", "StartupError", "job_time",
           "parse_job_time", "request_mode", "request_permissive"]


class JobsEngine(JobScheduler, RegistryPersistence):
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
