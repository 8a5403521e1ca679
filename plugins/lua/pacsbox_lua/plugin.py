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

from pacsbox import ErrorCode, OptionSpec, OrthancError, RouteSpec, StartupError, hookimpl, read_body, send_text

from .dicom import fields_query, fields_table, json_worklist, query_table, table_fields, worklist_json
from .engine import LuaEngine, orthanc_origin, simplified_tags

log = logging.getLogger("pacsbox.lua")

STASH_KEY = "lua"
FILTERS_KEY = "lua.filters"

#: Orthanc's names of the levels, for ``OnChange`` and the ``OnStable*`` callbacks.
_STABLE = {"StablePatient": ("OnStablePatient", "patients"), "StableStudy": ("OnStableStudy", "studies"),
           "StableSeries": ("OnStableSeries", "series")}
_JOB_EVENTS = {"Success": "OnJobSuccess", "Failure": "OnJobFailure"}
#: The changes that call ``OnUpdated<Level>(id)`` (Orthanc's ``LuaScripting::UpdateEvent``).
_UPDATES = frozenset(("UpdatedAttachment", "UpdatedMetadata"))
_UPDATED = {"Patient": "OnUpdatedPatient", "Study": "OnUpdatedStudy", "Series": "OnUpdatedSeries",
            "Instance": "OnUpdatedInstance"}
#: ``OnDeleted<Level>(id)``, called for each resource a deletion removes (Orthanc's
#: ``LuaScripting::DeleteEvent``, from its ``Deleted`` change).
_DELETED = {"Patient": "OnDeletedPatient", "Study": "OnDeletedStudy", "Series": "OnDeletedSeries",
            "Instance": "OnDeletedInstance"}
#: The callbacks served by the notification hooks.
NOTIFICATION_CALLBACKS = ("OnStoredInstance", "OnChange", "OnStableStudy", "OnStableSeries", "OnStablePatient",
                          "OnJobSubmitted", "OnJobSuccess", "OnJobFailure", *_UPDATED.values(), *_DELETED.values())

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


class ExecuteScriptRoute:
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


def _instance_arguments(dataset: Any, origin: Mapping[str, Any]) -> tuple[dict, dict, dict]:
    """``(tags, origin, info)`` of Orthanc's instance filters: the simplified tags, the
    origin table and ``{"HasPixelData", "TransferSyntaxUID"}``."""
    meta = getattr(dataset, "file_meta", None)
    info: dict[str, Any] = {"HasPixelData": "PixelData" in dataset}
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts:
        info["TransferSyntaxUID"] = str(ts)
    return simplified_tags(dataset), orthanc_origin(origin), info


class _InstanceFilter:
    """``ReceivedInstanceFilter(tags, origin, info)``, in the storing thread."""

    def __init__(self, engine: LuaEngine) -> None:
        self.engine = engine

    @hookimpl
    def filter_received_instance(self, dataset: Any, origin: Mapping[str, Any]) -> bool | None:
        """Ask the script; anything but ``true`` refuses the instance."""
        result = self.engine.call("ReceivedInstanceFilter", *_instance_arguments(dataset, origin))
        if not isinstance(result, bool):
            log.error("Lua: ReceivedInstanceFilter() must return a Boolean; the instance is refused")
            return False
        return result


