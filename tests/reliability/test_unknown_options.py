"""Issue 13 case 9: an unknown option is kept (plugins read theirs), but when no loaded
plugin declares it, the start-up logs one warning with the closest known name."""
from __future__ import annotations

import logging

from pacsbox import create_app, hookimpl


class Declaring:
    """A plugin that declares its option in ``configure``."""

    plugin_name = "declaring"

    @hookimpl
    def configure(self, config):
        config.declare_options(["MyPluginTimeout"])


def test_unknown_option_warns_with_the_closest_name(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pacsbox.app")
    app = create_app({"StorageDirectory": str(tmp_path / "d"), "HttpPortt": 8043, "MyPluginTimeout": 3,
                      "MyPluginTimout": 4, "Zzzqqq": 1, "StableAge": 60, "UserMetadata": {}},
                     plugins=[Declaring()], load_entrypoints=False)
    try:
        warnings = [r.getMessage() for r in caplog.records if r.name == "pacsbox.app"]
        assert warnings == [
            "unknown option 'HttpPortt': no loaded plugin declares it (it is kept); did you mean 'HttpPort'?",
            "unknown option 'MyPluginTimout': no loaded plugin declares it (it is kept); "
            "did you mean 'MyPluginTimeout'?",
            "unknown option 'Zzzqqq': no loaded plugin declares it (it is kept)",
        ]
        # kept and readable by plugins
        assert app.ctx.config.plugin_config("HttpPortt") == 8043
        assert app.ctx.config.int("HttpPort") == 8042
    finally:
        app.close()
