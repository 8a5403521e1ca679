"""C-MOVE and C-GET through the node's own SCP (scp.py binds retrieve_scp's handlers):
dcmtk movescu/getscu and pynetdicom SCUs, synchronous and asynchronous moves."""
from __future__ import annotations

import time

import pydicom
import requests
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")
CT_DS = pydicom.dcmread(CT, stop_before_pixels=True)


def _node(node, storage_scp, **extra):
    scp = storage_scp("DEST")
    cfg = {"DicomAlwaysAllowMove": True, "DicomAlwaysAllowGet": True,
           "DicomModalities": {"dest": ["DEST", "127.0.0.1", scp.port]}}
    cfg.update(extra)
    n = node(cfg)
    for p in (CT, MR):
        assert requests.post(n.url + "/instances", data=open(p, "rb").read()).status_code == 200
    return n, scp


def _move(n, identifier, dest="DEST"):
    ae = AE("MOVER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", n.dicom_port, ae_title=n.aet)
    assert assoc.is_established
    try:
        return list(assoc.send_c_move(identifier, dest, StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()


def _study(uid=CT_DS.StudyInstanceUID, level="STUDY"):
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = uid
    return ds


def test_movescu_through_the_node(node, storage_scp, dcmtk_tools):
    n, scp = _node(node, storage_scp)
    run_dcmtk = dcmtk_tools[1]
    r = run_dcmtk("movescu", "-S", "-v", "-aet", "MOVER", "-aec", n.aet, "-aem", "DEST",
                  "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT_DS.StudyInstanceUID}",
                  "127.0.0.1", str(n.dicom_port))
    assert "Received Final Move Response (Success)" in r.stdout + r.stderr, r.stderr
    (ds, info), = scp.received
    assert ds.SOPInstanceUID == CT_DS.SOPInstanceUID
    assert (info["move_originator_aet"], info["calling_aet"]) == ("MOVER", n.aet)


def test_cmove_nothing_matches_or_bad_level_is_c000(node, storage_scp):
    n, scp = _node(node, storage_scp)
    final = _move(n, _study("1.2.3.4.5"))[-1][0]
    assert final.Status == 0xC000 and final.NumberOfCompletedSuboperations == 0
    ds = Dataset()
    ds.QueryRetrieveLevel = "PATIENT"  # no PATIENT level in the Study Root model
    ds.PatientID = CT_DS.PatientID
    assert _move(n, ds)[-1][0].Status == 0xC000
    assert scp.received == []


def test_asynchronous_cmove_runs_as_a_job(node, storage_scp):
    n, scp = _node(node, storage_scp, SynchronousCMove=False)
    final = _move(n, _study())[-1][0]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 1  # as Orthanc 1.10.1
    deadline = time.monotonic() + 60
    while not scp.received and time.monotonic() < deadline:
        time.sleep(0.02)
    (ds, info), = scp.received
    assert ds.SOPInstanceUID == CT_DS.SOPInstanceUID
    assert info["move_originator_aet"] == "MOVER" and info["move_originator_id"] == 1
    jobs = requests.get(n.url + "/jobs?expand").json()
    assert [j["Type"] for j in jobs] == ["DicomModalityStore"]
    assert jobs[0]["Content"]["RemoteAet"] == "DEST" and jobs[0]["Content"]["InstancesCount"] == 1


def test_getscu_through_the_node(node, storage_scp, dcmtk_tools, tmp_path):
    n, scp = _node(node, storage_scp)
    run_dcmtk = dcmtk_tools[1]
    out = tmp_path / "get"
    out.mkdir()
    r = run_dcmtk("getscu", "-S", "-aec", n.aet, "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={CT_DS.StudyInstanceUID}", "127.0.0.1", str(n.dicom_port))
    assert r.returncode == 0, r.stderr
    files = list(out.iterdir())
    assert len(files) == 1 and pydicom.dcmread(files[0]).SOPInstanceUID == CT_DS.SOPInstanceUID
