"""Hook implementations of the pacsbox_metrics plugin (entry point ``metrics``).

Only hook implementations live here; see ``README.md`` for the routes, the options and
the metrics, and :mod:`pacsbox_metrics.runtime` for the per-app state.
"""
from __future__ import annotations

from pacsbox import MetricSpec, OptionSpec, RouteSpec, hookimpl

from .routes import MetricsSwitchRoute, PrometheusRoute
from .runtime import STASH_KEY, check_section, plugin_state
from .trimming import METRIC as TRIMMING_METRIC


@hookimpl
def register_options():
    """The ``Metrics`` section (see :mod:`pacsbox_metrics.runtime`)."""
    return [OptionSpec("Metrics", "dict", {},
                       "pacsbox section: MemoryTrimmingInterval (seconds between two malloc_trim calls, 0: never; "
                       "default 30), ExpositionCacheMs (reuse a rendered exposition this long, 0: never)",
                       check=check_section)]


@hookimpl
def register_routes(ctx):
    """``/tools/metrics-prometheus`` and ``/tools/metrics`` (reference section 8)."""
    exposition = plugin_state(ctx).exposition
    return [
        RouteSpec("/tools/metrics-prometheus", lambda _ctx: PrometheusRoute(exposition)),
        RouteSpec("/tools/metrics", MetricsSwitchRoute),
    ]


@hookimpl
def register_metrics(ctx):
    """The memory-trimming duration (Orthanc 1.11.3+), where ``malloc_trim`` exists."""
    if not plugin_state(ctx).trimmer.available:
        return []
    return [MetricSpec(TRIMMING_METRIC, "max10s", "Duration of malloc_trim (max over 10 s)", "ms")]


@hookimpl
def startup(ctx):
    """Start the memory-trimming thread."""
    plugin_state(ctx).trimmer.start()


@hookimpl
def shutdown(ctx):
    """Stop the memory-trimming thread."""
    state = ctx.stash.get(STASH_KEY)
    if state is not None:
        state.trimmer.stop()
