"""The C-STORE request on the wire: its PDUs, their writing and the reading of the answer.

The sending paths (:class:`pacsbox_dicom_net.send.StoreSender`, the C-GET SCP's
sub-operations, the C-MOVE/C-GET Pending responses) bypass pynetdicom's per-message
machinery, which decodes every response with pydicom and hands every PDU between two
threads:

- :func:`encode_c_store_pdus` and :func:`encode_pending_pdu` encode a C-STORE-RQ and a
  C-MOVE/C-GET Pending response without pydicom, byte-identical to pynetdicom;
- :func:`write_pdus` writes them from the calling thread once :func:`hold_reactor` has
  paused the association's reactor;
- :class:`DirectResponses` reads the responses straight from the socket;
- :func:`send_c_store_raw` sends one C-STORE with an already encoded data set and waits
  for its status, interruptible (:class:`SendInterrupted`).

Source: DICOM PS3.7 section 9.3.1 (C-STORE messages) and section 6.3.1 (command set
encoding), PS3.8 section 9.3.5 (P-DATA-TF) and annex E (PDV headers); pynetdicom 3.0's
``Association.send_c_store`` for the protocol it replaces.
"""
from __future__ import annotations

import logging
import queue
import select
import ssl
import struct
import threading
import time
from typing import Any

from pynetdicom.pdu_primitives import P_DATA

from .dimse import command_pdu, command_set, data_pdus, element, response_pdu, uid, us

log = logging.getLogger("pacsbox.dicom_net")

#: Seconds between checks for an interruption while waiting for a C-STORE response.
_POLL = 0.05


class SendInterrupted(Exception):
    """A send was interrupted while going on (:meth:`pacsbox_dicom_net.send.StoreSender.interrupt`,
    or the ``stop`` event of :func:`send_c_store_raw`)."""


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
