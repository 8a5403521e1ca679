"""Shared machinery of the built-in job types: a set-of-instances job that processes its
instances in short parallel chunks, the origin of the instances a request writes, and
instance deletion. (The request bodies are read with :mod:`pacsbox.web`'s readers.)

Why chunks and threads: one instance costs a read, a byte-level rewrite, a write of the
new file (fsync'ed with ``SyncStorageArea``) and an index transaction. The writes and
SQLite release the GIL, so a small pool overlaps them with the rewriting of the next
instances. A step handles :attr:`ChunkedInstancesJob.chunk_size` instances (tens of
milliseconds), so pause and cancel still apply quickly.
"""
from __future__ import annotations

import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

from ..index.models import Level
from ..jobs.base import InstancesJob, StepResult

log = logging.getLogger("pacsbox.builtin")


# ------------------------------------------------------------------------------------------
# requests
# ------------------------------------------------------------------------------------------

def request_origin(req) -> dict[str, str]:
    """Origin of instances written on behalf of a REST request (Orthanc
    ``DicomInstanceOrigin::FromRest``): ``RestApi``, remote IP, user name; for an internal
    call (:func:`pacsbox.call_rest_api`), the caller's origin (``Lua``, ``Plugins``) alone."""
    internal = req.env.get("pacsbox.internal_origin")
    if internal:
        return {"Origin": str(internal)}
    return {"Origin": "RestApi", "RemoteIP": req.remote_addr or "",
            "HttpUsername": getattr(req.context, "username", None) or ""}


def new_seed() -> str:
    """A random per-job seed (128 bits, hex) from which the job derives its UIDs."""
    return secrets.token_hex(16)


# ------------------------------------------------------------------------------------------
# resources
# ------------------------------------------------------------------------------------------

def delete_instance(ctx, public_id: str) -> bool:
    """Delete one instance (and its parents left empty) through
    :meth:`pacsbox.resources.ResourceService.delete`.

    Returns
    -------
    bool
        Whether it existed.
    """
    res = ctx.index.lookup(public_id, Level.INSTANCE)
    return res is not None and ctx.resources.delete(res) is not None


