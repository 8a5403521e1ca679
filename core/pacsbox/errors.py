"""Orthanc error codes, the ``OrthancError`` exception family and the HTTP error rendering.

Domain code raises :class:`OrthancError` carrying an :class:`ErrorCode` (Orthanc's
``OrthancStatus`` number). One falcon error handler and one serializer, installed by
:func:`install_error_handlers`, turn every error into Orthanc's JSON error body::

    {"Details": "...", "HttpError": "Bad Request", "HttpStatus": 400,
     "Message": "Bad request", "Method": "GET", "OrthancError": "Bad request",
     "OrthancStatus": 8, "Uri": "/series"}

Source: Orthanc 1.10.1 ``Orthanc --errors`` and ``RestApiOutput::SignalError``;
see ``shared/reference/rest-api.md`` section 0.2 and Appendix A.
"""
from __future__ import annotations

import enum
import http
import json
import logging
from typing import Any

import falcon

log = logging.getLogger("pacsbox.errors")


class ErrorCode(enum.IntEnum):
    """Orthanc's error codes (``OrthancStatus``), with their text and HTTP status.

    Each member has ``.description`` (the text Orthanc prints in ``Message`` and
    ``OrthancError``) and ``.http_status`` (the HTTP status Orthanc answers with).
    Source: Orthanc 1.10.1 ``Orthanc --errors``.
    """

    INTERNAL_ERROR = -1
    SUCCESS = 0
    PLUGIN = 1
    NOT_IMPLEMENTED = 2
    PARAMETER_OUT_OF_RANGE = 3
    NOT_ENOUGH_MEMORY = 4
    BAD_PARAMETER_TYPE = 5
    BAD_SEQUENCE_OF_CALLS = 6
    INEXISTENT_ITEM = 7
    BAD_REQUEST = 8
    NETWORK_PROTOCOL = 9
    SYSTEM_COMMAND = 10
    DATABASE = 11
    URI_SYNTAX = 12
    INEXISTENT_FILE = 13
    CANNOT_WRITE_FILE = 14
    BAD_FILE_FORMAT = 15
    TIMEOUT = 16
    UNKNOWN_RESOURCE = 17
    INCOMPATIBLE_DATABASE_VERSION = 18
    FULL_STORAGE = 19
    CORRUPTED_FILE = 20
    INEXISTENT_TAG = 21
    READ_ONLY = 22
    INCOMPATIBLE_IMAGE_FORMAT = 23
    INCOMPATIBLE_IMAGE_SIZE = 24
    SHARED_LIBRARY = 25
    UNKNOWN_PLUGIN_SERVICE = 26
    UNKNOWN_DICOM_TAG = 27
    BAD_JSON = 28
    UNAUTHORIZED = 29
    BAD_FONT = 30
    DATABASE_PLUGIN = 31
    STORAGE_AREA_PLUGIN = 32
    EMPTY_REQUEST = 33
    NOT_ACCEPTABLE = 34
    NULL_POINTER = 35
    DATABASE_UNAVAILABLE = 36
    CANCELED_JOB = 37
    BAD_GEOMETRY = 38
    SSL_INITIALIZATION = 39
    DISCONTINUED_ABI = 40
    BAD_RANGE = 41
    DATABASE_CANNOT_SERIALIZE = 42
    REVISION = 43
    FORBIDDEN_ACCESS = 44
    DUPLICATE_RESOURCE = 45
    CANNOT_STORE_INSTANCE = 2018
    CREATE_DICOM_NOT_STRING = 2019
    CREATE_DICOM_OVERRIDE_TAG = 2020
    CREATE_DICOM_USE_CONTENT = 2021
    CREATE_DICOM_NO_PAYLOAD = 2022
    CREATE_DICOM_USE_DATA_URI_SCHEME = 2023
    CREATE_DICOM_BAD_PARENT = 2024
    CREATE_DICOM_PARENT_IS_INSTANCE = 2025
    CREATE_DICOM_PARENT_ENCODING = 2026
    UNKNOWN_MODALITY = 2027
    BAD_JOB_ORDERING = 2028
    JSON_TO_LUA_TABLE = 2029
    CANNOT_CREATE_LUA = 2030
    CANNOT_EXECUTE_LUA = 2031
    LUA_ALREADY_EXECUTED = 2032
    LUA_BAD_OUTPUT = 2033
    NOT_LUA_PREDICATE = 2034
    LUA_RETURNS_NO_STRING = 2035
    STORAGE_AREA_ALREADY_REGISTERED = 2036
    DATABASE_BACKEND_ALREADY_REGISTERED = 2037
    DATABASE_NOT_INITIALIZED = 2038
    SSL_DISABLED = 2039
    CANNOT_ORDER_SLICES = 2040
    NO_WORKLIST_HANDLER = 2041
    ALREADY_EXISTING_TAG = 2042
    NO_STORAGE_COMMITMENT_HANDLER = 2043
    NO_CFIND_HANDLER = 2010
    NO_CMOVE_HANDLER = 2011
    NO_CSTORE_HANDLER = 2012
    NO_APPLICATION_ENTITY_FILTER = 2013
    NO_SOP_CLASS_OR_INSTANCE = 2014
    NO_PRESENTATION_CONTEXT = 2015
    DICOM_FIND_UNAVAILABLE = 2016
    DICOM_MOVE_UNAVAILABLE = 2017
    CANNOT_STORE_INSTANCE_2 = 2052
    UNSUPPORTED_MEDIA_TYPE = 3000

    @property
    def description(self) -> str:
        """str: Orthanc's text for this code (``Message`` / ``OrthancError``)."""
        return _TEXTS.get(self, "Unknown error")

    @property
    def http_status(self) -> int:
        """int: the HTTP status Orthanc answers with for this code (500 when unlisted)."""
        return _HTTP.get(self, 500)


