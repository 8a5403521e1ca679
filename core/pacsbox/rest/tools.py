"""``/system``, ``/statistics``, ``/changes``, ``/exports`` and ``/tools/...``
(reference sections 2.7-2.9)."""
from __future__ import annotations

import logging
import threading
from datetime import datetime

from pydicom.uid import generate_uid

from ..dicom.ids import new_uuid
from ..errors import ErrorCode, OrthancError, not_found
from ..web import (FIND_FIELDS, NOT_AN_OBJECT_ERROR, query_flag, read_body, read_bool, read_int, read_json_object,
                   send_json, send_text)
from ..index.index import PLURAL, Level
from ..query import find_resources
from ..routing.registry import RouteSpec
from ..version import __version__
from . import find_ext

log = logging.getLogger("pacsbox.rest")

#: The Orthanc REST API level pacsbox implements (the reference, Orthanc 1.10.1).
ORTHANC_VERSION = "1.10.1"
API_VERSION = 16

#: Roots of generated UIDs (pacsbox's own; Orthanc uses DCMTK's 1.2.276.0.7230010.3).
UID_ROOT = "1.2.826.0.1.3680043.10.1404."


class SystemRoute:
    """``GET /system``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        cfg = self.ctx.config
        send_json(resp, {
            "ApiVersion": API_VERSION,
            "CheckRevisions": cfg.get("CheckRevisions") is True,
            "DatabaseBackendPlugin": None,
            "DatabaseVersion": 6,
            "DicomAet": cfg["DicomAet"],
            "DicomPort": cfg.int("DicomPort"),
            "HttpPort": cfg.int("HttpPort"),
            "IsHttpServerSecure": not self.ctx.insecure,
            "Name": cfg["Name"],
            "PluginsEnabled": True,
            "StorageAreaPlugin": None,
            "Version": ORTHANC_VERSION,
            "Product": "pacsbox",
            "ProductVersion": __version__,
        })


class StatisticsRoute:
    """``GET /statistics``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        s = self.ctx.index.statistics()
        send_json(resp, {
            "CountInstances": s["CountInstances"], "CountPatients": s["CountPatients"],
            "CountSeries": s["CountSeries"], "CountStudies": s["CountStudies"],
            "TotalDiskSize": str(s["TotalDiskSize"]), "TotalDiskSizeMB": s["TotalDiskSize"] // 1048576,
            "TotalUncompressedSize": str(s["TotalUncompressedSize"]),
            "TotalUncompressedSizeMB": s["TotalUncompressedSize"] // 1048576,
        })


def _int_param(req, name: str, default: int) -> int:
    """An integer query argument; absent or not a non-negative integer → ``default``
    (Orthanc 1.10.1 ignores a bad ``since``/``limit`` on ``/changes``)."""
    v = req.params.get(name)
    try:
        n = int(v) if v is not None else default
    except (TypeError, ValueError):
        return default
    return min(n, _MAX_UINT32) if n >= 0 else default


_MAX_UINT32 = 2 ** 32 - 1


class ChangesRoute:
    """``GET``/``DELETE /changes`` (``since``, ``limit``, ``last``)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        index = self.ctx.index
        if query_flag(req, "last"):  # "Last" is the highest Seq ever issued, even after DELETE /changes
            changes = index.last_change()
            send_json(resp, {"Changes": changes, "Done": True,
                             "Last": changes[-1]["Seq"] if changes else index.last_change_seq()})
            return
        since = _int_param(req, "since", 0)
        limit = _int_param(req, "limit", 100)
        changes, done, last = index.get_changes(since, limit)
        send_json(resp, {"Changes": changes, "Done": done, "Last": last})

    def on_delete(self, req, resp):
        self.ctx.index.clear_changes()
        send_text(resp, "")


class ExportsRoute:
    """``GET``/``DELETE /exports``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        if query_flag(req, "last"):  # only the last export (Orthanc's GetLastExportedResource)
            exports, _done, last = self.ctx.index.get_exports(last=True)
            send_json(resp, {"Exports": exports, "Done": True, "Last": last})
            return
        since = _int_param(req, "since", 0)
        limit = _int_param(req, "limit", 100)
        exports, done, last = self.ctx.index.get_exports(since, limit)
        send_json(resp, {"Exports": exports, "Done": done, "Last": last})

    def on_delete(self, req, resp):
        self.ctx.index.clear_exports()
        send_text(resp, "")


