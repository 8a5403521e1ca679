"""Helpers shared by the SCP tests (``test_scp_*.py``)."""
from __future__ import annotations

import os
import subprocess
import warnings

import pytest
from pydicom.data import get_testdata_file

#: Debian's dcmtk (pynetdicom installs scripts of the same names elsewhere).
DCMTK_DIR = "/usr/bin"


def run_dcmtk(tool: str, *args: str | bytes, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a dcmtk tool by its full path, with TCP_NODELAY=1; text output (an argument
    given as bytes reaches the tool as those bytes, e.g. a Latin-1 query value)."""
    path = os.path.join(DCMTK_DIR, tool)
    if not os.path.exists(path):
        pytest.fail(f"dcmtk's {tool} is not installed (.ci/run installs Debian's dcmtk)")
    full_env = dict(os.environ, TCP_NODELAY="1", **(env or {}))
    return subprocess.run([path, *args], capture_output=True, text=True, errors="replace", timeout=timeout,
                          env=full_env)


def sample(name: str) -> str:
    """Path of one of pydicom's test files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = get_testdata_file(name)
    assert p, name
    return p
