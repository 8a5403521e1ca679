"""Issue 13 case 19: DICOMDIR media that validators accept.

A media archive of one study holding an SR document and instances in ASCII, Latin-1 and
Latin-2: the SR DOCUMENT record keeps only the keys PS3.3 allows (no ``CONTAINS`` or
``HAS OBS CONTEXT`` content items), the DICOMDIR declares its character set, and
``dciodvfy``, ``dcentvfy`` and ``dcm2xml`` accept the result.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import zipfile

import falcon.testing
import pydicom
import pytest
from pydicom.uid import generate_uid


from plugins.archive.archive_helpers import archive_app, sample_path

TOOLS = ("dciodvfy", "dcentvfy", "dcm2xml")


def _one_study() -> list[bytes]:
    study, out = generate_uid(), []
    for i, (name, charset, patient_name) in enumerate((
            ("CT_small.dcm", None, "DOE^JOHN"),
            ("chrFren.dcm", "ISO_IR 100", "Buc^J\u00e9r\u00f4me"),
            ("CT_small.dcm", "ISO_IR 101", "Dvo\u0159\u00e1k^Anton\u00edn"),
            ("reportsi.dcm", None, None))):
        ds = pydicom.dcmread(sample_path(name))
        ds.PatientID, ds.StudyInstanceUID = "DIRV", study
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if charset:
            ds.SpecificCharacterSet = charset
        if patient_name:
            ds.PatientName = patient_name
        if "InstanceNumber" not in ds or ds.InstanceNumber in (None, ""):
            ds.InstanceNumber = i + 1
        buf = io.BytesIO()
        ds.save_as(buf)
        out.append(buf.getvalue())
    return out


@pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS), reason="dicom3tools/dcmtk missing")
def test_media_of_an_sr_and_three_character_sets_validates(make_app, tmp_path):
    client = falcon.testing.TestClient(archive_app(make_app))
    study = None
    for data in _one_study():
        r = client.simulate_post("/instances", body=data)
        assert r.status_code == 200, r.text
        study = r.json["ParentStudy"]
    r = client.simulate_post(f"/studies/{study}/media", json={})
    assert r.status_code == 200
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)
    dicomdir = tmp_path / "DICOMDIR"
    ds = pydicom.dcmread(dicomdir)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    sr = [rec for rec in ds.DirectoryRecordSequence if rec.DirectoryRecordType == "SR DOCUMENT"]
    assert len(sr) == 1
    assert all(item.RelationshipType == "HAS CONCEPT MOD" for item in sr[0].get("ContentSequence", []))
    p = subprocess.run(["dciodvfy", str(dicomdir)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], p.stdout + p.stderr
    p = subprocess.run(["dcentvfy", str(dicomdir)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], p.stdout + p.stderr
    p = subprocess.run(["dcm2xml", str(dicomdir)], capture_output=True, timeout=60)
    assert p.returncode == 0 and b"E: " not in p.stderr, p.stderr
