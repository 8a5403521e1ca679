"""``ServerContext``: the facade of services passed to hooks and resource factories.

Plugins reach every service through it (``ctx.config``, ``ctx.index``, ``ctx.storage``,
``ctx.ingest``, ``ctx.jobs``, ``ctx.metrics``, ``ctx.resources``) and never through
module globals.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config
    from .index.index import Index
    from .ingest import Ingest
    from .jobs.engine import JobsEngine, JobTypeRegistry
    from .metrics import MetricsStore
    from .notify import Notifier
    from .plugins import PacsboxPluginManager
    from .resources import ResourceService
    from .routing.registry import RouteRegistry
    from .storage.area import StorageArea


class ServerContext:
    """The services of one app.

    Attributes
    ----------
    config : Config
        Orthanc-style configuration (unknown options kept).
    pm : PacsboxPluginManager
        The app's plugin manager (a :class:`pluggy.PluginManager`); ``ctx.pm.call(name,
        kwargs)`` calls a hook the way its calling convention says.
    index : Index
        Patients/studies/series/instances, metadata, changes.
    storage : StorageArea
        Attachment bytes by UUID.
    ingest : Ingest
        ``ctx.ingest.store(data, origin)``: the one way to store an instance.
    jobs : JobsEngine
        ``ctx.jobs.submit(job, priority)``, ``run_request(job, body)``...
    job_types : JobTypeRegistry
        Registered job types by ``Type`` name (``ctx.job_types.names()``).
    routes : RouteRegistry
        Every mounted :class:`~pacsbox.RouteSpec`, with its plugin (``by_plugin()``).
    metrics : MetricsStore
        ``ctx.metrics.set_value/increment/set_max/observe``.
    notifier : Notifier
        Dispatcher of notification hooks.
    resources : ResourceService
        Resource helpers (lookup by ID, expansion as in the REST API, instance files).
    started_at : float
        Epoch seconds when the app was built.
    insecure : bool
        True when the HTTP setup is insecure (``IsHttpServerSecure`` false).
    stash : dict
        Per-app state of plugins; key it by your plugin's name (``ctx.stash["example"]``).
    app : PacsboxApp
        The falcon app (set once it is built, before ``startup``).
    log_verbosity : dict of str to str
        Orthanc log category (``generic``, ``http``...) to its verbosity (``default``,
        ``verbose``, ``trace``), as set through ``/tools/log-level``.
    """

    config: "Config"
    pm: "PacsboxPluginManager"
    index: "Index"
    storage: "StorageArea"
    ingest: "Ingest"
    jobs: "JobsEngine"
    job_types: "JobTypeRegistry"
    routes: "RouteRegistry"
    metrics: "MetricsStore"
    notifier: "Notifier"
    resources: "ResourceService"

    def __init__(self, config: "Config") -> None:
        self.config = config
        self.insecure = False
        self.started_at = 0.0
        self.stash: dict[str, Any] = {}
        self.log_verbosity: dict[str, str] = {}

    def plugin_config(self, name: str, default: Any = None) -> Any:
        """The configuration section named ``name`` (see :meth:`Config.plugin_config`)."""
        return self.config.plugin_config(name, default)
