"""Plugin discovery: one pluggy manager per app.

:func:`build_plugin_manager` runs, in order: add the core hookspecs; apply the blocklist
(config option ``PluginsBlocklist`` and environment variable ``PACSBOX_DISABLE_PLUGINS``);
load the ``pacsbox.plugins`` entry points; register :data:`DEFAULT_PLUGINS` and the
explicit ``plugins``; ``check_pending()``; enable tracing when ``PACSBOX_TRACE_PLUGINS``
is set.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from importlib import metadata
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .config import BLOCKLIST_ENV, Config

log = logging.getLogger("pacsbox.plugins")

ENTRY_POINT_GROUP = "pacsbox.plugins"
TRACE_ENV = "PACSBOX_TRACE_PLUGINS"

#: Built-in features, registered as plugins (defaults are ``trylast``).
DEFAULT_PLUGINS = (
    "pacsbox.storage.filesystem",
    "pacsbox.rest.core",
    "pacsbox.rest.jobs",
    "pacsbox.builtin.modify",
)


class PluginLoadError(RuntimeError):
    """An entry point could not be imported; the message names it and its distribution."""


def build_plugin_manager(config: Config, *, plugins: Iterable[Any] | None = None,
                         load_entrypoints: bool = True) -> pluggy.PluginManager:
    """Build the app's plugin manager.

    Parameters
    ----------
    config : Config
    plugins : iterable, optional
        Extra plugin objects or modules (tests register their own this way).
    load_entrypoints : bool
        Load the installed ``pacsbox.plugins`` entry points.

    Returns
    -------
    pluggy.PluginManager

    Raises
    ------
    PluginLoadError
        An entry point failed to import.
    pluggy.PluginValidationError
        An implementation does not match its spec, or implements an unknown hook.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    blocked = set(config.get("PluginsBlocklist") or [])
    blocked |= {b.strip() for b in os.environ.get(BLOCKLIST_ENV, "").split(",") if b.strip()}
    for name in blocked:
        pm.set_blocked(name)
    pm.dist_info = {}  # type: ignore[attr-defined]
    if load_entrypoints:
        for ep in _entry_points():
            if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as e:  # noqa: BLE001
                dist = ep.dist.name if ep.dist else "?"
                raise PluginLoadError(f"cannot load plugin {ep.name!r} ({ep.value}) of distribution "
                                      f"{dist!r}: {type(e).__name__}: {e}") from e
            pm.register(plugin, name=ep.name)
            pm.dist_info[ep.name] = (ep.dist.name if ep.dist else "", ep.dist.version if ep.dist else "",
                                     ep.value)
    for modname in DEFAULT_PLUGINS:
        if pm.is_blocked(modname) or pm.get_plugin(modname) is not None:
            continue
        pm.register(importlib.import_module(modname), name=modname)
    for p in plugins or ():
        name = getattr(p, "plugin_name", None) or getattr(p, "__name__", None) or None
        if isinstance(name, str) and pm.is_blocked(name):
            continue
        pm.register(p, name=name if isinstance(name, str) and pm.get_plugin(name) is None else None)
    pm.hook.add_hookspecs.call_historic(kwargs={"plugin_manager": pm})
    pm.check_pending()
    if os.environ.get(TRACE_ENV):
        def before(hook_name, hook_impls, kwargs):
            print(f"pacsbox hook {hook_name} -> {[i.plugin_name for i in hook_impls]}", file=sys.stderr)

        def after(outcome, hook_name, hook_impls, kwargs):
            pass
        pm.add_hookcall_monitoring(before, after)
    return pm


def _entry_points():
    try:
        return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except TypeError:  # pragma: no cover - Python < 3.10
        return list(metadata.entry_points().get(ENTRY_POINT_GROUP, []))


def installed_entry_points() -> list[tuple[str, str, str, str]]:
    """``(name, distribution, version, module)`` of every installed ``pacsbox.plugins`` entry point."""
    out = []
    for ep in _entry_points():
        out.append((ep.name, ep.dist.name if ep.dist else "", ep.dist.version if ep.dist else "", ep.value))
    return sorted(out)


def list_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """The loaded plugins: ``ID``, ``Name``, ``Version``, ``Description``, ``Distribution``.

    Only entry-point plugins (first- and third-party) are listed; the built-in default
    plugins are part of the core.
    """
    out = []
    info = getattr(pm, "dist_info", {})
    for name, plugin in pm.list_name_plugin():
        if name not in info or plugin is None:
            continue
        dist, version, value = info[name]
        pkg = sys.modules.get(value.split(":")[0].rsplit(".", 1)[0])
        desc = (getattr(pkg, "__doc__", None) or getattr(plugin, "__doc__", None) or "").strip().split("\n")[0]
        out.append({"ID": name, "Name": name, "Version": version, "Distribution": dist,
                    "Description": desc, "Module": value})
    return sorted(out, key=lambda p: p["ID"])
