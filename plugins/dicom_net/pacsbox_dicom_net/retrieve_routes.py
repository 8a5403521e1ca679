"""REST routes of retrieve as an SCU (reference section 9.6): ``POST /queries/{id}/retrieve``,
``/queries/{id}/answers/{index}/retrieve`` and ``POST /modalities/{id}/move``, each a
``DicomMoveScu`` (C-MOVE) or ``DicomGetScu`` (C-GET) job (as Orthanc 1.11+; the jobs are
in :mod:`.move_job`). The route table is :func:`.query_routes.routes`.

Compared with Orthanc 1.10.1 retrieving from the same remote
(``tests/plugins/dicom_net/test_qr_*_reference.py``, ``test_qr_orthanc_remote.py``; see
also :mod:`.query_routes`). The differences, all deliberate:

- A retrieve body that is valid JSON but not an object (``"AET"``, ``[1]``): Orthanc answers
  500 "Internal error", pacsbox 400 "Bad file format".
- ``POST /modalities/{id}/move``: 1.10.1 moves synchronously and answers ``{}``; pacsbox
  runs the ``DicomMoveScu`` job of Orthanc 1.11+ (``Synchronous``/``Asynchronous``/
  ``Priority``/``Permissive``), whose synchronous answer is the job's content.
- The retrieve job's content adds ``RetrieveMethod``, ``TargetAet`` (C-MOVE),
  ``InstancesCount``, ``FailedInstancesCount``, ``WarningInstancesCount`` (sub-operations)
  and ``Failures`` to Orthanc's ``Description``/``LocalAet``/``RemoteAet``/``Query``.
- Failed sub-operations (a final 0xB000, or a failed count) fail the job unless
  ``Permissive``; Orthanc 1.10.1 ends such a retrieve in ``Success``.
- ``ErrorDetails`` of a refused retrieve add the status's meaning: ``C-MOVE SCU to AET
  "X" has failed with DIMSE status 0xA801 (Failure: Move destination unknown)``.
- ``Progress`` follows the Pending sub-operation counts (Orthanc: identifiers done).
- Retrieve by C-GET (``RetrieveMethod`` of Orthanc 1.12: body, modality, option), job type
  ``DicomGetScu``.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from pacsbox import ErrorCode, OrthancError, read_body, send_json

from .find_scu import get_modality
from .move_job import DicomGetScuJob, DicomMoveScuJob
from .query_identifiers import (PATIENT_ID, QR_LEVEL, QUERY_RETRIEVE_LEVEL, SERIES_INSTANCE_UID, SOP_INSTANCE_UID,
                                STUDY_INSTANCE_UID, answer_short, parse_level, retrieve_keys, short_keys,
                                tags_from_json)
from .query_requests import answer_index, check_calling, stored_query, timeout_field
from .retrieve_request import content_item, resolve_method
from .state import plugin_state


def _retrieve_timeout(body: Mapping[str, Any]) -> float | None:
    """``Timeout`` of a retrieve body (Orthanc ``GetJsonIntegerField``): a negative value is
    ignored.

    Raises
    ------
    OrthancError
        400 ``BAD_PARAMETER_TYPE`` (no details) when not an integer.
    """
    if "Timeout" not in body:
        return None
    v = body["Timeout"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
    return float(v) if v > 0 else None


def _retrieve_body(ctx: Any, req: Any) -> tuple[dict[str, Any], str]:
    """The body of a retrieve: a JSON object, or a plain-text target AET (Orthanc).

    Returns
    -------
    (dict, str)
        The JSON object (``{}`` for a text body) and the target AET.
    """
    default = plugin_state(ctx).options["DicomAet"]
    data = read_body(req)
    try:
        body = json.loads(data) if data.strip() else None
        parsed = True
    except (ValueError, UnicodeDecodeError, RecursionError):
        parsed = False
    if not parsed:
        text = data.decode("utf-8", "replace")
        return {}, text or default
    if body is None:
        return {}, default
    if not isinstance(body, dict):
        # Orthanc 1.10.1 answers 500 "Internal error" here.
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The body must be a JSON object or a target AET")
    target = body.get("TargetAet", default)
    if not isinstance(target, str):
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
    return body, target


def make_retrieve_job(ctx: Any, modality_name: str, items: list[dict], body: Mapping[str, Any], *,
                      local_aet: str | None, target_aet: str, timeout: float | None) -> Any:
    """A ``DicomMoveScu`` or ``DicomGetScu`` job for ``items`` (see
    :class:`pacsbox_dicom_net.move_job.RetrieveJob`), by the call's ``RetrieveMethod``,
    else the modality's, else the option.

    Raises
    ------
    OrthancError
        404 for an unknown modality; 400 for a bad ``RetrieveMethod``.
    """
    modality = get_modality(ctx, modality_name)
    method = resolve_method(ctx, modality, body.get("RetrieveMethod"))
    cls = DicomGetScuJob if method == "C-GET" else DicomMoveScuJob
    local = modality.local_aet or local_aet or plugin_state(ctx).options["DicomAet"]
    return cls(modality_name, modality, items, local_aet=local, target_aet=target_aet, timeout=timeout)


def _item(level: str, keys: Mapping[int, str], source: Mapping[int, Any]) -> dict[str, Any]:
    return {"Level": level, "Keys": short_keys(keys), "Query": content_item(source)}


class QueryRetrieveRoute:
    """``POST /queries/{id}/retrieve`` and ``/queries/{id}/answers/{index}/retrieve``: a
    retrieve job of all the answers, or one (synchronous by default)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def _run(self, req: Any, resp: Any, query_id: str, index: str | None) -> None:
        body, target = _retrieve_body(self.ctx, req)
        timeout = _retrieve_timeout(body)
        res = stored_query(self.ctx, query_id)
        answers = res.answers if index is None else [res.answer(answer_index(index))]
        items = []
        for answer in answers:
            level, keys = retrieve_keys(answer)
            items.append(_item(level, keys, answer_short(answer)))
        job = make_retrieve_job(self.ctx, res.modality_name, items, body, local_aet=res.local_aet,
                                target_aet=target, timeout=timeout if timeout is not None else res.timeout)
        send_json(resp, self.ctx.jobs.run_request(job, body, synchronous=True))

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """Retrieve every answer."""
        self._run(req, resp, id, None)

    def on_post_one(self, req: Any, resp: Any, id: str, index: str) -> None:  # noqa: A002
        """Retrieve one answer."""
        self._run(req, resp, id, index)


