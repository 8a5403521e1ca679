"""``/patients``, ``/studies``, ``/series``, ``/instances``: listing, details, navigation,
statistics, deletion, shared tags and modules (reference section 2); the metadata and
attachments routes are in :mod:`.metadata` and :mod:`.attachments`.
"""
from __future__ import annotations

import logging
import re
from typing import Any

import falcon
import pydicom

from ..dicom import tags as dicom_tags
from ..dicom.modules import MODULES
from ..errors import ErrorCode, OrthancError, not_found
from ..index.index import LEVEL_NAMES, PLURAL, Level
from ..routing.registry import RouteSpec
from ..web import JSON_TYPE, dumps, query_flag, send_json
from .attachments import AttachmentsRoute
from .metadata import MetadataListRoute, MetadataRoute, resource_metadata

#: Re-exported: ``resource_metadata`` lived here (``/tools/bulk-content`` and ``find_ext`` use it).
__all__ = ["resource_metadata", "delete_resource", "routes", "tag_format", "expand_format", "ignore_length"]

log = logging.getLogger("pacsbox.rest")


def tag_format(req: falcon.Request, default: str = "full") -> str:
    """``simplify``, ``short`` or the default, from the query string."""
    if query_flag(req, "simplify"):
        return "simplify"
    if query_flag(req, "short"):
        return "short"
    return default


def expand_format(req: falcon.Request) -> str:
    """Key format of ``MainDicomTags`` in an expanded resource: ``?simplify`` (the
    default, keyed by names), ``?short`` (``gggg,eeee`` → value) or ``?full``
    (``gggg,eeee`` → ``{Name, Type, Value}``), in Orthanc's order of precedence."""
    params = req.params
    if not params:
        return "simplify"
    if query_flag(req, "short") and not query_flag(req, "simplify"):
        return "short"
    if query_flag(req, "full") and not query_flag(req, "simplify"):
        return "full"
    return "simplify"


_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")


def ignore_length(req: falcon.Request) -> frozenset[int]:
    """The tags of ``?ignore-length=``, rendered in full instead of ``TooLong``.

    A comma-separated list (the last ``ignore-length`` argument counts, as in Orthanc
    1.10.1) of keywords, ``gggg-eeee`` or ``ggggeeee``; ``gggg,eeee`` is read as one tag
    too (Orthanc 1.10.1 splits it into two halves and answers 500).

    Raises
    ------
    OrthancError
        500 ``UNKNOWN_DICOM_TAG`` for a name that is no tag, as the reference.
    """
    value = req.params.get("ignore-length")
    if value is None:
        return frozenset()
    if isinstance(value, list):
        value = value[-1]
    parts = [p.strip() for p in str(value).split(",")]
    out = set()
    i = 0
    while i < len(parts):
        p = parts[i]
        if _HEX4.fullmatch(p) and i + 1 < len(parts) and _HEX4.fullmatch(parts[i + 1]):
            p, i = p + parts[i + 1], i + 1
        i += 1
        try:  # an empty name too, as the reference
            if not p:
                raise KeyError(p)
            out.add(dicom_tags.parse_tag(p))
        except KeyError:
            raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG) from None
    return frozenset(out)


def add_requested_tags(ctx, req: falcon.Request, pairs: list[tuple[Any, dict[str, Any]]]) -> None:
    """Add ``RequestedTags`` to expanded resources when ``?requestedTags=`` asks for them
    (Orthanc 1.11: ``;``-separated keywords or ``gggg,eeee``)."""
    if not req.params or "requestedTags" not in req.params:
        return
    from .find_ext import query_requested_tags, requested_tags
    tags = query_requested_tags(req)
    fmt = expand_format(req)
    for res, d in pairs:
        d["RequestedTags"] = requested_tags(ctx, res, tags, fmt)


