"""Plugin discovery and hook calling: one pluggy manager per app.

:func:`build_plugin_manager` runs, in order:

1. add the core hookspecs (:mod:`pacsbox.hookspecs`);
2. apply the blocklist (config option ``PluginsBlocklist`` and the environment variable
   ``PACSBOX_DISABLE_PLUGINS``, comma-separated); blocked names are never registered;
3. load the ``pacsbox.plugins`` entry points; an import error stops the start-up with a
   :class:`PluginLoadError` naming the entry point and its distribution, and two
   distributions advertising the same entry-point name stop it too;
4. register :data:`DEFAULT_PLUGINS` (the core's own features, ``trylast``) and the
   explicit ``plugins`` given by the caller (tests);
5. call the historic ``add_hookspecs`` hook, then ``check_pending()`` (an implementation of
   an unknown hook without ``optionalhook=True`` fails, naming the plugin);
6. refuse ``wrapper``/``hookwrapper`` implementations of the hooks called one implementation
   at a time (conventions in :data:`pacsbox.hookspecs.PER_IMPL_CONVENTIONS`);
7. enable tracing when ``PACSBOX_TRACE_PLUGINS`` is set (every hook call is logged on the
   ``pacsbox.plugins.trace`` logger, at WARNING level so that it shows without
   ``--verbose``).

The manager also carries the one dispatcher of hook calls,
:meth:`PacsboxPluginManager.call`, which applies the calling convention attached to each
spec (:mod:`pacsbox.hookspecs`) and reports every failing implementation with its
plugin's name.

Sources: DESIGN.md section 2 ("How a plugin is discovered"); pluggy ``PluginManager``;
Orthanc ``PluginsManager`` (``/plugins``).
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Iterable, Mapping

import pluggy

from . import hookspecs
from .config import BLOCKLIST_ENV, Config
from .errors import StartupError

log = logging.getLogger("pacsbox.plugins")
trace_log = logging.getLogger("pacsbox.plugins.trace")

#: Entry-point group scanned for plugins (PyPA: consumer-defined groups start with the
#: consumer's name).
ENTRY_POINT_GROUP = "pacsbox.plugins"

#: Environment variable: when set (non-empty), every hook call is logged.
TRACE_ENV = "PACSBOX_TRACE_PLUGINS"

#: Built-in features, registered as plugins (their implementations are ``trylast`` so
#: that installed plugins can override them).
DEFAULT_PLUGINS = (
    "pacsbox.storage.filesystem",
    "pacsbox.rest.core",
    "pacsbox.rest.images",
    "pacsbox.rest.jobs",
    "pacsbox.rest.plugins",
    "pacsbox.builtin.modify",
)

#: Built-in plugins that cannot be blocked (as pytest's ``essential_plugins``): without them
#: a server starts but is not one (``pacsbox.rest.core`` serves ``/system``, the resources
#: and ``/tools``; ``pacsbox.rest.jobs`` the jobs every plugin submits; the filesystem
#: storage area is the default every other storage plugin overrides without blocking it).
ESSENTIAL_PLUGINS = frozenset({"pacsbox.storage.filesystem", "pacsbox.rest.core", "pacsbox.rest.jobs"})

#: Core hooks that the core calls one implementation at a time (to attribute declarations to
#: their plugin, or to isolate failures), derived from the conventions attached to the specs
#: (:data:`pacsbox.hookspecs.PER_IMPL_CONVENTIONS`). ``wrapper=True`` implementations of
#: these are refused at start-up because they would never be run as wrappers.
PER_IMPL_HOOKS = frozenset(name for name, conv in hookspecs.CORE_CONVENTIONS.items()
                           if conv in hookspecs.PER_IMPL_CONVENTIONS)


class PluginLoadError(StartupError):
    """An entry point could not be loaded; the message names it and its distribution."""


@dataclass(frozen=True)
class PluginDistInfo:
    """Where a loaded entry-point plugin comes from.

    Attributes
    ----------
    name : str
        Entry-point name: the plugin's ID in ``/plugins``, the blocklist and the logs.
    distribution : str
        Name of the installed distribution advertising the entry point.
    version : str
        That distribution's version.
    module : str
        Entry-point value (``"pacsbox_example.plugin"``).
    """

    name: str
    distribution: str
    version: str
    module: str


class PacsboxPluginManager(pluggy.PluginManager):
    """A :class:`pluggy.PluginManager` with pacsbox's calling helpers.

    One is built per app by :func:`build_plugin_manager`; it holds no module-global
    state.

    Attributes
    ----------
    dist_info : dict of str to PluginDistInfo
        The plugins loaded from entry points, by entry-point name.
    blocked_names : frozenset of str
        The blocklist in force.
    tracing : bool
        Whether hook calls are logged (``PACSBOX_TRACE_PLUGINS``).
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.dist_info: dict[str, PluginDistInfo] = {}
        self.blocked_names: frozenset[str] = frozenset()
        self.tracing = False

    # ---- calling helpers ------------------------------------------------------------
    def _impls(self, hook_name: str) -> list[Any]:
        # pluggy calls implementations in the reverse of get_hookimpls() order
        # (tryfirst first, trylast last, otherwise last registered first).
        return list(reversed(getattr(self.hook, hook_name).get_hookimpls()))

    def _trace(self, hook_name: str, impl: Any) -> None:
        if self.tracing:
            trace_log.warning("hook %s -> plugin %r", hook_name, impl.plugin_name)

    def has_impls(self, hook_name: str) -> bool:
        """bool: whether any registered plugin implements ``hook_name``."""
        return bool(getattr(self.hook, hook_name).get_hookimpls())

    def convention(self, hook_name: str) -> str | None:
        """The calling convention of a hook, as attached to its spec.

        Returns
        -------
        str or None
            One of :data:`pacsbox.hookspecs.CONVENTIONS`, or None for a plugin-owned spec
            declared without one (neither ``firstresult`` nor ``historic``).

        Raises
        ------
        AttributeError
            No spec of that name.
        """
        caller = getattr(self.hook, hook_name)
        spec = caller.spec
        return None if spec is None else hookspecs.convention_of(spec.function)

    def call(self, hook_name: str, kwargs: Mapping[str, Any] | None = None, *, convention: str | None = None,
             **options: Any) -> Any:
        """Call a hook the way its calling convention says: the one dispatcher of hook calls.

        Parameters
        ----------
        hook_name : str
            A core hook, or a plugin-owned one.
        kwargs : mapping, optional
            The hook's arguments.
        convention : str, optional
            Expected convention. Required for a plugin-owned spec declared without one;
            for any other it must match the spec's (a caller treating a filter as a
            notification is a programming error).
        **options
            Per convention: ``done`` (collect-all: list receiving the plugins whose
            implementation returned), ``only`` (isolated, notification: plugin names to
            call), ``failed`` (veto filter: list receiving the plugins whose filter raised).

        Returns
        -------
        object
            collect-all: list of ``(plugin name, result)`` for every non-``None`` result;
            firstresult: the first non-``None`` result; veto filter: bool (True: accepted);
            isolated and notification: the number of implementations that raised;
            historic: None.

        Raises
        ------
        StartupError
            collect-all, firstresult, historic: an implementation raised (the plugin and the
            hook named).
        TypeError
            ``convention`` contradicts the spec's, or neither gives one.

        Notes
        -----
        Notification hooks are called here by the app's notification thread; code that
        announces an event calls :meth:`pacsbox.notify.Notifier.emit`, which queues it.
        """
        declared = self.convention(hook_name)
        if declared is not None and convention is not None and convention != declared:
            raise TypeError(f"hook {hook_name} is a {declared} hook, not a {convention} hook")
        conv = declared or convention
        kwargs = dict(kwargs or {})
        if conv == "collect-all":
            return self._collect(hook_name, kwargs, **options)
        if conv in ("isolated", "notification"):
            return self._isolated(hook_name, kwargs, **options)
        if conv == "veto filter":
            return self._veto(hook_name, kwargs, **options)
        if conv == "firstresult":
            return self._first(hook_name, kwargs)
        if conv == "historic":
            return self._historic(hook_name, kwargs)
        raise TypeError(f"hook {hook_name} declares no calling convention (give one to @hookspec)")

    # named shorthands, for plugin-owned hooks declared without a convention
    def call_collect(self, hook_name: str, kwargs: Mapping[str, Any], *,
                     done: list[str] | None = None) -> list[tuple[str, Any]]:
        """``call(hook_name, kwargs, convention="collect-all")`` (see :meth:`call`)."""
        return self.call(hook_name, kwargs, convention="collect-all", done=done)

    def call_isolated(self, hook_name: str, kwargs: Mapping[str, Any], *,
                      only: Iterable[str] | None = None) -> int:
        """``call(hook_name, kwargs)`` for an isolated or notification hook (see :meth:`call`)."""
        conv = self.convention(hook_name)
        return self.call(hook_name, kwargs, convention=conv if conv == "notification" else "isolated", only=only)

    def call_veto(self, hook_name: str, kwargs: Mapping[str, Any], failed: list[str] | None = None) -> bool:
        """``call(hook_name, kwargs, convention="veto filter")`` (see :meth:`call`)."""
        return self.call(hook_name, kwargs, convention="veto filter", failed=failed)

    def call_first(self, hook_name: str, **kwargs: Any) -> Any:
        """``call(hook_name, kwargs, convention="firstresult")`` (see :meth:`call`)."""
        return self.call(hook_name, kwargs, convention="firstresult")

    def call_historic(self, hook_name: str, **kwargs: Any) -> None:
        """``call(hook_name, kwargs, convention="historic")`` (see :meth:`call`)."""
        return self.call(hook_name, kwargs, convention="historic")

    # ---- one implementation per convention ----------------------------------------------
    def _collect(self, hook_name: str, kwargs: Mapping[str, Any], *,
                 done: list[str] | None = None) -> list[tuple[str, Any]]:
        """Call a collect-all start-up hook, keeping each result with its plugin's name.

        Parameters
        ----------
        hook_name : str
            ``"register_routes"``, ``"register_job_types"``, ``"register_metrics"``,
            ``"startup"``.
        kwargs : mapping
            The hook's arguments.
        done : list of str, optional
            Receives the name of each plugin whose implementation returned.

        Returns
        -------
        list of (str, object)
            ``(plugin name, result)`` for every implementation that did not return
            ``None``, in pluggy's call order.

        Raises
        ------
        StartupError
            An implementation raised; the message names the plugin and the hook.
        """
        out = []
        for impl in self._impls(hook_name):
            self._trace(hook_name, impl)
            try:
                result = impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception as e:
                raise StartupError(f"plugin {impl.plugin_name!r} failed in hook {hook_name}: "
                                   f"{type(e).__name__}: {e}") from e
            if done is not None:
                done.append(impl.plugin_name)
            if result is not None:
                out.append((impl.plugin_name, result))
        return out

    def _isolated(self, hook_name: str, kwargs: Mapping[str, Any], *,
                  only: Iterable[str] | None = None) -> int:
        """Call every implementation; log and skip the ones that raise.

        Used for notifications (on the dispatcher thread) and ``shutdown``.

        Parameters
        ----------
        hook_name : str
        kwargs : mapping
            The hook's arguments.
        only : iterable of str, optional
            Call only the implementations of these plugins.

        Returns
        -------
        int
            How many implementations raised (each is logged on ``pacsbox.plugins`` with
            the plugin's name and the traceback).
        """
        allowed = None if only is None else set(only)
        failed = 0
        for impl in self._impls(hook_name):
            if allowed is not None and impl.plugin_name not in allowed:
                continue
            self._trace(hook_name, impl)
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception:  # noqa: BLE001 - isolation is the contract
                failed += 1
                log.exception("plugin %r failed in hook %s", impl.plugin_name, hook_name)
        return failed

    def _veto(self, hook_name: str, kwargs: Mapping[str, Any], failed: list[str] | None = None) -> bool:
        """Call a veto filter: every implementation runs; any ``False`` refuses.

        Parameters
        ----------
        hook_name : str
            ``"filter_incoming_http_request"`` or ``"filter_received_instance"``.
        kwargs : mapping
            The hook's arguments.
        failed : list of str, optional
            Receives the name of each plugin whose implementation raised (so that a
            caller can tell a refusal from a failure, e.g. the C-STORE SCP's status).

        Returns
        -------
        bool
            True when no implementation returned ``False`` and none raised. An
            implementation that raises is logged with its plugin's name and counts as a
            refusal (a broken filter fails closed); the others still run.
        """
        accepted = True
        for impl in self._impls(hook_name):
            self._trace(hook_name, impl)
            try:
                result = impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception:  # noqa: BLE001 - fail closed
                log.exception("plugin %r failed in hook %s; refusing", impl.plugin_name, hook_name)
                accepted = False
                if failed is not None:
                    failed.append(impl.plugin_name)
                continue
            if result is False:
                accepted = False
        return accepted

    def _first(self, hook_name: str, kwargs: Mapping[str, Any]) -> Any:
        """Call a ``firstresult`` hook through pluggy (wrappers honoured).

        Returns
        -------
        object or None
            The first non-``None`` result.

        Raises
        ------
        StartupError
            An implementation raised; the message names the plugin found in the
            traceback.
        """
        try:
            return getattr(self.hook, hook_name)(**kwargs)
        except Exception as e:
            raise StartupError(f"plugin {self.culprit(hook_name, e)!r} failed in hook {hook_name}: "
                               f"{type(e).__name__}: {e}") from e

    def culprit(self, hook_name: str, exc: BaseException) -> str:
        """The name of the plugin whose implementation of ``hook_name`` raised ``exc``.

        Returns
        -------
        str
            The plugin name of the innermost implementation found in the traceback, or
            ``"?"``.
        """
        codes = {}
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            code = getattr(impl.function, "__code__", None)
            if code is not None:
                codes[code] = impl.plugin_name
        found = "?"
        tb = exc.__traceback__
        while tb is not None:
            name = codes.get(tb.tb_frame.f_code)
            if name is not None:
                found = name
            tb = tb.tb_next
        return found

    def _historic(self, hook_name: str, kwargs: Mapping[str, Any]) -> None:
        """Call a historic hook (``configure``, ``add_hookspecs``); late plugins catch up.

        Raises
        ------
        StartupError
            An implementation raised; the message names the plugin.
        """
        try:
            getattr(self.hook, hook_name).call_historic(kwargs=kwargs)
        except Exception as e:
            raise StartupError(f"plugin {self.culprit(hook_name, e)!r} failed in hook {hook_name}: "
                               f"{type(e).__name__}: {e}") from e


