"""Issue 13 case 8: a wrong configuration is refused at start, by a real ``pacsbox serve``,
with exit code 2 and a message naming the option, its value and what is expected (core
options by the core, a plugin's options by the plugin); a UTF-8 BOM is accepted."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pacsbox import ConfigError, create_app
from pacsbox.config import load_config_file
from pacsbox.testing import free_port

PACSBOX = str(Path(sys.executable).parent / "pacsbox")
if not os.path.exists(PACSBOX):  # pragma: no cover - unusual layouts
    PACSBOX = shutil.which("pacsbox") or PACSBOX


def serve(path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PACSBOX_DISABLE_PLUGINS", "PACSBOX_TRACE_PLUGINS")}
    return subprocess.run([PACSBOX, "serve", "--config", str(path)], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.parametrize("options, message", [
    ({"HttpPort": 99999}, "option HttpPort: 99999 is not a TCP port number (1-65535)"),
    ({"HttpPort": 0}, "option HttpPort: 0 is not a TCP port number (1-65535)"),
    ({"ConcurrentJobs": "two"}, 'option ConcurrentJobs: "two" is not an integer >= 0'),
    ({"RemoteAccessAllowed": "yes"}, 'option RemoteAccessAllowed: "yes" is not true or false'),
    ({"DicomAet": 5}, "option DicomAet: 5 is not an AET: a string of 1 to 16 characters"),
    ({"StorageDirectory": "{tmp}/missing/data"},
     'option StorageDirectory: "{tmp}/missing/data": the parent folder \'{tmp}/missing\' does not exist'),
    # a plugin's own option, declared by the plugin (register_options), named as such
    ({"DicomScuTimeout": -1}, "option DicomScuTimeout: -1 is not an integer >= 0 (plugin 'dicom_net')"),
    ({"OrthancPeerStoreConcurrency": 65},
     "option OrthancPeerStoreConcurrency: 65 is not an integer in 1-64 (plugin 'dicom_net')"),
    ({"MediaArchiveSize": "many"}, 'option MediaArchiveSize: "many" is not an integer >= 0 (plugin \'archive\')'),
    ({"CreateDicomMaximumSize": -5}, "option CreateDicomMaximumSize: -5 is not an integer >= 0 (plugin 'pdf')"),
    ({"Metrics": {"ExpositionCacheMs": "x"}},
     'option Metrics.ExpositionCacheMs: "x" is not a number >= 0 (plugin \'metrics\')'),
])
def test_serve_refuses_a_wrong_option_naming_it(tmp_path, options, message):
    cfg = {"StorageDirectory": str(tmp_path / "data"), "HttpPort": free_port(), "DicomPort": free_port()}
    cfg.update({k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in options.items()})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    r = serve(path)
    assert r.returncode == 2, r.stderr
    assert r.stderr == "pacsbox: bad configuration: " + message.replace("{tmp}", str(tmp_path)) + \
        ("" if "does not exist" not in message else
         " (pacsbox creates the folder itself, not its parents)") + "\n"
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("head, name", [(b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")])
def test_serve_refuses_a_utf16_file(tmp_path, head, name):
    path = tmp_path / "c.json"
    path.write_bytes(head + json.dumps({"HttpPort": free_port()}).encode("utf-16-le"))
    r = serve(path)
    assert r.returncode == 2
    assert r.stderr == (f"pacsbox: bad configuration: {path}: the file is encoded in {name} (byte-order mark "
                        f"{head.hex(' ')}); a configuration file must be UTF-8\n")


def test_serve_refuses_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes(b'{\n  "Name": "caf\xe9"\n}\n')
    r = serve(path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == (f"pacsbox: bad configuration: {path}: line 2: byte 0xe9 at offset 16 is not UTF-8; "
                        f"a configuration file must be UTF-8\n")


def test_a_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes(b"\xef\xbb\xbf" + '{"Name": "Bj\u00f6rk", "HttpPort": 8043}'.encode())
    assert load_config_file(path) == {"Name": "Bj\u00f6rk", "HttpPort": 8043}


@pytest.mark.parametrize("options", [
    {"HttpPort": 70000}, {"ConcurrentJobs": 1.5}, {"SaveJobs": "maybe"}, {"JobsHistorySize": -1},
    {"Dictionary": []}, {"DicomAet": "A" * 17}, {"StableAge": None},
])
def test_create_app_refuses_wrong_core_options(tmp_path, options):
    with pytest.raises(ConfigError, match="^option " + next(iter(options))):
        create_app({"StorageDirectory": str(tmp_path / "d"), **options}, load_entrypoints=False)
    assert not (tmp_path / "d").exists()


def test_strings_from_environment_substitution_still_accepted(tmp_path):
    app = create_app({"StorageDirectory": str(tmp_path / "d"), "HttpPort": "8043", "SaveJobs": "false",
                      "StableAge": "5"}, load_entrypoints=False)
    try:
        assert app.ctx.config.int("HttpPort") == 8043 and app.ctx.config.bool("SaveJobs") is False
    finally:
        app.close()
