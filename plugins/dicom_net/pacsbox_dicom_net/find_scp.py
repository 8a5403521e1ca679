"""The C-FIND SCP: the ``EVT_C_FIND`` handler (Patient Root and Study Root Q/R FIND,
Modality Worklist FIND), and the writer of its Pending responses straight on the
association's socket.

The answers of a Patient/Study Root query come from :mod:`.find_answers`, those of a
worklist query from the ``find_worklist_answers`` hook (:mod:`.worklist` provides the
default one). The statuses answered are listed in :mod:`.scp_statuses`.
"""
from __future__ import annotations

import logging
import ssl
from typing import Any, Iterator

from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode as encode_dataset

from .dimse import command_pdu, command_set, data_pdus, element, uid, us
from .find_answers import answers_for, limit_answers
from .hook_calls import HookFailed, call_chain, log_hook_exception, log_hook_failed
from .scp_access import command_allowed, peer
from .scp_negotiation import WORKLIST_FIND
from .scp_statuses import (STATUS_CANNOT_UNDERSTAND, STATUS_MATCHING_TERMINATED, STATUS_NOT_AUTHORIZED,
                           STATUS_PENDING, STATUS_SUCCESS)
from .send_wire import write_pdus

log = logging.getLogger("pacsbox.dicom_net.scp")


def handle_find(event: Any, ctx: Any) -> Iterator[tuple[int, Dataset | None]]:
    """``EVT_C_FIND``: Patient Root and Study Root Q/R FIND, and Modality Worklist FIND.

    Patient/Study Root (PS3.4 C.4.1): the ``find_answers`` hook answers first; else the
    index is matched by :func:`pacsbox.find_resources` with DICOM rules. Each answer
    holds exactly the requested keys (empty when the resource has no value), plus
    (0008,0052) *Query/Retrieve Level*, (0008,0054) *Retrieve AE Title* = ``DicomAet``
    and (0008,0005) *Specific Character Set*; requested sequences are copied whole from
    one instance of the resource (left out when it has none), as Orthanc 1.10.1. Computed keys of the level
    (``ModalitiesInStudy``, ``NumberOf...Related...``, ``SOPClassesInStudy``) are
    computed. The main tags in the index answer the query without reading any file
    unless a requested key is not a main tag (Orthanc's ``IsDicomAsJsonNeeded``).

    Modality Worklist (PS3.4 K.6.1): answers come from the ``find_worklist_answers``
    hook, sent as returned.

    Before either, the chained filter ``filter_incoming_find`` (or
    ``filter_incoming_worklist``) may rewrite the identifier; what it returns is the
    query (matching keys and answered keys), as Orthanc's Lua ``Incoming*RequestFilter``.

    Yields
    ------
    (int, pydicom.Dataset or None)
        ``(0xFF00, answer)`` per answer, then ``(0x0000, None)``; ``(0xFE00, None)``
        last when ``LimitFindResults`` (``LimitFindInstances`` at IMAGE level) cut the
        answers; ``(0x0124, None)`` when the command is not allowed;
        ``(0xC000, None)`` on any failure (bad query, hook that raised...).
    """
    worklist = str(event.request.AffectedSOPClassUID) == WORKLIST_FIND
    if not command_allowed(ctx, event, "FindWorklist" if worklist else "Find"):
        yield STATUS_NOT_AUTHORIZED, None
        return
    try:
        query = event.identifier
        origin = dict(peer(event))
        try:
            query = call_chain(ctx, "filter_incoming_worklist" if worklist else "filter_incoming_find", "query",
                               query, Dataset, origin=origin)
        except HookFailed as e:
            log_hook_failed(e)
            yield STATUS_CANNOT_UNDERSTAND, None
            return
        if worklist:
            hook = "find_worklist_answers"
            try:
                answers = ctx.pm.hook.find_worklist_answers(query=query, origin=origin)
            except Exception as e:  # noqa: BLE001
                log_hook_exception(ctx, hook, e)
                yield STATUS_CANNOT_UNDERSTAND, None
                return
            answers, cut = limit_answers(ctx, answers)
        else:
            answers, cut = answers_for(ctx, query, origin)
            if answers is None:
                yield STATUS_CANNOT_UNDERSTAND, None
                return
    except Exception:  # noqa: BLE001
        log.exception("C-FIND request handler has failed")
        yield STATUS_CANNOT_UNDERSTAND, None
        return
    direct = _DirectFindResponses.of(event)
    if direct is None:
        for ans in answers:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield STATUS_PENDING, ans
        yield (STATUS_MATCHING_TERMINATED if cut else STATUS_SUCCESS), None
        return
    for ans in answers:
        if event.is_cancelled:
            direct.flush()
            yield 0xFE00, None
            return
        if not direct.add(ans):
            log.error("C-FIND: cannot encode an answer")
            direct.flush()
            yield STATUS_CANNOT_UNDERSTAND, None
            return
    # the final response goes through pynetdicom (after the Pending ones, already
    # written), so that the peer's A-RELEASE-RQ can only come once pynetdicom is done
    direct.flush()
    yield (STATUS_MATCHING_TERMINATED if cut else STATUS_SUCCESS), None


