"""Lua scripts driving real processes on loopback: auto-routing toward a dcmtk storescp (REST
and C-STORE ingest), send-then-delete, OnStableStudy anonymizing toward a second pacsbox."""
from __future__ import annotations

import os
import socket
import subprocess
import time

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

import pacsbox_dicom_net.plugin as dicom_net_plugin
import pacsbox_lua.plugin as lua_plugin
from pacsbox.testing import free_port

# dcmtk's tools (pynetdicom installs Python apps of the same names earlier on PATH)
STORESCP = "/usr/bin/storescp" if os.path.exists("/usr/bin/storescp") else None
STORESCU = "/usr/bin/storescu" if os.path.exists("/usr/bin/storescu") else None
pytestmark = pytest.mark.skipif(not (STORESCP and STORESCU), reason="dcmtk is not installed")

FILES = [get_testdata_file(n) for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm")]


def _uid(path):
    return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)


@pytest.fixture
def storescp(tmp_path):
    """``(port, folder)`` of a dcmtk storescp (AET DCMTK) writing what it receives."""
    out = tmp_path / "received"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen([STORESCP, "+xa", "--output-directory", str(out), "-aet", "DCMTK", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, out
    proc.terminate()
    proc.wait(10)


def _received(folder):
    return sorted(str(pydicom.dcmread(folder / f, stop_before_pixels=True, force=True).SOPInstanceUID)
                  for f in os.listdir(folder))


def _wait(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _node(live_server, tmp_path, script, extra=None):
    path = tmp_path / f"route{free_port()}.lua"
    path.write_text(script)
    cfg = {"DicomPort": free_port(), "DicomAet": "PACSBOX", "LuaScripts": [str(path)], "ExecuteLuaEnabled": True}
    cfg.update(extra or {})
    return live_server(cfg, plugins=[dicom_net_plugin, lua_plugin]), cfg["DicomPort"]


def test_auto_routing_rest_and_c_store_each_arrives_once(live_server, tmp_path, storescp):
    port, folder = storescp
    server, dicom_port = _node(live_server, tmp_path, """
function OnStoredInstance(instanceId, tags, metadata, origin)
   SendToModality(instanceId, 'dest')
end
""", {"DicomModalities": {"dest": ["DCMTK", "127.0.0.1", port]}})
    for p in FILES[:2]:  # over REST
        assert requests.post(server.url + "/instances", data=open(p, "rb").read()).status_code == 200
    subprocess.run([STORESCU, "-aec", "PACSBOX", "127.0.0.1", str(dicom_port), *FILES[2:]], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)  # over C-STORE
    want = sorted(_uid(p) for p in FILES)
    assert _wait(lambda: len(os.listdir(folder)) >= len(FILES))
    time.sleep(0.5)
    assert _received(folder) == want  # each once
    assert len(requests.get(server.url + "/instances").json()) == len(FILES)  # kept locally


def test_send_then_delete(live_server, tmp_path, storescp):
    port, folder = storescp
    server, _ = _node(live_server, tmp_path, """
function OnStoredInstance(instanceId, tags, metadata, origin)
   Delete(SendToModality(instanceId, 'dest'))
end
""", {"DicomModalities": {"dest": ["DCMTK", "127.0.0.1", port]}})
    files = FILES[:2] + [get_testdata_file("SC_rgb.dcm")]
    for p in files:
        assert requests.post(server.url + "/instances", data=open(p, "rb").read()).status_code == 200
    assert _wait(lambda: requests.get(server.url + "/instances").json() == [])
    assert _received(folder) == sorted(_uid(p) for p in files)


def test_failed_send_keeps_the_instance(live_server, tmp_path):
    server, _ = _node(live_server, tmp_path, """
function OnStoredInstance(instanceId, tags, metadata, origin)
   Delete(SendToModality(instanceId, 'dest'))
   Done = instanceId
end
""", {"DicomModalities": {"dest": ["NOBODY", "127.0.0.1", free_port()]}})
    iid = requests.post(server.url + "/instances", data=open(FILES[0], "rb").read()).json()["ID"]
    assert _wait(lambda: requests.post(server.url + "/tools/execute-script", data="print(Done)").text == iid + "\n")
    time.sleep(0.5)
    from pacsbox_lua.plugin import engine_of
    assert engine_of(server.app.ctx).wait_idle(20)
    assert requests.get(server.url + "/instances").json() == [iid]


def test_stable_study_anonymized_and_sent_to_a_peer(live_server, tmp_path):
    second = live_server({})
    server, _ = _node(live_server, tmp_path, """
function OnStableStudy(studyId, tags, metadata)
   if metadata['AnonymizedFrom'] == nil then
      local answer = ParseJson(RestApiPost('/studies/' .. studyId .. '/anonymize', '{}'))
      SendToPeer(answer['ID'], 'second')
   end
end
""", {"StableAge": 1, "OrthancPeers": {"second": {"Url": second.url}}})
    src = requests.post(server.url + "/instances", data=open(FILES[0], "rb").read()).json()
    assert _wait(lambda: len(requests.get(second.url + "/instances").json()) == 1, 30)
    iid = requests.get(second.url + "/instances").json()[0]
    tags = requests.get(f"{second.url}/instances/{iid}/simplified-tags").json()
    assert tags["SOPInstanceUID"] != _uid(FILES[0])
    assert tags["PatientName"] != str(pydicom.dcmread(FILES[0]).PatientName)
    assert requests.get(f"{server.url}/studies/{src['ParentStudy']}").status_code == 200  # the original stays
    time.sleep(2.5)  # the anonymized copy becomes stable too, and is not anonymized again
    assert len(requests.get(server.url + "/studies").json()) == 2
    assert len(requests.get(second.url + "/instances").json()) == 1


def test_callback_sending_to_this_server_runs_its_filter_without_deadlock(live_server, tmp_path, caplog):
    """A callback holds the interpreter while its RestApiPost makes this server's SCP thread
    receive a C-STORE, whose ReceivedInstanceFilter must run: the filters have their own
    interpreter (as Orthanc 1.10.1), so this completes instead of hanging."""
    port = free_port()
    server, _ = _node(live_server, tmp_path, """
function ReceivedInstanceFilter(dicom, origin, info)
   print('filter ' .. origin['RequestOrigin'])
   return true
end
function OnStoredInstance(instanceId, tags, metadata, origin)
   if origin['RequestOrigin'] == 'RestApi' then
      Answer = RestApiPost('/modalities/self/store', DumpJson({ Resources = { instanceId }, Synchronous = true }))
   end
end
""", {"DicomPort": port, "DicomModalities": {"self": ["PACSBOX", "127.0.0.1", port]}})
    with caplog.at_level("WARNING", logger="pacsbox.lua"):
        requests.post(server.url + "/instances", data=open(FILES[0], "rb").read())
        assert _wait(lambda: requests.post(server.url + "/tools/execute-script",
                                           data="print(Answer ~= nil)").text == "true\n", 30)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Lua says: filter")]
    assert said == ["Lua says: filter RestApi", "Lua says: filter DicomProtocol"]
