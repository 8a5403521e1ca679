"""``POST /instances``: bad input, identifiers, duplicates, encodings, gzip, ZIP, forms,
``OverwriteInstances`` and concurrent first uploads (reference sections 1 and 2.1)."""
from __future__ import annotations

import gzip
import io
import threading
import zipfile
from pathlib import Path

import pytest
import requests
from conftest import read

from pacsbox import orthanc_id

import dicomgen as g


def storage_files(app) -> list[Path]:
    """Every file of the storage area (``<StorageDirectory>/ab/cd/<uuid>``), temporary ones included."""
    root = Path(app.ctx.config.path("StorageDirectory"))
    return sorted(p for p in root.glob("??/??/*") if p.is_file())


def assert_nothing_stored(client, app):
    assert client.simulate_get("/statistics").json["CountInstances"] == 0
    assert client.simulate_get("/changes").json == {"Changes": [], "Done": True, "Last": 0}
    assert storage_files(app) == []


def assert_still_serving(client):
    assert client.simulate_get("/system").status_code == 200
    ok = client.simulate_post("/instances", body=read("CT_small.dcm"))
    assert ok.status_code == 200 and ok.json["Status"] == "Success"


BAD_FILE = {"HttpError": "Bad Request", "HttpStatus": 400, "Message": "Bad file format", "Method": "POST",
            "OrthancError": "Bad file format", "OrthancStatus": 15, "Uri": "/instances"}


def test_empty_body(client, app):
    r = client.simulate_post("/instances", body=b"")
    assert r.status_code == 400
    assert r.json == dict(BAD_FILE, Details="Received an empty DICOM file")
    assert_nothing_stored(client, app)
    assert_still_serving(client)


def test_zero_byte_file_from_disk(client, app, tmp_path):
    f = tmp_path / "zero.dcm"
    f.write_bytes(b"")
    r = client.simulate_post("/instances", body=f.read_bytes(), headers={"Content-Type": "application/dicom"})
    assert r.status_code == 400 and r.json == dict(BAD_FILE, Details="Received an empty DICOM file")
    assert_nothing_stored(client, app)
    assert_still_serving(client)


def test_non_dicom_bytes(client, app):
    r = client.simulate_post("/instances", body=b"garbage")
    assert r.status_code == 400
    assert r.json == dict(BAD_FILE, Details="Cannot parse an invalid DICOM file (size: 7 bytes)")
    assert_nothing_stored(client, app)
    assert_still_serving(client)


def test_truncated_file(client, app):
    data = read("CT_small.dcm")[:-100]
    r = client.simulate_post("/instances", body=data)
    assert r.status_code == 400
    assert r.json == dict(BAD_FILE, Details=f"Cannot parse an invalid DICOM file (size: {len(data)} bytes)")
    assert_nothing_stored(client, app)
    assert_still_serving(client)


def test_preamble_without_dataset(client, app):
    r = client.simulate_post("/instances", body=b"\0" * 128 + b"DICM")
    assert r.status_code == 400 and r.json["OrthancStatus"] == 15
    assert_nothing_stored(client, app)


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_absent_identifier_is_inexistent_tag(client, app, keyword):
    uids = {"study": "8.1", "series": "8.1.1", "sop": "8.1.1.1"}
    uids[{"StudyInstanceUID": "study", "SeriesInstanceUID": "series", "SOPInstanceUID": "sop"}[keyword]] = None
    r = client.simulate_post("/instances", body=g.instance(**uids))
    assert r.status_code == 404
    assert r.json == {"HttpError": "Not Found", "HttpStatus": 404, "Message": "Inexistent tag", "Method": "POST",
                      "OrthancError": "Inexistent tag", "OrthancStatus": 21, "Uri": "/instances"}
    assert_nothing_stored(client, app)


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_empty_identifier_is_bad_file_format(client, app, keyword):
    uids = {"study": "8.1", "series": "8.1.1", "sop": "8.1.1.1"}
    uids[{"StudyInstanceUID": "study", "SeriesInstanceUID": "series", "SOPInstanceUID": "sop"}[keyword]] = ""
    r = client.simulate_post("/instances", body=g.instance(**uids))
    assert r.status_code == 400
    assert r.json == dict(BAD_FILE, Details="missing StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID")
    assert_nothing_stored(client, app)


def test_absent_patient_id_hashes_the_empty_string(client):
    r = client.simulate_post("/instances", body=g.instance(patient_id=None, study="1.2.34"))
    assert r.json["ParentPatient"] == "da39a3ee-5e6b4b0d-3255bfef-95601890-afd80709" == orthanc_id("")
    assert r.json["ParentStudy"] == orthanc_id("", "1.2.34")


