"""``/patients``, ``/studies``, ``/series``, ``/instances``: listing, details, navigation,
statistics, deletion, metadata, attachments, shared tags and modules (reference section 2).
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
from typing import Any

import falcon
import pydicom

from ..dicom import tags as dicom_tags
from ..dicom.modules import MODULES
from ..errors import ErrorCode, OrthancError, not_found
from ..web import JSON_TYPE, dumps, query_flag, read_body, send_json, send_text
from ..dicom.ids import new_uuid
from ..index.index import CONTENT_TYPE_DICOM, LEVEL_NAMES, PLURAL, Attachment, Level
from ..ingest import expected_instances
from ..routing.registry import RouteSpec
from ..storage import pending
from .revisions import answer_etag, check_if_match, etag

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


#: Orthanc's ``MetadataType`` numbers: ``/metadata`` lists names in this order.
METADATA_TYPES = {"IndexInSeries": 1, "ReceptionDate": 2, "RemoteAET": 3, "ExpectedNumberOfInstances": 4,
                  "ModifiedFrom": 5, "AnonymizedFrom": 6, "LastUpdate": 7, "Origin": 8, "TransferSyntax": 9,
                  "SopClassUid": 10, "RemoteIP": 11, "CalledAET": 12, "HttpUsername": 13,
                  "PixelDataOffset": 14, "MainDicomTagsSignature": 15}

#: User-defined metadata and attachments use the numbers 1024-65535 (Orthanc ``UserMetadata``,
#: ``UserContentType``).
USER_MIN, USER_MAX = 1024, 65535


class MetadataNames:
    """Orthanc's metadata names: the system ones, ``UserMetadata`` names and numbers.

    Parameters
    ----------
    config : Config
        ``UserMetadata``: object name → number (1024-65535).
    """

    def __init__(self, config) -> None:
        user = config.get("UserMetadata") or {}
        self.by_number = {}
        for name, number in dict(user).items():
            try:
                self.by_number[int(number)] = str(name)
            except (TypeError, ValueError):
                continue
        self.by_name = {v: k for k, v in self.by_number.items()}

    def number(self, name: str) -> int | None:
        """The type number of ``name`` (a name or a decimal number), None when unknown."""
        if name in METADATA_TYPES:
            return METADATA_TYPES[name]
        if name in self.by_name:
            return self.by_name[name]
        try:
            return int(name)
        except ValueError:
            return None

    def canonical(self, number: int) -> str:
        """The name under which metadata ``number`` is stored and listed."""
        for n, v in METADATA_TYPES.items():
            if v == number:
                return n
        return self.by_number.get(number, str(number))

    def order(self, name: str) -> tuple[int, str]:
        """Sort key of a stored metadata name (Orthanc lists metadata by type number)."""
        n = self.number(name)
        return (n if n is not None else USER_MAX + 1, name)

    def resolve(self, name: str, writing: bool) -> str:
        """The stored name for a name given in a URL.

        Raises
        ------
        OrthancError
            404 ``INEXISTENT_ITEM`` for an unknown name; for a write, 403 (empty body)
            for a system metadata or a number outside 1024-65535.
        """
        number = self.number(name)
        if number is None:
            raise OrthancError(ErrorCode.INEXISTENT_ITEM)
        if writing and not USER_MIN <= number <= USER_MAX:
            raise OrthancError(ErrorCode.FORBIDDEN_ACCESS, http_status=403, empty=True)
        return self.canonical(number)


def _md5(value: str | bytes) -> str:
    """MD5 (hex) of a metadata value or attachment, the second half of its ``ETag``."""
    return hashlib.md5(value if isinstance(value, bytes) else value.encode("utf-8")).hexdigest()


def resource_metadata(ctx, res) -> dict[str, str]:
    """All metadata of a resource, as Orthanc 1.10.1 shows them.

    Besides the stored ones: ``LastUpdate`` on patients, studies and series, and the
    series' ``ExpectedNumberOfInstances`` and ``RemoteAET`` (the one of its last received
    instance).
    """
    index = ctx.index
    meta = index.metadata(res.internal_id)
    if res.level < Level.INSTANCE:
        meta.setdefault("LastUpdate", res.last_update)
    if res.level == Level.SERIES and "ExpectedNumberOfInstances" not in meta:
        expected = expected_instances(res.main_tags)
        if expected is not None:
            meta["ExpectedNumberOfInstances"] = str(expected)
    if res.level == Level.SERIES and "RemoteAET" not in meta:
        kids = index.children(res.internal_id)
        if kids:
            aet = index.get_metadata(kids[-1].internal_id, "RemoteAET")
            if aet is not None:
                meta["RemoteAET"] = aet
    return meta


class MetadataListRoute:
    """``/{level}/{id}/metadata`` (``?expand``)."""

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level
        self.names = MetadataNames(ctx.config)

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        meta = resource_metadata(self.ctx, res)
        if query_flag(req, "expand"):
            send_json(resp, meta)
        else:
            send_json(resp, sorted(meta, key=self.names.order))


class MetadataRoute:
    """``GET``/``PUT``/``DELETE /{level}/{id}/metadata/{name}``.

    System metadata are read-only (403); user metadata are the ``UserMetadata`` names
    and the numbers 1024-65535. A PUT or a DELETE logs an ``UpdatedMetadata`` change.
    """

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level
        self.names = MetadataNames(ctx.config)
        self.check_revisions = ctx.config.get("CheckRevisions") is True
        self._lock = threading.Lock()  # If-Match check and write, together

    def on_get(self, req, resp, id, name):
        res = self.ctx.resources.get(self.level, id)
        stored = self.names.resolve(name, writing=False)
        v = resource_metadata(self.ctx, res).get(stored)
        if v is None:
            raise not_found()
        if answer_etag(req, resp, self.ctx.index.revision(res.internal_id, 0, stored), _md5(v)):
            return
        send_text(resp, v)

    def _current(self, res, stored: str) -> tuple[int, str] | None:
        old = self.ctx.index.get_metadata(res.internal_id, stored)
        return None if old is None else (self.ctx.index.revision(res.internal_id, 0, stored), _md5(old))

    def on_put(self, req, resp, id, name):
        res = self.ctx.resources.get(self.level, id)
        stored = self.names.resolve(name, writing=True)
        value = read_body(req).decode("utf-8", "replace")
        index = self.ctx.index
        with self._lock:
            current = self._current(res, stored)
            check_if_match(req, self.check_revisions, current, deleting=False)
            index.set_metadata(res.internal_id, stored, value, res.public_id, res.level)
            revision = 0 if current is None else current[0] + 1
            if revision:
                index.set_revision(res.internal_id, 0, stored, revision)
        resp.set_header("ETag", etag(revision, _md5(value)))
        send_text(resp, "")

    def on_delete(self, req, resp, id, name):
        res = self.ctx.resources.get(self.level, id)
        stored = self.names.resolve(name, writing=True)
        index = self.ctx.index
        with self._lock:
            current = self._current(res, stored)
            check_if_match(req, self.check_revisions, current, deleting=True)
            if not index.delete_metadata(res.internal_id, stored):
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            if current is not None and current[0]:
                index.set_revision(res.internal_id, 0, stored, 0)
        self.ctx.index.log_change("UpdatedMetadata", res)
        send_text(resp, "")


_ATTACHMENT_NAMES = {CONTENT_TYPE_DICOM: "dicom", 2: "dicom-as-json", 3: "dicom-until-pixel-data"}
_ATTACHMENT_TYPES = {v: k for k, v in _ATTACHMENT_NAMES.items()}

#: ``GET /{level}/{id}/attachments/{name}``, in Orthanc 1.10.1's order.
ATTACHMENT_OPERATIONS = ["compress", "compressed-data", "compressed-md5", "compressed-size", "data", "info",
                         "is-compressed", "md5", "size", "uncompress", "verify-md5", "uuid"]


#: An attachment number as a path segment: ASCII digits, at most 5.
_NUMBER = re.compile(r"[0-9]{1,5}")


def user_content_types(config) -> dict[str, tuple[int, str]]:
    """Option ``UserContentType``: the names and MIME types of user attachments.

    Parameters
    ----------
    config : Config
        Its ``UserContentType`` maps a name to a number (1024-65535) or to
        ``[number, "mime/type"]``; other values are ignored.

    Returns
    -------
    dict of str to (int, str)
        Name → (number, MIME type; ``application/octet-stream`` when not given).
    """
    out = {}
    for name, value in dict(config.get("UserContentType") or {}).items():
        number, mime = (value[0], value[1]) if isinstance(value, list) and len(value) == 2 else (value, None)
        try:
            number = int(number)
        except (TypeError, ValueError):
            continue
        if USER_MIN <= number <= USER_MAX:
            out[str(name)] = (number, str(mime) if mime else "application/octet-stream")
    return out


class AttachmentsRoute:
    """``/{level}/{id}/attachments`` and ``/{level}/{id}/attachments/{name}[/{op}]``.

    The DICOM file (``dicom``) is read-only (403 on PUT/DELETE). User attachments (the
    numbers 1024-65535 and the ``UserContentType`` names) are created or replaced by a
    ``PUT`` of their bytes and removed by a ``DELETE``, each logging an
    ``UpdatedAttachment`` change, as Orthanc 1.10.1. ``compress``/``uncompress`` write the
    attachment again in Orthanc's ``StorageCompression`` format (8-byte size + zlib) or
    plain; ``is-compressed``, ``compressed-data``, ``compressed-size`` and
    ``compressed-md5`` describe the stored bytes.
    """

    def __init__(self, ctx, level: int):
        self.ctx, self.level = ctx, level
        self.user = user_content_types(ctx.config)
        self.user_names = {number: name for name, (number, _) in self.user.items()}
        self.user_mime = {number: mime for number, mime in self.user.values()}
        self.check_revisions = ctx.config.get("CheckRevisions") is True
        self._lock = threading.Lock()  # If-Match check and write, together

    def _name(self, content_type: int) -> str:
        return _ATTACHMENT_NAMES.get(content_type) or self.user_names.get(content_type, str(content_type))

    def _content_type(self, name: str) -> int:
        ct = _ATTACHMENT_TYPES.get(name)
        if ct is None and name in self.user:
            ct = self.user[name][0]
        if ct is None:
            if not _NUMBER.fullmatch(name):
                raise OrthancError(ErrorCode.INEXISTENT_ITEM)
            ct = int(name)
        return ct

    def on_get(self, req, resp, id):
        res = self.ctx.resources.get(self.level, id)
        atts = self.ctx.index.attachments(res.internal_id)
        if "full" in req.params:  # Orthanc 1.10.1: {"dicom": 1}, name to content type
            send_json(resp, {self._name(a.content_type): a.content_type for a in atts})
            return
        send_json(resp, [self._name(a.content_type) for a in atts])

    def _att(self, id, name):
        res = self.ctx.resources.get(self.level, id)
        att = self.ctx.index.attachment(res.internal_id, self._content_type(name))
        if att is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        return res, att

    def on_get_one(self, req, resp, id, name):
        res, att = self._att(id, name)
        if answer_etag(req, resp, self._revision(res, att.content_type), att.md5):
            return
        send_json(resp, ATTACHMENT_OPERATIONS)

    def _revision(self, res, content_type: int) -> int:
        return self.ctx.index.revision(res.internal_id, 1, str(content_type))

    def _current(self, res, content_type: int) -> tuple[int, str | None] | None:
        old = self.ctx.index.attachment(res.internal_id, content_type)
        return None if old is None else (self._revision(res, content_type), old.md5)

    def _user_type(self, id, name):
        res = self.ctx.resources.get(self.level, id)
        ct = self._content_type(name)
        if not USER_MIN <= ct <= USER_MAX:  # the DICOM file and Orthanc's own types
            raise OrthancError(ErrorCode.FORBIDDEN_ACCESS, http_status=403, empty=True)
        return res, ct

    def on_put_one(self, req, resp, id, name):
        res, ct = self._user_type(id, name)
        data = read_body(req)
        md5 = hashlib.md5(data).hexdigest() if self.ctx.ingest.store_md5 else None
        att = Attachment(ct, new_uuid(), len(data), len(data), md5)
        storage = self.ctx.storage
        with self._lock:
            current = self._current(res, ct)
            check_if_match(req, self.check_revisions, current, deleting=False)
            keys = pending.begin(self.ctx, [(att.uuid, ct)])
            try:
                storage.create(att.uuid, data, ct)
                try:
                    done = self.ctx.index.set_attachment(res.internal_id, att, res.public_id, res.level)
                except BaseException:
                    storage.remove(att.uuid, ct)
                    raise
            finally:
                pending.end(self.ctx, keys)
            if done is None:  # the resource was deleted meanwhile
                storage.remove(att.uuid, ct)
                raise not_found()
            revision = 0 if current is None else current[0] + 1
            if revision:
                self.ctx.index.set_revision(res.internal_id, 1, str(ct), revision)
        self._remove_replaced(done[0])
        if md5:
            resp.set_header("ETag", etag(revision, md5))
        send_json(resp, {}, content_type="application/json")

    def _remove_replaced(self, removed: Attachment | None) -> None:
        """Remove the file of an attachment gone from the index (the index announced the
        change)."""
        if removed is not None:
            try:
                self.ctx.storage.remove(removed.uuid, removed.content_type)
            except OSError:  # the index no longer points at it; the answer stands
                log.exception("cannot remove the file of a replaced attachment %s", removed.uuid)

    def on_delete_one(self, req, resp, id, name):
        res, ct = self._user_type(id, name)
        with self._lock:
            current = self._current(res, ct)
            check_if_match(req, self.check_revisions, current, deleting=True)
            old, _changes = self.ctx.index.delete_attachment(res.internal_id, ct, res.public_id, res.level)
            if old is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            if current is not None and current[0]:
                self.ctx.index.set_revision(res.internal_id, 1, str(ct), 0)
        self._remove_replaced(old)
        send_text(resp, "")

    def on_get_op(self, req, resp, id, name, op):
        res, att = self._att(id, name)
        if answer_etag(req, resp, self._revision(res, att.content_type), att.md5):
            return
        if op in ("data", "compressed-data"):
            try:
                f = self.ctx.storage.open(att.uuid, att.content_type)
            except FileNotFoundError:  # replaced or deleted since the row was read
                raise OrthancError(ErrorCode.INEXISTENT_FILE) from None
        if op == "data":
            dicom = att.content_type == CONTENT_TYPE_DICOM
            resp.content_type = "application/dicom" if dicom else self.user_mime.get(att.content_type,
                                                                                     "application/octet-stream")
            resp.set_header("Content-Disposition", f'filename="{att.uuid}{".dcm" if dicom else ""}"')
            resp.set_stream(f, att.uncompressed_size)
        elif op == "compressed-data":  # the stored bytes, as Orthanc 1.10.1: no file name
            resp.content_type = "application/octet-stream"
            if att.compressed_size != att.uncompressed_size:  # StorageCompression: the blob as stored
                f.close()
                resp.data = self._stored(att)
            else:
                resp.set_stream(f, att.compressed_size)
        elif op in ("size", "compressed-size"):
            send_text(resp, str(att.uncompressed_size if op == "size" else att.compressed_size))
        elif op in ("md5", "compressed-md5"):
            if not att.md5:
                raise OrthancError(ErrorCode.BAD_SEQUENCE_OF_CALLS, "This attachment has no associated MD5")
            if op == "compressed-md5" and att.compressed_size != att.uncompressed_size:
                send_text(resp, hashlib.md5(self._stored(att)).hexdigest())
            else:
                send_text(resp, att.md5)
        elif op == "info":
            info = {"CompressedSize": att.compressed_size, "ContentType": att.content_type,
                    "UncompressedSize": att.uncompressed_size, "Uuid": att.uuid}
            if att.md5:
                info.update(CompressedMD5=att.md5, UncompressedMD5=att.md5)
            send_json(resp, info)
        elif op == "is-compressed":
            send_text(resp, "1" if att.compressed_size != att.uncompressed_size else "0")
        elif op in ("compress", "uncompress", "verify-md5"):
            raise falcon.HTTPMethodNotAllowed(["POST"])  # as Orthanc 1.10.1: 405, Allow: POST
        else:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)

    def on_post_op(self, req, resp, id, name, op):
        res, att = self._att(id, name)
        if op == "verify-md5":
            h = hashlib.md5()
            with self.ctx.storage.open(att.uuid, att.content_type) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if att.md5 and h.hexdigest() != att.md5:
                raise OrthancError(ErrorCode.CORRUPTED_FILE)
            send_json(resp, {}, content_type="application/json")
        elif op in ("compress", "uncompress"):
            self._recompress(res, att, op == "compress")
            send_json(resp, {}, content_type="application/json")
        else:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)

    def _stored(self, att) -> bytes:
        """The bytes of an attachment as stored (compressed)."""
        read_stored = getattr(self.ctx.storage, "read_stored", None)
        try:
            return read_stored(att.uuid, att.content_type) if read_stored else \
                self.ctx.storage.read(att.uuid, att.content_type)
        except FileNotFoundError:
            raise OrthancError(ErrorCode.INEXISTENT_FILE) from None

    def _recompress(self, res, att, compress: bool) -> None:
        """``compress``/``uncompress``: write the attachment again in the other format
        (Orthanc's ``StorageCompression`` format), as a new file referenced in one
        transaction; the old file is removed once the index points at the new one."""
        from ..storage import pending
        from ..storage.filesystem import compress_blob
        if (att.compressed_size != att.uncompressed_size) == compress:
            return  # already in the asked format
        if compress and not getattr(self.ctx.storage, "supports_compression", False):
            return  # a storage area that could not read it back: as Orthanc without compression
        try:
            data = self.ctx.storage.read(att.uuid, att.content_type)
        except FileNotFoundError:
            raise OrthancError(ErrorCode.INEXISTENT_FILE) from None
        blob = compress_blob(data) if compress else data
        new = Attachment(att.content_type, new_uuid(), len(blob), len(data), att.md5)
        keys = pending.begin(self.ctx, [(new.uuid, new.content_type)])
        try:
            self.ctx.storage.create(new.uuid, blob, new.content_type)
            done = self.ctx.index.set_attachment(res.internal_id, new, res.public_id, res.level)
            if done is None:
                self.ctx.storage.remove(new.uuid, new.content_type)
                raise not_found()
        finally:
            pending.end(self.ctx, keys)
        self._remove_replaced(done[0])


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
