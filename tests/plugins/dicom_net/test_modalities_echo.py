"""C-ECHO SCU details: CheckFind against an SCP that answers C-FIND (the node itself),
DicomEchoChecksFind as the default, and Timeout against a mute peer."""
from __future__ import annotations

import socket
import time

import requests

from pacsbox.testing import free_port


def test_check_find_against_a_find_scp(node, storage_scp):
    scp = storage_scp("NOFIND")
    port = free_port()
    n = node({"DicomPort": port, "DicomAlwaysAllowFind": True,
              "DicomModalities": {"self": ["PACSBOX", "127.0.0.1", port], "nofind": ["NOFIND", "127.0.0.1", scp.port]}})
    assert requests.post(n.url + "/modalities/self/echo", json={"CheckFind": True}).status_code == 200
    r = requests.post(n.url + "/modalities/nofind/echo", json={"CheckFind": True})
    assert r.status_code == 500 and r.json()["OrthancStatus"] == 2016 and r.json()["Details"] == "Remote AET is NOFIND"
    assert requests.post(n.url + "/modalities/nofind/echo", json={"CheckFind": False}).status_code == 200


def test_echo_checks_find_by_default_with_the_option(node, storage_scp):
    scp = storage_scp("NOFIND")
    n = node({"DicomEchoChecksFind": True, "DicomModalities": {"nofind": ["NOFIND", "127.0.0.1", scp.port]}})
    assert requests.post(n.url + "/modalities/nofind/echo").status_code == 500
    assert requests.post(n.url + "/modalities/nofind/echo", json={"CheckFind": False}).status_code == 200


def test_echo_timeout_against_a_mute_peer(node):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(5)
    try:
        n = node({"DicomModalities": {"mute": ["MUTE", "127.0.0.1", lsock.getsockname()[1]]},
                  "DicomScuTimeout": 60})
        t0 = time.monotonic()
        r = requests.post(n.url + "/modalities/mute/echo", json={"Timeout": 1})
        assert r.status_code == 500 and r.json()["OrthancStatus"] == 9
        # the call's Timeout (1 s), not DicomScuTimeout (60 s): no bound on the machine's speed
        assert time.monotonic() - t0 < 30
    finally:
        lsock.close()
