"""What a retrieve call asks for: the retrieve method and the ``Query`` item of each
identifier.

The routes that start ``DicomMoveScu``/``DicomGetScu`` jobs
(:mod:`.retrieve_routes`: ``/queries/{id}/retrieve``, ``/modalities/{id}/move``) choose
the method with :func:`resolve_method` (the call, then the modality, then the
``RetrieveMethod`` option, Orthanc 1.12) and describe each identifier in the job content
with :func:`content_item` (Orthanc ``DicomMoveScuJob::AddFindAnswer``); the jobs
themselves are in :mod:`.move_job`.
"""
from __future__ import annotations

from typing import Any, Mapping

from pacsbox import ErrorCode, OrthancError, tag_to_key

from .modalities import Modality
from .query_identifiers import (ACCESSION_NUMBER, PATIENT_ID, QUERY_RETRIEVE_LEVEL, SERIES_INSTANCE_UID,
                                SOP_INSTANCE_UID, STUDY_INSTANCE_UID)
from .state import plugin_state

#: Tags of a retrieve's ``Query`` content item (Orthanc ``DicomMoveScuJob::AddFindAnswer``).
CONTENT_TAGS = (QUERY_RETRIEVE_LEVEL, PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID,
                ACCESSION_NUMBER)


def content_item(fields: Mapping[int, Any]) -> dict[str, Any]:
    """A ``Query`` item of the job content (Orthanc ``DicomMoveScuJob::AddFindAnswer``).

    Parameters
    ----------
    fields : mapping of int to any
        An answer (or a ``/move`` resource) by tag.

    Returns
    -------
    dict of str to any
        Its (0008,0052), PatientID, Study/Series/SOP Instance UIDs and AccessionNumber,
        in short ``gggg,eeee`` form.
    """
    return {tag_to_key(t): fields[t] for t in sorted(fields) if t in CONTENT_TAGS}


def resolve_method(ctx: Any, modality: Modality, requested: Any = None) -> str:
    """The retrieve method of a call: the call's ``RetrieveMethod``, else the modality's,
    else the ``RetrieveMethod`` option (Orthanc 1.12).

    Raises
    ------
    OrthancError
        400 ``PARAMETER_OUT_OF_RANGE`` for a value other than ``C-MOVE``, ``C-GET`` or
        ``SystemDefault``.
    """
    for value in (requested, modality.retrieve_method):
        if value is None or value == "SystemDefault":
            continue
        if value not in ("C-MOVE", "C-GET"):
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown retrieve method: {value}")
        return value
    return plugin_state(ctx).options["RetrieveMethod"]
