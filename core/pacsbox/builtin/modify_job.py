"""The ``ResourceModification`` job: modify or anonymize every instance of a set of
resources and store the results as new resources (reference sections 3.3 and 5).

Each instance is rewritten at the byte level (:mod:`pacsbox.dicom.rewrite`) with UIDs
derived from the job's seed, then stored through ``ctx.ingest`` with the metadata
``ModifiedFrom`` / ``AnonymizedFrom`` (the series, study and patient get it too when their
Orthanc ID changed, as in Orthanc). The job saves its position, its seed and what it
created, so that after a restart it continues with the next chunk and rewrites any instance
of an interrupted chunk to the same UIDs (``AlreadyStored``, never a duplicate).

If the job fails (an instance cannot be read, rewritten or stored, without
``Permissive``), the instances it had stored are deleted: no partial new study is left.
Orthanc 1.10.1 leaves them in place.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

from ..dicom import rewrite
from ..dicom.ids import hierarchy_ids
from ..dicom.modification import SOP_UID, Modification, TagParser, UidMapper
from ..errors import ErrorCode, OrthancError
from ..index.index import LEVEL_NAMES, PLURAL, Level, ResourceGoneError
from .common import ChunkedInstancesJob, ParentsCache

log = logging.getLogger("pacsbox.builtin")

def tag_parser(ctx) -> TagParser:
    """The tag-name parser of an app (with its ``Dictionary`` option)."""
    return TagParser(ctx.config.get("Dictionary") or {})


def _resource(level: int, public_id: str) -> dict[str, str]:
    return {"ID": public_id, "Path": f"/{PLURAL[level]}/{public_id}", "Type": LEVEL_NAMES[level]}


def rewrite_instance(rewriter: rewrite.Rewriter, data: bytes, transfer_syntax: str | None = None,
                     quality: int = 90) -> rewrite.RewriteResult:
    """Rewrite one file, then transcode it when asked (keeping the source syntax when
    pydicom cannot, as Orthanc does); ``quality`` (1-100) is the JPEG quality of lossy
    targets (``LossyQuality``).

    Raises
    ------
    OrthancError
        ``BAD_PARAMETER_TYPE`` for a replacement that does not fit its VR,
        ``BAD_FILE_FORMAT`` for a file that cannot be parsed.
    """
    try:
        res = rewriter.rewrite(data)
    except rewrite.ValueTypeError as e:
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, str(e)) from None
    except (rewrite.RewriteError, KeyError, IndexError, ValueError) as e:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Cannot modify a DICOM file: {e}") from None
    if transfer_syntax and transfer_syntax != res.transfer_syntax:
        out = rewrite.transcode(res.data, transfer_syntax, quality)
        if out is None:
            log.warning("cannot transcode to %s, keeping the transfer syntax %s", transfer_syntax,
                        res.transfer_syntax)
        else:
            res.data = out
            res.transfer_syntax = transfer_syntax
    return res


class ResourceModificationJob(ChunkedInstancesJob):
    """Modification or anonymization of instances (Orthanc ``ResourceModificationJob``).

    Parameters
    ----------
    modification : Modification
    instances : list of str
        Source instances (Orthanc IDs), in index order.
    output_level : int or None
        Level of the single resource of ``/{level}/{id}/modify`` (0-2), whose new ID the
        content reports (``ID``, ``Path``, ``Type``, ``PatientID``); None for the bulk
        routes (content ``Resources``).
    transcode : str or None
        Target Transfer Syntax UID (``Transcode``).
    lossy_quality : int
        JPEG quality, 1-100, of a lossy ``Transcode`` target (``LossyQuality``, else the
        ``DicomLossyTranscodingQuality`` option, 90).
    keep_source : bool
        ``KeepSource`` (default true).
    origin : dict
        Origin of the stored instances (``RestApi``, remote IP, user name).
    """

    type_name = "ResourceModification"

    def __init__(self, modification: Modification, instances: list[str], *, output_level: int | None,
                 transcode: str | None = None, keep_source: bool = True,
                 origin: Mapping[str, str] | None = None, lossy_quality: int = 90) -> None:
        super().__init__(instances, False, keep_source)
        self.modification = modification
        self.output_level = output_level
        self.transcode = transcode
        self.lossy_quality = lossy_quality
        self.origin = dict(origin or {"Origin": "RestApi"})
        self.first: list[str] | None = None
        self.outputs: list[set[str]] = [set(), set(), set(), set()]
        self._tagged: set[str] = set()
        self._lock = threading.Lock()
        self._rewriter: rewrite.Rewriter | None = None
        self._parents: ParentsCache | None = None

    @property
    def is_anonymization(self) -> bool:
        """bool: an anonymization (``IsAnonymization``)."""
        return self.modification.is_anonymization

    # ---- run ---------------------------------------------------------------------------------
    def start(self, ctx) -> None:
        """Build the rewriter of this run (rules, seed) and the worker pool."""
        super().start(ctx)
        self._rewriter = self.modification.rewriter(UidMapper(self.seed), ctx.ingest.default_encoding)
        self._parents = ParentsCache(ctx)

    def process_instance(self, ctx, instance_id: str):
        """Read, rewrite and store one instance; returns ``(status, new ids, source ids)``."""
        data = ctx.resources.read_file(instance_id)
        res = rewrite_instance(self._rewriter, data, self.transcode, self.lossy_quality)
        # the source's Orthanc IDs, from its identifiers (the index when they disagree)
        source = hierarchy_ids(*(res.identifiers.get(t, ("", ""))[0] for t in rewrite.IDENTIFIER_TAGS))
        if source[3] != instance_id:
            source = self._parents.hierarchy(instance_id)
            if source is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown instance: {instance_id}")
        origin = dict(self.origin)
        origin["Metadata"] = {self.metadata_name: instance_id}
        stored = ctx.ingest.store(res.data, origin)
        if stored.status not in ("Success", "AlreadyStored") or stored.ids is None:
            raise OrthancError(ErrorCode.CANNOT_STORE_INSTANCE,
                               f"Error while storing a modified instance {instance_id}")
        return stored.status, stored.ids, source

    @property
    def metadata_name(self) -> str:
        """``AnonymizedFrom`` or ``ModifiedFrom``."""
        return "AnonymizedFrom" if self.is_anonymization else "ModifiedFrom"

    def _regenerates_sop(self) -> bool:
        m = self.modification
        return not m.keep_sop and SOP_UID not in m.replacements

    def record(self, ctx, instance_id: str, value) -> None:
        """Outputs, ``created``, and the metadata of new parents."""
        status, ids, source = value
        if ids[3] != instance_id:
            if status == "Success" or self._regenerates_sop():
                self.created.append(ids[3])
            self.sources_done.append(instance_id)
        index = ctx.index
        for level in (2, 1, 0):
            new, old = ids[level], source[level]
            if new != old and new not in self._tagged:
                # the new resource may be deleted meanwhile (by a request): set_metadata then
                # raises ResourceGoneError, an UnknownResource failure of the job
                res = index.lookup(new, level)
                if res is None:
                    raise ResourceGoneError(new)
                index.set_metadata(res.internal_id, self.metadata_name, old, public_id=new, log_change=False)
                self._tagged.add(new)
        with self._lock:                 # public_content() may run on an HTTP thread
            if self.first is None:
                self.first = list(ids)
            if self.output_level is None:
                for level in range(4):
                    self.outputs[level].add(ids[level])

    def finalize(self, ctx) -> None:
        """``KeepSource: false`` deletes the sources, then the patient tags follow."""
        super().finalize(ctx)
        self._patient_tags_in_step(ctx)

    def _patient_tags_in_step(self, ctx) -> None:
        """A patient that existed before the job (same PatientID: a forced rename) keeps
        the main tags of its first instance (Orthanc's rule), so ``/patients/{id}`` would
        still show the old PatientName while its new study and instances show the new
        one (an Orthanc bug report). When a written study's own copy of the patient tags
        differs from its patient's, the patient takes the study's."""
        from ..dicom.tags import PATIENT_MAIN_TAGS
        index = ctx.index
        with self._lock:
            if self.output_level is not None:
                pairs = {(self.first[0], self.first[1])} if self.first else set()
            else:
                pairs = set()
                for sid in self.outputs[1]:
                    st = index.lookup(sid, Level.STUDY)
                    parent = index.public_id_of(st.parent_internal) if st is not None else None
                    if parent in self.outputs[0]:
                        pairs.add((parent, sid))
        for pid, sid in sorted(pairs):
            patient, study = index.lookup(pid, Level.PATIENT), index.lookup(sid, Level.STUDY)
            if patient is None or study is None or study.parent_internal != patient.internal_id:
                continue
            wanted = {k: study.main_tags[k] for k in PATIENT_MAIN_TAGS if k in study.main_tags}
            if all(patient.main_tags.get(k) == v for k, v in wanted.items()):
                continue
            tags = {**patient.main_tags, **wanted}
            index.set_main_tags(patient.internal_id, tags, {"PatientID": tags.get("PatientID", "")})

    def cleanup(self, ctx) -> None:
        """Delete what the failed job stored."""
        super().cleanup(ctx)
        self.first = None
        self.outputs = [set(), set(), set(), set()]

    def reset(self) -> None:
        """``resubmit``."""
        super().reset()
        self.first = None
        self.outputs = [set(), set(), set(), set()]
        self._tagged = set()

    # ---- content & state -------------------------------------------------------------------
    def public_content(self) -> dict[str, Any]:
        """``Description``, ``InstancesCount``, ``FailedInstancesCount``, ``IsAnonymization``,
        then ``ID``/``Path``/``Type``/``PatientID`` (single resource) or ``Resources``
        (bulk), and ``Transcode`` when asked (reference section 3.3)."""
        c = self.base_content()
        c["IsAnonymization"] = self.is_anonymization
        with self._lock:
            if self.output_level is not None:
                if self.first is not None:
                    c.update(_resource(self.output_level, self.first[self.output_level]))
                    c["PatientID"] = self.first[0]
            else:
                c["Resources"] = [_resource(level, pid) for level in (3, 2, 1, 0)
                                  for pid in sorted(self.outputs[level])]
        if self.transcode:
            c["Transcode"] = self.transcode
        return c

    def serialize(self) -> dict[str, Any]:
        """Everything needed to continue after a restart."""
        return {**self.chunk_state(), "Modification": self.modification.serialize(),
                "OutputLevel": self.output_level, "Transcode": self.transcode, "Origin": self.origin,
                "LossyQuality": self.lossy_quality,
                "First": self.first, "Outputs": self._outputs_state()}

    def _outputs_state(self) -> list[list[str]] | None:
        if self.output_level is not None:
            return None
        with self._lock:
            return [sorted(s) for s in self.outputs]

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx) -> "ResourceModificationJob":
        """Rebuild a saved job."""
        m = Modification.deserialize(data["Modification"], tag_parser(ctx))
        job = cls(m, list(data.get("Instances", [])), output_level=data.get("OutputLevel"),
                  transcode=data.get("Transcode"), keep_source=bool(data.get("KeepSource", True)),
                  origin=data.get("Origin"), lossy_quality=int(data.get("LossyQuality", 90)))
        job.load_chunk_state(data)
        job.first = data.get("First")
        if data.get("Outputs"):
            job.outputs = [set(x) for x in data["Outputs"]]
        return job
