"""The 8-bit images of the ``preview``, ``rendered`` and ``image-*`` routes: Orthanc's
``ImageProcessing`` (min-max stretch, modality transform and VOI window, clipping, 5x5
Gaussian smoothing, nearest-neighbour resize), in float32 like the reference.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import DecodeError, require_numpy

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["preview", "truncate", "target_size", "render"]


def preview(frame: "np.ndarray", invert: bool = False) -> "np.ndarray":
    """The ``preview`` image: grayscale stretched from its minimum to its maximum.

    Parameters
    ----------
    frame : numpy.ndarray
        A frame from :func:`decode_frame`.
    invert : bool
        Invert the result (MONOCHROME1), ``255 - v``.

    Returns
    -------
    numpy.ndarray
        uint8, ``(H, W)``: ``round(255 * (v - min) / (max - min))`` computed in float32
        as the reference (all 0 when the frame is flat); ``(H, W, 3)`` colour frames pass
        through (16-bit colour is shifted to 8 bits).
    """
    np = require_numpy()
    if frame.ndim == 3:
        if frame.dtype == np.uint8:
            return frame
        return (frame >> 8).astype(np.uint8)
    lo, hi = int(frame.min()), int(frame.max())
    if lo == hi:
        out = np.zeros(frame.shape, np.uint8)
    else:
        a = np.float32(255.0 / float(hi - lo))  # Orthanc: float scaling, b = offset * scaling
        b = np.float32(np.float32(-lo) * a)
        v = frame.astype(np.float32) * a + b
        out = np.clip(np.floor(v + np.float32(0.5)), 0, 255).astype(np.uint8)
    if invert:
        out = 255 - out
    return out


_TRUNCATE = {"uint8": (0, 255), "uint16": (0, 65535), "int16": (-32768, 32767)}


def truncate(frame: "np.ndarray", dtype: str) -> "np.ndarray":
    """The ``image-uint8``/``image-uint16``/``image-int16`` image: stored values clipped.

    Parameters
    ----------
    frame : numpy.ndarray
        A grayscale frame from :func:`decode_frame`.
    dtype : {"uint8", "uint16", "int16"}

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` of ``dtype``.

    Raises
    ------
    DecodeError
        ``frame`` is colour (the reference refuses a colour/grayscale conversion).
    """
    np = require_numpy()
    if frame.ndim == 3:
        raise DecodeError("cannot convert a colour image to grayscale")
    lo, hi = _TRUNCATE[dtype]
    if frame.dtype == np.dtype(dtype):
        return frame
    return np.clip(frame, lo, hi).astype(dtype)


def _resize_nearest(np, img, width: int, height: int):
    """Orthanc's ``ImageProcessing::Resize`` (nearest neighbour, pixel centres)."""
    sh, sw = img.shape[:2]
    sx = np.float32(sw) / np.float32(width)
    sy = np.float32(sh) / np.float32(height)
    xs = np.clip(np.floor((np.arange(width, dtype=np.float32) + np.float32(0.5)) * sx).astype(np.int64), 0, sw - 1)
    ys = np.clip(np.floor((np.arange(height, dtype=np.float32) + np.float32(0.5)) * sy).astype(np.int64), 0, sh - 1)
    return img[ys][:, xs]


def _smooth(np, img):
    """A separable 5x5 Gaussian (1 4 6 4 1)/16, edges replicated, truncated as Orthanc's
    ``SmoothGaussian5x5(image, false)``."""
    k = np.array([1, 4, 6, 4, 1], np.float32) / np.float32(16)
    f = img.astype(np.float32)
    pad = [(2, 2), (0, 0)] + ([(0, 0)] if f.ndim == 3 else [])
    g = np.pad(f, pad, mode="edge")
    f = sum(k[i] * g[i:i + f.shape[0]] for i in range(5))
    pad = [(0, 0), (2, 2)] + ([(0, 0)] if f.ndim == 3 else [])
    g = np.pad(f, pad, mode="edge")
    f = sum(k[i] * g[:, i:i + f.shape[1]] for i in range(5))
    return np.clip(f, 0, 255).astype(np.uint8)


def target_size(width: int, height: int, arg_width: int = 0, arg_height: int = 0) -> tuple[int, int]:
    """The size of a ``rendered`` image: the ratio of the given width and/or height,
    keeping the aspect ratio (the smaller ratio when both are given).

    Returns
    -------
    (int, int)
        ``(width, height)`` in pixels.
    """
    if width == 0 or height == 0:
        return width, height
    import numpy as np
    ratio = np.float32(1)
    if arg_width and arg_height:
        ratio = min(np.float32(arg_width) / np.float32(width), np.float32(arg_height) / np.float32(height))
    elif arg_width:
        ratio = np.float32(arg_width) / np.float32(width)
    elif arg_height:
        ratio = np.float32(arg_height) / np.float32(height)
    return _iround(ratio * np.float32(width)), _iround(ratio * np.float32(height))


def _iround(x: float) -> int:
    import math
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def render(frame: "np.ndarray", *, intercept: float = 0.0, slope: float = 1.0, center: float | None = None,
           width: float | None = None, invert: bool = False, out_width: int = 0, out_height: int = 0,
           smooth: bool = False) -> "np.ndarray":
    """The ``rendered`` image: modality transform, VOI window, then resize.

    Parameters
    ----------
    frame : numpy.ndarray
        A frame from :func:`decode_frame`.
    intercept, slope : float
        Modality transform (:func:`rescale_parameters`).
    center, width : float
        VOI window in modality units (:func:`default_window`); a width below 1 counts as 1.
    invert : bool
        MONOCHROME1: ``255 - v`` after windowing.
    out_width, out_height : int
        Requested size in pixels (0: keep); see :func:`target_size`.
    smooth : bool
        Smooth (5x5 Gaussian) before a reduction.

    Returns
    -------
    numpy.ndarray
        uint8 ``(h, w)``, or ``(h, w, 3)`` for colour frames (no windowing).
    """
    np = require_numpy()
    h, w = frame.shape[:2]
    tw, th = target_size(w, h, out_width, out_height)
    if frame.ndim == 3:
        img = preview(frame)
    else:
        ww = 1.0 if width is None or width <= 1.0 else width
        wc = 0.0 if center is None else center
        s = slope if abs(slope) > 0.0001 else 0.0001
        scaling = np.float32(255.0 * s / ww)
        offset = np.float32((intercept - wc + ww / 2.0) / s)
        a, b = scaling, np.float32(offset * scaling)
        v = frame.astype(np.float32) * a + b
        img = np.clip(np.floor(v), 0, 255).astype(np.uint8)
    if (tw, th) != (w, h):
        if smooth and (tw < w or th < h):
            img = _smooth(np, img)
        img = _resize_nearest(np, img, tw, th) if tw and th else np.zeros((th, tw) + img.shape[2:], np.uint8)
    if invert and img.ndim == 2:
        img = 255 - img
    return img

