"""Memory trimming (Orthanc 1.11.3+): ``malloc_trim`` every ``Metrics.MemoryTrimmingInterval``
seconds where the C library has it, timed into ``orthanc_memory_trimming_duration_ms``."""
from __future__ import annotations

import platform
import time

import falcon.testing
import pytest
from metrics_helpers import names, value

import pacsbox_metrics.plugin as metrics_plugin
from pacsbox import ConfigError
from pacsbox.metrics import MetricsStore
from pacsbox_metrics.trimming import METRIC, MemoryTrimmer, find_malloc_trim

GLIBC = platform.libc_ver()[0] == "glibc"


def scrape(client) -> str:
    return client.simulate_get("/tools/metrics-prometheus").text


def test_malloc_trim_is_found_exactly_on_glibc():
    assert (find_malloc_trim() is not None) == GLIBC


def test_trimming_thread_records_the_duration(make_app):
    app = make_app(plugins=[metrics_plugin], config={"Metrics": {"MemoryTrimmingInterval": 0.2}})
    client = falcon.testing.TestClient(app)
    if not GLIBC:
        time.sleep(0.5)
        assert app.ctx.metrics.spec(METRIC) is None and METRIC not in names(scrape(client))
        return
    assert app.ctx.metrics.spec(METRIC).kind == "max10s"
    assert METRIC not in names(scrape(client))       # nothing before the first trim
    deadline = time.time() + 60   # a hang guard: the first trim is due after 0.2 s
    while time.time() < deadline and METRIC not in names(scrape(client)):
        time.sleep(0.05)
    text = scrape(client)
    assert 0 <= value(text, METRIC) < 5000
    trimmer = app.ctx.stash["metrics"].trimmer
    app.close()
    assert not trimmer._thread.is_alive()            # stopped by the shutdown hook


def test_interval_zero_disables_trimming(make_app):
    app = make_app(plugins=[metrics_plugin], config={"Metrics": {"MemoryTrimmingInterval": 0}})
    assert app.ctx.stash["metrics"].trimmer._thread is None
    time.sleep(0.3)
    assert METRIC not in names(scrape(falcon.testing.TestClient(app)))


@pytest.mark.skipif(not GLIBC, reason="needs glibc's malloc_trim")
def test_trim_once_times_the_real_call():
    store = MetricsStore()
    trimmer = MemoryTrimmer(store, interval=30)
    blobs = [bytearray(64 * 1024) for _ in range(200)]   # some heap to give back
    del blobs
    seconds = trimmer.trim_once()
    assert store.value(METRIC) == int(seconds * 1_000_000) / 1000.0


@pytest.mark.parametrize("section, message", [
    ("fast", 'option Metrics: "fast" is not a JSON object'),
    ({"MemoryTrimmingInterval": "30"}, 'option Metrics.MemoryTrimmingInterval: "30" is not a number >= 0'),
    ({"ExpositionCacheMs": True}, "option Metrics.ExpositionCacheMs: true is not a number >= 0"),
    ({"MemoryTrimmingInterval": -1}, "option Metrics.MemoryTrimmingInterval: -1 is not a number >= 0"),
])
def test_bad_options_stop_startup(make_app, section, message):
    """The section is declared with ``register_options`` and checked by the core before any
    route is registered (issue 14 item 7), the plugin named."""
    with pytest.raises(ConfigError) as e:
        make_app(plugins=[metrics_plugin], config={"Metrics": section})
    assert str(e.value) == message + " (plugin 'pacsbox_metrics.plugin')"
