"""Route mounting names the plugin (issue 14 item 5): a route whose field names differ from
a registered route's at the same position, a resource factory that raises, and a route
falcon refuses all stop the start-up with ``StartupError("plugin X: route Y: ...")``
instead of falcon's ``UnacceptableRouteError`` or a bare exception."""
from __future__ import annotations

import falcon.testing
import pytest

from pacsbox import RouteSpec, StartupError, send_json
from pacsbox.routing.registry import RouteRegistry, field_clash
from pacsbox.testing import inline_plugin


class Answer:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp, **fields):
        send_json(resp, fields)


def routes(name, *paths, factory=Answer, **kw):
    return inline_plugin(name, register_routes=lambda ctx: [RouteSpec(p, factory, **kw) for p in paths])


def test_hook_register_routes_field_names_must_agree_with_the_core(pacsbox_make_app):
    """The core's ``/studies/{id}`` is registered after the plugin (trylast); the plugin is named."""
    with pytest.raises(StartupError) as e:
        pacsbox_make_app(plugins=[routes("sid_plugin", "/studies/{sid}/foo")])
    assert str(e.value) == (
        "plugin 'sid_plugin': route '/studies/{sid}/foo': field {sid} where route '/studies/{id}' of plugin "
        "'pacsbox.rest.core' has {id}; routes that agree up to a field must name it alike (falcon's router)")


def test_hook_register_routes_field_names_must_agree_between_plugins(pacsbox_make_app):
    """Between two plugins, the one whose declaration comes second in pluggy's order (the
    last registered is called first) is named first; both are named."""
    with pytest.raises(StartupError, match=r"^plugin 'first': route '/things/\{thing\}': field \{thing\} "
                                           r"where route '/things/\{name\}/parts' of plugin 'second' has \{name\}"):
        pacsbox_make_app(plugins=[routes("first", "/things/{thing}"), routes("second", "/things/{name}/parts")])


def test_hook_register_routes_agreeing_field_names_are_mounted(pacsbox_make_app):
    app = pacsbox_make_app(plugins=[routes("first", "/things/{id}"), routes("second", "/things/{id}/parts",
                                                                            "/things/all/{part}")])
    client = falcon.testing.TestClient(app)
    assert client.simulate_get("/things/7/parts").json == {"id": "7"}
    assert client.simulate_get("/things/all/x").json == {"part": "x"}
    assert client.simulate_get("/studies/00000000-00000000-00000000-00000000-00000000/foo").status_code == 404


def test_hook_register_routes_a_factory_that_raises_is_named(pacsbox_make_app):
    def factory(ctx):
        return {"a": 1}["missing"]

    with pytest.raises(StartupError) as e:
        pacsbox_make_app(plugins=[routes("broken_factory", "/broken", factory=factory)])
    assert str(e.value) == ("plugin 'broken_factory': route '/broken': the resource factory raised "
                            "KeyError: 'missing'")
    assert isinstance(e.value.__cause__, KeyError)


def test_hook_register_routes_a_route_falcon_refuses_is_named(pacsbox_make_app):
    with pytest.raises(StartupError, match=r"^plugin 'suffixed': route '/suffixed': falcon refused it: "
                                           r"SuffixedMethodNotFoundError"):
        pacsbox_make_app(plugins=[routes("suffixed", "/suffixed", suffix="nothing")])


@pytest.mark.parametrize("a, b, clash", [
    ("/studies/{id}", "/studies/{sid}/foo", ("{id}", "{sid}")),
    ("/studies/{id}/archive", "/studies/{id}/media", None),
    ("/tools/find", "/tools/{id}", None),          # a literal beside a field: two branches
    ("/a/{x}/b/{y}", "/a/{x}/b/{z}/c", ("{y}", "{z}")),
    ("/a/{x}", "/b/{y}", None),
])
def test_field_clash(a, b, clash):
    assert field_clash(a, b) == clash


def test_a_builtin_route_added_after_a_plugin_route_blames_the_plugin():
    registry = RouteRegistry(builtin={"core"})
    registry.add(RouteSpec("/patients/{pid}/x", Answer, plugin="mine"))
    with pytest.raises(StartupError, match=r"^plugin 'mine': route '/patients/\{pid\}/x': field \{pid\} where "
                                           r"route '/patients/\{id\}' of plugin 'core' has \{id\}"):
        registry.add(RouteSpec("/patients/{id}", Answer, plugin="core"))
