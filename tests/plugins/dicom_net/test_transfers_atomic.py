"""Transfers accelerator, receiving side: a push transaction is all or nothing.

Driven with raw HTTP, as a sender speaking the plugin's protocol would: a corrupt bucket
(MD5 mismatch), a missing bucket, or an instance the server cannot store refuse the
commit and leave nothing in the index nor in the staging folder.
"""
from __future__ import annotations

import hashlib
import os

import requests
from transfers_helpers import make_study

from pacsbox_dicom_net.transfers_area import JOURNAL, recover_staging, staging_root
from pacsbox_dicom_net.transfers_protocol import Bucket, Chunk, InstanceInfo, gzip_bytes, plan_buckets

CONFIG = {"Transfers": {"BucketSize": 16}}


def _infos(files: dict[str, bytes]) -> list[InstanceInfo]:
    return [InstanceInfo(i, len(d), hashlib.md5(d).hexdigest()) for i, d in files.items()]


def _open(url: str, infos, buckets, compression="none") -> str:
    r = requests.post(f"{url}/transfers/push", json={
        "Instances": [i.to_json() for i in infos], "Buckets": [b.to_json() for b in buckets],
        "Compression": compression}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["Path"] == f"/transfers/push/{body['ID']}"
    return body["Path"]


def _body(files: dict[str, bytes], bucket: Bucket) -> bytes:
    return b"".join(files[c.id][c.offset:c.offset + c.size] for c in bucket.chunks)


def _files(n: int, seed: int) -> dict[str, bytes]:
    out = {}
    for data in make_study(n, seed=seed):
        out[_instance_id(data)] = data
    return out


def _instance_id(data: bytes) -> str:
    import io

    import pydicom

    from pacsbox import orthanc_id
    ds = pydicom.dcmread(io.BytesIO(data))
    return orthanc_id(ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def _staging_empty(node) -> bool:
    d = os.path.join(staging_root(node.ctx), "push")
    return not os.path.isdir(d) or os.listdir(d) == []


def test_push_transaction_lifecycle_ok(node):
    b = node(CONFIG)
    files = _files(12, seed=1)
    infos = _infos(files)
    buckets = plan_buckets(infos, 16 * 1024)
    assert len(buckets) >= 2
    path = _open(b.url, infos, buckets, "gzip")
    for n, bucket in enumerate(buckets):
        r = requests.put(f"{b.url}{path}/{n}", data=gzip_bytes(_body(files, bucket)), timeout=10)
        assert r.status_code == 200 and r.json() == {}
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []   # nothing before the commit
    r = requests.post(f"{b.url}{path}/commit", timeout=30)
    assert r.status_code == 200 and r.json() == {}
    assert sorted(requests.get(f"{b.url}/instances", timeout=10).json()) == sorted(files)
    for iid, data in files.items():
        assert requests.get(f"{b.url}/instances/{iid}/file", timeout=10).content == data
    assert _staging_empty(b)
    # the transaction is gone: a second commit or a delete is a 404
    assert requests.post(f"{b.url}{path}/commit", timeout=10).status_code == 404
    assert requests.delete(f"{b.url}{path}", timeout=10).status_code == 404


def test_corrupt_bucket_refuses_commit_and_keeps_nothing(node):
    b = node(CONFIG)
    files = _files(12, seed=2)
    infos = _infos(files)
    buckets = plan_buckets(infos, 16 * 1024)
    path = _open(b.url, infos, buckets)
    for n, bucket in enumerate(buckets):
        body = bytearray(_body(files, bucket))
        if n == len(buckets) - 1:
            body[-1] ^= 0xFF  # one flipped bit in the last instance's pixels
        assert requests.put(f"{b.url}{path}/{n}", data=bytes(body), timeout=10).status_code == 200
    r = requests.post(f"{b.url}{path}/commit", timeout=30)
    assert r.status_code == 500
    err = r.json()
    assert err["OrthancStatus"] == 20  # CorruptedFile
    assert "Bad MD5 sum in a transfered DICOM instance" in err["Details"]
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []
    assert _staging_empty(b)


def test_missing_bucket_refuses_commit(node):
    b = node(CONFIG)
    files = _files(12, seed=3)
    infos = _infos(files)
    buckets = plan_buckets(infos, 16 * 1024)
    path = _open(b.url, infos, buckets)
    for n, bucket in enumerate(buckets[:-1]):
        assert requests.put(f"{b.url}{path}/{n}", data=_body(files, bucket), timeout=10).status_code == 200
    r = requests.post(f"{b.url}{path}/commit", timeout=30)
    assert r.status_code == 500 and r.json()["OrthancStatus"] == 20
    assert f"Bucket {len(buckets) - 1} of the transfer was never received" in r.json()["Details"]
    assert requests.get(f"{b.url}/instances", timeout=10).json() == []
    assert _staging_empty(b)


def test_instance_that_cannot_be_stored_rolls_back_the_others(node):
    """The MD5s match but one "instance" is not DICOM: the instances stored before it are
    deleted again; one that was on the server before the transfer stays."""
    b = node(CONFIG)
    files = _files(6, seed=4)
    ids = sorted(files)
    before = ids[0]
    b.ctx.ingest.store(files[before])
    bad_id = "ffffffff-ffffffff-ffffffff-ffffffff-ffffffff"  # sorts last: committed after the good ones
    files[bad_id] = b"not a DICOM file" * 10
    infos = _infos(files)
    buckets = plan_buckets(infos, 16 * 1024)
    path = _open(b.url, infos, buckets)
    for n, bucket in enumerate(buckets):
        assert requests.put(f"{b.url}{path}/{n}", data=_body(files, bucket), timeout=10).status_code == 200
    r = requests.post(f"{b.url}{path}/commit", timeout=30)
    assert r.status_code == 400, r.text  # the ingest's BadFileFormat
    assert requests.get(f"{b.url}/instances", timeout=10).json() == [before]
    assert _staging_empty(b)


def test_bucket_of_wrong_size_or_unknown_transaction(node):
    b = node(CONFIG)
    files = _files(3, seed=5)
    infos = _infos(files)
    buckets = plan_buckets(infos, 16 * 1024)
    path = _open(b.url, infos, buckets)
    r = requests.put(f"{b.url}{path}/0", data=b"short", timeout=10)
    assert r.status_code == 500 and r.json()["OrthancStatus"] == 9  # NetworkProtocol, as the plugin
    assert requests.put(f"{b.url}{path}/99", data=b"", timeout=10).status_code == 400
    assert requests.put(f"{b.url}/transfers/push/00000000-0000-0000-0000-000000000000/0", data=b"x",
                        timeout=10).status_code == 404
    bad = requests.post(f"{b.url}/transfers/push", json={
        "Instances": [i.to_json() for i in infos], "Buckets": [[{"ID": "nope", "Offset": "0", "Size": "1"}]],
        "Compression": "none"}, timeout=10)
    assert bad.status_code == 400
    assert requests.post(f"{b.url}/transfers/push", json={"Instances": [], "Buckets": []},
                         timeout=10).status_code == 400
    assert requests.delete(f"{b.url}{path}", timeout=10).json() == {}
    assert _staging_empty(b)


def test_max_push_transactions_evicts_the_oldest(node):
    b = node({"Transfers": {"MaxPushTransactions": 2}})
    files = _files(1, seed=6)
    infos = _infos(files)
    buckets = plan_buckets(infos, 1024 * 1024)
    paths = [_open(b.url, infos, buckets) for _ in range(3)]
    assert requests.delete(f"{b.url}{paths[0]}", timeout=10).status_code == 404
    assert requests.delete(f"{b.url}{paths[1]}", timeout=10).status_code == 200
    assert requests.delete(f"{b.url}{paths[2]}", timeout=10).status_code == 200
    assert _staging_empty(b)


def test_idle_transaction_is_discarded(node):
    b = node({"Transfers": {"PushTransactionTimeout": 1}})
    files = _files(2, seed=7)
    infos = _infos(files)
    path = _open(b.url, infos, plan_buckets(infos, 1024 * 1024))
    import time
    deadline = time.monotonic() + 60
    while not _staging_empty(b):
        assert time.monotonic() < deadline, "the idle transaction was not discarded"
        time.sleep(0.1)
    assert requests.post(f"{b.url}{path}/commit", timeout=10).status_code == 404


def test_commit_cut_by_a_crash_is_rolled_back_at_start(node):
    """A journal without its ``done`` line (the process died mid-commit): the instances it
    lists are deleted at the next start, and the folder removed."""
    b = node(CONFIG)
    files = _files(3, seed=8)
    stored = []
    for data in files.values():
        stored.append(b.ctx.ingest.store(data).ids[3])
    d = os.path.join(staging_root(b.ctx), "push", "a-crashed-transaction")
    os.makedirs(d)
    with open(os.path.join(d, JOURNAL), "w") as f:
        f.write(f"stored {stored[0]}\nstored {stored[1]}\n")
    assert recover_staging(b.ctx) == 2
    assert requests.get(f"{b.url}/instances", timeout=10).json() == [stored[2]]
    assert not os.path.exists(d)


def test_bucket_shapes_match_the_plugin():
    """Splitting (``TransferScheduler::ComputeBucketsInternal``): 10 MB with 4 MB buckets
    → ceil(10 / 8) = 2 chunks of 5 MB; 5 MB travels alone; small ones are grouped until
    the group reaches the bucket size."""
    mb = 1024 * 1024
    infos = [InstanceInfo("c" * 8, 10 * mb, "0" * 32), InstanceInfo("b" * 8, 5 * mb, "0" * 32)]
    infos += [InstanceInfo(f"a{i:07d}", mb, "0" * 32) for i in range(6)]
    buckets = plan_buckets(infos, 4 * mb)
    assert [b.to_json() for b in buckets] == [
        [{"ID": "b" * 8, "Offset": "0", "Size": str(5 * mb)}],
        [{"ID": "c" * 8, "Offset": "0", "Size": str(5 * mb)}],
        [{"ID": "c" * 8, "Offset": str(5 * mb), "Size": str(5 * mb)}],
        [{"ID": f"a{i:07d}", "Offset": "0", "Size": str(mb)} for i in range(4)],
        [{"ID": f"a{i:07d}", "Offset": "0", "Size": str(mb)} for i in range(4, 6)],
    ]
    assert Bucket((Chunk("x", 7, 3), Chunk("y", 0, 5))).pull_uri("gzip") == \
        "/transfers/chunks/x.y?offset=7&size=8&compression=gzip"


def test_instance_ids_never_name_files(node):
    """IDs come from the remote: one that looks like a path stays inside the staging folder."""
    b = node(CONFIG)
    evil = "../../../../escaped"
    data = b"x" * 10
    infos = [InstanceInfo(evil, len(data), hashlib.md5(data).hexdigest())]
    buckets = [Bucket((Chunk(evil, 0, len(data)),))]
    path = _open(b.url, infos, buckets)
    assert requests.put(f"{b.url}{path}/0", data=data, timeout=10).status_code == 200
    root = staging_root(b.ctx)
    tid = path.rsplit("/", 1)[1]
    for suffix in ("", ".dcm"):
        assert not os.path.exists(os.path.normpath(os.path.join(root, "push", tid, evil + suffix)))
    assert requests.post(f"{b.url}{path}/commit", timeout=10).status_code == 400  # not DICOM
    assert _staging_empty(b)
