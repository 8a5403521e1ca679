"""``pacsbox install`` / ``pacsbox uninstall`` (issue 16 item 20), with the example plugin's
folder, in a throw-away virtual environment that sees this environment's packages
(``--system-site-packages``), so that the shared environment is left as it was."""
from __future__ import annotations

import json
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
    src = tmp_path / "example_plugin"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))

    def pacsbox(*args):
        return subprocess.run([py, "-m", "pacsbox.cli", *args], capture_output=True, text=True, timeout=600,
                              cwd=tmp_path)

    def listed():
        r = pacsbox("plugins", "--json")
        assert r.returncode == 0, r.stderr
        return {p["ID"]: p for p in json.loads(r.stdout)}

    before = listed()
    if "example" in before:  # installed in the shared environment meanwhile (another test run)
        pytest.skip("the example plugin is installed in this environment: the venv would see it")
    r = pacsbox("install", "--quiet", "--disable-pip-version-check", str(src))
    assert r.returncode == 0, r.stdout + r.stderr
    # installed in the venv (pacsbox's interpreter), not in this environment
    where = subprocess.run([py, "-c", "import pacsbox_example, sys; print(pacsbox_example.__file__)"],
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(venv))
    plugins = listed()
    ex = plugins["example"]
    text = json.dumps(ex)
    assert "1.2.3" in text
    assert set(plugins) - set(before) == {"example"}
    assert any(k in ex for k in ("Routes", "routes")) or "/example" in text
    r = pacsbox("uninstall", "--quiet", "pacsbox-example-plugin")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "example" not in listed()
