"""Transfers accelerator: pushes cut in the middle, paused, reloaded, canceled.

A :class:`CutProxy` sits between the sender and the receiver; cutting it in the middle of
the bucket uploads must leave nothing committed on the receiver, and the job must either
fail with a clear error (``MaxHttpRetries`` 0) or go on once the link is back.
"""
from __future__ import annotations

import os
import threading
import time

import pytest
import requests
from transfers_helpers import CutProxy, link, link_url, load, make_study, md5s, wait_job

from pacsbox_dicom_net.transfers import state as transfers_state
from pacsbox_dicom_net.transfers_area import staging_root
from pacsbox_dicom_net.transfers_jobs import PushTransferJob


@pytest.fixture(scope="module")
def study_files():
    """200 small instances (~2.6 KB) and 4 of 512 KB: about 2.6 MB in 16 KB... buckets."""
    return make_study(200, large=4, seed=11)


@pytest.fixture
def proxies():
    made = []

    def factory(port, cut_after=None):
        p = CutProxy(port, cut_after)
        made.append(p)
        return p

    yield factory
    for p in made:
        p.close()


def _staged(node) -> list[str]:
    d = os.path.join(staging_root(node.ctx), "push")
    return os.listdir(d) if os.path.isdir(d) else []


def _send(a, study, compression="none", **extra):
    r = requests.post(f"{a.url}/transfers/send", json={
        "Resources": [{"Level": "Study", "ID": study}], "Compression": compression, "Peer": "b", **extra}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["ID"]


def test_cut_without_retries_fails_clearly_and_commits_nothing(node, study_files, proxies):
    a = node({"Transfers": {"BucketSize": 64, "Threads": 2, "MaxHttpRetries": 0}})
    b = node({"Transfers": {"PushTransactionTimeout": 2}})
    study = load(a, study_files)
    proxy = proxies(b.server.port, cut_after=1_000_000)  # about half of the ~2.6 MB
    link_url(a, "b", proxy.url + "/")
    job = wait_job(a.url, _send(a, study))
    assert proxy.cut_event.is_set()
    assert job["State"] == "Failure"
    assert job["ErrorCode"] == 9  # NetworkProtocol
    assert "Cannot send bucket" in job["ErrorDetails"] and "to peer b" in job["ErrorDetails"]
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []
    # the sender could not discard through the cut link: the receiver drops the idle
    # transaction and its staged files by itself
    deadline = time.monotonic() + 15
    while _staged(b):
        assert time.monotonic() < deadline, _staged(b)
        time.sleep(0.2)
    assert transfers_state(b.ctx).transactions.ids() == []
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []


def test_cut_with_retries_goes_on_when_the_link_is_back(node, study_files, proxies):
    a = node({"Transfers": {"BucketSize": 64, "Threads": 3, "MaxHttpRetries": 5}})
    b = node()
    study = load(a, study_files)
    proxy = proxies(b.server.port, cut_after=1_000_000)
    link_url(a, "b", proxy.url + "/")
    job_id = _send(a, study, "gzip")
    deadline = time.monotonic() + 20
    while not proxy.cut_event.is_set():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []  # nothing half-committed
    proxy.heal()
    job = wait_job(a.url, job_id)
    assert job["State"] == "Success", job
    assert md5s(b) == md5s(a)
    assert _staged(b) == []


def test_receiver_restart_loses_the_transaction_and_the_job_starts_a_new_one(node, study_files):
    """The receiver forgets the transaction mid-push (as after a restart): the next bucket
    gets a 404 and the job opens a new transaction and sends everything again."""
    a = node({"Transfers": {"BucketSize": 64, "Threads": 1}})
    b = node()
    study = load(a, study_files)
    link(a, "b", b)
    rx = transfers_state(b.ctx).transactions
    original_store = rx.store
    calls = {"n": 0}

    def store(tid, index, data):
        calls["n"] += 1
        if calls["n"] == 5:
            rx.discard(tid)  # the receiver loses the transaction
        return original_store(tid, index, data)

    rx.store = store
    job = wait_job(a.url, _send(a, study))
    assert job["State"] == "Success", job
    assert md5s(b) == md5s(a)
    assert rx.info()["created"] == 2


def test_pause_resume_and_reload_continue_with_the_buckets_not_done(node, study_files):
    a = node({"Transfers": {"BucketSize": 32, "Threads": 1}})
    b = node()
    study = load(a, study_files)
    link(a, "b", b)
    rx = transfers_state(b.ctx).transactions
    original_store = rx.store
    received = []

    def slow_store(tid, index, data):
        received.append(index)
        time.sleep(0.02)
        return original_store(tid, index, data)

    rx.store = slow_store
    job_id = _send(a, study)
    deadline = time.monotonic() + 20
    # one thread: the 11th bucket is sent once the 10th was confirmed (with 10 received, the
    # 10th could still be in flight, and its answer lost to the pause)
    while len(received) < 11:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert requests.post(f"{a.url}/jobs/{job_id}/pause", json={}, timeout=10).status_code == 200
    paused = wait_job(a.url, job_id, states=("Paused",))
    assert 0 < paused["Progress"] < 100
    rec = a.ctx.jobs.get(job_id)
    saved = rec.job.serialize()
    done = saved["pacsbox"]["DoneBuckets"]
    assert len(done) >= 10 and saved["pacsbox"]["Transaction"].startswith("/transfers/push/")
    # the saved form rebuilds a job that still knows its transaction and its done buckets
    again = PushTransferJob.from_serialized(saved, a.ctx)
    assert again.transaction == saved["pacsbox"]["Transaction"] and again.done == set(done)
    assert saved["Peer"] == "b" and saved["Compression"] == "none" and "SenderTransferID" in saved
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []
    n_before = len(received)
    assert requests.post(f"{a.url}/jobs/{job_id}/resume", json={}, timeout=10).status_code == 200
    job = wait_job(a.url, job_id)
    assert job["State"] == "Success", job
    total = len(saved["pacsbox"]["Buckets"])
    # the resumed run sent only what was not done (a bucket in flight at the pause may go twice)
    assert len(received) - n_before <= total - len(done) + 1
    assert md5s(b) == md5s(a)


def test_cancel_discards_the_remote_transaction(node, study_files):
    a = node({"Transfers": {"BucketSize": 32, "Threads": 1}})
    b = node()
    study = load(a, study_files)
    link(a, "b", b)
    rx = transfers_state(b.ctx).transactions
    original_store = rx.store
    received = []

    def slow_store(tid, index, data):
        received.append(index)
        time.sleep(0.02)
        return original_store(tid, index, data)

    rx.store = slow_store
    job_id = _send(a, study)
    deadline = time.monotonic() + 20
    while len(received) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert requests.post(f"{a.url}/jobs/{job_id}/cancel", json={}, timeout=10).status_code == 200
    job = wait_job(a.url, job_id)
    assert job["State"] == "Failure" and job["ErrorCode"] == 37
    deadline = time.monotonic() + 10
    while rx.ids():
        assert time.monotonic() < deadline, rx.ids()
        time.sleep(0.05)
    assert _staged(b) == []
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []


def test_corrupt_file_on_the_sender_fails_the_commit_and_the_job(node, study_files):
    """The sender's index MD5 no longer matches its file (disk corruption): the receiver
    refuses the commit and the job fails with the receiver's reason."""
    a = node({"Transfers": {"BucketSize": 64}})
    b = node()
    study = load(a, study_files[:30])
    link(a, "b", b)
    victim = requests.get(f"{a.url}/instances", timeout=10).json()[3]
    att = a.ctx.index.attachment_by_public_id(victim, 1)
    data = bytearray(a.ctx.storage.read(att.uuid, 1))
    data[-1] ^= 0x01
    a.ctx.storage.remove(att.uuid, 1)
    a.ctx.storage.create(att.uuid, bytes(data), 1)
    job = wait_job(a.url, _send(a, study))
    assert job["State"] == "Failure"
    assert "Cannot commit push transaction" in job["ErrorDetails"]
    assert "Bad MD5 sum" in job["ErrorDetails"]
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []


def test_unknown_peer_and_bad_bodies(node):
    a = node()
    r = requests.post(f"{a.url}/transfers/send", json={"Resources": [], "Compression": "none", "Peer": "nope"},
                      timeout=10)
    assert r.status_code == 404 and r.json()["Details"] == "Unknown Orthanc peer: nope"
    r = requests.post(f"{a.url}/transfers/send", json={"Resources": [], "Compression": "lzma", "Peer": "x"},
                      timeout=10)
    assert r.status_code == 400 and "gzip" in r.json()["Details"]
    r = requests.post(f"{a.url}/transfers/pull", json={"Resources": {}, "Compression": "none", "Peer": "x"},
                      timeout=10)
    assert r.status_code == 400
    assert requests.get(f"{a.url}/transfers/send", timeout=10).status_code == 405


def test_sender_restart_reloads_the_job_and_sends_only_what_is_missing(node, study_files, tmp_path):
    """The sender shuts down in the middle of a push; started again on the same storage,
    it reloads the job (same ID), keeps the receiver's transaction and sends only the
    buckets that were not confirmed."""
    b = node()
    cfg = {"StorageDirectory": str(tmp_path / "sender"), "OrthancPeers": {"b": [b.url + "/"]},
           "Transfers": {"BucketSize": 32, "Threads": 1}}
    a = node(cfg)
    study = load(a, study_files)
    expected = md5s(a)
    rx = transfers_state(b.ctx).transactions
    original_store = rx.store
    received = []

    def slow_store(tid, index, data):
        received.append(index)
        time.sleep(0.02 if len(received) < 10 else 0.3)  # the shutdown comes well before the end
        return original_store(tid, index, data)

    rx.store = slow_store
    job_id = _send(a, study)
    deadline = time.monotonic() + 20
    while len(received) < 10:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    a.server.close()
    a.app.close()
    at_stop = len(received)
    assert rx.ids(), rx.info()
    total = len(rx._items[rx.ids()[0]].area.buckets)  # noqa: SLF001 - the receiver's plan
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []
    def counting_store(tid, index, data):
        received.append(index)
        return original_store(tid, index, data)

    rx.store = counting_store
    a2 = node(cfg)
    job = wait_job(a2.url, job_id)
    assert job["State"] == "Success", job
    assert rx.info()["created"] == 1  # the same transaction went on
    # only the unconfirmed buckets went again (plus those in flight at the shutdown)
    assert len(received) <= total + 2, (len(received), at_stop, total)
    assert md5s(b) == expected


def test_commit_whose_answer_is_lost_is_sent_again(node, study_files):
    """The first commit goes through on the receiver but its answer never reaches the
    sender (the retry then finds no transaction): the job sends again and ends in Success
    with every instance there once."""
    a = node({"Transfers": {"BucketSize": 64, "MaxHttpRetries": 1}})
    b = node()
    study = load(a, study_files[:50])
    link(a, "b", b)
    rx = transfers_state(b.ctx).transactions
    original_commit = rx.commit
    calls = {"n": 0}

    def commit(tid):
        calls["n"] += 1
        created = original_commit(tid)
        if calls["n"] == 1:
            raise ConnectionAbortedError("answer lost")  # a 500 to the sender, stored anyway
        return created

    rx.commit = commit
    job = wait_job(a.url, _send(a, study))
    assert job["State"] == "Success", job
    assert calls["n"] == 3 and rx.info()["created"] == 2  # commit, retried commit (404), new commit
    assert md5s(b) == md5s(a)


def test_pull_cut_in_the_middle_fails_and_keeps_nothing(node, study_files, proxies):
    a = node()
    b = node({"Transfers": {"BucketSize": 32, "Threads": 1}})
    study = load(a, study_files)
    src = transfers_state(a.ctx).cache
    original = src.serve_chunks

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return original(*args, **kwargs)

    src.serve_chunks = slow
    proxy = proxies(a.server.port)
    link_url(b, "a", proxy.url + "/")
    r = requests.post(f"{b.url}/transfers/pull", json={
        "Resources": [{"Level": "Study", "ID": study}], "Compression": "gzip", "Peer": "a"}, timeout=30)
    job_id = r.json()["ID"]
    deadline = time.monotonic() + 20
    while requests.get(f"{b.url}/jobs/{job_id}", timeout=10).json()["Content"].get("CompletedHttpQueries", 0) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proxy.cut()
    job = wait_job(b.url, job_id)
    assert job["State"] == "Failure" and job["ErrorCode"] == 9
    assert "Cannot download bucket" in job["ErrorDetails"]
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []
    pull_dir = os.path.join(staging_root(b.ctx), "pull")
    assert not os.path.isdir(pull_dir) or os.listdir(pull_dir) == []


def test_pause_during_the_commit_then_resume(node, study_files):
    """A pause while the commit request is in flight pauses the job (not a failure); on
    resume it finds the transaction committed (404) and sends again: Success."""
    a = node({"Transfers": {"BucketSize": 64}})
    b = node()
    study = load(a, study_files[:40])
    link(a, "b", b)
    rx = transfers_state(b.ctx).transactions
    original_commit = rx.commit
    committing = []
    release, committed = threading.Event(), threading.Event()

    def held_commit(tid):
        committing.append(tid)
        release.wait(60)      # the commit ends only when the test says so
        try:
            return original_commit(tid)
        finally:
            committed.set()

    rx.commit = held_commit
    job_id = _send(a, study)
    deadline = time.monotonic() + 20
    while not committing:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert requests.post(f"{a.url}/jobs/{job_id}/pause", json={}, timeout=10).status_code == 200
    assert wait_job(a.url, job_id, states=("Paused", "Success", "Failure"))["State"] == "Paused"
    rx.commit = original_commit
    release.set()
    assert committed.wait(60)  # the first commit ends on the receiver before the resume
    assert requests.post(f"{a.url}/jobs/{job_id}/resume", json={}, timeout=10).status_code == 200
    job = wait_job(a.url, job_id)
    assert job["State"] == "Success", job
    assert md5s(b) == md5s(a)


def test_paused_pull_canceled_leaves_no_staging(node, study_files):
    """A paused pull keeps its staged buckets; canceled while paused (the job does not run
    then), its folder is swept away."""
    from pacsbox_dicom_net.transfers_area import sweep_pull_areas
    a = node()
    b = node({"Transfers": {"BucketSize": 32, "Threads": 1}})
    study = load(a, study_files)
    src = transfers_state(a.ctx).cache
    original = src.serve_chunks

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return original(*args, **kwargs)

    src.serve_chunks = slow
    link(b, "a", a)
    r = requests.post(f"{b.url}/transfers/pull", json={
        "Resources": [{"Level": "Study", "ID": study}], "Compression": "none", "Peer": "a"}, timeout=30)
    job_id = r.json()["ID"]
    deadline = time.monotonic() + 20
    while requests.get(f"{b.url}/jobs/{job_id}", timeout=10).json()["Content"].get("CompletedHttpQueries", 0) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    requests.post(f"{b.url}/jobs/{job_id}/pause", json={}, timeout=10)
    wait_job(b.url, job_id, states=("Paused",))
    pull_dir = os.path.join(staging_root(b.ctx), "pull")
    assert len(os.listdir(pull_dir)) == 1
    assert sweep_pull_areas(b.ctx, grace=0) == 0          # still used by the paused job
    requests.post(f"{b.url}/jobs/{job_id}/cancel", json={}, timeout=10)
    assert wait_job(b.url, job_id)["ErrorCode"] == 37
    assert sweep_pull_areas(b.ctx, grace=0) == 1
    assert os.listdir(pull_dir) == []
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []
