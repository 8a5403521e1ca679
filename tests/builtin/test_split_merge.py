"""``POST /studies/{id}/split`` and ``/merge`` (reference section 11): answers, effects and
errors of Orthanc 1.10.1."""
from __future__ import annotations

from builtin_helpers import dataset, make_study, post, upload
from pacsbox import orthanc_id


def error(r):
    return r.status_code, r.json.get("OrthancStatus"), r.json.get("Details")


def test_split_series_into_a_new_study(client):
    last = upload(client, make_study(6, "PAT-S", series=3, institution="Here"))
    sid = last["ParentStudy"]
    series = client.simulate_get(f"/studies/{sid}").json["Series"]
    src_insts = {i["ID"] for i in client.simulate_get(f"/series/{series[0]}/instances").json}
    src_ds = dataset(client, sorted(src_insts)[0])
    src_sops = {dataset(client, s).SOPInstanceUID for s in src_insts}
    r = post(client, f"/studies/{sid}/split", {"Series": [series[0]], "Replace": {"PatientName": "Split^Me"},
                                               "Remove": ["StudyDescription"]})
    assert r.status_code == 200
    ans = r.json
    assert set(ans) == {"Description", "FailedInstancesCount", "InstancesCount", "TargetStudy", "TargetStudyUID"}
    assert ans["InstancesCount"] == 2 and ans["FailedInstancesCount"] == 0
    assert ans["TargetStudy"] == orthanc_id("PAT-S", ans["TargetStudyUID"])
    new = client.simulate_get(f"/studies/{ans['TargetStudy']}").json
    assert new["MainDicomTags"]["StudyInstanceUID"] == ans["TargetStudyUID"]
    assert "ModifiedFrom" not in new                      # no metadata on split results
    assert len(new["Series"]) == 1
    new_insts = client.simulate_get(f"/studies/{ans['TargetStudy']}/instances").json
    assert len(new_insts) == 2
    for i in new_insts:
        ds = dataset(client, i["ID"])
        assert ds.StudyInstanceUID == ans["TargetStudyUID"]
        assert ds.SeriesInstanceUID != src_ds.SeriesInstanceUID
        assert ds.SOPInstanceUID not in src_sops
        assert ds.PatientName == "Split^Me" and "StudyDescription" not in ds
        assert ds.InstitutionName == "Here"
        assert ds.Modality == src_ds.Modality and ds.PixelData == src_ds.PixelData
    # KeepSource defaults to false: the series left the source study
    assert client.simulate_get(f"/series/{series[0]}").status_code == 404
    assert len(client.simulate_get(f"/studies/{sid}/instances").json) == 4


def test_split_instances_keep_source_and_replace_patient_id(client):
    last = upload(client, make_study(4, "PAT-T", series=1))
    sid = last["ParentStudy"]
    insts = [i["ID"] for i in client.simulate_get(f"/studies/{sid}/instances").json]
    ans = post(client, f"/studies/{sid}/split", {"Instances": insts[:2], "KeepSource": True,
                                                 "Replace": {"PatientID": "PAT-OTHER"}}).json
    assert ans["InstancesCount"] == 2
    assert client.simulate_get(f"/studies/{ans['TargetStudy']}").json["ParentPatient"] == orthanc_id("PAT-OTHER")
    assert len(client.simulate_get(f"/studies/{sid}/instances").json) == 4


def test_split_errors(client):
    last = upload(client, make_study(2, "PAT-E", series=1))
    other = upload(client, make_study(1, "PAT-F", series=1))
    sid = last["ParentStudy"]
    unknown = "ffffffff-ffffffff-ffffffff-ffffffff-ffffffff"
    series = last["ParentSeries"]
    assert error(post(client, f"/studies/{sid}/split", {})) == \
        (400, 8, "Both the \"Series\" and the \"Instances\" fields are missing")
    assert error(post(client, f"/studies/{sid}/split", {"Series": []})) == \
        (400, 8, "Both the \"Series\" and the \"Instances\" fields are missing")
    assert error(post(client, f"/studies/{sid}/split", {"Series": "x"})) == \
        (400, 15, "List of strings expected in field: Series")
    assert error(post(client, f"/studies/{unknown}/split", {"Series": [series]})) == \
        (404, 17, f"Cannot split unknown study {unknown}")
    assert error(post(client, f"/studies/{sid}/split", {"Series": [other["ParentSeries"]]})) == \
        (404, 17, f"This series does not belong to the study to be split: {other['ParentSeries']}")
    assert error(post(client, f"/studies/{sid}/split", {"Instances": [other["ID"]]})) == \
        (404, 17, f"This instance does not belong to the study to be split: {other['ID']}")
    assert error(post(client, f"/studies/{sid}/split", {"Series": [unknown]})) == (404, 17, None)
    assert error(post(client, f"/studies/{sid}/split", {"Series": [series], "Replace": {"SeriesDescription": "x"}})) \
        == (400, 3, "Cannot modify the following tag while splitting a study (not in the patient/study modules): "
                    "SeriesDescription (0008,103e)")
    assert error(post(client, f"/studies/{sid}/split", {"Series": [series], "Replace": {"StudyInstanceUID": "1"}}))[:2] \
        == (400, 3)
    assert error(post(client, f"/studies/{sid}/split", {"Series": [series], "Replace": {"PatientName": 5}})) == \
        (400, 15, None)
    assert error(post(client, f"/studies/{sid}/split", {"Series": [series], "Remove": "x"})) == (400, 15, None)
    assert error(post(client, f"/studies/{sid}/split", "")) == (400, 15, None)
    assert client.simulate_get("/statistics").json["CountInstances"] == 3


