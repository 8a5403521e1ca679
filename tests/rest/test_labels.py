"""Labels (Orthanc 1.12, issue 16 item 16): ``/{level}/{id}/labels[/{label}]`` and
``/tools/labels``, on a live server (the reference 1.10.1 has no labels; the behaviour
follows the Orthanc Book and 1.12's REST API)."""
from __future__ import annotations

import requests

from conftest import read


def test_labels_routes(live_server):
    s = live_server()
    up = requests.post(s.url + "/instances", data=read("CT_small.dcm")).json()
    other = requests.post(s.url + "/instances", data=read("MR_small.dcm")).json()
    study, inst = up["ParentStudy"], up["ID"]
    u = s.url
    assert requests.get(f"{u}/studies/{study}/labels").json() == []
    assert requests.get(u + "/tools/labels").json() == []
    for label in ("zeta", "Alpha_1", "b-2", "zeta"):
        r = requests.put(f"{u}/studies/{study}/labels/{label}")
        assert (r.status_code, r.content, r.headers["Content-Type"]) == (200, b"", "text/plain")
    assert requests.put(f"{u}/instances/{inst}/labels/only-instance").status_code == 200
    assert requests.put(f"{u}/patients/{other['ParentPatient']}/labels/zeta").status_code == 200
    assert requests.get(f"{u}/studies/{study}/labels").json() == ["Alpha_1", "b-2", "zeta"]
    assert requests.get(f"{u}/instances/{inst}/labels").json() == ["only-instance"]
    assert requests.get(f"{u}/series/{up['ParentSeries']}/labels").json() == []
    assert requests.get(u + "/tools/labels").json() == ["Alpha_1", "b-2", "only-instance", "zeta"]
    r = requests.get(f"{u}/studies/{study}/labels/zeta")
    assert (r.status_code, r.content) == (200, b"")
    r = requests.get(f"{u}/studies/{study}/labels/only-instance")
    assert (r.status_code, r.content) == (404, b"")
    # labels are per level: the study's ID is no instance
    assert requests.get(f"{u}/instances/{study}/labels").status_code == 404
    assert requests.put(f"{u}/instances/{study}/labels/x").status_code == 404
    # invalid labels
    for bad in ("with space", "é", "a" * 65, "dot.ted"):
        r = requests.put(f"{u}/studies/{study}/labels/{bad}")
        assert r.status_code == 400 and r.json()["OrthancStatus"] == 3, bad
        assert "A label must be a non-empty, alphanumeric string" in r.json()["Details"]
    assert requests.put(f"{u}/studies/{study}/labels/{'a' * 64}").status_code == 200
    assert requests.delete(f"{u}/studies/{study}/labels/{'a' * 64}").status_code == 200
    # remove (twice: no error)
    for _ in range(2):
        r = requests.delete(f"{u}/studies/{study}/labels/b-2")
        assert (r.status_code, r.content) == (200, b"")
    assert requests.get(f"{u}/studies/{study}/labels").json() == ["Alpha_1", "zeta"]
    # method override reaches the label routes too
    assert requests.post(f"{u}/studies/{study}/labels/viaPost", headers={"X-HTTP-Method-Override": "PUT"}).ok
    assert "viaPost" in requests.get(f"{u}/studies/{study}/labels").json()
    # the labels go with their resource
    assert requests.delete(f"{u}/patients/{up['ParentPatient']}").status_code == 200
    assert requests.get(u + "/tools/labels").json() == ["zeta"]
    assert s.app.ctx.index.all_labels() == ["zeta"]


def test_labels_survive_a_restart(make_app, tmp_path):
    import falcon.testing
    cfg = {"StorageDirectory": str(tmp_path / "db")}
    app = make_app(cfg)
    c = falcon.testing.TestClient(app)
    sid = c.simulate_post("/instances", body=read("CT_small.dcm")).json["ParentSeries"]
    assert c.simulate_put(f"/series/{sid}/labels/kept").status_code == 200
    app.close()
    c = falcon.testing.TestClient(make_app(cfg))
    assert c.simulate_get(f"/series/{sid}/labels").json == ["kept"]
    assert c.simulate_get(f"/series/{sid}/labels/kept").status_code == 200
