"""One dispatcher for hook calls (issue 14 item 4): ``pm.call`` applies the calling
convention attached to each spec, the notifier refuses hooks that are not notifications,
and ``wrapper`` implementations are refused wherever the convention calls the
implementations one by one (plugin-owned hooks included)."""
from __future__ import annotations

import types

import falcon.testing
import pytest

from pacsbox import StartupError, hookimpl, hookspec
from pacsbox.testing import inline_plugin, wait_for_notifications


def own_specs(**marks):
    """A module of plugin-owned specs ``mine_<name>(ctx)`` marked with ``marks[name]``."""
    mod = types.ModuleType("own_specs")
    for name, options in marks.items():
        def spec(ctx: object) -> None:
            """A plugin-owned hook."""
        spec.__name__ = f"mine_{name}"
        setattr(mod, spec.__name__, hookspec(**options)(spec))
    return mod


def test_the_notifier_refuses_a_hook_that_is_not_a_notification(pacsbox_make_app):
    app = pacsbox_make_app()
    for name, conv in (("filter_received_instance", "veto filter"), ("register_routes", "collect-all"),
                       ("get_storage_area", "firstresult")):
        with pytest.raises(TypeError, match=f"^hook {name} is a {conv} hook, not a notification"):
            app.ctx.notifier.emit(name, dataset=None, origin={})
        with pytest.raises(TypeError, match=f"^hook {name} is a {conv} hook"):
            app.ctx.notifier.has_listeners(name)
    assert app.ctx.notifier.has_listeners("change_recorded") is False


def test_a_call_under_the_wrong_convention_is_refused(pacsbox_make_app):
    app = pacsbox_make_app()
    pm = app.ctx.pm
    with pytest.raises(TypeError, match="^hook instance_stored is a notification hook, not a veto filter hook$"):
        pm.call_veto("instance_stored", {"ctx": app.ctx, "instance_id": "x", "dataset": None})
    with pytest.raises(TypeError, match="^hook startup is a collect-all hook, not a isolated hook$"):
        pm.call_isolated("startup", {"ctx": app.ctx})
    assert pm.convention("filter_incoming_http_request") == "veto filter"
    assert pm.call("filter_incoming_http_request", {"method": "GET", "uri": "/", "ip": "127.0.0.1",
                                                    "username": None, "headers": {}}) is True


def test_the_dispatcher_applies_each_convention(pacsbox_make_app, caplog):
    calls = []

    def refuse(method):
        calls.append(("filter", method))
        return method != "DELETE"

    def broken_filter(method):
        raise RuntimeError("broken")

    spy = inline_plugin("spy", filter_incoming_http_request=refuse,
                        instance_stored=lambda instance_id: calls.append(("stored", instance_id)))
    app = pacsbox_make_app(plugins=[spy])
    pm = app.ctx.pm
    kw = {"uri": "/", "ip": "127.0.0.1", "username": None, "headers": {}}
    assert pm.call("filter_incoming_http_request", {"method": "GET", **kw}) is True
    assert pm.call("filter_incoming_http_request", {"method": "DELETE", **kw}) is False
    pm.register(inline_plugin("broken", filter_incoming_http_request=broken_filter), name="broken")
    failed: list[str] = []
    assert pm.call("filter_incoming_http_request", {"method": "GET", **kw}, failed=failed) is False
    assert failed == ["broken"]
    assert "plugin 'broken' failed in hook filter_incoming_http_request; refusing" in caplog.text
    # a notification called by the dispatcher (the notifier's thread does this) is isolated
    assert pm.call("instance_stored", {"ctx": app.ctx, "instance_id": "abc", "dataset": None}) == 0
    assert calls[-1] == ("stored", "abc")


def test_a_filter_that_raises_refuses_the_request_with_403(pacsbox_make_app, caplog):
    """The dispatcher logs and fails closed; the middleware has nothing to catch."""
    def boom(uri):
        raise RuntimeError("filter is broken")

    app = pacsbox_make_app(plugins=[inline_plugin("boom", filter_incoming_http_request=boom)])
    r = falcon.testing.TestClient(app).simulate_get("/system")
    assert (r.status_code, r.content) == (403, b"")
    assert "plugin 'boom' failed in hook filter_incoming_http_request; refusing" in caplog.text


def test_plugin_owned_hooks_use_the_convention_of_their_spec(pacsbox_make_app):
    specs = own_specs(veto={"convention": "veto filter"}, plain={}, first={"firstresult": True})

    class Owner:
        @hookimpl
        def add_hookspecs(self, plugin_manager):
            plugin_manager.add_hookspecs(specs)

    class User:
        @hookimpl(optionalhook=True)
        def mine_veto(self, ctx):
            return False

        @hookimpl(optionalhook=True)
        def mine_plain(self, ctx):
            return False

        @hookimpl(optionalhook=True)
        def mine_first(self, ctx):
            return "first"

    app = pacsbox_make_app(plugins=[Owner(), User()])
    pm = app.ctx.pm
    assert (pm.convention("mine_veto"), pm.convention("mine_plain"), pm.convention("mine_first")) == \
        ("veto filter", None, "firstresult")
    assert pm.call("mine_veto", {"ctx": app.ctx}) is False
    assert pm.call("mine_first", {"ctx": app.ctx}) == "first"
    with pytest.raises(TypeError, match="^hook mine_plain declares no calling convention"):
        pm.call("mine_plain", {"ctx": app.ctx})
    assert pm.call_veto("mine_plain", {"ctx": app.ctx}) is False   # the caller names the convention


def test_wrappers_are_refused_on_plugin_owned_per_implementation_hooks(pacsbox_make_app):
    specs = own_specs(notice={"convention": "notification"})

    class Owner:
        @hookimpl
        def add_hookspecs(self, plugin_manager):
            plugin_manager.add_hookspecs(specs)

    class Wrapper:
        plugin_name = "wrapping"

        @hookimpl(wrapper=True, optionalhook=True)
        def mine_notice(self, ctx):
            return (yield)

    with pytest.raises(StartupError, match="^plugin 'wrapping': hook mine_notice does not accept wrapper"):
        pacsbox_make_app(plugins=[Owner(), Wrapper()])


def test_notifications_still_reach_their_plugins(pacsbox_make_app):
    seen = []
    app = pacsbox_make_app(plugins=[inline_plugin("spy", change_recorded=lambda change: seen.append(change))])
    app.ctx.notifier.emit("change_recorded", ctx=app.ctx, change={"Seq": 1})
    assert wait_for_notifications(app)
    assert seen == [{"Seq": 1}]
