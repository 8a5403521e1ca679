"""The values of ``/tools/create-dicom``'s ``Tags``: data URIs and :class:`ValueEncoder`, which
reads a tag name (keyword, ``gggg,eeee`` or a ``Dictionary`` name) and encodes its value for
the tag's VR and the data set's character set. Part of :mod:`pacsbox_pdf.create`.
"""
from __future__ import annotations

import binascii
import re
import struct
from typing import Any

import pydicom
from pydicom.charset import encode_string
from pydicom.dataelem import RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from pacsbox import ErrorCode, OrthancError, TagDictionary, tag_to_key

_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                         "UI", "UR", "UT"})
_NUMBERS = {"US": ("H", 0, 0xFFFF), "SS": ("h", -0x8000, 0x7FFF), "UL": ("I", 0, 0xFFFFFFFF),
            "SL": ("i", -0x80000000, 0x7FFFFFFF), "SV": ("q", -(1 << 63), (1 << 63) - 1),
            "UV": ("Q", 0, (1 << 64) - 1), "FL": ("f", None, None), "FD": ("d", None, None)}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INTEGER = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


# ---- data URIs ------------------------------------------------------------------------------

def decode_data_uri(text: str) -> tuple[str, bytes]:
    """Split a ``data:<mime>;base64,<payload>`` string (RFC 2397) as Orthanc does.

    Parameters
    ----------
    text : str

    Returns
    -------
    tuple of (str, bytes)
        The MIME type in lower case and the decoded payload.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` for anything else (no ``data:`` prefix, no ``;base64,``,
        a character outside the base64 alphabet, a bad length).
    """
    if not text.startswith("data:"):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
    head, sep, payload = text.partition(";base64,")
    mime = head[5:]
    if mime.startswith("/"):
        mime = mime[1:]
    if not sep or not mime or ";" in mime:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
    try:
        data = binascii.a2b_base64(payload, strict_mode=True)  # the alphabet only, as Orthanc's regex
    except (binascii.Error, ValueError):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT) from None
    return mime.lower(), data


# ---- values ------------------------------------------------------------------------------------

def _out_of_range(tag: int, value: str) -> OrthancError:
    return OrthancError(ErrorCode.BAD_FILE_FORMAT,
                        f"While creating a DICOM instance, tag ({tag_to_key(tag)}) has out-of-range value: \"{value}\"")


def _pad(data: bytes, vr: str) -> bytes:
    if len(data) & 1:
        return data + (b"\x00" if vr in ("UI", "OB", "UN") or vr in _BINARY_VRS else b" ")
    return data


def _raw(tag: int, vr: str, data: bytes) -> RawDataElement:
    data = _pad(data, vr)
    return RawDataElement(Tag(tag), vr, len(data), data, 0, False, True)


def _put(ds: pydicom.Dataset, elem: Any) -> None:
    """Add an element to a dataset as it is.

    ``Dataset.__setitem__`` decodes a raw private element whose creator is already in
    the dataset (and may then change a ``UN`` into the VR of pydicom's private
    dictionary); the bytes built here are final, so they go in unchanged.
    """
    if isinstance(elem, RawDataElement):
        ds._dict[elem.tag] = elem  # noqa: SLF001 - see the docstring
    else:
        ds[elem.tag] = elem


