"""Cheap facts about a DICOM file read from its first bytes, without parsing it whole.

An archive handles thousands of files; it needs, for each, the transfer syntax (to
store already-compressed files without deflating them again) and, for DICOMDIR
records, the SOP class/instance and the Specific Character Set. These are all in the
File Meta Information group (PS3.10 section 7.1), read by :func:`pacsbox.read_file_meta`,
and at the very start of the data set, so a few struct reads replace a full pydicom parse.
Anything unusual (no meta group, deflated data set) yields ``None`` fields and the caller
falls back to pydicom.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from pacsbox import DicomFormatError, read_file_meta

#: Transfer syntaxes whose pixel data are already compressed (PS3.5 Annex A.4), plus
#: Deflated Explicit VR Little Endian: deflating such files again gains nothing.
_COMPRESSED_PREFIX = "1.2.840.10008.1.2.4."
_RLE = "1.2.840.10008.1.2.5"
_DEFLATED_EXPLICIT = "1.2.840.10008.1.2.1.99"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"

#: Explicit VR Little/Big Endian VRs with a 4-byte length (PS3.5 section 7.1.2), for the
#: data set elements read before (0008,0005).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_TAG_CHARSET = 0x00080005


def is_compressed_syntax(uid: str | None) -> bool:
    """Whether a transfer syntax UID denotes compressed data (JPEG, JPEG-LS, JPEG 2000,
    HTJ2K, MPEG/HEVC, RLE) or a deflated data set.

    Parameters
    ----------
    uid : str or None

    Returns
    -------
    bool
    """
    if not uid:
        return False
    return uid.startswith(_COMPRESSED_PREFIX) or uid in (_RLE, _DEFLATED_EXPLICIT)


@dataclass
class FileFacts:
    """What :func:`peek` found (``None`` when absent or unreadable).

    Attributes
    ----------
    sop_class_uid : str or None
        (0002,0002) *Media Storage SOP Class UID*.
    sop_instance_uid : str or None
        (0002,0003) *Media Storage SOP Instance UID*.
    transfer_syntax_uid : str or None
        (0002,0010) *Transfer Syntax UID*.
    specific_character_set : str or None
        (0008,0005) *Specific Character Set* as written (values joined with ``\\``);
        ``None`` when the data set has none, or when it could not be read cheaply
        (``charset_known`` False).
    charset_known : bool
        Whether the data set start was readable (so that a missing charset really is
        missing).
    """

    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    transfer_syntax_uid: str | None = None
    specific_character_set: str | None = None
    charset_known: bool = False


def peek(data: bytes | memoryview) -> FileFacts:
    """Read the File Meta Information and the Specific Character Set of a Part 10 file.

    Parameters
    ----------
    data : bytes
        The file, or at least its first few kilobytes.

    Returns
    -------
    FileFacts
        Empty facts when ``data`` has no readable File Meta Information group.
    """
    facts = FileFacts()
    mv = memoryview(data)
    n = len(mv)
    try:
        meta = read_file_meta(data)
    except DicomFormatError:
        return facts
    present = meta.elements
    if 0x00020002 in present:
        facts.sop_class_uid = meta.sop_class_uid
    if 0x00020003 in present:
        facts.sop_instance_uid = meta.sop_instance_uid
    if 0x00020010 in present:
        facts.transfer_syntax_uid = meta.transfer_syntax
    pos = meta.dataset_offset
    try:
        ts = facts.transfer_syntax_uid
        if ts == _DEFLATED_EXPLICIT or ts is None:
            return facts
        implicit = ts == _IMPLICIT_LE
        endian = ">" if ts == _EXPLICIT_BE else "<"
        while pos + 8 <= n:
            group, elem = struct.unpack_from(endian + "HH", mv, pos)
            tag = (group << 16) | elem
            if tag > _TAG_CHARSET:
                facts.charset_known = True
                return facts
            if implicit:
                length = struct.unpack_from("<I", mv, pos + 4)[0]
                start = pos + 8
            else:
                vr = bytes(mv[pos + 4:pos + 6])
                if vr in _LONG_VRS:
                    length = struct.unpack_from(endian + "I", mv, pos + 8)[0]
                    start = pos + 12
                else:
                    length = struct.unpack_from(endian + "H", mv, pos + 6)[0]
                    start = pos + 8
            if length == 0xFFFFFFFF or start + length > n:
                return facts
            if tag == _TAG_CHARSET:
                value = bytes(mv[start:start + length]).rstrip(b"\x00 ").decode("ascii", "replace")
                facts.specific_character_set = value or None
                facts.charset_known = True
                return facts
            pos = start + length
    except struct.error:
        return facts
    return facts
