"""Dynamic registration: ``register_metrics`` declarations, ``ctx.metrics`` updates from any
code (routes, DIMSE handler threads), declarations after start-up, per-app state, and the
core working without the metrics plugin."""
from __future__ import annotations

import time

import falcon.testing
import pytest
from conftest import free_port, read
from metrics_helpers import names, sample, value

import pacsbox_metrics.plugin as metrics_plugin
from pacsbox import MetricSpec, RouteSpec, StartupError, hookimpl, send_json
from pacsbox.metrics import DuplicateMetric, UnknownMetric


class Counting:
    """``POST /test-metrics/count``: increments, sets, observes the declared metrics."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        m = self.ctx.metrics
        m.increment("testplugin_requests")
        m.set_value("testplugin_queue_length", 7)
        m.observe("testplugin_payload_bytes", 1500, {"kind": "small"})
        m.record_duration("testplugin_work_duration_ms", 0.004)
        send_json(resp, {})


class LateDeclare:
    """``POST /test-metrics/declare``: declares a metric at run time (after start-up)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        self.ctx.metrics.declare(MetricSpec("testplugin_late_gauge", "gauge", "Declared at run time", "",
                                            plugin="testplugin"))
        send_json(resp, {})


class SamplePlugin:
    def __init__(self):
        self.__name__ = "testplugin"        # the plugin's name for pluggy

    @hookimpl
    def register_metrics(self, ctx):
        return [
            MetricSpec("testplugin_requests", "counter", "Requests", ""),
            MetricSpec("testplugin_queue_length", "gauge", "Queue length", ""),
            MetricSpec("testplugin_payload_bytes", "histogram", "Payload size", "bytes", ("kind",),
                       buckets=(1000.0, 10000.0)),
            MetricSpec("testplugin_work_duration_ms", "max10s", "Work time (max over 10 s)", "ms"),
        ]

    @hookimpl
    def register_routes(self, ctx):
        return [RouteSpec("/test-metrics/count", Counting), RouteSpec("/test-metrics/declare", LateDeclare)]


def scrape(client) -> str:
    r = client.simulate_get("/tools/metrics-prometheus")
    assert r.status_code == 200
    return r.text


def test_declared_metrics_appear_when_recorded_with_exact_names(make_app):
    app = make_app(plugins=[metrics_plugin, SamplePlugin()])
    client = falcon.testing.TestClient(app)
    spec = app.ctx.metrics.spec("testplugin_requests")
    assert (spec.kind, spec.help, spec.plugin) == ("counter", "Requests", "testplugin")
    assert not {n for n in names(scrape(client)) if n.startswith("testplugin_")}
    for _ in range(3):
        assert client.simulate_post("/test-metrics/count").status_code == 200
    text = scrape(client)
    assert {n for n in names(text) if n.startswith("testplugin_")} == {
        "testplugin_requests", "testplugin_queue_length", "testplugin_work_duration_ms",
        "testplugin_payload_bytes_bucket", "testplugin_payload_bytes_count", "testplugin_payload_bytes_sum"}
    assert value(text, "testplugin_requests") == 3
    assert value(text, "testplugin_queue_length") == 7
    assert value(text, "testplugin_work_duration_ms") == 4
    assert value(text, "testplugin_payload_bytes_bucket", kind="small", le="1000.0") == 0
    assert value(text, "testplugin_payload_bytes_bucket", kind="small", le="10000.0") == 3
    assert value(text, "testplugin_payload_bytes_sum", kind="small") == 4500


def test_metric_declared_after_startup(make_app):
    app = make_app(plugins=[metrics_plugin, SamplePlugin()])
    client = falcon.testing.TestClient(app)
    assert app.ctx.metrics.spec("testplugin_late_gauge") is None
    assert client.simulate_post("/test-metrics/declare").status_code == 200
    assert app.ctx.metrics.spec("testplugin_late_gauge").help == "Declared at run time"
    assert "testplugin_late_gauge" not in names(scrape(client))       # declared, not recorded
    app.ctx.metrics.set_value("testplugin_late_gauge", 12.5)
    assert value(scrape(client), "testplugin_late_gauge") == 12.5
    # a second declaration of the same name with another kind is refused
    with pytest.raises(DuplicateMetric):
        app.ctx.metrics.declare(MetricSpec("testplugin_late_gauge", "counter", plugin="other"))
    # an undeclared name fails (a misspelt name never creates a metric silently), with
    # the closest declared name
    with pytest.raises(UnknownMetric) as e:
        app.ctx.metrics.set_value("testplugin_late_gauges", 2)
    assert str(e.value) == ("metric 'testplugin_late_gauges' is not declared (declare it with the register_metrics "
                            "hook or ctx.metrics.declare); did you mean 'testplugin_late_gauge'?")
    with pytest.raises(UnknownMetric):
        with app.ctx.metrics.timer("never_declared_duration_ms"):
            pass
    assert "testplugin_late_gauges" not in names(scrape(client))


def test_duplicate_declarations_stop_startup_naming_both_plugins(make_app):
    class Other:
        __name__ = "otherplugin"

        @hookimpl
        def register_metrics(self, ctx):
            return [MetricSpec("testplugin_requests", "gauge", "clash", "")]

    with pytest.raises(StartupError) as e:
        make_app(plugins=[metrics_plugin, SamplePlugin(), Other()])
    assert "'testplugin'" in str(e.value) and "'otherplugin'" in str(e.value)


