"""Issue 13 case 15: ``Replace`` in an anonymize keeps (0012,0063) DeidentificationMethod
non-empty (Orthanc 1.10.1 leaves it empty once the profile is customized)."""
from __future__ import annotations

import io

import pydicom

import pacsbox
from builtin.builtin_helpers import make_study, post, upload


def test_replace_in_anonymize_keeps_the_deidentification_method(client):
    ans = upload(client, make_study(2, patient_id="DEID", series=1))
    r = post(client, f"/studies/{ans['ParentStudy']}/anonymize", {"Replace": {"PatientName": "ANON^1"}})
    assert r.status_code == 200, r.text
    for iid in client.simulate_get(f"/studies/{r.json['ID']}/instances").json:
        ds = pydicom.dcmread(io.BytesIO(client.simulate_get(f"/instances/{iid['ID']}/file").content))
        assert str(ds.PatientName) == "ANON^1" and ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethod == \
            f"pacsbox {pacsbox.__version__} - PS 3.15-2021b Table E.1-1 Basic Profile (customized)"