def _expand_flag(body: dict) -> bool:
    """``Expand`` as Orthanc 1.10.1 reads it (``Json::Value::asBool``): absent or ``null``
    false, a number by its value; another type is refused (Orthanc answers 500 there)."""
    v = body.get("Expand")
    if v is None or isinstance(v, (bool, int, float)):
        return bool(v)
    raise OrthancError(ErrorCode.BAD_REQUEST, 'Field "Expand" should be a Boolean')


class FindRoute:
    """``POST /tools/find`` (Orthanc 1.10.1, plus the 1.11-1.12 fields of
    :mod:`pacsbox.rest.find_ext`)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def _search(self, req, *, paging: bool = True):
        """(matching resources, Expand, tag format, ExtendedFind or None) of the body."""
        body = read_json_object(req, allow_empty=False, invalid=NOT_AN_OBJECT_ERROR)
        level_name = body.get("Level")
        if not isinstance(level_name, str):
            raise OrthancError(ErrorCode.BAD_REQUEST, "Field \"Level\" is missing, or should be a string")
        level = Level.parse(level_name)
        ext = None
        if any(k in body for k in find_ext.EXTENDED_FIELDS):
            ext = find_ext.ExtendedFind(self.ctx, level, body)
        query = body.get("Query")
        if query is None and ext is not None and ext.filters:
            query = {}
        if not isinstance(query, dict):
            raise OrthancError(ErrorCode.BAD_REQUEST, "Field \"Query\" is missing, or should be a JSON object")
        for k, v in query.items():
            if not isinstance(v, str):
                raise OrthancError(ErrorCode.BAD_REQUEST, f"Tag \"{k}\" should be associated with a string")
        # each field read as Orthanc 1.10.1 reads it (verified against the reference)
        case = read_bool(body, "CaseSensitive", None, errors=FIND_FIELDS)
        expand = _expand_flag(body)
        full, short = read_bool(body, "Full", False), read_bool(body, "Short", False)
        limit = read_int(body, "Limit", 0, unsigned=True, errors=FIND_FIELDS)
        since = read_int(body, "Since", 0, unsigned=True, errors=FIND_FIELDS)
        if not paging:
            limit = since = 0
        cfg_limit = self.ctx.config.int("LimitFindInstances" if level == Level.INSTANCE else "LimitFindResults")
        if paging and cfg_limit and (not limit or limit > cfg_limit):
            limit = cfg_limit
        fmt = "full" if full else "short" if short else "simplify"
        if ext is not None and ext.filters:
            found = [r for r in find_resources(self.ctx, level, query, case_sensitive=case) if ext.keep(r)]
            if ext.order:
                found = ext.sort(found)
            found = found[since:]
            if limit:
                found = found[:limit]
        else:
            found = find_resources(self.ctx, level, query, case_sensitive=case, limit=limit, since=since)
        return found, expand, fmt, ext

    def on_post(self, req, resp):
        found, expand, fmt, ext = self._search(req)
        if ext is not None:
            send_json(resp, [ext.answer(r, bool(expand), fmt) for r in found])
        elif expand:
            expand = self.ctx.resources.expand
            send_json(resp, [expand(r, tag_format=fmt) for r in found])
        else:
            send_json(resp, [r.public_id for r in found])


class CountResourcesRoute(FindRoute):
    """``POST /tools/count-resources`` (Orthanc 1.12.5): ``{"Count": n}`` for a
    ``/tools/find`` body (``Since`` and ``Limit`` ignored)."""

    def on_post(self, req, resp):
        found, _expand, _fmt, _ext = self._search(req, paging=False)
        send_json(resp, {"Count": len(found)})


class LookupRoute:
    """``POST /tools/lookup``: resources whose DICOM identifier equals the body."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        value = read_body(req).decode("utf-8", "replace").strip()
        # an empty body finds the resources with an empty identifier, as the reference
        out = [{"ID": r.public_id, "Path": f"/{PLURAL[r.level]}/{r.public_id}", "Type": r.level_name}
               for r in self.ctx.index.lookup_identifier(value)]
        send_json(resp, out)


