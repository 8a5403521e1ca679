"""One frame of an instance: decoded into Orthanc's pixel format (the table in the
docstring of :mod:`pacsbox.imaging`), or its bytes as stored (``raw``).

The codecs are pydicom's pixel handlers, Pillow first for JPEG baseline and extended (the
reference's IJG pixels), and imagecodecs' libjpeg-turbo for 12-bit extended JPEG (the
reference's values) and lossless JPEG (pydicom's values, faster).
"""
from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.uid import UID

from .attributes import ImageInfo, frame_count, image_info
from .errors import DecodeError, FrameOutOfRange, ImagingUnavailable, require_numpy

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["decode_frame", "iter_frames", "raw_frame"]


_FIX_LOCK = threading.Lock()


def _with_defaults(ds: Dataset, info: ImageInfo) -> None:
    """Fill in the attributes pydicom needs and the file may omit (defaults 1 and 0)."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        from pydicom.dataset import FileMetaDataset
        if meta is None:
            ds.file_meta = meta = FileMetaDataset()
        implicit = getattr(ds, "original_encoding", (True, True))[0]
        little = getattr(ds, "original_encoding", (True, True))[1]
        meta.TransferSyntaxUID = ("1.2.840.10008.1.2" if implicit else
                                  "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
    if "SamplesPerPixel" not in ds:
        ds.SamplesPerPixel = info.samples
    if info.is_float:  # read from its bytes (_float_frame): nothing else is needed
        return
    if "PixelRepresentation" not in ds:
        ds.PixelRepresentation = 0
    if "BitsStored" not in ds:
        ds.BitsStored = info.bits_stored
    if "PhotometricInterpretation" not in ds:
        ds.PhotometricInterpretation = info.photometric
    if info.samples > 1 and "PlanarConfiguration" not in ds:
        ds.PlanarConfiguration = 0


def decode_frame(ds: Dataset, index: int = 0) -> "np.ndarray":
    """Decode one frame into Orthanc's pixel format (table in the docstring of
    :mod:`pacsbox.imaging`).

    Only this frame is decoded: a multi-frame instance never has more than one decoded
    frame in memory here.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A dataset from :func:`read_dataset`.
    index : int
        Frame index, from 0.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` for grayscale or ``(rows, columns, 3)`` for colour, in
        stored values (no modality or VOI transform); dtype as in that table
        (float32 or float64 for *Float* / *Double Float Pixel Data*).

    Raises
    ------
    FrameOutOfRange
        ``index`` is not in ``[0, frames)``.
    ImagingUnavailable
        numpy or the codec of the transfer syntax is missing.
    DecodeError
        Anything else that prevents decoding.
    """
    np = require_numpy()
    info = image_info(ds)
    if not 0 <= index < info.frames:
        raise FrameOutOfRange(f"frame {index} of an instance with {info.frames} frame(s)")
    with _FIX_LOCK:
        _with_defaults(ds, info)
    if info.is_float:
        return _float_frame(np, ds, info, index)
    arr = _pixel_array(ds, info, index)
    if arr.ndim == 3 and info.frames > 1 and arr.shape[-1] != 3:
        arr = arr[0]
    elif arr.ndim == 4:
        arr = arr[0]
    if info.photometric == "PALETTE COLOR" and info.samples == 1:
        from pydicom.pixels import apply_color_lut
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rgb = apply_color_lut(arr, ds)
        if info.bits_stored <= 8:
            depth = _lut_depth(ds)
            return (rgb >> (depth - 8)).astype(np.uint8) if depth > 8 else rgb.astype(np.uint8)
        return rgb.astype(np.uint16)
    if arr.ndim == 3:  # colour, already RGB (pydicom converts YBR)
        if info.bits_allocated <= 8:
            return np.ascontiguousarray(arr, dtype=np.uint8)
        return np.ascontiguousarray(arr, dtype=np.uint16)
    return _grayscale_dtype(np, arr, info)


def _float_frame(np, ds: Dataset, info: ImageInfo, index: int):
    """One frame of *Float* or *Double Float Pixel Data* (native only: PS3.5 A.4 has no
    compressed form of them), read from its bytes alone."""
    size = 4 if info.pixel_keyword == "FloatPixelData" else 8
    if info.bits_allocated != size * 8:
        raise DecodeError(f"{info.pixel_keyword} with {info.bits_allocated} bits allocated")
    per_frame = info.rows * info.columns * info.samples
    raw = ds[info.pixel_keyword].value
    order = "<" if UID(info.transfer_syntax).is_little_endian else ">"
    if len(raw) < per_frame * size * (index + 1):
        raise DecodeError("the pixel data is shorter than its frames")
    arr = np.frombuffer(raw, f"{order}f{size}", count=per_frame, offset=per_frame * size * index)
    shape = (info.rows, info.columns) + ((info.samples,) if info.samples > 1 else ())
    return arr.astype(f"=f{size}").reshape(shape)


#: Decoding plugins of pydicom tried first, by transfer syntax: Pillow (libjpeg-turbo) for
#: 8-bit JPEG is the fastest and gives the reference's (DCMTK/IJG) pixels exactly, where
#: pylibjpeg's libjpeg differs by 1 to 5 on colour images.
_PREFERRED_PLUGIN = {"1.2.840.10008.1.2.4.50": "pillow", "1.2.840.10008.1.2.4.51": "pillow"}
_JPEG_FAMILY = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                          "1.2.840.10008.1.2.4.70"})


def _pixel_array(ds: Dataset, info: ImageInfo, index: int):
    """One frame with pydicom's handlers (preferred plugin first), then imagecodecs for
    the JPEG streams pydicom's plugins reject (12-bit extended JPEG)."""
    from pydicom.pixels import pixel_array
    idx = index if info.frames > 1 else None
    if info.transfer_syntax in _LOSSLESS_JPEG and info.bits_allocated <= 16 and (
            info.samples == 1 or info.photometric == "RGB"):
        fast = _lossless_jpeg(ds, info, index)
        if fast is not None:
            return fast
    # 12-bit extended JPEG: libjpeg-turbo (imagecodecs) gives the reference's (IJG) values,
    # pylibjpeg's libjpeg differs by 1 and rejects some streams
    twelve_bit_first = info.transfer_syntax == "1.2.840.10008.1.2.4.51" and info.bits_stored > 8
    if twelve_bit_first and info.samples == 1:
        try:
            import imagecodecs
            from pydicom.encaps import get_frame
            arr = imagecodecs.jpeg8_decode(get_frame(ds.PixelData, index, number_of_frames=info.frames))
            if arr.shape[:2] == (info.rows, info.columns):
                return arr
        except Exception:  # noqa: BLE001 - pydicom's handlers next
            pass
    first_error: Exception | None = None
    for plugin in (_PREFERRED_PLUGIN.get(info.transfer_syntax), ""):
        if plugin is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return pixel_array(ds, index=idx, decoding_plugin=plugin)
        except Exception as e:  # noqa: BLE001 - corrupt streams raise anything
            first_error = first_error or e
    if info.transfer_syntax in _JPEG_FAMILY and info.samples == 1 and not twelve_bit_first:
        try:
            import imagecodecs
            from pydicom.encaps import get_frame
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stream = get_frame(ds.PixelData, index, number_of_frames=info.frames)
            return imagecodecs.jpeg8_decode(stream)
        except Exception:  # noqa: BLE001 - keep pydicom's error
            pass
    text = str(first_error).lower()
    if "missing required dependencies" in text or "no pixel data decoders" in text or "no module named" in text:
        raise ImagingUnavailable(str(first_error)) from None
    raise DecodeError(f"{type(first_error).__name__}: {first_error}") from None


_LOSSLESS_JPEG = frozenset({"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})


def _lossless_jpeg(ds: Dataset, info: ImageInfo, index: int):
    """Lossless JPEG through imagecodecs' libjpeg-turbo: the same values as pydicom's
    pylibjpeg plugin, 3 to 20 times faster. None when imagecodecs is missing or refuses."""
    try:
        import imagecodecs
        import numpy as np
        from pydicom.encaps import get_frame
        stream = get_frame(ds.PixelData, index, number_of_frames=info.frames)
        kw = {"colorspace": "RGB", "outcolorspace": "RGB"} if info.samples == 3 else {}
        arr = imagecodecs.jpeg8_decode(stream, **kw)
    except Exception:  # noqa: BLE001 - pydicom's handlers decide
        return None
    if arr.shape[:2] != (info.rows, info.columns):
        return None
    if info.signed:
        bits = info.bits_stored
        v = arr.astype(np.int32) & ((1 << bits) - 1)
        v[v >= 1 << (bits - 1)] -= 1 << bits
        arr = v
    return arr


def _lut_depth(ds: Dataset) -> int:
    desc = ds.get("RedPaletteColorLookupTableDescriptor")
    try:
        return int(desc[2])
    except (TypeError, IndexError, ValueError):
        return 16


def _grayscale_dtype(np, arr, info: ImageInfo):
    """Cast a grayscale frame to Orthanc's pixel format."""
    if info.bits_stored == 1 and info.samples == 1:  # segmentations: 0 or 255, as the reference
        return (arr.astype(np.uint8, copy=False) * np.uint8(255)).astype(np.uint8)
    if not info.signed:
        if info.bits_stored == 8 or info.bits_allocated == 8:
            return arr.astype(np.uint8, copy=False)
        if info.bits_allocated == 16:
            return arr.astype(np.uint16, copy=False)
        if info.bits_allocated == 32:
            return arr.astype(np.uint32, copy=False)
        return arr
    if info.bits_allocated <= 16:
        return arr.astype(np.int16, copy=False)
    if info.bits_allocated == 32:
        return arr.astype(np.int32, copy=False)
    return arr


def iter_frames(ds: Dataset):
    """Decode the frames one at a time.

    Yields
    ------
    numpy.ndarray
        Each frame as :func:`decode_frame` returns it.
    """
    for i in range(frame_count(ds)):
        yield decode_frame(ds, i)


def raw_frame(ds: Dataset, index: int) -> tuple[bytes, str]:
    """The bytes of one frame as stored, without decoding.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
    index : int

    Returns
    -------
    (bytes, str)
        The frame and its MIME type: the native bytes (``application/octet-stream``;
        little endian, floats of parametric maps included), or the compressed frame of
        an encapsulated transfer syntax (``image/jpeg``, ``image/jp2``, else
        ``application/octet-stream``, as the reference).

    Raises
    ------
    FrameOutOfRange
    DecodeError
    """
    info = image_info(ds)
    if not 0 <= index < info.frames:
        raise FrameOutOfRange(f"frame {index} of an instance with {info.frames} frame(s)")
    from pydicom.uid import UID
    ts = UID(info.transfer_syntax)
    data = ds[info.pixel_keyword].value
    if ts.is_encapsulated and not info.is_float:
        from pydicom.encaps import get_frame
        try:
            frame = get_frame(data, index, number_of_frames=info.frames)
        except Exception as e:  # noqa: BLE001
            raise DecodeError(str(e)) from None
        return frame, _ENCAPSULATED_MIME.get(str(ts), "application/octet-stream")
    if info.bits_allocated == 1:
        size_bits = info.rows * info.columns * info.samples
        start, end = index * size_bits, (index + 1) * size_bits
        if start % 8 == 0:
            return bytes(data[start // 8:(end + 7) // 8]), "application/octet-stream"
        raise DecodeError("a 1-bit frame that does not start on a byte boundary")
    size = info.rows * info.columns * info.samples * (info.bits_allocated // 8)
    word = info.bits_allocated // 8
    if not ts.is_little_endian and ds[info.pixel_keyword].VR == "OW":
        word = max(2, word)  # 8-bit pixels in OW are stored as swapped 16-bit words
    if not ts.is_little_endian and word > 1:
        np = require_numpy()
        whole = bytes(data[:len(data) // word * word])
        data = np.frombuffer(whole, f">u{word}").astype(f"<u{word}").tobytes()
    out = bytes(data[index * size:(index + 1) * size])
    if len(out) < size:
        raise DecodeError("the pixel data is shorter than its frames")
    return out, "application/octet-stream"


#: MIME types of ``raw`` frames, as Orthanc's ``ParsedDicomFile::GetRawFrame`` (every other
#: syntax is ``application/octet-stream``).
_ENCAPSULATED_MIME = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
}
