"""``/{level}/{id}/attachments``: the attachments of a resource (the DICOM file and the
user attachments 1024-65535), their operations and revisions (reference section 2.6).
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading

import falcon

from ..dicom.ids import new_uuid
from ..errors import ErrorCode, OrthancError, not_found
from ..index.index import CONTENT_TYPE_DICOM, Attachment
from ..storage import pending
from ..web import read_body, send_json, send_text
from .metadata import USER_MAX, USER_MIN
from .revisions import answer_etag, check_if_match, etag

log = logging.getLogger("pacsbox.rest")


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
        journal, replaced_keys = self._journal()
        with self._lock:
            current = self._current(res, ct)
            check_if_match(req, self.check_revisions, current, deleting=False)
            keys = pending.begin(self.ctx, [(att.uuid, ct)])
            try:
                storage.create(att.uuid, data, ct)
                try:
                    done = self.ctx.index.set_attachment(res.internal_id, att, res.public_id, res.level,
                                                         before_commit=journal)
                except BaseException:
                    pending.end(self.ctx, replaced_keys)  # rolled back: still referenced
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
        self._remove_replaced(done[0], replaced_keys)
        if md5:
            resp.set_header("ETag", etag(revision, md5))
        send_json(resp, {}, content_type="application/json")

    def _journal(self):
        """A ``before_commit`` callback that journals the attachments a commit dereferences
        (:mod:`pacsbox.storage.pending`), and the list that receives their keys."""
        keys: list[str] = []

        def journal(atts):
            keys.extend(pending.begin(self.ctx, [(a.uuid, a.content_type) for a in atts]))
        return journal, keys

    def _remove_replaced(self, removed: Attachment | None, keys: list[str]) -> None:
        """Remove the file of an attachment gone from the index (the index announced the
        change); its journal entry ends once it is gone (a crash or a failure before: the
        next start removes it)."""
        if removed is not None:
            try:
                self.ctx.storage.remove(removed.uuid, removed.content_type)
            except OSError:  # the index no longer points at it; the answer stands
                log.exception("cannot remove the file of a replaced attachment %s", removed.uuid)
                return
        pending.end(self.ctx, keys)

    def on_delete_one(self, req, resp, id, name):
        res, ct = self._user_type(id, name)
        journal, keys = self._journal()
        with self._lock:
            current = self._current(res, ct)
            check_if_match(req, self.check_revisions, current, deleting=True)
            old, _changes = self.ctx.index.delete_attachment(res.internal_id, ct, res.public_id, res.level,
                                                             before_commit=journal)
            if old is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            if current is not None and current[0]:
                self.ctx.index.set_revision(res.internal_id, 1, str(ct), 0)
        self._remove_replaced(old, keys)
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
        journal, replaced_keys = self._journal()
        try:
            self.ctx.storage.create(new.uuid, blob, new.content_type)
            done = self.ctx.index.set_attachment(res.internal_id, new, res.public_id, res.level,
                                                 before_commit=journal)
            if done is None:
                self.ctx.storage.remove(new.uuid, new.content_type)
                raise not_found()
        finally:
            pending.end(self.ctx, keys)
        self._remove_replaced(done[0], replaced_keys)
