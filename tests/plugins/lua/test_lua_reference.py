"""The same Lua scripts, side by side on Debian's Orthanc 1.10.1 (Lua built in) and pacsbox
with the Lua plugin: same printed output, same errors, same filtering, same callback
arguments. Both run on loopback with the same options."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

import pacsbox_lua.plugin as lua_plugin
from pacsbox.testing import free_port

from lua_helpers import side_by_side

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)
STORESCU = "/usr/bin/storescu" if os.path.exists("/usr/bin/storescu") else None
pytestmark = pytest.mark.skipif(ORTHANC is None, reason="Debian's Orthanc is not installed")

CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")

# Filters and callbacks of the kind the book shows. Orthanc 1.10.1 runs its filters in a second
# interpreter, so what they record is not readable from execute-script there: the test only
# compares their effect, and OnStoredInstance (main interpreter) records the arguments.
SCRIPT = r"""
function ReceivedInstanceFilter(dicom, origin, info)
   return dicom.Modality ~= 'MR'
end

function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
   if method == 'GET' or username == 'admin' then
      return true
   end
   return uri == '/tools/execute-script' and httpHeaders['x-token'] == 'secret'
end

Stored = {}
function OnStoredInstance(instanceId, tags, metadata, origin)
   table.insert(Stored, DumpJson({ id = instanceId, origin = origin, modality = tags['Modality'],
                                   patient = tags['PatientName'], uid = tags['SOPInstanceUID'],
                                   meta = { Origin = metadata['Origin'], RemoteAET = metadata['RemoteAET'],
                                            TransferSyntax = metadata['TransferSyntax'],
                                            SopClassUid = metadata['SopClassUid'] } }))
