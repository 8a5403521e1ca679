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

import struct
import zlib
from typing import Any, Callable, Mapping

# the module is the public face of the rewriter: its parts live in rewrite_rules and values
from .rewrite_rules import (CLEAR, DEFLATED_LE, DESCEND, EXPLICIT_BE, EXPLICIT_LE, IDENTIFIER_TAGS,  # noqa: F401
                            IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, IMPLICIT_LE, KEEP, MAP,
                            REENCODE, REMOVE, REPLACE, UNCOMPRESSED, Action, RewriteResult, Rules, write_meta)
from .scan import DicomFormatError, read_file_meta, scan
from .transcode import is_transfer_syntax as is_known_transfer_syntax  # noqa: F401  (routes use it)
from .transcode import transcode  # noqa: F401  (the modification job uses it)
from .values import (DATA_URI_PREFIX, ITEM, ITEM_DELIM, PIXEL_DATA, SEQ_DELIM, SOP_INSTANCE_UID,  # noqa: F401
                     SPECIFIC_CHARACTER_SET, STRING_VRS, TEXT_VRS, UNDEFINED, UTF8, Charset, Encoding,
                     RewriteError, ValueTypeError, _BadVR, _LONG_VRS_B, _VRINFO, _strip, dictionary_vr,
                     element_header, encode_dataset, encode_text_value, encode_value)

__all__ = [
    "Action", "KEEP", "REMOVE", "CLEAR", "REPLACE", "MAP", "DESCEND", "REENCODE", "Rules", "RewriteResult",
    "Rewriter", "RewriteError", "ValueTypeError", "Charset", "UTF8", "Encoding", "encode_value", "encode_text_value",
    "encode_dataset", "element_header", "dictionary_vr", "write_meta", "IDENTIFIER_TAGS", "STRING_VRS", "TEXT_VRS",
    "DATA_URI_PREFIX", "IMPLICIT_LE", "EXPLICIT_LE", "EXPLICIT_BE", "DEFLATED_LE", "UNCOMPRESSED",
    "IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION_NAME", "ITEM", "ITEM_DELIM", "SEQ_DELIM", "UNDEFINED",
    "SPECIFIC_CHARACTER_SET", "SOP_INSTANCE_UID", "PIXEL_DATA", "is_known_transfer_syntax", "transcode",
]


# The rewriter's two caches hold plain tuples, unpacked by name where they are read (a
# NamedTuple reads slower in the walk's loop: measured 7 % on an anonymization):
#
# - top rules, by tag: ``(vr, action, arg)``, the :meth:`Rules.top` answer for the VR it
#   was asked for;
# - known elements, by their 4 raw group/element bytes, for the fast path of
#   :meth:`_State._walk`: ``(vr_bytes, long_length, tag, removed)``: the 2 VR bytes it was
#   seen with, whether a 4-byte length follows, its tag, and whether it is dropped (else
#   copied as it is).


class _Utf8Switch(Exception):
    """Raised inside a walk when a new value needs UTF-8; the walk restarts converted."""


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
