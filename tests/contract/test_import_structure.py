"""Import structure of the core (issue 14 items 1 and 3).

- Every module of the package ``pacsbox`` imports in a fresh interpreter, whatever the
  order the modules are imported in (a cycle saved only by line order fails here).
- No core module below the composition roots imports the package ``pacsbox`` itself
  (``from .. import x``, ``from pacsbox import x``): the package's ``__init__`` re-exports the public API and
  imports nearly every module, so such an import is a cycle. The version lives in
  ``pacsbox.version``, the hook markers in ``pacsbox.hookspecs``.
- The downward rule: the HTTP edge (``rest/``, ``builtin/``, ``routing/``) may import the
  services; no service imports the edge, nor the composition roots (``app``, ``cli``,
  ``server``, ``testing``). ``rest/`` and ``builtin/`` do not import each other.

Checked by walking the AST of every module (imports inside functions included).
"""
from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core"
PACKAGE = CORE / "pacsbox"

#: Modules that assemble everything; anything may be imported from them, they import anything.
ROOTS = frozenset({"pacsbox", "pacsbox.app", "pacsbox.cli", "pacsbox.server", "pacsbox.testing"})
#: The HTTP edge: falcon resources and routes, and the built-in features written as plugins.
EDGE = ("pacsbox.rest", "pacsbox.builtin", "pacsbox.routing")


