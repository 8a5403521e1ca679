"""``/tools/find`` extensions of Orthanc 1.11-1.12.5, ``/tools/count-resources`` and
``requestedTags`` (issue 16 item 15). The reference 1.10.1 has none of them: the expected
values are computed from the uploaded files."""
from __future__ import annotations

import json

import pytest
import requests

from conftest import read
from test_rest_completeness import _slice


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import LiveServer, free_port
    from pacsbox import create_app

    port = free_port()
    app = create_app({"StorageDirectory": str(tmp_path_factory.mktemp("pb")), "HttpPort": port},
                     plugins=[], load_entrypoints=False)
    s = LiveServer(app, port)
    try:
        for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
            assert requests.post(s.url + "/instances", data=read(name)).ok
        root = "1.2.826.0.1.3680043.10.1404.15."
        for n in range(3):  # one study, two series (CT x3 ... ), for the counters
            assert requests.post(s.url + "/instances", data=_slice(root + "2", n, position=f"0\\0\\{n}", number=n + 1,
                                                                   study_uid=root + "1")).ok
        assert requests.post(s.url + "/instances", data=_slice(root + "3", 0, number=1, study_uid=root + "1")).ok
        yield s
    finally:
        s.close()
        app.close()


def find(url, body, route="/tools/find"):
    r = requests.post(url + route, data=json.dumps(body))
    assert r.status_code == 200, r.text
    return r.json()


def test_count_resources(server):
    u = server.url
    for level in ("Patient", "Study", "Series", "Instance"):
        all_ = find(u, {"Level": level, "Query": {}})
        assert find(u, {"Level": level, "Query": {}}, "/tools/count-resources") == {"Count": len(all_)}
        assert find(u, {"Level": level, "Query": {}, "Limit": 1}, "/tools/count-resources") == {"Count": len(all_)}
    assert find(u, {"Level": "Study", "Query": {"PatientName": "Compressed*"}}, "/tools/count-resources") == \
        {"Count": len(find(u, {"Level": "Study", "Query": {"PatientName": "Compressed*"}}))}
    r = requests.post(u + "/tools/count-resources", data=json.dumps({"Level": "Nope", "Query": {}}))
    assert r.status_code == 400


def test_labels_and_parents(server):
    u = server.url
    studies = find(u, {"Level": "Study", "Query": {}})
    a, b = studies[0], studies[1]
    requests.put(f"{u}/studies/{a}/labels/red")
    requests.put(f"{u}/studies/{a}/labels/blue")
    requests.put(f"{u}/studies/{b}/labels/red")
    try:
        assert find(u, {"Level": "Study", "Labels": ["red"]}) == sorted([a, b])
        assert find(u, {"Level": "Study", "Query": {}, "Labels": ["red", "blue"]}) == [a]
        assert find(u, {"Level": "Study", "Query": {}, "Labels": ["red", "blue"], "LabelsConstraint": "Any"}) == \
            sorted([a, b])
        assert find(u, {"Level": "Study", "Query": {}, "Labels": ["blue"], "LabelsConstraint": "None"}) == \
            sorted(set(studies) - {a})
        assert find(u, {"Level": "Study", "Labels": ["red"]}, "/tools/count-resources") == {"Count": 2}
        assert requests.post(u + "/tools/find", data=json.dumps(
            {"Level": "Study", "Labels": ["x"], "LabelsConstraint": "Some"})).status_code == 400
    finally:
        for s, lab in ((a, "red"), (a, "blue"), (b, "red")):
            requests.delete(f"{u}/studies/{s}/labels/{lab}")
    root = "1.2.826.0.1.3680043.10.1404.15."
    study = requests.post(u + "/tools/lookup", data=root + "1").json()[0]["ID"]
    series = find(u, {"Level": "Series", "ParentStudy": study})
    assert series == sorted(requests.get(f"{u}/studies/{study}").json()["Series"]) and len(series) == 2
    inst = find(u, {"Level": "Instance", "ParentStudy": study, "Query": {"InstanceNumber": "1"}})
    assert len(inst) == 2
    patient = requests.get(f"{u}/studies/{study}").json()["ParentPatient"]
    # the generated slices share CT_small's patient: 4 + 1 instances
    assert find(u, {"Level": "Instance", "ParentPatient": patient}, "/tools/count-resources") == {"Count": 5}
    assert requests.post(u + "/tools/find", data=json.dumps(
        {"Level": "Study", "ParentSeries": series[0]})).status_code == 400


