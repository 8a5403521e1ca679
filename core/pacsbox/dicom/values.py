"""The values of DICOM elements at the byte level, for :mod:`pacsbox.dicom.rewrite`: VRs,
the element header reader, character sets (PS3.5 section 6.1) and the encoding of new
values (implicit or explicit VR, little or big endian; PS3.5 sections 6.2 and 7).
"""
from __future__ import annotations

import base64
import struct
import warnings
from typing import Any, Callable, Mapping, Sequence

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, get_private_entry

ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
SPECIFIC_CHARACTER_SET = 0x00080005
SOP_INSTANCE_UID = 0x00080018
PIXEL_DATA = 0x7FE00010

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_LONG_VRS_B = frozenset(v.encode() for v in _LONG_VRS)
_VALID_VRS = (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV", "OW",
    "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV")
_VALID_VRS_B = frozenset(v.encode() for v in _VALID_VRS)
#: 2 VR bytes of an explicit VR header → (VR, has a 4-byte length)
_VRINFO = {v.encode(): (v, v in _LONG_VRS) for v in _VALID_VRS}
#: Text VRs whose bytes depend on the Specific Character Set.
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "PN", "UC", "UT"})
#: VRs Orthanc treats as strings (DCMTK ``DcmByteString`` family).
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                        "UI", "UR", "UT"})
_NUMERIC = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
DATA_URI_PREFIX = "data:application/octet-stream;base64,"


class RewriteError(ValueError):
    """The file cannot be rewritten (malformed structure, or a value that cannot be encoded)."""


class ValueTypeError(RewriteError):
    """A replacement value does not fit the tag's VR (Orthanc ``BadParameterType``).

    Attributes
    ----------
    tag : int
    """

    def __init__(self, tag: int, message: str | None = None) -> None:
        super().__init__(message or f"Bad Parameter type for tag {tag >> 16:04x},{tag & 0xFFFF:04x}")
        self.tag = tag


_VR_CACHE: dict[int, str] = {}


def dictionary_vr(tag: int, private_creator: str | None = None,
                  private_dictionary: Mapping[tuple[int, int, str], str] | None = None) -> str:
    """The VR of ``tag`` from the data dictionary (``UN`` when unknown).

    Parameters
    ----------
    tag : int
        ``0xGGGGEEEE``.
    private_creator : str, optional
        Private creator used for a private tag (odd group); without it a private
        data element is ``UN`` (as Orthanc does).
    private_dictionary : mapping, optional
        ``(group, element low byte, creator) → VR`` from the ``Dictionary`` option.

    Returns
    -------
    str
        Two-letter VR; ambiguous VRs (``US or SS``, ``OB or OW``) give their first
        choice (``OW`` for Pixel Data).
    """
    group, elem = tag >> 16, tag & 0xFFFF
    if group & 1:
        if elem == 0:
            return "UL"
        if 0x0010 <= elem <= 0x00FF:
            return "LO"
        if private_creator:
            if private_dictionary:
                vr = private_dictionary.get((group, elem & 0xFF, private_creator))
                if vr:
                    return vr
            try:
                vr = get_private_entry(tag, private_creator)[0]
                return vr.split(" or ")[0] if vr else "UN"
            except KeyError:
                pass
        return "UN"
    vr = _VR_CACHE.get(tag)
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UL" if elem == 0 else "UN"
        if " or " in vr:
            vr = "OW" if tag == PIXEL_DATA else vr.split(" or ")[0]
        _VR_CACHE[tag] = vr
    return vr


# ------------------------------------------------------------------------------------------
# character sets
# ------------------------------------------------------------------------------------------

