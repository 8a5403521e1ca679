"""``/{level}/{id}/modify|anonymize``, ``/instances/{id}/modify|anonymize`` and
``/tools/bulk-modify|bulk-anonymize`` through the REST API (reference sections 3 and 5),
with the answers and errors of Orthanc 1.10.1."""
from __future__ import annotations

import io
import os
import time

import pydicom
import pytest

from builtin_helpers import dataset, make_study, post, upload
from conftest import read
import pacsbox
from pacsbox import orthanc_id


def wait_job(client, job_id, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = client.simulate_get(f"/jobs/{job_id}").json
        if j["State"] in ("Success", "Failure"):
            return j
        time.sleep(0.02)
    raise AssertionError("job did not finish")


def error(r):
    return r.status_code, r.json.get("OrthancStatus"), r.json.get("Details")


@pytest.fixture
def study(client):
    files = make_study(6, "PAT-1", series=2, institution="Old Clinic")
    last = upload(client, files)
    return last["ParentStudy"], last["ParentPatient"]


def test_anonymize_study_answer_tags_and_metadata(client, study):
    sid, pid = study
    before = client.simulate_get("/statistics").json["CountInstances"]
    r = post(client, f"/studies/{sid}/anonymize", {})
    assert r.status_code == 200
    ans = r.json
    new = ans["ID"]
    assert set(ans) == {"Description", "FailedInstancesCount", "ID", "InstancesCount", "IsAnonymization", "Path",
                        "PatientID", "Type"}
    assert ans["Description"] == "REST API" and ans["InstancesCount"] == 6 and ans["FailedInstancesCount"] == 0
    assert ans["IsAnonymization"] is True and ans["Type"] == "Study" and ans["Path"] == f"/studies/{new}"
    st = client.simulate_get(f"/studies/{new}").json
    assert ans["PatientID"] == st["ParentPatient"] != pid
    assert st["AnonymizedFrom"] == sid
    assert st["PatientMainDicomTags"]["PatientName"] == "Anonymized1"
    assert len(st["Series"]) == 2
    source_series = client.simulate_get(f"/studies/{sid}").json["Series"]
    for ser in st["Series"]:
        s = client.simulate_get(f"/series/{ser}").json
        assert s["AnonymizedFrom"] in source_series
        assert len(s["Instances"]) == 3
        for iid in s["Instances"]:
            i = client.simulate_get(f"/instances/{iid}").json
            meta = client.simulate_get(f"/instances/{iid}/metadata?expand").json
            assert meta["AnonymizedFrom"] == i["AnonymizedFrom"]
            assert meta["Origin"] == "RestApi"
    assert client.simulate_get(f"/patients/{ans['PatientID']}").json["AnonymizedFrom"] == pid
    assert client.simulate_get("/statistics").json["CountInstances"] == before + 6
    iid = client.simulate_get(f"/studies/{new}/instances").json[0]["ID"]
    ds = dataset(client, iid)
    assert ds.PatientName == "Anonymized1" and "InstitutionName" not in ds
    assert ds.DeidentificationMethod == f"pacsbox {pacsbox.__version__} - PS 3.15-2021b Table E.1-1 Basic Profile"
    assert ds.PatientIdentityRemoved == "YES"
    # the counter goes on; the same patient anonymized twice gives two new patients
    ans2 = post(client, f"/studies/{sid}/anonymize", {}).json
    st2 = client.simulate_get(f"/studies/{ans2['ID']}").json
    assert st2["PatientMainDicomTags"]["PatientName"] == "Anonymized2"
    assert ans2["PatientID"] != ans["PatientID"] and ans2["ID"] != new


def test_uids_consistent_within_a_job(client, study):
    sid, _ = study
    new = post(client, f"/studies/{sid}/anonymize", {}).json["ID"]
    dss = [dataset(client, i["ID"]) for i in client.simulate_get(f"/studies/{new}/instances").json]
    assert len({d.StudyInstanceUID for d in dss}) == 1
    assert len({d.SeriesInstanceUID for d in dss}) == 2
    assert len({d.SOPInstanceUID for d in dss}) == 6
    assert len({d.PatientID for d in dss}) == 1
    assert len({d.FrameOfReferenceUID for d in dss}) == 1


def test_modify_study_with_non_ascii_value(client, study):
    sid, pid = study
    r = post(client, f"/studies/{sid}/modify", {"Replace": {"InstitutionName": "Łódź Szpital"}})
    assert r.status_code == 200
    ans = r.json
    assert ans["IsAnonymization"] is False and ans["Type"] == "Study" and ans["InstancesCount"] == 6
    assert ans["PatientID"] == pid                   # same patient
    st = client.simulate_get(f"/studies/{ans['ID']}").json
    assert st["ModifiedFrom"] == sid and st["MainDicomTags"]["InstitutionName"] == "Łódź Szpital"
    iid = st["Series"] and client.simulate_get(f"/studies/{ans['ID']}/instances").json[0]["ID"]
    tags = client.simulate_get(f"/instances/{iid}/tags?simplify").json
    assert tags["InstitutionName"] == "Łódź Szpital" and tags["SpecificCharacterSet"] == "ISO_IR 192"
    ds = dataset(client, iid)
    assert ds.InstitutionName == "Łódź Szpital" and ds.SpecificCharacterSet == "ISO_IR 192"
    raw = client.simulate_get(f"/instances/{iid}/file").content
    assert "Łódź Szpital".encode("utf-8") in raw
    # the patient is not modified, so it has no ModifiedFrom
    assert "ModifiedFrom" not in client.simulate_get(f"/patients/{pid}").json


def test_modify_levels_series_and_patient(client, study):
    sid, pid = study
    series = client.simulate_get(f"/studies/{sid}").json["Series"][0]
    ans = post(client, f"/series/{series}/modify", {"Replace": {"SeriesDescription": "new"}}).json
    assert ans["Type"] == "Series" and ans["InstancesCount"] == 3
    new_series = client.simulate_get(f"/series/{ans['ID']}").json
    assert new_series["ParentStudy"] == sid          # same study UID, new series UID
    assert new_series["MainDicomTags"]["SeriesDescription"] == "new"
    ans = post(client, f"/patients/{pid}/modify", {"Replace": {"PatientID": "PAT-2", "PatientName": "New^Name"},
                                                  "Force": True}).json
    assert ans["Type"] == "Patient" and ans["ID"] == orthanc_id("PAT-2") == ans["PatientID"]
    assert ans["InstancesCount"] == 9                # 6 + the 3 of the modified series
    p = client.simulate_get(f"/patients/{ans['ID']}").json
    assert p["MainDicomTags"]["PatientName"] == "New^Name" and p["ModifiedFrom"] == pid


def test_instance_modify_answers_the_file_without_storing(client, study):
    sid, _ = study
    iid = client.simulate_get(f"/studies/{sid}/instances").json[0]["ID"]
    before = client.simulate_get("/statistics").json
    r = post(client, f"/instances/{iid}/modify", {"Replace": {"InstitutionName": "X"}})
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(r.content))
    src = dataset(client, iid)
    assert ds.InstitutionName == "X"
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.SeriesInstanceUID == src.SeriesInstanceUID
    assert ds.SOPInstanceUID != src.SOPInstanceUID    # instance level: new SOP UID only
    r = post(client, f"/instances/{iid}/modify", {"Replace": {"InstitutionName": "X"}, "Keep": ["SOPInstanceUID"],
                                                 "Force": True, "Transcode": "1.2.840.10008.1.2"})
    ds = pydicom.dcmread(io.BytesIO(r.content))
    assert ds.SOPInstanceUID == src.SOPInstanceUID and ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert (ds.pixel_array == src.pixel_array).all()
    r = post(client, f"/instances/{iid}/anonymize", {})
    ds = pydicom.dcmread(io.BytesIO(r.content))
    assert str(ds.PatientName).startswith("Anonymized") and ds.PatientID != src.PatientID
    assert client.simulate_get("/statistics").json == before
    r = post(client, f"/instances/{iid}/modify", {"Transcode": "1.2.3"})
    assert error(r) == (400, 3, "Unknown transfer syntax: 1.2.3")


