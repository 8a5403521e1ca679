"""``POST /tools/bulk-content`` and ``POST /tools/bulk-delete`` (Orthanc 1.9.4+, in 1.10.1).

``/tools/bulk-modify`` and ``/tools/bulk-anonymize`` are jobs, in :mod:`pacsbox.builtin.routes`.
"""
from __future__ import annotations

from typing import Any

from ..errors import OrthancError
from ..index.models import Level
from ..routing.registry import RouteSpec
from ..web import NOT_AN_OBJECT_ERROR, read_bool, read_json_object, read_string, read_strings, send_json, send_text
from .resources_api import delete_resource, resource_metadata


def _body_object(req) -> dict[str, Any]:
    """The JSON object of the body (400 "The body must contain a JSON object" otherwise)."""
    return read_json_object(req, allow_empty=False, invalid=NOT_AN_OBJECT_ERROR)


def _level(body: dict[str, Any]) -> int | None:
    """``Level`` of the body (as Orthanc's ``StringToResourceType``), or None when absent."""
    name = read_string(body, "Level")
    return None if name is None else Level.parse(name)


class BulkContentRoute:
    """``POST /tools/bulk-content``: the expanded resources of a list of IDs of any level.

    Body fields: ``Resources`` (list of IDs; unknown ones are skipped), ``Level`` (the
    resources at that level that are the given ones, their descendants or their
    ancestor), ``Metadata`` (default true: a ``Metadata`` object as ``/metadata?expand``),
    ``Short`` (tags keyed ``gggg,eeee``) and ``Full`` (``{Name, Type, Value}``; ``Short``
    wins). As Orthanc 1.10.1: without ``Level`` the resources come in the order given,
    duplicates included; with ``Level``, ordered by ID without duplicates.
    """

    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        body = _body_object(req)
        ids = read_strings(body, "Resources")
        short = read_bool(body, "Short", False)
        full = read_bool(body, "Full", False)
        fmt = "short" if short else "full" if full else "simplify"
        metadata = read_bool(body, "Metadata", True)
        level = _level(body)
        ctx = self.ctx
        index = ctx.index
        found = [r for r in (ctx.resources.find(i) for i in ids) if r is not None]
        if level is not None:
            interest: dict[str, Any] = {}
            for res in found:
                if res.level == level:
                    interest[res.public_id] = res
                elif res.level < level:
                    current = [res]
                    for _ in range(res.level, level):
                        current = [c for p in current for c in index.children(p.internal_id)]
                    for c in current:
                        interest[c.public_id] = c
                else:
                    for anc in index.ancestors(res):
                        if anc.level == level:
                            interest[anc.public_id] = anc
            found = [interest[k] for k in sorted(interest)]
        out = []
        for res in found:
            d = ctx.resources.expand(res, tag_format=fmt)
            if metadata:
                d["Metadata"] = resource_metadata(ctx, res)
            out.append(d)
        send_json(resp, out)


class BulkDeleteRoute:
    """``POST /tools/bulk-delete``: delete every resource of ``Resources`` (any level;
    unknown IDs are skipped), empty parents included; an empty ``text/plain`` answer."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        ids = read_strings(_body_object(req), "Resources")
        for public_id in ids:
            res = self.ctx.resources.find(public_id)
            if res is None:
                continue
            try:
                delete_resource(self.ctx, res)
            except OrthancError as e:  # deleted meanwhile (an ancestor came first)
                if e.http_status != 404:
                    raise
        send_text(resp, "")


def routes(ctx) -> list[RouteSpec]:
    """The bulk routes of the core."""
    return [RouteSpec("/tools/bulk-content", BulkContentRoute),
            RouteSpec("/tools/bulk-delete", BulkDeleteRoute)]
