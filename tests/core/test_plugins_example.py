"""The third-party path, in process: ``tests/fixtures/example_plugin`` is pip-installed
into this environment (idempotently) and found through its entry point by
``create_app(load_entrypoints=True)``. The same plugin is exercised through a real
``pacsbox serve`` process in ``test_cli.py``.
"""
from __future__ import annotations

from importlib import metadata

import falcon.testing
import pytest

from fixtures.example_plugin.install import DISTRIBUTION, ensure_installed, source_version
from pacsbox.testing import wait_for_job


@pytest.fixture(scope="module")
def example_installed():
    ensure_installed()
    return metadata.distribution(DISTRIBUTION)


@pytest.fixture
def example_app(example_installed, pacsbox_make_app, monkeypatch):
    monkeypatch.delenv("PACSBOX_DISABLE_PLUGINS", raising=False)
    return pacsbox_make_app({"Name": "ExampleBox", "Example": {"StepSeconds": 0.001}}, load_entrypoints=True)


def test_example_distribution_is_installed_with_its_entry_point(example_installed):
    assert example_installed.version == source_version() == "1.2.3"
    eps = [(ep.name, ep.value) for ep in example_installed.entry_points if ep.group == "pacsbox.plugins"]
    assert eps == [("example", "pacsbox_example.plugin")]
    # idempotent: a second call finds the installed copy current and runs no pip
    assert ensure_installed() is False


def test_example_route_and_metric(example_app):
    client = falcon.testing.TestClient(example_app)
    assert client.simulate_get("/example/hello").json == {"Hello": "ExampleBox", "Count": 1}
    assert client.simulate_get("/example/hello").json == {"Hello": "ExampleBox", "Count": 2}
    spec = {s.name: s for s in example_app.ctx.metrics.specs()}["example_hello_requests"]
    assert (spec.kind, spec.plugin) == ("counter", "example")
    assert example_app.ctx.metrics.value("example_hello_requests") == 2
    r = client.simulate_post("/example/hello")
    assert r.status_code == 405 and r.headers["Allow"] == "GET"


def test_example_job_runs_to_success(example_app):
    client = falcon.testing.TestClient(example_app)
    assert example_app.ctx.job_types.by_plugin()["example"] == ["ExampleSleep"]
    r = client.simulate_post("/example/jobs", json={"Steps": 4, "Synchronous": True})
    assert r.status_code == 200 and r.json == {"Description": "REST API", "Steps": 4, "StepsDone": 4}

    r = client.simulate_post("/example/jobs", json={"Steps": 5, "Priority": 3})
    ans = r.json
    assert set(ans) == {"ID", "Path"} and ans["Path"] == f"/jobs/{ans['ID']}"
    info = wait_for_job(example_app, ans["ID"])
    assert (info["State"], info["Type"], info["Priority"], info["Progress"], info["ErrorCode"]) == \
        ("Success", "ExampleSleep", 3, 100, 0)
    assert info["Content"] == {"Description": "REST API", "Steps": 5, "StepsDone": 5}
    assert client.simulate_get(ans["Path"]).json["State"] == "Success"

    # bad input gets Orthanc's JSON error, rendered by the core
    bad = client.simulate_post("/example/jobs", json={"Steps": 0})
    assert bad.status_code == 400 and bad.json["OrthancStatus"] == 15
    assert bad.json["Details"] == '"Steps" must be an integer from 1 to 10000'
    bad = client.simulate_post("/example/jobs", json={"Steps": 2, "Synchronous": "yes"})
    # (the wording of this one belongs to the jobs engine's request_mode)
    assert bad.status_code == 400 and "Synchronous" in bad.json["Details"]


def test_example_listed_in_plugins(example_app):
    client = falcon.testing.TestClient(example_app)
    assert "example" in client.simulate_get("/plugins").json
    assert client.simulate_get("/plugins/example").json == {
        "ID": "example", "Version": "1.2.3", "Distribution": DISTRIBUTION, "Module": "pacsbox_example.plugin",
        "Description": "Example pacsbox plugin: a route, a job type and a metric (see README.md).",
        "ExtendsOrthancExplorer": False, "Routes": ["/example/hello", "/example/jobs"],
        "JobTypes": ["ExampleSleep"], "Metrics": ["example_hello_requests"]}


def test_example_blocked(example_installed, pacsbox_make_app, monkeypatch):
    monkeypatch.setenv("PACSBOX_DISABLE_PLUGINS", "example")
    client = falcon.testing.TestClient(pacsbox_make_app(load_entrypoints=True))
    assert "example" not in client.simulate_get("/plugins").json
    assert client.simulate_get("/example/hello").status_code == 404
    assert client.simulate_get("/plugins/example").status_code == 404
