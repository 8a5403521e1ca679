"""Later ``/tools/find`` features (Orthanc 1.11-1.12.5), ``/tools/count-resources`` and the
``requestedTags`` argument of the resource routes.

On top of Orthanc 1.10.1's ``/tools/find`` (:class:`pacsbox.rest.tools.FindRoute`):

- ``RequestedTags`` (1.11): tags answered in a ``RequestedTags`` object of each expanded
  resource, from the main tags of the resource and its ancestors, the computed tags
  (``ModalitiesInStudy``, ``SOPClassesInStudy``, the ``NumberOf...Related...``
  counters), else from the DICOM file of one of its instances;
- ``Labels`` with ``LabelsConstraint`` ``All`` (default), ``Any`` or ``None`` (1.12);
- ``ParentPatient``, ``ParentStudy``, ``ParentSeries``: only descendants of that resource;
- ``MetadataQuery``: metadata name → pattern (``*``/``?`` wildcards, case-sensitive);
- ``OrderBy``: a list of ``{"Type": "DicomTag"|"Metadata", "Key": ..., "Direction":
  "ASC"|"DESC"}``, applied before ``Since``/``Limit``;
- ``ResponseContent``: the fields of each answer among ``MainDicomTags``, ``Metadata``,
  ``Children``, ``Parent``, ``Labels``, ``Status``, ``IsStable``, ``IsProtected``,
  ``Attachments`` and ``RequestedTags`` (``["ID"]`` alone: the list of IDs);
- ``Query`` may be left out when one of these constrains the search.

``/tools/count-resources`` (1.12.5) takes the same body and answers ``{"Count": n}``.
"""
from __future__ import annotations

import re
from typing import Any

from ..dicom import tags as dicom_tags
from ..errors import ErrorCode, OrthancError
from ..index.index import LEVEL_NAMES, PLURAL, Level

#: Fields that make a ``/tools/find`` body need this module.
EXTENDED_FIELDS = ("RequestedTags", "Labels", "LabelsConstraint", "OrderBy", "ParentPatient", "ParentStudy",
                   "ParentSeries", "MetadataQuery", "ResponseContent")
_FILTERS = ("Labels", "OrderBy", "ParentPatient", "ParentStudy", "ParentSeries", "MetadataQuery")
_PARENTS = {"ParentPatient": 0, "ParentStudy": 1, "ParentSeries": 2}
RESPONSE_CONTENT = ("ID", "MainDicomTags", "Metadata", "Children", "Parent", "Labels", "Status", "IsStable",
                    "IsProtected", "Attachments", "RequestedTags")
#: Computed tags and the levels where they exist.
COMPUTED = {"ModalitiesInStudy": 1, "SOPClassesInStudy": 1, "NumberOfStudyRelatedSeries": 1,
            "NumberOfStudyRelatedInstances": 1, "NumberOfPatientRelatedStudies": 0,
            "NumberOfPatientRelatedSeries": 0, "NumberOfPatientRelatedInstances": 0,
            "NumberOfSeriesRelatedInstances": 2}


def _bad(message: str) -> OrthancError:
    return OrthancError(ErrorCode.BAD_REQUEST, message)


def _string_list(body: dict, name: str) -> list[str]:
    v = body.get(name, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _bad(f"Field \"{name}\" should be a list of strings")
    return v


def parse_requested_tags(names: list[str]) -> list[tuple[str, int | None]]:
    """``(keyword, tag)`` of requested tag names (keywords or ``gggg,eeee``); ``tag`` is
    None for a computed tag.

    Raises
    ------
    OrthancError
        500 ``UNKNOWN_DICOM_TAG`` for an unknown name.
    """
    out = []
    for name in names:
        name = name.strip()
        if name in COMPUTED:
            out.append((name, None))
            continue
        try:
            tag = dicom_tags.parse_tag(name)
        except KeyError:
            raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG, f"Unknown DICOM tag: {name}") from None
        from pydicom.datadict import keyword_for_tag
        kw = keyword_for_tag(tag) or dicom_tags.tag_to_key(tag)
        if kw in COMPUTED:
            out.append((kw, None))
        else:
            out.append((kw, tag))
    return out


