"""The ``Archive`` and ``Media`` job types (Orthanc ``ArchiveJob``), their outputs and
the plumbing that streams a synchronous archive to its HTTP client (in :mod:`.sinks`;
the output files in :mod:`.outputs`).

One step writes one instance, so ``Progress`` advances per instance; a first step
plans the archive and a last one writes the central directory (and, for media, the
DICOMDIR). Files are read, transcoded if asked, CRC'd and deflated ahead of the writer
in a small thread pool (zlib releases the GIL), in order and within a bounded window,
so memory stays constant whatever the archive's size.

Where the bytes go:

- **synchronous, streamed** (``SynchronousZipStream`` true): into a :class:`StreamSink`,
  a bounded buffer read by the HTTP response (:class:`ZipResponse`). A client that
  hangs up closes the sink and cancels the job, whose worker is freed at once.
- **synchronous, via a file** (``SynchronousZipStream`` false) and **asynchronous**:
  into a file under ``<IndexDirectory>/pacsbox-archives``. An asynchronous job's file
  becomes its ``archive`` output, kept in an LRU store of ``MediaArchiveSize`` outputs
  per server (the oldest is evicted and its file deleted).

Restart (beyond Orthanc, which never saves archive jobs): an asynchronous job
serializes its plan (instance IDs and entry names), the number of entries safely
written and the size of the partial file at that point. After a restart the partial
file is checked entry by entry (:func:`~pacsbox_archive.zipstream.scan_entries`),
truncated to that point and the job goes on from the next instance; when the file is
missing or does not match, the job starts its archive again from scratch.
"""
from __future__ import annotations

import logging
import os
import uuid
from typing import TYPE_CHECKING, Any, Mapping

from pacsbox import CONTENT_TYPE_DICOM, ErrorCode, Job, JobOutput, OrthancError, StepResult

from .dicomdir import FILE_SET_ID, DicomDirBuilder, RecordSource, is_image_sop_class, read_header
from .dicomfile import FileFacts, is_compressed_syntax, peek
from .dirworker import PendingDirectory
from .dirworker import workers as directory_workers
from .layout import PlanItem, build_plan, reload_plan
from .outputs import OutputStore, _unlink, output_directory, output_store
from .pipeline import _Pipeline, _Prepared
from .sinks import SinkClosed, StreamSink, ZipResponse, _Coalescer
from .transcode import transcode
from .zipstream import DEFAULT_BACKEND, DEFAULT_LEVEL, STREAM_CHUNK, ZipWriter, prepare_entry, scan_entries

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

log = logging.getLogger("pacsbox.archive")

#: Importable from here as before the split (routes.py and the tests use them).
__all__ = ["ArchiveJob", "MediaJob", "OutputStore", "output_store", "output_directory", "SinkClosed", "StreamSink",
           "ZipResponse"]

MEGA = 1024 * 1024
#: ZIP comment of every archive (as Orthanc's).
ZIP_COMMENT = b"Created by Orthanc"
#: Files larger than this (bytes) are streamed through the writer in chunks instead of
#: being prepared in memory ahead of it.
LARGE_ENTRY = 64 * MEGA

