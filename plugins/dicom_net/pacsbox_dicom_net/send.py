"""Sending stored instances over an association (the C-STORE SCU of every sender).

The C-STORE jobs, the C-MOVE sub-operations and ``store-straight`` all send through
:class:`StoreSender`, which:

- proposes the presentation contexts (:func:`plan_contexts`): for each SOP class, one
  context per transfer syntax the instances are stored in, then one context holding the
  uncompressed syntaxes (``DicomScuPreferredTransferSyntax`` first) when the modality's
  ``AllowTranscoding`` and ``TranscodeDicomProtocol`` allow converting;
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

Source: DICOM PS3.4 annex B (Storage Service Class), PS3.7 section 9.1.1 (C-STORE) and
annex C (status codes), PS3.8 section 9.3.2.2 (at most 128 presentation contexts);
Orthanc 1.10.1 ``DicomStoreUserConnection`` (contexts, transcoding) for the behaviour.
"""
from __future__ import annotations

import logging
import queue
import select
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from pynetdicom import evt
from pynetdicom.pdu_primitives import A_P_ABORT, P_DATA
from pynetdicom.presentation import PresentationContext, build_context

from pacsbox import DicomFormatError, ErrorCode, OrthancError, read_file_meta, transcode

from .dimse import command_pdu, command_set, data_pdus, element, response_pdu, uid, us
from .modalities import Modality
from .scu import open_association, scu_timeout
from .state import plugin_state

log = logging.getLogger("pacsbox.dicom_net")

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
VERIFICATION = "1.2.840.10008.1.1"
#: The uncompressed transfer syntaxes a converted instance may be sent in.
UNCOMPRESSED = (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE)
#: PS3.8 section 9.3.2.2: presentation contexts in one A-ASSOCIATE-RQ.
MAX_CONTEXTS = 128
#: C-STORE warning statuses (PS3.4 B.2.3): the instance was stored.
WARNING_STATUSES = frozenset({0xB000, 0xB006, 0xB007})
#: Seconds between checks for an interruption while waiting for a C-STORE response.
_POLL = 0.05


class SendInterrupted(Exception):
    """:meth:`StoreSender.interrupt` was called while a send was going on."""


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


def is_uncompressed(ts: str) -> bool:
    """Whether ``ts`` is one of the three uncompressed transfer syntaxes (not deflated)."""
    return ts in UNCOMPRESSED


def uncompressed_order(preferred: str) -> list[str]:
    """The uncompressed syntaxes to offer for conversion, ``preferred`` first when it is
    uncompressed (``DicomScuPreferredTransferSyntax``), then Explicit and Implicit VR
    Little Endian, then Explicit VR Big Endian."""
    out = [preferred] if is_uncompressed(preferred) else []
    return out + [ts for ts in UNCOMPRESSED if ts not in out]


def plan_contexts(pairs: Iterable[tuple[str, str]], *, allow_transcoding: bool,
                  preferred_ts: str = EXPLICIT_LE, limit: int = MAX_CONTEXTS) -> list[PresentationContext]:
    """The presentation contexts to propose for instances of the given kinds.

    Parameters
    ----------
    pairs : iterable of (str, str)
        ``(SOP class UID, stored transfer syntax UID)`` of the instances to send, in
        sending order (duplicates are fine).
    allow_transcoding : bool
        Also propose, per SOP class, a context of uncompressed syntaxes for converting
        instances whose stored syntax the peer refuses. Without it, an uncompressed
        instance is still proposed in the three uncompressed syntaxes (no pixel data
        is converted then, only the element encoding), a compressed one only in its own.
    preferred_ts : str
        ``DicomScuPreferredTransferSyntax``: first syntax of the conversion context.
    limit : int
        Contexts at most (128 in DICOM, one of them Verification); the first
        instances' kinds are proposed first.

    Returns
    -------
    list of PresentationContext
        For each SOP class, in order of first appearance: one context per stored syntax
        (a single syntax each, so that the peer's choice cannot replace it), then the
        conversion context; last, Verification. Context IDs are given by pynetdicom
        when associating.
    """
    order: dict[str, list[str]] = {}
    for sop_class, ts in pairs:
        tss = order.setdefault(sop_class, [])
        if ts not in tss:
            tss.append(ts)
    out: list[PresentationContext] = []
    for sop_class, tss in order.items():
        wanted = [[ts] for ts in tss]
        if allow_transcoding or any(is_uncompressed(ts) for ts in tss):
            wanted.append(uncompressed_order(preferred_ts))
        if len(out) + len(wanted) > limit - 1:
            break
        for syntaxes in wanted:
            out.append(build_context(sop_class, syntaxes))
    # Verification too, as Orthanc (DCMTK) does: a peer that refuses every storage
    # context then still accepts the association, and each instance fails on its own
    out.append(build_context(VERIFICATION, [IMPLICIT_LE]))
    return out