def test_merge_takes_the_target_patient_and_study_tags(client):
    target = upload(client, make_study(2, "PAT-A", series=1, patient_name="Target^Pat", institution="Target"))
    source = upload(client, make_study(3, "PAT-B", series=1, patient_name="Source^Pat", institution="Source"))
    tid, src_study = target["ParentStudy"], source["ParentStudy"]
    tds = dataset(client, target["ID"])
    r = post(client, f"/studies/{tid}/merge", {"Resources": [src_study]})
    assert r.status_code == 200
    assert r.json == {"Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 3, "TargetStudy": tid}
    st = client.simulate_get(f"/studies/{tid}").json
    assert len(st["Series"]) == 2
    assert len(client.simulate_get(f"/studies/{tid}/instances").json) == 5
    for i in client.simulate_get(f"/studies/{tid}/instances").json:
        ds = dataset(client, i["ID"])
        assert ds.PatientID == "PAT-A" and ds.PatientName == "Target^Pat"
        assert ds.StudyInstanceUID == tds.StudyInstanceUID and ds.StudyDate == tds.StudyDate
        assert ds.AccessionNumber == tds.AccessionNumber
    # KeepSource defaults to false: the source study and its patient are gone
    assert client.simulate_get(f"/studies/{src_study}").status_code == 404
    assert client.simulate_get(f"/patients/{source['ParentPatient']}").status_code == 404
    # a series and an instance from elsewhere, keeping the sources
    third = upload(client, make_study(2, "PAT-C", series=2))
    ans = post(client, f"/studies/{tid}/merge", {"Resources": [third["ParentSeries"]], "KeepSource": True}).json
    assert ans["InstancesCount"] == 1
    assert len(client.simulate_get(f"/studies/{third['ParentStudy']}/instances").json) == 2


def test_merge_errors(client):
    target = upload(client, make_study(2, "PAT-M", series=1))
    tid = target["ParentStudy"]
    unknown = "ffffffff-ffffffff-ffffffff-ffffffff-ffffffff"
    assert error(post(client, f"/studies/{tid}/merge", {})) == (400, 15, "List of strings expected in field: Resources")
    assert error(post(client, f"/studies/{tid}/merge", {"Resources": "x"})) == \
        (400, 15, "List of strings expected in field: Resources")
    assert error(post(client, f"/studies/{tid}/merge", {"Resources": ["x"]})) == \
        (404, 17, "Cannot find this resource: x")
    assert error(post(client, f"/studies/{tid}/merge", {"Resources": [tid]})) == \
        (404, 17, f"Cannot merge a study into the same study: {tid}")
    assert error(post(client, f"/studies/{tid}/merge", {"Resources": [target["ParentSeries"]]})) == \
        (404, 17, f"Cannot merge series {target['ParentSeries']} into its parent study {tid}")
    assert error(post(client, f"/studies/{tid}/merge", {"Resources": [target["ID"]]})) == \
        (404, 17, f"Cannot merge instance {target['ID']} into its parent study {tid}")
    assert error(post(client, f"/studies/{tid}/merge", {"Resources": [target["ParentPatient"]]})) == \
        (404, 17, f"This resource is neither a study, nor a series, nor an instance: {target['ParentPatient']} "
                  "is a Patient")
    assert error(post(client, f"/studies/{unknown}/merge", {"Resources": [target["ParentSeries"]]})) == \
        (404, 17, f"Cannot merge into an unknown study: {unknown}")
    assert post(client, f"/studies/{tid}/merge", {"Resources": []}).json["InstancesCount"] == 0
    assert client.simulate_get("/statistics").json["CountInstances"] == 2


def test_split_job_is_asynchronous_and_reloadable(client, app):
    from pacsbox.builtin.split_merge import MergeStudyJob, SplitStudyJob
    last = upload(client, make_study(3, "PAT-J", series=1))
    r = post(client, f"/studies/{last['ParentStudy']}/split", {"Series": [last["ParentSeries"]],
                                                               "Asynchronous": True, "KeepSource": True})
    job_id = r.json["ID"]
    import time
    deadline = time.monotonic() + 60
    while (job := client.simulate_get(f"/jobs/{job_id}").json)["State"] not in ("Success", "Failure"):
        assert time.monotonic() < deadline, job
        time.sleep(0.01)
    assert job["State"] == "Success" and job["Type"] == "SplitStudy" and job["Content"]["InstancesCount"] == 3
    rec = app.ctx.jobs.get(job_id)
    again = SplitStudyJob.from_serialized(rec.job.serialize(), app.ctx)
    assert again.public_content() == job["Content"] and again.permissive is False
    merge = MergeStudyJob(last["ParentStudy"], [], keep_source=True)
    merge.prepare(app.ctx)
    again = MergeStudyJob.from_serialized(merge.serialize(), app.ctx)
    assert again.replacements == merge.replacements and again.removals == merge.removals
