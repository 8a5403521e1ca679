"""DICOM tag helpers: Orthanc's main-tag lists, value rendering and the JSON tag formats.

- Main DICOM tags per level, as Orthanc 1.10.1 ("db v6") stores them
  (reference section 2.3).
- :func:`element_text` renders one element the way Orthanc's JSON does: strings decoded
  per (0008,0005) *Specific Character Set*, padding stripped, multiple values joined by
  backslashes, binary numbers written as decimal strings.
- :func:`dataset_to_json` builds the ``full``, ``simplify`` and ``short`` formats of
  ``/instances/{id}/tags`` (reference section 2.5).
"""
from __future__ import annotations

import struct
from typing import Any, Iterable

from pydicom import Dataset
from pydicom.charset import decode_bytes, convert_encodings
from pydicom.datadict import (dictionary_keyword, get_private_entry, keyword_for_tag,
                              tag_for_keyword, dictionary_VR)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import Tag

# ------------------------------------------------------------------------------------------
# Main DICOM tags (Orthanc 1.10.1, ServerToolbox / DicomMap "db v6" lists)
# ------------------------------------------------------------------------------------------

PATIENT_MAIN_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs")
STUDY_MAIN_TAGS = ("StudyDate", "StudyTime", "StudyID", "StudyDescription", "AccessionNumber",
                   "StudyInstanceUID", "RequestedProcedureDescription", "InstitutionName",
                   "RequestingPhysician", "ReferringPhysicianName")
SERIES_MAIN_TAGS = ("SeriesDate", "SeriesTime", "Modality", "Manufacturer", "StationName",
                    "SeriesDescription", "BodyPartExamined", "SequenceName", "ProtocolName",
                    "SeriesNumber", "CardiacNumberOfImages", "ImagesInAcquisition",
                    "NumberOfTemporalPositions", "NumberOfSlices", "NumberOfTimeSlices",
                    "SeriesInstanceUID", "ImageOrientationPatient", "SeriesType", "OperatorsName",
                    "PerformedProcedureStepDescription", "AcquisitionDeviceProcessingDescription",
                    "ContrastBolusAgent")
INSTANCE_MAIN_TAGS = ("InstanceCreationDate", "InstanceCreationTime", "AcquisitionNumber", "ImageIndex",
                      "InstanceNumber", "NumberOfFrames", "TemporalPositionIdentifier", "SOPInstanceUID",
                      "ImagePositionPatient", "ImageComments")

#: Level name → its main tags (keywords).
MAIN_TAGS = {
    "Patient": PATIENT_MAIN_TAGS,
    "Study": STUDY_MAIN_TAGS,
    "Series": SERIES_MAIN_TAGS,
    "Instance": INSTANCE_MAIN_TAGS,
}

LEVELS = ("Patient", "Study", "Series", "Instance")

#: Level name → the DICOM identifier keyword of that level.
IDENTIFIER = {
    "Patient": "PatientID",
    "Study": "StudyInstanceUID",
    "Series": "SeriesInstanceUID",
    "Instance": "SOPInstanceUID",
}

#: Tags decoded at ingest (main tags of every level plus what ingest needs).
INGEST_KEYWORDS = tuple(dict.fromkeys(
    PATIENT_MAIN_TAGS + STUDY_MAIN_TAGS + SERIES_MAIN_TAGS + INSTANCE_MAIN_TAGS
    + ("SpecificCharacterSet", "SOPClassUID")))
INGEST_TAGS = frozenset(tag_for_keyword(k) for k in INGEST_KEYWORDS)

_TEXT_VRS = {"LO", "LT", "PN", "SH", "ST", "UC", "UT"}
_ASCII_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"}
_NUMERIC = {"US": ("H", 2), "SS": ("h", 2), "UL": ("I", 4), "SL": ("i", 4), "FL": ("f", 4), "FD": ("d", 8),
            "SV": ("q", 8), "UV": ("Q", 8)}
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"}

#: Values longer than this are reported as ``TooLong`` (Orthanc ``ORTHANC_MAXIMUM_TAG_LENGTH``).
MAX_TAG_LENGTH = 256


def tag_to_key(tag: int) -> str:
    """``0x00100010`` → ``"0010,0010"`` (Orthanc's JSON key format, lower-case hex)."""
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


def parse_tag(name: str) -> int:
    """Parse a tag given as a keyword, ``gggg,eeee``, ``gggg-eeee`` or ``ggggeeee``.

    Parameters
    ----------
    name : str

    Returns
    -------
    int
        The tag as ``0xGGGGEEEE``.

    Raises
    ------
    KeyError
        When ``name`` is neither a known keyword nor a hexadecimal tag.
    """
    s = name.strip()
    t = tag_for_keyword(s)
    if t is not None:
        return int(t)
    h = s.replace(",", "").replace("-", "").replace("0x", "").replace("(", "").replace(")", "")
    if len(h) == 8:
        try:
            return int(h, 16)
        except ValueError:
            pass
    raise KeyError(name)


