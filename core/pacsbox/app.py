"""``create_app``: build one pacsbox application (plugins, services, routes) per call.

Nothing is global: two apps built in one process have separate plugin managers,
indexes, engines and metrics.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Iterable, Mapping

import falcon

from .config import Config
from .options import OptionSpec, validate_core_options
from .context import ServerContext
from .errors import StartupError, install_error_handlers
from .index import create_index
from .index.index import IndexInUseError
from .ingest import Ingest
from .jobs.base import Job
from .jobs.engine import JobsEngine, JobTypeRegistry
from .metrics import MetricSpec, MetricsStore
from .notify import Notifier
from .plugins import DEFAULT_PLUGINS, PacsboxPluginManager, build_plugin_manager
from .resources import ResourceService
from .routing.middleware import MetricsMiddleware, SecurityMiddleware, XmlMiddleware
from .routing.registry import RouteRegistry, RouteSpec
from .storage.pending import JOURNAL_NAME, PendingFiles
from .web import BodyLimitMiddleware

log = logging.getLogger("pacsbox.app")


class PacsboxApp(falcon.App):
    """A falcon WSGI app carrying its :class:`ServerContext` as ``.ctx``.

    Call :meth:`close` to stop the jobs engine and background threads and to close the
    index.
    """

    ctx: ServerContext

    def close(self) -> None:
        """Shut the app down: ``shutdown`` hooks, jobs saved, threads stopped, index closed."""
        ctx = self.ctx
        if getattr(ctx, "_closed", False):
            return
        ctx._closed = True
        stop = getattr(ctx, "_stop_event", None)
        if stop is not None:
            stop.set()
        if getattr(ctx, "_startup_ran", True):
            ctx.pm.call("shutdown", {"ctx": ctx})
        try:
            ctx.jobs.stop()
        finally:
            ctx.notifier.stop()
            ctx.index.close()
            ctx.pending_files.close()


def _declarations(pm: PacsboxPluginManager, hook_name: str, kind: type, ctx: ServerContext,
                  *, classes: bool = False) -> list[tuple[str, Any]]:
    """Collect the declarations of a registration hook, checking their type.

    Returns
    -------
    list of (str, object)
        ``(plugin name, declaration)`` in pluggy's call order.

    Raises
    ------
    StartupError
        An implementation raised, returned something that is not a sequence, or a
        declaration of the wrong type (the message names the plugin and the hook).
    """
    out = []
    for plugin, result in pm.call(hook_name, {"ctx": ctx}):
        if isinstance(result, (str, bytes, Mapping)) or not isinstance(result, Iterable):
            raise StartupError(f"plugin {plugin!r}: hook {hook_name} must return a list, "
                               f"not {type(result).__name__}")
        for item in result:
            ok = isinstance(item, type) and issubclass(item, kind) if classes else isinstance(item, kind)
            if not ok:
                want = f"subclass of {kind.__name__}" if classes else kind.__name__
                raise StartupError(f"plugin {plugin!r}: hook {hook_name} returned {item!r}, expected a {want}")
            out.append((plugin, item))
    return out


def create_app(config: Config | Mapping[str, Any] | None = None, *, plugins: Iterable[Any] | None = None,
               load_entrypoints: bool = True, load_jobs: bool = True, start_jobs: bool = True,
               run_startup: bool = True) -> PacsboxApp:
    """Build a pacsbox WSGI application with its own plugin manager and services.

    Steps: build the plugin manager (:func:`pacsbox.plugins.build_plugin_manager`:
    hookspecs, blocklist, entry points, ``DEFAULT_PLUGINS``, ``plugins``,
    ``check_pending()``); collect ``register_options`` and check the declared options;
    call ``configure``; get the storage area
    (``get_storage_area``); open the index; collect ``register_job_types``,
    ``register_routes`` and ``register_metrics``; mount the routes; start the
    notification dispatcher; call ``startup``; reload saved jobs; start the job workers.

    Parameters
    ----------
    config : Config or mapping, optional
        Orthanc-style options (defaults when None).
    plugins : iterable, optional
        Extra plugin objects/modules registered for this app only (tests, embedding).
    load_entrypoints : bool, default True
        Load the installed ``pacsbox.plugins`` entry points (tests usually pass False
        and list their plugins explicitly).
    load_jobs : bool, default True
        Reload the saved jobs registry (``pacsbox serve --no-jobs`` sets False).
    start_jobs : bool, default True
        Start the job workers.
    run_startup : bool, default True
        Call the ``startup`` hooks (and ``shutdown`` at :meth:`PacsboxApp.close`).
        ``pacsbox plugins`` passes False to list the declarations without starting any
        plugin service.

    Returns
    -------
    PacsboxApp
        A falcon WSGI app; ``app.ctx`` is its :class:`ServerContext`; call
        ``app.close()`` to stop it.

    Raises
    ------
    PluginLoadError
        An entry point cannot be imported (names the entry point and its distribution),
        or two distributions advertise the same plugin name.
    StartupError
        Duplicate route or job type (both plugins named); a plugin raising in
        ``add_hookspecs``, ``configure``, ``get_storage_area``, a registration hook or
        ``startup``, or returning a declaration of the wrong type (the plugin and the
        hook named); no storage area.
    pluggy.PluginValidationError
        An implementation does not match its spec or implements an unknown hook.
    ConfigError
        A malformed core option (:func:`pacsbox.options.validate_core_options`: the
        message names the option, its value and what is expected), or a malformed option
        a plugin declared with ``register_options`` (the plugin named too). A plugin's
        ``ConfigError`` from ``configure`` comes as a ``StartupError`` whose
        ``__cause__`` is that ``ConfigError``.

    Notes
    -----
    Nothing is module-global: two apps in one process have separate plugin managers,
    indexes, job engines, metrics and notification threads. When the start-up fails
    after the index was opened, the index is closed again.
    """
    if not isinstance(config, Config):
        config = Config(config or {})
    validate_core_options(config)
    pm = build_plugin_manager(config, plugins=plugins, load_entrypoints=load_entrypoints)
    ctx = ServerContext(config)
    ctx.started_at = time.time()
    ctx.pm = pm
    for plugin, spec in _declarations(pm, "register_options", OptionSpec, ctx):
        try:
            config.declare(dataclasses.replace(spec, plugin=plugin))
        except ValueError as e:
            raise StartupError(str(e)) from None
    config.validate_declared()
    pm.call("configure", {"config": config})
    for name, closest in config.unknown_options():  # kept for plugins, but likely a typo
        log.warning("unknown option %r: no loaded plugin declares it (it is kept)%s", name,
                    f"; did you mean {closest!r}?" if closest else "")

    ctx.metrics = MetricsStore(enabled=config.bool("MetricsEnabled"), strict=True)  # a misspelt name fails
    ctx.notifier = Notifier(pm)
    storage = pm.call("get_storage_area", {"config": config})
    if storage is None:
        raise StartupError("no plugin provided a storage area (hook get_storage_area)")
    ctx.storage = storage
    try:
        ctx.index = create_index(config)
    except IndexInUseError as e:
        raise StartupError(str(e)) from None
    # every change-log row the index writes becomes a change_recorded notification
    ctx.index.add_change_listener(lambda change: ctx.notifier.emit("change_recorded", ctx=ctx, change=change))
    cleanup = getattr(storage, "cleanup_temporary_files", None)
    if cleanup is not None:  # half-written files of a crash (the index lock says nobody else writes)
        removed = cleanup()
        if removed:
            log.info("removed %d temporary files left by an interrupted write", removed)
    # files written (or dereferenced) by a transaction a crash interrupted
    ctx.pending_files = PendingFiles(config.path("IndexDirectory") / JOURNAL_NAME, sync=config.bool("SyncStorageArea"))
    try:
        removed = ctx.pending_files.recover(ctx.index, storage)
    except BaseException:
        ctx.index.close()
        raise
    if removed:
        log.info("removed %d storage files that no attachment references (interrupted writes or deletions)",
                 removed)
    started: list[str] = []
    try:
        app = _build(ctx, pm, config)
        ctx.notifier.start()
        if run_startup:
            pm.call("startup", {"ctx": ctx}, done=started)
        ctx._startup_ran = run_startup
    except BaseException:
        if started:
            pm.call("shutdown", {"ctx": ctx}, only=started)
        ctx.notifier.stop()
        ctx.index.close()
        raise
    if load_jobs and config.bool("SaveJobs"):
        n = ctx.jobs.load()
        if n:
            log.info("reloaded %d saved jobs", n)
    if run_startup:
        jobs = [rec.job for rec in ctx.jobs.records()]
        for cls in ctx.job_types.classes():  # e.g. archive files of jobs that no longer exist
            try:
                cls.recover(ctx, jobs)
            except Exception:  # noqa: BLE001 - a cleanup, not a reason to refuse to start
                log.exception("job type %s: recover() failed", cls.type_name)
    if start_jobs:
        ctx.jobs.start()
    _start_stability_monitor(ctx)
    return app


def _build(ctx: ServerContext, pm: PacsboxPluginManager, config: Config) -> PacsboxApp:
    """Services, registrations (job types, routes, metrics) and the falcon app."""
    ctx.ingest = Ingest(ctx)
    ctx.resources = ResourceService(ctx)

    job_types = JobTypeRegistry()
    for plugin, cls in _declarations(pm, "register_job_types", Job, ctx, classes=True):
        job_types.add(cls, plugin)
    ctx.job_types = job_types
    ctx.jobs = JobsEngine(ctx, job_types, concurrent_jobs=config.int("ConcurrentJobs"),
                          history_size=config.int("JobsHistorySize"), save_jobs=config.bool("SaveJobs"))

    routes = RouteRegistry(builtin=DEFAULT_PLUGINS)
    for plugin, spec in _declarations(pm, "register_routes", RouteSpec, ctx):
        routes.add(dataclasses.replace(spec, plugin=plugin))
    ctx.routes = routes
    for plugin, spec in _declarations(pm, "register_metrics", MetricSpec, ctx):
        try:
            ctx.metrics.declare(dataclasses.replace(spec, plugin=plugin))
        except ValueError as e:
            raise StartupError(str(e)) from e

    security = SecurityMiddleware(ctx)
    security.has_filters = pm.has_impls("filter_incoming_http_request")
    limit = BodyLimitMiddleware(config.int("MaximumUploadSize") * 1024 * 1024)
    app = PacsboxApp(middleware=[MetricsMiddleware(ctx), security, limit, XmlMiddleware()], media_type=falcon.MEDIA_JSON)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.keep_blank_qs_values = True
    app.resp_options.secure_cookies_by_default = False
    install_error_handlers(app, describe=config.bool("HttpDescribeErrors"))
    routes.mount(app, ctx)
    app.ctx = ctx
    ctx.app = app
    return app


def _start_stability_monitor(ctx: ServerContext) -> None:
    """Mark resources stable after ``StableAge`` seconds without a new instance."""
    stop = threading.Event()
    ctx._stop_event = stop
    age = max(1, ctx.config.int("StableAge"))
    period = min(1.0, age / 4)

    def run():
        while not stop.wait(period):
            try:
                ctx.index.mark_stable(time.time() - age)  # the index announces the Stable* changes
            except Exception:  # noqa: BLE001
                if not stop.is_set():
                    log.exception("stability monitor failed")

    threading.Thread(target=run, name="pacsbox-stability", daemon=True).start()
