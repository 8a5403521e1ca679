"""``POST /instances`` and the instance content routes (reference sections 2.1 and 2.5)."""
from __future__ import annotations

import gzip
import io
import logging
import re
import struct
import tempfile
import zipfile
import zlib
from typing import Any

import falcon
import pydicom

from ..dicom import tags as dicom_tags
from ..errors import ErrorCode, OrthancError, not_found
from ..index.models import CONTENT_TYPE_DICOM
from ..ingest import FileWindow, spool_threshold
from ..web import MAX_BODY_ENV, body_too_large, gzip_bomb, inflate_bound, read_body, send_json, send_text
from ..routing.registry import RouteSpec
from .resources_api import ignore_length, tag_format

log = logging.getLogger("pacsbox.rest")

ZIP_MAGIC = b"PK\x03\x04"
#: Members inflated up to this size are never refused by ``MaximumZipRatio`` (an all-zero
#: image compresses 1000 times).
ZIP_RATIO_FLOOR = 64 * 1024 * 1024
_ZIP_CHUNK = 1024 * 1024


#: falcon's multipart parser, with no bound of its own on the number of parts (falcon's 64
#: would end the form silently, as a malformed one): ``MaximumFormParts`` answers 413.
_PARSE_OPTIONS = falcon.media.multipart.MultipartParseOptions()
_PARSE_OPTIONS.max_body_part_count = 0


