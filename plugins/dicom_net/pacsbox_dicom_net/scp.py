"""The SCP: pynetdicom's association server, started and stopped with the app.

One :class:`ScpServer` per app (kept in ``plugin_state(ctx).extra["scp"]``) listens on
``DicomPort`` and serves C-ECHO, C-STORE, C-FIND (Patient/Study Root, Modality
Worklist), C-MOVE and C-GET, with the handlers of :mod:`.handlers` (and of
``retrieve_scp`` for C-MOVE/C-GET) bound with the app's ``ctx`` as extra argument.

Association negotiation (reference section 9.7), done in the ``EVT_REQUESTED`` handler
of each association:

1. ``DicomCheckCalledAet``: the called AET must be ``DicomAet`` (compared as
   ``StrictAetComparison`` says), else A-ASSOCIATE-RJ permanent/service-user/reason 7
   (dcmtk: "Called AE title not recognised");
2. the calling AET is accepted when any ``DicomAlwaysAllow*`` option is true or it
   matches a ``DicomModalities`` entry (with its host when ``DicomCheckModalityHost``),
   else reason 3 ("Calling AE title not recognised");
3. the ``filter_incoming_association`` veto hook (any ``False``, or an implementation
   that raises, rejects with reason 3; the failure is logged with the plugin's name);
4. the presentation contexts are computed for this association from what it proposes
   and the current state: Verification, every storage SOP class (any unknown SOP class
   too while ``UnknownSopClassAccepted``) with the proposed transfer syntaxes that match
   an ``AcceptedTransferSyntaxes`` pattern (both changeable at run time, read afresh
   for every association), Patient/Study Root FIND/MOVE/GET, and Modality Worklist FIND
   only when a ``find_worklist_answers`` implementation is registered. The requestor's
   order of transfer syntaxes is kept (the first acceptable one is chosen). Storage
   contexts accept SCP/SCU role selection, so that a C-GET requestor can take the SCP
   role.

Concurrency: at most ``DicomThreadsCount`` associations are served at a time; further
connections wait (their A-ASSOCIATE-RQ unanswered) until one ends, as Orthanc's worker
pool queues them. Every accepted socket gets TCP_NODELAY.

Bind address: ``DicomBindAddress`` (a pacsbox option) if set; otherwise the HTTP
server's: ``HttpBindAddress`` (default ``127.0.0.1``), or ``0.0.0.0`` when
``RemoteAccessAllowed`` is true and ``HttpBindAddress`` is not set. (Orthanc always
listens on every interface.)

Timeouts: ``DicomScpTimeout`` seconds (0 = none) for ACSE, DIMSE and network idleness.
``MaximumPduLength`` is the maximum PDU size we receive.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import select
import socket
import ssl
import threading
import time
from functools import lru_cache
from typing import Any, Iterator

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import SOPClassCommonExtendedNegotiation
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from pacsbox import ConfigError

from . import handlers, worklist
from .modalities import aet_equal
from .receive import PDataReader
from .scu import set_nodelay, tls_context
from .state import plugin_state

log = logging.getLogger("pacsbox.dicom_net.scp")

#: Key of the server in ``plugin_state(ctx).extra``.
EXTRA_KEY = "scp"

VERIFICATION = "1.2.840.10008.1.1"
#: The uncompressed transfer syntaxes accepted for non-storage services (their data sets
#: are decoded by pynetdicom).
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
QUERY_RETRIEVE = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND, PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE, PATIENT_ROOT_GET,
                  STUDY_ROOT_GET)
WORKLIST_FIND = handlers.WORKLIST_FIND
#: Service class UID of the Storage Service Class (PS3.4 B.3): the common-extended
#: service class under which an accepted unknown SOP class is served.
STORAGE_SERVICE_CLASS = "1.2.840.10008.4.2"

#: The transfer syntaxes Orthanc 1.10.1 knows (``GetAllDicomTransferSyntaxes``), in its order.
ORTHANC_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.52", "1.2.840.10008.1.2.4.53",
    "1.2.840.10008.1.2.4.54", "1.2.840.10008.1.2.4.55", "1.2.840.10008.1.2.4.56", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.58", "1.2.840.10008.1.2.4.59", "1.2.840.10008.1.2.4.60", "1.2.840.10008.1.2.4.61",
    "1.2.840.10008.1.2.4.62", "1.2.840.10008.1.2.4.63", "1.2.840.10008.1.2.4.64", "1.2.840.10008.1.2.4.65",
    "1.2.840.10008.1.2.4.66", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.94", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.106", "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.6.1", "1.2.840.10008.1.2.6.2",
)
_KNOWN_TS = frozenset(ORTHANC_TRANSFER_SYNTAXES)

_REASON_CALLING = 0x03
_REASON_CALLED = 0x07


@lru_cache(maxsize=None)
def is_storage_sop_class(uid: str) -> bool:
    """Whether pynetdicom knows ``uid`` as a storage SOP class (PS3.4 annex B)."""
    try:
        return issubclass(uid_to_service_class(uid), StorageServiceClass)
    except Exception:  # noqa: BLE001
        return False


@lru_cache(maxsize=None)
def is_known_sop_class(uid: str) -> bool:
    """Whether pynetdicom knows ``uid`` as a SOP class of any service."""
    return uid_to_service_class(uid) is not ServiceClass


@lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z")


def transfer_syntax_accepted(uid: str, patterns: list[str]) -> bool:
    """Whether transfer syntax ``uid`` matches one of the ``AcceptedTransferSyntaxes``
    patterns (``*``: any run of characters, ``?``: one character) and is one of the
    :data:`ORTHANC_TRANSFER_SYNTAXES`.

    Parameters
    ----------
    uid : str
    patterns : list of str

    Returns
    -------
    bool
    """
    return uid in _KNOWN_TS and any(_pattern(p).match(uid) for p in patterns)


def has_worklist_provider(ctx: Any) -> bool:
    """Whether a ``find_worklist_answers`` implementation is registered (otherwise the
    worklist presentation context is refused, as Orthanc without a worklist plugin)."""
    hook = getattr(ctx.pm.hook, "find_worklist_answers", None)
    return bool(hook is not None and hook.get_hookimpls())


def accepted_contexts(ctx: Any, requested: list[PresentationContext]) -> tuple[list[PresentationContext], list[str]]:
    """The presentation contexts to support for an association that proposes ``requested``.

    Parameters
    ----------
    ctx : ServerContext
    requested : list of PresentationContext
        The A-ASSOCIATE-RQ's presentation context definitions.

    Returns
    -------
    (list of PresentationContext, list of str)
        The supported contexts (see the module docstring for the rules), and the unknown
        SOP classes among them (accepted as storage while ``UnknownSopClassAccepted``).
    """
    state = plugin_state(ctx)
    with state.lock:
        patterns = list(state.accepted_transfer_syntaxes)
        unknown_ok = state.unknown_sop_class_accepted
    worklist = None
    proposed: dict[str, list[str]] = {}
    for rq in requested:  # a requestor may propose one context per transfer syntax
        syntaxes = proposed.setdefault(str(rq.abstract_syntax), [])
        syntaxes.extend(str(ts) for ts in rq.transfer_syntax if str(ts) not in syntaxes)
    out: dict[str, PresentationContext] = {}
    unknown: list[str] = []
    for uid, offered in proposed.items():
        role = False
        if uid == VERIFICATION or uid in QUERY_RETRIEVE:
            syntaxes = [ts for ts in offered if ts in UNCOMPRESSED]
        elif uid == WORKLIST_FIND:
            if worklist is None:
                worklist = has_worklist_provider(ctx)
            if not worklist:
                continue
            syntaxes = [ts for ts in offered if ts in UNCOMPRESSED]
        elif is_storage_sop_class(uid) or (unknown_ok and not is_known_sop_class(uid)):
            syntaxes = [ts for ts in offered if transfer_syntax_accepted(ts, patterns)]
            role = True
            if not is_storage_sop_class(uid):
                unknown.append(uid)
        else:
            continue
        if not syntaxes:
            continue
        cx = PresentationContext()
        cx.abstract_syntax = uid
        cx.transfer_syntax = syntaxes
        if role:
            cx.scu_role = True
            cx.scp_role = True
        out[uid] = cx
    return list(out.values()), unknown


#: Longest wait (s) of an idle association's threads between two checks of pynetdicom's
#: timers and flags; anything the peer or the server does wakes them before.
IDLE_WAIT = 0.05


class _WakingDUL(DULServiceProvider):
    """pynetdicom's DUL provider, waking at once when there is work.

    pynetdicom's DUL thread polls its socket and its queues, sleeping
    ``_run_loop_delay`` (1 ms) between rounds; with the association thread polling too,
    every DIMSE exchange waited several milliseconds (C-ECHO p50 5.4 ms on loopback).
    Here the loop's pause reads ``_run_loop_delay`` as a *wait for work*: ``select`` on
    the socket and on a wake-up pipe that :meth:`send_pdu` writes to, bounded by 1 ms, so
    that an idle association still costs nothing and an incoming PDU or an outgoing
    primitive is handled immediately. The protocol logic is pynetdicom's, untouched.
    """

    _pacsbox_wake: tuple[int, int] | None = None
    #: Whether the PDUs of the established association are read by a
    #: :class:`~pacsbox_dicom_net.receive.PDataReader` (set by :func:`_make_prompt`).
    _pacsbox_fast: bool = False
    _pacsbox_reader: PDataReader | None = None

    def _is_transport_event(self) -> bool:
        reader = self._pacsbox_reader
        if reader is None:
            if not self._pacsbox_fast or self.state_machine.current_state != "Sta6":
                return super()._is_transport_event()
            sock = getattr(self.socket, "socket", None)
            if sock is None or isinstance(sock, ssl.SSLSocket):
                self._pacsbox_fast = False
                return super()._is_transport_event()
            reader = self._pacsbox_reader = PDataReader(self)
        elif not reader.buf and self.state_machine.current_state != "Sta6":
            return super()._is_transport_event()  # the association is ending: pynetdicom's
        return reader.poll()

    #: Current bound (s) of the wait for work: 1 ms after activity, doubling while idle
    #: up to :data:`IDLE_WAIT`. Incoming bytes and primitives to send wake the wait at
    #: once whatever its bound; the bound only paces pynetdicom's timer checks (ARTIM).
    _pacsbox_wait: float = 0.001

    @property  # type: ignore[override]
    def _run_loop_delay(self) -> float:
        if self._wait_for_work(self._pacsbox_wait):
            self._pacsbox_wait = 0.001
        else:
            self._pacsbox_wait = min(self._pacsbox_wait * 2, IDLE_WAIT)
        return 0.0

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:
        pass  # the wait above replaces the fixed delay

    def _wait_for_work(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for bytes on the socket or a wake-up;
        True when there is work."""
        wake = self._pacsbox_wake
        if wake is None:
            time.sleep(timeout)
            return True
        if not self.to_provider_queue.empty() or not self.event_queue.empty():
            return True
        reader = self._pacsbox_reader
        if reader is not None and reader.has_complete_pdu():
            return True
        rlist: list[Any] = [wake[0]]
        sock = getattr(self.socket, "socket", None) if self.socket is not None else None
        if sock is not None:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return True
            rlist.append(sock)
        try:
            ready, _, _ = select.select(rlist, [], [], timeout)
            if wake[0] in ready:
                os.read(wake[0], 4096)
            return bool(ready)
        except (OSError, ValueError):  # socket or pipe closed meanwhile
            time.sleep(min(timeout, 0.001))
            return True

    def _wake(self) -> None:
        wake = self._pacsbox_wake
        if wake is not None:
            try:
                os.write(wake[1], b"\0")
            except OSError:  # pipe full (already awake) or closed
                pass

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()


