"""retrieve_scp.py: the C-MOVE and C-GET handlers, bound to a pynetdicom SCP the way
scp.py binds them, driven by dcmtk's movescu/getscu and by pynetdicom SCUs."""
from __future__ import annotations

import os
import socket
import subprocess
import time

import pydicom
import pytest
import requests
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (MRImageStorage, PatientRootQueryRetrieveInformationModelGet,
                                  PatientRootQueryRetrieveInformationModelMove,
                                  StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove)

from pacsbox import hookimpl, read_file_meta
from pacsbox.testing import free_port

from pacsbox_dicom_net import retrieve_scp

CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")
JPEG = get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")
CT_DS = pydicom.dcmread(CT, stop_before_pixels=True)


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def retrieve_node(node):
    """Factory: a pacsbox node holding CT, MR and JPEG, plus a pynetdicom SCP bound to
    handle_move/handle_get with the node's ctx; returns (node, scp_port)."""
    servers = []

    def factory(config=None, plugins=()):
        n = node(config, plugins=plugins)
        for p in (CT, MR, JPEG):
            assert requests.post(n.url + "/instances", data=_bytes(p)).status_code == 200
        ae = AE(ae_title="PACSBOX")
        for cx in (StudyRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelMove,
                   StudyRootQueryRetrieveInformationModelGet, PatientRootQueryRetrieveInformationModelGet):
            ae.add_supported_context(cx)
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, scp_role=True, scu_role=True)
        port = free_port()
        server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[
            (evt.EVT_C_MOVE, retrieve_scp.handle_move, [n.ctx]), (evt.EVT_C_GET, retrieve_scp.handle_get, [n.ctx])])
        servers.append(server)
        return n, port

    yield factory
    for s in servers:
        s.shutdown()


def _storescp(dcmtk, out, port, aet="DEST"):
    proc = subprocess.Popen([dcmtk("storescp"), "+xa", "+B", "-aet", aet, "--output-directory", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, TCP_NODELAY="1"))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc


def _received(out):
    got = {}
    for f in os.listdir(out):
        data = (out / f).read_bytes()
        m = read_file_meta(data)
        got[pydicom.dcmread(out / f, stop_before_pixels=True).SOPInstanceUID] = (m.transfer_syntax,
                                                                                  data[m.dataset_offset:])
    return got


def _move(run_dcmtk, port, dest, *keys, model="-S"):
    args = [model, "-v", "-aet", "MOVER", "-aec", "PACSBOX", "-aem", dest]
    for k in keys:
        args += ["-k", k]
    return run_dcmtk("movescu", *args, "127.0.0.1", str(port), timeout=60)


def test_cmove_to_dcmtk_storescp_sends_stored_bytes(retrieve_node, tmp_path, dcmtk_tools):
    dcmtk, run_dcmtk = dcmtk_tools
    dport = free_port()
    n, port = retrieve_node({"DicomModalities": {"dest": ["DEST", "127.0.0.1", dport]}})
    out = tmp_path / "out"
    out.mkdir()
    proc = _storescp(dcmtk, out, dport)
    try:
        r = _move(run_dcmtk, port, "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={CT_DS.StudyInstanceUID}")
        # the whole patient (PATIENT level, patient root)
        r2 = _move(run_dcmtk, port, "DEST", "QueryRetrieveLevel=PATIENT", f"PatientID={CT_DS.PatientID}", model="-P")
    finally:
        proc.terminate()
        proc.wait(10)
    assert "Received Final Move Response (Success)" in r.stderr + r.stdout, r.stderr
    assert "Received Final Move Response (Success)" in r2.stderr + r2.stdout, r2.stderr
    got = _received(out)
    data = _bytes(CT)
    m = read_file_meta(data)
    assert got[CT_DS.SOPInstanceUID] == (m.transfer_syntax, data[m.dataset_offset:])


