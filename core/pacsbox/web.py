"""Small HTTP helpers for resources (core and plugins): JSON bodies and answers, flags.

Plugins use these through ``from pacsbox import send_json, read_json_body, query_flag``
so that every answer is serialized the same way.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import falcon

from .errors import ErrorCode, OrthancError

JSON_TYPE = "application/json; charset=utf-8"


def dumps(obj: Any) -> bytes:
    """Serialize an answer: UTF-8 JSON with keys sorted (as Orthanc's JsonCpp writer)."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")


def send_json(resp: falcon.Response, obj: Any, status: int = 200, content_type: str = JSON_TYPE) -> None:
    """Answer ``obj`` as JSON.

    Parameters
    ----------
    resp : falcon.Response
    obj : any JSON-serializable value
    status : int
        HTTP status (200).
    content_type : str
        ``application/json; charset=utf-8`` by default; action routes answering ``{}``
        use ``application/json`` as Orthanc does.
    """
    resp.status = status
    resp.content_type = content_type
    resp.data = dumps(obj)


def send_text(resp: falcon.Response, text: str | bytes, content_type: str = "text/plain") -> None:
    """Answer raw text (no trailing newline), e.g. ``GET /tools/metrics``."""
    resp.content_type = content_type
    resp.data = text.encode("utf-8") if isinstance(text, str) else text


def read_body(req: falcon.Request) -> bytes:
    """The whole request body (``Content-Encoding: gzip`` is inflated).

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` for a corrupt gzip body.
    """
    data = req.bounded_stream.read()
    if (req.get_header("Content-Encoding") or "").lower() == "gzip" and data:
        import gzip
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Corrupted gzip body") from None
    return data


def read_json_body(req: falcon.Request, *, allow_empty: bool = True, default: Any = None) -> Any:
    """Parse the request body as JSON.

    Parameters
    ----------
    req : falcon.Request
    allow_empty : bool
        An empty body gives ``default`` instead of an error.
    default : any
        Value for an empty body (``{}`` when None).

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` when the body is not valid JSON.
    """
    data = read_body(req)
    if not data.strip():
        if allow_empty:
            return {} if default is None else default
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The request body is empty")
    try:
        return json.loads(data)
    except RecursionError:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The request body is not valid JSON") from None


def read_json_object(req: falcon.Request) -> dict[str, Any]:
    """Parse the body as a JSON object (empty body → ``{}``).

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` when the body is not a JSON object.
    """
    body = read_json_body(req)
    if not isinstance(body, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The body must be a JSON object")
    return body


def query_flag(req: falcon.Request, name: str) -> bool:
    """Whether a presence flag (``?expand``, ``?simplify``...) is set.

    Orthanc 1.10.1 treats these as presence flags; like 1.12.2, an explicit
    ``false``/``0`` value turns the flag off.
    """
    if name not in req.params:
        return False
    v = req.params[name]
    if isinstance(v, list):
        v = v[-1]
    return str(v).strip().lower() not in ("false", "0", "no")


def read_bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
    """A Boolean field of a JSON request body (Orthanc ``SerializationToolbox::ReadBoolean``).

    Parameters
    ----------
    body : mapping
        The request's JSON object.
    name : str
        Field name, e.g. ``"KeepSource"``.
    default : bool
        Value when the field is absent.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "Boolean value expected in field: <name>".
    """
    if name not in body:
        return default
    v = body[name]
    if not isinstance(v, bool):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Boolean value expected in field: {name}")
    return v
