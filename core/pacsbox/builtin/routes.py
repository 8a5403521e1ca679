"""REST routes of the built-in job types (reference sections 5 and 11).

- ``POST /{patients,studies,series}/{id}/modify|anonymize``: a ``ResourceModification``
  job (synchronous by default);
- ``POST /instances/{id}/modify|anonymize``: the rewritten file, not stored;
- ``POST /tools/bulk-modify|bulk-anonymize``: a job over ``Resources`` of any level;
- ``POST /studies/{id}/split|merge``: ``SplitStudy`` / ``MergeStudy`` jobs.

Request checks happen before any job is created, with Orthanc's status codes and
``Details`` texts, so a refused request leaves nothing behind. (Orthanc 1.10.1 runs its
level checks inside the job; a synchronous call answers the same error.)
"""
from __future__ import annotations

from typing import Any

from ..dicom import rewrite
from ..dicom.modification import PATIENT_NAME, Modification, UidMapper
from ..dicom.modules import PATIENT_MODULE, STUDY_MODULE
from ..errors import ErrorCode, OrthancError
from ..index.models import Level
from ..routing.registry import RouteSpec
from ..web import (JOB_BODY_ERROR, read_bool, read_int, read_json_body, read_json_object, read_string, read_strings,
                   send_json)
from .common import new_seed, request_origin
from .modify_job import ResourceModificationJob, rewrite_instance, tag_parser
from .split_merge import MergeStudyJob, SplitStudyJob

#: Global property of the index holding the ``Anonymized<N>`` counter.
ANONYMIZATION_SEQUENCE = "AnonymizationSequence"

def parse_modification(ctx, body: dict[str, Any], anonymize: bool) -> Modification:
    """Parse a modify or anonymize body (``DefaultPrivateCreator`` as default creator).

    For an anonymization that does not replace, keep or remove PatientName, the
    server-wide counter is incremented and PatientName becomes ``Anonymized<N>``.
    """
    creator = str(ctx.config.get("DefaultPrivateCreator") or "")
    parser = tag_parser(ctx)
    if anonymize:
        m, overridden = Modification.from_anonymize_request(body, parser, creator)
        m.pending_patient_name = not overridden
        return m
    m = Modification.from_modify_request(body, parser, creator)
    m.pending_patient_name = False
    return m


def name_patient(ctx, m: Modification) -> None:
    """Give an anonymization its ``Anonymized<N>`` PatientName (once, at submission)."""
    if getattr(m, "pending_patient_name", False):
        n = ctx.index.increment_global(ANONYMIZATION_SEQUENCE)
        m.replace_tag(PATIENT_NAME, f"Anonymized{n}", True)
        m.pending_patient_name = False


def read_transcode(body: dict[str, Any], instance_route: bool = False) -> str | None:
    """``Transcode``: a known Transfer Syntax UID.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "Unknown transfer syntax UID: <uid>" (job routes), or
        ``PARAMETER_OUT_OF_RANGE`` "Unknown transfer syntax: <uid>" (instance route).
    """
    ts = read_string(body, "Transcode")
    if ts is None:
        return None
    if not rewrite.is_known_transfer_syntax(ts):
        if instance_route:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown transfer syntax: {ts}")
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Unknown transfer syntax UID: {ts}")
    return ts


def read_lossy_quality(ctx, body: dict[str, Any]) -> int:
    """``LossyQuality`` (1-100, as Orthanc 1.12), else the ``DicomLossyTranscodingQuality``
    option, else 90: the JPEG quality of a lossy ``Transcode`` target.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` for a value that is not an integer, ``PARAMETER_OUT_OF_RANGE``
        outside 1-100.
    """
    value = read_int(body, "LossyQuality", ctx.config.get("DicomLossyTranscodingQuality", 90))
    if not isinstance(value, int) or not 1 <= value <= 100:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, "LossyQuality must be between 1 and 100")
    return value


def resolve_any(ctx, public_id: str):
    """The resource of any level with this Orthanc ID (404 ``UNKNOWN_RESOURCE`` if none)."""
    res = ctx.index.lookup(public_id.strip())
    if res is None:
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
    return res


