"""Issue 13 case 18: ``StorageCompression`` (zlib with Orthanc's 8-byte size prefix).

Three 2 MiB all-zero pixel instances take well under 1 MB on disk; ``/statistics`` gives
disk and uncompressed sizes that differ accordingly; ``orthanc_uncompressed_size_mb`` is
the uncompressed size (the reference uses the disk size); every route returns the original
bytes; ``/attachments/dicom/compress``, ``uncompress``, ``is-compressed``,
``compressed-data``, ``compressed-size`` and ``compressed-md5`` work.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import zlib

import falcon.testing
import pacsbox_metrics.plugin as metrics_plugin
import pydicom
from pydicom.uid import generate_uid

from conftest import testfile as sample_path


def zero_instances(n: int) -> list[bytes]:
    template = pydicom.dcmread(sample_path("CT_small.dcm"))
    template.Rows = template.Columns = 1024
    template.BitsAllocated, template.BitsStored, template.HighBit = 16, 12, 11
    template.PixelData = bytes(2 * 1024 * 1024)
    template.StudyInstanceUID = generate_uid()
    out = []
    for i in range(n):
        ds = template.copy()
        ds.file_meta = template.file_meta.copy()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def disk_bytes(root) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _s, fs in os.walk(root) for f in fs
               if len(os.path.basename(d)) == 2 and not f.startswith("index"))


def test_storage_compression(make_app, tmp_path):
    app = make_app({"StorageCompression": True, "StorageDirectory": str(tmp_path / "st")}, plugins=[metrics_plugin])
    c = falcon.testing.TestClient(app)
    files = zero_instances(3)
    ids = [c.simulate_post("/instances", body=f).json["ID"] for f in files]
    assert all(len(f) > 2 * 1024 * 1024 for f in files)
    assert disk_bytes(tmp_path / "st") < 200 * 1024
    stats = c.simulate_get("/statistics").json
    assert int(stats["TotalDiskSize"]) < 200 * 1024
    assert int(stats["TotalUncompressedSize"]) == sum(len(f) for f in files)
    text = c.simulate_get("/tools/metrics-prometheus").text
    mb = float(re.search(r"^orthanc_uncompressed_size_mb (\S+)", text, re.M).group(1))
    assert abs(mb - sum(len(f) for f in files) / 1048576.0) < 0.01
    disk_mb = float(re.search(r"^orthanc_disk_size_mb (\S+)", text, re.M).group(1))
    assert disk_mb < 0.2
    iid, data = ids[0], files[0]
    base = f"/instances/{iid}/attachments/dicom"
    assert c.simulate_get(f"/instances/{iid}/file").content == data
    assert c.simulate_get(f"{base}/data").content == data
    assert pydicom.dcmread(io.BytesIO(c.simulate_get(f"/instances/{iid}/file").content)).Rows == 1024
    assert c.simulate_get(f"/instances/{iid}/simplified-tags").json["Rows"] == "1024"
    assert c.simulate_get(f"{base}/is-compressed").text == "1"
    blob = c.simulate_get(f"{base}/compressed-data").content
    assert struct.unpack_from("<Q", blob)[0] == len(data) and zlib.decompress(blob[8:]) == data
    assert int(c.simulate_get(f"{base}/compressed-size").text) == len(blob) < 100 * 1024
    assert int(c.simulate_get(f"{base}/size").text) == len(data)
    assert c.simulate_get(f"{base}/compressed-md5").text == hashlib.md5(blob).hexdigest()
    assert c.simulate_get(f"{base}/md5").text == hashlib.md5(data).hexdigest()
    assert c.simulate_post(f"{base}/verify-md5").status_code == 200
    # uncompress, then compress again: same content every time
    assert c.simulate_post(f"{base}/uncompress").status_code == 200
    assert c.simulate_get(f"{base}/is-compressed").text == "0"
    assert c.simulate_get(f"{base}/compressed-data").content == data
    assert int(c.simulate_get(f"{base}/compressed-size").text) == len(data)
    assert c.simulate_get(f"/instances/{iid}/file").content == data
    assert c.simulate_post(f"{base}/compress").status_code == 200
    assert c.simulate_get(f"{base}/is-compressed").text == "1"
    assert c.simulate_get(f"/instances/{iid}/file").content == data
    assert disk_bytes(tmp_path / "st") < 200 * 1024          # the replaced files were removed
    # deleting removes the compressed files
    for i in ids:
        assert c.simulate_delete(f"/instances/{i}").status_code == 200
    assert disk_bytes(tmp_path / "st") == 0


def test_without_the_option_nothing_is_compressed(make_app):
    c = falcon.testing.TestClient(make_app())
    data = zero_instances(1)[0]
    iid = c.simulate_post("/instances", body=data).json["ID"]
    base = f"/instances/{iid}/attachments/dicom"
    assert c.simulate_get(f"{base}/is-compressed").text == "0"
    assert c.simulate_get(f"{base}/compressed-data").content == data
    # compress on demand works there too, and reads back
    assert c.simulate_post(f"{base}/compress").status_code == 200
    assert c.simulate_get(f"{base}/is-compressed").text == "1"
    assert c.simulate_get(f"/instances/{iid}/file").content == data
