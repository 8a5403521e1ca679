"""Re-reading main tags from the files: ``POST /{level}/{id}/reconstruct``,
``POST /tools/reconstruct`` and ``POST /tools/invalidate-tags``.

``reconstruct`` re-extracts, from the DICOM file of each instance of the resource, the main
tags of the instance and of its series, study and patient (the last instance read wins for
the parents; the instances are read in Orthanc's order), and rewrites the identifier rows that
``/tools/find`` and ``/tools/lookup`` search. Useful after the main-tag rules changed
(an upgrade, another ``Dictionary``) or after files were repaired in place. Both answer an
empty ``text/plain`` body, as Orthanc 1.10.1; ``/tools/reconstruct`` with
``{"Asynchronous": true}`` runs as a ``ReconstructAll`` job instead, one instance per step,
with its progress in ``/jobs/{id}``.

``invalidate-tags``: Orthanc keeps a JSON summary of each instance's tags as an attachment
(``dicom-as-json``) and this route drops them. pacsbox keeps no such summary: it renders
the tags from the file at each request, so nothing is cached and the route only answers
(empty ``text/plain``) for clients that call it.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..dicom import tags as dicom_tags
from ..index.models import Level
from ..jobs.base import InstancesJob
from ..routing.registry import RouteSpec
from ..web import read_json_body, send_json, send_text


def reconstruct_instance(ctx: Any, instance: Any) -> None:
    """Re-extract the main tags of one instance and its ancestors from its file.

    Parameters
    ----------
    ctx : ServerContext
    instance : Resource
        An instance.
    """
    data = ctx.resources.read_file(instance)
    res, enc = ctx.ingest.parse_main(data)
    levels = dicom_tags.main_tags_from_raw(res.raw, enc)
    levels[1].update(levels[0])  # a study keeps its own copy of the patient tags
    chain = [instance] + ctx.index.ancestors(instance)  # instance, series, study, patient
    by_level = {r.level: r for r in chain}
    for level in range(4):
        r = by_level.get(level)
        if r is None:
            continue
        tags = levels[level]
        ids: dict[str, str] = {}
        if level == Level.PATIENT:
            ids["PatientID"] = tags.get("PatientID", "")
        elif level == Level.STUDY:
            ids["StudyInstanceUID"] = tags.get("StudyInstanceUID", "")
            if "AccessionNumber" in tags:
                ids["AccessionNumber"] = tags["AccessionNumber"]
        elif level == Level.SERIES:
            ids["SeriesInstanceUID"] = tags.get("SeriesInstanceUID", "")
        else:
            ids["SOPInstanceUID"] = tags.get("SOPInstanceUID", "")
        ctx.index.set_main_tags(r.internal_id, tags, ids)


def instances_in_orthanc_order(index: Any, res: Any) -> list[Any]:
    """The instances of a resource in the order of Orthanc's ``GetChildInstances``: a
    depth-first walk with a stack, so the children of each resource come last first (the
    parents then keep the tags of their first instance once every instance was read)."""
    if res.level == Level.INSTANCE:
        return [res]
    out = []
    stack = list(index.children(res.internal_id))
    while stack:
        r = stack.pop()
        if r.level == Level.INSTANCE:
            out.append(r)
        else:
            stack.extend(index.children(r.internal_id))
    return out


def all_instances_in_orthanc_order(index: Any) -> list[Any]:
    """Every instance, study by study (Orthanc's ``/tools/reconstruct``)."""
    return [i for study in index.list_resources(1, None, None) for i in instances_in_orthanc_order(index, study)]


def reconstruct_resource(ctx: Any, res: Any) -> None:
    """Reconstruct every instance of a resource (see :func:`reconstruct_instance`)."""
    for inst in instances_in_orthanc_order(ctx.index, res):
        reconstruct_instance(ctx, inst)


class ReconstructRoute:
    """``POST /{level}/{id}/reconstruct``."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_post(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        reconstruct_resource(self.ctx, res)
        send_text(resp, "")


class ReconstructAllJob(InstancesJob):
    """``ReconstructAll``: every instance of the index, one per step."""

    type_name = "ReconstructAll"

    def process_instance(self, ctx: Any, instance_id: str) -> bool:
        """Reconstruct one instance (one deleted meanwhile is skipped)."""
        inst = ctx.resources.find(instance_id, 3)
        if inst is not None:
            reconstruct_instance(ctx, inst)
        return True

    def serialize(self) -> dict[str, Any]:
        """The base state (instances, position)."""
        return self.base_state()

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx: Any) -> "ReconstructAllJob":
        """Rebuild a saved job."""
        job = cls()
        job.load_base_state(data)
        return job


class ReconstructAllRoute:
    """``POST /tools/reconstruct``: synchronous (empty answer) by default, a job with
    ``{"Asynchronous": true}``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        body = read_json_body(req)
        if isinstance(body, dict) and (body.get("Asynchronous") is True or body.get("Synchronous") is False):
            job = ReconstructAllJob([r.public_id for r in all_instances_in_orthanc_order(self.ctx.index)])
            send_json(resp, self.ctx.jobs.run_request(job, body, synchronous=True))
            return
        for inst in all_instances_in_orthanc_order(self.ctx.index):
            reconstruct_instance(self.ctx, inst)
        send_text(resp, "")


class InvalidateTagsRoute:
    """``POST /tools/invalidate-tags``: nothing is cached (see the module docstring)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        send_text(resp, "")


def routes(ctx) -> list[RouteSpec]:
    """The reconstruct routes of the four levels, ``/tools/reconstruct`` and
    ``/tools/invalidate-tags``."""
    from ..index.index import PLURAL
    out = [RouteSpec("/tools/reconstruct", ReconstructAllRoute),
           RouteSpec("/tools/invalidate-tags", InvalidateTagsRoute)]
    for level, plural in enumerate(PLURAL):
        out.append(RouteSpec(f"/{plural}/{{id}}/reconstruct", lambda c, l=level: ReconstructRoute(c, l)))
    return out
