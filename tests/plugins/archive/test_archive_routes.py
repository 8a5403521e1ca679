"""Routes, request fields, errors, job types and outputs of the archive plugin
(reference sections 3.5 and 4.1)."""
from __future__ import annotations

import os

import falcon.testing
import pytest
from archive_helpers import archive_app, open_zip, synth, upload, wait_job

from pacsbox import StepResult, orthanc_id
from pacsbox_archive.jobs import ArchiveJob, MediaJob, output_directory


@pytest.fixture
def app(make_app):
    return archive_app(make_app)


@pytest.fixture
def client(app):
    return falcon.testing.TestClient(app)


@pytest.fixture
def study(client):
    """A study of 2 series (3 instances): returns the upload answers."""
    st = "1.2.826.0.1.3680043.8.498.301"
    out = []
    for se, n in (("1.2.826.0.1.3680043.8.498.311", 2), ("1.2.826.0.1.3680043.8.498.312", 1)):
        for k in range(n):
            out.append(upload(client, synth(patient_id="R1", study_uid=st, series_uid=se, instance_number=k + 1,
                                            series_description=f"S{se[-1]}")))
    return out


def _json(client):
    return lambda path: client.simulate_get(path).json


def _error(r, status, code, details=None):
    assert r.status_code == status, r.text
    body = r.json
    assert body["OrthancStatus"] == code
    if details is not None:
        assert body["Details"] == details
    else:
        assert "Details" not in body


@pytest.mark.parametrize("kind", ["archive", "media"])
def test_every_level_answers_get_and_post(client, study, kind):
    ids = {"patients": study[0]["ParentPatient"], "studies": study[0]["ParentStudy"],
           "series": study[0]["ParentSeries"]}
    counts = {"patients": 3, "studies": 3, "series": 2}
    for plural, rid in ids.items():
        for method in ("GET", "POST"):
            r = client.simulate_request(method, f"/{plural}/{rid}/{kind}", body=b"{}" if method == "POST" else None)
            assert r.status_code == 200, (plural, method, r.text)
            assert r.headers["content-type"] == "application/zip"
            assert r.headers["content-disposition"] == f'filename="{rid}.zip"'
            assert "content-length" not in r.headers
            names = open_zip(r.content).namelist()
            if kind == "media":
                assert names == [f"IMAGES/IM{i}" for i in range(counts[plural])] + ["DICOMDIR"]
            else:
                assert len(names) == counts[plural]


def test_filename_argument(client, study):
    sid = study[0]["ParentStudy"]
    r = client.simulate_get(f"/studies/{sid}/archive", params={"filename": "my\"file.zip"})
    assert r.headers["content-disposition"] == 'filename="myfile.zip"'
    r = client.simulate_post("/tools/create-media", json=[sid], params={"filename": "cd.zip"})
    assert r.headers["content-disposition"] == 'filename="cd.zip"'


def test_errors(client, study):
    unknown = orthanc_id("nobody")
    for path in (f"/studies/{unknown}/archive", f"/patients/{unknown}/media", "/series/garbage/archive"):
        _error(client.simulate_get(path), 404, 17)
        _error(client.simulate_post(path, json={}), 404, 17)
    # a study ID on the series route is unknown there
    _error(client.simulate_get(f"/series/{study[0]['ParentStudy']}/archive"), 404, 17)
    for route in ("/tools/create-archive", "/tools/create-media", "/tools/create-media-extended"):
        _error(client.simulate_post(route, json=[unknown]), 404, 17)
        _error(client.simulate_post(route, json={"Resources": [study[0]["ID"], "nope"]}), 404, 17)
        _error(client.simulate_post(route, json={}), 400, 15, "Missing field Resources in the JSON body")
        _error(client.simulate_post(route, json=[1]), 400, 15, "Expected a list of strings (Orthanc identifiers)")
        _error(client.simulate_post(route, json={"Resources": "x"}), 400, 15,
               "Expected a list of strings (Orthanc identifiers)")
        _error(client.simulate_post(route, json="abc"), 400, 15)
        _error(client.simulate_get(route, params={"resources": unknown}), 404, 17)
    _error(client.simulate_post("/tools/create-archive", json={"Resources": [study[0]["ID"]], "Transcode": "1.2.3"}),
           400, 3, "Unknown transfer syntax: 1.2.3")
    _error(client.simulate_get(f"/studies/{study[0]['ParentStudy']}/archive", params={"transcode": "foo"}),
           400, 3, "Unknown transfer syntax: foo")
    _error(client.simulate_post(f"/studies/{study[0]['ParentStudy']}/media", json={"Extended": "yes"}), 400, 15,
           "Boolean value expected in field: Extended")
    # there is no instance-level archive route
    assert client.simulate_get(f"/instances/{study[0]['ID']}/archive").status_code == 404
    # nothing ran: no job was created by a refused request
    assert client.simulate_get("/jobs").json == []


