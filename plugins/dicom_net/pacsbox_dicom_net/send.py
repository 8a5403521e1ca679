"""Sending stored instances over an association (the C-STORE SCU of every sender).

The C-STORE jobs, the C-MOVE sub-operations and ``store-straight`` all send through
:class:`StoreSender`, which:

- proposes the presentation contexts (:func:`.send_contexts.plan_contexts`): for each
  SOP class, one context per transfer syntax the instances are stored in, then one
  context holding the uncompressed syntaxes (``DicomScuPreferredTransferSyntax`` first)
  when the modality's ``AllowTranscoding`` and ``TranscodeDicomProtocol`` allow
  converting;
- sends the stored bytes **unchanged** (the data set bytes after the file's meta group,
  :attr:`pacsbox.FileMeta.dataset_offset`, no pydicom decode) whenever the peer accepted
  the stored syntax; otherwise transcodes with :func:`pacsbox.transcode` into an
  accepted uncompressed syntax, and checks that the result really is in that syntax; an
  instance with no usable context fails with a message saying why;
- returns the peer's answer as data (:class:`SendResult`): warnings ``0xB000``,
  ``0xB006``, ``0xB007`` count as sent, a failure status, a refused context or a
  transcoding failure count as failed; only a lost association raises;
- opens one association for all the instances it sends, reopens it only when an
  instance needs a context that was not proposed (more than 128 SOP class/syntax
  pairs, or an instance that was not announced with :meth:`StoreSender.plan`), and can
  be interrupted from another thread (:meth:`StoreSender.interrupt`) even while the
  peer is silent.

The presentation contexts are planned and chosen in :mod:`.send_contexts`, the C-STORE
messages are encoded, written and answered on the wire in :mod:`.send_wire`; this module
holds the sender, its result and the index look-ups of what is sent.

Source: DICOM PS3.4 annex B (Storage Service Class), PS3.7 section 9.1.1 (C-STORE) and
annex C (status codes), PS3.8 section 9.3.2.2 (at most 128 presentation contexts);
Orthanc 1.10.1 ``DicomStoreUserConnection`` (contexts, transcoding) for the behaviour.
"""
from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from pynetdicom import evt
from pynetdicom.pdu_primitives import A_P_ABORT

from pacsbox import DicomFormatError, ErrorCode, OrthancError, read_file_meta, transcode

from .modalities import Modality
from .scu import open_association, scu_timeout
from .send_contexts import choose_context, is_uncompressed, no_context_error, plan_contexts
from .send_wire import DUL_LOOP_DELAY, DirectResponses, SendInterrupted, hold_reactor, send_c_store_raw
from .state import plugin_state

#: C-STORE warning statuses (PS3.4 B.2.3): the instance was stored.
WARNING_STATUSES = frozenset({0xB000, 0xB006, 0xB007})


@dataclass
class SendResult:
    """The outcome of sending one instance.

    Attributes
    ----------
    sop_class_uid : str
        (0008,0016) *SOP Class UID* (from the file meta).
    sop_instance_uid : str
        (0008,0018) *SOP Instance UID*.
    status : int or None
        (0000,0900) *Status* of the C-STORE response; None when no C-STORE was sent
        (no usable presentation context, transcoding impossible) or no response came.
    transfer_syntax : str
        The transfer syntax the data set was sent in (empty when not sent).
    transcoded : bool
        Whether the data set was converted from its stored syntax.
    error : str
        Why the instance failed (empty on success or warning), in Orthanc 1.10.1's
        words: ``C-STORE SCU to AET "X" has failed with DIMSE status 0xA700``, or
        ``Cannot transcode from <syntax> to one of [ <accepted syntaxes> ]``.
    error_code : int
        The Orthanc error code of that failure: ``NETWORK_PROTOCOL`` (9) for a failure
        status, ``NOT_IMPLEMENTED`` (2) when no accepted context or conversion fits,
        as Orthanc 1.10.1 reports them.
    """

    sop_class_uid: str
    sop_instance_uid: str
    status: int | None = None
    transfer_syntax: str = ""
    transcoded: bool = False
    error: str = ""
    error_code: int = 9

    @property
    def category(self) -> str:
        """str: ``"success"`` (``0x0000``), ``"warning"`` (``0xB000``, ``0xB006``,
        ``0xB007``: stored with a remark) or ``"failure"`` (anything else)."""
        if self.status == 0x0000 and not self.error:
            return "success"
        if self.status in WARNING_STATUSES and not self.error:
            return "warning"
        return "failure"

    @property
    def ok(self) -> bool:
        """bool: the peer stored the instance (success or warning)."""
        return self.category != "failure"


