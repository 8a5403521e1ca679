"""REST routes of query/retrieve as an SCU (reference sections 9.5 and 9.6).

- ``POST /modalities/{id}/query`` and ``/queries/...`` (results kept per app, at most
  ``QueryRetrieveSize``, least recently used dropped first);
- the child queries ``/queries/{id}/answers/{index}/query-studies|query-series|
  query-instances``;
- the deprecated synchronous ``/modalities/{id}/find-patient|find-study|find-series|
  find-instance|find`` and ``/modalities/{id}/find-worklist``;
- retrieve: ``POST /queries/{id}/retrieve``, ``/queries/{id}/answers/{index}/retrieve``
  and ``POST /modalities/{id}/move`` (a job, as Orthanc 1.11+), by C-MOVE or C-GET.

Every answer, error, status code and identifier sent was compared with Orthanc 1.10.1
querying the same remote (``tests/plugins/dicom_net/test_qr_*_reference.py``,
``test_qr_orthanc_remote.py``). The differences, all deliberate:

- Orthanc 1.10.1 puts (0002,0003) (and (0002,0002) when the query has *SOPClassUID*) in
  IMAGE-level C-FIND and C-MOVE identifiers, and shows ``MediaStorageSOPInstanceUID`` in
  instance-level answers (its answers are files whose meta header copies the SOP UIDs);
  pacsbox never sends group 0002 in an identifier nor shows it in an answer.
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

from pacsbox import (ErrorCode, OrthancError, RouteSpec, query_flag, read_body, read_bool, send_json, send_text)

from . import query as query_scu
from .move_job import DicomGetScuJob, DicomMoveScuJob
from .retrieve_request import content_item, resolve_method
from .state import plugin_state


# ---- helpers ---------------------------------------------------------------------------
def _json_object(req: Any) -> dict[str, Any]:
    """The body as a JSON object, else 400 "Must provide a JSON object" (Orthanc)."""
    data = read_body(req)
    try:
        body = json.loads(data) if data.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Must provide a JSON object")
    return body


def _format(req: Any, default: str = "full") -> str:
    if query_flag(req, "simplify"):
        return "simplify"
    if query_flag(req, "short"):
        return "short"
    return default


def _body_format(body: Mapping[str, Any], default: str) -> str:
    """``Short``/``Full``/``Simplify`` fields of a body (Orthanc ``GetDicomFormat``)."""
    if read_bool(body, "Short", False):
        return "short"
    if read_bool(body, "Full", False):
        return "full"
    if read_bool(body, "Simplify", False):
        return "simplify"
    return default


def _timeout(body: Mapping[str, Any]) -> float | None:
    """``Timeout`` (seconds, unsigned integer), None when absent or 0.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "Integer value expected in field: Timeout" or "Unsigned
        integer value expected in field: Timeout" (Orthanc 1.10.1).
    """
    if "Timeout" not in body:
        return None
    v = body["Timeout"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Integer value expected in field: Timeout")
    if v < 0:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Unsigned integer value expected in field: Timeout")
    return float(v) or None


def _local_aet(body: Mapping[str, Any]) -> str | None:
    """``LocalAet``: None when absent; ``""`` is kept (the association then fails, as in
    Orthanc 1.10.1, see :func:`_check_calling`).

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "The field LocalAet must contain a string".
    """
    v = body.get("LocalAet")
    if v is None:
        return None
    if not isinstance(v, str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The field LocalAet must contain a string")
    return v


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


def _check_calling(modality: Any, local_aet: str | None) -> None:
    """An explicitly empty ``LocalAet`` cannot call (Orthanc 1.10.1: 500, DCMTK's wording),
    unless the modality's own ``LocalAet`` wins."""
    if local_aet == "" and not modality.local_aet:
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f'DicomAssociation - connecting to AET "{modality.aet}": '
                                                       f'Illegal service parameter: Calling AP Title')


def _get_query(ctx: Any, query_id: str) -> query_scu.QueryResult:
    res = query_scu.query_store(ctx).get(query_id)
    if res is None:
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
    return res


def _index(value: str) -> int:
    """An answer index as Orthanc's ``lexical_cast<size_t>`` reads it."""
    s = value.strip()
    if s.startswith("-") and s[1:].isdigit():
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE)   # wraps around to a huge size_t
    if not s.isdigit() or s != value:
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, "Syntax error in some user-supplied data")
    return int(s)


def _answer_created(resp: Any, result: query_scu.QueryResult) -> None:
    send_json(resp, {"ID": result.id, "Path": f"/queries/{result.id}"})