class ModalityMoveRoute:
    """``POST /modalities/{id}/move``: ``Level``, ``Resources`` (identifiers), ``TargetAet``,
    ``LocalAet``, ``Timeout``, ``RetrieveMethod``; a job with the 1.11+ ``Synchronous``/
    ``Asynchronous``/``Priority``/``Permissive`` fields (Orthanc 1.10.1 moved synchronously
    and answered ``{}``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """See the class docstring."""
        data = read_body(req)
        try:
            body = json.loads(data) if data.strip() else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = None
        if (not isinstance(body, dict) or not isinstance(body.get("Resources"), list)
                or not isinstance(body.get("Level"), str)):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT,
                               "Must provide a JSON body containing fields Resources and Level")
        level = parse_level(body["Level"])
        local = body.get("LocalAet")
        if local is not None and not isinstance(local, str):
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
        target = body.get("TargetAet", plugin_state(self.ctx).options["DicomAet"])
        if not isinstance(target, str):
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
        check_calling(get_modality(self.ctx, id), local)
        keep = {"Patient": (PATIENT_ID,), "Study": (STUDY_INSTANCE_UID,),
                "Series": (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID),
                "Instance": (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)}[level]
        items = []
        for resource in body["Resources"]:
            fields = tags_from_json(resource)
            keys = {t: fields[t] for t in keep if t in fields}
            source = dict(fields)
            source[QUERY_RETRIEVE_LEVEL] = QR_LEVEL[level]
            items.append(_item(level, keys, source))
        job = make_retrieve_job(self.ctx, id, items, body, local_aet=local, target_aet=target,
                                timeout=timeout_field(body))
        send_json(resp, self.ctx.jobs.run_request(job, body, synchronous=True))
