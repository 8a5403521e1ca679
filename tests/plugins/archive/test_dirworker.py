"""The DICOMDIR child process (``pacsbox_archive.dirworker``): media made with it hold the
same records as media made in the server process; a child that dies, answers an error
or serves a canceled job never breaks a media; a child exits when its server goes."""
from __future__ import annotations

import io
import os
import signal

import falcon.testing
import pydicom
import pytest
from archive_helpers import archive_app, encapsulated_pdf, open_zip, sample_path, synth, upload
from test_dicomdir import check_media

from pacsbox import StepResult
from pacsbox_archive import dirworker
from pacsbox_archive.dicomdir import RecordSource
from pacsbox_archive import jobs as jobs_module
from pacsbox_archive.jobs import MediaJob

OFFSETS = (0x00041400, 0x00041420)


@pytest.fixture
def workers(monkeypatch):
    """A fresh set of children for the test (stopped at its end)."""
    w = dirworker.DirectoryWorkers()
    monkeypatch.setattr(jobs_module, "directory_workers", lambda ctx: w)  # every app of the test uses it
    yield w
    w.close()


def _spare(workers) -> dirworker._Child:
    """An idle child, as after an earlier media (the first ``take`` starts it)."""
    child = workers.take() or workers.take()
    workers.give_back(child)
    return child


def _files() -> list[bytes]:
    st = "1.2.826.0.1.3680043.8.498.801"
    out = [synth(patient_id="W1", patient_name="Buc^Jérôme", study_uid=st,
                 series_uid=f"1.2.826.0.1.3680043.8.498.81{k % 2}", instance_number=k + 1, charset="ISO_IR 100",
                 extra={"StudyID": "9", "SeriesNumber": k % 2 + 1})
           for k in range(5)]
    out.append(encapsulated_pdf())
    out.append(open(sample_path("reportsi.dcm"), "rb").read())
    return out


def _record_values(data: bytes) -> list[list[tuple]]:
    """Each record's elements (tag, VR, value) but the two offsets."""
    dd = pydicom.dcmread(io.BytesIO(open_zip(data).read("DICOMDIR")))
    return [[(e.tag, e.VR, str(e.value)) for e in rec if e.tag not in OFFSETS] for rec in dd.DirectoryRecordSequence]


def test_first_media_is_made_in_process_and_starts_a_child(make_app, tmp_path, workers):
    client = falcon.testing.TestClient(archive_app(make_app))
    patients = {upload(client, f)["ParentPatient"] for f in _files()}
    assert workers._idle == []
    r = client.simulate_post("/tools/create-media", json=sorted(patients))
    assert len(check_media(r.content, tmp_path)) == 7
    assert len(workers._idle) == 1 and workers._idle[0].alive()       # for the next media


def test_child_and_server_process_make_the_same_records(make_app, tmp_path, workers):
    media, files = {}, _files()
    spare = _spare(workers)
    for process in (True, False):
        client = falcon.testing.TestClient(archive_app(make_app, {"Archive": {"DicomDirProcess": process}}))
        patients = {upload(client, f)["ParentPatient"] for f in files}
        r = client.simulate_post("/tools/create-media", json=sorted(patients))
        assert r.status_code == 200
        check_media(r.content, tmp_path / str(process))
        media[process] = r.content
    assert workers._idle == [spare] and spare.alive()     # the child served the first media and is idle again
    with_child, in_process = _record_values(media[True]), _record_values(media[False])
    assert len(with_child) == 1 + 1 + 2 + 5 + 2 * 4          # W1, its study, 2 series, 5 images; PDF and SR chains
    assert with_child == in_process
    z1, z2 = open_zip(media[True]), open_zip(media[False])
    assert z1.namelist() == z2.namelist()
    assert all(z1.read(n) == z2.read(n) for n in z1.namelist()[:-1])


def test_large_encapsulated_pdf(make_app, tmp_path, workers):
    """The child gets the PDF's header without its 300 KB document; the ZIP has the
    whole file."""
    ds = pydicom.dcmread(io.BytesIO(encapsulated_pdf("BIGPDF")))
    ds.EncapsulatedDocument = b"%PDF-1.4\n" + bytes(range(256)) * 1200 + b"\n%%EOF\n"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    client = falcon.testing.TestClient(archive_app(make_app))
    answer = upload(client, buf.getvalue())
    spare = _spare(workers)
    r = client.simulate_get(f"/patients/{answer['ParentPatient']}/media")
    check_media(r.content, tmp_path)
    assert workers._idle == [spare]
    z = open_zip(r.content)
    assert z.read("IMAGES/IM0") == buf.getvalue()
    dd = pydicom.dcmread(io.BytesIO(z.read("DICOMDIR")))
    leaf = dd.DirectoryRecordSequence[3]
    assert (leaf.DirectoryRecordType, leaf.MIMETypeOfEncapsulatedDocument) == ("ENCAP DOC", "application/pdf")
    assert (leaf.DocumentTitle, leaf.InstanceNumber) == ("Report", 1)