def requested_tags(ctx: Any, res: Any, tags: list[tuple[str, int | None]], fmt: str = "simplify") -> dict[str, Any]:
    """The ``RequestedTags`` object of one resource.

    Parameters
    ----------
    ctx : ServerContext
    res : Resource
    tags : list of (str, int or None)
        From :func:`parse_requested_tags`.
    fmt : {"simplify", "short", "full"}
        Keys by keyword, or ``gggg,eeee`` (``full``: ``{Name, Type, Value}``).
    """
    index = ctx.index
    chain = [res] + index.ancestors(res)
    values: dict[str, str | None] = {}
    missing = []
    for kw, tag in tags:
        if tag is None:
            v = _computed(ctx, res, kw)
            if v is not None:
                values[kw] = v
            continue
        for r in chain:
            if kw in r.main_tags:
                values[kw] = r.main_tags[kw]
                break
        else:
            missing.append((kw, tag))
    if missing:
        ids = ([res.internal_id] if res.level == Level.INSTANCE
               else index.descendant_ids(res.internal_id, res.level, Level.INSTANCE))
        inst = index.get_by_internal(ids[0]) if ids else None
        if inst is not None:
            try:
                ds = ctx.resources.read_dataset(inst, stop_before_pixels=True)
            except (OrthancError, FileNotFoundError):
                ds = None
            if ds is not None:
                enc = dicom_tags.dataset_encodings(ds, ctx.ingest.default_encoding)
                for kw, tag in missing:
                    el = ds.get_item(tag)
                    if el is not None:
                        values[kw] = dicom_tags.element_text(el, enc)
    out: dict[str, Any] = {}
    for kw, tag in tags:
        if kw not in values:
            continue
        v = values[kw]
        if fmt == "simplify":
            out[kw] = v
        else:
            key = dicom_tags.tag_to_key(tag if tag is not None else dicom_tags.parse_tag(kw))
            out[key] = v if fmt == "short" else {"Name": kw, "Type": "String" if v is not None else "Null",
                                                 "Value": v}
    return out


def _computed(ctx: Any, res: Any, kw: str) -> str | None:
    """A computed tag of a resource, or None when it does not apply to its level."""
    if COMPUTED[kw] != res.level:
        return None
    index = ctx.index
    if kw in ("ModalitiesInStudy", "NumberOfStudyRelatedSeries"):
        series = index.children(res.internal_id)
        if kw == "NumberOfStudyRelatedSeries":
            return str(len(series))
        return "\\".join(sorted({s.main_tags.get("Modality", "") for s in series} - {""}))
    if kw == "SOPClassesInStudy":
        ids = index.descendant_ids(res.internal_id, Level.STUDY, Level.INSTANCE)
        classes = set()
        for i in ids:
            v = index.get_metadata(i, "SopClassUid")
            if v:
                classes.add(v)
        return "\\".join(sorted(classes))
    target = {"NumberOfStudyRelatedInstances": 3, "NumberOfPatientRelatedStudies": 1,
              "NumberOfPatientRelatedSeries": 2, "NumberOfPatientRelatedInstances": 3,
              "NumberOfSeriesRelatedInstances": 3}[kw]
    return str(len(index.descendant_ids(res.internal_id, res.level, target)))


