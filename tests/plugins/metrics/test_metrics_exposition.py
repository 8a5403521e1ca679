"""``GET /tools/metrics-prometheus`` and ``GET``/``PUT /tools/metrics`` (reference section 8).

The expected headers and bodies are those of Orthanc 1.10.1, observed by hand on the
reference binary: ``Content-Type: text/plain; version=0.0.4``, one
``name value timestamp_ms`` line per metric, names sorted, no ``# HELP``/``# TYPE``; the
switch answers ``1``/``0`` in ``text/plain``, a ``PUT`` answers 200 with an empty
``text/plain`` body, any body other than ``0``/``1``/``true``/``false`` (spaces stripped,
case-sensitive) 400 with OrthancStatus 15 "Boolean value expected".
"""
from __future__ import annotations

import time

import falcon.testing
import pytest
import requests
from conftest import read
from metrics_helpers import COMPUTED, check_lines, names, sample, samples, value

import pacsbox_metrics.plugin as metrics_plugin
from pacsbox import Job, MetricSpec, StepResult, hookimpl
from pacsbox_metrics.collector import StoreCollector, render, render_samples

CT = "CT_small.dcm"
MR = "MR_small.dcm"


class ProbeJob(Job):
    """Two short steps, then success (or failure when ``fail``)."""

    type_name = "MetricsProbe"

    def __init__(self, fail: bool = False):
        super().__init__()
        self.fail, self.done = fail, 0

    def step(self, ctx):
        self.done += 1
        time.sleep(0.002)
        if self.done < 2:
            return StepResult.CONTINUE
        return StepResult.FAILURE if self.fail else StepResult.SUCCESS

    def serialize(self):
        return {"fail": self.fail, "done": self.done}

    @classmethod
    def from_serialized(cls, data, ctx):
        job = cls(data["fail"])
        job.done = data["done"]
        return job


class ProbeJobs:
    @hookimpl
    def register_job_types(self, ctx):
        return [ProbeJob]


@pytest.fixture
def mclient(make_app):
    """TestClient of an app with the metrics plugin (and nothing else but the core)."""
    app = make_app(plugins=[metrics_plugin, ProbeJobs()], config={"SaveJobs": False})
    return falcon.testing.TestClient(app)


def scrape(client) -> str:
    r = client.simulate_get("/tools/metrics-prometheus")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4"
    return r.text


def test_fresh_server_exposes_only_what_was_recorded(mclient):
    text = scrape(mclient)
    check_lines(text)
    # The scrape itself is an active request; the computed gauges are refreshed per scrape.
    assert names(text) == COMPUTED | {"orthanc_rest_api_active_requests"}
    assert value(text, "orthanc_rest_api_active_requests") == 1
    assert value(text, "orthanc_count_instances") == 0 and value(text, "orthanc_jobs_pending") == 0
    assert "# " not in text
    # durations appear only once recorded
    text = scrape(mclient)
    assert "orthanc_store_dicom_duration_ms" not in names(text)
    assert "orthanc_rest_api_duration_ms" in names(text)   # the first scrape finished


