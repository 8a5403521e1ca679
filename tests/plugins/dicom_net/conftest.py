"""Fixtures of the dicom_net tests: a pacsbox DICOM node on free loopback ports, dcmtk's
tools, a real Orthanc started with its own configuration, and scriptable pynetdicom SCPs.

Every server listens on 127.0.0.1 only and is stopped at teardown, by its own handle.
"""
from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

import pacsbox_dicom_net.plugin as dicom_net_plugin
from pacsbox.testing import LiveServer, free_port

#: dcmtk's tools (Debian's ``dcmtk``); pynetdicom installs scripts of the same names, so the
#: tests name Debian's binaries by path.
DCMTK_DIR = "/usr/bin"


def dcmtk(tool: str) -> str:
    """Path of a dcmtk tool (``echoscu``, ``storescu``...); fails the test when missing."""
    path = os.path.join(DCMTK_DIR, tool)
    if not os.path.exists(path):
        pytest.fail(f"dcmtk's {tool} is not installed (.ci/run installs Debian's dcmtk)")
    return path


def run_dcmtk(tool: str, *args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a dcmtk tool with TCP_NODELAY=1 and return its completed process (text output)."""
    full_env = dict(os.environ, TCP_NODELAY="1", **(env or {}))
    return subprocess.run([dcmtk(tool), *args], capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture
def dcmtk_tools():
    """``(dcmtk, run_dcmtk)``: the two helpers above, as a fixture, for test modules that
    cannot ``from conftest import`` them (the name ``conftest`` is taken by
    ``tests/conftest.py`` when the whole suite is collected)."""
    return dcmtk, run_dcmtk


@dataclass
class Node:
    """A pacsbox app with the dicom_net plugin, served on loopback.

    Attributes
    ----------
    server : LiveServer
        ``.url`` is the REST base URL, ``.app`` the app.
    dicom_port : int
    aet : str
    """

    server: LiveServer
    dicom_port: int
    aet: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def app(self) -> Any:
        return self.server.app

    @property
    def ctx(self) -> Any:
        return self.server.app.ctx


@pytest.fixture
def node(live_server) -> Callable[..., Node]:
    """Factory: ``node(config=None, plugins=())`` → :class:`Node` (dicom_net loaded, SCP
    on a free port, AET ``PACSBOX`` unless configured)."""

    def factory(config: dict | None = None, plugins=()) -> Node:
        cfg = {"DicomPort": free_port(), "DicomAet": "PACSBOX"}
        cfg.update(config or {})
        server = live_server(cfg, plugins=[dicom_net_plugin, *plugins])
        return Node(server, cfg["DicomPort"], cfg["DicomAet"])

    return factory


from orthanc_helpers import ORTHANC, start_orthanc, stop_orthanc  # noqa: E402


@dataclass
class OrthancProcess:
    """A real Orthanc (Debian's 1.10.1) started by a test."""

    url: str
    dicom_port: int
    aet: str
    proc: subprocess.Popen
    folder: str


@pytest.fixture
def orthanc(tmp_path) -> Callable[..., OrthancProcess]:
    """Factory: ``orthanc(config=None)`` → a real Orthanc on free loopback ports (HTTP and
    DICOM), AET ``ORTHANCREF`` unless configured, with ``TCP_NODELAY=1``; stopped at
    teardown."""
    procs: list[tuple[subprocess.Popen, Any]] = []

    def factory(config: dict | None = None) -> OrthancProcess:
        if ORTHANC is None:
            pytest.fail("Debian's orthanc is not installed (.ci/run installs it)")
        d = tmp_path / f"orthanc{len(procs)}"
        d.mkdir()
        port, dport = free_port(), free_port()
        cfg = {"Name": "Ref", "StorageDirectory": str(d / "db"), "IndexDirectory": str(d / "db"), "HttpPort": port,
               "DicomPort": dport, "DicomAet": "ORTHANCREF", "RemoteAccessAllowed": False,
               "AuthenticationEnabled": False, "StableAge": 60, "WebDavEnabled": False,
               "DicomScuTimeout": 5}
        cfg.update(config or {})
        proc, log, url = start_orthanc(d, cfg, env=dict(os.environ, TCP_NODELAY="1"))
        procs.append((proc, log))
        return OrthancProcess(url, dport, cfg["DicomAet"], proc, str(d))

    yield factory
    for proc, log in procs:
        stop_orthanc(proc, log)


@dataclass
class StorageSCP:
    """A pynetdicom storage SCP on loopback whose answers a test scripts.

    Attributes
    ----------
    port : int
    aet : str
    received : list of (pydicom.Dataset, dict)
        Each stored data set with ``{"calling_aet", "move_originator_aet",
        "move_originator_id", "transfer_syntax", "raw"}`` (``raw`` the data set bytes
        as received).
    status : callable
        ``status(dataset) -> int``: the C-STORE status to answer (default ``0x0000``).
    silent : bool
        When true, C-STORE requests are never answered (the handler waits until the
        server stops).
    """

    port: int
    aet: str
    received: list = field(default_factory=list)
    status: Callable[[Any], int] = lambda ds: 0x0000
    silent: bool = False
    server: Any = None
    stop_event: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def storage_scp() -> Callable[..., StorageSCP]:
    """Factory: ``storage_scp(aet="STORESCP", transfer_syntaxes=None, contexts=None)`` →
    a running :class:`StorageSCP` (all storage SOP classes, the given transfer syntaxes or
    pynetdicom's defaults), stopped at teardown."""
    scps: list[StorageSCP] = []

    def factory(aet: str = "STORESCP", transfer_syntaxes: list[str] | None = None,
                contexts: list | None = None) -> StorageSCP:
        scp = StorageSCP(free_port(), aet)

        def on_store(event):
            if scp.silent:
                scp.stop_event.wait(60)
                return 0xC000
            ds = event.dataset
            ds.file_meta = event.file_meta
            req = event.request
            scp.received.append((ds, {
                "calling_aet": event.assoc.requestor.ae_title,
                "move_originator_aet": req.MoveOriginatorApplicationEntityTitle,
                "move_originator_id": req.MoveOriginatorMessageID,
                "transfer_syntax": str(event.context.transfer_syntax),
                "raw": event.request.DataSet.getvalue(),
            }))
            return scp.status(ds)

        ae = AE(ae_title=aet)
        if contexts is not None:
            for cx in contexts:
                ae.add_supported_context(*cx)
        else:
            for cx in AllStoragePresentationContexts:
                if transfer_syntaxes:
                    ae.add_supported_context(cx.abstract_syntax, transfer_syntaxes)
                else:
                    ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax)
        ae.add_supported_context(Verification)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 30
        scp.server = ae.start_server(("127.0.0.1", scp.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        scps.append(scp)
        return scp

    yield factory
    for scp in scps:
        scp.stop_event.set()
        scp.server.shutdown()


# ---- the root conftest's helpers under this module's name ---------------------------------
# tests/ holds no packages, so pytest imports this file as the module ``conftest`` too; from
# then on ``from conftest import read`` in a test module collected after this directory
# (tests/rest, tests/reliability...) would find this module. It therefore exposes the root
# conftest's plain helpers as well (loaded from that file under a private name: its fixtures
# and hooks stay registered once, by pytest, from the root conftest).
def _root_helpers() -> None:
    import importlib.util
    import sys
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "conftest.py")
    name = "_pacsbox_tests_root_conftest"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    for helper in ("read", "testfile", "pydicom_test_files", "pydicom_data_files"):
        globals().setdefault(helper, getattr(module, helper))


_root_helpers()
