"""DICOM tag helpers: Orthanc's main-tag lists, value rendering and the JSON tag formats.

- Main DICOM tags per level, as Orthanc 1.10.1 ("db v6") stores them
  (reference section 2.3).
- :func:`element_text` renders one element the way Orthanc's JSON does: strings decoded
  per (0008,0005) *Specific Character Set*, padding stripped, multiple values joined by
  backslashes, binary numbers written as decimal strings.
- :func:`~pacsbox.dicom.dataset_json.dataset_to_json` builds the ``full``, ``simplify`` and
  ``short`` formats of ``/instances/{id}/tags`` (reference section 2.5), and
  :class:`~pacsbox.dicom.tag_dictionary.TagDictionary` holds the ``Dictionary`` option; both
  are still importable from here.
"""
from __future__ import annotations

import struct
from typing import Any, Mapping, Iterable

from pydicom import Dataset
from pydicom.charset import decode_bytes, convert_encodings
from pydicom.datadict import (dictionary_is_retired, dictionary_keyword, dictionary_VR, get_private_entry,
                              tag_for_keyword)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from ..levels import LEVEL_NAMES

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
                      "ImagePositionPatient", "ImageComments", "ImageOrientationPatient")

#: Level name → its main tags (keywords).
MAIN_TAGS = {
    "Patient": PATIENT_MAIN_TAGS,
    "Study": STUDY_MAIN_TAGS,
    "Series": SERIES_MAIN_TAGS,
    "Instance": INSTANCE_MAIN_TAGS,
}

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
    """Orthanc's name for a public tag, as DCMTK's dictionary gives it.

    The DICOM keyword; ``"RETIRED_"`` + keyword for a retired tag;
    ``"GenericGroupLength"`` for a group length (gggg,0000) without keyword;
    ``"Unknown Tag & Data"`` for a tag missing from the dictionary.

    Parameters
    ----------
    tag : int
        ``0xGGGGEEEE``.

    Returns
    -------
    str
    """
    name = _KEYWORD_CACHE.get(tag)
    if name is None:
        try:
            kw = dictionary_keyword(tag)
        except KeyError:
            kw = ""
        if not kw:
            name = "GenericGroupLength" if tag & 0xFFFF == 0 else UNKNOWN_NAME
        elif tag in _ORTHANC_NAMES:
            name = _ORTHANC_NAMES[tag]
        elif dictionary_is_retired(tag) and tag not in _NOT_RETIRED_IN_DCMTK:
            name = "RETIRED_" + kw
        else:
            name = kw
        _KEYWORD_CACHE[tag] = name
    return name


_KEYWORD_CACHE: dict[int, str] = {}

#: Orthanc names its main DICOM tags itself (``DicomTag::GetMainTagsName``), whatever the
#: dictionary says; the only one that matters is this retired tag.
_ORTHANC_NAMES = {0x00101000: "OtherPatientIDs"}

#: Tags pydicom's dictionary marks retired but DCMTK 3.6.7's (used by the reference) does not.
_NOT_RETIRED_IN_DCMTK = frozenset({0x00380004, 0x00701807, 0x00701808, 0x30040010, 0x30040012, 0x30060085,
                                   0x30060088, 0x3008002B, 0x30100090})

#: Name of tags missing from the dictionary (DCMTK's ``DcmTag::getTagName``).
UNKNOWN_NAME = "Unknown Tag & Data"


def private_name(tag: int, creator: str | None) -> str:
    """Orthanc's name for a private tag.

    Parameters
    ----------
    tag : int
        A tag of an odd group.
    creator : str or None
        The private creator of its block, None when unknown.

    Returns
    -------
    str
        ``"PrivateCreator"`` for (gggg,0010-00FF), ``"PrivateGroupLength"`` for
        (gggg,0000), the name DCMTK's private dictionary gives ``(group, creator,
        element)`` (as the reference, whose ``LoadPrivateDictionary`` defaults to true),
        else ``"Unknown Tag & Data"``.

    Notes
    -----
    DCMTK's private dictionary is read from the system's ``private.dic`` (Debian's
    ``libdcmtk`` data, which the reference itself uses; see :func:`dcmtk_private_dictionary`).
    Without that file every private tag outside the ``Dictionary`` option is
    ``"Unknown Tag & Data"``: pydicom's private dictionary names many tags differently
    (``LowerRangeOfPixels1`` for DCMTK's ``LowerRangeOfPixels``), so it is not used for names.
    """
    elem = tag & 0xFFFF
    if 0x0010 <= elem <= 0x00FF:
        return "PrivateCreator"
    if elem == 0:
        return "PrivateGroupLength"
    if creator:
        entry = dcmtk_private_dictionary().get((tag >> 16, creator, elem & 0xFF))
        if entry is not None:
            return entry[1]
    return UNKNOWN_NAME


