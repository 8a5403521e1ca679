"""What the query/retrieve SCU routes read from a request, shared by
:mod:`.query_routes`, :mod:`.retrieve_routes` and :mod:`.find_routes`: the JSON
object body, the ``Timeout`` and ``LocalAet`` fields (with the check of an empty
``LocalAet``), the ``{index}`` of an answer and the kept query of an ``{id}``.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from pacsbox import ErrorCode, OrthancError, read_body

from .find_scu import QueryResult, query_store


def json_object(req: Any) -> dict[str, Any]:
    """The body as a JSON object, else 400 "Must provide a JSON object" (Orthanc)."""
    data = read_body(req)
    try:
        body = json.loads(data) if data.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Must provide a JSON object")
    return body


def timeout_field(body: Mapping[str, Any]) -> float | None:
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


def local_aet_field(body: Mapping[str, Any]) -> str | None:
    """``LocalAet``: None when absent; ``""`` is kept (the association then fails, as in
    Orthanc 1.10.1, see :func:`check_calling`).

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


def check_calling(modality: Any, local_aet: str | None) -> None:
    """An explicitly empty ``LocalAet`` cannot call (Orthanc 1.10.1: 500, DCMTK's wording),
    unless the modality's own ``LocalAet`` wins.

    Parameters
    ----------
    modality : Modality
    local_aet : str or None
        The call's ``LocalAet`` (:func:`local_aet_field`).

    Raises
    ------
    OrthancError
        500 ``NETWORK_PROTOCOL`` 'DicomAssociation - connecting to AET "X": Illegal service
        parameter: Calling AP Title'.
    """
    if local_aet == "" and not modality.local_aet:
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f'DicomAssociation - connecting to AET "{modality.aet}": '
                                                       f'Illegal service parameter: Calling AP Title')


def stored_query(ctx: Any, query_id: str) -> QueryResult:
    """The kept query ``query_id`` (made most recent, see :class:`.find_scu.QueryStore`).

    Raises
    ------
    OrthancError
        404 ``UNKNOWN_RESOURCE`` (no details, as Orthanc) when it is not kept.
    """
    res = query_store(ctx).get(query_id)
    if res is None:
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
    return res


def answer_index(value: str) -> int:
    """An answer index as Orthanc's ``lexical_cast<size_t>`` reads it.

    Parameters
    ----------
    value : str
        The ``{index}`` of the route.

    Returns
    -------
    int

    Raises
    ------
    OrthancError
        400 ``PARAMETER_OUT_OF_RANGE`` for a negative number (it wraps around to a huge
        ``size_t``), 400 ``BAD_PARAMETER_TYPE`` "Syntax error in some user-supplied data"
        for anything else that is not digits.
    """
    s = value.strip()
    if s.startswith("-") and s[1:].isdigit():
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE)   # wraps around to a huge size_t
    if not s.isdigit() or s != value:
        raise OrthancError(ErrorCode.BAD_PARAMETER_TYPE, "Syntax error in some user-supplied data")
    return int(s)
