"""Transfers accelerator: wire format checked against the plugin's source, options,
``/transfers/peers``, the lookup and chunk routes, and ``/transfers/send`` in pull mode
(``RemoteSelf``).

No build of the plugin exists here (Debian ships none), so interoperation with a real
Orthanc cannot be run. Instead, the names below were copied from the plugin's source
(``orthanc-mirrors/orthanc-transfers``, ``Framework/TransferToolbox.h``,
``Framework/DicomInstanceInfo.cpp``, ``Plugin/Plugin.cpp``) and the tests assert that
pacsbox uses exactly them; when a checkout of that source is available (``fetch``ed
mirror, or ``ORTHANC_TRANSFERS_SRC`` naming a git directory), the constants are also
re-read from it.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import zlib

import pytest
import requests
from transfers_helpers import link, link_url, load, make_study, md5s, wait_job

from pacsbox import ConfigError, StartupError
from pacsbox_dicom_net import transfers, transfers_protocol as proto
from pacsbox_dicom_net.transfers_jobs import PullTransferJob, PushTransferJob

#: ``Framework/TransferToolbox.h`` of orthanc-transfers (1.7), as read on 2026-12-07.
PLUGIN_CONSTANTS = {
    "JOB_TYPE_PULL": "PullTransfer", "JOB_TYPE_PUSH": "PushTransfer", "PLUGIN_NAME": "transfers",
    "KEY_BUCKETS": "Buckets", "KEY_COMPRESSION": "Compression", "KEY_ID": "ID", "KEY_INSTANCES": "Instances",
    "KEY_LEVEL": "Level", "KEY_OFFSET": "Offset", "KEY_ORIGINATOR_UUID": "Originator", "KEY_PATH": "Path",
    "KEY_PEER": "Peer", "KEY_PLUGIN_CONFIGURATION": "Transfers", "KEY_PRIORITY": "Priority",
    "KEY_REMOTE_JOB": "RemoteJob", "KEY_REMOTE_SELF": "RemoteSelf", "KEY_RESOURCES": "Resources",
    "KEY_SIZE": "Size", "KEY_URL": "URL", "KEY_SENDER_TRANSFER_ID": "SenderTransferID",
    "URI_CHUNKS": "/transfers/chunks", "URI_JOBS": "/jobs", "URI_LOOKUP": "/transfers/lookup",
    "URI_PEERS": "/transfers/peers", "URI_PLUGINS": "/plugins", "URI_PULL": "/transfers/pull",
    "URI_PUSH": "/transfers/push", "URI_SEND": "/transfers/send",
    "HEADER_KEY_SENDER_TRANSFER_ID": "sender-transfer-id",
}
#: pacsbox's name of each constant.
OURS = {
    "JOB_TYPE_PULL": proto.JOB_TYPE_PULL, "JOB_TYPE_PUSH": proto.JOB_TYPE_PUSH, "PLUGIN_NAME": proto.PLUGIN_NAME,
    "KEY_BUCKETS": proto.KEY_BUCKETS, "KEY_COMPRESSION": proto.KEY_COMPRESSION, "KEY_ID": proto.KEY_ID,
    "KEY_INSTANCES": proto.KEY_INSTANCES, "KEY_LEVEL": proto.KEY_LEVEL, "KEY_OFFSET": proto.KEY_OFFSET,
    "KEY_ORIGINATOR_UUID": proto.KEY_ORIGINATOR, "KEY_PATH": proto.KEY_PATH, "KEY_PEER": proto.KEY_PEER,
    "KEY_PLUGIN_CONFIGURATION": proto.CONFIG_SECTION, "KEY_PRIORITY": proto.KEY_PRIORITY,
    "KEY_REMOTE_JOB": proto.KEY_REMOTE_JOB, "KEY_REMOTE_SELF": proto.KEY_REMOTE_SELF,
    "KEY_RESOURCES": proto.KEY_RESOURCES, "KEY_SIZE": proto.KEY_SIZE, "KEY_URL": proto.KEY_URL,
    "KEY_SENDER_TRANSFER_ID": proto.KEY_SENDER_TRANSFER_ID, "URI_CHUNKS": proto.URI_CHUNKS,
    "URI_JOBS": proto.URI_JOBS, "URI_LOOKUP": proto.URI_LOOKUP, "URI_PEERS": proto.URI_PEERS,
    "URI_PLUGINS": proto.URI_PLUGINS, "URI_PULL": proto.URI_PULL, "URI_PUSH": proto.URI_PUSH,
    "URI_SEND": proto.URI_SEND, "HEADER_KEY_SENDER_TRANSFER_ID": proto.HEADER_SENDER_TRANSFER_ID,
}
#: ``OrthancPluginInitialize`` in ``Plugin/Plugin.cpp``: option → default.
PLUGIN_OPTIONS = {"Threads": 4, "BucketSize": 4096, "CacheSize": 512, "MaxPushTransactions": 4,
                  "MaxHttpRetries": 0, "PeerConnectivityTimeout": 2, "PeerCommitTimeout": 600,
                  "CommitThreadsCount": 1}

_MIRROR = os.environ.get("ORTHANC_TRANSFERS_SRC", "/work/.mirror/orthanc-mirrors+orthanc-transfers/repo")


def _source(path: str) -> str | None:
    if not os.path.isdir(_MIRROR):
        return None
    r = subprocess.run(["git", "-C", _MIRROR, "show", f"HEAD:{path}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def test_constants_are_the_plugins():
    assert OURS == PLUGIN_CONSTANTS


def test_constants_against_the_source_when_available():
    text = _source("Framework/TransferToolbox.h")
    if text is None:
        pytest.skip("no checkout of orthanc-transfers here")
    found = dict(re.findall(r'static const char\* const (\w+) = "([^"]*)";', text))
    assert found == PLUGIN_CONSTANTS
    plugin = _source("Plugin/Plugin.cpp")
    for name, default in PLUGIN_OPTIONS.items():
        assert f'plugin.GetUnsignedIntegerValue("{name}"' in plugin
    assert "size_t targetBucketSize = 4096;" in plugin and "size_t threadsCount = 4;" in plugin
    info = _source("Framework/DicomInstanceInfo.cpp")
    assert 'KEY_MD5 = "MD5"' in info
    # the routes the plugin registers, and that pacsbox serves the same paths
    for uri in ('URI_CHUNKS) + "/([.0-9a-f-]+)"', "(URI_LOOKUP", "(URI_PULL", "(URI_SEND", "(URI_PEERS",
                "(URI_PUSH, true)", 'URI_PUSH) + "/([.0-9a-f-]+)/([0-9]+)"', 'URI_PUSH) + "/([.0-9a-f-]+)/commit"',
                'URI_PUSH) + "/([.0-9a-f-]+)", true)'):
        assert uri in plugin, uri


def test_routes_and_job_types(node):
    a = node()
    paths = sorted(r.path for r in transfers.routes(a.ctx))
    assert paths == ["/transfers/chunks/{ids}", "/transfers/lookup", "/transfers/peers", "/transfers/pull",
                     "/transfers/push", "/transfers/push/{id}", "/transfers/push/{id}/{part}", "/transfers/send"]
    assert [j.type_name for j in transfers.job_types()] == ["PushTransfer", "PullTransfer"]
    assert {"PushTransfer", "PullTransfer"} <= set(a.ctx.job_types.names())


def test_options_defaults_and_checks():
    s = transfers.read_settings({})
    assert (s.threads, s.bucket_size, s.cache_size, s.max_push_transactions, s.max_http_retries,
            s.peer_connectivity_timeout, s.peer_commit_timeout, s.commit_threads) == \
        (4, 4096 * 1024, 512 * 1024 * 1024, 4, 0, 2.0, 600.0, 2)  # CommitThreadsCount: 1 in the plugin
    s = transfers.read_settings({"Transfers": {"BucketSize": 128, "CacheSize": 8, "Threads": 2}})
    assert (s.bucket_size, s.cache_size, s.threads) == (128 * 1024, 8 * 1024 * 1024, 2)
    for name, bad in (("BucketSize", 0), ("MaxPushTransactions", 0), ("Threads", 0), ("CommitThreadsCount", 0),
                      ("MaxHttpRetries", -1), ("CacheSize", "512"), ("Threads", True)):
        with pytest.raises(ConfigError, match=rf"option Transfers\.{name}:"):
            transfers.check_config({"Transfers": {name: bad}})
    with pytest.raises(ConfigError, match="option Transfers:"):
        transfers.check_config({"Transfers": [1]})


def test_bad_option_stops_the_start(node):
    with pytest.raises(StartupError, match=r"ConfigError: option Transfers\.BucketSize: 0"):
        node({"Transfers": {"BucketSize": 0}})


def test_lookup_and_chunks_answers(node):
    a = node()
    files = make_study(5, seed=21)
    study = load(a, files)
    r = requests.post(f"{a.url}/transfers/lookup", json=[{"Level": "Study", "ID": study}], timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"Instances", "Originator", "CountInstances", "TotalSize", "TotalSizeMB"}
    assert body["CountInstances"] == 5 and body["TotalSize"] == str(sum(map(len, files)))
    assert body["TotalSizeMB"] == 0
    by_md5 = {hashlib.md5(f).hexdigest(): f for f in files}
    ids = [i["ID"] for i in body["Instances"]]
    assert ids == sorted(ids)
    for item in body["Instances"]:
        assert set(item) == {"ID", "Size", "MD5"}
        assert isinstance(item["Size"], str) and len(by_md5[item["MD5"]]) == int(item["Size"])
    # the same originator for every lookup of this server
    again = requests.post(f"{a.url}/transfers/lookup", json=[], timeout=10).json()
    assert again["Originator"] == body["Originator"] and again["Instances"] == []
    # chunks: concatenation of the files, from offset, size bytes, gzip or not
    first, second = (by_md5[body["Instances"][k]["MD5"]] for k in (0, 1))
    whole = first + second
    r = requests.get(f"{a.url}/transfers/chunks/{ids[0]}.{ids[1]}", params={"offset": 100, "size": len(first)},
                     timeout=10)
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.content == whole[100:100 + len(first)]
    r = requests.get(f"{a.url}/transfers/chunks/{ids[0]}.{ids[1]}?offset=0&size=0&compression=gzip", timeout=10)
    assert r.headers["Content-Type"] == "application/gzip"
    assert zlib.decompress(r.content, 31) == whole
    assert requests.get(f"{a.url}/transfers/chunks/{ids[0]}?offset=-1", timeout=10).status_code == 400
    assert requests.post(f"{a.url}/transfers/lookup", json=[{"Level": "Study", "ID": "nope"}],
                         timeout=10).status_code == 404
    assert requests.post(f"{a.url}/transfers/lookup", json=[{"Level": "Frame", "ID": study}],
                         timeout=10).status_code == 400


def test_transfers_peers(node):
    a, b = node(), node()
    link(a, "b", b)
    link(a, "both", b, RemoteSelf="a")
    link_url(a, "down", "http://127.0.0.1:9/")
    link_url(a, "plain", a.url + "/nothing-here/")
    r = requests.get(f"{a.url}/transfers/peers", timeout=30)
    assert r.status_code == 200
    assert r.json() == {"b": "installed", "both": "bidirectional", "down": "disabled", "plain": "disabled"}


def test_send_in_pull_mode_with_remote_self(node):
    """``RemoteSelf`` on the peer: the sender asks the peer to pull from it."""
    a, b = node({"Transfers": {"BucketSize": 64}}), node({"Transfers": {"BucketSize": 64}})
    study = load(a, make_study(40, large=1, seed=22))
    link(a, "b", b, RemoteSelf="a")
    link(b, "a", a)
    r = requests.post(f"{a.url}/transfers/send", json={
        "Resources": [{"Level": "Study", "ID": study}], "Compression": "gzip", "Peer": "b"}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"Peer", "RemoteJob", "URL"} and body["Peer"] == "b"
    assert body["URL"] == f"{b.url}//jobs/{body['RemoteJob']}"  # peer URL + Path, as the plugin
    job = wait_job(b.url, body["RemoteJob"])
    assert job["State"] == "Success", job
    assert job["Type"] == "PullTransfer"
    originator = requests.post(f"{a.url}/transfers/lookup", json=[], timeout=10).json()["Originator"]
    assert job["Content"]["Originator"] == originator
    assert md5s(b) == md5s(a)


def test_pull_refuses_a_wrong_originator(node):
    a, b = node(), node()
    study = load(a, make_study(3, seed=23))
    link(b, "a", a)
    r = requests.post(f"{b.url}/transfers/pull", json={
        "Resources": [{"Level": "Study", "ID": study}], "Compression": "none", "Peer": "a",
        "Originator": "someone-else"}, timeout=30)
    job = wait_job(b.url, r.json()["ID"])
    assert job["State"] == "Failure" and "RemoteSelf" in job["ErrorDetails"]
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []


def test_push_job_serialization_keeps_the_plugins_fields():
    job = PushTransferJob({"Peer": "b", "Resources": [{"Level": "Study", "ID": "x"}], "Compression": "gzip",
                           "SenderTransferID": "t-1"})
    d = job.serialize()
    assert {k: d[k] for k in ("Peer", "Resources", "Compression", "SenderTransferID")} == {
        "Peer": "b", "Resources": [{"Level": "Study", "ID": "x"}], "Compression": "gzip", "SenderTransferID": "t-1"}
    pull = PullTransferJob({"Peer": "a", "Resources": [], "Compression": "none", "Originator": "o"})
    assert pull.serialize()["Originator"] == "o"
    assert pull.public_content() == {"Originator": "o", "Resources": [], "Peer": "a", "Compression": "none"}


def test_metrics_of_the_plugin(node):
    a, b = node(), node()
    study = load(a, make_study(8, seed=24))
    link(a, "b", b)
    r = requests.post(f"{a.url}/transfers/send", json={
        "Resources": [{"Level": "Study", "ID": study}], "Compression": "none", "Peer": "b", "Synchronous": True},
        timeout=60)
    assert r.status_code == 200, r.text

    def values(n):
        return {spec.name: next(iter(samples.values())).value for spec, samples in n.ctx.metrics.snapshot()
                if spec.name.startswith("orthanc_transfers_")}

    rx = values(b)
    assert rx["orthanc_transfers_created_push_count"] == 1
    assert rx["orthanc_transfers_committed_push_count"] == 1
    assert rx["orthanc_transfers_aborted_push_count"] == 0
    assert rx["orthanc_transfers_available_push_count"] == 4
    assert rx["orthanc_transfers_push_total_received_bytes_count"] == int(
        requests.post(f"{a.url}/transfers/lookup", json=[{"Level": "Study", "ID": study}], timeout=10).json()[
            "TotalSize"])
    tx = values(a)
    assert tx["orthanc_transfers_cache_miss_count"] == 8 and tx["orthanc_transfers_used_cache_size"] > 0
