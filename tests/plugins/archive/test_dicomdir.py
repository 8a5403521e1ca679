"""DICOMDIR media (reference section 4.3): layout, records, record types of non-image
SOP classes, character sets, a patient without PatientID; every media passes dcmtk's
``dcmftest``, reads with ``dcmdump`` and with pydicom's ``FileSet``."""
from __future__ import annotations

import io
import shutil
import subprocess

import falcon.testing
import pydicom
import pytest
from archive_helpers import archive_app, encapsulated_pdf, open_zip, sample_path, synth, upload
from pydicom.fileset import FileSet

from pacsbox_archive import dicomdir as DD


@pytest.fixture
def client(make_app):
    return falcon.testing.TestClient(archive_app(make_app))


def check_media(data: bytes, tmp_path) -> FileSet:
    """Extract a media, run dcmftest on every file and dcmdump on the DICOMDIR, and load
    it with pydicom's FileSet (whose instances must all exist)."""
    z = open_zip(data)
    names = z.namelist()
    assert names[-1] == "DICOMDIR"
    assert names[:-1] == [f"IMAGES/IM{i}" for i in range(len(names) - 1)]
    dest = tmp_path / "media"
    z.extractall(dest)
    for tool in ("dcmftest", "dcmdump"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (dcmtk) is not installed")
    p = subprocess.run(["dcmftest", *names], cwd=dest, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("yes: ") == len(names), p.stdout
    p = subprocess.run(["dcmdump", "-E", "DICOMDIR"], cwd=dest, capture_output=True)
    assert p.returncode == 0 and b"E: " not in p.stderr, p.stderr
    fs = FileSet(dest / "DICOMDIR")
    assert fs.ID == "ORTHANC_MEDIA"
    assert len(fs) == len(names) - 1
    for inst in fs:
        assert inst.path.startswith(str(dest / "IMAGES" / "IM"))
        ds = inst.load()
        assert ds.SOPInstanceUID == inst.SOPInstanceUID
    return fs


def records(data: bytes) -> list:
    dd = pydicom.dcmread(io.BytesIO(open_zip(data).read("DICOMDIR")))
    return list(dd.DirectoryRecordSequence)


def test_media_of_many_kinds(client, tmp_path):
    files = {
        "ct": open(sample_path("CT_small.dcm"), "rb").read(),
        "sr": open(sample_path("reportsi.dcm"), "rb").read(),          # no PatientID
        "pdf": encapsulated_pdf(),
        "fren": open(sample_path("chrFren.dcm"), "rb").read(),         # ISO_IR 100
        "x1": open(sample_path("chrX1.dcm"), "rb").read(),             # ISO_IR 192
        "h31": open(sample_path("chrH31.dcm"), "rb").read(),           # ISO 2022 IR 87
        "j2k": open(sample_path("JPEG2000.dcm"), "rb").read(),
        "rtplan": open(sample_path("rtplan.dcm"), "rb").read(),
    }
    answers = {k: upload(client, v) for k, v in files.items()}
    r = client.simulate_post("/tools/create-media", json=[a["ParentPatient"] for a in answers.values()])
    assert r.status_code == 200
    fs = check_media(r.content, tmp_path)
    z = open_zip(r.content)
    # every file is the stored instance, byte for byte
    stored = {client.simulate_get(f"/instances/{a['ID']}/file").content for a in answers.values()}
    assert {z.read(n) for n in z.namelist()[:-1]} == stored
    recs = records(r.content)
    by_uid = {}
    for rec in recs:
        if "ReferencedSOPInstanceUIDInFile" in rec:
            by_uid[rec.ReferencedSOPInstanceUIDInFile] = rec
    uid = {k: pydicom.dcmread(io.BytesIO(v)).SOPInstanceUID for k, v in files.items()}
    types = {k: by_uid[uid[k]].DirectoryRecordType for k in files}
    assert types == {"ct": "IMAGE", "sr": "SR DOCUMENT", "pdf": "ENCAP DOC", "fren": "IMAGE", "x1": "IMAGE",
                     "h31": "IMAGE", "j2k": "IMAGE", "rtplan": "RT PLAN"}
    assert by_uid[uid["pdf"]].MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert by_uid[uid["sr"]].CompletionFlag and "ConceptNameCodeSequence" in by_uid[uid["sr"]]
    for k, rec in ((k, by_uid[uid[k]]) for k in files):
        f = "/".join(rec.ReferencedFileID)
        ds = pydicom.dcmread(io.BytesIO(z.read(f)))
        assert rec.ReferencedSOPClassUIDInFile == ds.SOPClassUID
        assert rec.ReferencedTransferSyntaxUIDInFile == ds.file_meta.TransferSyntaxUID
    assert by_uid[uid["j2k"]].ReferencedTransferSyntaxUIDInFile == "1.2.840.10008.1.2.4.91"
    # patients: names survive in their character set; the SR patient has an empty PatientID
    patients = {str(rec.PatientName): rec for rec in recs if rec.DirectoryRecordType == "PATIENT"}
    assert patients["Buc^Jérôme"].SpecificCharacterSet == "ISO_IR 100"
    assert patients["Wang^XiaoDong=王^小東"].SpecificCharacterSet == "ISO_IR 192"   # pydicom drops the empty group
    assert patients["Yamada^Tarou=山田^太郎=やまだ^たろう"].SpecificCharacterSet == ["", "ISO 2022 IR 87"]
    assert patients["Last Name^First Name"].PatientID == ""
    assert patients["CompressedSamples^CT1"].PatientID == "1CT1"
    assert len(fs.find(PatientID="1CT1")) == 1


def test_record_contents(client, tmp_path):
    st, se = "1.2.826.0.1.3680043.8.498.401", "1.2.826.0.1.3680043.8.498.411"
    for k in range(3):
        upload(client, synth(patient_id="D1", patient_name="DOE^JANE", study_uid=st, series_uid=se,
                             instance_number=k + 1, accession="AC9", study_description="Chest",
                             series_description="Axial", charset="ISO_IR 100",
                             extra={"StudyID": "S77", "SeriesNumber": 5,
                                                                "StudyDate": "20200304", "StudyTime": "050607"}))
    pid = client.simulate_get("/patients").json[0]
    r = client.simulate_get(f"/patients/{pid}/media")
    check_media(r.content, tmp_path)
    recs = records(r.content)
    assert [rec.DirectoryRecordType for rec in recs] == ["PATIENT", "STUDY", "SERIES", "IMAGE", "IMAGE", "IMAGE"]
    p, s, e, *images = recs
    assert (p.PatientName, p.PatientID) == ("DOE^JANE", "D1")
    assert (s.StudyDate, s.StudyTime, s.StudyDescription, s.StudyInstanceUID, s.StudyID, s.AccessionNumber) == \
        ("20200304", "050607", "Chest", st, "S77", "AC9")
    assert (e.Modality, e.SeriesInstanceUID, e.SeriesNumber) == ("CT", se, 5)
    assert "SeriesDescription" not in e
    assert [im.InstanceNumber for im in images] == [1, 2, 3]
    assert [list(im.ReferencedFileID) for im in images] == [["IMAGES", f"IM{i}"] for i in range(3)]
    assert all(rec.SpecificCharacterSet == "ISO_IR 100" for rec in recs)
    r = client.simulate_post(f"/patients/{pid}/media", json={"Extended": True})
    e2 = records(r.content)[2]
    assert e2.SeriesDescription == "Axial"


def test_missing_study_date_falls_back(client, tmp_path):
    upload(client, synth(patient_id="Q1", extra={"StudyDate": None, "StudyTime": None, "SeriesDate": "19990102",
                                                 "SeriesTime": "030405", "StudyID": None}))
    pid = client.simulate_get("/patients").json[0]
    r = client.simulate_get(f"/patients/{pid}/media")
    check_media(r.content, tmp_path)
    study = [rec for rec in records(r.content) if rec.DirectoryRecordType == "STUDY"][0]
    assert (study.StudyDate, study.StudyTime, study.StudyID) == ("19990102", "030405", "")


def test_pydicom_internals_used_by_the_builder():
    """The builder relies on non-public members of pydicom's FileSet: fail loudly if a
    pydicom upgrade removes them."""
    fs = FileSet()
    assert hasattr(fs, "_tree") and hasattr(fs, "_write_dicomdir")
    assert callable(DD._fileset._four_level_record_type)
    assert DD.is_image_sop_class("1.2.840.10008.5.1.4.1.1.2")
    assert not DD.is_image_sop_class("1.2.840.10008.5.1.4.1.1.88.11")
    assert not DD.is_image_sop_class("1.2.840.10008.5.1.4.1.1.104.1")
    assert not DD.is_image_sop_class("1.2.840.10008.5.1.4.1.1.11.1")   # presentation state
    assert not DD.is_image_sop_class(None)



@pytest.mark.parametrize("interruption", ["Paused", "Shutdown"])
@pytest.mark.parametrize("transcode", [None, "1.2.840.10008.1.2"])
def test_media_job_interrupted_and_resumed(make_app, tmp_path, interruption, transcode):
    from pacsbox import StepResult
    from pacsbox_archive.jobs import MediaJob
    app = archive_app(make_app)
    client = falcon.testing.TestClient(app)
    st = "1.2.826.0.1.3680043.8.498.701"
    for k in range(6):
        upload(client, synth(patient_id="M1", study_uid=st, series_uid=f"1.2.826.0.1.3680043.8.498.71{k % 2}",
                             instance_number=k + 1, charset="ISO_IR 100"))
    ctx = app.ctx
    job = MediaJob([client.simulate_get("/studies").json[0]], transcode=transcode)
    job.start(ctx)
    for _ in range(3):
        assert job.step(ctx) is StepResult.CONTINUE
    job.stop(interruption)
    job.start(ctx)
    while job.step(ctx) is StepResult.CONTINUE:
        pass
    job.stop("Success")
    data = open(job.output_path, "rb").read()
    fs = check_media(data, tmp_path)
    assert len(fs) == 6
    images = [rec for rec in records(data) if rec.DirectoryRecordType == "IMAGE"]
    assert sorted(int(im.InstanceNumber) for im in images) == [1, 2, 3, 4, 5, 6]
    if transcode:
        assert {im.ReferencedTransferSyntaxUIDInFile for im in images} == {transcode}