def encode_c_store_pdus(context_id: int, max_pdu: int, sop_class_uid: str, sop_instance_uid: str, dataset: bytes, *,
                        msg_id: int, priority: int = 2, originator_aet: str | None = None,
                        originator_id: int | None = None) -> bytes:
    """The P-DATA-TF PDUs of one C-STORE-RQ, ready for the socket.

    Parameters
    ----------
    context_id : int
        Presentation context ID (odd, 1-255).
    max_pdu : int
        The peer's maximum PDU length (bytes; 0 = unlimited).
    sop_class_uid, sop_instance_uid : str
        (0000,0002) and (0000,1000).
    dataset : bytes
        The encoded data set.
    msg_id : int
        (0000,0110) *Message ID*.
    priority : int
        (0000,0700) *Priority*.
    originator_aet : str, optional
        (0000,1030) *Move Originator Application Entity Title*.
    originator_id : int, optional
        (0000,1031) *Move Originator Message ID*.

    Returns
    -------
    bytes
        One PDU holding the command set (Implicit VR Little Endian, PS3.7 section 6.3.1,
        group length first), then the data set in PDVs of at most ``max_pdu - 6``
        bytes, one per PDU, the last one flagged (PS3.8 annex E).

    Notes
    -----
    Source: PS3.7 section 9.3.1.1 (C-STORE-RQ fields), PS3.8 section 9.3.5 (P-DATA-TF);
    what pynetdicom's ``DIMSEMessage.encode_msg`` produces, without pydicom.
    """
    elements = [element(0x0002, uid(sop_class_uid)), element(0x0100, us(0x0001)), element(0x0110, us(msg_id)),
                element(0x0700, us(priority)), element(0x0800, us(0x0001)), element(0x1000, uid(sop_instance_uid))]
    if originator_aet:
        aet = originator_aet.encode("ascii")
        elements.append(element(0x1030, aet + b" " if len(aet) % 2 else aet))
        if originator_id is not None:
            elements.append(element(0x1031, us(originator_id)))
    return b"".join([command_pdu(context_id, command_set(elements)), *data_pdus(context_id, dataset, max_pdu)])


def encode_pending_pdu(context_id: int, command_field: int, sop_class_uid: str, responded_id: int, *,
                       remaining: int, completed: int, failed: int, warning: int, status: int = 0xFF00) -> bytes:
    """The P-DATA-TF PDU of a C-MOVE-RSP (``command_field`` ``0x8021``) or C-GET-RSP
    (``0x8010``) without identifier, as a Pending response carries.

    Parameters
    ----------
    context_id : int
        Presentation context of the request.
    command_field : int
        (0000,0100) *Command Field*.
    sop_class_uid : str
        (0000,0002) *Affected SOP Class UID* of the request.
    responded_id : int
        (0000,0120) *Message ID Being Responded To*.
    remaining, completed, failed, warning : int
        (0000,1020) to (0000,1023), the sub-operation counts (0-65535).
    status : int
        (0000,0900) *Status* (``0xFF00`` Pending).

    Returns
    -------
    bytes
        One PDU (command set in Implicit VR Little Endian, last fragment), byte-identical
        to pynetdicom's encoding of the same response.
    """
    counts = [element(0x1020, us(remaining)), element(0x1021, us(completed)), element(0x1022, us(failed)),
              element(0x1023, us(warning))]
    return response_pdu(context_id, command_field, sop_class_uid, responded_id, status, extra=counts)


