"""The jobs engine's bookkeeping: the registered job types (:class:`JobTypeRegistry`), the
record of one job (:class:`JobRecord`, what ``/jobs/{id}`` shows) and Orthanc's job time
format.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from ..errors import ErrorCode, StartupError
from .base import Job, JobInfo, JobState


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
        self.snapshot: dict[str, Any] | None = None  # {"Type", **job.serialize()} at the last boundary
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
