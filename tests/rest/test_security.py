"""``RemoteAccessAllowed``, ``AuthenticationEnabled`` and ``RegisteredUsers`` on a real
waitress server, for every route, plugin routes included (reference section 12)."""
from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter

from pacsbox import RouteSpec, hookimpl, send_json

import dicomgen as g

REALM = 'Basic realm="Orthanc Secure Area"'


class FromAddress(HTTPAdapter):
    """A requests adapter whose connections leave from a given local address."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    s = requests.Session()
    s.mount("http://", FromAddress(address))
    return s


class Hello:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        send_json(resp, {"Hello": True})


class HelloPlugin:
    """A plugin route, to check that security applies to it too."""

    @hookimpl
    def register_routes(self, ctx):
        return [RouteSpec("/hello", Hello)]


ROUTES = ["/system", "/patients", "/statistics", "/tools/now", "/hello", "/nonexistent",
          "/instances/abc/tags", "/changes"]


def assert_refused(r):
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == REALM
    assert r.content == b""


def test_authentication(live_server):
    server = live_server({"AuthenticationEnabled": True, "RegisteredUsers": {"alice": "secret"}},
                         plugins=[HelloPlugin()])
    for route in ROUTES:
        assert_refused(requests.get(server.url + route, timeout=30))
        assert_refused(requests.get(server.url + route, auth=("alice", "wrong"), timeout=30))
        assert_refused(requests.get(server.url + route, auth=("bob", "secret"), timeout=30))
        assert_refused(requests.get(server.url + route, headers={"Authorization": "Bearer secret"}, timeout=30))
    assert_refused(requests.post(server.url + "/instances", data=g.instance(), timeout=30))
    assert requests.get(server.url + "/statistics", auth=("alice", "secret"), timeout=30).json()["CountInstances"] == 0
    ok = requests.get(server.url + "/hello", auth=("alice", "secret"), timeout=30)
    assert ok.status_code == 200 and ok.json() == {"Hello": True}
    up = requests.post(server.url + "/instances", data=g.instance(), auth=("alice", "secret"), timeout=30).json()
    assert up["Status"] == "Success"
    meta = requests.get(server.url + f"/instances/{up['ID']}/metadata/HttpUsername", auth=("alice", "secret"),
                        timeout=30)
    assert meta.text == "alice"
    assert requests.get(server.url + "/system", auth=("alice", "secret"), timeout=30).json()["IsHttpServerSecure"]


def test_remote_access_refused_even_with_credentials(live_server):
    server = live_server({"RemoteAccessAllowed": False, "AuthenticationEnabled": True,
                          "RegisteredUsers": {"alice": "secret"}}, plugins=[HelloPlugin()])
    remote = session_from("127.0.0.2")
    for route in ROUTES:
        assert_refused(remote.get(server.url + route, auth=("alice", "secret"), timeout=30))
    assert_refused(remote.post(server.url + "/instances", data=g.instance(), auth=("alice", "secret"), timeout=30))
    assert requests.get(server.url + "/hello", auth=("alice", "secret"), timeout=30).status_code == 200


def test_remote_access_refused_without_authentication(live_server):
    server = live_server({"RemoteAccessAllowed": False}, plugins=[HelloPlugin()])
    remote = session_from("127.0.0.2")
    for route in ROUTES:
        assert_refused(remote.get(server.url + route, timeout=30))
    assert requests.get(server.url + "/hello", timeout=30).status_code == 200
    assert requests.get(server.url + "/system", timeout=30).json()["IsHttpServerSecure"] is True


def test_remote_access_allowed_with_authentication(live_server):
    server = live_server({"RemoteAccessAllowed": True, "AuthenticationEnabled": True,
                          "RegisteredUsers": {"alice": "secret"}})
    remote = session_from("127.0.0.2")
    assert_refused(remote.get(server.url + "/system", timeout=30))
    r = remote.get(server.url + "/system", auth=("alice", "secret"), timeout=30)
    assert r.status_code == 200 and r.json()["IsHttpServerSecure"] is True


def test_remote_access_without_authentication_is_insecure(live_server):
    server = live_server({"RemoteAccessAllowed": True, "AuthenticationEnabled": False})
    r = session_from("127.0.0.2").get(server.url + "/system", timeout=30)
    assert r.status_code == 200 and r.json()["IsHttpServerSecure"] is False


def test_remote_access_creates_the_default_user(live_server):
    # AuthenticationEnabled unset: switched on by RemoteAccessAllowed, default user orthanc/orthanc
    server = live_server({"RemoteAccessAllowed": True})
    assert_refused(requests.get(server.url + "/system", timeout=30))
    r = requests.get(server.url + "/system", auth=("orthanc", "orthanc"), timeout=30)
    assert r.status_code == 200 and r.json()["IsHttpServerSecure"] is False
