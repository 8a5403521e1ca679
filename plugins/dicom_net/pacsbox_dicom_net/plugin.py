"""Hook implementations of the pacsbox_dicom_net plugin (entry point ``dicom_net``).

Only hook implementations live here. Each area of the plugin keeps its routes, job
types and services in its own module, which exposes ``routes(ctx)``, ``job_types()``,
``start(ctx)`` and ``stop(ctx)`` as it needs:

- :mod:`.scp` (the SCP), :mod:`.scp_routes` (``/tools/accepted-transfer-syntaxes``...);
- :mod:`.modality_routes` (``/modalities``, ``/tools/dicom-echo``) and :mod:`.store_job`;
- :mod:`.query_routes` (``/queries``) and :mod:`.move_job`;
- :mod:`.peers` (``/peers``) and :mod:`.transfers` (``/transfers``).
"""
from __future__ import annotations

from pacsbox import OptionSpec, hookimpl

from . import hookspecs, modality_routes, move_job, peers, query_routes, scp, scp_routes, store_job, transfers
from .state import plugin_state

_ROUTE_MODULES = (scp_routes, modality_routes, query_routes, peers, transfers)
_JOB_MODULES = (store_job, move_job, peers, transfers)
_SERVICE_MODULES = (scp, query_routes, transfers)


@hookimpl
def add_hookspecs(plugin_manager):
    """Declare the node's extension points (:mod:`pacsbox_dicom_net.hookspecs`)."""
    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def register_options():
    """Every option the plugin reads: the DICOM options, the HTTP client options of the
    peers, and the sections it owns (their kinds are checked by the core at start-up)."""
    from .options import DICOM_OPTIONS
    from .peer_registry import HTTP_OPTIONS
    specs = [OptionSpec(name, kind, default, doc)
             for name, (default, kind, doc) in {**DICOM_OPTIONS, **HTTP_OPTIONS}.items()]
    return specs + [
        OptionSpec("DicomBindAddress", "str?", None,
                   "Address the DICOM server listens on (null: HttpBindAddress's; Orthanc listens on all)"),
        OptionSpec("DicomModalities", "dict", {}, "The modalities: symbolic name -> [AET, host, port] or object"),
        OptionSpec("OrthancPeers", "dict", {}, "The Orthanc peers: symbolic name -> [URL] or object"),
        OptionSpec("Transfers", "dict?", None, "Transfers accelerator section (Threads, BucketSize, CacheSize...)"),
        OptionSpec("Worklists", "dict?", None, "Worklist section (Enable, Database: the folder of .wl files)"),
    ]


@hookimpl
def configure(config):
    """Check what the declarations cannot say: ``RetrieveMethod``, TLS files,
    ``DicomModalities``, ``OrthancPeers`` and the ``Transfers`` section."""
    from .options import read_options
    read_options(config)
    peers.check_config(config)
    transfers.check_config(config)


@hookimpl
def register_routes(ctx):
    """The REST routes of every area of the plugin."""
    plugin_state(ctx)
    out = []
    for module in _ROUTE_MODULES:
        out.extend(module.routes(ctx))
    return out


@hookimpl
def register_job_types(ctx):
    """``DicomModalityStore``, ``DicomMoveScu``, ``OrthancPeerStore`` and the transfer jobs."""
    out = []
    for module in _JOB_MODULES:
        out.extend(module.job_types())
    return out


@hookimpl
def register_metrics(ctx):
    """The transfers accelerator's gauges."""
    return transfers.TransfersState.metric_specs()


@hookimpl
def startup(ctx):
    """Start the SCP (when ``DicomServerEnabled``) and the plugin's background services."""
    for module in _SERVICE_MODULES:
        module.start(ctx)


@hookimpl
def shutdown(ctx):
    """Stop the SCP and the background services, in reverse order."""
    for module in reversed(_SERVICE_MODULES):
        module.stop(ctx)