# ---- /modalities/{id}/query ------------------------------------------------------------
class ModalityQuery:
    """``POST /modalities/{id}/query``: run a C-FIND, keep its answers in ``/queries``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002 - falcon field name
        """Body ``Level`` (required), ``Query``, ``Normalize``, ``LocalAet``, ``Timeout``;
        answers ``{ID, Path}`` once the C-FIND is over."""
        body = _json_object(req)
        if not isinstance(body.get("Level"), str):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The JSON body must contain field Level")
        if "Normalize" in body and not isinstance(body["Normalize"], bool):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The field Normalize must contain a Boolean")
        if "Query" in body and not isinstance(body["Query"], dict):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The field Query must contain a JSON object")
        level = query_scu.parse_level(body["Level"])
        fields = query_scu.parse_tag_map(body)
        local_aet, timeout = _local_aet(body), _timeout(body)
        _check_calling(query_scu.get_modality(self.ctx, id), local_aet)
        result = query_scu.run_query(self.ctx, id, level, fields, normalize=body.get("Normalize", True),
                                     local_aet=local_aet or None, timeout=timeout)
        _answer_created(resp, result)


# ---- /queries ----------------------------------------------------------------------------
class Queries:
    """``GET /queries``: the IDs of the kept queries."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any) -> None:
        """Array of query IDs (sorted)."""
        send_json(resp, query_scu.query_store(self.ctx).ids())


