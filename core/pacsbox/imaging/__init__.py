"""Decoding and rendering of DICOM pixel data: the imaging core shared by the REST image
routes, archives and the network plugin.

Plugins use it as ``from pacsbox import imaging`` (or ``import pacsbox.imaging``).

Decoding follows Orthanc 1.10.1's pixel formats, so that what a route returns has the
reference's shape and dtype (Orthanc's ``DicomImageInformation::ExtractPixelFormat``):

==========================================  ====================  ===================
source                                      Orthanc format        array
==========================================  ====================  ===================
grayscale, 8 bits stored, unsigned          Grayscale8            ``(H, W)`` uint8
grayscale, 1 bit (segmentations)            Grayscale8, 0 or 255  ``(H, W)`` uint8
grayscale, 16 bits allocated, unsigned      Grayscale16           ``(H, W)`` uint16
grayscale, 16 bits allocated, signed        SignedGrayscale16     ``(H, W)`` int16
grayscale, 32 bits allocated, unsigned      Grayscale32           ``(H, W)`` uint32
RGB / YBR_* (converted to RGB), 8 bits      RGB24                 ``(H, W, 3)`` uint8
PALETTE COLOR, 8 bits stored                RGB24 (LUT >> 8)      ``(H, W, 3)`` uint8
PALETTE COLOR, 16 bits stored               RGB48                 ``(H, W, 3)`` uint16
==========================================  ====================  ===================

pacsbox also decodes what the reference refuses: signed 8-bit grayscale (as int16),
signed 32-bit (int32), 16-bit colour (uint16 RGB), uncompressed YBR images, and the
floating-point pixels of parametric maps, (7FE0,0008) *Float Pixel Data* as ``(H, W)``
float32 and (7FE0,0009) *Double Float Pixel Data* as float64 (PS3.3 C.7.6.24; the REST
routes refuse those as the reference does).

The codecs are pydicom's pixel handlers (numpy for native data and RLE, pylibjpeg with
libjpeg/openjpeg/rle, pyjpegls, pillow): the ``transcode`` extra installs them. Without
numpy every function raises :class:`ImagingUnavailable`, which the routes turn into the
reference's "unsupported" answer (415).
"""
from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "ImagingUnavailable", "DecodeError", "FrameOutOfRange", "ImageInfo", "available",
    "read_dataset", "image_info", "frame_count", "decode_frame", "iter_frames",
    "rescale_parameters", "default_window", "preview", "truncate", "render",
    "encode_png", "encode_jpeg", "encode_pam", "numpy_file", "matlab_text", "raw_frame",
    "IncompatibleImages", "is_monochrome1", "target_size", "numpy_header", "numpy_frame",
]


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


def _np():
    try:
        import numpy
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImagingUnavailable("numpy is not installed (pip install pacsbox[transcode])") from None
    return numpy


@dataclass(frozen=True)
class ImageInfo:
    """The image attributes of a dataset, with the defaults Orthanc applies.

    Attributes
    ----------
    rows, columns : int
        (0028,0010) *Rows* and (0028,0011) *Columns*, in pixels.
    frames : int
        (0028,0008) *Number of Frames* (1 when absent).
    samples : int
        (0028,0002) *Samples per Pixel* (1 when absent).
    bits_allocated, bits_stored, high_bit : int
        (0028,0100), (0028,0101) (defaults to bits allocated), (0028,0102).
    signed : bool
        (0028,0103) *Pixel Representation* is 1 (0 when absent).
    photometric : str
        (0028,0004) *Photometric Interpretation*, upper case ("MONOCHROME2" when absent).
    planar : int
        (0028,0006) *Planar Configuration* (0 when absent).
    transfer_syntax : str
        (0002,0010) *Transfer Syntax UID* of the file.
    pixel_keyword : str
        Where the pixels are: ``"PixelData"``, ``"FloatPixelData"`` (32-bit IEEE floats)
        or ``"DoubleFloatPixelData"`` (64-bit).
    """

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    high_bit: int
    signed: bool
    photometric: str
    planar: int
    transfer_syntax: str
    pixel_keyword: str = "PixelData"

    @property
    def is_float(self) -> bool:
        """Whether the pixels are floating-point values (parametric maps)."""
        return self.pixel_keyword != "PixelData"

    @property
    def is_color(self) -> bool:
        """Whether decoded frames are RGB (three samples or a palette)."""
        return self.samples == 3 or self.photometric == "PALETTE COLOR"


