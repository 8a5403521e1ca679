"""ZIP contents of the archive flavour (reference section 4.2): folder and file names,
normalization, collisions, fallbacks, order, safe names, deflate/stored, bytes."""
from __future__ import annotations

import os
import zipfile

import falcon.testing
import pytest
from archive_helpers import archive_app, assert_safe_names, open_zip, synth, sample_path, upload

from pacsbox import orthanc_id
from pacsbox_archive.layout import file_name, folder_name, normalize_name


@pytest.fixture
def client(make_app):
    return falcon.testing.TestClient(archive_app(make_app))


def test_normalize_name_rules():
    assert normalize_name("DOE^JOHN") == "DOE JOHN"
    assert normalize_name("  A  \t B ") == "A B"
    assert normalize_name("BENCH1-CT-P0000 ROSSI^CLARA") == "BENCH1CTP0000 ROSSI CLARA"
    assert normalize_name("Buc^Jérôme") == "Buc Jerome"   # transliterated (Orthanc: "Buc Jrme"), issue 13
    assert normalize_name("Wang^XiaoDong=王^小東=") == "Wang XiaoDong"
    assert normalize_name("a/b\\c\x00d:e*f?g") == "abcdefg"
    assert normalize_name("x_y.z") == "x_y.z"
    assert normalize_name("..") == "" and normalize_name(" . ") == "" and normalize_name("../..") == ""
    assert normalize_name(".. ..") == "" and normalize_name("Head. ") == "Head"
    assert normalize_name("^^^") == ""
    # Utf8 archives keep the caret of a person name, not its empty components
    assert normalize_name("Müller^Jürgen", utf8=True) == "Müller^Jürgen"
    assert normalize_name("P1 DOE^JOHN^^^", utf8=True) == "P1 DOE^JOHN"
    assert normalize_name("^^^", utf8=True) == "" and normalize_name("a/b^c", utf8=True) == "ab^c"


def test_folder_and_file_names():
    assert folder_name(0, {"PatientID": "P1", "PatientName": "DOE^JOHN"}) == "P1 DOE JOHN"
    assert folder_name(1, {"AccessionNumber": "ACC", "StudyDescription": "Head"}) == "ACC Head"
    assert folder_name(2, {"Modality": "CT", "SeriesDescription": "AX 5mm"}) == "CT AX 5mm"
    assert folder_name(0, {}) == "Unknown Patient"
    assert folder_name(1, {"AccessionNumber": "", "StudyDescription": "^"}) == "Unknown Study"
    assert folder_name(2, {"Modality": "..", "SeriesDescription": "/"}) == "Unknown Series"
    assert file_name("CT", 0) == "CT000000.dcm"
    assert file_name("mr", 12) == "MR000012.dcm"
    assert file_name("M", 3) == "M0000003.dcm"
    assert file_name("", 7) == "00000007.dcm"
    assert file_name("C/", 1) == "C000001.dcm"


def test_study_layout_order_collisions_and_bytes(client):
    pid, study = "P1", "1.2.826.0.1.3680043.8.498.100"
    series = ["1.2.826.0.1.3680043.8.498.101", "1.2.826.0.1.3680043.8.498.102",
              "1.2.826.0.1.3680043.8.498.103", "1.2.826.0.1.3680043.8.498.104"]
    files = {}
    # two series share "CT Series" (collision), one has a one-letter modality, one none
    specs = [(series[0], "CT", "Series", 3), (series[1], "CT", "Series", 2), (series[2], "M", "Scout", 1),
             (series[3], None, None, 1)]
    for se_uid, modality, desc, n in specs:
        for k in range(n):
            data = synth(patient_id=pid, patient_name="DOE^JOHN", study_uid=study, series_uid=se_uid,
                         modality=modality, series_description=desc, accession="ACC1",
                         study_description="Head^Neck", instance_number=k + 1)
            ans = upload(client, data)
            files[ans["ID"]] = (se_uid, data)
    study_id = orthanc_id(pid, study)
    r = client.simulate_get(f"/studies/{study_id}/archive")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == f'filename="{study_id}.zip"'
    z = open_zip(r.content)
    assert z.comment == b"Created by Orthanc"
    # expected: series in ascending Orthanc ID order, instances in upload order
    order = sorted(series, key=lambda s: orthanc_id(pid, study, s))
    names_by_series = {}
    seen_ct = 0
    expected = []
    for s in order:
        modality, desc, n = {sp[0]: sp[1:] for sp in specs}[s]
        if modality == "CT":
            seen_ct += 1
            folder = "CT Series" if seen_ct == 1 else "CT Series-2"
        elif modality == "M":
            folder = "M Scout"
        else:
            folder = "Unknown Series"
        names_by_series[s] = folder
        for k in range(n):
            fname = {"CT": f"CT{k:06d}.dcm", "M": f"M{k:07d}.dcm", None: f"{k:08d}.dcm"}[modality]
            expected.append(f"P1 DOE JOHN/ACC1 Head Neck/{folder}/{fname}")
    assert z.namelist() == expected
    # each entry holds the stored file, byte for byte, in the order of the uploads
    by_series = {}
    for iid, (se_uid, data) in files.items():
        by_series.setdefault(se_uid, []).append(data)
    for s in order:
        folder = names_by_series[s]
        got = [z.read(n) for n in z.namelist() if n.split("/")[2] == folder]
        assert got == by_series[s]
    # uncompressed files are deflated; no directory entries
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    assert not any(n.endswith("/") for n in z.namelist())


