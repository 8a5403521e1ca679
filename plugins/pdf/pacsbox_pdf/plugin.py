"""Hook implementations of the pacsbox_pdf plugin (entry point ``pdf``).

- ``add_hookspecs``: declares :mod:`pacsbox_pdf.hookspecs` (``register_content_encoders``);
- ``register_content_encoders`` (``trylast``): the built-in MIME types;
- ``register_options``: declares the ``CreateDicomMaximumSize`` option;
- ``register_routes``: ``POST /tools/create-dicom`` and ``GET /instances/{id}/pdf``,
  with the encoders every plugin declared.
"""
from __future__ import annotations

import sys
from typing import Any

from pacsbox import OptionSpec, StartupError, hookimpl

from . import hookspecs, routes
from .encapsulate import BUILTIN_ENCODERS


@hookimpl
def add_hookspecs(plugin_manager):
    """Declare the plugin's extension points (:mod:`pacsbox_pdf.hookspecs`)."""
    plugin_manager.add_hookspecs(hookspecs)


@hookimpl
def register_options():
    """``CreateDicomMaximumSize`` (checked by the core at start-up)."""
    return [OptionSpec(routes.MAX_SIZE_OPTION, "int>=0", routes.DEFAULT_MAX_SIZE_MB,
                       "Largest body of POST /tools/create-dicom, in MB (0: no limit)")]


@hookimpl(trylast=True)
def register_content_encoders(ctx):
    """``application/pdf``, ``image/png``, ``image/jpeg``, ``model/stl``, ``model/obj``,
    ``model/mtl``."""
    return dict(BUILTIN_ENCODERS)


def collect_encoders(ctx: Any) -> dict[str, Any]:
    """Merge the ``register_content_encoders`` declarations of every plugin.

    Returns
    -------
    dict of str to callable
        Lower-case MIME type → encoder. A type declared by another plugin replaces this
        plugin's built-in one.

    Raises
    ------
    StartupError
        A declaration that is not a mapping of strings to callables, or one MIME type
        declared by two plugins other than this one (both are named).
    """
    own = ctx.pm.get_name(sys.modules[__name__])
    out: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for plugin, result in ctx.pm.call_collect("register_content_encoders", {"ctx": ctx}):
        if not hasattr(result, "items"):
            raise StartupError(f"plugin {plugin!r}: hook register_content_encoders must return a mapping, "
                               f"not {type(result).__name__}")
        for mime, encoder in result.items():
            if not isinstance(mime, str) or not callable(encoder):
                raise StartupError(f"plugin {plugin!r}: hook register_content_encoders returned {mime!r}: "
                                   f"{encoder!r}, expected a MIME type and a callable")
            key = mime.strip().lower()
            if key in owner:
                if plugin == own:
                    continue  # a built-in type replaced by another plugin
                if owner[key] != own:
                    raise StartupError(f"content type {key!r} is declared by plugins {owner[key]!r} and {plugin!r}")
            owner[key] = plugin
            out[key] = encoder
    return out


@hookimpl
def register_routes(ctx):
    """``POST /tools/create-dicom`` and ``GET /instances/{id}/pdf``."""
    return routes.route_specs(ctx, collect_encoders(ctx))
