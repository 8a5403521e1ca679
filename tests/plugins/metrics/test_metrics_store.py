"""The core's dependency-free metric store (``pacsbox.metrics.MetricsStore``, ``ctx.metrics``)."""
from __future__ import annotations

import logging
import threading
import time
import types

import pytest

import pacsbox.metrics as metrics_module
from pacsbox import MetricSpec
from pacsbox.metrics import DEFAULT_BUCKETS, DuplicateMetric, MetricsStore


def _series(store, name):
    for spec, series in store.snapshot():
        if spec.name == name:
            return spec, series
    return None, None


def test_declare_is_idempotent_and_duplicates_name_both_plugins():
    store = MetricsStore()
    spec = MetricSpec("a_requests", "counter", "Requests", "", plugin="one")
    assert store.declare(spec) is spec
    assert store.declare(MetricSpec("a_requests", "counter", "Other help", plugin="two")) is spec
    with pytest.raises(DuplicateMetric) as e:
        store.declare(MetricSpec("a_requests", "gauge", plugin="two"))
    assert "'one'" in str(e.value) and "'two'" in str(e.value)
    with pytest.raises(DuplicateMetric):
        store.declare(MetricSpec("a_requests", "counter", labels=("route",), plugin="three"))
    assert [s.name for s in store.specs()] == ["a_requests"]
    assert store.spec("a_requests").plugin == "one" and store.spec("nope") is None


@pytest.mark.parametrize("kwargs", [
    {"name": "bad-name"}, {"name": "1starts_with_digit"}, {"name": ""},
    {"name": "ok", "kind": "summary"},
    {"name": "ok", "labels": ("le",), "kind": "histogram"},
    {"name": "ok", "labels": ("__reserved",)},
    {"name": "ok", "labels": ("a", "a")},
    {"name": "ok", "labels": ("bad-label",)},
    {"name": "ok", "kind": "histogram", "buckets": (1.0, 0.5)},
])
def test_invalid_specs_are_refused(kwargs):
    with pytest.raises(ValueError):
        MetricSpec(**kwargs)


def test_nothing_appears_before_a_value_is_recorded():
    store = MetricsStore()
    store.declare(MetricSpec("x_gauge", "gauge"))
    assert store.snapshot() == []
    assert store.value("x_gauge") is None
    store.set_value("x_gauge", 4)
    [(spec, series)] = store.snapshot()
    assert spec.name == "x_gauge" and series[()].value == 4


def test_gauge_counter_values_and_timestamps():
    store = MetricsStore()
    before = int(time.time() * 1000)
    store.set_value("g", 2.5)
    store.set_value("g", 1.5)
    store.increment("c")
    store.increment("c", 41)
    after = int(time.time() * 1000)
    assert store.value("g") == 1.5 and store.value("c") == 42
    assert store.spec("g").kind == "gauge" and store.spec("c").kind == "counter"
    _, series = _series(store, "g")
    assert before <= series[()].timestamp_ms <= after


def test_max_over_window_follows_orthanc_rule(monkeypatch):
    # Orthanc MetricsUpdatePolicy_MaxOver10Seconds: replaced when strictly larger, or when
    # the stored value is older than the window (shortened to 0.3 s here). The store reads
    # the test's clock: on the real one, a machine stalled for 0.3 s between two calls
    # would see the stored value expire before the test looked.
    clock = [1_700_000_000.0]
    monkeypatch.setattr(metrics_module, "time", types.SimpleNamespace(time=lambda: clock[0],
                                                                      perf_counter=time.perf_counter))
    store = MetricsStore(max_window_seconds=0.3)
    store.set_max("d_ms", 5)
    t_first = _series(store, "d_ms")[1][()].timestamp_ms
    assert t_first == 1_700_000_000_000
    clock[0] += 0.02
    store.set_max("d_ms", 3)          # smaller: ignored
    store.set_max("d_ms", 5)          # equal: ignored, the timestamp stays
    s = _series(store, "d_ms")[1][()]
    assert (s.value, s.timestamp_ms) == (5, t_first)
    store.set_max("d_ms", 7)          # larger: replaces
    assert store.value("d_ms") == 7
    clock[0] += 0.25
    store.set_max("d_ms", 1)          # smaller, stored one 0.25 s old: ignored
    assert store.value("d_ms") == 7
    clock[0] += 0.1
    store.set_max("d_ms", 1)          # stored one expired (0.35 s): replaces although smaller
    s = _series(store, "d_ms")[1][()]
    assert s.value == 1 and s.timestamp_ms == t_first + 370


def test_default_window_is_ten_seconds():
    store = MetricsStore()
    store.set_max("d_ms", 9)
    store.set_max("d_ms", 1)
    assert store.value("d_ms") == 9


def test_record_duration_and_timer_are_milliseconds_max_over_window():
    store = MetricsStore()
    store.record_duration("orthanc_find_scp_duration_ms", 0.0123456)
    assert store.value("orthanc_find_scp_duration_ms") == 12.345
    assert store.spec("orthanc_find_scp_duration_ms").kind == "max10s"
    with store.timer("orthanc_move_scp_duration_ms"):
        time.sleep(0.03)
    assert 30 <= store.value("orthanc_move_scp_duration_ms") < 1000
    with pytest.raises(ZeroDivisionError):
        with store.timer("orthanc_get_scp_duration_ms"):
            time.sleep(0.01)
            1 / 0
    # recorded also when the block raised, like Orthanc's Timer destructor
    assert 10 <= store.value("orthanc_get_scp_duration_ms") < 1000