def test_keep_source_false_deletes_the_source(client, study):
    sid, pid = study
    ans = post(client, f"/studies/{sid}/modify", {"Replace": {"StudyDescription": "moved"}, "KeepSource": False}).json
    assert client.simulate_get(f"/studies/{sid}").status_code == 404
    assert client.simulate_get(f"/studies/{ans['ID']}").status_code == 200
    assert client.simulate_get("/statistics").json["CountInstances"] == 6


def test_transcode_in_a_job(client, study):
    sid, _ = study
    ans = post(client, f"/studies/{sid}/modify", {"Transcode": "1.2.840.10008.1.2.2"}).json
    assert ans["Transcode"] == "1.2.840.10008.1.2.2"
    iid = client.simulate_get(f"/studies/{ans['ID']}/instances").json[0]["ID"]
    assert dataset(client, iid).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"
    meta = client.simulate_get(f"/instances/{iid}/metadata?expand").json
    assert meta["TransferSyntax"] == "1.2.840.10008.1.2.2"


def test_asynchronous_job(client, study):
    sid, _ = study
    r = post(client, f"/studies/{sid}/anonymize", {"Asynchronous": True, "Priority": 5})
    assert r.status_code == 200 and set(r.json) == {"ID", "Path"} and r.json["Path"] == f"/jobs/{r.json['ID']}"
    job = wait_job(client, r.json["ID"])
    assert job["State"] == "Success" and job["Type"] == "ResourceModification" and job["Priority"] == 5
    c = job["Content"]
    assert c["InstancesCount"] == 6 and c["IsAnonymization"] is True and c["Type"] == "Study"
    assert client.simulate_get(f"/studies/{c['ID']}").json["AnonymizedFrom"] == sid


