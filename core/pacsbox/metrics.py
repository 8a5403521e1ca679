"""Dependency-free, per-app metrics store (Orthanc's ``MetricsRegistry`` model).

Plugins declare metrics with the ``register_metrics`` hook (:class:`MetricSpec`) or at
run time with :meth:`MetricsStore.declare`, and record values through ``ctx.metrics``::

    ctx.metrics.increment("example_hello_requests")
    ctx.metrics.set_value("myplugin_queue_length", 12)
    with ctx.metrics.timer("orthanc_find_scp_duration_ms"):
        ...                                   # max over 10 s, in milliseconds
    ctx.metrics.observe("myplugin_latency_seconds", 0.012, {"peer": "PACS"})

An exposition plugin (``pacsbox_metrics``) reads :meth:`MetricsStore.snapshot` at scrape
time. Without such a plugin recording still works and costs a dictionary update under a
lock (about 1 microsecond). Nothing here is global: every app owns one store.

Source: Orthanc ``MetricsRegistry`` (``MetricsUpdatePolicy_Directly``,
``MetricsUpdatePolicy_MaxOver10Seconds``, ``MetricsRegistry::Timer``); reference
section 8.
"""
from __future__ import annotations

import bisect
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

log = logging.getLogger("pacsbox.metrics")

#: Metric kinds understood by the store.
KINDS = ("gauge", "counter", "max10s", "histogram")

#: Default histogram buckets, in the metric's unit (seconds for ``*_seconds``).
DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0)

#: Window of the ``max10s`` kind, in milliseconds (Orthanc ``MaxOver10Seconds``).
MAX_WINDOW_MS = 10_000

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


