"""The built-in content encoders of ``POST /tools/create-dicom`` (one per MIME type).

Each encoder is ``encode(payload, dataset)``: it adds the content's attributes to the new
instance (see :func:`pacsbox_pdf.hookspecs.register_content_encoders`).

- ``application/pdf``: Encapsulated PDF Storage (PS3.3 A.45), as Orthanc 1.10.1, plus
  (0042,0015) *Encapsulated Document Length*.
- ``model/stl``, ``model/obj``, ``model/mtl``: Encapsulated STL/OBJ/MTL Storage
  (PS3.3 A.85), as Orthanc 1.12.1.
- ``image/png``: decoded with pillow into native pixel data (grayscale 8/16-bit →
  ``MONOCHROME2``; RGB and RGBA → ``RGB``, alpha dropped), as Orthanc.
- ``image/jpeg``: a baseline (or extended 8-bit) JPEG is kept as it is, encapsulated
  with the JPEG Baseline transfer syntax (PS3.5 A.4.1) and its photometric
  interpretation read from the file; other JPEGs (progressive, 12-bit...) are decoded
  like a PNG. Orthanc 1.10.1 always decodes.

Images get (0008,0016) *SOP Class UID* Secondary Capture when the client gives none (an
addition: Orthanc leaves it out), and then the SC Image IOD's other mandatory attributes
(Type 2 ones empty, Conversion Type ``WSD``); 3D models get the Encapsulated STL/OBJ/MTL
IODs' mandatory attributes (Orthanc 1.12.1 leaves them to the client). A PDF gets what
Orthanc 1.10.1 writes, so that its ``/tags`` stay the reference's.
"""
from __future__ import annotations

import io
import struct
from typing import Any, Callable

import pydicom
from pydicom.dataelem import DataElement
from pydicom.uid import JPEGBaseline8Bit

from pacsbox import ErrorCode, OrthancError

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
ENCAPSULATED_STL = "1.2.840.10008.5.1.4.1.1.104.3"
ENCAPSULATED_OBJ = "1.2.840.10008.5.1.4.1.1.104.4"
ENCAPSULATED_MTL = "1.2.840.10008.5.1.4.1.1.104.5"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

ENCAPSULATED_DOCUMENT = 0x00420011
MIME_TYPE_OF_DOCUMENT = 0x00420012
ENCAPSULATED_DOCUMENT_LENGTH = 0x00420015
PIXEL_DATA = 0x7FE00010


def _set_default(ds: pydicom.Dataset, keyword: str, value: str) -> None:
    """Set ``keyword`` unless the client gave a value (an empty one counts as none)."""
    if not ds.get(keyword):
        setattr(ds, keyword, value)


def _set_absent(ds: pydicom.Dataset, keyword: str, value: Any) -> None:
    """Set ``keyword`` only when the dataset lacks it (an empty value given stays)."""
    if keyword not in ds:
        setattr(ds, keyword, value)


#: Type 2 attributes of the Patient, General Study and General Series modules (PS3.3
#: C.7.1.1, C.7.2.1, C.7.3.1) that a new instance gets empty when the client gave none,
#: for the IODs whose SOP class pacsbox chooses itself (Secondary Capture images, 3D models).
_TYPE2_COMMON = ("PatientName", "PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID",
                 "AccessionNumber")


def _complete_common(ds: pydicom.Dataset) -> None:
    for kw in _TYPE2_COMMON:
        _set_absent(ds, kw, "")


def _complete_secondary_capture(ds: pydicom.Dataset) -> None:
    """The remaining mandatory attributes of the SC Image IOD (PS3.3 A.8.1): the Type 2
    ones empty, (0008,0064) *Conversion Type* ``WSD`` (workstation)."""
    _complete_common(ds)
    for kw in ("SeriesNumber", "Laterality", "InstanceNumber", "PatientOrientation"):
        _set_absent(ds, kw, "")
    _set_default(ds, "ConversionType", "WSD")


