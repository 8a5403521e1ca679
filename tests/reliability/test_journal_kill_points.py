"""Issue 13 case 3: storage and index agree after a SIGKILL at the points the pending-files
journal must cover beyond plain ingest.

The server is a real ``pacsbox serve``; a ``sitecustomize`` module put on its
``PYTHONPATH`` makes ``FilesystemStorageArea.remove`` SIGKILL the process while a marker
file exists, that is, right after the index committed and before the first file it
dereferenced is removed:

- ``OverwriteInstances``: the replaced instance's file;
- recycling (``MaximumPatientCount``): the files of the patient deleted to make room;
- a deletion (``ctx.resources.delete``, shared by ``DELETE``, the jobs and the plugins);
- an attachment replaced, deleted or compressed in place.

After the restart no file is left that no attachment row references, no row misses its
file, and the index answers as the committed transaction left it.
"""
from __future__ import annotations

import io
import os
import textwrap

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from crash_helpers import make_server, storage_consistency

SITECUSTOMIZE = textwrap.dedent('''
    import os, signal
    _marker = os.environ.get("PACSBOX_TEST_KILL_MARKER")
    if _marker:
        from pacsbox.storage import filesystem as _fs
        _remove = _fs.FilesystemStorageArea.remove

        def remove(self, uuid, content_type=1):
            if os.path.exists(_marker):
                os.kill(os.getpid(), signal.SIGKILL)
            return _remove(self, uuid, content_type)

        _fs.FilesystemStorageArea.remove = remove
''')


def _ct(patient_id: str, sop_suffix: str, description: str) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = patient_id
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1013.3.{patient_id}"
    ds.SeriesInstanceUID = ds.StudyInstanceUID + ".1"
    ds.SOPInstanceUID = ds.SeriesInstanceUID + "." + sop_suffix
    ds.SeriesDescription = description
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _killing_server(tmp_path, **options):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = tmp_path / "kill-on-remove"
    server = make_server(tmp_path, **options)
    server.env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])),
                  "PACSBOX_TEST_KILL_MARKER": str(marker)}
    return server, marker


def _restart(server) -> None:
    """Stop and start: the journal is rewritten empty at start, so it no longer names the
    files created before (they are referenced); only what the next request journals counts."""
    server.stop()
    server.start()


def _until_killed(server, marker, action) -> None:
    """Arm the kill, run ``action()`` (a request the SIGKILL cuts), wait for the process
    to die of it, disarm."""
    marker.touch()
    try:
        action()
    except requests.RequestException:
        pass  # the connection dies with the process
    server.proc.wait(60)
    assert server.proc.returncode == -9, server.log()
    marker.unlink()


def test_sigkill_before_the_replaced_file_is_removed(tmp_path):
    server, marker = _killing_server(tmp_path, OverwriteInstances=True)
    server.start()
    old, new = _ct("OVR", "1", "OLD"), _ct("OVR", "1", "NEW")
    r = requests.post(server.url + "/instances", data=old, timeout=60)
    assert r.status_code == 200
    iid = r.json()["ID"]
    _restart(server)
    _until_killed(server, marker, lambda: requests.post(server.url + "/instances", data=new, timeout=60))
    check = storage_consistency(tmp_path / "db")
    assert len(check["orphans"]) == 1 and not check["dangling"]  # the replaced file, before the restart
    server.start()
    try:
        assert requests.get(f"{server.url}/instances/{iid}/file", timeout=60).content == new
    finally:
        server.stop()
    assert storage_consistency(tmp_path / "db") == {"orphans": [], "dangling": [], "temporary": []}


