"""Hook implementations of the Lua plugin (entry point ``lua``).

Options (Orthanc's names, plus three of pacsbox's):

- ``LuaScripts``: list of files run at start, in order, in one shared interpreter; a path
  is relative to the configuration file's folder. A script that fails stops the start-up
  with its file and line.
- ``ExecuteLuaEnabled`` (default false): enables ``POST /tools/execute-script``; when false
  the route answers 403 with an empty body, as Orthanc 1.10.1.
- ``LuaHeartBeatPeriod`` (seconds, default 0 = never): period of ``OnHeartBeat()``.
- ``LuaScriptTimeout`` (seconds, default 10, 0 = no limit): a script or callback running
  Lua code longer than this is stopped with an error (the server goes on).
- ``LuaAllowOsAndIo`` (default false): give scripts the whole ``os`` and ``io`` libraries
  and ``CallSystem()``, as Orthanc does; when false, ``io`` is absent and ``os`` holds only
  ``clock``, ``date``, ``difftime`` and ``time``. Set it to true for existing scripts that
  write files or run commands.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from pacsbox import ConfigError, OrthancError, RouteSpec, StartupError, hookimpl, read_body, send_text

from .engine import LuaEngine, orthanc_origin, simplified_tags

log = logging.getLogger("pacsbox.lua")

STASH_KEY = "lua"
FILTERS_KEY = "lua.filters"

#: Orthanc's names of the levels, for ``OnChange`` and the ``OnStable*`` callbacks.
_STABLE = {"StablePatient": ("OnStablePatient", "patients"), "StableStudy": ("OnStableStudy", "studies"),
           "StableSeries": ("OnStableSeries", "series")}
_JOB_EVENTS = {"Success": "OnJobSuccess", "Failure": "OnJobFailure"}
#: The callbacks served by the notification hooks.
NOTIFICATION_CALLBACKS = ("OnStoredInstance", "OnChange", "OnStableStudy", "OnStableSeries", "OnStablePatient",
                          "OnJobSubmitted", "OnJobSuccess", "OnJobFailure")

#: Study-level tags Orthanc keeps for ``OnStableStudy`` (``DicomMap::ExtractStudyInformation``
#: discards the patient's tags that a study carries).
_PATIENT_TAGS = frozenset(("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                           "OtherPatientIDs", "PatientBirthTime", "PatientComments"))


def engine_of(ctx: Any) -> LuaEngine | None:
    """The app's :class:`LuaEngine` (None before ``startup`` or once it is shut down).

    Parameters
    ----------
    ctx : ServerContext
        The app's services.

    Returns
    -------
    LuaEngine or None
    """
    return ctx.stash.get(STASH_KEY)


class ExecuteScript:
    """``POST /tools/execute-script``: run the body in the shared interpreter, answer what it
    printed (``text/plain``); 403 with an empty body unless ``ExecuteLuaEnabled``."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_post(self, req: Any, resp: Any) -> None:
        """Run the script.

        Raises
        ------
        OrthancError
            ``CANNOT_EXECUTE_LUA`` (500) with Lua's message when the script fails.
        """
        engine = engine_of(self.ctx)
        if engine is None or not _flag(self.ctx.config.plugin_config("ExecuteLuaEnabled", False)):
            log.error("The service /tools/execute-script is disabled; set ExecuteLuaEnabled to true")
            resp.status = 403
            resp.content_type = None
            resp.data = b""
            return
        out = engine.execute(read_body(req))
        refresh_hooks(self.ctx)
        send_text(resp, out)


# ------------------------------------------------------------------ per-app hook objects

class _HttpFilter:
    """``IncomingHttpRequestFilter(method, uri, ip, username, headers)``, in the request thread."""

    def __init__(self, engine: LuaEngine) -> None:
        self.engine = engine

    @hookimpl
    def filter_incoming_http_request(self, method: str, uri: str, ip: str, username: str | None,
                                     headers: Mapping[str, str]) -> bool | None:
        """Ask the script; anything but ``true`` refuses (403)."""
        if not self.engine.has_function("IncomingHttpRequestFilter"):
            return None
        result = self.engine.call("IncomingHttpRequestFilter", method, uri, ip, username or "", dict(headers))
        if not isinstance(result, bool):
            log.error("Lua: IncomingHttpRequestFilter() must return a Boolean; refusing %s %s", method, uri)
            return False
        return result


