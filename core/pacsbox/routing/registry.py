"""Route declarations (``RouteSpec``) and the registry that mounts them on falcon.

Plugins return :class:`RouteSpec` objects from ``register_routes``; the core collects
them, refuses duplicates at start-up with both plugins' names, then calls
``app.add_route``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import falcon

from ..errors import StartupError


@dataclass(frozen=True)
class RouteSpec:
    """Declaration of one REST route.

    Parameters
    ----------
    path : str
        falcon URI template, e.g. ``"/studies/{id}/archive"``. Use ``{id}`` for resource
        IDs so that templates sharing a prefix agree on field names.
    factory : callable
        ``factory(ctx)`` returns the falcon resource (an object with ``on_get``,
        ``on_post``...). Called once at start-up.
    suffix : str, optional
        falcon responder suffix (``on_get_<suffix>``), to serve several paths with one
        resource.
    plugin : str
        Declaring plugin (filled in by the core).
    fallback : bool
        A default answer, replaced without error by another plugin's declaration of the same
        route (the core's ``/tools/execute-script`` answers 403 until a scripting plugin
        declares it).
    """

    path: str
    factory: Callable[[Any], Any]
    suffix: str | None = None
    plugin: str = ""
    fallback: bool = False


_FIELD = re.compile(r"\{[^}]*\}")


def _shape(path: str) -> str:
    return _FIELD.sub("{}", path.rstrip("/") or "/")


class RouteRegistry:
    """Collects :class:`RouteSpec` declarations and mounts them."""

    def __init__(self) -> None:
        self.routes: list[RouteSpec] = []
        self._by_shape: dict[tuple[str, str | None], RouteSpec] = {}

    def add(self, spec: RouteSpec) -> None:
        """Add one declaration.

        A ``fallback`` declaration gives way to any other declaration of the same route,
        whichever comes first.

        Raises
        ------
        StartupError
            The same template (up to field names) was declared before; the message names
            both plugins.
        """
        key = (_shape(spec.path), spec.suffix)
        prev = self._by_shape.get(key)
        if prev is not None and prev.fallback != spec.fallback:
            if spec.fallback:
                return
            self.routes.remove(prev)
            prev = None
        if prev is not None:
            raise StartupError(f"route {spec.path!r} declared by both plugin {prev.plugin!r} "
                               f"and plugin {spec.plugin!r}")
        self._by_shape[key] = spec
        self.routes.append(spec)

    def mount(self, app: falcon.App, ctx: Any) -> None:
        """Instantiate every resource and add it to ``app`` (kept in :attr:`mounted`, for
        the OpenAPI document)."""
        self.mounted: list[tuple[RouteSpec, Any]] = []
        for spec in self.routes:
            resource = spec.factory(ctx)
            self.mounted.append((spec, resource))
            if spec.suffix:
                app.add_route(spec.path, resource, suffix=spec.suffix)
            else:
                app.add_route(spec.path, resource)

    def by_plugin(self) -> dict[str, list[str]]:
        """plugin name → its route templates."""
        out: dict[str, list[str]] = {}
        for spec in self.routes:
            out.setdefault(spec.plugin, []).append(spec.path)
        return out
