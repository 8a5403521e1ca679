"""Helpers of the query/retrieve SCU tests: a scripted pynetdicom Q/R SCP that records
what it receives, dcmqrscp with a small database, and synthetic studies."""
from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pydicom
import requests
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (ModalityWorklistInformationFind, PatientRootQueryRetrieveInformationModelFind,
                                  PatientRootQueryRetrieveInformationModelGet,
                                  PatientRootQueryRetrieveInformationModelMove,
                                  StudyRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove)

from orthanc_helpers import stop_process  # noqa: F401  (the tests import it from here)
from pacsbox.testing import free_port


def make_instances(n: int, patient_id: str = "QRP1", series: int = 2, study_uid: str | None = None,
                   rows: int = 8) -> list[bytes]:
    """``n`` small CT Part-10 files of one new study (explicit VR little endian)."""
    study_uid = study_uid or generate_uid()
    series_uids = [generate_uid() for _ in range(series)]
    out = []
    for i in range(n):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.PatientID = patient_id
        ds.PatientName = f"QR^{patient_id}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = "20240102"
        ds.StudyTime = "101010"
        ds.AccessionNumber = f"ACC{patient_id}"
        ds.StudyID = "1"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "QR study"
        ds.SeriesInstanceUID = series_uids[i % series]
        ds.SeriesNumber = i % series + 1
        ds.Modality = "CT"
        ds.InstanceNumber = i // series + 1
        ds.Rows = ds.Columns = rows
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(rows * rows * 2)
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def elements(ds: Dataset) -> list[tuple[str, str, str]]:
    """``(tag, VR, value)`` of a received identifier, for comparisons."""
    out = []
    for e in ds:
        v = e.value
        out.append((f"{e.tag.group:04X},{e.tag.element:04X}", e.VR, "" if v is None else str(v)))
    return out


@dataclass
class ScriptedQR:
    """A pynetdicom Q/R SCP (FIND, MOVE, GET, worklist) whose answers a test scripts.

    Attributes
    ----------
    port : int
    aet : str
    log : list
        ``("FIND", model UID, elements)``, ``("MOVE", destination, elements)``, ``("GET", elements)``.
    find_answers : callable
        ``find_answers(identifier) -> list of Dataset``.
    move : callable
        ``move(event)``: a generator in pynetdicom's C-MOVE handler protocol (default: the
        destination is unknown).
    get : callable
        ``get(event)``: a generator in pynetdicom's C-GET handler protocol.
    hang : threading.Event
        Set: every request waits until ``release`` is set (a silent remote).
    """

    port: int
    aet: str
    log: list = field(default_factory=list)
    find_answers: Callable[[Dataset], list] = lambda ds: []
    move: Callable[[Any], Any] | None = None
    get: Callable[[Any], Any] | None = None
    hang: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    server: Any = None
    callers: list = field(default_factory=list)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


def start_scripted_qr(aet: str = "REMOTE") -> ScriptedQR:
    """Start a :class:`ScriptedQR` on a free loopback port."""
    qr = ScriptedQR(free_port(), aet)

    def wait_if_silent():
        if qr.hang.is_set():
            qr.release.wait(120)

    def on_find(event):
        qr.callers.append(("FIND", event.assoc.requestor.ae_title))
        qr.log.append(("FIND", str(event.context.abstract_syntax), elements(event.identifier)))
        wait_if_silent()
        for a in qr.find_answers(event.identifier):
            if isinstance(a, int):      # a scripted final status
                yield a, None
                return
            yield 0xFF00, a

    def on_move(event):
        qr.callers.append(("MOVE", event.assoc.requestor.ae_title))
        qr.log.append(("MOVE", event.move_destination, elements(event.identifier)))
        wait_if_silent()
        if qr.move is None:
            yield None, None
            return
        yield from qr.move(event)

    def on_get(event):
        qr.callers.append(("GET", event.assoc.requestor.ae_title))
        qr.log.append(("GET", elements(event.identifier)))
        wait_if_silent()
        yield from qr.get(event)

    ae = AE(aet)
    for c in (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind,
              PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove,
              PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet,
              ModalityWorklistInformationFind):
        ae.add_supported_context(c)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")   # CT Image Storage, for C-MOVE sub-operations
    # and for C-GET sub-operations (the SCU proposes the SCP role for it)
    ae.add_supported_context("1.2.840.10008.5.1.4.1.1.2", scu_role=True, scp_role=True)
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 120
    ae.require_called_aet = True     # an association to another AET is rejected
    qr.server = ae.start_server(("127.0.0.1", qr.port), block=False,
                                evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_MOVE, on_move),
                                              (evt.EVT_C_GET, on_get)])
    return qr


