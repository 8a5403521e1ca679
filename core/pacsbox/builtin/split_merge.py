"""``SplitStudy`` and ``MergeStudy`` jobs (reference section 11; Orthanc ``SplitStudyJob``,
``MergeStudyJob``).

Split: the chosen series/instances of a study are copied into one new study (a new
StudyInstanceUID for the job, a new SeriesInstanceUID per source series, a new
SOPInstanceUID per instance), with ``Replace``/``Remove`` applied to Patient- and
Study-module tags. Merge: instances of other studies are copied into the target study,
taking every Patient- and Study-module tag of the target (tags the target lacks are
removed), with new series and SOP Instance UIDs. By default (``KeepSource: false``) the
sources are deleted once the job succeeded. No ``ModifiedFrom`` metadata is written, as in
Orthanc.

New UIDs derive from the job's seed and the source's Orthanc IDs, so a job resumed after a
crash writes the same instances again (``AlreadyStored``).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from ..dicom import rewrite
from ..dicom.modification import SERIES_UID, SOP_UID, STUDY_UID, UidMapper
from ..dicom.modules import PATIENT_MODULE, STUDY_MODULE
from ..dicom.tags import MAX_TAG_LENGTH, dataset_encodings, element_text, parse_tag, tag_to_key
from ..errors import ErrorCode, OrthancError
from ..index.models import Level
from .common import ChunkedInstancesJob
from .modify_job import rewrite_instance, tag_parser

log = logging.getLogger("pacsbox.builtin")


class _CopyRules(rewrite.Rules):
    """Plain replacements (inserted when absent) and removals, at the top level."""

    def __init__(self, replacements: Mapping[int, Any], removals: frozenset[int]) -> None:
        self.replacements = replacements
        self.removals = removals

    def top(self, tag: int, vr: str):
        if tag in self.removals:
            return rewrite.REMOVE, None
        return rewrite.KEEP, None


class _StudyCopyJob(ChunkedInstancesJob):
    """Common part of split and merge: copy instances with new series/SOP UIDs."""

    def __init__(self, study: str, sources: list[tuple[str, str]], *, replacements: Mapping[int, str] | None = None,
                 removals: list[int] | tuple[int, ...] = (), keep_source: bool = False,
                 origin: Mapping[str, str] | None = None) -> None:
        super().__init__([s[0] for s in sources], False, keep_source)
        self.study = study
        self.source_series = [s[1] for s in sources]
        self.replacements: dict[int, str] = dict(replacements or {})
        self.removals: list[int] = list(removals)
        self.origin = dict(origin or {"Origin": "RestApi"})
        self._series_of: dict[str, str] = {}
        self._mapper: UidMapper | None = None
        self._cache: dict[int, tuple] = {}
        self._fast: dict[int, tuple] = {}
        self._vr_of = None
        self._codec = "latin_1"

    def start(self, ctx) -> None:
        """Worker pool, UID mapper, VR lookup."""
        super().start(ctx)
        self._series_of = dict(zip(self.instances, self.source_series))
        self._mapper = UidMapper(self.seed)
        parser = tag_parser(ctx)
        self._vr_of = parser.vr
        self._codec = ctx.ingest.default_encoding

    def target_replacements(self, instance_id: str) -> dict[int, str]:
        """Replacements for one instance (the subclass adds the study UID)."""
        reps = dict(self.replacements)
        reps[SERIES_UID] = self._mapper(2, self._series_of[instance_id])
        reps[SOP_UID] = self._mapper(3, instance_id)
        return reps

    def process_instance(self, ctx, instance_id: str):
        """Copy one instance; returns the new ``(patient, study, series, instance)`` IDs."""
        rules = _CopyRules(self.target_replacements(instance_id), frozenset(self.removals))
        rw = rewrite.Rewriter(rules, self._mapper, self._vr_of, self._codec)
        rw._top_cache, rw._fast_cache = self._cache, self._fast  # noqa: SLF001 - same rules.top for all
        res = rewrite_instance(rw, ctx.resources.read_file(instance_id))
        stored = ctx.ingest.store(res.data, self.origin)
        if stored.status not in ("Success", "AlreadyStored") or stored.ids is None:
            raise OrthancError(ErrorCode.CANNOT_STORE_INSTANCE, f"Error while storing a modified instance {instance_id}")
        return stored.ids

    def record(self, ctx, instance_id: str, ids) -> None:
        """New instances are always this job's (new SOPInstanceUID)."""
        self.created.append(ids[3])
        self.sources_done.append(instance_id)

    def state(self) -> dict[str, Any]:
        """Serializable state."""
        return {**self.chunk_state(), "Study": self.study, "SourceSeries": list(self.source_series),
                "Replacements": {tag_to_key(t): v for t, v in sorted(self.replacements.items())},
                "Removals": [tag_to_key(t) for t in self.removals], "Origin": self.origin}

    @classmethod
    def _load(cls, data: Mapping[str, Any]):
        job = cls(data["Study"], list(zip(data.get("Instances", []), data.get("SourceSeries", []))),
                  replacements={parse_tag(k): v for k, v in data.get("Replacements", {}).items()},
                  removals=[parse_tag(k) for k in data.get("Removals", [])],
                  keep_source=bool(data.get("KeepSource", False)), origin=data.get("Origin"))
        job.load_chunk_state(data)
        return job