def _since_limit(req: falcon.Request) -> tuple[int | None, int | None]:
    """``since`` and ``limit`` of a list route: both or neither (Orthanc 1.10.1).

    Each is read as Orthanc 1.10.1 does: an unsigned 64-bit integer (an optional sign,
    digits only; a negative value wraps around) whose bits the index then takes as a signed
    one. So a ``since`` of ``-1`` or 2**63 starts at the first resource, and a negative
    ``limit`` means no limit.

    Returns
    -------
    (int or None, int or None)
        ``(since, limit)``; ``(None, None)`` without paging; ``limit`` None for no limit.

    Raises
    ------
    OrthancError
        400 ``BAD_REQUEST`` when only one is given, 400 ``BAD_PARAMETER_TYPE`` when one is
        not an integer or its magnitude does not fit in 64 bits.
    """
    since, limit = req.params.get("since"), req.params.get("limit")
    if since is None and limit is None:
        return None, None
    uri = req.path.rstrip("/") + "/"  # Orthanc writes the URI of the route with a trailing slash
    if since is None:
        raise OrthancError(ErrorCode.BAD_REQUEST, f"Missing \"since\" argument for GET request against: {uri}")
    if limit is None:
        raise OrthancError(ErrorCode.BAD_REQUEST, f"Missing \"limit\" argument for GET request against: {uri}")
    since_value, limit_value = _as_orthanc_int64(since), _as_orthanc_int64(limit)
    return max(0, since_value), (limit_value if limit_value >= 0 else None)


def _as_orthanc_int64(text: Any) -> int:
    """A query argument read as an unsigned 64-bit integer, its bits taken as signed."""
    m = _INTEGER_TEXT.fullmatch(text) if isinstance(text, str) else None
    if m is None or len(m.group(2)) > 20:
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, "Syntax error in some user-supplied data")
    value = int(m.group(1) + (m.group(2) or "0"))
    if abs(value) >= 1 << 64:
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, "Syntax error in some user-supplied data")
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


#: An optional sign, then ASCII digits; group 2 is the digits without leading zeros.
_INTEGER_TEXT = re.compile(r"([+-]?)0*([0-9]*)(?<=[0-9])")


class LevelListRoute:
    """``GET /{level}`` (``?expand``, ``?since``+``?limit``); ``POST /instances`` is separate."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_get(self, req, resp):
        since, limit = _since_limit(req)
        index = self.ctx.index
        if query_flag(req, "expand"):
            expand, fmt = self.ctx.resources.expand, expand_format(req)
            rows = index.list_resources(self.level, since, limit)
            out = [expand(r, tag_format=fmt) for r in rows]
            add_requested_tags(self.ctx, req, list(zip(rows, out)))
            send_json(resp, out)
        else:
            send_json(resp, index.list_public_ids(self.level, since, limit))


class ResourceByIdRoute:
    """``GET`` and ``DELETE /{level}/{id}``."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id, empty=True)
        d = self.ctx.resources.expand(res, tag_format=expand_format(req))
        add_requested_tags(self.ctx, req, [(res, d)])
        send_json(resp, d)

    def on_delete(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id, empty=True)
        send_json(resp, delete_resource(self.ctx, res))


def delete_resource(ctx, res) -> dict[str, Any]:
    """Delete a resource (:meth:`pacsbox.resources.ResourceService.delete`) and give the answer of
    ``DELETE /{level}/{id}``.

    Returns
    -------
    dict
        ``{"RemainingAncestor": {"ID", "Path", "Type"} or None}``.

    Raises
    ------
    OrthancError
        Empty 404 when the resource no longer exists.
    """
    deleted = ctx.resources.delete(res)
    if deleted is None:  # deleted meanwhile by another request
        raise not_found()
    remaining = deleted.remaining_ancestor
    if remaining is None:
        return {"RemainingAncestor": None}
    return {"RemainingAncestor": {"ID": remaining.public_id, "Path": f"/{PLURAL[remaining.level]}/{remaining.public_id}",
                                  "Type": remaining.level_name}}


def children_in_orthanc_order(index, res, target: int):
    """Descendants of ``res`` at level ``target``, in the order Orthanc 1.10.1 lists them.

    Orthanc walks level by level and *prepends* the children of each parent to the next
    list (``std::list::splice`` at the beginning), so the groups come out in reverse
    parent order, each group in index order. Verified: a patient with studies A then B
    lists B's series before A's.
    """
    current = [res]
    for _level in range(res.level, target):
        nxt: list = []
        for parent in current:
            nxt[0:0] = index.children(parent.internal_id)
        current = nxt
    return current