def canned_answers(n: int = 2) -> Callable[[Dataset], list]:
    """``find_answers`` giving ``n`` answers at the identifier's level."""

    def answers(ident: Dataset) -> list:
        lvl = str(getattr(ident, "QueryRetrieveLevel", "") or "STUDY")
        out = []
        for i in range(n):
            a = Dataset()
            a.SpecificCharacterSet = "ISO_IR 100"
            a.QueryRetrieveLevel = lvl
            a.RetrieveAETitle = "REMOTE"
            a.PatientID = f"P{i}"
            a.PatientName = f"Doe^J{i}"
            a.StudyInstanceUID = f"1.2.3.{i}"
            a.AccessionNumber = f"ACC{i}"
            a.StudyDate = "20200101"
            if lvl in ("SERIES", "IMAGE"):
                a.SeriesInstanceUID = f"1.2.3.{i}.1"
                a.Modality = "CT"
            if lvl == "IMAGE":
                a.SOPInstanceUID = f"1.2.3.{i}.1.1"
            out.append(a)
        return out

    return answers


@dataclass
class QRSCP:
    """dcmtk's ``dcmqrscp`` serving one storage area (AET ``DCMQR``)."""

    port: int
    aet: str
    proc: subprocess.Popen
    folder: str


def start_dcmqrscp(folder: str, peers: dict[str, int], files: list[bytes] = (), aet: str = "DCMQR") -> QRSCP:
    """Start ``dcmqrscp`` on a free port with ``files`` in its database (``dcmqridx``).

    Parameters
    ----------
    folder : str
        Scratch folder (config, storage area, log).
    peers : dict of str to int
        AET -> port of the nodes it may move to (host 127.0.0.1).
    files : list of bytes
        Part-10 files indexed before the start.
    """
    from conftest import dcmtk
    db = os.path.join(folder, "db")
    os.makedirs(db, exist_ok=True)
    port = free_port()
    hosts = "\n".join(f"{name.lower()} = ({name}, 127.0.0.1, {p})" for name, p in peers.items())
    cfg = f"""NetworkTCPPort = {port}
MaxPDUSize = 16384
MaxAssociations = 16
HostTable BEGIN
{hosts}
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
{aet} {db} RW (2000, 1024mb) ANY
AETable END
"""
    cfg_path = os.path.join(folder, "dcmqrscp.cfg")
    with open(cfg_path, "w") as f:
        f.write(cfg)
    paths = []
    for i, data in enumerate(files):
        p = os.path.join(db, f"f{i:05d}.dcm")
        with open(p, "wb") as f:
            f.write(data)
        paths.append(p)
    for start in range(0, len(paths), 200):
        subprocess.run([dcmtk("dcmqridx"), db, *paths[start:start + 200]], check=True, capture_output=True)
    log = open(os.path.join(folder, "dcmqrscp.log"), "wb")
    proc = subprocess.Popen([dcmtk("dcmqrscp"), "-c", cfg_path, str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, TCP_NODELAY="1"))
    deadline = time.monotonic() + 20
    import socket
    while time.monotonic() < deadline:
        assert proc.poll() is None, open(os.path.join(folder, "dcmqrscp.log")).read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    return QRSCP(port, aet, proc, folder)


def wait_for(predicate: Callable[[], Any], timeout: float = 20, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


def job(url: str, job_id: str) -> dict:
    """``GET /jobs/{id}``."""
    return requests.get(f"{url}/jobs/{job_id}").json()
