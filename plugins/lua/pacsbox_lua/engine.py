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

The engine's parts live next to it: :mod:`.values` converts between Python and Lua values,
:mod:`.script_functions` holds the global functions written in Python (``RestApiGet``,
``HttpGet``, ``ParseJson``...), :mod:`.operations` runs the recorded operations.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from importlib import resources as _resources
from typing import Any, Callable, Mapping

import lupa.lua53 as _lua53

from pacsbox import ErrorCode, OrthancError, dataset_to_json

from .operations import OperationsRunner
from .script_functions import ScriptFunctions
from .values import LuaValues, text

log = logging.getLogger("pacsbox.lua")

#: Orthanc's origin names (``RequestOrigin``) for pacsbox's ``Origin`` values.
_ORIGIN_KEYS = (("RemoteIP", "RemoteIp"), ("RemoteAET", "RemoteAet"), ("CalledAET", "CalledAet"),
                ("HttpUsername", "Username"))

#: ``os`` functions kept when ``LuaAllowOsAndIo`` is false (they touch nothing outside).
_SAFE_OS = ("clock", "date", "difftime", "time")

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

    Attributes
    ----------
    to_lua, to_json : callable
        The interpreter's conversions, :meth:`LuaValues.to_lua` (a JSON-like Python value
        as a Lua value) and :meth:`LuaValues.to_json` (a Lua value as JSON-like Python,
        ``keep_strings`` as Orthanc's ``ExecuteToJson``).
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
        self._local = threading.local()
        self._events: queue.Queue = queue.Queue()
        self._operations = OperationsRunner(ctx, self.allow_os_io)
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
        values = LuaValues(lua)
        self.to_lua, self.to_json = values.to_lua, values.to_json
        self._lua_type = values.lua_type
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
        self._functions = ScriptFunctions(self.ctx, values)
        # wrapped in Lua closures, so that type(HttpGet) is "function" as in Orthanc
        wrap = lua.eval("function(f) return function(...) return f(...) end end")
        for name, fn in self._functions.table().items():
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
            defined = frozenset(text(names[i]) for i in range(1, len(names) + 1))
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
        functions = self._functions

        def run():
            previous, functions.output = functions.output, []
            try:
                self.lua.execute(code, name="=[string \"line\"]")
                return "".join(functions.output)
            finally:
                functions.output = previous
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

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        """Start the event thread and the operations thread (and the heart beat)."""
        for target, name in ((self._event_loop, "pacsbox-lua-events"),
                             (self._operations.run, "pacsbox-lua-operations")):
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
        self._operations.finish()
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
            if self._events.unfinished_tasks == 0 and self._operations.idle():
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
        self._operations.submit(ops)


def _message(error: BaseException) -> str:
    """Lua's error message, without lupa's traceback lines."""
    message = str(error)
    if message.startswith("error loading code: "):
        message = message[len("error loading code: "):]
    return message.split("\nstack traceback:")[0].strip()


def simplified_tags(dataset: Any) -> dict[str, Any]:
    """Orthanc's simplified tags (``/instances/{id}/simplified-tags``) of a parsed dataset."""
    return dataset_to_json(dataset, "simplify", skip_pixel_data=True)
