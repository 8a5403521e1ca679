"""Resource helpers shared by the REST API, the jobs and the plugins (``ctx.resources``).

- resolve an Orthanc ID (at a level, or at any level) with Orthanc's errors;
- expand a resource into the JSON object of ``GET /{level}/{id}`` (reference section 2.3);
- list the instances below any set of resources, in index order;
- read an instance's file or parsed dataset.
"""
from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Sequence

import pydicom

from .dicom import tags as dicom_tags
from .dicom.ids import is_orthanc_id
from .errors import ErrorCode, OrthancError, not_found
from .levels import Level
from .index.index import CONTENT_TYPE_DICOM, PLURAL, Level, Resource
from .ingest import expected_instances
from .storage import pending

if TYPE_CHECKING:  # pragma: no cover
    from .context import ServerContext

log = logging.getLogger("pacsbox.resources")

_PATIENT_TAGS = frozenset(dicom_tags.PATIENT_MAIN_TAGS)


def series_status(expected: int | None, indexes: Sequence[str | None]) -> str:
    """Series ``Status`` (Orthanc 1.10.1 ``GetSeriesStatus``).

    Parameters
    ----------
    expected : int or None
        ``ExpectedNumberOfInstances``.
    indexes : sequence of str or None
        ``IndexInSeries`` metadata of every instance (None when absent).

    Returns
    -------
    str
        ``"Unknown"`` without an expected count; ``"Inconsistent"`` when an index is out
        of 1..expected or repeated; ``"Complete"`` when every index 1..expected is there;
        ``"Missing"`` otherwise. Instances without an integer index are not counted
        (verified: one instance without InstanceNumber in a series expecting 2 →
        ``"Missing"``).
    """
    if expected is None:
        return "Unknown"
    seen: set[int] = set()
    for v in indexes:
        try:
            i = int(v) if v is not None else None
        except ValueError:
            i = None
        if i is None:
            continue
        if i < 1 or i > expected or i in seen:
            return "Inconsistent"
        seen.add(i)
    return "Complete" if len(seen) == expected else "Missing"


@dataclass(frozen=True)
class Deletion:
    """What :meth:`ResourceService.delete` removed.

    Attributes
    ----------
    remaining_ancestor : Resource or None
        The closest ancestor still there (Orthanc's ``RemainingAncestor``); None when the
        patient went too.
    removed_files : int
        Attachments whose files were removed from the storage area.
    """

    remaining_ancestor: Resource | None
    removed_files: int


