"""``GET /series/{id}/ordered-slices`` (deprecated in Orthanc, still used by viewers).

The slices of a series in geometric order, as Orthanc's ``SliceOrdering``: along the
normal of the series' (0020,0037) *Image Orientation (Patient)* when every instance has
an (0020,0032) *Image Position (Patient)* and a parallel (or opposite) orientation and no
two positions coincide (a ``Volume``); else by the ``IndexInSeries`` metadata (a
``Sequence``); else 500 ``CannotOrderSlices``, as Orthanc 1.10.1. Orthanc computes in single precision;
so does this, through :func:`_f32`.
"""
from __future__ import annotations

import math
import struct
from typing import Any, Sequence

from ..errors import ErrorCode, OrthancError
from ..routing.registry import RouteSpec
from ..web import send_json

_F32 = struct.Struct("f")
#: Orthanc's "close to zero": 10 single-precision epsilons.
_EPS = 10.0 * 1.1920928955078125e-07


def _f32(x: float) -> float:
    """``x`` rounded to single precision (C++ ``float``)."""
    return _F32.unpack(_F32.pack(x))[0]


def _vector(text: str | None, size: int) -> list[float] | None:
    """A backslash-separated vector of ``size`` numbers, or None (Orthanc ``TokenizeVector``)."""
    if not text:
        return None
    parts = text.split("\\")
    if len(parts) != size:
        return None
    try:
        out = [_f32(float(p.strip())) for p in parts]
    except (ValueError, OverflowError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _normal(tags: dict[str, str]) -> list[float] | None:
    """Cross product of the row and column cosines of (0020,0037), or None."""
    c = _vector(tags.get("ImageOrientationPatient"), 6)
    if c is None:
        return None
    return [_f32(_f32(c[1] * c[5]) - _f32(c[2] * c[4])), _f32(_f32(c[2] * c[3]) - _f32(c[0] * c[5])),
            _f32(_f32(c[0] * c[4]) - _f32(c[1] * c[3]))]


def _parallel_or_opposite(u: Sequence[float], v: Sequence[float]) -> bool:
    nu = math.sqrt(sum(x * x for x in u))
    nv = math.sqrt(sum(x * x for x in v))
    if abs(nu * nv) < _EPS:
        return False
    cos = sum(a * b for a, b in zip(u, v)) / (nu * nv)
    return abs(cos - 1.0) < _EPS or abs(abs(cos) - 1.0) < _EPS


def _relative(position: Sequence[float], normal: Sequence[float]) -> float:
    return _f32(_f32(_f32(normal[0] * position[0]) + _f32(normal[1] * position[1])) + _f32(normal[2] * position[2]))


def _frames(tags: dict[str, str]) -> int:
    text = (tags.get("NumberOfFrames") or "").strip()
    return int(text) if text.isdigit() and int(text) < 2 ** 32 else 1


def order_slices(index: Any, series: Any) -> dict[str, Any]:
    """The ``ordered-slices`` answer of a series.

    Parameters
    ----------
    index : Index
    series : Resource
        A series.

    Returns
    -------
    dict
        ``{"Type": "Volume"|"Sequence", "Dicom": [...], "Slices": [...], "SlicesShort": [...]}``.

    Raises
    ------
    OrthancError
        500 ``CANNOT_ORDER_SLICES`` when neither the positions nor ``IndexInSeries`` order them.
    """
    normal = _normal(series.main_tags)
    instances = []
    for inst in index.children(series.internal_id):
        tags = inst.main_tags
        raw = index.metadata(inst.internal_id).get("IndexInSeries")
        in_series = int(raw) if raw is not None and raw.isdigit() else None
        instances.append((inst.public_id, _vector(tags.get("ImagePositionPatient"), 3), _normal(tags), in_series,
                          _frames(tags)))
    volume = False
    ordered = None
    if len(instances) <= 1:
        ordered = instances
    elif normal is not None and all(p is not None and (n is None or _parallel_or_opposite(n, normal))
                                    for _, p, n, _, _ in instances):
        by_position = sorted(instances, key=lambda i: _relative(i[1], normal))
        positions = [_relative(i[1], normal) for i in by_position]
        if all(abs(b - a) > _EPS for a, b in zip(positions, positions[1:])):
            ordered, volume = by_position, True
    if ordered is None and all(i[3] is not None for i in instances):
        ordered = sorted(instances, key=lambda i: i[3])
    if ordered is None:
        raise OrthancError(ErrorCode.CANNOT_ORDER_SLICES, f"Unable to order the slices of series {series.public_id}")
    return {"Type": "Volume" if volume else "Sequence",
            "Dicom": [f"/instances/{i[0]}/file" for i in ordered],
            "Slices": [f"/instances/{i[0]}/frames/{f}" for i in ordered for f in range(i[4])],
            "SlicesShort": [[i[0], 0, i[4]] for i in ordered]}


class OrderedSlicesRoute:
    """``GET /series/{id}/ordered-slices``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp, id):
        series = self.ctx.resources.get(2, id)
        send_json(resp, order_slices(self.ctx.index, series))


def routes(ctx) -> list[RouteSpec]:
    """``/series/{id}/ordered-slices``."""
    return [RouteSpec("/series/{id}/ordered-slices", OrderedSlicesRoute)]