def _complete_model(ds: pydicom.Dataset) -> None:
    """The remaining mandatory attributes of the Encapsulated STL/OBJ/MTL IODs (PS3.3
    A.85): Frame of Reference (a new UID), Enhanced General Equipment (pacsbox),
    Encapsulated Document and Manufacturing 3D Model (millimetres) modules."""
    from pydicom.uid import generate_uid
    _complete_common(ds)
    _set_absent(ds, "SeriesNumber", "1")
    _set_absent(ds, "InstanceNumber", "1")
    _set_absent(ds, "FrameOfReferenceUID", generate_uid(prefix="1.2.826.0.1.3680043.10.1404."))
    _set_absent(ds, "PositionReferenceIndicator", "")
    _set_default(ds, "Manufacturer", "pacsbox")
    _set_default(ds, "ManufacturerModelName", "pacsbox")
    _set_default(ds, "DeviceSerialNumber", "0")
    _set_default(ds, "SoftwareVersions", "pacsbox")
    _set_absent(ds, "AcquisitionDateTime", "")
    _set_default(ds, "BurnedInAnnotation", "NO")
    _set_absent(ds, "DocumentTitle", "")
    if "ConceptNameCodeSequence" not in ds:
        ds.ConceptNameCodeSequence = pydicom.Sequence()
    if "MeasurementUnitsCodeSequence" not in ds:
        unit = pydicom.Dataset()
        unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "mm", "UCUM", "mm"
        ds.MeasurementUnitsCodeSequence = pydicom.Sequence([unit])


def encapsulate_document(ds: pydicom.Dataset, payload: bytes, mime: str) -> None:
    """Put a document in (0042,0011) *Encapsulated Document*.

    Parameters
    ----------
    ds : pydicom.Dataset
    payload : bytes
        The document, any length: an odd length is padded with one NUL byte (PS3.5 7.1.1:
        OB values have even length), and (0042,0015) *Encapsulated Document Length* keeps
        the true length so that readers can strip the padding.
    mime : str
        (0042,0012) *MIME Type of Encapsulated Document*.
    """
    ds[MIME_TYPE_OF_DOCUMENT] = DataElement(MIME_TYPE_OF_DOCUMENT, "LO", mime)
    ds[ENCAPSULATED_DOCUMENT_LENGTH] = DataElement(ENCAPSULATED_DOCUMENT_LENGTH, "UL", len(payload))
    if len(payload) & 1:
        payload = payload + b"\x00"
    ds[ENCAPSULATED_DOCUMENT] = DataElement(ENCAPSULATED_DOCUMENT, "OB", payload)


def encode_pdf(payload: bytes, ds: pydicom.Dataset) -> None:
    """``application/pdf`` → Encapsulated PDF Storage (PS3.3 A.45.1).

    Sets (0008,0016) *SOP Class UID* ``1.2.840.10008.5.1.4.1.1.104.1``, (0008,0060)
    *Modality* ``OT`` and (0008,0064) *Conversion Type* ``WSD`` when the client gave
    none, and the encapsulated document (:func:`encapsulate_document`).

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "Not a PDF file" when the payload does not start with
        ``%PDF-`` (Orthanc ``ParsedDicomFile::EmbedPdf``).
    """
    if not payload.startswith(b"%PDF-"):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Not a PDF file")
    _set_default(ds, "SOPClassUID", ENCAPSULATED_PDF)
    _set_default(ds, "Modality", "OT")
    _set_default(ds, "ConversionType", "WSD")
    encapsulate_document(ds, payload, "application/pdf")


def _model_encoder(mime: str, sop_class: str) -> Callable[[bytes, pydicom.Dataset], None]:
    def encode(payload: bytes, ds: pydicom.Dataset) -> None:
        _set_default(ds, "SOPClassUID", sop_class)
        _set_default(ds, "Modality", "M3D")
        _complete_model(ds)
        encapsulate_document(ds, payload, mime)
    encode.__name__ = "encode_" + mime.split("/")[1]
    encode.__doc__ = (f"``{mime}`` → Encapsulated {mime.split('/')[1].upper()} Storage (PS3.3 A.85), as Orthanc "
                      f"1.12.1: (0008,0016) *SOP Class UID* ``{sop_class}`` and (0008,0060) *Modality* ``M3D`` "
                      "when the client gave none, and the encapsulated document.")
    return encode


