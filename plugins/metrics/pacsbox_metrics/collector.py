"""The bridge between the core's metric store and prometheus-client, and the renderer.

:class:`StoreCollector` is a prometheus-client custom collector: at every scrape it reads
``ctx.metrics`` (:meth:`pacsbox.context.ServerContext.metrics`, a dependency-free store)
and yields one metric family per recorded metric. :class:`Exposition` owns one
:class:`prometheus_client.CollectorRegistry` per app (no global registry, so two apps in
one process never mix their values) and renders it in the text format of Orthanc's
``GET /tools/metrics-prometheus`` (reference section 8.1):

* one line per sample, ``<name>[{labels}] <value> <timestamp in ms>``, names sorted;
* no ``# HELP``/``# TYPE`` lines, and every name exactly as declared: prometheus-client's
  own writer is not used because it appends ``_total`` to counters and adds ``_created``
  series;
* histograms as ``<name>_bucket{...,le="..."}``, ``<name>_count`` and ``<name>_sum``.
"""
from __future__ import annotations

import math
import operator
import threading
import time
from typing import Any, Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample as PromSample
from prometheus_client.utils import floatToGoString

#: Content-Type of the exposition (Prometheus text format 0.0.4, as Orthanc sends it).
CONTENT_TYPE = "text/plain; version=0.0.4"

_by_name = operator.attrgetter("name")

_PROM_TYPE = {"gauge": "gauge", "counter": "counter", "max10s": "gauge", "histogram": "histogram"}


def format_value(value: float) -> str:
    """A sample value as Orthanc writes it: integers without a decimal point.

    Parameters
    ----------
    value : float

    Returns
    -------
    str
        ``"3"`` for 3 or 3.0, ``"0.0373897552"`` for floats (shortest round-trip form),
        ``"NaN"``, ``"+Inf"``, ``"-Inf"``.
    """
    if value.__class__ is int:
        return str(value)
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    # Prometheus text format: backslash, double quote and line feed are escaped.
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def render_samples(samples: Iterable[PromSample]) -> str:
    """Lines of samples in Orthanc's format.

    Parameters
    ----------
    samples : iterable of prometheus_client Sample
        Timestamps in seconds (float) or None (then the line has no timestamp).

    Returns
    -------
    str
        One ``name[{labels}] value [timestamp_ms]`` line per sample, each ending with
        a line feed.
    """
    out: list[str] = []
    append = out.append
    label_cache: dict[tuple, str] = {}
    for s in samples:
        labels = s.labels
        if labels:
            lkey = tuple(labels.items())
            text = label_cache.get(lkey)
            if text is None:
                text = label_cache[lkey] = "{" + ",".join(
                    f'{k}="{_escape(str(v))}"' for k, v in lkey) + "}"
            head = s.name + text
        else:
            head = s.name
        ts = s.timestamp
        if ts is None:
            append(f"{head} {format_value(s.value)}\n")
        else:
            append(f"{head} {format_value(s.value)} {int(round(float(ts) * 1000.0))}\n")
    return "".join(out)


def render(families: Iterable[Metric]) -> bytes:
    """Write metric families in Orthanc's text format.

    Parameters
    ----------
    families : iterable of prometheus_client Metric
        :class:`StoreFamily` objects contribute their pre-rendered lines; any other
        family (from another collector of the registry) is rendered from its samples,
        names exactly as the samples carry them.

    Returns
    -------
    bytes
        UTF-8 text, families sorted by name, no ``# HELP``/``# TYPE`` lines.
    """
    parts = []
    for fam in sorted(families, key=_by_name):
        text = getattr(fam, "exposition_text", None)
        parts.append(text if text is not None else render_samples(fam.samples))
    return "".join(parts).encode("utf-8")


class StoreFamily(Metric):
    """A metric family read from the store, with its exposition lines already rendered.

    Parameters
    ----------
    spec : MetricSpec
    series : dict
        Label-value tuple to :class:`pacsbox.metrics.Sample` copy.
    text : str
        The family's lines in Orthanc's format.
    le : list of str
        Histograms: the ``le`` label values of the buckets, ``+Inf`` last.

    Attributes
    ----------
    exposition_text : str
        ``text``.
    samples : list of prometheus_client Sample
        Built on first access (the exposition itself only needs the text).
    """

    def __init__(self, spec: Any, series: dict, text: str, le: list[str]) -> None:
        super().__init__(spec.name, spec.help, _PROM_TYPE[spec.kind])
        # prometheus-client strips "_total" from counter family names; keep the declared
        # name (the samples carry their own, exact names in any case).
        self.name = spec.name
        self.exposition_text = text
        self._spec, self._series, self._le = spec, series, le
        self._samples: list[PromSample] | None = None

    @property  # type: ignore[override]
    def samples(self) -> list[PromSample]:
        if self._samples is None:
            self._samples = []
            for key in sorted(self._series):
                self._samples.extend(_series_samples(self._spec, key, self._series[key], self._le))
        return self._samples

    @samples.setter
    def samples(self, value: list[PromSample]) -> None:
        self._samples = value if value else None


def _series_samples(spec: Any, key: tuple, s: Any, le: list[str]) -> list[PromSample]:
    # The prometheus-client samples of one series of the store.
    name = spec.name
    labels = dict(zip(spec.labels, key))
    ts = s.timestamp_ms / 1000.0
    if spec.kind != "histogram":
        return [PromSample(name, labels, s.value, ts)]
    out = []
    cumulative = 0
    bucket = name + "_bucket"
    for bound, count in zip(le, s.counts or ()):
        cumulative += count
        out.append(PromSample(bucket, {**labels, "le": bound}, cumulative, ts))
    out.append(PromSample(name + "_count", labels, s.value, ts))
    out.append(PromSample(name + "_sum", labels, s.total, ts))
    return out


