"""How the SCP serves each connection, around pynetdicom's protocol logic:

- :class:`AssociationServer` accepts connections, leaving the TLS handshake to each
  connection's own thread (a peer that connects and stays silent holds only its own
  thread);
- :class:`LimitedRequestHandler` does that handshake (bounded by ``DicomScpTimeout``),
  then waits for one of the ``DicomThreadsCount`` slots (further connections wait, their
  A-ASSOCIATE-RQ unanswered, as Orthanc's worker pool queues them) and serves the
  association to its end;
- the association and its DUL are turned into *prompt* variants, whose threads wake at
  once when there is work instead of polling every millisecond, and whose established
  association reads its P-DATA through :class:`~pacsbox_dicom_net.receive.PDataReader`
  (the bulk receive path of C-STORE and C-FIND).
"""
from __future__ import annotations

import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from .receive import PDataReader

log = logging.getLogger("pacsbox.dicom_net.scp")

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


class AssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with the TLS handshake moved out of the accepting
    thread: a peer that connects and stays silent then holds only its own thread.

    :class:`~pacsbox_dicom_net.scp.ScpServer` sets its ``pacsbox_slots`` (a
    ``BoundedSemaphore`` of ``DicomThreadsCount``), ``pacsbox_stopping`` (an ``Event``)
    and ``pacsbox_handshake_timeout`` (seconds), read by :class:`LimitedRequestHandler`.
    """

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address


class LimitedRequestHandler(RequestHandler):
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
