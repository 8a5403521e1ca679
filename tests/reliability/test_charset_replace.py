"""Issue 13 case 16: non-ASCII replacement values get a character set that holds them.

(a) A CT with no SpecificCharacterSet, modified with ``Replace PatientName =
``Åström^Örjan`` and ``Force``: the new file declares ISO_IR 100 or ISO_IR 192 and its
bytes decode back to exactly that name.
(b) A CT in ISO_IR 100 with PatientName ``GÉRARD^ÉLODIE``, whose StudyDescription is
replaced with ``Łódź 王``: the file switches to ISO_IR 192 and every other text value is
re-encoded, so ``GÉRARD^ÉLODIE`` still reads back.
"""
from __future__ import annotations

import io

import pydicom
import pytest

from builtin.builtin_helpers import make_study, post, upload


def _file(client, study_id: str) -> tuple[pydicom.Dataset, bytes]:
    iid = client.simulate_get(f"/studies/{study_id}/instances").json[0]["ID"]
    data = client.simulate_get(f"/instances/{iid}/file").content
    return pydicom.dcmread(io.BytesIO(data)), data


def _without_charset(n=1, **kw) -> list[bytes]:
    out = []
    for data in make_study(n, **kw):
        ds = pydicom.dcmread(io.BytesIO(data))
        if "SpecificCharacterSet" in ds:
            del ds.SpecificCharacterSet
        buf = io.BytesIO()
        ds.save_as(buf)
        out.append(buf.getvalue())
    return out


@pytest.mark.parametrize("route", ["studies", "instances"])
def test_replace_with_a_non_ascii_name_in_a_file_without_charset(client, route):
    files = _without_charset(1, patient_id="CS1", patient_name="DOE^JOHN", series=1)
    assert "SpecificCharacterSet" not in pydicom.dcmread(io.BytesIO(files[0]))
    ans = upload(client, files)
    name = "\u00c5str\u00f6m^\u00d6rjan"
    body = {"Replace": {"PatientName": name}, "Force": True}
    if route == "studies":
        r = post(client, f"/studies/{ans['ParentStudy']}/modify", body)
        assert r.status_code == 200, r.text
        ds, data = _file(client, r.json["ID"])
    else:
        r = post(client, f"/instances/{ans['ID']}/modify", body)
        assert r.status_code == 200, r.text
        data = r.content
        ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SpecificCharacterSet in ("ISO_IR 100", "ISO_IR 192")
    assert str(ds.PatientName) == name
    assert name.encode("latin-1" if ds.SpecificCharacterSet == "ISO_IR 100" else "utf-8") in data


def test_replace_beyond_latin1_switches_to_utf8_and_reencodes(client):
    files = []
    for data in make_study(1, patient_id="CS2", series=1):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = "G\u00c9RARD^\u00c9LODIE"
        ds.InstitutionName = "H\u00f4pital"
        buf = io.BytesIO()
        ds.save_as(buf)
        files.append(buf.getvalue())
    assert b"G\xc9RARD^\xc9LODIE" in files[0]
    ans = upload(client, files)
    r = post(client, f"/studies/{ans['ParentStudy']}/modify", {"Replace": {"StudyDescription": "\u0141\u00f3d\u017a \u738b"}})
    assert r.status_code == 200, r.text
    ds, data = _file(client, r.json["ID"])
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.StudyDescription == "\u0141\u00f3d\u017a \u738b"
    assert str(ds.PatientName) == "G\u00c9RARD^\u00c9LODIE" and ds.InstitutionName == "H\u00f4pital"
    assert "G\u00c9RARD^\u00c9LODIE".encode("utf-8") in data and b"G\xc9RARD" not in data
    assert client.simulate_get(f"/patients/{client.simulate_get('/studies/' + r.json['ID']).json['ParentPatient']}"
                               ).json["MainDicomTags"]["PatientName"] == "G\u00c9RARD^\u00c9LODIE"
