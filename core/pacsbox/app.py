"""``create_app``: build one pacsbox application (plugins, services, routes) per call.

Nothing is global: two apps built in one process have separate plugin managers,
indexes, engines and metrics.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Iterable, Mapping

import falcon

from .config import Config
from .context import HookCaller, ServerContext
from .errors import install_error_handlers
from .index import create_index
from .ingest import Ingest
from .jobs.engine import JobsEngine, JobTypeRegistry, StartupError
from .metrics import MetricSpec, MetricsStore
from .notify import Notifier
from .plugins import build_plugin_manager
from .resources import Resources
from .routing.middleware import MetricsMiddleware, SecurityMiddleware
from .routing.registry import RouteRegistry, RouteSpec

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
        for impl in reversed(ctx.pm.hook.shutdown.get_hookimpls()):
            try:
                impl.function(ctx)
            except Exception:  # noqa: BLE001
                log.exception("plugin %r failed in shutdown", impl.plugin_name)
        try:
            ctx.jobs.stop()
        finally:
            ctx.notifier.stop()
            ctx.index.close()


def _call_each(hook, **kwargs) -> Iterable[tuple[str, Any]]:
    """Call every implementation of a collect-all hook, yielding ``(plugin name, result)``.

    Raises
    ------
    StartupError
        An implementation raised (the message names the plugin and the hook).
    """
    for impl in reversed(hook.get_hookimpls()):
        try:
            result = impl.function(*[kwargs[a] for a in impl.argnames])
        except Exception as e:
            raise StartupError(f"plugin {impl.plugin_name!r} failed in hook {hook.name}: "
                               f"{type(e).__name__}: {e}") from e
        if result is not None:
            yield impl.plugin_name, result


def create_app(config: Config | Mapping[str, Any] | None = None, *, plugins: Iterable[Any] | None = None,
               load_entrypoints: bool = True, load_jobs: bool = True, start_jobs: bool = True) -> PacsboxApp:
    """Build a pacsbox WSGI application.

    Parameters
    ----------
    config : Config or mapping, optional
        Orthanc-style options (defaults when None).
    plugins : iterable, optional
        Extra plugin objects/modules registered for this app only (tests).
    load_entrypoints : bool
        Load installed ``pacsbox.plugins`` entry points (False in most tests).
    load_jobs : bool
        Reload the saved jobs registry (``pacsbox serve --no-jobs`` sets False).
    start_jobs : bool
        Start the job workers.

    Returns
    -------
    PacsboxApp
        A falcon app; ``app.ctx`` is its :class:`ServerContext`; call ``app.close()``.

    Raises
    ------
    StartupError
        Duplicate route or job type (both plugins named), or a plugin failing in a
        registration hook.
    PluginLoadError
        An entry point cannot be imported.
    """
    if not isinstance(config, Config):
        config = Config(config or {})
    pm = build_plugin_manager(config, plugins=plugins, load_entrypoints=load_entrypoints)
    pm.hook.configure.call_historic(kwargs={"config": config})

    ctx = ServerContext(config)
    ctx.started_at = time.time()
    ctx.pm = pm
    ctx.hooks = HookCaller(pm)
    ctx.metrics = MetricsStore(enabled=config.bool("MetricsEnabled"))
    ctx.notifier = Notifier(pm)
    storage = pm.hook.get_storage_area(config=config)
    if storage is None:
        raise StartupError("no plugin provided a storage area")
    ctx.storage = storage
    ctx.index = create_index(config)
    ctx.ingest = Ingest(ctx)
    ctx.resources = Resources(ctx)

    job_types = JobTypeRegistry()
    for plugin, classes in _call_each(pm.hook.register_job_types, ctx=ctx):
        for cls in classes:
            job_types.add(cls, plugin)
    ctx.job_types = job_types
    ctx.jobs = JobsEngine(ctx, job_types, concurrent_jobs=config.int("ConcurrentJobs"),
                          history_size=config.int("JobsHistorySize"), save_jobs=config.bool("SaveJobs"))

    routes = RouteRegistry()
    for plugin, specs in _call_each(pm.hook.register_routes, ctx=ctx):
        for spec in specs:
            routes.add(RouteSpec(spec.path, spec.factory, spec.suffix, plugin))
    ctx.routes = routes
    for plugin, specs in _call_each(pm.hook.register_metrics, ctx=ctx):
        for spec in specs:
            try:
                ctx.metrics.declare(MetricSpec(spec.name, spec.kind, spec.help, spec.unit, spec.labels,
                                               spec.buckets, plugin))
            except ValueError as e:
                raise StartupError(str(e)) from e

    security = SecurityMiddleware(ctx)
    security.has_filters = bool(pm.hook.filter_incoming_http_request.get_hookimpls())
    app = PacsboxApp(middleware=[MetricsMiddleware(ctx), security], media_type=falcon.MEDIA_JSON)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.keep_blank_qs_values = True
    app.resp_options.secure_cookies_by_default = False
    install_error_handlers(app, describe=config.bool("HttpDescribeErrors"))
    routes.mount(app, ctx)
    app.ctx = ctx
    ctx.app = app

    ctx.notifier.start()
    for plugin, _ in _call_each(pm.hook.startup, ctx=ctx):
        pass
    if load_jobs and config.bool("SaveJobs"):
        n = ctx.jobs.load()
        if n:
            log.info("reloaded %d saved jobs", n)
    if start_jobs:
        ctx.jobs.start()
    _start_stability_monitor(ctx)
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
                for ch in ctx.index.mark_stable(time.time() - age):
                    ctx.notifier.emit("change_recorded", ctx=ctx, change=ch)
            except Exception:  # noqa: BLE001
                if not stop.is_set():
                    log.exception("stability monitor failed")

    threading.Thread(target=run, name="pacsbox-stability", daemon=True).start()
