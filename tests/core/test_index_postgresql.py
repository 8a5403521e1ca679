"""The index's SQL is portable to PostgreSQL: every statement a real workload runs on the
SQLite index is replayed, in order, on a real PostgreSQL server, which must accept each one
and end with the same rows.

The issue asks for a schema and queries portable to PostgreSQL (a later issue adds the
backend). The workload goes through the REST API (uploads of real files, lists with
``since``/``limit``, ``/tools/find`` at every level, metadata, ``/changes``, statistics,
anonymization, deletes); SQLite's trace callback records each statement with its bound
values. The replay translates only the differences the index itself branches on
(``BEGIN IMMEDIATE``, ``LIMIT -1``, ``PRAGMA``, ``sqlite_sequence``, auto-increment keys in
the ``CREATE`` statements, see :func:`pacsbox.index.schema.schema_statements`).

PostgreSQL runs as a throw-away cluster in a temporary folder, listening on a Unix socket
only (no TCP at all); ``.ci/run`` installs Debian's ``postgresql`` package. Run as root, the
server is started as the ``postgres`` user, which refuses root.
"""
from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
import tempfile

import falcon.testing
import pydicom
import pytest

from conftest import pydicom_test_files, read
from conftest import testfile as sample_path
from pacsbox.index import index as index_module
from pacsbox.index.schema import schema_statements


def _pg_bindir() -> str | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


BINDIR = _pg_bindir()
pytestmark = pytest.mark.skipif(BINDIR is None, reason="PostgreSQL is not installed (.ci/run installs it)")