#: Where DCMTK's private dictionary is looked for (Debian/Ubuntu ``libdcmtk*`` data, a
#: DCMTK install prefix); the environment variable ``PACSBOX_DCMTK_PRIVATE_DIC`` overrides.
DCMTK_PRIVATE_DIC_GLOBS = ("/usr/share/libdcmtk*/private.dic", "/usr/share/dcmtk*/private.dic",
                           "/usr/local/share/dcmtk*/private.dic")

_DCMTK_PRIVATE: dict[tuple[int, str, int], tuple[str, str]] | None = None


def dcmtk_private_dictionary() -> dict[tuple[int, str, int], tuple[str, str]]:
    """DCMTK's private data dictionary, read once from its ``private.dic`` file.

    Returns
    -------
    dict
        ``(group, private creator, element low byte)`` → ``(VR, name)``; empty when no
        ``private.dic`` is found (see :data:`DCMTK_PRIVATE_DIC_GLOBS`).

    Notes
    -----
    Lines look like ``(0029,"GEMS_IMPS_01",04)<TAB>SL<TAB>LowerRangeOfPixels<TAB>1<TAB>PrivateTag``;
    the first entry of a key wins, as in DCMTK's dictionary, and spaces are dropped from a name (the
    file has "End NumberForBaseline" where the reference answers "EndNumberForBaseline").
    Source: DCMTK ``dcmdata/data/private.dic``.
    """
    global _DCMTK_PRIVATE
    if _DCMTK_PRIVATE is None:
        import glob
        import os
        import re
        table: dict[tuple[int, str, int], tuple[str, str]] = {}
        paths = [os.environ["PACSBOX_DCMTK_PRIVATE_DIC"]] if os.environ.get("PACSBOX_DCMTK_PRIVATE_DIC") else \
            sorted(p for g in DCMTK_PRIVATE_DIC_GLOBS for p in glob.glob(g))
        line_re = re.compile(r'\(([0-9A-Fa-f]{4}),"([^"]*)",([0-9A-Fa-f]{2,4})\)\t([^\t]*)\t([^\t]+)')
        for path in paths[:1]:
            try:
                with open(path, encoding="latin-1") as f:
                    for line in f:
                        m = line_re.match(line)
                        if m:
                            key = (int(m.group(1), 16), m.group(2), int(m.group(3), 16) & 0xFF)
                            table.setdefault(key, (m.group(4), m.group(5).replace(" ", "")))
            except OSError:
                continue
        _DCMTK_PRIVATE = table
    return _DCMTK_PRIVATE




def _unpack(vr: str, value: bytes, little: bool) -> str | None:
    """Numbers of a binary VR as Orthanc writes them; None when the value is empty."""
    fmt, size = _NUMERIC[vr]
    count = len(value) // size
    if count == 0:
        return None
    vals = struct.unpack(("<" if little else ">") + fmt * count, value[:count * size])
    if vr == "FL" or vr == "FD":
        # Orthanc prints both with 17 significant digits (boost::lexical_cast of a double)
        return "\\".join(format(v, ".17g") for v in vals)
    return "\\".join(str(v) for v in vals)


#: VRs whose values DCMTK hands over as strings (``DcmElement::isaString``).
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
                        "UC", "UI", "UR", "UT"})

#: "US or SS" tags that DCMTK resolves from (0028,0103) *Pixel Representation* when the
#: file does not say (implicit VR); the other ones stay unresolved and render as null.
_PIXEL_VALUE_XS = frozenset({0x00280104, 0x00280105, 0x00280106, 0x00280107, 0x00280108, 0x00280109,
                             0x00280110, 0x00280111, 0x00280120, 0x00280121, 0x00603004, 0x00603006,
                             0x00409211, 0x00409216})