def test_empty_resource_list_gives_an_empty_zip(client):
    r = client.simulate_post("/tools/create-archive", json=[])
    assert r.status_code == 200 and open_zip(r.content).namelist() == []


def test_async_archive_output_content_and_delete(client, study):
    sid = study[0]["ParentStudy"]
    r = client.simulate_post(f"/studies/{sid}/archive", json={"Asynchronous": True, "Priority": 4})
    assert r.status_code == 200
    jid = r.json["ID"]
    assert r.json == {"ID": jid, "Path": f"/jobs/{jid}"}
    j = wait_job(_json(client), jid)
    assert j["State"] == "Success" and j["Type"] == "Archive" and j["Priority"] == 4 and j["Progress"] == 100
    out = client.simulate_get(f"/jobs/{jid}/archive")
    assert out.status_code == 200
    assert out.headers["content-type"] == "application/zip"
    assert out.headers["content-disposition"] == 'filename="archive.zip"'
    assert int(out.headers["content-length"]) == len(out.content)
    sizes = sum(len(client.simulate_get(f"/instances/{i['ID']}/file").content) for i in study)
    assert j["Content"] == {"Description": "REST API", "InstancesCount": 3, "UncompressedSize": str(sizes),
                            "UncompressedSizeMB": 0, "ArchiveSize": str(len(out.content)), "ArchiveSizeMB": 0}
    assert len(open_zip(out.content).namelist()) == 3
    assert client.simulate_delete(f"/jobs/{jid}/archive").status_code == 200
    _error(client.simulate_get(f"/jobs/{jid}/archive"), 404, 7, "Job has no such output: archive")
    _error(client.simulate_delete(f"/jobs/{jid}/archive"), 404, 7, "Job has no such output: archive")
    _error(client.simulate_get(f"/jobs/{jid}/other"), 404, 7, "Job has no such output: other")


def _archive_files(app) -> list[str]:
    d = output_directory(app.ctx)
    return sorted(os.listdir(d))


@pytest.mark.parametrize("capacity", [1, 2])
def test_media_archive_size_evicts_the_oldest_output(make_app, capacity):
    app = archive_app(make_app, {"MediaArchiveSize": capacity})
    client = falcon.testing.TestClient(app)
    a = upload(client, synth(patient_id="E1"))
    jobs = []
    for kind in ("create-archive", "create-media", "create-archive"):
        r = client.simulate_post(f"/tools/{kind}", json={"Resources": [a["ParentPatient"]], "Asynchronous": True})
        jid = r.json["ID"]
        assert wait_job(_json(client), jid)["State"] == "Success"
        jobs.append(jid)
    kept = jobs[-capacity:]
    for jid in jobs:
        r = client.simulate_get(f"/jobs/{jid}/archive")
        assert r.status_code == (200 if jid in kept else 404), jid
    # the evicted outputs' files are gone from the disk
    assert len(_archive_files(app)) == capacity
    assert client.simulate_get(f"/jobs/{jobs[1]}").json["Type"] == "Media"


def test_get_create_forms_and_extended(client, study):
    ids = [study[0]["ParentSeries"], study[2]["ID"]]
    r = client.simulate_get("/tools/create-archive", params={"resources": ",".join(ids)})
    assert r.status_code == 200 and len(open_zip(r.content).namelist()) == 3
    assert r.headers["content-disposition"] == 'filename="Archive.zip"'
    import io
    import pydicom
    descs = {}
    for route in ("/tools/create-media", "/tools/create-media-extended"):
        r = client.simulate_get(route, params={"resources": ",".join(ids)})
        z = open_zip(r.content)
        dd = pydicom.dcmread(io.BytesIO(z.read("DICOMDIR")))
        series = [rec for rec in dd.DirectoryRecordSequence if rec.DirectoryRecordType == "SERIES"]
        descs[route] = [rec.get("SeriesDescription") for rec in series]
    assert descs["/tools/create-media"] == [None, None]
    assert sorted(descs["/tools/create-media-extended"]) == ["S1", "S2"]
    # POST with Extended in the body, and ?extended on the resource route
    r = client.simulate_post("/tools/create-media", json={"Resources": ids, "Extended": True})
    dd = pydicom.dcmread(io.BytesIO(open_zip(r.content).read("DICOMDIR")))
    assert sum(1 for rec in dd.DirectoryRecordSequence if "SeriesDescription" in rec) == 2
    r = client.simulate_get(f"/studies/{study[0]['ParentStudy']}/media", params={"extended": ""})
    dd = pydicom.dcmread(io.BytesIO(open_zip(r.content).read("DICOMDIR")))
    assert sum(1 for rec in dd.DirectoryRecordSequence if "SeriesDescription" in rec) == 2