class _InstanceFilter:
    """``ReceivedInstanceFilter(tags, origin, info)``, in the storing thread."""

    def __init__(self, engine: LuaEngine) -> None:
        self.engine = engine

    @hookimpl
    def filter_received_instance(self, dataset: Any, origin: Mapping[str, Any]) -> bool | None:
        """Ask the script; anything but ``true`` refuses the instance."""
        meta = getattr(dataset, "file_meta", None)
        info = {"HasPixelData": "PixelData" in dataset}
        ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
        if ts:
            info["TransferSyntaxUID"] = str(ts)
        result = self.engine.call("ReceivedInstanceFilter", simplified_tags(dataset), orthanc_origin(origin), info)
        if not isinstance(result, bool):
            log.error("Lua: ReceivedInstanceFilter() must return a Boolean; the instance is refused")
            return False
        return result


def _on_stored(engine: LuaEngine, instance_id: str) -> None:
    """``OnStoredInstance(instanceId, tags, metadata, origin)``: the tables are read on first
    use (the instance's simplified tags and metadata as stored), so a callback that does not
    look at them costs no parsing."""
    if not engine.has_function("OnStoredInstance"):
        return
    from pacsbox import call_rest_api
    index = engine.ctx.index
    cache: dict[str, Any] = {}

    def metadata() -> dict:
        if "m" not in cache:
            res = index.lookup(instance_id)
            cache["m"] = index.metadata(res.internal_id) if res is not None else {}
        return cache["m"]

    def tags() -> dict:
        answer = call_rest_api(engine.ctx.app, "GET", f"/instances/{instance_id}/simplified-tags", origin="Lua")
        return answer.json() if answer.status == 200 else {}

    engine.call("OnStoredInstance", instance_id, engine.lazy(tags), engine.lazy(metadata),
                engine.lazy(lambda: orthanc_origin(metadata())), operations=True)


class _Notifications:
    """``OnChange``, ``OnStable*`` and ``OnJob*``: queued for the engine's thread."""

    def __init__(self, engine: LuaEngine) -> None:
        self.engine = engine

    @hookimpl
    def change_recorded(self, ctx: Any, change: Mapping[str, Any]) -> None:
        """Queue ``OnStoredInstance`` (for ``NewInstance``), ``OnChange`` and, for stable
        resources, ``OnStable*``."""
        change = dict(change)
        engine = self.engine
        if change.get("ChangeType") == "NewInstance" and engine.has_function("OnStoredInstance"):
            engine.post(lambda: _on_stored(engine, str(change.get("ID"))))
        stable = _STABLE.get(change.get("ChangeType"))
        if engine.has_function("OnChange") or (stable and engine.has_function(stable[0])):
            engine.post(lambda: _on_change(engine, change))

    @hookimpl
    def job_state_changed(self, ctx: Any, job_info: Any) -> None:
        """Queue ``OnJobSubmitted``, ``OnJobSuccess`` or ``OnJobFailure``."""
        if job_info.previous_state is None:
            name = "OnJobSubmitted"
        else:
            name = _JOB_EVENTS.get(job_info.state)
        if name and self.engine.has_function(name):
            job_id = job_info.id
            self.engine.post(lambda: self.engine.call(name, job_id))


def _on_change(engine: LuaEngine, change: dict) -> None:
    kind, level, rid = change.get("ChangeType"), change.get("ResourceType"), change.get("ID")
    engine.call("OnChange", kind, level, rid)
    if kind not in _STABLE:
        return
    name, plural = _STABLE[kind]
    if not engine.has_function(name):
        return
    from pacsbox import call_rest_api
    res = call_rest_api(engine.ctx.app, "GET", f"/{plural}/{rid}", origin="Lua")
    meta = call_rest_api(engine.ctx.app, "GET", f"/{plural}/{rid}/metadata?expand", origin="Lua")
    if res.status != 200:
        return
    tags = dict(res.json().get("MainDicomTags") or {})
    if kind == "StableStudy":
        tags = {k: v for k, v in tags.items() if k not in _PATIENT_TAGS}
    engine.call(name, rid, tags, meta.json() if meta.status == 200 else {}, operations=True)


def refresh_hooks(ctx: Any) -> None:
    """Register the per-app hooks whose Lua callback exists, unregister the others.

    Each hook object is registered only while the scripts define a callback it serves, so
    that the plugin costs nothing on the paths the scripts do not use
    (``filter_received_instance`` would make the core parse every incoming instance; the
    notifications would be dispatched for every change). Called after the start-up scripts
    and after every ``execute-script``.

    Parameters
    ----------
    ctx : ServerContext
        The app's services.
    """
    engine, filters = engine_of(ctx), ctx.stash.get(FILTERS_KEY)
    if engine is None or filters is None:
        return
    state = ctx.stash.setdefault("lua.hooks", {})
    for key, owner, callbacks, factory in (
            ("filter", filters, ("ReceivedInstanceFilter",), lambda: _InstanceFilter(filters)),
            ("http", filters, ("IncomingHttpRequestFilter",), lambda: _HttpFilter(filters)),
            ("notify", engine, NOTIFICATION_CALLBACKS, lambda: _Notifications(engine))):
        wanted = any(owner.has_function(c) for c in callbacks)
        current = state.get(key)
        if wanted and current is None:
            obj = factory()
            ctx.pm.register(obj, name=f"lua.{key}.{id(ctx)}")
            state[key] = obj
        elif not wanted and current is not None:
            ctx.pm.unregister(current)
            del state[key]


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