def test_names_values_and_format_after_activity(mclient):
    ct, mr = read(CT), read(MR)
    t_upload = time.time()
    ids = [mclient.simulate_post("/instances", body=data).json["ID"] for data in (ct, mr)]
    assert mclient.simulate_get(f"/instances/{ids[0]}/tags").status_code == 200       # storage read
    f = mclient.simulate_get(f"/instances/{ids[1]}/file")
    assert f.content == mr
    for _ in range(3):
        assert mclient.simulate_get("/system").status_code == 200
    app = mclient.app
    done = app.ctx.jobs.submit(ProbeJob())
    failed = app.ctx.jobs.submit(ProbeJob(fail=True))
    app.ctx.jobs.wait(done, 10)
    app.ctx.jobs.wait(failed, 10)
    assert mclient.simulate_delete(f"/instances/{ids[0]}").status_code == 200    # storage remove
    t_scrape = time.time()
    text = scrape(mclient)
    lines = check_lines(text)
    orthanc = {n for n in names(text) if n.startswith("orthanc_")}
    assert orthanc == COMPUTED | {
        "orthanc_rest_api_active_requests", "orthanc_rest_api_duration_ms",
        "orthanc_store_dicom_duration_ms", "orthanc_storage_create_duration_ms",
        "orthanc_storage_read_duration_ms", "orthanc_storage_remove_duration_ms",
        "orthanc_storage_read_bytes", "orthanc_storage_written_bytes"}
    assert names(text) - orthanc == {
        "pacsbox_rest_api_request_duration_seconds_bucket", "pacsbox_rest_api_request_duration_seconds_count",
        "pacsbox_rest_api_request_duration_seconds_sum", "pacsbox_job_step_duration_seconds_bucket",
        "pacsbox_job_step_duration_seconds_count", "pacsbox_job_step_duration_seconds_sum"}
    # no renamed series from prometheus-client, in the text or through the parser
    for line in lines:
        head = line.split("{")[0].split(" ")[0]
        assert not head.endswith("_total") and not head.endswith("_created"), line

    stats = mclient.simulate_get("/statistics").json
    assert value(text, "orthanc_count_instances") == stats["CountInstances"] == 1
    assert value(text, "orthanc_count_patients") == stats["CountPatients"] == 1
    assert value(text, "orthanc_count_studies") == stats["CountStudies"]
    assert value(text, "orthanc_count_series") == stats["CountSeries"]
    assert value(text, "orthanc_disk_size_mb") == pytest.approx(len(mr) / 1048576.0, abs=1e-6)
    assert value(text, "orthanc_uncompressed_size_mb") == pytest.approx(len(mr) / 1048576.0, abs=1e-6)
    assert value(text, "orthanc_storage_written_bytes") == len(ct) + len(mr)
    assert value(text, "orthanc_storage_read_bytes") == len(ct) + len(mr)   # tags of CT, file of MR
    assert value(text, "orthanc_jobs_success") == 1 and value(text, "orthanc_jobs_failed") == 1
    assert value(text, "orthanc_jobs_completed") == 2
    assert value(text, "orthanc_jobs_pending") == 0 and value(text, "orthanc_jobs_running") == 0
    assert value(text, "orthanc_last_change") == mclient.simulate_get("/changes?last").json["Last"]
    assert 0 <= value(text, "orthanc_up_time_s") < 120
    assert value(text, "orthanc_store_dicom_duration_ms") > 0
    # histograms: count per route, cumulative buckets ending at the count
    h = "pacsbox_rest_api_request_duration_seconds"
    assert value(text, h + "_count", method="GET", route="/system") == 3
    assert value(text, h + "_count", method="POST", route="/instances") == 2
    assert value(text, h + "_bucket", method="GET", route="/system", le="+Inf") == 3
    buckets = [s.value for s in samples(text) if s.name == h + "_bucket" and s.labels.get("route") == "/system"]
    assert buckets == sorted(buckets) and len(buckets) == 17
    assert value(text, "pacsbox_job_step_duration_seconds_count", type="MetricsProbe") == 4
    assert value(text, "pacsbox_job_step_duration_seconds_sum", type="MetricsProbe") >= 0.008
    # timestamps: computed gauges at scrape time, durations at the time of the event
    ts_count = sample(text, "orthanc_count_instances").timestamp
    ts_store = sample(text, "orthanc_store_dicom_duration_ms").timestamp
    assert t_scrape - 0.01 <= ts_count <= time.time() + 0.01
    assert t_upload - 0.01 <= ts_store < t_scrape


def test_counter_names_keep_no_total_suffix_through_prometheus_client(mclient):
    app = mclient.app
    app.ctx.metrics.increment("orthanc_storage_read_bytes", 10)
    collector = StoreCollector(app.ctx.metrics)
    families = {f.name: f for f in collector.collect()}
    fam = families["orthanc_storage_read_bytes"]
    assert fam.type == "counter"
    assert [s.name for s in fam.samples] == ["orthanc_storage_read_bytes"]
    assert "orthanc_storage_read_bytes_total" not in render(families.values()).decode()


def test_prerendered_text_equals_rendering_of_the_samples(mclient):
    # Each family carries its lines rendered from the store; rendering its
    # prometheus-client samples gives the very same text.
    mclient.simulate_post("/instances", body=read(CT))
    mclient.simulate_get("/system")
    mclient.app.ctx.metrics.declare(MetricSpec("quoted_label", "gauge", "A gauge"))
    mclient.app.ctx.metrics.set_value("quoted_label", 1, None)
    collector = StoreCollector(mclient.app.ctx.metrics)
    for _ in range(2):  # second round: reused text for unchanged metrics
        families = collector.collect()
        assert families
        for fam in families:
            assert fam.exposition_text == render_samples(fam.samples), fam.name


def test_label_values_are_escaped(mclient):
    store = mclient.app.ctx.metrics
    store.declare(MetricSpec("odd_labels", "gauge", "Labels to escape", labels=("path",)))
    store.set_value("odd_labels", 1, {"path": 'a"b\\c\nd'})
    text = scrape(mclient)
    assert 'odd_labels{path="a\\"b\\\\c\\nd"} 1 ' in text
    assert value(text, "odd_labels", path='a"b\\c\nd') == 1


def test_values_are_written_as_orthanc_does(mclient):
    store = mclient.app.ctx.metrics
    for name in ("int_metric", "integral_float_metric", "float_metric"):
        store.declare(MetricSpec(name, "gauge", "A value"))
    store.set_value("int_metric", 3)
    store.set_value("integral_float_metric", 2.0)
    store.set_value("float_metric", 0.0373897552)
    text = "\n" + scrape(mclient)
    assert "\nint_metric 3 " in text and "\nintegral_float_metric 2 " in text
    assert "\nfloat_metric 0.0373897552 " in text