_TEXTS = {
    ErrorCode.INTERNAL_ERROR: "Internal error",
    ErrorCode.SUCCESS: "Success",
    ErrorCode.PLUGIN: "Error encountered within the plugin engine",
    ErrorCode.NOT_IMPLEMENTED: "Not implemented yet",
    ErrorCode.PARAMETER_OUT_OF_RANGE: "Parameter out of range",
    ErrorCode.NOT_ENOUGH_MEMORY: "The server hosting Orthanc is running out of memory",
    ErrorCode.BAD_PARAMETER_TYPE: "Bad type for a parameter",
    ErrorCode.BAD_SEQUENCE_OF_CALLS: "Bad sequence of calls",
    ErrorCode.INEXISTENT_ITEM: "Accessing an inexistent item",
    ErrorCode.BAD_REQUEST: "Bad request",
    ErrorCode.NETWORK_PROTOCOL: "Error in the network protocol",
    ErrorCode.SYSTEM_COMMAND: "Error while calling a system command",
    ErrorCode.DATABASE: "Error with the database engine",
    ErrorCode.URI_SYNTAX: "Badly formatted URI",
    ErrorCode.INEXISTENT_FILE: "Inexistent file",
    ErrorCode.CANNOT_WRITE_FILE: "Cannot write to file",
    ErrorCode.BAD_FILE_FORMAT: "Bad file format",
    ErrorCode.TIMEOUT: "Timeout",
    ErrorCode.UNKNOWN_RESOURCE: "Unknown resource",
    ErrorCode.INCOMPATIBLE_DATABASE_VERSION: "Incompatible version of the database",
    ErrorCode.FULL_STORAGE: "The file storage is full",
    ErrorCode.CORRUPTED_FILE: "Corrupted file (e.g. inconsistent MD5 hash)",
    ErrorCode.INEXISTENT_TAG: "Inexistent tag",
    ErrorCode.READ_ONLY: "Cannot modify a read-only data structure",
    ErrorCode.INCOMPATIBLE_IMAGE_FORMAT: "Incompatible format of the images",
    ErrorCode.INCOMPATIBLE_IMAGE_SIZE: "Incompatible size of the images",
    ErrorCode.SHARED_LIBRARY: "Error while using a shared library (plugin)",
    ErrorCode.UNKNOWN_PLUGIN_SERVICE: "Plugin invoking an unknown service",
    ErrorCode.UNKNOWN_DICOM_TAG: "Unknown DICOM tag",
    ErrorCode.BAD_JSON: "Cannot parse a JSON document",
    ErrorCode.UNAUTHORIZED: "Bad credentials were provided to an HTTP request",
    ErrorCode.BAD_FONT: "Badly formatted font file",
    ErrorCode.DATABASE_PLUGIN: "The plugin implementing a custom database back-end does not fulfill the proper interface",
    ErrorCode.STORAGE_AREA_PLUGIN: "Error in the plugin implementing a custom storage area",
    ErrorCode.EMPTY_REQUEST: "The request is empty",
    ErrorCode.NOT_ACCEPTABLE: "Cannot send a response which is acceptable according to the Accept HTTP header",
    ErrorCode.NULL_POINTER: "Cannot handle a NULL pointer",
    ErrorCode.DATABASE_UNAVAILABLE: "The database is currently not available (probably a transient situation)",
    ErrorCode.CANCELED_JOB: "This job was canceled",
    ErrorCode.BAD_GEOMETRY: "Geometry error encountered in Stone",
    ErrorCode.SSL_INITIALIZATION: "Cannot initialize SSL encryption, check out your certificates",
    ErrorCode.DISCONTINUED_ABI: "Calling a function that has been removed from the Orthanc Framework",
    ErrorCode.BAD_RANGE: "Incorrect range request",
    ErrorCode.DATABASE_CANNOT_SERIALIZE: "Database could not serialize access due to concurrent update, the transaction should be retried",
    ErrorCode.REVISION: "A bad revision number was provided, which might indicate conflict between multiple writers",
    ErrorCode.FORBIDDEN_ACCESS: "Access to a resource is forbidden",
    ErrorCode.DUPLICATE_RESOURCE: "Duplicate resource",
    ErrorCode.CANNOT_STORE_INSTANCE: "Cannot store an instance",
    ErrorCode.CREATE_DICOM_NOT_STRING: "Only string values are supported when creating DICOM instances",
    ErrorCode.CREATE_DICOM_OVERRIDE_TAG: "Trying to override a value inherited from a parent module",
    ErrorCode.CREATE_DICOM_USE_CONTENT: "Use \"Content\" to inject an image into a new DICOM instance",
    ErrorCode.CREATE_DICOM_NO_PAYLOAD: "No payload is present for one instance in the series",
    ErrorCode.CREATE_DICOM_USE_DATA_URI_SCHEME: "The payload of the DICOM instance must be specified according to Data URI scheme",
    ErrorCode.CREATE_DICOM_BAD_PARENT: "Trying to attach a new DICOM instance to an inexistent resource",
    ErrorCode.CREATE_DICOM_PARENT_IS_INSTANCE: "Trying to attach a new DICOM instance to an instance (must be a series, study or patient)",
    ErrorCode.CREATE_DICOM_PARENT_ENCODING: "Unable to get the encoding of the parent resource",
    ErrorCode.UNKNOWN_MODALITY: "Unknown modality",
    ErrorCode.BAD_JOB_ORDERING: "Bad ordering of filters in a job",
    ErrorCode.JSON_TO_LUA_TABLE: "Cannot convert the given JSON object to a Lua table",
    ErrorCode.CANNOT_CREATE_LUA: "Cannot create the Lua context",
    ErrorCode.CANNOT_EXECUTE_LUA: "Cannot execute a Lua command",
    ErrorCode.LUA_ALREADY_EXECUTED: "Arguments cannot be pushed after the Lua function is executed",
    ErrorCode.LUA_BAD_OUTPUT: "The Lua function does not give the expected number of outputs",
    ErrorCode.NOT_LUA_PREDICATE: "The Lua function is not a predicate (only true/false outputs allowed)",
    ErrorCode.LUA_RETURNS_NO_STRING: "The Lua function does not return a string",
    ErrorCode.STORAGE_AREA_ALREADY_REGISTERED: "Another plugin has already registered a custom storage area",
    ErrorCode.DATABASE_BACKEND_ALREADY_REGISTERED: "Another plugin has already registered a custom database back-end",
    ErrorCode.DATABASE_NOT_INITIALIZED: "Plugin trying to call the database during its initialization",
    ErrorCode.SSL_DISABLED: "Orthanc has been built without SSL support",
    ErrorCode.CANNOT_ORDER_SLICES: "Unable to order the slices of the series",
    ErrorCode.NO_WORKLIST_HANDLER: "No request handler factory for DICOM C-Find Modality SCP",
    ErrorCode.ALREADY_EXISTING_TAG: "Cannot override the value of a tag that already exists",
    ErrorCode.NO_STORAGE_COMMITMENT_HANDLER: "No request handler factory for DICOM N-ACTION SCP (storage commitment)",
    ErrorCode.NO_CFIND_HANDLER: "No request handler factory for DICOM C-FIND SCP",
    ErrorCode.NO_CMOVE_HANDLER: "No request handler factory for DICOM C-MOVE SCP",
    ErrorCode.NO_CSTORE_HANDLER: "No request handler factory for DICOM C-STORE SCP",
    ErrorCode.NO_APPLICATION_ENTITY_FILTER: "No application entity filter",
    ErrorCode.NO_SOP_CLASS_OR_INSTANCE: "DicomUserConnection: Unable to find the SOP class and instance",
    ErrorCode.NO_PRESENTATION_CONTEXT: "DicomUserConnection: No acceptable presentation context for modality",
    ErrorCode.DICOM_FIND_UNAVAILABLE: "DicomUserConnection: The C-FIND command is not supported by the remote SCP",
    ErrorCode.DICOM_MOVE_UNAVAILABLE: "DicomUserConnection: The C-MOVE command is not supported by the remote SCP",
    ErrorCode.CANNOT_STORE_INSTANCE_2: "Cannot store an instance",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "Unsupported media type",
}

