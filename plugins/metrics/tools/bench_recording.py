"""Microbenchmark: the cost of recording a metric on the request path (issue 5: < 5 us).

Times each ``ctx.metrics`` call of a :class:`pacsbox.metrics.MetricsStore` with
:mod:`timeit` (best of ``--repeat`` runs of ``--number`` calls), and the three calls the
REST middleware makes per request. Prints microseconds per call::

    python plugins/metrics/tools/bench_recording.py
"""
from __future__ import annotations

import argparse
import timeit

from pacsbox import MetricSpec
from pacsbox.metrics import MetricsStore

CASES = [
    ("set_value (gauge)", 'm.set_value("g", 3)'),
    ("increment (counter)", 'm.increment("c")'),
    ("set_max (max10s)", 'm.set_max("d_ms", 1.5)'),
    ("record_duration (max10s)", 'm.record_duration("d2_ms", 0.0012)'),
    ("observe (histogram, 2 labels)", 'm.observe("h", 0.003, {"method": "GET", "route": "/system"})'),
    ("timer() block (max10s)", 'with m.timer("t_ms"): pass'),
    ("disabled store, set_max", 'off.set_max("d_ms", 1.5)'),
    ("REST middleware, per request", 'm.set_max("a", 1); m.set_max("r_ms", 0.4); '
                                     'm.observe("h", 0.0004, {"method": "GET", "route": "/system"})'),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--number", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    m = MetricsStore()
    m.declare(MetricSpec("h", "histogram", labels=("method", "route")))
    for i in range(100):
        m.set_value(f"filler_{i:03d}", i)
    off = MetricsStore(enabled=False)
    for label, stmt in CASES:
        best = min(timeit.repeat(stmt, globals={"m": m, "off": off}, number=args.number, repeat=args.repeat))
        print(f"{label:32s} {best / args.number * 1e6:6.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
