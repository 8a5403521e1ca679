"""Issue 13 case 14: a forced rename keeps the patient's main tags in step.

``POST /patients/{id}/modify {"Replace": {"PatientID": "2345", "PatientName": "DOE^JACK"},
"Force": true, "KeepSource": false}`` on a patient ``2345`` / ``DOE^JOHN`` leaves exactly
one patient, one study and as many instances; ``/patients/{id}`` then shows ``DOE^JACK``
(Orthanc 1.10.1 keeps ``DOE^JOHN`` at the patient level while the study and instances say
``DOE^JACK``)."""
from __future__ import annotations

from builtin.builtin_helpers import make_study, post, upload


def test_forced_rename_keeps_the_patient_tags_in_step(client):
    ans = upload(client, make_study(3, patient_id="2345", patient_name="DOE^JOHN", series=2))
    pid = ans["ParentPatient"]
    before = client.simulate_get("/instances").json
    r = post(client, f"/patients/{pid}/modify", {"Replace": {"PatientID": "2345", "PatientName": "DOE^JACK"},
                                                  "Force": True, "KeepSource": False})
    assert r.status_code == 200, r.text
    assert r.json["ID"] == pid and r.json["Type"] == "Patient"
    assert client.simulate_get("/patients").json == [pid]
    studies = client.simulate_get("/studies").json
    assert len(studies) == 1
    instances = client.simulate_get("/instances").json
    assert len(instances) == len(before) == 3
    patient = client.simulate_get(f"/patients/{pid}").json
    assert patient["MainDicomTags"]["PatientName"] == "DOE^JACK"
    assert patient["MainDicomTags"]["PatientID"] == "2345"
    study = client.simulate_get(f"/studies/{studies[0]}").json
    assert study["PatientMainDicomTags"]["PatientName"] == "DOE^JACK"
    for iid in instances:
        assert client.simulate_get(f"/instances/{iid}/simplified-tags").json["PatientName"] == "DOE^JACK"
    # /tools/find agrees
    found = post(client, "/tools/find", {"Level": "Patient", "Query": {"PatientName": "DOE^JACK"}}).json
    assert found == [pid]