class Charset:
    """The character set of a data set (PS3.5 section 6.1).

    Parameters
    ----------
    terms : list of str
        Defined terms of (0008,0005), e.g. ``["ISO_IR 100"]``; empty for the default
        repertoire.
    default_codec : str
        Python codec used to decode text when (0008,0005) is absent (Orthanc option
        ``DefaultEncoding``; ``latin_1`` by default).
    """

    def __init__(self, terms: Sequence[str], default_codec: str = "latin_1") -> None:
        self.terms = [t for t in terms if t is not None]
        if not self.terms or self.terms == [""]:
            self.terms = []
            self.codecs = [default_codec]
            self.present = False
        else:
            self.present = True
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.codecs = convert_encodings(self.terms)
            except Exception:  # noqa: BLE001 - unknown term: decode like the default repertoire
                self.codecs = [default_codec]
        self.is_utf8 = self.codecs[0] in ("utf_8", "UTF8", "utf-8")

    @classmethod
    def from_value(cls, raw: bytes | None, default_codec: str = "latin_1") -> "Charset":
        """Build from the raw bytes of (0008,0005) (None when absent)."""
        if raw is None:
            return cls([], default_codec)
        text = raw.decode("ascii", "replace").strip(" \x00")
        return cls([t.strip() for t in text.split("\\")], default_codec)

    def encode(self, text: str) -> bytes | None:
        """Encode ``text``; None when the character set cannot represent it."""
        if not self.present:
            try:
                return text.encode("ascii")
            except UnicodeError:
                return None
        try:
            return text.encode(self.codecs[0])
        except (UnicodeError, LookupError):
            return None

    def decode(self, value: bytes, vr: str) -> str:
        """Decode the bytes of a text element (ISO 2022 escapes handled by pydicom)."""
        if vr == "PN":
            delims = {0x5E, 0x3D, 0x5C}
        elif vr in ("LT", "ST", "UT"):
            delims = set()
        else:
            delims = {0x5C}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return decode_bytes(value, self.codecs, delims)


UTF8 = Charset(["ISO_IR 192"])


# ------------------------------------------------------------------------------------------
# encoding of new values
# ------------------------------------------------------------------------------------------

class Encoding:
    """The byte encoding of a data set: implicit or explicit VR, little or big endian."""

    __slots__ = ("implicit", "little", "p", "tag_fmt", "u16", "u32", "item_hdr", "hdr_implicit", "hdr_explicit")

    def __init__(self, implicit: bool, little: bool) -> None:
        self.implicit = implicit
        self.little = little
        self.p = "<" if little else ">"
        self.tag_fmt = struct.Struct(self.p + "HH")
        self.u16 = struct.Struct(self.p + "H")
        self.u32 = struct.Struct(self.p + "I")
        self.item_hdr = struct.Struct(self.p + "HHI")
        self.hdr_implicit = struct.Struct(self.p + "HHI")
        self.hdr_explicit = struct.Struct(self.p + "HH2sH")

    def header(self, tag: int, vr: str, length: int) -> bytes:
        """Element header (tag, VR, length) in this encoding."""
        tg = self.tag_fmt.pack(tag >> 16, tag & 0xFFFF)
        if self.implicit:
            return tg + self.u32.pack(length)
        if vr in _LONG_VRS:
            return tg + vr.encode() + b"\x00\x00" + self.u32.pack(length)
        if length > 0xFFFF:
            raise ValueTypeError(tag, f"Value too long for VR {vr} in tag {tag >> 16:04x},{tag & 0xFFFF:04x}")
        return tg + vr.encode() + self.u16.pack(length)

    def element(self, tag: int, vr: str, value: bytes) -> bytes:
        """A whole element; ``value`` is padded to an even length."""
        if len(value) & 1:
            value += b"\x00" if vr in ("UI", "OB", "UN") or vr in _BINARY else b" "
        return self.header(tag, vr, len(value)) + value

    def item(self, content: bytes) -> bytes:
        """A sequence item of defined length."""
        return self.item_hdr.pack(0xFFFE, 0xE000, len(content)) + content


def encode_text_value(tag: int, vr: str, text: str, charset: Charset) -> bytes:
    """Encode a string value for a string VR (unpadded).

    Raises
    ------
    UnicodeError
        ``charset`` cannot hold ``text`` (the caller switches the file to UTF-8).
    """
    if vr in TEXT_VRS:
        b = charset.encode(text)
        if b is None:
            raise UnicodeError(text)
        return b
    try:
        return text.encode("ascii")
    except UnicodeError:
        raise ValueTypeError(tag, f"Non-ASCII value for VR {vr} in tag {tag >> 16:04x},{tag & 0xFFFF:04x}") \
            from None


