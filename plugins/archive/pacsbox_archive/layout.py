"""What goes into an archive, in which order and under which names.

Given the resources a request names (any mix of patients, studies, series and
instances), :func:`build_plan` lists the instances to write, in Orthanc's order, with
the entry name of each (reference section 4.2 for the ZIP flavour, 4.3 for media):

- patients, studies and series are visited in ascending order of their Orthanc ID,
  instances in index order (the order they were stored);
- a resource named together with one of its ancestors is covered by the ancestor;
- ZIP folders are ``PatientID PatientName`` / ``AccessionNumber StudyDescription`` /
  ``Modality SeriesDescription`` and files ``CT000000.dcm`` (two-letter modality
  prefix and six digits, one letter and seven digits, or eight digits), a counter per
  series starting at 0; media files are ``IMAGES/IM0``, ``IMAGES/IM1``... over the
  whole archive.

Names are normalized by :func:`normalize_name`, so that no entry can leave the
archive's root whatever the tag values hold.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

from pacsbox import Level

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import Resource, ServerContext

_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._ ]")
_SPACES = re.compile(r"\s+")


#: Latin letters that Unicode does not decompose into a base letter and marks.
_TRANSLIT = str.maketrans({"ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
                           "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th",
                           "ı": "i", "ħ": "h", "Ħ": "H", "ŋ": "ng", "Ŋ": "NG", "ĸ": "k", "ŀ": "l", "Ŀ": "L"})
_NOT_ALLOWED_UTF8 = re.compile(r"[^\w.^ ]")


def transliterate(text: str) -> str:
    """ASCII transliteration of Latin letters (``Müller^Jürgen`` → ``Muller^Jurgen``):
    marks removed after Unicode decomposition (NFKD), and the letters Unicode does not
    decompose (``ß``, ``æ``, ``ø``, ``ł``...) spelled in ASCII; other scripts are left as
    they are (the caller drops them)."""
    import unicodedata
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def normalize_name(text: str, utf8: bool = False) -> str:
    """Turn a tag value into a safe ASCII file or folder name (Orthanc 1.10.1's rule).

    Latin letters are transliterated to ASCII (``ü`` → ``u``, ``ß`` → ``ss``; Orthanc
    drops them), other non-ASCII and control characters are dropped, ``^`` becomes a
    space, runs of
    white space collapse to one space, every character other than a letter, a digit,
    ``.``, ``_`` or a space is dropped, and leading/trailing spaces are removed. Beyond
    Orthanc, trailing dots are removed too (Windows drops them, which would turn
    ``.. ..`` into ``..``), so that a name made only of dots and spaces comes out empty
    and never names the current or the parent folder.

    Parameters
    ----------
    text : str
    utf8 : bool, default False
        ``Utf8`` archives (Orthanc 1.12.11): letters and digits of every script are
        kept as they are (the entry names are written in UTF-8), and so is the ``^``
        of a person name: ``Müller^Jürgen`` is written byte for byte, as the
        reliability issue asks (Orthanc's ``KeepAlphanumeric`` turns it into a space).

    Returns
    -------
    str
        Possibly empty.

    Examples
    --------
    >>> normalize_name("DOE^JOHN  Jérôme / ../x")
    'DOE JOHN Jerome .. x'
    """
    if utf8:
        kept = "".join(c for c in text if c.isprintable() or c in "\t\n\r")
        s = _SPACES.sub(" ", kept)  # the caret of a person name is kept (issue 13 case 12)
        # a person name's empty trailing (or leading) components leave no caret behind
        return _SPACES.sub(" ", _NOT_ALLOWED_UTF8.sub("", s)).strip(" ^").rstrip(". ^")
    ascii_only = "".join(c for c in transliterate(text) if " " <= c <= "~" or c in "\t\n\r")
    s = _SPACES.sub(" ", ascii_only.replace("^", " "))
    s = _SPACES.sub(" ", _NOT_ALLOWED.sub("", s)).strip(" ").rstrip(". ")
    return s


def folder_name(level: int, tags: dict[str, str], utf8: bool = False, public_id: str = "") -> str:
    """Folder name of a patient (0), study (1) or series (2), before de-duplication.

    Parameters
    ----------
    level : int
        0, 1 or 2.
    tags : dict of str to str
        The resource's main DICOM tags (keyword → value).
    utf8 : bool, default False
        See :func:`normalize_name`.
    public_id : str, optional
        The resource's Orthanc ID: ``Patient 0123abcd`` when its values hold no
        character that can be written (a name in a non-Latin script without ``utf8``).

    Returns
    -------
    str
        ``Unknown Patient``/``Unknown Study``/``Unknown Series`` when the normalized
        name is empty.
    """
    if level == Level.PATIENT:
        raw = f"{tags.get('PatientID', '')} {tags.get('PatientName', '')}"
    elif level == Level.STUDY:
        raw = f"{tags.get('AccessionNumber', '')} {tags.get('StudyDescription', '')}"
    else:
        raw = f"{tags.get('Modality', '')} {tags.get('SeriesDescription', '')}"
    name = normalize_name(raw, utf8)
    if not name and public_id and any(c.isalnum() for c in raw):
        # values in a script with no ASCII transliteration (王小明): the level and the start
        # of the Orthanc ID, rather than "Unknown" for a patient that has a name
        return f"{Level(level).type_name} {public_id[:8]}"
    return name or f"Unknown {Level(level).type_name}"


def file_name(modality: str, counter: int) -> str:
    """Name of the ``counter``-th file (from 0) of a series in the ZIP flavour.

    Parameters
    ----------
    modality : str
        (0008,0060) *Modality* of the series (may be empty).
    counter : int

    Returns
    -------
    str
        ``CT000000.dcm``, ``M0000012.dcm`` (one-letter modality) or
        ``00000003.dcm`` (no modality), normalized.
    """
    m = modality.strip()
    if len(m) >= 2:
        raw = f"{m[:2].upper()}{counter:06d}.dcm"
    elif len(m) == 1:
        raw = f"{m.upper()}{counter:07d}.dcm"
    else:
        raw = f"{counter:08d}.dcm"
    return normalize_name(raw) or f"{counter:08d}.dcm"


class _Names:
    """Allocates unique names inside one folder (``-2``, ``-3``... on collisions)."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def take(self, name: str) -> str:
        out, n = name, 1
        while out in self._used:
            n += 1
            out = f"{name}-{n}"
        self._used.add(out)
        return out


@dataclass
class PlanItem:
    """One instance to write.

    Attributes
    ----------
    instance : Resource
    series, study, patient : Resource
        Its ancestors (shared between items).
    uuid : str
        Attachment UUID of the DICOM file in the storage area.
    size : int
        File size in bytes.
    name : str
        Entry name inside the archive.
    """

    instance: "Resource"
    series: "Resource"
    study: "Resource"
    patient: "Resource"
    uuid: str
    size: int
    name: str


class _Node:
    __slots__ = ("res", "expand", "children", "instances")

    def __init__(self, res: "Resource") -> None:
        self.res = res
        self.expand = False
        self.children: dict[str, _Node] = {}
        self.instances: list["Resource"] = []


def _collect(ctx: "ServerContext", resources: Sequence["Resource"]) -> dict[str, _Node]:
    """Orthanc's archive index: the tree of the named resources and their ancestors."""
    index = ctx.index
    roots: dict[str, _Node] = {}
    for res in resources:
        chain = [res] + index.ancestors(res)
        chain.reverse()                          # patient first
        if len(chain) != res.level + 1:
            continue                             # orphan: deleted while we looked
        nodes = roots
        node = None
        for depth, r in enumerate(chain):
            if depth == 3:                       # an instance under its series node
                if node is not None and not node.expand and all(
                        i.internal_id != r.internal_id for i in node.instances):
                    node.instances.append(r)
                break
            node = nodes.get(r.public_id)
            if node is None:
                node = nodes[r.public_id] = _Node(r)
            if node.expand:
                break                            # already covered by an ancestor
            if depth == res.level:
                node.expand = True
                node.children.clear()
                node.instances.clear()
                break
            nodes = node.children
    return roots


def _expand(ctx: "ServerContext", node: _Node) -> None:
    """Fill an ``expand`` node with every study/series/instance below it."""
    index = ctx.index
    level = node.res.level
    instances = index.descendant_instances(node.res.internal_id, level)
    by_parent: dict[int, list] = {}
    for inst in instances:
        by_parent.setdefault(inst.parent_internal, []).append(inst)
    if level == Level.SERIES:
        node.instances = by_parent.get(node.res.internal_id, [])
        return
    if level == Level.STUDY:
        for s in index.children(node.res.internal_id):
            child = node.children[s.public_id] = _Node(s)
            child.instances = by_parent.get(s.internal_id, [])
        return
    for st in index.children(node.res.internal_id):
        snode = node.children[st.public_id] = _Node(st)
        for s in index.children(st.internal_id):
            child = snode.children[s.public_id] = _Node(s)
            child.instances = by_parent.get(s.internal_id, [])


def build_plan(ctx: "ServerContext", resources: Sequence["Resource"], *, media: bool,
               utf8: bool = False) -> list[PlanItem]:
    """List the instances of an archive, in order, with their entry names.

    Parameters
    ----------
    ctx : ServerContext
    resources : sequence of Resource
        The resources named by the request (any levels, duplicates allowed).
    media : bool
        Media flavour (``IMAGES/IMn`` names) instead of the ZIP folders.
    utf8 : bool, default False
        Folder names in UTF-8 (``Utf8``), see :func:`normalize_name`.

    Returns
    -------
    list of PlanItem
        Instances whose file is missing from the index are left out.
    """
    roots = _collect(ctx, resources)
    for p in roots.values():
        if p.expand:
            _expand(ctx, p)
        else:
            for st in p.children.values():
                if st.expand:
                    _expand(ctx, st)
                else:
                    for se in st.children.values():
                        if se.expand:
                            _expand(ctx, se)
    ordered: list[tuple[tuple[str, str, str], _Node, _Node, _Node]] = []
    for pid in sorted(roots):
        p = roots[pid]
        for sid in sorted(p.children):
            st = p.children[sid]
            for seid in sorted(st.children):
                ordered.append(((pid, sid, seid), p, st, st.children[seid]))
    internal = [i.internal_id for _k, _p, _st, se in ordered for i in se.instances]
    atts = ctx.index.instance_attachments(internal)
    plan: list[PlanItem] = []
    root_names = _Names()
    study_names: dict[str, _Names] = {}
    series_names: dict[str, _Names] = {}
    folder: dict[str, str] = {}
    counter = 0
    for _key, p, st, se in ordered:
        if not se.instances:
            continue
        if not media:
            if p.res.public_id not in folder:
                # the study's own copy of the patient tags: two studies sharing a PatientID
                # under different names each keep theirs (Orthanc uses the patient level)
                tags = dict(p.res.main_tags)
                tags.update({k: v for k, v in st.res.main_tags.items() if k in ("PatientID", "PatientName")})
                folder[p.res.public_id] = root_names.take(folder_name(0, tags, utf8, p.res.public_id))
                study_names[p.res.public_id] = _Names()
            if st.res.public_id not in folder:
                folder[st.res.public_id] = study_names[p.res.public_id].take(
                    folder_name(1, st.res.main_tags, utf8, st.res.public_id))
                series_names[st.res.public_id] = _Names()
            sname = series_names[st.res.public_id].take(folder_name(2, se.res.main_tags, utf8, se.res.public_id))
            prefix = f"{folder[p.res.public_id]}/{folder[st.res.public_id]}/{sname}/"
            modality = se.res.main_tags.get("Modality", "")
        n = 0
        for inst in se.instances:
            att = atts.get(inst.internal_id)
            if att is None:
                continue
            if media:
                name = f"IMAGES/IM{counter}"
            else:
                name = prefix + file_name(modality, n)
            counter += 1
            n += 1
            plan.append(PlanItem(inst, se.res, st.res, p.res, att.uuid, att.uncompressed_size, name))
    return plan


def reload_plan(ctx: "ServerContext", instance_ids: Iterable[str], names: Iterable[str]) -> list[PlanItem]:
    """Rebuild a saved plan (after a restart) from its instance IDs and entry names.

    Parameters
    ----------
    ctx : ServerContext
    instance_ids : iterable of str
        Orthanc IDs of the instances, in plan order.
    names : iterable of str
        Their entry names.

    Returns
    -------
    list of PlanItem
        Instances deleted in the meantime are left out.
    """
    index = ctx.index
    found = []
    for iid, name in zip(instance_ids, names):
        inst = index.lookup(iid, Level.INSTANCE)
        if inst is not None:
            found.append((inst, name))
    atts = index.instance_attachments([i.internal_id for i, _n in found])
    cache: dict[int, "Resource | None"] = {}

    def get(internal: int | None):
        if internal is None:
            return None
        if internal not in cache:
            cache[internal] = index.get_by_internal(internal)
        return cache[internal]

    plan = []
    for inst, name in found:
        se = get(inst.parent_internal)
        st = get(se.parent_internal) if se else None
        p = get(st.parent_internal) if st else None
        att = atts.get(inst.internal_id)
        if se is None or st is None or p is None or att is None:
            continue
        plan.append(PlanItem(inst, se, st, p, att.uuid, att.uncompressed_size, name))
    return plan
