"""Auto-routing a whole study with ``OnStoredInstance``: every instance reaches the
destination exactly once, in the bulk the speed figure is measured on.

The speed figures themselves (a no-op callback's share of ingest CPU, auto-routing against
upload and send by hand) are measured by ``plugins/lua/tools/bench_lua.py``, not here: a
timed bound fails on a loaded CI machine without saying anything about the code."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import time

import falcon.testing
import pydicom
import pytest

from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

import pacsbox_dicom_net.plugin as dicom_net_plugin
import pacsbox_lua.plugin as lua_plugin
from pacsbox import create_app
from pacsbox.testing import free_port
from pacsbox_lua.plugin import engine_of

STORESCP = "/usr/bin/storescp" if os.path.exists("/usr/bin/storescp") else None


def _study(n):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        buf = io.BytesIO()
        ds.save_as(buf)
        out.append(buf.getvalue())
    return out


@pytest.mark.skipif(STORESCP is None, reason="dcmtk is not installed")
def test_auto_routing_a_study_delivers_each_instance_once(tmp_path):
    files = _study(120)
    out = tmp_path / "received"
    out.mkdir()
    port = free_port()
    scp = subprocess.Popen([STORESCP, "+xa", "--output-directory", str(out), "-aet", "DCMTK", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        script = tmp_path / "route.lua"
        script.write_text("function OnStoredInstance(instanceId) SendToModality(instanceId, 'dest') end")
        app = create_app({"StorageDirectory": str(tmp_path / "storage"), "LuaScripts": [str(script)],
                          "DicomModalities": {"dest": ["DCMTK", "127.0.0.1", port]}, "DicomPort": free_port()},
                         plugins=[dicom_net_plugin, lua_plugin], load_entrypoints=False)
        try:
            client = falcon.testing.TestClient(app)
            for data in files:
                assert client.simulate_post("/instances", body=data).status_code == 200
            end = time.monotonic() + 120
            while len(os.listdir(out)) < len(files) and time.monotonic() < end:
                time.sleep(0.05)
            assert engine_of(app.ctx).wait_idle(60)
            time.sleep(0.3)
        finally:
            app.close()
    finally:
        scp.terminate()
        scp.wait(10)
    received = sorted(pydicom.dcmread(out / f, stop_before_pixels=True).InstanceNumber for f in os.listdir(out))
    assert received == list(range(1, len(files) + 1))  # each once, none lost
