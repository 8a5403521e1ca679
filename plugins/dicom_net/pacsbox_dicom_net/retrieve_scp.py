"""The retrieve side of the SCP: C-MOVE and C-GET handlers (bound by :mod:`.scp`).

:func:`handle_move` and :func:`handle_get` follow pynetdicom 3.0's ``EVT_C_MOVE`` /
``EVT_C_GET`` handler protocol (generators, bound with ``ctx`` as extra argument)::

    (evt.EVT_C_MOVE, retrieve_scp.handle_move, [ctx])
    (evt.EVT_C_GET, retrieve_scp.handle_get, [ctx])

The permission checks (``DicomAlwaysAllowMove``/``Get``, the modality's ``AllowMove``/
``AllowGet``) are the SCP's, done before these handlers are called.

pynetdicom's own retrieve SCP would decode and re-encode every instance, open the C-MOVE
association itself (with the SCP's AE title as Move Originator instead of the requester's,
and without the modality's TLS, ``LocalAet`` or timeouts) and answer an unknown
destination with ``0xA801``. Orthanc's behaviour (reference section 9.7) needs more
control, so these handlers do the whole exchange themselves, inside the first step of the
generator, while pynetdicom holds the association's reactor paused:

- the stored bytes are sent unchanged through :mod:`.send` (C-MOVE: a **new**
  association to the Move Destination, opened by :func:`.scu.open_association`, each
  C-STORE carrying (0000,1030) *Move Originator AET* = the requester's AET and
  (0000,1031) *Move Originator Message ID* = the C-MOVE's Message ID; C-GET: on the
  requester's own association, in the storage contexts it offered with the SCP role);
- Pending responses (``0xFF00``) carry the sub-operation counts: C-GET sends one after
  every sub-operation, C-MOVE at most one every :data:`PENDING_INTERVAL` seconds (they
  are optional, PS3.4 C.4.2.3; Orthanc sends one per sub-operation, which costs the
  requester a decoded response per instance); the final response carries the counts
  too, with (0008,0058) *Failed SOP Instance UID List* when some failed;
- then the generator yields what makes pynetdicom end without a sub-operation, and the
  one response pynetdicom then sends (a ``0x0000`` with zero counts) is dropped, since
  the real final response has already gone.

Final statuses (PS3.4 C.4.2.1.5 and C.4.3.1.4):

=========  ==========================================================================
``0x0000``  every sub-operation succeeded
``0xB000``  some sub-operations failed or gave a warning, some succeeded
``0xC000``  every sub-operation failed (including: the destination refused the
            association), with the counts - never a silent ``0x0000``; Orthanc
            1.10.1 answers ``0xC000`` here too
``0xFE00``  cancelled by the requester (C-CANCEL), with the counts so far
``0xC000``  unknown Move Destination (no modality, no ``move_destination`` hook
            answer), an identifier that matches nothing (as Orthanc 1.10.1), a
            malformed one (``PATIENT`` level in a Study Root model), or an internal
            error: no sub-operation
=========  ==========================================================================

With ``SynchronousCMove: false`` the sub-operations run as a ``DicomModalityStore`` job
and the C-MOVE is answered at once with ``0x0000`` and one completed sub-operation, as
Orthanc's asynchronous move iterator does.

Source: DICOM PS3.4 annex C.4.2 (C-MOVE) and C.4.3 (C-GET), PS3.7 section 9.1.4;
Orthanc 1.10.1 ``OrthancMoveRequestHandler``, ``OrthancGetRequestHandler``.
"""
from __future__ import annotations

import logging
import time
from io import BytesIO
from typing import Any, Iterator, Mapping

from pydicom import Dataset
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import encode

from pacsbox import DicomFormatError, OrthancError, find_resources, read_file_meta

from .modalities import Modality, parse_modality
from .send import SendResult, StoreSender, encoded_payload, instance_uids, plan_instances
from .send_contexts import choose_context, no_context_error
from .send_wire import SendInterrupted, encode_pending_pdu, send_c_store_raw, write_pdus
from .state import plugin_state

log = logging.getLogger("pacsbox.dicom_net")

