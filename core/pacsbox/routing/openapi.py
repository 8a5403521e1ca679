"""The OpenAPI 3.1 document of an app, generated from its route registry.

Every mounted :class:`~pacsbox.routing.registry.RouteSpec` gives one path; each of its
responders (``on_get``, ``on_post``... with the route's suffix) gives one operation whose
summary and description come from the responder's docstring, else the resource class's,
tagged with the declaring plugin. Path fields (``{id}``...) are string parameters. Each
operation documents ``200`` and a ``default`` answer (Orthanc's JSON error body); routes
with a body accept any JSON or bytes. The extension ``x-pacsbox-options`` lists the options
the plugins declare (``register_options``). Served as ``GET /tools/openapi.json`` and
printed by ``pacsbox openapi``.
"""
from __future__ import annotations

import inspect
import re
from typing import Any

from ..version import __version__

_FIELD = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
METHODS = ("get", "post", "put", "delete")

ERROR_SCHEMA = {
    "type": "object",
    "description": "Orthanc's error body",
    "properties": {"HttpError": {"type": "string"}, "HttpStatus": {"type": "integer"},
                   "Message": {"type": "string"}, "Method": {"type": "string"},
                   "OrthancError": {"type": "string"}, "OrthancStatus": {"type": "integer"},
                   "Uri": {"type": "string"}, "Details": {"type": "string"}},
}


def _doc(obj: Any) -> tuple[str, str]:
    """(summary, description) of a docstring: its first paragraph and the rest."""
    text = inspect.getdoc(obj) or ""
    if not text:
        return "", ""
    parts = text.split("\n\n", 1)
    summary = " ".join(parts[0].split())
    return summary, (parts[1].strip() if len(parts) > 1 else "")


def operations(resource: Any, suffix: str | None) -> dict[str, Any]:
    """The responders of a resource for a route: method name → bound responder."""
    out = {}
    for m in METHODS:
        name = f"on_{m}_{suffix}" if suffix else f"on_{m}"
        fn = getattr(resource, name, None)
        if callable(fn):
            out[m] = fn
    return out


def openapi_document(ctx: Any) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of the app of ``ctx``.

    Parameters
    ----------
    ctx : ServerContext
        Of an app whose routes are mounted.

    Returns
    -------
    dict
        ``{"openapi": "3.1.0", "info", "paths", "components", "x-pacsbox-options"}``; the
        extension lists every option declared with ``register_options`` (``Name``,
        ``Type``, ``Default``, ``Doc``, ``Plugin``).
    """
    paths: dict[str, dict[str, Any]] = {}
    for spec, resource in getattr(ctx.routes, "mounted", []):
        path = _FIELD.sub(lambda m: "{" + m.group(1) + "}", spec.path)
        fields = _FIELD.findall(spec.path)
        item = paths.setdefault(path, {})
        if fields:
            item["parameters"] = [{"name": f, "in": "path", "required": True, "schema": {"type": "string"}}
                                  for f in fields]
        cls_summary, cls_description = _doc(type(resource))
        for method, fn in operations(resource, spec.suffix).items():
            summary, description = _doc(fn)
            op: dict[str, Any] = {
                "summary": summary or cls_summary or f"{method.upper()} {path}",
                "tags": [spec.plugin or "core"],
                "operationId": f"{method}_{spec.plugin}_{path}".replace("/", "_").replace("{", "").replace("}", ""),
                "responses": {
                    "200": {"description": "Success"},
                    "default": {"description": "An error (Orthanc's JSON error body, or empty)",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                },
            }
            desc = description or (cls_description if not summary else "")
            if desc:
                op["description"] = desc
            if method in ("post", "put"):
                op["requestBody"] = {"required": False, "content": {
                    "application/json": {"schema": {}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
            item[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "pacsbox", "version": __version__,
                 "description": "The REST API of pacsbox (Orthanc 1.10.1's, plus later routes), "
                                "generated from the route registry: every installed plugin's routes."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": {"Error": ERROR_SCHEMA}},
        "x-pacsbox-options": [spec.describe() for spec in ctx.config.option_specs()],
    }


class OpenApiRoute:
    """``GET /tools/openapi.json``: the OpenAPI 3.1 document of this server's routes."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        """The OpenAPI 3.1 document (every plugin's routes)."""
        from ..web import send_json
        send_json(resp, openapi_document(self.ctx))
