"""Finding resources in the index by DICOM tag values: the domain logic of ``/tools/find``
and of the C-FIND/C-MOVE SCPs (``pacsbox.find_resources`` in the public API).

Main DICOM tags are matched in the index, identifiers through its identifier index, other
tags against one stored file of each candidate. Source: Orthanc 1.10.1
``ServerContext::Apply`` / ``ResourceFinder``; reference section 2.6 (``/tools/find``).
"""
from __future__ import annotations

from typing import Any

from .dicom import tags as dicom_tags
from .dicom.matching import IDENTIFIERS, compile_query
from .errors import ErrorCode, OrthancError
from .index.index import LEVEL_NAMES, Level

_IDENTIFIER_LEVEL = {"PatientID": 0, "StudyInstanceUID": 1, "AccessionNumber": 1, "SeriesInstanceUID": 2,
                     "SOPInstanceUID": 3}


def find_resources(ctx, level: int, query: dict[str, Any], *, case_sensitive: bool | None = None,
                   limit: int = 0, since: int = 0, dicom_rules: bool = False):
    """Match the index against a query (``/tools/find``, C-FIND SCP).

    Parameters
    ----------
    ctx : ServerContext
    level : int
        0 patient ... 3 instance.
    query : dict of str to str
        Keys are keywords or ``gggg,eeee``; values use the matching rules of
        :mod:`pacsbox.dicom.matching`. Main DICOM tags of the query level and above are
        matched in the index; a main tag of a lower level never matches (as Orthanc),
        except ``ModalitiesInStudy`` at study level (any series of that modality); other
        tags are matched against the stored file of one instance of each candidate.
    case_sensitive : bool, optional
        ``/tools/find`` ``CaseSensitive`` (every tag); default: the ``CaseSensitivePN``
        option. With ``dicom_rules``, the PN case sensitivity.
    limit, since : int
        Paging of the matches (0 = no limit).
    dicom_rules : bool
        C-FIND rules: non-PN tags are matched case-sensitively.

    Returns
    -------
    list of Resource
        Matching resources of ``level``: instances in index order, other levels by
        increasing Orthanc ID (Orthanc 1.10.1's order).

    Raises
    ------
    OrthancError
        500 ``UNKNOWN_DICOM_TAG`` for an unknown tag name and 400 for a wildcard on a
        tag whose VR takes no wildcards (numbers, dates, times, UIDs), as Orthanc 1.10.1.
    """
    if case_sensitive is None:
        case_sensitive = ctx.config.bool("CaseSensitivePN")
    try:
        constraints = compile_query(dict(query), case_sensitive, dicom_rules=dicom_rules,
                                    dictionary=dicom_tags.tag_dictionary(ctx))
    except KeyError:
        raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG) from None
    exact: dict[str, str] = {}
    main_of_level: list[tuple[int, Any]] = []   # (depth above the query level, constraint)
    modalities = None
    file_checks = []
    for c in constraints:
        if c.is_universal:
            continue
        if c.keyword == "ModalitiesInStudy" and level == Level.STUDY:
            modalities = c
            continue
        tag_level = _IDENTIFIER_LEVEL.get(c.keyword)
        if tag_level is not None and tag_level <= level and c.kind == "equal" and \
                (c.case_sensitive or c.pattern.upper() == c.pattern.lower()):
            exact[c.keyword] = c.pattern  # answered by the identifiers index
            continue
        owner = next((lvl for lvl in range(level, -1, -1) if c.keyword in dicom_tags.MAIN_TAGS[LEVEL_NAMES[lvl]]), None)
        if owner == Level.PATIENT and level >= Level.STUDY:
            # below the patient level, a patient tag is matched against the copy each study
            # keeps of its first instance's patient tags (its PatientMainDicomTags), as
            # Orthanc 1.10.1: studies of one PatientID may carry different names
            main_of_level.append((level - 1, c))
        elif owner is not None:
            main_of_level.append((level - owner, c))
        elif any(c.keyword in dicom_tags.MAIN_TAGS[LEVEL_NAMES[lvl]] for lvl in range(level + 1, Level.INSTANCE + 1)):
            return []  # a main tag of a lower level: Orthanc matches nothing
        else:
            file_checks.append(c)
    out = []
    skipped = 0
    index = ctx.index
    for res, ancestors in index.find_candidates(level, exact):
        chain = [res] + ancestors
        ok = True
        for depth, c in main_of_level:
            if not c.matches(chain[depth].main_tags.get(c.keyword), c.keyword in IDENTIFIERS[level - depth]):
                ok = False
                break
        if not ok:
            continue
        if modalities is not None:
            mods = [s.main_tags.get("Modality") for s in index.children(res.internal_id)]
            if not any(modalities.matches(m) for m in mods):
                continue
        if file_checks and not _match_file(ctx, res, file_checks):
            continue
        if since and skipped < since:
            skipped += 1
            continue
        out.append(res)
        if limit and len(out) >= limit:
            break
    return out


def _match_file(ctx, res, constraints) -> bool:
    index = ctx.index
    ids = ([res.internal_id] if res.level == Level.INSTANCE
           else index.descendant_ids(res.internal_id, res.level, Level.INSTANCE))
    if not ids:
        return False
    inst = index.get_by_internal(ids[0])
    ds = ctx.resources.read_dataset(inst, stop_before_pixels=True)
    enc = dicom_tags.dataset_encodings(ds, ctx.ingest.default_encoding)
    dictionary = dicom_tags.tag_dictionary(ctx)
    for c in constraints:
        el = ds.get_item(dictionary.locate(c.tag, ds))  # a private name: the file's block
        value = dicom_tags.element_text(el, enc) if el is not None else None
        if not c.matches(value):
            return False
    return True