def write_pdus(assoc: Any, pdus: bytes) -> None:
    """Send P-DATA-TF PDUs (each holding one PDV, as encoded here).

    On a plain TCP socket they are written from this thread (the reactor must be
    paused; pynetdicom's DUL thread then only reads); a failure is reported to the DUL
    as a closed connection (``Evt17``), as pynetdicom does. On a TLS socket, which must
    not be read and written by two threads at once, they go through the DUL's queue.
    """
    sock = assoc.dul.socket
    raw = getattr(sock, "socket", None)
    if isinstance(raw, ssl.SSLSocket):
        view = memoryview(pdus)
        pos = 0
        while pos + 12 <= len(view):
            (length,) = struct.unpack_from(">I", view, pos + 2)
            p = P_DATA()
            p.presentation_data_value_list.append((view[pos + 10], bytes(view[pos + 11:pos + 6 + length])))
            assoc.dul.send_pdu(p)
            pos += 6 + length
        return
    try:
        raw.sendall(pdus)
    except (OSError, AttributeError):
        sock.event_queue.put("Evt17")


def hold_reactor(assoc: Any) -> None:
    """Pause the association's reactor thread (pynetdicom 3.0's protocol for the
    ``send_*`` methods), so that this thread alone reads the DIMSE responses; release it
    with ``assoc._reactor_checkpoint.set()`` (``release()`` and ``abort()`` do)."""
    assoc._reactor_checkpoint.clear()  # noqa: SLF001
    while not assoc._is_paused and assoc.is_established:  # noqa: SLF001
        time.sleep(0.0001)


#: DUL loop delay (s) of our own sending associations: pynetdicom polls its socket and
#: queues with 1 ms sleeps, which costs about a millisecond per C-STORE round trip.
DUL_LOOP_DELAY = 0.0002


class DirectResponses:
    """Reads the DIMSE responses of an association in the calling thread, straight from
    its socket, instead of pynetdicom's DUL thread.

    pynetdicom's DUL thread polls the socket with a sleep between polls and decodes each
    response with pydicom; for a C-STORE SCU sending hundreds of instances that is most
    of the time and CPU spent on our side. While a :class:`DirectResponses` is attached
    the DUL thread stops reading (its transport check is disabled on this association
    only) and :meth:`read_status` waits on the socket with ``select`` and parses the
    command set itself.

    Only for plain TCP associations whose reactor is held paused
    (:func:`hold_reactor`). A PDU other than P-DATA-TF (A-ABORT, A-RELEASE-RQ) or a
    closed connection makes the association *lost*: :meth:`detach` then says so and
    the caller aborts instead of releasing.

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        Established, requestor side.
    """

    def __init__(self, assoc: Any) -> None:
        self.assoc = assoc
        self.sock = assoc.dul.socket.socket
        self.buf = bytearray()
        self.lost = False
        assoc.dul._is_transport_event = _never  # noqa: SLF001 - the DUL stops reading this socket
        # nothing for the DUL thread to do meanwhile: let it poll its queues lazily
        self._delay = assoc.dul._run_loop_delay  # noqa: SLF001
        assoc.dul._run_loop_delay = 0.005  # noqa: SLF001

    def detach(self) -> bool:
        """Give the socket back to the DUL thread.

        Returns
        -------
        bool
            Whether the association can still be released normally (not lost, nothing
            unread left over).
        """
        self.assoc.dul.__dict__.pop("_is_transport_event", None)
        self.assoc.dul._run_loop_delay = self._delay  # noqa: SLF001
        self.assoc.dul._idle_timer.restart()  # noqa: SLF001 - see _fill
        return not self.lost and not self.buf

    def _fill(self, n: int, deadline: float | None, stop: threading.Event | None) -> bool:
        while len(self.buf) < n:
            if stop is not None and stop.is_set():
                raise SendInterrupted()
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if wait <= 0:
                return False
            try:
                ready, _, _ = select.select([self.sock], [], [], wait)
                if not ready:
                    continue
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                if stop is not None and stop.is_set():
                    raise SendInterrupted()
                self.lost = True
                return False
            self.buf += chunk
            # the DUL restarts its idle timer on what it reads; it reads nothing now, so
            # without this pynetdicom's reactor takes a busy association for an idle one
            # (network timeout) as soon as it runs again, at release
            self.assoc.dul._idle_timer.restart()  # noqa: SLF001
        return True

    def read_status(self, deadline: float | None, stop: threading.Event | None = None) -> tuple[int, int] | None:
        """Wait for the next DIMSE response and return ``(Status, Message ID Being
        Responded To)``; None when the association is lost or the deadline passed.

        Raises
        ------
        SendInterrupted
            ``stop`` was set.
        """
        command = bytearray()
        while True:
            if not self._fill(6, deadline, stop):
                return None
            pdu_type = self.buf[0]
            (length,) = struct.unpack_from(">I", self.buf, 2)
            if not self._fill(6 + length, deadline, stop):
                return None
            body = bytes(self.buf[6:6 + length])
            del self.buf[:6 + length]
            if pdu_type != 0x04:  # A-ABORT, A-RELEASE-RQ...: the association is over
                self.lost = True
                return None
            pos, last = 0, False
            while pos + 6 <= len(body):
                (item_len,) = struct.unpack_from(">I", body, pos)
                header = body[pos + 5]
                if header & 0x01:
                    command += body[pos + 6:pos + 4 + item_len]
                    last = bool(header & 0x02)
                pos += 4 + item_len
            if last:
                break
        fields = {}
        pos = 0
        while pos + 8 <= len(command):
            _group, elem, vlen = struct.unpack_from("<HHI", command, pos)
            if vlen == 2:
                fields[elem] = struct.unpack_from("<H", command, pos + 8)[0]
            pos += 8 + vlen
        if 0x0900 not in fields:
            self.lost = True
            return None
        return fields[0x0900], fields.get(0x0120, 0)


