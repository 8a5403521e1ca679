"""The Lua plugin in-process: execute-script, the Lua API, callbacks, filters, safety."""
from __future__ import annotations

import base64
import logging
import time

import falcon.testing
import pytest
from pydicom.data import get_testdata_file

import pacsbox_lua.plugin as lua_plugin
from pacsbox import StartupError
from pacsbox_lua.plugin import engine_of

CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def lua_app(make_app, tmp_path):
    """Factory: ``lua_app(config=None, scripts=())`` → (app, TestClient); scripts are written
    to files listed in ``LuaScripts``."""
    def factory(config=None, scripts=()):
        paths = []
        for i, text in enumerate(scripts):
            p = tmp_path / f"script{i}.lua"
            p.write_text(text)
            paths.append(str(p))
        cfg = {"ExecuteLuaEnabled": True, "LuaScripts": paths}
        cfg.update(config or {})
        app = make_app(cfg, plugins=[lua_plugin])
        return app, falcon.testing.TestClient(app)
    return factory


def run(client, code):
    r = client.simulate_post("/tools/execute-script", body=code)
    assert r.status_code == 200, r.text
    return r.text


def idle(app):
    from pacsbox.testing import wait_for_notifications
    assert wait_for_notifications(app)
    assert engine_of(app.ctx).wait_idle()


def test_execute_script_answers_what_it_printed_and_keeps_definitions(lua_app):
    _, c = lua_app()
    assert run(c, 'print(42, "a", nil, true) print(_VERSION)') == "42, a, nil, true\nLua 5.3\n"
    assert run(c, "function Double(x) return 2 * x end") == ""
    assert run(c, "print(Double(21))") == "42\n"  # re-entry: the same interpreter


def test_execute_script_errors_and_disabled(lua_app):
    _, c = lua_app()
    r = c.simulate_post("/tools/execute-script", body="x = = 1")
    assert r.status_code == 500
    assert r.json["OrthancStatus"] == 2031 and r.json["Message"] == "Cannot execute a Lua command"
    assert r.json["Details"] == "[string \"line\"]:1: unexpected symbol near '='"
    r = c.simulate_post("/tools/execute-script", body='error("boom")')
    assert r.json["Details"] == '[string "line"]:1: boom'
    _, c = lua_app({"ExecuteLuaEnabled": False})
    r = c.simulate_post("/tools/execute-script", body="print(1)")
    assert r.status_code == 403 and r.content == b""


def test_json_helpers_as_orthanc(lua_app):
    _, c = lua_app()
    out = run(c, 'print(DumpJson({1,2,"3"})) print(DumpJson({a="12", b=1.5, c=true}, true)) '
                 'print(DumpJson({a="12", b=1.5, c=true})) print(DumpJson({})) PrintRecursive({a={b=1}}) '
                 'print(ParseJson("[1,{\\"a\\":null,\\"b\\":\\"x\\"}]")[2].b) print(ParseJson("nope"))')
    assert out == ('[1,2,3]\n{"a":"12","b":"1.5","c":true}\n{"a":12,"b":1.5,"c":true}\n[]\n'
                   'table\n\t[a], table\n\t[a]\t[b], number, 1\nx\nnil\n')


def test_rest_api_in_process_with_lua_origin(lua_app):
    app, c = lua_app({"AuthenticationEnabled": True, "RegisteredUsers": {"u": "p"}})
    auth = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    r = c.simulate_post("/tools/execute-script", headers=auth, body=(
        "local f = RestApiGet('/system') print(ParseJson(f)['Version']) "
        "print(RestApiGet('/nope')) print(RestApiDelete('/instances/nope'))"))
    assert r.text == "1.10.1\nnil\nnil\n"
    ct = _bytes(CT)
    app.ctx.stash["ct"] = ct
    engine = engine_of(app.ctx)
    engine.lua.globals()[b"CT_FILE"] = ct
    r = c.simulate_post("/tools/execute-script", headers=auth, body=(
        "local id = ParseJson(RestApiPost('/instances', CT_FILE))['ID'] "
        "print(RestApiGet('/instances/' .. id .. '/metadata/Origin')) "
        "print(RestApiDelete('/instances/' .. id)) print(RestApiGet('/instances/' .. id))"))
    assert r.text == "Lua\ntrue\nnil\n"


