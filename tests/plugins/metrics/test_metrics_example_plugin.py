"""The pip-installed example plugin (``tests/fixtures/example_plugin``, distribution
``pacsbox-example-plugin``) declares ``example_hello_requests`` in ``register_metrics``
and increments it from ``GET /example/hello``: after a (re)start of a real
``pacsbox serve``, the exposition shows it with the right value."""
from __future__ import annotations

import json

from conftest import free_port
from fixtures.example_plugin.install import ensure_installed
from metrics_helpers import ServeProcess, check_lines, http_get, names, value

METRIC = "example_hello_requests"


def hello(url: str, n: int) -> None:
    for i in range(n):
        status, _, body = http_get(url + "/example/hello")
        assert status == 200 and json.loads(body) == {"Count": i + 1, "Hello": "MetricsExample"}


def scrape(url: str) -> str:
    status, headers, text = http_get(url + "/tools/metrics-prometheus")
    assert status == 200 and headers["Content-Type"] == "text/plain; version=0.0.4"
    return text


def test_pip_installed_plugin_metric_in_exposition(tmp_path):
    ensure_installed()                     # pip install, unless the installed copy is current
    server = ServeProcess(tmp_path, {"HttpPort": free_port(), "DicomPort": free_port(), "SaveJobs": False,
                                     "Name": "MetricsExample"})
    server.start()
    try:
        assert METRIC not in names(scrape(server.url))    # declared, not yet recorded
        hello(server.url, 5)
        text = scrape(server.url)
        check_lines(text)
        assert value(text, METRIC) == 5
        assert f"\n{METRIC} 5 " in "\n" + text and f"{METRIC}_total" not in text
        assert value(text, "pacsbox_rest_api_request_duration_seconds_count",
                     method="GET", route="/example/hello") == 5
    finally:
        server.stop()

    # restart: a fresh process starts from zero and counts again
    server.start()
    try:
        assert METRIC not in names(scrape(server.url))
        hello(server.url, 3)
        assert value(scrape(server.url), METRIC) == 3
    finally:
        server.stop()