def _never() -> bool:
    return False


def send_c_store_raw(assoc: Any, context_id: int, sop_class_uid: str, sop_instance_uid: str, dataset: bytes, *,
                     msg_id: int = 1, priority: int = 2, originator_aet: str | None = None,
                     originator_id: int | None = None, timeout: float | None = None,
                     stop: threading.Event | None = None, paused: bool = False,
                     while_waiting: Any = None, reader: DirectResponses | None = None) -> Any:
    """Send one C-STORE request with an already encoded data set and wait for its answer.

    This is :meth:`pynetdicom.association.Association.send_c_store` without the
    encoding step: the data set is sent as it is given, so it must be encoded in the
    transfer syntax of presentation context ``context_id``.

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        Established; either our requestor side or, inside an SCP handler (C-GET), the
        acceptor side.
    context_id : int
        Accepted presentation context (its abstract syntax is ``sop_class_uid``).
    sop_class_uid, sop_instance_uid : str
        (0000,0002) *Affected SOP Class UID*, (0000,1000) *Affected SOP Instance UID*.
    dataset : bytes
        The data set (no preamble nor meta group).
    msg_id : int
        (0000,0110) *Message ID*, 0-65535.
    priority : int
        0 medium, 1 high, 2 low (pynetdicom's default).
    originator_aet : str, optional
        (0000,1030) *Move Originator Application Entity Title* (C-MOVE sub-operations).
    originator_id : int, optional
        (0000,1031) *Move Originator Message ID*.
    timeout : float, optional
        Seconds to wait for the response (default: the association's DIMSE timeout;
        None or 0 there means no limit).
    stop : threading.Event, optional
        When set while waiting, the wait ends with :class:`SendInterrupted`.
    paused : bool
        The caller already holds the association's reactor paused
        (:func:`hold_reactor`), which saves up to a millisecond per message.
    while_waiting : callable, optional
        Called without arguments once the request is written, before waiting for the
        response (e.g. to read the next file while the peer works); its exceptions
        are logged and ignored.
    reader : DirectResponses, optional
        Read the response with it (the association's responses are read in this
        thread); default: from pynetdicom's DIMSE queue.

    Returns
    -------
    pydicom.Dataset
        The response's status elements (``Status`` at least); empty when no valid
        response came in time or the association was lost (the association is then
        aborted, as pynetdicom does).

    Raises
    ------
    SendInterrupted
        ``stop`` was set.
    """
    if not originator_aet:
        originator_id = None
    pdus = encode_c_store_pdus(context_id, assoc.dimse.maximum_pdu_size, sop_class_uid, sop_instance_uid, dataset,
                               msg_id=msg_id, priority=priority, originator_aet=originator_aet,
                               originator_id=originator_id)
    if timeout is None:
        timeout = assoc.dimse_timeout
    # Pause the reactor so that it does not take the response off the queue (as
    # pynetdicom's send_c_store does); inside an SCP handler it is already paused.
    if not paused:
        hold_reactor(assoc)
    try:
        # written on the socket from this thread: the DUL thread only reads while the
        # reactor is paused, and pynetdicom's per-PDU queue hops cost a round of 1 ms
        # polls each
        write_pdus(assoc, pdus)
        if while_waiting is not None:
            try:
                while_waiting()
            except Exception:  # noqa: BLE001 - a hint, never a reason to fail the send
                log.exception("while_waiting callback failed")
        deadline = time.monotonic() + timeout if timeout else None
        rsp = None
        if reader is not None:
            got = reader.read_status(deadline, stop)
            from pydicom import Dataset
            status = Dataset()
            if got is not None:
                status.Status = got[0]
            return status
        while True:
            if stop is not None and stop.is_set():
                raise SendInterrupted()
            wait = _POLL if deadline is None else max(0.0, min(_POLL, deadline - time.monotonic()))
            try:
                _cx, rsp = assoc.dimse.msg_queue.get(block=True, timeout=wait)
                if rsp is not None or _cx is not None:
                    break
                # an empty item: a wake-up (the SCP's _WakingQueue, an abort): check below
                if not assoc.is_established or not assoc.dul.is_alive() or assoc.acse.is_aborted():
                    break
            except queue.Empty:
                if stop is not None and stop.is_set():
                    raise SendInterrupted() from None
                if not assoc.is_established or not assoc.dul.is_alive() or assoc.acse.is_aborted():
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
    finally:
        if not paused:
            assoc._reactor_checkpoint.set()  # noqa: SLF001
    if rsp is None:
        if paused:
            assoc._reactor_checkpoint.set()  # noqa: SLF001 - let pynetdicom see the abort
        assoc._handle_no_response()  # noqa: SLF001 - aborts after a DIMSE timeout
        from pydicom import Dataset
        return Dataset()
    if not rsp.is_valid_response:
        return assoc._check_received_status(rsp)  # noqa: SLF001 - logs and aborts
    from pydicom import Dataset
    status = Dataset()
    status.Status = rsp.Status
    return status