def test_os_and_io_only_when_allowed(lua_app):
    _, c = lua_app()
    assert run(c, "print(type(io), type(os.execute), type(os.time), type(CallSystem), type(python))") == \
        "nil, nil, function, nil, nil\n"
    _, c = lua_app({"LuaAllowOsAndIo": True})
    assert run(c, "print(type(io), type(os.execute), type(CallSystem))") == "table, function, function\n"


def test_endless_script_is_stopped_and_the_server_goes_on(lua_app):
    _, c = lua_app({"LuaScriptTimeout": 0.5})
    t0 = time.monotonic()
    r = c.simulate_post("/tools/execute-script", body="while true do end")
    assert r.status_code == 500 and "time limit" in r.json["Details"]
    assert time.monotonic() - t0 < 8     # the configured 0.5 s, not the default 10 s
    assert run(c, "print(1)") == "1\n"


def test_startup_script_with_syntax_error_is_refused_with_file_and_line(lua_app, tmp_path):
    with pytest.raises(StartupError) as e:
        lua_app(scripts=["x = 1\n\nfunction (\n"])
    assert "script0.lua:3:" in str(e.value)
    with pytest.raises(StartupError, match="cannot read"):
        lua_app({"LuaScripts": [str(tmp_path / "missing.lua")]})


def test_on_stored_instance_arguments_and_initialize(lua_app):
    app, c = lua_app(scripts=["""
Seen = {}
function Initialize() Initialized = true end
function OnStoredInstance(instanceId, tags, metadata, origin)
   table.insert(Seen, { id = instanceId, modality = tags['Modality'], origin = origin['RequestOrigin'],
                        ip = origin['RemoteIp'], meta = metadata['Origin'], ts = metadata['TransferSyntax'] })
end
"""])
    r = c.simulate_post("/instances", body=_bytes(CT))
    iid = r.json["ID"]
    idle(app)
    out = run(c, "print(Initialized) for _, s in ipairs(Seen) do "
                 "print(s.id, s.modality, s.origin, s.ip, s.meta, s.ts) end")
    assert out == f"true\n{iid}, CT, RestApi, 127.0.0.1, RestApi, 1.2.840.10008.1.2.1\n"


def test_callback_error_is_logged_with_file_and_line_and_server_goes_on(lua_app, caplog):
    app, c = lua_app(scripts=["function OnStoredInstance(id)\n  error('broken')\nend\n"])
    with caplog.at_level(logging.ERROR, logger="pacsbox.lua"):
        assert c.simulate_post("/instances", body=_bytes(CT)).status_code == 200
        idle(app)
    assert any("script0.lua:2: broken" in r.getMessage() for r in caplog.records)
    assert c.simulate_post("/instances", body=_bytes(MR)).status_code == 200
    assert len(c.simulate_get("/instances").json) == 2


def test_received_instance_filter_refuses_a_modality(lua_app):
    app, c = lua_app(scripts=["""
function ReceivedInstanceFilter(dicom, origin, info)
   return dicom.Modality ~= 'MR' and origin['RequestOrigin'] == 'RestApi' and info['HasPixelData'] == true
          and info['TransferSyntaxUID'] == '1.2.840.10008.1.2.1'
end
"""])
    assert c.simulate_post("/instances", body=_bytes(MR)).json["Status"] == "FilteredOut"
    assert c.simulate_post("/instances", body=_bytes(CT)).json["Status"] == "Success"
    assert len(c.simulate_get("/instances").json) == 1
    # as Orthanc 1.10.1, filters run in their own interpreter, loaded from LuaScripts only:
    # execute-script does not change them
    run(c, "function ReceivedInstanceFilter() return true end")
    assert c.simulate_post("/instances", body=_bytes(MR)).json["Status"] == "FilteredOut"


