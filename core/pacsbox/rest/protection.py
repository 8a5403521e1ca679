"""``GET``/``PUT /patients/{id}/protected``: protection from recycling (``MaximumStorageSize``,
``MaximumPatientCount``; see :class:`pacsbox.index.Quota`)."""
from __future__ import annotations

from ..errors import ErrorCode, OrthancError
from ..routing.registry import RouteSpec
from ..web import read_body, send_text


class ProtectedRoute:
    """``/patients/{id}/protected``: ``"0"`` or ``"1"`` (``text/plain``).

    As Orthanc 1.10.1: an unknown patient is 400 ``ParameterOutOfRange``; a PUT body is
    ``0``, ``1``, ``false`` or ``true`` (surrounding spaces allowed), anything else 400
    "Boolean value expected"; the PUT answers an empty ``text/plain`` body.
    """

    def __init__(self, ctx):
        self.ctx = ctx

    def _patient(self, id):
        res = self.ctx.resources.find(id, 0)
        if res is None:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE)
        return res

    def on_get(self, req, resp, id):
        send_text(resp, "1" if self.ctx.index.is_protected(self._patient(id).internal_id) else "0")

    def on_put(self, req, resp, id):
        text = read_body(req).decode("utf-8", "replace").strip()
        if text in ("1", "true"):
            value = True
        elif text in ("0", "false"):
            value = False
        else:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Boolean value expected")
        self.ctx.index.set_protected(self._patient(id).internal_id, value)
        send_text(resp, "")


def routes(ctx) -> list[RouteSpec]:
    """``/patients/{id}/protected``."""
    return [RouteSpec("/patients/{id}/protected", ProtectedRoute)]
