"""pacsbox-lua as its own distribution: entry point, dependencies, listing; the core's
execute-script answer without it, as the reference with Lua off."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import falcon.testing
import pytest
import requests

import pacsbox_lua.plugin as lua_plugin
from pacsbox import RouteSpec, StartupError
from pacsbox.routing.registry import RouteRegistry
from pacsbox.testing import free_port


def test_distribution_entry_point_and_dependencies():
    dist = metadata.distribution("pacsbox-lua")
    eps = [ep for ep in dist.entry_points if ep.group == "pacsbox.plugins"]
    assert [(ep.name, ep.value) for ep in eps] == [("lua", "pacsbox_lua.plugin")]
    requires = " ".join(dist.requires or [])
    assert "pacsbox" in requires and "lupa" in requires


def test_pacsbox_plugins_lists_it():
    out = subprocess.run([sys.executable, "-m", "pacsbox.cli", "plugins", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plugins = {p["ID"]: p for p in json.loads(out.stdout)}
    assert plugins["lua"]["Distribution"] == "pacsbox-lua"


def test_without_the_plugin_execute_script_answers_as_the_reference_with_lua_off(make_app, reference):
    client = falcon.testing.TestClient(make_app())
    ours = client.simulate_post("/tools/execute-script", body="print(1)")
    ref = requests.post(reference + "/tools/execute-script", data="print(1)")
    assert (ours.status_code, ours.content) == (ref.status_code, ref.content) == (403, b"")


def test_the_plugin_replaces_the_core_answer(make_app):
    app = make_app({"ExecuteLuaEnabled": True}, plugins=[lua_plugin])
    r = falcon.testing.TestClient(app).simulate_post("/tools/execute-script", body="print(1)")
    assert (r.status_code, r.text) == (200, "1\n")
    owners = [k for k, v in app.ctx.routes.by_plugin().items() if "/tools/execute-script" in v]
    assert len(owners) == 1 and not owners[0].startswith("pacsbox.")  # the core's fallback gave way


def test_entry_point_app_has_lua(make_app):
    app = make_app({"ExecuteLuaEnabled": True, "DicomServerEnabled": False, "DicomPort": free_port()},
                   load_entrypoints=True)
    assert "/tools/execute-script" in app.ctx.routes.by_plugin()["lua"]


def test_fallback_routes_give_way_in_either_order():
    for order in ((True, False), (False, True)):
        reg = RouteRegistry()
        for fallback in order:
            reg.add(RouteSpec("/x/{id}", object, plugin="core" if fallback else "p", fallback=fallback))
        assert [(s.path, s.plugin) for s in reg.routes] == [("/x/{id}", "p")]
    reg = RouteRegistry()
    reg.add(RouteSpec("/x", object, plugin="a"))
    with pytest.raises(StartupError):
        reg.add(RouteSpec("/x", object, plugin="b"))
