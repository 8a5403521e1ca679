"""Layout contract (DESIGN.md section 2): plugins import only ``pacsbox``'s public names and
never each other; the core never imports a plugin.

Checked by walking the AST of:

- every module of the first-party plugin packages (``plugins/*/pacsbox_*/``) and of the
  example plugin distribution (``tests/fixtures/example_plugin/pacsbox_example/``): no
  ``import pacsbox.<x>``, no ``from pacsbox.<x> import``, no ``from pacsbox import <name>``
  outside ``pacsbox.__all__``, no ``pacsbox.<internal>`` attribute access, no import of
  another first-party plugin package, no ``importlib.import_module("pacsbox.<x>")``;
- every module of the core (``core/pacsbox/``): no import of a plugin package.

Scripts outside the plugin packages (e.g. ``plugins/metrics/tools/``) are development
tools, not plugin code, and are not checked.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pacsbox

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = frozenset(pacsbox.__all__)
PLUGIN_PACKAGES = sorted(p.name for p in ROOT.glob("plugins/*/pacsbox_*") if p.is_dir())
EXAMPLE = ROOT / "tests" / "fixtures" / "example_plugin" / "pacsbox_example"
FIRST_PARTY = frozenset(PLUGIN_PACKAGES) | {"pacsbox_example"}


def plugin_modules() -> list[tuple[str, Path]]:
    """``(package, path)`` of every module of every plugin package."""
    out = []
    for pkg_dir in sorted(ROOT.glob("plugins/*/pacsbox_*")) + [EXAMPLE]:
        for path in sorted(pkg_dir.rglob("*.py")):
            out.append((pkg_dir.name, path))
    return out


def _import_module_targets(tree: ast.AST) -> list[tuple[int, str]]:
    """String arguments of ``importlib.import_module(...)`` / ``__import__(...)`` calls."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value))
    return out


def plugin_violations(source: str, package: str, filename: str = "<src>") -> list[str]:
    """Import-boundary violations in one module of plugin ``package``."""
    tree = ast.parse(source, filename)
    bad = []
    pacsbox_aliases = set()

    def check_module_name(lineno: int, name: str, how: str) -> None:
        top = name.split(".")[0]
        if top == "pacsbox" and name != "pacsbox":
            bad.append(f"{filename}:{lineno}: {how} {name} (internal; use 'from pacsbox import ...')")
        elif top in FIRST_PARTY and top != package:
            bad.append(f"{filename}:{lineno}: {how} {name} (plugins never import each other)")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check_module_name(node.lineno, alias.name, "import")
                if alias.name == "pacsbox":
                    pacsbox_aliases.add(alias.asname or "pacsbox")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            check_module_name(node.lineno, node.module, "from")
            if node.module == "pacsbox":
                for alias in node.names:
                    if alias.name != "*" and alias.name not in PUBLIC:
                        bad.append(f"{filename}:{node.lineno}: from pacsbox import {alias.name} "
                                   f"(not a public name: not in pacsbox.__all__)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in pacsbox_aliases and node.attr not in PUBLIC:
            bad.append(f"{filename}:{node.lineno}: pacsbox.{node.attr} (not a public name)")
    for lineno, target in _import_module_targets(tree):
        check_module_name(lineno, target, "import_module")
    return bad


def core_violations(source: str, filename: str = "<src>") -> list[str]:
    """Imports of plugin packages in one core module."""
    tree = ast.parse(source, filename)
    bad = []
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
    names += _import_module_targets(tree)
    for lineno, name in names:
        if name.split(".")[0].startswith("pacsbox_"):
            bad.append(f"{filename}:{lineno}: the core imports plugin module {name}")
    return bad


# ---------------------------------------------------------------------------------------

def test_the_plugin_packages_are_found():
    assert {"pacsbox_archive", "pacsbox_dicom_net", "pacsbox_pdf", "pacsbox_metrics"} <= set(PLUGIN_PACKAGES)
    assert (EXAMPLE / "plugin.py").is_file()
    assert len(plugin_modules()) >= 2 * len(PLUGIN_PACKAGES)  # at least __init__ and plugin each


@pytest.mark.parametrize("package,path", plugin_modules(), ids=lambda v: str(v)[len(str(ROOT)) + 1:]
                         if isinstance(v, Path) else v)
def test_plugins_import_only_public_names(package, path):
    assert plugin_violations(path.read_text(encoding="utf-8"), package, str(path.relative_to(ROOT))) == []


def test_the_core_never_imports_a_plugin():
    bad = []
    for path in sorted((ROOT / "core" / "pacsbox").rglob("*.py")):
        bad += core_violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert bad == []
    from pacsbox.plugins import DEFAULT_PLUGINS
    assert all(name.startswith("pacsbox.") for name in DEFAULT_PLUGINS)


def test_checkers_catch_each_kind_of_violation():
    src = "\n".join([
        "import pacsbox",
        "import pacsbox.jobs.engine",
        "from pacsbox.metrics import MetricsStore",
        "from pacsbox import hookimpl, hookspecs",
        "from pacsbox_archive.jobs import ArchiveJob",
        "from pacsbox_pdf import plugin",
        "from .jobs import Mine",
        "import importlib",
        "x = importlib.import_module('pacsbox.app')",
        "y = pacsbox.plugins",
        "z = pacsbox.RouteSpec",
    ])
    bad = plugin_violations(src, "pacsbox_pdf", "m.py")
    assert bad == [
        "m.py:2: import pacsbox.jobs.engine (internal; use 'from pacsbox import ...')",
        "m.py:3: from pacsbox.metrics (internal; use 'from pacsbox import ...')",
        "m.py:4: from pacsbox import hookspecs (not a public name: not in pacsbox.__all__)",
        "m.py:5: from pacsbox_archive.jobs (plugins never import each other)",
        "m.py:10: pacsbox.plugins (not a public name)",
        "m.py:9: import_module pacsbox.app (internal; use 'from pacsbox import ...')",
    ]
    assert core_violations("import os\nfrom pacsbox_metrics.plugin import x\nfrom .x import y\n"
                           "import importlib\nimportlib.import_module('pacsbox_pdf.plugin')\n", "c.py") == [
        "c.py:2: the core imports plugin module pacsbox_metrics.plugin",
        "c.py:5: the core imports plugin module pacsbox_pdf.plugin",
    ]