class GenerateUidRoute:
    """``GET /tools/generate-uid?level=patient|study|series|instance``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        level = req.params.get("level") or ""  # lower case only, as Orthanc 1.10.1
        if level == "patient":
            send_text(resp, new_uuid())
        elif level in ("study", "series", "instance"):
            send_text(resp, generate_uid(prefix=UID_ROOT))
        else:
            raise not_found()  # Orthanc 1.10.1: empty 404 without a valid "level"


class NowRoute:
    """``GET /tools/now`` (UTC) and ``/tools/now-local``."""

    def __init__(self, ctx, local: bool = False):
        self.local = local

    def on_get(self, req, resp):
        t = datetime.now() if self.local else datetime.utcnow()
        send_text(resp, t.strftime("%Y%m%dT%H%M%S"))


class DefaultEncodingRoute:
    """``GET``/``PUT /tools/default-encoding``: the encoding of files without a Specific
    Character Set (option ``DefaultEncoding``), changed at run time. ``PUT`` answers the
    new name; an unknown name is a 400 ``ParameterOutOfRange``, as Orthanc 1.10.1."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        send_text(resp, self.ctx.ingest.default_encoding_name)

    def on_put(self, req, resp):
        # as Orthanc: any case ("utf8"), nothing around it; the answer is the canonical name
        text = read_body(req).decode("utf-8", "replace")
        try:
            self.ctx.ingest.set_default_encoding(text)
        except KeyError:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE) from None
        send_text(resp, self.ctx.ingest.default_encoding_name)


#: Orthanc's log categories (``/tools/log-level-{category}``) and the loggers each drives.
LOG_CATEGORIES = {
    "generic": ("pacsbox",), "http": ("pacsbox.http", "pacsbox.rest", "waitress"),
    "dicom": ("pacsbox.dicom", "pynetdicom"), "jobs": ("pacsbox.jobs", "pacsbox.builtin"), "lua": ("pacsbox.lua",),
    "plugins": ("pacsbox.plugins",), "sqlite": ("pacsbox.index",),
}
#: Orthanc verbosity names and the :mod:`logging` levels they set (``trace`` is below DEBUG).
LOG_VERBOSITY = {"default": logging.INFO, "verbose": logging.DEBUG, "trace": 5}
_LOG_LEVEL_LOCK = threading.Lock()


class LogLevelRoute:
    """``GET``/``PUT /tools/log-level`` (every category) and ``/tools/log-level-{category}``.

    The verbosity is ``default``, ``verbose`` or ``trace``; setting it sets the level of
    the category's loggers (:data:`LOG_CATEGORIES`, process-wide like any logging level).
    ``GET /tools/log-level`` answers the most verbose category's verbosity. ``PUT`` answers an
    empty body; another value is a 400 ``ParameterOutOfRange``, as Orthanc 1.10.1.
    """

    def __init__(self, ctx, category: str | None = None):
        self.ctx, self.category = ctx, category
        if not ctx.log_verbosity:
            start = "verbose" if logging.getLogger().getEffectiveLevel() <= logging.DEBUG else "default"
            ctx.log_verbosity.update(dict.fromkeys(LOG_CATEGORIES, start))

    def on_get(self, req, resp):
        if self.category:
            send_text(resp, self.ctx.log_verbosity[self.category])
        else:  # the most verbose category, as Orthanc 1.10.1
            send_text(resp, max(self.ctx.log_verbosity.values(), key=list(LOG_VERBOSITY).index))

    def on_put(self, req, resp):
        value = read_body(req).decode("utf-8", "replace").strip()
        if value not in LOG_VERBOSITY:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                               f'Verbosity can be "default", "verbose" or "trace": {value}')
        with _LOG_LEVEL_LOCK:  # the recorded verbosity and the loggers' levels change together
            for category in ([self.category] if self.category else list(LOG_CATEGORIES)):
                self.ctx.log_verbosity[category] = value
                for name in LOG_CATEGORIES[category]:
                    logging.getLogger(name).setLevel(LOG_VERBOSITY[value])
        send_text(resp, "")