class ResourceService:
    """Resource helpers bound to one app (``ctx.resources``): a *resource* is a patient,
    study, series or instance (:class:`~pacsbox.index.models.Resource`, the index row)."""

    def __init__(self, ctx: "ServerContext") -> None:
        self.ctx = ctx

    # ---- resolution -------------------------------------------------------------------
    def get(self, level: int | str, public_id: str, *, empty: bool = False) -> Resource:
        """The resource ``public_id`` at ``level`` (a :class:`~pacsbox.Level`, or a name as
        :meth:`Level.parse <pacsbox.Level.parse>` reads it: ``"studies"``, ``"Study"``).

        Parameters
        ----------
        level : Level, int or str
        public_id : str
        empty : bool
            Answer an unknown ID with an empty 404, as Orthanc's ``GET``/``DELETE
            /{level}/{id}`` do; otherwise (every sub-route, e.g. ``/{level}/{id}/statistics``)
            with the JSON error "Unknown resource".

        Raises
        ------
        OrthancError
            404 ``UNKNOWN_RESOURCE`` for an unknown ID; 400 ``PARAMETER_OUT_OF_RANGE`` for an
            unknown level name.
        """
        lvl = level if isinstance(level, int) else Level.parse(level.strip())
        res = self.ctx.index.lookup(public_id, lvl)
        if res is None:
            raise not_found() if empty else OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        return res

    def find(self, public_id: str, level: int | str | None = None) -> Resource | None:
        """The resource ``public_id`` (optionally at ``level``), or None."""
        lvl = None if level is None else (level if isinstance(level, int) else Level.parse(level.strip()))
        return self.ctx.index.lookup(public_id, lvl)

    def resolve_many(self, ids: Iterable[Any]) -> list[Resource]:
        """Resolve IDs of any level, as the ``Resources`` field of job routes.

        Raises
        ------
        OrthancError
            400 ``BAD_FILE_FORMAT`` "Expected a list of strings (Orthanc identifiers)" for a
            non-string item; 400 "This string is not a valid Orthanc identifier: ..." for a
            malformed one; 404 ``UNKNOWN_RESOURCE`` for an unknown one.
        """
        out = []
        for item in ids:
            if not isinstance(item, str):
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Expected a list of strings (Orthanc identifiers)")
            s = item.strip()
            if not is_orthanc_id(s):
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"This string is not a valid Orthanc identifier: {item}")
            res = self.ctx.index.lookup(s)
            if res is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown resource: {s}")
            out.append(res)
        return out

    def instances_of(self, resources: Iterable[Resource]) -> list[Resource]:
        """Every instance below the given resources, in index order, without duplicates."""
        seen: set[int] = set()
        out: list[Resource] = []
        for res in resources:
            for inst in self.ctx.index.descendant_instances(res.internal_id, res.level):
                if inst.internal_id not in seen:
                    seen.add(inst.internal_id)
                    out.append(inst)
        return out

    # ---- deletion -----------------------------------------------------------------------
    def delete(self, res: Resource) -> Deletion | None:
        """Delete a resource, its descendants, its ancestors left empty and their files.

        The one deletion path: ``DELETE /{level}/{id}``, ``/tools/bulk-delete``, the jobs
        (``KeepSource: false``, the clean-up of a failed job) and the plugins use it. The
        index rows go in one transaction; the attachments' files are journalled
        (:mod:`pacsbox.storage.pending`) before it commits and removed after. A file that
        cannot be removed is logged and stays journalled, so that the next start removes
        it: the resource is deleted either way, as in Orthanc, whose index is the truth.

        Parameters
        ----------
        res : Resource
            The resource (only its ``public_id`` and ``level`` are used: a stale object is
            fine).

        Returns
        -------
        Deletion or None
            None when the resource no longer exists (deleted meanwhile).

        Notes
        -----
        Records ``orthanc_storage_remove_duration_ms`` (mean time per removed file), and
        notifies ``resources_deleted`` of every resource removed once the rows are gone.
        """
        ctx = self.ctx
        keys: list[str] = []
        gone: list[tuple[int, str]] | None = [] if ctx.notifier.has_listeners("resources_deleted") else None
        deleted = ctx.index.delete_resource(
            res, before_commit=lambda atts: keys.extend(pending.begin(ctx, [(a.uuid, a.content_type) for a in atts])),
            deleted=gone)
        if deleted is None:
            return None
        remaining, atts = deleted
        if gone:
            ctx.notifier.emit("resources_deleted", ctx=ctx, resources=[
                {"ResourceType": Level(level).type_name, "ID": public_id} for level, public_id in gone])
        t0 = time.perf_counter()
        removed = 0
        try:
            for a in atts:
                try:
                    ctx.storage.remove(a.uuid, a.content_type)
                    removed += 1
                except Exception:  # noqa: BLE001 - journalled: removed at the next start
                    log.exception("cannot remove the file %s of deleted resource %s; the next start removes it",
                                  a.uuid, res.public_id)
                    keys = []
        finally:
            pending.end(ctx, keys)
        if removed:
            ctx.metrics.record_duration("orthanc_storage_remove_duration_ms", (time.perf_counter() - t0) / removed)
        return Deletion(remaining, removed)

    # ---- files --------------------------------------------------------------------------
    def read_file(self, instance: Resource | str) -> bytes:
        """The stored DICOM bytes of an instance.

        Raises
        ------
        OrthancError
            404 ``UNKNOWN_RESOURCE`` when the instance is unknown (or was deleted while
            its file was being read); 404 ``INEXISTENT_FILE`` when its file is missing.
        """
        att = self._attachment(instance)
        t0 = time.perf_counter()
        try:
            data = self.ctx.storage.read(att.uuid, CONTENT_TYPE_DICOM)
        except FileNotFoundError:
            raise self._missing_file(instance) from None
        m = self.ctx.metrics
        m.record_duration("orthanc_storage_read_duration_ms", time.perf_counter() - t0)
        m.increment("orthanc_storage_read_bytes", len(data))
        return data

    def open_file(self, instance: Resource | str) -> tuple[BinaryIO, int]:
        """Open an instance's file for streaming; returns ``(file, size in bytes)``."""
        att = self._attachment(instance)
        try:
            f = self.ctx.storage.open(att.uuid, CONTENT_TYPE_DICOM)
        except FileNotFoundError:
            raise self._missing_file(instance) from None
        return f, att.uncompressed_size

    def _missing_file(self, instance: Resource | str) -> OrthancError:
        """The error for an instance whose file cannot be read: 404 ``UNKNOWN_RESOURCE``
        when the instance was deleted meanwhile (between the lookup of its attachment and
        the read, as the reference answers a job racing a delete), else 404
        ``INEXISTENT_FILE`` (the file is missing under an indexed instance)."""
        index = self.ctx.index
        gone = (index.attachment_by_public_id(instance, CONTENT_TYPE_DICOM) if isinstance(instance, str)
                else index.attachment(instance.internal_id, CONTENT_TYPE_DICOM)) is None
        if gone:
            return OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        return OrthancError(ErrorCode.INEXISTENT_FILE, "Missing file of instance")

    def _attachment(self, instance: Resource | str):
        index = self.ctx.index
        if isinstance(instance, str):
            att = index.attachment_by_public_id(instance, CONTENT_TYPE_DICOM)
        else:
            att = index.attachment(instance.internal_id, CONTENT_TYPE_DICOM)
        if att is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        return att

    def read_dataset(self, instance: Resource | str, stop_before_pixels: bool = False) -> pydicom.Dataset:
        """The parsed dataset of an instance (pydicom, file meta included)."""
        data = self.read_file(instance)
        return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)

    # ---- expansion ------------------------------------------------------------------------
    def expand(self, res: Resource, *, tag_format: str = "simplify") -> dict[str, Any]:
        """The JSON object of ``GET /{level}/{id}`` for ``res``.

        Parameters
        ----------
        res : Resource
        tag_format : {"simplify", "short", "full"}
            Key format of ``MainDicomTags`` (``/tools/find`` ``Short``/``Full``).
        """
        index = self.ctx.index
        d: dict[str, Any] = {"ID": res.public_id, "MainDicomTags": _fmt_tags(res.main_tags, tag_format),
                             "Type": res.level_name}
        meta = index.metadata(res.internal_id) if res.level < Level.INSTANCE else None
        if res.level < Level.INSTANCE:
            d["IsStable"] = res.is_stable
            d["LastUpdate"] = res.last_update
        if res.level == Level.PATIENT:
            d["Studies"] = index.children_public_ids(res.internal_id)
        elif res.level == Level.STUDY:
            d["ParentPatient"] = index.public_id_of(res.parent_internal)
            # Orthanc keeps, with each study, the patient tags of the instance that created it
            own = {k: v for k, v in res.main_tags.items() if k in _PATIENT_TAGS}
            d["MainDicomTags"] = _fmt_tags({k: v for k, v in res.main_tags.items() if k not in _PATIENT_TAGS},
                                           tag_format)
            d["PatientMainDicomTags"] = _fmt_tags(own, tag_format)
            d["Series"] = index.children_public_ids(res.internal_id)
        elif res.level == Level.SERIES:
            d["ParentStudy"] = index.public_id_of(res.parent_internal)
            rows = index.series_instances_with_index(res.internal_id)
            d["Instances"] = [r[0] for r in rows]
            expected = expected_instances(res.main_tags)
            d["ExpectedNumberOfInstances"] = expected
            d["Status"] = series_status(expected, [r[1] for r in rows])
        else:
            d["ParentSeries"] = index.public_id_of(res.parent_internal)
            att = index.attachment(res.internal_id, CONTENT_TYPE_DICOM)
            meta = index.metadata(res.internal_id)
            d["FileSize"] = att.uncompressed_size if att else 0
            d["FileUuid"] = att.uuid if att else None
            d["IndexInSeries"] = _int_or_none(meta.get("IndexInSeries"))
        if meta:
            for key in ("AnonymizedFrom", "ModifiedFrom"):
                if key in meta:
                    d[key] = meta[key]
        return d

    def path(self, res: Resource) -> str:
        """``/{plural}/{id}`` of a resource."""
        return f"/{PLURAL[res.level]}/{res.public_id}"


def _int_or_none(text: str | None) -> int | None:
    """An integer metadata value, None when absent or not an integer (as Orthanc)."""
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _fmt_tags(tags: dict[str, str], fmt: str) -> dict[str, Any]:
    if fmt == "simplify":
        return dict(tags)
    out: dict[str, Any] = {}
    for kw, v in tags.items():
        try:
            key = dicom_tags.tag_to_key(dicom_tags.parse_tag(kw))
        except KeyError:
            key = kw
        out[key] = v if fmt == "short" else {"Name": kw, "Type": "String", "Value": v}
    return out
