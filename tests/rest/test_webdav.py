"""WebDAV (issue 16 item 18): the tree side by side with the reference Orthanc 1.10.1
(``WebDavEnabled``), and a real WebDAV client library (``webdav4``) browsing, downloading
and uploading."""
from __future__ import annotations

import re

import pytest
import requests

from conftest import ORTHANC, read
from test_recycling import pair  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")


def _listing(url: str, path: str, depth: str = "1"):
    r = requests.request("PROPFIND", url + path, headers={"Depth": depth})
    if r.status_code != 207:
        return r.status_code, []
    entries = re.findall(r"<D:href>([^<]*)</D:href>.*?<D:displayname>([^<]*)</D:displayname>(.*?)</D:prop>",
                         r.text, re.S)
    out = []
    for href, name, props in entries:
        size = re.search(r"<D:getcontentlength>(\d+)</D:getcontentlength>", props)
        ctype = re.search(r"<D:getcontenttype>([^<]*)</D:getcontenttype>", props)
        is_json = ctype and "json" in ctype.group(1)
        out.append((href, name, "<D:collection" in props, None if is_json or not size else int(size.group(1)),
                    ctype.group(1).split(";")[0] if ctype else None))
    return 207, out


def test_tree_as_the_reference(pair):  # noqa: F811
    urls = pair(WebDavEnabled=True)
    for u in urls:
        for name in ("CT_small.dcm", "MR_small.dcm"):
            assert requests.post(u + "/instances", data=read(name)).status_code == 200
    seen = 0
    todo = ["/webdav/"]
    while todo:
        path = todo.pop()
        for depth in ("0", "1"):
            a, b = (_listing(u, path, depth) for u in urls)
            # (the order of a folder's entries is the client's business: compared sorted)
            assert (a[0], a[1][:1], sorted(a[1][1:])) == (b[0], b[1][:1], sorted(b[1][1:])), (path, depth)
        for href, name, folder, size, ctype in a[1][1:]:
            seen += 1
            if folder:
                todo.append(href + "/")
            elif href.endswith(".dcm"):
                fa, fb = (requests.get(u + href) for u in urls)
                assert fa.status_code == fb.status_code == 200 and fa.content == fb.content
                assert fb.headers["Content-Type"] == "application/dicom"
    assert seen > 20
    assert _listing(urls[1], "/webdav/nope/")[0] == 404


def test_webdav_client(live_server):
    webdav4 = pytest.importorskip("webdav4.client")
    s = live_server()
    assert requests.post(s.url + "/instances", data=read("CT_small.dcm")).status_code == 200
    client = webdav4.Client(s.url + "/webdav")
    assert sorted(e["name"].rstrip("/").split("/")[-1] for e in client.ls("/", detail=True)) == \
        ["by-dates", "by-patients", "by-studies", "by-uids", "uploads"]
    study = client.ls("by-uids", detail=False)[0]
    series = [p for p in client.ls(study, detail=False) if not p.endswith(".json")][0]
    files = client.ls(series, detail=True)
    dcm = [f for f in files if f["name"].endswith(".dcm")][0]
    assert dcm["type"] == "file" and dcm["content_length"] == len(read("CT_small.dcm"))
    import io
    buf = io.BytesIO()
    client.download_fileobj(dcm["name"], buf)
    assert buf.getvalue() == read("CT_small.dcm")
    client.upload_fileobj(io.BytesIO(read("MR_small.dcm")), "uploads/mr.dcm", overwrite=True)
    assert len(requests.get(s.url + "/instances").json()) == 2
    assert client.ls("uploads", detail=False) == []


def test_webdav_disabled(live_server):
    s = live_server({"WebDavEnabled": False})
    assert requests.request("PROPFIND", s.url + "/webdav/", headers={"Depth": "1"}).status_code in (400, 404)