def test_metadata_query_order_by_and_response_content(server):
    u = server.url
    root = "1.2.826.0.1.3680043.10.1404.15."
    study = requests.post(u + "/tools/lookup", data=root + "1").json()[0]["ID"]
    inst = find(u, {"Level": "Instance", "ParentStudy": study, "OrderBy": [
        {"Type": "DicomTag", "Key": "InstanceNumber", "Direction": "DESC"},
        {"Type": "DicomTag", "Key": "0020,000e", "Direction": "ASC"}], "Expand": True})
    assert [i["MainDicomTags"]["InstanceNumber"] for i in inst] == ["3", "2", "1", "1"]
    for i, value in zip(inst, ("a1", "b2", "a3", "c4")):
        requests.put(f"{u}/instances/{i['ID']}/metadata/1024", data=value)
    # (instances come in index order)
    assert sorted(find(u, {"Level": "Instance", "MetadataQuery": {"1024": "a*"}})) == sorted([inst[0]["ID"],
                                                                                               inst[2]["ID"]])
    assert find(u, {"Level": "Instance", "MetadataQuery": {"1024": "?2"}}) == [inst[1]["ID"]]
    ordered = find(u, {"Level": "Instance", "ParentStudy": study,
                       "OrderBy": [{"Type": "Metadata", "Key": "1024", "Direction": "DESC"}], "Limit": 2, "Since": 1})
    assert ordered == [inst[1]["ID"], inst[2]["ID"]]  # c4, (b2, a3), a1
    # ResponseContent
    out = find(u, {"Level": "Series", "ParentStudy": study, "ResponseContent": ["Labels", "Parent", "Children",
                                                                                 "Status", "Metadata"]})
    assert {frozenset(o) for o in out} == {frozenset({"ID", "Type", "Labels", "ParentStudy", "Instances", "Status",
                                                      "Metadata"})}
    assert all(o["ParentStudy"] == study and o["Labels"] == [] for o in out)
    assert find(u, {"Level": "Series", "ParentStudy": study, "ResponseContent": ["ID"]}) == \
        find(u, {"Level": "Series", "ParentStudy": study})


def test_requested_tags_and_computed_tags(server):
    u = server.url
    root = "1.2.826.0.1.3680043.10.1404.15."
    study = requests.post(u + "/tools/lookup", data=root + "1").json()[0]["ID"]
    body = {"Level": "Study", "Query": {"StudyInstanceUID": root + "1"}, "Expand": True,
            "RequestedTags": ["ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
                              "SOPClassesInStudy", "PatientName", "0018,0050", "Rows", "NumberOfPatientRelatedStudies"]}
    [found] = find(u, body)
    ds_rows = requests.get(f"{u}/instances/{requests.get(f'{u}/studies/{study}/instances').json()[0]['ID']}"
                           "/simplified-tags").json()
    assert found["RequestedTags"] == {
        "ModalitiesInStudy": "CT", "NumberOfStudyRelatedSeries": "2", "NumberOfStudyRelatedInstances": "4",
        "SOPClassesInStudy": "1.2.840.10008.5.1.4.1.1.2", "PatientName": ds_rows["PatientName"],
        "SliceThickness": ds_rows["SliceThickness"], "Rows": ds_rows["Rows"]}
    short = find(u, dict(body, Short=True))[0]["RequestedTags"]
    assert short["0028,0010"] == ds_rows["Rows"] and short["0008,0061"] == "CT"
    # requestedTags on the resource routes
    r = requests.get(f"{u}/studies/{study}?requestedTags=0010,0010;NumberOfStudyRelatedInstances").json()
    assert r["RequestedTags"] == {"PatientName": ds_rows["PatientName"], "NumberOfStudyRelatedInstances": "4"}
    r = requests.get(f"{u}/patients?expand&requestedTags=NumberOfPatientRelatedInstances").json()
    assert sorted(p["RequestedTags"]["NumberOfPatientRelatedInstances"] for p in r) == ["1", "1", "5"]
    r = requests.get(f"{u}/studies/{study}/series?requestedTags=NumberOfSeriesRelatedInstances").json()
    assert sorted(s["RequestedTags"]["NumberOfSeriesRelatedInstances"] for s in r) == ["1", "3"]
    assert "RequestedTags" not in requests.get(f"{u}/studies/{study}").json()
    assert requests.get(f"{u}/studies/{study}?requestedTags=Bogus").status_code == 500
