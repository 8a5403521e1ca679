"""The C-STORE SCU job, ``DicomModalityStore`` (``POST /modalities/{id}/store``).

One step sends one instance (so ``Progress`` counts instances and pause/cancel apply
between two C-STOREs); a first step announces every instance's SOP class and stored
transfer syntax (from the index, without reading files) so that **one association**
carries the whole job. The association is opened when the first instance is sent and
released when the job leaves ``Running`` (success, failure, pause, cancel, shutdown).

Pause and cancel apply within a second even while the peer is silent (a TCP listener
that never answers, an SCP that never answers a C-STORE): :meth:`StoreScuJob.interrupt`
aborts the association, the interrupted step is not counted, and a resumed job sends
that instance again on a new association.

After a crash (``SIGKILL``) the job continues from the last instance whose sending was
saved (the engine saves at most every second, so a few instances may be sent twice;
C-STORE is idempotent at the receiver).

A failed instance fails the job with Orthanc 1.10.1's error: ``NetworkProtocol`` (9)
"C-STORE SCU to AET "X" has failed with DIMSE status 0xA700" for a failure status,
``NotImplemented`` (2) "Cannot transcode from <syntax> to one of [ ... ]" when no
accepted presentation context fits; with ``Permissive`` it is counted in
``FailedInstancesCount`` (Orthanc 1.10.1 leaves that count at 0) and the job goes on.

Source: Orthanc 1.10.1 ``DicomModalityStoreJob`` (public content, serialization),
reference sections 3.3 and 9.4.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from pacsbox import ErrorCode, InstancesJob, Level, OrthancError

from .modalities import Modality, parse_modality
from .send import StoreSender, instance_uids, plan_instances
from .send_wire import SendInterrupted
from .state import plugin_state

log = logging.getLogger("pacsbox.dicom_net")


class StoreScuJob(InstancesJob):
    """Send instances to a modality with C-STORE (Orthanc ``DicomModalityStoreJob``).

    Parameters
    ----------
    instances : list of str
        Orthanc IDs of the instances, in sending order.
    modality : Modality
        The destination (with the per-call ``CalledAet``/``Host``/``Port`` already
        applied).
    modality_name : str or None
        Its symbolic name (None for a destination that is not registered).
    local_aet : str, optional
        Calling AET (``LocalAet`` of the request; the modality's own ``LocalAet`` wins
        when configured); default ``DicomAet``.
    parent_resources : list of str, optional
        The IDs given in the request (``ParentResources`` of the content).
    move_originator_aet : str, optional
        (0000,1030) *Move Originator AET* of every C-STORE.
    move_originator_id : int, optional
        (0000,1031) *Move Originator Message ID* (0 = none).
    timeout : int, optional
        Seconds (``Timeout`` of the request); default the modality's, else
        ``DicomScuTimeout``.
    permissive : bool
        ``Permissive`` (reference section 3.2).
    """

    type_name = "DicomModalityStore"

    def __init__(self, instances: list[str] | None = None, *, modality: Modality, modality_name: str | None,
                 local_aet: str | None = None, parent_resources: list[str] | None = None,
                 move_originator_aet: str | None = None, move_originator_id: int | None = None,
                 timeout: int | None = None, permissive: bool = False) -> None:
        super().__init__(instances, permissive)
        self.modality = modality
        self.modality_name = modality_name
        self.local_aet = local_aet
        self.parent_resources = list(parent_resources or [])
        self.move_originator_aet = move_originator_aet or None
        self.move_originator_id = move_originator_id or 0
        self.timeout = timeout
        self._sender: StoreSender | None = None
        self._ctx: Any = None
        self._resources: dict[str, Any] = {}  # instance ID -> Resource, from the planning step
        self._kinds: dict = {}  # internal ID -> (SOP class, transfer syntax)
        self._prefetched: dict[str, bytes] = {}  # the next instance's file, read ahead

    # ---- running ---------------------------------------------------------------------
    def start(self, ctx: Any) -> None:
        """Prepare a sender (the association opens with the first instance)."""
        self._ctx = ctx
        self._sender = StoreSender(ctx, self.modality, local_aet=self._calling_aet(ctx), timeout=self.timeout)
        if self.setup_done:  # a resumed run: announce what is left
            self._plan(ctx)

    def _calling_aet(self, ctx: Any) -> str:
        return self.modality.local_aet or self.local_aet or plugin_state(ctx).options["DicomAet"]

    def _plan(self, ctx: Any) -> None:
        rest = [r for r in (ctx.index.lookup(i, Level.INSTANCE) for i in self.instances[self.position:])
                if r is not None]
        self._resources = {r.public_id: r for r in rest}
        self._kinds = {}
        self._sender.plan(plan_instances(ctx, rest, self._kinds))

    def setup(self, ctx: Any) -> None:
        """Announce the SOP classes and transfer syntaxes of every instance."""
        self._plan(ctx)

    def process_instance(self, ctx: Any, instance_id: str) -> bool:
        """Send one instance; False (with the error set) when the peer did not store it.

        Raises
        ------
        OrthancError
            ``NETWORK_PROTOCOL``: the association cannot be opened or was lost;
            ``UNKNOWN_RESOURCE``/``INEXISTENT_FILE``: the instance was deleted meanwhile.
        SendInterrupted
            Pause, cancel or shutdown while sending (the engine applies it).
        """
        res = self._resources.pop(instance_id, None) or ctx.index.lookup(instance_id, Level.INSTANCE)
        if res is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown instance: {instance_id}")
        data = self._prefetched.pop(instance_id, None)
        if data is None:
            data = ctx.resources.read_file(res)
        if self._sender is None:
            self.start(ctx)
        originator = None
        if self.move_originator_id:  # Orthanc: a Move Originator only with a non-zero ID
            originator = self.move_originator_aet or plugin_state(ctx).options["DicomAet"]
        result = self._sender.send(data, originator_aet=originator,
                                   originator_id=self.move_originator_id if originator else None,
                                   uids=instance_uids(ctx, res, self._kinds),
                                   while_waiting=lambda: self._prefetch(ctx))
        if not result.ok:
            log.warning("C-STORE of instance %s to %s failed: %s", instance_id, self.modality.aet, result.error)
            self.error_code = result.error_code
            self.error_details = result.error
            return False
        return True

    def _prefetch(self, ctx: Any) -> None:
        """Read the next instance's file while the peer stores the current one."""
        self._prefetched.clear()
        nxt = self.position + 1
        if nxt < len(self.instances):
            iid = self.instances[nxt]
            res = self._resources.get(iid)
            if res is not None:
                self._prefetched[iid] = ctx.resources.read_file(res)

    def stop(self, reason: str) -> None:
        """Release the association."""
        self._prefetched.clear()
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def interrupt(self) -> None:
        """Abort the association so that a blocked C-STORE returns at once."""
        sender = self._sender
        if sender is not None:
            sender.interrupt()

    # ---- content ---------------------------------------------------------------------
    def public_content(self) -> dict[str, Any]:
        """``Description``, ``FailedInstancesCount``, ``InstancesCount``, ``LocalAet``,
        ``ParentResources`` (when given), ``RemoteAet``, and ``MoveOriginatorAET``/
        ``MoveOriginatorID`` when set, as Orthanc 1.10.1 (reference section 3.3)."""
        out = self.base_content()
        out["LocalAet"] = self.local_aet or self.modality.local_aet or self._default_aet()
        out["RemoteAet"] = self.modality.aet
        if self.parent_resources:
            out["ParentResources"] = list(self.parent_resources)
        if self.move_originator_id:
            out["MoveOriginatorAET"] = self.move_originator_aet or self._default_aet()
            out["MoveOriginatorID"] = self.move_originator_id
        return dict(sorted(out.items()))

    def _default_aet(self) -> str:
        if self._ctx is not None:
            return plugin_state(self._ctx).options["DicomAet"]
        return ""

    def serialize(self) -> dict[str, Any]:
        """Everything needed to continue after a restart (the instances not yet sent,
        the destination as it was at submission, the request's fields)."""
        data = self.base_state()
        data.update({"Modality": self.modality.to_json(), "ModalityName": self.modality_name,
                     "LocalAet": self.local_aet, "ParentResources": list(self.parent_resources),
                     "MoveOriginatorAet": self.move_originator_aet, "MoveOriginatorID": self.move_originator_id,
                     "Timeout": self.timeout})
        return data

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx: Any) -> "StoreScuJob":
        """Rebuild a job saved by :meth:`serialize`.

        Raises
        ------
        ModalityConfigError
            The saved destination is unreadable.
        """
        job = cls(modality=parse_modality(data.get("ModalityName") or "modality", dict(data["Modality"])),
                  modality_name=data.get("ModalityName"), local_aet=data.get("LocalAet"),
                  parent_resources=data.get("ParentResources"), move_originator_aet=data.get("MoveOriginatorAet"),
                  move_originator_id=data.get("MoveOriginatorID"), timeout=data.get("Timeout"))
        job.load_base_state(data)
        job._ctx = ctx
        return job


def job_types() -> list[type]:
    """The job types of this module: ``DicomModalityStore``."""
    return [StoreScuJob]


__all__ = ["StoreScuJob", "SendInterrupted", "job_types"]