def _lua_integer(value: Any, name: str) -> int:
    """A callback's result read as Orthanc's ``LuaFunctionCall::ExecuteToInt``: a number
    (or numeric string) as an integer, a non-integral one as 0 (``lua_tointeger``).

    Raises
    ------
    OrthancError
        ``LUA_RETURNS_NO_STRING`` (Orthanc's error there) for anything else.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OrthancError(ErrorCode.LUA_RETURNS_NO_STRING, f"Lua: {name}() must return a number")
    if isinstance(value, float):
        return int(value) if value.is_integer() else 0
    return value


class _CStoreFilter:
    """``ReceivedCStoreInstanceFilter(tags, origin, info)`` (Orthanc 1.10.1) and
    ``IncomingCStoreInstanceFilter(tags, origin, info)`` (pacsbox's, with the convention of
    Orthanc's plugin SDK), through the dicom_net plugin's ``filter_incoming_cstore``, in
    the SCP's thread, with the filters' interpreter."""

    def __init__(self, engine: LuaEngine) -> None:
        self.engine = engine

    @hookimpl(optionalhook=True)
    def filter_incoming_cstore(self, dataset: Any, origin: Mapping[str, Any]) -> int | None:
        """``ReceivedCStoreInstanceFilter`` first: a result whose low 16 bits are 0
        discards the instance with Success, anything else stores it, as Orthanc 1.10.1
        (which turns the integer into a Boolean). Then ``IncomingCStoreInstanceFilter``: 0
        stores, another number (low 16 bits) refuses the instance with that DIMSE status.

        Raises
        ------
        OrthancError
            The script failed or returned something else than a number: the SCP answers
            ``0xA700`` (as Orthanc answers a filter that throws).
        """
        engine = self.engine
        received = engine.has_function("ReceivedCStoreInstanceFilter")
        incoming = engine.has_function("IncomingCStoreInstanceFilter")
        if not (received or incoming):
            return None
        args = _instance_arguments(dataset, origin)
        if received:
            result = engine.call_or_raise("ReceivedCStoreInstanceFilter", *args)
            if _lua_integer(result, "ReceivedCStoreInstanceFilter") & 0xFFFF == 0:
                return 0
        if incoming:
            result = engine.call_or_raise("IncomingCStoreInstanceFilter", *args)
            return (_lua_integer(result, "IncomingCStoreInstanceFilter") & 0xFFFF) or None
        return None


def _find_origin(origin: Mapping[str, Any]) -> dict[str, str]:
    """Orthanc's ``origin`` of the C-FIND filters (``OrthancFindRequestHandler::FormatOrigin``).
    Its ``Manufacturer`` is always ``Generic``: Orthanc 1.10.1's C-FIND SCP never looks the
    caller up among the modalities (checked side by side with a caller whose modality is
    ``GE``)."""
    return {"RemoteIp": str(origin.get("RemoteIP") or ""), "RemoteAet": str(origin.get("RemoteAET") or ""),
            "CalledAet": str(origin.get("CalledAET") or ""), "Manufacturer": "Generic"}


class _FindFilter:
    """``IncomingFindRequestFilter(query, origin)``, through the dicom_net plugin's
    ``filter_incoming_find``, in the SCP's thread, with the main interpreter (as Orthanc:
    ``execute-script`` can define it)."""

    def __init__(self, engine: LuaEngine) -> None:
        self.engine = engine

    @hookimpl(optionalhook=True)
    def filter_incoming_find(self, query: Any, origin: Mapping[str, Any]) -> Any:
        """Give the script the query as a flat table; what it returns is the query
        (the sequences of the received one kept).

        Raises
        ------
        OrthancError
            A Lua error, or a result that is not a table of tag names to strings (the
            SCP answers ``0xC000``, as Orthanc).
        """
        if not self.engine.has_function("IncomingFindRequestFilter"):
            return None
        default = getattr(self.engine.ctx.ingest, "default_encoding", "latin_1")
        result = self.engine.call_or_raise("IncomingFindRequestFilter", query_table(query, default),
                                           _find_origin(origin), keep_strings=True)
        return fields_query(table_fields(result), query)


class _WorklistFilter:
    """``IncomingWorklistRequestFilter(query, origin)``, through the dicom_net plugin's
    ``filter_incoming_worklist``, in the SCP's thread, with the main interpreter."""

    def __init__(self, engine: LuaEngine) -> None:
        self.engine = engine

    @hookimpl(optionalhook=True)
    def filter_incoming_worklist(self, query: Any, origin: Mapping[str, Any]) -> Any:
        """Give the script the query in Orthanc's short JSON (sequences as arrays of
        tables); what it returns is the query.

        Raises
        ------
        OrthancError
            A Lua error, or a result that is not such a table (the SCP answers ``0xC000``).
        """
        if not self.engine.has_function("IncomingWorklistRequestFilter"):
            return None
        default = getattr(self.engine.ctx.ingest, "default_encoding", "latin_1")
        result = self.engine.call_or_raise("IncomingWorklistRequestFilter", worklist_json(query, default),
                                           _find_origin(origin), keep_strings=True)
        return json_worklist(result, query)