LEVELS = {"PATIENT": 0, "STUDY": 1, "SERIES": 2, "IMAGE": 3}
_SKIPPED_KEYS = {0x00080052, 0x00080005}  # QueryRetrieveLevel, SpecificCharacterSet


class _Counts:
    """Sub-operation counters and the failed SOP Instance UIDs."""

    def __init__(self, total: int) -> None:
        self.remaining = total
        self.completed = self.failed = self.warning = 0
        self.failed_uids: list[str] = []

    def add(self, result: SendResult | None, uid: str = "") -> None:
        """Count one finished sub-operation (None: failed before any answer)."""
        self.remaining -= 1
        if result is None or result.category == "failure":
            self.failed += 1
            self.failed_uids.append(result.sop_instance_uid if result is not None else uid)
        elif result.category == "warning":
            self.warning += 1
        else:
            self.completed += 1

    def fail_rest(self, uids: list[str]) -> None:
        """Count every remaining sub-operation as failed."""
        self.failed += self.remaining
        self.failed_uids.extend(uids)
        self.remaining = 0

    def final_status(self) -> int:
        """``0x0000``, ``0xB000`` (some failed or warned) or ``0xC000`` (all failed)."""
        if not self.failed and not self.warning:
            return 0x0000
        if self.completed or self.warning:
            return 0xB000
        return 0xC000


def resolve_destination(ctx: Any, aet: str) -> Modality | None:
    """The modality a C-MOVE sends to.

    Parameters
    ----------
    ctx : ServerContext
    aet : str
        (0000,0600) *Move Destination*, padding stripped.

    Returns
    -------
    Modality or None
        The first configured modality of that AET (by symbolic name; compared as
        ``StrictAetComparison`` says), else the answer of the ``move_destination`` hook
        (``(host, port)`` or an object-form definition), else None.
    """
    state = plugin_state(ctx)
    found = state.modalities.by_aet(aet)
    if found:
        return found[0][1]
    try:
        answer = ctx.pm.hook.move_destination(aet=aet)
    except Exception:  # noqa: BLE001 - a broken hook means "unknown destination"
        log.exception("move_destination hook failed for AET %s", aet)
        return None
    if answer is None:
        return None
    try:
        if isinstance(answer, Mapping):
            return parse_modality(aet, {"AET": aet, **dict(answer)})
        host, port = answer
        return Modality(aet, str(host), int(port))
    except Exception:  # noqa: BLE001
        log.exception("move_destination hook gave an unusable answer for AET %s: %r", aet, answer)
        return None


#: Study Root Q/R MOVE and GET: no PATIENT level (PS3.4 C.6.2).
STUDY_ROOT = {"1.2.840.10008.5.1.4.1.2.2.2", "1.2.840.10008.5.1.4.1.2.2.3"}


def matching_instances(ctx: Any, identifier: Dataset, model: str = "") -> list[Any]:
    """The stored instances a C-MOVE/C-GET identifier designates, in index order.

    Parameters
    ----------
    ctx : ServerContext
    identifier : pydicom.Dataset
        With (0008,0052) *Query/Retrieve Level* (``PATIENT``, ``STUDY``, ``SERIES``,
        ``IMAGE``) and the keys to match, usually the unique keys of that level and
        above (a list of UIDs separated by backslashes is a list match).
    model : str, optional
        The request's SOP class (information model): the Study Root models have no
        ``PATIENT`` level.

    Returns
    -------
    list of pacsbox.Resource

    Raises
    ------
    ValueError
        No or an unknown Query/Retrieve Level.
    OrthancError
        A key the matcher refuses.
    """
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS or (level == "PATIENT" and model in STUDY_ROOT):
        raise ValueError(f"unknown Query/Retrieve Level {level!r}")
    query: dict[str, str] = {}
    for elem in identifier:
        if int(elem.tag) in _SKIPPED_KEYS or elem.VR == "SQ" or elem.tag.group == 0x0000:
            continue
        value = elem.value
        if value is None or value == "":
            continue
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = "\\".join(str(v) for v in value)
        query[f"{elem.tag.group:04x},{elem.tag.element:04x}"] = str(value)
    if not query:
        return []
    resources = find_resources(ctx, LEVELS[level], query, dicom_rules=True)
    return ctx.resources.instances_of(resources)


