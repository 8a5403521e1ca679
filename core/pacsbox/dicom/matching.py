"""C-FIND attribute matching (DICOM PS3.4 section C.2.2.2), as Orthanc applies it in
``/tools/find`` and its C-FIND SCP.

Rules: an empty value or ``*`` is universal; ``*`` and ``?`` are wildcards; ``A-B`` is a
range for DA, TM and DT values (either end may be open); ``A\\B`` is a list (any item
matches); anything else is a single-value match. PN values match case-insensitively
(and ignoring accents) unless ``case_sensitive``.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from pydicom.datadict import dictionary_VR

from .tags import parse_tag

RANGE_VRS = {"DA", "TM", "DT"}


def _fold(s: str) -> str:
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if not unicodedata.combining(c)).upper()


@lru_cache(maxsize=4096)
def _wildcard_regex(pattern: str, fold: bool) -> re.Pattern:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@dataclass(frozen=True)
class Constraint:
    """One compiled query key.

    Attributes
    ----------
    tag : int
    keyword : str
    pattern : str
        The query value as given.
    vr : str
    case_sensitive : bool
    """

    tag: int
    keyword: str
    pattern: str
    vr: str
    case_sensitive: bool

    @property
    def is_universal(self) -> bool:
        """bool: matches every value, including an absent one."""
        return self.pattern == "" or self.pattern == "*"

    def matches(self, value: str | None) -> bool:
        """Whether a resource's value (None when absent) satisfies the constraint.

        Parameters
        ----------
        value : str or None
            The text value as rendered in JSON (multiple values joined by ``\\``).
        """
        if self.is_universal:
            return True
        if value is None:
            return False
        fold = self.vr == "PN" and not self.case_sensitive
        items = self.pattern.split("\\") if self.vr not in ("LT", "ST", "UT") else [self.pattern]
        values = value.split("\\") if "\\" in value and self.vr not in ("LT", "ST", "UT", "PN") else [value]
        for pat in items:
            for v in values:
                if self._match_one(pat, v, fold):
                    return True
        return False

    def _match_one(self, pat: str, v: str, fold: bool) -> bool:
        if self.vr in RANGE_VRS and "-" in pat:
            lo, _, hi = pat.partition("-")
            lo, hi = lo.strip(), hi.strip()
            v = v.strip()
            if not v:
                return False
            if self.vr == "TM" or self.vr == "DT":
                vv = v.split(".")[0]
                return (not lo or vv >= lo.split(".")[0]) and (not hi or vv <= hi.split(".")[0] + "\uffff")
            return (not lo or v >= lo) and (not hi or v <= hi)
        if fold:
            pat, v = _fold(pat), _fold(v)
        if "*" in pat or "?" in pat:
            return _wildcard_regex(pat, fold).match(v) is not None
        if self.vr == "PN":
            return pat.strip() == v.strip()
        return pat == v


def vr_of(tag: int) -> str:
    """The dictionary VR of a tag (``"UN"`` when unknown; first choice of ``"US or SS"``)."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def compile_query(query: dict[str, str], case_sensitive: bool = False) -> list[Constraint]:
    """Compile a ``/tools/find`` or C-FIND query.

    Parameters
    ----------
    query : dict of str to str
        Keys are keywords or ``gggg,eeee``.
    case_sensitive : bool
        PN case sensitivity (``CaseSensitive`` field / ``CaseSensitivePN`` option).

    Returns
    -------
    list of Constraint

    Raises
    ------
    KeyError
        An unknown tag name (the caller answers 400).
    """
    from pydicom.datadict import keyword_for_tag
    out = []
    for k, v in query.items():
        tag = parse_tag(k)
        kw = keyword_for_tag(tag) or k
        out.append(Constraint(tag, kw, "" if v is None else str(v), vr_of(tag), case_sensitive))
    return out
