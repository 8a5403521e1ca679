"""Packaging contract: the entry points declared in ``pyproject.toml`` are the ones
installed, each first-party plugin has its own ``pacsbox.plugins`` entry point whose module
lives in its own plugin folder, and the pytest helpers and the command are advertised.
"""
from __future__ import annotations

import importlib
import tomllib
from importlib import metadata
from pathlib import Path

from pacsbox.plugins import ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parents[2]


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def installed(group: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.distribution("pacsbox").entry_points if ep.group == group}


def test_first_party_plugins_have_their_own_entry_points():
    declared = pyproject()["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert declared == {"archive": "pacsbox_archive.plugin", "dicom_net": "pacsbox_dicom_net.plugin",
                        "pdf": "pacsbox_pdf.plugin", "metrics": "pacsbox_metrics.plugin"}
    assert installed(ENTRY_POINT_GROUP) == declared, "reinstall: pip install -e '.[test]'"
    for name, value in declared.items():
        module = importlib.import_module(value)
        folder = ROOT / "plugins" / name / value.split(".")[0]
        assert Path(module.__file__).resolve().parent == folder


def test_pytest_helpers_and_command_are_advertised():
    project = pyproject()["project"]
    assert project["entry-points"]["pytest11"] == {"pacsbox": "pacsbox.testing"} == installed("pytest11")
    assert project["scripts"] == {"pacsbox": "pacsbox.cli:main"} == installed("console_scripts")


def test_the_example_plugin_is_a_separate_distribution():
    with open(ROOT / "tests" / "fixtures" / "example_plugin" / "pyproject.toml", "rb") as f:
        example = tomllib.load(f)["project"]
    assert example["name"] == "pacsbox-example-plugin"
    assert example["entry-points"][ENTRY_POINT_GROUP] == {"example": "pacsbox_example.plugin"}
    assert example["dependencies"] == ["pacsbox"]