class _WakingQueue(queue.Queue):
    """The DUL's queue of primitives for the association thread (A-RELEASE, A-ABORT
    indications...), which also wakes that thread: :class:`_PromptAssociation` waits on
    its DIMSE message queue, where an empty item ``(None, None)`` is put after each
    primitive (the readers of that queue skip such items)."""

    def __init__(self, messages: queue.Queue) -> None:
        super().__init__()
        self._messages = messages

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._messages.put((None, None))


class _PromptAssociation(Association):
    """pynetdicom's acceptor association, whose reactor waits on the DIMSE message queue
    instead of sleeping 1 ms before every look at it: a request, or an empty item put by
    :class:`_WakingQueue` when the DUL passes it a primitive (release, abort), wakes it
    at once; otherwise it checks the association's state (idle timer...) every
    :data:`IDLE_WAIT` seconds. Everything else is pynetdicom's."""

    def _run_reactor(self) -> None:
        self._is_paused = False
        messages = self.dimse.msg_queue
        while not self._kill:
            # the checkpoint lets send_*() from other threads pause the reactor, as in pynetdicom
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            try:
                context_id, msg = messages.get(timeout=IDLE_WAIT)
            except queue.Empty:
                context_id, msg = None, None
            if msg:
                self._serve_request(msg, context_id)
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                log.debug("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                log.warning("DICOM association with %s: network timeout (DicomScpTimeout)",
                            getattr(self, "pacsbox_peer", {}).get("RemoteAET", "?"))
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