def test_histogram_buckets_sum_count_and_label_order():
    store = MetricsStore()
    store.declare(MetricSpec("h_seconds", "histogram", labels=("method", "route"), buckets=(0.1, 1.0)))
    for v in (0.05, 0.1, 0.5, 1.0, 3.0):
        store.observe("h_seconds", v, {"route": "/a", "method": "GET"})   # mapping order is irrelevant
    store.observe("h_seconds", 0.2, {"method": "POST", "route": "/a"})
    spec, series = _series(store, "h_seconds")
    s = series[("GET", "/a")]
    assert s.counts == [2, 2, 1]           # <= 0.1, <= 1.0, +Inf (non-cumulative)
    assert s.value == 5 and s.total == pytest.approx(4.65)
    assert series[("POST", "/a")].counts == [0, 1, 0]
    assert store.value("h_seconds", {"method": "GET", "route": "/a"}) == 5
    assert store.value("h_seconds", ("POST", "/a")) == 1


def test_undeclared_histogram_gets_default_buckets():
    store = MetricsStore()
    store.observe("lat_seconds", 0.003)
    spec, series = _series(store, "lat_seconds")
    assert spec.kind == "histogram" and spec.buckets == DEFAULT_BUCKETS
    assert sum(series[()].counts) == 1 and series[()].counts[DEFAULT_BUCKETS.index(0.005)] == 1


def test_declared_kind_decides_the_policy():
    store = MetricsStore()
    store.declare(MetricSpec("m_ms", "max10s"))
    store.declare(MetricSpec("h", "histogram", buckets=(1.0,)))
    store.set_value("m_ms", 8)
    store.set_value("m_ms", 2)             # max rule, not "directly"
    assert store.value("m_ms") == 8
    store.set_value("h", 0.5)              # an observation
    store.observe("h", 2.0)
    assert _series(store, "h")[1][()].counts == [1, 1]
    with pytest.raises(ValueError):
        store.increment("h")


def test_labels_must_match_the_spec():
    store = MetricsStore()
    store.declare(MetricSpec("l", "gauge", labels=("a",)))
    with pytest.raises(ValueError):
        store.set_value("l", 1)
    with pytest.raises(ValueError):
        store.set_value("l", 1, {"b": "x"})
    with pytest.raises(ValueError):
        store.set_value("l", 1, {"a": "x", "b": "y"})
    store.set_value("l", 1, {"a": 7})      # values are stringified
    assert store.value("l", ("7",)) == 1


def test_declaration_after_implicit_recording_keeps_values():
    store = MetricsStore()
    store.increment("late_total_requests", 3)
    spec = MetricSpec("late_total_requests", "counter", "Requests", "", plugin="late")
    assert store.declare(spec) is spec
    assert store.value("late_total_requests") == 3 and store.spec("late_total_requests").help == "Requests"


def test_disabled_store_ignores_updates_and_keeps_old_values():
    store = MetricsStore(enabled=False)
    store.set_value("g", 1)
    store.increment("c")
    with store.timer("t_ms"):
        pass
    assert store.snapshot() == []
    store.enabled = True
    store.set_value("g", 1)
    store.enabled = False
    store.set_value("g", 2)
    store.observe("h", 1.0)
    assert store.value("g") == 1 and store.value("h") is None
    store.enabled = True
    store.set_value("g", 3)
    assert store.value("g") == 3


def test_collectors_run_at_snapshot_only_when_enabled_and_failures_are_isolated(caplog):
    store = MetricsStore()
    calls = []

    def good(s):
        calls.append(1)
        s.set_value("computed", len(calls))

    def bad(s):
        raise RuntimeError("broken collector")

    store.add_collector(bad)
    store.add_collector(good)
    with caplog.at_level(logging.ERROR, logger="pacsbox.metrics"):
        assert _series(store, "computed")[1][()].value == 1
        assert _series(store, "computed")[1][()].value == 2
    assert sum("broken collector" in r.getMessage() or "failed" in r.getMessage() for r in caplog.records) == 1
    store.enabled = False
    store.snapshot()
    assert len(calls) == 2
    store.enabled = True
    store.remove_collector(good)
    store.remove_collector(good)           # absent: no error
    store.snapshot()
    assert len(calls) == 2


def test_snapshot_since_returns_only_changed_metrics():
    store = MetricsStore()
    store.set_value("a", 1)
    store.set_value("b", 1)
    first = store.snapshot_since({})
    assert [(spec.name, series is not None) for spec, _, series in first] == [("a", True), ("b", True)]
    known = {spec.name: version for spec, version, _ in first}
    store.set_value("b", 2)
    second = store.snapshot_since(known)
    assert [(spec.name, series is not None) for spec, _, series in second] == [("a", False), ("b", True)]
    assert second[1][2][()].value == 2
    store.clear()
    assert store.snapshot_since(known) == []


def test_two_stores_are_independent():
    one, two = MetricsStore(), MetricsStore()
    one.increment("shared_name")
    assert one.value("shared_name") == 1 and two.value("shared_name") is None
    two.declare(MetricSpec("shared_name", "gauge"))   # no clash: nothing is global
    assert one.spec("shared_name").kind == "counter"


def test_concurrent_increments_are_not_lost():
    store = MetricsStore()

    def work():
        for _ in range(5000):
            store.increment("n")
            store.observe("h", 0.001)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.value("n") == 20000 and store.value("h") == 20000