def no_context_error(ts: str, accepted: Sequence[str]) -> str:
    """Orthanc 1.10.1's detail when no accepted context fits an instance: ``Cannot
    transcode from <stored syntax> to one of [ <syntaxes accepted for its SOP class> ]``."""
    return f"Cannot transcode from {ts} to one of [ " + "".join(f"{t} " for t in accepted) + "]"


def choose_context(accepted: Sequence[Any], sop_class: str, ts: str, *, allow_transcoding: bool,
                   preferred_ts: str = EXPLICIT_LE, role: str | None = None) -> tuple[Any, str] | None:
    """The accepted presentation context to send an instance in.

    Parameters
    ----------
    accepted : sequence of PresentationContext
        ``assoc.accepted_contexts``.
    sop_class, ts : str
        The instance's SOP class and stored transfer syntax.
    allow_transcoding : bool
        Whether a compressed instance may be converted to an uncompressed syntax
        (uncompressed ones may always change their element encoding).
    preferred_ts : str
        ``DicomScuPreferredTransferSyntax``.
    role : {"scu", None}
        ``"scu"``: only contexts where this side may send C-STORE requests (the
        acceptor side of a C-GET: the peer offered the SCP role).

    Returns
    -------
    (PresentationContext, str) or None
        The context and the syntax to send in: the stored one if accepted, else the
        first accepted of :func:`uncompressed_order`; None when there is none.
    """
    cands = [cx for cx in accepted if cx.abstract_syntax == sop_class and (role != "scu" or cx.as_scu)]
    for cx in cands:
        if cx.transfer_syntax[0] == ts:
            return cx, ts
    if allow_transcoding or is_uncompressed(ts):
        for target in uncompressed_order(preferred_ts):
            for cx in cands:
                if cx.transfer_syntax[0] == target:
                    return cx, target
    return None


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
            :func:`send_c_store_raw`), such as reading the next file.

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
