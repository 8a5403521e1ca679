"""Issue 16, REST completeness: each item side by side with the reference Orthanc 1.10.1.

One scratch reference Orthanc and one live pacsbox (waitress on loopback) per module hold
the same few pydicom sample files; each test sends the same requests to both and compares
statuses, headers and bodies (bodies as parsed JSON: the reference pretty-prints).
"""
from __future__ import annotations

import json

import pytest
import requests

from conftest import ORTHANC, read

pytestmark = pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")

FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")


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
        for name in FILES:
            data = read(name)
            for url in (reference, server.url):
                assert requests.post(url + "/instances", data=data).status_code == 200
        _APPS[server.url] = app
        yield reference, server.url
    finally:
        _APPS.pop(server.url, None)
        server.close()
        app.close()


#: pacsbox URL → its app (for the few checks that set up state the REST API cannot).
_APPS: dict = {}


def _ids(url: str, level: str) -> list[str]:
    return sorted(requests.get(f"{url}/{level}").json())


def _both(both, method: str, path: str, **kw) -> tuple[requests.Response, requests.Response]:
    return tuple(requests.request(method, url + path, **kw) for url in both)


def _body(r: requests.Response):
    if not r.content:
        return b""
    try:
        return r.json()
    except ValueError:
        return r.content


def _same(both, method: str, path: str, *, headers_too=(), **kw):
    a, b = _both(both, method, path, **kw)
    assert (a.status_code, _body(a)) == (b.status_code, _body(b)), (method, path)
    for h in headers_too:
        assert a.headers.get(h) == b.headers.get(h), (method, path, h)
    return a, b


# -- 1. method override -------------------------------------------------------------------

def test_method_override_as_the_reference(both):
    inst = _ids(both[0], "instances")[0]
    md = f"/instances/{inst}/metadata"
    steps = [
        ("POST", f"{md}/1024", {"X-HTTP-Method-Override": "PUT"}, b"faked put"),
        ("GET", f"{md}/1024", {}, None),
        ("POST", f"{md}/1024", {"X-HTTP-Method-Override": "delete"}, None),
        ("GET", f"{md}/1024", {}, None),
        ("GET", f"{md}/1025?_method=PUT", {}, None),       # a faked PUT with an empty body
        ("GET", f"{md}/1025", {}, None),
        ("GET", f"{md}/1025?_method=Delete", {}, None),
        ("GET", f"{md}/1025", {}, None),
        ("POST", f"{md}/1026?_method=PUT", {}, b"x"),     # _method only on a GET: 405
        ("GET", f"{md}/1026", {}, None),
        ("PUT", f"{md}/1026", {"X-HTTP-Method-Override": "DELETE"}, None),  # 404: nothing to delete
        ("GET", f"{md}/1026?_method=put", {"X-HTTP-Method-Override": "PUT"}, b"y"),  # GET with a body
        ("GET", f"{md}/1026", {}, None),
        ("POST", "/system", {"X-HTTP-Method-Override": "GET"}, None),  # only PUT/DELETE: 400
        ("GET", "/system?_method=POST", {}, None),
        ("GET", "/system?_method=DELETE", {}, None),  # 405, Allow: GET
    ]
    for method, path, headers, data in steps:
        a, b = _both(both, method, path, headers=headers, data=data)
        assert (a.status_code, _body(a), a.headers.get("Allow")) == (b.status_code, _body(b), b.headers.get("Allow")), \
            (method, path, headers)
    # the faked PUT is stored with the body
    assert requests.get(both[1] + f"{md}/1026").content == b"y"


# -- 2. double slashes ---------------------------------------------------------------------

def test_double_slashes_collapsed_as_the_reference(both):
    inst = _ids(both[0], "instances")[0]
    study = _ids(both[0], "studies")[0]
    for path in (f"/instances/{inst}/attachments/dicom//md5", f"//instances//{inst}//simplified-tags",
                 f"/studies/{study}//series", f"//patients//", f"/instances/{inst}//file"):
        a, b = _same(both, "GET", path)
        assert a.status_code == 200, path


# -- 5. ?short and ?full ---------------------------------------------------------------------