def _make_prompt(assoc: Any) -> tuple[int, int]:
    """Turn a new acceptor association into its prompt variant (before it starts);
    returns the wake-up pipe to close once it has ended."""
    wake = os.pipe()
    os.set_blocking(wake[0], False)
    os.set_blocking(wake[1], False)
    assoc.__class__ = _PromptAssociation
    assoc.dul.__class__ = _WakingDUL
    assoc.dul._pacsbox_wake = wake
    assoc.dul.to_user_queue = _WakingQueue(assoc.dimse.msg_queue)
    # the bulk receive path, unless pynetdicom's per-PDU events are wanted (its DEBUG
    # logging hooks into them)
    assoc.dul._pacsbox_fast = not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG)
    return wake


class _Server(ThreadedAssociationServer):
    """pynetdicom's threaded server, with the TLS handshake moved out of the accepting
    thread: a peer that connects and stays silent then holds only its own thread."""

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address


class _LimitedRequestHandler(RequestHandler):
    """Serves one connection: the TLS handshake (bounded by ``DicomScpTimeout``), then one
    of the ``DicomThreadsCount`` slots, then the association to its end."""

    def _handshake(self) -> bool:
        sock = self.request
        if not isinstance(sock, ssl.SSLSocket):
            return True
        previous = sock.gettimeout()
        try:
            sock.settimeout(self.server.pacsbox_handshake_timeout)
            sock.do_handshake()
        except (OSError, ValueError) as e:
            log.warning("DICOM TLS handshake with %s failed: %s", self.client_address[0], e)
            try:
                sock.close()
            except OSError:
                pass
            return False
        sock.settimeout(previous)
        return True

    def handle(self) -> None:
        server = self.server
        if not self._handshake():
            return
        slots: threading.BoundedSemaphore = server.pacsbox_slots
        stopping: threading.Event = server.pacsbox_stopping
        while not slots.acquire(timeout=0.2):
            if stopping.is_set():
                return
        try:
            if stopping.is_set():
                return
            assoc = self._create_association()
            wake = _make_prompt(assoc)
            try:
                evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
                assoc.start()
                assoc.join()
                assoc.dul.join(5)
            finally:
                assoc.dul._pacsbox_wake = None
                for fd in wake:
                    os.close(fd)
        finally:
            slots.release()


