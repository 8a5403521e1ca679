"""The Lua engine: one Lua 5.3 interpreter per app, one re-entrant lock, one event thread.

As in Orthanc (``LuaScripting``):

- the scripts of ``LuaScripts`` are run at start, in order, in one shared interpreter, and
  ``POST /tools/execute-script`` runs its body in the same interpreter (what it defines
  stays defined);
- every use of the interpreter holds one lock; the lock is re-entrant, so a callback that
  calls the REST API, which runs a filter callback in the same thread, does not deadlock;
- notifications (``OnStoredInstance``, ``OnStable*``, ``OnChange``, ``OnJob*``,
  ``OnHeartBeat``) are queued and run on the engine's own thread, off the request path;
  filters (``ReceivedInstanceFilter``, ``IncomingHttpRequestFilter``, the C-STORE and C-FIND
  filters) run in the request's or the association's thread, as Orthanc's do;
- ``SendToModality``, ``SendToPeer``, ``ModifyInstance``, ``Delete`` and ``CallSystem``
  only record operations during a callback; they are run afterwards, in order, on the
  engine's operations thread, through the REST API (``/modalities/{id}/store``,
  ``/peers/{id}/store``, ``/instances/{id}/modify``, ``DELETE``), so this plugin never
  imports another plugin.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import subprocess
import tempfile
import threading
import time
from importlib import resources as _resources
from typing import Any, Callable, Mapping

import lupa.lua53 as _lua53
import pydicom.uid
import requests

from pacsbox import ErrorCode, OrthancError, call_rest_api, dataset_to_json

log = logging.getLogger("pacsbox.lua")

#: Orthanc's origin names (``RequestOrigin``) for pacsbox's ``Origin`` values.
_ORIGIN_KEYS = (("RemoteIP", "RemoteIp"), ("RemoteAET", "RemoteAet"), ("CalledAET", "CalledAet"),
                ("HttpUsername", "Username"))

#: ``os`` functions kept when ``LuaAllowOsAndIo`` is false (they touch nothing outside).
_SAFE_OS = ("clock", "date", "difftime", "time")


#: Seconds without a new operation after which the operations thread sends what it has.
BATCH_GAP = 0.02
#: Seconds after which a first batch is sent even while operations keep coming.
BATCH_AGE = 0.25
#: The longest a batch may wait while operations keep coming without a pause.
BATCH_AGE_MAX = 1.0

#: The callbacks pacsbox calls (``has_function`` knows these).
CALLBACKS = ("Initialize", "Finalize", "OnStoredInstance", "OnStableStudy", "OnStableSeries", "OnStablePatient",
             "OnChange", "OnHeartBeat", "OnJobSubmitted", "OnJobSuccess", "OnJobFailure", "ReceivedInstanceFilter",
             "IncomingHttpRequestFilter", "IncomingFindRequestFilter", "IncomingWorklistRequestFilter",
             "OutgoingFindRequestFilter", "ReceivedCStoreInstanceFilter", "IncomingCStoreInstanceFilter",
             "OnUpdatedPatient", "OnUpdatedStudy", "OnUpdatedSeries", "OnUpdatedInstance",
             "OnDeletedPatient", "OnDeletedStudy", "OnDeletedSeries", "OnDeletedInstance")


def orthanc_origin(origin: Mapping[str, Any]) -> dict[str, str]:
    """Orthanc's ``origin`` table (``DicomInstanceOrigin::Format``) from pacsbox's origin.

    Parameters
    ----------
    origin : mapping
        ``Origin`` (``"RestApi"``, ``"DicomProtocol"``, ``"Lua"``, ``"Plugins"``) and, when
        known, ``RemoteIP``, ``RemoteAET``, ``CalledAET``, ``HttpUsername``.

    Returns
    -------
    dict
        ``RequestOrigin`` and, for ``RestApi``, ``RemoteIp`` and ``Username``; for
        ``DicomProtocol``, ``RemoteIp``, ``RemoteAet`` and ``CalledAet``.
    """
    kind = str(origin.get("Origin") or "RestApi")
    out = {"RequestOrigin": kind}
    wanted = {"RestApi": ("RemoteIp", "Username"),
              "DicomProtocol": ("RemoteIp", "RemoteAet", "CalledAet")}.get(kind, ())
    for ours, theirs in _ORIGIN_KEYS:
        if theirs in wanted:
            out[theirs] = str(origin.get(ours) or "")
    return out


class LuaEngine:
    """One app's Lua interpreter, its lock and its threads.

    Parameters
    ----------
    ctx : ServerContext
        The app's services (``ctx.app`` is used for the in-process REST calls).
    timeout : float
        Seconds a script may run before it is stopped with an error (0: no limit).
    allow_os_io : bool
        Give scripts the whole ``os`` and ``io`` libraries (and ``CallSystem``); when false,
        ``io`` is absent and ``os`` holds only ``clock``, ``date``, ``difftime`` and ``time``.
    heartbeat : float
        ``LuaHeartBeatPeriod``: seconds between two ``OnHeartBeat()`` calls (0: never).
    """

    def __init__(self, ctx: Any, *, timeout: float = 10.0, allow_os_io: bool = False,
                 heartbeat: float = 0.0) -> None:
        self.ctx = ctx
        self.timeout = float(timeout)
        self.allow_os_io = bool(allow_os_io)
        self.heartbeat = float(heartbeat)
        self.lock = threading.RLock()
        self._depth = 0
        self._deadline: float | None = None
        self._output: list[str] | None = None
        self._local = threading.local()
        self._http_auth: tuple[str, str] | None = None
        self._http_timeout: float | None = None
        self._events: queue.Queue = queue.Queue()
        self._operations: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._defined: frozenset[str] = frozenset()
        self._callback_names: Any = None
        #: Called (under the lock) when the set of defined callbacks changes, e.g. a callback
        #: defining ``OnStoredInstance``; the plugin registers or unregisters its hooks then.
        self.on_callbacks_changed: Callable[[], None] | None = None
        self.lua = _lua53.LuaRuntime(encoding=None, register_eval=False, register_builtins=False,
                                     unpack_returned_tuples=True, attribute_filter=self._no_attributes)
        self._setup()

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _no_attributes(obj: Any, name: Any, is_setting: bool) -> Any:
        raise AttributeError("Python attributes are not available to Lua scripts")

    def _setup(self) -> None:
        lua = self.lua
        g = lua.globals()
        g.python = None
        self._tostring = g.tostring
        self._tonumber = g.tonumber
        self._lua_type = g.type
        self._pairs_list = lua.eval("function(t) local k, v = {}, {} for a, b in pairs(t) do "
                                    "k[#k + 1] = a v[#v + 1] = b end return k, v end")
        self._functions_of = lua.eval("function(names) local out = {} for i, n in ipairs(names) do "
                                      "if type(_G[n]) == 'function' then out[#out + 1] = n end end return out end")
        # a table filled on first use (tags, metadata, origin of OnStoredInstance): a callback
        # that does not look at them costs no parsing
        self._lazy_table = lua.eval("""function(loader)
            local data = nil
            local function get() if data == nil then data = loader() end return data end
            return setmetatable({}, { __index = function(t, k) return get()[k] end,
                                      __newindex = function(t, k, v) get()[k] = v end,
                                      __pairs = function(t) return next, get(), nil end,
                                      __len = function(t) return #get() end })
        end""")
        # new globals set a flag, so that the list of defined callbacks is read again only then
        self._take_dirty = lua.eval("""function()
            local dirty = false
            setmetatable(_G, { __newindex = function(t, k, v) rawset(t, k, v) dirty = true end })
            return function() local d = dirty dirty = false return d end
        end""")()
        self._take_operations = lua.eval("function() local o = _pacsbox_operations "
                                         "_pacsbox_operations = {} return o end")
        # the deadline check runs every 10000 VM instructions: a loop that never calls out is stopped
        lua.eval("function(check) debug.sethook(function() if check() then "
                 "error('the Lua script was stopped after its time limit (LuaScriptTimeout)', 2) "
                 "end end, '', 10000) end")(self._past_deadline)
        functions: dict[str, Callable[..., Any]] = {
            "print": self._print, "ParseJson": self._parse_json, "DumpJson": self._dump_json,
            "RestApiGet": self._rest("GET"), "RestApiPost": self._rest("POST"),
            "RestApiPut": self._rest("PUT"), "RestApiDelete": self._rest("DELETE"),
            "HttpGet": self._http("GET"), "HttpPost": self._http("POST"),
            "HttpPut": self._http("PUT"), "HttpDelete": self._http("DELETE"),
            "SetHttpCredentials": self._set_http_credentials, "SetHttpTimeout": self._set_http_timeout,
            "GetOrthancConfiguration": self._get_configuration,
            "GenerateDicomUid": self._generate_uid, "GetTransferSyntaxUid": self._get_transfer_syntax,
        }
        # wrapped in Lua closures, so that type(HttpGet) is "function" as in Orthanc
        wrap = lua.eval("function(f) return function(...) return f(...) end end")
        for name, fn in functions.items():
            g[name.encode()] = wrap(fn)
        if not self.allow_os_io:
            g.io = None
            safe = lua.table()
            for name in _SAFE_OS:
                safe[name.encode()] = g.os[name.encode()]
            g.os = safe
            g.dofile = None
            g.loadfile = None
            package = g.package
            package.loadlib = None
            package.cpath = b""
            package.path = b""
        toolbox = _resources.files(__package__).joinpath("toolbox.lua").read_bytes()
        self._run(lambda: lua.execute(toolbox, name="@toolbox.lua"), "toolbox.lua")
        if not self.allow_os_io:
            g.CallSystem = None

    def _past_deadline(self) -> bool:
        d = self._deadline
        return d is not None and time.monotonic() > d

    # ------------------------------------------------------------ interpreter use

    def _run(self, fn: Callable[[], Any], what: str) -> Any:
        """Run ``fn`` holding the lock, with the time limit armed at the outermost call."""
        with self.lock:
            outer = self._depth == 0
            if outer and self.timeout > 0:
                self._deadline = time.monotonic() + self.timeout
            self._depth += 1
            try:
                return fn()
            finally:
                self._depth -= 1
                if outer:
                    self._deadline = None
                    if self._take_dirty():
                        self._refresh_defined()

    def _refresh_defined(self) -> None:
        """Note which callbacks the scripts define, so that hooks can check without the lock."""
        try:
            self._deadline = None
            if self._callback_names is None:
                self._callback_names = self.to_lua(CALLBACKS)
            names = self._functions_of(self._callback_names)
            defined = frozenset(_text(names[i]) for i in range(1, len(names) + 1))
        except Exception:  # noqa: BLE001 - keep the previous view
            log.exception("Lua: cannot list the defined callbacks")
            return
        changed, self._defined = defined != self._defined, defined
        if changed and self.on_callbacks_changed is not None:
            try:
                self.on_callbacks_changed()
            except Exception:  # noqa: BLE001
                log.exception("Lua: cannot update the hooks")

    def load_script(self, path: str) -> None:
        """Run one file of ``LuaScripts`` (at start, in order).

        Parameters
        ----------
        path : str
            The script's path.

        Raises
        ------
        OrthancError
            ``CANNOT_EXECUTE_LUA`` with the error message, which names the file and line
            (``/etc/orthanc/route.lua:3: unexpected symbol near '='``).
        OSError
            The file cannot be read.
        """
        with open(path, "rb") as f:
            code = f.read()
        try:
            self._run(lambda: self.lua.execute(code, name="@" + path), path)
        except _lua53.LuaError as e:
            raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, _message(e)) from None
        finally:
            with self.lock:
                self._refresh_defined()

    def execute(self, code: bytes) -> str:
        """Run a script in the shared interpreter, as ``POST /tools/execute-script``.

        Parameters
        ----------
        code : bytes
            Lua source.

        Returns
        -------
        str
            What the script printed, one line per ``print`` call.

        Raises
        ------
        OrthancError
            ``CANNOT_EXECUTE_LUA`` (500) with Lua's message (``[string "line"]:1: ...``, as
            Orthanc names the chunk).
        """
        def run():
            previous, self._output = self._output, []
            try:
                self.lua.execute(code, name="=[string \"line\"]")
                return "".join(self._output)
            finally:
                self._output = previous
        try:
            out = self._run(run, "execute-script")
        except _lua53.LuaError as e:
            raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, _message(e)) from None
        finally:
            with self.lock:
                self._refresh_defined()
        self._submit_operations(self._take_pending())
        return out

    def has_function(self, name: str) -> bool:
        """Whether the scripts define the callback ``name`` (one of :data:`CALLBACKS`).

        Checked without the lock, against the view taken after the last use of the
        interpreter, so that a request never waits for a running callback just to learn
        that there is no filter.

        Returns
        -------
        bool
        """
        return name in self._defined

    def call(self, name: str, *args: Any, operations: bool = False, keep_strings: bool = False) -> Any:
        """Call the global Lua function ``name`` if it exists.

        Parameters
        ----------
        name : str
            Callback name (``"OnStoredInstance"``).
        *args
            Python values (JSON-like), converted to Lua values (``None`` becomes ``nil``).
        operations : bool
            Collect the operations the callback records (``SendToModality``...) and run
            them afterwards on the operations thread.
        keep_strings : bool
            Convert the result as Orthanc's ``ExecuteToJson(..., keepStrings=true)``:
            numbers become strings (see :meth:`to_json`).

        Returns
        -------
        object
            The callback's result converted to JSON-like Python values (None when the
            function does not exist).

        Raises
        ------
        lupa.LuaError
            The callback raised (or ran out of time); the message names the file and line.
        """
        def run():
            fn = self.lua.globals()[name.encode()]
            if self._lua_type(fn) != b"function":
                return None
            if operations:
                self._take_operations()
            result = fn(*[self.to_lua(a) for a in args])
            pending = self._take_operations() if operations else None
            return self.to_json(result, keep_strings), pending
        out = self._run(run, name)
        if out is None:
            return None
        result, pending = out
        if pending is not None:
            self._submit_operations(pending)
        return result

    def call_or_raise(self, name: str, *args: Any, keep_strings: bool = False) -> Any:
        """:meth:`call` for a filter whose error the caller reports: a Lua error (or time
        limit) is raised as an :class:`~pacsbox.OrthancError`.

        Raises
        ------
        OrthancError
            ``CANNOT_EXECUTE_LUA`` with Lua's message (file and line), as Orthanc raises
            it from a Lua callback.
        """
        try:
            return self.call(name, *args, keep_strings=keep_strings)
        except _lua53.LuaError as e:
            raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, _message(e)) from None

    def _take_pending(self):
        with self.lock:
            return self._take_operations()

    def lazy(self, loader: Callable[[], Any]) -> Any:
        """A Lua table whose content is ``loader()`` (JSON-like), computed on first access.

        Parameters
        ----------
        loader : callable
            Returns a dict or list; called at most once, under the engine's lock.

        Returns
        -------
        Lua table
            Pass it as an argument of :meth:`call`.
        """
        return self._lazy_table(lambda: self.to_lua(loader()))

    # --------------------------------------------------------------- conversions

    def to_lua(self, value: Any) -> Any:  # noqa: C901
        """A Python JSON-like value as a Lua value (strings as Lua strings, numbers as floats,
        dicts and lists as tables, ``None`` as ``nil``), as Orthanc 1.10.1's ``PushJson``."""
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, int):
            return float(value)  # as Orthanc 1.10.1, JSON numbers reach Lua as floats (print shows 1.0)
        if isinstance(value, (bytes, float)):
            return value
        if isinstance(value, Mapping):
            t = self.lua.table()
            for k, v in value.items():
                if v is not None:
                    t[k.encode("utf-8") if isinstance(k, str) else k] = self.to_lua(v)
            return t
        if isinstance(value, (list, tuple)):
            t = self.lua.table()
            for i, v in enumerate(value, 1):
                if v is not None:
                    t[i] = self.to_lua(v)
            return t
        if _lupa_table(value):
            return value
        return value

    def to_json(self, value: Any, keep_strings: bool = False) -> Any:
        """A Lua value as JSON-like Python, as Orthanc's ``LuaContext::GetJson``.

        Tables whose keys are exactly 1..n are arrays (an empty table is ``[]``); with
        ``keep_strings`` false, numeric strings become numbers, and integral numbers
        integers; with ``keep_strings`` true, numbers become strings.
        """
        kind = self._lua_type(value)
        if kind == b"table":
            keys, values = self._pairs_list(value)
            n = len(keys)
            items = [(keys[i], values[i]) for i in range(1, n + 1)]
            names = [_text(self._tostring(k)) for k, _ in items]
            if all(name.isdigit() and int(name) == i for i, name in enumerate(names, 1)):
                ordered = sorted(zip(names, items), key=lambda p: int(p[0]))
                return [self.to_json(v, keep_strings) for _, (_, v) in ordered]
            return {name: self.to_json(v, keep_strings) for name, (_, v) in zip(names, items)}
        if kind == b"nil":
            return None
        if kind == b"boolean":
            return bool(value)
        if not keep_strings and kind in (b"number", b"string"):
            number = self._tonumber(value)
            if number is not None:
                if isinstance(number, int) or (math.isfinite(number) and number == int(number)
                                               and abs(number) < 2 ** 31):
                    return int(number)
                return float(number)
        if kind in (b"number", b"string"):
            return _text(self._tostring(value))
        log.warning("Unsupported Lua type when returning Json")
        return None

    # ----------------------------------------------------------- Lua functions

    def _print(self, *args: Any) -> None:
        line = ""
        for a in args:  # as Orthanc: the separator only once something was written
            s = self._tostring(a)
            if line:
                line += ", "
            line += "<No conversion to string>" if s is None else _text(s)
        log.warning("Lua says: %s", line)
        if self._output is not None:
            self._output.append(line + "\n")

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
            uri = _text(args[0] if isinstance(args[0], bytes) else str(args[0]).encode())
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
            url = _text(args[0])
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
        self._http_auth = tuple(_text(a) if isinstance(a, bytes) else str(a) for a in args)

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
        answer = call_rest_api(self.ctx.app, "GET", f"/instances/{_text(args[0])}/metadata/TransferSyntax",
                               origin="Lua")
        return answer.body if answer.status == 200 else None

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        """Start the event thread and the operations thread (and the heart beat)."""
        for target, name in ((self._event_loop, "pacsbox-lua-events"),
                             (self._operations_loop, "pacsbox-lua-operations")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.heartbeat > 0:
            t = threading.Thread(target=self._heartbeat_loop, name="pacsbox-lua-heartbeat", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Let the queued events and operations finish, then stop the threads."""
        self._events.put(None)
        deadline = time.monotonic() + timeout
        if self._threads:
            self._threads[0].join(max(0.0, deadline - time.monotonic()))
        self._operations.put(None)
        self._stop.set()
        for t in self._threads[1:]:
            t.join(max(0.0, deadline - time.monotonic()))

    def post(self, callback: Callable[[], None]) -> None:
        """Queue ``callback()`` for the event thread (notifications, off the request path)."""
        self._events.put(callback)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event and operation is done (tests).

        Returns
        -------
        bool
            False on timeout.
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._events.unfinished_tasks == 0 and self._operations.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def _event_loop(self) -> None:
        while True:
            callback = self._events.get()
            try:
                if callback is None:
                    return
                callback()
            except _lua53.LuaError as e:
                log.error("Error while processing Lua events: %s", _message(e))
            except Exception:  # noqa: BLE001 - the engine goes on
                log.exception("Error while processing Lua events")
            finally:
                self._events.task_done()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat):
            self.post(lambda: self.call("OnHeartBeat"))

    # --------------------------------------------------------------- operations

    def _submit_operations(self, table: Any) -> None:
        ops = self.to_json(table, True) if table is not None else []
        if isinstance(ops, dict) or not ops:
            return
        self._operations.put([_normalize_operation(self, op) for op in ops])

    def _operations_loop(self) -> None:
        age = BATCH_AGE
        while True:
            first = self._operations.get()
            batch = [first]
            # take what is queued, and what keeps coming (until a pause of BATCH_GAP or an age
            # of BATCH_AGE), to send it in as few associations as possible, as Orthanc's Lua
            # job manager keeps its job and association open while instances keep arriving
            # while the stream goes on, each batch may be twice as old as the previous one (up
            # to BATCH_AGE_MAX): fewer associations for a long study, a short first send
            end = time.monotonic() + age
            paused = False
            while first is not None:
                try:
                    batch.append(self._operations.get(timeout=max(0.0, min(BATCH_GAP, end - time.monotonic()))))
                except queue.Empty:
                    paused = time.monotonic() < end
                    break
                if batch[-1] is None or len(batch) >= 1000:
                    break
            age = BATCH_AGE if paused else min(BATCH_AGE_MAX, 2 * age)
            stop = batch[-1] is None
            jobs = [b for b in batch if b is not None]
            try:
                if jobs:
                    self._run_jobs(jobs)
            except Exception:  # noqa: BLE001
                log.exception("Lua: error while running the operations of a script")
            finally:
                for _ in batch:
                    self._operations.task_done()
            if stop:
                return

    def _run_jobs(self, jobs: list[list[dict]]) -> None:
        # first, the sends that start jobs, grouped by destination: one store request for all
        sent: dict[tuple, set[str]] = {}
        groups: dict[tuple, list[str]] = {}
        for ops in jobs:
            if ops and ops[0]["Operation"] in ("store-scu", "store-peer") and ops[0]["Resource"]:
                key = _send_key(ops[0])
                groups.setdefault(key, [])
                if ops[0]["Resource"] not in groups[key]:
                    groups[key].append(ops[0]["Resource"])
        for key, ids in groups.items():
            if len(ids) > 1 and self._send(key, ids):
                sent[key] = set(ids)
        for ops in jobs:
            self._run_job(ops, sent)

    def _run_job(self, ops: list[dict], sent: dict[tuple, set[str]]) -> None:
        previous: list[str] = []
        for i, op in enumerate(ops):
            resource = op["Resource"]
            inputs = [resource] if resource else (previous if i > 0 else [])
            kind = op["Operation"]
            if kind in ("store-scu", "store-peer"):
                key = _send_key(op)
                todo = [r for r in inputs if r not in sent.get(key, ())]
                if todo and not self._send(key, todo):
                    return  # a failed send stops the chain: nothing after it (e.g. Delete) runs
                previous = inputs
            elif kind == "delete":
                for r in inputs:
                    self._delete(r)
                previous = []
            elif kind == "modify":
                previous = [n for n in (self._modify(r, op) for r in inputs) if n]
                if inputs and not previous:
                    return
            elif kind == "call-system":
                for r in inputs:
                    self._call_system(r, op)
                previous = inputs
            else:
                log.error("Lua: unknown operation %s", kind)
                return

    def _send(self, key: tuple, ids: list[str]) -> bool:
        kind, target, local_aet = key
        if kind == "store-scu":
            uri, body = f"/modalities/{target}/store", {"Resources": ids, "Synchronous": True}
            if local_aet:
                body["LocalAet"] = local_aet
        else:
            uri, body = f"/peers/{target}/store", {"Resources": ids, "Synchronous": True}
        answer = call_rest_api(self.ctx.app, "POST", uri, json.dumps(body), origin="Lua")
        if answer.status != 200:
            log.error("Lua: cannot send %d resource(s) with %s: %s %s", len(ids), uri, answer.status,
                      answer.body[:500].decode("utf-8", "replace"))
            return False
        return True

    def _delete(self, resource: str) -> None:
        for level in ("instances", "series", "studies", "patients"):
            answer = call_rest_api(self.ctx.app, "DELETE", f"/{level}/{resource}", origin="Lua")
            if answer.status == 200:
                return
        log.error("Lua: cannot delete resource %s", resource)

    def _modify(self, resource: str, op: dict) -> str | None:
        body = {k: op[k] for k in ("Replace", "Remove", "RemovePrivateTags") if op.get(k) not in (None, {}, [])}
        if "RemovePrivateTags" in body:
            body["RemovePrivateTags"] = body["RemovePrivateTags"] not in (False, "false", "0", 0)
        body["Force"] = True
        modified = call_rest_api(self.ctx.app, "POST", f"/instances/{resource}/modify", json.dumps(body),
                                 origin="Lua")
        if modified.status != 200:
            log.error("Lua: cannot modify instance %s: %s", resource, modified.body[:500])
            return None
        try:  # stored as Orthanc's Lua modify operation does: origin Lua, ModifiedFrom the source
            result = self.ctx.ingest.store(modified.body, {"Origin": "Lua", "Metadata": {"ModifiedFrom": resource}})
        except OrthancError as e:
            log.error("Lua: cannot store the modified instance of %s: %s", resource, e)
            return None
        return result.answer().get("ID")

    def _call_system(self, resource: str, op: dict) -> None:
        if not self.allow_os_io:
            log.error("Lua: CallSystem() needs LuaAllowOsAndIo")
            return
        answer = call_rest_api(self.ctx.app, "GET", f"/instances/{resource}/file", origin="Lua")
        if answer.status != 200:
            log.error("Lua: cannot read instance %s for CallSystem()", resource)
            return
        with tempfile.NamedTemporaryFile(suffix=".dcm", delete=False) as f:
            f.write(answer.body)
        try:
            args = [str(a) for a in (op.get("Arguments") or [])]
            subprocess.run([str(op["Command"]), *args, f.name], check=False, timeout=3600)
        except (OSError, subprocess.SubprocessError) as e:
            log.error("Lua: CallSystem(%s) failed: %s", op.get("Command"), e)
        finally:
            os.unlink(f.name)


def _send_key(op: dict) -> tuple:
    if op["Operation"] == "store-scu":
        return ("store-scu", op.get("Modality") or "", op.get("LocalAet") or "")
    return ("store-peer", op.get("Peer") or "", "")


def _normalize_operation(engine: LuaEngine, op: Any) -> dict:
    op = dict(op) if isinstance(op, dict) else {}
    op.setdefault("Operation", "")
    op["Resource"] = str(op.get("Resource") or "")
    return op


def _lupa_table(value: Any) -> bool:
    return type(value).__name__ == "_LuaTable"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _message(error: BaseException) -> str:
    """Lua's error message, without lupa's traceback lines."""
    text = str(error)
    if text.startswith("error loading code: "):
        text = text[len("error loading code: "):]
    return text.split("\nstack traceback:")[0].strip()


def simplified_tags(dataset: Any) -> dict[str, Any]:
    """Orthanc's simplified tags (``/instances/{id}/simplified-tags``) of a parsed dataset."""
    return dataset_to_json(dataset, "simplify", skip_pixel_data=True)
