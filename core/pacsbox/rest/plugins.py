"""Default plugin: ``GET /plugins``, ``GET /plugins/{id}`` and ``GET /plugins/explorer.js``.

Wire behaviour of Orthanc 1.10.1 (``OrthancRestSystem.cpp``: ``ListPlugins``,
``GetPlugin``, ``GetOrthancExplorerPlugins``), checked against the reference binary:

- ``GET /plugins`` answers a JSON array that always starts with ``"explorer.js"``, then the
  IDs of the loaded plugins, sorted (here: the entry-point names).
- ``GET /plugins/{id}`` answers ``ID``, ``Version``, ``Description`` and
  ``ExtendsOrthancExplorer`` (always false here). pacsbox adds ``Distribution``,
  ``Module``, ``Routes``, ``JobTypes`` and ``Metrics`` (what ``pacsbox plugins`` prints).
  An unknown ID answers 404 with an empty body.
- ``GET /plugins/explorer.js`` answers ``application/javascript``: the header comment
  Orthanc writes before the (here absent) Orthanc Explorer extensions.
- Other verbs answer 405 with ``Allow: GET`` (the core's error handler).
"""
from __future__ import annotations

from ..errors import not_found
from ..hookspecs import hookimpl
from ..plugins import list_plugins
from ..routing.registry import RouteSpec
from ..web import send_json, send_text


#: Orthanc's pseudo-plugin listed first by ``GET /plugins``.
EXPLORER_JS = "explorer.js"

_EXPLORER_HEADER = "// Extensions to Orthanc Explorer by the registered plugins\n\n"


def plugin_details(ctx, plugin_id: str) -> dict | None:
    """The ``GET /plugins/{id}`` answer for a loaded entry-point plugin, or None.

    Parameters
    ----------
    ctx : ServerContext
    plugin_id : str
        Entry-point name (``"archive"``).

    Returns
    -------
    dict or None
        ``ID``, ``Version``, ``Description``, ``ExtendsOrthancExplorer`` (Orthanc's
        fields), and ``Distribution``, ``Module``, ``Routes`` (URI templates),
        ``JobTypes`` (``Type`` names) and ``Metrics`` (metric names) declared by the
        plugin.
    """
    for p in list_plugins(ctx.pm):
        if p["ID"] == plugin_id:
            out = dict(p)
            out["ExtendsOrthancExplorer"] = False
            out["Routes"] = sorted(ctx.routes.by_plugin().get(plugin_id, []))
            out["JobTypes"] = sorted(ctx.job_types.by_plugin().get(plugin_id, []))
            out["Metrics"] = sorted(s.name for s in ctx.metrics.specs() if s.plugin == plugin_id)
            return out
    return None


class PluginsRoute:
    """``GET /plugins`` and ``GET /plugins/{id}`` (reference: Orthanc ``ListPlugins``/``GetPlugin``)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        send_json(resp, [EXPLORER_JS] + [p["ID"] for p in list_plugins(self.ctx.pm)])

    def on_get_one(self, req, resp, id):
        details = plugin_details(self.ctx, id)
        if details is None:
            raise not_found()
        send_json(resp, details)


class ExplorerJsRoute:
    """``GET /plugins/explorer.js``: Orthanc Explorer extensions (none in pacsbox)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        send_text(resp, _EXPLORER_HEADER, content_type="application/javascript")


@hookimpl(trylast=True)
def register_routes(ctx):
    """The ``/plugins`` routes."""
    return [
        RouteSpec("/plugins", PluginsRoute),
        RouteSpec("/plugins/{id}", PluginsRoute, suffix="one"),
        RouteSpec("/plugins/explorer.js", ExplorerJsRoute),
    ]