class ScpServer:
    """The SCP of one app.

    Parameters
    ----------
    ctx : ServerContext

    Attributes
    ----------
    ae : pynetdicom.AE
    server : pynetdicom.transport.ThreadedAssociationServer
    address : (str, int)
        Where it listens.
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        state = plugin_state(ctx)
        opts = state.options
        self.aet: str = opts["DicomAet"]
        timeout = opts["DicomScpTimeout"] or None
        ae = AE(ae_title=self.aet)
        ae.maximum_pdu_size = opts["MaximumPduLength"]
        ae.acse_timeout = timeout
        ae.dimse_timeout = timeout
        ae.network_timeout = timeout
        ae.maximum_associations = max(1000, opts["DicomThreadsCount"] * 4)
        self.ae = ae
        self.address = (bind_address(ctx), opts["DicomPort"])
        ssl_context = tls_context(ctx, server=True) if opts["DicomTlsEnabled"] else None
        cx = PresentationContext()
        cx.abstract_syntax = VERIFICATION
        cx.transfer_syntax = list(UNCOMPRESSED)
        handlers_list = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_REQUESTED, _on_requested, [ctx]),
            (evt.EVT_ACCEPTED, _on_accepted, [ctx]),
            (evt.EVT_C_ECHO, handlers.handle_echo, [ctx]),
            (evt.EVT_C_STORE, handlers.handle_store, [ctx]),
            (evt.EVT_C_FIND, handlers.handle_find, [ctx]),
            (evt.EVT_C_MOVE, handle_move, [ctx]),
            (evt.EVT_C_GET, handle_get, [ctx]),
        ]
        try:
            server = ae.make_server(self.address, contexts=[cx], ssl_context=ssl_context, evt_handlers=handlers_list,
                                    server_class=_Server, request_handler=_LimitedRequestHandler)
        except OSError as e:
            raise ConfigError(f"option DicomPort: cannot listen on {self.address[0]}:{self.address[1]} for the "
                              f"DICOM server: {e.strerror or e}") from None
        server.daemon_threads = True
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            _unbind_standard_logging(server)
            _quiet_pynetdicom()
        server.pacsbox_slots = threading.BoundedSemaphore(opts["DicomThreadsCount"])
        server.pacsbox_stopping = threading.Event()
        server.pacsbox_handshake_timeout = float(timeout or 30)
        self.server = server
        ae._servers.append(server)  # so that AE.shutdown() and server.shutdown() agree
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                       name=f"pacsbox-scp-{self.address[1]}", daemon=True)
        self.thread.start()
        log.info("DICOM server listening on %s:%d with AET %s%s", self.address[0], self.address[1], self.aet,
                 " (DICOM TLS)" if ssl_context else "")

    def stop(self) -> None:
        """Stop listening, abort the running associations and wait for the server thread."""
        self.server.pacsbox_stopping.set()
        try:
            self.server.shutdown()
        except ValueError:
            pass  # already removed from the AE's servers
        for assoc in list(self.server.active_associations):
            try:
                assoc.abort()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
        self.thread.join(5)


def _unbind_standard_logging(server: Any) -> None:
    """Unbind pynetdicom's standard per-PDU and per-DIMSE-message log handlers from the
    server (not from other AEs): they log several INFO lines per message under the
    AE-wide lock, and without them no event object is built per PDU. They stay when the
    ``pynetdicom`` logger is at DEBUG."""
    from pynetdicom._handlers import (standard_dimse_recv_handler, standard_dimse_sent_handler,
                                      standard_pdu_recv_handler, standard_pdu_sent_handler)
    for event, handler in ((evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
                           (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
                           (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
                           (evt.EVT_PDU_SENT, standard_pdu_sent_handler)):
        server.unbind(event, handler)


def _quiet_pynetdicom() -> None:
    """Keep pynetdicom's INFO lines out of the log unless debugging: it logs a dozen per
    C-FIND (the whole request identifier, rendered by pydicom, at INFO) and several per
    association. The ``pynetdicom`` logger is set to WARNING only when nobody configured
    it (level NOTSET), and pynetdicom's identifier dumps are turned off."""
    from pynetdicom import _config

    logger = logging.getLogger("pynetdicom")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


