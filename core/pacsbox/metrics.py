"""Dependency-free, per-app metrics store (Orthanc's ``SetMetricsValue`` model).

Plugins declare metrics with the ``register_metrics`` hook (:class:`MetricSpec`) or at
run time with :meth:`MetricsStore.declare`, and record values through ``ctx.metrics``.
An exposition plugin (``pacsbox_metrics``) reads :meth:`MetricsStore.snapshot` at scrape
time. Without such a plugin, recording still works and costs a dictionary update.

Source: Orthanc ``MetricsRegistry`` (``MetricsUpdatePolicy_Directly``,
``MetricsUpdatePolicy_MaxOver10Seconds``); reference section 8.
"""
from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping

#: Metric kinds understood by the store.
KINDS = ("gauge", "counter", "max10s", "histogram")

#: Default histogram buckets, in the metric's unit (seconds for ``*_seconds``).
DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class MetricSpec:
    """Declaration of one metric.

    Parameters
    ----------
    name : str
        Exposition name, e.g. ``"orthanc_count_instances"``; exposed exactly as given.
    kind : str
        ``"gauge"`` (last value), ``"counter"`` (monotonic sum), ``"max10s"`` (maximum over
        the last 10 seconds, Orthanc's duration metrics) or ``"histogram"``.
    help : str
        One-line description.
    unit : str
        Unit of the values (``"ms"``, ``"s"``, ``"bytes"``, ``"MiB"``, ``""``).
    labels : tuple of str
        Label names (histograms and gauges may be labelled; Orthanc's names are not).
    buckets : tuple of float
        Histogram bucket upper bounds (ignored for other kinds).
    plugin : str
        Name of the declaring plugin (filled by the core).
    """

    name: str
    kind: str = "gauge"
    help: str = ""
    unit: str = ""
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    plugin: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name!r}: unknown kind {self.kind!r}, expected one of {KINDS}")


@dataclass
class Sample:
    """One recorded series of a metric: ``value`` with its ``timestamp_ms``.

    For histograms ``counts`` holds per-bucket counts (non-cumulative), ``total`` the sum
    of observations and ``value`` their count.
    """

    value: float = 0.0
    timestamp_ms: int = 0
    counts: list[int] | None = None
    total: float = 0.0


class DuplicateMetric(ValueError):
    """A metric name was declared twice with different kinds."""


@dataclass
class _Metric:
    spec: MetricSpec
    series: dict[tuple[str, ...], Sample] = field(default_factory=dict)


