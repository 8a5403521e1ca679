"""Per-app state of the metrics plugin, kept in ``ctx.stash["metrics"]`` (no globals).

Options come from the ``"Metrics"`` section of the configuration::

    "Metrics": {
      "MemoryTrimmingInterval": 30,   // seconds between two malloc_trim calls, 0 = never
      "ExpositionCacheMs": 0          // reuse a rendered exposition for this long, 0 = never
    }
"""
from __future__ import annotations

import json
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


def check_section(section: dict[str, Any]) -> None:
    """Check the ``"Metrics"`` section (the ``check`` of its :class:`~pacsbox.OptionSpec`;
    the core has checked that it is a JSON object).

    Raises
    ------
    pacsbox.ConfigError
        A key of :data:`DEFAULTS` whose value is not a number >= 0, named with its value.
    """
    from pacsbox import ConfigError
    for key in DEFAULTS:
        value = section.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"option Metrics.{key}: {json.dumps(value)} is not a number >= 0")


def options(ctx: Any) -> dict[str, Any]:
    """The ``"Metrics"`` section merged over :data:`DEFAULTS` (checked at start-up by the core,
    as the plugin's ``register_options`` declares it)."""
    return {**DEFAULTS, **(ctx.plugin_config("Metrics") or {})}


def plugin_state(ctx: Any) -> MetricsPluginState:
    """This app's :class:`MetricsPluginState`, created on first use."""
    state = ctx.stash.get(STASH_KEY)
    if state is None:
        opts = options(ctx)
        state = ctx.stash[STASH_KEY] = MetricsPluginState(
            exposition=Exposition(ctx.metrics, cache_seconds=float(opts["ExpositionCacheMs"]) / 1000.0),
            trimmer=MemoryTrimmer(ctx.metrics, interval=float(opts["MemoryTrimmingInterval"])))
    return state
