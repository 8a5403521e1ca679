"""Names and paths of tags in modification requests: :class:`TagParser` reads a keyword,
``gggg,eeee`` or a private name of the ``Dictionary`` option; :class:`DicomPath` a tag inside
sequences, in dcmodify's syntax (``ReferencedImageSequence[0].ReferencedSOPInstanceUID``).
Part of :mod:`pacsbox.dicom.modification`, which re-exports them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ErrorCode, OrthancError
from . import rewrite
from .tags import parse_tag as _parse_tag, tag_to_key


def tag_name(tag: int) -> str:
    """``gggg,eeee`` of a tag."""
    return tag_to_key(tag)


class TagParser:
    """Parse tag names as Orthanc does (``FromDcmtkBridge::ParseTag``).

    Accepts a DICOM keyword, ``gggg,eeee``, ``gggg-eeee``, ``ggggeeee``, ``(gggg,eeee)``
    and the names of the ``Dictionary`` configuration option.

    Parameters
    ----------
    dictionary : mapping, optional
        The ``Dictionary`` option (reference section 7.1).
    """

    def __init__(self, dictionary: Mapping[str, Any] | None = None) -> None:
        self.names: dict[str, int] = {}
        self.private_vrs: dict[tuple[int, int, str], str] = {}
        self.public_vrs: dict[int, str] = {}
        for key, entry in (dictionary or {}).items():
            try:
                g, e = [int(x.strip().replace("0x", ""), 16) for x in str(key).split(",")]
            except ValueError:
                continue
            if not isinstance(entry, list) or len(entry) < 2:
                continue
            vr, name = str(entry[0]), str(entry[1])
            creator = str(entry[4]) if len(entry) >= 5 else ""
            if g & 1 and creator:
                self.private_vrs[(g, e & 0xFF, creator)] = vr
                self.names.setdefault(name, (g << 16) | (0x1000 | (e & 0xFF)))
            else:
                self.public_vrs[(g << 16) | e] = vr
                self.names.setdefault(name, (g << 16) | e)

    def __call__(self, name: str) -> int:
        """The tag ``0xGGGGEEEE`` named ``name``.

        Raises
        ------
        OrthancError
            ``UNKNOWN_DICOM_TAG`` (500, as Orthanc) for an unknown name.
        """
        s = name.strip()
        if s in self.names:
            return self.names[s]
        try:
            return _parse_tag(s)
        except KeyError:
            raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG) from None

    def vr(self, tag: int, private_creator: str = "") -> str:
        """VR used for a new element (``UN`` for an unknown private tag)."""
        if tag in self.public_vrs:
            return self.public_vrs[tag]
        return rewrite.dictionary_vr(tag, private_creator or None, self.private_vrs)


# ------------------------------------------------------------------------------------------
# paths into sequences (dcmodify syntax)
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DicomPath:
    """A tag, possibly inside sequences: ``ReferencedImageSequence[0].ReferencedSOPInstanceUID``.

    Attributes
    ----------
    prefix : tuple of (int, int or None)
        ``(sequence tag, item index)`` pairs, None for the ``[*]`` wildcard.
    final : int
        The tag at the end of the path.
    """

    prefix: tuple[tuple[int, int | None], ...]
    final: int

    @classmethod
    def parse(cls, text: str, parse_tag: Callable[[str], int]) -> "DicomPath":
        """Parse Orthanc's path syntax (``DicomPath::Parse``).

        Raises
        ------
        OrthancError
            400 ``PARAMETER_OUT_OF_RANGE`` with Orthanc's details for a malformed path;
            ``UNKNOWN_DICOM_TAG`` for an unknown tag name.
        """
        tokens = text.split(".")
        if not text or not tokens:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, "Empty path to DICOM tags")
        final = parse_tag(tokens[-1].strip())
        prefix = []
        for tok in tokens[:-1]:
            pos = tok.find("[")
            if pos < 0:
                raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, "Parent path doesn't contain an index")
            left, right = tok[:pos].strip(), tok[pos + 1:].strip()
            if not left:
                raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, "Parent path doesn't contain a tag")
            if not right or right[-1] != "]":
                raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                                   "Parent path doesn't contain the end of the index")
            tag = parse_tag(left)
            t = right[:-1].strip()
            if t == "*":
                prefix.append((tag, None))
            else:
                try:
                    index = int(t)
                except ValueError:
                    raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                                       f"Not a valid index in parent path: [{right}") from None
                if index < 0:
                    raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Negative index in parent path: {t}")
                prefix.append((tag, index))
        return cls(tuple(prefix), final)

    def format(self) -> str:
        """``(gggg,eeee)[i].(gggg,eeee)`` (Orthanc ``DicomPath::Format``)."""
        parts = [f"({tag_name(t)})[{'*' if i is None else i}]" for t, i in self.prefix]
        return ".".join(parts + [f"({tag_name(self.final)})"])

    def prefix_matches(self, parents: tuple[tuple[int, int], ...]) -> bool:
        """Whether ``parents`` is exactly this path's prefix (wildcards match any index)."""
        if len(parents) != len(self.prefix):
            return False
        for (t, i), (pt, pi) in zip(self.prefix, parents):
            if t != pt or (i is not None and i != pi):
                return False
        return True

    def covers(self, parents: tuple[tuple[int, int], ...], tag: int) -> bool:
        """Orthanc ``DicomPath::IsMatch(pattern=self, path=parents+tag)``: the element
        itself, or an element inside the sequence this path designates."""
        n = len(self.prefix)
        if len(parents) < n:
            return False
        for (t, i), (pt, pi) in zip(self.prefix, parents):
            if t != pt or (i is not None and i != pi):
                return False
        if len(parents) == n:
            return tag == self.final
        return parents[n][0] == self.final

    def leads_into(self, parents: tuple[tuple[int, int], ...], tag: int) -> bool:
        """Whether the path goes through sequence ``tag`` found under ``parents``."""
        n = len(parents)
        if len(self.prefix) <= n:
            return False
        for (t, i), (pt, pi) in zip(self.prefix, parents):
            if t != pt or (i is not None and i != pi):
                return False
        return self.prefix[n][0] == tag