def test_sigkill_before_a_recycled_patient_files_are_removed(tmp_path):
    server, marker = _killing_server(tmp_path, MaximumPatientCount=1)
    server.start()
    first = [_ct("RECYCLED", str(i), "A") for i in range(3)]
    for data in first:
        assert requests.post(server.url + "/instances", data=data, timeout=60).status_code == 200
    _restart(server)
    _until_killed(server, marker, lambda: requests.post(server.url + "/instances", data=_ct("KEPT", "1", "B"),
                                                        timeout=60))
    check = storage_consistency(tmp_path / "db")
    assert len(check["orphans"]) == 3 and not check["dangling"]  # the recycled patient's files
    server.start()
    try:
        patients = requests.get(server.url + "/patients?expand", timeout=60).json()
        assert [p["MainDicomTags"]["PatientID"] for p in patients] == ["KEPT"]
    finally:
        server.stop()
    assert storage_consistency(tmp_path / "db") == {"orphans": [], "dangling": [], "temporary": []}


def test_sigkill_before_a_deleted_study_files_are_removed(tmp_path):
    """The one deletion path (``ctx.resources.delete``), which ``DELETE``, the jobs and the
    plugins (the transfers' rollback, the PDF plugin's clean-up) share."""
    server, marker = _killing_server(tmp_path)
    server.start()
    for i in range(3):
        r = requests.post(server.url + "/instances", data=_ct("DELETED", str(i), "A"), timeout=60)
        assert r.status_code == 200
    study = r.json()["ParentStudy"]
    _restart(server)
    _until_killed(server, marker, lambda: requests.delete(f"{server.url}/studies/{study}", timeout=60))
    assert len(storage_consistency(tmp_path / "db")["orphans"]) == 3
    server.start()
    try:
        assert requests.get(server.url + "/studies", timeout=60).json() == []
    finally:
        server.stop()
    assert storage_consistency(tmp_path / "db") == {"orphans": [], "dangling": [], "temporary": []}


def test_the_journal_is_synced_as_the_storage_area(make_app):
    """``SyncStorageArea`` (default true) makes the journal ``fdatasync`` its appends, so that
    an entry survives a power loss as the file it announces does; 64 new files' UUIDs are
    journalled per append (one sync), and every one of them is handed out once."""
    synced = make_app().ctx.pending_files
    assert synced.sync is True and synced.batch == 64
    assert make_app({"SyncStorageArea": False}).ctx.pending_files.sync is False
    uuids = {synced.new_file(1)[0] for _ in range(130)}
    assert len(uuids) == 130
    lines = synced.path.read_text().split()
    assert len(lines) == 2 * 64 * 3  # three batches of 64 "uuid 1" lines


@pytest.mark.parametrize("action", ["replace", "delete", "compress"])
def test_sigkill_before_a_dereferenced_attachment_file_is_removed(tmp_path, action):
    """A user attachment replaced (``PUT``) or deleted, or the DICOM file compressed in
    place (``/attachments/dicom/compress``): the file the commit dereferences is
    journalled before it, so the restart removes it."""
    server, marker = _killing_server(tmp_path)
    server.start()
    iid = requests.post(server.url + "/instances", data=_ct("ATT", "1", "A"), timeout=60).json()["ID"]
    att = f"{server.url}/instances/{iid}/attachments"
    assert requests.put(att + "/1025", data=b"first", timeout=60).status_code == 200
    _restart(server)
    _until_killed(server, marker, {"replace": lambda: requests.put(att + "/1025", data=b"second", timeout=60),
                                   "delete": lambda: requests.delete(att + "/1025", timeout=60),
                                   "compress": lambda: requests.post(att + "/dicom/compress", timeout=60)}[action])
    assert len(storage_consistency(tmp_path / "db")["orphans"]) == 1
    server.start()
    try:
        names = requests.get(att, timeout=60).json()
        assert ("1025" in names) is (action != "delete")
        if action == "replace":
            assert requests.get(att + "/1025/data", timeout=60).content == b"second"
        if action == "compress":
            assert requests.get(att + "/dicom/is-compressed", timeout=60).json() == 1
    finally:
        server.stop()
    assert storage_consistency(tmp_path / "db") == {"orphans": [], "dangling": [], "temporary": []}
