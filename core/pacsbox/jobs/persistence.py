"""The jobs engine's persistence (reference section 3.7): snapshots of the jobs between two
steps, the saved registry in the index's global property ``JobsRegistry`` and its reload
at start-up. A mixin of :class:`~pacsbox.jobs.engine.JobsEngine`.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from .base import JobState
from .registry import JobRecord, job_time, parse_job_time

log = logging.getLogger("pacsbox.jobs")

#: Global property of the index holding the saved registry (Orthanc ``GlobalProperty_JobsRegistry``).
REGISTRY_PROPERTY = "JobsRegistry"


class RegistryPersistence:
    """Save and reload the jobs (mixin of :class:`~pacsbox.jobs.engine.JobsEngine`)."""

    # ---- persistence (reference section 3.7) -------------------------------------------
    def _snapshot(self, rec: JobRecord) -> dict[str, Any] | None:
        """``{**job.serialize(), "Type": ...}`` as saved (a copy through JSON: later changes
        of the job do not reach it), or None (not saved)."""
        try:
            data = rec.job.serialize()
            if data is None:
                return None
            return json.loads(json.dumps({**data, "Type": rec.job.type_name}))
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

    def serialize(self) -> dict[str, Any]:
        """The registry as saved in the index.

        Returns
        -------
        dict
            ``{"Type": "JobsRegistry", "MaxCompletedJobs": n, "History": [ids of finished
            jobs, oldest first], "Jobs": {id: {"State", "Priority", "CreationTime",
            "LastChangeTime", "CompletionTime" (finished jobs), "Runtime" (ms), "ErrorCode",
            "ErrorDetails", "Progress", "Job": {"Type", ...job.serialize()}}}}``. Jobs whose
            type cannot serialize are skipped; a running job is saved as of its last
            captured step. The ``Job`` values are the records' snapshots: read them, do not
            modify them.
        """
        with self._lock:
            jobs: dict[str, Any] = {}
            for rec in self._jobs.values():
                if rec.snapshot is None:
                    continue
                entry: dict[str, Any] = {
                    "State": rec.state.value,
                    "Priority": rec.priority,
                    "CreationTime": job_time(rec.creation_time),
                    "LastChangeTime": job_time(rec.last_change_time),
                    # rounded as /jobs/{id} rounds EffectiveRuntime, which a reload must give back
                    "Runtime": round(rec.effective_runtime * 1000),
                    "ErrorCode": rec.error_code,
                    "ErrorDetails": rec.error_details,
                    "Progress": rec.progress,
                }
                if rec.completion_time is not None:
                    entry["CompletionTime"] = job_time(rec.completion_time)
                entry["Job"] = rec.snapshot
                jobs[rec.id] = entry
            history = [j for j in self._history if j in jobs]
        return {"Type": "JobsRegistry", "MaxCompletedJobs": self.history_size, "History": history, "Jobs": jobs}

    def serialize_json(self) -> str:
        """The registry as saved in the index, as JSON text (see :meth:`serialize`)."""
        return json.dumps(self.serialize())

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