def _swallow_next_response(assoc: Any, message_id: int) -> None:
    """Drop the next C-MOVE/C-GET response to ``message_id`` that pynetdicom sends on
    ``assoc`` (its own final response, after ours)."""
    dimse = assoc.dimse
    previous = dimse.__dict__.get("send_msg")
    original = previous or type(dimse).send_msg.__get__(dimse)

    def send_msg(primitive: Any, context_id: int) -> None:
        if isinstance(primitive, (C_MOVE, C_GET)) and primitive.MessageIDBeingRespondedTo == message_id:
            if previous is None:
                dimse.__dict__.pop("send_msg", None)
            else:
                dimse.send_msg = previous
            return None
        return original(primitive, context_id)

    dimse.send_msg = send_msg


class _Responder:
    """Sends the C-MOVE/C-GET responses of one request."""

    def __init__(self, event: Any, primitive: type) -> None:
        self.event = event
        self.assoc = event.assoc
        req = event.request
        self.message_id = req.MessageID
        self.sop_class = req.AffectedSOPClassUID
        self.cx_id = event.context.context_id
        self.ts = event.context.transfer_syntax
        self.primitive = primitive

    def send(self, status: int, counts: _Counts | None, *, final: bool) -> None:
        """Send one response: a Pending one (with the counts, written at once) or the
        final one (counts, and the Failed SOP Instance UID List when not a success)."""
        if not final and counts is not None:
            # the frequent Pending response: encoded here, written on the socket at once
            if self.assoc.is_established:
                write_pdus(self.assoc, encode_pending_pdu(
                    self.cx_id, 0x8021 if self.primitive is C_MOVE else 0x8010, self.sop_class, self.message_id,
                    remaining=counts.remaining, completed=counts.completed, failed=counts.failed,
                    warning=counts.warning, status=status))
            return
        rsp = self.primitive()
        rsp.MessageIDBeingRespondedTo = self.message_id
        rsp.AffectedSOPClassUID = self.sop_class
        rsp.Status = status
        if counts is not None:
            if not final or status == 0xFE00:
                rsp.NumberOfRemainingSuboperations = counts.remaining
            rsp.NumberOfCompletedSuboperations = counts.completed
            rsp.NumberOfFailedSuboperations = counts.failed
            rsp.NumberOfWarningSuboperations = counts.warning
            if final and status != 0x0000 and counts.failed_uids:
                ds = Dataset()
                ds.FailedSOPInstanceUIDList = counts.failed_uids
                ts = self.ts
                rsp.Identifier = BytesIO(encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated))
        if self.assoc.is_established:
            self.assoc.dimse.send_msg(rsp, self.cx_id)

    def finish(self) -> None:
        """Arrange for pynetdicom's trailing response to be dropped."""
        _swallow_next_response(self.assoc, self.message_id)


#: Seconds between two C-MOVE Pending responses (PS3.4 C.4.2.3: they are optional).
PENDING_INTERVAL = 0.1


class _DeferredPending:
    """The Pending response of the last sub-operation, sent once the next C-STORE is
    on its way (so that the peer starts storing before it reads the Pending).

    Parameters
    ----------
    responder : _Responder
    interval : float
        Seconds: a held Pending is sent only if the previous one is at least that old
        (0: every one). C-MOVE uses :data:`PENDING_INTERVAL`, so a requester gets its
        progress ten times a second without decoding one response per instance; C-GET
        sends every one.
    """

    def __init__(self, responder: _Responder, interval: float = 0.0) -> None:
        self.responder = responder
        self.snapshot: _Counts | None = None
        self.interval = interval
        self.last = time.monotonic()

    def hold(self, counts: _Counts) -> None:
        """Keep a copy of ``counts`` for the Pending response to send."""
        snap = _Counts(0)
        snap.remaining, snap.completed, snap.failed, snap.warning = (counts.remaining, counts.completed,
                                                                     counts.failed, counts.warning)
        self.snapshot = snap

    def flush(self) -> None:
        """Send the held Pending response, if any and if due (see ``interval``)."""
        if self.snapshot is None:
            return
        now = time.monotonic()
        if self.interval and now - self.last < self.interval:
            return
        snap, self.snapshot = self.snapshot, None
        self.last = now
        self.responder.send(0xFF00, snap, final=False)