def test_switch_get_put_and_disabled_exposition(mclient):
    r = mclient.simulate_get("/tools/metrics")
    assert (r.status_code, r.text, r.headers["content-type"]) == (200, "1", "text/plain")
    r = mclient.simulate_put("/tools/metrics", body="0")
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"", "text/plain")
    assert mclient.simulate_get("/tools/metrics").text == "0"
    r = mclient.simulate_get("/tools/metrics-prometheus")
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"", "text/plain; version=0.0.4")
    # nothing is recorded while disabled
    mclient.simulate_post("/instances", body=read(CT))
    mclient.app.ctx.metrics.declare(MetricSpec("while_off", "gauge", "Set while off"))
    mclient.app.ctx.metrics.set_value("while_off", 1)
    for body in ("true", " 1\n", "1 "):
        r = mclient.simulate_put("/tools/metrics", body=body)
        assert r.status_code == 200 and mclient.simulate_get("/tools/metrics").text == "1"
        mclient.simulate_put("/tools/metrics", body="false")
        assert mclient.simulate_get("/tools/metrics").text == "0"
    mclient.simulate_put("/tools/metrics", body="1")
    text = scrape(mclient)
    assert "orthanc_storage_written_bytes" not in names(text) and "while_off" not in names(text)
    assert value(text, "orthanc_count_instances") == 1    # computed again at scrape time


def test_switch_refuses_other_bodies(live_server):
    # Over real HTTP: Orthanc's error answers carry no Content-Type, which falcon's test
    # client (a strict WSGI validator) would not accept.
    server = live_server(plugins=[metrics_plugin])
    for body in ["yes", "2", "", "TRUE", "True", "on", "1 0", "{}"]:
        r = requests.put(server.url + "/tools/metrics", data=body)
        assert r.status_code == 400, body
        err = r.json()
        assert err["OrthancStatus"] == 15 and err["Details"] == "Boolean value expected"
        assert err["Method"] == "PUT" and err["Uri"] == "/tools/metrics"
        assert requests.get(server.url + "/tools/metrics").text == "1"


def test_metrics_enabled_option_sets_the_start_value(make_app):
    app = make_app(plugins=[metrics_plugin], config={"MetricsEnabled": False})
    client = falcon.testing.TestClient(app)
    assert client.simulate_get("/tools/metrics").text == "0"
    client.simulate_post("/instances", body=read(CT))
    r = client.simulate_get("/tools/metrics-prometheus")
    assert r.status_code == 200 and r.content == b""
    client.simulate_put("/tools/metrics", body="1")
    text = scrape(client)
    assert "orthanc_store_dicom_duration_ms" not in names(text)
    assert value(text, "orthanc_count_instances") == 1


def test_over_real_http(live_server):
    server = live_server(plugins=[metrics_plugin])
    assert requests.post(server.url + "/instances", data=read(CT)).status_code == 200
    r = requests.get(server.url + "/tools/metrics-prometheus")
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/plain; version=0.0.4"
    assert int(r.headers["Content-Length"]) == len(r.content)
    check_lines(r.text)
    assert value(r.text, "orthanc_count_instances") == 1
    r = requests.put(server.url + "/tools/metrics", data="0")
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"
    r = requests.get(server.url + "/tools/metrics-prometheus")
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Type"] == "text/plain; version=0.0.4"
    assert requests.get(server.url + "/tools/metrics").text == "0"
    assert requests.post(server.url + "/tools/metrics", data="1").status_code == 405


def test_exposition_cache_option(make_app):
    # served again while it is cached: a lifetime (60 s) that no machine outlasts between
    # two scrapes (with 300 ms, a stall of the test thread would render it again)
    app = make_app(plugins=[metrics_plugin], config={"Metrics": {"ExpositionCacheMs": 60000}})
    client = falcon.testing.TestClient(app)
    first = scrape(client)
    app.ctx.metrics.declare(MetricSpec("fresh_metric", "gauge", "A new gauge"))
    app.ctx.metrics.set_value("fresh_metric", 1)
    assert scrape(client) == first
    # rendered again once its lifetime is over: 300 ms, then a wait longer than that
    app = make_app(plugins=[metrics_plugin], config={"Metrics": {"ExpositionCacheMs": 300}})
    client = falcon.testing.TestClient(app)
    assert "fresh_metric" not in names(scrape(client))     # rendered and cached
    app.ctx.metrics.declare(MetricSpec("fresh_metric", "gauge", "A new gauge"))
    app.ctx.metrics.set_value("fresh_metric", 1)
    time.sleep(0.35)
    assert value(scrape(client), "fresh_metric") == 1
    client.simulate_put("/tools/metrics", body="0")
    assert client.simulate_get("/tools/metrics-prometheus").content == b""   # never cached when off
