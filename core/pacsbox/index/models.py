"""The index's rows and values: :class:`Resource`, :class:`Attachment`, what ingest hands to
the index (:class:`NewInstance`) and gets back (:class:`StoreOutcome`), the storage limits
(:class:`Quota`), the identifier rows and the content type of DICOM files; the levels
(:class:`~pacsbox.levels.Level`) are re-exported from :mod:`pacsbox.levels`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..dicom.matching import normalize_identifier
from ..errors import ErrorCode, OrthancError
from ..levels import LEVEL_NAMES, PLURAL, Level  # noqa: F401  (re-exported: the index's levels)


class ResourceGoneError(OrthancError):
    """A write to a resource that was deleted meanwhile (by another request or job).

    An :class:`~pacsbox.OrthancError` with code ``UnknownResource`` (HTTP 404), so that a
    REST route answers as for an unknown resource and a job fails with that code, as
    Orthanc does when a job's resource disappears under it.

    Parameters
    ----------
    public_id : str
        The Orthanc ID of the resource (or its row ID when unknown).
    """

    def __init__(self, public_id: str) -> None:
        super().__init__(ErrorCode.UNKNOWN_RESOURCE, f"Unknown resource: {public_id}")
        self.public_id = public_id


#: Content type of an instance's DICOM file among its attachments (Orthanc's
#: ``FileContentType_Dicom``); user attachments are 1024-65535.
CONTENT_TYPE_DICOM = 1


def now_stamp(t: float | None = None) -> str:
    """UTC time as ``YYYYMMDDTHHMMSS`` (Orthanc's ``LastUpdate``/``Date`` format)."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t if t is not None else time.time()))


@dataclass
class Resource:
    """One row of the resources table.

    Attributes
    ----------
    internal_id : int
    level : int
        0 patient, 1 study, 2 series, 3 instance.
    public_id : str
        Orthanc ID.
    parent_internal : int or None
    main_tags : dict of str to str
    last_update : str
    is_stable : bool
    """

    internal_id: int
    level: int
    public_id: str
    parent_internal: int | None
    main_tags: dict[str, str]
    last_update: str
    is_stable: bool

    @property
    def level_name(self) -> str:
        """str: ``"Patient"``, ``"Study"``, ``"Series"`` or ``"Instance"``."""
        return LEVEL_NAMES[self.level]


@dataclass
class Attachment:
    """An attachment row: ``uuid`` in the storage area, sizes in bytes, MD5 hex digest."""

    content_type: int
    uuid: str
    compressed_size: int
    uncompressed_size: int
    md5: str | None = None


@dataclass
class NewInstance:
    """Everything the index needs to record a new instance.

    Attributes
    ----------
    ids : tuple of 4 str
        Orthanc IDs of patient, study, series, instance.
    main_tags : tuple of 4 dict
        Main tags of each level.
    identifiers : tuple of 4 dict
        Indexed identifier tags of each level (keyword → value), used by lookup/find.
    metadata : dict of str to str
        Instance metadata (``ReceptionDate``, ``Origin``, ``TransferSyntax``...).
    attachment : Attachment
        The DICOM file.
    index_in_series : int or None
    expected_instances : int or None
        Expected count of the series (for ``CompletedSeries``).
    """

    ids: tuple[str, str, str, str]
    main_tags: tuple[dict, dict, dict, dict]
    identifiers: tuple[dict, dict, dict, dict]
    metadata: dict[str, str]
    attachment: Attachment
    index_in_series: int | None = None
    expected_instances: int | None = None


@dataclass
class StoreOutcome:
    """Result of :meth:`Index.store_instance`.

    Attributes
    ----------
    status : str
        ``"Success"`` or ``"AlreadyStored"``.
    changes : list of dict
        Change-log entries written (``/changes`` shape).
    removed_attachments : list of Attachment
        Attachments of an overwritten instance, to delete from storage after commit.
    existing_attachment : Attachment or None
        The stored file when ``AlreadyStored``.
    recycled : list of str
        IDs of the patients deleted to make room (:class:`Quota`).
    """

    status: str
    changes: list[dict] = field(default_factory=list)
    removed_attachments: list[Attachment] = field(default_factory=list)
    existing_attachment: Attachment | None = None
    recycled: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Quota:
    """Storage limits (Orthanc's ``MaximumStorageSize``, ``MaximumPatientCount`` and, from
    1.11, ``MaximumStorageMode``).

    Attributes
    ----------
    max_bytes : int
        Total size of the attachments, bytes (0: no limit).
    max_patients : int
        Number of patients (0: no limit).
    reject : bool
        ``MaximumStorageMode: "Reject"``: refuse an instance that would exceed a limit,
        instead of recycling (deleting) the oldest unprotected patients.
    """

    max_bytes: int = 0
    max_patients: int = 0
    reject: bool = False

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self.max_bytes or self.max_patients)

    @classmethod
    def from_config(cls, config: Any) -> "Quota":
        """The quota of an Orthanc-style configuration.

        Raises
        ------
        ValueError
            ``MaximumStorageMode`` is neither ``Recycle`` nor ``Reject``.
        """
        mode = str(config.get("MaximumStorageMode", "Recycle") or "Recycle")
        if mode not in ("Recycle", "Reject"):
            raise ValueError(f"MaximumStorageMode must be \"Recycle\" or \"Reject\", not {mode!r}")
        return cls(max_bytes=int(config.get("MaximumStorageSize", 0) or 0) * 1024 * 1024,
                   max_patients=int(config.get("MaximumPatientCount", 0) or 0), reject=mode == "Reject")


#: Identifiers ``/tools/lookup`` searches; each also gets a normalized row in ``identifiers``.
LOOKUP_TAGS = frozenset({"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})
#: ``tag`` prefix of the normalized rows (``~PatientID``).
NORMALIZED_PREFIX = "~"


def identifier_rows(resource_id: int, identifiers: dict[str, str]) -> list[tuple[int, str, str]]:
    """The ``identifiers`` rows of a new resource: each identifier as stored, plus a
    normalized row for those ``/tools/lookup`` searches (:data:`LOOKUP_TAGS`).

    Parameters
    ----------
    resource_id : int
        The resource's row ID.
    identifiers : dict of str to str
        Keyword to value (``{"PatientID": "id11111 "}``).

    Returns
    -------
    list of (int, str, str)
        ``(resource_id, tag, value)`` rows; normalized rows have the tag
        ``"~" + keyword`` and the value of :func:`~pacsbox.dicom.matching.normalize_identifier`.
    """
    rows = [(resource_id, tag, value) for tag, value in identifiers.items()]
    rows += [(resource_id, NORMALIZED_PREFIX + tag, normalize_identifier(value))
             for tag, value in identifiers.items() if tag in LOOKUP_TAGS]
    return rows
