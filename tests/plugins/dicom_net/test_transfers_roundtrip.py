"""Transfers accelerator, pacsbox to pacsbox on loopback: push (``/transfers/send``) and
pull (``/transfers/pull``) of a 500-instance study, gzip and not; the receiver ends with
the same files byte for byte."""
from __future__ import annotations

import pytest
import requests
from transfers_helpers import link, load, make_study, md5s, wait_job

#: Small buckets so that a 500-instance study makes many buckets and big instances split.
CONFIG = {"Transfers": {"BucketSize": 256, "Threads": 4}}


@pytest.fixture(scope="module")
def study_files():
    """500 small instances (about 2.6 KB each) and 3 of 512 KB (split: > 2 x 256 KB)."""
    return make_study(500, large=3)


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_send_500_instances(node, study_files, compression):
    a, b = node(CONFIG), node(CONFIG)
    study = load(a, study_files)
    link(a, "b", b)
    r = requests.post(f"{a.url}/transfers/send", json={
        "Resources": [{"Level": "Study", "ID": study}], "Compression": compression, "Peer": "b"}, timeout=30)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"ID", "Path"} and answer["Path"] == f"/jobs/{answer['ID']}"
    job = wait_job(a.url, answer["ID"])
    assert job["State"] == "Success", job
    assert job["Type"] == "PushTransfer"
    c = job["Content"]
    assert c["TotalInstances"] == 503
    assert c["Peer"] == "b" and c["Compression"] == compression
    assert c["Resources"] == [{"Level": "Study", "ID": study}]
    # 500 x ~2.6 KB grouped by 256 KB, plus 3 x 512 KB instances cut in 2 chunks each
    assert c["CompletedHttpQueries"] >= 6 + 5
    assert job["Progress"] == 100
    assert c["NetworkSpeedKBs"] > 0
    total = sum(map(len, study_files))
    assert c["TotalSizeMB"] == round(total / 2 ** 20)
    if compression == "none":  # bytes uploaded = the files, in MB
        assert c["UploadedSizeMB"] == round(total / 2 ** 20)
    src = md5s(a)
    assert len(src) == 503
    assert md5s(b) == src
    # nothing left in the receiver's staging area
    assert requests.get(f"{b.url}/studies", timeout=10).json() == [study]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_pull_500_instances(node, study_files, compression):
    a, b = node(CONFIG), node(CONFIG)
    study = load(a, study_files)
    link(b, "a", a)
    r = requests.post(f"{b.url}/transfers/pull", json={
        "Resources": [{"Level": "Study", "ID": study}], "Compression": compression, "Peer": "a"}, timeout=30)
    assert r.status_code == 200, r.text
    job = wait_job(b.url, r.json()["ID"])
    assert job["State"] == "Success", job
    assert job["Type"] == "PullTransfer"
    assert job["Content"]["TotalInstances"] == 503
    assert md5s(b) == md5s(a)


def test_send_synchronous_and_series_level(node, study_files):
    a, b = node(CONFIG), node(CONFIG)
    load(a, study_files[:20])
    series = requests.get(f"{a.url}/series", timeout=10).json()
    link(a, "b", b)
    r = requests.post(f"{a.url}/transfers/send", json={
        "Resources": [{"Level": "Series", "ID": series[0]}], "Compression": "gzip", "Peer": "b",
        "Synchronous": True}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["TotalInstances"] == 10
    assert sorted(requests.get(f"{b.url}/series", timeout=10).json()) == [series[0]]
