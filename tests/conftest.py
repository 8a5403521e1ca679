"""Shared fixtures: apps built with explicit plugin lists, a falcon test client, a real
waitress server on a free loopback port, and real DICOM files (pydicom's test files and
the pydicom-data package)."""
from __future__ import annotations

import glob
import os
import socket
import threading
import warnings

import falcon.testing
import pytest

warnings.filterwarnings("ignore", module="pydicom")

from pacsbox import create_app  # noqa: E402


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def make_app(tmp_path):
    """Factory: ``make_app(config=None, plugins=(), load_entrypoints=False)`` → app (closed at teardown)."""
    apps = []

    def factory(config=None, plugins=(), load_entrypoints=False, **kw):
        cfg = {"StorageDirectory": str(tmp_path / f"data{len(apps)}"), "StableAge": 60}
        cfg.update(config or {})
        app = create_app(cfg, plugins=list(plugins), load_entrypoints=load_entrypoints, **kw)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app):
    """An app with the core plugins only."""
    return make_app()


@pytest.fixture
def client(app):
    """falcon TestClient of :func:`app`."""
    return falcon.testing.TestClient(app)


from pacsbox.testing import LiveServer  # noqa: E402  (the helper shipped to plugin authors)

#: The reference server (Debian's Orthanc 1.10.1), or None; tests import it from here.
from orthanc_helpers import ORTHANC, reference_orthanc  # noqa: E402,F401


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """URL of a scratch reference Orthanc on free loopback ports (one per test module)."""
    with reference_orthanc(tmp_path_factory.mktemp("orthanc-ref")) as url:
        yield url


@pytest.fixture
def live_server(make_app):
    """Factory: ``live_server(config=None, plugins=())`` → :class:`LiveServer`."""
    servers = []

    def factory(config=None, plugins=(), **kw):
        port = free_port()
        cfg = {"HttpPort": port}
        cfg.update(config or {})
        s = LiveServer(make_app(cfg, plugins=plugins, **kw), port)
        servers.append(s)
        return s

    yield factory
    for s in servers:
        s.close()


def pydicom_test_files() -> list[str]:
    """Paths of pydicom's bundled test files (``*.dcm``)."""
    from pydicom.data import get_testdata_files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sorted(get_testdata_files("*.dcm"))


def pydicom_data_files() -> list[str]:
    """Paths of every file of the pydicom-data package."""
    import data_store
    return sorted(glob.glob(os.path.join(os.path.dirname(data_store.__file__), "data", "*.dcm")))


def testfile(name: str) -> str:
    """Path of one pydicom test file by name (bundled or pydicom-data)."""
    from pydicom.data import get_testdata_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = get_testdata_file(name)
    if p is None:
        raise FileNotFoundError(name)
    return p


def read(name: str) -> bytes:
    """Bytes of one pydicom test file."""
    with open(testfile(name), "rb") as f:
        return f.read()


# ---- the example plugin is pip-installed by some tests: leave the environment as found ----

def _example_plugin_installed() -> bool:
    from importlib import metadata
    try:
        metadata.distribution("pacsbox-example-plugin")
        return True
    except metadata.PackageNotFoundError:
        return False


def pytest_sessionstart(session):
    session.config._example_plugin_was_installed = _example_plugin_installed()


def pytest_sessionfinish(session, exitstatus):
    """Uninstall the example plugin if the test run installed it (else every later
    ``pacsbox serve`` in this environment would load it)."""
    import subprocess
    import sys
    if not getattr(session.config, "_example_plugin_was_installed", True) and _example_plugin_installed():
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", "pacsbox-example-plugin"],
                       capture_output=True, timeout=300)
