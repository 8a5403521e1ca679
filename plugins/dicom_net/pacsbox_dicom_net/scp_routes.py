"""REST routes of the SCP (reference section 9.7; Orthanc 1.10.1 ``OrthancRestSystem.cpp``):

- ``GET``/``PUT /tools/accepted-transfer-syntaxes``: the transfer syntaxes the C-STORE
  SCP accepts. ``GET`` answers the JSON array of the UIDs (among the 42 transfer syntaxes
  Orthanc 1.10.1 knows, in its order) that match the current patterns. ``PUT`` takes a
  JSON array of patterns, a JSON string, or (when the body is not JSON) the body itself as
  one pattern; ``*`` and ``?`` are wildcards; the new set replaces the old one, applies to
  the associations negotiated from then on, and is answered like ``GET``. A JSON body of
  another type: 400 ``BadFileFormat``. As in Orthanc 1.10.1, a body that *starts* with a
  JSON value counts as JSON, so a bare UID in plain text (``1.2.840.10008.1.2``, read as
  the number 1.2) is a 400: send it as a JSON string.
- ``GET``/``PUT /tools/unknown-sop-class-accepted``: ``1`` or ``0`` as ``text/plain``;
  ``PUT`` takes ``1``/``true``/``0``/``false`` (surrounding spaces ignored), answers an
  empty ``text/plain`` body; anything else is a 400 "Boolean value expected".
- ``GET /tools/dicom-conformance``: a plain-text conformance statement generated from
  what the SCP accepts right now (Orthanc serves a fixed text).
"""
from __future__ import annotations

import json
from typing import Any

from pydicom.uid import UID

from pacsbox import ErrorCode, OrthancError, RouteSpec, read_body, send_json, send_text

from . import scp_negotiation
from .state import plugin_state

ORTHANC_TRANSFER_SYNTAXES = scp_negotiation.ORTHANC_TRANSFER_SYNTAXES


def expand_patterns(patterns: list[str]) -> list[str]:
    """The known transfer syntaxes matching any of ``patterns`` (Orthanc's
    ``AddTransferSyntaxes``), in Orthanc's order.

    Parameters
    ----------
    patterns : list of str
        UIDs with ``*``/``?`` wildcards.

    Returns
    -------
    list of str
    """
    return [ts for ts in ORTHANC_TRANSFER_SYNTAXES if any(scp_negotiation._pattern(p).match(ts) for p in patterns)]


def accepted_transfer_syntaxes(ctx: Any) -> list[str]:
    """The transfer syntaxes the C-STORE SCP accepts now (``GET
    /tools/accepted-transfer-syntaxes``)."""
    state = plugin_state(ctx)
    with state.lock:
        patterns = list(state.accepted_transfer_syntaxes)
    return expand_patterns(patterns)


class AcceptedTransferSyntaxesRoute:
    """``GET``/``PUT /tools/accepted-transfer-syntaxes``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any) -> None:
        send_json(resp, accepted_transfer_syntaxes(self.ctx))

    def on_put(self, req: Any, resp: Any) -> None:
        body = read_body(req).decode("utf-8", "replace")
        try:
            # as Orthanc's JSON reader: a body that starts with a JSON value is JSON,
            # whatever follows ("1.2.840..." reads as the number 1.2, hence a 400)
            value, _ = json.JSONDecoder().raw_decode(body.lstrip(" \t\r\n"))
        except ValueError:
            patterns = [body]
        else:
            if isinstance(value, str):
                patterns = [value]
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                patterns = list(value)
            else:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
        state = plugin_state(self.ctx)
        expanded = expand_patterns(patterns)
        with state.lock:
            state.accepted_transfer_syntaxes = expanded
        send_json(resp, expanded)


_BOOLEANS = {"1": True, "true": True, "0": False, "false": False}


class UnknownSopClassAcceptedRoute:
    """``GET``/``PUT /tools/unknown-sop-class-accepted``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any) -> None:
        send_text(resp, "1" if plugin_state(self.ctx).unknown_sop_class_accepted else "0")

    def on_put(self, req: Any, resp: Any) -> None:
        text = read_body(req).decode("utf-8", "replace").strip(" \t\r\n")
        if text not in _BOOLEANS:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Boolean value expected")
        state = plugin_state(self.ctx)
        with state.lock:
            state.unknown_sop_class_accepted = _BOOLEANS[text]
        send_text(resp, "")