def test_worked_example_of_the_reference(client):
    r = client.simulate_post("/instances", body=g.instance("P1", "1.2.3.4", "1.2.3.4.5", "1.2.3.4.5.6"))
    assert r.json == {"ID": "3c65348a-9a978d86-98feef71-5734bbc4-28141409",
                      "ParentPatient": "bdaf1eca-33d4619e-80e8ca68-9a1b74a4-febbbb29",
                      "ParentSeries": "c7174123-a900b7ba-9b9f29b5-3f1a6de6-896c69cc",
                      "ParentStudy": "c905ee8f-9232753a-6087caf4-8628f023-e7d5bdc8",
                      "Path": "/instances/3c65348a-9a978d86-98feef71-5734bbc4-28141409", "Status": "Success"}
    assert r.headers["content-type"] == "application/json; charset=utf-8"


def test_same_sop_instance_uid_in_two_series_gives_two_instances(client):
    a = client.simulate_post("/instances", body=g.instance(series="8.1.1", sop="8.9")).json
    b = client.simulate_post("/instances", body=g.instance(series="8.1.2", sop="8.9")).json
    assert a["Status"] == b["Status"] == "Success"
    assert a["ID"] != b["ID"] and a["ParentStudy"] == b["ParentStudy"]
    assert sorted(client.simulate_get("/instances").json) == sorted([a["ID"], b["ID"]])
    assert len(client.simulate_get(f"/studies/{a['ParentStudy']}").json["Series"]) == 2


def test_identical_reupload_is_already_stored(client, app):
    data = read("MR_small.dcm")
    first = client.simulate_post("/instances", body=data).json
    stats, changes, files = (client.simulate_get("/statistics").json, client.simulate_get("/changes").json,
                             storage_files(app))
    again = client.simulate_post("/instances", body=data)
    assert again.status_code == 200
    assert again.json == dict(first, Status="AlreadyStored")
    assert client.simulate_get("/statistics").json == stats
    assert client.simulate_get("/changes").json == changes
    assert storage_files(app) == files and len(files) == 1
    assert client.simulate_get(f"/instances/{first['ID']}/file").content == data


def test_overwrite_instances_replaces_the_file(make_app):
    import falcon.testing
    app = make_app({"OverwriteInstances": True})
    client = falcon.testing.TestClient(app)
    v1 = g.instance(InstitutionName="First")
    v2 = g.instance(InstitutionName="Second")
    a = client.simulate_post("/instances", body=v1).json
    uuid1 = client.simulate_get(f"/instances/{a['ID']}").json["FileUuid"]
    b = client.simulate_post("/instances", body=v2)
    assert b.status_code == 200 and b.json["ID"] == a["ID"]
    assert client.simulate_get(f"/instances/{a['ID']}/file").content == v2
    assert client.simulate_get(f"/instances/{a['ID']}").json["FileUuid"] != uuid1
    assert client.simulate_get("/instances").json == [a["ID"]]
    assert len(storage_files(app)) == 1
    # as the reference: the old instance went with its empty parents (and their changes),
    # everything was created again from the new file
    assert client.simulate_get(f"/studies/{a['ParentStudy']}").json["MainDicomTags"]["InstitutionName"] == "Second"
    changes = client.simulate_get("/changes").json["Changes"]
    assert [(c["Seq"], c["ChangeType"]) for c in changes] == [
        (5, "NewInstance"), (6, "NewSeries"), (7, "NewStudy"), (8, "NewPatient")]
    # with a sibling left in the series, only the instance is replaced
    client.simulate_post("/instances", body=g.instance(sop="1.2.3.4.5.7", InstitutionName="Third"))
    client.simulate_post("/instances", body=g.instance(InstitutionName="Fourth"))
    assert client.simulate_get(f"/studies/{a['ParentStudy']}").json["MainDicomTags"]["InstitutionName"] == "Second"
    changes = client.simulate_get("/changes").json["Changes"]
    assert [(c["Seq"], c["ChangeType"]) for c in changes] == [
        (6, "NewSeries"), (7, "NewStudy"), (8, "NewPatient"), (9, "NewInstance"), (10, "NewInstance")]
    assert len(storage_files(app)) == 2