def keyword(tag: int) -> str:
    """Orthanc's name for a public tag: its DICOM keyword, or ``"Unknown Tag & Data"``."""
    try:
        kw = dictionary_keyword(tag)
    except KeyError:
        kw = ""
    if not kw:
        if tag & 0xFFFF == 0:
            return "GenericGroupLength"
        return "Unknown Tag & Data"
    return kw


def _unpack(vr: str, value: bytes, little: bool) -> str:
    fmt, size = _NUMERIC[vr]
    count = len(value) // size
    if count == 0:
        return ""
    vals = struct.unpack(("<" if little else ">") + fmt * count, value[:count * size])
    if vr == "FL":
        return "\\".join(format(v, ".9g") for v in vals)
    if vr == "FD":
        return "\\".join(format(v, ".17g") for v in vals)
    return "\\".join(str(v) for v in vals)


def raw_text(raw: RawDataElement, encodings: list[str]) -> str | None:
    """Render a raw element's value as Orthanc does in JSON, or None for binary/sequence.

    Parameters
    ----------
    raw : RawDataElement
        Undecoded element (``value`` is bytes).
    encodings : list of str
        Python codecs from (0008,0005), as returned by :func:`pydicom.charset.convert_encodings`.

    Returns
    -------
    str or None
    """
    vr = raw.VR
    value = raw.value
    if value is None:
        return ""
    if vr == "UN" or vr is None:
        vr = _dict_vr(raw.tag)
    if vr in _TEXT_VRS:
        if vr == "PN":
            s = decode_bytes(value, encodings, {0x5E, 0x3D, 0x5C})
        else:
            s = decode_bytes(value, encodings, {0x5C} if vr not in ("LT", "ST", "UT") else set())
        return s.rstrip(" \x00")
    if vr in _ASCII_VRS:
        return value.decode("latin-1").strip(" \x00") if vr in ("DS", "IS", "UI", "DA", "TM", "DT") \
            else value.decode("latin-1").rstrip(" \x00")
    if vr in _NUMERIC:
        return _unpack(vr, value, raw.is_little_endian)
    if vr == "AT":
        little = raw.is_little_endian
        out = []
        for i in range(0, len(value) - 3, 4):
            g, e = struct.unpack(("<" if little else ">") + "HH", value[i:i + 4])
            out.append(f"{g:04x},{e:04x}")
        return "\\".join(out)
    return None


def _dict_vr(tag: int) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr


def element_text(elem: DataElement | RawDataElement, encodings: list[str]) -> str | None:
    """Render an element (raw or already decoded by pydicom) as an Orthanc JSON string.

    Returns
    -------
    str or None
        None for binary values and sequences.
    """
    if isinstance(elem, RawDataElement):
        return raw_text(elem, encodings)
    vr = elem.VR
    v = elem.value
    if vr == "SQ" or vr in BINARY_VRS:
        return None
    if v is None:
        return ""
    if vr == "FL" or vr == "FD":
        vals = v if isinstance(v, (list, tuple, MultiValue)) else [v]
        return "\\".join(format(float(x), ".9g" if vr == "FL" else ".17g") for x in vals)
    if vr == "AT":
        vals = v if isinstance(v, (list, tuple)) else [v]
        return "\\".join(tag_to_key(int(Tag(x))) for x in vals)
    if isinstance(v, (bytes, bytearray)):
        return None
    if isinstance(v, str):
        return v.rstrip(" \x00")
    if isinstance(v, (list, tuple, MultiValue)):
        return "\\".join(_str_value(x) for x in v)
    return _str_value(v)


def _str_value(x: Any) -> str:
    if hasattr(x, "original_string") and x.original_string is not None:
        return str(x.original_string).strip()
    return str(x).rstrip(" \x00")


def dataset_encodings(ds: Dataset, default: str = "latin_1") -> list[str]:
    """Python codecs for a dataset's (0008,0005), or ``[default]`` when absent.

    Parameters
    ----------
    ds : Dataset
    default : str
        Codec used without a Specific Character Set (Orthanc ``DefaultEncoding``).
    """
    raw = ds.get_item(0x00080005)
    if raw is None:
        return [default]
    if isinstance(raw, RawDataElement):
        val = raw.value.decode("ascii", "replace").strip(" \x00") if raw.value else ""
        terms = [t.strip() for t in val.split("\\")]
    else:
        v = raw.value
        terms = list(v) if isinstance(v, (list, tuple)) or (hasattr(v, "__iter__") and not isinstance(v, str)) else [v]
    terms = [t for t in terms if t is not None]
    if not terms or terms == [""]:
        return [default]
    try:
        return convert_encodings(terms)
    except Exception:  # noqa: BLE001 - unknown term: fall back like DCMTK
        return [default]