class QueryOne:
    """``GET /queries/{id}`` (its sub-routes) and ``DELETE /queries/{id}``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """``["answers", "level", "modality", "query", "retrieve"]``; unknown → 404 (17)."""
        _get_query(self.ctx, id)
        send_json(resp, ["answers", "level", "modality", "query", "retrieve"])

    def on_delete(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """Forget the query: 200, empty ``text/plain`` (also for an unknown ID, as Orthanc)."""
        query_scu.query_store(self.ctx).remove(id)
        send_text(resp, "")


class QueryAnswers:
    """``GET /queries/{id}/answers``: ``["0", "1", ...]``, or with ``?expand`` the answers
    (full, ``?simplify``, ``?short``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """See the class docstring."""
        res = _get_query(self.ctx, id)
        if query_flag(req, "expand"):
            fmt = _format(req)
            send_json(resp, [query_scu.render(a, fmt) for a in res.answers])
        else:
            send_json(resp, [str(i) for i in range(len(res.answers))])


class QueryAnswer:
    """``GET /queries/{id}/answers/{index}``: the answer's sub-routes."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str, index: str) -> None:  # noqa: A002
        """``content``, ``retrieve``, then the child queries below the answer's level
        (Orthanc 1.10.1 lists ``query-study`` at the patient level, whose route is
        ``query-studies``)."""
        res = _get_query(self.ctx, id)
        answer = res.answer(_index(index))
        out = ["content", "retrieve"]
        asked = query_scu.answer_short(answer).get(query_scu.QUERY_RETRIEVE_LEVEL)
        level = query_scu._LEVEL_NAMES.get(str(asked or "").strip().upper())
        out += {"Patient": ["query-study", "query-series", "query-instances"],
                "Study": ["query-series", "query-instances"], "Series": ["query-instances"]}.get(level or "", [])
        send_json(resp, out)


class QueryAnswerContent:
    """``GET /queries/{id}/answers/{index}/content`` (full, ``?simplify``, ``?short``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str, index: str) -> None:  # noqa: A002
        """One answer; out of range → 400 (3)."""
        res = _get_query(self.ctx, id)
        send_json(resp, query_scu.render(res.answer(_index(index)), _format(req)))


class QueryLevel:
    """``GET /queries/{id}/level`` (``text/plain``, e.g. ``Study``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """The level."""
        send_text(resp, _get_query(self.ctx, id).level)


class QueryModality:
    """``GET /queries/{id}/modality`` (``text/plain``, the symbolic name)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """The modality's symbolic name."""
        send_text(resp, _get_query(self.ctx, id).modality_name)


class QueryFilter:
    """``GET /queries/{id}/query``: the filter as submitted (full, ``?simplify``, ``?short``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """The submitted filter (not what normalization sent)."""
        res = _get_query(self.ctx, id)
        out = query_scu.render(res.query_dataset(), _format(req))
        if query_scu.SPECIFIC_CHARACTER_SET not in res.query:   # only there to encode the values
            out.pop("0008,0005", None)
            out.pop("SpecificCharacterSet", None)
        send_json(resp, out)


#: Child query route suffix -> (level, parent levels allowed).
_CHILDREN = {"query-studies": ("Study", ("Patient",)), "query-series": ("Series", ("Patient", "Study")),
             "query-instances": ("Instance", ("Patient", "Study", "Series"))}


class QueryChild:
    """``POST /queries/{id}/answers/{index}/query-studies|query-series|query-instances``:
    a new query one level down, constrained by the answer (Orthanc 1.5.0+)."""

    def __init__(self, ctx: Any, child: str) -> None:
        self.ctx = ctx
        self.level, self.parents = _CHILDREN[child]

    def on_post(self, req: Any, resp: Any, id: str, index: str) -> None:  # noqa: A002
        """Body ``{}`` with optional ``Query``; answers ``{ID, Path}``."""
        parent = _get_query(self.ctx, id)
        i = _index(index)
        if i >= len(parent.answers):
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE)
        if parent.level not in self.parents:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        body = _json_object(req)
        fields = query_scu.parse_tag_map(body) if "Query" in body else {}
        answer = query_scu.answer_short(parent.answers[i])
        copy = {"Patient": (query_scu.PATIENT_ID,), "Study": (query_scu.STUDY_INSTANCE_UID,),
                "Series": (query_scu.STUDY_INSTANCE_UID, query_scu.SERIES_INSTANCE_UID),
                "Instance": (query_scu.STUDY_INSTANCE_UID, query_scu.SERIES_INSTANCE_UID,
                             query_scu.SOP_INSTANCE_UID)}[parent.level]
        for tag in copy:
            value = answer.get(tag)
            if not isinstance(value, str):
                raise OrthancError(ErrorCode.INEXISTENT_TAG)
            fields[tag] = value
        result = query_scu.run_query(self.ctx, parent.modality_name, self.level, fields, normalize=parent.normalize,
                                     local_aet=parent.local_aet, timeout=parent.timeout)
        _answer_created(resp, result)


# ---- retrieve ------------------------------------------------------------------------------
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
    modality = query_scu.get_modality(ctx, modality_name)
    method = resolve_method(ctx, modality, body.get("RetrieveMethod"))
    cls = DicomGetScuJob if method == "C-GET" else DicomMoveScuJob
    local = modality.local_aet or local_aet or plugin_state(ctx).options["DicomAet"]
    return cls(modality_name, modality, items, local_aet=local, target_aet=target_aet, timeout=timeout)


def _item(level: str, keys: Mapping[int, str], source: Mapping[int, Any]) -> dict[str, Any]:
    return {"Level": level, "Keys": query_scu.short_keys(keys), "Query": content_item(source)}


class QueryRetrieve:
    """``POST /queries/{id}/retrieve`` and ``/queries/{id}/answers/{index}/retrieve``: a
    retrieve job of all the answers, or one (synchronous by default)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def _run(self, req: Any, resp: Any, query_id: str, index: str | None) -> None:
        body, target = _retrieve_body(self.ctx, req)
        timeout = _retrieve_timeout(body)
        res = _get_query(self.ctx, query_id)
        answers = res.answers if index is None else [res.answer(_index(index))]
        items = []
        for answer in answers:
            level, keys = query_scu.retrieve_keys(answer)
            items.append(_item(level, keys, query_scu.answer_short(answer)))
        job = make_retrieve_job(self.ctx, res.modality_name, items, body, local_aet=res.local_aet,
                                target_aet=target, timeout=timeout if timeout is not None else res.timeout)
        send_json(resp, self.ctx.jobs.run_request(job, body, synchronous=True))

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """Retrieve every answer."""
        self._run(req, resp, id, None)

    def on_post_one(self, req: Any, resp: Any, id: str, index: str) -> None:  # noqa: A002
        """Retrieve one answer."""
        self._run(req, resp, id, index)


class ModalityMove:
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
        level = query_scu.parse_level(body["Level"])
        local = body.get("LocalAet")
        if local is not None and not isinstance(local, str):
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
        target = body.get("TargetAet", plugin_state(self.ctx).options["DicomAet"])
        if not isinstance(target, str):
            raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE)
        _check_calling(query_scu.get_modality(self.ctx, id), local)
        keep = {"Patient": (query_scu.PATIENT_ID,), "Study": (query_scu.STUDY_INSTANCE_UID,),
                "Series": (query_scu.STUDY_INSTANCE_UID, query_scu.SERIES_INSTANCE_UID),
                "Instance": (query_scu.STUDY_INSTANCE_UID, query_scu.SERIES_INSTANCE_UID,
                             query_scu.SOP_INSTANCE_UID)}[level]
        items = []
        for resource in body["Resources"]:
            fields = query_scu.tags_from_json(resource)
            keys = {t: fields[t] for t in keep if t in fields}
            source = dict(fields)
            source[query_scu.QUERY_RETRIEVE_LEVEL] = query_scu.QR_LEVEL[level]
            items.append(_item(level, keys, source))
        job = make_retrieve_job(self.ctx, id, items, body, local_aet=local, target_aet=target,
                                timeout=_timeout(body))
        send_json(resp, self.ctx.jobs.run_request(job, body, synchronous=True))