class MetricsStore:
    """The per-app registry of metric declarations and recorded values.

    Parameters
    ----------
    enabled : bool
        Initial state (Orthanc option ``MetricsEnabled``). While disabled, updates are
        ignored.

    Notes
    -----
    Every recording method is thread-safe and costs a few microseconds. Recording a value
    for an undeclared name declares it as a gauge (``set_value``), counter
    (``increment``), max10s (``set_max``) or histogram (``observe``).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()
        self._collectors: list = []

    # -- declaration -------------------------------------------------------------------
    def declare(self, spec: MetricSpec) -> MetricSpec:
        """Declare a metric (idempotent for the same name and kind).

        Parameters
        ----------
        spec : MetricSpec

        Returns
        -------
        MetricSpec
            The spec in force (the first one declared for that name).

        Raises
        ------
        DuplicateMetric
            When ``spec.name`` is already declared with another kind; the message names
            both plugins.
        """
        with self._lock:
            m = self._metrics.get(spec.name)
            if m is None:
                self._metrics[spec.name] = _Metric(spec)
                return spec
            if m.spec.kind != spec.kind:
                raise DuplicateMetric(
                    f"metric {spec.name!r} declared as {m.spec.kind} by plugin {m.spec.plugin!r} "
                    f"and as {spec.kind} by plugin {spec.plugin!r}")
            return m.spec

    def specs(self) -> list[MetricSpec]:
        """list of MetricSpec: every declared metric, sorted by name."""
        with self._lock:
            return sorted((m.spec for m in self._metrics.values()), key=lambda s: s.name)

    def add_collector(self, fn) -> None:
        """Register a callable run before each :meth:`snapshot` (refreshes computed gauges).

        Parameters
        ----------
        fn : callable
            ``fn(store)``; its exceptions are swallowed so a scrape never fails.
        """
        self._collectors.append(fn)

    # -- recording -----------------------------------------------------------------------
    def _series(self, name: str, kind: str, labels: Mapping[str, str] | None) -> Sample | None:
        m = self._metrics.get(name)
        if m is None:
            m = self._metrics.setdefault(name, _Metric(MetricSpec(name, kind, labels=tuple(labels or ()))))
        key = tuple(labels.values()) if labels else ()
        s = m.series.get(key)
        if s is None:
            s = m.series[key] = Sample()
            if m.spec.kind == "histogram":
                s.counts = [0] * (len(m.spec.buckets) + 1)
        return s

    def set_value(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set a gauge to ``value`` (Orthanc ``MetricsUpdatePolicy_Directly``).

        Parameters
        ----------
        name : str
        value : float
        labels : mapping of str to str, optional
            Label values, in the order of the spec's ``labels``.
        """
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        with self._lock:
            s = self._series(name, "gauge", labels)
            s.value = value
            s.timestamp_ms = now

    def increment(self, name: str, amount: float = 1, labels: Mapping[str, str] | None = None) -> None:
        """Add ``amount`` to a counter (or gauge)."""
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        with self._lock:
            s = self._series(name, "counter", labels)
            s.value += amount
            s.timestamp_ms = now

    def set_max(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record a sample of a ``max10s`` metric.

        The stored value is replaced when the new one is larger, or when the stored one
        is older than 10 seconds (Orthanc ``MetricsUpdatePolicy_MaxOver10Seconds``).
        """
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        with self._lock:
            s = self._series(name, "max10s", labels)
            if value >= s.value or now - s.timestamp_ms > 10_000 or s.timestamp_ms == 0:
                s.value = value
                s.timestamp_ms = now

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Add one observation to a histogram."""
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        with self._lock:
            m = self._metrics.get(name)
            if m is None:
                m = self._metrics.setdefault(name, _Metric(MetricSpec(name, "histogram", labels=tuple(labels or ()))))
            s = self._series(name, "histogram", labels)
            if s.counts is None:
                s.counts = [0] * (len(m.spec.buckets) + 1)
            s.counts[bisect.bisect_left(m.spec.buckets, value)] += 1
            s.value += 1
            s.total += value
            s.timestamp_ms = now

    def record_duration(self, name: str, seconds: float) -> None:
        """Record a duration in milliseconds into a ``max10s`` metric named ``name``.

        Parameters
        ----------
        name : str
            e.g. ``"orthanc_store_dicom_duration_ms"``.
        seconds : float
            The measured duration, in seconds.
        """
        self.set_max(name, round(seconds * 1000.0, 3))

    # -- reading -------------------------------------------------------------------------
    def snapshot(self) -> list[tuple[MetricSpec, dict[tuple[str, ...], Sample]]]:
        """Every metric that has at least one recorded value.

        Returns
        -------
        list of (MetricSpec, dict)
            Sorted by name; each dict maps a label-value tuple to a copy of its
            :class:`Sample`.
        """
        if self.enabled:
            for fn in list(self._collectors):
                try:
                    fn(self)
                except Exception:  # noqa: BLE001 - a scrape never fails on a collector
                    pass
        out = []
        with self._lock:
            for name in sorted(self._metrics):
                m = self._metrics[name]
                if not m.series:
                    continue
                out.append((m.spec, {k: Sample(v.value, v.timestamp_ms, list(v.counts) if v.counts else None, v.total)
                                     for k, v in m.series.items()}))
        return out

    def value(self, name: str, labels: Iterable[str] = ()) -> float | None:
        """The current value of one series, or None when never recorded."""
        with self._lock:
            m = self._metrics.get(name)
            if m is None:
                return None
            s = m.series.get(tuple(labels))
            return None if s is None else s.value

    def clear(self) -> None:
        """Forget every recorded value (declarations stay)."""
        with self._lock:
            for m in self._metrics.values():
                m.series.clear()
