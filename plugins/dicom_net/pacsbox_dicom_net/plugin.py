"""Hook implementations of the pacsbox_dicom_net plugin (entry point ``dicom_net``).

Only hook implementations live here. Each area of the plugin keeps its routes, job
types and services in its own module, which exposes ``routes(ctx)``, ``job_types()``,
``start(ctx)`` and ``stop(ctx)`` as it needs:

- :mod:`.scp` (the SCP), :mod:`.scp_resources` (``/tools/accepted-transfer-syntaxes``...);
- :mod:`.modality_resources` (``/modalities``, ``/tools/dicom-echo``) and :mod:`.store_job`;
- :mod:`.query_resources` (``/queries``) and :mod:`.move_job`;
- :mod:`.peers` (``/peers``) and :mod:`.transfers` (``/transfers``).
"""
from __future__ import annotations

from pacsbox import hookimpl

from . import hookspecs, modality_resources, move_job, peers, query_resources, scp, scp_resources, store_job, transfers
from .state import plugin_state

_ROUTE_MODULES = (scp_resources, modality_resources, query_resources, peers, transfers)
_JOB_MODULES = (store_job, move_job, peers, transfers)
_SERVICE_MODULES = (scp, query_resources, transfers)


@hookimpl
def add_hookspecs(plugin_manager):
    """Declare the node's extension points (:mod:`pacsbox_dicom_net.hookspecs`)."""
    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def configure(config):
    """Check the DICOM options, ``DicomModalities`` and ``OrthancPeers`` at start-up, and
    declare every option name the plugin reads (so that a misspelt one is warned about)."""
    from .options import DICOM_OPTIONS, read_options
    from .peer_registry import HTTP_OPTIONS
    read_options(config)
    if hasattr(config, "declare_options"):
        config.declare_options([*DICOM_OPTIONS, *HTTP_OPTIONS, "DicomModalities", "DicomBindAddress",
                                "OrthancPeers", "Transfers", "Worklists"])
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
def startup(ctx):
    """Start the SCP (when ``DicomServerEnabled``) and the plugin's background services."""
    for module in _SERVICE_MODULES:
        module.start(ctx)


@hookimpl
def shutdown(ctx):
    """Stop the SCP and the background services, in reverse order."""
    for module in reversed(_SERVICE_MODULES):
        module.stop(ctx)
