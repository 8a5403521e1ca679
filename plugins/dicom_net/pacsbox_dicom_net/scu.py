"""Outgoing associations: the one place that opens an association toward a modality.

Every SCU of the plugin (C-ECHO, C-STORE jobs, C-MOVE sub-operations, query/retrieve)
opens its association here, so that TCP_NODELAY, DICOM TLS, the timeouts, the maximum
PDU length and Orthanc's error wording are the same everywhere.

Network outcomes follow the project's rule: misuse raises, a peer's answer is returned.
A failure to associate is raised as :class:`pacsbox.OrthancError` with code
``NETWORK_PROTOCOL`` (HTTP 500) and Orthanc 1.10.1's wording, because every caller turns
it into exactly that REST or job error.
"""
from __future__ import annotations

import socket
import ssl
from typing import Any, Iterable, Sequence

from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext

from pacsbox import ErrorCode, OrthancError

from .modalities import Modality
from .state import plugin_state


def set_nodelay(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler: TCP_NODELAY on the association's socket.

    Without it, pynetdicom's separate command and data set PDUs meet the peer's delayed
    ACK and every DIMSE exchange stalls for about 40 ms (see ``shared/bench/README.md``).
    """
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # already closed
            pass


def tls_context(ctx: Any, server: bool) -> ssl.SSLContext:
    """The DICOM TLS context of this app (``DicomTls*`` options, Orthanc 1.9+).

    Parameters
    ----------
    ctx : ServerContext
    server : bool
        True for the SCP's listening side, False for an outgoing association.

    Returns
    -------
    ssl.SSLContext
        With ``DicomTlsCertificate``/``DicomTlsPrivateKey`` as own certificate,
        ``DicomTlsTrustedCertificates`` as CA bundle; a server requires a client
        certificate when ``DicomTlsRemoteCertificateRequired`` (default true). Host
        names are not checked (DICOM peers are identified by their certificate, as in
        DCMTK).

    Raises
    ------
    OrthancError
        ``SSL_INITIALIZATION`` when a file cannot be loaded.
    """
    opts = plugin_state(ctx).options
    purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
    try:
        context = ssl.create_default_context(purpose)
        context.check_hostname = False
        if opts["DicomTlsCertificate"]:
            context.load_cert_chain(str(ctx.config.path("DicomTlsCertificate")),
                                    str(ctx.config.path("DicomTlsPrivateKey")))
        if opts["DicomTlsTrustedCertificates"]:
            context.load_verify_locations(str(ctx.config.path("DicomTlsTrustedCertificates")))
        if server:
            context.verify_mode = ssl.CERT_REQUIRED if opts["DicomTlsRemoteCertificateRequired"] else ssl.CERT_OPTIONAL
        else:
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise OrthancError(ErrorCode.SSL_INITIALIZATION, f"DICOM TLS: {e}") from None
    return context


def scu_timeout(ctx: Any, modality: Modality | None, timeout: float | None = None) -> float:
    """Seconds for DIMSE and network waits: the call's ``Timeout``, else the modality's,
    else ``DicomScuTimeout`` (0 there means no limit: ``None`` is never returned, 0 is)."""
    if timeout:
        return float(timeout)
    if modality is not None and modality.timeout:
        return float(modality.timeout)
    return float(plugin_state(ctx).options["DicomScuTimeout"])


def open_association(ctx: Any, modality: Modality, contexts: Sequence[PresentationContext], *,
                     local_aet: str | None = None, timeout: float | None = None,
                     ext_neg: Iterable[Any] | None = None, evt_handlers: Sequence[Any] = (),
                     ae: AE | None = None) -> Any:
    """Open an association to ``modality`` and return it established.

    Parameters
    ----------
    ctx : ServerContext
    modality : Modality
        The called node (its ``AET``, ``Host``, ``Port``, ``UseDicomTls``, ``LocalAet``).
    contexts : sequence of PresentationContext
        The presentation contexts to propose (at most 128, PS3.8 section 9.3.2.2).
    local_aet : str, optional
        Calling AET; default the modality's ``LocalAet``, else ``DicomAet``. A modality's
        ``LocalAet`` wins over this argument, as in Orthanc.
    timeout : float, optional
        Seconds (see :func:`scu_timeout`).
    ext_neg : iterable, optional
        Extended negotiation items (e.g. SCP/SCU role selection for C-GET).
    evt_handlers : sequence of (event, handler), optional
        More pynetdicom handlers (e.g. ``evt.EVT_C_STORE`` for C-GET).
    ae : pynetdicom.AE, optional
        An AE to reuse; a new one is made otherwise.

    Returns
    -------
    pynetdicom.association.Association
        Established; the caller releases it.

    Raises
    ------
    OrthancError
        ``NETWORK_PROTOCOL`` (500) when the TCP connection, the TLS handshake or the
        association negotiation fails, with Orthanc 1.10.1's details:
        ``DicomAssociation - connecting to AET "X": ...``.
    """
    opts = plugin_state(ctx).options
    calling = modality.local_aet or local_aet or opts["DicomAet"]
    seconds = scu_timeout(ctx, modality, timeout)
    limit = seconds if seconds > 0 else None
    if ae is None:
        ae = AE(ae_title=calling)
    else:
        ae.ae_title = calling
    ae.acse_timeout = limit
    ae.dimse_timeout = limit
    ae.network_timeout = limit
    ae.connection_timeout = limit
    ae.maximum_pdu_size = opts["MaximumPduLength"]
    tls_args = (tls_context(ctx, server=False), None) if modality.use_tls else None
    connected: list[bool] = []
    handlers = [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_CONN_OPEN, lambda event: connected.append(True)),
                *evt_handlers]
    prefix = f'DicomAssociation - connecting to AET "{modality.aet}"'
    try:
        assoc = ae.associate(modality.host, modality.port, contexts=list(contexts), ae_title=modality.aet,
                             max_pdu=opts["MaximumPduLength"], ext_neg=list(ext_neg) if ext_neg else None,
                             tls_args=tls_args, evt_handlers=handlers)
    except (OSError, ValueError, RuntimeError) as e:
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f"{prefix}: {e}") from None
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f"{prefix}: DUL Association Rejected")
    if assoc.is_aborted and connected:
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f"{prefix}: Association aborted")
    raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f"{prefix}: TCP Initialization Error: Connection refused")