class _OutgoingFindFilter:
    """``OutgoingFindRequestFilter(query, modality)``, through the dicom_net plugin's
    ``filter_outgoing_find``, in the REST request's thread, with the main interpreter."""

    def __init__(self, engine: LuaEngine) -> None:
        self.engine = engine

    @hookimpl(optionalhook=True)
    def filter_outgoing_find(self, query: Mapping[int, str], level: str,
                             modality: Mapping[str, Any]) -> Mapping[int, str] | None:
        """Give the script the keys as a flat table and the modality's AET; what it
        returns is sent (then normalized).

        Raises
        ------
        OrthancError
            500 ``CannotExecuteLua`` for a Lua error, ``LuaBadOutput`` for a result that
            is not a table of tag names to strings: the route answers it, as Orthanc.
        """
        if not self.engine.has_function("OutgoingFindRequestFilter"):
            return None
        result = self.engine.call_or_raise("OutgoingFindRequestFilter", fields_table(query),
                                           str(modality.get("AET", "")), keep_strings=True)
        return table_fields(result)


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
        updated = _UPDATED.get(change.get("ResourceType")) if change.get("ChangeType") in _UPDATES else None
        if updated and engine.has_function(updated):
            rid = change.get("ID")
            engine.post(lambda: engine.call(updated, rid))

    @hookimpl
    def resources_deleted(self, ctx: Any, resources: Any) -> None:
        """Queue ``OnDeleted<Level>(id)`` for each removed resource that has one."""
        engine = self.engine
        calls = [(_DELETED[r["ResourceType"]], r["ID"]) for r in resources
                 if r.get("ResourceType") in _DELETED and engine.has_function(_DELETED[r["ResourceType"]])]
        for name, rid in calls:
            engine.post(lambda name=name, rid=rid: engine.call(name, rid))

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
            ("cstore", filters, ("ReceivedCStoreInstanceFilter", "IncomingCStoreInstanceFilter"),
             lambda: _CStoreFilter(filters)),
            ("find", engine, ("IncomingFindRequestFilter",), lambda: _FindFilter(engine)),
            ("worklist", engine, ("IncomingWorklistRequestFilter",), lambda: _WorklistFilter(engine)),
            ("outgoing", engine, ("OutgoingFindRequestFilter",), lambda: _OutgoingFindFilter(engine)),
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

@hookimpl
def register_options() -> list[OptionSpec]:
    """The Lua options (see the module docstring); the core checks them at start-up."""
    return [
        OptionSpec("LuaScripts", "str|list[str]?", [], "Lua files run at start, in order (relative to the "
                   "configuration file's folder)"),
        OptionSpec("ExecuteLuaEnabled", "bool", False, "Enable POST /tools/execute-script"),
        OptionSpec("LuaHeartBeatPeriod", "number>=0", 0, "Seconds between two OnHeartBeat() calls (0: never)"),
        OptionSpec("LuaScriptTimeout", "number>=0", 10, "Seconds a script or callback may run (0: no limit)"),
        OptionSpec("LuaAllowOsAndIo", "bool", False, "Give scripts the whole os and io libraries and CallSystem()"),
    ]


@hookimpl
def register_routes(ctx: Any) -> list[RouteSpec]:
    """``POST /tools/execute-script``."""
    return [RouteSpec("/tools/execute-script", ExecuteScriptRoute)]


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
    ``execute-script``, the C-FIND filters) and one for the instance filters
    (``ReceivedInstanceFilter``, ``IncomingHttpRequestFilter``, ``ReceivedCStoreInstanceFilter``,
    ``IncomingCStoreInstanceFilter``), each with its own lock. So a callback that holds the main
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
