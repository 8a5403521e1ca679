"""The single path by which a new instance enters pacsbox (REST, C-STORE, jobs).

``parse (scanner + pydicom) → filters → storage area → index → notifications``

Nothing is half-stored: the file is written under a fresh UUID before the index commit;
if the commit fails or finds the instance already stored, the new file is removed again.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import logging
import mmap
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import pydicom

from .dicom import tags as dicom_tags
from .dicom.ids import hierarchy_ids
from .dicom.scan import DicomFormatError, scan, sop_class_from_meta
from .errors import ErrorCode, OrthancError
from .index.index import CONTENT_TYPE_DICOM, Attachment, NewInstance, now_stamp
from .storage import pending

if TYPE_CHECKING:  # pragma: no cover
    from .context import ServerContext

log = logging.getLogger("pacsbox.ingest")

_IDENT_TAGS = (0x00100020, 0x0020000D, 0x0020000E, 0x00080018)

_DEFAULT_ENCODINGS = {
    "Ascii": "ascii", "Utf8": "utf_8", "Latin1": "latin_1", "Latin2": "iso8859_2", "Latin3": "iso8859_3",
    "Latin4": "iso8859_4", "Latin5": "iso8859_9", "Cyrillic": "iso_ir_144", "Windows1251": "cp1251",
    "Arabic": "iso_ir_127", "Greek": "iso_ir_126", "Hebrew": "iso_ir_138", "Thai": "iso_ir_166",
    "Japanese": "shift_jis", "Chinese": "GB18030", "Korean": "euc_kr", "JapaneseKanji": "iso2022_jp",
    "SimplifiedChinese": "GB18030",
}
_ENCODING_NAMES = {name.lower(): name for name in _DEFAULT_ENCODINGS}


#: Bytes read at a time when a file is copied to the storage area (:meth:`Ingest.store_file`).
COPY_CHUNK = 1024 * 1024
#: Elements larger than this stay on disk when a filter reads a file of
#: :meth:`Ingest.store_file` (pydicom's ``defer_size``).
DEFER_SIZE = 1024 * 1024

#: Bytes from which a stored file's MD5 is computed on another thread while the file is
#: written (below it, handing the work over costs more than it saves).
PARALLEL_MD5_BYTES = 256 * 1024

#: The process's hashing threads (a pool starts its threads on the first submit only).
_MD5_POOL = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="pacsbox-md5")


def _md5_hex(data: bytes | memoryview) -> str:
    return hashlib.md5(data).hexdigest()


def spool_threshold(config: Any) -> int:
    """Bytes of a request body (or of an uploaded ZIP's member) kept in memory: the option
    ``UploadSpoolThreshold`` (MB, default 2; 0 spools everything). A larger body is
    spooled to a temporary file by waitress, and a large DICOM file is stored from that
    file (``Ingest.store_file``), never read whole into memory.

    Parameters
    ----------
    config : Config

    Returns
    -------
    int
        Bytes.
    """
    return config.int("UploadSpoolThreshold") * 1024 * 1024


class FileWindow(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes of the file ``f`` from ``start`` (a
    request body in a spool file, a file in a larger one), never reading past its end.

    Parameters
    ----------
    f : binary file
        Seekable; shared (every read seeks first).
    start, length : int
        Offset and size of the window, bytes.
    """

    def __init__(self, f: Any, start: int, length: int) -> None:
        super().__init__()
        self.f, self.start, self.length, self.pos = f, start, length, 0

    def readable(self) -> bool:  # noqa: D102
        return True

    def seekable(self) -> bool:  # noqa: D102
        return True

    def tell(self) -> int:  # noqa: D102
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:  # noqa: D102
        base = {0: 0, 1: self.pos, 2: self.length}[whence]
        self.pos = max(0, min(self.length, base + offset))
        return self.pos

    def read(self, n: int = -1) -> bytes:  # noqa: D102
        left = self.length - self.pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def readinto(self, b) -> int:  # noqa: D102
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def rewound(self) -> "FileWindow":
        """The window, at its start (returned for chaining)."""
        self.pos = 0
        return self

    def chunks(self, size: int):
        """Yield the whole window in pieces of ``size`` bytes.

        Raises
        ------
        OrthancError
            ``BAD_FILE_FORMAT`` when the file is shorter than the window.
        """
        self.pos = 0
        while self.pos < self.length:
            data = self.read(size)
            if not data:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The file was truncated while it was stored")
            yield data


@dataclass
class StoreResult:
    """Outcome of :meth:`Ingest.store`: the ``POST /instances`` answer and more.

    Attributes
    ----------
    status : str
        ``"Success"``, ``"AlreadyStored"`` or ``"FilteredOut"``.
    ids : tuple of 4 str or None
        Orthanc IDs of patient, study, series, instance.
    changes : list of dict
        Change-log entries written.
    failed_filters : tuple of str
        With ``"FilteredOut"``: the plugins whose ``filter_received_instance`` raised
        (empty when the instance was refused by a filter returning ``False``); the C-STORE
        SCP answers a failure status then, as Orthanc answers a filter that throws.
    """

    status: str
    ids: tuple[str, str, str, str] | None = None
    changes: list[dict] = field(default_factory=list)
    failed_filters: tuple[str, ...] = ()

    def answer(self) -> dict[str, Any]:
        """The JSON object answered by ``POST /instances`` (reference section 2.1)."""
        if self.ids is None:
            return {"Status": self.status}
        p, st, se, i = self.ids
        return {"ID": i, "ParentPatient": p, "ParentSeries": se, "ParentStudy": st,
                "Path": f"/instances/{i}", "Status": self.status}


def expected_instances(series_tags: Mapping[str, str]) -> int | None:
    """Expected number of instances of a series (Orthanc ``ComputeExpectedNumberOfInstances``).

    ``ImagesInAcquisition × NumberOfTemporalPositions`` when both are present, else
    ``NumberOfSlices × NumberOfTimeSlices`` when both are present, else
    ``CardiacNumberOfImages``; None when unknown, not an integer or not positive.
    """
    def num(k):
        v = series_tags.get(k)
        if v is None:
            return None
        try:
            return int(str(v).strip())
        except ValueError:
            return False  # present but unreadable: Orthanc gives up
    for a_key, b_key in (("ImagesInAcquisition", "NumberOfTemporalPositions"), ("NumberOfSlices", "NumberOfTimeSlices")):
        a, b = num(a_key), num(b_key)
        if a is not None and b is not None:
            return a * b if a is not False and b is not False and a * b > 0 else None
    a = num("CardiacNumberOfImages")
    return a if a and a > 0 else None


class Ingest:
    """The ingest service (``ctx.ingest``).

    Parameters
    ----------
    ctx : ServerContext
    """

    def __init__(self, ctx: "ServerContext") -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.overwrite = cfg.bool("OverwriteInstances")
        self.store_md5 = cfg.bool("StoreMD5ForAttachments")
        #: ``StorageCompression``, when the storage area reads such files back (the default one)
        self.compress = cfg.bool("StorageCompression") and bool(getattr(ctx.storage, "supports_compression", False))
        try:
            self.set_default_encoding(str(cfg.get("DefaultEncoding", "Latin1")))
        except KeyError:
            self.set_default_encoding("Latin1")

    def set_default_encoding(self, name: str) -> None:
        """Change the encoding of files without (0008,0005) (``PUT /tools/default-encoding``).

        Parameters
        ----------
        name : str
            An Orthanc encoding name, in any case (``Latin1``, ``utf8``, ``Japanese``...);
            :attr:`default_encoding_name` keeps Orthanc's spelling.

        Raises
        ------
        KeyError
            ``name`` is not one of Orthanc's encodings.
        """
        canonical = _ENCODING_NAMES[name.lower()]
        self.default_encoding = _DEFAULT_ENCODINGS[canonical]
        self.default_encoding_name = canonical

    def parse_main(self, data: bytes):
        """Scan ``data`` and decode its main tags.

        Returns
        -------
        (ScanResult, list of str)
            The scan (raw values of :data:`~pacsbox.dicom.tags.INGEST_TAGS`) and the
            character-set codecs.

        Raises
        ------
        OrthancError
            ``BAD_FILE_FORMAT`` (400) when ``data`` is not a complete DICOM file.
        """
        try:
            res = scan(data, dicom_tags.INGEST_TAGS)
        except DicomFormatError as e:
            # Orthanc's wording in the answer; the scanner's reason goes to the log
            log.info("refused a DICOM file: %s", e)
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Cannot parse an invalid DICOM file (size: {len(data)} bytes)"
                               if len(data) else "Received an empty DICOM file") from None
        return res, dicom_tags.raw_encodings(res.raw, self.default_encoding)

    def store_file(self, f: Any, size: int | None = None, origin: Mapping[str, Any] | None = None) -> StoreResult:
        """Store one DICOM file from an open file, without reading it whole into memory.

        The file is mapped (``mmap``) for the scan of its headers, which skips the Pixel
        Data by its length; it is then copied to the storage area in 1 MiB pieces, its MD5
        (and its ``StorageCompression`` zlib stream) computed while copying. A large
        upload spooled to a temporary file (``UploadSpoolThreshold``) goes this way, so its
        ingest costs a few MiB of memory whatever its size.

        Parameters
        ----------
        f : binary file
            Seekable, with a descriptor (``fileno()``); the DICOM file starts at its
            current position. It is left open.
        size : int, optional
            Bytes of the file from that position (default: up to the end of ``f``).
        origin : mapping, optional
            As in :meth:`store`.

        Returns
        -------
        StoreResult

        Raises
        ------
        OrthancError
            As :meth:`store`.
        """
        start = f.tell()
        if size is None:
            size = os.fstat(f.fileno()).st_size - start
        if size <= 0:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Received an empty DICOM file")
        flush = getattr(f, "flush", None)
        if flush is not None:
            flush()  # a buffered writer's last bytes (waitress's spool file) reach the descriptor
        if os.fstat(f.fileno()).st_size < start + size:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Cannot parse an invalid DICOM file (size: {size} bytes)")
        mm = mmap.mmap(f.fileno(), start + size, access=mmap.ACCESS_READ)
        try:
            with memoryview(mm) as whole:
                view = whole[start:start + size]
                try:
                    return self._store(view, origin, FileWindow(f, start, size))
                finally:
                    view.release()
        finally:
            try:
                mm.close()
            except BufferError:  # a view kept by a traceback: closed when collected
                pass

    def store(self, data: bytes, origin: Mapping[str, Any] | None = None) -> StoreResult:
        """Store one DICOM file.

        Parameters
        ----------
        data : bytes
            A DICOM Part-10 file.
        origin : mapping, optional
            ``Origin`` (``"RestApi"`` by default, ``"DicomProtocol"``, ``"Plugins"``),
            ``RemoteIP``, ``RemoteAET``, ``CalledAET``, ``HttpUsername``: written as
            instance metadata and given to ``filter_received_instance``.

        Returns
        -------
        StoreResult

        Raises
        ------
        OrthancError
            400 ``BAD_FILE_FORMAT`` for non-DICOM, truncated or empty input, or empty
            identifiers; 404 ``INEXISTENT_TAG`` when StudyInstanceUID, SeriesInstanceUID
            or SOPInstanceUID is absent (reference section 1). Nothing is stored then.
        """
        return self._store(data, origin, None)

    def _store(self, data: bytes | memoryview, origin: Mapping[str, Any] | None,
               source: "FileWindow | None") -> StoreResult:
        """:meth:`store` (``source`` None: ``data`` is the file) or :meth:`store_file`
        (``data`` maps ``source``, which is read again in pieces to copy it)."""
        t0 = time.perf_counter()
        ctx = self.ctx
        origin = dict(origin or {})
        origin.setdefault("Origin", "RestApi")
        res, enc = self.parse_main(data)
        raw = res.raw
        idents = []
        for i, tag in enumerate(_IDENT_TAGS):
            el = raw.get(tag)
            if el is None:
                if i == 0:
                    idents.append("")
                    continue
                raise OrthancError(ErrorCode.INEXISTENT_TAG)
            v = dicom_tags.raw_text(el, enc) or ""  # trailing padding only is stripped, as in Orthanc
            if not v and i > 0:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT,
                                   "missing StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID")
            idents.append(v)
        if ctx.pm.has_impls("filter_received_instance"):
            full = (pydicom.dcmread(io.BytesIO(data), force=True) if source is None else
                    pydicom.dcmread(source.rewound(), force=True, defer_size=DEFER_SIZE))
            failed: list[str] = []
            if not ctx.pm.call("filter_received_instance", {"dataset": full, "origin": origin}, failed=failed):
                return StoreResult("FilteredOut", failed_filters=tuple(failed))
        ids = hierarchy_ids(*idents)
        index = ctx.index
        if not self.overwrite and index.exists(ids[3]):
            return StoreResult("AlreadyStored", ids)

        levels = dicom_tags.main_tags_from_raw(raw, enc)
        levels[1].update(levels[0])  # a study keeps its own copy of the patient tags, as in Orthanc
        identifiers = ({"PatientID": idents[0]},
                       {"StudyInstanceUID": idents[1], **({"AccessionNumber": levels[1]["AccessionNumber"]}
                                                           if "AccessionNumber" in levels[1] else {})},
                       {"SeriesInstanceUID": idents[2]},
                       {"SOPInstanceUID": idents[3]})
        index_in_series = None
        index_text = None  # Orthanc stores the tag's text as IndexInSeries, even when empty
        for kw in ("InstanceNumber", "ImageIndex"):
            index_text = levels[3].get(kw)
            if index_text is not None:
                index_text = index_text.strip(" \0")  # Orthanc stores the value without padding
                try:
                    index_in_series = int(index_text)
                except ValueError:
                    pass
                break
        metadata = {
            "ReceptionDate": now_stamp(),
            "RemoteAET": str(origin.get("RemoteAET", "")),
            "Origin": str(origin["Origin"]),
            "TransferSyntax": res.transfer_syntax,
            "SopClassUid": self._sop_class(raw, res),
        }
        if origin.get("RemoteIP") is not None:
            metadata["RemoteIP"] = str(origin["RemoteIP"])
        if origin.get("CalledAET") is not None:
            metadata["CalledAET"] = str(origin["CalledAET"])
        if origin.get("HttpUsername") is not None:
            metadata["HttpUsername"] = str(origin["HttpUsername"])
        if index_text is not None:
            metadata["IndexInSeries"] = index_text
        if res.pixel_data_offset is not None and data[128:132] == b"DICM":  # Orthanc: Part-10 files only
            metadata["PixelDataOffset"] = str(res.pixel_data_offset)
        for k, v in (origin.get("Metadata") or {}).items():
            metadata[str(k)] = str(v)

        att_uuid, keys = pending.new_file(ctx, 1)  # journalled: a crash before the commit, removed at start
        size = len(data)
        t1 = time.perf_counter()
        removed_keys: list[str] = []  # files of an overwritten instance, of recycled patients

        def journal_removed(atts):  # inside the commit: a crash before their removal is reclaimed
            removed_keys.extend(pending.begin(ctx, [(a.uuid, a.content_type) for a in atts]))
        try:
            if source is None:
                stored = data
                if self.compress:  # StorageCompression: Orthanc's format (size prefix + zlib)
                    from .storage.filesystem import compress_blob
                    stored = compress_blob(data)
                md5 = None
                if self.store_md5 and size >= PARALLEL_MD5_BYTES:
                    # hashed on another core while this thread writes (and fsyncs) the file:
                    # both release the GIL, and the hash of a 500 KB file costs ~1 ms
                    md5_future = _MD5_POOL.submit(_md5_hex, data)
                    try:
                        ctx.storage.create(att_uuid, stored, CONTENT_TYPE_DICOM)
                    finally:
                        md5 = md5_future.result()
                else:
                    if self.store_md5:
                        md5 = _md5_hex(data)
                    ctx.storage.create(att_uuid, stored, CONTENT_TYPE_DICOM)
                att = Attachment(CONTENT_TYPE_DICOM, att_uuid, len(stored), size, md5)
            else:
                att = self._copy_to_storage(att_uuid, source)
            t2 = time.perf_counter()
            try:
                outcome = index.store_instance(NewInstance(
                    ids=ids, main_tags=tuple(levels), identifiers=identifiers, metadata=metadata, attachment=att,
                    index_in_series=index_in_series, expected_instances=expected_instances(levels[2])),
                    overwrite=self.overwrite, before_commit=journal_removed)
            except BaseException:
                pending.end(ctx, removed_keys)  # rolled back: still referenced
                ctx.storage.remove(att_uuid, CONTENT_TYPE_DICOM)
                raise
            if outcome.status != "Success":
                ctx.storage.remove(att_uuid, CONTENT_TYPE_DICOM)
                return StoreResult(outcome.status, ids)
        finally:
            pending.end(ctx, keys)
        try:
            for a in outcome.removed_attachments:
                ctx.storage.remove(a.uuid, a.content_type)
        except Exception:  # noqa: BLE001 - journalled: removed at the next start
            log.exception("cannot remove a replaced or recycled file; the next start removes it")
            removed_keys = []
        pending.end(ctx, removed_keys)
        m = ctx.metrics
        m.record_duration("orthanc_storage_create_duration_ms", t2 - t1)
        m.increment("orthanc_storage_written_bytes", size)
        m.record_duration("orthanc_store_dicom_duration_ms", time.perf_counter() - t0)
        notifier = ctx.notifier  # the index announced the changes (change_recorded)
        if source is None:
            lazy = {"dataset": lambda: pydicom.dcmread(io.BytesIO(data), force=True)}
        else:  # the mapped file is gone by then: read back from the storage area
            lazy = {"dataset": lambda: ctx.resources.read_dataset(ids[3])}
        notifier.emit("instance_stored", _lazy=lazy, ctx=ctx, instance_id=ids[3])
        return StoreResult("Success", ids, outcome.changes)

    def _copy_to_storage(self, att_uuid: str, source: "FileWindow") -> Attachment:
        """Copy ``source`` to the storage area in pieces (through its ``create_stream``
        when it has one), computing the MD5 and the ``StorageCompression`` stream on the
        way; returns the attachment row to index."""
        md5 = hashlib.md5() if self.store_md5 else None
        written = 0

        def pieces():
            nonlocal written
            comp = None
            if self.compress:  # Orthanc's format: the size as 8 bytes, then the zlib stream
                comp = zlib.compressobj(6)
                head = struct.pack("<Q", source.length)
                written += len(head)
                yield head
            for chunk in source.chunks(COPY_CHUNK):
                if md5 is not None:
                    md5.update(chunk)
                if comp is not None:
                    chunk = comp.compress(chunk)
                written += len(chunk)
                yield chunk
            if comp is not None:
                tail = comp.flush()
                written += len(tail)
                yield tail

        storage = self.ctx.storage
        create_stream = getattr(storage, "create_stream", None)
        if create_stream is not None:
            create_stream(att_uuid, pieces(), 1)
        else:  # a storage area of a plugin that only takes bytes
            storage.create(att_uuid, b"".join(pieces()), 1)
        return Attachment(CONTENT_TYPE_DICOM, att_uuid, written, source.length,
                          md5.hexdigest() if md5 is not None else None)

    @staticmethod
    def _sop_class(raw, res) -> str:
        el = raw.get(0x00080016)
        if el is not None:
            v = dicom_tags.raw_text(el, ["ascii"])
            if v:
                return v
        return sop_class_from_meta(res)
