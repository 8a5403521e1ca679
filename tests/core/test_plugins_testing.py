"""The pytest helpers shipped for plugin authors (:mod:`pacsbox.testing`, a ``pytest11``
plugin): the fixtures are available without any conftest, build isolated apps, and the
helpers do what their docstrings say.
"""
from __future__ import annotations

import threading
import time

import pytest
import requests

from pacsbox import Job, RouteSpec, StepResult, send_json
from pacsbox.testing import free_port, inline_plugin, wait_for_job, wait_for_notifications


class Ping:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        send_json(resp, {"Pong": self.ctx.config["Name"]})


PING = inline_plugin("ping", register_routes=lambda ctx: [RouteSpec("/ping", Ping)])


class Blocked(Job):
    type_name = "TestingBlocked"

    def __init__(self, gate: threading.Event):
        super().__init__()
        self.gate = gate

    def step(self, ctx):
        return StepResult.SUCCESS if self.gate.wait(0.01) else StepResult.CONTINUE


def test_fixtures_come_from_the_pytest11_entry_point(request):
    # nothing in tests/ imports pacsbox.testing's fixtures: pytest loaded it as plugin "pacsbox"
    plugin = request.config.pluginmanager.get_plugin("pacsbox")
    assert plugin is not None and plugin.__name__ == "pacsbox.testing"
    from pacsbox import PacsboxApp
    assert isinstance(request.getfixturevalue("pacsbox_app"), PacsboxApp)
    assert callable(request.getfixturevalue("pacsbox_make_app"))
    assert callable(request.getfixturevalue("pacsbox_live_server"))
    assert request.getfixturevalue("pacsbox_client").app is request.getfixturevalue("pacsbox_app")


def test_pacsbox_client_serves_the_core(pacsbox_client, pacsbox_app):
    assert pacsbox_client.simulate_get("/system").json["Name"] == pacsbox_app.ctx.config["Name"]
    assert pacsbox_client.simulate_get("/plugins").json == ["explorer.js"]  # no entry point loaded


def test_pacsbox_make_app_isolates_apps(pacsbox_make_app, tmp_path):
    import falcon.testing
    a = pacsbox_make_app({"Name": "A"}, plugins=[PING])
    b = pacsbox_make_app({"Name": "B"})
    assert falcon.testing.TestClient(a).simulate_get("/ping").json == {"Pong": "A"}
    assert falcon.testing.TestClient(b).simulate_get("/ping").status_code == 404
    assert a.ctx.config.path("StorageDirectory") != b.ctx.config.path("StorageDirectory")
    assert str(a.ctx.config.path("StorageDirectory")).startswith(str(tmp_path))


def test_pacsbox_live_server_is_a_real_http_server(pacsbox_live_server):
    server = pacsbox_live_server({"Name": "Live"}, plugins=[PING])
    r = requests.get(server.url + "/ping", timeout=10)
    assert r.status_code == 200 and r.json() == {"Pong": "Live"}
    assert requests.post(server.url + "/ping", timeout=10).headers["Allow"] == "GET"


def test_inline_plugin_options_and_errors(pacsbox_make_app):
    order = []
    first = inline_plugin("first", startup=(lambda: order.append("first"), {"tryfirst": True}))
    last = inline_plugin("last", startup=lambda: order.append("last"))
    pacsbox_make_app(plugins=[first, last])
    assert order == ["first", "last"]
    with pytest.raises(TypeError, match="startup must be a callable"):
        inline_plugin("bad", startup=42)


def test_wait_helpers(pacsbox_make_app):
    seen = []
    app = pacsbox_make_app(plugins=[inline_plugin("jobs", register_job_types=lambda: [Blocked],
                                                  job_state_changed=lambda job_info: seen.append(job_info.state))])
    gate = threading.Event()
    rec = app.ctx.jobs.submit(Blocked(gate))
    # running first (a worker slower than the timeout below left it Pending: "still Pending")
    deadline = time.monotonic() + 60
    while rec.state.value != "Running":
        assert time.monotonic() < deadline, rec.state
        time.sleep(0.005)
    with pytest.raises(TimeoutError, match=f"job {rec.id} is still Running"):
        wait_for_job(app, rec.id, timeout=0.3)
    gate.set()
    assert wait_for_job(app, rec.id)["State"] == "Success"
    assert wait_for_notifications(app)
    assert seen == ["Pending", "Running", "Success"]
    with pytest.raises(KeyError):
        wait_for_job(app, "no-such-job")


def test_free_port_is_bindable():
    import socket
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_serve_process_starts_kills_and_restarts(pacsbox_serve_process):
    from pacsbox.testing import ServeProcess

    serve = pacsbox_serve_process({"Name": "served", "SaveJobs": False})
    assert isinstance(serve, ServeProcess) and serve.url.startswith("http://127.0.0.1:")
    assert requests.get(serve.url + "/system", timeout=10).json()["Name"] == "served"
    first = serve.proc.pid
    serve.kill()
    assert serve.proc.returncode == -9 and not serve.running()
    with pytest.raises(requests.ConnectionError):
        requests.get(serve.url + "/system", timeout=2)
    serve.restart()
    assert serve.proc.pid != first and requests.get(serve.url + "/system", timeout=10).status_code == 200
    serve.stop()
    assert not serve.running() and serve.proc.returncode is not None


def test_serve_process_reports_a_failed_start(tmp_path):
    from pacsbox.testing import ServeProcess

    serve = ServeProcess.write(tmp_path, {"HttpPort": free_port(), "StorageDirectory": str(tmp_path / "db"),
                                          "NoSuchOption": 1, "ConcurrentJobs": "not a number"})
    with pytest.raises(RuntimeError, match="pacsbox serve"):
        serve.start(timeout=30)
    assert not serve.running()
