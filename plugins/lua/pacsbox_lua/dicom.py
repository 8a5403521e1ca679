"""DICOM queries as Orthanc 1.10.1 gives them to its Lua filters, and back.

- ``IncomingFindRequestFilter`` and ``OutgoingFindRequestFilter`` see a C-FIND query as a
  flat table ``{"gggg,eeee": "value"}`` (Orthanc's ``LuaFunctionCall::PushDicom``): every
  element but the sequences, private ones included, values as UTF-8 text, binary values
  as ``""``; what they return is read back as ``ExecuteToDicom`` does (a table of tag
  names, ``gggg,eeee`` or keywords, to strings; numbers taken as strings).
- ``IncomingWorklistRequestFilter`` sees the worklist query in Orthanc's "short" JSON
  (``DicomToJsonFormat_Short`` without flags): sequences as arrays of tables, private,
  unknown and binary elements left out; what it returns becomes the query again
  (``ParsedDicomFile::CreateFromJson``).

Only pacsbox's public API and pydicom are used (this plugin does not import the
``dicom_net`` plugin, whose hooks receive these data sets).
"""
from __future__ import annotations

from typing import Any, Mapping

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from pacsbox import ErrorCode, OrthancError, element_text, parse_tag, tag_to_key

_NUMBER_VRS = {"US": int, "SS": int, "UL": int, "SL": int, "UV": int, "SV": int, "FL": float, "FD": float}
_BINARY_VRS = frozenset(("OB", "OW", "OF", "OD", "OL", "OV", "UN"))
_TEXT_VRS = frozenset(("LT", "ST", "UT", "UR"))

NOT_A_TABLE = "Lua: The script must return a table"
NOT_STRINGS = "Lua: The script must return a table mapping names of DICOM tags to strings"


def _codecs(ds: Dataset, default: str = "latin_1") -> list[str]:
    """Python codecs of ``ds``'s (0008,0005) (``[default]`` without one)."""
    el = ds.get_item(0x00080005)
    if el is None:
        return [default]
    value = ds.SpecificCharacterSet
    terms = [str(t).strip() for t in (value if isinstance(value, (list, tuple, MultiValue)) else [value]) if t]
    if not terms:
        return [default]
    try:
        return convert_encodings(terms)
    except Exception:  # noqa: BLE001 - unknown terms: the default
        return [default]


def query_table(query: Dataset, default_codec: str = "latin_1") -> dict[str, str]:
    """A C-FIND identifier as ``IncomingFindRequestFilter`` receives it.

    Parameters
    ----------
    query : pydicom.Dataset
        The identifier.
    default_codec : str
        Codec of the values when the identifier has no (0008,0005) (``DefaultEncoding``).

    Returns
    -------
    dict of str to str
        ``{"gggg,eeee": text}`` for every element of group 0008 or above but the
        sequences (Orthanc's ``FixFindQuery``); binary values (and values that cannot be
        decoded) as ``""``.
    """
    codecs = _codecs(query, default_codec)
    out: dict[str, str] = {}
    for tag in list(query.keys()):
        if int(tag) >> 16 < 0x0008:
            continue
        try:
            el = query[tag]
        except Exception:  # noqa: BLE001 - an undecodable value counts as empty
            out[tag_to_key(int(tag))] = ""
            continue
        if el.VR == "SQ":
            continue
        out[tag_to_key(int(tag))] = _text(el, codecs) or ""
    return out


def _text(el: DataElement, codecs: list[str]) -> str | None:
    """Orthanc's text of a decoded element (values joined by ``\\``); None when binary
    or undecodable."""
    try:
        if el.VR == "PN":      # a PersonName decodes itself with the data set's character set
            v = el.value
            if v is None:
                return ""
            return "\\".join(str(x) for x in (v if isinstance(v, (list, tuple, MultiValue)) else [v]))
        return element_text(el, codecs)
    except Exception:  # noqa: BLE001
        return None


def fields_table(fields: Mapping[int, str]) -> dict[str, str]:
    """An outgoing query (tag -> value) as ``OutgoingFindRequestFilter`` receives it."""
    return {tag_to_key(t): v for t, v in sorted(fields.items())}


def table_fields(result: Any) -> dict[int, str]:
    """The result of a Lua filter read as Orthanc's ``ExecuteToDicom``.

    Parameters
    ----------
    result : object
        The filter's result, converted with ``keep_strings`` (numbers as strings).

    Returns
    -------
    dict of int to str
        Tag -> value; empty for an empty table.

    Raises
    ------
    OrthancError
        ``LUA_BAD_OUTPUT`` when the result is not a table mapping tag names to strings;
        ``UNKNOWN_DICOM_TAG`` for a key that names no tag.
    """
    if result == []:
        return {}
    if not isinstance(result, dict):
        raise OrthancError(ErrorCode.LUA_BAD_OUTPUT, NOT_A_TABLE)
    out: dict[int, str] = {}
    for key, value in result.items():
        if not isinstance(value, str):
            raise OrthancError(ErrorCode.LUA_BAD_OUTPUT, NOT_STRINGS)
        out[_tag(key)] = value
    return out


def _tag(key: str) -> int:
    try:
        return parse_tag(key)
    except KeyError:
        raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG, f"Unknown DICOM tag: {key}") from None