def _wildcard(pattern: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


class ExtendedFind:
    """The parsed 1.11-1.12 fields of a ``/tools/find`` or ``/tools/count-resources`` body.

    Parameters
    ----------
    ctx : ServerContext
    level : int
        The query level.
    body : dict
        The request body.

    Raises
    ------
    OrthancError
        400 for a malformed field, 500 ``UNKNOWN_DICOM_TAG`` for an unknown requested tag.
    """

    def __init__(self, ctx: Any, level: int, body: dict[str, Any]) -> None:
        self.ctx, self.level = ctx, level
        self.requested = parse_requested_tags(_string_list(body, "RequestedTags"))
        self.labels = _string_list(body, "Labels")
        constraint = body.get("LabelsConstraint", "All")
        if constraint not in ("All", "Any", "None"):
            raise _bad("Field \"LabelsConstraint\" should be \"All\", \"Any\" or \"None\"")
        self.labels_constraint = constraint
        self.parents: list[tuple[int, str]] = []
        for name, lvl in _PARENTS.items():
            if name in body:
                if not isinstance(body[name], str):
                    raise _bad(f"Field \"{name}\" should be a string")
                if lvl >= level:
                    raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                                       f"\"{name}\" is not a parent level of {LEVEL_NAMES[level]}")
                self.parents.append((lvl, body[name]))
        mq = body.get("MetadataQuery", {})
        if not isinstance(mq, dict) or not all(isinstance(v, str) for v in mq.values()):
            raise _bad("Field \"MetadataQuery\" should be an object of strings")
        self.metadata_query = [(k, _wildcard(v)) for k, v in mq.items()]
        order = body.get("OrderBy", [])
        if not isinstance(order, list):
            raise _bad("Field \"OrderBy\" should be a list")
        self.order: list[tuple[str, str, bool]] = []
        for o in order:
            if not isinstance(o, dict) or o.get("Type") not in ("DicomTag", "Metadata") \
                    or not isinstance(o.get("Key"), str) or o.get("Direction", "ASC") not in ("ASC", "DESC"):
                raise _bad("Each item of \"OrderBy\" should be {\"Type\": \"DicomTag\"|\"Metadata\", "
                           "\"Key\": string, \"Direction\": \"ASC\"|\"DESC\"}")
            key = o["Key"]
            if o["Type"] == "DicomTag":
                try:
                    tag = dicom_tags.parse_tag(key)
                except KeyError:
                    raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG, f"Unknown DICOM tag: {key}") from None
                from pydicom.datadict import keyword_for_tag
                key = keyword_for_tag(tag) or key
            self.order.append((o["Type"], key, o.get("Direction", "ASC") == "DESC"))
        content = body.get("ResponseContent")
        if content is not None:
            content = _string_list(body, "ResponseContent")
            unknown = [c for c in content if c not in RESPONSE_CONTENT]
            if unknown:
                raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unsupported value in ResponseContent: {unknown[0]}")
        self.content = content
        self.filters = any(k in body for k in _FILTERS)

    def keep(self, res: Any) -> bool:
        """Whether a resource found by the DICOM query passes the other constraints."""
        index = self.ctx.index
        if self.parents:
            chain = {a.level: a.public_id for a in index.ancestors(res)}
            if any(chain.get(lvl) != pid for lvl, pid in self.parents):
                return False
        if self.labels or self.labels_constraint == "None":
            have = set(index.labels(res.internal_id))
            wanted = set(self.labels)
            if self.labels_constraint == "All" and not wanted <= have:
                return False
            if self.labels_constraint == "Any" and not wanted & have:
                return False
            if self.labels_constraint == "None" and wanted & have:
                return False
        if self.metadata_query:
            meta = index.metadata(res.internal_id)
            for name, rx in self.metadata_query:
                v = meta.get(name)
                if v is None or not rx.fullmatch(v):
                    return False
        return True

    def sort(self, found: list[Any]) -> list[Any]:
        """``found`` ordered by ``OrderBy`` (missing values first, as empty strings)."""
        index = self.ctx.index
        for kind, key, desc in reversed(self.order):
            def value(res, kind=kind, key=key):
                if kind == "Metadata":
                    return index.metadata(res.internal_id).get(key) or ""
                for r in [res] + index.ancestors(res):
                    if key in r.main_tags:
                        return r.main_tags[key]
                return ""
            found = sorted(found, key=value, reverse=desc)
        return found

    def answer(self, res: Any, expand: bool, fmt: str) -> Any:
        """One item of the answer."""
        ctx = self.ctx
        if self.content is None:
            if not expand:
                return res.public_id
            d = ctx.resources.expand(res, tag_format=fmt)
            if self.requested:
                d["RequestedTags"] = requested_tags(ctx, res, self.requested, fmt)
            return d
        if self.content == ["ID"]:
            return res.public_id
        full = ctx.resources.expand(res, tag_format=fmt)
        d: dict[str, Any] = {"ID": res.public_id, "Type": res.level_name}
        c = set(self.content)
        if "MainDicomTags" in c:
            d["MainDicomTags"] = full["MainDicomTags"]
            if "PatientMainDicomTags" in full:
                d["PatientMainDicomTags"] = full["PatientMainDicomTags"]
        if "Metadata" in c:
            from .resources_api import resource_metadata
            d["Metadata"] = resource_metadata(ctx, res)
        if "Children" in c and res.level < Level.INSTANCE:
            key = {0: "Studies", 1: "Series", 2: "Instances"}[res.level]
            d[key] = full[key]
        if "Parent" in c and res.level > Level.PATIENT:
            key = {1: "ParentPatient", 2: "ParentStudy", 3: "ParentSeries"}[res.level]
            d[key] = full[key]
        if "Labels" in c:
            d["Labels"] = ctx.index.labels(res.internal_id)
        if "Status" in c and res.level == Level.SERIES:
            d["Status"] = full["Status"]
        if "IsStable" in c and res.level < Level.INSTANCE:
            d["IsStable"] = full["IsStable"]
        if "IsProtected" in c and res.level == Level.PATIENT:
            d["IsProtected"] = ctx.index.is_protected(res.internal_id)
        if "Attachments" in c:
            d["Attachments"] = [{"ContentType": a.content_type, "Uuid": a.uuid, "UncompressedSize": a.uncompressed_size,
                                 "CompressedSize": a.compressed_size, "UncompressedMD5": a.md5,
                                 "CompressedMD5": a.md5} for a in ctx.index.attachments(res.internal_id)]
        if "RequestedTags" in c or self.requested:
            d["RequestedTags"] = requested_tags(ctx, res, self.requested, fmt)
        return d


def query_requested_tags(req: Any) -> list[tuple[str, int | None]] | None:
    """The ``requestedTags`` query argument (``;``-separated tag names), or None."""
    v = req.params.get("requestedTags")
    if v is None:
        return None
    if isinstance(v, list):
        v = ";".join(v)
    return parse_requested_tags([n for n in v.split(";") if n.strip()])


__all__ = ["ExtendedFind", "EXTENDED_FIELDS", "parse_requested_tags", "requested_tags", "query_requested_tags",
           "PLURAL"]
