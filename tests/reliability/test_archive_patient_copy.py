"""Issue 13 case 11: a study archive names the patient folder from the study's own copy of
the patient tags. Two studies share PatientID ``SHARED`` with PatientNames ``ALPHA^ONE``
and ``BETA^TWO``: the ZIP of study B names ``BETA``, never ``ALPHA``."""
from __future__ import annotations

import io
import zipfile

import falcon.testing

from plugins.archive.archive_helpers import archive_app, synth, upload


def test_study_archive_uses_the_study_copy_of_the_patient(make_app):
    client = falcon.testing.TestClient(archive_app(make_app))
    a = upload(client, synth(patient_id="SHARED", patient_name="ALPHA^ONE", study_uid="1.2.826.0.1.3680043.8.498.1101",
                             sop_uid="1.2.826.0.1.3680043.8.498.1102", study_description="A"))
    b = upload(client, synth(patient_id="SHARED", patient_name="BETA^TWO", study_uid="1.2.826.0.1.3680043.8.498.1201",
                             sop_uid="1.2.826.0.1.3680043.8.498.1202", study_description="B"))
    assert a["ParentPatient"] == b["ParentPatient"]
    for ans, name, other in ((b, "SHARED BETA TWO", "ALPHA"), (a, "SHARED ALPHA ONE", "BETA")):
        for kind in ("archive",):
            r = client.simulate_get(f"/studies/{ans['ParentStudy']}/{kind}")
            names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
            assert names and all(n.startswith(name + "/") for n in names), names
            assert not any(other in n for n in names)
