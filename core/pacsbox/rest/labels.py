"""Labels (Orthanc 1.12): ``/{level}/{id}/labels[/{label}]`` and ``GET /tools/labels``.

Labels are stored in the index (table ``labels``, portable to PostgreSQL) and removed with
their resource. As in Orthanc 1.12:

- ``GET /{level}/{id}/labels``: the resource's labels, sorted;
- ``GET /{level}/{id}/labels/{label}``: an empty ``text/plain`` 200 when the resource has
  the label, an empty 404 otherwise;
- ``PUT`` and ``DELETE /{level}/{id}/labels/{label}``: add or remove it (an empty
  ``text/plain`` answer; removing an absent label is no error);
- ``GET /tools/labels``: every label in use, sorted.

A label is 1 to 64 characters among ASCII letters, digits, ``_`` and ``-``; any other is
400 ``ParameterOutOfRange``.
"""
from __future__ import annotations

import re

from ..errors import ErrorCode, OrthancError, not_found
from ..index.index import PLURAL, ResourceGoneError
from ..routing.registry import RouteSpec
from ..web import send_json, send_text

_LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_label(label: str) -> str:
    """``label`` when it is a valid label.

    Raises
    ------
    OrthancError
        400 ``PARAMETER_OUT_OF_RANGE`` with Orthanc's details.
    """
    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                           "A label must be a non-empty, alphanumeric string, possibly containing '_' and '-' "
                           f"characters, got: {label}")
    return label


class LabelsRoute:
    """``/{level}/{id}/labels`` and ``/{level}/{id}/labels/{label}``."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        send_json(resp, self.ctx.index.labels(res.internal_id))

    def on_get_one(self, req, resp, id, label):
        res = self.ctx.resources.get(self.level, id)
        if label not in self.ctx.index.labels(res.internal_id):
            raise not_found()
        send_text(resp, "")

    def on_put_one(self, req, resp, id, label):
        check_label(label)
        res = self.ctx.resources.get(self.level, id)
        try:
            self.ctx.index.add_label(res.internal_id, label, res.public_id)
        except ResourceGoneError:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE) from None
        send_text(resp, "")

    def on_delete_one(self, req, resp, id, label):
        check_label(label)
        res = self.ctx.resources.get(self.level, id)
        self.ctx.index.remove_label(res.internal_id, label)
        send_text(resp, "")


class AllLabelsRoute:
    """``GET /tools/labels``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        send_json(resp, self.ctx.index.all_labels())


def routes(ctx) -> list[RouteSpec]:
    """The label routes of the four levels and ``/tools/labels``."""
    out = [RouteSpec("/tools/labels", AllLabelsRoute)]
    for level, plural in enumerate(PLURAL):
        out.append(RouteSpec(f"/{plural}/{{id}}/labels", lambda c, l=level: LabelsRoute(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}/labels/{{label}}", lambda c, l=level: LabelsRoute(c, l),
                             suffix="one"))
    return out
