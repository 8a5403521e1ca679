"""Essential built-ins cannot be blocked (issue 14 item 6): blocking ``pacsbox.rest.core``
used to start a server whose ``/system`` answered 404. The blocklist (option or environment
variable) now refuses the essential plugins with a message naming the plugin and where it
was named; the other built-ins stay blockable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import falcon.testing
import pytest

from pacsbox import StartupError
from pacsbox.plugins import BLOCKLIST_ENV, DEFAULT_PLUGINS, ESSENTIAL_PLUGINS
from pacsbox.testing import free_port

PACSBOX = str(Path(sys.executable).parent / "pacsbox")


def test_the_essential_plugins_are_built_ins():
    assert ESSENTIAL_PLUGINS == {"pacsbox.storage.filesystem", "pacsbox.rest.core", "pacsbox.rest.jobs"}
    assert ESSENTIAL_PLUGINS <= set(DEFAULT_PLUGINS)


@pytest.mark.parametrize("name", sorted(ESSENTIAL_PLUGINS))
def test_blocking_an_essential_plugin_is_refused(pacsbox_make_app, name):
    with pytest.raises(StartupError) as e:
        pacsbox_make_app({"PluginsBlocklist": ["pdf", name]})
    assert str(e.value) == (f"plugin {name!r} is essential and cannot be blocked (named by the option "
                            f"PluginsBlocklist); the essential plugins are pacsbox.rest.core, pacsbox.rest.jobs, "
                            f"pacsbox.storage.filesystem")


def test_the_environment_variable_is_refused_too(pacsbox_make_app, monkeypatch):
    monkeypatch.setenv(BLOCKLIST_ENV, "archive, pacsbox.rest.core")
    with pytest.raises(StartupError, match=rf"^plugin 'pacsbox.rest.core' is essential and cannot be blocked "
                                           rf"\(named by the environment variable {BLOCKLIST_ENV}\)"):
        pacsbox_make_app()


def test_other_builtins_stay_blockable(pacsbox_make_app):
    app = pacsbox_make_app({"PluginsBlocklist": ["pacsbox.rest.plugins", "pacsbox.builtin.modify"]})
    client = falcon.testing.TestClient(app)
    assert client.simulate_get("/system").json["Name"] == "pacsbox"
    assert client.simulate_get("/plugins").status_code == 404
    assert app.ctx.pm.get_plugin("pacsbox.builtin.modify") is None


def test_serve_refuses_to_block_the_core_routes(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"StorageDirectory": str(tmp_path / "d"), "HttpPort": free_port(),
                               "DicomServerEnabled": False, "PluginsBlocklist": ["pacsbox.rest.core"]}))
    env = {k: v for k, v in os.environ.items() if k != BLOCKLIST_ENV}
    r = subprocess.run([PACSBOX, "serve", "--config", str(cfg)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr == ("pacsbox: cannot start: plugin 'pacsbox.rest.core' is essential and cannot be blocked "
                        "(named by the option PluginsBlocklist); the essential plugins are pacsbox.rest.core, "
                        "pacsbox.rest.jobs, pacsbox.storage.filesystem\n")
    assert not (tmp_path / "d").exists()
