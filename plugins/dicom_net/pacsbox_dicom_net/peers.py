"""Orthanc peers: the ``/peers`` routes and the ``OrthancPeerStore`` job (reference section 10).

Routes (answers and errors as Orthanc 1.10.1's):

- ``GET /peers`` (names; ``?expand``: name → public configuration, secrets hidden);
- ``GET /peers/{id}`` (sub-routes), ``PUT /peers/{id}`` (array or object form),
  ``DELETE /peers/{id}``;
- ``GET /peers/{id}/configuration``, ``GET /peers/{id}/system`` (the peer's ``/system``,
  relayed);
- ``POST /peers/{id}/store`` (job ``OrthancPeerStore``, :mod:`.peer_job`),
  ``POST /peers/{id}/store-straight`` (a DICOM file forwarded to the peer).

The configuration API other modules build on (the transfers accelerator) is re-exported
here from :mod:`.peer_registry`: :func:`peer_registry`, :class:`Peer`,
:func:`http_session`, :func:`peer_timeout`.
"""
from __future__ import annotations

import json
from typing import Any

import requests

from pacsbox import (ErrorCode, OrthancError, RouteSpec, is_orthanc_id, is_transfer_syntax, not_found,
                     query_flag, read_body, read_bool, send_json, send_text)

from .peer_job import OrthancPeerStoreJob, curl_like_error
from .peer_registry import (Peer, PeerConfigError, PeerRegistry, check_config, http_session, parse_peer,
                            parse_peers, peer_registry, peer_timeout)

__all__ = ["Peer", "PeerConfigError", "PeerRegistry", "OrthancPeerStoreJob", "check_config", "http_session",
           "parse_peer", "parse_peers", "peer_registry", "peer_timeout", "routes", "job_types",
           "resources_to_instances"]

#: Sub-routes listed by ``GET /peers/{id}``.
PEER_SUBROUTES = ["configuration", "store", "store-straight", "system"]


def _unknown_peer(name: str) -> OrthancError:
    return OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"No peer with symbolic name: {name}")


def _lookup(ctx: Any, name: str) -> Peer:
    peer = peer_registry(ctx).get(name)
    if peer is None:
        raise _unknown_peer(name)
    return peer


class PeersRoute:
    """``GET /peers`` (``?expand``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any) -> None:
        reg = peer_registry(self.ctx)
        if query_flag(req, "expand"):
            send_json(resp, {name: peer.public_json() for name, peer in reg.items()})
        else:
            send_json(resp, reg.names())


class PeerRoute:
    """``GET``/``PUT``/``DELETE /peers/{id}``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:
        if peer_registry(self.ctx).get(id) is None:
            raise not_found()
        send_json(resp, PEER_SUBROUTES)

    def on_put(self, req: Any, resp: Any, id: str) -> None:
        raw = read_body(req)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise not_found() from None   # Orthanc 1.10.1: an unreadable body → 404, empty
        try:
            peer = parse_peer(id, body, base_dir=getattr(self.ctx.config, "base_dir", None))
        except PeerConfigError as e:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, e.detail) from None
        peer_registry(self.ctx).put(id, peer)
        send_text(resp, "")

    def on_delete(self, req: Any, resp: Any, id: str) -> None:
        if not peer_registry(self.ctx).delete(id):
            raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Unknown Orthanc peer: {id}")
        send_text(resp, "")


class PeerConfigurationRoute:
    """``GET /peers/{id}/configuration``: the public configuration."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:
        send_json(resp, _lookup(self.ctx, id).public_json())


def _relay_error(resp: Any, r: requests.Response) -> None:
    resp.status = r.status_code
    resp.data = b""


class PeerSystemRoute:
    """``GET /peers/{id}/system``: the peer's ``GET /system``, relayed.

    A connection failure → 500 (9) with the HTTP client's error as details; an HTTP
    error of the peer → its status, empty body (as Orthanc 1.10.1).
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:
        peer = _lookup(self.ctx, id)
        with http_session(self.ctx, peer, pool_size=1) as s:
            try:
                r = s.get(peer.url + "system", timeout=peer_timeout(self.ctx, peer))
            except requests.RequestException as e:
                raise OrthancError(ErrorCode.NETWORK_PROTOCOL, curl_like_error(e)) from None
        if not 200 <= r.status_code < 300:
            _relay_error(resp, r)
            return
        try:
            send_json(resp, r.json())
        except ValueError:
            raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f"The peer {id} did not answer JSON to /system") from None


