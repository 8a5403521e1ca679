r"""The REST API side by side with the reference Orthanc 1.10.1 on real files.

The same pydicom sample files are uploaded to a scratch reference Orthanc (``reference``
fixture, ``/usr/sbin/Orthanc``) and to pacsbox; then hundreds of generated requests must
get the same answers from both: ``/tools/find`` bodies built from the stored values
(exact, case-folded, wildcard, list and range matching at every level, including patient
tags below the patient level, which both match against each study's own copy), lists
paged with ``since``/``limit``, ``/tools/lookup``, the pixel data items of ``/content``
and ``/instances-tags``. Answers are compared as parsed JSON (the reference
pretty-prints), statuses included.

Known, deliberate differences are left out: private tag names (pydicom's dictionary
against DCMTK's), ``SC_rgb_jpeg.dcm``, which the reference refuses, and
``J2K_pixelrep_mismatch.dcm``, whose Japanese character set (``ISO 2022 IR 13``) makes the
reference join values with ``¥`` where pacsbox keeps ``\``.
"""
from __future__ import annotations

import json
import random

import pytest
import requests

from conftest import ORTHANC, pydicom_test_files

pytestmark = pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")

SKIP = {"SC_rgb_jpeg.dcm", "J2K_pixelrep_mismatch.dcm"}


@pytest.fixture(scope="module")
def both(reference, tmp_path_factory):
    """(reference URL, pacsbox URL) holding the same sample files."""
    from conftest import LiveServer, free_port
    from pacsbox import create_app

    port = free_port()
    app = create_app({"StorageDirectory": str(tmp_path_factory.mktemp("pb")), "HttpPort": port, "StableAge": 60},
                     plugins=[], load_entrypoints=False)
    server = LiveServer(app, port)
    try:
        stored = 0
        for path in pydicom_test_files():
            if path.rsplit("/", 1)[-1] in SKIP:
                continue
            with open(path, "rb") as f:
                data = f.read()
            a = requests.post(reference + "/instances", data=data)
            b = requests.post(server.url + "/instances", data=data)
            assert a.status_code == b.status_code, path
            stored += a.status_code == 200
        assert stored > 80
        yield reference, server.url
    finally:
        server.close()
        app.close()


#: Fields each server generates on its own.
GENERATED = {"FileUuid", "LastUpdate"}


def _strip_generated(value):
    if isinstance(value, dict):
        return {k: _strip_generated(v) for k, v in value.items() if k not in GENERATED}
    if isinstance(value, list):
        return [_strip_generated(v) for v in value]
    return value


def _answer(r: requests.Response):
    if r.status_code != 200:
        return r.status_code
    if r.headers.get("content-type", "").startswith("application/json"):
        return _strip_generated(r.json())
    return r.content


def same(both, method: str, path: str, **kw) -> tuple:
    ref, ours = both
    return _answer(requests.request(method, ref + path, **kw)), _answer(requests.request(method, ours + path, **kw))


def _values(url: str) -> dict[str, list[str]]:
    out: dict[str, set] = {}
    for level in ("patients", "studies", "series", "instances"):
        for r in requests.get(f"{url}/{level}?expand").json():
            for tags in (r.get("MainDicomTags", {}), r.get("PatientMainDicomTags", {})):
                for k, v in tags.items():
                    if isinstance(v, str):
                        out.setdefault(k, set()).add(v)
    return {k: sorted(v) for k, v in out.items()}


FIND_TAGS = {"Patient": ["PatientName", "PatientID", "PatientBirthDate", "PatientSex"],
             "Study": ["PatientName", "PatientID", "StudyDate", "StudyDescription", "AccessionNumber", "StudyID",
                       "ReferringPhysicianName"],
             "Series": ["Modality", "SeriesDescription", "SeriesNumber", "BodyPartExamined", "PatientName",
                        "StudyDate", "ProtocolName"],
             "Instance": ["InstanceNumber", "ImageComments", "PatientName", "Modality", "SOPInstanceUID"]}


def _patterns(v: str) -> list[str]:
    out = [v, v.lower(), "*"]
    if len(v) > 1:
        out += [v[:1] + "*", "*" + v[-1:], v[:-1] + "?", v[:2] + "*" + v[-1:]]
    return out


def test_find_answers_as_the_reference(both):
    rnd = random.Random(11)
    values = _values(both[0])
    bodies = []
    for level, tags in FIND_TAGS.items():
        for tag in tags:
            for v in rnd.sample(values.get(tag, []), min(2, len(values.get(tag, [])))):
                for p in _patterns(v):
                    bodies.append({"Level": level, "Query": {tag: p}})
                    bodies.append({"Level": level, "Query": {tag: p}, "CaseSensitive": True})
        bodies += [{"Level": level, "Query": {"StudyDate": "19900101-"}},
                   {"Level": level, "Query": {"PatientBirthDate": "-20000101"}},
                   {"Level": level, "Query": {"Modality": "CT\\MR"}},
                   {"Level": level, "Query": {"PatientSex": "F", "PatientName": "*a*"}},
                   {"Level": level, "Query": {"SliceThickness": "5*"}},
                   {"Level": level + "s" if level != "Series" else "SERIES", "Query": {}, "Limit": 3, "Since": 2},
                   {"Level": level, "Query": {}, "Expand": True, "Limit": 4}]
    assert len(bodies) > 300
    differ = [(b, *ab) for b in bodies for ab in [same(both, "POST", "/tools/find", data=json.dumps(b))]
              if ab[0] != ab[1]]
    assert differ == [], json.dumps(differ, indent=1)[:3000]


def test_lists_lookup_and_content_as_the_reference(both):
    ref = both[0]
    checks = [("GET", f"/patients?since={s}&limit={n}") for s, n in
              (("0", "3"), ("-1", "2"), ("2", "-1"), ("9223372036854775808", "2"), ("x", "1"))]
    values = _values(ref)
    for tag in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
        for v in values.get(tag, [])[:6]:
            checks += [("POST", "/tools/lookup", v), ("POST", "/tools/lookup", f" {v.lower()} ")]
    checks.append(("POST", "/tools/lookup", ""))
    for iid in requests.get(ref + "/instances").json()[::7]:
        checks += [("GET", f"/instances/{iid}/content/7fe0-0010"), ("GET", f"/instances/{iid}/content/7fe0-0010/0"),
                   ("GET", f"/instances/{iid}/content/7fe0-0010/1")]
    for sid in requests.get(ref + "/series").json()[::5]:
        checks.append(("GET", f"/series/{sid}/instances-tags?short"))
    differ = []
    for method, path, *body in checks:
        a, b = same(both, method, path, data=body[0] if body else None)
        if a != b:
            differ.append((method, path, body))
    assert len(checks) > 60
    assert differ == []