_HTTP = {
    ErrorCode.SUCCESS: 200,
    ErrorCode.PARAMETER_OUT_OF_RANGE: 400,
    ErrorCode.BAD_PARAMETER_TYPE: 400,
    ErrorCode.INEXISTENT_ITEM: 404,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.URI_SYNTAX: 400,
    ErrorCode.INEXISTENT_FILE: 404,
    ErrorCode.BAD_FILE_FORMAT: 400,
    ErrorCode.UNKNOWN_RESOURCE: 404,
    ErrorCode.INEXISTENT_TAG: 404,
    ErrorCode.BAD_JSON: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_ACCEPTABLE: 406,
    ErrorCode.DATABASE_UNAVAILABLE: 503,
    ErrorCode.BAD_RANGE: 416,
    ErrorCode.DATABASE_CANNOT_SERIALIZE: 503,
    ErrorCode.REVISION: 409,
    ErrorCode.FORBIDDEN_ACCESS: 403,
    ErrorCode.DUPLICATE_RESOURCE: 409,
    ErrorCode.CREATE_DICOM_NOT_STRING: 400,
    ErrorCode.CREATE_DICOM_OVERRIDE_TAG: 400,
    ErrorCode.CREATE_DICOM_USE_CONTENT: 400,
    ErrorCode.CREATE_DICOM_NO_PAYLOAD: 400,
    ErrorCode.CREATE_DICOM_USE_DATA_URI_SCHEME: 400,
    ErrorCode.CREATE_DICOM_BAD_PARENT: 400,
    ErrorCode.CREATE_DICOM_PARENT_IS_INSTANCE: 400,
    ErrorCode.CREATE_DICOM_PARENT_ENCODING: 400,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
}