def _sub_operations(ctx: Any, event: Any, responder: _Responder, instances: list[Any],
                    send_one: Any, pending_interval: float = 0.0) -> _Counts:
    """Run ``send_one(instance, pending) -> SendResult`` per instance with Pending
    responses and C-CANCEL checks; returns the counts (the final response is the
    caller's). ``send_one`` calls ``pending.flush()`` once its C-STORE is written (else it
    is flushed after it)."""
    counts = _Counts(len(instances))
    pending = _DeferredPending(responder, pending_interval)
    for i, inst in enumerate(instances):
        if event.is_cancelled:
            responder.send(0xFE00, counts, final=True)
            return None  # type: ignore[return-value]
        result = send_one(inst, pending)
        pending.flush()
        counts.add(result, str(inst.main_tags.get("SOPInstanceUID", "")))
        if counts.remaining:
            pending.hold(counts)
    return counts


def handle_move(event: Any, ctx: Any) -> Iterator[Any]:
    """``EVT_C_MOVE`` handler: send the matching instances to the Move Destination.

    Parameters
    ----------
    event : pynetdicom.events.Event
        The C-MOVE request (identifier, (0000,0600) *Move Destination*, requester).
    ctx : ServerContext
        Bound as the handler's extra argument.

    Yields
    ------
    Values of pynetdicom's C-MOVE protocol that end its processing: every response,
    Pending and final, has already been sent by this handler (see the module notes).

    Notes
    -----
    Never raises: an internal error is answered ``0xC000`` (logged).
    """
    responder = _Responder(event, C_MOVE)
    try:
        _do_move(event, ctx, responder)
    except Exception:  # noqa: BLE001 - the peer gets a status, never an abort
        log.exception("C-MOVE SCP failed")
        responder.send(0xC000, _Counts(0), final=True)
    responder.finish()
    yield ("127.0.0.1", 1)  # a placeholder destination: the count below is 0
    yield 0


def _do_move(event: Any, ctx: Any, responder: _Responder) -> None:
    dest_aet = str(event.move_destination or "").strip()
    requester = str(event.assoc.requestor.ae_title or "").strip()
    modality = resolve_destination(ctx, dest_aet)
    if modality is None:
        log.warning("Unknown modality for AET: %s", dest_aet)
        responder.send(0xC000, _Counts(0), final=True)
        return
    try:
        instances = matching_instances(ctx, event.identifier, str(event.request.AffectedSOPClassUID))
    except (ValueError, OrthancError) as e:
        log.warning("C-MOVE identifier refused: %s", e)
        responder.send(0xC000, _Counts(0), final=True)
        return
    if not instances:  # Orthanc 1.10.1: an identifier matching nothing is a failure
        responder.send(0xC000, _Counts(0), final=True)
        return
    state = plugin_state(ctx)
    if not state.options["SynchronousCMove"]:
        from .store_job import StoreScuJob  # a job for the sub-operations (Orthanc's asynchronous move)
        job = StoreScuJob([i.public_id for i in instances], modality=modality, modality_name=None,
                          move_originator_aet=requester, move_originator_id=responder.message_id)
        ctx.jobs.submit(job, 0)
        counts = _Counts(1)
        counts.completed, counts.remaining = 1, 0
        responder.send(0x0000, counts, final=True)
        return
    sender = StoreSender(ctx, modality)
    kinds: dict = {}
    sender.plan(plan_instances(ctx, instances, kinds))
    lost: list[Exception] = []

    ahead: dict[int, bytes] = {}
    order = {inst.internal_id: i for i, inst in enumerate(instances)}

    def read_next(inst: Any, pending: _DeferredPending) -> None:
        pending.flush()
        i = order[inst.internal_id] + 1
        if i < len(instances):
            ahead[instances[i].internal_id] = ctx.resources.read_file(instances[i])

    def send_one(inst: Any, pending: _DeferredPending) -> SendResult | None:
        if lost:
            return None
        try:
            data = ahead.pop(inst.internal_id, None)
            if data is None:
                data = ctx.resources.read_file(inst)
            return sender.send(data, originator_aet=requester, originator_id=responder.message_id,
                               uids=instance_uids(ctx, inst, kinds), while_waiting=lambda: read_next(inst, pending))
        except (OrthancError, SendInterrupted, DicomFormatError) as e:
            if getattr(e, "code", None) is not None and "DicomAssociation" in str(e):
                lost.append(e)  # the destination is unreachable: the rest fails too
            log.warning("C-MOVE sub-operation to %s failed: %s", modality.aet, e)
            return None

    try:
        counts = _sub_operations(ctx, event, responder, instances, send_one, PENDING_INTERVAL)
    finally:
        sender.close()
    if counts is not None:
        responder.send(counts.final_status(), counts, final=True)


