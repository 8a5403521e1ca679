"""Issue 13 cases 6 and 7: unbounded input.

- a 1 GiB raw body beyond ``MaximumUploadSize``: 413 with Orthanc's error body, and the
  server's RSS grows by less than 64 MiB (waitress spools it; nothing reads it whole);
- a ~1 MB ZIP holding one 1 GiB member (a ZIP bomb): refused (413) on its header without
  inflating it, RSS flat, with the default options;
- ZIP members above ``MaximumZipMemberSize``, more members than ``MaximumZipMembers``;
- a gzip body that inflates beyond ``MaximumUploadSize``;
- multipart form parts beyond ``MaximumFormParts`` or ``MaximumFormPartSize``;
- JSON bodies above the JSON bound, ``Replace`` values nested or long beyond their bounds.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import select
import socket
import zipfile

import pytest
import requests

from builtin.builtin_helpers import make_study

GIB = 1 << 30


def _rss_mb() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) // 1024


def _send(port: int, path: str, size: int, chunks, content_type: str = "application/octet-stream"):
    """POST ``size`` bytes from ``chunks`` (an iterator) on a raw socket; returns
    (status, body)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode())
        for chunk in chunks:
            if select.select([s], [], [], 0)[0]:
                break  # answered early
            s.sendall(chunk)
        s.settimeout(120)
        answer = b""
        while True:
            part = s.recv(65536)
            if not part:
                break
            answer += part
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("bomb.dcm", "w", force_zip64=True) as f:
            zero = bytes(1 << 20)
            for _ in range(GIB >> 20):
                f.write(zero)
    return buf.getvalue()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_one_gib_raw_upload_refused_with_flat_memory(live_server):
    s = live_server({"MaximumUploadSize": 64})
    before = _rss_mb()
    chunk = bytes(1 << 20)
    status, body = _send(s.port, "/instances", GIB, (chunk for _ in range(GIB >> 20)))
    assert status == 413
    err = json.loads(body)
    assert (err["HttpStatus"], err["Method"], err["Uri"]) == (413, "POST", "/instances")
    assert err["Details"] == "The request body exceeds MaximumUploadSize (67108864 bytes)"
    assert _rss_mb() - before < 64


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_zip_bomb_refused_without_inflating(live_server):
    bomb = _zip_bomb()
    assert len(bomb) < 8 << 20
    s = live_server()
    before = _rss_mb()
    r = requests.post(s.url + "/instances", data=bomb, timeout=120)
    assert r.status_code == 413, r.text
    assert "refused as a ZIP bomb" in r.json()["Details"]
    assert _rss_mb() - before < 64
    assert requests.get(s.url + "/instances", timeout=30).json() == []


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_member_and_count_bounds(live_server):
    files = make_study(3, patient_id="ZIP", series=1)
    s = live_server({"MaximumZipMemberSize": 1, "MaximumZipMembers": 3})
    # within the bounds: stored, one answer per member
    r = requests.post(s.url + "/instances", data=_zip({f"{i}.dcm": f for i, f in enumerate(files)}), timeout=60)
    assert r.status_code == 200 and [a["Status"] for a in r.json()] == ["Success"] * 3
    # a member above MaximumZipMemberSize (1 MB; random bytes: no ZIP-bomb ratio)
    big = os.urandom((1 << 20) + 1)
    r = requests.post(s.url + "/instances", data=_zip({"big.dcm": big}), timeout=60)
    assert r.status_code == 413
    assert r.json()["Details"] == "ZIP member 'big.dcm' exceeds MaximumZipMemberSize (1048576 bytes)"
    # more members than MaximumZipMembers
    r = requests.post(s.url + "/instances", data=_zip({f"{i}.dcm": b"x" for i in range(4)}), timeout=60)
    assert r.status_code == 413
    assert r.json()["Details"] == "The ZIP archive has 4 members, more than MaximumZipMembers (3)"


