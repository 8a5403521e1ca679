"""Helpers of the Lua tests: Debian's Orthanc 1.10.1 and a pacsbox (dicom_net and lua plugins)
side by side with the same options, and a pynetdicom Q/R SCP recording what it receives."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pacsbox_dicom_net.plugin as dicom_net_plugin
import pacsbox_lua.plugin as lua_plugin
from orthanc_helpers import start_orthanc, stop_orthanc
from pacsbox.testing import free_port


@contextmanager
def side_by_side(d: Path, common: dict, orthanc_only: dict | None = None) -> Iterator[tuple[str, int, str, int]]:
    """Start Orthanc (files in ``d``, ``common`` plus ``orthanc_only``) and pacsbox (``common``)
    on free loopback ports; yields ``(orthanc_url, orthanc_dicom_port, pacsbox_url,
    pacsbox_dicom_port)`` and stops both on exit (each by its own handle)."""
    from pacsbox import create_app
    from pacsbox.testing import LiveServer
    port, dport = free_port(), free_port()
    cfg = dict(common, Name="Ref", StorageDirectory=str(d / "db"), IndexDirectory=str(d / "db"), HttpPort=port,
               DicomPort=dport, **(orthanc_only or {}))
    proc, log, ref = start_orthanc(d, cfg, env=dict(os.environ, TCP_NODELAY="1"))
    try:
        pport, pdport = free_port(), free_port()
        app = create_app(dict(common, HttpPort=pport, DicomPort=pdport, StorageDirectory=str(d / "pacsbox")),
                         plugins=[dicom_net_plugin, lua_plugin], load_entrypoints=False)
        server = LiveServer(app, pport)
        try:
            yield ref, dport, server.url, pdport
        finally:
            server.close()
            app.close()
    finally:
        stop_orthanc(proc, log)


def start_recorder(aet: str = "REMOTE") -> tuple[int, list, Callable[[], None]]:
    """A pynetdicom Patient/Study Root FIND SCP on a free loopback port that answers nothing
    and keeps each identifier it receives as ``(tag, VR, value)`` triples, sorted.

    Returns
    -------
    (int, list, callable)
        Its port, the received identifiers, and a function that stops it.
    """
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelFind,
                                      StudyRootQueryRetrieveInformationModelFind)
    received: list = []

    def on_find(event):
        received.append(sorted((str(e.tag), e.VR, str(e.value)) for e in event.identifier))
        yield 0x0000, None

    ae = AE(aet)
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    return port, received, server.shutdown