def blocklist(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The plugin names not to load.

    Parameters
    ----------
    config : mapping
        ``PluginsBlocklist``: a list of names (a comma-separated string is accepted too).
    environ : mapping, optional
        Environment (``os.environ`` by default); ``PACSBOX_DISABLE_PLUGINS=a,b``.

    Returns
    -------
    frozenset of str
        Entry-point names (``"archive"``), default-plugin module names
        (``"pacsbox.rest.jobs"``) or explicit plugin names.

    Raises
    ------
    StartupError
        ``PluginsBlocklist`` is neither a list of strings nor a string, or it or the
        environment variable names an essential built-in plugin
        (:data:`ESSENTIAL_PLUGINS`).
    """
    environ = os.environ if environ is None else environ
    value = config.get("PluginsBlocklist") or []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise StartupError("configuration option \"PluginsBlocklist\" must be a list of plugin names")
    from_config = {v.strip() for v in value if v.strip()}
    from_env = {v.strip() for v in environ.get(BLOCKLIST_ENV, "").split(",") if v.strip()}
    for name in sorted((from_config | from_env) & ESSENTIAL_PLUGINS):
        where = "the option PluginsBlocklist" if name in from_config else f"the environment variable {BLOCKLIST_ENV}"
        raise StartupError(f"plugin {name!r} is essential and cannot be blocked (named by {where}); the "
                           f"essential plugins are {', '.join(sorted(ESSENTIAL_PLUGINS))}")
    return frozenset(from_config | from_env)


def _plugin_name(p: Any) -> str | None:
    name = getattr(p, "plugin_name", None) or getattr(p, "__name__", None)
    return name if isinstance(name, str) else None


def build_plugin_manager(config: Config | Mapping[str, Any], *, plugins: Iterable[Any] | None = None,
                         load_entrypoints: bool = True) -> PacsboxPluginManager:
    """Build the plugin manager of one app.

    Parameters
    ----------
    config : Config or mapping
        Reads ``PluginsBlocklist``.
    plugins : iterable, optional
        Extra plugin objects or modules registered for this app only (tests). Each is
        named by its ``plugin_name`` attribute, else its ``__name__``, else a generated
        name; a named one is subject to the blocklist.
    load_entrypoints : bool, default True
        Load the installed ``pacsbox.plugins`` entry points.

    Returns
    -------
    PacsboxPluginManager

    Raises
    ------
    PluginLoadError
        An entry point failed to import (the message names the entry point, its value
        and its distribution), or two distributions advertise the same entry-point name.
    StartupError
        A malformed ``PluginsBlocklist``; a plugin failing in ``add_hookspecs``; a
        wrapper implementation of a hook in :data:`PER_IMPL_HOOKS`.
    pluggy.PluginValidationError
        An implementation does not match its spec, or implements an unknown hook without
        ``optionalhook=True`` (the message names the plugin).
    """
    pm = PacsboxPluginManager()
    pm.add_hookspecs(hookspecs)
    pm.blocked_names = blocklist(config)
    for name in pm.blocked_names:
        pm.set_blocked(name)
    if load_entrypoints:
        for ep in _entry_points():
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else ""
            if pm.is_blocked(ep.name):
                log.info("plugin %r (%s %s) is blocked", ep.name, dist, version)
                continue
            prev = pm.dist_info.get(ep.name)
            if prev is not None:
                raise PluginLoadError(f"plugin name {ep.name!r} is advertised by both distribution "
                                      f"{prev.distribution!r} ({prev.module}) and distribution {dist!r} "
                                      f"({ep.value})")
            try:
                plugin = ep.load()
            except Exception as e:  # noqa: BLE001 - any import failure stops the start-up
                raise PluginLoadError(f"cannot load plugin {ep.name!r} ({ep.value}) of distribution "
                                      f"{dist!r} {version}: {type(e).__name__}: {e}") from e
            pm.register(plugin, name=ep.name)
            pm.dist_info[ep.name] = PluginDistInfo(ep.name, dist, version, ep.value)
            log.debug("loaded plugin %r from %s (distribution %s %s)", ep.name, ep.value, dist, version)
    for modname in DEFAULT_PLUGINS:
        if pm.is_blocked(modname) or pm.get_plugin(modname) is not None:
            continue
        pm.register(importlib.import_module(modname), name=modname)
    for p in plugins or ():
        name = _plugin_name(p)
        if name is not None and pm.is_blocked(name):
            continue
        if name is not None and pm.get_plugin(name) is not None:
            name = None  # let pluggy generate a unique name
        pm.register(p, name=name)
    pm.call("add_hookspecs", {"plugin_manager": pm})
    pm.check_pending()
    _refuse_wrappers(pm)
    if os.environ.get(TRACE_ENV):
        pm.tracing = True

        def before(hook_name, hook_impls, kwargs):
            trace_log.warning("hook %s -> plugins %s", hook_name, [i.plugin_name for i in reversed(hook_impls)])

        def after(outcome, hook_name, hook_impls, kwargs):
            pass

        pm.add_hookcall_monitoring(before, after)
    return pm


def _refuse_wrappers(pm: PacsboxPluginManager) -> None:
    """Refuse ``wrapper`` implementations of every hook (core or plugin-owned) whose
    convention calls the implementations one at a time."""
    for name, caller in sorted(vars(pm.hook).items()):
        if not isinstance(caller, pluggy.HookCaller) or caller.spec is None \
                or pm.convention(name) not in hookspecs.PER_IMPL_CONVENTIONS:
            continue
        for impl in caller.get_hookimpls():
            if impl.wrapper or impl.hookwrapper:
                raise StartupError(f"plugin {impl.plugin_name!r}: hook {name} does not accept wrapper "
                                   f"implementations (the core calls its implementations one by one)")


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def installed_entry_points() -> list[PluginDistInfo]:
    """Every installed ``pacsbox.plugins`` entry point, loaded or not, sorted by name.

    Returns
    -------
    list of PluginDistInfo
    """
    return [PluginDistInfo(ep.name, ep.dist.name if ep.dist else "", ep.dist.version if ep.dist else "", ep.value)
            for ep in _entry_points()]


def describe_plugin(pm: PacsboxPluginManager, name: str) -> str:
    """One-line description of a loaded plugin: the first line of its package docstring.

    The docstring of the package holding the entry-point module is used (e.g.
    ``pacsbox_example/__init__.py`` for ``pacsbox_example.plugin``), else the module's.
    """
    info = pm.dist_info[name]
    plugin = pm.get_plugin(name)
    modname = info.module.split(":")[0]
    pkg = sys.modules.get(modname.rsplit(".", 1)[0]) if "." in modname else None
    doc = (getattr(pkg, "__doc__", None) or getattr(plugin, "__doc__", None) or "").strip()
    return doc.split("\n")[0].strip()


def list_plugins(pm: PacsboxPluginManager) -> list[dict[str, Any]]:
    """The loaded entry-point plugins, sorted by ID.

    The built-in :data:`DEFAULT_PLUGINS` and explicit test plugins are part of the app
    but are not listed (as Orthanc lists only its shared-library plugins).

    Returns
    -------
    list of dict
        ``ID`` (entry-point name), ``Version`` (distribution version), ``Description``,
        ``Distribution``, ``Module``.
    """
    out = []
    for name, info in sorted(pm.dist_info.items()):
        if pm.get_plugin(name) is None:
            continue
        out.append({"ID": name, "Version": info.version, "Description": describe_plugin(pm, name),
                    "Distribution": info.distribution, "Module": info.module})
    return out