encode_stl = _model_encoder("model/stl", ENCAPSULATED_STL)
encode_obj = _model_encoder("model/obj", ENCAPSULATED_OBJ)
encode_mtl = _model_encoder("model/mtl", ENCAPSULATED_MTL)


# ---- images -----------------------------------------------------------------------------

def _open_image(payload: bytes, fmt: str):
    """The pillow image of a PNG or JPEG payload, decoded (not only its header)."""
    from PIL import Image
    try:
        img = Image.open(io.BytesIO(payload), formats=[fmt])
        img.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad payload
        if fmt == "JPEG":
            raise OrthancError(ErrorCode.INTERNAL_ERROR, _jpeg_error(payload, e)) from None
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT) from None
    return img


def _jpeg_error(payload: bytes, exc: Exception) -> str:
    """Orthanc's text for a JPEG that libjpeg refuses."""
    if payload[:2] != b"\xff\xd8":
        b0 = payload[0] if payload else 0
        b1 = payload[1] if len(payload) > 1 else 0
        return f"Error during JPEG decoding: Not a JPEG file: starts with 0x{b0:02x} 0x{b1:02x}"
    text = str(exc)
    if "cannot identify image file" in text:
        text = "Not a JPEG file"  # pillow names the buffer object: not for the client
    return f"Error during JPEG decoding: {text}"


def _image_attributes(ds: pydicom.Dataset, rows: int, columns: int, samples: int, bits: int,
                      photometric: str) -> None:
    """The Image Pixel module (PS3.3 C.7.6.3) of a single-frame unsigned image; with the
    SC Image IOD's mandatory attributes when pacsbox chooses the SOP class."""
    if not ds.get("SOPClassUID"):
        ds.SOPClassUID = SECONDARY_CAPTURE
        _complete_secondary_capture(ds)
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0


def _embed_decoded(ds: pydicom.Dataset, img) -> None:
    """Native pixel data of a decoded pillow image, as Orthanc's ``EmbedImage``.

    Raises
    ------
    OrthancError
        500 ``NOT_IMPLEMENTED`` for a pixel format Orthanc does not embed (palette,
        grayscale with alpha, 1-bit...).
    """
    mode = img.mode
    if mode == "L":
        data, samples, bits, photometric = img.tobytes(), 1, 8, "MONOCHROME2"
    elif mode in ("I;16", "I;16L"):
        data, samples, bits, photometric = img.tobytes("raw", "I;16"), 1, 16, "MONOCHROME2"
    elif mode == "I;16B":
        data, samples, bits, photometric = img.tobytes("raw", "I;16"), 1, 16, "MONOCHROME2"
    elif mode == "I":
        lo, hi = img.getextrema()
        if lo < 0 or hi > 0xFFFF:
            raise OrthancError(ErrorCode.NOT_IMPLEMENTED)
        data, samples, bits, photometric = img.tobytes("raw", "I;16"), 1, 16, "MONOCHROME2"
    elif mode == "RGB":
        data, samples, bits, photometric = img.tobytes(), 3, 8, "RGB"
    elif mode == "RGBA":
        data, samples, bits, photometric = img.convert("RGB").tobytes(), 3, 8, "RGB"  # alpha dropped
    else:
        raise OrthancError(ErrorCode.NOT_IMPLEMENTED)
    columns, rows = img.size
    _image_attributes(ds, rows, columns, samples, bits, photometric)
    if len(data) & 1:
        data += b"\x00"
    ds[PIXEL_DATA] = DataElement(PIXEL_DATA, "OW", data)


def encode_png(payload: bytes, ds: pydicom.Dataset) -> None:
    """``image/png`` → an uncompressed image (Explicit VR Little Endian).

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` when pillow cannot decode the payload; 500
        ``NOT_IMPLEMENTED`` for a pixel format Orthanc does not embed (palette,
        grayscale with alpha).
    """
    _embed_decoded(ds, _open_image(payload, "PNG"))


