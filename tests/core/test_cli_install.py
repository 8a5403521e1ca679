"""``pacsbox install`` / ``pacsbox uninstall`` (issue 16 item 20), with the example plugin's
folder, in a throw-away virtual environment that sees this environment's packages
(``--system-site-packages``), so that the shared environment is left as it was."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pacsbox.cli import pip_command

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "example_plugin"


def test_pip_command_uses_pacsbox_interpreter():
    assert pip_command("install", ["-U", "x"]) == [sys.executable, "-m", "pip", "install", "-U", "x"]
    assert pip_command("uninstall", ["x"]) == [sys.executable, "-m", "pip", "uninstall", "-y", "x"]


def test_install_without_names_is_a_usage_error():
    r = subprocess.run([sys.executable, "-m", "pacsbox.cli", "install"], capture_output=True, text=True)
    assert r.returncode == 2 and "name at least one package" in r.stderr


@pytest.mark.timeout(600) if hasattr(pytest.mark, "timeout") else (lambda f: f)
def test_install_lists_the_plugin_then_uninstall(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    # the example plugin's folder under another distribution and entry-point name, so that the
    # test does not depend on whether another test left the example plugin installed in this
    # environment (the venv sees it): that one is blocked, and the copy's package, installed
    # in the venv, shadows it
    src = tmp_path / "example_plugin"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    project = src / "pyproject.toml"
    text = project.read_text()
    assert 'name = "pacsbox-example-plugin"' in text and 'example = "pacsbox_example.plugin"' in text
    project.write_text(text.replace('name = "pacsbox-example-plugin"', 'name = "pacsbox-install-probe"')
                       .replace('example = "pacsbox_example.plugin"', 'install_probe = "pacsbox_example.plugin"'))
    env = {**os.environ, "PACSBOX_DISABLE_PLUGINS": "example"}

    def pacsbox(*args):
        return subprocess.run([py, "-m", "pacsbox.cli", *args], capture_output=True, text=True, timeout=600,
                              cwd=tmp_path, env=env)

    def listed():
        r = pacsbox("plugins", "--json")
        assert r.returncode == 0, r.stderr
        return {p["ID"]: p for p in json.loads(r.stdout)}

    before = listed()
    assert "install_probe" not in before
    r = pacsbox("install", "--quiet", "--disable-pip-version-check", str(src))
    assert r.returncode == 0, r.stdout + r.stderr
    # installed in the venv (pacsbox's interpreter), not in this environment
    where = subprocess.run([py, "-c", "import pacsbox_example, sys; print(pacsbox_example.__file__)"],
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(venv))
    plugins = listed()
    probe = plugins["install_probe"]
    text = json.dumps(probe)
    assert "1.2.3" in text
    assert set(plugins) - set(before) == {"install_probe"}
    assert "/example/hello" in text
    r = pacsbox("uninstall", "--quiet", "pacsbox-install-probe")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "install_probe" not in listed()