def _form(parts: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body with one file part per (name, bytes); returns (body, content type)."""
    boundary = "pacsboxBoundary7MA4YWxk"
    out = io.BytesIO()
    for name, data in parts:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="files[]"; filename="{name}"\r\n'
                  "Content-Type: application/dicom\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def test_multipart_part_count_and_size_bounds(live_server):
    """Case 7: the parts of a form upload are bounded in number (``MaximumFormParts``) and
    in size (``MaximumFormPartSize``), each with a 413 in Orthanc's error format."""
    s = live_server({"MaximumFormParts": 70, "MaximumFormPartSize": 1})
    # 70 parts, beyond falcon's own 64 (which ended the form silently): every one stored
    files = make_study(70, patient_id="FORM", series=1)
    body, ctype = _form([(f"{i}.dcm", f) for i, f in enumerate(files)])
    r = requests.post(s.url + "/instances", data=body, headers={"Content-Type": ctype}, timeout=120)
    assert (r.status_code, r.content) == (200, b"")
    assert len(requests.get(s.url + "/instances", timeout=60).json()) == 70
    # one part more than MaximumFormParts
    body, ctype = _form([(f"{i}.dcm", files[0]) for i in range(71)])
    r = requests.post(s.url + "/instances", data=body, headers={"Content-Type": ctype}, timeout=60)
    assert r.status_code == 413
    err = r.json()
    assert (err["HttpStatus"], err["Method"], err["Uri"]) == (413, "POST", "/instances")
    assert err["Details"] == "The form has more than 70 parts (MaximumFormParts)"
    # a part above MaximumFormPartSize (1 MB)
    body, ctype = _form([("big.dcm", os.urandom((1 << 20) + 1))])
    r = requests.post(s.url + "/instances", data=body, headers={"Content-Type": ctype}, timeout=60)
    assert r.status_code == 413
    assert r.json()["Details"] == "Form part 'files[]' exceeds MaximumFormPartSize (1048576 bytes)"
    # a chunked upload announcing a file above it: refused before any chunk is kept
    body, ctype = _form([("big.dcm", b"x" * 100)])
    r = requests.post(s.url + "/instances", data=body, timeout=60,
                      headers={"Content-Type": ctype, "X-File-Name": "big.dcm", "X-File-Size": str(2 << 20)})
    assert r.status_code == 413
    assert r.json()["Details"] == "The uploaded file 'big.dcm' exceeds MaximumFormPartSize (1048576 bytes)"
    assert len(requests.get(s.url + "/instances", timeout=60).json()) == 70


def test_multipart_part_above_the_spool_threshold_is_stored(live_server):
    """A form part larger than ``UploadSpoolThreshold`` goes through a temporary file and
    is stored whole."""
    s = live_server({"UploadSpoolThreshold": 0})
    data = make_study(1, patient_id="SPOOL", series=1)[0]
    body, ctype = _form([("a.dcm", data)])
    r = requests.post(s.url + "/instances", data=body, headers={"Content-Type": ctype}, timeout=60)
    assert r.status_code == 200
    (iid,) = requests.get(s.url + "/instances", timeout=60).json()
    assert requests.get(f"{s.url}/instances/{iid}/file", timeout=60).content == data


def test_gzip_body_inflating_beyond_the_limit(live_server):
    s = live_server({"MaximumUploadSize": 1})
    body = gzip.compress(bytes(3 << 20))
    r = requests.post(s.url + "/instances", data=body, headers={"Content-Encoding": "gzip"}, timeout=60)
    assert r.status_code == 413
    assert r.json()["Details"] == "The inflated request body exceeds MaximumUploadSize (1048576 bytes)"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_gzip_bomb_refused_without_a_limit(live_server):
    """No ``MaximumUploadSize``: a gzip-encoded body inflating past 200 times its size
    (beyond 64 MiB) is refused with 413, inflated in pieces to the spool, memory flat; a
    JSON body inflating past the JSON bound is refused too."""
    s = live_server()
    bomb = gzip.compress(bytes(GIB), compresslevel=1)
    before = _rss_mb()
    r = requests.post(s.url + "/instances", data=bomb, headers={"Content-Encoding": "gzip"}, timeout=300)
    assert r.status_code == 413
    bound = max(64 << 20, 200 * len(bomb))
    assert r.json()["Details"] == (f"The gzip request body inflates beyond {bound} bytes (200 times its size): "
                                   "refused as a gzip bomb")
    assert _rss_mb() - before < 64
    body = gzip.compress(b"[" + b" " * (17 << 20) + b"]")
    r = requests.post(s.url + "/tools/find", data=body, timeout=60,
                      headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert "inflated" in r.json()["Details"]
    r = requests.post(s.url + "/instances", data=b"\x1f\x8b\x08\x00garbage", timeout=60,
                      headers={"Content-Encoding": "gzip"})
    assert (r.status_code, r.json()["Details"]) == (400, "Corrupted gzip body")


def test_json_body_and_replace_bounds(live_server):
    s = live_server()
    files = make_study(1, patient_id="JSON", series=1)
    study = requests.post(s.url + "/instances", data=files[0], timeout=30).json()["ParentStudy"]
    # a JSON body above 16 MiB: 413 before it is read or parsed
    huge = b'{"Replace": {"StudyDescription": "' + b"x" * (17 << 20) + b'"}}'
    for path in (f"/studies/{study}/modify", f"/studies/{study}/anonymize", "/tools/create-archive"):
        r = requests.post(s.url + path, data=huge, timeout=60)
        assert r.status_code == 413, (path, r.status_code)
        assert r.json()["Details"] == "The JSON request body exceeds the JSON body bound (16777216 bytes)"
    # a /tools/find query above 1 MiB
    query = {"Level": "Study", "Query": {"PatientName": "*" + "A" * (1 << 20)}}
    r = requests.post(s.url + "/tools/find", json=query, timeout=60)
    assert r.status_code == 413
    assert r.json()["Details"] == "The /tools/find query exceeds the query bound (1048576 bytes)"
    assert requests.post(s.url + "/tools/find", json={"Level": "Study", "Query": {}}, timeout=60).json() == [study]
    # Replace nested beyond 16 sequences
    value: object = "x"
    for _ in range(20):
        value = [{"CodeMeaning": "a", "ContentSequence": value}] if isinstance(value, list) else [{"CodeMeaning": value}]
    r = requests.post(f"{s.url}/studies/{study}/modify", json={"Replace": {"ContentSequence": value}}, timeout=60)
    assert r.status_code == 400
    assert "nests more than 16 sequences" in r.json()["Details"]
