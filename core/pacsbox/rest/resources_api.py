"""``/patients``, ``/studies``, ``/series``, ``/instances``: listing, details, navigation,
statistics, deletion, metadata, attachments, shared tags and modules (reference section 2).
"""
from __future__ import annotations

import io
from typing import Any

import falcon
import pydicom

from ..dicom import tags as T
from ..dicom.modules import MODULES
from ..errors import ErrorCode, OrthancError, not_found
from ..web import query_flag, read_body, send_json, send_text
from ..index.index import LEVEL_NAMES, PLURAL
from ..routing.registry import RouteSpec


def tag_format(req: falcon.Request, default: str = "full") -> str:
    """``simplify``, ``short`` or the default, from the query string."""
    if query_flag(req, "simplify"):
        return "simplify"
    if query_flag(req, "short"):
        return "short"
    return default


def _since_limit(req: falcon.Request) -> tuple[int | None, int | None]:
    since, limit = req.params.get("since"), req.params.get("limit")
    if since is None and limit is None:
        return None, None
    if since is None:
        raise OrthancError(ErrorCode.BAD_REQUEST, f"Missing \"since\" argument for GET request against: {req.path}")
    if limit is None:
        raise OrthancError(ErrorCode.BAD_REQUEST, f"Missing \"limit\" argument for GET request against: {req.path}")
    try:
        return int(since), int(limit)
    except ValueError:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, "Bad value for \"since\" or \"limit\"") from None


