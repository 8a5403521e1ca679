"""HTTP middleware applied to every route, plugin routes included.

In order: HTTP method faking (``X-HTTP-Method-Override``, ``?_method=``) and the
collapsing of empty path components (``//``), as Orthanc's embedded server; the remote-access check (``RemoteAccessAllowed``), HTTP Basic authentication
(``AuthenticationEnabled``, ``RegisteredUsers``), the ``filter_incoming_http_request``
veto hook, the refusal of methods other than GET, POST, PUT and DELETE, and the REST
metrics (``orthanc_rest_api_active_requests``, ``orthanc_rest_api_duration_ms`` and the
``pacsbox_rest_api_request_duration_seconds`` histogram). Source: reference section 12.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from typing import Any

import falcon

log = logging.getLogger("pacsbox.http")

_REALM = {"WWW-Authenticate": 'Basic realm="Orthanc Secure Area"'}

#: The HTTP methods of Orthanc's REST API; any other gets an empty answer before routing.
_ORTHANC_METHODS = frozenset(("GET", "POST", "PUT", "DELETE"))
#: The WebDAV methods, taken on ``/webdav`` only (``pacsbox.rest.webdav``).
_WEBDAV_METHODS = frozenset(("PROPFIND", "OPTIONS", "LOCK", "UNLOCK", "MKCOL", "MOVE", "COPY", "PROPPATCH"))


def _fake_method(req: falcon.Request) -> str | None:
    """The method a request fakes, as Orthanc 1.10.1's ``ExtractMethod`` reads it.

    The ``X-HTTP-Method-Override`` header on a request of any method (Google's way), else,
    on a GET, the query argument ``_method`` (Ruby on Rails' way); case-insensitive.

    Returns
    -------
    str or None
        ``"PUT"`` or ``"DELETE"``; ``""`` for an override naming another method (Orthanc
        answers 400 with an empty body); None without an override.
    """
    value = req.env.get("HTTP_X_HTTP_METHOD_OVERRIDE")
    if value is None:
        if req.method != "GET" or "_method" not in req.env.get("QUERY_STRING", ""):
            return None
        value = req.params.get("_method")
        if isinstance(value, list):
            value = value[0]
    if not value:
        return None
    value = value.upper()
    return value if value in ("PUT", "DELETE") else ""


class SecurityMiddleware:
    """Remote access, authentication and request filters.

    Parameters
    ----------
    ctx : ServerContext
    """

    def __init__(self, ctx: Any) -> None:
        cfg = ctx.config
        self.ctx = ctx
        self.remote_allowed = cfg.bool("RemoteAccessAllowed")
        self.auth = cfg.authentication_enabled
        users = dict(cfg.get("RegisteredUsers") or {})
        if self.auth and not users and self.remote_allowed and not cfg.is_set("AuthenticationEnabled"):
            log.warning("Remote access is enabled without registered users: creating the default user "
                        "orthanc/orthanc. Your setup is INSECURE")
            users = {"orthanc": "orthanc"}
            ctx.insecure = True
        if self.remote_allowed and not self.auth:
            log.warning("Remote access is allowed without authentication: POSSIBLY INSECURE")
            ctx.insecure = True
        self.users = {str(k): str(v) for k, v in users.items()}
        self._accepted: dict[str, str] = {}
        self.has_filters = False

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Apply a faked method and collapse ``//`` in the path; refuse with 401 (empty body,
        ``WWW-Authenticate``) or 403 before routing; answer HEAD and OPTIONS with an empty
        404 and other unknown methods (or a faked one other than PUT and DELETE) with an
        empty 400."""
        path = req.path
        if "//" in path or (path[-1:] == "/" and len(path) > 1):
            # Orthanc splits the URI on "/" and skips empty components (falcon has already
            # stripped one trailing slash)
            req.path = "/" + "/".join(p for p in path.split("/") if p)
        if "HTTP_X_HTTP_METHOD_OVERRIDE" in req.env or req.method == "GET":
            fake = _fake_method(req)
            if fake is not None:
                req.method = fake or "INVALID-OVERRIDE"
        if req.env.get("pacsbox.internal_origin"):  # pacsbox.call_rest_api: not filtered, as Orthanc
            req.context.username = None
            return
        if not self.remote_allowed:
            addr = req.remote_addr
            if addr != "127.0.0.1" and addr != "::1" and addr != "::ffff:127.0.0.1":
                raise falcon.HTTPUnauthorized(headers=_REALM)
        username = None
        if self.auth:
            header = req.get_header("Authorization")
            if not header:
                raise falcon.HTTPUnauthorized(headers=_REALM)
            username = self._accepted.get(header)
            if username is None:
                username = self._check(header)
                if username is None:
                    raise falcon.HTTPUnauthorized(headers=_REALM)
                if len(self._accepted) < 1024:
                    self._accepted[header] = username
        req.context.username = username
        if self.has_filters and not self.ctx.pm.call("filter_incoming_http_request", {
                "method": req.method, "uri": req.path, "ip": req.remote_addr or "", "username": username,
                "headers": {k.lower(): v for k, v in req.headers.items()}}):
            raise falcon.HTTPForbidden()  # refused, or a filter raised (logged: fails closed)
        if req.method not in _ORTHANC_METHODS and not (req.method in _WEBDAV_METHODS and req.path[:7] == "/webdav"):
            # as Orthanc 1.10.1 on any path: HEAD and OPTIONS are unknown resources (404),
            # any other method a bad request (400); both with an empty body
            resp.status = 404 if req.method in ("HEAD", "OPTIONS") else 400
            resp.content_type = None
            resp.data = b""
            resp.complete = True

    def _check(self, header: str) -> str | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if user in self.users and self.users[user] == password:
            return user
        return None


class MetricsMiddleware:
    """Records REST request metrics into ``ctx.metrics`` (a few microseconds per request)."""

    def __init__(self, ctx: Any) -> None:
        self.metrics = ctx.metrics
        self._active = 0
        self._lock = threading.Lock()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Count the request as active and start its clock."""
        req.context.t0 = time.perf_counter()
        with self._lock:
            self._active += 1
            active = self._active
        self.metrics.set_max("orthanc_rest_api_active_requests", active)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        """Record the duration (max over 10 s, and the per-route histogram)."""
        t0 = getattr(req.context, "t0", None)
        if t0 is None:
            return
        with self._lock:
            self._active -= 1
        dt = time.perf_counter() - t0
        m = self.metrics
        m.set_max("orthanc_rest_api_duration_ms", round(dt * 1000.0, 3))
        m.observe("pacsbox_rest_api_request_duration_seconds", dt,
                  {"method": req.method, "route": req.uri_template or "unmatched"})


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xml_text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return _xml_escape(value if isinstance(value, str) else json.dumps(value))


def _xml_node(out: list[str], name: str, value: Any, depth: int) -> None:
    pad = "  " * depth
    if isinstance(value, dict):
        items = sorted(value.items())
    elif isinstance(value, list):
        items = [("item", v) for v in value]
    else:
        out.append(f"{pad}<{name}>{_xml_text(value)}</{name}>\n")
        return
    if not items:
        out.append(f"{pad}<{name} />\n")
        return
    out.append(f"{pad}<{name}>\n")
    for k, v in items:
        _xml_node(out, k, v, depth + 1)
    out.append(f"{pad}</{name}>\n")


def json_to_xml(value: Any) -> bytes:
    """Orthanc's XML rendering of a JSON answer (``Accept: application/xml``).

    A ``<root>`` element; an array gives one ``<item>`` per element, an object one element
    per key (sorted); ``true``/``false``/``null`` as text; an empty array or object is an
    empty element (``<Exports />``); two-space indentation, as Orthanc's pugixml output.
    """
    out = ['<?xml version="1.0" encoding="utf-8"?>\n']
    _xml_node(out, "root", value, 0)
    return "".join(out).encode("utf-8")


def wants_xml(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for XML as Orthanc 1.10.1 reads it: its media
    type before any ``;`` is exactly ``application/xml`` (``application/xml;q=0.9`` is XML;
    ``text/xml``, a list of types, another case are JSON)."""
    return bool(accept) and accept.split(";", 1)[0].strip() == "application/xml"


class XmlMiddleware:
    """Answers JSON as XML when the client sends ``Accept: application/xml`` (successful
    answers only: errors stay JSON, as in Orthanc 1.10.1). One header lookup per request
    otherwise."""

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        """Convert a JSON answer held in ``resp.data``."""
        accept = req.env.get("HTTP_ACCEPT")
        if not accept or "application/xml" not in accept or not wants_xml(accept):
            return
        ctype = resp.content_type or ""
        status = resp.status if isinstance(resp.status, int) else int(str(resp.status)[:3])
        if not ctype.startswith("application/json") or not 200 <= status < 300:
            return
        data = resp.data
        if data is None:
            return
        try:
            value = json.loads(data)
        except ValueError:
            return
        resp.data = json_to_xml(value)
        resp.content_type = "application/xml; charset=utf-8"