def last_instance(index, res):
    """The instance Orthanc reads for ``/module`` routes: the last child at every level."""
    cur = res
    while cur.level < Level.INSTANCE:
        kids = index.children(cur.internal_id)
        if not kids:
            raise not_found()
        cur = kids[-1]
    return cur


class ChildrenRoute:
    """``/{level}/{id}/{children}``: expanded descendants at a lower level."""

    def __init__(self, ctx, level: int, target: int):
        self.ctx, self.level, self.target = ctx, level, target

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        rows = children_in_orthanc_order(self.ctx.index, res, self.target)
        if "expand" in req.params and not query_flag(req, "expand"):
            send_json(resp, [r.public_id for r in rows])
            return
        expand, fmt = self.ctx.resources.expand, expand_format(req)
        out = [expand(r, tag_format=fmt) for r in rows]
        add_requested_tags(self.ctx, req, list(zip(rows, out)))
        send_json(resp, out)


class ParentRoute:
    """``/{level}/{id}/{ancestor}``: the expanded ancestor at a higher level."""

    def __init__(self, ctx, level: int, target: int):
        self.ctx, self.level, self.target = ctx, level, target

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        for anc in self.ctx.index.ancestors(res):
            if anc.level == self.target:
                d = self.ctx.resources.expand(anc, tag_format=expand_format(req))
                add_requested_tags(self.ctx, req, [(anc, d)])
                send_json(resp, d)
                return
        raise not_found()


class ResourceStatisticsRoute:
    """``/{level}/{id}/statistics``."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        s = self.ctx.index.resource_statistics(res)
        out: dict[str, Any] = {}
        for k in ("CountStudies", "CountSeries", "CountInstances"):
            if k in s and res.level < Level.INSTANCE:
                out[k] = s[k]
        for k in ("DiskSize", "UncompressedSize", "DicomDiskSize", "DicomUncompressedSize"):
            out[k] = str(s[k])
            out[k + "MB"] = s[k] // (1024 * 1024)
        send_json(resp, out)


class _ChildInstancesRoute:
    """A route over the instances of a patient, study or series, answered in a tag format."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level

    def _instances(self, req, id):
        """(child instances, tag format of ``req``); 404 for an unknown ``id``."""
        res = self.ctx.resources.get(self.level, id)
        return self.ctx.index.descendant_instances(res.internal_id, res.level), tag_format(req)


class SharedTagsRoute(_ChildInstancesRoute):
    """``/{patients|studies|series}/{id}/shared-tags``: tags equal in every child instance."""

    def on_get(self, req, resp, id):
        ctx = self.ctx
        instances, fmt = self._instances(req, id)
        shared: dict[str, Any] | None = None
        for inst in instances:
            ds = ctx.resources.read_dataset(inst, stop_before_pixels=True)
            js = dicom_tags.dataset_to_json(ds, "full", dictionary=dicom_tags.tag_dictionary(ctx))
            flat = {k: v for k, v in js.items() if v.get("Type") == "String"}
            if shared is None:
                shared = flat
            else:
                shared = {k: v for k, v in shared.items() if k in flat and flat[k]["Value"] == v["Value"]}
        shared = shared or {}
        send_json(resp, _reformat(shared, fmt))