def bind_address(ctx: Any) -> str:
    """Where the SCP listens: ``DicomBindAddress``, else the HTTP server's address
    (``HttpBindAddress``; ``0.0.0.0`` when ``RemoteAccessAllowed`` and no
    ``HttpBindAddress`` is set).

    Returns
    -------
    str
    """
    cfg = ctx.config
    explicit = cfg.get("DicomBindAddress")
    if explicit:
        return str(explicit)
    if cfg.bool("RemoteAccessAllowed") and not cfg.is_set("HttpBindAddress"):
        return "0.0.0.0"
    return str(cfg.get("HttpBindAddress", "127.0.0.1") or "127.0.0.1")


def _reject(assoc: Any, reason: int) -> None:
    assoc.acse.send_reject(0x01, 0x01, reason)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def _on_requested(event: Any, ctx: Any) -> None:
    """``EVT_REQUESTED``: the association checks and this association's contexts."""
    assoc = event.assoc
    try:
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        ip = str(assoc.requestor.address)
        assoc.pacsbox_peer = {"RemoteAET": calling, "CalledAET": called, "RemoteIP": ip}
        state = plugin_state(ctx)
        opts = state.options
        if opts["DicomCheckCalledAet"] and not aet_equal(called, opts["DicomAet"], opts["StrictAetComparison"]):
            log.warning("Rejected association: called AET %r is not ours (%r), from %s (AET %r)", called,
                        opts["DicomAet"], ip, calling)
            _reject(assoc, _REASON_CALLED)
            return
        if not any(opts[name] for name in handlers.ALWAYS_ALLOW.values()) and not state.modalities.by_aet(calling, ip):
            log.warning("Rejected association: unknown calling AET %r from %s (not in DicomModalities)", calling, ip)
            _reject(assoc, _REASON_CALLING)
            return
        if not ctx.pm.call_veto("filter_incoming_association", {"calling_aet": calling, "called_aet": called,
                                                                "ip": ip}):
            log.warning("Rejected association from %s (AET %r) by filter_incoming_association", ip, calling)
            _reject(assoc, _REASON_CALLING)
            return
        contexts, unknown = accepted_contexts(ctx, rq.presentation_context_definition_list)
        assoc.acceptor.supported_contexts = contexts
        assoc.pacsbox_unknown = unknown
    except Exception:  # noqa: BLE001 - a broken check fails closed, with a proper rejection
        log.exception("Rejected association: error while checking it")
        if not assoc.is_rejected:
            _reject(assoc, 0x01)