# ----------------------------------------------------------------------------- hooks

#: The top-level options this plugin reads.
OPTIONS = ("LuaScripts", "ExecuteLuaEnabled", "LuaHeartBeatPeriod", "LuaScriptTimeout", "LuaAllowOsAndIo")


@hookimpl
def configure(config: Any) -> None:
    """Declare the Lua options and check their types.

    Raises
    ------
    ConfigError
        ``LuaScripts`` is not a string or a list of strings, or a period or timeout is not a
        non-negative number.
    """
    declare = getattr(config, "declare_options", None)  # the core's typo warnings, when present
    if declare is not None:
        declare(OPTIONS)
    scripts = config.plugin_config("LuaScripts", [])
    if scripts is not None and not isinstance(scripts, str) and not (
            isinstance(scripts, list) and all(isinstance(x, str) for x in scripts)):
        raise ConfigError(f"option LuaScripts: {scripts!r} is not a list of file names")
    for name in ("LuaHeartBeatPeriod", "LuaScriptTimeout"):
        value = config.plugin_config(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"option {name}: {value!r} is not a non-negative number of seconds")


@hookimpl
def register_routes(ctx: Any) -> list[RouteSpec]:
    """``POST /tools/execute-script``."""
    return [RouteSpec("/tools/execute-script", ExecuteScript)]


@hookimpl
def filter_incoming_http_request(method: str, uri: str, ip: str, username: str | None,
                                 headers: Mapping[str, str]) -> None:
    """No opinion here: it only switches the core's request filters on; the app's own
    ``IncomingHttpRequestFilter`` is a per-app hook object registered at ``startup``."""
    return None


@hookimpl
def startup(ctx: Any) -> None:
    """Create the interpreters, run ``LuaScripts`` in order in each, start the threads, queue
    ``Initialize()``.

    As Orthanc 1.10.1, the scripts are loaded in two interpreters: the main one (callbacks,
    ``execute-script``) and one for the filters (``ReceivedInstanceFilter``,
    ``IncomingHttpRequestFilter``), each with its own lock. So a callback that holds the main
    interpreter while the REST API it calls makes another thread run a filter (a C-STORE to
    this server, a job storing instances) does not deadlock.

    Raises
    ------
    StartupError
        A script cannot be read or fails (its file and line named).
    """
    cfg = ctx.config
    options = dict(timeout=float(cfg.plugin_config("LuaScriptTimeout", 10) or 0),
                   allow_os_io=_flag(cfg.plugin_config("LuaAllowOsAndIo", False)))
    engine = LuaEngine(ctx, heartbeat=float(cfg.plugin_config("LuaHeartBeatPeriod", 0) or 0), **options)
    filters = LuaEngine(ctx, **options)
    scripts = cfg.plugin_config("LuaScripts", []) or []
    if isinstance(scripts, str):
        scripts = [scripts]
    base = getattr(cfg, "base_dir", None)
    for script in scripts:
        path = str(script)
        if base is not None and not path.startswith("/"):
            path = str(base / path)
        log.info("Installing the Lua scripts from: %s", path)
        try:
            engine.load_script(path)
            filters.load_script(path)
        except OSError as e:
            raise StartupError(f"Lua: cannot read the script {path}: {e}") from None
        except OrthancError as e:
            raise StartupError(f"Lua: error in the script {path}: {e.details or e}") from None
    ctx.stash[STASH_KEY] = engine
    ctx.stash[FILTERS_KEY] = filters
    refresh_hooks(ctx)
    engine.on_callbacks_changed = lambda: refresh_hooks(ctx)
    engine.start()
    engine.post(lambda: engine.call("Initialize", operations=True))


@hookimpl
def shutdown(ctx: Any) -> None:
    """Queue ``Finalize()``, let the queued events and operations finish, stop the threads."""
    engine = ctx.stash.get(STASH_KEY)
    if engine is None:
        return
    engine.post(lambda: engine.call("Finalize"))
    engine.stop()
    ctx.stash.pop(STASH_KEY, None)
    ctx.stash.pop(FILTERS_KEY, None)