@dataclass(frozen=True)
class MetricSpec:
    """Declaration of one metric.

    Parameters
    ----------
    name : str
        Exposition name, e.g. ``"orthanc_count_instances"``; exposed exactly as given
        (no ``_total`` or unit suffix is appended). Must match the Prometheus name rule
        ``[a-zA-Z_:][a-zA-Z0-9_:]*``.
    kind : str
        ``"gauge"`` (last value), ``"counter"`` (monotonic sum), ``"max10s"`` (maximum over
        the last 10 seconds, Orthanc's duration metrics) or ``"histogram"`` (exposed as
        ``<name>_bucket{le=...}``, ``<name>_sum`` and ``<name>_count``).
    help : str
        One-line description.
    unit : str
        Unit of the values (``"ms"``, ``"s"``, ``"bytes"``, ``"MiB"``, ``""``).
    labels : tuple of str
        Label names; values are given as a mapping when recording. Orthanc's own metrics
        have none. ``le`` is reserved.
    buckets : tuple of float
        Histogram bucket upper bounds, strictly increasing (ignored for other kinds); an
        implicit ``+Inf`` bucket follows.
    plugin : str
        Name of the declaring plugin (filled by the core).

    Raises
    ------
    ValueError
        Unknown kind, invalid metric or label name, unsorted buckets.
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
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        labels = tuple(self.labels)
        object.__setattr__(self, "labels", labels)
        for label in labels:
            if not _LABEL.match(label) or label.startswith("__") or label == "le":
                raise ValueError(f"metric {self.name!r}: invalid label name {label!r}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"metric {self.name!r}: duplicate label names {labels}")
        buckets = tuple(float(b) for b in self.buckets)
        object.__setattr__(self, "buckets", buckets)
        if self.kind == "histogram" and (not buckets or any(a >= b for a, b in zip(buckets, buckets[1:]))):
            raise ValueError(f"metric {self.name!r}: buckets must be strictly increasing")


@dataclass
class Sample:
    """One recorded series of a metric: ``value`` with its ``timestamp_ms``.

    Attributes
    ----------
    value : float
        The value; for histograms the number of observations.
    timestamp_ms : int
        When the value was last set, in milliseconds since the epoch (UTC).
    counts : list of int or None
        Histograms only: per-bucket counts (non-cumulative), the last one for ``+Inf``.
    total : float
        Histograms only: sum of the observations.
    """

    value: float = 0.0
    timestamp_ms: int = 0
    counts: list[int] | None = None
    total: float = 0.0


class DuplicateMetric(ValueError):
    """A metric name was declared twice with different kinds or labels."""


class UnknownMetric(KeyError):
    """A value was recorded for a name no one declared, in a strict store (an app's):
    most likely a misspelt name. The message gives the closest declared name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Metric:
    __slots__ = ("spec", "series", "kind", "labels", "buckets", "version")

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.labels = spec.labels
        self.buckets = spec.buckets
        self.series: dict[tuple[str, ...], Sample] = {}
        self.version = 0  # incremented by every update: lets readers reuse what they rendered


class _Timer:
    """Context manager returned by :meth:`MetricsStore.timer`."""

    __slots__ = ("store", "name", "labels", "t0")

    def __init__(self, store: "MetricsStore", name: str, labels: Mapping[str, str] | None) -> None:
        self.store, self.name, self.labels, self.t0 = store, name, labels, None

    def __enter__(self) -> "_Timer":
        if self.store.strict and self.name not in self.store._metrics:
            self.store._unknown(self.name)
        if self.store.enabled:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.t0 is not None:
            self.store.record_duration(self.name, time.perf_counter() - self.t0, self.labels)


class MetricsStore:
    """The per-app registry of metric declarations and recorded values.

    Parameters
    ----------
    enabled : bool
        Initial state (Orthanc option ``MetricsEnabled``, switched at run time by
        ``PUT /tools/metrics``). While disabled, updates are ignored and values recorded
        before are kept (as Orthanc does).
    max_window_seconds : float
        Window of the ``max10s`` kind, in seconds (10, Orthanc's
        ``MetricsUpdatePolicy_MaxOver10Seconds``; tests shorten it).
    strict : bool, default False
        Refuse to record a value for an undeclared name (:class:`UnknownMetric`, naming
        the closest declared name) instead of declaring it. An app's store
        (``ctx.metrics``) is strict, so that a misspelt name fails in the first test
        instead of silently creating a new metric.

    Notes
    -----
    Every recording method is thread-safe and costs about a microsecond. In a store that is
    not strict, recording a value for an undeclared name declares it (without help text)
    as a gauge (``set_value``), counter (``increment``), max10s (``set_max``,
    ``record_duration``, ``timer``) or histogram (``observe``). A declared metric keeps its
    kind: ``set_value`` on a ``max10s`` metric applies the max-over-10-s rule, on a
    histogram it observes.
    """

    def __init__(self, enabled: bool = True, max_window_seconds: float = MAX_WINDOW_MS / 1000.0,
                 strict: bool = False) -> None:
        self.strict = bool(strict)
        self.enabled = bool(enabled)
        self._window_ms = int(max_window_seconds * 1000)
        self._metrics: dict[str, _Metric] = {}
        self._sorted: list[_Metric] | None = None  # by name; None after a new declaration
        self._lock = threading.Lock()
        self._collectors: list[Callable[["MetricsStore"], None]] = []
        self._failed_collectors: set[int] = set()

    # -- declaration -------------------------------------------------------------------
    def declare(self, spec: MetricSpec) -> MetricSpec:
        """Declare a metric, at start-up or at any time later (idempotent).

        Parameters
        ----------
        spec : MetricSpec

        Returns
        -------
        MetricSpec
            The spec in force. Declaring an already declared name with the same kind and
            labels returns the first spec, except that a declaration replaces an implicit
            one (a metric first recorded without a declaration).

        Raises
        ------
        DuplicateMetric
            When ``spec.name`` is already declared with another kind or other labels; the
            message names both plugins.
        """
        with self._lock:
            m = self._metrics.get(spec.name)
            if m is None:
                self._metrics[spec.name] = _Metric(spec)
                self._sorted = None
                return spec
            if m.spec.kind != spec.kind or m.spec.labels != spec.labels:
                raise DuplicateMetric(
                    f"metric {spec.name!r} declared as {m.spec.kind}{list(m.spec.labels)} by plugin "
                    f"{m.spec.plugin!r} and as {spec.kind}{list(spec.labels)} by plugin {spec.plugin!r}")
            if not m.spec.help and not m.spec.plugin and (spec.help or spec.plugin):
                if spec.kind != "histogram" or spec.buckets == m.spec.buckets or not m.series:
                    m.spec = spec
                    m.buckets = spec.buckets
                    m.version += 1
            return m.spec

    def spec(self, name: str) -> MetricSpec | None:
        """The declaration of ``name``, or None when unknown."""
        m = self._metrics.get(name)
        return None if m is None else m.spec

    def specs(self) -> list[MetricSpec]:
        """list of MetricSpec: every declared metric, sorted by name."""
        with self._lock:
            return sorted((m.spec for m in self._metrics.values()), key=lambda s: s.name)

    def add_collector(self, fn: Callable[["MetricsStore"], None]) -> None:
        """Register a callable run before each :meth:`snapshot` (refreshes computed gauges).

        Parameters
        ----------
        fn : callable
            ``fn(store)``, typically calling :meth:`set_value`. It runs on the scraping
            thread and should take well under a millisecond. Its exceptions are logged
            (once per collector) and swallowed, so a scrape never fails because of it.
        """
        self._collectors.append(fn)

    def remove_collector(self, fn: Callable[["MetricsStore"], None]) -> None:
        """Unregister a callable added with :meth:`add_collector` (no error if absent)."""
        try:
            self._collectors.remove(fn)
        except ValueError:
            pass

    # -- recording -----------------------------------------------------------------------
    def _get(self, name: str, kind: str, labels: Mapping[str, str] | None) -> _Metric:
        # Called with the lock held.
        m = self._metrics.get(name)
        if m is None:
            if self.strict:
                self._unknown(name)
            m = self._metrics[name] = _Metric(MetricSpec(name, kind, labels=tuple(labels or ())))
            self._sorted = None
        return m

    def _unknown(self, name: str) -> None:
        """Raise :class:`UnknownMetric` for ``name``, with the closest declared name."""
        import difflib
        close = difflib.get_close_matches(name, list(self._metrics), n=1)
        raise UnknownMetric(f"metric {name!r} is not declared (declare it with the register_metrics hook or "
                            f"ctx.metrics.declare)" + (f"; did you mean {close[0]!r}?" if close else ""))

    def _skip(self, name: str) -> bool:
        """True when recording is off; a strict store still refuses an undeclared name."""
        if self.strict and name not in self._metrics:
            self._unknown(name)
        return not self.enabled

    @staticmethod
    def _series(m: _Metric, labels: Mapping[str, str] | None) -> Sample:
        # Called with the lock held, for every update of ``m``.
        m.version += 1
        if labels:
            names = m.labels
            if len(labels) != len(names):
                raise ValueError(f"metric {m.spec.name!r} has labels {list(names)}, got {list(labels)}")
            try:
                if len(names) == 2:
                    key = (labels[names[0]], labels[names[1]])
                elif len(names) == 1:
                    key = (labels[names[0]],)
                else:
                    key = tuple([labels[n] for n in names])
            except KeyError:
                raise ValueError(f"metric {m.spec.name!r} has labels {list(names)}, got {list(labels)}") from None
            for v in key:
                if v.__class__ is not str:
                    key = tuple([str(v) for v in key])
                    break
        elif m.labels:
            raise ValueError(f"metric {m.spec.name!r} needs the labels {list(m.labels)}")
        else:
            key = ()
        s = m.series.get(key)
        if s is None:
            s = m.series[key] = Sample()
            if m.kind == "histogram":
                s.counts = [0] * (len(m.buckets) + 1)
        return s

    def _apply(self, m: _Metric, s: Sample, value: float, now: int) -> None:
        # Record ``value`` according to the metric's kind (lock held).
        kind = m.kind
        if kind == "max10s":
            if value > s.value or s.timestamp_ms == 0 or now - s.timestamp_ms > self._window_ms:
                s.value = value
                s.timestamp_ms = now
        elif kind == "histogram":
            s.counts[bisect.bisect_left(m.buckets, value)] += 1  # type: ignore[index]
            s.value += 1
            s.total += value
            s.timestamp_ms = now
        else:
            s.value = value
            s.timestamp_ms = now

    def set_value(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record a value with the metric's own policy (Orthanc ``SetMetricsValue``).

        Parameters
        ----------
        name : str
            Metric name; an undeclared name is declared as a ``gauge``.
        value : float
            The value, in the metric's unit.
        labels : mapping of str to str, optional
            One value per label name of the spec.

        Raises
        ------
        ValueError
            ``labels`` does not match the spec's label names.

        Notes
        -----
        ``gauge`` and ``counter``: the value replaces the stored one
        (``MetricsUpdatePolicy_Directly``); ``max10s``: it replaces the stored one when
        larger or when the stored one is older than 10 s; ``histogram``: one observation.
        """
        if self._skip(name):
            return
        now = int(time.time() * 1000)
        with self._lock:
            m = self._metrics.get(name) or self._get(name, "gauge", labels)
            self._apply(m, self._series(m, labels), value, now)

    def increment(self, name: str, amount: float = 1, labels: Mapping[str, str] | None = None) -> None:
        """Add ``amount`` to a counter (or a gauge).

        Parameters
        ----------
        name : str
            Metric name; an undeclared name is declared as a ``counter``.
        amount : float
            Added to the current value (1 by default; negative values allowed for gauges).
        labels : mapping of str to str, optional

        Raises
        ------
        ValueError
            ``labels`` does not match the spec, or the metric is a histogram.
        """
        if self._skip(name):
            return
        now = int(time.time() * 1000)
        with self._lock:
            m = self._metrics.get(name) or self._get(name, "counter", labels)
            if m.kind == "histogram":
                raise ValueError(f"metric {name!r} is a histogram: use observe()")
            s = self._series(m, labels)
            s.value += amount
            s.timestamp_ms = now

    def set_max(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record a sample under the max-over-10-seconds rule.

        The stored value is replaced when the new one is larger, or when the stored one
        is older than 10 seconds (Orthanc ``MetricsUpdatePolicy_MaxOver10Seconds``); its
        timestamp is the time of the stored sample.

        Parameters
        ----------
        name : str
            Metric name; an undeclared name is declared as ``max10s``.
        value : float
        labels : mapping of str to str, optional
        """
        if self._skip(name):
            return
        now = int(time.time() * 1000)
        with self._lock:
            m = self._metrics.get(name) or self._get(name, "max10s", labels)
            s = self._series(m, labels)
            if value > s.value or s.timestamp_ms == 0 or now - s.timestamp_ms > self._window_ms:
                s.value = value
                s.timestamp_ms = now

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Add one observation to a histogram.

        Parameters
        ----------
        name : str
            Metric name; an undeclared name is declared as a ``histogram`` with
            :data:`DEFAULT_BUCKETS`.
        value : float
            The observation, in the metric's unit (seconds for ``*_seconds``).
        labels : mapping of str to str, optional

        Notes
        -----
        On a metric of another kind, behaves as :meth:`set_value`.
        """
        if self._skip(name):
            return
        now = int(time.time() * 1000)
        with self._lock:
            m = self._metrics.get(name) or self._get(name, "histogram", labels)
            self._apply(m, self._series(m, labels), value, now)

    def record_duration(self, name: str, seconds: float, labels: Mapping[str, str] | None = None) -> None:
        """Record a duration in milliseconds into a ``max10s`` metric (Orthanc ``Timer``).

        Parameters
        ----------
        name : str
            e.g. ``"orthanc_store_dicom_duration_ms"``.
        seconds : float
            The measured duration, in seconds; stored in milliseconds truncated to the
            microsecond (Orthanc truncates to whole milliseconds; pacsbox keeps the
            fraction because many requests take less than 1 ms).
        labels : mapping of str to str, optional
        """
        self.set_max(name, int(seconds * 1_000_000.0) / 1000.0, labels)

    def timer(self, name: str, labels: Mapping[str, str] | None = None) -> "_Timer":
        """A context manager timing its block with :func:`time.perf_counter` into
        :meth:`record_duration`.

        Parameters
        ----------
        name : str
            A ``max10s`` metric in milliseconds, e.g. ``"orthanc_find_scp_duration_ms"``.
        labels : mapping of str to str, optional

        Returns
        -------
        context manager
            Usable once.

        Notes
        -----
        The duration is recorded also when the block raises (as Orthanc's
        ``MetricsRegistry::Timer`` destructor does). Nothing is recorded when metrics
        were disabled at the start of the block.

        Examples
        --------
        >>> with ctx.metrics.timer("orthanc_find_scp_duration_ms"):  # doctest: +SKIP
        ...     answers = run_query()
        """
        return _Timer(self, name, labels)

    # -- reading -------------------------------------------------------------------------
    def _metrics_by_name(self) -> list[_Metric]:
        # Called with the lock held.
        if self._sorted is None:
            self._sorted = [self._metrics[n] for n in sorted(self._metrics)]
        return self._sorted

    def run_collectors(self) -> None:
        """Run the callables of :meth:`add_collector` (done by :meth:`snapshot`)."""
        for fn in list(self._collectors):
            try:
                fn(self)
            except Exception:  # noqa: BLE001 - a scrape never fails on a collector
                if id(fn) not in self._failed_collectors:
                    self._failed_collectors.add(id(fn))
                    log.exception("metrics collector %r failed (logged once)", fn)

    def snapshot(self) -> list[tuple[MetricSpec, dict[tuple[str, ...], Sample]]]:
        """Every metric that has at least one recorded value, after running the collectors.

        Returns
        -------
        list of (MetricSpec, dict)
            Sorted by name; each dict maps a label-value tuple (in the order of
            ``spec.labels``) to a copy of its :class:`Sample`.

        Notes
        -----
        While the store is disabled the collectors are not run and the values recorded
        before are returned as they are; an exposition checks :attr:`enabled` itself
        (Orthanc answers an empty body then).
        """
        return [(spec, series) for spec, _, series in self.snapshot_since({})]

    def snapshot_since(self, known: Mapping[str, int]) -> list[tuple[MetricSpec, int, dict | None]]:
        """Like :meth:`snapshot`, but without copying what the caller already has.

        Parameters
        ----------
        known : mapping of str to int
            Metric name to the version the caller copied at its last call.

        Returns
        -------
        list of (MetricSpec, int, dict or None)
            Sorted by name, every metric with a recorded value: its spec, its current
            version (an integer that grows with every update of the metric) and its
            series as in :meth:`snapshot`, or None when the version equals
            ``known[name]`` (nothing changed since).

        Notes
        -----
        An exposition keeps what it rendered per metric with the version, so a scrape
        only renders the metrics updated since the previous scrape.
        """
        if self.enabled:
            self.run_collectors()
        out = []
        with self._lock:
            for m in self._metrics_by_name():
                if not m.series:
                    continue
                if known.get(m.spec.name) == m.version:
                    out.append((m.spec, m.version, None))
                else:
                    out.append((m.spec, m.version,
                                {k: Sample(v.value, v.timestamp_ms, v.counts and list(v.counts), v.total)
                                 for k, v in m.series.items()}))
        return out

    def value(self, name: str, labels: Mapping[str, str] | tuple[str, ...] | None = None) -> float | None:
        """The current value of one series, or None when never recorded.

        Parameters
        ----------
        name : str
        labels : mapping or tuple of str, optional
            Label values (a mapping, or a tuple in the order of the spec's labels).

        Returns
        -------
        float or None
            For histograms, the number of observations.
        """
        with self._lock:
            m = self._metrics.get(name)
            if m is None:
                return None
            if isinstance(labels, Mapping):
                key = tuple(str(labels.get(n, "")) for n in m.labels)
            else:
                key = tuple(labels or ())
            s = m.series.get(key)
            return None if s is None else s.value

    def clear(self) -> None:
        """Forget every recorded value (declarations stay)."""
        with self._lock:
            for m in self._metrics.values():
                m.series.clear()