class ModifyRoute:
    """``POST /{patients,studies,series}/{id}/modify`` and ``.../anonymize``.

    Like Orthanc 1.10.1, the ID may designate a resource of another level: its instances
    are processed and the answer reports the new resource at the level of the URL.
    """

    def __init__(self, ctx, level: int, anonymize: bool) -> None:
        self.ctx, self.level, self.anonymize = ctx, level, anonymize

    def on_post(self, req, resp, id):
        ctx = self.ctx
        body = read_json_object(req, allow_empty=False, invalid=JOB_BODY_ERROR)
        m = parse_modification(ctx, body, self.anonymize)
        if not self.anonymize:
            m.set_level(self.level)
        m.check()
        keep_source = read_bool(body, "KeepSource", True)
        transcode = read_transcode(body)
        quality = read_lossy_quality(ctx, body)
        res = resolve_any(ctx, id)
        instances = [r.public_id for r in ctx.resources.instances_of([res])]
        name_patient(ctx, m)
        job = ResourceModificationJob(m, instances, output_level=self.level, transcode=transcode,
                                      keep_source=keep_source, origin=request_origin(req), lossy_quality=quality)
        send_json(resp, ctx.jobs.run_request(job, body, synchronous=True))


class BulkRoute:
    """``POST /tools/bulk-modify`` and ``/tools/bulk-anonymize`` (``Resources``, and
    ``Level`` for bulk-modify)."""

    def __init__(self, ctx, anonymize: bool) -> None:
        self.ctx, self.anonymize = ctx, anonymize

    def on_post(self, req, resp):
        ctx = self.ctx
        body = read_json_object(req, allow_empty=False, invalid=JOB_BODY_ERROR)
        m = parse_modification(ctx, body, self.anonymize)
        if not self.anonymize:
            level = read_string(body, "Level")
            if level is not None:
                m.set_level(Level.parse(level.strip()))
            else:
                m.set_level(m.detect_level())
        m.check()
        keep_source = read_bool(body, "KeepSource", True)
        transcode = read_transcode(body)
        quality = read_lossy_quality(ctx, body)
        resources = [resolve_any(ctx, i) for i in sorted(set(read_strings(body, "Resources")))]
        instances = [r.public_id for r in ctx.resources.instances_of(resources)]
        name_patient(ctx, m)
        job = ResourceModificationJob(m, instances, output_level=None, transcode=transcode,
                                      keep_source=keep_source, origin=request_origin(req), lossy_quality=quality)
        send_json(resp, ctx.jobs.run_request(job, body, synchronous=True))


class ModifyInstanceRoute:
    """``POST /instances/{id}/modify`` and ``.../anonymize``: answer the rewritten file
    (``application/dicom``) without storing it."""

    def __init__(self, ctx, anonymize: bool) -> None:
        self.ctx, self.anonymize = ctx, anonymize

    def on_post(self, req, resp, id):
        ctx = self.ctx
        body = read_json_object(req, allow_empty=False, invalid=JOB_BODY_ERROR)
        m = parse_modification(ctx, body, self.anonymize)
        transcode = None
        if not self.anonymize:
            m.set_level(m.detect_level())
            transcode = read_transcode(body, instance_route=True)
        quality = read_lossy_quality(ctx, body)
        m.check()
        if ctx.index.lookup(id, Level.INSTANCE) is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        data = ctx.resources.read_file(id)
        name_patient(ctx, m)
        rewriter = m.rewriter(UidMapper(new_seed()), ctx.ingest.default_encoding)
        res = rewrite_instance(rewriter, data, transcode, quality)
        if transcode and res.transfer_syntax != transcode:
            raise OrthancError(ErrorCode.INTERNAL_ERROR, f"Cannot transcode to transfer syntax: {transcode}")
        resp.content_type = "application/dicom"
        resp.data = res.data