def test_bulk_routes(client, study):
    sid, pid = study
    insts = [i["ID"] for i in client.simulate_get(f"/studies/{sid}/instances").json]
    ans = post(client, "/tools/bulk-modify", {"Resources": insts[:2], "Replace": {"InstitutionName": "B"}}).json
    assert ans["InstancesCount"] == 2 and ans["IsAnonymization"] is False
    types = [r["Type"] for r in ans["Resources"]]
    assert types == ["Instance", "Instance", "Series", "Study", "Patient"] or \
        types == ["Instance", "Instance", "Series", "Series", "Study", "Patient"]
    assert ans["Resources"][-1] == {"ID": pid, "Path": f"/patients/{pid}", "Type": "Patient"}
    assert ans["Resources"][-2]["ID"] == sid             # instance level: same study
    inst_ids = [r["ID"] for r in ans["Resources"] if r["Type"] == "Instance"]
    assert inst_ids == sorted(inst_ids)
    ans = post(client, "/tools/bulk-modify", {"Resources": [sid], "Level": "Study",
                                              "Replace": {"StudyDescription": "bulk"}}).json
    studies = [r for r in ans["Resources"] if r["Type"] == "Study"]
    assert len(studies) == 1 and studies[0]["ID"] != sid and ans["InstancesCount"] == 8   # 6 + 2 new
    ans = post(client, "/tools/bulk-anonymize", {"Resources": [insts[0]]}).json
    assert ans["IsAnonymization"] is True and len(ans["Resources"]) == 4
    assert post(client, "/tools/bulk-modify", {"Resources": []}).json["Resources"] == []
    assert error(post(client, "/tools/bulk-modify", {})) == (400, 15, "List of strings expected in field: Resources")
    assert error(post(client, "/tools/bulk-modify", {"Resources": [insts[0]], "Level": "foo"}))[:2] == (400, 3)
    assert error(post(client, "/tools/bulk-anonymize", {"Resources": ["nope"]}))[:2] == (404, 17)


