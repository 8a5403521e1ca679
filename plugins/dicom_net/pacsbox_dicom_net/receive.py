"""The SCP's receive path: P-DATA-TF PDUs read in bulk, C-STORE requests served in place.

pynetdicom handles every received PDU with several Python objects and two thread
hand-offs: the DUL thread decodes the PDU into a primitive, runs the state machine,
appends the fragment to the DIMSE message, decodes the command set with pydicom,
queues the message for the association thread, which builds an event, calls the
handler, encodes the response with pydicom and queues it back to the DUL thread, which
encodes the PDU and writes it. For a 510 KB MR image in 16 KB PDUs that is 32 rounds
of it, and more CPU than storing the instance.

:class:`PDataReader` replaces that, on an established plain-TCP association, for the
one message that dominates an SCP's traffic, the C-STORE request: it reads whatever the
socket holds at once, walks the PDUs and their PDVs itself, parses the command set by
hand (:mod:`.dimse`), gathers the data set fragments, and calls the association's
``EVT_C_STORE`` handler (the same one pynetdicom would call, with a real
:class:`pynetdicom.dimse_primitives.C_STORE` request) in the DUL thread, then writes
the C-STORE response itself. Every other message (C-ECHO, C-FIND, C-MOVE, C-GET,
C-CANCEL, responses to our C-GET sub-operations) is handed to pynetdicom's DIMSE
provider fragment by fragment, as its own DUL would (``DT-2``), and every other PDU
(A-RELEASE, A-ABORT) to its state machine: the protocol logic stays pynetdicom's.

Sources: PS3.8 section 9.3.5 (P-DATA-TF) and annex E (PDVs and their message control
header), PS3.7 section 9.1.1 and annex E (C-STORE request and response).
"""
from __future__ import annotations

import logging
import socket
import struct
from io import BytesIO
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.dsutils import encode as encode_dataset
from pynetdicom.pdu_primitives import P_DATA

from .dimse import PDV_COMMAND, PDV_LAST, command_uid, command_us, parse_command, response_pdu

log = logging.getLogger("pacsbox.dicom_net")

__all__ = ["PDataReader", "serve_find"]

_HEADER = struct.Struct(">BBI")
_ITEM = struct.Struct(">IBB")

#: C-STORE-RQ and C-STORE-RSP command fields (PS3.7 annex E.1-1).
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
#: C-FIND-RQ and C-FIND-RSP command fields.
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
#: The C-FIND SOP classes the SCP serves: Patient Root and Study Root Q/R FIND
#: (PS3.4 C.6), Modality Worklist FIND (PS3.4 K.6).
FIND_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.31"})
#: Statuses pynetdicom's C-FIND SCP gives when the handler raises, and for Pending.
STATUS_FIND_HANDLER_FAILED = 0xC311
PENDING = (0xFF00, 0xFF01)
#: (0000,0800) *Command Data Set Type* of a message without data set.
NO_DATA_SET = 0x0101
#: "Error: cannot understand" status pynetdicom answers when a handler raises (PS3.4 B.2.3).
STATUS_HANDLER_FAILED = 0xC211
#: Bytes asked from the socket at once (into a buffer kept by the reader: a fresh
#: object of this size per read would be a memory map and its page faults each time).
RECV_SIZE = 1 << 18


