"""REST routes of query/retrieve as an SCU (reference sections 9.5 and 9.6), and their
route table (:func:`routes`).

Here: ``POST /modalities/{id}/query`` and ``/queries/...`` (results kept per app, at most
``QueryRetrieveSize``, least recently used dropped first, see :mod:`.find_scu`), and the
child queries ``/queries/{id}/answers/{index}/query-studies|query-series|
query-instances``. Elsewhere:

- the deprecated synchronous ``/modalities/{id}/find-patient|find-study|find-series|
  find-instance|find`` and ``/modalities/{id}/find-worklist``: :mod:`.find_routes`;
- retrieve: ``POST /queries/{id}/retrieve``, ``/queries/{id}/answers/{index}/retrieve``
  and ``POST /modalities/{id}/move`` (a job, as Orthanc 1.11+), by C-MOVE or C-GET:
  :mod:`.retrieve_routes`;
- what they all read from a request: :mod:`.query_requests`.

Every answer, error, status code and identifier sent was compared with Orthanc 1.10.1
querying the same remote (``tests/plugins/dicom_net/test_qr_*_reference.py``,
``test_qr_orthanc_remote.py``). The differences, all deliberate:

- Orthanc 1.10.1 puts (0002,0003) (and (0002,0002) when the query has *SOPClassUID*) in
  IMAGE-level C-FIND and C-MOVE identifiers, and shows ``MediaStorageSOPInstanceUID`` in
  instance-level answers (its answers are files whose meta header copies the SOP UIDs);
  pacsbox never sends group 0002 in an identifier nor shows it in an answer.
- The differences of the retrieve routes are listed in :mod:`.retrieve_routes`.
"""
from __future__ import annotations

from typing import Any

from pacsbox import ErrorCode, OrthancError, RouteSpec, query_flag, send_json, send_text

from .find_routes import FIND_ROUTES, DeprecatedFindRoute, DeprecatedFindAllRoute, FindWorklistRoute
from .find_scu import QueryResult, get_modality, query_store, run_query
from .query_identifiers import (LEVEL_NAMES, PATIENT_ID, QUERY_RETRIEVE_LEVEL, SERIES_INSTANCE_UID, SOP_INSTANCE_UID,
                                SPECIFIC_CHARACTER_SET, STUDY_INSTANCE_UID, answer_short, parse_level, parse_tag_map,
                                render)
from .query_requests import answer_index, check_calling, json_object, local_aet_field, stored_query, timeout_field
from .retrieve_routes import ModalityMoveRoute, QueryRetrieveRoute
from .state import plugin_state


def _format(req: Any, default: str = "full") -> str:
    if query_flag(req, "simplify"):
        return "simplify"
    if query_flag(req, "short"):
        return "short"
    return default


def _answer_created(resp: Any, result: QueryResult) -> None:
    send_json(resp, {"ID": result.id, "Path": f"/queries/{result.id}"})


# ---- /modalities/{id}/query ------------------------------------------------------------
class ModalityQueryRoute:
    """``POST /modalities/{id}/query``: run a C-FIND, keep its answers in ``/queries``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002 - falcon field name
        """Body ``Level`` (required), ``Query``, ``Normalize``, ``LocalAet``, ``Timeout``;
        answers ``{ID, Path}`` once the C-FIND is over."""
        body = json_object(req)
        if not isinstance(body.get("Level"), str):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The JSON body must contain field Level")
        if "Normalize" in body and not isinstance(body["Normalize"], bool):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The field Normalize must contain a Boolean")
        if "Query" in body and not isinstance(body["Query"], dict):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The field Query must contain a JSON object")
        level = parse_level(body["Level"])
        fields = parse_tag_map(body)
        local_aet, timeout = local_aet_field(body), timeout_field(body)
        check_calling(get_modality(self.ctx, id), local_aet)
        result = run_query(self.ctx, id, level, fields, normalize=body.get("Normalize", True),
                           local_aet=local_aet or None, timeout=timeout)
        _answer_created(resp, result)


# ---- /queries ----------------------------------------------------------------------------
class QueriesRoute:
    """``GET /queries``: the IDs of the kept queries."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any) -> None:
        """Array of query IDs (sorted)."""
        send_json(resp, query_store(self.ctx).ids())


