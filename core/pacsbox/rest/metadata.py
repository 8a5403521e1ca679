"""``/{level}/{id}/metadata``: the metadata of a resource, by name or number, with
revisions (reference section 2.5), and :func:`resource_metadata` (also used by
``/tools/bulk-content`` and ``/tools/find``'s ``ResponseContent``).
"""
from __future__ import annotations

import hashlib
import logging
import threading

from ..errors import ErrorCode, OrthancError, not_found
from ..index.index import Level
from ..ingest import expected_instances
from ..web import query_flag, read_body, send_json, send_text
from .revisions import answer_etag, check_if_match, etag

log = logging.getLogger("pacsbox.rest")


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