class ListResource:
    """``GET /{level}`` (``?expand``, ``?since``+``?limit``); ``POST /instances`` is separate."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_get(self, req, resp):
        since, limit = _since_limit(req)
        index = self.ctx.index
        if query_flag(req, "expand"):
            expand = self.ctx.resources.expand
            send_json(resp, [expand(r) for r in index.list_resources(self.level, since, limit)])
        else:
            send_json(resp, index.list_public_ids(self.level, since, limit))


class OneResource:
    """``GET`` and ``DELETE /{level}/{id}``."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        send_json(resp, self.ctx.resources.expand(res))

    def on_delete(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        send_json(resp, delete_resource(self.ctx, res))


def delete_resource(ctx, res) -> dict[str, Any]:
    """Delete a resource (cascade to empty parents, storage files removed).

    Returns
    -------
    dict
        ``{"RemainingAncestor": {"ID", "Path", "Type"} or None}``.
    """
    import time
    remaining, atts = ctx.index.delete_resource(res)
    t0 = time.perf_counter()
    for a in atts:
        ctx.storage.remove(a.uuid, a.content_type)
    if atts:
        ctx.metrics.record_duration("orthanc_storage_remove_duration_ms", (time.perf_counter() - t0) / len(atts))
    if remaining is None:
        return {"RemainingAncestor": None}
    return {"RemainingAncestor": {"ID": remaining.public_id, "Path": f"/{PLURAL[remaining.level]}/{remaining.public_id}",
                                  "Type": remaining.level_name}}


class ChildrenResource:
    """``/{level}/{id}/{children}``: expanded descendants at a lower level."""

    def __init__(self, ctx, level: int, target: int):
        self.ctx, self.level, self.target = ctx, level, target

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        index = self.ctx.index
        ids = index.descendant_ids(res.internal_id, self.level, self.target)
        rows = index.get_many(ids)
        if "expand" in req.params and not query_flag(req, "expand"):
            send_json(resp, [r.public_id for r in rows])
            return
        expand = self.ctx.resources.expand
        send_json(resp, [expand(r) for r in rows])


class ParentResource:
    """``/{level}/{id}/{ancestor}``: the expanded ancestor at a higher level."""

    def __init__(self, ctx, level: int, target: int):
        self.ctx, self.level, self.target = ctx, level, target

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        for anc in self.ctx.index.ancestors(res):
            if anc.level == self.target:
                send_json(resp, self.ctx.resources.expand(anc))
                return
        raise not_found()


class StatisticsResource:
    """``/{level}/{id}/statistics``."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        s = self.ctx.index.resource_statistics(res)
        out: dict[str, Any] = {}
        for k in ("CountStudies", "CountSeries", "CountInstances"):
            if k in s:
                out[k] = s[k]
        for k in ("DiskSize", "UncompressedSize", "DicomDiskSize", "DicomUncompressedSize"):
            out[k] = str(s[k])
            out[k + "MB"] = s[k] // (1024 * 1024)
        send_json(resp, out)


def _one_instance(ctx, res):
    if res.level == 3:
        return res
    ids = ctx.index.descendant_ids(res.internal_id, res.level, 3)
    if not ids:
        raise not_found()
    return ctx.index.get_by_internal(ids[0])


class SharedTagsResource:
    """``/{patients|studies|series}/{id}/shared-tags``: tags equal in every child instance."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_get(self, req, resp, id):
        ctx = self.ctx
        res = ctx.resources.get(self.level, id)
        fmt = tag_format(req)
        shared: dict[str, Any] | None = None
        for inst in ctx.index.descendant_instances(res.internal_id, res.level):
            ds = ctx.resources.read_dataset(inst, stop_before_pixels=True)
            js = T.dataset_to_json(ds, "full")
            flat = {k: v for k, v in js.items() if v.get("Type") == "String"}
            if shared is None:
                shared = flat
            else:
                shared = {k: v for k, v in shared.items() if k in flat and flat[k]["Value"] == v["Value"]}
        shared = shared or {}
        send_json(resp, _reformat(shared, fmt))


def _reformat(full: dict[str, Any], fmt: str) -> dict[str, Any]:
    if fmt == "full":
        return full
    if fmt == "short":
        return {k: v.get("Value") for k, v in full.items()}
    return {v["Name"]: v.get("Value") for k, v in full.items()}


class ModuleResource:
    """``/{level}/{id}/module`` and ``/studies/{id}/module-patient``."""

    def __init__(self, ctx, level: int, module_level: int):
        self.ctx, self.level, self.module_level = ctx, level, module_level

    def on_get(self, req, resp, id):
        ctx = self.ctx
        res = ctx.resources.get(self.level, id)
        inst = _one_instance(ctx, res)
        ds = ctx.resources.read_dataset(inst, stop_before_pixels=True)
        wanted = set(MODULES[self.module_level])
        sub = pydicom.Dataset()
        if (0x00080005 in ds):
            sub.add(ds[0x00080005])
        for el in ds:
            if int(el.tag) in wanted:
                sub.add(el)
        js = T.dataset_to_json(sub, tag_format(req), T.dataset_encodings(ds))
        if 0x00080005 not in wanted:
            js.pop("0008,0005", None)
            js.pop("SpecificCharacterSet", None)
        send_json(resp, js)


class MetadataListResource:
    """``/{level}/{id}/metadata`` (``?expand``)."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        meta = self.ctx.index.metadata(res.internal_id)
        if query_flag(req, "expand"):
            send_json(resp, meta)
        else:
            send_json(resp, sorted(meta))


class MetadataResource:
    """``GET``/``PUT``/``DELETE /{level}/{id}/metadata/{name}``."""

    READ_ONLY = {"ReceptionDate", "RemoteAET", "Origin", "TransferSyntax", "SopClassUid", "IndexInSeries",
                 "PixelDataOffset", "RemoteIP", "CalledAET", "HttpUsername", "LastUpdate", "AnonymizedFrom",
                 "ModifiedFrom", "MainDicomTagsSignature"}

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_get(self, req, resp, id, name):
        res = self.ctx.resources.get(self.level, id)
        v = self.ctx.index.get_metadata(res.internal_id, name)
        if v is None:
            raise not_found()
        send_text(resp, v)

    def on_put(self, req, resp, id, name):
        res = self.ctx.resources.get(self.level, id)
        if name in self.READ_ONLY:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Metadata {name} is read-only")
        value = read_body(req).decode("utf-8", "replace")
        for ch in self.ctx.index.set_metadata(res.internal_id, name, value, res.public_id, res.level):
            self.ctx.notifier.emit("change_recorded", ctx=self.ctx, change=ch)
        send_text(resp, "")

    def on_delete(self, req, resp, id, name):
        res = self.ctx.resources.get(self.level, id)
        if name in self.READ_ONLY:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Metadata {name} is read-only")
        if not self.ctx.index.delete_metadata(res.internal_id, name):
            raise not_found()
        send_text(resp, "")


_ATTACHMENT_NAMES = {1: "dicom", 2: "dicom-as-json", 3: "dicom-until-pixel-data"}
_ATTACHMENT_TYPES = {v: k for k, v in _ATTACHMENT_NAMES.items()}


class AttachmentsResource:
    """``/{level}/{id}/attachments`` and ``/{level}/{id}/attachments/{name}[/{op}]``."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        send_json(resp, [_ATTACHMENT_NAMES.get(a.content_type, str(a.content_type))
                         for a in self.ctx.index.attachments(res.internal_id)])

    def _att(self, id, name):
        res = self.ctx.resources.get(self.level, id)
        ct = _ATTACHMENT_TYPES.get(name)
        if ct is None:
            try:
                ct = int(name)
            except ValueError:
                raise not_found() from None
        att = self.ctx.index.attachment(res.internal_id, ct)
        if att is None:
            raise not_found()
        return res, att

    def on_get_one(self, req, resp, id, name):
        self._att(id, name)
        send_json(resp, ["compress", "compressed-data", "compressed-md5", "compressed-size", "data",
                         "is-compressed", "md5", "size", "uncompress", "uuid", "verify-md5"])

    def on_get_op(self, req, resp, id, name, op):
        res, att = self._att(id, name)
        if op in ("data", "compressed-data"):
            resp.content_type = "application/dicom" if att.content_type == 1 else "application/octet-stream"
            resp.data = self.ctx.storage.read(att.uuid, att.content_type)
        elif op in ("size", "compressed-size"):
            send_text(resp, str(att.uncompressed_size if op == "size" else att.compressed_size))
        elif op in ("md5", "compressed-md5"):
            if not att.md5:
                raise not_found()
            send_text(resp, att.md5)
        elif op == "uuid":
            send_text(resp, att.uuid)
        elif op == "is-compressed":
            send_text(resp, "0")
        else:
            raise not_found()

    def on_post_op(self, req, resp, id, name, op):
        res, att = self._att(id, name)
        if op == "verify-md5":
            import hashlib
            data = self.ctx.storage.read(att.uuid, att.content_type)
            if att.md5 and hashlib.md5(data).hexdigest() != att.md5:
                raise OrthancError(ErrorCode.CORRUPTED_FILE)
            send_json(resp, {}, content_type="application/json")
        elif op in ("compress", "uncompress"):
            send_json(resp, {}, content_type="application/json")
        else:
            raise falcon.HTTPMethodNotAllowed(["GET"])


