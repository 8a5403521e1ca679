"""First end-to-end checks of the core REST API on a falcon test client."""
from conftest import read

from pacsbox import orthanc_id


def test_upload_then_browse(client):
    data = read("CT_small.dcm")
    r = client.simulate_post("/instances", body=data)
    assert r.status_code == 200
    ans = r.json
    assert ans["Status"] == "Success"
    pid = "1CT1"
    study = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert ans["ParentPatient"] == orthanc_id(pid)
    assert ans["ParentStudy"] == orthanc_id(pid, study)
    r2 = client.simulate_post("/instances", body=data)
    assert r2.json["Status"] == "AlreadyStored" and r2.json["ID"] == ans["ID"]
    assert client.simulate_get("/instances").json == [ans["ID"]]
    f = client.simulate_get(f"/instances/{ans['ID']}/file")
    assert f.status_code == 200 and f.content == data
    assert client.simulate_get("/statistics").json["CountInstances"] == 1