def test_bad_input(client, study):
    sid, pid = study
    n_before = client.simulate_get("/statistics").json["CountInstances"]
    jobs_before = client.simulate_get("/jobs").json
    unknown = "ffffffff-ffffffff-ffffffff-ffffffff-ffffffff"
    assert error(post(client, f"/studies/{unknown}/anonymize", {})) == (404, 17, None)
    assert error(post(client, f"/instances/{unknown}/anonymize", {})) == (404, 17, None)
    assert error(post(client, f"/studies/{sid}/anonymize", "")) == (400, 15, None)
    assert error(post(client, f"/studies/{sid}/anonymize", "[1")) == (400, 15, None)
    assert error(post(client, f"/studies/{sid}/modify", "[]")) == (400, 15, None)
    assert error(post(client, f"/studies/{sid}/modify", {"Replace": "x"})) == (400, 8, None)
    assert error(post(client, f"/studies/{sid}/modify", {"Remove": [1]})) == (400, 8, None)
    assert error(post(client, f"/studies/{sid}/anonymize", {"DicomVersion": "2019a"})) == \
        (400, 3, "Unknown specific version of the DICOM standard: 2019a")
    assert error(post(client, f"/studies/{sid}/anonymize", {"DicomVersion": 5})) == (400, 15, None)
    assert error(post(client, f"/studies/{sid}/modify", {"Replace": {"PatientID": "x"}})) == \
        (400, 8, "Marking tag \"PatientID\" as to be replaced requires the \"Force\" option to be set to true")
    assert error(post(client, f"/studies/{sid}/modify", {"Replace": {"PatientID": "x"}, "Force": True})) == \
        (400, 8, "When modifying a study, the parent PatientID cannot be manually modified")
    assert error(post(client, f"/patients/{pid}/modify", {"Replace": {"InstitutionName": "x"}})) == \
        (400, 8, "When modifying a patient, her PatientID is required to be modified")
    assert error(post(client, f"/studies/{sid}/modify", {"Replace": {"Foo": "x"}}))[:2] == (500, 27)
    assert error(post(client, f"/studies/{sid}/modify", {"Replace": {"InstitutionName": 5}})) == \
        (400, 5, "Bad Parameter type for tag 0008,0080")
    assert error(post(client, f"/studies/{sid}/modify", {"KeepSource": "no"})) == \
        (400, 15, "Boolean value expected in field: KeepSource")
    assert error(post(client, f"/studies/{sid}/modify", {"Transcode": "1.2.3"})) == \
        (400, 15, "Unknown transfer syntax UID: 1.2.3")
    assert error(post(client, f"/studies/{sid}/modify", {"Transcode": 5})) == \
        (400, 15, "String value expected in field: Transcode")
    assert error(post(client, f"/studies/{sid}/modify", {"PrivateCreator": 5})) == \
        (400, 15, "String value expected in field: PrivateCreator")
    assert error(post(client, f"/studies/{sid}/modify",
                      {"Replace": {"ReferencedImageSequence[x].ReferencedSOPInstanceUID": "1"}})) == \
        (400, 3, "Not a valid index in parent path: [x]")
    # nothing was stored, no job was created, the counter was not used
    assert client.simulate_get("/statistics").json["CountInstances"] == n_before
    assert client.simulate_get("/jobs").json == jobs_before
    ans = post(client, f"/studies/{sid}/anonymize", {}).json
    assert client.simulate_get(f"/patients/{ans['PatientID']}").json["MainDicomTags"]["PatientName"] == "Anonymized1"


def test_like_orthanc_an_id_of_another_level_is_accepted(client, study):
    sid, _ = study
    series = client.simulate_get(f"/studies/{sid}").json["Series"][0]
    ans = post(client, f"/studies/{series}/anonymize", {}).json
    assert ans["Type"] == "Study" and ans["InstancesCount"] == 3