def dictionary_vr(tag: int, creator: str | None = None, pixel_representation: int = 0) -> str:
    """The VR DCMTK's dictionary gives a tag whose VR the file does not state.

    Parameters
    ----------
    tag : int
    creator : str, optional
        Private creator of the tag's block.
    pixel_representation : int
        (0028,0103) of the dataset, used for "US or SS" pixel-value tags.

    Returns
    -------
    str
        A two-letter VR; ``"UN"`` when unknown or ambiguous.
    """
    group, elem = tag >> 16, tag & 0xFFFF
    if group & 1:
        if 0x0010 <= elem <= 0x00FF:
            return "LO"
        if elem == 0:
            return "UL"
        if creator:
            try:
                vr = get_private_entry(tag, creator)[0]
            except KeyError:
                return "UN"
            return vr if len(vr) == 2 else "UN"
        return "UN"
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UL" if elem == 0 else "UN"
    if vr == "US or SS":
        if tag in _PIXEL_VALUE_XS:
            return "SS" if pixel_representation == 1 else "US"
        return "UN"
    if len(vr) != 2:
        return "OW" if "OW" in vr else "UN"
    return vr


def un_text(value: bytes | None) -> str:
    """Text of an explicit-VR ``UN`` element whose dictionary VR is a string.

    Orthanc 1.10.1 keeps such values raw: no charset conversion, padding kept. DCMTK
    pads an odd-length value with a NUL byte and Orthanc then drops one trailing NUL
    (verified: ``b"id11111 "`` stays ``"id11111 "``, and is hashed so in the Orthanc
    identifiers; ``b"Hospital\\0"`` (9 bytes) stays ``"Hospital\\0"``).
    """
    if not value:
        return ""
    if len(value) % 2 == 0 and value[-1:] == b"\x00":
        value = value[:-1]
    return value.decode("latin-1")


def _decode_string(vr: str, value: bytes, encodings: list[str]) -> str:
    if vr in _TEXT_VRS:
        if len(encodings) == 1 and b"\x1b" not in value:
            # one character set, no ISO 2022 escape: a plain decode is what pydicom does
            try:
                return value.decode(encodings[0]).rstrip(" \x00")
            except (UnicodeDecodeError, LookupError):
                pass
        if vr == "PN":
            s = decode_bytes(value, encodings, {0x5E, 0x3D, 0x5C})
        else:
            s = decode_bytes(value, encodings, {0x5C} if vr not in ("LT", "ST", "UT") else set())
        return s.rstrip(" \x00")
    s = value.decode("latin-1")
    if vr in ("DS", "IS", "UI", "DA", "TM", "DT"):
        return s.strip(" \x00")
    return s.rstrip(" \x00")


def value_text(tag: int, file_vr: str | None, value: bytes | None, little: bool, encodings: list[str],
               creator: str | None = None, pixel_representation: int = 0) -> str | None:
    """Orthanc's text of one undecoded value, or None for binary/unknown (JSON ``null``).

    Parameters
    ----------
    tag : int
    file_vr : str or None
        The VR written in the file; None for implicit VR.
    value : bytes or None
        The raw value bytes.
    little : bool
        Byte order of binary numbers.
    encodings : list of str
        Python codecs from (0008,0005).
    creator : str, optional
        Private creator of the tag's block.
    pixel_representation : int
        (0028,0103) of the dataset.

    Returns
    -------
    str or None
        Strings decoded and stripped of their padding, numbers in decimal (several
        values joined by ``\\``), an attribute tag as ``gggg,eeee`` (first value only, as
        Orthanc); None for binary VRs, empty numbers and unknown VRs.
    """
    if file_vr is None:
        vr = dictionary_vr(tag, creator, pixel_representation)
    elif file_vr == "UN":
        vr = dictionary_vr(tag, creator, pixel_representation)
        return un_text(value) if vr in STRING_VRS else None
    else:
        vr = file_vr
    if vr in STRING_VRS:
        return _decode_string(vr, value, encodings) if value else ""
    if value is None:
        return None
    if vr in _NUMERIC:
        return _unpack(vr, value, little)
    if vr == "AT":
        if len(value) < 4:
            return None
        g, e = struct.unpack(("<" if little else ">") + "HH", value[:4])
        return f"{g:04x},{e:04x}"
    return None