# ---- C-FIND responses written directly ----------------------------------------------------

def encode_find_response_pdus(context_id: int, max_pdu: int, sop_class_uid: str, responded_id: int, status: int,
                              identifier: bytes | None = None) -> bytes:
    """The P-DATA-TF PDUs of one C-FIND-RSP, ready for the socket.

    Parameters
    ----------
    context_id : int
        Presentation context ID of the request.
    max_pdu : int
        The peer's maximum PDU length (bytes; 0 = unlimited).
    sop_class_uid : str
        (0000,0002) *Affected SOP Class UID* of the request.
    responded_id : int
        (0000,0120) *Message ID Being Responded To*.
    status : int
        (0000,0900) *Status*.
    identifier : bytes, optional
        The encoded identifier (a Pending response's answer), in the context's
        transfer syntax.

    Returns
    -------
    bytes
        The command set (Implicit VR Little Endian, group length first) in one PDU, then
        the identifier in PDVs of at most ``max_pdu - 6`` bytes, one per PDU, the last
        one flagged (PS3.8 annex E): byte-identical to what pynetdicom's
        ``DIMSEServiceProvider.send_msg`` writes for the same response (checked by a test).
    """
    elements = [element(0x0002, uid(sop_class_uid)), element(0x0100, us(0x8020)), element(0x0120, us(responded_id)),
                element(0x0800, us(0x0001 if identifier else 0x0101)), element(0x0900, us(status))]
    pdus = [command_pdu(context_id, command_set(elements))]
    if identifier:
        pdus.extend(data_pdus(context_id, identifier, max_pdu))
    return b"".join(pdus)


class _DirectFindResponses:
    """Writes the C-FIND responses of one request straight on the association's socket,
    from the thread that serves the request.

    pynetdicom's path costs, per answer, a pydicom command-set data set and its
    encoding, and one hand-off per PDU to the DUL thread through its queue (each a GIL
    switch, slow on a loaded machine). Here the command sets are encoded by
    :func:`encode_find_response_pdus` and the Pending responses written in batches of
    at most :attr:`BATCH` bytes (C-CANCEL is checked between answers, by the caller).
    The final response stays pynetdicom's (sent after the handler's last yield): the
    peer's A-RELEASE-RQ, which follows it, then never reaches the DUL while pynetdicom
    is still serving the request (writing the final response here too made findscu's
    release fail now and then on a loaded machine). The DUL thread keeps reading
    the socket (C-CANCEL, A-RELEASE, A-ABORT), so the state machine sees everything the
    peer sends; it writes nothing meanwhile, since only this thread answers the request.
    """

    #: Bytes of encoded responses written at once.
    BATCH = 65536

    def __init__(self, event: Any) -> None:
        self.assoc = event.assoc
        self.encode = encode_dataset
        req = event.request
        self.message_id = int(req.MessageID)
        self.sop_class = str(req.AffectedSOPClassUID)
        self.cx_id = int(event.context.context_id)
        ts = event.context.transfer_syntax
        self.ts = (ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
        self.max_pdu = int(self.assoc.requestor.maximum_length or 0)
        self.buf: list[bytes] = []
        self.size = 0

    @classmethod
    def of(cls, event: Any) -> "_DirectFindResponses | None":
        """The writer for ``event``'s request, or None when responses must go through
        pynetdicom (a TLS socket, which its DUL thread alone may use; an association
        whose DIMSE messages are logged, ``pynetdicom`` logger at DEBUG)."""
        assoc = event.assoc
        sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
        if sock is None or isinstance(sock, ssl.SSLSocket) or assoc.is_requestor:
            return None
        if logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            return None
        try:
            return cls(event)
        except Exception:  # noqa: BLE001 - anything unexpected: pynetdicom's path
            return None

    def add(self, answer: Dataset) -> bool:
        """Queue the Pending response of ``answer`` (written once :attr:`BATCH` bytes are
        queued); False when the answer cannot be encoded."""
        try:
            fast = getattr(answer, "pacsbox_encoded", None)
            data = fast.encode(*self.ts) if fast is not None else None
            if data is None:
                data = self.encode(answer, *self.ts)
        except Exception:  # noqa: BLE001
            data = None
        if not data:
            return False
        pdus = encode_find_response_pdus(self.cx_id, self.max_pdu, self.sop_class, self.message_id, STATUS_PENDING,
                                         data)
        self.buf.append(pdus)
        self.size += len(pdus)
        if self.size >= self.BATCH:
            self.flush()
        return True

    def flush(self) -> None:
        """Write the queued responses."""
        if self.buf:
            data = b"".join(self.buf)
            self.buf, self.size = [], 0
            if self.assoc.is_established:
                write_pdus(self.assoc, data)
