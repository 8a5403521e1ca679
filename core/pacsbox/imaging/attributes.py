"""The image attributes of a dataset, read as Orthanc reads them: parsing a Part-10 file,
:class:`ImageInfo` (size, samples, bit depth, photometric interpretation, transfer
syntax), the number of frames, and the display parameters of a frame (modality transform,
default VOI window, MONOCHROME1).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from .errors import DecodeError

__all__ = ["ImageInfo", "read_dataset", "image_info", "frame_count", "rescale_parameters", "default_window",
           "is_monochrome1", "RT_DOSE_STORAGE"]


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


def _float_pair(ds: Dataset, frame: int, sequence: str, first: str, second: str) -> tuple[float, float] | None:
    """The first values of ``first`` and ``second`` in the dataset, else in the frame's
    item of ``sequence`` (:func:`_per_frame_item`); None unless both are numbers there."""
    a, b = _first_float(ds.get(first)), _first_float(ds.get(second))
    if a is not None and b is not None:
        return a, b
    item = _per_frame_item(ds, frame, sequence)
    if item is not None:
        a, b = _first_float(item.get(first)), _first_float(item.get(second))
        if a is not None and b is not None:
            return a, b
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
    pair = _float_pair(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept", "RescaleSlope")
    return (0.0, 1.0) if pair is None else pair


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
    pair = _float_pair(ds, frame, "FrameVOILUTSequence", "WindowCenter", "WindowWidth")
    if pair is not None:
        return pair
    bits = _int(ds, "BitsStored", 0) or 8
    width = float(1 << (bits % 32))  # the reference's 32-bit int shift: 2**32 wraps to 1
    return width / 2.0, width


def is_monochrome1(ds: Dataset) -> bool:
    """Whether (0028,0004) is MONOCHROME1 (displayed inverted)."""
    return str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