class ValueEncoder:
    """Turns the JSON values of ``Tags`` into elements, by VR.

    Parameters
    ----------
    dictionary : TagDictionary
        The app's ``Dictionary`` option.
    encodings : list of str
        Python codecs of the new file's (0008,0005).
    private_creator : str
        ``PrivateCreator`` of the request (or ``DefaultPrivateCreator``).
    decode_binary : bool
        ``InterpretBinaryTags``: a data URI in a binary element is decoded.
    """

    def __init__(self, dictionary: TagDictionary, encodings: list[str], private_creator: str,
                 decode_binary: bool) -> None:
        self.dictionary = dictionary
        self.encodings = encodings
        self.private_creator = private_creator
        self.decode_binary = decode_binary
        #: ``(group, block)`` → creator, for the private elements written so far.
        self.blocks: dict[tuple[int, int], str] = {}

    def parse(self, name: str) -> tuple[int, str | None]:
        """``(tag, creator)`` of a key of ``Tags``.

        Raises
        ------
        OrthancError
            500 ``UNKNOWN_DICOM_TAG`` for an unknown name, as Orthanc.
        """
        try:
            tag = self.dictionary.parse(name)
        except KeyError:
            raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG) from None
        if not tag >> 16 & 1 or (tag & 0xFFFF) <= 0x00FF:
            return tag, None
        creator = self.dictionary.creators.get(name.strip()) or self.private_creator or None
        return tag, creator

    def element(self, tag: int, creator: str | None, value: Any):
        """The element of ``tag`` holding ``value`` (a str, None, or a list for a sequence).

        Raises
        ------
        OrthancError
            400 ``BAD_PARAMETER_TYPE`` "Bad Parameter type for tag gggg,eeee" for a number,
            a Boolean or an object, or a list on a tag that is not a sequence; 400
            ``BAD_FILE_FORMAT`` "... has out-of-range value ..." for a string that does
            not fit the VR (text in a US, a string for a sequence).
        """
        vr = self.dictionary.vr(tag, creator)
        if tag >> 16 & 1 and (tag & 0xFFFF) > 0x00FF and creator:
            self.blocks.setdefault((tag >> 16, (tag >> 8) & 0xFF), creator)
        if value is None:
            if vr == "SQ":
                return pydicom.DataElement(tag, "SQ", Sequence())
            return _raw(tag, vr, b"")
        if isinstance(value, list):
            if vr != "SQ":
                raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {tag_to_key(tag)}")
            items = []
            for item in value:
                if not isinstance(item, dict):
                    raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
                sub = pydicom.Dataset()
                for k in sorted(item):
                    t, c = self.parse(k)
                    _put(sub, self.element(t, c, item[k]))
                self.add_creators(sub)
                items.append(sub)
            return pydicom.DataElement(tag, "SQ", Sequence(items))
        if not isinstance(value, str):
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad Parameter type for tag {tag_to_key(tag)}")
        return _raw(tag, vr, self.encode(tag, vr, value))

    def encode(self, tag: int, vr: str, value: str) -> bytes:
        """The bytes of a string value in VR ``vr`` (without padding)."""
        if vr in _STRING_VRS:
            if value.isascii():
                return value.encode("ascii")
            try:
                return encode_string(value, self.encodings)
            except Exception:  # noqa: BLE001 - a character the charset lacks: replaced
                return value.encode(self.encodings[0], "replace")
        if vr in _NUMBERS:
            # one value, as boost::lexical_cast reads it: no spaces, no backslash; a
            # negative value of an unsigned VR wraps around ("-1" in a US is 65535)
            fmt, lo, hi = _NUMBERS[vr]
            if lo is None:
                if not _FLOAT.fullmatch(value):
                    raise _out_of_range(tag, value)
                return struct.pack("<" + fmt, float(value))
            if not _INTEGER.fullmatch(value):
                raise _out_of_range(tag, value)
            n = int(value, 10)
            if lo == 0 and -hi <= n < 0:
                n += hi + 1
            if not lo <= n <= hi:
                raise _out_of_range(tag, value)
            return struct.pack("<" + fmt, n)
        if vr == "SQ":
            raise _out_of_range(tag, value)
        if vr == "AT":
            try:
                t = self.dictionary.parse(value)
            except KeyError:
                raise _out_of_range(tag, value) from None
            return struct.pack("<HH", t >> 16, t & 0xFFFF)
        # binary VRs (OB, OW, UN...): a data URI is decoded when InterpretBinaryTags
        if self.decode_binary and value.startswith("data:"):
            return decode_data_uri(value)[1]
        return value.encode("utf-8")

    def add_creators(self, ds: pydicom.Dataset) -> None:
        """Write (gggg,00bb) *Private Creator* for each private block written without one."""
        for (group, block), creator in self.blocks.items():
            tag = (group << 16) | block
            if tag not in ds and any((t >> 16) == group and (t >> 8) & 0xFF == block and t & 0xFFFF > 0xFF
                                     for t in ds.keys()):
                _put(ds, _raw(tag, "LO", creator.encode("ascii", "replace")))
        self.blocks.clear()
