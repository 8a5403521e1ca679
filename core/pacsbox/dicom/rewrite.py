"""Byte-level rewriting of DICOM Part-10 files: the engine under modify, anonymize, split
and merge.

A full pydicom parse and write of a 40 KB CT costs about 3 ms; walking its element headers
and copying the untouched byte runs costs a few hundred microseconds, and the Pixel Data
(often most of the file) is copied as one slice, never decoded. :func:`rewrite` walks the
data set once, asks a :class:`Rules` object what to do with each element (keep, remove,
clear, replace, remap its UID, descend into a sequence), and writes the new file with a
regenerated File Meta Information group (PS3.10 section 7.1).

What it handles: explicit and implicit VR little endian, explicit VR big endian, deflated
explicit VR little endian (inflated, rewritten, deflated again), encapsulated (compressed)
Pixel Data (copied unchanged), sequences of defined and undefined length (a rewritten
sequence is written back with defined lengths), the (0008,0005) *Specific Character Set*
of text values (PS3.5 section 6.1; a value that the file's character set cannot hold
switches the whole file to ``ISO_IR 192``, UTF-8, re-encoding every text element).
Group length elements (gggg,0000) of the data set are dropped (retired, PS3.5 section 7.2),
since removing elements would make them wrong.

Transfer syntax changes are not done here: see :func:`transcode` (pydicom).
"""
from __future__ import annotations

import base64
import enum
import struct
import uuid
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, get_private_entry

from ..version import __version__
from .scan import DicomFormatError, read_file_meta, scan
from .transcode import is_transfer_syntax as is_known_transfer_syntax  # noqa: F401  (routes use it)
from .transcode import transcode  # noqa: F401  (the modification job uses it)

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
UNCOMPRESSED = (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE)

#: (0002,0012) *Implementation Class UID* written by pacsbox: a UUID-derived UID
#: (ISO/IEC 9834-8, root ``2.25``), stable across versions.
IMPLEMENTATION_CLASS_UID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "https://pacsbox/implementation").int)
#: (0002,0013) *Implementation Version Name* (SH, at most 16 characters).
IMPLEMENTATION_VERSION_NAME = ("PACSBOX_" + __version__.replace(".", ""))[:16]

ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
SPECIFIC_CHARACTER_SET = 0x00080005
SOP_INSTANCE_UID = 0x00080018
PIXEL_DATA = 0x7FE00010


class Action(enum.IntEnum):
    """What :class:`Rules` says to do with one element (the first item of its answers)."""

    #: Copy the element as it is.
    KEEP = 0
    #: Drop it.
    REMOVE = 1
    #: Keep it with an empty value.
    CLEAR = 2
    #: Replace its value (the argument: a JSON value for :func:`encode_value`).
    REPLACE = 3
    #: Remap its string value with the rewriter's mapper (the argument: the level).
    MAP = 4
    #: Rewrite the items of the sequence.
    DESCEND = 5
    #: Internal: re-encode a kept text element in the new character set.
    REENCODE = -1


KEEP, REMOVE, CLEAR, REPLACE, MAP, DESCEND, REENCODE = (Action.KEEP, Action.REMOVE, Action.CLEAR, Action.REPLACE,
                                                        Action.MAP, Action.DESCEND, Action.REENCODE)

# The rewriter's two caches hold plain tuples, unpacked by name where they are read (a
# NamedTuple reads slower in the walk's loop: measured 7 % on an anonymization):
#
# - top rules, by tag: ``(vr, action, arg)``, the :meth:`Rules.top` answer for the VR it
#   was asked for;
# - known elements, by their 4 raw group/element bytes, for the fast path of
#   :meth:`_State._walk`: ``(vr_bytes, long_length, tag, removed)``: the 2 VR bytes it was
#   seen with, whether a 4-byte length follows, its tag, and whether it is dropped (else
#   copied as it is).

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


# ------------------------------------------------------------------------------------------
# rules
# ------------------------------------------------------------------------------------------