def test_transcode(client, study):
    import io
    import pydicom
    sid = study[0]["ParentStudy"]
    r = client.simulate_post(f"/studies/{sid}/archive", json={"Transcode": "1.2.840.10008.1.2", "Asynchronous": True})
    jid = r.json["ID"]
    j = wait_job(_json(client), jid)
    assert j["Content"]["Transcode"] == "1.2.840.10008.1.2"
    z = open_zip(client.simulate_get(f"/jobs/{jid}/archive").content)
    for n in z.namelist():
        ds = pydicom.dcmread(io.BytesIO(z.read(n)))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    r = client.simulate_get(f"/studies/{sid}/media", params={"transcode": "1.2.840.10008.1.2.5"})
    z = open_zip(r.content)
    dd = pydicom.dcmread(io.BytesIO(z.read("DICOMDIR")))
    for rec in dd.DirectoryRecordSequence:
        if rec.DirectoryRecordType == "IMAGE":
            f = "/".join(rec.ReferencedFileID)
            ds = pydicom.dcmread(io.BytesIO(z.read(f)))
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
            assert rec.ReferencedTransferSyntaxUIDInFile == "1.2.840.10008.1.2.5"
            # RLE files are already compressed: stored
            assert z.getinfo(f).compress_type == 0


def test_synchronous_zip_stream_false_sends_a_file_with_length(make_app):
    app = archive_app(make_app, {"SynchronousZipStream": False})
    client = falcon.testing.TestClient(app)
    a = upload(client, synth(patient_id="F1"))
    r = client.simulate_get(f"/patients/{a['ParentPatient']}/archive")
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    assert "connection" not in r.headers
    assert len(open_zip(r.content).namelist()) == 1
    assert _archive_files(app) == []          # the temporary file is gone
    jobs = client.simulate_get("/jobs?expand").json
    assert [(j["Type"], j["State"]) for j in jobs] == [("Archive", "Success")]


def test_synchronous_job_is_listed_and_priority_used(client, study):
    sid = study[0]["ParentStudy"]
    r = client.simulate_post(f"/studies/{sid}/media", json={"Synchronous": True, "Priority": -3})
    assert r.status_code == 200
    jobs = client.simulate_get("/jobs?expand").json
    assert len(jobs) == 1
    j = jobs[0]
    assert (j["Type"], j["State"], j["Priority"], j["Content"]["InstancesCount"]) == ("Media", "Success", -3, 3)


def test_progress_advances_per_instance(app, study):
    ctx = app.ctx
    job = ArchiveJob([study[0]["ParentStudy"]])
    job.start(ctx)
    seen = [job.progress()]
    while True:
        res = job.step(ctx)
        seen.append(job.progress())
        if res is StepResult.SUCCESS:
            break
        assert res is StepResult.CONTINUE
    job.stop("Success")
    assert seen == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert os.path.exists(job.output_path)


def test_job_types_are_registered(app):
    assert app.ctx.job_types.get("Archive") is ArchiveJob
    assert app.ctx.job_types.get("Media") is MediaJob


def test_instance_whose_file_vanished_is_skipped(make_app):
    app = archive_app(make_app)
    client = falcon.testing.TestClient(app)
    a = upload(client, synth(patient_id="G1"))
    b = upload(client, synth(patient_id="G1", study_uid=None))
    # the second instance's file vanishes from the storage: skipped, as Orthanc does
    att = app.ctx.index.attachment_by_public_id(b["ID"])
    app.ctx.storage.remove(att.uuid, 1)
    r = client.simulate_post("/tools/create-archive", json={"Resources": [a["ParentPatient"]], "Asynchronous": True})
    j = wait_job(_json(client), r.json["ID"])
    assert j["State"] == "Success" and j["Content"]["InstancesCount"] == 2
    z = open_zip(client.simulate_get(f"/jobs/{r.json['ID']}/archive").content)
    assert len(z.namelist()) == 1
    assert z.read(z.namelist()[0]) == client.simulate_get(f"/instances/{a['ID']}/file").content


def test_stream_of_a_job_canceled_before_it_ran_ends_with_its_error(make_app):
    """A synchronous archive canceled while still pending never writes a byte: the
    request waiting for it gets the job's error instead of waiting forever."""
    from pacsbox import ErrorCode, OrthancError
    from pacsbox_archive.jobs import StreamSink, ZipResponse
    app = make_app({}, plugins=[__import__("pacsbox_archive.plugin").plugin], start_jobs=False)
    client = falcon.testing.TestClient(app)
    a = upload(client, synth(patient_id="C1"))
    job = ArchiveJob([a["ParentPatient"]])
    job.synchronous, job.sink = True, StreamSink()
    rec = app.ctx.jobs.submit(job, 0)
    assert app.ctx.jobs.cancel(rec.id)
    with pytest.raises(OrthancError) as e:
        ZipResponse.next_chunk(app.ctx, rec.id, job.sink)
    assert e.value.code == ErrorCode.CANCELED_JOB
