"""Job types of the dicom_net plugin (not built yet)."""
from __future__ import annotations


def job_types():
    """The job types of this module (none yet)."""
    return []
