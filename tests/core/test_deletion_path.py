"""One deletion path, one behaviour (issue 14 item 9): ``ctx.resources.delete``.

``DELETE /{level}/{id}`` and the jobs (``KeepSource: false``) go through the same service:
a file the storage area cannot remove is logged and stays journalled, the resource is
deleted all the same, and the next start removes the file.
"""
from __future__ import annotations

import io
import os

import falcon.testing
import pydicom
from pydicom.data import get_testdata_file

from pacsbox import create_app


def _ct(uid_suffix: str) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = ds.SOPInstanceUID + "." + uid_suffix
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class _FailingRemove:
    """Make ``storage.remove`` raise for the next ``n`` calls."""

    def __init__(self, storage, n: int) -> None:
        self.storage, self.n, self.original = storage, n, storage.remove

    def __call__(self, uuid, content_type=1):
        if self.n:
            self.n -= 1
            raise PermissionError(13, "Permission denied", uuid)
        self.original(uuid, content_type)


def _files(root) -> set[str]:
    return {name for _d, _s, names in os.walk(root) for name in names if len(name) == 36}


def test_rest_delete_survives_a_storage_failure_and_the_next_start_removes_the_file(tmp_path, caplog):
    cfg = {"StorageDirectory": str(tmp_path / "db"), "SaveJobs": False}
    app = create_app(cfg, plugins=[], load_entrypoints=False)
    client = falcon.testing.TestClient(app)
    a = client.simulate_post("/instances", body=_ct("1")).json
    b = client.simulate_post("/instances", body=_ct("2")).json
    assert len(_files(tmp_path / "db")) == 2
    app.ctx.storage.remove = _FailingRemove(app.ctx.storage, 1)
    r = client.simulate_delete(f"/instances/{a['ID']}")
    assert r.status_code == 200
    assert r.json == {"RemainingAncestor": {"ID": a["ParentSeries"], "Path": f"/series/{a['ParentSeries']}",
                                            "Type": "Series"}}
    assert client.simulate_get(f"/instances/{a['ID']}").status_code == 404
    assert "cannot remove the file" in caplog.text
    assert len(_files(tmp_path / "db")) == 2          # the file stays, journalled
    assert app.ctx.metrics.value("orthanc_storage_remove_duration_ms") is None  # nothing removed
    app.close()
    app = create_app(cfg, plugins=[], load_entrypoints=False)   # the next start removes it
    try:
        assert len(_files(tmp_path / "db")) == 1
        client = falcon.testing.TestClient(app)
        assert client.simulate_get("/instances").json == [b["ID"]]
        stale = app.ctx.index.lookup(b["ID"], 3)
        assert client.simulate_delete(f"/instances/{b['ID']}").json == {"RemainingAncestor": None}
        assert _files(tmp_path / "db") == set()
        assert app.ctx.metrics.value("orthanc_storage_remove_duration_ms") is not None
        assert app.ctx.resources.delete(stale) is None     # deleted meanwhile
    finally:
        app.close()


def test_a_job_deletes_its_sources_through_the_same_path(tmp_path, caplog):
    cfg = {"StorageDirectory": str(tmp_path / "db"), "SaveJobs": False}
    app = create_app(cfg, plugins=[], load_entrypoints=False)
    client = falcon.testing.TestClient(app)
    a = client.simulate_post("/instances", body=_ct("1")).json
    app.ctx.storage.remove = _FailingRemove(app.ctx.storage, 1)
    r = client.simulate_post(f"/series/{a['ParentSeries']}/modify",
                             json={"Replace": {"SeriesDescription": "X"}, "KeepSource": False})
    assert r.status_code == 200, r.text
    instances = client.simulate_get("/instances").json
    assert len(instances) == 1 and instances != [a["ID"]]
    assert "cannot remove the file" in caplog.text
    assert len(_files(tmp_path / "db")) == 2          # the source's file, journalled
    app.close()
    app = create_app(cfg, plugins=[], load_entrypoints=False)
    try:
        assert len(_files(tmp_path / "db")) == 1
    finally:
        app.close()


def test_a_file_read_racing_the_deletion_of_its_instance_is_an_unknown_resource(tmp_path):
    """An instance deleted between the lookup of its attachment and the read of its file
    (a merge or an archive racing a DELETE) is 404 UnknownResource, the reference's error;
    a file missing under an instance still indexed stays 404 InexistentFile."""
    from pacsbox import ErrorCode, OrthancError

    app = create_app({"StorageDirectory": str(tmp_path / "s")}, load_entrypoints=False)
    try:
        client = falcon.testing.TestClient(app)
        ids = [client.simulate_post("/instances", body=_ct(s)).json["ID"] for s in ("1", "2")]
        ctx = app.ctx
        storage = ctx.storage
        real_read = storage.read

        def read_after_delete(uuid, content_type=1):  # the DELETE lands between lookup and read
            ctx.resources.delete(ctx.index.lookup(ids[0]))
            return real_read(uuid, content_type)

        storage.read = read_after_delete
        try:
            ctx.resources.read_file(ids[0])
            raise AssertionError("no error")
        except OrthancError as e:
            assert e.code == ErrorCode.UNKNOWN_RESOURCE
        finally:
            storage.read = real_read
        att = ctx.index.attachment_by_public_id(ids[1], 1)
        os.unlink(storage._file(att.uuid))  # noqa: SLF001 - a file lost under an indexed instance
        r = client.simulate_get(f"/instances/{ids[1]}/file")
        assert r.status_code == 404 and r.json["OrthancError"] == "Inexistent file"
    finally:
        app.close()
