"""Pixel-data encoders for the compressed transfer syntaxes (imagecodecs and pydicom).

:func:`encode_dataset` replaces the native pixel data of a dataset by its encapsulated,
compressed form, updating the image attributes the standard ties to the syntax. The
codecs are imagecodecs' (libjpeg-turbo for JPEG baseline, extended and lossless; CharLS
for JPEG-LS; OpenJPEG for JPEG 2000), which release the GIL so that several instances
are encoded at once by the worker threads of a job, and pydicom's RLE encoder
(pylibjpeg-rle when installed, numpy otherwise).

========================  ======================================  =========================
Transfer Syntax UID       syntax                                  pixel data accepted
========================  ======================================  =========================
1.2.840.10008.1.2.4.50    JPEG baseline (lossy)                   8 bits stored, 1 or 3 samples
1.2.840.10008.1.2.4.51    JPEG extended (lossy)                   8 or 12 bits stored
1.2.840.10008.1.2.4.57    JPEG lossless, process 14               2-16 bits stored
1.2.840.10008.1.2.4.70    JPEG lossless, first-order prediction   2-16 bits stored
1.2.840.10008.1.2.4.80    JPEG-LS lossless                        2-16 bits stored
1.2.840.10008.1.2.4.81    JPEG-LS near-lossless (lossy)           2-16 bits stored
1.2.840.10008.1.2.4.90    JPEG 2000 lossless                      1-16 bits stored
1.2.840.10008.1.2.4.91    JPEG 2000 (lossy)                       1-16 bits stored
1.2.840.10008.1.2.5       RLE lossless                            8/16/32 bits allocated
========================  ======================================  =========================
"""
from __future__ import annotations

import warnings
from typing import Any

from pydicom.dataset import Dataset

__all__ = ["ENCODABLE", "LOSSY", "EncodeError", "can_encode", "check_encodable", "encode_dataset", "encode_frames",
           "native_frames"]

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
RLE = "1.2.840.10008.1.2.5"

#: Targets this module writes.
ENCODABLE = frozenset({JPEG_BASELINE, JPEG_EXTENDED, JPEG_LOSSLESS, JPEG_LOSSLESS_SV1, JPEG_LS_LOSSLESS,
                       JPEG_LS_NEAR, J2K_LOSSLESS, J2K, RLE})
#: The lossy ones, with (0028,2114) *Lossy Image Compression Method*.
LOSSY = {JPEG_BASELINE: "ISO_10918_1", JPEG_EXTENDED: "ISO_10918_1", JPEG_LS_NEAR: "ISO_14495_1",
         J2K: "ISO_15444_1"}


class EncodeError(ValueError):
    """The pixel data cannot be written in the target syntax (bit depth, codec missing)."""


def can_encode(target: str) -> bool:
    """Whether ``target`` is a syntax this module writes and its codec is installed.

    Returns
    -------
    bool
    """
    if target not in ENCODABLE:
        return False
    if target == RLE:
        return True
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