# ---- deprecated synchronous finds ------------------------------------------------------------
#: Orthanc's ``DicomMap::SetupFind*Template`` (the keys the deprecated routes ask for).
FIND_TEMPLATES: dict[str, tuple[int, ...]] = {
    "Patient": (0x00100010, 0x00100020, 0x00100030, 0x00100040, 0x00101000),
    "Study": (0x00080020, 0x00080030, 0x00080050, 0x00080090, 0x00081030, 0x00100020, 0x0020000D, 0x00200010),
    "Series": (0x00080021, 0x00080031, 0x00080050, 0x00080060, 0x0008103E, 0x00081070, 0x00100020, 0x00180015,
               0x00181030, 0x0020000D, 0x0020000E, 0x00200011, 0x00400254),
    "Instance": (0x00080012, 0x00080013, 0x00080018, 0x00080050, 0x00100020, 0x0020000D, 0x0020000E,
                 0x00200012, 0x00200013, 0x00200032, 0x00200037, 0x00200100, 0x00204000, 0x00280008,
                 0x00541330),
}
#: Route -> (level, tags that must be longer than 2 characters: any of the first group, and
#: each of the others) (Orthanc ``DicomFindStudy``...).
_FIND_ROUTES = {"find-patient": ("Patient", ()),
                "find-study": ("Study", ((0x00080050, 0x00100020),)),
                "find-series": ("Series", ((0x00080050, 0x00100020), (0x0020000D,))),
                "find-instance": ("Instance", ((0x00080050, 0x00100020), (0x0020000D,), (0x0020000E,)))}


def _merge_template(level: str, body: Any) -> dict[int, str]:
    """Template of ``level`` merged with the body's tag -> value pairs; a body that is not
    an object is refused with an empty 400 (Orthanc ``MergeQueryAndTemplate``)."""
    if not isinstance(body, dict):
        raise OrthancError(ErrorCode.BAD_REQUEST, empty=True)
    fields = {t: "" for t in FIND_TEMPLATES[level]}
    for key, value in body.items():
        try:
            tag = query_scu.parse_tag(key)
        except (KeyError, ValueError):
            raise OrthancError(ErrorCode.UNKNOWN_DICOM_TAG, f"Unknown DICOM tag: {key}") from None
        if isinstance(value, str):
            fields[tag] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            fields[tag] = str(value)
        else:
            raise OrthancError(ErrorCode.BAD_REQUEST, empty=True)
    return fields


def _body_or_refuse(req: Any) -> Any:
    data = read_body(req)
    try:
        return json.loads(data) if data.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


class DeprecatedFind:
    """``POST /modalities/{id}/find-patient|find-study|find-series|find-instance``: a
    synchronous C-FIND answering an array of simplified answers (deprecated in Orthanc)."""

    def __init__(self, ctx: Any, route: str) -> None:
        self.ctx = ctx
        self.level, self.required = _FIND_ROUTES[route]

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """Refused with an empty 400 when the identifiers Orthanc requires are missing."""
        fields = _merge_template(self.level, _body_or_refuse(req))
        for group in self.required:
            if not any(len(fields.get(t, "")) > 2 for t in group):
                raise OrthancError(ErrorCode.BAD_REQUEST, empty=True)
        send_json(resp, [query_scu.render(a, "simplify") for a in _find(self.ctx, id, self.level, fields)])


def _find(ctx: Any, name: str, level: str, fields: Mapping[int, str]) -> list:
    modality = query_scu.get_modality(ctx, name)
    ident = query_scu.find_identifier(level, fields, manufacturer=modality.manufacturer,
                                      charset=query_scu.default_charset(ctx))
    return query_scu.run_find(ctx, modality, ident)


