"""The hook specifications of pacsbox: the public extension API for plugins.

Every extension point of the core is declared here, grouped by family. Each spec is an
empty, typed function whose docstring states its calling convention, its parameters, what
it returns, what the core does when an implementation raises, and its Orthanc equivalent.

Calling conventions used:

- **collect-all**: every implementation is called and the results are gathered
  (registrations). The core checks the gathered declarations for duplicates.
- **firstresult**: the first non-``None`` result wins (providers).
- **veto filter**: every implementation is called; any ``False`` rejects.
- **notification**: called on the app's background dispatcher thread, off the request
  path; each implementation is isolated (its exception is logged with the plugin's name
  and the others still run); return values are ignored.
- **historic**: late-registered plugins are called too, with the same arguments.

Implement a hook with ``from pacsbox import hookimpl``; see :mod:`pacsbox` for the
quick start.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import pydicom

    from .config import Config
    from .context import ServerContext
    from .jobs.base import Job, JobInfo
    from .metrics import MetricSpec
    from .routing.registry import RouteSpec
    from .storage.area import StorageArea

#: Marker project name of every pacsbox hook.
PROJECT_NAME = "pacsbox"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# ----------------------------------------------------------------------------------------
# init
# ----------------------------------------------------------------------------------------

@hookspec(historic=True)
def add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    """Let a plugin declare hook specifications of its own.

    Calling convention: **historic**; a plugin registered later is called as soon as it
    is registered.

    Parameters
    ----------
    plugin_manager : pluggy.PluginManager
        The app's plugin manager; call ``plugin_manager.add_hookspecs(module)``.

    Returns
    -------
    None

    Raises
    ------
    Any exception stops the start-up with the plugin's name (a broken extension point
    is a programming error).

    Notes
    -----
    Implementations of plugin-owned hooks in other plugins should use
    ``@hookimpl(optionalhook=True)`` so that start-up still validates when the providing
    plugin is absent. Orthanc equivalent: none (Orthanc plugins cannot extend each other).
    """


@hookspec(historic=True)
def configure(config: "Config") -> None:
    """Read the configuration before the app is built.

    Calling convention: **historic**, collect-all (results ignored).

    Parameters
    ----------
    config : Config
        The whole Orthanc-style configuration (unknown options included).

    Returns
    -------
    None

    Raises
    ------
    Any exception stops the start-up, naming the plugin (e.g. a malformed plugin section).

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginGetConfiguration`` in ``OrthancPluginInitialize``.
    """


@hookspec
def startup(ctx: "ServerContext") -> None:
    """Start the plugin's own services once the app is fully built.

    Calling convention: collect-all, called once, in the thread that builds the app,
    after routes, job types and metrics are registered and before requests are served.

    Parameters
    ----------
    ctx : ServerContext
        The app's services (config, index, storage, ingest, jobs, metrics).

    Returns
    -------
    None

    Raises
    ------
    Any exception stops the start-up with the plugin's name.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginInitialize`` / ``OrthancStarted`` change.
    """


@hookspec
def shutdown(ctx: "ServerContext") -> None:
    """Stop the plugin's services (close sockets, join threads).

    Calling convention: collect-all, called once when the app closes, before the jobs
    registry is saved and the index is closed.

    Parameters
    ----------
    ctx : ServerContext

    Returns
    -------
    None

    Raises
    ------
    An exception is logged with the plugin's name; the other implementations still run.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginFinalize`` / ``OrthancStopped`` change.
    """


# ----------------------------------------------------------------------------------------
# register
# ----------------------------------------------------------------------------------------

@hookspec
def register_routes(ctx: "ServerContext") -> "Sequence[RouteSpec]":
    """Declare REST routes.

    Calling convention: **collect-all**. The core gathers every declaration, refuses a
    duplicate URI template (naming both plugins) and only then mounts the resources.

    Parameters
    ----------
    ctx : ServerContext
        Passed so that resource factories can capture services.

    Returns
    -------
    sequence of RouteSpec
        ``RouteSpec(path, factory)``: ``path`` is a falcon URI template such as
        ``"/studies/{id}/archive"``; ``factory(ctx)`` returns a falcon resource whose
        ``on_get``/``on_post``/... responders serve it.

    Raises
    ------
    An exception stops the start-up with the plugin's name. Exceptions raised later by the
    resources become Orthanc JSON errors (``OrthancError`` keeps its code; anything else is
    500 ``InternalError``). Routes are subject to authentication, remote-access and request
    filters like the core's.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginRegisterRestCallback``.
    """


@hookspec
def register_job_types(ctx: "ServerContext") -> "Sequence[type[Job]]":
    """Declare job types, so that jobs can be submitted and reloaded after a restart.

    Calling convention: **collect-all**, keyed by ``Job.type_name``; a duplicate type name
    stops the start-up naming both plugins.

    Parameters
    ----------
    ctx : ServerContext

    Returns
    -------
    sequence of type[Job]
        Subclasses of :class:`pacsbox.Job` with a unique ``type_name`` (the ``Type`` field
        of ``/jobs/{id}``, e.g. ``"Archive"``).

    Raises
    ------
    An exception stops the start-up with the plugin's name.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginRegisterJobsUnserializer``.
    """


@hookspec
def register_metrics(ctx: "ServerContext") -> "Sequence[MetricSpec]":
    """Declare metrics (description only; values are set at run time through ``ctx.metrics``).

    Calling convention: **collect-all**; a name declared twice with a different type
    stops the start-up naming both plugins.

    Parameters
    ----------
    ctx : ServerContext

    Returns
    -------
    sequence of MetricSpec
        ``MetricSpec(name, kind, help, unit)``; ``kind`` is ``"gauge"``, ``"counter"``,
        ``"max10s"`` (maximum over the last 10 seconds, Orthanc's duration metrics) or
        ``"histogram"``.

    Raises
    ------
    An exception stops the start-up with the plugin's name.

    Notes
    -----
    A metric appears in the exposition only once a value is recorded.
    Orthanc equivalent: ``OrthancPluginSetMetricsValue`` names.
    """


# ----------------------------------------------------------------------------------------
# provide
# ----------------------------------------------------------------------------------------

@hookspec(firstresult=True)
def get_storage_area(config: "Config") -> "StorageArea | None":
    """Provide the storage area where DICOM files and attachments are written.

    Calling convention: **firstresult**; the core's filesystem area is registered
    ``trylast``, so any installed plugin that returns an area wins.

    Parameters
    ----------
    config : Config

    Returns
    -------
    StorageArea or None
        An object with ``create(uuid, data, content_type)``, ``read(uuid, content_type)``,
        ``open(uuid, content_type)``, ``remove(uuid, content_type)``; ``None`` to defer.

    Raises
    ------
    An exception stops the start-up with the plugin's name.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginRegisterStorageArea``.
    """


# ----------------------------------------------------------------------------------------
# filter
# ----------------------------------------------------------------------------------------

@hookspec
def filter_incoming_http_request(method: str, uri: str, ip: str, username: str | None,
                                 headers: Mapping[str, str]) -> bool | None:
    """Accept or refuse an HTTP request before it is routed.

    Calling convention: **veto filter**: every implementation is called; any ``False``
    refuses the request with 403 and an empty body. ``None`` or ``True`` accepts.

    Parameters
    ----------
    method : str
        Upper-case verb (``"GET"``).
    uri : str
        Path without the query string.
    ip : str
        Peer address.
    username : str or None
        Authenticated HTTP user, if authentication is on.
    headers : mapping of str to str
        Request headers (lower-case names).

    Returns
    -------
    bool or None

    Raises
    ------
    An exception is logged with the plugin's name and the request is refused (403), so a
    broken filter fails closed.

    Notes
    -----
    Runs after authentication and the remote-access check, on every route (plugin routes
    included). Orthanc equivalent: ``OrthancPluginRegisterIncomingHttpRequestFilter2``.
    """


@hookspec
def filter_received_instance(dataset: "pydicom.Dataset", origin: Mapping[str, Any]) -> bool | None:
    """Accept or refuse a DICOM instance before it is stored (REST, C-STORE, jobs).

    Calling convention: **veto filter**: any ``False`` refuses; the upload answers
    ``Status: "FilteredOut"`` (C-STORE: a failure status). Nothing is written.

    Parameters
    ----------
    dataset : pydicom.Dataset
        The parsed instance (pixel data may be deferred).
    origin : mapping
        ``Origin`` (``"RestApi"``, ``"DicomProtocol"``, ``"Plugins"``), ``RemoteIP``,
        ``RemoteAET``, ``CalledAET``, ``HttpUsername``.

    Returns
    -------
    bool or None

    Raises
    ------
    An exception is logged with the plugin's name and the instance is refused.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginRegisterIncomingDicomInstanceFilter`` /
    ``ReceivedInstanceFilter``.
    """


# ----------------------------------------------------------------------------------------
# notify
# ----------------------------------------------------------------------------------------

@hookspec
def instance_stored(ctx: "ServerContext", instance_id: str, dataset: "pydicom.Dataset") -> None:
    """A new instance was stored (not called for ``AlreadyStored``).

    Calling convention: **notification** on the app's dispatcher thread, off the request
    path; isolated; return ignored.

    Parameters
    ----------
    ctx : ServerContext
    instance_id : str
        Orthanc ID of the instance (44 characters).
    dataset : pydicom.Dataset
        The parsed instance.

    Returns
    -------
    None

    Raises
    ------
    An exception is logged with the plugin's name; other implementations still run.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginRegisterOnStoredInstanceCallback``.
    """


@hookspec
def change_recorded(ctx: "ServerContext", change: Mapping[str, Any]) -> None:
    """An entry was written to the change log (``/changes``).

    Calling convention: **notification** (dispatcher thread, isolated, return ignored).

    Parameters
    ----------
    ctx : ServerContext
    change : mapping
        The entry as ``/changes`` shows it: ``ChangeType``, ``Date``, ``ID``, ``Path``,
        ``ResourceType``, ``Seq``.

    Returns
    -------
    None

    Raises
    ------
    An exception is logged with the plugin's name; other implementations still run.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginRegisterOnChangeCallback``.
    """


@hookspec
def job_state_changed(ctx: "ServerContext", job_info: "JobInfo") -> None:
    """A job changed state (every transition of the jobs state machine, submission included).

    Calling convention: **notification** (dispatcher thread, isolated, return ignored).

    Parameters
    ----------
    ctx : ServerContext
    job_info : JobInfo
        Snapshot with ``id``, ``type``, ``state`` (``"Pending"``, ``"Running"``,
        ``"Success"``, ``"Failure"``, ``"Paused"``, ``"Retry"``), ``previous_state``
        (``None`` at submission), ``priority``, ``progress`` (0-100 percent),
        ``error_code``.

    Returns
    -------
    None

    Raises
    ------
    An exception is logged with the plugin's name; other implementations still run.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginRegisterOnChangeCallback`` with
    ``JobSubmitted``/``JobSuccess``/``JobFailure`` change types.
    """