def encoded_payload(data: bytes, meta: Any, target: str, result: SendResult) -> bytes | None:
    """The data set bytes of ``data`` encoded in ``target``.

    Parameters
    ----------
    data : bytes
        The stored Part-10 file.
    meta : pacsbox.FileMeta
        Its meta information (:func:`pacsbox.read_file_meta`).
    target : str
        Transfer syntax to send in.
    result : SendResult
        Updated: ``transfer_syntax``, ``transcoded``, the UIDs of a converted file (the
        converter rewrites the meta group from the data set), or ``error``.

    Returns
    -------
    bytes or None
        ``data[meta.dataset_offset:]`` unchanged when ``target`` is the stored syntax;
        the converted data set otherwise; None (and ``result.error`` set) when the
        conversion is impossible or did not give ``target``.
    """
    if target == meta.transfer_syntax:
        result.transfer_syntax = target
        return data[meta.dataset_offset:]
    converted = transcode(data, target)
    new_meta = read_file_meta(converted) if converted is not None else None
    if new_meta is None or new_meta.transfer_syntax != target:
        result.error = f"Cannot transcode from {meta.transfer_syntax} to one of [ {target} ]"
        result.error_code = int(ErrorCode.NOT_IMPLEMENTED)
        return None
    result.sop_class_uid = new_meta.sop_class_uid or result.sop_class_uid
    result.sop_instance_uid = new_meta.sop_instance_uid or result.sop_instance_uid
    result.transfer_syntax = target
    result.transcoded = True
    return converted[new_meta.dataset_offset:]


