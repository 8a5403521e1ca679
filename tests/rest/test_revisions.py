"""Revisions of metadata and attachments (issue 16 item 11): ``ETag``, ``If-None-Match``,
``If-Match``, with and without ``CheckRevisions``, side by side with the reference Orthanc
1.10.1 started with the same option.

One deliberate difference: the reference's SQLite index keeps no revision (a GET always
says revision 0 there, whatever the PUT answered), pacsbox keeps them as Orthanc's
PostgreSQL index does. The side-by-side steps stop where that shows; the revisions
themselves are checked on pacsbox alone.
"""
from __future__ import annotations

import pytest
import requests

from conftest import ORTHANC, read
from test_recycling import pair  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")


def _answer(r: requests.Response):
    body = r.json() if r.content[:1] in (b"{", b"[") else r.content
    # (the reference's JSON error bodies have no Content-Type, pacsbox's say application/json)
    return r.status_code, body, r.headers.get("ETag"), r.headers.get("Content-Type") if r.status_code < 400 else ""


@pytest.mark.parametrize("check", [False, True])
def test_etags_as_the_reference(pair, check):  # noqa: F811
    urls = pair(CheckRevisions=check)
    iid = [requests.post(u + "/instances", data=read("CT_small.dcm")).json()["ID"] for u in urls][0]
    md, att = f"/instances/{iid}/metadata/1024", f"/instances/{iid}/attachments/1025"
    e_v1 = '"0-6654c734ccab8f440ff0825eb443dc7f"'  # md5("v1")
    e_abc = '"0-900150983cd24fb0d6963f7d28e17f72"'  # md5("abc")
    steps = [
        ("PUT", md, {}, b"v1"), ("GET", md, {}, None),
        ("GET", md, {"If-None-Match": e_v1}, None), ("GET", md, {"If-None-Match": e_v1.strip('"')}, None),
        ("GET", md, {"If-None-Match": '"1-6654c734ccab8f440ff0825eb443dc7f"'}, None),
        ("GET", md, {"If-None-Match": "garbage"}, None), ("GET", md, {"If-None-Match": "1"}, None),
        ("PUT", md, {}, b"v2"),                                     # 409 with CheckRevisions
        ("PUT", md, {"If-Match": '"0-x"'}, b"v2"), ("PUT", md, {"If-Match": "junk"}, b"v2"),
        ("DELETE", md, {"If-Match": '"0-00000000000000000000000000000000"'}, None),
        ("PUT", att, {}, b"abc"), ("GET", att, {}, None), ("GET", att + "/data", {}, None),
        ("GET", att + "/md5", {}, None), ("GET", att + "/size", {"If-None-Match": e_abc}, None),
        ("GET", att + "/data", {"If-None-Match": "nope"}, None),
        ("PUT", att, {}, b"abcd"), ("PUT", att, {"If-Match": '"3-900150983cd24fb0d6963f7d28e17f72"'}, b"abcd"),
        ("DELETE", att, {}, None),
        ("DELETE", f"/instances/{iid}/attachments/dicom", {}, None),
    ]
    if check:  # the first replacement answers revision 1 on both; then the reference forgets it
        steps += [("PUT", md, {"If-Match": e_v1}, b"v2"), ("DELETE", md, {}, None),
                  ("PUT", att, {"If-Match": e_abc}, b"abcd")]
    for method, path, headers, data in steps:
        a, b = (requests.request(method, u + path, headers=headers, data=data) for u in urls)
        assert _answer(a) == _answer(b), (method, path, headers)


def test_revisions_count_up(live_server):
    s = live_server({"CheckRevisions": True})
    iid = requests.post(s.url + "/instances", data=read("CT_small.dcm")).json()["ID"]
    md = f"{s.url}/instances/{iid}/metadata/1024"
    tag = requests.put(md, data="r0").headers["ETag"]
    assert tag.startswith('"0-')
    for n in range(1, 4):
        r = requests.put(md, data=f"r{n}", headers={"If-Match": tag})
        assert r.status_code == 200, r.text
        tag = r.headers["ETag"]
        assert tag.startswith(f'"{n}-') and requests.get(md).headers["ETag"] == tag
    stale = '"1-' + tag.split("-", 1)[1]
    assert requests.put(md, data="x", headers={"If-Match": stale}).status_code == 409
    assert requests.get(md, headers={"If-None-Match": tag}).status_code == 304
    r = requests.delete(md)
    assert r.status_code == 409 and r.json()["Details"] == 'HTTP header "If-Match" is missing, as "CheckRevisions" is "true"'
    assert requests.delete(md, headers={"If-Match": tag}).status_code == 200
    assert requests.put(md, data="again").headers["ETag"].startswith('"0-')  # a new item: revision 0
    att = f"{s.url}/instances/{iid}/attachments/1025"
    tag = requests.put(att, data=b"a").headers["ETag"]
    r = requests.put(att, data=b"b", headers={"If-Match": tag})
    assert r.headers["ETag"].startswith('"1-') and requests.get(att + "/data").headers["ETag"] == r.headers["ETag"]
    assert requests.get(att + "/data", headers={"If-None-Match": r.headers["ETag"]}).status_code == 304


def test_without_check_revisions_writes_need_no_etag(live_server):
    s = live_server()
    iid = requests.post(s.url + "/instances", data=read("CT_small.dcm")).json()["ID"]
    md = f"{s.url}/instances/{iid}/metadata/1024"
    for v in ("a", "b", "c"):
        assert requests.put(md, data=v).status_code == 200
    assert requests.get(md).headers["ETag"].startswith('"2-')
    assert requests.delete(md).status_code == 200


def test_system_says_check_revisions(pair):  # noqa: F811
    urls = pair(CheckRevisions=True)
    assert [requests.get(u + "/system").json()["CheckRevisions"] for u in urls] == [True, True]
