"""Issue 13 case 6: an accepted large upload is never held whole in memory.

A 300 MB DICOM file (one multi-frame instance, 16-bit pixels), uploaded raw (with a
``Content-Length`` or chunked), gzip-encoded, and inside a ZIP, to a real ``pacsbox serve``: waitress spools the body beyond ``UploadSpoolThreshold``,
the header is scanned through a mapping of the spool file, and the file is copied to the
storage area in pieces, its MD5 computed on the way. The server's peak RSS (``VmHWM``)
grows by less than 64 MiB, and the stored file is byte for byte the uploaded one (same
size, same MD5, read back through ``/file``), with ``StorageCompression`` too.

The option itself: ``UploadSpoolThreshold`` is validated at start (exit code 2 naming it)
and 0 spools every body, which still stores correctly.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import zipfile

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from conftest import free_port
from pacsbox.testing import ServeProcess, inline_plugin, serve_command, wait_for_notifications

MB = 1 << 20
BIG_MB = 300


def write_big_dicom(path, megabytes: int, uid_suffix: str) -> tuple[int, str]:
    """Write a multi-frame 16-bit DICOM file of about ``megabytes`` MB by streaming its
    Pixel Data; returns (size in bytes, MD5 hex)."""
    ds = Dataset()
    ds.PatientID, ds.PatientName = "BIG", "BIG^FILE"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1013." + uid_suffix
    ds.SeriesInstanceUID = ds.StudyInstanceUID + ".1"
    ds.SOPInstanceUID = ds.StudyInstanceUID + ".1.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.Modality, ds.InstanceNumber = "OT", 1
    ds.Rows = ds.Columns = 1024
    ds.NumberOfFrames = frames = megabytes // 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta = meta
    head = io.BytesIO()
    ds.save_as(head, enforce_file_format=True)
    pixels = 1024 * 1024 * 2 * frames
    md5 = hashlib.md5()
    block = bytes(range(256)) * 4096  # 1 MiB
    with open(path, "wb") as f:
        for piece in (head.getvalue(), struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixels)):
            f.write(piece)
            md5.update(piece)
        for _ in range(pixels // len(block)):
            f.write(block)
            md5.update(block)
    return os.path.getsize(path), md5.hexdigest()


def _vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1])


def _md5_of_stream(r: requests.Response) -> tuple[int, str]:
    md5, n = hashlib.md5(), 0
    for chunk in r.iter_content(MB):
        md5.update(chunk)
        n += len(chunk)
    return n, md5.hexdigest()


def _serve(tmp_path, **options) -> ServeProcess:
    cfg = {"Name": "big", "HttpPort": free_port(), "DicomServerEnabled": False,
           "StorageDirectory": str(tmp_path / "db"), "StoreMD5ForAttachments": True}
    cfg.update(options)
    return ServeProcess.write(tmp_path, cfg)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.dcm"
    size, md5 = write_big_dicom(path, BIG_MB, "1")
    yield path, size, md5
    os.unlink(path)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
@pytest.mark.parametrize("zipped,compressed,chunked", [(False, False, False), (True, False, False),
                                                        (False, True, False), (False, False, True),
                                                        ("gzip", False, False)],
                         ids=["raw", "zipped", "raw-StorageCompression", "raw-chunked", "gzip-encoded"])
def test_large_upload_is_stored_with_flat_memory(tmp_path, big_file, zipped, compressed, chunked):
    path, size, md5 = big_file
    body = path
    headers, options = {}, {}
    if zipped == "gzip":  # Content-Encoding: gzip, inflated in pieces to the spool
        body = tmp_path / "big.dcm.gz"
        with open(path, "rb") as src, gzip.open(body, "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst, MB)
        headers = {"Content-Encoding": "gzip"}
        # the synthetic pixels compress ~400 times: a limit, not the gzip-bomb ratio, bounds them
        options = {"MaximumUploadSize": 1024}
        zipped = False
    elif zipped:
        body = tmp_path / "big.zip"
        with zipfile.ZipFile(body, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.write(path, "dir/big.dcm")
    serve = _serve(tmp_path, StorageCompression=compressed, **options).start()
    try:
        with requests.Session() as http:
            # warm-up: a small upload and a listing, so that lazily loaded code is counted
            small = tmp_path / "small.dcm"
            write_big_dicom(small, 2, "2")
            with open(small, "rb") as f:
                assert http.post(serve.url + "/instances", data=f, timeout=60).status_code == 200
            assert http.get(serve.url + "/instances", timeout=60).status_code == 200
            before = _vm_hwm_kib(serve.proc.pid)
            with open(body, "rb") as f:
                # a generator: Transfer-Encoding chunked, no Content-Length (waitress spools it too)
                data = iter(lambda: f.read(MB), b"") if chunked else f
                r = http.post(serve.url + "/instances", data=data, headers=headers, timeout=600)
            assert r.status_code == 200, r.text
            answer = r.json()
            if zipped:
                assert len(answer) == 1
                answer = answer[0]
            assert answer["Status"] == "Success"
            grown_mib = (_vm_hwm_kib(serve.proc.pid) - before) / 1024
            assert grown_mib < 64, f"peak RSS grew by {grown_mib:.0f} MiB"
            iid = answer["ID"]
            att = f"{serve.url}/instances/{iid}/attachments/dicom"
            assert http.get(att + "/size", timeout=60).json() == size
            assert http.get(att + "/md5", timeout=60).text == md5
            assert http.get(att + "/is-compressed", timeout=60).json() == int(compressed)
            with http.get(f"{serve.url}/instances/{iid}/file", stream=True, timeout=600) as r:
                assert _md5_of_stream(r) == (size, md5)
            tags = http.get(f"{serve.url}/instances/{iid}/simplified-tags", timeout=60).json()
            assert (tags["PatientName"], tags["NumberOfFrames"]) == ("BIG^FILE", str(BIG_MB // 2))
    finally:
        serve.stop()


def test_spool_threshold_zero_spools_every_body(tmp_path):
    """``UploadSpoolThreshold: 0``: even a small body goes through the spool file, and is
    stored whole."""
    small = tmp_path / "small.dcm"
    size, md5 = write_big_dicom(small, 2, "3")
    serve = _serve(tmp_path, UploadSpoolThreshold=0).start()
    try:
        with open(small, "rb") as f:
            r = requests.post(serve.url + "/instances", data=f.read(), timeout=60)
        assert r.status_code == 200 and r.json()["Status"] == "Success", r.text
        att = f"{serve.url}/instances/{r.json()['ID']}/attachments/dicom"
        assert requests.get(att + "/md5", timeout=60).text == md5
        assert requests.get(att + "/size", timeout=60).json() == size
    finally:
        serve.stop()


@pytest.mark.parametrize("value", [-1, "two", 1.5])
def test_bad_spool_threshold_is_refused_at_start(tmp_path, value):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"HttpPort": free_port(), "StorageDirectory": str(tmp_path / "db"),
                               "UploadSpoolThreshold": value}))
    p = subprocess.run(serve_command() + ["serve", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2
    assert "UploadSpoolThreshold" in p.stderr and "an integer >= 0" in p.stderr


def test_spooled_file_goes_through_the_filters_and_notifications(live_server, tmp_path):
    """A spooled upload (``Ingest.store_file``) gives ``filter_received_instance`` the parsed
    dataset (Pixel Data left on disk) and ``instance_stored`` the stored one; a filter
    returning False stores nothing."""
    seen, stored = [], []

    def keep(dataset, origin):
        seen.append((str(dataset.PatientID), int(dataset.NumberOfFrames), origin["Origin"]))
        return dataset.PatientID != "REFUSED"

    plugin = inline_plugin("spooled_filter", filter_received_instance=keep,
                           instance_stored=lambda dataset, instance_id: stored.append(
                               (instance_id, str(dataset.SOPInstanceUID))))
    s = live_server({"UploadSpoolThreshold": 0}, plugins=[plugin])
    small = tmp_path / "small.dcm"
    write_big_dicom(small, 4, "4")
    r = requests.post(s.url + "/instances", data=small.read_bytes(), timeout=60)
    assert r.status_code == 200 and r.json()["Status"] == "Success", r.text
    assert wait_for_notifications(s.app)
    assert seen == [("BIG", 2, "RestApi")]
    assert stored == [(r.json()["ID"], "1.2.826.0.1.3680043.10.1013.4.1.1")]
    ds = pydicom.dcmread(small)
    ds.PatientID = "REFUSED"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.1013.4.1.2"
    refused = tmp_path / "refused.dcm"
    ds.save_as(refused, enforce_file_format=True)
    r = requests.post(s.url + "/instances", data=refused.read_bytes(), timeout=60)
    assert (r.status_code, r.json()) == (200, {"Status": "FilteredOut"})
    assert len(requests.get(s.url + "/instances", timeout=60).json()) == 1
