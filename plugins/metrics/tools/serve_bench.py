"""Serve pacsbox for ``/work/shared/bench`` scenario h with N extra metrics registered.

The speed goal of the metrics plugin (issue 5) is stated "with 100 metrics registered";
this launcher builds the app exactly as ``pacsbox serve`` does (same waitress settings,
installed entry points loaded) plus one small plugin that declares and records N extra
gauges, so that the exposition carries them::

    python plugins/metrics/tools/serve_bench.py --config cfg.json --extra-metrics 100

Stop it with SIGTERM (``kill <pid>``).
"""
from __future__ import annotations

import argparse

from pacsbox import MetricSpec, hookimpl


class ExtraMetrics:
    """A plugin declaring ``count`` gauges ``bench_extra_metric_<i>`` and recording them."""

    def __init__(self, count: int) -> None:
        self.count = count

    @hookimpl
    def register_metrics(self, ctx):
        return [MetricSpec(f"bench_extra_metric_{i:03d}", "gauge", "bench filler", "") for i in range(self.count)]

    @hookimpl
    def startup(self, ctx):
        for i in range(self.count):
            ctx.metrics.set_value(f"bench_extra_metric_{i:03d}", i * 1.5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--extra-metrics", type=int, default=100)
    args = p.parse_args()
    # ``pacsbox serve`` itself, so that the server settings are exactly the product's;
    # only the app factory gets the extra plugin.
    import pacsbox.app
    import pacsbox.cli
    factory = pacsbox.app.create_app
    extra = ExtraMetrics(args.extra_metrics)

    def create_app_with_extra(config, **kw):
        kw["plugins"] = list(kw.get("plugins") or ()) + [extra]
        return factory(config, **kw)

    pacsbox.app.create_app = create_app_with_extra
    return pacsbox.cli.main(["serve", "--config", args.config])


if __name__ == "__main__":
    raise SystemExit(main())
