"""REST routes of the archive plugin (reference section 4.1).

- ``GET``/``POST /{patients,studies,series}/{id}/archive`` and ``/media``;
- ``POST /tools/create-archive``, ``/tools/create-media``, ``/tools/create-media-extended``
  (a JSON array of IDs of any level, or an object with ``Resources``), and their
  ``GET ...?resources=id1,id2`` forms (Orthanc 1.12.2).

Synchronous answers stream the ZIP while the job writes it (``SynchronousZipStream``
true: no ``Content-Length``; waitress then sends it chunked with ``Connection: close``,
the hop-by-hop header being the server's to set) or send the finished file with its
``Content-Length`` (false). Asynchronous answers are ``{"ID", "Path"}``; the ZIP is then
at ``GET /jobs/{id}/archive``.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from pacsbox import (ErrorCode, OrthancError, query_flag, read_bool, read_json_body, read_string, request_mode,
                     send_json)

from .jobs import ArchiveJob, MediaJob, StreamSink, ZipResponse, output_directory
from .transcode import check_transfer_syntax
from .zipstream import BACKENDS, DEFAULT_BACKEND, DEFAULT_LEVELS

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

_UNSAFE_FILENAME = re.compile(r'["\\\r\n\x00-\x1f]')


def _settings(ctx: "ServerContext") -> dict[str, Any]:
    """The plugin's options: ``SynchronousZipStream``, ``ZipLoaderThreads`` (threads
    preparing files; 0 = one per CPU core) and the pacsbox section ``Archive``:
    ``Deflate`` (``"isal"`` or ``"zlib"``; default ISA-L when the ``isal`` package is
    installed), ``CompressionLevel`` (default 2 with ISA-L, 1 with zlib) and
    ``DicomDirProcess`` (default true: media DICOMDIRs are encoded in a child process)."""
    section = ctx.plugin_config("Archive", {}) or {}
    if not isinstance(section, dict):
        section = {}
    backend = section.get("Deflate", DEFAULT_BACKEND)
    if backend not in BACKENDS:
        backend = DEFAULT_BACKEND
    level = section.get("CompressionLevel", DEFAULT_LEVELS[backend])
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        level = DEFAULT_LEVELS[backend]
    threads = ctx.config.int("ZipLoaderThreads")
    process = section.get("DicomDirProcess", True)
    return {"stream": ctx.config.bool("SynchronousZipStream"), "level": level, "backend": backend,
            "workers": threads if threads > 0 else (os.cpu_count() or 1),
            "dicomdir_process": process if isinstance(process, bool) else True}


def _new_job(ctx: "ServerContext", media: bool, resources: list[str], transcode: str | None,
             extended: bool) -> ArchiveJob:
    s = _settings(ctx)
    cls = MediaJob if media else ArchiveJob
    return cls(resources, transcode=transcode, extended=extended, level=s["level"], backend=s["backend"],
               workers=s["workers"], dicomdir_process=s["dicomdir_process"])


def clean_filename(name: Any, default: str) -> str:
    """A ``Content-Disposition`` file name without quote, backslash, CR, LF or other
    control character (``tot"o.zip`` → ``toto.zip``); ``default`` when nothing is left.

    Parameters
    ----------
    name : any
        The requested name (``Filename`` of the body, ``?filename=``), or None.
    default : str

    Returns
    -------
    str
    """
    if not isinstance(name, str) or not name:
        return default
    return _UNSAFE_FILENAME.sub("", name).strip() or default


def _content_disposition(req, default: str) -> str:
    return f'filename="{clean_filename(req.get_param("filename"), default)}"'


def _body_filename(body: Any, default: str | None) -> str | None:
    """``Filename`` of an archive/media request body (Orthanc 1.12.11), cleaned.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` when it is not a string.
    """
    name = read_string(body, "Filename")
    return default if name is None else clean_filename(name, default)


def _check_ids(ctx: "ServerContext", ids: Any) -> list[str]:
    """The IDs of a request, each known to the index (any level).

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "Expected a list of strings (Orthanc identifiers)";
        404 ``UNKNOWN_RESOURCE`` for an ID the index does not know.
    """
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Expected a list of strings (Orthanc identifiers)")
    out = []
    for i in ids:
        s = i.strip()
        if ctx.index.lookup(s) is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        out.append(s)
    return out


def run_archive(ctx: "ServerContext", req, resp, job: ArchiveJob, *, synchronous: bool, priority: int,
                filename: str) -> None:
    """Run an archive job as the request asks and write the answer.

    Parameters
    ----------
    ctx : ServerContext
    req, resp : falcon.Request, falcon.Response
    job : ArchiveJob
    synchronous : bool
        Stream or send the ZIP (True), or answer ``{"ID", "Path"}`` (False).
    priority : int
        ``Priority`` of the job.
    filename : str
        Default ``Content-Disposition`` file name of a synchronous answer.

    Raises
    ------
    OrthancError
        The synchronous job failed before sending its first byte (its error code and
        details).
    """
    if not synchronous:
        rec = ctx.jobs.submit(job, priority)
        send_json(resp, {"ID": rec.id, "Path": f"/jobs/{rec.id}"})
        return
    job.synchronous = True
    if _settings(ctx)["stream"]:
        job.sink = sink = StreamSink()
        rec = ctx.jobs.submit(job, priority)
        try:
            first = ZipResponse.next_chunk(ctx, rec.id, sink)
        except Exception:  # noqa: BLE001 - the job failed before its first byte: its error
            ctx.jobs.wait(rec, timeout=30)
            raise OrthancError(rec.error_code or ErrorCode.INTERNAL_ERROR, rec.error_details or None) from None
        resp.content_type = "application/zip"
        resp.set_header("Content-Disposition", _content_disposition(req, filename))
        resp.stream = ZipResponse(ctx, rec.id, sink, first)
        return

    def take(j: ArchiveJob):
        f = open(j.output_path, "rb")
        os.unlink(j.output_path)
        j.output_path = None
        return f

    f = ctx.jobs.run_sync(job, priority, on_success=take)
    resp.content_type = "application/zip"
    resp.set_header("Content-Disposition", _content_disposition(req, filename))
    resp.set_stream(f, os.fstat(f.fileno()).st_size)


class ResourceArchiveRoute:
    """``GET``/``POST /{patients|studies|series}/{id}/archive`` (``media`` when
    ``media`` is True)."""

    def __init__(self, ctx: "ServerContext", level: int, media: bool) -> None:
        self.ctx, self.level, self.media = ctx, level, media
        output_directory(ctx)

    def _resource(self, public_id: str) -> str:
        res = self.ctx.index.lookup(public_id, self.level)
        if res is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        return res.public_id

    def on_get(self, req, resp, id):
        rid = self._resource(id)
        ts = req.get_param("transcode")
        transcode = check_transfer_syntax(ts) if ts else None
        extended = self.media and query_flag(req, "extended")
        job = _new_job(self.ctx, self.media, [rid], transcode, extended)
        run_archive(self.ctx, req, resp, job, synchronous=True, priority=0, filename=f"{rid}.zip")

    def on_post(self, req, resp, id):
        body = read_json_body(req, allow_empty=False)
        if not isinstance(body, dict):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
        rid = self._resource(id)
        synchronous, priority = request_mode(body, True)
        transcode = check_transfer_syntax(body["Transcode"]) if "Transcode" in body else None
        extended = self.media and read_bool(body, "Extended", False)
        job = _new_job(self.ctx, self.media, [rid], transcode, extended)
        job.download_name = _body_filename(body, None)
        job.utf8 = read_bool(body, "Utf8", False)
        run_archive(self.ctx, req, resp, job, synchronous=synchronous, priority=priority,
                    filename=job.download_name or f"{rid}.zip")


class ToolsArchiveRoute:
    """``POST``/``GET /tools/create-archive``, ``/tools/create-media``,
    ``/tools/create-media-extended``."""

    def __init__(self, ctx: "ServerContext", media: bool, extended: bool) -> None:
        self.ctx, self.media, self.extended = ctx, media, extended

    def on_post(self, req, resp):
        body = read_json_body(req, allow_empty=False)
        if isinstance(body, list):
            ids, body = body, {}
        elif isinstance(body, dict):
            if "Resources" not in body:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Missing field Resources in the JSON body")
            ids = body["Resources"]
        else:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
        resources = _check_ids(self.ctx, ids)
        synchronous, priority = request_mode(body, True)
        transcode = check_transfer_syntax(body["Transcode"]) if "Transcode" in body else None
        extended = self.media and read_bool(body, "Extended", self.extended)
        job = _new_job(self.ctx, self.media, resources, transcode, extended)
        job.download_name = _body_filename(body, None)
        job.utf8 = read_bool(body, "Utf8", False)
        run_archive(self.ctx, req, resp, job, synchronous=synchronous, priority=priority,
                    filename=job.download_name or "Archive.zip")

    def on_get(self, req, resp):
        raw = req.get_param("resources")
        if raw is None:
            raise OrthancError(ErrorCode.BAD_REQUEST, "Missing \"resources\" argument")
        ids = [s for s in (p.strip() for p in raw.split(",")) if s]
        resources = _check_ids(self.ctx, ids)
        ts = req.get_param("transcode")
        transcode = check_transfer_syntax(ts) if ts else None
        extended = self.media and (self.extended or query_flag(req, "extended"))
        job = _new_job(self.ctx, self.media, resources, transcode, extended)
        run_archive(self.ctx, req, resp, job, synchronous=True, priority=0, filename="Archive.zip")