class PDataReader:
    """Reads an established association's PDUs in the DUL thread (see the module
    docstring). Attached by the SCP to its DUL provider, which calls :meth:`poll`
    instead of its own transport check while the association is established or
    bytes read ahead are left.

    Parameters
    ----------
    dul : pynetdicom.dul.DULServiceProvider
        The acceptor's DUL provider; its socket must be a plain TCP socket (never
        TLS: the SSL object would then be used by two threads).
    """

    def __init__(self, dul: Any) -> None:
        self.dul = dul
        self.assoc = dul.assoc
        self.sock: socket.socket = dul.socket.socket
        self.buf = bytearray()
        self._chunk = bytearray(RECV_SIZE)
        self._contexts: dict[int, Any] | None = None
        #: C-STORE requests served by this reader (the others went through pynetdicom).
        self.stores = 0
        #: A request is being served in this thread: any other request read meanwhile
        #: goes to pynetdicom.
        self.serving = False
        self._reset()

    def _reset(self) -> None:
        self.cx_id: int | None = None     # context of the message being received
        self.cmd = bytearray()             # its command fragments
        self.mode: str | None = None       # None (command incomplete), "fast" or "slow"
        self.held: list[tuple[int, bytes]] = []   # PDVs kept until the mode is known
        self.fields: dict[int, bytes] = {}
        self.has_data = False
        self.data = bytearray()

    # ---- transport ---------------------------------------------------------------------
    def has_complete_pdu(self) -> bool:
        """Whether a whole PDU read ahead waits in the buffer (more work without
        reading the socket)."""
        if len(self.buf) < 6:
            return False
        _t, _r, length = _HEADER.unpack_from(self.buf, 0)
        return len(self.buf) >= 6 + length

    def poll(self) -> bool:
        """The DUL's transport check: read what the socket holds and handle every
        complete PDU.

        Returns
        -------
        bool
            True when something was read or handled (the DUL then restarts its idle
            timer), False when there was nothing to do.
        """
        if not self.has_complete_pdu():
            with memoryview(self._chunk) as chunk:
                try:
                    n = self.sock.recv_into(chunk, RECV_SIZE, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    return False
                except (OSError, ValueError):
                    n = 0
                if not n:  # closed by the peer (or broken): pynetdicom's Evt17
                    self.dul.event_queue.put("Evt17")
                    self.buf.clear()
                    return True
                self.buf += chunk[:n]
        self._handle_buffer()
        return True

    def _handle_buffer(self) -> None:
        """Handle the complete PDUs at the head of the buffer. Each PDU leaves the
        buffer (copied out) before it is handled: a handler may read on (a C-FIND's
        look for a C-CANCEL), which appends to the buffer and handles what follows."""
        buf = self.buf
        while len(buf) >= 6:
            pdu_type, _r, length = _HEADER.unpack_from(buf, 0)
            end = 6 + length
            if end > len(buf):
                return
            with memoryview(buf) as view:
                pdu = bytes(view[:end])
            del buf[:end]  # O(1) at the head of a bytearray
            if pdu_type != 0x04 or self.dul.state_machine.current_state != "Sta6":
                # A-RELEASE, A-ABORT, or anything once the association is ending:
                # pynetdicom's state machine takes it, one PDU at a time
                self._to_state_machine(pdu)
                return
            if not self._p_data(pdu):
                self.dul.event_queue.put("Evt19")  # invalid PDU: pynetdicom aborts (AA-8)
                buf.clear()
                return

    def _to_state_machine(self, pdu_bytes: bytes) -> None:
        """What pynetdicom's ``_read_pdu_data`` does with a complete PDU."""
        try:
            pdu, event = self.dul._decode_pdu(bytearray(pdu_bytes))  # noqa: SLF001
        except Exception:  # noqa: BLE001 - as pynetdicom: an undecodable PDU is Evt19
            log.exception("DICOM: cannot decode a received PDU")
            self.dul.event_queue.put("Evt19")
            return
        self.dul.event_queue.put(event)
        self.dul._recv_pdu.put(pdu)  # noqa: SLF001

    # ---- PDVs --------------------------------------------------------------------------
    def _p_data(self, pdu: bytes) -> bool:
        """Handle the PDVs of one P-DATA-TF PDU; False when they do not tile it."""
        items = []
        pos, end = 6, len(pdu)
        while pos < end:
            if pos + 6 > end:
                return False
            length, cx_id, header = _ITEM.unpack_from(pdu, pos)
            stop = pos + 4 + length
            if length < 2 or stop > end:
                return False
            items.append((cx_id, header, pos + 6, stop))
            pos = stop
        view = memoryview(pdu)
        for cx_id, header, start, stop in items:
            self._pdv(cx_id, header, view[start:stop])
        return True

    def _pdv(self, cx_id: int, header: int, data: memoryview) -> None:
        """One PDV (``data`` without its message control header)."""
        if self.mode == "fast":
            if header & PDV_COMMAND or cx_id != self.cx_id:
                # not the data set this command announced: let pynetdicom judge the rest
                self._go_slow(drop_fast_data=True)
                self._to_dimse_raw(cx_id, bytes([header]) + bytes(data))
                return
            self.data += data
            if header & PDV_LAST:
                if command_us(self.fields, 0x0100) == C_FIND_RQ:
                    self._find()
                else:
                    self._store()
            return
        pdv = bytes([header]) + bytes(data)
        if self.mode == "slow":
            self._to_dimse_raw(cx_id, pdv)
            if header & PDV_LAST and (not header & PDV_COMMAND or not self.has_data):
                self._reset()
            return
        # the command set is being received
        if self.cx_id is None:
            self.cx_id = cx_id
        self.held.append((cx_id, pdv))
        if not header & PDV_COMMAND or cx_id != self.cx_id:
            self._go_slow()
            return
        self.cmd += data
        if header & PDV_LAST:
            self._decide()

    def _decide(self) -> None:
        try:
            fields = parse_command(bytes(self.cmd))
        except ValueError:
            fields = {}
        self.fields = fields
        self.has_data = command_us(fields, 0x0800) not in (None, NO_DATA_SET)
        cx = self._context(self.cx_id)
        command = command_us(fields, 0x0100)
        if (not self.serving and self.has_data and cx is not None and command_us(fields, 0x0110) is not None
                and command_uid(fields, 0x0002) == str(cx.abstract_syntax)
                and ((command == C_STORE_RQ and command_uid(fields, 0x1000))
                     or (command == C_FIND_RQ and str(cx.abstract_syntax) in FIND_CLASSES))):
            self.mode = "fast"
            self.held = []
            return
        self._go_slow()
        if not self.has_data:
            self._reset()

    def _go_slow(self, drop_fast_data: bool = False) -> None:
        """Hand the message to pynetdicom from here on (with what was held back)."""
        if drop_fast_data:
            # the command was kept out of pynetdicom: give it first, then the fragments
            self.held = [(self.cx_id, bytes([PDV_COMMAND | PDV_LAST]) + bytes(self.cmd))]
            if self.data:
                self.held.append((self.cx_id, b"\x00" + bytes(self.data)))
            self.data = bytearray()
        self.mode = "slow"
        held, self.held = self.held, []
        for cx_id, pdv in held:
            self._to_dimse_raw(cx_id, pdv)

    def _to_dimse_raw(self, cx_id: int, pdv: bytes) -> None:
        """What pynetdicom's ``DT-2`` does with a PDV (one per primitive: its DIMSE
        decoder stops reading a primitive's PDVs at the end of a message)."""
        primitive = P_DATA()
        primitive.presentation_data_value_list = [[cx_id, pdv]]
        self.assoc.dimse.receive_primitive(primitive)

    def _context(self, cx_id: int | None) -> Any:
        if self._contexts is None:
            self._contexts = {cx.context_id: cx for cx in self.assoc.accepted_contexts}
        return self._contexts.get(cx_id) if cx_id is not None else None

    # ---- C-STORE -----------------------------------------------------------------------
    def _store(self) -> None:
        fields, cx = self.fields, self._context(self.cx_id)
        data = bytes(self.data)
        self._reset()
        self.stores += 1
        req = C_STORE()
        msg_id = command_us(fields, 0x0110) or 0
        sop_class, sop_instance = command_uid(fields, 0x0002), command_uid(fields, 0x1000)
        status: Any
        try:
            req.MessageID = msg_id
            req.AffectedSOPClassUID = sop_class
            req.AffectedSOPInstanceUID = sop_instance
            req.Priority = command_us(fields, 0x0700) or 0
            originator = command_uid(fields, 0x1030)
            if originator:
                req.MoveOriginatorApplicationEntityTitle = originator
                req.MoveOriginatorMessageID = command_us(fields, 0x1031)
            req.DataSet = BytesIO(data)
            status = evt.trigger(self.assoc, evt.EVT_C_STORE, {"request": req, "context": cx.as_tuple})
        except Exception:  # noqa: BLE001 - as pynetdicom: the peer gets 0xC211
            log.exception("Exception in the C-STORE handler")
            status = STATUS_HANDLER_FAILED
        if not self.assoc.is_established:
            return
        if isinstance(status, int):
            self._write(response_pdu(cx.context_id, C_STORE_RSP, sop_class, msg_id, status, sop_instance))
            return
        # a status data set (with an error comment...): pynetdicom encodes it
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = msg_id
        rsp.AffectedSOPClassUID = sop_class
        rsp.AffectedSOPInstanceUID = sop_instance
        for elem in status or ():
            if elem.keyword:
                setattr(rsp, elem.keyword, elem.value)
        if rsp.Status is None:
            rsp.Status = STATUS_HANDLER_FAILED
        self.assoc.dimse.send_msg(rsp, cx.context_id)

    # ---- C-FIND ------------------------------------------------------------------------
    def _find(self) -> None:
        """Serve the C-FIND request here, in the DUL thread (:func:`serve_find`), as the
        C-STOREs: no hand-off to the association thread and back. The handler's look for
        a C-CANCEL between answers (``is_cancelled``) first reads what the peer sent
        meanwhile (:meth:`_read_more`): a C-CANCEL reaches pynetdicom's DIMSE provider
        (``cancel_req``) as before; a request arriving meanwhile (a peer may not send
        one before the final response, without asynchronous operations negotiated) is
        left to pynetdicom, served after this one."""
        fields, cx = self.fields, self._context(self.cx_id)
        data = bytes(self.data)
        self._reset()
        req = C_FIND()
        try:
            req.MessageID = command_us(fields, 0x0110) or 0
            req.AffectedSOPClassUID = command_uid(fields, 0x0002)
            req.Priority = command_us(fields, 0x0700) or 0
        except (TypeError, ValueError):
            log.exception("DICOM: invalid C-FIND command set")
            self.dul.event_queue.put("Evt19")
            return
        req.Identifier = BytesIO(data)
        self.serving = True
        try:
            serve_find(self.assoc, req, cx, self._write, self._read_more)
        finally:
            self.serving = False

    def _read_more(self) -> None:
        """Read and handle what the peer sent while a request is being served."""
        if self.dul.state_machine.current_state == "Sta6":
            self.poll()

    def _write(self, pdu: bytes) -> None:
        try:
            self.sock.sendall(pdu)
        except (OSError, ValueError):
            self.dul.event_queue.put("Evt17")


def serve_find(assoc: Any, req: C_FIND, cx: Any, write: Any, read_more: Any) -> None:
    """Serve a C-FIND request: call the association's ``EVT_C_FIND`` handler (as
    pynetdicom's Q/R and worklist service classes do, with its ``is_cancelled``) and
    write every response, the final one included, on the socket with ``write(pdus)``.

    pynetdicom's statuses are kept: a handler that raises gives ``0xC311``; a Pending
    status sends its identifier and goes on, a Warning goes on, any other status ends
    the request; a handler that stops without a final status gets ``0x0000``.
    (Sources: PS3.4 C.4.1.3 and K.4.1.3; pynetdicom's ``_c_find_scp``.)

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        The acceptor association.
    req : pynetdicom.dimse_primitives.C_FIND
        The request, its identifier still encoded.
    cx : pynetdicom.presentation.PresentationContext
        Its presentation context.
    write : callable
        ``write(bytes)`` writes PDUs on the association's socket.
    read_more : callable
        Called before each look for a C-CANCEL, to read what the peer sent meanwhile.
    """
    from .find_scp import encode_find_response_pdus

    msg_id, sop_class = int(req.MessageID), str(req.AffectedSOPClassUID)
    max_pdu = int(assoc.requestor.maximum_length or 0)
    ts = cx.transfer_syntax[0]

    def is_cancelled(message_id: int) -> bool:
        read_more()
        return assoc.dimse.cancel_req.pop(message_id, None) is not None

    def respond(status: int, identifier: bytes | None = None) -> None:
        write(encode_find_response_pdus(cx.context_id, max_pdu, sop_class, msg_id, status, identifier))

    try:
        answers = evt.trigger(assoc, evt.EVT_C_FIND, {"request": req, "context": cx.as_tuple,
                                                      "_is_cancelled": is_cancelled})
        for status, identifier in answers or ():
            if not assoc.is_established:
                return
            status = int(getattr(status, "Status", status))
            if status in PENDING:
                data = encode_dataset(identifier, ts.is_implicit_VR, ts.is_little_endian,
                                      ts.is_deflated) if identifier is not None else None
                if not data:
                    log.error("Failed encoding a C-FIND response identifier")
                    respond(0xC312)
                    return
                respond(status, data)
                continue
            respond(status)
            if not 0xB000 <= status <= 0xBFFF:  # a Warning goes on, as in pynetdicom
                return
    except Exception:  # noqa: BLE001 - as pynetdicom: the peer gets 0xC311
        log.exception("Exception in the C-FIND handler")
        if assoc.is_established:
            respond(STATUS_FIND_HANDLER_FAILED)
        return
    if assoc.is_established:
        respond(0x0000)