def _name(uid: str) -> str:
    name = UID(uid).keyword or UID(uid).name
    return name if name and name != uid else "(unknown)"


def conformance_statement(ctx: Any) -> str:
    """A plain-text DICOM conformance statement of the SCP as configured right now.

    Parameters
    ----------
    ctx : ServerContext

    Returns
    -------
    str
        Sections for C-ECHO, C-STORE (every storage SOP class pynetdicom knows, and
        whether unknown ones are accepted), C-FIND (Patient/Study Root, and Modality
        Worklist when a provider is registered), C-MOVE and C-GET, then the accepted
        transfer syntaxes, each line ``Keyword | UID``.
    """
    from pynetdicom import AllStoragePresentationContexts

    state = plugin_state(ctx)
    opts = state.options
    out = ["======================================", "DICOM Conformance Statement of pacsbox",
           "======================================", "",
           f"AE title: {opts['DicomAet']}    Port: {opts['DicomPort']}    "
           f"Server enabled: {'yes' if opts['DicomServerEnabled'] else 'no'}    "
           f"DICOM TLS: {'yes' if opts['DicomTlsEnabled'] else 'no'}", ""]

    def section(title: str, intro: str, uids: list[str]) -> None:
        out.extend(["-" * (len(title)), title, "-" * (len(title)), "", intro, ""])
        width = max((len(_name(u)) for u in uids), default=0)
        out.extend(f"  {_name(u):<{width}} | {u}" for u in uids)
        out.append("")

    section("Echo SCP Conformance", "pacsbox supports the following SOP Classes as an SCP for C-Echo:",
            [scp_negotiation.VERIFICATION])
    storage = sorted({str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}, key=_name)
    section("Store SCP Conformance", "pacsbox supports the following SOP Classes as an SCP for C-Store"
            + (" (and any unknown SOP class, UnknownSopClassAccepted is true):"
               if state.unknown_sop_class_accepted else ":"), storage)
    finds = [scp_negotiation.PATIENT_ROOT_FIND, scp_negotiation.STUDY_ROOT_FIND]
    if scp_negotiation.has_worklist_provider(ctx):
        finds.append(scp_negotiation.WORKLIST_FIND)
    section("Find SCP Conformance", "pacsbox supports the following SOP Classes as an SCP for C-Find:", finds)
    section("Move SCP Conformance", "pacsbox supports the following SOP Classes as an SCP for C-Move:",
            [scp_negotiation.PATIENT_ROOT_MOVE, scp_negotiation.STUDY_ROOT_MOVE])
    section("Get SCP Conformance", "pacsbox supports the following SOP Classes as an SCP for C-Get:",
            [scp_negotiation.PATIENT_ROOT_GET, scp_negotiation.STUDY_ROOT_GET])
    section("Transfer Syntaxes", "pacsbox accepts the following transfer syntaxes for C-Store "
            "(C-Echo, C-Find, C-Move and C-Get: the three uncompressed ones):", accepted_transfer_syntaxes(ctx))
    return "\n".join(out)


class DicomConformanceRoute:
    """``GET /tools/dicom-conformance``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any) -> None:
        send_text(resp, conformance_statement(self.ctx))


def routes(ctx: Any) -> list[RouteSpec]:
    """The routes of this module."""
    return [RouteSpec("/tools/accepted-transfer-syntaxes", AcceptedTransferSyntaxesRoute),
            RouteSpec("/tools/unknown-sop-class-accepted", UnknownSopClassAcceptedRoute),
            RouteSpec("/tools/dicom-conformance", DicomConformanceRoute)]