def raw_text(raw: RawDataElement, encodings: list[str]) -> str | None:
    """Render a raw element's value as Orthanc does in JSON, or None for binary/sequence.

    Parameters
    ----------
    raw : RawDataElement
        Undecoded element (``value`` is bytes; ``VR`` None for implicit VR).
    encodings : list of str
        Python codecs from (0008,0005), as returned by :func:`pydicom.charset.convert_encodings`.

    Returns
    -------
    str or None
        See :func:`value_text`.
    """
    return value_text(int(raw.tag), raw.VR, raw.value, raw.is_little_endian, encodings)


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
    if v is None or v == "":
        return "" if vr in STRING_VRS else None
    if vr == "FL" or vr == "FD":
        vals = v if isinstance(v, (list, tuple, MultiValue)) else [v]
        return "\\".join(format(float(x), ".17g") for x in vals)
    if vr == "AT":
        vals = v if isinstance(v, (list, tuple, MultiValue)) else [v]
        return tag_to_key(int(Tag(vals[0]))) if vals else None
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
        return _encodings_of_raw_value(raw.value, default)
    v = raw.value
    terms = list(v) if isinstance(v, (list, tuple)) or (hasattr(v, "__iter__") and not isinstance(v, str)) else [v]
    return _encodings_of_terms([t for t in terms if t is not None], default)


def _encodings_of_raw_value(value: bytes | None, default: str) -> list[str]:
    """Python codecs of the undecoded value of a (0008,0005) element."""
    val = value.decode("ascii", "replace").strip(" \x00") if value else ""
    return _encodings_of_terms([t.strip() for t in val.split("\\")], default)


def _encodings_of_terms(terms: list[str], default: str) -> list[str]:
    """Python codecs of the defined terms of a Specific Character Set (``[default]`` when
    there are none or one is unknown, as DCMTK falls back)."""
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
        if text is None:
            text = ""
        elif len(text) > MAX_TAG_LENGTH and len(text.encode("utf-8")) > MAX_TAG_LENGTH:
            continue  # too long: Orthanc does not index it
        out[kw] = text
    return out


_KW_TAG = {kw: int(tag_for_keyword(kw)) for kw in INGEST_KEYWORDS}

#: (level index, keyword, tag) of every main tag, in the order of :data:`MAIN_TAGS`.
_MAIN_TAG_PLAN = tuple((i, kw, _KW_TAG[kw]) for i, lvl in enumerate(LEVEL_NAMES) for kw in MAIN_TAGS[lvl])


def raw_encodings(raw: Mapping[int, RawDataElement], default: str = "latin_1") -> list[str]:
    """Python codecs of the (0008,0005) element of a scanned file (see :func:`dataset_encodings`)."""
    el = raw.get(0x00080005)
    if el is None:
        return [default]
    return _encodings_of_raw_value(el.value, default)


def main_tags_from_raw(raw: Mapping[int, RawDataElement], encodings: list[str]) -> list[dict[str, str]]:
    """The main tags of the four levels from a scanned file's raw elements (ingest hot path).

    Same values as :func:`main_tags` on a dataset of those elements, without building one.

    Parameters
    ----------
    raw : mapping of int to RawDataElement
        ``ScanResult.raw`` (top-level elements, undecoded).
    encodings : list of str
        See :func:`raw_encodings`.

    Returns
    -------
    list of 4 dict of str to str
        Patient, study, series and instance main tags (only tags present in the file).
    """
    out: list[dict[str, str]] = [{}, {}, {}, {}]
    for level, kw, tag in _MAIN_TAG_PLAN:
        el = raw.get(tag)
        if el is None:
            continue
        text = value_text(tag, el.VR, el.value, el.is_little_endian, encodings)
        if text is None:
            text = ""
        elif len(text) > MAX_TAG_LENGTH and len(text.encode("utf-8")) > MAX_TAG_LENGTH:
            continue  # too long: Orthanc does not index it
        out[level][kw] = text
    return out



def _creator_text(elem) -> str | None:
    """The private creator an element (gggg,0010-00FF) of an odd group declares, or None.

    A creator element written with VR ``UN`` is not used (DCMTK does not register it).
    """
    if elem.VR == "UN":
        return None
    v = elem.value
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v).decode("latin-1")
    if isinstance(v, str) and v.strip(" \x00"):
        return v.rstrip(" \x00")
    return None


#: Names that moved to :mod:`.tag_dictionary` and :mod:`.dataset_json`, still importable
#: from here (loaded on first use: those modules import this one).
_MOVED = {"TagDictionary": "tag_dictionary", "tag_dictionary": "tag_dictionary", "dataset_to_json": "dataset_json"}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f".{module}", __package__), name)
