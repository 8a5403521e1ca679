"""What the rewriter does with each element (:class:`Rules` answering the :class:`Action` of each),
what it gives back (:class:`RewriteResult`), and the File Meta Information it writes.
Part of :mod:`pacsbox.dicom.rewrite`, which re-exports every name.
"""
from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..version import __version__
from .values import Encoding

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