class OrthancError(Exception):
    """A domain error carrying an Orthanc error code.

    Parameters
    ----------
    code : ErrorCode or int
        The Orthanc error code (``OrthancStatus``).
    details : str, optional
        Free text sent as ``Details`` in the JSON error body.
    http_status : int, optional
        Overrides the status mapped from ``code`` (Appendix A of the reference).
    empty : bool, default False
        Answer with the status and an **empty** body, as Orthanc does when a GET handler
        finds nothing (404) or a POST action is refused (400).

    Notes
    -----
    Raised anywhere in request handling (core or plugin), it is rendered by the single
    handler installed by :func:`install_error_handlers`. Raised in a job step, the job
    ends in ``Failure`` with ``ErrorCode`` = ``code`` and ``ErrorDetails`` = ``details``.
    """

    def __init__(self, code: ErrorCode | int, details: str | None = None, *,
                 http_status: int | None = None, empty: bool = False) -> None:
        try:
            self.code = ErrorCode(int(code))
        except ValueError:
            self.code = ErrorCode.INTERNAL_ERROR
        self.details = details
        self.http_status = http_status or self.code.http_status
        self.empty = empty
        super().__init__(details or self.code.description)

    def to_dict(self, method: str, uri: str) -> dict[str, Any]:
        """Orthanc's JSON error body for this error.

        Parameters
        ----------
        method : str
            Upper-case HTTP verb of the failed request.
        uri : str
            Request path without the query string.

        Returns
        -------
        dict
            Keys ``Details`` (only when set), ``HttpError``, ``HttpStatus``, ``Message``,
            ``Method``, ``OrthancError``, ``OrthancStatus``, ``Uri``.
        """
        body: dict[str, Any] = {}
        if self.details:
            body["Details"] = self.details
        body["HttpError"] = _reason(self.http_status)
        body["HttpStatus"] = self.http_status
        body["Message"] = self.code.description
        body["Method"] = method
        body["OrthancError"] = self.code.description
        body["OrthancStatus"] = int(self.code)
        body["Uri"] = uri
        return body


class ConfigError(ValueError):
    """A configuration cannot be used: a file that cannot be read (the message names the
    file and the line), or an option whose value does not fit (the message names the
    option, its value and what is expected). ``pacsbox serve`` prints it and exits with
    status 2."""


class StartupError(RuntimeError):
    """The server cannot start: a registration conflict or a plugin failure found while
    building the app. The message names the plugin(s) at fault; ``pacsbox serve`` prints it
    and exits with status 2."""