def test_without_overwrite_the_first_file_is_kept(client, app):
    a = client.simulate_post("/instances", body=g.instance(InstitutionName="First")).json
    b = client.simulate_post("/instances", body=g.instance(InstitutionName="Second")).json
    assert b == dict(a, Status="AlreadyStored")
    assert client.simulate_get(f"/studies/{a['ParentStudy']}").json["MainDicomTags"]["InstitutionName"] == "First"
    assert len(storage_files(app)) == 1


def test_gzip_body(client):
    data = read("CT_small.dcm")
    r = client.simulate_post("/instances", body=gzip.compress(data), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json["Status"] == "Success"
    assert client.simulate_get(f"/instances/{r.json['ID']}/file").content == data
    # without the header the gzip bytes are not DICOM
    r = client.simulate_post("/instances", body=gzip.compress(data))
    assert r.status_code == 400 and r.json["OrthancStatus"] == 15


def test_zip_upload_skips_dicomdir_and_non_dicom(client, app, tmp_path):
    from pydicom import dcmread
    from pydicom.fileset import FileSet
    ct, mr = read("CT_small.dcm"), read("MR_small.dcm")
    fs = FileSet()
    fs.add(dcmread(io.BytesIO(read("JPEG2000.dcm"))))
    fs.write(tmp_path / "media")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a/CT_small.dcm", ct)
        z.writestr("readme.txt", b"hello")
        z.writestr("dir/", b"")
        for p in sorted((tmp_path / "media").rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(tmp_path / "media").as_posix())
        z.writestr("b/MR_small.dcm", mr)
        z.writestr("again.dcm", ct)
    assert "DICOMDIR" in zipfile.ZipFile(io.BytesIO(buf.getvalue())).namelist()
    r = client.simulate_post("/instances", body=buf.getvalue())
    assert r.status_code == 200
    answers = r.json
    assert [a["Status"] for a in answers] == ["Success", "Success", "Success", "AlreadyStored"]
    assert answers[0]["ID"] == answers[3]["ID"]
    assert client.simulate_get("/statistics").json["CountInstances"] == 3  # CT, JPEG2000, MR; DICOMDIR skipped
    assert client.simulate_get(f"/instances/{answers[2]['ID']}/file").content == mr


def test_zip_errors(client, app):
    r = client.simulate_post("/instances", body=b"PK\x03\x04" + b"\0" * 20)
    assert r.status_code == 400 and r.json["Details"] == "Cannot open ZIP archive from memory buffer"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.txt", b"nope")
    r = client.simulate_post("/instances", body=buf.getvalue())
    assert r.status_code == 200 and r.json == []
    assert_nothing_stored(client, app)


def test_multipart_form_upload(live_server):
    server = live_server()
    files = {"a": ("CT_small.dcm", read("CT_small.dcm")), "b": ("MR_small.dcm", read("MR_small.dcm"))}
    r = requests.post(server.url + "/instances", files=files, timeout=30)
    assert r.status_code == 200 and r.content == b""  # Orthanc answers a form upload with nothing
    assert requests.get(server.url + "/statistics", timeout=30).json()["CountInstances"] == 2
    r = requests.post(server.url + "/instances", files={"x": ("x.bin", b"garbage")}, timeout=30)
    assert r.status_code == 400 and r.json()["Details"] == "Cannot parse an invalid DICOM file (size: 7 bytes)"


NAMES = {
    "latin1": ({"SpecificCharacterSet": "ISO_IR 100"}, "Müller^Jörg", "Schädel äöü", "latin_1"),
    "utf8": ({"SpecificCharacterSet": "ISO_IR 192"}, "Ñandú^Zoë", "Ünïcode 漢字", "utf_8"),
    "default-latin1": ({}, "Grünwald^É", "Bauch", "latin_1"),
}


@pytest.mark.parametrize("case", sorted(NAMES))
def test_non_ascii_names_in_every_json_answer(client, case):
    extra, name, description, _codec = NAMES[case]
    data = g.instance(f"P-{case}", PatientName=name, StudyDescription=description, SeriesDescription=description,
                      Modality="OT", **extra)
    if not extra:  # no Specific Character Set: the bytes are Latin-1 (DefaultEncoding "Latin1")
        assert name.encode("latin-1") in data
    up = client.simulate_post("/instances", body=data).json
    pid, stid, seid, iid = up["ParentPatient"], up["ParentStudy"], up["ParentSeries"], up["ID"]
    assert client.simulate_get(f"/patients/{pid}").json["MainDicomTags"]["PatientName"] == name
    assert client.simulate_get("/patients", query_string="expand").json[0]["MainDicomTags"]["PatientName"] == name
    study = client.simulate_get(f"/studies/{stid}").json
    assert study["MainDicomTags"]["StudyDescription"] == description
    assert study["PatientMainDicomTags"]["PatientName"] == name
    assert client.simulate_get(f"/series/{seid}").json["MainDicomTags"]["SeriesDescription"] == description
    assert client.simulate_get(f"/instances/{iid}/tags").json["0010,0010"]["Value"] == name
    assert client.simulate_get(f"/instances/{iid}/simplified-tags").json["StudyDescription"] == description
    assert client.simulate_get(f"/instances/{iid}/tags", query_string="short").json["0010,0010"] == name
    assert client.simulate_get(f"/patients/{pid}/module").json["0010,0010"]["Value"] == name
    assert client.simulate_get(f"/studies/{stid}/shared-tags", query_string="simplify").json["PatientName"] == name
    assert client.simulate_get(f"/series/{seid}/study").json["MainDicomTags"]["StudyDescription"] == description
    found = client.simulate_post("/tools/find", json={"Level": "Study", "Expand": True,
                                                      "Query": {"PatientName": name.upper()}}).json
    assert [f["PatientMainDicomTags"]["PatientName"] for f in found] == [name]


def test_concurrent_first_uploads_of_one_new_patient(live_server):
    server = live_server()
    bodies = [g.instance("PCONC", "9.9", "9.9.1", f"9.9.1.{i}", InstanceNumber=str(i + 1)) for i in range(16)]
    barrier = threading.Barrier(16)
    answers: list = [None] * 16

    def upload(i):
        with requests.Session() as s:
            barrier.wait()
            answers[i] = s.post(server.url + "/instances", data=bodies[i], timeout=60)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [200] * 16
    assert {a.json()["Status"] for a in answers} == {"Success"}
    stats = requests.get(server.url + "/statistics", timeout=30).json()
    assert (stats["CountPatients"], stats["CountStudies"], stats["CountSeries"], stats["CountInstances"]) == (1, 1, 1, 16)
    changes = requests.get(server.url + "/changes", params={"since": 0, "limit": 100}, timeout=30).json()["Changes"]
    kinds = [c["ChangeType"] for c in changes]
    assert kinds.count("NewPatient") == kinds.count("NewStudy") == kinds.count("NewSeries") == 1
    assert kinds.count("NewInstance") == 16
    series = requests.get(server.url + f"/series/{orthanc_id('PCONC', '9.9', '9.9.1')}", timeout=30).json()
    assert sorted(series["Instances"]) == sorted(orthanc_id("PCONC", "9.9", "9.9.1", f"9.9.1.{i}") for i in range(16))


@pytest.mark.parametrize("rows", [16, 512])
def test_stored_md5_of_small_and_large_files(client, rows):
    """The MD5 of the stored file, computed inline below ``PARALLEL_MD5_BYTES`` and on a
    hashing thread while the file is written above it (a 512 x 512 16-bit image: 512 KB)."""
    import hashlib

    import pydicom

    from pacsbox.ingest import PARALLEL_MD5_BYTES
    ds = pydicom.dcmread(io.BytesIO(read("MR_small.dcm")))
    ds.Rows = ds.Columns = rows
    ds.PixelData = bytes(range(256)) * (rows * rows * 2 // 256)
    buf = io.BytesIO()
    ds.save_as(buf)
    data = buf.getvalue()
    assert (len(data) >= PARALLEL_MD5_BYTES) == (rows == 512)
    r = client.simulate_post("/instances", body=data)
    assert r.status_code == 200 and r.json["Status"] == "Success"
    md5 = client.simulate_get(f"/instances/{r.json['ID']}/attachments/dicom/md5").text
    assert md5 == hashlib.md5(data).hexdigest()
    assert client.simulate_get(f"/instances/{r.json['ID']}/file").content == data


def test_a_large_file_the_storage_refuses_leaves_nothing(client, app, monkeypatch):
    """The hashing thread's work is collected when the write fails: the error is the
    storage's, nothing is indexed, and the next upload is stored."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(read("MR_small.dcm")))
    ds.Rows = ds.Columns = 512
    ds.PixelData = bytes(512 * 512 * 2)
    buf = io.BytesIO()
    ds.save_as(buf)

    def full(uuid, data, content_type=1):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(app.ctx.storage, "create", full)
    r = client.simulate_post("/instances", body=buf.getvalue())
    assert r.status_code >= 500, r.text
    assert client.simulate_get("/instances").json == []
    monkeypatch.undo()
    assert client.simulate_post("/instances", body=buf.getvalue()).json["Status"] == "Success"
    assert_still_serving(client)