class Rules:
    """What to do with each element: subclass and override :meth:`top` / :meth:`nested`.

    ``parents`` is a tuple of ``(sequence tag, item index)`` from the top level down.
    Return values are ``(action, argument)``:

    - ``(KEEP, None)``; ``(REMOVE, None)``; ``(CLEAR, None)`` (empty value);
    - ``(REPLACE, value)`` with a JSON value for :func:`encode_value`;
    - ``(MAP, level)``: remap the string value with the :class:`Rewriter`'s mapper at
      ``level`` (0 patient, 1 study, 2 series, 3 instance);
    - ``(DESCEND, None)``: rewrite the sequence's items (asked again for each element).

    Attributes
    ----------
    replacements : dict of int to value
        Top-level tags to replace, inserted when absent (sorted insertion).
    """

    replacements: Mapping[int, Any] = {}

    def top(self, tag: int, vr: str) -> tuple[int, Any]:
        """Action for a top-level element."""
        return KEEP, None

    def nested(self, tag: int, vr: str, parents: tuple[tuple[int, int], ...]) -> tuple[int, Any]:
        """Action for an element inside a sequence item."""
        return KEEP, None

    def descend(self, tag: int, parents: tuple[tuple[int, int], ...]) -> bool:
        """Whether sequence ``tag`` (under ``parents``) may hold elements to change."""
        return False

    def inserts(self, parents: tuple[tuple[int, int], ...]) -> Mapping[int, Any]:
        """Tags to insert (or replace) in the item at ``parents`` (non-empty)."""
        return {}


@dataclass
class RewriteResult:
    """Output of :func:`rewrite`.

    Attributes
    ----------
    data : bytes
        The new Part-10 file.
    transfer_syntax : str
    identifiers : dict of int to (str, str)
        Original and new values of PatientID, StudyInstanceUID, SeriesInstanceUID and
        SOPInstanceUID (top level; ``("", "")`` when absent).
    charset_switched : bool
        The file was converted to ``ISO_IR 192``.
    """

    data: bytes
    transfer_syntax: str
    identifiers: dict[int, tuple[str, str]] = field(default_factory=dict)
    charset_switched: bool = False


IDENTIFIER_TAGS = (0x00100020, 0x0020000D, 0x0020000E, 0x00080018)


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


class _Utf8Switch(Exception):
    """Raised inside a walk when a new value needs UTF-8; the walk restarts converted."""


def _strip(b: bytes) -> str:
    return b.decode("latin-1").strip(" \x00")


