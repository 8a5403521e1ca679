"""Attribute matching of ``/tools/find`` and C-FIND queries, as Orthanc 1.10.1 applies it.

One query key becomes one :class:`Constraint` (Orthanc ``DatabaseLookup``):

- an empty value is universal: the key is ignored, even for resources without the tag;
- ``A-B`` on a DA, TM or DT tag is a range, compared as strings, either end may be open
  (so an empty date matches ``-20221231``);
- a value holding ``\\`` is a list: any item equal to the value matches (items are not
  wildcards);
- a value holding ``*`` or ``?`` is a wildcard match (``*`` alone requires the tag to be
  present; an identifier must match in its normalized form too, see
  :meth:`Constraint.matches`); wildcards are accepted only on AE, CS, LO, LT, PN, SH, ST, UC, UR and UT
  tags (private creators are LO), and refused with a 400 on any other VR (dates, times,
  UIDs, numbers, ages, unknown private tags), as Orthanc 1.10.1 (PS3.4 C.2.2.2.4);
- anything else is an exact match.

A resource without the tag never matches a non-universal key. Values are compared
whole (a multi-valued ``ORIGINAL\\PRIMARY`` is one string).

Case: ``/tools/find`` compares every tag case-insensitively unless ``CaseSensitive``;
C-FIND (``dicom_rules``) follows DICOM: PN per the ``CaseSensitivePN`` option, every other
VR case-sensitive. Upper-casing keeps accents (``müller*`` matches ``Müller`` but
``MULLER*`` does not), as Orthanc.

Source: Orthanc 1.10.1 behaviour verified on the reference server; DICOM PS3.4 C.2.2.2.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.datadict import dictionary_VR

from ..errors import ErrorCode, OrthancError
from .tags import parse_tag, tag_to_key

RANGE_VRS = frozenset({"DA", "TM", "DT"})
#: The tags Orthanc 1.10.1 also indexes, normalized, as identifiers of each level (patient,
#: study, series, instance): a wildcard on one of them must match the normalized value too.
IDENTIFIERS = (
    frozenset({"PatientID", "PatientName", "PatientBirthDate"}),
    frozenset({"PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID", "AccessionNumber",
               "StudyDescription", "StudyDate"}),
    frozenset({"SeriesInstanceUID"}),
    frozenset({"SOPInstanceUID"}),
)


def normalize_identifier(value: str) -> str:
    """An identifier as Orthanc 1.10.1 indexes it (``ServerToolbox::NormalizeIdentifier``).

    Parameters
    ----------
    value : str
        A decoded value (``"Müller_Jörg "``).

    Returns
    -------
    str
        Printable ASCII only (other characters dropped), ``%`` and ``_`` turned into
        spaces, upper case, surrounding spaces stripped (``"MLLER JRG"``).
    """
    kept = "".join(" " if ch in "%_" else ch for ch in value if " " <= ch <= "~")
    return kept.upper().strip(" ")


#: VRs on which a query value may hold ``*`` or ``?``.
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})


@lru_cache(maxsize=4096)
def _wildcard_regex(pattern: str) -> re.Pattern:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _same(s: str) -> str:
    return s


def _upper(s: str) -> str:
    return s.upper()


@dataclass(frozen=True)
class Constraint:
    """One compiled query key.

    Attributes
    ----------
    tag : int
    keyword : str
        DICOM keyword of the tag (the key as given when unknown to the dictionary).
    pattern : str
        The query value as given.
    vr : str
        Dictionary VR of the tag.
    case_sensitive : bool
        Whether letters must match in case.
    kind : str
        ``"universal"``, ``"range"``, ``"list"``, ``"wildcard"`` or ``"equal"``.
    values : tuple of str
        The items of a list (the pattern itself otherwise).
    """

    tag: int
    keyword: str
    pattern: str
    vr: str
    case_sensitive: bool
    kind: str = "equal"
    values: tuple[str, ...] = field(default=())

    @property
    def is_universal(self) -> bool:
        """bool: matches every resource, including one without the tag."""
        return self.kind == "universal"

    def matches(self, value: str | None, identifier: bool = False) -> bool:
        """Whether a resource's value satisfies the constraint.

        Parameters
        ----------
        value : str or None
            The tag's text as rendered in JSON (several values joined by ``\\``), None
            when the resource does not have the tag.
        identifier : bool
            The tag is one of Orthanc's identifiers at the resource's level
            (:data:`IDENTIFIERS`): a wildcard must then also match with the value and the
            pattern normalized (:func:`normalize_identifier`), as Orthanc 1.10.1 looks the
            normalized value up first (``id11111?`` does not find ``id11111 ``, ``*1 `` does).
        """
        kind = self.kind
        if kind == "universal":
            return True
        if value is None:
            return False
        if kind == "range":
            lower, _, upper = self.pattern.partition("-")
            lower, upper = lower.strip(), upper.strip()
            return (not lower or value >= lower) and (not upper or value <= upper)
        fold = _same if self.case_sensitive else _upper
        v = fold(value)
        if kind == "list":
            return any(v == fold(item) for item in self.values)
        if kind == "wildcard":
            if self.values == ("*",):
                return True  # "*": any value of a present tag
            if _wildcard_regex(fold(self.pattern)).match(v) is None:
                return False
            return not identifier or _wildcard_regex(normalize_identifier(self.pattern)).match(
                normalize_identifier(value)) is not None
        return v == fold(self.pattern)


def vr_of(tag: int) -> str:
    """The dictionary VR of a tag (``"LO"`` for a private creator, ``"UN"`` when unknown;
    first choice of ``"US or SS"``)."""
    if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
        return "LO"
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def make_constraint(tag: int, keyword: str, pattern: str, case_sensitive: bool, vr: str | None = None) -> Constraint:
    """Compile one query key (see the module docstring for the rules).

    Parameters
    ----------
    tag : int
    keyword : str
    pattern : str
    case_sensitive : bool
    vr : str, optional
        The tag's VR (default: :func:`vr_of`); the ``Dictionary`` option gives it for
        the tags it declares.

    Raises
    ------
    OrthancError
        400 ``PARAMETER_OUT_OF_RANGE`` "Wildcards are not allowed on tag gggg,eeee" for a
        wildcard on a tag whose VR is not in :data:`WILDCARD_VRS`.
    """
    if vr is None:
        vr = vr_of(tag)
    if pattern == "":
        kind = "universal"
    elif vr in RANGE_VRS and "-" in pattern:
        kind = "range"
    elif "\\" in pattern:
        kind = "list"
    elif "*" in pattern or "?" in pattern:
        if vr not in WILDCARD_VRS:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Wildcards are not allowed on tag {tag_to_key(tag)}")
        kind = "wildcard"
    else:
        kind = "equal"
    values = tuple(pattern.split("\\")) if kind == "list" else (pattern,)
    return Constraint(tag, keyword, pattern, vr, case_sensitive, kind, values)


def compile_query(query: dict[str, str], case_sensitive: bool = False, *,
                  dicom_rules: bool = False, dictionary=None) -> list[Constraint]:
    """Compile a ``/tools/find`` or C-FIND query.

    Parameters
    ----------
    query : dict of str to str
        Keys are keywords, ``gggg,eeee`` or ``ggggeeee``.
    case_sensitive : bool
        ``/tools/find``: the ``CaseSensitive`` field, applied to every tag. C-FIND
        (``dicom_rules``): the ``CaseSensitivePN`` option, applied to PN tags only.
    dicom_rules : bool
        C-FIND rules: every non-PN tag is case-sensitive, and ``*`` is universal (it
        also matches a resource without the tag, whereas ``/tools/find`` requires the tag).
    dictionary : pacsbox.dicom.tags.TagDictionary, optional
        The app's ``Dictionary`` option: its names are accepted as keys (a constraint's
        ``keyword`` is then the name), and its VRs decide the matching rules.

    Returns
    -------
    list of Constraint

    Raises
    ------
    KeyError
        An unknown tag name (``/tools/find`` answers 500 "Unknown DICOM tag", as Orthanc).
    OrthancError
        A wildcard on a tag whose VR is not in :data:`WILDCARD_VRS` (400).
    """
    from pydicom.datadict import keyword_for_tag
    out = []
    for k, v in query.items():
        if dictionary:
            tag = dictionary.parse(k)
            vr = dictionary.vr(tag, dictionary.creator_of(tag)) if tag >> 16 & 1 else dictionary.entry(tag)
            vr = vr[0] if isinstance(vr, tuple) else vr
        else:
            tag = parse_tag(k)
            vr = None
        vr = vr or vr_of(tag)
        kw = keyword_for_tag(tag) or k
        sensitive = case_sensitive if (not dicom_rules or vr == "PN") else True
        pattern = "" if v is None else str(v)
        if dicom_rules and pattern and set(pattern) == {"*"}:
            pattern = ""  # C-FIND: "*" is universal matching (PS3.4 C.2.2.2.3)
        out.append(make_constraint(tag, kw, pattern, sensitive, vr))
    return out