class FakeDicomNet:
    """Stands in for the dicom_net plugin: a real pynetdicom SCP whose C-FIND, C-GET and
    C-MOVE handlers record Orthanc's SCP durations through ``ctx.metrics``."""

    def __init__(self, port):
        self.port = port
        self.server = None

    @hookimpl
    def register_metrics(self, ctx):
        return [MetricSpec(n, "max10s", f"{n} (max over 10 s)", "ms") for n in
                ("orthanc_find_scp_duration_ms", "orthanc_get_scp_duration_ms", "orthanc_move_scp_duration_ms")]

    @hookimpl
    def startup(self, ctx):
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelFind,
                                          PatientRootQueryRetrieveInformationModelGet,
                                          PatientRootQueryRetrieveInformationModelMove)

        def on_find(event):
            with ctx.metrics.timer("orthanc_find_scp_duration_ms"):
                time.sleep(0.02)
                yield from ()

        def on_get(event):
            with ctx.metrics.timer("orthanc_get_scp_duration_ms"):
                time.sleep(0.01)
                yield 0

        def on_move(event):
            with ctx.metrics.timer("orthanc_move_scp_duration_ms"):
                time.sleep(0.01)
                yield None, None          # unknown move destination: a refusal, timed too

        ae = AE("FAKESCP")
        for sop in (PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelGet,
                    PatientRootQueryRetrieveInformationModelMove):
            ae.add_supported_context(sop)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get), (evt.EVT_C_MOVE, on_move)])

    @hookimpl
    def shutdown(self, ctx):
        if self.server is not None:
            self.server.shutdown()


def test_dimse_handlers_record_scp_durations_through_ctx_metrics(make_app):
    from pydicom import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelFind,
                                      PatientRootQueryRetrieveInformationModelGet,
                                      PatientRootQueryRetrieveInformationModelMove)

    port = free_port()
    app = make_app(plugins=[metrics_plugin, FakeDicomNet(port)])
    client = falcon.testing.TestClient(app)
    assert not {n for n in names(scrape(client)) if n.endswith("_scp_duration_ms")}

    ae = AE("SCU")
    for sop in (PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelGet,
                PatientRootQueryRetrieveInformationModelMove):
        ae.add_requested_context(sop)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "*"
    t0 = time.time()
    assoc = ae.associate("127.0.0.1", port, ae_title="FAKESCP")
    assert assoc.is_established
    statuses = [s.Status for s, _ in assoc.send_c_find(query, PatientRootQueryRetrieveInformationModelFind)]
    assert statuses == [0x0000]
    assert [s.Status for s, _ in assoc.send_c_get(query, PatientRootQueryRetrieveInformationModelGet)] == [0x0000]
    move = [s.Status for s, _ in assoc.send_c_move(query, "NOWHERE", PatientRootQueryRetrieveInformationModelMove)]
    assert move == [0xA801]
    assoc.release()

    text = scrape(client)
    assert 20 <= value(text, "orthanc_find_scp_duration_ms") < 2000
    assert 10 <= value(text, "orthanc_get_scp_duration_ms") < 2000
    assert 10 <= value(text, "orthanc_move_scp_duration_ms") < 2000
    assert sample(text, "orthanc_find_scp_duration_ms").timestamp >= t0 - 0.01


def test_two_apps_in_one_process_keep_separate_metrics(make_app):
    one = make_app(plugins=[metrics_plugin, SamplePlugin()])
    two = make_app(plugins=[metrics_plugin, SamplePlugin()])
    c1, c2 = falcon.testing.TestClient(one), falcon.testing.TestClient(two)
    c1.simulate_post("/instances", body=read("CT_small.dcm"))
    for _ in range(2):
        c1.simulate_post("/test-metrics/count")
    c2.simulate_post("/test-metrics/count")
    t1, t2 = scrape(c1), scrape(c2)
    assert value(t1, "testplugin_requests") == 2 and value(t2, "testplugin_requests") == 1
    assert value(t1, "orthanc_count_instances") == 1 and value(t2, "orthanc_count_instances") == 0
    assert "orthanc_store_dicom_duration_ms" in names(t1) and "orthanc_store_dicom_duration_ms" not in names(t2)
    s1, s2 = one.ctx.stash["metrics"], two.ctx.stash["metrics"]
    assert s1.exposition.registry is not s2.exposition.registry
    c1.simulate_put("/tools/metrics", body="0")
    assert c1.simulate_get("/tools/metrics-prometheus").content == b""
    assert c2.simulate_get("/tools/metrics").text == "1" and value(scrape(c2), "testplugin_requests") == 1


def test_core_works_without_the_metrics_plugin(make_app):
    # Installed entry points are loaded, the metrics plugin is blocked.
    app = make_app(load_entrypoints=True, config={"PluginsBlocklist": ["metrics"], "DicomPort": free_port(),
                                                  "SaveJobs": False})
    assert app.ctx.pm.get_plugin("metrics") is None
    client = falcon.testing.TestClient(app)
    data = read("CT_small.dcm")
    r = client.simulate_post("/instances", body=data)
    assert r.status_code == 200 and r.json["Status"] == "Success"
    assert client.simulate_get("/tools/metrics-prometheus").status_code == 404
    assert client.simulate_get("/tools/metrics").status_code == 404
    # recording still works (a dictionary update), nothing exposes it
    assert app.ctx.metrics.value("orthanc_storage_written_bytes") == len(data)
    assert app.ctx.metrics.value("orthanc_rest_api_duration_ms") > 0
    assert "metrics" not in app.ctx.stash


def test_metrics_plugin_loads_from_its_entry_point(make_app):
    app = make_app(load_entrypoints=True, config={"DicomPort": free_port(), "SaveJobs": False})
    assert app.ctx.pm.get_plugin("metrics") is not None
    client = falcon.testing.TestClient(app)
    assert client.simulate_get("/tools/metrics").text == "1"
    assert value(scrape(client), "orthanc_count_instances") == 0