def test_failed_job_leaves_nothing_and_permissive_skips(client, study, app):
    sid, _ = study
    insts = [i["ID"] for i in client.simulate_get(f"/studies/{sid}/instances").json]
    # a real fault: the file of the 4th instance disappears from the storage area
    att = app.ctx.index.attachment_by_public_id(insts[3], 1)
    os.remove(app.ctx.storage.path(att.uuid))
    before = client.simulate_get("/statistics").json
    r = post(client, f"/studies/{sid}/anonymize", {})
    assert error(r)[:2] == (404, 13)
    assert client.simulate_get("/statistics").json == before       # the 3 written ones were deleted
    job = [j for j in client.simulate_get("/jobs?expand").json if j["Type"] == "ResourceModification"][-1]
    assert job["State"] == "Failure" and job["ErrorCode"] == 13
    r = post(client, f"/studies/{sid}/anonymize", {"Permissive": True})
    assert r.status_code == 200 and r.json["InstancesCount"] == 6 and r.json["FailedInstancesCount"] == 1
    assert len(client.simulate_get(f"/studies/{r.json['ID']}/instances").json) == 5
    # resubmitting the failed job (file still missing) fails again and still leaves nothing
    assert client.simulate_post(f"/jobs/{job['ID']}/resubmit").status_code == 200
    assert wait_job(client, job["ID"])["State"] == "Failure"
    assert client.simulate_get("/statistics").json["CountInstances"] == before["CountInstances"] + 5


def test_job_resumes_with_the_same_uids(make_app, tmp_path):
    """A job rebuilt from its saved state after 2 of 6 instances (as after a crash that
    lost the last save) finishes with exactly 6 new instances: the re-run chunk writes
    the same instances again (AlreadyStored)."""
    import falcon.testing
    from pacsbox.builtin.modify_job import ResourceModificationJob
    from pacsbox.builtin.routes import name_patient, parse_modification
    cfg = {"StorageDirectory": str(tmp_path / "data"), "SaveJobs": False}
    app = make_app(cfg)
    client = falcon.testing.TestClient(app)
    last = upload(client, make_study(6, "PAT-R", series=2))
    ctx = app.ctx
    m = parse_modification(ctx, {}, True)
    name_patient(ctx, m)
    insts = [r.public_id for r in ctx.resources.instances_of([ctx.index.lookup(last["ParentStudy"], 1)])]
    job = ResourceModificationJob(m, insts, output_level=1)
    job.chunk_size = 2
    job.start(ctx)
    assert job.step(ctx).value == "Continue"          # instances 0-1
    saved = job.serialize()
    assert job.step(ctx).value == "Continue"          # instances 2-3, then the "crash"
    job.stop("Shutdown")
    n = ctx.index.statistics()["CountInstances"]
    assert n == 6 + 4
    again = ResourceModificationJob.from_serialized(saved, ctx)
    assert again.position == 2 and again.seed == job.seed
    again.chunk_size = 2
    again.start(ctx)
    while again.step(ctx).value == "Continue":
        pass
    again.stop("Success")
    stats = ctx.index.statistics()
    assert stats["CountInstances"] == 12 and stats["CountStudies"] == 2
    new = again.public_content()
    assert new["ID"] == job.public_content()["ID"] and new["InstancesCount"] == 6
    assert len(client.simulate_get(f"/studies/{new['ID']}/instances").json) == 6
    assert sorted(again.created) == sorted(i["ID"] for i in client.simulate_get(f"/studies/{new['ID']}/instances").json)


def test_orthanc_sample_anonymization_of_ct_small(client):
    ans = client.simulate_post("/instances", body=read("CT_small.dcm")).json
    r = post(client, f"/studies/{ans['ParentStudy']}/anonymize", {"Keep": ["StudyDescription"],
                                                                 "Replace": {"PatientName": "Jane"}})
    iid = client.simulate_get(f"/studies/{r.json['ID']}/instances").json[0]["ID"]
    tags = client.simulate_get(f"/instances/{iid}/tags?simplify").json
    assert tags["PatientName"] == "Jane" and tags["StudyDescription"] == "e+1"
    # Orthanc drops DeidentificationMethod when the profile is customized; pacsbox keeps it (issue 13 case 15)
    assert tags["DeidentificationMethod"] == \
        f"pacsbox {pacsbox.__version__} - PS 3.15-2021b Table E.1-1 Basic Profile (customized)"
    assert tags["PatientIdentityRemoved"] == "YES"