class InstancesTagsRoute(_ChildInstancesRoute):
    """``/{patients|studies|series}/{id}/instances-tags``: the tags of every child instance.

    An object from instance ID (sorted, as Orthanc 1.10.1's JSON) to the instance's tags in
    the format of ``/instances/{id}/tags`` (``?simplify``, ``?short``). The answer is
    streamed one instance at a time, so a large study is never held in memory whole.
    """

    def on_get(self, req, resp, id):
        ctx = self.ctx
        instances, fmt = self._instances(req, id)
        instances = sorted(instances, key=lambda r: r.public_id)
        dictionary = dicom_tags.tag_dictionary(ctx)
        ignored = ignore_length(req)

        def entry(inst) -> bytes | None:
            try:
                ds = ctx.resources.read_dataset(inst)
            except (OrthancError, FileNotFoundError):  # deleted meanwhile
                return None
            return dumps(inst.public_id) + b":" + dumps(
                dicom_tags.dataset_to_json(ds, fmt, dicom_tags.dataset_encodings(ds, ctx.ingest.default_encoding),
                                           dictionary=dictionary, ignore_length=ignored))

        # the first entry is made before the answer starts, so that an unexpected error
        # there is still an error status; an instance whose file is gone is left out
        first = entry(instances[0]) if instances else None

        def chunks():
            yield b"{" + (first or b"")
            written = first is not None
            for inst in instances[1:]:
                e = entry(inst)
                if e is not None:
                    yield (b"," if written else b"") + e
                    written = True
            yield b"}"

        resp.content_type = JSON_TYPE
        resp.stream = chunks()


def _reformat(full: dict[str, Any], fmt: str) -> dict[str, Any]:
    if fmt == "full":
        return full
    if fmt == "short":
        return {k: v.get("Value") for k, v in full.items()}
    return {v["Name"]: v.get("Value") for k, v in full.items()}


class ModuleRoute:
    """``/{level}/{id}/module`` and ``/studies/{id}/module-patient``: the tags of one DICOM
    module (reference Appendix C), read from the last instance of the resource."""

    def __init__(self, ctx, level: int, module_level: int):
        self.ctx, self.level, self.module_level = ctx, level, module_level

    def on_get(self, req, resp, id):
        ctx = self.ctx
        res = ctx.resources.get(self.level, id)
        inst = last_instance(ctx.index, res)
        ds = ctx.resources.read_dataset(inst, stop_before_pixels=True)
        sub = pydicom.Dataset()
        for tag in MODULES[self.module_level]:
            el = ds.get_item(tag)
            if el is not None:
                sub[tag] = el
        enc = dicom_tags.dataset_encodings(ds, ctx.ingest.default_encoding)
        send_json(resp, dicom_tags.dataset_to_json(sub, tag_format(req), enc))


def routes(ctx) -> list[RouteSpec]:
    """Route declarations of this module."""
    out: list[RouteSpec] = []
    for level, plural in enumerate(PLURAL):
        if level != Level.INSTANCE:
            out.append(RouteSpec(f"/{plural}", lambda c, l=level: LevelListRoute(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}", lambda c, l=level: ResourceByIdRoute(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}/statistics", lambda c, l=level: ResourceStatisticsRoute(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}/metadata", lambda c, l=level: MetadataListRoute(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}/metadata/{{name}}", lambda c, l=level: MetadataRoute(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}/attachments", lambda c, l=level: AttachmentsRoute(c, l)))
        out.append(RouteSpec(f"/{plural}/{{id}}/attachments/{{name}}", lambda c, l=level: AttachmentsRoute(c, l),
                             suffix="one"))
        out.append(RouteSpec(f"/{plural}/{{id}}/attachments/{{name}}/{{op}}",
                             lambda c, l=level: AttachmentsRoute(c, l), suffix="op"))
        out.append(RouteSpec(f"/{plural}/{{id}}/module", lambda c, l=level: ModuleRoute(c, l, l)))
        if level < Level.INSTANCE:
            out.append(RouteSpec(f"/{plural}/{{id}}/shared-tags", lambda c, l=level: SharedTagsRoute(c, l)))
            out.append(RouteSpec(f"/{plural}/{{id}}/instances-tags",
                                 lambda c, l=level: InstancesTagsRoute(c, l)))
        for target in range(level + 1, 4):
            out.append(RouteSpec(f"/{plural}/{{id}}/{PLURAL[target]}",
                                 lambda c, l=level, t=target: ChildrenRoute(c, l, t)))
        for target in range(0, level):
            name = LEVEL_NAMES[target].lower()
            out.append(RouteSpec(f"/{plural}/{{id}}/{name}", lambda c, l=level, t=target: ParentRoute(c, l, t)))
    out.append(RouteSpec("/studies/{id}/module-patient", lambda c: ModuleRoute(c, 1, 0)))
    return out
