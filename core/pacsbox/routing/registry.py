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


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def field_clash(a: str, b: str) -> tuple[str, str] | None:
    """The first place where two URI templates name a field differently, as falcon refuses.

    falcon's router is a tree: templates that agree up to a segment holding a field must
    name that field alike (``/studies/{id}`` and ``/studies/{sid}/foo`` cannot coexist).

    Parameters
    ----------
    a, b : str
        URI templates.

    Returns
    -------
    (str, str) or None
        The two differing segments (``("{sid}", "{id}")``), or None when the templates can
        coexist.
    """
    for x, y in zip(_segments(a), _segments(b)):
        if x == y:
            continue
        if "{" in x and "{" in y:
            return x, y
        return None  # different literals, or a literal beside a field: different branches
    return None


class RouteRegistry:
    """Collects :class:`RouteSpec` declarations and mounts them.

    Parameters
    ----------
    builtin : iterable of str, optional
        Names of the core's built-in plugins: when a plugin's route clashes with a built-in
        one, the error is laid on the plugin.
    """

    def __init__(self, builtin=()) -> None:
        self.routes: list[RouteSpec] = []
        self._by_shape: dict[tuple[str, str | None], RouteSpec] = {}
        self._builtin = frozenset(builtin)

    def add(self, spec: RouteSpec) -> None:
        """Add one declaration.

        A ``fallback`` declaration gives way to any other declaration of the same route,
        whichever comes first.

        Raises
        ------
        StartupError
            The same template (up to field names) was declared before (the message names
            both plugins), or the template names a field differently from a route declared
            before at the same position (``"plugin 'x': route '/studies/{sid}/foo': field
            {sid} where route '/studies/{id}' of plugin 'pacsbox.rest.core' has {id}..."``).
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
        for other in self.routes:
            clash = field_clash(spec.path, other.path)
            if clash is not None:
                culprit, victim = spec, other
                if spec.plugin in self._builtin and other.plugin not in self._builtin:
                    culprit, victim, clash = other, spec, clash[::-1]
                raise StartupError(
                    f"plugin {culprit.plugin!r}: route {culprit.path!r}: field {clash[0]} where route "
                    f"{victim.path!r} of plugin {victim.plugin!r} has {clash[1]}; routes that agree up to a "
                    f"field must name it alike (falcon's router)")
        self._by_shape[key] = spec
        self.routes.append(spec)

    def mount(self, app: falcon.App, ctx: Any) -> None:
        """Instantiate every resource and add it to ``app`` (kept in :attr:`mounted`, for
        the OpenAPI document).

        Raises
        ------
        StartupError
            A resource factory raised, or falcon refused a route (a malformed template, a
            responder missing for ``suffix``); the message names the plugin and the route.
        """
        self.mounted: list[tuple[RouteSpec, Any]] = []
        for spec in self.routes:
            try:
                resource = spec.factory(ctx)
            except Exception as e:
                raise StartupError(f"plugin {spec.plugin!r}: route {spec.path!r}: the resource factory raised "
                                   f"{type(e).__name__}: {e}") from e
            self.mounted.append((spec, resource))
            try:
                if spec.suffix:
                    app.add_route(spec.path, resource, suffix=spec.suffix)
                else:
                    app.add_route(spec.path, resource)
            except Exception as e:  # falcon.routing errors (UnacceptableRouteError, SuffixedMethodNotFoundError...)
                raise StartupError(f"plugin {spec.plugin!r}: route {spec.path!r}: falcon refused it: "
                                   f"{type(e).__name__}: {e}") from e

    def by_plugin(self) -> dict[str, list[str]]:
        """plugin name → its route templates."""
        out: dict[str, list[str]] = {}
        for spec in self.routes:
            out.setdefault(spec.plugin, []).append(spec.path)
        return out