def _label_text(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    # '{a="x",b="y"}', or '' without labels.
    if not names:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in zip(names, values)) + "}"


def _histogram_lines(name: str, labels: str, s: Any, le: list[str]) -> str:
    # The _bucket (cumulative), _count and _sum lines of one histogram series.
    ts = s.timestamp_ms
    prefix = f"{name}_bucket{labels[:-1]}," if labels else f"{name}_bucket{{"
    out = []
    cumulative = 0
    for bound, count in zip(le, s.counts or ()):
        cumulative += count
        out.append(f'{prefix}le="{bound}"}} {cumulative} {ts}\n')
    out.append(f"{name}_count{labels} {format_value(s.value)} {ts}\n")
    out.append(f"{name}_sum{labels} {format_value(s.total)} {ts}\n")
    return "".join(out)


class StoreCollector(Collector):
    """prometheus-client collector reading a :class:`pacsbox.metrics.MetricsStore`.

    Parameters
    ----------
    store : MetricsStore
        ``ctx.metrics`` of one app.

    Notes
    -----
    The store is the single source of truth, read at every :meth:`collect`. Work is
    done only for what changed since the previous scrape: a family is rebuilt only when
    its metric was updated (``MetricsStore.snapshot_since``), and within it only the
    series whose value or timestamp changed are rendered again. Metric names are not
    known in advance (plugins may declare metrics at any time), so the collector has no
    ``describe`` and the registry is built with ``auto_describe=False``.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._le: dict[tuple[float, ...], list[str]] = {}
        self._versions: dict[str, int] = {}
        self._families: dict[str, StoreFamily] = {}
        self._lines: dict[str, dict[tuple, tuple[float, int, str, str]]] = {}
        self._lock = threading.Lock()

    def _le_strings(self, buckets: tuple[float, ...]) -> list[str]:
        le = self._le.get(buckets)
        if le is None:
            le = self._le[buckets] = [floatToGoString(b) for b in buckets] + ["+Inf"]
        return le

    def _build(self, spec: Any, series: dict) -> StoreFamily:
        histogram = spec.kind == "histogram"
        le = self._le_strings(spec.buckets) if histogram else []
        old = self._lines.get(spec.name, {})
        lines: dict[tuple, tuple[float, int, str, str]] = {}
        parts = []
        for key in sorted(series):
            s = series[key]
            cached = old.get(key)
            if cached is not None and cached[0] == s.value and cached[1] == s.timestamp_ms:
                lines[key] = cached
                parts.append(cached[3])
                continue
            labels = cached[2] if cached is not None else _label_text(spec.labels, key)
            if histogram:
                text = _histogram_lines(spec.name, labels, s, le)
            else:
                text = f"{spec.name}{labels} {format_value(s.value)} {s.timestamp_ms}\n"
            lines[key] = (s.value, s.timestamp_ms, labels, text)
            parts.append(text)
        self._lines[spec.name] = lines
        return StoreFamily(spec, series, "".join(parts), le)

    def collect(self) -> Iterable[Metric]:
        """The families of every metric that has a recorded value, sorted by name.

        Returns
        -------
        list of StoreFamily
            prometheus-client ``Metric`` objects of type ``gauge`` (also for ``max10s``),
            ``counter`` or ``histogram``; sample names are the declared names
            (``_bucket``/``_count``/``_sum`` for histograms), sample timestamps are in
            seconds (float), as prometheus-client expects.
        """
        with self._lock:  # concurrent scrapes share the cache
            families = []
            cache = self._families
            for spec, version, series in self.store.snapshot_since(self._versions):
                if series is not None:
                    cache[spec.name] = self._build(spec, series)
                    self._versions[spec.name] = version
                families.append(cache[spec.name])
            if len(cache) != len(families):  # metrics cleared since: forget them
                present = {f.name for f in families}
                for name in [n for n in cache if n not in present]:
                    del cache[name]
                    del self._versions[name]
                    self._lines.pop(name, None)
        return families


class Exposition:
    """Per-app registry and renderer of ``GET /tools/metrics-prometheus``.

    Parameters
    ----------
    store : MetricsStore
        ``ctx.metrics`` of the app.
    cache_seconds : float
        How long a rendered body may be served again (0 renders every scrape). The
        computed gauges (counts, sizes, jobs) are then at most that old.

    Attributes
    ----------
    registry : prometheus_client.CollectorRegistry
        This app's registry; it holds :class:`StoreCollector`. Other prometheus-client
        collectors registered here appear in the exposition too (their names exactly as
        their samples carry them).
    """

    def __init__(self, store: Any, cache_seconds: float = 0.0) -> None:
        self.store = store
        self.cache_seconds = max(0.0, float(cache_seconds))
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = StoreCollector(store)
        self.registry.register(self.collector)
        self._cached: tuple[float, bytes] | None = None
        self._lock = threading.Lock()

    def render(self) -> bytes:
        """The exposition body; empty while metrics are disabled (Orthanc's behaviour).

        Returns
        -------
        bytes
        """
        if not self.store.enabled:
            return b""
        if self.cache_seconds:
            cached = self._cached
            now = time.monotonic()
            if cached is not None and now < cached[0]:
                return cached[1]
            with self._lock:  # one renderer at a time; the others reuse its body
                cached = self._cached
                if cached is not None and time.monotonic() < cached[0]:
                    return cached[1]
                body = render(self.registry.collect())
                self._cached = (time.monotonic() + self.cache_seconds, body)
                return body
        return render(self.registry.collect())
