"""Orthanc identifiers: SHA-1 of the joined DICOM identifiers (reference section 1).

>>> orthanc_id("P1", "1.2.3.4")
'c905ee8f-9232753a-6087caf4-8628f023-e7d5bdc8'
"""
from __future__ import annotations

import hashlib
import re
import uuid

_SHA1_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")


def orthanc_id(*parts: str) -> str:
    """The Orthanc ID of a resource.

    Parameters
    ----------
    *parts : str
        ``PatientID`` [, ``StudyInstanceUID`` [, ``SeriesInstanceUID`` [, ``SOPInstanceUID``]]],
        with DICOM padding already stripped (a missing PatientID is ``""``).

    Returns
    -------
    str
        40 lower-case hex digits in five dash-separated groups of 8 (44 characters).
    """
    h = hashlib.sha1("|".join(parts).encode("utf-8")).hexdigest()
    return f"{h[0:8]}-{h[8:16]}-{h[16:24]}-{h[24:32]}-{h[32:40]}"


def hierarchy_ids(patient_id: str, study_uid: str, series_uid: str, sop_uid: str) -> tuple[str, str, str, str]:
    """IDs of the patient, study, series and instance of one file (same inputs as :func:`orthanc_id`)."""
    return (orthanc_id(patient_id),
            orthanc_id(patient_id, study_uid),
            orthanc_id(patient_id, study_uid, series_uid),
            orthanc_id(patient_id, study_uid, series_uid, sop_uid))


def is_orthanc_id(s: str) -> bool:
    """Whether ``s`` is SHA-1-shaped (Orthanc ``Toolbox::IsSHA1``; surrounding blanks allowed)."""
    return isinstance(s, str) and bool(_SHA1_RE.match(s.strip()))


def new_uuid() -> str:
    """A random UUID string (36 characters), used for attachments, jobs and patient IDs."""
    return str(uuid.uuid4())