class SplitStudyJob(_StudyCopyJob):
    """``POST /studies/{id}/split``: move series/instances into a new study.

    Parameters
    ----------
    study : str
        Source study (Orthanc ID).
    sources : list of (str, str)
        ``(instance, its series)`` Orthanc IDs to move.
    replacements : dict of int to str
        Patient/Study-module tags to set in the new study.
    removals : list of int
        Patient/Study-module tags to remove.
    keep_source : bool
        ``KeepSource`` (default false: the originals are deleted).
    origin : dict
    """

    type_name = "SplitStudy"

    def __init__(self, study: str, sources: list[tuple[str, str]], **kw) -> None:
        super().__init__(study, sources, **kw)
        self.target_study: str | None = None

    @property
    def permissive(self) -> bool:
        """bool: always False (Orthanc's split jobs are never permissive)."""
        return False

    @permissive.setter
    def permissive(self, value: bool) -> None:
        pass

    @property
    def target_study_uid(self) -> str:
        """str: the new StudyInstanceUID (one per job, from the seed)."""
        return UidMapper(self.seed)(1, f"split:{self.study}")

    def target_replacements(self, instance_id: str) -> dict[int, str]:
        reps = super().target_replacements(instance_id)
        reps[STUDY_UID] = self.target_study_uid
        return reps

    def record(self, ctx, instance_id: str, ids) -> None:
        super().record(ctx, instance_id, ids)
        if self.target_study is None:
            self.target_study = ids[1]

    def cleanup(self, ctx) -> None:
        super().cleanup(ctx)
        self.target_study = None

    def public_content(self) -> dict[str, Any]:
        """``Description``, counts, ``TargetStudy`` (once known), ``TargetStudyUID``."""
        c = self.base_content()
        if self.target_study:
            c["TargetStudy"] = self.target_study
        c["TargetStudyUID"] = self.target_study_uid
        return c

    def serialize(self) -> dict[str, Any]:
        return {**self.state(), "TargetStudy": self.target_study}

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx) -> "SplitStudyJob":
        job = cls._load(data)
        job.target_study = data.get("TargetStudy")
        return job


class MergeStudyJob(_StudyCopyJob):
    """``POST /studies/{id}/merge``: copy instances of other studies into study ``{id}``.

    Call :meth:`prepare` before submitting: it reads the target's Patient- and Study-module
    tags from its first instance.
    """

    type_name = "MergeStudy"

    def prepare(self, ctx) -> None:
        """Take the module tags of the target study (Orthanc ``MergeStudyJob`` constructor).

        Tags present in the target with a string value are copied; the others of the two
        modules are removed from the merged instances.

        Raises
        ------
        OrthancError
            ``UNKNOWN_RESOURCE`` when the target study has no instance.
        """
        target = ctx.index.lookup(self.study, Level.STUDY)
        insts = ctx.resources.instances_of([target]) if target is not None else []
        if not insts:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        ds = ctx.resources.read_dataset(insts[0], stop_before_pixels=True)
        enc = dataset_encodings(ds, ctx.ingest.default_encoding)
        replacements, removals = {}, []
        for tag in sorted(set(PATIENT_MODULE) | set(STUDY_MODULE)):
            el = ds.get_item(tag)
            text = None
            if el is not None and el.VR != "SQ":
                text = element_text(el, enc)
            if text is not None and len(text) <= MAX_TAG_LENGTH:
                replacements[tag] = text
            else:
                removals.append(tag)
        self.replacements, self.removals = replacements, removals

    def public_content(self) -> dict[str, Any]:
        """``Description``, counts, ``TargetStudy``."""
        c = self.base_content()
        c["TargetStudy"] = self.study
        return c

    def serialize(self) -> dict[str, Any]:
        return self.state()

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx) -> "MergeStudyJob":
        return cls._load(data)