class PostgreSQL:
    """A throw-away PostgreSQL cluster on a Unix socket; ``psql(sql)`` runs SQL text."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.data = os.path.join(root, "data")
        self.sock = os.path.join(root, "sock")
        os.makedirs(self.sock)
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            shutil.chown(root, "postgres")
            shutil.chown(self.sock, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run([os.path.join(BINDIR, "initdb"), "-D", self.data, "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--locale=C", "--no-sync"])
        self._run([os.path.join(BINDIR, "pg_ctl"), "-D", self.data, "-w", "-l", os.path.join(root, "log"),
                   "-o", f"-c listen_addresses='' -k {self.sock} -c fsync=off", "start"])

    def _run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.as_user + cmd, check=True, capture_output=True, text=True, timeout=120, **kw)

    def psql(self, sql: str) -> str:
        """Run ``sql`` (stopping at the first error) and return the unaligned output.

        Raises
        ------
        AssertionError
            PostgreSQL refused a statement; the message names it.
        """
        r = subprocess.run(self.as_user + [os.path.join(BINDIR, "psql"), "-h", self.sock, "-U", "postgres",
                                           "-d", "postgres", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
                           input=sql, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"PostgreSQL refused a statement:\n{r.stderr[-3000:]}"
        return r.stdout

    def stop(self) -> None:
        subprocess.run(self.as_user + [os.path.join(BINDIR, "pg_ctl"), "-D", self.data, "-m", "immediate",
                                       "stop"], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def postgresql():
    # not under pytest's temporary folders: they are private to the user running the tests,
    # and the server may run as another one
    root = tempfile.mkdtemp(prefix="pacsbox-pg-")
    try:
        pg = PostgreSQL(root)
        try:
            yield pg
        finally:
            pg.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def to_postgresql(statements: list[str]) -> list[str]:
    """The recorded SQLite statements, as PostgreSQL runs them (see the module docstring)."""
    out = list(schema_statements("postgresql"))
    for s in statements:
        head = s.lstrip()[:30].upper()
        if head.startswith(("PRAGMA", "CREATE ")) or "sqlite_" in s:
            continue
        if head.startswith("BEGIN"):
            s = "BEGIN"
        out.append(s.replace(" LIMIT -1 OFFSET ", " OFFSET "))
    return out


def _workload(client) -> dict:
    """Drive the REST API through the calls that reach the index."""
    ids = {}
    files = [p for p in pydicom_test_files()
             if os.path.basename(p) in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm",
                                        "693_J2KR.dcm", "SC_rgb.dcm", "ExplVR_BigEnd.dcm", "image_dfl.dcm")]
    assert len(files) == 8
    for p in files:
        r = client.simulate_post("/instances", body=read(os.path.basename(p)))
        assert r.status_code == 200, (p, r.text)
        ids[os.path.basename(p)] = r.json
    again = client.simulate_post("/instances", body=read("CT_small.dcm"))
    assert again.json["Status"] == "AlreadyStored"
    for level in ("patients", "studies", "series", "instances"):
        assert client.simulate_get(f"/{level}", params={"expand": "1"}).status_code == 200
        assert client.simulate_get(f"/{level}", params={"since": "1", "limit": "2"}).status_code == 200
        assert client.simulate_get(f"/{level}", params={"since": "2", "limit": "9", "expand": "1"}).status_code == 200
        # a negative limit is no limit (as Orthanc): the index's "OFFSET without LIMIT" branch
        assert len(client.simulate_get(f"/{level}", params={"since": "1", "limit": "-1"}).json) >= 2
    ct = ids["CT_small.dcm"]
    for level, key in (("patients", "ParentPatient"), ("studies", "ParentStudy"),
                       ("series", "ParentSeries"), ("instances", "ID")):
        rid = ct[key]
        suffixes = ("", "/statistics", "/metadata?expand") + (
            ("/tags", "/patient") if level == "instances" else ("/shared-tags", "/instances"))
        for suffix in suffixes:
            assert client.simulate_get(f"/{level}/{rid}{suffix}").status_code == 200, (level, suffix)
    iid = ct["ID"]
    ct_study_uid = pydicom.dcmread(sample_path("CT_small.dcm")).StudyInstanceUID
    assert client.simulate_get(f"/instances/{iid}/file").status_code == 200
    assert client.simulate_get(f"/instances/{iid}/attachments/dicom/md5").status_code == 200
    assert client.simulate_put(f"/instances/{iid}/metadata/1024", body="user's note").status_code == 200
    assert client.simulate_delete(f"/instances/{iid}/metadata/1024").status_code == 200
    assert client.simulate_put(f"/instances/{iid}/attachments/1024", body=b"user's bytes").status_code == 200
    assert client.simulate_put(f"/instances/{iid}/attachments/1024", body=b"replaced").status_code == 200
    assert client.simulate_put(f"/studies/{ct['ParentStudy']}/attachments/1025", body=b"x").status_code == 200
    assert client.simulate_delete(f"/studies/{ct['ParentStudy']}/attachments/1025").status_code == 200
    # labels (issue 16): stored in the index, removed with their resource
    for level, rid in (("studies", ct["ParentStudy"]), ("instances", iid),
                       ("patients", ids["JPEG2000.dcm"]["ParentPatient"])):
        assert client.simulate_put(f"/{level}/{rid}/labels/label_1").status_code == 200
        assert client.simulate_put(f"/{level}/{rid}/labels/label-2").status_code == 200
    assert client.simulate_delete(f"/instances/{iid}/labels/label-2").status_code == 200
    # protection from recycling (issue 16)
    pid = ids["JPEG2000.dcm"]["ParentPatient"]
    assert client.simulate_put(f"/patients/{pid}/protected", body="1").status_code == 200
    assert client.simulate_get(f"/patients/{pid}/protected").text == "1"
    assert client.simulate_get(f"/studies/{ct['ParentStudy']}/labels").json == ["label-2", "label_1"]
    assert client.simulate_get("/tools/labels").json == ["label-2", "label_1"]
    for body in ({"Level": "Patient", "Query": {"PatientName": "*"}, "Expand": True},
                 {"Level": "Study", "Query": {"StudyDate": "19000101-20991231", "PatientName": "C*"}},
                 {"Level": "Series", "Query": {"Modality": "CT\\MR"}, "Limit": 2, "Since": 1},
                 {"Level": "Instance", "Query": {"PatientID": "1ct?"}, "CaseSensitive": False},
                 {"Level": "Series", "Query": {"PatientID": "1CT1", "StudyInstanceUID": ct_study_uid}}):
        assert client.simulate_post("/tools/find", json=body).status_code == 200, body
    r = client.simulate_post("/tools/lookup", body=ct_study_uid)
    assert [x["ID"] for x in r.json] == [ct["ParentStudy"]]
    assert client.simulate_get("/changes", params={"since": "2", "limit": "3"}).status_code == 200
    assert client.simulate_get("/changes", params={"last": ""}).status_code == 200
    assert client.simulate_get("/statistics").status_code == 200
    assert client.simulate_delete("/changes").status_code == 200
    r = client.simulate_post(f"/studies/{ids['MR_small.dcm']['ParentStudy']}/anonymize", json={})
    assert r.status_code == 200, r.text
    assert client.simulate_delete(f"/instances/{ids['rtplan.dcm']['ID']}").status_code == 200
    assert client.simulate_delete(f"/series/{ids['SC_rgb.dcm']['ParentSeries']}").status_code == 200
    assert client.simulate_delete(f"/patients/{ids['JPEG2000.dcm']['ParentPatient']}").status_code == 200
    return ids


_COMPARE = {
    "resources": "SELECT level, public_id, main_tags FROM resources ORDER BY public_id",
    "attachments": "SELECT r.public_id, a.content_type, a.uuid, a.uncompressed_size, a.md5 "
                   "FROM attachments a JOIN resources r ON r.id = a.resource_id ORDER BY r.public_id, a.content_type",
    "metadata": "SELECT r.public_id, m.name, m.value FROM metadata m JOIN resources r ON r.id = m.resource_id "
                "ORDER BY r.public_id, m.name",
    "identifiers": "SELECT r.public_id, i.tag, i.value FROM identifiers i JOIN resources r ON r.id = i.resource_id "
                   "ORDER BY r.public_id, i.tag, i.value",
    "changes": "SELECT seq, change_type, public_id, level FROM changes ORDER BY seq",
    "labels": "SELECT r.public_id, l.label FROM labels l JOIN resources r ON r.id = l.resource_id "
              "ORDER BY r.public_id, l.label",
    "revisions": "SELECT r.public_id, v.kind, v.name, v.revision FROM revisions v JOIN resources r "
                 "ON r.id = v.resource_id ORDER BY r.public_id, v.kind, v.name",
}


def test_every_index_statement_of_a_rest_workload_runs_on_postgresql(make_app, postgresql, monkeypatch):
    recorded: list[str] = []
    connect = index_module.SQLiteIndex._connect

    def traced(self):
        c = connect(self)
        c.set_trace_callback(recorded.append)
        return c

    monkeypatch.setattr(index_module.SQLiteIndex, "_connect", traced)
    app = make_app()
    ids = _workload(falcon.testing.TestClient(app))
    app.close()
    assert len(recorded) > 200
    # the paths worth checking were taken: identifier lookups inside /tools/find, the
    # normalized rows of /tools/lookup, user attachments
    assert any("EXISTS (SELECT 1 FROM identifiers x0" in s for s in recorded)
    assert any("'~StudyInstanceUID'" in s for s in recorded)
    assert any("INSERT INTO attachments" in s and "1024" in s for s in recorded)

    statements = to_postgresql(recorded)
    postgresql.psql(";\n".join(statements) + ";\n")

    db = sqlite3.connect(app.ctx.index.path)
    for name, sql in _COMPARE.items():
        lite = ["|".join("" if v is None else str(v) for v in row) for row in db.execute(sql)]
        pg = postgresql.psql(sql + ";").splitlines()
        assert pg == lite, name
        assert lite, name
    levels = dict(db.execute("SELECT level, COUNT(*) FROM resources GROUP BY level").fetchall())
    db.close()
    # 8 files; the rtplan instance, the SC_rgb series and the JPEG2000 patient deleted; one
    # anonymized study added (MR_small: 1 instance)
    assert levels[3] == 8 - 1 - 1 - 1 + 1
    assert ids["CT_small.dcm"]["ID"] in postgresql.psql("SELECT public_id FROM resources WHERE level = 3;")
