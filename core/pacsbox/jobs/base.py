"""The job model: states, step results, the :class:`Job` base class and a helper for
jobs that process a list of instances.

A job is a sequence of short steps (Orthanc ``IJob::Step``). The engine calls
:meth:`Job.step` until it returns ``SUCCESS`` or ``FAILURE``; between steps it applies
pause and cancel requests, and saves :meth:`Job.serialize` so that the job can be rebuilt
after a restart with :meth:`Job.from_serialized`.

Source: Orthanc ``OrthancFramework/Sources/JobsEngine`` (``IJob``, ``JobStepResult``,
``SetOfCommandsJob``), reference section 3.
"""
from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from ..context import ServerContext


class JobState(str, enum.Enum):
    """Job states, with Orthanc's names (``State`` field of ``/jobs/{id}``)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILURE = "Failure"
    PAUSED = "Paused"
    RETRY = "Retry"

    @property
    def is_final(self) -> bool:
        """bool: Success or Failure."""
        return self in (JobState.SUCCESS, JobState.FAILURE)


class StepResult(enum.Enum):
    """What one :meth:`Job.step` asks the engine to do next."""

    SUCCESS = "Success"
    """The job is done; it goes to ``Success``."""
    FAILURE = "Failure"
    """The job failed; it goes to ``Failure`` (set :attr:`Job.error_code` / ``error_details``)."""
    CONTINUE = "Continue"
    """Call :meth:`Job.step` again (after pause/cancel checks)."""
    RETRY = "Retry"
    """Go to ``Retry``, then back to ``Pending`` after :attr:`Job.retry_delay` seconds."""


@dataclass(frozen=True)
class JobInfo:
    """Snapshot of a job given to the ``job_state_changed`` hook.

    Attributes
    ----------
    id : str
        Job UUID.
    type : str
        Job type name (``Type``).
    state : str
        New state (``"Pending"``...).
    previous_state : str or None
        State before the transition; None at submission.
    priority : int
    progress : int
        0-100 percent.
    error_code : int
        Orthanc error code (0 = success, 37 = canceled).
    """

    id: str
    type: str
    state: str
    previous_state: str | None
    priority: int
    progress: int
    error_code: int


@dataclass
class JobOutput:
    """An output of a finished job (``GET /jobs/{id}/{key}``).

    Attributes
    ----------
    path : str or None
        File holding the output (deleted when the output is dropped), or
    data : bytes or None
        the output itself.
    mime : str
        ``Content-Type``.
    filename : str
        ``Content-Disposition`` file name.
    """

    mime: str
    filename: str
    path: str | None = None
    data: bytes | None = None


class Job:
    """Base class of every job type.

    Subclasses set :attr:`type_name` and implement :meth:`step`, and usually
    :meth:`public_content`, :meth:`serialize` / :meth:`from_serialized` and
    :meth:`progress`. They are registered with the ``register_job_types`` hook.

    Attributes
    ----------
    type_name : str
        The ``Type`` shown in ``/jobs/{id}`` (unique among registered types).
    error_code : int
        Orthanc error code to report when :meth:`step` returns ``FAILURE``.
    error_details : str
        Detail text for that failure.
    retry_delay : float
        Seconds spent in ``Retry`` before going back to ``Pending``.
    description : str
        ``Description`` of the public content (``"REST API"`` by default).

    Examples
    --------
    >>> from pacsbox import Job, StepResult
    >>> class Sleep(Job):
    ...     type_name = "Sleep"
    ...     def __init__(self, steps=3):
    ...         super().__init__()
    ...         self.steps, self.done = steps, 0
    ...     def step(self, ctx):
    ...         self.done += 1
    ...         return StepResult.SUCCESS if self.done >= self.steps else StepResult.CONTINUE
    ...     def progress(self):
    ...         return 100.0 * self.done / self.steps
    ...     def serialize(self):
    ...         return {"steps": self.steps, "done": self.done}
    ...     @classmethod
    ...     def from_serialized(cls, data, ctx):
    ...         job = cls(data["steps"]); job.done = data["done"]; return job
    """

    type_name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.error_code = 0
        self.error_details = ""
        self.retry_delay = 1.0
        self.description = "REST API"
        self._stop_event = threading.Event()

    # ---- the contract --------------------------------------------------------------
    def start(self, ctx: "ServerContext") -> None:
        """Called in a worker before the first step of each run (also after a restart).

        Parameters
        ----------
        ctx : ServerContext

        Raises
        ------
        Exception
            Any exception fails the job like a failing step.
        """

    def step(self, ctx: "ServerContext") -> StepResult:
        """Run one short step (ideally well under a second).

        Parameters
        ----------
        ctx : ServerContext

        Returns
        -------
        StepResult

        Raises
        ------
        OrthancError
            The job ends in ``Failure`` with that error's code and details.
        Exception
            The job ends in ``Failure`` with ``InternalError`` and the message.
        """
        raise NotImplementedError

    def stop(self, reason: str) -> None:
        """Release what a run holds (associations, files). Called when the job leaves
        ``Running`` (reason ``"Success"``, ``"Failure"``, ``"Paused"``, ``"Canceled"``,
        ``"Retry"``).
        """

    def reset(self) -> None:
        """Go back to the first step (``POST /jobs/{id}/resubmit``)."""

    def progress(self) -> float:
        """float: progress in percent, 0-100."""
        return 0.0

    def public_content(self) -> dict[str, Any]:
        """dict: the job's ``Content`` (also the answer of a synchronous call)."""
        return {}

    def serialize(self) -> dict[str, Any] | None:
        """JSON-serializable state to rebuild the job after a restart, or None when the
        job cannot be saved (then it is not persisted)."""
        return None

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx: "ServerContext") -> "Job":
        """Rebuild a job from :meth:`serialize`'s output.

        Raises
        ------
        Exception
            An unreadable entry is skipped with a warning at start-up.
        """
        raise NotImplementedError(f"job type {cls.type_name} cannot be reloaded")

    def get_output(self, key: str) -> JobOutput | None:
        """The output named ``key`` (e.g. ``"archive"``), or None."""
        return None

    def delete_output(self, key: str) -> bool:
        """Drop an output and its file; returns whether it existed."""
        return False

    # ---- helpers --------------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        """bool: a pause or cancel is pending; long steps should return early."""
        return self._stop_event.is_set()

    def wait_stop(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on pause/cancel; returns whether
        a stop was requested."""
        return self._stop_event.wait(timeout)


class InstancesJob(Job):
    """A job that processes a list of instances, one per step (Orthanc ``SetOfInstancesJob``).

    Subclasses implement :meth:`process_instance`; optionally :meth:`setup` (first step)
    and :meth:`finalize` (last step). ``Permissive`` makes a failing instance count as
    failed instead of failing the job.

    Parameters
    ----------
    instances : list of str
        Orthanc IDs of the instances, in processing order.
    permissive : bool
        Orthanc ``Permissive``.
    """

    def __init__(self, instances: list[str] | None = None, permissive: bool = False) -> None:
        super().__init__()
        self.instances: list[str] = list(instances or [])
        self.permissive = permissive
        self.position = 0          # next instance to process
        self.failed: list[str] = []
        self.setup_done = False
        self.finalized = False

    def setup(self, ctx: "ServerContext") -> None:
        """Work done once before the first instance (runs as its own step)."""

    def process_instance(self, ctx: "ServerContext", instance_id: str) -> bool:
        """Process one instance; return False (or raise) when it failed."""
        raise NotImplementedError

    def finalize(self, ctx: "ServerContext") -> None:
        """Work done once after the last instance (runs as its own step)."""

    def step(self, ctx: "ServerContext") -> StepResult:
        """One instance per step; setup and finalize as steps of their own."""
        if not self.setup_done:
            self.setup(ctx)
            self.setup_done = True
            return StepResult.CONTINUE
        if self.position < len(self.instances):
            iid = self.instances[self.position]
            try:
                ok = self.process_instance(ctx, iid)
            except Exception:
                if not self.permissive:
                    raise
                ok = False
            if not ok:
                if not self.permissive:
                    from ..errors import ErrorCode
                    self.error_code = self.error_code or int(ErrorCode.INTERNAL_ERROR)
                    return StepResult.FAILURE
                self.failed.append(iid)
            self.position += 1
            return StepResult.CONTINUE
        if not self.finalized:
            self.finalize(ctx)
            self.finalized = True
        return StepResult.SUCCESS

    def progress(self) -> float:
        """Instances done over instances total (setup/finalize count as one step each)."""
        total = len(self.instances) + 2
        done = (1 if self.setup_done else 0) + self.position + (1 if self.finalized else 0)
        return 100.0 * done / total

    def reset(self) -> None:
        """Restart from the first instance."""
        self.position = 0
        self.failed = []
        self.setup_done = False
        self.finalized = False

    def base_state(self) -> dict[str, Any]:
        """Serializable state of this base class (merge it into :meth:`serialize`)."""
        return {"Instances": self.instances, "Permissive": self.permissive, "Position": self.position,
                "Failed": self.failed, "SetupDone": self.setup_done, "Description": self.description}

    def load_base_state(self, data: Mapping[str, Any]) -> None:
        """Restore what :meth:`base_state` saved."""
        self.instances = list(data.get("Instances", []))
        self.permissive = bool(data.get("Permissive", False))
        self.position = int(data.get("Position", 0))
        self.failed = list(data.get("Failed", []))
        self.setup_done = bool(data.get("SetupDone", False))
        self.description = data.get("Description", "REST API")