def _vr(tag: int, original: Dataset | None) -> str:
    if original is not None and tag in original:
        vr = original.get_item(tag).VR
        if vr and vr != "UN":
            return vr
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
            return "LO"   # private creator
        return "UN"


def element(tag: int, text: str, original: Dataset | None = None) -> DataElement:
    """A data element of ``tag`` holding ``text`` (Orthanc's text form of a value).

    Parameters
    ----------
    tag : int
    text : str
        Values separated by ``\\`` for the multi-valued VRs.
    original : pydicom.Dataset, optional
        A data set whose element of the same tag gives the VR (private tags).

    Returns
    -------
    pydicom.DataElement
        With the VR of ``original``, else of the dictionary; numbers parsed for binary
        number VRs (empty or unparseable: no value), bytes for the other binary VRs, an
        empty sequence for a sequence given as ``""``.

    Raises
    ------
    OrthancError
        ``BAD_PARAMETER_TYPE`` for a sequence given as a non-empty text.
    """
    vr = _vr(tag, original)
    if vr == "SQ":   # a sequence key given as text: asked for, with no constraint
        if text:
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {tag_to_key(tag)}")
        return DataElement(tag, "SQ", Sequence([]))
    if text == "":
        return DataElement(tag, vr, None if vr in _NUMBER_VRS or vr in _BINARY_VRS else "")
    conv = _NUMBER_VRS.get(vr)
    if conv is not None:
        try:
            items = [conv(x) for x in text.split("\\")]
        except ValueError:
            return DataElement(tag, vr, None)
        return DataElement(tag, vr, items[0] if len(items) == 1 else items)
    if vr in _BINARY_VRS:
        return DataElement(tag, vr, text.encode("utf-8"))
    if "\\" in text and vr not in _TEXT_VRS:
        return DataElement(tag, vr, text.split("\\"))
    return DataElement(tag, vr, text)


def fields_query(fields: Mapping[int, str], original: Dataset) -> Dataset:
    """The identifier an ``IncomingFindRequestFilter`` result stands for.

    Parameters
    ----------
    fields : mapping of int to str
        From :func:`table_fields`.
    original : pydicom.Dataset
        The identifier the filter received: its sequences are kept (Orthanc keeps the
        sequences to return apart from what the filter sees) and its VRs reused.

    Returns
    -------
    pydicom.Dataset
    """
    out = Dataset()
    for tag in sorted(fields):
        out.add(element(tag, fields[tag], original))
    for tag in list(original.keys()):
        el = original.get_item(tag)
        if el.VR == "SQ" and tag not in out:
            out.add(original[tag])
    return out


def worklist_json(query: Dataset, default_codec: str = "latin_1", _codecs_in: list[str] | None = None) -> dict[str, Any]:
    """A worklist identifier as ``IncomingWorklistRequestFilter`` receives it (Orthanc's
    "short" JSON without flags).

    Parameters
    ----------
    query : pydicom.Dataset
        The identifier (or one item of a sequence).
    default_codec : str
        Codec without (0008,0005).

    Returns
    -------
    dict
        ``{"gggg,eeee": text or [item, ...]}``; private, unknown and binary elements
        left out.
    """
    codecs = _codecs_in or _codecs(query, default_codec)
    out: dict[str, Any] = {}
    for tag in list(query.keys()):
        t = int(tag)
        if t >> 16 & 1 or not dictionary_has_tag(t):
            continue
        el = query[tag]
        if el.VR == "SQ":
            out[tag_to_key(t)] = [worklist_json(item, default_codec, codecs) for item in (el.value or [])]
            continue
        text = _text(el, codecs)
        if text is not None:
            out[tag_to_key(t)] = text
    return out


def json_worklist(result: Any, original: Dataset | None = None) -> Dataset:
    """The identifier an ``IncomingWorklistRequestFilter`` result stands for (Orthanc's
    ``ParsedDicomFile::CreateFromJson``).

    Parameters
    ----------
    result : object
        The filter's result, converted with ``keep_strings``.
    original : pydicom.Dataset, optional
        The identifier the filter received (VRs of private elements).

    Returns
    -------
    pydicom.Dataset

    Raises
    ------
    OrthancError
        ``LUA_BAD_OUTPUT`` when the result is not a (non-empty) table; ``BAD_PARAMETER_TYPE``
        for a value that is not a string (an array of tables for a sequence);
        ``UNKNOWN_DICOM_TAG`` for a key that names no tag. Orthanc 1.10.1 fails so.
    """
    if not isinstance(result, dict):
        raise OrthancError(ErrorCode.LUA_BAD_OUTPUT, NOT_A_TABLE)
    out = Dataset()
    for key in result:
        tag = _tag(key)
        value = result[key]
        is_sequence = _vr(tag, original) == "SQ"
        if isinstance(value, str) and not is_sequence:
            out.add(element(tag, value, original))
        elif isinstance(value, list) and is_sequence:
            sub = original.get(tag) if original is not None else None
            items = []
            for i, item in enumerate(value):
                if item == []:
                    item = {}   # an empty Lua table
                if not isinstance(item, dict):
                    raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {key}")
                model = sub.value[i] if sub is not None and sub.VR == "SQ" and i < len(sub.value) else None
                items.append(json_worklist(item, model))
            out.add(DataElement(tag, "SQ", Sequence(items)))
        else:
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {key}")
    return out
