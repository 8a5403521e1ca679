"""``ServerContext``: the facade of services passed to hooks and resource factories.

Plugins reach every service through it (``ctx.config``, ``ctx.index``, ``ctx.storage``,
``ctx.ingest``, ``ctx.jobs``, ``ctx.metrics``, ``ctx.resources``) and never through
module globals.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pluggy

    from .config import Config
    from .index.index import Index
    from .ingest import Ingest
    from .jobs.engine import JobsEngine, JobTypeRegistry
    from .metrics import MetricsStore
    from .notify import Notifier
    from .resources import Resources
    from .storage.area import StorageArea


class HookCaller:
    """Typed facade over ``pm.hook`` for the calls the core makes."""

    def __init__(self, pm: "pluggy.PluginManager") -> None:
        self._pm = pm

    def filter_received_instance(self, dataset: Any, origin: dict) -> bool:
        """True unless an implementation returned False (or raised: fails closed)."""
        import logging
        try:
            results = self._pm.hook.filter_received_instance(dataset=dataset, origin=origin)
        except Exception:  # noqa: BLE001
            logging.getLogger("pacsbox.ingest").exception("filter_received_instance raised; refusing the instance")
            return False
        return not any(r is False for r in results)

    def filter_incoming_http_request(self, **kwargs: Any) -> list:
        """Results of every ``filter_incoming_http_request`` implementation."""
        return self._pm.hook.filter_incoming_http_request(**kwargs)


class ServerContext:
    """The services of one app.

    Attributes
    ----------
    config : Config
        Orthanc-style configuration (unknown options kept).
    pm : pluggy.PluginManager
        The app's plugin manager.
    hooks : HookCaller
        Typed calls of the core's hooks.
    index : Index
        Patients/studies/series/instances, metadata, changes.
    storage : StorageArea
        Attachment bytes by UUID.
    ingest : Ingest
        ``ctx.ingest.store(data, origin)``: the one way to store an instance.
    jobs : JobsEngine
        ``ctx.jobs.submit(job, priority)``, ``run_request(job, body)``...
    job_types : JobTypeRegistry
    metrics : MetricsStore
        ``ctx.metrics.set_value/increment/set_max/observe``.
    notifier : Notifier
        Dispatcher of notification hooks.
    resources : Resources
        Resource helpers (lookup by ID, expansion as in the REST API, instance files).
    started_at : float
        Epoch seconds when the app was built.
    insecure : bool
        True when the HTTP setup is insecure (``IsHttpServerSecure`` false).
    """

    config: "Config"
    pm: "pluggy.PluginManager"
    hooks: HookCaller
    index: "Index"
    storage: "StorageArea"
    ingest: "Ingest"
    jobs: "JobsEngine"
    job_types: "JobTypeRegistry"
    metrics: "MetricsStore"
    notifier: "Notifier"
    resources: "Resources"

    def __init__(self, config: "Config") -> None:
        self.config = config
        self.insecure = False
        self.started_at = 0.0
        self.stash: dict[str, Any] = {}

    def plugin_config(self, name: str, default: Any = None) -> Any:
        """The configuration section named ``name`` (see :meth:`Config.plugin_config`)."""
        return self.config.plugin_config(name, default)