def encode_value(tag: int, vr: str, value: Any, enc: Encoding, charset: Charset,
                 vr_of: Callable[[int], str]) -> bytes:
    """Encode a JSON value (as in Orthanc's ``Replace``) into element value bytes.

    Parameters
    ----------
    tag : int
    vr : str
        VR of the element.
    value : str or list of dict
        A string (numbers and tags as text, several values separated by backslashes; a
        ``data:application/octet-stream;base64,`` URI gives binary content), or, for a
        sequence, a list of objects mapping tag names to values.
    enc : Encoding
    charset : Charset
    vr_of : callable
        ``vr_of(tag)`` gives the VR of nested tags; ``parse`` of names is done by the caller
        (nested objects must already map ``int`` tags to values).

    Returns
    -------
    bytes
        The value, unpadded (sequences: the encoded items).

    Raises
    ------
    ValueTypeError
        The value does not fit the VR (Orthanc ``BadParameterType``).
    UnicodeError
        A text value the character set cannot hold.
    """
    if vr == "SQ":
        if not isinstance(value, list):
            raise ValueTypeError(tag)
        out = []
        for item in value:
            if not isinstance(item, dict):
                raise ValueTypeError(tag)
            out.append(enc.item(encode_dataset(item, enc, charset, vr_of)))
        return b"".join(out)
    if not isinstance(value, str):
        raise ValueTypeError(tag)
    if value.startswith(DATA_URI_PREFIX):
        try:
            return base64.b64decode(value[len(DATA_URI_PREFIX):], validate=False)
        except (ValueError, TypeError):
            raise ValueTypeError(tag) from None
    if vr in STRING_VRS:
        return encode_text_value(tag, vr, value, charset)
    if vr in _NUMERIC:
        fmt = _NUMERIC[vr]
        parts = [p.strip() for p in value.split("\\")] if value.strip() else []
        try:
            nums = [float(p) if fmt in "fd" else int(p, 10) for p in parts]
            return struct.pack(enc.p + fmt * len(nums), *nums)
        except (ValueError, struct.error):
            raise ValueTypeError(tag) from None
    if vr == "AT":
        out = b""
        for p in (value.split("\\") if value.strip() else []):
            h = p.strip().replace(",", "").replace("(", "").replace(")", "")
            try:
                t = int(h, 16)
            except ValueError:
                raise ValueTypeError(tag) from None
            out += enc.tag_fmt.pack(t >> 16, t & 0xFFFF)
        return out
    # OB, OW, UN...: the bytes of the string
    return value.encode("utf-8")


def encode_dataset(items: Mapping[int, Any], enc: Encoding, charset: Charset,
                   vr_of: Callable[[int], str]) -> bytes:
    """Encode ``{tag: value}`` (sorted by tag) as the content of a sequence item."""
    out = []
    for t in sorted(items):
        vr = vr_of(t)
        out.append(enc.element(t, vr, encode_value(t, vr, items[t], enc, charset, vr_of)))
    return b"".join(out)


def element_header(data, pos: int, enc: "Encoding", implicit: bool) -> tuple[int, str | None, int, int]:
    """``(tag, VR or None, length, value position)`` of the element header at ``pos``.

    Items and delimiters (group FFFE) and implicit VR elements have no VR.

    Raises
    ------
    RewriteError
        The header runs past the end; ``_BadVR`` for an invalid explicit VR.
    """
    if pos + 8 > len(data):
        raise RewriteError("Truncated data set")
    g, e = enc.tag_fmt.unpack_from(data, pos)
    tag = (g << 16) | e
    if implicit or g == 0xFFFE:
        (length,) = enc.u32.unpack_from(data, pos + 4)
        return tag, None, length, pos + 8
    vrb = bytes(data[pos + 4:pos + 6])
    if vrb in _LONG_VRS_B:
        (length,) = enc.u32.unpack_from(data, pos + 8)
        return tag, vrb.decode("ascii"), length, pos + 12
    if vrb not in _VALID_VRS_B:
        raise _BadVR("Bad VR in explicit VR data set")
    (length,) = enc.u16.unpack_from(data, pos + 6)
    return tag, vrb.decode("ascii"), length, pos + 8


class _BadVR(RewriteError):
    """An explicit-VR header without a valid VR (the file may really be implicit VR)."""


def _strip(b: bytes) -> str:
    return b.decode("latin-1").strip(" \x00")