def test_cmove_unknown_destination_is_c000_without_suboperations(retrieve_node, dcmtk_tools):
    run_dcmtk = dcmtk_tools[1]
    n, port = retrieve_node()
    r = _move(run_dcmtk, port, "NOTKNOWN", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={CT_DS.StudyInstanceUID}")
    out = r.stderr + r.stdout
    assert "Received Final Move Response (Failed: UnableToProcess)" in out or "0xc000" in out.lower(), out


def _pynetdicom_move(port, dest, identifier, aet="MOVER"):
    ae = AE(ae_title=aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSBOX")
    assert assoc.is_established
    responses = [(st, ds) for st, ds in assoc.send_c_move(identifier, dest, StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    return responses


def _study_identifier(uid=CT_DS.StudyInstanceUID):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


def test_cmove_originator_counts_and_statuses(retrieve_node, storage_scp):
    scp = storage_scp("DEST2")
    n, port = retrieve_node({"DicomModalities": {"d2": ["DEST2", "127.0.0.1", scp.port]}})
    rsps = _pynetdicom_move(port, "DEST2", _study_identifier())
    final, ident = rsps[-1]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 1
    assert final.NumberOfFailedSuboperations == 0 and final.NumberOfWarningSuboperations == 0
    assert len(rsps) == 1  # a single sub-operation: no Pending response before the final one
    ds, info = scp.received[0]
    assert info["move_originator_aet"] == "MOVER" and info["move_originator_id"] == 1
    assert info["calling_aet"] == "PACSBOX"
    # a failure: counted, never a silent success
    scp.status = lambda ds: 0xA700
    final, ident = _pynetdicom_move(port, "DEST2", _study_identifier())[-1]
    assert final.Status == 0xC000 and final.NumberOfFailedSuboperations == 1
    assert list(ident.FailedSOPInstanceUIDList) == [CT_DS.SOPInstanceUID] or \
        ident.FailedSOPInstanceUIDList == CT_DS.SOPInstanceUID
    # a warning counts as sent, and the final status says so
    scp.status = lambda ds: 0xB000
    final, _ = _pynetdicom_move(port, "DEST2", _study_identifier())[-1]
    assert final.Status == 0xB000 and final.NumberOfWarningSuboperations == 1
    # several instances, a slow destination: Pending responses with counts (at most
    # one per PENDING_INTERVAL), then the final one
    def slow(ds):
        time.sleep(retrieve_scp.PENDING_INTERVAL * 1.5)
        return 0x0000

    scp.status = slow
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    studies = [pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in (CT, MR, JPEG)]
    ident.StudyInstanceUID = studies
    rsps = _pynetdicom_move(port, "DEST2", ident)
    assert [r[0].Status for r in rsps] == [0xFF00, 0xFF00, 0x0000]
    assert [r[0].NumberOfRemainingSuboperations for r in rsps[:2]] == [2, 1]
    assert [r[0].NumberOfCompletedSuboperations for r in rsps] == [1, 2, 3]
    # a fast one: fewer Pending responses, the same final
    scp.status = lambda ds: 0x0000
    rsps = _pynetdicom_move(port, "DEST2", ident)
    assert rsps[-1][0].Status == 0x0000 and rsps[-1][0].NumberOfCompletedSuboperations == 3
    assert all(r[0].Status == 0xFF00 for r in rsps[:-1])


def test_cmove_destination_unreachable_counts_all_failed(retrieve_node):
    dead = free_port()
    n, port = retrieve_node({"DicomModalities": {"dead": ["DEAD", "127.0.0.1", dead]}})
    final, ident = _pynetdicom_move(port, "DEAD", _study_identifier())[-1]
    assert final.Status == 0xC000 and final.NumberOfFailedSuboperations == 1


def test_cmove_destination_from_hook(retrieve_node, storage_scp):
    scp = storage_scp("HOOKED")

    class P:
        @hookimpl(optionalhook=True)
        def move_destination(self, aet):
            return ("127.0.0.1", scp.port) if aet == "HOOKED" else None

    n, port = retrieve_node(plugins=[P()])
    final, _ = _pynetdicom_move(port, "HOOKED", _study_identifier())[-1]
    assert final.Status == 0x0000 and len(scp.received) == 1


def test_cget_with_dcmtk_getscu(retrieve_node, tmp_path, dcmtk_tools):
    run_dcmtk = dcmtk_tools[1]
    n, port = retrieve_node()
    out = tmp_path / "get"
    out.mkdir()
    r = run_dcmtk("getscu", "-S", "-v", "-aec", "PACSBOX", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={CT_DS.StudyInstanceUID}", "127.0.0.1", str(port))
    assert r.returncode == 0, r.stderr
    files = os.listdir(out)
    assert len(files) == 1
    got = pydicom.dcmread(out / files[0])
    assert got.SOPInstanceUID == CT_DS.SOPInstanceUID
    assert got.PixelData == pydicom.dcmread(CT).PixelData


def test_cget_without_storage_context_counts_failed(retrieve_node):
    n, port = retrieve_node()
    ae = AE(ae_title="GETTER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(MRImageStorage)  # offers MR only, and asks for a CT study
    received = []

    def on_store(event):
        received.append(event.dataset)
        return 0x0000

    assoc = ae.associate("127.0.0.1", port, ae_title="PACSBOX", ext_neg=[build_role(MRImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    rsps = list(assoc.send_c_get(_study_identifier(), StudyRootQueryRetrieveInformationModelGet))
    mr_uid = pydicom.dcmread(MR, stop_before_pixels=True)
    rsps_mr = list(assoc.send_c_get(_study_identifier(mr_uid.StudyInstanceUID),
                                    StudyRootQueryRetrieveInformationModelGet))
    assoc.release()
    final = rsps[-1][0]
    assert final.Status == 0xC000 and final.NumberOfFailedSuboperations == 1
    assert rsps_mr[-1][0].Status == 0x0000 and rsps_mr[-1][0].NumberOfCompletedSuboperations == 1
    assert len(received) == 1 and received[0].SOPInstanceUID == mr_uid.SOPInstanceUID
