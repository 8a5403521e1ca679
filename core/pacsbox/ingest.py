"""The single path by which a new instance enters pacsbox (REST, C-STORE, jobs).

``parse (scanner + pydicom) → filters → storage area → index → notifications``

Nothing is half-stored: the file is written under a fresh UUID before the index commit;
if the commit fails or finds the instance already stored, the new file is removed again.
"""
from __future__ import annotations

import hashlib
import io
import logging
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import pydicom

from .dicom import tags as T
from .dicom.ids import hierarchy_ids
from .dicom.scan import DicomFormatError, scan, sop_class_from_meta
from .errors import ErrorCode, OrthancError
from .index.index import Attachment, NewInstance, now_stamp
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
            res = scan(data, T.INGEST_TAGS)
        except DicomFormatError as e:
            # Orthanc's wording in the answer; the scanner's reason goes to the log
            log.info("refused a DICOM file: %s", e)
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Cannot parse an invalid DICOM file (size: {len(data)} bytes)"
                               if len(data) else "Received an empty DICOM file") from None
        return res, T.raw_encodings(res.raw, self.default_encoding)

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
            v = T.raw_text(el, enc) or ""  # trailing padding only is stripped, as in Orthanc
            if not v and i > 0:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT,
                                   "missing StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID")
            idents.append(v)
        if ctx.pm.has_impls("filter_received_instance"):
            full = pydicom.dcmread(io.BytesIO(data), force=True)
            failed: list[str] = []
            if not ctx.pm.call("filter_received_instance", {"dataset": full, "origin": origin}, failed=failed):
                return StoreResult("FilteredOut", failed_filters=tuple(failed))
        ids = hierarchy_ids(*idents)
        index = ctx.index
        if not self.overwrite and index.exists(ids[3]):
            return StoreResult("AlreadyStored", ids)

        levels = T.main_tags_from_raw(raw, enc)
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

        att_uuid = str(uuidlib.uuid4())
        md5 = hashlib.md5(data).hexdigest() if self.store_md5 else None
        stored = data
        if self.compress:  # StorageCompression: Orthanc's format (size prefix + zlib)
            from .storage.filesystem import compress_blob
            stored = compress_blob(data)
        att = Attachment(1, att_uuid, len(stored), len(data), md5)
        t1 = time.perf_counter()
        keys = pending.begin(ctx, [(att_uuid, 1)])  # a crash before the commit: removed at start
        try:
            ctx.storage.create(att_uuid, stored, 1)
            t2 = time.perf_counter()
            try:
                outcome = index.store_instance(NewInstance(
                    ids=ids, main_tags=tuple(levels), identifiers=identifiers, metadata=metadata, attachment=att,
                    index_in_series=index_in_series, expected_instances=expected_instances(levels[2])),
                    overwrite=self.overwrite)
            except BaseException:
                ctx.storage.remove(att_uuid, 1)
                raise
            if outcome.status != "Success":
                ctx.storage.remove(att_uuid, 1)
                return StoreResult(outcome.status, ids)
        finally:
            pending.end(ctx, keys)
        for a in outcome.removed_attachments:
            ctx.storage.remove(a.uuid, a.content_type)
        m = ctx.metrics
        m.record_duration("orthanc_storage_create_duration_ms", t2 - t1)
        m.increment("orthanc_storage_written_bytes", len(data))
        m.record_duration("orthanc_store_dicom_duration_ms", time.perf_counter() - t0)
        notifier = ctx.notifier  # the index announced the changes (change_recorded)
        notifier.emit("instance_stored", _lazy={"dataset": lambda: pydicom.dcmread(io.BytesIO(data), force=True)},
                      ctx=ctx, instance_id=ids[3])
        return StoreResult("Success", ids, outcome.changes)

    @staticmethod
    def _sop_class(raw, res) -> str:
        el = raw.get(0x00080016)
        if el is not None:
            v = T.raw_text(el, ["ascii"])
            if v:
                return v
        return sop_class_from_meta(res)
