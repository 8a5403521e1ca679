"""``/changes``, ``/exports``, stability (``StableAge``) and series completeness, as
Orthanc 1.10.1 (reference sections 2.3 and 2.8; checked on the reference server)."""
from __future__ import annotations

import time

import falcon.testing
import pytest

from pacsbox import orthanc_id as oid

import dicomgen as g


def kinds(changes):
    return [(c["Seq"], c["ChangeType"], c["ResourceType"]) for c in changes]


def test_changes_of_new_uploads_and_paging(client):
    client.simulate_post("/instances", body=g.instance("P1", "1.1", "1.1.1", "1.1.1.1"))
    client.simulate_post("/instances", body=g.instance("P1", "1.1", "1.1.1", "1.1.1.2"))
    client.simulate_post("/instances", body=g.instance("P2", "2.1", "2.1.1", "2.1.1.1"))
    everything = client.simulate_get("/changes").json
    assert kinds(everything["Changes"]) == [
        (1, "NewInstance", "Instance"), (2, "NewSeries", "Series"), (3, "NewStudy", "Study"),
        (4, "NewPatient", "Patient"), (5, "NewInstance", "Instance"), (6, "NewInstance", "Instance"),
        (7, "NewSeries", "Series"), (8, "NewStudy", "Study"), (9, "NewPatient", "Patient")]
    assert everything["Done"] is True and everything["Last"] == 9
    first = everything["Changes"][0]
    iid = oid("P1", "1.1", "1.1.1", "1.1.1.1")
    assert first["ID"] == iid and first["Path"] == f"/instances/{iid}" and len(first["Date"]) == 15
    page = client.simulate_get("/changes", query_string="since=2&limit=2").json
    assert kinds(page["Changes"]) == [(3, "NewStudy", "Study"), (4, "NewPatient", "Patient")]
    assert page["Done"] is False and page["Last"] == 4
    assert client.simulate_get("/changes", query_string="limit=0").json == {"Changes": [], "Done": False, "Last": 9}
    assert client.simulate_get("/changes", query_string="since=100").json == {"Changes": [], "Done": True, "Last": 9}
    last = client.simulate_get("/changes", query_string="last").json
    assert kinds(last["Changes"]) == [(9, "NewPatient", "Patient")] and last["Last"] == 9 and last["Done"] is True
    # a bad value is ignored, as the reference does
    assert client.simulate_get("/changes", query_string="since=x").json == everything
    r = client.simulate_delete("/changes")
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"", "text/plain")
    assert client.simulate_get("/changes").json == {"Changes": [], "Done": True, "Last": 9}
    client.simulate_post("/instances", body=g.instance("P3", "3.1", "3.1.1", "3.1.1.1"))
    assert client.simulate_get("/changes").json["Changes"][0]["Seq"] == 10


def test_exports_log(client):
    assert client.simulate_get("/exports").json == {"Exports": [], "Done": True, "Last": 0}
    r = client.simulate_delete("/exports")
    assert (r.status_code, r.content) == (200, b"")


def test_deleting_removes_the_changes_of_deleted_resources(client):
    client.simulate_post("/instances", body=g.instance("P1", "1.1", "1.1.1", "1.1.1.1"))
    client.simulate_post("/instances", body=g.instance("P2", "2.1", "2.1.1", "2.1.1.1"))
    client.simulate_delete(f"/patients/{oid('P1')}")
    assert [c["Seq"] for c in client.simulate_get("/changes").json["Changes"]] == [5, 6, 7, 8]


@pytest.fixture
def quick(make_app):
    app = make_app({"StableAge": 1})
    return falcon.testing.TestClient(app)