class PeerStoreStraightRoute:
    """``POST /peers/{id}/store-straight``: the body (a DICOM file) is sent to the peer's
    ``POST /instances`` without being stored; the answer is the peer's answer."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:
        peer = _lookup(self.ctx, id)
        body = read_body(req)
        with http_session(self.ctx, peer, pool_size=1) as s:
            try:
                r = s.post(peer.url + "instances", data=body, headers={"Content-Type": "application/dicom"},
                           timeout=peer_timeout(self.ctx, peer))
            except requests.RequestException as e:
                raise OrthancError(ErrorCode.NETWORK_PROTOCOL, curl_like_error(e)) from None
        if not 200 <= r.status_code < 300:
            raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f"Cannot send DICOM to remote peer: {id}")
        try:
            send_json(resp, r.json())
        except ValueError:
            send_text(resp, r.content, r.headers.get("Content-Type", "application/octet-stream"))


def _bad(details: str) -> OrthancError:
    return OrthancError(ErrorCode.BAD_FILE_FORMAT, details)


def parse_store_body(raw: bytes) -> tuple[list[str], dict[str, Any]]:
    """Read the body of ``POST /peers/{id}/store`` (and ``/modalities/{id}/store``).

    Parameters
    ----------
    raw : bytes
        A bare Orthanc ID (text), a JSON string, a JSON array of IDs, or a JSON object
        with ``Resources`` and other fields.

    Returns
    -------
    (list of str, dict)
        The resource IDs (blanks stripped), and the object's fields (``{}`` for the other
        forms).

    Raises
    ------
    OrthancError
        400 ``BadFileFormat`` with Orthanc 1.10.1's details: "Must provide a JSON value",
        "Must provide a JSON object, or a JSON array of strings", "Missing field in JSON:
        \\"Resources\\"", "JSON field \\"Resources\\" must contain an array", "Resources to be
        exported must be specified as a JSON array of strings", "This string is not a valid
        Orthanc identifier: x".
    """
    text = raw.decode("utf-8", errors="replace")
    fields: dict[str, Any] = {}
    if is_orthanc_id(text):
        items: Any = [text.strip()]
    else:
        try:
            request = json.loads(text) if text.strip() else None
        except ValueError:
            request = None
        if request is None:
            raise _bad("Must provide a JSON value")
        if isinstance(request, str):
            request = [request]
        elif not isinstance(request, (list, dict)):
            raise _bad("Must provide a JSON object, or a JSON array of strings")
        if isinstance(request, dict):
            if "Resources" not in request:
                raise _bad('Missing field in JSON: "Resources"')
            items = request["Resources"]
            if not isinstance(items, list):
                raise _bad('JSON field "Resources" must contain an array')
            fields = request
        else:
            items = request
    out = []
    for item in items:
        if not isinstance(item, str):
            raise _bad("Resources to be exported must be specified as a JSON array of strings")
        stripped = item.strip()
        if not is_orthanc_id(stripped):
            raise _bad(f"This string is not a valid Orthanc identifier: {stripped}")
        out.append(stripped)
    return out, fields


def _export_identifiers(ctx: Any, res: Any) -> list[str]:
    chain = sorted([*ctx.index.ancestors(res), res], key=lambda r: r.level)
    keys = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    return [str(r.main_tags.get(keys[r.level], "") or "") for r in chain]


def resources_to_instances(ctx: Any, resource_ids: list[str], log_export_to: str | None = None) -> list[str]:
    """The instances below the given resources, in index order, each once.

    Parameters
    ----------
    ctx : pacsbox.ServerContext
    resource_ids : list of str
        Orthanc IDs of patients, studies, series or instances (mixed).
    log_export_to : str, optional
        When given, each resource is recorded in ``/exports`` with this remote name as it
        is resolved (``LogExportedResources``, as Orthanc: before the peer is looked up).

    Returns
    -------
    list of str

    Raises
    ------
    OrthancError
        404 ``UnknownResource`` for an unknown ID.
    """
    seen: set[str] = set()
    out: list[str] = []
    for rid in resource_ids:
        res = ctx.index.lookup(rid)
        if res is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        if log_export_to is not None:
            ctx.index.log_export(res, log_export_to, _export_identifiers(ctx, res))
        for inst in ctx.index.descendant_instances(res.internal_id, res.level):
            if inst.public_id not in seen:
                seen.add(inst.public_id)
                out.append(inst.public_id)
    return out


class PeerStoreRoute:
    """``POST /peers/{id}/store``: an ``OrthancPeerStore`` job, synchronous by default.

    Checks in Orthanc's order: the body, the resources, ``Transcode``, ``Compress``,
    then the peer (404 (17) "No peer with symbolic name: x").
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:
        ctx = self.ctx
        resource_ids, fields = parse_store_body(read_body(req))
        from .state import plugin_state
        log_to = id if plugin_state(ctx).options["LogExportedResources"] else None
        instances = resources_to_instances(ctx, resource_ids, log_to)
        ts = fields.get("Transcode")
        if ts is not None:
            if not isinstance(ts, str):
                raise _bad("String value expected in field: Transcode")
            if not is_transfer_syntax(ts):
                raise _bad(f"Unknown transfer syntax UID: {ts}")
        compress = read_bool(fields, "Compress", False)
        peer = _lookup(ctx, id)
        job = OrthancPeerStoreJob(peer, instances, resource_ids, transcode_to=ts.strip() if ts else None,
                                  compress=compress)
        send_json(resp, ctx.jobs.run_request(job, fields, synchronous=True))


def routes(ctx: Any) -> list[RouteSpec]:
    """The ``/peers`` routes (reference section 10.2)."""
    peer_registry(ctx)   # reads OrthancPeers (and the index) once, at start-up
    return [RouteSpec("/peers", PeersRoute),
            RouteSpec("/peers/{id}", PeerRoute),
            RouteSpec("/peers/{id}/configuration", PeerConfigurationRoute),
            RouteSpec("/peers/{id}/system", PeerSystemRoute),
            RouteSpec("/peers/{id}/store", PeerStoreRoute),
            RouteSpec("/peers/{id}/store-straight", PeerStoreStraightRoute)]


def job_types() -> list[type]:
    """``OrthancPeerStore``."""
    return [OrthancPeerStoreJob]