def test_short_and_full_on_resource_routes_as_the_reference(both):
    ref = both[0]
    paths = []
    for level in ("patients", "studies", "series", "instances"):
        paths.append(f"/{level}?expand")
        rid = _ids(ref, level)[0]
        paths.append(f"/{level}/{rid}")
    study = _ids(ref, "studies")[0]
    inst = _ids(ref, "instances")[0]
    paths += [f"/studies/{study}/series", f"/studies/{study}/instances", f"/studies/{study}/patient",
              f"/instances/{inst}/study", f"/instances/{inst}/series"]
    for path in paths:
        sep = "&" if "?" in path else "?"
        for arg in ("short", "full", "short&full", "full&simplify", "simplify"):
            a, b = _both(both, "GET", path + sep + arg)
            assert a.status_code == b.status_code == 200
            ra, rb = a.json(), b.json()
            for r in (ra if isinstance(ra, list) else [ra]) + (rb if isinstance(rb, list) else [rb]):
                r.pop("LastUpdate", None)
                r.pop("FileUuid", None)
            assert ra == rb, path + sep + arg
    short = requests.get(f"{both[1]}/studies/{study}?short").json()
    assert short["PatientMainDicomTags"]["0010,0010"].startswith("CompressedSamples^")
    full = requests.get(f"{both[1]}/studies/{study}?full").json()
    assert full["MainDicomTags"]["0008,0020"] == {"Name": "StudyDate", "Type": "String",
                                                  "Value": short["MainDicomTags"]["0008,0020"]}


# -- 7. /changes?last, /exports?last -----------------------------------------------------------

def test_changes_last_after_clearing_as_the_reference(both):
    ref, ours = both
    for url in both:
        requests.put(f"{url}/instances/{_ids(url, 'instances')[0]}/metadata/1030", data=b"v")
    last = {url: requests.get(url + "/changes?last").json() for url in both}
    for url in both:
        assert len(last[url]["Changes"]) == 1 and last[url]["Last"] == last[url]["Changes"][0]["Seq"] > 0
        assert last[url]["Changes"][0]["ChangeType"] == "UpdatedMetadata"
        assert requests.delete(url + "/changes").status_code == 200
    for url in both:
        seq = last[url]["Last"]
        assert requests.get(url + "/changes?last").json() == {"Changes": [], "Done": True, "Last": seq}
        assert requests.get(url + "/changes").json() == {"Changes": [], "Done": True, "Last": seq}
        assert requests.get(url + "/changes?since=0&limit=5").json() == {"Changes": [], "Done": True, "Last": seq}


def test_exports_last(both):
    ref, ours = both
    _same(both, "GET", "/exports?last")  # empty: {"Done": true, "Exports": [], "Last": 0}
    app = _APPS[ours]
    index = app.ctx.index
    study = app.ctx.resources.get("Study", _ids(ours, "studies")[0])
    inst = app.ctx.resources.get("Instance", _ids(ours, "instances")[0])
    index.log_export(study, "PEER", ["P1", "1.2.3"])
    index.log_export(inst, "MOD", ["P2", "1.2", "1.2.3", "1.2.3.4"])
    everything = requests.get(ours + "/exports").json()
    assert [e["RemoteModality"] for e in everything["Exports"]] == ["PEER", "MOD"]
    last = requests.get(ours + "/exports?last").json()
    assert last == {"Done": True, "Exports": [everything["Exports"][-1]], "Last": everything["Exports"][-1]["Seq"]}
    assert last["Exports"][0]["SOPInstanceUID"] == "1.2.3.4"
    requests.delete(ours + "/exports")
    _same(both, "GET", "/exports?last")


# -- 8. ignore-length --------------------------------------------------------------------------