def _wait_for(predicate, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_stability_after_stable_age(quick):
    c = quick
    c.simulate_post("/instances", body=g.instance("P1", "1.1", "1.1.1", "1.1.1.1"))
    c.simulate_post("/instances", body=g.instance("P1", "1.1", "1.1.1", "1.1.1.2"))
    pid, stid, seid = oid("P1"), oid("P1", "1.1"), oid("P1", "1.1", "1.1.1")
    assert [c.simulate_get(p).json["IsStable"] for p in (f"/patients/{pid}", f"/studies/{stid}",
                                                        f"/series/{seid}")] == [False, False, False]
    _wait_for(lambda: c.simulate_get(f"/patients/{pid}").json["IsStable"])
    assert c.simulate_get(f"/studies/{stid}").json["IsStable"] and c.simulate_get(f"/series/{seid}").json["IsStable"]
    changes = c.simulate_get("/changes").json["Changes"]
    assert kinds(changes[5:]) == [(6, "StableSeries", "Series"), (7, "StableStudy", "Study"),
                                  (8, "StablePatient", "Patient")]
    assert [ch["ID"] for ch in changes[5:]] == [seid, stid, pid]
    # a new instance makes its parents unstable again, and stable once more after StableAge
    c.simulate_post("/instances", body=g.instance("P1", "1.1", "1.1.1", "1.1.1.3"))
    assert c.simulate_get(f"/series/{seid}").json["IsStable"] is False
    _wait_for(lambda: c.simulate_get(f"/series/{seid}").json["IsStable"])
    _wait_for(lambda: len(c.simulate_get("/changes").json["Changes"]) == 12)
    assert [ch["ChangeType"] for ch in c.simulate_get("/changes").json["Changes"][8:]] == [
        "NewInstance", "StableSeries", "StableStudy", "StablePatient"]


def test_not_stable_before_stable_age(client):
    client.simulate_post("/instances", body=g.instance())
    time.sleep(1.5)  # StableAge is 60 s in the default test app
    assert client.simulate_get(f"/patients/{oid('P1')}").json["IsStable"] is False
    assert [ch["ChangeType"] for ch in client.simulate_get("/changes").json["Changes"]] == [
        "NewInstance", "NewSeries", "NewStudy", "NewPatient"]


def _series(client, uid):
    return client.simulate_get(f"/series/{oid('PST', '6.1', uid)}").json


def _up(client, series, sop, **tags):
    r = client.simulate_post("/instances", body=g.instance("PST", "6.1", series, sop, **tags))
    assert r.json["Status"] == "Success"


def test_series_completeness(client):
    t = {"ImagesInAcquisition": "3", "NumberOfTemporalPositions": "1"}
    _up(client, "6.1.1", "6.1.1.1", InstanceNumber="1", **t)
    _up(client, "6.1.1", "6.1.1.2", InstanceNumber="2", **t)
    s = _series(client, "6.1.1")
    assert (s["ExpectedNumberOfInstances"], s["Status"]) == (3, "Missing")
    _up(client, "6.1.1", "6.1.1.3", InstanceNumber="3", **t)
    s = _series(client, "6.1.1")
    assert (s["ExpectedNumberOfInstances"], s["Status"]) == (3, "Complete")
    assert client.simulate_get("/changes").json["Changes"][-1]["ChangeType"] == "CompletedSeries"
    meta = client.simulate_get(f"/series/{s['ID']}/metadata", query_string="expand").json
    assert meta["ExpectedNumberOfInstances"] == "3"
    two = {"ImagesInAcquisition": "2", "NumberOfTemporalPositions": "1"}
    _up(client, "6.1.2", "6.1.2.1", InstanceNumber="1", **two)
    _up(client, "6.1.2", "6.1.2.2", InstanceNumber="1", **two)
    assert _series(client, "6.1.2")["Status"] == "Inconsistent"  # the same index twice
    _up(client, "6.1.3", "6.1.3.1", InstanceNumber="5", **t)
    assert _series(client, "6.1.3")["Status"] == "Inconsistent"  # out of range
    _up(client, "6.1.4", "6.1.4.1", CardiacNumberOfImages="1", InstanceNumber="1")
    assert (_series(client, "6.1.4")["ExpectedNumberOfInstances"], _series(client, "6.1.4")["Status"]) == (1, "Complete")
    _up(client, "6.1.5", "6.1.5.1", NumberOfSlices=2, NumberOfTimeSlices=2, InstanceNumber="4")
    assert (_series(client, "6.1.5")["ExpectedNumberOfInstances"], _series(client, "6.1.5")["Status"]) == (4, "Missing")
    _up(client, "6.1.6", "6.1.6.1", ImagesInAcquisition="2", NumberOfTemporalPositions="2", InstanceNumber="1")
    assert _series(client, "6.1.6")["ExpectedNumberOfInstances"] == 4
    _up(client, "6.1.7", "6.1.7.1", **two)  # no InstanceNumber: not counted
    assert _series(client, "6.1.7")["Status"] == "Missing"
    _up(client, "6.1.8", "6.1.8.1", ImagesInAcquisition="3", InstanceNumber="1")  # no temporal positions
    assert (_series(client, "6.1.8")["ExpectedNumberOfInstances"], _series(client, "6.1.8")["Status"]) == (None, "Unknown")
    _up(client, "6.1.9", "6.1.9.1", ImageIndex=1, ImagesInAcquisition="1", NumberOfTemporalPositions="1")
    assert _series(client, "6.1.9")["Status"] == "Complete"  # ImageIndex when InstanceNumber is absent
    completed = [ch["ID"] for ch in client.simulate_get("/changes").json["Changes"]
                 if ch["ChangeType"] == "CompletedSeries"]
    assert completed == [oid("PST", "6.1", "6.1.1"), oid("PST", "6.1", "6.1.4"), oid("PST", "6.1", "6.1.9")]
