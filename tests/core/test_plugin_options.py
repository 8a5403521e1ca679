"""Plugins declare their options (issue 14 item 7): the ``register_options`` hook returns
``OptionSpec(name, type, default, doc)``; the core checks the user's values against the
declarations before ``configure`` (``ConfigError`` naming the option, the value, what is
expected and the plugin), fills in the defaults, refuses conflicting declarations naming
both declarers, and lists the declarations (``pacsbox plugins``, the OpenAPI document)."""
from __future__ import annotations

import falcon.testing
import pytest

from pacsbox import ConfigError, OptionSpec, StartupError, hookimpl
from pacsbox.options import check_option, expected
from pacsbox.testing import inline_plugin


def declaring(name, *specs, configure=None):
    hooks = {"register_options": lambda: list(specs)}
    if configure is not None:
        hooks["configure"] = configure
    return inline_plugin(name, **hooks)


def test_hook_register_options(pacsbox_make_app):
    seen = {}

    def configure(config):  # runs after the check, with the defaults filled in
        seen.update(timeout=config["MineTimeout"], mode=config["MineMode"], enabled=config["MineEnabled"])

    plugin = declaring("mine", OptionSpec("MineTimeout", "number>=0", 2.5, "Seconds to wait"),
                       OptionSpec("MineMode", "str", "fast", "fast or slow"),
                       OptionSpec("MineEnabled", "bool", False, "Switch"), configure=configure)
    app = pacsbox_make_app({"MineMode": "slow", "MineEnabled": "true"}, plugins=[plugin])
    assert seen == {"timeout": 2.5, "mode": "slow", "enabled": True}   # "true" became True
    assert [s.describe() for s in app.ctx.config.option_specs()] == [
        {"Name": "MineTimeout", "Type": "number>=0", "Default": 2.5, "Doc": "Seconds to wait", "Plugin": "mine"},
        {"Name": "MineMode", "Type": "str", "Default": "fast", "Doc": "fast or slow", "Plugin": "mine"},
        {"Name": "MineEnabled", "Type": "bool", "Default": False, "Doc": "Switch", "Plugin": "mine"},
    ]
    doc = falcon.testing.TestClient(app).simulate_get("/tools/openapi.json").json
    assert doc["x-pacsbox-options"][1] == {"Name": "MineMode", "Type": "str", "Default": "fast",
                                           "Doc": "fast or slow", "Plugin": "mine"}


@pytest.mark.parametrize("spec, value, message", [
    (OptionSpec("MineCount", "int>0", 1), 0, "option MineCount: 0 is not an integer > 0 (plugin 'mine')"),
    (OptionSpec("MineCount", "int[2..5]", 2), 6, "option MineCount: 6 is not an integer in 2-5 (plugin 'mine')"),
    (OptionSpec("MineDelay", "number>=0", 1), "soon", 'option MineDelay: "soon" is not a number >= 0 '
                                                        "(plugin 'mine')"),
    (OptionSpec("MineFiles", "str|list[str]", []), [1], "option MineFiles: [1] is not a string or a JSON array "
                                                         "of strings (plugin 'mine')"),
    (OptionSpec("MineSection", "dict?", None), [], "option MineSection: [] is not a JSON object or null "
                                                    "(plugin 'mine')"),
])
def test_a_malformed_declared_option_stops_the_start(pacsbox_make_app, tmp_path, spec, value, message):
    configured = []
    with pytest.raises(ConfigError) as e:
        pacsbox_make_app({spec.name: value},
                         plugins=[declaring("mine", spec, configure=lambda config: configured.append(config))])
    assert str(e.value) == message
    assert configured == []                       # configure never saw the bad value


def test_a_check_adds_what_a_kind_cannot_say(pacsbox_make_app):
    def check(value):
        if value not in ("fast", "slow"):
            raise ConfigError(f"option MineMode: {value!r} is not fast or slow")

    plugin = declaring("mine", OptionSpec("MineMode", "str", "fast", "Speed", check=check))
    with pytest.raises(ConfigError, match=r"^option MineMode: 'quick' is not fast or slow \(plugin 'mine'\)$"):
        pacsbox_make_app({"MineMode": "quick"}, plugins=[plugin])
    assert pacsbox_make_app({"MineMode": "slow"}, plugins=[plugin]).ctx.config["MineMode"] == "slow"


def test_the_same_option_declared_alike_is_accepted(pacsbox_make_app):
    a = declaring("a", OptionSpec("SharedTimeout", "int>=0", 5, "from a"))
    b = declaring("b", OptionSpec("SharedTimeout", "int>=0", 5, "from b"),
                  OptionSpec("HttpPort", "port", 8042, "the core's, read by b too"))
    app = pacsbox_make_app({"SharedTimeout": 7}, plugins=[a, b])
    assert app.ctx.config["SharedTimeout"] == 7
    assert sorted((s.plugin, s.name) for s in app.ctx.config.option_specs()) == [
        ("a", "SharedTimeout"), ("b", "HttpPort"), ("b", "SharedTimeout")]


def test_conflicting_declarations_name_both(pacsbox_make_app):
    a = declaring("a", OptionSpec("SharedTimeout", "int>=0", 5))
    b = declaring("b", OptionSpec("SharedTimeout", "number>=0", 5))
    with pytest.raises(StartupError) as e:
        pacsbox_make_app(plugins=[a, b])
    assert str(e.value) == ("option 'SharedTimeout' is declared by plugin 'b' as number>=0 (default 5) and by "
                            "plugin 'a' as int>=0 (default 5)")
    c = declaring("c", OptionSpec("HttpPort", "int>=0", 8042))
    with pytest.raises(StartupError, match=r"^option 'HttpPort' is declared by the core as port \(default 8042\) "
                                           r"and by plugin 'c' as int>=0"):
        pacsbox_make_app(plugins=[c])


def test_a_hook_returning_something_else_is_named(pacsbox_make_app):
    with pytest.raises(StartupError, match=r"^plugin 'odd': hook register_options returned 'MineTimeout', "
                                           r"expected a OptionSpec$"):
        pacsbox_make_app(plugins=[inline_plugin("odd", register_options=lambda: ["MineTimeout"])])


def test_an_unknown_kind_is_refused_at_declaration():
    with pytest.raises(ValueError, match="unknown option kind 'integer'"):
        OptionSpec("MineCount", "integer", 1)


def test_declared_options_are_not_reported_unknown(pacsbox_make_app, caplog):
    class Plugin:
        @hookimpl
        def register_options(self, ctx):
            assert ctx.config["Name"] == "pacsbox" and ctx.pm is not None   # the early context
            return [OptionSpec("MineTimeout", "int>=0", 1, "seconds")]

    pacsbox_make_app({"MineTimeout": 3, "MineTimout": 4}, plugins=[Plugin()])
    warnings = [r.getMessage() for r in caplog.records if r.name == "pacsbox.app"]
    assert warnings == ["unknown option 'MineTimout': no loaded plugin declares it (it is kept); "
                        "did you mean 'MineTimeout'?"]


@pytest.mark.parametrize("kind, text", [("int[1..64]", "an integer in 1-64"), ("bool?", "true, false or null"),
                                        ("str?", "a string or null"), ("any", "anything")])
def test_expected_words(kind, text):
    assert expected(kind) == text


def test_strings_of_digits_are_accepted_for_numbers():
    check_option("X", "12", "int[1..64]")
    check_option("X", 0.5, "number>=0")
    with pytest.raises(ConfigError, match=r'^option X: "-1" is not a number >= 0$'):
        check_option("X", "-1", "number>=0")