def test_incoming_http_request_filter_refuses_a_user_on_a_route(lua_app):
    _, c = lua_app({"AuthenticationEnabled": True, "RegisteredUsers": {"admin": "a", "guest": "g"}}, scripts=["""
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
   if method == 'GET' or username == 'admin' then return true end
   return false
end
"""])
    guest = {"Authorization": "Basic " + base64.b64encode(b"guest:g").decode()}
    admin = {"Authorization": "Basic " + base64.b64encode(b"admin:a").decode()}
    assert c.simulate_get("/system", headers=guest).status_code == 200
    assert c.simulate_post("/instances", body=_bytes(CT), headers=guest).status_code == 403
    assert c.simulate_post("/instances", body=_bytes(CT), headers=admin).status_code == 200


def test_reentry_callback_calls_rest_which_runs_a_filter_no_deadlock(lua_app):
    """OnStoredInstance modifies and re-uploads through the REST API: the upload runs
    ReceivedInstanceFilter in the same thread, and the new instance's own OnStoredInstance
    is queued, not run inside."""
    app, c = lua_app(scripts=["""
function ReceivedInstanceFilter(dicom, origin) return dicom.StationName ~= 'BLOCKED' end
function OnStoredInstance(instanceId, tags, metadata, origin)
   if origin['RequestOrigin'] ~= 'Lua' then
      local modified = RestApiPost('/instances/' .. instanceId .. '/modify',
                                   DumpJson({ Replace = { StationName = 'LUA' }, Force = true }, true))
      local id = ParseJson(RestApiPost('/instances/', modified))['ID']
      RestApiDelete('/instances/' .. instanceId)
      ModifiedId = id
   end
end
"""])
    assert c.simulate_post("/instances", body=_bytes(CT)).status_code == 200
    idle(app)
    ids = c.simulate_get("/instances").json
    assert len(ids) == 1 and run(c, "print(ModifiedId)") == f"{ids[0]}\n"
    assert c.simulate_get(f"/instances/{ids[0]}/simplified-tags").json["StationName"] == "LUA"
    assert c.simulate_get(f"/instances/{ids[0]}/metadata/Origin").text == "Lua"


def test_modify_instance_then_delete_operations(lua_app):
    app, c = lua_app(scripts=["""
function OnStoredInstance(instanceId, tags, metadata, origin)
   if metadata['ModifiedFrom'] == nil then
      ModifyInstance(instanceId, { StationName = 'My Medical Device' }, { 'MilitaryRank' }, true)
      Delete(instanceId)
   end
end
"""])
    assert c.simulate_post("/instances", body=_bytes(CT)).status_code == 200
    idle(app)
    idle(app)
    ids = c.simulate_get("/instances").json
    assert len(ids) == 1
    assert c.simulate_get(f"/instances/{ids[0]}/simplified-tags").json["StationName"] == "My Medical Device"
    meta = c.simulate_get(f"/instances/{ids[0]}/metadata?expand").json
    assert meta["Origin"] == "Lua" and meta["ModifiedFrom"]  # so the script's guard stops the loop
    time.sleep(0.3)
    idle(app)
    assert c.simulate_get("/instances").json == ids


def test_stable_study_change_and_job_callbacks(lua_app):
    app, c = lua_app({"StableAge": 1}, scripts=["""
Events = {}
function OnStableStudy(studyId, tags, metadata)
   table.insert(Events, 'stable ' .. studyId .. ' ' .. tostring(tags['StudyInstanceUID'] ~= nil)
                .. ' ' .. tostring(tags['PatientName'] == nil))
end
function OnChange(changeType, level, resourceId)
   if changeType == 'NewStudy' then table.insert(Events, 'change ' .. level) end
end
function OnJobSubmitted(jobId) table.insert(Events, 'submitted') end
function OnJobSuccess(jobId) table.insert(Events, 'success') end
"""])
    r = c.simulate_post("/instances", body=_bytes(CT))
    study = r.json["ParentStudy"]
    c.simulate_post(f"/studies/{study}/modify", json={"Replace": {"StudyDescription": "x"}, "Asynchronous": True})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = run(c, "for _, e in ipairs(Events) do print(e) end")
        if f"stable {study} true true" in out and "success" in out:
            break
        time.sleep(0.2)
    lines = out.splitlines()
    assert "change Study" in lines and "submitted" in lines and "success" in lines
    assert f"stable {study} true true" in lines