def module_name(path: Path) -> str:
    """``core/pacsbox/rest/tools.py`` → ``pacsbox.rest.tools``."""
    parts = list(path.relative_to(CORE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> list[str]:
    """Every module of the package, sorted."""
    return sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


def imported_modules(source: str, name: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``pacsbox`` module that ``source`` (module ``name``) imports.

    ``from .x import y`` counts as an import of ``pkg.x.y`` when that is a module, else of
    ``pkg.x``; ``from .. import y`` likewise (so ``from .. import __version__`` is an
    import of the package ``pacsbox`` itself). Imports under ``if TYPE_CHECKING:`` are
    left out: they never run.
    """
    known = set(all_modules())
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source)
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "pacsbox"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "pacsbox":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((node.lineno, sub if sub in known else target))
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def layer(module: str) -> str:
    """``"root"``, ``"rest"``, ``"builtin"``, ``"routing"`` or ``"service"``."""
    if module in ROOTS:
        return "root"
    for edge in EDGE:
        if module == edge or module.startswith(edge + "."):
            return edge.rsplit(".", 1)[1]
    return "service"


def structure_violations(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """Violations of the rules above, for ``{module name: (source, is_package)}``."""
    bad = []
    for name, (source, is_package) in sorted(modules.items()):
        here = layer(name)
        for lineno, target in imported_modules(source, name, is_package):
            there = layer(target)
            if target == "pacsbox" and here != "root":
                bad.append(f"{name}:{lineno}: imports the package pacsbox itself (an import cycle)")
            elif here == "service" and there != "service":
                bad.append(f"{name}:{lineno}: a service imports {target} ({there})")
            elif here in ("rest", "builtin", "routing") and there == "root":
                bad.append(f"{name}:{lineno}: the HTTP edge imports {target} (a composition root)")
            elif {here, there} == {"rest", "builtin"}:
                bad.append(f"{name}:{lineno}: {here} imports {target} ({there})")
    return bad


# ---------------------------------------------------------------------------------------

def test_the_package_modules_are_found():
    mods = all_modules()
    assert {"pacsbox", "pacsbox.version", "pacsbox.hookspecs", "pacsbox.rest.tools", "pacsbox.dicom.rewrite",
            "pacsbox.jobs.engine", "pacsbox.builtin.modify"} <= set(mods)
    assert len(mods) > 60


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_module_imports_in_a_fresh_interpreter_in_random_order(seed):
    order = all_modules()
    random.Random(seed).shuffle(order)
    script = ("import importlib, json, sys\n"
              "failed = []\n"
              "for name in json.loads(sys.argv[1]):\n"
              "    try:\n"
              "        importlib.import_module(name)\n"
              "    except Exception as e:\n"
              "        failed.append(f'{name}: {type(e).__name__}: {e}')\n"
              "print(json.dumps(failed))\n")
    r = subprocess.run([sys.executable, "-c", script, json.dumps(order)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == [], f"order (seed {seed}): {order}"


@pytest.mark.parametrize("first", ["pacsbox.rest.tools", "pacsbox.dicom.rewrite", "pacsbox.dicom.modification",
                                   "pacsbox.routing.openapi", "pacsbox.cli", "pacsbox.hookspecs"])
def test_the_modules_that_need_the_version_import_first(first):
    """The modules of the former cycle, each imported first in a fresh interpreter."""
    r = subprocess.run([sys.executable, "-c", f"import {first}, pacsbox; print(pacsbox.__version__)"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert (r.returncode, r.stderr) == (0, "")
    from pacsbox.version import __version__
    assert r.stdout == f"{__version__}\n"


def test_the_pytest_plugin_loads_nothing_heavy():
    """pytest loads pacsbox.testing in every run where pacsbox is installed (issue 14 item 15):
    the package's public names are lazy, so loading it imports no service, falcon, pydicom or waitress."""
    script = ("import sys, pacsbox.testing\n"
              "print(sorted(m for m in sys.modules if m == 'pacsbox' or m.startswith(('pacsbox.', 'falcon', "
              "'pydicom', 'waitress'))))\n"
              "from pacsbox import create_app, hookimpl\n"
              "import pacsbox\n"
              "print(create_app is pacsbox.app.create_app, hookimpl is pacsbox.hookspecs.hookimpl)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "['pacsbox', 'pacsbox.testing', 'pacsbox.version']\nTrue True\n"


def test_every_public_name_is_exported():
    import pacsbox
    for name in pacsbox.__all__:
        assert getattr(pacsbox, name) is not None, name
    with pytest.raises(AttributeError, match="module 'pacsbox' has no attribute 'nothing_here'"):
        pacsbox.nothing_here  # noqa: B018


def test_the_core_follows_the_import_rules():
    modules = {module_name(p): (p.read_text(encoding="utf-8"), p.name == "__init__.py")
               for p in PACKAGE.rglob("*.py")}
    assert structure_violations(modules) == []


def test_one_hook_marker_each():
    """``hookimpl`` and ``hookspec`` are defined once, in ``hookspecs.py``."""
    import pacsbox
    from pacsbox import hookspecs

    assert pacsbox.hookimpl is hookspecs.hookimpl and pacsbox.hookspec is hookspecs.hookspec
    markers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("HookimplMarker", "HookspecMarker"):
                markers.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.attr}")
    assert len(markers) == 2 and {m.split(":")[0] for m in markers} == {"core/pacsbox/hookspecs.py"}, markers


# ---- the checker itself can fail ---------------------------------------------------------

def test_the_checker_catches_each_kind_of_violation():
    modules = {
        "pacsbox.dicom.rewrite": ("from .. import __version__\n", False),
        "pacsbox.index.index": ("def f():\n    from ..rest.tools import find_resources\n", False),
        "pacsbox.ingest": ("import pacsbox.builtin.common\nfrom .app import create_app\n", False),
        "pacsbox.rest.bulk": ("from ..builtin import common\nfrom ..index import index\n", False),
        "pacsbox.builtin.routes": ("from pacsbox import ErrorCode\nfrom ..cli import main\n", False),
        "pacsbox.routing": ("from .registry import RouteSpec\n", True),
        "pacsbox.context": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .rest import tools\n", False),
        "pacsbox.testing": ("from pacsbox import create_app\n", False),
    }
    assert structure_violations(modules) == [
        "pacsbox.builtin.routes:1: imports the package pacsbox itself (an import cycle)",
        "pacsbox.builtin.routes:2: the HTTP edge imports pacsbox.cli (a composition root)",
        "pacsbox.dicom.rewrite:1: imports the package pacsbox itself (an import cycle)",
        "pacsbox.index.index:2: a service imports pacsbox.rest.tools (rest)",
        "pacsbox.ingest:1: a service imports pacsbox.builtin.common (builtin)",
        "pacsbox.ingest:2: a service imports pacsbox.app (root)",
        "pacsbox.rest.bulk:1: rest imports pacsbox.builtin.common (builtin)",
    ]
