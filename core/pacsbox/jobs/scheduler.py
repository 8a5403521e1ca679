"""The jobs engine's scheduler: the priority queue, the state machine of reference section
3.4 and the worker threads that run the steps. A mixin of
:class:`~pacsbox.jobs.engine.JobsEngine` (which holds the lock, the queue and the records).
"""
from __future__ import annotations

import heapq
import logging
import threading
import time

from ..errors import ErrorCode, OrthancError
from .base import Job, JobState, StepResult
from .registry import JobRecord

log = logging.getLogger("pacsbox.jobs")


class JobScheduler:
    """Queue, state machine and workers (mixin of :class:`~pacsbox.jobs.engine.JobsEngine`)."""

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
