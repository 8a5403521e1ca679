"""Deletes racing with deletes and uploads never touch another resource.

Regression: a DELETE resolved the resource before taking the write lock and deleted by
internal row ID; a concurrent DELETE of the same instance followed by an upload that
reused the freed row ID made the late DELETE remove the new, unrelated patient.
"""
from __future__ import annotations

import os
import threading

import requests

from dicomgen import instance


def _files(root) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if not f.endswith((".db", "-wal", "-shm", ".lock", ".pending-files"))}


def test_stale_delete_does_not_touch_a_new_resource(make_app):
    import falcon.testing
    app = make_app()
    client = falcon.testing.TestClient(app)
    a = client.simulate_post("/instances", body=instance("PA", "1.1", "1.1.1", "1.1.1.1")).json
    stale = app.ctx.index.lookup(a["ID"], 3)
    assert client.simulate_delete(f"/instances/{a['ID']}").status_code == 200
    b = client.simulate_post("/instances", body=instance("PB", "2.1", "2.1.1", "2.1.1.1")).json
    assert b["Status"] == "Success"
    assert app.ctx.index.lookup(b["ID"], 3).internal_id != stale.internal_id  # row IDs are never reused
    assert app.ctx.index.delete_resource(stale) is None
    assert client.simulate_get(f"/instances/{b['ID']}").status_code == 200
    assert client.simulate_get("/patients").json == [b["ParentPatient"]]
    assert client.simulate_get(f"/instances/{b['ID']}/file").status_code == 200


def test_concurrent_deletes_and_an_upload(live_server, tmp_path):
    server = live_server({"StorageDirectory": str(tmp_path / "race")})
    url = server.url
    for trial in range(20):
        a = requests.post(f"{url}/instances", data=instance("PA", f"1.{trial}", f"1.{trial}.1", f"1.{trial}.1.1")).json()
        b_data = instance(f"PB{trial}", f"2.{trial}", f"2.{trial}.1", f"2.{trial}.1.1")
        statuses: list[int] = []
        uploaded: list[dict] = []
        start = threading.Barrier(7)

        def delete():
            start.wait()
            statuses.append(requests.delete(f"{url}/instances/{a['ID']}").status_code)

        def upload():
            start.wait()
            uploaded.append(requests.post(f"{url}/instances", data=b_data).json())

        threads = [threading.Thread(target=delete) for _ in range(6)] + [threading.Thread(target=upload)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(statuses) == [200] + [404] * 5, statuses
        b = uploaded[0]
        assert requests.get(f"{url}/instances/{b['ID']}").status_code == 200
        assert requests.get(f"{url}/instances/{b['ID']}/file").content == b_data
    stats = requests.get(f"{url}/statistics").json()
    assert stats["CountInstances"] == 20 and stats["CountPatients"] == 20
    # every stored file belongs to an instance, and nothing else is left in the storage area
    assert len(_files(tmp_path / "race")) == 20