class ArchiveJob(Job):
    """``Archive``: a ZIP of the given resources, named as in reference section 4.2.

    Parameters
    ----------
    resources : list of str
        Orthanc IDs of any level, as given in the request (checked by the caller).
    transcode : str, optional
        Transfer syntax UID every file is converted to (``Transcode``).
    extended : bool
        Media only: SeriesDescription in SERIES records.
    level : int
        Deflate level.
    backend : str
        Deflate implementation (``"isal"`` or ``"zlib"``).
    workers : int
        Threads preparing files ahead of the writer.
    dicomdir_process : bool
        Media: encode the DICOMDIR in a child process while the files are written
        (:mod:`~pacsbox_archive.dirworker`); False, or when transcoding: in the job's
        thread after the last file.

    Attributes
    ----------
    sink : StreamSink or None
        Set for a synchronous streamed archive.
    synchronous : bool
        A synchronous archive (never saved for a restart).
    output_path : str or None
        The finished archive file (asynchronous, or synchronous via a file).
    """

    type_name = "Archive"
    media = False
    #: ``Filename`` of the request (cleaned): the ``Content-Disposition`` of
    #: ``/jobs/{id}/archive`` (``archive.zip`` when None).
    download_name: str | None = None
    #: ``Utf8`` of the request (Orthanc 1.12.11): folder names keep every script, in UTF-8.
    utf8: bool = False

    def __init__(self, resources: list[str], *, transcode: str | None = None, extended: bool = False,
                 level: int = DEFAULT_LEVEL, backend: str = DEFAULT_BACKEND, workers: int = 2,
                 dicomdir_process: bool = True) -> None:
        super().__init__()
        self.backend = backend
        self.resources = list(resources)
        self.transcode = transcode
        self.extended = bool(extended)
        self.level = int(level)
        self.workers = max(1, int(workers))
        self.dicomdir_process = bool(dicomdir_process)
        self.sink: StreamSink | None = None
        self.synchronous = False
        self.output_path: str | None = None
        self.plan: list[PlanItem] | None = None
        self._saved_plan: tuple[list[str], list[str]] | None = None
        self.position = 0
        self.committed = (0, 0)          # (entries, bytes) safely in the file
        self.instances_count = 0
        self.uncompressed_size = 0
        self.archive_size = 0
        self.finished = False
        self._ctx: "ServerContext | None" = None
        self._writer: ZipWriter | None = None
        self._out: _Coalescer | None = None
        self._file = None
        self._partial: str | None = None
        self._pipeline: _Pipeline | None = None
        self._dicomdir: DicomDirBuilder | None = None
        self._pending: PendingDirectory | None = None
        self._included: set[str] = set()
        self._skipped: set[str] = set()
        self._orphan = False

    # ---- public content ------------------------------------------------------------
    def public_content(self) -> dict[str, Any]:
        """``Content`` of ``/jobs/{id}`` (reference section 3.3): Description,
        InstancesCount, UncompressedSize(MB), ArchiveSize(MB), and Transcode if asked."""
        d: dict[str, Any] = {
            "ArchiveSize": str(self.archive_size),
            "ArchiveSizeMB": self.archive_size // MEGA,
            "Description": self.description,
            "InstancesCount": self.instances_count,
            "UncompressedSize": str(self.uncompressed_size),
            "UncompressedSizeMB": self.uncompressed_size // MEGA,
        }
        if self.transcode:
            d["Transcode"] = self.transcode
        return d

    def progress(self) -> float:
        """Percent of the instances written (the last step writes the directory)."""
        if self.finished:
            return 100.0
        if self.plan is None:
            return 0.0
        return 100.0 * self.position / (len(self.plan) + 1)

    # ---- life cycle ------------------------------------------------------------------
    def start(self, ctx: "ServerContext") -> None:
        """Plan the archive (first run), open its output, start the file readers."""
        self._ctx = ctx
        if self._orphan:
            raise OrthancError(ErrorCode.BAD_SEQUENCE_OF_CALLS, "Cannot resubmit a synchronous archive")
        if self.plan is None:
            if self._saved_plan is not None:
                ids, names = self._saved_plan
                self.plan = reload_plan(ctx, ids, names)
                self._saved_plan = None
                if len(self.plan) != len(ids):
                    self.committed = (0, 0)      # instances vanished: the partial file no longer fits
            else:
                found = [r for r in (ctx.index.lookup(i) for i in self.resources) if r is not None]
                if self.resources and not found:
                    raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, "The resources of the archive were deleted")
                self.plan = build_plan(ctx, found, media=self.media, utf8=self.utf8)
                self.position = 0
            self.instances_count = len(self.plan)
            self.uncompressed_size = sum(i.size for i in self.plan)
        if self._writer is None:
            self._open_output(ctx)
        elif self.media and self._pending is None and self._dicomdir is None:
            self._start_directory(self.position)      # resumed in this process after a pause
        if self._pipeline is None:
            self._pipeline = _Pipeline(self._prepare, self.plan, self.position, self.workers)

    def _open_output(self, ctx: "ServerContext") -> None:
        if self.sink is not None:
            if self.position:
                raise OrthancError(ErrorCode.BAD_SEQUENCE_OF_CALLS, "A streamed archive cannot be resumed")
            self._out = _Coalescer(self.sink.write)
            self._writer = ZipWriter(self._out.write, comment=ZIP_COMMENT)
            self._start_directory(0)
            return
        if self._partial is None:
            self._partial = os.path.join(output_directory(ctx), f"{uuid.uuid4()}.zip")
        records = None
        position, offset = self.committed
        if position and os.path.exists(self._partial):
            with open(self._partial, "rb") as f:
                records = scan_entries(f, offset)
            if records is None or len(records) != position or position > len(self.plan or []):
                log.warning("archive %s cannot be resumed; starting it again", self._partial)
                records = None
        if records is None:
            position = offset = 0
            records = []
        elif position:
            log.info("resuming archive %s at entry %d of %d (%d bytes kept)", self._partial, position,
                     len(self.plan), offset)
        self.position = position
        self.committed = (position, offset)
        self._file = open(self._partial, "r+b" if offset else "wb", buffering=0)
        self._file.truncate(offset)
        self._file.seek(offset)
        self._out = _Coalescer(self._write_file)
        self._writer = ZipWriter(self._out.write, comment=ZIP_COMMENT, offset=offset, records=records)
        self.archive_size = offset
        self._start_directory(position)

    def _start_directory(self, position: int) -> None:
        """Media: start the DICOMDIR.

        Without transcoding, the records of every instance are known before the files
        are written (main tags from the index, the rest from the first kilobytes of
        each file): they go to an idle child process
        (:mod:`~pacsbox_archive.dirworker`), which encodes the DICOMDIR on another core
        while the files are written. When transcoding (which changes the files), when
        ``dicomdir_process`` is off or no child is idle, a builder gets the records as
        the files are written (those of the ``position`` entries already in a resumed
        partial file first) and the DICOMDIR is encoded after the last file. Not in a thread beside the writer: pydicom's encoder is
        pure Python and would keep the GIL from the writer's threads (measured slower
        than encoding after the last file).
        """
        self._dicomdir = None
        self._cancel_pending()
        self._included = set()
        self._skipped = set()
        if not self.media:
            return
        if not self.transcode and self.dicomdir_process:
            self._pending = directory_workers(self._ctx).submit(self._gather(list(self.plan or []), self._included),
                                                       self.extended, FILE_SET_ID)
            if self._pending is not None:
                return
        self._dicomdir = self._builder((self.plan or [])[:position])

    def _builder(self, items: list[PlanItem]) -> DicomDirBuilder:
        """A DICOMDIR builder with the records of ``items`` (files already written)."""
        builder = DicomDirBuilder(extended=self.extended)
        for item in items:
            prep = self._reread(item)
            if not prep.missing:
                builder.add(self._record_source(item, prep))
        return builder

    def _gather(self, plan: list[PlanItem], included: set[str]):
        """The records' sources of every instance of ``plan``, from the index and the
        first kilobytes of each file (a generator, run by the DICOMDIR thread); the
        Orthanc IDs of the instances found go into ``included``."""
        for item in plan:
            prep = self._reread(item)
            if not prep.missing:
                included.add(item.instance.public_id)
                yield self._record_source(item, prep)

    def _cancel_pending(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _encode_directory(self) -> bytes:
        """The DICOMDIR, once every file is written."""
        pending, self._pending = self._pending, None
        if pending is not None:
            data = pending.result()
            if data is not None and not (self._included & self._skipped):
                return data
            # the child failed, or files vanished after their records were made: in
            # the job's thread, with the files that were written
            self._dicomdir = self._builder([i for i in self.plan if i.instance.public_id not in self._skipped])
        return self._dicomdir.encode()

    def _write_file(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            view = view[n:]

    def _reread(self, item: PlanItem) -> _Prepared:
        """Facts of an already written file (to rebuild DICOMDIR records on resume)."""
        ctx = self._ctx
        try:
            with ctx.storage.open(item.uuid, CONTENT_TYPE_DICOM) as f:
                facts = peek(f.read(16384))
                header = None
                if not is_image_sop_class(facts.sop_class_uid) or not facts.charset_known:
                    f.seek(0)
                    header = read_header(f.read())
        except FileNotFoundError:
            return _Prepared(None, missing=True)
        return _Prepared(None, facts, header)

    # ---- preparing files (thread pool) -------------------------------------------------
    def _prepare(self, item: PlanItem) -> _Prepared:
        ctx = self._ctx
        if item.size > LARGE_ENTRY and not self.transcode:
            if not self.media:
                return _Prepared(None)
            return self._reread(item)
        try:
            data = ctx.storage.read(item.uuid, CONTENT_TYPE_DICOM)
        except FileNotFoundError:
            return _Prepared(None, missing=True)
        if self.transcode:
            data = transcode(data, self.transcode)
        facts = peek(data)
        entry = prepare_entry(item.name, data, compress=not is_compressed_syntax(facts.transfer_syntax_uid),
                              level=self.level, backend=self.backend)
        header = None
        if self.media and self._pending is None and (not is_image_sop_class(facts.sop_class_uid)
                                                     or not facts.charset_known):
            header = read_header(data)       # for the records made as the files are written
        return _Prepared(entry, facts, header)

    def _record_source(self, item: PlanItem, prep: _Prepared) -> RecordSource:
        facts = prep.facts or FileFacts()
        header = prep.header
        inst = item.instance.main_tags
        # the data set's UIDs win over the File Meta Information's (they may differ)
        sop_class = str(header.get("SOPClassUID", "")) if header is not None else ""
        sop_class = sop_class or facts.sop_class_uid or ""
        sop_inst = inst.get("SOPInstanceUID") or facts.sop_instance_uid or ""
        ts = facts.transfer_syntax_uid
        if ts is None and header is not None:
            ts = str(header.file_meta.get("TransferSyntaxUID", ""))
        charset = facts.specific_character_set
        if not facts.charset_known and header is not None:
            cs = header.get("SpecificCharacterSet")
            charset = cs if isinstance(cs, str) or cs is None else "\\".join(cs)
        return RecordSource(
            file_id=tuple(item.name.split("/")), patient_key=item.patient.public_id,
            study_key=item.study.public_id, series_key=item.series.public_id,
            patient=item.patient.main_tags, study=item.study.main_tags, series=item.series.main_tags,
            instance=inst, sop_class_uid=sop_class, sop_instance_uid=sop_inst,
            transfer_syntax_uid=ts or "1.2.840.10008.1.2", specific_character_set=charset,
            dataset=header if header is not None and not is_image_sop_class(sop_class) else None)

    # ---- steps -------------------------------------------------------------------------
    def step(self, ctx: "ServerContext") -> StepResult:
        """Write the next instance; after the last one, the directory and the end."""
        try:
            if self.position < len(self.plan):
                self._write_item(ctx, self.plan[self.position])
                self.position += 1
                if self.sink is None and self._out.size == 0:
                    self._commit()
                return StepResult.CONTINUE
            self._finalize(ctx)
            return StepResult.SUCCESS
        except SinkClosed:
            if self.stop_requested:
                return StepResult.CONTINUE       # the engine now applies the cancel
            raise OrthancError(ErrorCode.NETWORK_PROTOCOL,
                               "A client has disconnected while creating an archive") from None

    def _write_item(self, ctx: "ServerContext", item: PlanItem) -> None:
        prep = self._pipeline.get(self.position)
        if prep.missing:
            log.warning("instance %s was removed after the archive was planned", item.instance.public_id)
            self._skipped.add(item.instance.public_id)
            return
        if prep.entry is not None:
            self._writer.add(prep.entry)
        else:
            facts = prep.facts or FileFacts()
            with ctx.storage.open(item.uuid, CONTENT_TYPE_DICOM) as f:
                if facts.transfer_syntax_uid is None:
                    facts = peek(f.read(65536))
                    f.seek(0)
                chunks = iter(lambda: f.read(STREAM_CHUNK), b"")
                self._out.flush()
                self._writer.add_stream(item.name, chunks, size_hint=item.size,
                                        compress=not is_compressed_syntax(facts.transfer_syntax_uid),
                                        level=self.level, backend=self.backend, patch=self._file)
            prep.facts = facts
        if self._dicomdir is not None:
            self._dicomdir.add(self._record_source(item, prep))
        self.archive_size = self._writer.offset

    def _commit(self) -> None:
        """Record (entries written, bytes in the file) once they are all in the file."""
        self.committed = (self.position, self._writer.offset)

    def _finalize(self, ctx: "ServerContext") -> None:
        if self.media:
            self._writer.add(prepare_entry("DICOMDIR", self._encode_directory(), level=self.level,
                                           backend=self.backend))
        self._writer.close()
        self._out.flush()
        self.archive_size = self._writer.offset
        self.finished = True
        if self.sink is not None:
            self.sink.finish()
            return
        self._file.close()
        self._file = None
        self.output_path, self._partial = self._partial, None
        if not self.synchronous:
            output_store(ctx).add(self, self.output_path)

    def stop(self, reason: str) -> None:
        """Release the file readers and the DICOMDIR child process. On pause or
        shutdown the partial file is flushed and its position committed; on failure or
        cancel it is deleted (and a streamed response is ended with an error)."""
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        if reason == "Success":
            return
        self._cancel_pending()      # a resumed job starts its DICOMDIR child again
        if reason in ("Paused", "Shutdown"):
            if self._file is not None:
                self._out.flush()
                self._commit()
            if self.sink is not None and reason == "Shutdown":
                self.sink.fail(OrthancError(ErrorCode.INTERNAL_ERROR, "The server is stopping"))
            return
        if self.sink is not None:
            code = ErrorCode.CANCELED_JOB if reason == "Canceled" else ErrorCode.INTERNAL_ERROR
            self.sink.fail(OrthancError(code, "The archive job stopped"))
        self._close_file(delete=True)
        self._writer = None
        self._out = None
        self._dicomdir = None
        self.position = 0
        self.committed = (0, 0)
        self.archive_size = 0

    def _close_file(self, delete: bool) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        if delete:
            _unlink(self._partial)
            self._partial = None

    def reset(self) -> None:
        """``POST /jobs/{id}/resubmit``: an asynchronous archive starts again from
        scratch; a synchronous one fails (its client is gone)."""
        self._close_file(delete=True)
        if self.output_path:
            if self._ctx is not None:
                output_store(self._ctx).remove(self)
            _unlink(self.output_path)
            self.output_path = None
        self._writer = None
        self._dicomdir = None
        self._cancel_pending()
        self.position = 0
        self.committed = (0, 0)
        self.archive_size = 0
        self.finished = False
        self.plan = None
        self._orphan = self.synchronous

    # ---- outputs -------------------------------------------------------------------------
    def get_output(self, key: str) -> JobOutput | None:
        """The ``archive`` output of a finished asynchronous archive, while kept."""
        if key != "archive" or self._ctx is None or self.synchronous:
            return None
        path = output_store(self._ctx).get(self)
        if path is None or not os.path.exists(path):
            return None
        return JobOutput(mime="application/zip", filename=self.download_name or "archive.zip", path=path)

    @classmethod
    def recover(cls, ctx: "ServerContext", jobs: list) -> None:
        """Start-up: delete the files of the archive folder that no archive job refers to
        (partial or finished files of jobs that no longer exist: ``--no-jobs``, a job
        forgotten by the history, an output evicted while the server was killed)."""
        folder = os.path.join(str(ctx.config.path("IndexDirectory")), "pacsbox-archives")
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return
        keep = set()
        for job in jobs:
            if isinstance(job, ArchiveJob):
                for path in (job._partial, job.output_path):
                    if path:
                        keep.add(os.path.abspath(path))
        removed = 0
        for name in names:
            path = os.path.abspath(os.path.join(folder, name))
            if path not in keep and os.path.isfile(path):
                _unlink(path)
                removed += 1
        if removed:
            log.info("removed %d archive files that no job refers to", removed)

    def output_keys(self) -> list[str]:
        """``["archive"]`` while the output of an asynchronous archive is kept."""
        return ["archive"] if self.output_path and not self.synchronous else []

    def delete_output(self, key: str) -> bool:
        """``DELETE /jobs/{id}/archive`` (and history eviction): drop the file."""
        if key != "archive" or self._ctx is None:
            return False
        return output_store(self._ctx).remove(self)

    # ---- persistence -----------------------------------------------------------------------
    def serialize(self) -> dict[str, Any] | None:
        """State for a restart; None for synchronous archives (their client is gone)."""
        if self.synchronous:
            return None
        d: dict[str, Any] = {
            "Resources": self.resources, "Transcode": self.transcode, "Extended": self.extended,
            "Level": self.level, "Backend": self.backend, "Workers": self.workers,
            "DicomDirProcess": self.dicomdir_process, "Description": self.description,
            "InstancesCount": self.instances_count, "UncompressedSize": self.uncompressed_size,
            "ArchiveSize": self.archive_size, "Finished": self.finished, "Filename": self.download_name,
            "Utf8": self.utf8,
        }
        if self.finished:
            d["Output"] = self.output_path
            return d
        plan = self.plan
        if plan is not None:
            position, offset = self.committed
            d["Instances"] = [i.instance.public_id for i in plan]
            d["Names"] = [i.name for i in plan]
            d["Position"] = position
            d["Offset"] = offset
            d["Partial"] = self._partial
        elif self._saved_plan is not None:
            d["Instances"], d["Names"] = self._saved_plan
            d["Position"], d["Offset"] = self.committed
            d["Partial"] = self._partial
        return d

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx: "ServerContext") -> "ArchiveJob":
        """Rebuild a saved archive job (see the module notes on restarts)."""
        job = cls(list(data.get("Resources", [])), transcode=data.get("Transcode"),
                  extended=bool(data.get("Extended", False)), level=int(data.get("Level", DEFAULT_LEVEL)),
                  backend=str(data.get("Backend", DEFAULT_BACKEND)), workers=int(data.get("Workers", 2)),
                  dicomdir_process=bool(data.get("DicomDirProcess", True)))
        job.description = data.get("Description", "REST API")
        job.download_name = data.get("Filename")
        job.utf8 = bool(data.get("Utf8", False))
        job._ctx = ctx
        job.instances_count = int(data.get("InstancesCount", 0))
        job.uncompressed_size = int(data.get("UncompressedSize", 0))
        job.archive_size = int(data.get("ArchiveSize", 0))
        if data.get("Finished"):
            job.finished = True
            out = data.get("Output")
            if out and os.path.exists(out):
                job.output_path = out
                output_store(ctx).add(job, out)
            return job
        if "Instances" in data:
            job._saved_plan = (list(data["Instances"]), list(data.get("Names", [])))
            job.committed = (int(data.get("Position", 0)), int(data.get("Offset", 0)))
            job._partial = data.get("Partial")
        return job


class MediaJob(ArchiveJob):
    """``Media``: files under ``IMAGES/`` plus a DICOMDIR (reference section 4.3)."""

    type_name = "Media"
    media = True