end
"""

#: Scripts whose printed output must be identical on both.
SNIPPETS = [
    'print(42, "a", nil, true) print(_VERSION)',
    'print(1 + 1, 7 / 2, 2^10, 10 // 3, "x" .. 1)',
    'print(DumpJson({1, 2, "3"})) print(DumpJson({a = "12", b = 1.5, c = true}, true))',
    'print(DumpJson({a = "12", b = 1.5, c = true})) print(DumpJson({})) print(DumpJson({[1] = "a", [3] = "c"}))',
    'print(DumpJson("x")) print(DumpJson(nil)) print(DumpJson(3))',
    'print(DumpJson(ParseJson("{\\"a\\": 1.0, \\"b\\": [1, \\"2\\", 3.5], \\"c\\": null}")))',
    'print(DumpJson(ParseJson("{\\"a\\": 1.0, \\"b\\": [1, \\"2\\", 3.5]}"), true))',
    'local v = ParseJson("[10, 2.5]") print(v[1], v[2], #v) print(ParseJson("nope"))',
    'PrintRecursive({a = {b = 1}}) PrintRecursive(5) PrintRecursive("s", 1, ">")',
    'print(type(RestApiGet), type(HttpGet), type(SendToModality), type(PrintRecursive), type(os), type(io))',
    'print(ParseJson(RestApiGet("/system"))["Version"], RestApiGet("/nope"), RestApiDelete("/instances/nope"))',
    'print(GetOrthancConfiguration()["ExecuteLuaEnabled"], GetOrthancConfiguration()["StableAge"])',
    'function Twice(x) return 2 * x end',
    'print(Twice(21), Twice(1.5))',
    'print(string.format("%05.1f|%s", 3.14159, "z"), string.upper("abc"), #("abc"), math.floor(2.7))',
    'print(pcall(error, "inner"))',
    'local ok, e = pcall(function() local t = nil; return t.x end) print(ok, e)',
]

ERRORS = ["x = = 1", 'error("boom")', "local t = nil\nprint(t.x)", "Undefined()"]


def _auth(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ADMIN = _auth("admin", "a")
GUEST = _auth("guest", "g")


@pytest.fixture(scope="module")
def pair(tmp_path_factory, request):
    """``(orthanc_url, orthanc_dicom_port, pacsbox_url, pacsbox_dicom_port)`` running the same script."""
    d = tmp_path_factory.mktemp("lua-ref")
    script = d / "script.lua"
    script.write_text(SCRIPT)
    common = {"ExecuteLuaEnabled": True, "LuaScripts": [str(script)], "StableAge": 60,
              "AuthenticationEnabled": True, "RegisteredUsers": {"admin": "a", "guest": "g"},
              "RemoteAccessAllowed": False, "DicomAet": "ORTHANC",
              "LuaAllowOsAndIo": True}  # pacsbox's option (off by default); Orthanc always has os and io
    with side_by_side(d, common) as urls:
        yield urls


def _both(pair):
    ref, _, ours, _ = pair
    return (ref, "orthanc"), (ours, "pacsbox")


def _exec(url, code, headers=ADMIN):
    return requests.post(url + "/tools/execute-script", data=code.encode(), headers=headers)


def test_snippets_print_the_same(pair):
    for code in SNIPPETS:
        ref, ours = (_exec(url, code) for url, _ in _both(pair))
        assert (ref.status_code, ref.text) == (ours.status_code, ours.text), code


def test_errors_are_the_same(pair):
    for code in ERRORS:
        ref, ours = (_exec(url, code) for url, _ in _both(pair))
        assert ref.status_code == ours.status_code == 500, code
        keep = ("Details", "HttpStatus", "Message", "OrthancError", "OrthancStatus", "Uri", "Method")
        assert {k: ref.json().get(k) for k in keep} == {k: ours.json().get(k) for k in keep}, code


def test_filters_have_the_same_effect(pair):
    results = {}
    for url, name in _both(pair):
        out = []
        for headers in (GUEST, ADMIN):
            for path in (MR, CT):
                r = requests.post(url + "/instances", data=open(path, "rb").read(), headers=headers)
                out.append((r.status_code, r.json().get("Status") if r.status_code == 200 else None))
        out.append(requests.get(url + "/instances", headers=GUEST).status_code)
        out.append(len(requests.get(url + "/instances", headers=ADMIN).json()))
        out.append(_exec(url, "print(1)", GUEST).status_code)
        out.append(_exec(url, "print(1)", dict(GUEST, **{"X-Token": "secret"})).text)
        results[name] = out
    assert results["orthanc"] == results["pacsbox"]
    assert results["pacsbox"][:4] == [(403, None), (403, None), (200, "FilteredOut"), (200, "Success")]


def test_on_stored_instance_gets_the_same_arguments(pair):
    seen = {}
    for url, name in _both(pair):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = _exec(url, "for _, s in ipairs(Stored) do print(s) end").text
            if out:
                break
            time.sleep(0.1)
        seen[name] = [json.loads(line) for line in out.splitlines()]
    assert seen["orthanc"] == seen["pacsbox"]
    assert seen["pacsbox"][0]["origin"] == {"RemoteIp": "127.0.0.1", "RequestOrigin": "RestApi", "Username": "admin"}


@pytest.mark.skipif(STORESCU is None, reason="dcmtk is not installed")
def test_c_store_filtered_out(pair):
    """A C-STORE refused by ReceivedInstanceFilter: nothing stored, and both answer Success
    (Orthanc 1.10.1 does; pacsbox's dicom_net SCP answers as Orthanc for FilteredOut)."""
    ref, rport, ours, pport = pair
    statuses = {}
    for url, port, name in ((ref, rport, "orthanc"), (ours, pport, "pacsbox")):
        before = len(requests.get(url + "/instances", headers=ADMIN).json())
        p = subprocess.run([STORESCU, "-d", "-aec", "ORTHANC", "127.0.0.1", str(port), MR],
                           capture_output=True, text=True, timeout=60)
        statuses[name] = re.findall(r"DIMSE Status\s*:\s*(.*)", p.stdout + p.stderr)
        assert len(requests.get(url + "/instances", headers=ADMIN).json()) == before  # nothing stored
    assert statuses["orthanc"] == statuses["pacsbox"] == ["0x0000: Success"]


STABLE_SCRIPT = r"""
Events = {}
function OnStableStudy(id, tags, metadata) table.insert(Events, 'study ' .. DumpJson(tags) .. ' ' .. DumpJson(metadata)) end
function OnStableSeries(id, tags, metadata) table.insert(Events, 'series ' .. DumpJson(tags) .. ' ' .. DumpJson(metadata)) end
function OnStablePatient(id, tags, metadata) table.insert(Events, 'patient ' .. DumpJson(tags) .. ' ' .. DumpJson(metadata)) end
function OnJobSubmitted(id) table.insert(Events, 'submitted') end
function OnJobSuccess(id) table.insert(Events, 'success') end
function OnJobFailure(id) table.insert(Events, 'failure') end
"""


def _normalized(lines):
    """Events with what differs by nature removed: UIDs generated by a modification, IDs,
    dates."""
    out = []
    for line in lines:
        kind, _, rest = line.partition(" ")
        if not rest:
            out.append((kind,))
            continue
        tags_text, _, meta_text = rest.rpartition("} ")
        tags, meta = json.loads(tags_text + "}"), json.loads(meta_text)
        for k in ("StudyInstanceUID", "SeriesInstanceUID"):
            tags[k] = "original" if str(tags.get(k, "")).startswith("1.3.6.1.4.1.5962") else "new"
        out.append((kind, json.dumps(tags, sort_keys=True), tuple(sorted(meta))))
    return sorted(out)


def test_stable_and_job_callbacks_get_the_same_arguments(tmp_path, make_app):
    script = tmp_path / "stable.lua"
    script.write_text(STABLE_SCRIPT)
    port = free_port()
    cfg = {"ExecuteLuaEnabled": True, "LuaScripts": [str(script)], "StableAge": 1, "AuthenticationEnabled": False}
    (tmp_path / "orthanc.json").write_text(json.dumps(dict(cfg, HttpPort=port, DicomServerEnabled=False,
                                                           StorageDirectory=str(tmp_path / "db"),
                                                           IndexDirectory=str(tmp_path / "db"))))
    log = open(tmp_path / "orthanc.log", "wb")
    proc = subprocess.Popen([ORTHANC, f"--logdir={tmp_path}", str(tmp_path / "orthanc.json")], stdout=log,
                            stderr=subprocess.STDOUT)
    import falcon.testing
    client = falcon.testing.TestClient(make_app(cfg, plugins=[lua_plugin]))

    class Ref:
        url = f"http://127.0.0.1:{port}"

        def post(self, path, body=None, json_body=None):
            return requests.post(self.url + path, data=body, json=json_body)

    class Ours:
        def post(self, path, body=None, json_body=None):
            r = client.simulate_post(path, body=body, json=json_body)
            return r

    try:
        for _ in range(400):
            try:
                requests.get(Ref.url + "/system", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        events = {}
        for name, server in (("orthanc", Ref()), ("pacsbox", Ours())):
            r = server.post("/instances", body=open(CT, "rb").read())
            study = (r.json() if name == "orthanc" else r.json)["ParentStudy"]
            # the patient, study and series are stable (after 1 s, checked every second)
            # before the modification (a sleep of 3.5 s for it was a bet on the machine)
            deadline = time.monotonic() + 60
            while server.post("/tools/execute-script", body=b"print(#Events)").text.strip() != "3":
                assert time.monotonic() < deadline, name
                time.sleep(0.1)
            server.post(f"/studies/{study}/modify", json_body={"Replace": {"StudyDescription": "x"}, "Asynchronous": True})
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                out = server.post("/tools/execute-script", body=b"for _, e in ipairs(Events) do print(e) end").text
                if out.count("\n") >= 8:
                    break
                time.sleep(0.3)
            events[name] = _normalized(out.splitlines())
        assert events["orthanc"] == events["pacsbox"]
        assert [e[0] for e in events["pacsbox"]].count("study") == 2
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