def _read_spooled(stream, bound: int | None, refuse, spool_at: int):
    """Read ``stream`` in 1 MiB pieces, refusing it (``raise refuse()``) once past
    ``bound`` bytes, and spooling it to a temporary file once past ``spool_at`` bytes.

    Parameters
    ----------
    stream : binary file
        An uploaded ZIP's member, a form's part.
    bound : int or None
        Bytes (None: no bound).
    refuse : callable
        Returns the error to raise (413).
    spool_at : int
        Bytes (``UploadSpoolThreshold``).

    Returns
    -------
    bytes or file
        The bytes; or a temporary file holding them, at position 0 (the caller closes it).
    """
    parts, total, spool = [], 0, None
    try:
        while True:
            chunk = stream.read(_ZIP_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if bound is not None and total > bound:
                raise refuse()
            if spool is None and total > spool_at:
                spool = tempfile.TemporaryFile()
                spool.writelines(parts)
                parts = []
            if spool is not None:
                spool.write(chunk)
            else:
                parts.append(chunk)
    except BaseException:
        if spool is not None:
            spool.close()
        raise
    if spool is not None:
        spool.seek(0)
        return spool
    return parts[0] if len(parts) == 1 else b"".join(parts)


class UploadRoute:
    """``GET /instances`` (listing) and ``POST /instances`` (upload: DICOM, gzip, ZIP or a
    ``multipart/form-data`` form), reference section 2.1."""

    def __init__(self, ctx):
        self.ctx = ctx
        from .chunks import ChunkStore
        from .resources_api import LevelListRoute
        self._list = LevelListRoute(ctx, 3)
        self.chunks = ctx.chunk_store = ChunkStore()  # chunked form uploads in progress

    def on_get(self, req, resp):
        self._list.on_get(req, resp)

    def on_post(self, req, resp):
        internal = req.env.get("pacsbox.internal_origin")  # pacsbox.call_rest_api (e.g. Lua)
        origin = {"Origin": str(internal)} if internal else {
            "Origin": "RestApi", "RemoteIP": req.remote_addr or "",
            "HttpUsername": getattr(req.context, "username", None) or ""}
        if (req.content_type or "").lower().startswith("multipart/form-data"):
            self._store_multipart(req, origin)
            resp.content_type = None
            resp.data = b""  # Orthanc answers a form upload with an empty 200
            return
        raw = self._spooled_body(req)
        if raw is not None:
            if raw.read(4) == ZIP_MAGIC:  # a ZIP: its members are read one by one from the spool
                send_json(resp, self._store_zip(raw.rewound(), origin))
            else:  # a large file (above UploadSpoolThreshold): copied from the spool file
                raw.f.seek(raw.start)
                send_json(resp, self.ctx.ingest.store_file(raw.f, raw.length, origin).answer())
            return
        if (req.get_header("Content-Encoding") or "").lower() == "gzip" and req.content_length:
            data = self._inflated_body(req)
            if not isinstance(data, bytes):  # inflated past UploadSpoolThreshold: a temporary file
                with data:
                    if data.read(4) == ZIP_MAGIC:
                        send_json(resp, self._store_zip(data, origin))
                    else:
                        data.seek(0)
                        send_json(resp, self.ctx.ingest.store_file(data, None, origin).answer())
                return
        else:
            data = read_body(req)
        if data[:4] == ZIP_MAGIC:
            send_json(resp, self._store_zip(io.BytesIO(data), origin))
            return
        if not data:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Received an empty DICOM file")
        result = self.ctx.ingest.store(data, origin)
        send_json(resp, result.answer())

    def _store_multipart(self, req, origin: dict) -> None:
        """Store every file of a ``multipart/form-data`` body (the upload form of
        Orthanc Explorer); a part that is not DICOM fails the request with its error.

        With ``X-File-Size`` (jQuery File Upload's chunked mode, see
        :mod:`pacsbox.rest.chunks`), each part is a chunk of the file named by
        ``X-File-Name``, stored once all its bytes arrived."""
        size_header = req.get_header("X-File-Size")
        size = int(size_header) if size_header and size_header.strip().isdigit() else 0
        chunks = self.chunks if size > 0 else None
        name = req.get_header("X-File-Name") or ""
        cfg = self.ctx.config
        most = cfg.int("MaximumFormParts")
        limit = cfg.int("MaximumFormPartSize") * 1024 * 1024
        if limit and size > limit:  # a chunked file announced larger than a part may be
            raise body_too_large(limit, f"The uploaded file {name!r}", "MaximumFormPartSize")
        handler = falcon.media.MultipartFormHandler(_PARSE_OPTIONS)
        spool_at = spool_threshold(cfg)
        try:
            form = handler.deserialize(req.bounded_stream, req.content_type, req.content_length)
            for count, part in enumerate(form, 1):
                if most and count > most:
                    raise OrthancError(ErrorCode.BAD_REQUEST, f"The form has more than {most} parts "
                                       "(MaximumFormParts)", http_status=413)
                entry = _read_spooled(part.stream, limit or None, lambda: body_too_large(
                    limit, f"Form part {part.name!r}", "MaximumFormPartSize"), spool_at)
                if chunks is not None:  # a chunk: assembled in memory (bounded by the size above)
                    if not isinstance(entry, bytes):
                        with entry:
                            entry = entry.read()
                    entry = chunks.add(name, size, entry) if entry else None
                if entry:
                    self._store_entry(entry, origin)
        except falcon.MediaMalformedError:
            log.info("malformed multipart upload ignored")  # Orthanc stores nothing, answers 200

    @staticmethod
    def _spooled_body(req):
        """The body as a window on waitress's seekable file, when it has a known length,
        is not gzip-encoded, and is a ZIP (its members are then read one at a time) or is
        spooled to a temporary file (above ``UploadSpoolThreshold``: it is then stored
        from that file, never read whole); None otherwise."""
        if not req.content_length or (req.get_header("Content-Encoding") or "").lower() == "gzip":
            return None
        f = req.env.get("wsgi.input")
        if f is None or not hasattr(f, "seek"):
            return None
        try:
            start = f.tell()
            head = f.read(4)
            f.seek(start)
        except (OSError, ValueError):
            return None
        if head != ZIP_MAGIC:
            try:
                f.fileno()
            except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation: in memory
                return None
        limit = int(req.env.get(MAX_BODY_ENV, 0) or 0)
        if limit and req.content_length > limit:
            raise body_too_large(limit)
        return FileWindow(f, start, req.content_length)

    def _inflated_body(self, req):
        """A ``Content-Encoding: gzip`` body, inflated in pieces as it is read: bytes, or a
        temporary file once past ``UploadSpoolThreshold`` (the caller closes it).

        Raises
        ------
        OrthancError
            413 past ``MaximumUploadSize`` or, without it, past
            :func:`pacsbox.web.inflate_bound` (a gzip bomb); 400 for a corrupt stream.
        """
        limit = int(req.env.get(MAX_BODY_ENV, 0) or 0)
        bound = limit or inflate_bound(req.content_length)
        refuse = ((lambda: body_too_large(limit, "The inflated request body")) if limit else
                  (lambda: gzip_bomb(bound)))
        try:
            with gzip.GzipFile(fileobj=req.bounded_stream, mode="rb") as gz:
                return _read_spooled(gz, bound, refuse, spool_threshold(self.ctx.config))
        except (OSError, EOFError, zlib.error):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Corrupted gzip body") from None

    def _read_member(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo):
        """One member, inflated in chunks and refused (413) as soon as it exceeds
        ``MaximumZipMemberSize`` or ``MaximumZipRatio`` (a ZIP bomb is refused on its
        header, without inflating it; a lying header is caught while inflating).

        Returns
        -------
        bytes or file
            The member's bytes; or, once it grows past ``UploadSpoolThreshold``, a
            temporary file holding it, at position 0 (the caller closes it).
        """
        cfg = self.ctx.config
        limit = cfg.int("MaximumZipMemberSize") * 1024 * 1024
        ratio = cfg.int("MaximumZipRatio")
        bound = limit or None
        if ratio:
            by_ratio = max(ZIP_RATIO_FLOOR, ratio * max(info.compress_size, 1))
            bound = by_ratio if bound is None else min(bound, by_ratio)

        def refuse():
            if limit and (info.file_size > limit or bound == limit):
                return body_too_large(limit, f"ZIP member {info.filename!r}", "MaximumZipMemberSize")
            return OrthancError(ErrorCode.BAD_REQUEST,
                                f"ZIP member {info.filename!r} inflates more than {ratio} times its compressed "
                                f"size (MaximumZipRatio): refused as a ZIP bomb", http_status=413)

        if bound is not None and info.file_size > bound:
            raise refuse()
        with zf.open(info) as member:
            return _read_spooled(member, bound, refuse, spool_threshold(cfg))

    def _store_zip(self, fileobj, origin: dict) -> list[dict[str, Any]]:
        try:
            zf = zipfile.ZipFile(fileobj)
        except zipfile.BadZipFile:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Cannot open ZIP archive from memory buffer") from None
        answers = []
        with zf:
            infos = zf.infolist()
            most = self.ctx.config.int("MaximumZipMembers")
            if most and len(infos) > most:
                raise OrthancError(ErrorCode.BAD_REQUEST, f"The ZIP archive has {len(infos)} members, more than "
                                   f"MaximumZipMembers ({most})", http_status=413)
            for info in infos:
                if info.is_dir():
                    continue
                base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
                if base.upper() == "DICOMDIR":
                    log.info("skipping DICOMDIR in ZIP upload: %s", info.filename)
                    continue
                try:
                    entry = self._read_member(zf, info)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
                    log.info("skipping ZIP entry %s: %s", info.filename, e)
                    continue
                try:
                    answers.append(self._store_entry(entry, origin).answer())
                except OrthancError as e:
                    log.info("skipping ZIP entry %s: %s", info.filename, e)
        return answers

    def _store_entry(self, entry, origin: dict):
        """Store what :func:`_read_spooled` gave: bytes, or a temporary file (closed here)."""
        if isinstance(entry, bytes):
            return self.ctx.ingest.store(entry, origin)
        with entry:
            return self.ctx.ingest.store_file(entry, None, origin)


#: ``/file`` reads a file up to this size whole (``pacsbox serve`` then sends it with the
#: header in one write, see ``server.COALESCE_BYTES``); a larger one is streamed.
_READ_WHOLE_BYTES = 256 * 1024


class FileRoute:
    """``GET /instances/{id}/file``: the stored bytes, streamed from the storage area."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp, id):
        att = self.ctx.index.attachment_by_public_id(id, CONTENT_TYPE_DICOM)
        if att is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        accept = req.get_header("Accept") or ""
        if "application/dicom+json" in accept:
            data = self.ctx.resources.read_file(id)
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            resp.content_type = "application/dicom+json"
            resp.text = ds.to_json()
            return
        if "transcode" in req.params:  # as Orthanc 1.12 (1.10.1 has no such argument)
            from .images import transcoded_file
            resp.content_type = "application/dicom"
            resp.data = transcoded_file(self.ctx, id, req.params["transcode"])
            return
        try:
            f = self.ctx.storage.open(att.uuid, CONTENT_TYPE_DICOM)
        except FileNotFoundError:
            raise OrthancError(ErrorCode.INEXISTENT_FILE) from None
        self.ctx.metrics.increment("orthanc_storage_read_bytes", att.uncompressed_size)
        resp.content_type = "application/dicom"
        resp.set_header("Content-Disposition", f'filename="{att.uuid}.dcm"')
        if att.uncompressed_size <= _READ_WHOLE_BYTES:
            with f:  # one buffer: the server sends it with the header in one write
                resp.data = f.read()
        else:
            resp.set_stream(f, att.uncompressed_size)


class TagsRoute:
    """``/instances/{id}/tags`` (``?simplify``, ``?short``) and ``/simplified-tags``."""

    def __init__(self, ctx, default_format: str = "full"):
        self.ctx, self.default = ctx, default_format

    def on_get(self, req, resp, id):
        ds = self.ctx.resources.read_dataset(id)
        fmt = tag_format(req, self.default)
        enc = dicom_tags.dataset_encodings(ds, self.ctx.ingest.default_encoding)
        send_json(resp, dicom_tags.dataset_to_json(ds, fmt, enc, dictionary=dicom_tags.tag_dictionary(self.ctx),
                                                   ignore_length=ignore_length(req)))


class HeaderRoute:
    """``/instances/{id}/header``: the meta-information group 0002."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp, id):
        ds = self.ctx.resources.read_dataset(id, stop_before_pixels=True)
        meta = getattr(ds, "file_meta", None) or pydicom.Dataset()
        # Orthanc leaves the binary elements, e.g. (0002,0001), out of the header
        send_json(resp, dicom_tags.dataset_to_json(meta, tag_format(req), ["ascii"], include_binary=False, top=False))


_PIXEL_DATA = 0x7FE00010
#: An item index in a ``/content`` path: ASCII digits.
_INDEX = re.compile(r"[0-9]{1,9}")


class ContentRoute:
    """``/instances/{id}/content[/gggg-eeee[/index[/gggg-eeee...]]]``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp, id):
        ds = self.ctx.resources.read_dataset(id)
        send_json(resp, [f"{int(el.tag) >> 16:04x}-{int(el.tag) & 0xFFFF:04x}" for el in ds.elements()])

    def on_get_path(self, req, resp, id, path):
        ds = self.ctx.resources.read_dataset(id)
        parts = [p for p in path.split("/") if p]
        cur: Any = ds
        i = 0
        dictionary = dicom_tags.tag_dictionary(self.ctx)  # keywords, gggg-eeee and Dictionary names
        while True:
            try:
                tag = dictionary.parse(parts[i])
            except KeyError:
                raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG) from None
            if isinstance(cur, pydicom.Dataset):
                tag = dictionary.locate(tag, cur)  # a private name: the file's block
            elem = cur.get_item(tag) if isinstance(cur, pydicom.Dataset) else None
            if elem is None:
                raise not_found()
            i += 1
            if tag == _PIXEL_DATA and cur is ds:
                # Orthanc 1.10.1 lists the pixel data's items: native pixel data is one item,
                # "0", holding every frame; encapsulated pixel data lists the basic offset
                # table ("0") and each fragment; each item answers its bytes
                value = elem.value if isinstance(elem.value, (bytes, bytearray)) else b""
                undefined = getattr(elem, "is_undefined_length", None)
                if undefined is None:  # a raw element, as read
                    undefined = elem.length == 0xFFFFFFFF
                items = _encapsulated_items(value) if undefined else [value]
                if i == len(parts):
                    send_json(resp, [str(k) for k in range(len(items))])
                    return
                if i + 1 != len(parts) or not _INDEX.fullmatch(parts[i]) or int(parts[i]) >= len(items):
                    raise not_found()
                resp.content_type = "application/octet-stream"
                resp.data = bytes(items[int(parts[i])])
                return
            is_seq = elem.VR == "SQ" or (elem.VR in (None, "UN") and _decoded_vr(cur, tag) == "SQ")
            if not is_seq:
                if i != len(parts):
                    raise not_found()
                # the value as stored in the file: no decoding, padding kept (as Orthanc)
                value = elem.value
                if not isinstance(value, (bytes, bytearray)):
                    value = (dicom_tags.element_text(elem, dicom_tags.dataset_encodings(ds)) or "").encode("utf-8")
                resp.content_type = "application/octet-stream"
                resp.data = bytes(value)
                return
            items = cur[tag].value
            if i == len(parts):
                send_json(resp, [str(k) for k in range(len(items))])
                return
            try:
                cur = items[int(parts[i])]
            except (ValueError, IndexError):
                raise not_found() from None
            i += 1
            if i == len(parts):
                send_json(resp, [f"{int(e.tag) >> 16:04x}-{int(e.tag) & 0xFFFF:04x}" for e in cur.elements()])
                return


def _encapsulated_items(value: bytes) -> list[bytes]:
    """The items of encapsulated pixel data: the basic offset table, then each fragment.

    Parameters
    ----------
    value : bytes
        The element's value: (FFFE,E000) items, each with a 32-bit little-endian length,
        up to the (FFFE,E0DD) delimiter (DICOM PS3.5 A.4).

    Returns
    -------
    list of bytes
        The items' contents; a truncated item keeps the bytes present.
    """
    out, pos = [], 0
    while pos + 8 <= len(value):
        group, element, length = struct.unpack_from("<HHI", value, pos)
        if (group, element) != (0xFFFE, 0xE000):
            break
        out.append(value[pos + 8:pos + 8 + length])
        pos += 8 + length
    return out


def _decoded_vr(ds: pydicom.Dataset, tag: int) -> str | None:
    """The VR pydicom gives an element of implicit or UN VR (None when it cannot decode it)."""
    try:
        return ds[tag].VR
    except Exception:  # noqa: BLE001 - an undecodable value is a leaf for /content
        return None


def routes(ctx) -> list[RouteSpec]:
    """Route declarations of this module."""
    return [
        RouteSpec("/instances", UploadRoute),
        RouteSpec("/instances/{id}/file", FileRoute),
        RouteSpec("/instances/{id}/tags", TagsRoute),
        RouteSpec("/instances/{id}/simplified-tags", lambda c: TagsRoute(c, "simplify")),
        RouteSpec("/instances/{id}/header", HeaderRoute),
        RouteSpec("/instances/{id}/content", ContentRoute),
        RouteSpec("/instances/{id}/content/{path:path}", ContentRoute, suffix="path"),
    ]