def handle_get(event: Any, ctx: Any) -> Iterator[Any]:
    """``EVT_C_GET`` handler: send the matching instances back on the requester's
    association.

    Parameters
    ----------
    event : pynetdicom.events.Event
        The C-GET request.
    ctx : ServerContext
        Bound as the handler's extra argument.

    Yields
    ------
    Values of pynetdicom's C-GET protocol that end its processing (every response has
    already been sent by this handler).

    Notes
    -----
    An instance whose SOP class the requester offered no storage context for (with the
    SCP role), or whose stored syntax it refused without an uncompressed alternative, is
    a failed sub-operation. Never raises: an internal error is answered ``0xC000``.
    """
    responder = _Responder(event, C_GET)
    try:
        _do_get(event, ctx, responder)
    except Exception:  # noqa: BLE001
        log.exception("C-GET SCP failed")
        responder.send(0xC000, _Counts(0), final=True)
    responder.finish()
    yield 0


def _do_get(event: Any, ctx: Any, responder: _Responder) -> None:
    try:
        instances = matching_instances(ctx, event.identifier, str(event.request.AffectedSOPClassUID))
    except (ValueError, OrthancError) as e:
        log.warning("C-GET identifier refused: %s", e)
        responder.send(0xC000, _Counts(0), final=True)
        return
    if not instances:
        responder.send(0xC000, _Counts(0), final=True)
        return
    opts = plugin_state(ctx).options
    assoc = event.assoc
    allow = bool(opts["TranscodeDicomProtocol"])
    preferred = opts["DicomScuPreferredTransferSyntax"]
    msg_ids = iter(range(1, 1 << 30))

    def send_one(inst: Any, pending: _DeferredPending) -> SendResult | None:
        data = ctx.resources.read_file(inst)
        meta = read_file_meta(data)
        sop_class, sop_instance = instance_uids(ctx, inst)
        result = SendResult(sop_class or meta.sop_class_uid, sop_instance or meta.sop_instance_uid)
        chosen = choose_context(assoc.accepted_contexts, result.sop_class_uid, meta.transfer_syntax,
                                allow_transcoding=allow, preferred_ts=preferred, role="scu")
        if chosen is None:
            result.error = no_context_error(meta.transfer_syntax, [
                str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
                if cx.abstract_syntax == result.sop_class_uid and cx.as_scu])
            log.warning("C-GET sub-operation failed: %s", result.error)
            return result
        cx, target = chosen
        payload = encoded_payload(data, meta, target, result)
        if payload is None:
            return result
        msg_id = (responder.message_id + next(msg_ids)) % 65536
        status = send_c_store_raw(assoc, cx.context_id, result.sop_class_uid, result.sop_instance_uid, payload,
                                  msg_id=msg_id)
        result.status = int(status.Status) if "Status" in status else None
        return result

    counts = _sub_operations(ctx, event, responder, instances, send_one)
    if counts is not None:
        responder.send(counts.final_status(), counts, final=True)
