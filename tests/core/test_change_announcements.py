"""The index announces every change-log row it writes (issue 14 item 8).

Each ``/changes`` row reaches ``change_recorded`` exactly once, whichever path wrote it:
ingest, metadata and attachment writes through the REST API, the stability monitor, and a
plugin writing through ``ctx.index`` directly (which used to announce nothing).
"""
from __future__ import annotations

import io
import time

import falcon.testing
import pydicom
from pydicom.data import get_testdata_file

from pacsbox.testing import inline_plugin, wait_for_notifications


def _ct() -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_every_change_row_is_announced_once(pacsbox_make_app):
    seen: list[dict] = []
    app = pacsbox_make_app({"StableAge": 1},
                           plugins=[inline_plugin("recorder", change_recorded=lambda change: seen.append(dict(change)))])
    client = falcon.testing.TestClient(app)
    ans = client.simulate_post("/instances", body=_ct()).json
    iid, sid = ans["ID"], ans["ParentSeries"]
    assert client.simulate_put(f"/instances/{iid}/metadata/1024", body="a").status_code == 200
    assert client.simulate_delete(f"/instances/{iid}/metadata/1024").status_code == 200
    assert client.simulate_put(f"/series/{sid}/attachments/1025", body=b"xyz").status_code == 200
    assert client.simulate_delete(f"/series/{sid}/attachments/1025").status_code == 200
    res = app.ctx.index.lookup(iid, 3)
    app.ctx.index.set_metadata(res.internal_id, "1030", "b", res.public_id, res.level)  # a plugin's write
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # StableAge 1: the monitor marks the three levels stable
        rows = client.simulate_get("/changes?limit=100").json["Changes"]
        if sum(c["ChangeType"].startswith("Stable") for c in rows) == 3:
            break
        time.sleep(0.2)
    assert wait_for_notifications(app)
    rows = client.simulate_get("/changes?limit=100").json["Changes"]
    assert [c["ChangeType"] for c in rows] == [
        "NewInstance", "NewSeries", "NewStudy", "NewPatient", "UpdatedMetadata", "UpdatedMetadata",
        "UpdatedAttachment", "UpdatedAttachment", "UpdatedMetadata", "StableSeries", "StableStudy", "StablePatient"]
    assert seen == rows


def test_a_failing_listener_does_not_fail_the_write(pacsbox_make_app, caplog):
    app = pacsbox_make_app()
    index = app.ctx.index
    got: list[str] = []

    def broken(change):
        raise RuntimeError("listener bug")

    index.add_change_listener(broken)
    index.add_change_listener(lambda change: got.append(change["ChangeType"]))
    client = falcon.testing.TestClient(app)
    assert client.simulate_post("/instances", body=_ct()).status_code == 200
    assert got == ["NewInstance", "NewSeries", "NewStudy", "NewPatient"]
    assert "change listener failed on NewInstance" in caplog.text
    assert len(client.simulate_get("/instances").json) == 1