def _int(ds: Dataset, keyword: str, default: int) -> int:
    v = ds.get(keyword)
    if v is None or v == "":
        return default
    try:
        return int(v[0] if isinstance(v, (list, tuple, pydicom.multival.MultiValue)) else v)
    except (TypeError, ValueError):
        return default


def read_dataset(data: bytes | memoryview) -> Dataset:
    """Parse a Part-10 file (deflated ones included) for decoding.

    Parameters
    ----------
    data : bytes
        The DICOM file.

    Returns
    -------
    pydicom.dataset.Dataset
        Parsed with ``force=True``; the pixel data stays as raw bytes until a frame is
        decoded.

    Raises
    ------
    DecodeError
        The bytes are not a readable DICOM file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(bytes(data)), force=True)
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on corrupt input
        raise DecodeError(f"cannot parse the DICOM file: {e}") from None


def image_info(ds: Dataset) -> ImageInfo:
    """The image attributes of ``ds`` (see :class:`ImageInfo`).

    Raises
    ------
    DecodeError
        No (7FE0,0010) *Pixel Data*, (7FE0,0008) *Float Pixel Data* nor (7FE0,0009)
        *Double Float Pixel Data*, or no rows/columns.
    """
    keyword = next((k for k in _PIXEL_KEYWORDS if k in ds), None)
    if keyword is None:
        raise DecodeError("the instance has no pixel data")
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    if rows <= 0 or cols <= 0:
        raise DecodeError("the instance has no Rows or Columns")
    ba = _int(ds, "BitsAllocated", _FLOAT_BITS.get(keyword, 8))
    bs = _int(ds, "BitsStored", ba)
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")) if meta is not None else "1.2.840.10008.1.2"
    return ImageInfo(rows=rows, columns=cols, frames=max(1, _int(ds, "NumberOfFrames", 1)),
                     samples=_int(ds, "SamplesPerPixel", 1), bits_allocated=ba, bits_stored=bs,
                     high_bit=_int(ds, "HighBit", bs - 1), signed=_int(ds, "PixelRepresentation", 0) == 1,
                     photometric=str(ds.get("PhotometricInterpretation", "") or "MONOCHROME2").strip().upper(),
                     planar=_int(ds, "PlanarConfiguration", 0), transfer_syntax=ts, pixel_keyword=keyword)


#: The pixel data elements, in the order they are looked for (PS3.3 C.7.6.3, C.7.6.24).
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: Bits allocated of the floating-point ones.
_FLOAT_BITS = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}


def frame_count(ds: Dataset) -> int:
    """Number of frames, as Orthanc's ``/frames`` lists them (``DicomFrameIndex``).

    Returns
    -------
    int
        (0028,0008) *Number of Frames*, 1 when absent or not a number (with or without
        pixel data, as the reference).

    Raises
    ------
    DecodeError
        A negative *Number of Frames*.
    """
    v = ds.get("NumberOfFrames")
    if v is None or v == "":
        return 1
    try:
        n = int(str(v).strip())
    except ValueError:
        return 1
    if n < 0:
        raise DecodeError("negative Number of Frames")
    return n


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
    """Decode one frame into Orthanc's pixel format (table in the module docstring).

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
        stored values (no modality or VOI transform); dtype as in the module table
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
    np = _np()
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