class SplitRoute:
    """``POST /studies/{id}/split`` (reference section 11.1)."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def on_post(self, req, resp, id):
        ctx = self.ctx
        body = read_json_object(req, allow_empty=False, invalid=JOB_BODY_ERROR)
        study = ctx.index.lookup(id, Level.STUDY)
        if study is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Cannot split unknown study {id}")
        index = ctx.index
        sources: list[tuple[str, str]] = []      # (instance, source series)
        seen: set[str] = set()
        if "Series" in body:
            for sid in read_strings(body, "Series"):
                series = index.lookup(sid)
                if series is None:
                    raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
                if series.level != Level.SERIES or series.parent_internal != study.internal_id:
                    raise OrthancError(ErrorCode.UNKNOWN_RESOURCE,
                                       f"This series does not belong to the study to be split: {sid}")
                for inst in index.children(series.internal_id):
                    if inst.public_id not in seen:
                        seen.add(inst.public_id)
                        sources.append((inst.public_id, series.public_id))
        if "Instances" in body:
            for iid in read_strings(body, "Instances"):
                inst = index.lookup(iid)
                if inst is None:
                    raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
                series = index.get_by_internal(inst.parent_internal) if inst.level == Level.INSTANCE else None
                if series is None or series.parent_internal != study.internal_id:
                    raise OrthancError(ErrorCode.UNKNOWN_RESOURCE,
                                       f"This instance does not belong to the study to be split: {iid}")
                if iid not in seen:
                    seen.add(iid)
                    sources.append((iid, series.public_id))
        if not seen and not (body.get("Series") or body.get("Instances")):
            raise OrthancError(ErrorCode.BAD_REQUEST, "Both the \"Series\" and the \"Instances\" fields are missing")
        keep_source = read_bool(body, "KeepSource", False)
        parser = tag_parser(ctx)
        allowed = (set(PATIENT_MODULE) | set(STUDY_MODULE)) - {0x0020000D, 0x0020000E}
        removals: list[int] = []
        replacements: dict[int, str] = {}
        if "Remove" in body:
            if not isinstance(body["Remove"], list):
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
            for name in body["Remove"]:
                if not isinstance(name, str):
                    raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
                tag = parser(name)
                _check_split_tag(tag, allowed)
                removals.append(tag)
        if "Replace" in body:
            if not isinstance(body["Replace"], dict):
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
            for name, value in body["Replace"].items():
                if not isinstance(value, str):
                    raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
                tag = parser(name)
                _check_split_tag(tag, allowed)
                replacements[tag] = value
        job = SplitStudyJob(id, sources, replacements=replacements, removals=removals, keep_source=keep_source,
                            origin=request_origin(req))
        send_json(resp, ctx.jobs.run_request(job, body, synchronous=True))


def _check_split_tag(tag: int, allowed: set[int]) -> None:
    if tag not in allowed:
        from pydicom.datadict import keyword_for_tag
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                           "Cannot modify the following tag while splitting a study (not in the patient/study "
                           f"modules): {keyword_for_tag(tag) or 'Unknown Tag & Data'} ({tag >> 16:04x},{tag & 0xFFFF:04x})")


class MergeRoute:
    """``POST /studies/{id}/merge`` (reference section 11.2)."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def on_post(self, req, resp, id):
        ctx = self.ctx
        body = read_json_body(req, allow_empty=False, invalid=JOB_BODY_ERROR)
        index = ctx.index
        target = index.lookup(id, Level.STUDY)
        if target is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Cannot merge into an unknown study: {id}")
        sources: list[tuple[str, str]] = []
        seen: set[str] = set()

        def add_series(series):
            for inst in index.children(series.internal_id):
                if inst.public_id not in seen:
                    seen.add(inst.public_id)
                    sources.append((inst.public_id, series.public_id))

        for rid in read_strings(body, "Resources"):
            res = index.lookup(rid)
            if res is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Cannot find this resource: {rid}")
            if res.level == Level.STUDY:
                if res.internal_id == target.internal_id:
                    raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Cannot merge a study into the same study: {rid}")
                for series in index.children(res.internal_id):
                    add_series(series)
            elif res.level == Level.SERIES:
                if res.parent_internal == target.internal_id:
                    raise OrthancError(ErrorCode.UNKNOWN_RESOURCE,
                                       f"Cannot merge series {rid} into its parent study {id}")
                add_series(res)
            elif res.level == Level.INSTANCE:
                series = index.get_by_internal(res.parent_internal)
                if series.parent_internal == target.internal_id:
                    raise OrthancError(ErrorCode.UNKNOWN_RESOURCE,
                                       f"Cannot merge instance {rid} into its parent study {id}")
                if rid not in seen:
                    seen.add(rid)
                    sources.append((rid, series.public_id))
            else:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, "This resource is neither a study, nor a series, "
                                   f"nor an instance: {rid} is a {res.level_name}")
        keep_source = read_bool(body, "KeepSource", False)
        job = MergeStudyJob(id, sources, keep_source=keep_source, origin=request_origin(req))
        job.prepare(ctx)
        send_json(resp, ctx.jobs.run_request(job, body, synchronous=True))


def routes(ctx) -> list[RouteSpec]:
    """Route declarations of the built-in job types."""
    out = []
    for level in (Level.PATIENT, Level.STUDY, Level.SERIES):
        out.append(RouteSpec(f"/{level.plural}/{{id}}/modify", lambda c, lv=level: ModifyRoute(c, lv, False)))
        out.append(RouteSpec(f"/{level.plural}/{{id}}/anonymize", lambda c, lv=level: ModifyRoute(c, lv, True)))
    out += [
        RouteSpec("/instances/{id}/modify", lambda c: ModifyInstanceRoute(c, False)),
        RouteSpec("/instances/{id}/anonymize", lambda c: ModifyInstanceRoute(c, True)),
        RouteSpec("/tools/bulk-modify", lambda c: BulkRoute(c, False)),
        RouteSpec("/tools/bulk-anonymize", lambda c: BulkRoute(c, True)),
        RouteSpec("/studies/{id}/split", SplitRoute),
        RouteSpec("/studies/{id}/merge", MergeRoute),
    ]
    return out