#: ``GET /tools``: the tool names Orthanc 1.10.1 lists (whether or not a plugin provides them).
TOOLS = ["accepted-transfer-syntaxes", "bulk-anonymize", "bulk-content", "bulk-delete", "bulk-modify",
         "create-archive", "create-dicom", "create-media", "create-media-extended", "default-encoding",
         "dicom-conformance", "dicom-echo", "execute-script", "find", "generate-uid", "invalidate-tags",
         "log-level", "log-level-dicom", "log-level-generic", "log-level-http", "log-level-jobs", "log-level-lua",
         "log-level-plugins", "log-level-sqlite", "lookup", "metrics", "metrics-prometheus", "now", "now-local",
         "reconstruct", "reset", "shutdown", "unknown-sop-class-accepted"]


class ExecuteScriptDisabledRoute:
    """``POST /tools/execute-script`` without a scripting plugin: 403 with an empty body, as
    Orthanc 1.10.1 answers when ``ExecuteLuaEnabled`` is false (the Lua plugin replaces it)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        resp.status = 403
        resp.content_type = None
        resp.data = b""


def _openapi_resource(ctx):
    from ..routing.openapi import OpenApiRoute
    return OpenApiRoute(ctx)


class ResetRoute:
    """``POST /tools/reset``: Orthanc's hot restart. Answers ``{}``, then ``pacsbox serve``
    stops the app (jobs saved, index closed) and serves again in the same process with the
    configuration read anew. An app not run by ``pacsbox serve`` (embedded, tests) has no
    restart: it answers ``{}`` and logs a warning."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        restart = getattr(self.ctx, "request_restart", None)
        send_json(resp, {}, content_type="application/json")
        if restart is None:
            log.warning("POST /tools/reset: this app was not started by 'pacsbox serve', nothing to restart")
            return
        timer = threading.Timer(0.1, restart)  # once this answer is written
        timer.daemon = True
        timer.start()


class ToolsRoute:
    """``GET /tools``: the list of tools."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        send_json(resp, TOOLS)


def routes(ctx) -> list[RouteSpec]:
    """Route declarations of this module."""
    return [
        RouteSpec("/system", SystemRoute),
        RouteSpec("/statistics", StatisticsRoute),
        RouteSpec("/changes", ChangesRoute),
        RouteSpec("/exports", ExportsRoute),
        RouteSpec("/tools", ToolsRoute),
        RouteSpec("/tools/find", FindRoute),
        RouteSpec("/tools/count-resources", CountResourcesRoute),
        RouteSpec("/tools/reset", ResetRoute),
        RouteSpec("/tools/openapi.json", _openapi_resource),
        RouteSpec("/tools/lookup", LookupRoute),
        RouteSpec("/tools/generate-uid", GenerateUidRoute),
        RouteSpec("/tools/now", NowRoute),
        RouteSpec("/tools/now-local", lambda c: NowRoute(c, True)),
        RouteSpec("/tools/default-encoding", DefaultEncodingRoute),
        RouteSpec("/tools/log-level", LogLevelRoute),
        RouteSpec("/tools/execute-script", ExecuteScriptDisabledRoute, fallback=True),
    ] + [RouteSpec(f"/tools/log-level-{category}", lambda c, k=category: LogLevelRoute(c, k))
         for category in LOG_CATEGORIES]
