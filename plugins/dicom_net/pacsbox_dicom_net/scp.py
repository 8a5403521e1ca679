"""The SCP: pynetdicom's association server, started and stopped with the app.

One :class:`ScpServer` per app (kept in ``plugin_state(ctx).extra["scp"]``) listens on
``DicomPort`` and serves C-ECHO, C-STORE, C-FIND (Patient/Study Root, Modality
Worklist), C-MOVE and C-GET, with these handlers bound with the app's ``ctx`` as extra
argument (qrscp style):

- association negotiation: :func:`.scp_negotiation.on_requested` and
  :func:`.scp_negotiation.on_accepted` (reference section 9.7);
- C-ECHO: :func:`handle_echo` (the permission check alone);
- C-STORE: :func:`.store_scp.handle_store`; C-FIND: :func:`.find_scp.handle_find`;
- C-MOVE and C-GET: :func:`handle_move` and :func:`handle_get`, the permission check,
  then ``retrieve_scp``'s handlers.

Each connection is served as :mod:`.scp_connections` says: at most
``DicomThreadsCount`` associations at a time, further connections wait (their
A-ASSOCIATE-RQ unanswered) until one ends, as Orthanc's worker pool queues them. Every
accepted socket gets TCP_NODELAY.

Bind address: ``DicomBindAddress`` (a pacsbox option) if set; otherwise the HTTP
server's: ``HttpBindAddress`` (default ``127.0.0.1``), or ``0.0.0.0`` when
``RemoteAccessAllowed`` is true and ``HttpBindAddress`` is not set. (Orthanc always
listens on every interface.)

Timeouts: ``DicomScpTimeout`` seconds (0 = none) for ACSE, DIMSE and network idleness.
``MaximumPduLength`` is the maximum PDU size we receive.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Iterator

from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext

from pacsbox import ConfigError

from . import worklist
from .find_scp import handle_find
from .scp_access import command_allowed
from .scp_connections import AssociationServer, LimitedRequestHandler
from .scp_negotiation import UNCOMPRESSED, VERIFICATION, on_accepted, on_requested
from .scp_statuses import STATUS_NOT_AUTHORIZED, STATUS_SUCCESS
from .scu import set_nodelay, tls_context
from .state import plugin_state
from .store_scp import handle_store

log = logging.getLogger("pacsbox.dicom_net.scp")

#: Key of the server in ``plugin_state(ctx).extra``.
EXTRA_KEY = "scp"


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
            (evt.EVT_REQUESTED, on_requested, [ctx]),
            (evt.EVT_ACCEPTED, on_accepted, [ctx]),
            (evt.EVT_C_ECHO, handle_echo, [ctx]),
            (evt.EVT_C_STORE, handle_store, [ctx]),
            (evt.EVT_C_FIND, handle_find, [ctx]),
            (evt.EVT_C_MOVE, handle_move, [ctx]),
            (evt.EVT_C_GET, handle_get, [ctx]),
        ]
        try:
            server = ae.make_server(self.address, contexts=[cx], ssl_context=ssl_context, evt_handlers=handlers_list,
                                    server_class=AssociationServer, request_handler=LimitedRequestHandler)
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


def handle_echo(event: Any, ctx: Any) -> int:
    """``EVT_C_ECHO``: answer a Verification request (PS3.7 9.1.5).

    Returns
    -------
    int
        ``0x0000``, or ``0x0124`` when ``Echo`` is not allowed to the peer.
    """
    return STATUS_SUCCESS if command_allowed(ctx, event, "Echo") else STATUS_NOT_AUTHORIZED


def _retrieve_module() -> Any:
    from . import retrieve_scp  # written by the retrieve side; imported when first needed
    return retrieve_scp


def _refuse_retrieve(event: Any, primitive: type) -> None:
    """Answer a refused C-MOVE/C-GET with ``0x0124`` and zero sub-operations, through
    the retrieve side's responder (which then drops pynetdicom's own final response)."""
    retrieve_scp = _retrieve_module()
    responder = retrieve_scp._Responder(event, primitive)
    responder.send(STATUS_NOT_AUTHORIZED, retrieve_scp._Counts(0), final=True)
    responder.finish()


def handle_move(event: Any, ctx: Any) -> Iterator[Any]:
    """``EVT_C_MOVE``: the permission check (``Move``), then ``retrieve_scp.handle_move``.

    A refused C-MOVE is answered ``0x0124`` (refused: not authorized) with no
    sub-operation (Orthanc 1.10.1 aborts the association instead).
    """
    if not command_allowed(ctx, event, "Move"):
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
    if not command_allowed(ctx, event, "Get"):
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
