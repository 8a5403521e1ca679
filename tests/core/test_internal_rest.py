"""pacsbox.call_rest_api: in-process internal calls of the REST API (used by the Lua plugin)."""
from __future__ import annotations

from pydicom.data import get_testdata_file

from pacsbox import RestAnswer, RouteSpec, call_rest_api, send_json
from pacsbox.testing import inline_plugin


class _Hello:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        send_json(resp, {"Hello": 1})


def test_internal_call_skips_auth_and_filters_and_stores_with_the_callers_origin(make_app):
    seen = []

    def filt(method, uri, ip, username, headers):
        seen.append(uri)
        return False

    plugin = inline_plugin("hello", register_routes=lambda ctx: [RouteSpec("/hello", _Hello)],
                           filter_incoming_http_request=filt)
    app = make_app({"AuthenticationEnabled": True, "RegisteredUsers": {"u": "p"}}, plugins=[plugin])
    a = call_rest_api(app, "GET", "/system")
    assert isinstance(a, RestAnswer) and a.status == 200 and a.json()["Version"]
    with open(get_testdata_file("CT_small.dcm"), "rb") as f:
        up = call_rest_api(app, "POST", "/instances", f.read(), origin="Lua")
    assert up.status == 200, up.body
    iid = up.json()["ID"]
    assert call_rest_api(app, "GET", f"/instances/{iid}/metadata/Origin").body == b"Lua"
    assert call_rest_api(app, "GET", "/hello").json() == {"Hello": 1}
    assert call_rest_api(app, "GET", "/hello", builtin=True).status == 404
    assert call_rest_api(app, "GET", "/instances?expand=false", builtin=True).json() == [iid]
    assert call_rest_api(app, "DELETE", f"/instances/{iid}").status == 200
    assert call_rest_api(app, "GET", f"/instances/{iid}").status == 404
    assert seen == []  # internal calls are not filtered
