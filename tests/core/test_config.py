"""Orthanc-style configuration: comments, defaults, unknown options kept for plugins, a
directory of files, and clear errors naming the line (reference Appendix D)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pacsbox import Config, ConfigError, create_app
from pacsbox.config import load_config_file, parse_config_text, strip_json_comments

PACSBOX = str(Path(sys.executable).parent / "pacsbox")


def test_comments_are_allowed_and_strings_kept():
    text = """{
  // a line comment
  "Name": "Box // not a comment",   /* a block
  comment over lines */
  "DicomAet": "A/*B*/C",
  "HttpPort": 8043 // trailing
}"""
    assert parse_config_text(text) == {"Name": "Box // not a comment", "DicomAet": "A/*B*/C", "HttpPort": 8043}
    # comments are blanked out, newlines kept: JSON error lines still point into the file
    assert strip_json_comments(text).count("\n") == text.count("\n")


def test_defaults_and_orthanc_names():
    cfg = Config({})
    assert cfg["HttpPort"] == 8042 and cfg["DicomAet"] == "PACSBOX" and cfg["StableAge"] == 60
    assert cfg["StorageDirectory"] == "pacsbox-data" and cfg.path("IndexDirectory") == cfg.path("StorageDirectory")
    assert cfg.bool("OverwriteInstances") is False and cfg.bool("StoreMD5ForAttachments") is True
    assert cfg.authentication_enabled is False
    assert Config({"RemoteAccessAllowed": True}).authentication_enabled is True
    assert Config({"RemoteAccessAllowed": True, "AuthenticationEnabled": False}).authentication_enabled is False
    assert Config({"StableAge": "5"}).int("StableAge") == 5 and Config({"SaveJobs": "false"}).bool("SaveJobs") is False


def test_unknown_options_are_kept_for_plugins(make_app):
    app = make_app({"MyPlugin": {"Threshold": 3, "Names": ["a", "b"]}, "Flag": True})
    assert app.ctx.config.plugin_config("MyPlugin") == {"Threshold": 3, "Names": ["a", "b"]}
    assert app.ctx.plugin_config("Flag") is True
    assert app.ctx.plugin_config("Absent", "default") == "default"
    assert app.ctx.config.is_set("MyPlugin") and not app.ctx.config.is_set("HttpPort")


def test_file_and_directory(tmp_path):
    (tmp_path / "a.json").write_text('{ "Name": "A", "HttpPort": 9000 } // first\n')
    (tmp_path / "b.json").write_text('/* second */ { "Name": "B", "Custom": {"x": 1} }\n')
    (tmp_path / "ignored.txt").write_text("not json")
    merged = load_config_file(tmp_path)
    assert merged == {"Name": "B", "HttpPort": 9000, "Custom": {"x": 1}}
    cfg = Config.from_file(tmp_path / "a.json")
    assert cfg["Name"] == "A" and cfg.int("HttpPort") == 9000


@pytest.mark.parametrize("text, message", [
    ('{\n  "Name": "x",,\n}\n', "line 2, column 15"),
    ('{\n  "Name": "x"\n  "HttpPort": 1\n}\n', "line 3, column 3"),
    ('{\n  // fine\n  "Name": \'single\'\n}', "line 3, column 11"),
    ("[1, 2]", "the configuration must be a JSON object"),
])
def test_broken_file_names_the_line(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        Config.from_file(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_serve_refuses_a_broken_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  // my settings\n  "HttpPort": 8042,\n  "Name": "x",,\n}\n')
    r = subprocess.run([PACSBOX, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode != 0
    assert f"{bad}: line 4, column 15" in r.stderr
    assert not (tmp_path / "pacsbox-data").exists()


def test_serve_refuses_a_missing_file(tmp_path):
    r = subprocess.run([PACSBOX, "serve", "--config", str(tmp_path / "nope.json")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "cannot read the configuration file" in r.stderr


def test_options_reach_the_server(make_app, tmp_path):
    import falcon.testing
    app = make_app({"Name": "MyBox", "DicomAet": "MYAET", "DicomPort": 4343, "HttpPort": 8099})
    system = falcon.testing.TestClient(app).simulate_get("/system").json
    assert (system["Name"], system["DicomAet"], system["DicomPort"], system["HttpPort"]) == ("MyBox", "MYAET", 4343,
                                                                                           8099)


def test_http_describe_errors_off(make_app):
    import falcon.testing
    client = falcon.testing.TestClient(make_app({"HttpDescribeErrors": False}))
    r = client.simulate_post("/instances", body=b"garbage")
    assert r.status_code == 400 and r.content == b""


def test_create_app_accepts_a_mapping(tmp_path):
    app = create_app({"StorageDirectory": str(tmp_path / "d"), "Whatever": json.loads('{"k": [1]}')},
                     load_entrypoints=False, start_jobs=False)
    try:
        assert app.ctx.plugin_config("Whatever") == {"k": [1]}
    finally:
        app.close()