def not_found() -> OrthancError:
    """The empty-bodied 404 Orthanc sends when a GET/DELETE handler finds nothing.

    Returns
    -------
    OrthancError
        Code ``UNKNOWN_RESOURCE``, ``empty=True``.
    """
    return OrthancError(ErrorCode.UNKNOWN_RESOURCE, empty=True)


def refused() -> OrthancError:
    """The empty-bodied 400 Orthanc sends when a POST action is refused without raising.

    Returns
    -------
    OrthancError
        Code ``BAD_REQUEST``, ``empty=True`` (e.g. ``POST /jobs/{id}/resume`` on a
        running job, or on an unknown job).
    """
    return OrthancError(ErrorCode.BAD_REQUEST, empty=True)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def error_body_bytes(err: OrthancError, method: str, uri: str) -> bytes:
    """Serialize :meth:`OrthancError.to_dict` the one way pacsbox does it.

    Parameters
    ----------
    err : OrthancError
    method, uri : str
        See :meth:`OrthancError.to_dict`.

    Returns
    -------
    bytes
        Pretty-printed UTF-8 JSON (tab indentation, like Orthanc's error bodies).
    """
    return json.dumps(err.to_dict(method, uri), indent="\t", ensure_ascii=False).encode("utf-8")


def _render(req: falcon.Request, resp: falcon.Response, err: OrthancError, describe: bool) -> None:
    # Orthanc 1.10.1 sends error answers without Content-Type; WSGI (PEP 3333, wsgiref's
    # validator) wants one, so they say application/json (clients parse the body anyway)
    resp.status = err.http_status
    if err.empty or not describe:
        resp.content_type = None
        resp.data = b""
        return
    resp.content_type = "application/json; charset=utf-8"
    resp.data = error_body_bytes(err, req.method, req.path)


_METHOD_ORDER = {"GET": 0, "POST": 1, "PUT": 2, "DELETE": 3}


def install_error_handlers(app: falcon.App, *, describe: bool = True) -> None:
    """Install the one error handler and serializer on a falcon app.

    Parameters
    ----------
    app : falcon.App
    describe : bool, default True
        Orthanc option ``HttpDescribeErrors``: when False, errors carry no body.

    Notes
    -----
    - :class:`OrthancError` → its status and Orthanc's JSON body (or empty body).
    - falcon's "no route" → 404 JSON ``OrthancStatus`` 17 "Unknown resource".
    - falcon's 405 → empty body and ``Allow`` without ``OPTIONS``, as the reference.
    - 401 keeps its ``WWW-Authenticate`` header and an empty body.
    - Any other :class:`falcon.HTTPError` → JSON body with a matching Orthanc code.
    - Any other exception → logged, 500 ``InternalError``.
    """

    def handle_orthanc(req, resp, ex, params):
        _render(req, resp, ex, describe)

    def handle_http(req, resp, ex: falcon.HTTPError, params):
        status = ex.status_code
        if isinstance(ex, falcon.HTTPMethodNotAllowed):
            allow = (ex.headers or {}).get("Allow", "")
            methods = [m.strip() for m in allow.split(",") if m.strip() and m.strip() != "OPTIONS"]
            methods.sort(key=lambda m: _METHOD_ORDER.get(m, 9))  # Orthanc: "GET,POST,PUT,DELETE" order
            resp.status = 405
            resp.set_header("Allow", ",".join(methods))  # Orthanc: "GET,POST"
            resp.content_type = None
            resp.data = b""
            return
        if status in (401, 403):
            resp.status = status
            for k, v in (ex.headers or {}).items():
                resp.set_header(k, v)
            resp.content_type = None
            resp.data = b""
            return
        if isinstance(ex, falcon.HTTPRouteNotFound) or status == 404:
            err = OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        elif status == 415:
            err = OrthancError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, ex.description)
        elif status == 406:
            err = OrthancError(ErrorCode.NOT_ACCEPTABLE, ex.description)
        elif 400 <= status < 500:
            err = OrthancError(ErrorCode.BAD_REQUEST, ex.description or ex.title, http_status=status)
        else:
            err = OrthancError(ErrorCode.INTERNAL_ERROR, ex.description, http_status=status)
        for k, v in (ex.headers or {}).items():
            resp.set_header(k, v)
        _render(req, resp, err, describe)

    def handle_any(req, resp, ex, params):
        log.exception("Unhandled error on %s %s", req.method, req.path)
        _render(req, resp, OrthancError(ErrorCode.INTERNAL_ERROR, f"{type(ex).__name__}: {ex}"), describe)

    app.add_error_handler(Exception, handle_any)
    app.add_error_handler(falcon.HTTPError, handle_http)
    app.add_error_handler(OrthancError, handle_orthanc)
