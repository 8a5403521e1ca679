"""In-process calls of the app's own REST API, on behalf of a plugin.

This is what Orthanc does for Lua's ``RestApiGet``/``RestApiPost``... and for a plugin's
``OrthancPluginRestApiGet``: the request is routed through the same resources as an HTTP
request, but it is *internal*: the remote-access check, HTTP authentication and the
``filter_incoming_http_request`` hooks are skipped (Orthanc does not filter its own
calls), and an instance uploaded by it is stored with the caller's ``Origin``
(``"Lua"``, ``"Plugins"``) instead of ``"RestApi"``.
"""
from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Any, Mapping

import falcon.testing

#: WSGI environ key marking an internal call; its value is the instance ``Origin``.
INTERNAL_ORIGIN_KEY = "pacsbox.internal_origin"


@dataclass(frozen=True)
class RestAnswer:
    """The answer of :func:`call_rest_api`.

    Attributes
    ----------
    status : int
        HTTP status code (200, 404...).
    body : bytes
        The answer's body.
    headers : dict of str to str
        Answer headers, names in lower case.
    """

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body parsed as JSON.

        Returns
        -------
        object
            The decoded JSON value.

        Raises
        ------
        ValueError
            The body is not JSON.
        """
        return _json.loads(self.body)


def call_rest_api(app: Any, method: str, uri: str, body: bytes | str = b"",
                  headers: Mapping[str, str] | None = None, *, origin: str = "Plugins",
                  builtin: bool = False) -> RestAnswer:
    """Call the app's REST API in-process, as an internal request.

    Parameters
    ----------
    app : PacsboxApp
        The app (``ctx.app``).
    method : {"GET", "POST", "PUT", "DELETE"}
        HTTP method.
    uri : str
        Path, optionally with a query string (``"/instances?expand"``).
    body : bytes or str
        Request body (str is encoded as UTF-8).
    headers : mapping of str to str, optional
        Request headers.
    origin : str
        ``Origin`` of the instances this call stores (``"Lua"``, ``"Plugins"``); also the
        ``RequestOrigin`` Orthanc reports.
    builtin : bool
        True: only the core's routes answer (a plugin's route answers 404), as Orthanc's
        ``RestrictToOrthancRestApi(true)``.

    Returns
    -------
    RestAnswer
        Status, body and headers, whatever the status (errors are answers, not exceptions).

    Raises
    ------
    ValueError
        ``uri`` does not start with ``/``.

    Notes
    -----
    The call runs in the calling thread and goes through the app's middleware, except the
    remote-access check, authentication and ``filter_incoming_http_request``. A resource that
    runs hooks (a stored instance's ``filter_received_instance``) runs them in this thread.
    """
    if not uri.startswith("/"):
        raise ValueError(f"URI must start with '/': {uri!r}")
    path, _, query = uri.partition("?")
    if builtin:
        found = app._router.find(path)
        if found is not None:
            template = found[3]
            plugin = next((s.plugin for s in app.ctx.routes.routes if s.path == template), "")
            if plugin and not plugin.startswith("pacsbox."):
                return RestAnswer(404, b"", {})
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body or b"")
    result = falcon.testing.simulate_request(
        app, method.upper(), path, query_string=query or None, headers=dict(headers or {}),
        body=data, remote_addr="127.0.0.1", host="localhost",
        extras={INTERNAL_ORIGIN_KEY: origin})
    return RestAnswer(result.status_code, result.content,
                      {k.lower(): v for k, v in result.headers.items()})
