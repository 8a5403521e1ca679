"""Issue 13 case 1, the audit: every read-then-write across two transactions survives a
delete landing between the read and the write, answering 404 ``UnknownResource`` (or
succeeding), never 500, with no traceback in the log.

Two kinds of test:

- deterministic: the index write a route makes (``set_protected``, ``set_main_tags``) is
  wrapped so that a ``DELETE`` of the resource runs just before it, inside the request:
  the window the audit found, hit every time (both failed with a 500 ``IntegrityError:
  FOREIGN KEY constraint failed`` before the fix);
- racing, as the anonymize test: split, merge, and archives/media (synchronous and
  asynchronous) loop on a study while another thread deletes every other study (the
  jobs' outputs) or the merged source, over a real HTTP server.
"""
from __future__ import annotations

import logging
import time

import falcon.testing
import pytest
import requests

from builtin.builtin_helpers import make_study
from race_helpers import assert_clean, race


def _upload(client, files):
    answers = [client.simulate_post("/instances", body=data).json for data in files]
    return answers[-1]


def _delete_before(app, client, method: str, url: str) -> list[int]:
    """Make the next ``app.ctx.index.<method>`` call DELETE ``url`` first; returns the
    list that receives the DELETE's status."""
    index = app.ctx.index
    original = getattr(index, method)
    statuses: list[int] = []

    def wrapped(*args, **kwargs):
        setattr(index, method, original)
        statuses.append(client.simulate_delete(url).status_code)
        return original(*args, **kwargs)

    setattr(index, method, wrapped)
    return statuses


@pytest.fixture
def races(make_app, caplog):
    app = make_app({"StableAge": 60, "DicomServerEnabled": False}, load_entrypoints=True)
    caplog.set_level(logging.WARNING)
    yield app, falcon.testing.TestClient(app)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


def test_protect_a_patient_deleted_meanwhile(races):
    app, client = races
    patient = _upload(client, make_study(1, patient_id="PROT", series=1))["ParentPatient"]
    deleted = _delete_before(app, client, "set_protected", f"/patients/{patient}")
    r = client.simulate_put(f"/patients/{patient}/protected", body="1")
    assert deleted == [200]
    assert (r.status_code, r.json["OrthancError"]) == (404, "Unknown resource"), r.text
    assert client.simulate_get("/patients").json == []


def test_reconstruct_a_study_deleted_meanwhile(races):
    app, client = races
    study = _upload(client, make_study(2, patient_id="RECO", series=1))["ParentStudy"]
    deleted = _delete_before(app, client, "set_main_tags", f"/studies/{study}")
    r = client.simulate_post(f"/studies/{study}/reconstruct", json={})
    assert deleted == [200]
    assert (r.status_code, r.json["OrthancError"]) == (404, "Unknown resource"), r.text
    assert client.simulate_get("/studies").json == []


def test_set_main_tags_of_a_deleted_resource_raises_resource_gone(races):
    from pacsbox.index.index import ResourceGoneError

    app, client = races
    ans = _upload(client, make_study(1, patient_id="GONE", series=1))
    res = app.ctx.index.lookup(ans["ParentPatient"], 0)
    assert client.simulate_delete(f"/patients/{ans['ParentPatient']}").status_code == 200
    with pytest.raises(ResourceGoneError) as e:
        app.ctx.index.set_main_tags(res.internal_id, {"PatientID": "GONE"}, {"PatientID": "GONE"},
                                    ans["ParentPatient"])
    assert e.value.http_status == 404


# ---- racing over HTTP ---------------------------------------------------------------------

@pytest.fixture
def http_races(live_server, caplog):
    s = live_server({"StableAge": 60, "DicomServerEnabled": False}, load_entrypoints=True)
    caplog.set_level(logging.WARNING)
    yield s
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


def _studies_except(s, keep):
    def victims(http):
        return [f"{s.url}/studies/{sid}" for sid in http.get(s.url + "/studies", timeout=60).json() if sid not in keep]
    return victims


def test_split_racing_a_delete_of_its_output(http_races):
    s = http_races
    for data in make_study(4, patient_id="SPLIT", series=2):
        assert requests.post(s.url + "/instances", data=data, timeout=60).status_code == 200
    (study,) = requests.get(s.url + "/studies", timeout=60).json()
    series = requests.get(f"{s.url}/studies/{study}/series", timeout=60).json()[0]["ID"]
    statuses, bodies, deleted = race(
        lambda http: http.post(f"{s.url}/studies/{study}/split", json={"Series": [series], "KeepSource": True},
                                  timeout=60), _studies_except(s, {study}))
    assert_clean(statuses, bodies)
    assert deleted > 0 and statuses.get(200, 0) > 0
    assert len(requests.get(f"{s.url}/studies/{study}/instances", timeout=60).json()) == 4


def test_merge_racing_a_delete_of_its_source(http_races):
    s = http_races
    for data in make_study(2, patient_id="MERGE", series=1):
        assert requests.post(s.url + "/instances", data=data, timeout=60).status_code == 200
    (target,) = requests.get(s.url + "/studies", timeout=60).json()
    sources = make_study(3, patient_id="MERGE", series=1)

    def merge(http):
        for data in sources:  # the source comes back before each merge, then races its deletion
            assert http.post(s.url + "/instances", data=data, timeout=60).status_code == 200
        src = [sid for sid in http.get(s.url + "/studies", timeout=60).json() if sid != target]
        return http.post(f"{s.url}/studies/{target}/merge", json={"Resources": src, "KeepSource": True},
                         timeout=60)

    statuses, bodies, deleted = race(merge, _studies_except(s, {target}))
    assert_clean(statuses, bodies)
    assert deleted > 0 and statuses.get(200, 0) > 0


@pytest.mark.parametrize("route,body", [("archive", {}), ("media", {}), ("archive", {"Asynchronous": True})],
                         ids=["archive", "media", "archive-async"])
def test_archive_racing_a_delete_of_its_study(http_races, route, body):
    s = http_races
    files = make_study(6, patient_id="ARCH", series=2)

    def archive(http):
        for data in files:  # the study comes back before each archive, then races its deletion
            assert http.post(s.url + "/instances", data=data, timeout=60).status_code == 200
        study = http.get(s.url + "/studies", timeout=60).json()
        if not study:
            return http.get(s.url + "/system", timeout=60)
        r = http.post(f"{s.url}/studies/{study[0]}/{route}", json=body, timeout=60)
        if r.status_code != 200 or not body.get("Asynchronous"):
            return r
        job = r.json()["ID"]
        deadline = time.monotonic() + 60
        while True:
            info = http.get(f"{s.url}/jobs/{job}", timeout=60).json()
            if info["State"] in ("Success", "Failure") or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert info["State"] in ("Success", "Failure"), info
        if info["State"] == "Failure":  # the job's error, as the reference's: its resource vanished
            assert info["ErrorCode"] in (17, 28), info  # UnknownResource, InexistentFile
        return http.get(f"{s.url}/jobs/{job}/archive", timeout=60) if info["State"] == "Success" else \
            http.get(f"{s.url}/system", timeout=60)

    statuses, bodies, deleted = race(archive, _studies_except(s, set()), calls=15)
    assert_clean(statuses, bodies)
    assert deleted > 0