def write_meta(sop_class: str | None, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and a regenerated File Meta Information group (PS3.10 7.1).

    (0002,0001) version ``00\\01``, (0002,0002)/(0002,0003) Media Storage SOP Class and
    Instance UIDs, (0002,0010) Transfer Syntax UID, (0002,0012)/(0002,0013) pacsbox's
    implementation UID and name. The other group-0002 elements of the source (Source
    Application Entity Title...) are dropped, as DCMTK does when Orthanc writes a file.
    """
    enc = Encoding(False, True)
    elems: dict[int, tuple[str, bytes]] = {}
    elems[0x00020001] = ("OB", b"\x00\x01")
    if sop_class is not None:
        elems[0x00020002] = ("UI", sop_class.encode())
    elems[0x00020003] = ("UI", sop_instance.encode())
    elems[0x00020010] = ("UI", transfer_syntax.encode())
    elems[0x00020012] = ("UI", IMPLEMENTATION_CLASS_UID.encode())
    elems[0x00020013] = ("SH", IMPLEMENTATION_VERSION_NAME.encode())
    body = b"".join(enc.element(t, vr, v) for t, (vr, v) in sorted(elems.items()))
    return b"\x00" * 128 + b"DICM" + enc.element(0x00020000, "UL", struct.pack("<I", len(body))) + body


class Rewriter:
    """Rewrites files with one :class:`Rules` object and one UID mapper.

    Parameters
    ----------
    rules : Rules
    mapper : callable
        ``mapper(level, original) -> new`` for ``MAP`` actions (original stripped of
        padding).
    vr_of : callable
        ``vr_of(tag)`` for new elements (dictionary VR, private creators...).
    default_codec : str
        Python codec for files without (0008,0005) (Orthanc ``DefaultEncoding``).
    """

    def __init__(self, rules: Rules, mapper: Callable[[int, str], str], vr_of: Callable[[int], str],
                 default_codec: str = "latin_1") -> None:
        self.rules = rules
        self.mapper = mapper
        self.vr_of = vr_of
        self.default_codec = default_codec
        self._top_cache: dict[int, tuple] = {}     # tag -> (vr, action, arg)
        self._fast_cache: dict[int, tuple] = {}    # raw tag -> (vr_bytes, long_length, tag, removed)

    # ---- entry point -----------------------------------------------------------------
    def rewrite(self, data: bytes) -> RewriteResult:
        """Rewrite one Part-10 file.

        Raises
        ------
        RewriteError
            Malformed file; ``ValueTypeError`` for a replacement that does not fit its VR.
        """
        try:
            meta = read_file_meta(data, bare_dataset=True)
        except DicomFormatError as e:
            raise RewriteError(str(e)) from None
        ts, pos = meta.transfer_syntax, meta.dataset_offset
        if ts == IMPLICIT_LE:
            enc = Encoding(True, True)
        elif ts == EXPLICIT_BE:
            enc = Encoding(False, False)
        else:
            enc = Encoding(False, True)
        body = bytes(data)
        if ts == DEFLATED_LE:
            try:
                body = zlib.decompress(body[pos:], -15)
            except zlib.error:
                raise RewriteError("Bad deflate stream") from None
            pos = 0
        charset = Charset.from_value(self._find_charset(body, pos, enc), self.default_codec)
        self._register_originals(data)
        target = None
        forced = self.rules.replacements.get(SPECIFIC_CHARACTER_SET)
        if isinstance(forced, str):
            t = Charset([x.strip() for x in forced.split("\\")], self.default_codec)
            if t.terms != charset.terms:
                target = t
        try:
            state, out = self._walk_top(body, pos, enc, charset, target)
        except _BadVR:
            if enc.implicit or not enc.little:
                raise
            # explicit VR announced, implicit VR written (seen in the wild; DCMTK copes):
            # rewritten as it is, the announced transfer syntax kept
            enc = Encoding(True, True)
            charset = Charset.from_value(self._find_charset(body, pos, enc), self.default_codec)
            state, out = self._walk_top(body, pos, enc, charset, target)
        if ts == DEFLATED_LE:
            co = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
            out = [co.compress(b"".join(out)) + co.flush()]
        ids = state.identifiers
        sop = ids.get(SOP_INSTANCE_UID, ("", ""))[1]
        sop_class = meta.sop_class_uid if 0x00020002 in meta.elements else state.sop_class
        out.insert(0, write_meta(sop_class, sop, ts))
        return RewriteResult(b"".join(out), ts, ids, state.convert and state.charset is UTF8)

    def _register_originals(self, data: bytes) -> None:
        """Map the originals of replaced main UIDs to their replacements before the walk
        (references inside sequences may come before the top-level value)."""
        regs = getattr(self.rules, "registrations", None)
        register = getattr(self.mapper, "register", None)
        if not regs or register is None:
            return
        try:
            raw = scan(data, {t for t, _lvl, _v in regs}).raw
        except DicomFormatError:
            return
        for tag, level, value in regs:
            if tag in raw and raw[tag].value is not None:
                register(level, _strip(raw[tag].value), value)

    def _walk_top(self, body, pos, enc, charset, target):
        state = _State(self, enc, charset, target)
        try:
            return state, state.walk_top(body, pos)
        except _Utf8Switch:
            state = _State(self, enc, charset, UTF8)
            return state, state.walk_top(body, pos)

    @staticmethod
    def _find_charset(body, pos: int, enc: Encoding) -> bytes | None:
        """Raw value of a top-level (0008,0005), looked up among the first elements."""
        n = len(body)
        for _ in range(64):
            if pos + 8 > n:
                return None
            try:
                tag, _vr, length, vpos = element_header(body, pos, enc, enc.implicit)
            except RewriteError:
                return None
            if tag > SPECIFIC_CHARACTER_SET:
                return None
            if tag == SPECIFIC_CHARACTER_SET:
                return bytes(body[vpos:vpos + length])
            if length == UNDEFINED:
                return None
            pos = vpos + length
        return None


class _State:
    """One walk over one file."""

    def __init__(self, rw: Rewriter, enc: Encoding, charset: Charset, target: Charset | None = None) -> None:
        self.rw = rw
        self.rules = rw.rules
        self.enc = enc
        self.src_charset = charset
        self.convert = target is not None       # re-encode every text element
        self.charset = target if target is not None else charset
        self.identifiers: dict[int, tuple[str, str]] = {}
        self.sop_class: str | None = None
        self._top_cache = rw._top_cache
        self.mv = None
        self._end = 0

    # ---- element header ----------------------------------------------------------------
    def _header(self, data, pos: int, implicit: bool):
        return element_header(data, pos, self.enc, implicit)

    def _skip_undefined(self, data, pos: int, implicit: bool) -> int:
        """Position after the sequence delimiter of an undefined-length element at ``pos``."""
        n = len(data)
        while True:
            tag, _vr, length, vpos = self._header(data, pos, True)
            if tag == SEQ_DELIM:
                return vpos
            if tag != ITEM:
                raise RewriteError("Bad item in sequence")
            if length == UNDEFINED:
                pos = self._skip_item(data, vpos, implicit)
            else:
                pos = vpos + length
                if pos > n:
                    raise RewriteError("Truncated item")

    def _skip_item(self, data, pos: int, implicit: bool) -> int:
        """Position after the item delimiter of an undefined-length item's content."""
        while True:
            tag, vr, length, vpos = self._header(data, pos, implicit)
            if tag == ITEM_DELIM:
                return vpos
            if length == UNDEFINED:
                pos = self._skip_undefined(data, vpos, implicit or vr == "UN")
            else:
                pos = vpos + length

    # ---- walking ---------------------------------------------------------------------------
    def walk_top(self, data, pos: int) -> list:
        self.mv = memoryview(data)
        inserts = self.rules.replacements
        if self.charset is UTF8 and self.convert:
            inserts = dict(inserts)
            inserts[SPECIFIC_CHARACTER_SET] = "ISO_IR 192"
        return self._walk(data, pos, len(data), (), inserts)

    def _walk(self, data, pos: int, end: int, parents: tuple, inserts: Mapping[int, Any]) -> list:
        """Rewrite the elements of [pos, end) (``end`` < 0: up to an item delimiter).

        Returns the output chunks; sets ``self._end`` to the position after the region
        (after the item delimiter for an undefined-length item).
        """
        rules = self.rules
        enc = self.enc
        implicit = enc.implicit
        top = not parents
        cache = self._top_cache if top else None
        out: list = []
        append = out.append
        mv = self.mv
        run = pos               # start of the current run of unchanged bytes
        pending = sorted(inserts) if inserts else []
        pi = 0
        npend = len(pending)
        nxt_pending = pending[0] if npend else 0x100000000
        convert = self.convert
        undefined = end < 0
        limit = len(data) if undefined else end
        hdr_i = enc.hdr_implicit
        hdr_e = enc.hdr_explicit
        u32 = enc.u32
        vrinfo = _VRINFO
        # hot path: top level of an explicit VR little endian file, elements known to be kept
        fast = top and not implicit and enc.little and not convert
        fcache = self.rw._fast_cache
        fget = fcache.get
        hdr_f = _HDR_FAST
        while pos < limit:
            if fast:
                raw, vrb, length = hdr_f.unpack_from(data, pos)
                known = fget(raw)
                if known is not None:
                    known_vr, long_length, known_tag, removed = known
                    if known_vr == vrb:
                        if long_length:
                            (length,) = u32.unpack_from(data, pos + 8)
                            nxt = pos + 12 + length
                        else:
                            nxt = pos + 8 + length
                        if known_tag < nxt_pending and length != UNDEFINED and nxt <= limit:
                            if removed:
                                if run < pos:
                                    append(mv[run:pos])
                                run = nxt
                            pos = nxt
                            continue
            if implicit:
                g, e, length = hdr_i.unpack_from(data, pos)
                vpos = pos + 8
                vr = None
            else:
                g, e, vrb, length = hdr_e.unpack_from(data, pos)
                info = vrinfo.get(vrb)
                if info is None:
                    if g != 0xFFFE:
                        raise _BadVR("Bad VR in explicit VR data set")
                    (length,) = u32.unpack_from(data, pos + 4)
                    vpos = pos + 8
                    vr = None
                else:
                    vr, is_long = info
                    if is_long:
                        (length,) = u32.unpack_from(data, pos + 8)
                        vpos = pos + 12
                    else:
                        vpos = pos + 8
            tag = (g << 16) | e
            if g == 0xFFFE:
                if undefined and tag == ITEM_DELIM:
                    if run < pos:
                        append(mv[run:pos])
                    while pi < npend:        # insertions left for this item
                        t = pending[pi]
                        pi += 1
                        append(self._new_element(t, inserts[t]))
                    self._end = pos + 8
                    return out
                raise RewriteError("Unexpected item tag in data set")
            un = False
            if vr == "UN" and e:
                # UN: decide with the dictionary VR (as DCMTK reads it); a sequence in UN
                # holds implicit VR little endian items (PS3.5 section 6.2.2)
                dvr = dictionary_vr(tag) if not (g & 1) else "UN"
                if dvr == "SQ" or length == UNDEFINED:
                    un, vr = True, "SQ"
                elif dvr != "UN":
                    vr = dvr
            if length == UNDEFINED:
                nxt = -1
            else:
                nxt = vpos + length
                if nxt > limit:
                    raise RewriteError("Truncated data set")
            # insertions of absent tags that sort before this one
            if tag >= nxt_pending:
                while pi < npend and pending[pi] < tag:
                    t = pending[pi]
                    pi += 1
                    if run < pos:
                        append(mv[run:pos])
                    run = pos
                    append(self._new_element(t, inserts[t]))
                if pi < npend and pending[pi] == tag:
                    pi += 1
                    action, arg = REPLACE, inserts[tag]
                    if vr is None:
                        vr = self._implicit_vr(tag, length)
                    nxt_pending = pending[pi] if pi < npend else 0x100000000
                    if top and tag in _IDENT:
                        self._record_identifier(tag, data, vpos, length, action, arg)
                    if run < pos:
                        append(mv[run:pos])
                    after = nxt if nxt >= 0 else self._skip_undefined(data, vpos, implicit or un)
                    append(self._new_element(tag, arg, vr))
                    pos = run = after
                    continue
                nxt_pending = pending[pi] if pi < npend else 0x100000000
            if vr is None:
                vr = self._implicit_vr(tag, length)
            if top:
                rule = cache.get(tag)
                if rule is None or rule[0] != vr:
                    if e == 0:
                        rule = (vr, REMOVE, None)       # group length: dropped
                    else:
                        rule = (vr, *rules.top(tag, vr))
                    cache[tag] = rule
                _rule_vr, action, arg = rule
                if tag in _IDENT:
                    self._record_identifier(tag, data, vpos, length, action, arg)
                elif tag == 0x00080016 and nxt > 0:
                    self.sop_class = _strip(data[vpos:nxt])
            elif e == 0:
                action, arg = REMOVE, None
            else:
                action, arg = rules.nested(tag, vr, parents)
            if action == KEEP:
                if convert:
                    if vr in TEXT_VRS:
                        action = REENCODE
                    elif vr == "SQ":
                        action = DESCEND
                if action == KEEP:
                    if fast and not un and e and tag not in _SPECIAL and vrinfo.get(vrb) is not None:
                        fcache[g | (e << 16)] = (vrb, vrb in _LONG_VRS_B, tag, False)
                    pos = nxt if nxt >= 0 else self._skip_undefined(data, vpos, implicit or un)
                    continue
            # a changed element: flush the run
            if run < pos:
                append(mv[run:pos])
            after = nxt if nxt >= 0 else self._skip_undefined(data, vpos, implicit or un)
            if action == REMOVE:
                if fast and not un and e and nxt >= 0 and tag not in _SPECIAL and vrinfo.get(vrb) is not None:
                    fcache[g | (e << 16)] = (vrb, vrb in _LONG_VRS_B, tag, True)
            elif action == CLEAR:
                append(enc.header(tag, vr, 0))
            elif action == MAP:
                old = _strip(data[vpos:after]) if length != UNDEFINED else ""
                new = self.rw.mapper(arg, old)
                append(enc.element(tag, vr, new.encode("ascii")))
            elif action == DESCEND:
                append(self._sequence(data, tag, vpos, length, after, parents, un))
            elif action == REENCODE:
                text = self.src_charset.decode(bytes(data[vpos:after]), vr)
                b = self.charset.encode(text)
                if b is None:
                    b = text.encode(self.charset.codecs[0], "replace")
                append(enc.element(tag, vr, b))
            elif action == REPLACE:
                append(self._new_element(tag, arg, vr))
            else:
                raise RewriteError(f"Unknown action {action}")
            pos = run = after
        if undefined:
            raise RewriteError("Missing item delimiter")
        if pos != end:
            raise RewriteError("Truncated data set")
        if run < pos:
            append(mv[run:pos])
        while pi < npend:
            t = pending[pi]
            pi += 1
            append(self._new_element(t, inserts[t]))
        self._end = pos
        return out

    def _implicit_vr(self, tag: int, length: int) -> str:
        vr = dictionary_vr(tag)
        if vr == "UN" and length == UNDEFINED:
            return "SQ"
        return vr

    def _record_identifier(self, tag, data, vpos, length, action, arg) -> None:
        # trailing padding only is stripped, as Orthanc does before hashing identifiers
        old = bytes(data[vpos:vpos + length]).decode("latin-1").rstrip(" \x00") if length != UNDEFINED else ""
        if action == REPLACE:
            new = arg if isinstance(arg, str) else old
        elif action == MAP:
            new = self.rw.mapper(arg, old)
        elif action in (REMOVE, CLEAR):
            new = ""
        else:
            new = old
        self.identifiers[tag] = (old, new.strip(" \x00"))

    def _new_element(self, tag: int, value: Any, vr: str | None = None) -> bytes:
        vr = vr or self.rw.vr_of(tag)
        if vr == "UN":
            vr = self.rw.vr_of(tag)
        if tag == SPECIFIC_CHARACTER_SET and self.convert and self.charset is UTF8:
            value = "ISO_IR 192"
        try:
            v = encode_value(tag, vr, value, self.enc, self.charset, self.rw.vr_of)
        except UnicodeError:
            if self.charset is UTF8:
                raise ValueTypeError(tag) from None
            raise _Utf8Switch() from None
        if tag in _IDENT and not isinstance(value, str):
            raise ValueTypeError(tag)
        if tag in _IDENT and tag not in self.identifiers:
            self.identifiers[tag] = ("", value.strip(" \x00"))
        if vr == "SQ":
            return self.enc.header(tag, vr, len(v)) + v
        return self.enc.element(tag, vr, v)

    def _sequence(self, data, tag: int, vpos: int, length: int, after: int, parents: tuple,
                  un: bool = False) -> bytes:
        """Rewrite a sequence's items; written back with defined lengths (a sequence read
        as UN stays UN, with implicit VR little endian items)."""
        outer = self.enc
        enc = _IMPLICIT_LE if un else outer
        self.enc = enc
        try:
            items = []
            pos = vpos
            index = 0
            end = after if length != UNDEFINED else -1
            rules = self.rules
            while True:
                if end >= 0 and pos >= end:
                    break
                g, e, ilen = enc.hdr_implicit.unpack_from(data, pos)
                itag = (g << 16) | e
                if itag == SEQ_DELIM:
                    break
                if itag != ITEM:
                    raise RewriteError("Bad item in sequence")
                here = parents + ((tag, index),)
                ins = rules.inserts(here)
                if ilen == UNDEFINED:
                    chunks = self._walk(data, pos + 8, -1, here, ins)
                else:
                    chunks = self._walk(data, pos + 8, pos + 8 + ilen, here, ins)
                pos = self._end
                items.append(enc.item(b"".join(chunks)))
                index += 1
        finally:
            self.enc = outer
        content = b"".join(items)
        return outer.header(tag, "UN" if un else "SQ", len(content)) + content


_IDENT = frozenset(IDENTIFIER_TAGS)
#: top-level tags the walk records (never on the hot path)
_SPECIAL = _IDENT | {0x00080016}
_HDR_FAST = struct.Struct("<I2sH")
_IMPLICIT_LE = Encoding(True, True)