def _job_up_to_directory(make_app) -> tuple:
    app = archive_app(make_app)
    client = falcon.testing.TestClient(app)
    patients = {upload(client, f)["ParentPatient"] for f in _files()[:5]}
    job = MediaJob(sorted(patients))
    job.start(app.ctx)
    while job.position < len(job.plan):
        assert job.step(app.ctx) is StepResult.CONTINUE
    return app, job


def _stopped_child(workers) -> dirworker._Child:
    """A real idle child, stopped (SIGSTOP): the next media takes it and waits."""
    child = _spare(workers)
    os.kill(child.proc.pid, signal.SIGSTOP)
    return child


def test_child_killed_while_encoding_falls_back_to_the_server_process(make_app, tmp_path, workers):
    child = _stopped_child(workers)
    app, job = _job_up_to_directory(make_app)
    assert child.alive()
    os.kill(child.proc.pid, signal.SIGKILL)
    assert job.step(app.ctx) is StepResult.SUCCESS
    job.stop("Success")
    fs = check_media(open(job.output_path, "rb").read(), tmp_path)
    assert len(fs) == 5
    assert child.proc.wait(10) == -signal.SIGKILL
    assert workers._idle == []


def test_child_of_a_canceled_job_is_killed(make_app, workers):
    child = _stopped_child(workers)
    app, job = _job_up_to_directory(make_app)
    job.stop("Canceled")
    assert child.proc.wait(10) == -signal.SIGKILL
    assert workers._idle == []


def test_paused_media_resumes_with_a_new_child(make_app, tmp_path, workers):
    child = _stopped_child(workers)
    app, job = _job_up_to_directory(make_app)
    job.stop("Paused")                      # the stopped child is killed, not waited for
    assert child.proc.wait(10) == -signal.SIGKILL
    spare = _spare(workers)
    job.start(app.ctx)
    assert workers._idle == []              # the resumed job took the new child
    assert job.step(app.ctx) is StepResult.SUCCESS
    job.stop("Success")
    assert len(check_media(open(job.output_path, "rb").read(), tmp_path)) == 5
    assert workers._idle == [spare]


def test_child_error_answer(workers):
    good = RecordSource(file_id=("IMAGES", "IM0"), patient_key="p", study_key="s", series_key="e",
                        patient={"PatientID": "X1", "PatientName": "A^B"},
                        study={"StudyInstanceUID": "1.2.3", "StudyDate": "20200101", "StudyTime": "101010"},
                        series={"Modality": "CT", "SeriesInstanceUID": "1.2.3.4", "SeriesNumber": "1"},
                        instance={"InstanceNumber": "1"}, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                        sop_instance_uid="1.2.3.4.5", transfer_syntax_uid="1.2.840.10008.1.2.1")
    bad = RecordSource(**{**good.__dict__, "file_id": ()})     # the builder refuses an empty File ID
    assert workers.submit([good], False, "ORTHANC_MEDIA") is None     # no idle child yet: one is started
    assert workers.submit([good, bad], False, "ORTHANC_MEDIA").result(60) is None
    assert workers._idle == []              # the child that answered an error is not reused
    _spare(workers)
    data = workers.submit([good], False, "ORTHANC_MEDIA").result(60)
    dd = pydicom.dcmread(io.BytesIO(data))
    assert dd.FileSetID == "ORTHANC_MEDIA"
    assert [r.DirectoryRecordType for r in dd.DirectoryRecordSequence] == ["PATIENT", "STUDY", "SERIES", "IMAGE"]
    assert list(dd.DirectoryRecordSequence[3].ReferencedFileID) == ["IMAGES", "IM0"]
    assert len(workers._idle) == 1


def test_child_exits_when_its_server_goes(workers):
    child = workers.take() or workers.take()
    child.proc.stdin.close()                # what the child sees when the server process ends or dies
    assert child.proc.wait(30) == 0


def test_pydicom_record_node_internal_used_by_the_templates():
    """The IMAGE records made from a template set ``RecordNode._record`` directly: fail
    loudly if a pydicom upgrade renames it."""
    from pydicom.dataset import Dataset
    from pydicom.fileset import RecordNode
    ds = Dataset()
    ds.DirectoryRecordType = "PATIENT"
    ds.PatientID = "X"
    assert RecordNode(ds)._record is ds


def test_the_app_pool_is_stopped_at_shutdown(make_app, tmp_path):
    app = archive_app(make_app)
    client = falcon.testing.TestClient(app)
    patients = {upload(client, f)["ParentPatient"] for f in _files()}
    r = client.simulate_post("/tools/create-media", json=sorted(patients))
    assert r.status_code == 200
    pool = dirworker.workers(app.ctx)
    children = list(pool._idle)
    assert len(children) == 1 and children[0].alive()
    app.close()
    assert not children[0].alive() and dirworker._STASH_KEY not in app.ctx.stash