class DeprecatedFindAll:
    """``POST /modalities/{id}/find``: patients, each with its ``Studies``, each with its
    ``Series`` (simplified answers; deprecated in Orthanc)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """See the class docstring."""
        fields = _merge_template("Patient", _body_or_refuse(req))
        out = []
        for patient in _find(self.ctx, id, "Patient", fields):
            p = query_scu.render(patient, "simplify")
            pshort = query_scu.answer_short(patient)
            p["Studies"] = []
            sfields = {t: "" for t in FIND_TEMPLATES["Study"]}
            if isinstance(pshort.get(query_scu.PATIENT_ID), str):
                sfields[query_scu.PATIENT_ID] = pshort[query_scu.PATIENT_ID]
            for study in _find(self.ctx, id, "Study", sfields):
                s = query_scu.render(study, "simplify")
                sshort = query_scu.answer_short(study)
                rfields = {t: "" for t in FIND_TEMPLATES["Series"]}
                for tag in (query_scu.PATIENT_ID, query_scu.STUDY_INSTANCE_UID):
                    if isinstance(sshort.get(tag), str):
                        rfields[tag] = sshort[tag]
                s["Series"] = [query_scu.render(x, "simplify") for x in _find(self.ctx, id, "Series", rfields)]
                p["Studies"].append(s)
            out.append(p)
        send_json(resp, out)


class FindWorklist:
    """``POST /modalities/{id}/find-worklist``: a Modality Worklist C-FIND. Body: the
    query itself, or ``{"Query": {...}, "Short"|"Full"|"Simplify": true, "LocalAet",
    "Timeout"}`` (Orthanc 1.9.5+); answers an array (simplified by default)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """See the class docstring."""
        body = _json_object(req)
        if "Query" in body:
            query, fmt = body["Query"], _body_format(body, "simplify")
        else:
            query, fmt = body, "simplify"
        local_aet, timeout = _local_aet(body), _timeout(body)
        modality = query_scu.get_modality(self.ctx, id)
        _check_calling(modality, local_aet)
        ident = _worklist_dataset(query, query_scu.default_charset(self.ctx))
        answers = query_scu.run_find(self.ctx, modality, ident, worklist=True, local_aet=local_aet or None,
                                     timeout=timeout)
        send_json(resp, [query_scu.render(a, fmt) for a in answers])


def _worklist_dataset(query: Any, charset: str) -> Any:
    """A worklist identifier from JSON (strings, and sequences as arrays of objects)."""
    from pydicom.dataset import Dataset
    if not isinstance(query, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Must provide a JSON object")
    flat: dict[int, str] = {}
    seqs: dict[int, list] = {}
    for key, value in query.items():
        try:
            tag = query_scu.parse_tag(key)
        except (KeyError, ValueError):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Unknown DICOM tag: {key}") from None
        if isinstance(value, list):
            seqs[tag] = value
        elif isinstance(value, str):
            flat[tag] = value
        else:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Bad value for tag {key}")
    ds = query_scu.make_dataset(flat, charset)
    for tag, items in seqs.items():
        seq = []
        for item in items:
            sub = _worklist_dataset(item, None) if item else Dataset()
            seq.append(sub)
        ds.add_new(tag, "SQ", seq)
    return ds


def routes(ctx: Any) -> list[RouteSpec]:
    """The query/retrieve routes (see the module docstring)."""
    out = [
        RouteSpec("/modalities/{id}/query", ModalityQuery),
        RouteSpec("/modalities/{id}/move", ModalityMove),
        RouteSpec("/modalities/{id}/find", DeprecatedFindAll),
        RouteSpec("/modalities/{id}/find-worklist", FindWorklist),
        RouteSpec("/queries", Queries),
        RouteSpec("/queries/{id}", QueryOne),
        RouteSpec("/queries/{id}/answers", QueryAnswers),
        RouteSpec("/queries/{id}/answers/{index}", QueryAnswer),
        RouteSpec("/queries/{id}/answers/{index}/content", QueryAnswerContent),
        RouteSpec("/queries/{id}/level", QueryLevel),
        RouteSpec("/queries/{id}/modality", QueryModality),
        RouteSpec("/queries/{id}/query", QueryFilter),
        RouteSpec("/queries/{id}/retrieve", QueryRetrieve),
        RouteSpec("/queries/{id}/answers/{index}/retrieve", QueryRetrieve, suffix="one"),
    ]
    for route in _FIND_ROUTES:
        out.append(RouteSpec(f"/modalities/{{id}}/{route}", lambda c, r=route: DeprecatedFind(c, r)))
    for child in _CHILDREN:
        out.append(RouteSpec(f"/queries/{{id}}/answers/{{index}}/{child}", lambda c, ch=child: QueryChild(c, ch)))
    return out


def start(ctx: Any) -> None:
    """Create the app's query store (``QueryRetrieveSize``)."""
    query_scu.query_store(ctx)


def stop(ctx: Any) -> None:
    """Drop the kept queries."""
    plugin_state(ctx).extra.pop("queries", None)
