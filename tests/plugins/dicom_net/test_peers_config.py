"""``OrthancPeers`` and the HTTP client options: both forms, start-up checks naming the
option, the public configuration, ``http_session`` and ``peer_timeout``."""
from __future__ import annotations

import json

import pytest

import pacsbox_dicom_net.plugin as dicom_net_plugin
from pacsbox import Config, ConfigError
from pacsbox_dicom_net.peers import Peer, check_config, http_session, parse_peer, peer_registry, peer_timeout


def test_both_forms():
    assert parse_peer("a", ["http://h:1"]) == Peer("http://h:1/")
    assert parse_peer("a", ["https://h/", "u", "p"]) == Peer("https://h/", "u", "p")
    p = parse_peer("a", {"URL": "http://h", "Username": "u", "Password": "p", "HttpHeaders": {"B": "2", "A": "1"},
                         "Timeout": 7, "Site": "x", "Rank": 3})
    assert (p.url, p.username, p.password, dict(p.http_headers), p.timeout) == ("http://h/", "u", "p",
                                                                                 {"B": "2", "A": "1"}, 7)
    # secrets hidden; numbers of user properties shown as strings (as Orthanc 1.10.1)
    assert p.public_json() == {"HttpHeaders": ["A", "B"], "Password": None, "Pkcs11": False, "Rank": "3",
                               "Site": "x", "Timeout": 7, "Url": "http://h/", "Username": "u"}
    assert Peer("http://h/").public_json() == {"HttpHeaders": [], "Pkcs11": False, "Timeout": 0, "Url": "http://h/"}
    assert parse_peer("a", p.full_json()) == p


@pytest.mark.parametrize("peers, words", [
    ({"x": ["ftp://h/"]}, "bad URL"),
    ({"x": ["http://h/", "user"]}, "array form"),
    ({"x": {"Url": "http://h/", "Password": "p"}}, "Password given without Username"),
    ({"x": {"Username": "u"}}, "needs the field Url"),
    ({"x": {"Url": "http://h/", "Timeout": -1}}, "Timeout"),
    ({"x": {"Url": "http://h/", "HttpHeaders": {"a": 1}}}, "HttpHeaders"),
    ({"x": {"Url": "http://h/", "CertificateFile": "/nonexistent.pem"}}, "CertificateFile"),
    ({"x": {"Url": "https://h/", "Pkcs11": True}}, "Pkcs11"),
    ({"x": 3}, "array or an object"),
    ([], "must be an object"),
])
def test_malformed_peers_stop_the_start(peers, words):
    with pytest.raises(ConfigError, match="OrthancPeers") as e:
        check_config(Config({"OrthancPeers": peers}))
    assert words in str(e.value)


@pytest.mark.parametrize("option, value, expected", [
    ("HttpTimeout", -1, "an integer >= 0"),   # a core option: checked by the core, no plugin named
    ("HttpsVerifyPeers", "yes", "true or false (plugin 'pacsbox_dicom_net.plugin')"),
    ("HttpProxy", 3, "a string (plugin 'pacsbox_dicom_net.plugin')"),
    ("HttpsCACertificates", 1, "a string (plugin 'pacsbox_dicom_net.plugin')"),
    ("OrthancPeersInDatabase", 1, "true or false (plugin 'pacsbox_dicom_net.plugin')"),
    ("OrthancPeerStoreConcurrency", 0, "an integer in 1-64 (plugin 'pacsbox_dicom_net.plugin')"),
    ("OrthancPeerStoreRetries", -1, "an integer in 0-20 (plugin 'pacsbox_dicom_net.plugin')"),
])
def test_malformed_http_options(make_app, option, value, expected):
    """Declared with register_options, checked by the core before any service starts."""
    with pytest.raises(ConfigError) as e:
        make_app({option: value, "DicomServerEnabled": False}, plugins=[dicom_net_plugin])
    assert str(e.value) == f"option {option}: {json.dumps(value)} is not {expected}"


def test_app_refuses_to_start_with_a_bad_peer(make_app):
    from pacsbox import StartupError
    with pytest.raises(StartupError, match="ConfigError: option OrthancPeers: peer 'x': bad URL"):
        make_app({"OrthancPeers": {"x": ["nope"]}, "DicomServerEnabled": False}, plugins=[dicom_net_plugin])


def test_http_session_and_timeout(make_app, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-")
    app = make_app({"DicomServerEnabled": False, "HttpProxy": "127.0.0.1:3128", "HttpsCACertificates": str(ca),
                    "HttpTimeout": 12, "OrthancPeerStoreConcurrency": 5,
                    "OrthancPeers": {"p": {"Url": "http://127.0.0.1:9/", "Username": "u", "Password": "pw",
                                           "HttpHeaders": {"X-A": "1"}},
                                     "q": {"Url": "http://127.0.0.1:9/", "Timeout": 3}}},
                   plugins=[dicom_net_plugin])
    ctx = app.ctx
    reg = peer_registry(ctx)
    assert reg is peer_registry(ctx) and reg.names() == ["p", "q"]
    p = reg.get("p")
    s = http_session(ctx, p)
    assert s.auth == ("u", "pw") and s.headers["X-A"] == "1"
    assert s.proxies == {"http": "http://127.0.0.1:3128", "https": "http://127.0.0.1:3128"}
    assert s.verify == str(ca) and s.trust_env is False
    assert s.get_adapter("http://127.0.0.1:9/")._pool_maxsize == 5
    s.close()
    assert peer_timeout(ctx, p) == 12.0 and peer_timeout(ctx, reg.get("q")) == 3.0
    app2 = make_app({"DicomServerEnabled": False, "HttpsVerifyPeers": False, "HttpTimeout": 0}, plugins=[dicom_net_plugin])
    s2 = http_session(app2.ctx, p)
    assert s2.verify is False and s2.proxies == {}
    assert peer_timeout(app2.ctx, p) is None
    s2.close()


def test_http_proxy_is_used(node):
    """``HttpProxy``: requests go to the proxy (here a TCP forwarder to the receiver, which
    serves the absolute-form request), not to the peer's own address (nothing listens on
    port 9)."""
    import requests

    from latency_proxy import LatencyProxy
    from peers_helpers import make_study, upload

    receiver = node({"DicomServerEnabled": False})
    with LatencyProxy("127.0.0.1", int(receiver.url.rsplit(":", 1)[1]), delay_ms=0) as proxy:
        sender = node({"DicomServerEnabled": False, "HttpProxy": f"127.0.0.1:{proxy.port}",
                       "OrthancPeers": {"p": ["http://127.0.0.1:9/"]}})
        assert requests.get(sender.url + "/peers/p/system").json()["Name"] == receiver.app.ctx.config["Name"]
        files = make_study(2, "PROXY")
        ids = [a["ID"] for a in upload(sender.url, files)]
        r = requests.post(sender.url + "/peers/p/store", json=ids)
        assert r.status_code == 200, r.text
        assert proxy.connections >= 1
    assert [requests.get(f"{receiver.url}/instances/{i}/file").content for i in ids] == files
