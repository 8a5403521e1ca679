"""Small HTTP helpers for resources (core and plugins): JSON bodies and answers, flags,
and the readers of JSON body fields.

Plugins use these through ``from pacsbox import send_json, read_json_body, query_flag``
so that every answer is serialized the same way, and every malformed body is refused
with Orthanc's own words (:func:`read_bool`, :func:`read_string`, :func:`read_int`,
:func:`read_strings`; :func:`request_mode` for the job options of a body).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
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


def read_body(req: falcon.Request, limit: int | None = None, what: str = "The request body",
              option: str = "MaximumUploadSize") -> bytes:
    """The whole request body (``Content-Encoding: gzip`` is inflated), bounded.

    Parameters
    ----------
    req : falcon.Request
    limit : int, optional
        Bytes (0: none); default ``MaximumUploadSize`` (:data:`MAX_BODY_ENV`). It
        applies to the inflated body too, which is inflated at most one byte past it.
        Without a limit, a gzip body is still inflated at most to
        :func:`inflate_bound` bytes (a gzip bomb is refused, not inflated).
    what, option : str
        The words of the 413 error: what exceeds which option or bound.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` for a corrupt gzip body; 413 for a body above the limit
        (refused on its ``Content-Length``, before it is read), or a gzip body inflating
        beyond its bound.
    """
    if limit is None:
        limit = int(req.env.get(MAX_BODY_ENV, 0) or 0)
    length = req.content_length
    if limit and length is not None and length > limit:
        raise body_too_large(limit, what, option)
    data = req.bounded_stream.read()
    if (req.get_header("Content-Encoding") or "").lower() == "gzip" and data:
        import zlib
        bound = limit or inflate_bound(len(data))
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflate.decompress(data, bound + 1)
            if not inflate.eof and len(out) <= bound:
                raise zlib.error("truncated")
        except zlib.error:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Corrupted gzip body") from None
        if len(out) > bound:
            if limit:
                raise body_too_large(limit, "The inflated request body" if what == "The request body"
                                     else f"{what}, inflated,", option)
            raise gzip_bomb(bound)
        data = out
    return data


#: A gzip body inflating more than this many times its size is a bomb, unless it stays
#: under :data:`INFLATE_FLOOR` bytes (the default of the option ``MaximumZipRatio``).
INFLATE_RATIO = 200
#: Inflated sizes up to this are never refused as a bomb (an all-zero image compresses a
#: thousand times).
INFLATE_FLOOR = 64 * 1024 * 1024


def inflate_bound(compressed: int) -> int:
    """Bytes a gzip body of ``compressed`` bytes may inflate to when no limit applies:
    ``max(INFLATE_FLOOR, INFLATE_RATIO × compressed)``."""
    return max(INFLATE_FLOOR, INFLATE_RATIO * max(compressed, 1))


def gzip_bomb(bound: int) -> OrthancError:
    """The 413 error (Orthanc's JSON error body) of a gzip body inflating past ``bound``."""
    return OrthancError(ErrorCode.BAD_REQUEST, f"The gzip request body inflates beyond {bound} bytes "
                        f"({INFLATE_RATIO} times its size): refused as a gzip bomb", http_status=413)


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


#: The error of a job route's body that is empty, not JSON or (where an object is needed) not
#: an object: Orthanc's ``ParseJsonRequest`` failing, 400 ``BadFileFormat`` without details.
JOB_BODY_ERROR = (ErrorCode.BAD_FILE_FORMAT, None)
#: The same for ``/tools/find`` and the bulk routes: 400 ``BadRequest``.
NOT_AN_OBJECT_ERROR = (ErrorCode.BAD_REQUEST, "The body must contain a JSON object")


def read_json_body(req: falcon.Request, *, allow_empty: bool = True, default: Any = None,
                   invalid: tuple[ErrorCode, str | None] | None = None) -> Any:
    """Parse the request body as JSON: the one JSON body parser of the routes.

    Parameters
    ----------
    req : falcon.Request
    allow_empty : bool
        An empty body gives ``default`` instead of an error.
    default : any
        Value for an empty body (``{}`` when None).
    invalid : (ErrorCode, str or None), optional
        The error (code, details) of an empty (when refused) or invalid body, for routes
        whose Orthanc counterpart words it otherwise: :data:`JOB_BODY_ERROR` for the job
        routes, :data:`NOT_AN_OBJECT_ERROR` for ``/tools/find`` and the bulk routes.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` when the body is not valid JSON (or ``invalid``); 413
        above :data:`MAX_JSON_BODY_BYTES` (or :func:`read_body`'s bound), 400 for a corrupt
        gzip body, whatever ``invalid`` says.
    """
    length = req.content_length
    if length is not None and length > MAX_JSON_BODY_BYTES:
        raise body_too_large(MAX_JSON_BODY_BYTES, "The JSON request body", "the JSON body bound")
    data = read_body(req, MAX_JSON_BODY_BYTES, "The JSON request body", "the JSON body bound")
    if not data.strip():
        if allow_empty:
            return {} if default is None else default
        raise OrthancError(*(invalid or (ErrorCode.BAD_FILE_FORMAT, "The request body is empty")))
    try:
        return json.loads(data)
    except RecursionError:
        raise OrthancError(*(invalid or (ErrorCode.BAD_FILE_FORMAT, "The request body is nested too deeply"))) \
            from None
    except (ValueError, UnicodeDecodeError):
        raise OrthancError(*(invalid or (ErrorCode.BAD_FILE_FORMAT, "The request body is not valid JSON"))) \
            from None


def read_json_object(req: falcon.Request, *, allow_empty: bool = True,
                     invalid: tuple[ErrorCode, str | None] | None = None) -> dict[str, Any]:
    """Parse the body as a JSON object (an empty body is ``{}`` when ``allow_empty``).

    Parameters
    ----------
    req : falcon.Request
    allow_empty : bool
    invalid : (ErrorCode, str or None), optional
        See :func:`read_json_body`; also the error of a body that is not an object.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "The body must be a JSON object" (or ``invalid``) when the
        body is not a JSON object; the errors of :func:`read_json_body`.
    """
    body = read_json_body(req, allow_empty=allow_empty, invalid=invalid)
    if not isinstance(body, dict):
        raise OrthancError(*(invalid or (ErrorCode.BAD_FILE_FORMAT, "The body must be a JSON object")))
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


# ------------------------------------------------------------------------------------------
# JSON body fields: one reader per type, in the words of the Orthanc routes
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldErrors:
    """How a family of Orthanc routes words a malformed field of a JSON body.

    Each text is a template where ``{name}`` is the field's name.

    Attributes
    ----------
    code : ErrorCode
        Code of a field of the wrong type.
    boolean, string, integer, unsigned, strings : str
        Details of a field that is not a Boolean, a string, an integer, a non-negative
        integer, a list of strings.
    negative : str
        Details of a negative value where only non-negative ones are allowed.
    negative_code : ErrorCode
        Its code.

    Notes
    -----
    A field given as ``null`` is of the wrong type, as in Orthanc.
    """

    code: ErrorCode
    boolean: str
    string: str
    integer: str
    unsigned: str
    strings: str
    negative: str
    negative_code: ErrorCode


#: Orthanc's ``SerializationToolbox`` (the job routes and most bodies): 400
#: ``BadFileFormat`` "Boolean value expected in field: Permissive"...
ORTHANC_FIELDS = FieldErrors(
    ErrorCode.BAD_FILE_FORMAT, "Boolean value expected in field: {name}", "String value expected in field: {name}",
    "Integer value expected in field: {name}", "Unsigned integer value expected in field: {name}",
    "List of strings expected in field: {name}", "Unsigned integer value expected in field: {name}",
    ErrorCode.BAD_FILE_FORMAT)
#: ``/modify`` and ``/anonymize`` (Orthanc ``DicomModification``): "Member "Force" should be
#: a Boolean value"; other types as :data:`ORTHANC_FIELDS`.
MODIFY_FIELDS = replace(ORTHANC_FIELDS, boolean='Member "{name}" should be a Boolean value')
#: ``/tools/find`` (Orthanc ``OrthancRestResources``): 400 ``BadRequest`` 'Field
#: "CaseSensitive" should be a Boolean', 'Field "Limit" should be an integer',
#: ``ParameterOutOfRange`` 'Field "Limit" should be a positive integer' (its ``Full`` and
#: ``Short`` are read as :data:`ORTHANC_FIELDS`).
FIND_FIELDS = FieldErrors(
    ErrorCode.BAD_REQUEST, 'Field "{name}" should be a Boolean', 'Field "{name}" should be a string',
    'Field "{name}" should be an integer', 'Field "{name}" should be an integer',
    'Field "{name}" should be a list of strings', 'Field "{name}" should be a positive integer',
    ErrorCode.PARAMETER_OUT_OF_RANGE)

_ABSENT = object()


def _field(body: Any, name: str) -> Any:
    """The value of ``name`` in ``body``, or :data:`_ABSENT` (also for a body that is not
    an object, as Orthanc reads a member of a non-object)."""
    if not isinstance(body, Mapping) or name not in body:
        return _ABSENT
    return body[name]


def _typed_field(body: Any, name: str, default: Any, kind: type, code: ErrorCode, details: str) -> Any:
    """The field ``name`` when it is a ``kind``, ``default`` when absent; else the error."""
    v = _field(body, name)
    if v is _ABSENT:
        return default
    if not isinstance(v, kind):
        raise OrthancError(code, details.format(name=name))
    return v


def read_bool(body: Mapping[str, Any], name: str, default: Any, *, errors: FieldErrors = ORTHANC_FIELDS) -> Any:
    """A Boolean field of a JSON request body (Orthanc ``SerializationToolbox::ReadBoolean``).

    Parameters
    ----------
    body : mapping
        The request's JSON object.
    name : str
        Field name, e.g. ``"KeepSource"``.
    default : bool or None
        Value when the field is absent.
    errors : FieldErrors
        The wording of the route's family (:data:`ORTHANC_FIELDS`, :data:`MODIFY_FIELDS`,
        :data:`FIND_FIELDS`).

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "Boolean value expected in field: <name>" (or the
        ``errors`` wording).
    """
    return _typed_field(body, name, default, bool, errors.code, errors.boolean)


def read_string(body: Mapping[str, Any], name: str, default: str | None = None, *,
                errors: FieldErrors = ORTHANC_FIELDS) -> str | None:
    """A string field (Orthanc ``SerializationToolbox::ReadString``), or ``default`` when
    absent.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "String value expected in field: <name>".
    """
    return _typed_field(body, name, default, str, errors.code, errors.string)


def read_int(body: Mapping[str, Any], name: str, default: int, *, unsigned: bool = False,
             errors: FieldErrors = ORTHANC_FIELDS) -> int:
    """An integer field (Orthanc ``SerializationToolbox::ReadInteger`` /
    ``ReadUnsignedInteger``): a JSON integer within the signed 32-bit range.

    Parameters
    ----------
    body : mapping
    name : str
    default : int
        Value when the field is absent.
    unsigned : bool
        Refuse negative values.
    errors : FieldErrors

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "Integer value expected in field: <name>" ("Unsigned
        integer value expected in field: <name>" for an unsigned field, negative values
        included), or the ``errors`` wording.
    """
    v = _field(body, name)
    if v is _ABSENT:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not -2 ** 31 <= v < 2 ** 31:
        raise OrthancError(errors.code, (errors.unsigned if unsigned else errors.integer).format(name=name))
    if unsigned and v < 0:
        raise OrthancError(errors.negative_code, errors.negative.format(name=name))
    return v


def read_strings(body: Mapping[str, Any], name: str, *, errors: FieldErrors = ORTHANC_FIELDS) -> list[str]:
    """A required array of strings (Orthanc ``SerializationToolbox::ReadArrayOfStrings``).

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "List of strings expected in field: <name>" when absent
        or malformed (or when ``body`` is not an object).
    """
    v = _field(body, name)
    if v is _ABSENT or not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise OrthancError(errors.code, errors.strings.format(name=name))
    return list(v)


def request_permissive(body: Mapping[str, Any] | None) -> bool | None:
    """``Permissive`` of a job-creating request body (reference section 3.2), or None when
    absent.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "Boolean value expected in field: Permissive".
    """
    return read_bool(body or {}, "Permissive", None)


def request_mode(body: Mapping[str, Any] | None, default_synchronous: bool = True) -> tuple[bool, int]:
    """``Synchronous``/``Asynchronous`` and ``Priority`` of a job-creating request body
    (reference section 3.2).

    Parameters
    ----------
    body : mapping or None
        ``Synchronous`` wins over ``Asynchronous`` (inverted); a body that is not an
        object counts as ``{}``.
    default_synchronous : bool
        The route's default mode.

    Returns
    -------
    (bool, int)
        Whether to run synchronously, and the priority (default 0).

    Raises
    ------
    OrthancError
        ``BadFileFormat`` (400) when a field has the wrong type, with the reference's
        details: "Boolean value expected in field: Synchronous" (or ``Asynchronous``),
        "Integer value expected in field: Priority".
    """
    if not isinstance(body, Mapping):
        body = {}
    if "Synchronous" in body:
        sync = read_bool(body, "Synchronous", default_synchronous)
    elif "Asynchronous" in body:
        sync = not read_bool(body, "Asynchronous", not default_synchronous)
    else:
        sync = default_synchronous
    return sync, read_int(body, "Priority", 0)
