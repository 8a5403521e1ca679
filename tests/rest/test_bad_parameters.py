"""Out-of-range numbers and pathological JSON get Orthanc errors, never a 500."""
from __future__ import annotations

import json

import pytest

from dicomgen import instance

HUGE = "99999999999999999999"


def test_changes_and_exports_clamp_huge_limits(client):
    client.simulate_post("/instances", body=instance())
    r = client.simulate_get("/changes", query_string=f"limit={HUGE}")
    assert r.status_code == 200 and [c["ChangeType"] for c in r.json["Changes"]] == \
        ["NewInstance", "NewSeries", "NewStudy", "NewPatient"]
    r = client.simulate_get("/exports", query_string=f"since={HUGE}&limit={HUGE}")
    assert r.status_code == 200 and r.json["Exports"] == []


def test_list_routes_refuse_out_of_range_paging(client):
    r = client.simulate_get("/instances", query_string=f"since=0&limit={HUGE}")
    assert r.status_code == 400 and r.json["OrthancStatus"] == 5


@pytest.mark.parametrize("path", ["/tools/find", "/tools/bulk-anonymize"])
def test_deeply_nested_json_is_a_bad_request(client, path):
    body = "[" * 100000 + "]" * 100000
    r = client.simulate_post(path, body=body)
    # /tools/find answers any unparsable body with "Bad request", as the reference
    assert r.status_code == 400 and r.json["OrthancStatus"] == (8 if path == "/tools/find" else 15)
    assert client.simulate_get("/system").status_code == 200


def test_priority_must_fit_an_integer(client):
    study = client.simulate_post("/instances", body=instance()).json["ParentStudy"]
    r = client.simulate_post(f"/studies/{study}/anonymize", body=json.dumps({"Priority": 2 ** 70}))
    assert r.status_code == 400 and r.json["Details"] == "Integer value expected in field: Priority"
    assert client.simulate_get("/jobs").json == []