def _frames(ds: Dataset):
    """The native frames as arrays ``(rows, cols)`` or ``(rows, cols, samples)``, stored
    values unchanged (no colour conversion)."""
    import numpy as np
    from pydicom.pixels import pixel_array
    n = max(1, int(ds.get("NumberOfFrames", 1) or 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = pixel_array(ds, raw=True)
    if n == 1:
        arr = arr[None, ...]
    return [np.ascontiguousarray(a) for a in arr]


def _unsigned(frame, bits_stored: int):
    """Signed values as their ``bits_stored``-bit two's complement patterns (how JPEG
    lossless and JPEG-LS carry signed DICOM data)."""
    import numpy as np
    if frame.dtype.kind != "i":
        return frame
    u = frame.astype(np.int64) & ((1 << bits_stored) - 1)
    return u.astype(np.uint16 if bits_stored > 8 else np.uint8)


def _encode_frame(target: str, frame, bits_stored: int, signed: bool, quality: int) -> bytes:
    import imagecodecs
    import numpy as np
    if target in (JPEG_BASELINE, JPEG_EXTENDED):
        if target == JPEG_BASELINE and bits_stored > 8:
            raise EncodeError("JPEG baseline needs 8-bit pixel data")
        if bits_stored > 12 or signed:
            raise EncodeError("JPEG extended needs unsigned pixel data of at most 12 bits")
        bits = 8 if bits_stored <= 8 else 12
        data = frame.astype(np.uint8 if bits == 8 else np.uint16)
        kw: dict[str, Any] = {"bitspersample": bits}
        if data.ndim == 3:
            kw.update(colorspace="RGB", outcolorspace="YCBCR", subsampling="422")
        return bytes(imagecodecs.jpeg8_encode(data, level=quality, **kw))
    if target in (JPEG_LOSSLESS, JPEG_LOSSLESS_SV1):
        if bits_stored > 16:
            raise EncodeError("JPEG lossless needs at most 16 bits")
        data = _unsigned(frame, bits_stored)
        bits = max(2, bits_stored)
        data = data.astype(np.uint8 if bits <= 8 else np.uint16)
        kw = {"colorspace": "RGB", "outcolorspace": "RGB"} if data.ndim == 3 else {}
        return bytes(imagecodecs.jpeg8_encode(data, lossless=True, predictor=1, bitspersample=bits, **kw))
    if target in (JPEG_LS_LOSSLESS, JPEG_LS_NEAR):
        if bits_stored > 16:
            raise EncodeError("JPEG-LS needs at most 16 bits")
        if signed:
            # imagecodecs writes the container's precision (P 8 or 16), not BitsStored, so
            # masked two's complement patterns would not be sign-extended by decoders (PS3.5
            # 8.2.3); the sign-extended pattern decodes to the value whatever they do with it
            data = frame.astype(np.int8 if bits_stored <= 8 and frame.itemsize == 1 else np.int16)
            data = data.view(np.uint8 if data.itemsize == 1 else np.uint16)
        else:
            data = frame.astype(np.uint8 if bits_stored <= 8 else np.uint16)
        return bytes(imagecodecs.jpegls_encode(data, level=0 if target == JPEG_LS_LOSSLESS else 2))
    if target in (J2K_LOSSLESS, J2K):
        if bits_stored > 16:
            raise EncodeError("JPEG 2000 needs at most 16 bits")
        if frame.dtype.itemsize > 2:
            frame = frame.astype(np.int16 if signed else np.uint16)
        lossless = target == J2K_LOSSLESS
        # lossy: the level is a PSNR in dB; quality 90 -> 48 dB, 50 -> 40 dB
        # lossy: the level is a PSNR in dB, 48 dB at quality 90 for 8-bit data, +6 dB a bit
        level = None if lossless else 30 + quality / 5 + 6.02 * (bits_stored - 8)
        return bytes(imagecodecs.jpeg2k_encode(frame, level=level, codecformat="J2K", reversible=lossless,
                                               mct=False, bitspersample=bits_stored))
    raise EncodeError(f"no encoder for {target}")


def native_frames(buffer, *, rows: int, columns: int, samples: int = 1, frames: int = 1,
                  bits_allocated: int = 16, bits_stored: int | None = None, signed: bool = False) -> list:
    """The frames of native little-endian pixel data, as pydicom's
    ``pixel_array(ds, raw=True)`` gives them, without a pydicom dataset.

    Unsigned values are masked to ``bits_stored`` and signed ones sign-extended from it
    (PS3.5 section 8.1.1); the arrays are views of ``buffer`` when nothing needs masking.

    Parameters
    ----------
    buffer : bytes-like
        The value of (7FE0,0010) *Pixel Data* (a trailing pad byte is allowed).
    rows, columns, samples, frames : int
        (0028,0010), (0028,0011), (0028,0002), (0028,0008).
    bits_allocated : int
        8 or 16 (0028,0100).
    bits_stored : int, optional
        (0028,0101), ``bits_allocated`` by default.
    signed : bool
        (0028,0103) *Pixel Representation* 1.

    Returns
    -------
    list of numpy.ndarray
        ``frames`` arrays ``(rows, columns)`` or ``(rows, columns, samples)`` (colour by
        pixel, planar configuration 0).

    Raises
    ------
    EncodeError
        Another bit depth, or a buffer shorter than the attributes announce.
    """
    import numpy as np
    if bits_allocated not in (8, 16):
        raise EncodeError(f"{bits_allocated} bits allocated")
    bits_stored = bits_allocated if not bits_stored or bits_stored > bits_allocated else bits_stored
    size = bits_allocated // 8
    per_frame = rows * columns * samples
    if per_frame <= 0 or frames <= 0 or len(buffer) < per_frame * frames * size:
        raise EncodeError("the pixel data is shorter than its attributes announce")
    arr = np.frombuffer(buffer, dtype=f"<{'i' if signed else 'u'}{size}", count=per_frame * frames)
    if bits_stored < bits_allocated:
        if signed:
            shift = bits_allocated - bits_stored
            arr = (arr << shift) >> shift
        else:
            arr = arr & ((1 << bits_stored) - 1)
    shape = (frames, rows, columns) + ((samples,) if samples > 1 else ())
    return list(arr.reshape(shape))


def check_encodable(target: str, *, bits_allocated: int, samples: int, photometric: str) -> None:
    """Refuse the pixel data that :func:`encode_dataset` cannot write in ``target``.

    Parameters
    ----------
    target : str
        Transfer Syntax UID.
    bits_allocated, samples : int
        (0028,0100) and (0028,0002).
    photometric : str
        (0028,0004) *Photometric Interpretation*.

    Raises
    ------
    EncodeError
        No encoder for ``target``, 1-bit data, lossy compression of palette indices,
        colour data other than RGB or YBR_FULL (except for RLE).
    """
    if target not in ENCODABLE:
        raise EncodeError(f"no encoder for {target}")
    if bits_allocated == 1:
        raise EncodeError("1-bit pixel data is kept native")
    if photometric == "PALETTE COLOR" and target in LOSSY:
        raise EncodeError("lossy compression of palette indices")
    if samples == 3 and photometric not in ("RGB", "YBR_FULL") and target != RLE:
        raise EncodeError(f"cannot encode {photometric} colour data")


def encode_frames(frames: list, target: str, *, bits_stored: int, signed: bool, quality: int = 90,
                  threads: int = 1) -> list[bytes]:
    """Compress native frames (:func:`native_frames`) to the codestreams of ``target``.

    The imagecodecs calls release the GIL: with ``threads`` above 1 the frames of a
    multi-frame instance are encoded at once.

    Parameters
    ----------
    frames : list of numpy.ndarray
        ``(rows, columns)`` or ``(rows, columns, 3)`` arrays, stored values.
    target : str
        A Transfer Syntax UID of :data:`ENCODABLE` other than RLE.
    bits_stored : int
        (0028,0101).
    signed : bool
        (0028,0103) *Pixel Representation* 1.
    quality : int
        As :func:`encode_dataset`.
    threads : int
        Frames encoded at once.

    Returns
    -------
    list of bytes
        One codestream per frame.

    Raises
    ------
    EncodeError
        The data does not fit the syntax, imagecodecs is missing or refuses the data.
    """
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        raise EncodeError("imagecodecs is not installed (pip install pacsbox[transcode])") from None
    try:
        if threads > 1 and len(frames) > 1:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(threads) as pool:
                return list(pool.map(lambda f: _encode_frame(target, f, bits_stored, signed, quality), frames))
        return [_encode_frame(target, f, bits_stored, signed, quality) for f in frames]
    except EncodeError:
        raise
    except Exception as e:  # noqa: BLE001 - a codec refusing the data
        raise EncodeError(f"{type(e).__name__}: {e}") from None


def encode_dataset(ds: Dataset, target: str, *, quality: int = 90, threads: int = 1) -> None:
    """Compress the native pixel data of ``ds`` in place to ``target``.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A dataset whose pixel data is native (decompress it first).
    target : str
        A Transfer Syntax UID of :data:`ENCODABLE`.
    quality : int
        JPEG quality, 1-100, for the lossy JPEG syntaxes (``LossyQuality``); it also sets
        the PSNR target of lossy JPEG 2000.
    threads : int
        Frames of a multi-frame instance encoded by this many threads (the codecs
        release the GIL).

    Raises
    ------
    EncodeError
        The pixel data does not fit the syntax (bit depth, sign, samples) or the codec is
        not installed.

    Notes
    -----
    Colour data is written as RGB (planar configuration 0), except JPEG baseline/extended
    which writes YCbCr 4:2:2, declared as ``YBR_FULL_422``. The lossy attributes
    (0028,2110), (0028,2112), (0028,2114) are the caller's (see
    :func:`pacsbox.dicom.transcode.transcode`).
    """
    if target not in ENCODABLE:
        raise EncodeError(f"no encoder for {target}")
    if "PixelData" not in ds:
        raise EncodeError("no pixel data")
    bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    bits_allocated = int(ds.get("BitsAllocated", 8) or 8)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    check_encodable(target, bits_allocated=bits_allocated, samples=samples, photometric=photometric)
    if target == RLE:
        try:
            from pydicom.pixels.encoders import RLELosslessEncoder  # noqa: F401
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.compress(RLE, generate_instance_uid=False)
        except Exception as e:  # noqa: BLE001
            raise EncodeError(str(e)) from None
        return
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        raise EncodeError("imagecodecs is not installed (pip install pacsbox[transcode])") from None
    frames = _frames(ds)
    if samples == 3 and photometric == "YBR_FULL" and target in (JPEG_BASELINE, JPEG_EXTENDED):
        from pydicom.pixels import convert_color_space
        frames = [convert_color_space(f, "YBR_FULL", "RGB") for f in frames]
    encoded = encode_frames(frames, target, bits_stored=bits_stored, signed=signed, quality=quality, threads=threads)
    from pydicom.encaps import encapsulate
    ds.PixelData = encapsulate(encoded, has_bot=len(encoded) > 1)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if samples == 3:
        ds.PlanarConfiguration = 0
        if target in (JPEG_BASELINE, JPEG_EXTENDED):
            ds.PhotometricInterpretation = "YBR_FULL_422"
        elif photometric == "YBR_FULL":
            pass  # lossless codecs keep the components as they are
    ds.file_meta.TransferSyntaxUID = target