class StoreSender:
    """C-STORE SCU toward one modality over one association, opened on first use.

    Parameters
    ----------
    ctx : ServerContext
    modality : Modality
        The called node.
    local_aet : str, optional
        Calling AET (the modality's ``LocalAet`` wins; default ``DicomAet``).
    timeout : float, optional
        Seconds for the network and each response (default: the modality's ``Timeout``,
        else ``DicomScuTimeout``).
    allow_transcoding : bool, optional
        Default: the modality's ``AllowTranscoding`` and the ``TranscodeDicomProtocol``
        option.
    preferred_ts : str, optional
        Default ``DicomScuPreferredTransferSyntax``.

    Notes
    -----
    Not thread-safe except :meth:`interrupt`. Use it as a context manager, or call
    :meth:`close`.

    Examples
    --------
    >>> with StoreSender(ctx, modality) as sender:            # doctest: +SKIP
    ...     sender.plan([(meta.sop_class_uid, meta.transfer_syntax)])
    ...     result = sender.send(data)
    """

    def __init__(self, ctx: Any, modality: Modality, *, local_aet: str | None = None, timeout: float | None = None,
                 allow_transcoding: bool | None = None, preferred_ts: str | None = None) -> None:
        opts = plugin_state(ctx).options
        self.ctx = ctx
        self.modality = modality
        self.local_aet = local_aet
        self.timeout = scu_timeout(ctx, modality, timeout)
        if allow_transcoding is None:
            allow_transcoding = modality.allows("Transcoding") and bool(opts["TranscodeDicomProtocol"])
        self.allow_transcoding = allow_transcoding
        self.preferred_ts = preferred_ts or opts["DicomScuPreferredTransferSyntax"]
        self.assoc: Any = None
        self._pairs: dict[tuple[str, str], None] = {}
        self._proposed: set[tuple[str, str]] = set()
        self._proposed_classes: set[str] = set()
        self._msg_id = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._opening: Any = None
        self._reader: DirectResponses | None = None

    # ---- association ----------------------------------------------------------------
    def plan(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Announce the ``(SOP class UID, stored transfer syntax)`` of instances to send,
        so that one association proposes all of them. Call it before the first
        :meth:`send`; later calls take effect when the association is reopened."""
        for p in pairs:
            self._pairs.setdefault((p[0], p[1]), None)

    def _remember(self, event: Any) -> None:
        with self._lock:
            self._opening = event.assoc
            stopped = self._stop.is_set()
        if stopped:
            self._kill(event.assoc)

    def open(self, first: tuple[str, str] | None = None) -> Any:
        """Open the association (releasing a previous one), proposing ``first`` (the
        kind of the instance about to be sent) and then the planned kinds.

        Returns
        -------
        pynetdicom.association.Association

        Raises
        ------
        OrthancError
            ``NETWORK_PROTOCOL`` when the association cannot be established (Orthanc's
            wording, see :func:`pacsbox_dicom_net.scu.open_association`).
        SendInterrupted
            :meth:`interrupt` was called.
        """
        self.close()
        if self._stop.is_set():
            raise SendInterrupted()
        pairs = ([first] if first else []) + [p for p in self._pairs if p != first]
        contexts = plan_contexts(pairs, allow_transcoding=self.allow_transcoding, preferred_ts=self.preferred_ts)
        try:
            assoc = open_association(self.ctx, self.modality, contexts, local_aet=self.local_aet, timeout=self.timeout,
                                     evt_handlers=[(evt.EVT_CONN_OPEN, self._remember)])
        except OrthancError:
            if self._stop.is_set():
                raise SendInterrupted() from None
            raise
        assoc.dul._run_loop_delay = DUL_LOOP_DELAY  # noqa: SLF001
        hold_reactor(assoc)  # this sender alone reads the responses until close()
        if not isinstance(assoc.dul.socket.socket, ssl.SSLSocket):
            self._reader = DirectResponses(assoc)
        with self._lock:
            self.assoc = assoc
            self._opening = None
        self._proposed = {(cx.abstract_syntax, ts) for cx in contexts for ts in cx.transfer_syntax}
        self._proposed_classes = {str(cx.abstract_syntax) for cx in contexts}
        return assoc

    def close(self) -> None:
        """Release the association (abort it if the release fails)."""
        with self._lock:
            assoc, self.assoc = self.assoc, None
        reader, self._reader = self._reader, None
        if reader is not None and not reader.detach() and assoc is not None:
            assoc._reactor_checkpoint.set()  # noqa: SLF001
            assoc.abort()  # lost, or a PDU left unread: no orderly release possible
            return
        if assoc is not None:
            assoc._reactor_checkpoint.set()  # noqa: SLF001 - see hold_reactor
        if assoc is not None and assoc.is_established:
            try:
                assoc.release()
            except Exception:  # noqa: BLE001 - the peer is gone; nothing to release
                assoc.abort()

    def interrupt(self) -> None:
        """Make a pending or future :meth:`send`/:meth:`open` end with
        :class:`SendInterrupted` at once, aborting the association (thread-safe)."""
        self._stop.set()
        with self._lock:
            assoc = self.assoc or self._opening
        if assoc is not None:
            self._kill(assoc)

    @staticmethod
    def _kill(assoc: Any) -> None:
        """Abort ``assoc`` from another thread, established or still negotiating."""
        negotiating = not assoc.is_established
        if not negotiating:
            try:
                assoc.abort(block=False)
            except Exception:  # noqa: BLE001
                pass
        sock = getattr(getattr(assoc, "dul", None), "socket", None)
        try:
            if sock is not None:
                sock.close()
        except Exception:  # noqa: BLE001
            pass
        if negotiating:
            # wake the requestor waiting for A-ASSOCIATE-AC (pynetdicom waits on the DUL's
            # to-user queue for up to the ACSE timeout): it takes this as an abort
            try:
                assoc.dul.to_user_queue.put(A_P_ABORT())
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> "StoreSender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- sending --------------------------------------------------------------------
    def _choose(self, sop_class: str, ts: str) -> tuple[Any, str] | None:
        return choose_context(self.assoc.accepted_contexts, sop_class, ts, allow_transcoding=self.allow_transcoding,
                              preferred_ts=self.preferred_ts)

    def next_message_id(self) -> int:
        """int: the next (0000,0110) *Message ID* on this sender (1-65535, wrapping)."""
        self._msg_id = self._msg_id % 65535 + 1
        return self._msg_id

    def send(self, data: bytes, *, originator_aet: str | None = None, originator_id: int | None = None,
             uids: tuple[str, str] | None = None, while_waiting: Any = None) -> SendResult:
        """Send one stored DICOM file.

        Parameters
        ----------
        data : bytes
            The Part-10 file as stored (preamble, meta group, data set).
        originator_aet : str, optional
            Move Originator AET (C-MOVE sub-operations, ``MoveOriginatorAet``).
        originator_id : int, optional
            Move Originator Message ID.
        uids : (str, str), optional
            (0008,0016) *SOP Class UID* and (0008,0018) *SOP Instance UID* of the data
            set, from the index (:func:`instance_uids`). They are what the C-STORE
            announces, as Orthanc (DCMTK) takes them from the data set; without them the
            file's meta group gives them, and a file whose meta group disagrees with its
            data set is refused by strict peers (``0xA900``).
        while_waiting : callable, optional
            Work to do while the peer handles the request (see
            :func:`.send_wire.send_c_store_raw`), such as reading the next file.

        Returns
        -------
        SendResult
            The peer's answer; a refused context or an impossible conversion is a
            failure result with ``status`` None and ``error`` saying why.

        Raises
        ------
        OrthancError
            ``NETWORK_PROTOCOL`` when the association cannot be opened or is lost (no
            response within the timeout, aborted by the peer); ``BAD_FILE_FORMAT`` when
            ``data`` is not a DICOM file.
        SendInterrupted
            :meth:`interrupt` was called.
        """
        try:
            meta = read_file_meta(data)
        except DicomFormatError as e:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, str(e)) from None
        sop_class, sop_instance, ts = meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax
        if uids is not None:
            sop_class, sop_instance = uids[0] or sop_class, uids[1] or sop_instance
        result = SendResult(sop_class, sop_instance)
        if not sop_class or not sop_instance:
            result.error = "The file has no Media Storage SOP Class/Instance UID in its meta information"
            return result
        if self.assoc is None or not self.assoc.is_established:
            self.open((sop_class, ts))
        elif (sop_class, ts) not in self._proposed and not (
                sop_class in self._proposed_classes and (self.allow_transcoding or is_uncompressed(ts))):
            # a kind that was not proposed: negotiate again, this instance's kind first
            self._pairs.setdefault((sop_class, ts), None)
            self.open((sop_class, ts))
        chosen = self._choose(sop_class, ts)
        if chosen is None:
            accepted = [str(cx.transfer_syntax[0]) for cx in self.assoc.accepted_contexts
                        if cx.abstract_syntax == sop_class]
            result.error = no_context_error(ts, accepted)
            result.error_code = int(ErrorCode.NOT_IMPLEMENTED)
            return result
        cx, target = chosen
        payload = encoded_payload(data, meta, target, result)
        if payload is None:
            return result
        status = send_c_store_raw(self.assoc, cx.context_id, result.sop_class_uid, result.sop_instance_uid, payload,
                                  msg_id=self.next_message_id(), originator_aet=originator_aet,
                                  originator_id=originator_id, timeout=self.timeout, stop=self._stop,
                                  paused=True, while_waiting=while_waiting, reader=self._reader)
        if "Status" not in status:
            self.close()
            if self._stop.is_set():
                raise SendInterrupted()
            raise OrthancError(ErrorCode.NETWORK_PROTOCOL,
                               f'DicomAssociation - C-STORE to AET "{self.modality.aet}": '
                               "no response from the remote modality (timeout or association lost)")
        result.status = int(status.Status)
        if not result.ok:
            result.error = f'C-STORE SCU to AET "{self.modality.aet}" has failed with DIMSE status 0x{result.status:04X}'
        return result


def stored_kind(ctx: Any, instance: Any) -> tuple[str, str] | None:
    """``(SOP class UID, transfer syntax UID)`` of a stored instance from its index
    metadata (``SopClassUid``, ``TransferSyntax``), without reading the file; None when
    the metadata is missing.

    Parameters
    ----------
    ctx : ServerContext
    instance : pacsbox.Resource
        An instance.
    """
    md = ctx.index.metadata(instance.internal_id)
    sop_class, ts = md.get("SopClassUid"), md.get("TransferSyntax")
    if sop_class and ts:
        return sop_class, ts
    return None


def instance_uids(ctx: Any, instance: Any, cache: dict | None = None) -> tuple[str, str]:
    """(0008,0016) *SOP Class UID* and (0008,0018) *SOP Instance UID* of a stored
    instance, from the index (metadata ``SopClassUid``, main tag ``SOPInstanceUID``);
    empty strings for what the index lacks.

    Parameters
    ----------
    ctx : ServerContext
    instance : pacsbox.Resource
    cache : dict, optional
        Filled by :func:`plan_instances` (saves a query per instance).
    """
    kind = cache.get(instance.internal_id) if cache is not None else None
    if kind is None:
        kind = stored_kind(ctx, instance) or ("", "")
    return kind[0], str(instance.main_tags.get("SOPInstanceUID", "") or "")


def plan_instances(ctx: Any, instances: Sequence[Any], cache: dict | None = None) -> list[tuple[str, str]]:
    """The ``(SOP class, transfer syntax)`` kinds of ``instances``, in order, from the
    index (see :func:`stored_kind`); instances without metadata are left out (they are
    negotiated when they come).

    Parameters
    ----------
    ctx : ServerContext
    instances : sequence of pacsbox.Resource
    cache : dict, optional
        Filled with internal ID -> kind, for :func:`instance_uids`.
    """
    out = []
    seen: set[tuple[str, str]] = set()
    for inst in instances:
        k = stored_kind(ctx, inst)
        if k is None:
            continue
        if cache is not None:
            cache[inst.internal_id] = k
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out
