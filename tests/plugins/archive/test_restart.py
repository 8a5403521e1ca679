"""Asynchronous archives survive a crash (beyond Orthanc, which never saves archive
jobs): a real ``pacsbox serve`` is killed with SIGKILL while it writes an archive; after
the restart the job goes on from its partial file and its output is downloadable."""
from __future__ import annotations

import os
import re
import threading
import time

import requests
from archive_helpers import Serve, archive_app, open_zip, synth
from conftest import free_port
from saved_jobs import saved_position, saved_state, wait_saved

ST = "1.2.826.0.1.3680043.8.498.601"
COUNT = 400


def _prepare(make_app, tmp_path) -> tuple[dict, str, list[str]]:
    """A storage with one study of COUNT instances (~130 KB of CT-like pixels each),
    written in-process; returns the server configuration, the study ID and the paths of
    the instances' files in the archive's order."""
    import numpy as np
    import pydicom
    from archive_helpers import sample_path
    tile = np.tile(pydicom.dcmread(sample_path("CT_small.dcm")).pixel_array, (2, 2)).astype(np.int16)
    config = {"HttpPort": free_port(), "DicomPort": free_port(), "StorageDirectory": str(tmp_path / "db"),
              "SyncStorageArea": False, "StableAge": 60,
              # slow on purpose: one thread, zlib's best (slowest) level
              "ZipLoaderThreads": 1, "Archive": {"Deflate": "zlib", "CompressionLevel": 9}}
    app = archive_app(make_app, config)
    sid, files = None, []
    for k in range(COUNT):
        noise = np.random.default_rng(k).integers(-3, 4, size=tile.shape).astype(np.int16)
        pixels = (tile + noise).tobytes()
        data = synth(patient_id="CRASH", study_uid=ST, series_uid="1.2.826.0.1.3680043.8.498.611",
                     instance_number=k + 1, pixel_bytes=pixels, extra={"Rows": 256, "Columns": 256})
        result = app.ctx.ingest.store(data)
        sid = result.ids[1]
        uuid = app.ctx.index.attachment_by_public_id(result.ids[3], 1).uuid
        files.append(os.path.join(config["StorageDirectory"], uuid[:2], uuid[2:4], uuid))
    app.close()
    assert all(os.path.isfile(f) for f in files)
    return config, sid, files


class FifoGate:
    """Swaps a stored file for a named pipe: a server reading it waits until the test calls
    :meth:`release` (then reads the file's bytes), so that a job cannot get past that file
    however fast the machine is. :meth:`restore` puts the file back."""

    def __init__(self, path: str) -> None:
        self.path, self.saved = path, path + ".saved"
        os.rename(path, self.saved)
        os.mkfifo(path)

    def release(self) -> None:
        def feed():
            with open(self.path, "wb") as fifo, open(self.saved, "rb") as f:   # open waits for the reader
                fifo.write(f.read())
        threading.Thread(target=feed, daemon=True).start()

    def restore(self) -> None:
        os.remove(self.path)
        os.rename(self.saved, self.path)


def _wait(serve: Serve, jid: str, pred, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while True:
        j = serve.get(f"/jobs/{jid}")
        if pred(j):
            return j
        assert time.time() < deadline, j
        time.sleep(0.02)


def _check_output(serve: Serve, jid: str, sid: str) -> None:
    r = requests.get(f"{serve.url}/jobs/{jid}/archive", timeout=60)
    assert r.status_code == 200
    z = open_zip(r.content)
    names = z.namelist()
    assert len(names) == COUNT == len(set(names))
    instances = serve.get(f"/studies/{sid}/instances")
    # the entries are the study's files, in order, each exactly once
    for k in (0, COUNT // 2, COUNT - 1):
        f = requests.get(f"{serve.url}/instances/{instances[k]['ID']}/file", timeout=30).content
        assert z.read(names[k]) == f
    assert [n.rsplit("/", 1)[1] for n in names] == [f"CT{k:06d}.dcm" for k in range(COUNT)]
    archives = os.listdir(os.path.join(serve.config["StorageDirectory"], "pacsbox-archives"))
    assert len(archives) == 1                                   # no partial file left behind


def test_sigkill_while_running_then_restart_finishes_the_archive(make_app, tmp_path):
    config, sid, files = _prepare(make_app, tmp_path)
    # the job waits at entries COUNT/4 and COUNT/2 until the test lets it read them: it is
    # still running at the kill whatever the machine's speed (the archive takes ~5 s here:
    # killed after 1.5 s of running + 0.3 s, a machine 3 times faster had ended it)
    first, second = FifoGate(files[COUNT // 4]), FifoGate(files[COUNT // 2])
    serve = Serve(tmp_path, config).start()
    try:
        r = requests.post(f"{serve.url}/studies/{sid}/archive", json={"Asynchronous": True}, timeout=30)
        jid = r.json()["ID"]
        # a snapshot of the running job is captured at a step more than PROGRESS_SAVE_PERIOD
        # (1 s) after the previous one: let the job run that long before the first gate
        _wait(serve, jid, lambda j: j["State"] == "Running" and j["EffectiveRuntime"] > 1.2)
        first.release()
        wait_saved(config["StorageDirectory"], lambda jobs: saved_position(jobs, jid) > 0)
        assert serve.get(f"/jobs/{jid}")["State"] == "Running"   # held by the second gate
        serve.kill()
        first.restore()
        second.restore()
        serve = Serve(tmp_path, config).start()
        j = _wait(serve, jid, lambda j: j["State"] in ("Success", "Failure"))
        assert j["State"] == "Success", j
        assert j["Type"] == "Archive" and j["Content"]["InstancesCount"] == COUNT
        log = serve.log()
        m = re.search(r"resuming archive \S+ at entry (\d+) of (\d+)", log)
        assert m, log[-3000:]
        assert 0 < int(m.group(1)) < COUNT and int(m.group(2)) == COUNT
        _check_output(serve, jid, sid)
    finally:
        serve.stop()


def test_paused_archive_survives_sigkill_and_resumes(make_app, tmp_path):
    config, sid, _ = _prepare(make_app, tmp_path)
    serve = Serve(tmp_path, config).start()
    try:
        r = requests.post(f"{serve.url}/tools/create-archive", json={"Resources": [sid], "Asynchronous": True},
                          timeout=30)
        jid = r.json()["ID"]
        _wait(serve, jid, lambda j: j["State"] == "Running" and j["Progress"] >= 10)
        assert requests.post(f"{serve.url}/jobs/{jid}/pause", timeout=10).status_code == 200
        paused = _wait(serve, jid, lambda j: j["State"] == "Paused")
        # killed once the pause is saved (it is within 100 ms of the change: a sleep of
        # 0.5 s for it was a bet on the machine)
        wait_saved(config["StorageDirectory"], lambda jobs: saved_state(jobs, jid) == "Paused")
        serve.kill()
        serve = Serve(tmp_path, config).start()
        j = serve.get(f"/jobs/{jid}")
        assert j["State"] == "Paused" and j["Progress"] == paused["Progress"]
        assert requests.post(f"{serve.url}/jobs/{jid}/resume", timeout=10).status_code == 200
        j = _wait(serve, jid, lambda j: j["State"] in ("Success", "Failure"))
        assert j["State"] == "Success", j
        assert re.search(rf"resuming archive \S+ at entry [1-9]\d* of {COUNT}", serve.log())
        _check_output(serve, jid, sid)
    finally:
        serve.stop()