def main_tags(ds: Dataset, level: str, encodings: list[str]) -> dict[str, str]:
    """The main DICOM tags of ``level`` present in ``ds``, keyword → text value.

    Parameters
    ----------
    ds : Dataset
        Dataset whose elements may still be raw.
    level : str
        ``"Patient"``, ``"Study"``, ``"Series"`` or ``"Instance"``.
    encodings : list of str
        See :func:`dataset_encodings`.

    Returns
    -------
    dict of str to str
        Only tags present in the file; an empty value stays ``""``.
    """
    out: dict[str, str] = {}
    for kw in MAIN_TAGS[level]:
        tag = _KW_TAG[kw]
        elem = ds.get_item(tag)
        if elem is None:
            continue
        text = element_text(elem, encodings)
        out[kw] = text if text is not None else ""
    return out


_KW_TAG = {kw: int(tag_for_keyword(kw)) for kw in INGEST_KEYWORDS}


# ------------------------------------------------------------------------------------------
# JSON formats of /tags
# ------------------------------------------------------------------------------------------

def _private_name(ds: Dataset, tag: int) -> tuple[str, str | None]:
    group, elem = tag >> 16, tag & 0xFFFF
    if 0x0010 <= elem <= 0x00FF:
        return "PrivateCreator", None
    block = elem >> 8
    creator_el = ds.get_item((group << 16) | block)
    creator = None
    if creator_el is not None:
        v = creator_el.value
        if isinstance(v, bytes):
            creator = v.decode("latin-1").strip(" \x00")
        elif v is not None:
            creator = str(v).strip()
    if creator:
        try:
            entry = get_private_entry((group << 16) | elem, creator)
            name = entry[2]
            name = "".join(ch for ch in name.title() if ch.isalnum()) if name and " " in name else name
            return (name or "Unknown Tag & Data"), creator
        except KeyError:
            pass
    return "Unknown Tag & Data", None


def _element_json(ds: Dataset, elem, encodings, fmt: str, max_len: int):
    tag = int(elem.tag)
    vr = elem.VR
    if vr == "UN" or vr is None:
        vr = _dict_vr(tag) if not (tag >> 16) & 1 else "UN"
    if vr == "SQ" or (isinstance(elem, DataElement) and elem.VR == "SQ"):
        seq = ds[tag].value  # decodes the sequence
        items = [dataset_to_json(item, fmt, encodings, max_len) for item in seq]
        if fmt == "full":
            return {"Type": "Sequence", "Value": items}
        return items
    if isinstance(elem, RawDataElement) and vr in ("SQ",):
        pass
    text = element_text(elem, encodings) if vr not in BINARY_VRS else None
    if text is None:
        return {"Type": "Null", "Value": None} if fmt == "full" else None
    if max_len and len(text) > max_len:
        return {"Type": "TooLong", "Value": None} if fmt == "full" else None
    if fmt == "full":
        return {"Type": "String", "Value": text}
    return text


def dataset_to_json(ds: Dataset, fmt: str = "full", encodings: list[str] | None = None,
                    max_len: int = MAX_TAG_LENGTH, *, skip_pixel_data: bool = False) -> dict[str, Any]:
    """Orthanc's JSON rendering of a dataset (``/instances/{id}/tags``).

    Parameters
    ----------
    ds : Dataset
    fmt : {"full", "simplify", "short"}
        ``full``: ``{"gggg,eeee": {"Name", "Type", "Value"}}`` (plus ``PrivateCreator``);
        ``simplify``: ``{keyword: value}``; ``short``: ``{"gggg,eeee": value}``.
    encodings : list of str, optional
        Codecs inherited from the parent dataset (sequence items).
    max_len : int
        Strings longer than this become ``TooLong`` (0 = unlimited).
    skip_pixel_data : bool
        Leave out (7FE0,0010).

    Returns
    -------
    dict
        Keys sorted (``gggg,eeee`` order for ``full``/``short``).
    """
    if encodings is None or ds.get_item(0x00080005) is not None:
        encodings = dataset_encodings(ds, encodings[0] if encodings else "latin_1")
    out: dict[str, Any] = {}
    for elem in ds.elements() if hasattr(ds, "elements") else ds:
        tag = int(elem.tag)
        if skip_pixel_data and tag == 0x7FE00010:
            continue
        if tag & 0xFFFF == 0 and tag >> 16 != 0x0002 and tag >> 16 != 0:
            continue  # group lengths are not reported
        value = _element_json(ds, elem, encodings, fmt, max_len)
        if (tag >> 16) & 1:
            name, creator = _private_name(ds, tag)
        else:
            name, creator = keyword(tag), None
        if fmt == "full":
            entry = {"Name": name}
            if creator:
                entry["PrivateCreator"] = creator
            entry.update(value)
            out[tag_to_key(tag)] = entry
        elif fmt == "simplify":
            out[name if name not in ("Unknown Tag & Data", "PrivateCreator") else tag_to_key(tag)] = value
        else:
            out[tag_to_key(tag)] = value
    return out