# ---- DICOM parameters ------------------------------------------------------------------

def _first_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _per_frame_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    seq = ds.get("PerFrameFunctionalGroupsSequence")
    if seq and 0 <= frame < len(seq):
        inner = seq[frame].get(sequence)
        if inner:
            return inner[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        inner = shared[0].get(sequence)
        if inner:
            return inner[0]
    return None


RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"


def rescale_parameters(ds: Dataset, frame: int = 0) -> tuple[float, float]:
    """The modality transform of a frame, as Orthanc's ``ParsedDicomFile::GetRescale``.

    (0028,1052) *Rescale Intercept* and (0028,1053) *Rescale Slope* of the dataset, else
    of the frame's *Pixel Value Transformation Sequence* in the per-frame (then shared)
    functional groups; (0, 1) when absent and for RT Dose.

    Returns
    -------
    (float, float)
        ``(intercept, slope)``; the modality value is ``slope * stored + intercept``.
    """
    if str(ds.get("SOPClassUID", "")) == RT_DOSE_STORAGE:
        return 0.0, 1.0
    i, s = _first_float(ds.get("RescaleIntercept")), _first_float(ds.get("RescaleSlope"))
    if i is not None and s is not None:
        return i, s
    item = _per_frame_item(ds, frame, "PixelValueTransformationSequence")
    if item is not None:
        i, s = _first_float(item.get("RescaleIntercept")), _first_float(item.get("RescaleSlope"))
        if i is not None and s is not None:
            return i, s
    return 0.0, 1.0


def default_window(ds: Dataset, frame: int = 0) -> tuple[float, float]:
    """The default VOI window of a frame, as Orthanc's ``GetDefaultWindowing``.

    The first (0028,1050) *Window Center* / (0028,1051) *Window Width* of the dataset,
    else of the frame's *Frame VOI LUT Sequence*; else the full range of the stored bits
    (width ``2**BitsStored``, center half of it).

    Returns
    -------
    (float, float)
        ``(center, width)`` in modality units.
    """
    c, w = _first_float(ds.get("WindowCenter")), _first_float(ds.get("WindowWidth"))
    if c is not None and w is not None:
        return c, w
    item = _per_frame_item(ds, frame, "FrameVOILUTSequence")
    if item is not None:
        c, w = _first_float(item.get("WindowCenter")), _first_float(item.get("WindowWidth"))
        if c is not None and w is not None:
            return c, w
    bits = _int(ds, "BitsStored", 0) or 8
    width = float(1 << (bits % 32))  # the reference's 32-bit int shift: 2**32 wraps to 1
    return width / 2.0, width


def is_monochrome1(ds: Dataset) -> bool:
    """Whether (0028,0004) is MONOCHROME1 (displayed inverted)."""
    return str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"


# ---- pixel transforms (Orthanc's ImageProcessing, in float32 like the reference) ---------

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
    np = _np()
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
    np = _np()
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
    np = _np()
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


# ---- encoders --------------------------------------------------------------------------

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
    np = _np()
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
    np = _np()
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
    np = _np()
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


class IncompatibleImages(ValueError):
    """Frames of a numpy export differ in size or pixel format.

    Attributes
    ----------
    what : {"size", "format"}
    """

    def __init__(self, what: str, message: str):
        super().__init__(message)
        self.what = what


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
    np = _np()
    if frame.ndim == 3:
        if frame.dtype != np.uint8:
            raise DecodeError("Matlab export of 16-bit colour images is not supported")
        h, w = frame.shape[:2]
        rows = [" ".join(map(str, row.tolist())) + " " for row in frame.reshape(h, w * 3)]
        return "double(permute(reshape([ " + "".join(rows) + f"], [ 3 {h} {w} ]), [ 3 2 1 ]))"
    rows = [" ".join(map(str, row.tolist())) + " " for row in frame]
    return "double([ " + "; ".join(rows) + "])"


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
        np = _np()
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
