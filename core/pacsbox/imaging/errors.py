"""The errors of :mod:`pacsbox.imaging`, and the check that numpy is installed.

:class:`ImagingUnavailable` (numpy or a codec is missing) is what the REST routes turn into
the reference's "unsupported" answer; :class:`DecodeError`, :class:`FrameOutOfRange` and
:class:`IncompatibleImages` are the refusals of a decoding or an export.
"""
from __future__ import annotations

__all__ = ["ImagingUnavailable", "DecodeError", "FrameOutOfRange", "IncompatibleImages", "available",
           "require_numpy"]


class ImagingUnavailable(RuntimeError):
    """numpy (or the codec a transfer syntax needs) is not installed: install the
    ``transcode`` extra (``pip install pacsbox[transcode]``)."""


class DecodeError(ValueError):
    """The pixel data cannot be decoded (no pixel data, unsupported format, corrupt
    stream)."""


class FrameOutOfRange(IndexError):
    """A frame index outside ``[0, NumberOfFrames)``."""


def available() -> bool:
    """Whether numpy is importable (the decoders of native data need nothing else).

    Returns
    -------
    bool
    """
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def require_numpy():
    """The numpy module, imported on first use.

    Returns
    -------
    module
        ``numpy``.

    Raises
    ------
    ImagingUnavailable
        numpy is not installed.
    """
    try:
        import numpy
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImagingUnavailable("numpy is not installed (pip install pacsbox[transcode])") from None
    return numpy


class IncompatibleImages(ValueError):
    """Frames of a numpy export differ in size or pixel format.

    Attributes
    ----------
    what : {"size", "format"}
    """

    def __init__(self, what: str, message: str):
        super().__init__(message)
        self.what = what