class QueryOneRoute:
    """``GET /queries/{id}`` (its sub-routes) and ``DELETE /queries/{id}``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """``["answers", "level", "modality", "query", "retrieve"]``; unknown → 404 (17)."""
        stored_query(self.ctx, id)
        send_json(resp, ["answers", "level", "modality", "query", "retrieve"])

    def on_delete(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """Forget the query: 200, empty ``text/plain`` (also for an unknown ID, as Orthanc)."""
        query_store(self.ctx).remove(id)
        send_text(resp, "")


class QueryAnswersRoute:
    """``GET /queries/{id}/answers``: ``["0", "1", ...]``, or with ``?expand`` the answers
    (full, ``?simplify``, ``?short``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """See the class docstring."""
        res = stored_query(self.ctx, id)
        if query_flag(req, "expand"):
            fmt = _format(req)
            send_json(resp, [render(a, fmt) for a in res.answers])
        else:
            send_json(resp, [str(i) for i in range(len(res.answers))])


class QueryAnswerRoute:
    """``GET /queries/{id}/answers/{index}``: the answer's sub-routes."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str, index: str) -> None:  # noqa: A002
        """``content``, ``retrieve``, then the child queries below the answer's level
        (Orthanc 1.10.1 lists ``query-study`` at the patient level, whose route is
        ``query-studies``)."""
        res = stored_query(self.ctx, id)
        answer = res.answer(answer_index(index))
        out = ["content", "retrieve"]
        asked = answer_short(answer).get(QUERY_RETRIEVE_LEVEL)
        level = LEVEL_NAMES.get(str(asked or "").strip().upper())
        out += {"Patient": ["query-study", "query-series", "query-instances"],
                "Study": ["query-series", "query-instances"], "Series": ["query-instances"]}.get(level or "", [])
        send_json(resp, out)


class QueryAnswerContentRoute:
    """``GET /queries/{id}/answers/{index}/content`` (full, ``?simplify``, ``?short``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str, index: str) -> None:  # noqa: A002
        """One answer; out of range → 400 (3)."""
        res = stored_query(self.ctx, id)
        send_json(resp, render(res.answer(answer_index(index)), _format(req)))


class QueryLevelRoute:
    """``GET /queries/{id}/level`` (``text/plain``, e.g. ``Study``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """The level."""
        send_text(resp, stored_query(self.ctx, id).level)


class QueryModalityRoute:
    """``GET /queries/{id}/modality`` (``text/plain``, the symbolic name)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """The modality's symbolic name."""
        send_text(resp, stored_query(self.ctx, id).modality_name)


class QueryFilterRoute:
    """``GET /queries/{id}/query``: the filter as submitted (full, ``?simplify``, ``?short``)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any, id: str) -> None:  # noqa: A002
        """The submitted filter (not what normalization sent)."""
        res = stored_query(self.ctx, id)
        out = render(res.query_dataset(), _format(req))
        if SPECIFIC_CHARACTER_SET not in res.query:   # only there to encode the values
            out.pop("0008,0005", None)
            out.pop("SpecificCharacterSet", None)
        send_json(resp, out)


#: Child query route suffix -> (level, parent levels allowed).
_CHILDREN = {"query-studies": ("Study", ("Patient",)), "query-series": ("Series", ("Patient", "Study")),
             "query-instances": ("Instance", ("Patient", "Study", "Series"))}


class QueryChildRoute:
    """``POST /queries/{id}/answers/{index}/query-studies|query-series|query-instances``:
    a new query one level down, constrained by the answer (Orthanc 1.5.0+)."""

    def __init__(self, ctx: Any, child: str) -> None:
        self.ctx = ctx
        self.level, self.parents = _CHILDREN[child]

    def on_post(self, req: Any, resp: Any, id: str, index: str) -> None:  # noqa: A002
        """Body ``{}`` with optional ``Query``; answers ``{ID, Path}``."""
        parent = stored_query(self.ctx, id)
        i = answer_index(index)
        if i >= len(parent.answers):
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE)
        if parent.level not in self.parents:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        body = json_object(req)
        fields = parse_tag_map(body) if "Query" in body else {}
        answer = answer_short(parent.answers[i])
        copy = {"Patient": (PATIENT_ID,), "Study": (STUDY_INSTANCE_UID,),
                "Series": (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID),
                "Instance": (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)}[parent.level]
        for tag in copy:
            value = answer.get(tag)
            if not isinstance(value, str):
                raise OrthancError(ErrorCode.INEXISTENT_TAG)
            fields[tag] = value
        result = run_query(self.ctx, parent.modality_name, self.level, fields, normalize=parent.normalize,
                           local_aet=parent.local_aet, timeout=parent.timeout)
        _answer_created(resp, result)


def routes(ctx: Any) -> list[RouteSpec]:
    """The query/retrieve routes (see the module docstring)."""
    out = [
        RouteSpec("/modalities/{id}/query", ModalityQueryRoute),
        RouteSpec("/modalities/{id}/move", ModalityMoveRoute),
        RouteSpec("/modalities/{id}/find", DeprecatedFindAllRoute),
        RouteSpec("/modalities/{id}/find-worklist", FindWorklistRoute),
        RouteSpec("/queries", QueriesRoute),
        RouteSpec("/queries/{id}", QueryOneRoute),
        RouteSpec("/queries/{id}/answers", QueryAnswersRoute),
        RouteSpec("/queries/{id}/answers/{index}", QueryAnswerRoute),
        RouteSpec("/queries/{id}/answers/{index}/content", QueryAnswerContentRoute),
        RouteSpec("/queries/{id}/level", QueryLevelRoute),
        RouteSpec("/queries/{id}/modality", QueryModalityRoute),
        RouteSpec("/queries/{id}/query", QueryFilterRoute),
        RouteSpec("/queries/{id}/retrieve", QueryRetrieveRoute),
        RouteSpec("/queries/{id}/answers/{index}/retrieve", QueryRetrieveRoute, suffix="one"),
    ]
    for route in FIND_ROUTES:
        out.append(RouteSpec(f"/modalities/{{id}}/{route}", lambda c, r=route: DeprecatedFindRoute(c, r)))
    for child in _CHILDREN:
        out.append(RouteSpec(f"/queries/{{id}}/answers/{{index}}/{child}", lambda c, ch=child: QueryChildRoute(c, ch)))
    return out


def start(ctx: Any) -> None:
    """Create the app's query store (``QueryRetrieveSize``)."""
    query_store(ctx)


def stop(ctx: Any) -> None:
    """Drop the kept queries."""
    plugin_state(ctx).extra.pop("queries", None)