class ParentsCache:
    """Orthanc IDs of the series, study and patient of instances, one lookup per series."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._by_series: dict[int, tuple[str, str, str]] = {}

    def hierarchy(self, instance_id: str) -> tuple[str, str, str, str] | None:
        """``(patient, study, series, instance)`` Orthanc IDs, or None when unknown."""
        index = self.ctx.index
        res = index.lookup(instance_id, Level.INSTANCE)
        if res is None:
            return None
        key = res.parent_internal
        with self._lock:
            hit = self._by_series.get(key)
        if hit is None:
            anc = index.ancestors(res)
            if len(anc) != 3:
                return None
            hit = (anc[2].public_id, anc[1].public_id, anc[0].public_id)
            with self._lock:
                self._by_series[key] = hit
        return hit + (instance_id,)


# ------------------------------------------------------------------------------------------
# the job base
# ------------------------------------------------------------------------------------------

class _Outcome:
    __slots__ = ("ok", "value", "error")

    def __init__(self, ok: bool, value: Any = None, error: BaseException | None = None) -> None:
        self.ok, self.value, self.error = ok, value, error


class ChunkedInstancesJob(InstancesJob):
    """An :class:`~pacsbox.InstancesJob` that runs :meth:`process_instance` on chunks of
    instances in a small thread pool, and records the results in order.

    Subclasses implement :meth:`process_instance` (thread-safe: it may only read shared
    state), :meth:`record` (runs on the job's thread, in instance order) and may override
    :meth:`cleanup` (called when the job fails; deletes what the job created) and
    :meth:`finalize`.

    Parameters
    ----------
    instances : list of str
    permissive : bool
    keep_source : bool
        False: delete the source instances after success (``KeepSource``).

    Attributes
    ----------
    created : list of str
        Orthanc IDs of the instances this job stored (deleted again if it fails).
    seed : str
        Random seed of the job's UIDs (saved with the job).
    """

    chunk_size = 16
    workers = 4

    def __init__(self, instances: list[str] | None = None, permissive: bool = False,
                 keep_source: bool = True) -> None:
        super().__init__(instances, permissive)
        self.keep_source = keep_source
        self.created: list[str] = []
        self.sources_done: list[str] = []
        self.seed = new_seed()
        self._pool: ThreadPoolExecutor | None = None

    # ---- life cycle --------------------------------------------------------------------
    def start(self, ctx) -> None:
        """Create the worker pool of this run."""
        if self._pool is None and self.workers > 1:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"pacsbox-{self.type_name}")

    def stop(self, reason: str) -> None:
        """Shut the worker pool down (no step runs then)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def reset(self) -> None:
        """``resubmit``: start again from the first instance (same seed, same UIDs)."""
        super().reset()
        self.created = []
        self.sources_done = []

    # ---- what subclasses provide -------------------------------------------------------
    def process_instance(self, ctx, instance_id: str) -> Any:  # pragma: no cover - abstract
        """Rewrite and store one instance; return what :meth:`record` needs.

        Raises
        ------
        Exception
            The instance failed.
        """
        raise NotImplementedError

    def record(self, ctx, instance_id: str, value: Any) -> None:
        """Account for one processed instance (job thread, instance order)."""

    def cleanup(self, ctx) -> None:
        """Delete the instances this job created (the job failed)."""
        for iid in reversed(self.created):
            try:
                delete_instance(ctx, iid)
            except Exception:  # noqa: BLE001
                log.exception("%s: could not delete instance %s after a failure", self.type_name, iid)
        self.created = []

    def finalize(self, ctx) -> None:
        """``KeepSource: false``: delete the sources that were rewritten."""
        if not self.keep_source:
            for iid in self.sources_done:
                delete_instance(ctx, iid)

    # ---- the step ---------------------------------------------------------------------------
    def _run_one(self, ctx, iid: str) -> _Outcome:
        try:
            return _Outcome(True, self.process_instance(ctx, iid))
        except Exception as e:  # noqa: BLE001 - reported by the step, in order
            return _Outcome(False, error=e)

    def step(self, ctx) -> StepResult:
        """Setup, then one chunk of instances per step, then :meth:`finalize`."""
        if not self.setup_done:
            self.setup(ctx)
            self.setup_done = True
        n = len(self.instances)
        if self.position < n:
            chunk = self.instances[self.position:self.position + self.chunk_size]
            pool = self._pool
            if pool is None or len(chunk) == 1:
                outcomes = [self._run_one(ctx, iid) for iid in chunk]
            else:
                outcomes = list(pool.map(lambda iid: self._run_one(ctx, iid), chunk))
            first_error: BaseException | None = None
            for iid, oc in zip(chunk, outcomes):
                if oc.ok:
                    try:
                        self.record(ctx, iid, oc.value)
                        continue
                    except Exception as e:  # noqa: BLE001
                        oc = _Outcome(False, error=e)
                if self.permissive and not self.stop_requested:
                    log.warning("%s: instance %s failed: %s", self.type_name, iid, oc.error)
                    self.failed.append(iid)
                elif first_error is None:
                    first_error = oc.error
            if first_error is not None:
                self.cleanup(ctx)
                raise first_error
            self.position += len(chunk)
            if self.position < n:
                return StepResult.CONTINUE
        if not self.finalized:
            self.finalize(ctx)
            self.finalized = True
        return StepResult.SUCCESS

    # ---- state --------------------------------------------------------------------------------
    def chunk_state(self) -> dict[str, Any]:
        """Serializable state of this class (with :meth:`base_state`)."""
        return {**self.base_state(), "KeepSource": self.keep_source, "Seed": self.seed,
                "Created": list(self.created), "SourcesDone": list(self.sources_done)}

    def load_chunk_state(self, data: Mapping[str, Any]) -> None:
        """Restore what :meth:`chunk_state` saved."""
        self.load_base_state(data)
        self.keep_source = bool(data.get("KeepSource", True))
        self.seed = str(data.get("Seed") or new_seed())
        self.created = list(data.get("Created", []))
        self.sources_done = list(data.get("SourcesDone", []))