def test_compressed_transfer_syntaxes_are_stored(client):
    jpeg = open(sample_path("JPEG2000.dcm"), "rb").read()
    rle = open(sample_path("MR_small_RLE.dcm"), "rb").read()
    ct = open(sample_path("CT_small.dcm"), "rb").read()
    ids = [upload(client, d)["ParentPatient"] for d in (jpeg, rle, ct)]
    r = client.simulate_post("/tools/create-archive", json=ids)
    z = open_zip(r.content)
    kinds = {z.read(i.filename): i.compress_type for i in z.infolist()}
    assert kinds == {jpeg: zipfile.ZIP_STORED, rle: zipfile.ZIP_STORED, ct: zipfile.ZIP_DEFLATED}


def test_non_ascii_names_become_safe_ascii(client):
    for name in ("chrFren.dcm", "chrX1.dcm", "chrGerm.dcm"):
        upload(client, open(sample_path(name), "rb").read())
    r = client.simulate_post("/tools/create-archive", json=client.simulate_get("/patients").json)
    names = open_zip(r.content).namelist()
    tops = sorted({n.split("/")[0] for n in names})
    # transliterated (Orthanc 1.10.1 drops the letters: "Buc Jrme", "neas Rdiger"), issue 13 case 12
    assert tops == ["SCSFREN Buc Jerome", "SCSGERM Aneas Rudiger", "X1EXAMPLE Wang XiaoDong"]
    for n in names:
        n.encode("ascii")


def test_two_patients_normalizing_the_same_get_distinct_folders(client):
    a = synth(patient_id="Ä1", patient_name="MÜLLER^ANNA", charset="ISO_IR 192")
    b = synth(patient_id="A1", patient_name="MULLER^ANNA", charset="ISO_IR 192")
    pa, pb = upload(client, a)["ParentPatient"], upload(client, b)["ParentPatient"]
    assert pa != pb
    r = client.simulate_post("/tools/create-archive", json={"Resources": [pa, pb]})
    z = open_zip(r.content)
    first, second = sorted([(pa, a), (pb, b)])
    assert z.namelist() == ["A1 MULLER ANNA/ACC1 Study/CT Series/CT000000.dcm",
                            "A1 MULLER ANNA-2/ACC1 Study/CT Series/CT000000.dcm"]
    assert z.read(z.namelist()[0]) == first[1] and z.read(z.namelist()[1]) == second[1]


def test_hostile_tag_values_cannot_escape(client, tmp_path):
    data = synth(patient_id="..", patient_name="../../etc/passwd", accession="..\\..\\x",
                 study_description="/abs/../..", series_description="..", modality="..")
    upload(client, data)
    data2 = synth(patient_id="/", patient_name="\\", accession=".", study_description="a\x00b",
                  series_description="c:\\d", modality="/")
    upload(client, data2)
    r = client.simulate_post("/tools/create-archive", json=client.simulate_get("/patients").json)
    z = open_zip(r.content)
    assert_safe_names(z.namelist())
    # "/", "\\" and NUL are dropped; names of dots (even with spaces: ".. .." would
    # become ".." on Windows) fall back to "Unknown ..."
    assert sorted(z.namelist()) == [".. ....etcpasswd/....x abs/Unknown Series/..000000.dcm",
                                    "Unknown Patient/. ab/cd/0000000.dcm"]
    dest = tmp_path / "out"
    z.extractall(dest)
    root = os.path.realpath(dest)
    for dirpath, _dirs, files in os.walk(dest):
        for f in files:
            assert os.path.realpath(os.path.join(dirpath, f)).startswith(root + os.sep)
    assert sum(len(f) for _d, _s, f in os.walk(dest)) == 2


def test_mixed_levels_are_merged_without_duplicates(client):
    pid, st1, st2 = "P9", "1.2.826.0.1.3680043.8.498.201", "1.2.826.0.1.3680043.8.498.202"
    se1, se2 = "1.2.826.0.1.3680043.8.498.211", "1.2.826.0.1.3680043.8.498.212"
    a = upload(client, synth(patient_id=pid, study_uid=st1, series_uid=se1, instance_number=1))
    b = upload(client, synth(patient_id=pid, study_uid=st1, series_uid=se1, instance_number=2))
    c = upload(client, synth(patient_id=pid, study_uid=st2, series_uid=se2, instance_number=1))
    # an instance, its series, and an instance of another study
    r = client.simulate_post("/tools/create-archive", json=[a["ID"], a["ParentSeries"], c["ID"], a["ID"]])
    z = open_zip(r.content)
    assert len(z.namelist()) == 3
    assert r.headers["content-disposition"] == 'filename="Archive.zip"'
    # the patient alone gives the same set
    r2 = client.simulate_post("/tools/create-archive", json=[a["ParentPatient"]])
    assert sorted(open_zip(r2.content).namelist()) == sorted(z.namelist())
    assert b["ParentSeries"] == a["ParentSeries"]
