"""The hook specifications of pacsbox: the public extension API for plugins.

Every extension point of the core is declared here, grouped by family (init, register,
provide, filter, notify). Each spec is an empty, typed function whose docstring states
its calling convention, its parameters, what it returns, what the core does when an
implementation raises, and its Orthanc equivalent. ``docs/plugins.md`` is generated from
these docstrings (``python docs/gen_hooks.py``) and a contract test keeps both in step.

Calling conventions (:data:`CONVENTIONS`). Each spec carries its own, given to the marker
(``@hookspec(convention="veto filter")``); the plugin manager's one dispatcher,
:meth:`pacsbox.plugins.PacsboxPluginManager.call`, applies it:

- **collect-all**: every implementation is called, in pluggy's order (``tryfirst``
  first, ``trylast`` last, otherwise the last registered first); the results are
  gathered. For registrations the core checks the gathered declarations (type,
  duplicates) and names the plugin in any error.
- **isolated**: every implementation is called, in the caller's thread; one that raises is
  logged on the ``pacsbox.plugins`` logger with its plugin's name and the others still
  run; return values are ignored.
- **firstresult**: implementations are called until one returns something other than
  ``None``; that result wins.
- **veto filter**: every implementation is called; any ``False`` rejects. An
  implementation that raises is logged with its plugin's name and counts as a rejection
  (fail closed); the others still run.
- **notification**: queued, then called on the app's background dispatcher thread
  (named ``pacsbox-notify``), off the request path, in the order the events happened;
  each implementation is isolated (its exception is logged on the ``pacsbox.plugins``
  logger with the plugin's name, and the other implementations still run); return values
  are ignored.
- **historic**: a plugin registered after the call (e.g. by a test helper) is called as
  soon as it is registered, with the same arguments.

The core calls the implementations of collect-all, isolated, veto and notification hooks
one at a time, so ``wrapper=True`` implementations are accepted only on the firstresult and
historic hooks (``get_storage_area``, ``configure``, ``add_hookspecs``, and plugin-owned
hooks declared without one of those four conventions); elsewhere they stop the start-up
with the plugin's name.

Implement a hook with ``from pacsbox import hookimpl``; see :mod:`pacsbox` for the
quick start and ``docs/plugins.md`` for the guide.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import pydicom

    from .config import Config
    from .options import OptionSpec
    from .context import ServerContext
    from .jobs.base import Job, JobInfo
    from .metrics import MetricSpec
    from .routing.registry import RouteSpec
    from .storage.area import StorageArea

#: Marker project name of every pacsbox hook.
PROJECT_NAME = "pacsbox"

#: The calling conventions, as the docstrings name them ("Calling convention: **...**").
CONVENTIONS = ("historic", "collect-all", "isolated", "firstresult", "veto filter", "notification")

#: Conventions under which the core calls the implementations one at a time (to name the
#: plugin of each declaration or failure): ``wrapper=True`` implementations are refused.
PER_IMPL_CONVENTIONS = frozenset({"collect-all", "isolated", "veto filter", "notification"})

#: Name of the attribute holding a spec's convention.
CONVENTION_ATTR = PROJECT_NAME + "_convention"


class HookspecMarker(pluggy.HookspecMarker):
    """pluggy's spec marker, with the calling convention attached to the spec.

    ``@hookspec(convention="veto filter")`` records the convention on the function (read
    back with :func:`convention_of`) and sets pluggy's ``firstresult``/``historic`` options
    to match. Without ``convention`` it is pluggy's marker as is (plugin-owned specs may
    then be called with the named helpers, ``pm.call_veto``...).

    Raises
    ------
    ValueError
        ``convention`` is not one of :data:`CONVENTIONS`.
    """

    def __call__(self, function: Callable | None = None, *, convention: str | None = None,
                 firstresult: bool = False, historic: bool = False, **options: Any) -> Any:
        if convention is not None:
            if convention not in CONVENTIONS:
                raise ValueError(f"unknown calling convention {convention!r}; one of {', '.join(CONVENTIONS)}")
            firstresult, historic = convention == "firstresult", convention == "historic"

        def mark(fn: Callable) -> Callable:
            if convention is not None:
                setattr(fn, CONVENTION_ATTR, convention)
            return super(HookspecMarker, self).__call__(fn, firstresult=firstresult, historic=historic, **options)

        return mark if function is None else mark(function)


def convention_of(spec_function: Callable) -> str | None:
    """The calling convention attached to a spec function, or None.

    Returns
    -------
    str or None
        One of :data:`CONVENTIONS`; for a spec marked without one, ``"firstresult"`` or
        ``"historic"`` when pluggy's option says so, else None.
    """
    conv = getattr(spec_function, CONVENTION_ATTR, None)
    if conv is not None:
        return conv
    opts = getattr(spec_function, PROJECT_NAME + "_spec", None) or {}
    if opts.get("firstresult"):
        return "firstresult"
    if opts.get("historic"):
        return "historic"
    return None


#: Marker for hook *specifications*: the core's below, and plugin-owned extension points
#: added through the ``add_hookspecs`` hook (re-exported as ``pacsbox.hookspec``).
hookspec = HookspecMarker(PROJECT_NAME)

#: Marker for hook *implementations*: ``@hookimpl``, ``@hookimpl(trylast=True)``...
#: (re-exported as ``pacsbox.hookimpl``; the core's built-in plugins use it too).
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ----------------------------------------------------------------------------------------
# init
# ----------------------------------------------------------------------------------------

@hookspec(convention="historic")
def add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    """Let a plugin declare hook specifications of its own.

    Calling convention: **historic**, collect-all (results ignored). Called once every
    plugin is registered and before ``check_pending()``, so that implementations of the
    new hooks in other plugins are validated against them.

    Parameters
    ----------
    plugin_manager : pluggy.PluginManager
        The app's plugin manager; call ``plugin_manager.add_hookspecs(module)`` with a
        module of ``pluggy.HookspecMarker("pacsbox")``-decorated functions.

    Returns
    -------
    None

    Raises
    ------
    StartupError
        Raised by the core when an implementation raises: the start-up stops and the
        message names the plugin (a broken extension point is a programming error).

    Notes
    -----
    Implementations of plugin-owned hooks in other plugins should use
    ``@hookimpl(optionalhook=True)`` so that the start-up still validates when the
    providing plugin is absent or blocked.

    Orthanc equivalent: none (Orthanc plugins cannot extend each other).
    """


@hookspec(convention="historic")
def configure(config: Config) -> None:
    """Read and check the configuration before the app's services are built.

    Calling convention: **historic**, collect-all (results ignored). Called once per
    app, once the declared options are checked (``register_options``) and before
    ``get_storage_area``.

    Parameters
    ----------
    config : Config
        The whole Orthanc-style configuration, unknown options included
        (``config.plugin_config("MyPlugin", {})`` reads a plugin's own section).

    Returns
    -------
    None

    Raises
    ------
    StartupError
        Raised by the core when an implementation raises (e.g. a malformed plugin
        section): the start-up stops and the message names the plugin.

    Notes
    -----
    Declare the top-level options the plugin reads with the ``register_options`` hook:
    their types are checked and their defaults filled in before ``configure`` runs, and
    after ``configure`` the core logs one warning for each option the user set that
    neither the core nor a loaded plugin declares, with the closest declared name
    ("``HttpPortt``: did you mean ``HttpPort``?"). ``configure`` is for the checks a
    declaration cannot express (several options together, the file system): raise
    :class:`~pacsbox.ConfigError` naming the option, its value and what is expected for a
    malformed one: ``pacsbox serve`` prints it and exits with status 2.

    Keep per-app state on ``ctx.stash`` (from ``startup``), not in module globals: two
    apps may live in one process.

    Orthanc equivalent: ``OrthancPluginGetConfiguration`` in ``OrthancPluginInitialize``.
    """


@hookspec(convention="collect-all")
def startup(ctx: ServerContext) -> None:
    """Start the plugin's own services once the app is fully built.

    Calling convention: **collect-all** (results ignored), called once, in the thread
    that builds the app, after routes, job types and metrics are registered and the
    notification dispatcher is started, and before the saved jobs are reloaded and the
    job workers start.

    Parameters
    ----------
    ctx : ServerContext
        The app's services (``config``, ``index``, ``storage``, ``ingest``, ``jobs``,
        ``metrics``, ``stash``, ``app``).

    Returns
    -------
    None

    Raises
    ------
    StartupError
        Raised by the core when an implementation raises: the start-up stops, the
        message names the plugin, ``shutdown`` is called for the plugins whose
        ``startup`` had already succeeded, and the index is closed.

    Notes
    -----
    Orthanc equivalent: the end of ``OrthancPluginInitialize``, or the ``OrthancStarted``
    change of ``OrthancPluginRegisterOnChangeCallback``.
    """


@hookspec(convention="isolated")
def shutdown(ctx: ServerContext) -> None:
    """Stop the plugin's services (close sockets, join threads).

    Calling convention: **isolated** (every implementation is called; results ignored).
    Called once by ``app.close()`` (``pacsbox serve`` calls it on SIGTERM/SIGINT),
    before the job workers stop, the jobs registry is saved and the index is closed, so
    ``ctx`` is still fully usable.

    Parameters
    ----------
    ctx : ServerContext
        The app's services.

    Returns
    -------
    None

    Raises
    ------
    Exception
        Never propagated: an exception is logged on ``pacsbox.plugins`` with the
        plugin's name, and the other implementations still run.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginFinalize``, or the ``OrthancStopped`` change.
    """


# ----------------------------------------------------------------------------------------
# register
# ----------------------------------------------------------------------------------------

@hookspec(convention="collect-all")
def register_routes(ctx: ServerContext) -> Sequence[RouteSpec]:
    """Declare REST routes.

    Calling convention: **collect-all**. The core gathers every declaration, refuses a
    duplicate URI template (the same path up to field names, and the same suffix)
    naming both plugins, and only then mounts the routes on the falcon app.

    Parameters
    ----------
    ctx : ServerContext
        Passed so that route factories can capture services.

    Returns
    -------
    sequence of RouteSpec
        ``RouteSpec(path, factory, suffix=None)``: ``path`` is a falcon URI template
        such as ``"/studies/{id}/archive"``; ``factory(ctx)`` is called once and returns
        the route, an object (what falcon calls a resource; its class named ``...Route``)
        whose ``on_get``/``on_post``/... (or ``on_get_<suffix>``) responders serve it.

    Raises
    ------
    StartupError
        Raised by the core when an implementation raises, returns something other than
        a list of :class:`~pacsbox.RouteSpec`, or declares a route already declared by
        another plugin (both named).

    Notes
    -----
    At run time, exceptions raised by the routes become Orthanc JSON errors through
    the core's single error handler (an :class:`~pacsbox.OrthancError` keeps its code;
    anything else is logged and answered 500 ``InternalError``); plugins never build
    error bodies. Plugin routes are subject to ``RemoteAccessAllowed``, HTTP
    authentication and ``filter_incoming_http_request`` like the core's, and an unknown
    method answers 405 with ``Allow``.

    Orthanc equivalent: ``OrthancPluginRegisterRestCallback``.
    """


@hookspec(convention="collect-all")
def register_job_types(ctx: ServerContext) -> Sequence[type[Job]]:
    """Declare job types, so that jobs can be submitted and reloaded after a restart.

    Calling convention: **collect-all**, keyed by ``Job.type_name``; a type name
    registered by two plugins stops the start-up naming both.

    Parameters
    ----------
    ctx : ServerContext
        The app's services.

    Returns
    -------
    sequence of type[Job]
        Subclasses of :class:`pacsbox.Job` (or :class:`pacsbox.InstancesJob`) with a
        unique ``type_name`` (the ``Type`` field of ``/jobs/{id}``, e.g. ``"Archive"``).

    Raises
    ------
    StartupError
        Raised by the core when an implementation raises, returns something other than
        a list of ``Job`` subclasses, a class has no ``type_name``, or the type name is
        already registered by another plugin (both named).

    Notes
    -----
    Only registered types can be submitted (``ctx.jobs.submit`` raises ``ValueError``
    otherwise). A saved job whose type is no longer registered (plugin removed or
    blocked) is skipped with a warning when the registry is reloaded.

    Orthanc equivalent: ``OrthancPluginRegisterJobsUnserializer``.
    """


@hookspec(convention="collect-all")
def register_metrics(ctx: ServerContext) -> Sequence[MetricSpec]:
    """Declare metrics (description only; values are recorded at run time through ``ctx.metrics``).

    Calling convention: **collect-all**; a name declared again with the same kind and
    labels is accepted (the first declaration is kept); with a different kind or other
    labels it stops the start-up naming both plugins.

    Parameters
    ----------
    ctx : ServerContext
        The app's services.

    Returns
    -------
    sequence of MetricSpec
        ``MetricSpec(name, kind, help, unit, labels)``; ``kind`` is ``"gauge"``,
        ``"counter"``, ``"max10s"`` (maximum over the last 10 seconds, Orthanc's
        duration metrics) or ``"histogram"``. The name is exposed exactly as declared.

    Raises
    ------
    StartupError
        Raised by the core when an implementation raises, returns something other than
        a list of :class:`~pacsbox.MetricSpec`, or redeclares a metric with another kind
        or other labels (both plugins named).

    Notes
    -----
    Record values with ``ctx.metrics.increment(name)``, ``set_value``, ``set_max`` or
    ``observe``; a metric appears in the exposition only once a value is recorded, and
    nothing is recorded while ``MetricsEnabled`` is false. Recording a name that no one
    declared raises ``UnknownMetric`` (a misspelt name never creates a metric); declare
    one known only at run time with ``ctx.metrics.declare(MetricSpec(...))``.

    Orthanc equivalent: the names given to ``OrthancPluginSetMetricsValue``.
    """


@hookspec(convention="collect-all")
def register_options(ctx: ServerContext) -> Sequence[OptionSpec]:
    """Declare the configuration options the plugin reads (after pytest's ``pytest_addoption``).

    Calling convention: **collect-all**, called once per app, right after the plugin
    manager is built and before ``configure``: the core checks the user's values against
    every declaration, then fills in the defaults, then calls ``configure``.

    Parameters
    ----------
    ctx : ServerContext
        The app being built: only ``ctx.config``, ``ctx.pm`` and ``ctx.stash`` exist yet
        (the services come after the options are known).

    Returns
    -------
    sequence of OptionSpec
        ``OptionSpec(name, type, default, doc, check=None)``: ``type`` is a kind such as
        ``"bool"``, ``"int>=0"``, ``"int[1..64]"``, ``"number>=0"``, ``"str"``,
        ``"str|list[str]"`` or ``"dict"`` (a section of your own); ``check(value)`` may add
        what a kind cannot say, raising :class:`~pacsbox.ConfigError`.

    Raises
    ------
    StartupError
        Raised by the core when an implementation raises, returns something other than a
        list of :class:`~pacsbox.OptionSpec`, or declares an option already declared (by the
        core or another plugin) with another type or default (both named).
    ConfigError
        Raised by the core when the user's value of a declared option does not fit its
        declaration: ``option DicomScuTimeout: -1 is not an integer >= 0 (plugin
        'dicom_net')``; ``pacsbox serve`` prints it and exits with status 2.

    Notes
    -----
    A declared option is never reported as unknown, and ``ctx.config[name]`` answers its
    default when the user gave none. ``pacsbox plugins`` and ``/tools/openapi.json``
    (``x-pacsbox-options``) list the declarations. Checks that involve several options or
    the file system belong to ``configure``.

    Orthanc equivalent: none (an Orthanc plugin reads ``OrthancPluginGetConfiguration``
    and checks what it finds itself).
    """


# ----------------------------------------------------------------------------------------
# provide
# ----------------------------------------------------------------------------------------

@hookspec(convention="firstresult")
def get_storage_area(config: Config) -> StorageArea | None:
    """Provide the storage area where DICOM files and attachments are written.

    Calling convention: **firstresult**, called once per app. The core's filesystem
    area (``StorageDirectory``) is registered ``trylast``, so any installed plugin that
    returns an area wins. ``wrapper=True`` implementations are honoured (e.g. to wrap
    the area with encryption or caching).

    Parameters
    ----------
    config : Config
        The configuration.

    Returns
    -------
    StorageArea or None
        An object with ``create(uuid, data, content_type)``, ``read(uuid,
        content_type)``, ``open(uuid, content_type)`` and ``remove(uuid,
        content_type)`` (see :class:`pacsbox.StorageArea`); ``None`` to defer to the
        next implementation.

    Raises
    ------
    StartupError
        Raised by the core when an implementation raises (the plugin named), or when no
        implementation returns an area.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginRegisterStorageArea`` (``StorageAreaPlugin`` in
    ``/system``).
    """


# ----------------------------------------------------------------------------------------
# filter
# ----------------------------------------------------------------------------------------

@hookspec(convention="veto filter")
def filter_incoming_http_request(method: str, uri: str, ip: str, username: str | None,
                                 headers: Mapping[str, str]) -> bool | None:
    """Accept or refuse an HTTP request before it is routed.

    Calling convention: **veto filter**: every implementation is called, in the request
    thread; any ``False`` refuses the request with 403 and an empty body. ``None`` or
    ``True`` accepts.

    Parameters
    ----------
    method : str
        Upper-case verb (``"GET"``).
    uri : str
        Path without the query string (``"/instances"``).
    ip : str
        Peer address (``"127.0.0.1"``).
    username : str or None
        Authenticated HTTP user, when authentication is on.
    headers : mapping of str to str
        Request headers, with lower-case names.

    Returns
    -------
    bool or None
        ``False`` to refuse.

    Raises
    ------
    Exception
        Never propagated: an exception is logged with the plugin's name and the request
        is refused with 403 (a broken filter fails closed); the other implementations
        still run.

    Notes
    -----
    Runs on every HTTP request a client sends, whatever its route (plugin routes included),
    after the remote-access check and HTTP authentication, and only when at least one
    plugin implements it. It does not run for the in-process calls of
    :func:`pacsbox.call_rest_api` (Lua's ``RestApiGet``..., as Orthanc does not filter its
    own calls). It is on the request path: keep it fast.

    Orthanc equivalent: ``OrthancPluginRegisterIncomingHttpRequestFilter2``.
    """


@hookspec(convention="veto filter")
def filter_received_instance(dataset: pydicom.Dataset, origin: Mapping[str, Any]) -> bool | None:
    """Accept or refuse a DICOM instance before it is stored (REST, C-STORE, jobs).

    Calling convention: **veto filter**: every implementation is called, in the
    storing thread, after the instance is parsed and before anything is written; any
    ``False`` refuses it: the REST upload answers ``"Status": "FilteredOut"``, a
    C-STORE gets a failure status, and nothing is written.

    Parameters
    ----------
    dataset : pydicom.Dataset
        The fully parsed instance (file meta included).
    origin : mapping
        ``Origin`` (``"RestApi"``, ``"DicomProtocol"``, ``"Plugins"``), and when known
        ``RemoteIP``, ``RemoteAET``, ``CalledAET``, ``HttpUsername``.

    Returns
    -------
    bool or None
        ``False`` to refuse.

    Raises
    ------
    Exception
        Never propagated: an exception is logged with the plugin's name and the
        instance is refused (fail closed); the other implementations still run.

    Notes
    -----
    The dataset is parsed only when at least one plugin implements this hook.

    Orthanc equivalent: ``OrthancPluginRegisterIncomingDicomInstanceFilter`` (Lua
    ``ReceivedInstanceFilter``).
    """


# ----------------------------------------------------------------------------------------
# notify
# ----------------------------------------------------------------------------------------

@hookspec(convention="notification")
def instance_stored(ctx: ServerContext, instance_id: str, dataset: pydicom.Dataset) -> None:
    """A new instance was stored (not called for ``AlreadyStored`` or ``FilteredOut``).

    Calling convention: **notification**: called on the app's dispatcher thread, off
    the request path, after the instance is committed to the index; isolated; return
    value ignored.

    Parameters
    ----------
    ctx : ServerContext
        The app's services.
    instance_id : str
        Orthanc ID of the instance (five dash-separated groups of eight hexadecimal
        digits, 44 characters), as in ``/instances/{id}``.
    dataset : pydicom.Dataset
        The stored instance, parsed on the dispatcher thread (only when some plugin
        implements this hook).

    Returns
    -------
    None

    Raises
    ------
    Exception
        Never propagated: an exception is logged on ``pacsbox.plugins`` with the
        plugin's name; the other implementations still run; the upload is not affected.

    Notes
    -----
    Ingest latency never depends on a plugin: the upload answers before the hook runs.
    The instance may already be deleted when the hook runs.

    Orthanc equivalent: ``OrthancPluginRegisterOnStoredInstanceCallback``.
    """


@hookspec(convention="notification")
def change_recorded(ctx: ServerContext, change: Mapping[str, Any]) -> None:
    """An entry was written to the change log (``/changes``).

    Calling convention: **notification** (dispatcher thread, off the request path,
    isolated, return value ignored), in ``Seq`` order.

    Parameters
    ----------
    ctx : ServerContext
        The app's services.
    change : mapping
        The entry as ``/changes`` shows it: ``ChangeType`` (``"NewInstance"``,
        ``"NewSeries"``, ``"StableStudy"``...), ``Date``, ``ID``, ``Path``,
        ``ResourceType``, ``Seq``.

    Returns
    -------
    None

    Raises
    ------
    Exception
        Never propagated: an exception is logged on ``pacsbox.plugins`` with the
        plugin's name; the other implementations still run.

    Notes
    -----
    Orthanc equivalent: ``OrthancPluginRegisterOnChangeCallback``.
    """


@hookspec(convention="notification")
def resources_deleted(ctx: ServerContext, resources: Sequence[Mapping[str, str]]) -> None:
    """Resources were deleted (one deletion: the resource asked for, its descendants,
    and its ancestors left empty).

    Calling convention: **notification** (dispatcher thread, off the request path,
    isolated, return value ignored), once per deletion, after the index rows are gone.

    Parameters
    ----------
    ctx : ServerContext
        The app's services.
    resources : sequence of mapping
        ``{"ResourceType": "Patient"|"Study"|"Series"|"Instance", "ID": <Orthanc ID>}``
        for each resource removed: the one deleted first, then its descendants level by
        level, then the ancestors that were left empty.

    Returns
    -------
    None

    Raises
    ------
    Exception
        Never propagated: an exception is logged on ``pacsbox.plugins`` with the
        plugin's name; the other implementations still run.

    Notes
    -----
    Orthanc equivalent: the ``Deleted`` change that Orthanc signals to its plugins and
    Lua scripts (``OnDeletedPatient``...) for each removed resource, without writing it
    to ``/changes``. Sent by ``ResourceService.delete``, the one deletion path
    (``DELETE /{level}/{id}``, ``/tools/bulk-delete``, jobs with ``KeepSource: false``,
    plugins); not for the patients recycled by ``MaximumStorageSize`` or
    ``MaximumPatientCount``, which the index removes while storing.
    """


@hookspec(convention="notification")
def job_state_changed(ctx: ServerContext, job_info: JobInfo) -> None:
    """A job changed state (every transition of the jobs state machine, submission included).

    Calling convention: **notification** (dispatcher thread, off the request path and
    off the job workers, isolated, return value ignored), in the order of the
    transitions.

    Parameters
    ----------
    ctx : ServerContext
        The app's services.
    job_info : JobInfo
        Snapshot with ``id``, ``type``, ``state`` (``"Pending"``, ``"Running"``,
        ``"Success"``, ``"Failure"``, ``"Paused"``, ``"Retry"``), ``previous_state``
        (``None`` at submission), ``priority``, ``progress`` (0-100 percent) and
        ``error_code`` (Orthanc error code, 0 on success).

    Returns
    -------
    None

    Raises
    ------
    Exception
        Never propagated: an exception is logged on ``pacsbox.plugins`` with the
        plugin's name; the other implementations still run; the job is not affected.

    Notes
    -----
    Jobs reloaded from the saved registry at start-up are not announced.

    Orthanc equivalent: ``OrthancPluginRegisterOnChangeCallback`` with the
    ``JobSubmitted``, ``JobSuccess`` and ``JobFailure`` change types.
    """


#: Every core hook with its calling convention, in declaration order.
CORE_CONVENTIONS: dict[str, str] = {name: getattr(fn, CONVENTION_ATTR) for name, fn in list(globals().items())
                                    if callable(fn) and hasattr(fn, CONVENTION_ATTR)}
