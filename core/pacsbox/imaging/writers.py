"""The files the image routes answer: PNG and JPEG images (Pillow), PAM images as
Orthanc's ``PamWriter``, ``.npy``/``.npz`` arrays as its ``NumpyWriter`` and Octave/Matlab
text as its ``ImageAccessor::ToMatlabString`` write them.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from .attributes import rescale_parameters
from .errors import DecodeError, IncompatibleImages, require_numpy

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["encode_png", "encode_jpeg", "encode_pam", "numpy_header", "numpy_frame", "numpy_file", "matlab_text"]


def encode_png(image: "np.ndarray", compress_level: int = 1) -> bytes:
    """PNG of an 8-bit grayscale, 16-bit grayscale or RGB image (Pillow).

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` uint8, uint16 or int16 (written as its 16-bit two's complement, as the
        reference), or ``(H, W, 3)`` uint8.
    compress_level : int
        zlib level, 0-9 (1: fast, the pixels are the same at any level).

    Returns
    -------
    bytes
    """
    np = require_numpy()
    from PIL import Image
    if image.ndim == 3:
        pil = Image.fromarray(np.ascontiguousarray(image, np.uint8), "RGB")
    elif image.dtype == np.uint8:
        pil = Image.fromarray(image, "L")
    else:
        u16 = np.ascontiguousarray(image.astype(np.uint16) if image.dtype != np.uint16 else image)
        pil = Image.frombuffer("I;16", (u16.shape[1], u16.shape[0]), u16.tobytes(), "raw", "I;16", 0, 1)
    buf = io.BytesIO()
    pil.save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


def encode_jpeg(image: "np.ndarray", quality: int = 90) -> bytes:
    """JPEG of an 8-bit grayscale or RGB image (Pillow).

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, 3)`` uint8.
    quality : int
        1-100.

    Returns
    -------
    bytes
    """
    from PIL import Image
    pil = Image.fromarray(image, "RGB" if image.ndim == 3 else "L")
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def encode_pam(image: "np.ndarray") -> bytes:
    """PAM (Portable Arbitrary Map) of an image, as Orthanc's ``PamWriter`` (16-bit
    samples big endian).

    Returns
    -------
    bytes
    """
    np = require_numpy()
    h, w = image.shape[:2]
    depth = 3 if image.ndim == 3 else 1
    if image.dtype == np.uint8:
        maxval, body = 255, image.tobytes()
    else:
        maxval, body = 65535, image.astype(">u2").tobytes()
    tupltype = "RGB" if depth == 3 else "GRAYSCALE"
    head = f"P7\nWIDTH {w}\nHEIGHT {h}\nDEPTH {depth}\nMAXVAL {maxval}\nTUPLTYPE {tupltype}\nENDHDR\n"
    return head.encode("ascii") + body


_NUMPY_DESCR = {"uint8": "u1", "uint16": "u2", "int16": "i2", "float32": "f4"}


def numpy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` version 1.0 header Orthanc's ``NumpyWriter`` writes (padded to 64).

    Parameters
    ----------
    dtype : {"uint8", "uint16", "int16", "float32"}
    shape : tuple of int
        ``(H, W, C)`` or ``(D, H, W, C)``.

    Raises
    ------
    DecodeError
        A dtype the reference cannot write (e.g. uint32).
    """
    if dtype not in _NUMPY_DESCR:
        raise DecodeError(f"numpy export of {dtype} images is not supported")
    dims = ", ".join(str(d) for d in shape[:-3]) + (", " if len(shape) > 3 else "")
    info = (f"{{'descr': '<{_NUMPY_DESCR[dtype]}', 'fortran_order': False, 'shape': ("
            f"{dims}{shape[-3]},{shape[-2]},{shape[-1]}), }}")
    minimum = 8 + 2 + len(info) + 1
    length = 64
    while length < minimum:
        length += 64
    zeros = length - minimum
    hl = len(info) + zeros + 1
    return b"\x93NUMPY\x01\x00" + bytes([hl % 256, hl // 256]) + info.encode("ascii") + b" " * zeros + b"\n"


def numpy_frame(ds: Dataset, frame: "np.ndarray", index: int, rescale: bool) -> "np.ndarray":
    """One frame as the numpy routes write it: ``(H, W, C)``, float32 after the modality
    transform when ``rescale`` and grayscale (``floor(slope * v + intercept)``, as the
    reference), else the decoded dtype.

    Returns
    -------
    numpy.ndarray
    """
    np = require_numpy()
    if frame.ndim == 2:
        if rescale:
            intercept, slope = rescale_parameters(ds, index)
            v = frame.astype(np.float32) * np.float32(slope) + np.float32(intercept)
            frame = np.floor(v)
        return frame[:, :, None]
    if frame.dtype != np.uint8:
        raise DecodeError("numpy export of 16-bit colour images is not supported")
    return frame


def numpy_file(frames, count: int | None, rescale: bool = True, compress: bool = False) -> bytes:
    """An ``.npy`` file (or ``.npz`` with ``compress``) of frames, as Orthanc writes it.

    Parameters
    ----------
    frames : iterable of (Dataset, numpy.ndarray, int)
        ``(dataset, decoded frame, frame index)``, decoded lazily one at a time.
    count : int or None
        Number of frames for a 4-D ``(count, H, W, C)`` array; None for one frame and a
        3-D ``(H, W, C)`` array.
    rescale : bool
        Apply the modality transform to grayscale frames (float32 output).
    compress : bool
        A ZIP (``.npz``) holding ``arr_0.npy``... named ``arr_0`` as Orthanc does.

    Returns
    -------
    bytes

    Raises
    ------
    OrthancIncompatible
        Frames of different sizes (:class:`ValueError` with ``"size"``) or formats.
    """
    chunks: list[bytes] = []
    first = None
    n = 0
    for ds, frame, index in frames:
        arr = numpy_frame(ds, frame, index, rescale)
        if first is None:
            first = (arr.shape, arr.dtype)
        elif arr.shape != first[0]:
            raise IncompatibleImages("size", "The size of the frames varies across the instance(s)")
        elif arr.dtype != first[1]:
            raise IncompatibleImages("format", "The pixel format of the frames varies across the instance(s)")
        chunks.append(arr.tobytes())
        n += 1
    if first is None:
        raise DecodeError("no frame")
    shape = first[0] if count is None else (count,) + first[0]
    body = numpy_header(str(first[1]), shape) + b"".join(chunks)
    if not compress:
        return body
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("arr_0", body)
    return buf.getvalue()


def matlab_text(frame: "np.ndarray") -> str:
    """The Octave/Matlab text Orthanc's ``ImageAccessor::ToMatlabString`` writes.

    Parameters
    ----------
    frame : numpy.ndarray
        A frame from :func:`decode_frame` (grayscale, or RGB uint8).

    Returns
    -------
    str
        ``double([ v v ; v v ])`` for grayscale, ``double(permute(reshape([ ... ], [ 3 H W
        ]), [ 3 2 1 ]))`` for RGB.
    """
    np = require_numpy()
    if frame.ndim == 3:
        if frame.dtype != np.uint8:
            raise DecodeError("Matlab export of 16-bit colour images is not supported")
        h, w = frame.shape[:2]
        rows = [" ".join(map(str, row.tolist())) + " " for row in frame.reshape(h, w * 3)]
        return "double(permute(reshape([ " + "".join(rows) + f"], [ 3 {h} {w} ]), [ 3 2 1 ]))"
    rows = [" ".join(map(str, row.tolist())) + " " for row in frame]
    return "double([ " + "; ".join(rows) + "])"