def routes(ctx) -> list[RouteSpec]:
    """Route declarations of this module."""
    out: list[RouteSpec] = []
    for level, plural in enumerate(PLURAL):
        if level != 3:
            out.append(RouteSpec(f"/{plural}", lambda c, l=level: ListResource(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}", lambda c, l=level: OneResource(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}/statistics", lambda c, l=level: StatisticsResource(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}/metadata", lambda c, l=level: MetadataListResource(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}/metadata/{{name}}", lambda c, l=level: MetadataResource(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}/attachments", lambda c, l=level: AttachmentsResource(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}/attachments/{{name}}", lambda c, l=level: AttachmentsResource(c, l),
                             suffix="one"))
        out.append(RouteSpec(f"/{plural}/{{id}}/attachments/{{name}}/{{op}}",
                             lambda c, l=level: AttachmentsResource(c, l), suffix="op"))
        out.append(RouteSpec(f"/{plural}/{{id}}/module", lambda c, l=level: ModuleResource(c, l, l)))
        if level < 3:
            out.append(RouteSpec(f"/{plural}/{{id}}/shared-tags", lambda c, l=level: SharedTagsResource(c, l)))
        for target in range(level + 1, 4):
            out.append(RouteSpec(f"/{plural}/{{id}}/{PLURAL[target]}",
                                 lambda c, l=level, t=target: ChildrenResource(c, l, t)))
        for target in range(0, level):
            name = LEVEL_NAMES[target].lower()
            out.append(RouteSpec(f"/{plural}/{{id}}/{name}", lambda c, l=level, t=target: ParentResource(c, l, t)))
    out.append(RouteSpec("/studies/{id}/module-patient", lambda c: ModuleResource(c, 1, 0)))
    return out
