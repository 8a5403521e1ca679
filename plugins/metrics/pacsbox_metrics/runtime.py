"""Per-app state of the metrics plugin, kept in ``ctx.stash["metrics"]`` (no globals).

Options come from the ``"Metrics"`` section of the configuration::

    "Metrics": {
      "MemoryTrimmingInterval": 30,   // seconds between two malloc_trim calls, 0 = never
      "ExpositionCacheMs": 0          // reuse a rendered exposition for this long, 0 = never
    }
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .collector import Exposition
from .trimming import MemoryTrimmer

#: Key of this plugin's per-app state in ``ctx.stash``.
STASH_KEY = "metrics"

#: Defaults of the ``"Metrics"`` configuration section.
DEFAULTS = {"MemoryTrimmingInterval": 30, "ExpositionCacheMs": 0}


@dataclass
class MetricsPluginState:
    """What the plugin owns for one app.

    Attributes
    ----------
    exposition : Exposition
        The app's prometheus-client registry and renderer.
    trimmer : MemoryTrimmer
        The memory-trimming housekeeper.
    """

    exposition: Exposition
    trimmer: MemoryTrimmer


def options(ctx: Any) -> dict[str, Any]:
    """The ``"Metrics"`` section merged over :data:`DEFAULTS`.

    Raises
    ------
    ValueError
        The section is not a JSON object or a value is not a number.
    """
    section = ctx.plugin_config("Metrics") or {}
    if not isinstance(section, dict):
        raise ValueError('option "Metrics" must be a JSON object')
    opts = {**DEFAULTS, **section}
    for key in DEFAULTS:
        if isinstance(opts[key], bool) or not isinstance(opts[key], (int, float)):
            raise ValueError(f'option "Metrics.{key}" must be a number')
    return opts


def plugin_state(ctx: Any) -> MetricsPluginState:
    """This app's :class:`MetricsPluginState`, created on first use."""
    state = ctx.stash.get(STASH_KEY)
    if state is None:
        opts = options(ctx)
        state = ctx.stash[STASH_KEY] = MetricsPluginState(
            exposition=Exposition(ctx.metrics, cache_seconds=float(opts["ExpositionCacheMs"]) / 1000.0),
            trimmer=MemoryTrimmer(ctx.metrics, interval=float(opts["MemoryTrimmingInterval"])))
    return state
