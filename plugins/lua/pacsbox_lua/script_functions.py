"""The global functions Orthanc gives Lua scripts that pacsbox writes in Python:
``print``, ``ParseJson``, ``DumpJson``, ``RestApiGet``/``Post``/``Put``/``Delete`` (the
in-process REST API), ``HttpGet``/``Post``/``Put``/``Delete`` with ``SetHttpCredentials`` and
``SetHttpTimeout``, ``GetOrthancConfiguration``, ``GenerateDicomUid`` and
``GetTransferSyntaxUid``, the functions Orthanc 1.10.1's ``LuaContext`` registers (a call
with bad parameters answers ``nil``).

The functions written in Lua (``SendToModality``, ``ModifyInstance``...) are in
``toolbox.lua``.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

import pydicom.uid
import requests

from pacsbox import call_rest_api

from .values import LuaValues, text

log = logging.getLogger("pacsbox.lua")

__all__ = ["ScriptFunctions"]


class ScriptFunctions:
    """The Python functions of one interpreter, and their state (HTTP credentials and
    timeout, the capture of ``print``).

    Parameters
    ----------
    ctx : ServerContext
        The app's services (``ctx.app`` for the REST calls, ``ctx.config``).
    values : LuaValues
        The conversions of the interpreter.

    Attributes
    ----------
    output : list of str or None
        While ``POST /tools/execute-script`` runs, the lines ``print`` writes (it logs them
        in any case).
    """

    def __init__(self, ctx: Any, values: LuaValues) -> None:
        self.ctx = ctx
        self.to_lua = values.to_lua
        self.to_json = values.to_json
        self._tostring = values.tostring
        self._lua_type = values.lua_type
        self.output: list[str] | None = None
        self._http_auth: tuple[str, str] | None = None
        self._http_timeout: float | None = None

    def table(self) -> dict[str, Callable[..., Any]]:
        """The functions by their global name in Lua.

        Returns
        -------
        dict
            ``{"print": callable, "RestApiGet": callable, ...}``; Lua calls them with Lua
            values (strings as bytes).
        """
        return {
            "print": self._print, "ParseJson": self._parse_json, "DumpJson": self._dump_json,
            "RestApiGet": self._rest("GET"), "RestApiPost": self._rest("POST"),
            "RestApiPut": self._rest("PUT"), "RestApiDelete": self._rest("DELETE"),
            "HttpGet": self._http("GET"), "HttpPost": self._http("POST"),
            "HttpPut": self._http("PUT"), "HttpDelete": self._http("DELETE"),
            "SetHttpCredentials": self._set_http_credentials, "SetHttpTimeout": self._set_http_timeout,
            "GetOrthancConfiguration": self._get_configuration,
            "GenerateDicomUid": self._generate_uid, "GetTransferSyntaxUid": self._get_transfer_syntax,
        }

    def _print(self, *args: Any) -> None:
        line = ""
        for a in args:  # as Orthanc: the separator only once something was written
            s = self._tostring(a)
            if line:
                line += ", "
            line += "<No conversion to string>" if s is None else text(s)
        log.warning("Lua says: %s", line)
        if self.output is not None:
            self.output.append(line + "\n")

    def _parse_json(self, *args: Any) -> Any:
        if len(args) != 1 or not isinstance(args[0], (bytes, int, float)):
            return None
        try:
            return self.to_lua(json.loads(args[0] if isinstance(args[0], bytes) else str(args[0])))
        except (ValueError, UnicodeDecodeError):
            return None

    def _dump_json(self, *args: Any) -> Any:
        if len(args) not in (1, 2) or (len(args) == 2 and not isinstance(args[1], bool)):
            return None
        value = self.to_json(args[0], bool(args[1]) if len(args) == 2 else False)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")

    def _rest(self, method: str) -> Callable[..., Any]:
        has_body = method in ("POST", "PUT")
        label = {"GET": "RestApiGet", "POST": "RestApiPost", "PUT": "RestApiPut",
                 "DELETE": "RestApiDelete"}[method]

        def call(*args: Any) -> Any:
            n = 2 if has_body else 1
            if len(args) < n or len(args) > n + 2 or not isinstance(args[0], (bytes, int, float)) \
                    or (has_body and not isinstance(args[1], (bytes, int, float))) \
                    or (len(args) > n and args[n] is not None and not isinstance(args[n], bool)):
                log.error("Lua: Bad parameters to %s()", label)
                return None
            uri = text(args[0] if isinstance(args[0], bytes) else str(args[0]).encode())
            body = (args[1] if isinstance(args[1], bytes) else str(args[1]).encode()) if has_body else b""
            builtin = bool(args[n]) if len(args) > n else False
            headers = {}
            if len(args) > n + 1 and self._lua_type(args[n + 1]) == b"table":
                headers = {str(k).lower(): str(v) for k, v in (self.to_json(args[n + 1], True) or {}).items()}
            try:
                answer = call_rest_api(self.ctx.app, method, uri, body, headers, origin="Lua", builtin=builtin)
            except Exception as e:  # noqa: BLE001 - a script never takes the server down
                log.error("Lua: %s", e)
                answer = None
            if answer is not None and answer.status == 200:
                return True if method == "DELETE" else answer.body
            log.error("Lua: Error in %s() for URI: %s", label, uri)
            return None
        return call

    def _http(self, method: str) -> Callable[..., Any]:
        has_body = method in ("POST", "PUT")
        label = {"GET": "HttpGet", "POST": "HttpPost", "PUT": "HttpPut", "DELETE": "HttpDelete"}[method]

        def call(*args: Any) -> Any:
            if not args or not isinstance(args[0], bytes) or len(args) > (3 if has_body else 2):
                log.error("Lua: Bad parameters to %s()", label)
                return None
            url = text(args[0])
            body = None
            if has_body and len(args) > 1 and args[1] is not None:
                body = args[1] if isinstance(args[1], bytes) else str(args[1]).encode()
            hpos = 2 if has_body else 1
            headers = {}
            if len(args) > hpos and self._lua_type(args[hpos]) == b"table":
                headers = {str(k): str(v) for k, v in (self.to_json(args[hpos], True) or {}).items()}
            try:
                r = requests.request(method, url, data=body or None, headers=headers,
                                     auth=self._http_auth, timeout=self._http_timeout or None)
            except requests.RequestException as e:
                log.error("Lua: Error in %s() for URL %s: %s", label, url, e)
                return None
            if method == "DELETE":
                if r.ok:
                    return b"SUCCESS"
                log.error("Lua: Error in HttpDelete() for URL %s", url)
                return None
            return r.content  # as Orthanc 1.10.1: the body, whatever the HTTP status
        return call

    def _set_http_credentials(self, *args: Any) -> None:
        if len(args) != 2 or not all(isinstance(a, (bytes, int, float)) for a in args):
            log.error("Lua: Bad parameters to SetHttpCredentials()")
            return
        self._http_auth = tuple(text(a) if isinstance(a, bytes) else str(a) for a in args)

    def _set_http_timeout(self, *args: Any) -> None:
        if len(args) != 1 or not isinstance(args[0], (int, float)):
            log.error("Lua: Bad parameters to SetHttpTimeout()")
            return
        self._http_timeout = float(int(args[0])) or None

    def _get_configuration(self) -> Any:
        cfg = self.ctx.config
        return self.to_lua({k: cfg[k] for k in cfg if cfg.is_set(k)})

    def _generate_uid(self, *args: Any) -> bytes:
        return pydicom.uid.generate_uid().encode()

    def _get_transfer_syntax(self, *args: Any) -> Any:
        """``GetTransferSyntaxUid(instanceId)``: the instance's transfer syntax UID, or nil."""
        if len(args) != 1 or not isinstance(args[0], bytes):
            return None
        answer = call_rest_api(self.ctx.app, "GET", f"/instances/{text(args[0])}/metadata/TransferSyntax",
                               origin="Lua")
        return answer.body if answer.status == 200 else None
