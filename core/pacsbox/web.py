"""Small HTTP helpers for resources (core and plugins): JSON bodies and answers, flags.

Plugins use these through ``from pacsbox import send_json, read_json_body, query_flag``
so that every answer is serialized the same way.
"""
from __future__ import annotations

import json
import re
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


#: WSGI environment key holding the request's body limit in bytes (0: none), set by
#: :class:`BodyLimitMiddleware` from ``MaximumUploadSize``.
MAX_BODY_ENV = "pacsbox.max_body"
#: A JSON request body above this many bytes is refused with 413 (before it is read).
MAX_JSON_BODY_BYTES = 16 * 1024 * 1024
#: A ``/tools/find`` body (its query) above this many bytes is refused with 413.
MAX_FIND_BODY_BYTES = 1024 * 1024
#: Routes whose body is a JSON object (bounded by :data:`MAX_JSON_BODY_BYTES` before any
#: handler runs, whatever the handler does with its errors).
JSON_ROUTES = re.compile(r"^/tools/(create-archive|create-media|create-media-extended|bulk-modify|"
                         r"bulk-anonymize|bulk-delete|bulk-content)$|"
                         r"/(modify|anonymize|split|merge|archive|media|reconstruct)$")


def body_too_large(limit: int, what: str = "The request body", option: str = "MaximumUploadSize") -> OrthancError:
    """The 413 error (Orthanc's JSON error body) of a body or member above a limit.

    Parameters
    ----------
    limit : int
        The limit, bytes.
    what : str
        What exceeds it, for the details.
    option : str
        The option that sets it (or a description of a fixed bound).
    """
    return OrthancError(ErrorCode.BAD_REQUEST, f"{what} exceeds {option} ({limit} bytes)", http_status=413)


def read_body(req: falcon.Request, limit: int | None = None) -> bytes:
    """The whole request body (``Content-Encoding: gzip`` is inflated), bounded.

    Parameters
    ----------
    req : falcon.Request
    limit : int, optional
        Bytes (0: none); default ``MaximumUploadSize`` (:data:`MAX_BODY_ENV`). It
        applies to the inflated body too, which is inflated at most one byte past it.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` for a corrupt gzip body; 413 for a body above the limit
        (refused on its ``Content-Length``, before it is read).
    """
    if limit is None:
        limit = int(req.env.get(MAX_BODY_ENV, 0) or 0)
    length = req.content_length
    if limit and length is not None and length > limit:
        raise body_too_large(limit)
    data = req.bounded_stream.read()
    if (req.get_header("Content-Encoding") or "").lower() == "gzip" and data:
        import zlib
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflate.decompress(data, limit + 1 if limit else 0)
            if not inflate.eof and not limit:
                out += inflate.flush()
            if not inflate.eof and (not limit or len(out) <= limit):
                raise zlib.error("truncated")
        except zlib.error:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Corrupted gzip body") from None
        if limit and len(out) > limit:
            raise body_too_large(limit, "The inflated request body")
        data = out
    return data


class BodyLimitMiddleware:
    """Refuse (413, Orthanc's error body) a request whose ``Content-Length`` exceeds
    ``MaximumUploadSize``, before its body is read, and give the limit to
    :func:`read_body` (which also bounds a gzip body once inflated).

    Parameters
    ----------
    max_body : int
        Bytes (0: no limit).
    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:  # noqa: D102
        length = req.content_length
        if self.max_body:
            req.env[MAX_BODY_ENV] = self.max_body
            if length is not None and length > self.max_body:
                raise body_too_large(self.max_body)
        if length is not None and req.method in ("POST", "PUT"):
            if req.path == "/tools/find":
                if length > MAX_FIND_BODY_BYTES:
                    raise body_too_large(MAX_FIND_BODY_BYTES, "The /tools/find query", "the query bound")
            elif length > MAX_JSON_BODY_BYTES and JSON_ROUTES.search(req.path):
                raise body_too_large(MAX_JSON_BODY_BYTES, "The JSON request body", "the JSON body bound")


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
        400 ``BAD_FILE_FORMAT`` when the body is not valid JSON; 413 above
        :data:`MAX_JSON_BODY_BYTES`.
    """
    length = req.content_length
    if length is not None and length > MAX_JSON_BODY_BYTES:
        raise body_too_large(MAX_JSON_BODY_BYTES, "The JSON request body", "the JSON body bound")
    data = read_body(req)
    if len(data) > MAX_JSON_BODY_BYTES:
        raise body_too_large(MAX_JSON_BODY_BYTES, "The JSON request body", "the JSON body bound")
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