#: JPEG start-of-frame markers kept as they are: SOF0 (baseline) and SOF1 (extended,
#: 8-bit), both readable as JPEG Baseline (1.2.840.10008.1.2.4.50, PS3.5 A.4.1).
_KEPT_SOF = {0xC0, 0xC1}


def _jpeg_frame(payload: bytes) -> tuple[int, int, int, int, list[tuple[int, int]]] | None:
    """``(marker, precision, rows, columns, [(h, v) sampling per component])`` of a
    JPEG's first start-of-frame segment, or None when there is none before the scan."""
    pos = 2
    n = len(payload)
    while pos + 4 <= n:
        if payload[pos] != 0xFF:
            return None
        marker = payload[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack_from(">H", payload, pos + 2)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            seg = payload[pos + 4:pos + 2 + length]
            if len(seg) < 6:
                return None
            precision, rows, columns, count = seg[0], *struct.unpack_from(">HH", seg, 1), seg[5]
            comps = []
            for i in range(count):
                off = 6 + 3 * i
                if off + 1 >= len(seg):
                    return None
                comps.append((seg[off + 1] >> 4, seg[off + 1] & 0x0F))
            return marker, precision, rows, columns, comps
        if marker == 0xDA:
            return None
        pos += 2 + length
    return None


def encode_jpeg(payload: bytes, ds: pydicom.Dataset) -> None:
    """``image/jpeg`` → the JPEG kept as JPEG Baseline, or decoded when it is not one.

    A baseline 8-bit JPEG (SOF0/SOF1, 1 or 3 components) is checked by decoding it with
    pillow, then stored as it is: one fragment of encapsulated pixel data (PS3.5 A.4),
    transfer syntax JPEG Baseline, photometric interpretation ``MONOCHROME2`` (one
    component), ``YBR_FULL_422`` (subsampled colour) or ``YBR_FULL`` (PS3.5 8.2.1),
    (0028,2110) *Lossy Image Compression* ``01``.

    Raises
    ------
    OrthancError
        500 ``INTERNAL_ERROR`` "Error during JPEG decoding: ..." when the payload cannot be
        decoded (Orthanc's answer).
    """
    img = _open_image(payload, "JPEG")
    frame = _jpeg_frame(payload)
    if frame is None or frame[0] not in _KEPT_SOF or frame[1] != 8 or len(frame[4]) not in (1, 3) \
            or img.mode not in ("L", "RGB"):
        _embed_decoded(ds, img if img.mode in ("L", "RGB") else img.convert("RGB"))
        return
    _, _, rows, columns, comps = frame
    if len(comps) == 1:
        photometric = "MONOCHROME2"
    elif comps[0] != (1, 1) and all(c == (1, 1) for c in comps[1:]) and img.mode == "RGB" and \
            img.info.get("adobe_transform", 1) != 0:
        photometric = "YBR_FULL_422"
    elif all(c == comps[0] for c in comps) and img.info.get("adobe_transform", 1) != 0:
        photometric = "YBR_FULL"
    else:
        _embed_decoded(ds, img)  # RGB JPEG (Adobe transform 0) or unusual sampling
        return
    _image_attributes(ds, rows, columns, len(comps), 8, photometric)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    from pydicom.encaps import encapsulate
    elem = DataElement(PIXEL_DATA, "OB", encapsulate([payload]), is_undefined_length=True)
    ds[PIXEL_DATA] = elem
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


#: The types this plugin declares through its own ``register_content_encoders``.
BUILTIN_ENCODERS: dict[str, Callable[[bytes, pydicom.Dataset], None]] = {
    "application/pdf": encode_pdf,
    "image/png": encode_png,
    "image/jpeg": encode_jpeg,
    "image/jpg": encode_jpeg,  # tolerated since Orthanc 1.11.3
    "model/stl": encode_stl,
    "model/obj": encode_obj,
    "model/mtl": encode_mtl,
}

__all__ = ["BUILTIN_ENCODERS", "encapsulate_document", "encode_pdf", "encode_png", "encode_jpeg",
           "encode_stl", "encode_obj", "encode_mtl"]