def _on_accepted(event: Any, ctx: Any) -> None:
    """``EVT_ACCEPTED``: serve the accepted unknown SOP classes as storage.

    pynetdicom picks the service of a request by its SOP class; an unknown one is mapped
    to the Storage Service Class (``1.2.840.10008.4.2``) for this association only,
    through its SOP Class Common Extended Negotiation table (PS3.7 D.3.3.6).
    """
    assoc = event.assoc
    unknown = getattr(assoc, "pacsbox_unknown", ())
    if not unknown:
        return
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    table = assoc.acceptor._common_ext  # pynetdicom keeps no public setter for this table
    for uid in unknown:
        if uid in accepted:
            item = SOPClassCommonExtendedNegotiation()
            item.sop_class_uid = uid
            item.service_class_uid = STORAGE_SERVICE_CLASS
            table[uid] = item


def _retrieve_module() -> Any:
    from . import retrieve_scp  # written by the retrieve side; imported when first needed
    return retrieve_scp


def _refuse_retrieve(event: Any, primitive: type) -> None:
    """Answer a refused C-MOVE/C-GET with ``0x0124`` and zero sub-operations, through
    the retrieve side's responder (which then drops pynetdicom's own final response)."""
    retrieve_scp = _retrieve_module()
    responder = retrieve_scp._Responder(event, primitive)
    responder.send(handlers.STATUS_NOT_AUTHORIZED, retrieve_scp._Counts(0), final=True)
    responder.finish()


def handle_move(event: Any, ctx: Any) -> Iterator[Any]:
    """``EVT_C_MOVE``: the permission check (``Move``), then ``retrieve_scp.handle_move``.

    A refused C-MOVE is answered ``0x0124`` (refused: not authorized) with no
    sub-operation (Orthanc 1.10.1 aborts the association instead).
    """
    if not handlers.command_allowed(ctx, event, "Move"):
        from pynetdicom.dimse_primitives import C_MOVE
        _refuse_retrieve(event, C_MOVE)
        yield ("127.0.0.1", 1)  # placeholder destination: no sub-operation follows
        yield 0
        return
    yield from _retrieve_module().handle_move(event, ctx)


def handle_get(event: Any, ctx: Any) -> Iterator[Any]:
    """``EVT_C_GET``: the permission check (``Get``), then ``retrieve_scp.handle_get``.

    A refused C-GET is answered ``0x0124`` (refused: not authorized) with no
    sub-operation.
    """
    if not handlers.command_allowed(ctx, event, "Get"):
        from pynetdicom.dimse_primitives import C_GET
        _refuse_retrieve(event, C_GET)
        yield 0
        return
    yield from _retrieve_module().handle_get(event, ctx)


def start(ctx: Any) -> None:
    """Start the SCP when ``DicomServerEnabled`` (reference section 9.8), after
    registering the default worklist provider when the ``Worklists`` section enables it.

    Raises
    ------
    pacsbox.ConfigError
        ``DicomPort`` cannot be bound (in use, no permission); the message names the
        option, the address and the reason.
    pacsbox.ConfigError
        ``Worklists.Database`` is not a folder while ``Worklists.Enable``.
    OrthancError
        ``SSL_INITIALIZATION`` when ``DicomTlsEnabled`` and a TLS file cannot be loaded.
    """
    state = plugin_state(ctx)
    if not state.options["DicomServerEnabled"] or state.extra.get(EXTRA_KEY) is not None:
        return
    worklist.start(ctx)
    state.extra[EXTRA_KEY] = ScpServer(ctx)


def stop(ctx: Any) -> None:
    """Stop the SCP, if running, and unregister the default worklist provider."""
    state = plugin_state(ctx)
    server = state.extra.pop(EXTRA_KEY, None)
    if server is not None:
        server.stop()
    worklist.stop(ctx)


def server_of(ctx: Any) -> ScpServer | None:
    """The running SCP of ``ctx``'s app, or None."""
    return plugin_state(ctx).extra.get(EXTRA_KEY)