def _long_file() -> bytes:
    import io
    import warnings

    import pydicom
    ds = pydicom.dcmread(io.BytesIO(read("MR_small.dcm")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.ImageComments = "A" * 300
        ds.add_new(0x00081080, "LO", "C" * 300)  # AdmittingDiagnosesDescription
    ds.SOPInstanceUID = "1.2.3.4.5.6.7.99"
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_ignore_length_as_the_reference(both):
    data = _long_file()
    ids = [requests.post(url + "/instances", data=data).json() for url in both]
    assert ids[0]["ID"] == ids[1]["ID"]
    inst, series = ids[0]["ID"], ids[0]["ParentSeries"]
    for q in ("", "?ignore-length=0020-4000", "?ignore-length=ImageComments", "?ignore-length=00204000",
              "?ignore-length=ImageComments,AdmittingDiagnosesDescription", "?ignore-length=0020-4000,0008-1080",
              "?ignore-length=ImageComments&ignore-length=0008-1080",  # the last argument counts
              "?simplify&ignore-length=ImageComments", "?short&ignore-length=0008-1080", "?ignore-length=",
              "?ignore-length=bogus"):
        _same(both, "GET", f"/instances/{inst}/tags{q}")
        _same(both, "GET", f"/series/{series}/instances-tags{q}")
    tags = requests.get(f"{both[1]}/instances/{inst}/tags?ignore-length=ImageComments").json()
    assert tags["0020,4000"] == {"Name": "ImageComments", "Type": "String", "Value": "A" * 300}
    assert tags["0008,1080"] == {"Name": "AdmittingDiagnosesDescription", "Type": "TooLong", "Value": None}
    # gggg,eeee as one tag (the reference splits it and answers 500 "Unknown DICOM tag")
    short = requests.get(f"{both[1]}/instances/{inst}/tags?short&ignore-length=0020,4000,0008,1080").json()
    assert (short["0020,4000"], short["0008,1080"]) == ("A" * 300, "C" * 300)
    for url in both:
        requests.delete(f"{url}/instances/{inst}")


# -- 9. statistics with the resources' own attachments ----------------------------------------

def test_statistics_count_own_attachments_as_the_reference(both):
    ref = both[0]
    study = _ids(ref, "studies")[0]
    info = requests.get(f"{ref}/studies/{study}").json()
    patient, series = info["ParentPatient"], info["Series"][0]
    inst = requests.get(f"{ref}/series/{series}").json()["Instances"][0]
    for url in both:
        for path, size in ((f"/patients/{patient}", 1000), (f"/studies/{study}", 300), (f"/series/{series}", 70),
                           (f"/instances/{inst}", 5)):
            assert requests.put(f"{url}{path}/attachments/1025", data=b"x" * size).status_code == 200
    try:
        for path in (f"/patients/{patient}", f"/studies/{study}", f"/series/{series}", f"/instances/{inst}"):
            a, b = _same(both, "GET", path + "/statistics")
            assert int(a.json()["DiskSize"]) > int(a.json()["DicomDiskSize"])
    finally:
        for url in both:
            for path in (f"/patients/{patient}", f"/studies/{study}", f"/series/{series}", f"/instances/{inst}"):
                requests.delete(f"{url}{path}/attachments/1025")


# -- 6. empty error answers without Content-Type ----------------------------------------------

def test_empty_error_answers_have_no_content_type_as_the_reference(both):
    inst = _ids(both[0], "instances")[0]
    for method, path, headers in (("PUT", "/system", {}), ("POST", f"/instances/{inst}", {}),
                                  ("GET", "/instances/nope", {}),
                                  ("POST", "/system", {"X-HTTP-Method-Override": "GET"}),
                                  ("OPTIONS", "/system", {}), ("PATCH", "/system", {})):
        a, b = _both(both, method, path, headers=headers)
        assert (a.status_code, a.content, a.headers.get("Content-Type"), a.headers.get("Allow")) == \
            (b.status_code, b.content, b.headers.get("Content-Type"), b.headers.get("Allow")), (method, path)
        assert b.status_code >= 400 and b.content == b"" and "Content-Type" not in b.headers
    # a JSON error body keeps its type; an empty success answer keeps text/plain (as the reference)
    a, b = _both(both, "DELETE", f"/instances/{inst}/metadata/9999")
    assert b.status_code == 404 and b.headers["Content-Type"].startswith("application/json")
    a, b = _both(both, "PUT", f"/instances/{inst}/metadata/1031", data=b"")
    assert a.headers.get("Content-Type") == b.headers.get("Content-Type") == "text/plain"


# -- 12. bulk routes -----------------------------------------------------------------------------

def _strip_times(v):
    if isinstance(v, dict):
        return {k: _strip_times(x) for k, x in v.items()
                if k not in ("LastUpdate", "FileUuid", "ReceptionDate", "RemoteIP", "HttpUsername")}
    if isinstance(v, list):
        return [_strip_times(x) for x in v]
    return v


def test_bulk_content_as_the_reference(both):
    ref = both[0]
    pat, study, series, inst = (_ids(ref, lv) for lv in ("patients", "studies", "series", "instances"))
    everything = pat + study + series + inst
    bodies = [{}, {"Resources": []}, {"Resources": "x"}, {"Resources": [5]}, {"Resources": ["nope"]},
              {"Resources": list(reversed(everything))}, {"Resources": [study[0], study[0], inst[-1]]},
              {"Resources": [inst[0]], "Metadata": False}, {"Resources": [inst[0]], "Metadata": "yes"},
              {"Resources": [inst[0]], "Short": True, "Full": True}, {"Resources": [study[1]], "Full": True},
              {"Resources": [inst[0]], "Short": "x"}, {"Resources": [study[0]], "Level": 5},
              {"Resources": [study[0]], "Level": "bad"}, {"Resources": [study[0]], "Level": "studies"}]
    for level in ("Patient", "Study", "Series", "Instance", "image"):
        bodies.append({"Resources": everything, "Level": level, "Short": True})
        bodies.append({"Resources": [pat[0], inst[-1], "nope"], "Level": level})
    bodies.append([1])
    for body in bodies:
        a, b = _both(both, "POST", "/tools/bulk-content", data=json.dumps(body))
        assert (a.status_code, _strip_times(_body(a))) == (b.status_code, _strip_times(_body(b))), body
    a = requests.post(both[1] + "/tools/bulk-content", data=json.dumps({"Resources": [inst[0]]})).json()
    assert a[0]["Metadata"]["Origin"] == "RestApi" and a[0]["Type"] == "Instance"


def test_bulk_delete_as_the_reference(both):
    for body in ({}, {"Resources": []}, {"Resources": ["nope"]}, {"Resources": [5]}):
        a, b = _both(both, "POST", "/tools/bulk-delete", data=json.dumps(body))
        assert (a.status_code, _body(a)) == (b.status_code, _body(b)), body
        if b.status_code == 200:
            assert a.headers["Content-Type"] == b.headers["Content-Type"] == "text/plain"
    data = read("rtdose.dcm")
    ids = [requests.post(url + "/instances", data=data).json() for url in both]
    extra = requests.post(both[0] + "/instances", data=read("rtstruct.dcm")).json()
    assert requests.post(both[1] + "/instances", data=read("rtstruct.dcm")).json()["ID"] == extra["ID"]
    body = {"Resources": [ids[0]["ParentSeries"], ids[0]["ParentStudy"], "nope", extra["ID"]]}
    before = {url: set(_ids(url, "patients")) for url in both}
    a, b = _both(both, "POST", "/tools/bulk-delete", data=json.dumps(body))
    assert a.status_code == b.status_code == 200 and b.content == b""
    after = {url: set(_ids(url, "patients")) for url in both}
    assert after[both[0]] == after[both[1]]
    assert before[both[1]] - after[both[1]] == {ids[0]["ParentPatient"], extra["ParentPatient"]} - after[both[1]]
    assert ids[0]["ParentPatient"] not in after[both[1]] and extra["ID"] not in _ids(both[1], "instances")


# -- 17. ordered-slices --------------------------------------------------------------------------

def _slice(series_uid: str, n: int, *, position=None, orientation="1\\0\\0\\0\\1\\0", number=None, frames=None,
           study_uid="1.2.826.0.1.3680043.10.1404.16.1") -> bytes:
    import io

    import pydicom
    ds = pydicom.dcmread(io.BytesIO(read("CT_small.dcm")))
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = f"{series_uid}.{n}"
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "InstanceNumber"):
        if kw in ds:
            delattr(ds, kw)
    if position is not None:
        ds.ImagePositionPatient = position
    if orientation is not None:
        ds.ImageOrientationPatient = orientation
    if number is not None:
        ds.InstanceNumber = number
    if frames is not None:
        ds.NumberOfFrames = frames
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_ordered_slices_as_the_reference(both):
    root = "1.2.826.0.1.3680043.10.1404.16."
    series = {
        # a volume along z, uploaded out of order; one multi-frame slice
        root + "2": [dict(position=f"0\\0\\{z}", number=n) for n, z in ((3, 7.5), (1, -2.5), (4, 12.5), (2, 2.5))]
        + [dict(position="0\\0\\20", number=5, frames=3)],
        # oblique orientation, opposite normal on one slice
        root + "3": [dict(position=f"{z}\\{z}\\0", orientation="0.7071068\\-0.7071068\\0\\0\\0\\-1", number=n)
                     for n, z in ((2, 5), (1, 1), (3, 9))],
        # two slices at one position: ordered by IndexInSeries (a sequence)
        root + "4": [dict(position="0\\0\\1", number=n) for n in (2, 1, 3)],
        # no positions: IndexInSeries
        root + "5": [dict(number=n) for n in (5, 3, 4)],
        # neither: 500 CannotOrderSlices (as the reference)
        root + "6": [dict(), dict()],
        # a single instance without anything
        root + "7": [dict(orientation=None)],
        # a non-parallel slice: IndexInSeries
        root + "8": [dict(position="0\\0\\1", number=2), dict(position="0\\0\\2", number=1, orientation="1\\0\\0\\0\\0\\1")],
    }
    for uid, slices in series.items():
        for n, kw in enumerate(slices):
            data = _slice(uid, n, **kw)
            for url in both:
                assert requests.post(url + "/instances", data=data).status_code == 200
    found = requests.post(both[0] + "/tools/find", data=json.dumps(
        {"Level": "Series", "Query": {"StudyInstanceUID": root + "1"}})).json()
    assert len(found) == len(series)
    types = []
    for sid in found:
        a, b = _same(both, "GET", f"/series/{sid}/ordered-slices")
        types.append(b.json()["Type"] if b.status_code == 200 else b.status_code)
    assert sorted(map(str, types)) == sorted(["Volume", "Volume", "Sequence", "Sequence", "500", "Sequence",
                                              "Sequence"])
    _same(both, "GET", "/series/nope/ordered-slices")
    _same(both, "GET", f"/studies/{_ids(both[0], 'studies')[0]}/ordered-slices")


# -- 13. reconstruct, invalidate-tags -------------------------------------------------------------

def test_reconstruct_as_the_reference(both):
    ref, ours = both
    app = _APPS[ours]
    study = _ids(ref, "studies")[0]
    info = requests.get(f"{ours}/studies/{study}").json()
    inst = requests.get(f"{ours}/studies/{study}/instances").json()[0]["ID"]
    before = {p: requests.get(ours + p).json() for p in (f"/studies/{study}", f"/instances/{inst}",
                                                         f"/patients/{info['ParentPatient']}")}
    # stale main tags in the index (as after a change of the main-tag rules)
    index = app.ctx.index
    for level, rid in ((1, study), (3, inst), (0, info["ParentPatient"])):
        res = app.ctx.resources.get(level, rid)
        index.set_main_tags(res.internal_id, {"StudyInstanceUID": "9.9", "PatientID": "stale", "SOPInstanceUID": "9.8"},
                            {"PatientID": "stale"} if level == 0 else {})
    assert requests.get(f"{ours}/studies/{study}").json() != before[f"/studies/{study}"]
    for method, path in (("POST", f"/studies/{study}/reconstruct"), ("POST", "/studies/nope/reconstruct"),
                         ("GET", f"/studies/{study}/reconstruct"), ("POST", f"/instances/{inst}/reconstruct"),
                         ("POST", "/tools/reconstruct"), ("POST", "/tools/invalidate-tags"),
                         ("GET", "/tools/invalidate-tags")):
        a, b = _both(both, method, path)
        assert (a.status_code, _body(a), a.headers.get("Allow")) == (b.status_code, _body(b), b.headers.get("Allow"))
        if a.status_code == 200:
            assert a.headers["Content-Type"] == b.headers["Content-Type"] == "text/plain"
        if path == f"/studies/{study}/reconstruct":
            assert {p: requests.get(ours + p).json() for p in before} == before
    pid = before[f"/patients/{info['ParentPatient']}"]["MainDicomTags"]["PatientID"]
    assert [r["ID"] for r in requests.post(ours + "/tools/lookup", data=pid).json() if r["Type"] == "Patient"] == \
        [info["ParentPatient"]]


def test_reconstruct_all_as_a_job(both):
    ours = both[1]
    r = requests.post(ours + "/tools/reconstruct", data=json.dumps({"Asynchronous": True}))
    assert r.status_code == 200 and r.json()["Path"] == f"/jobs/{r.json()['ID']}"
    import time
    deadline = time.monotonic() + 60
    while True:
        job = requests.get(ours + r.json()["Path"]).json()
        if job["State"] in ("Success", "Failure") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (job["State"], job["Type"], job["Progress"]) == ("Success", "ReconstructAll", 100)
    assert job["Content"]["InstancesCount"] == len(_ids(ours, "instances"))


# -- 4. XML answers ---------------------------------------------------------------------------------

def test_xml_answers_as_the_reference(both):
    ref = both[0]
    study = _ids(ref, "studies")[0]
    inst = _ids(ref, "instances")[0]
    for url in both:
        requests.put(f"{url}/instances/{inst}/metadata/1041", data="a<b&c>\"d'e é".encode())
    checks = [("GET", f"/studies/{study}", None), ("GET", "/studies", None), ("GET", "/series?expand", None),
              ("GET", f"/instances/{inst}/metadata?expand", None), ("GET", "/exports", None),
              ("GET", f"/instances/{inst}/attachments?full", None),
              ("POST", "/tools/find", json.dumps({"Level": "Study", "Query": {}, "Expand": True, "Full": True})),
              ("POST", "/tools/bulk-content", json.dumps({"Resources": []})),
              ("GET", f"/studies/{study}/statistics", None), ("GET", "/instances/nope/tags", None),
              ("GET", f"/instances/{inst}/metadata/1041", None)]
    for accept in ("application/xml", "application/xml;q=0.9", "text/xml", "Application/XML",
                   "application/xml, application/json;q=0.9", "application/json; application/xml"):
        for method, path, body in checks:
            a, b = _both(both, method, path, data=body, headers={"Accept": accept})
            assert a.status_code == b.status_code, (accept, path)
            if a.status_code != 200:
                assert b.headers["Content-Type"].startswith("application/json")  # errors stay JSON
                continue
            assert a.headers["Content-Type"] == b.headers["Content-Type"], (accept, path)
            if a.headers["Content-Type"].startswith("application/xml"):
                if "LastUpdate" in a.text or "FileUuid" in a.text:
                    import re
                    strip = lambda t: re.sub(r"<(LastUpdate|FileUuid)>[^<]*</\1>", "", t)  # noqa: E731
                    assert strip(a.text) == strip(b.text), (accept, path)
                else:
                    assert a.content == b.content, (accept, path)
            else:  # the upload times differ by a second when the two uploads straddle one (seen under load)
                assert _strip_times(_body(a)) == _strip_times(_body(b)), (accept, path)
    xml = requests.get(f"{both[1]}/exports", headers={"Accept": "application/xml"}).text
    assert xml == '<?xml version="1.0" encoding="utf-8"?>\n<root>\n  <Done>true</Done>\n  <Exports />\n' \
                  '  <Last>0</Last>\n</root>\n'


# -- 3. chunked multipart upload -------------------------------------------------------------------

def _form(url, name, size, chunk):
    return requests.post(url + "/instances", files={"files[]": (name, chunk, "application/octet-stream")},
                         headers={"X-File-Name": name, "X-File-Size": str(size)})


def test_chunked_multipart_upload_as_the_reference(both):
    import io

    import pydicom
    files = []
    for n, base in enumerate(("MR_small.dcm", "CT_small.dcm")):
        ds = pydicom.dcmread(io.BytesIO(read(base)))
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.1404.16.30.{n}"
        out = io.BytesIO()
        ds.save_as(out)
        files.append((f"f{n}.dcm", out.getvalue()))
    # two files, chunks interleaved
    (na, a), (nb, b) = files
    steps = [(na, a, a[:4000]), (nb, b, b[:7000]), (na, a, a[4000:9000]), (nb, b, b[7000:]), (na, a, a[9000:])]
    for i, (name, data, chunk) in enumerate(steps):
        for url in both:
            r = _form(url, name, len(data), chunk)
            assert (r.status_code, r.content) == (200, b""), (url, i)
        if i == 3:  # the second file is complete, the first not yet
            for url in both:
                assert requests.post(url + "/tools/lookup", data="1.2.826.0.1.3680043.10.1404.16.30.1").json()
            # only pacsbox is held to "not yet": under CPU load the reference was once seen
            # holding the incomplete first file already (a full-suite run on a busy machine)
            assert requests.post(both[1] + "/tools/lookup", data="1.2.826.0.1.3680043.10.1404.16.30.0").json() == []
    for url in both:
        for n in (0, 1):
            found = requests.post(url + "/tools/lookup", data=f"1.2.826.0.1.3680043.10.1404.16.30.{n}").json()
            assert len(found) == 1
            md5 = requests.get(f"{url}/instances/{found[0]['ID']}/attachments/dicom/md5").text
            import hashlib
            assert md5 == hashlib.md5(files[n][1]).hexdigest()
    assert len(_APPS[both[1]].ctx.chunk_store) == 0


def test_an_incomplete_chunked_upload_is_dropped(live_server):
    s = live_server()
    store = s.app.ctx.chunk_store
    data = read("MR_small.dcm")
    assert _form(s.url, "x.dcm", len(data), data[:1000]).status_code == 200
    assert len(store) == 1    # kept (the default timeout: a slow machine cannot outlast it)
    store.timeout = 0.3       # then a short one, and a wait longer than it
    import time
    time.sleep(0.5)
    assert len(store) == 0  # dropped
    # the rest alone is not a file: it starts a new assembly that never completes
    assert _form(s.url, "x.dcm", len(data), data[1000:]).status_code == 200
    assert requests.get(s.url + "/instances").json() == []