def test_heartbeat(lua_app):
    t0 = time.monotonic()
    app, c = lua_app({"LuaHeartBeatPeriod": 0.1}, scripts=["Beats = 0 function OnHeartBeat() Beats = Beats + 1 end"])
    # beats keep coming (the default period is 0: never), however slow the machine (it
    # was: at least 2 beats after a sleep of 0.6 s)...
    deadline = time.monotonic() + 60
    while (beats := int(run(c, "print(Beats)"))) < 3:
        assert time.monotonic() < deadline, beats
        time.sleep(0.05)
    # ...and never more often than the period
    assert beats <= (time.monotonic() - t0) / 0.1 + 1


def test_http_functions_with_credentials(lua_app, live_server):
    target = live_server({"AuthenticationEnabled": True, "RegisteredUsers": {"u": "p"}})
    _, c = lua_app()
    out = run(c, f"""
local url = '{target.url}'
print(HttpGet(url .. '/system') == nil or ParseJson(HttpGet(url .. '/system')) == nil)
SetHttpCredentials('u', 'p')
SetHttpTimeout(5)
print(ParseJson(HttpGet(url .. '/system'))['Version'])
print(DumpJson(ParseJson(HttpPost(url .. '/tools/find', '{{"Level": "Study", "Query": {{}}}}'))))
print(HttpDelete(url .. '/instances/nope'))
print(HttpGet('http://127.0.0.1:1/nothing'))
print(HttpGet(url .. '/system', {{ ['X-Test'] = '1' }}) ~= nil)
""")
    assert out == "true\n1.10.1\n[]\nnil\nnil\ntrue\n"


def test_finalize_runs_at_shutdown(make_app, tmp_path):
    out = tmp_path / "finalized.txt"
    script = tmp_path / "f.lua"
    script.write_text(f"function Finalize() local f = io.open('{out}', 'w') f:write('bye') f:close() end")
    app = make_app({"LuaScripts": [str(script)], "LuaAllowOsAndIo": True}, plugins=[lua_plugin])
    app.close()
    assert out.read_text() == "bye"


def test_a_filter_that_raises_refuses_and_the_server_goes_on(lua_app, caplog):
    _, c = lua_app(scripts=["""
function IncomingHttpRequestFilter(method, uri, ip, username, headers)
   if uri == '/statistics' then error('no statistics') end
   return true
end
"""])
    with caplog.at_level(logging.ERROR):
        assert c.simulate_get("/statistics").status_code == 403
    assert any("script0.lua:3: no statistics" in r.getMessage() or "no statistics" in str(r.exc_info)
               for r in caplog.records)
    assert c.simulate_get("/system").status_code == 200


def test_rest_api_builtin_flag_and_headers(lua_app):
    _, c = lua_app()
    out = run(c, "print(RestApiPost('/tools/execute-script', 'print(7)'), RestApiPost('/tools/execute-script', 'print(7)', true)) "
                 "print(RestApiGet('/system', false, { ['Accept'] = 'application/json' }) ~= nil) "
                 "print(RestApiGet('/system', 'yes'))")
    # the plugin's own route answers unless builtin; a non-Boolean builtin is refused, as Orthanc
    assert out == "7\n, nil\ntrue\nnil\n"


def test_a_callback_defined_by_initialize_is_called(lua_app):
    app, c = lua_app(scripts=["""
function Initialize()
   function OnStoredInstance(instanceId) Seen = instanceId end
end
"""])
    assert engine_of(app.ctx).wait_idle()
    iid = c.simulate_post("/instances", body=_bytes(CT)).json["ID"]
    idle(app)
    assert run(c, "print(Seen)") == iid + "\n"


@pytest.mark.parametrize("option,value", [("LuaScripts", 3), ("LuaScripts", ["a.lua", 1]),
                                          ("LuaScriptTimeout", "ten"), ("LuaHeartBeatPeriod", -1)])
def test_malformed_options_stop_the_start_naming_them(make_app, option, value):
    with pytest.raises(Exception, match=option):
        make_app({option: value}, plugins=[lua_plugin])
