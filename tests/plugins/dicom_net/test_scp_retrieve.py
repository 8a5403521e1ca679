"""C-MOVE and C-GET through the running SCP (scp.py binds retrieve_scp's handlers after
its own permission checks): movescu/getscu and pynetdicom SCUs on loopback."""
from __future__ import annotations

import requests
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (CTImageStorage, PatientRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove)

from pacsbox.testing import inline_plugin

from scp_helpers import run_dcmtk, sample


def upload(node, name):
    r = requests.post(node.url + "/instances", data=open(sample(name), "rb").read(), timeout=10)
    assert r.status_code == 200
    return r.json()


def study_query(uid):
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = uid
    return q


CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


def test_hook_move_destination(node, storage_scp):
    """A C-MOVE to an AET no modality has goes where the hook says."""
    dest = storage_scp(aet="HOOKDEST")
    asked = []

    def where(aet):
        asked.append(aet)
        return ("127.0.0.1", dest.port) if aet == "HOOKDEST" else None

    n = node({"DicomAlwaysAllowMove": True},
             plugins=[inline_plugin("movehook", move_destination=(where, {"optionalhook": True}))])
    upload(n, "CT_small.dcm")
    r = run_dcmtk("movescu", "-v", "-S", "-aec", "PACSBOX", "-aem", "HOOKDEST", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={CT_STUDY}", "127.0.0.1", str(n.dicom_port))
    assert r.returncode == 0, r.stderr
    assert asked == ["HOOKDEST"]
    assert len(dest.received) == 1
    ds, info = dest.received[0]
    assert ds.StudyInstanceUID == CT_STUDY
    assert info["move_originator_aet"] == "MOVESCU"
    # an AET the hook does not know: 0xC000 with no sub-operation
    r = run_dcmtk("movescu", "-v", "-S", "-aec", "PACSBOX", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={CT_STUDY}", "127.0.0.1", str(n.dicom_port))
    assert "Failed: UnableToProcess" in r.stderr or "0xc000" in r.stderr.lower()
    assert len(dest.received) == 1


def test_move_to_a_configured_modality(node, storage_scp):
    dest = storage_scp(aet="DEST")
    n = node({"DicomAlwaysAllowMove": True, "DicomModalities": {"dest": ["DEST", "127.0.0.1", dest.port]}})
    upload(n, "CT_small.dcm")
    ae = AE(ae_title="MOVER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", n.dicom_port, ae_title="PACSBOX")
    assert assoc.is_established
    statuses = [s.Status for s, _ in assoc.send_c_move(study_query(CT_STUDY), "DEST",
                                                       StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    assert statuses[-1] == 0x0000
    assert len(dest.received) == 1


def test_refused_move_and_get_are_0124_not_aborts(node, storage_scp):
    dest = storage_scp(aet="DEST")
    n = node({"DicomModalities": {"dest": ["DEST", "127.0.0.1", dest.port]}})  # Move/Get not always allowed
    upload(n, "CT_small.dcm")
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    role = build_role(CTImageStorage, scp_role=True)
    assoc = ae.associate("127.0.0.1", n.dicom_port, ae_title="PACSBOX", ext_neg=[role])
    assert assoc.is_established
    move = [s.Status for s, _ in assoc.send_c_move(study_query(CT_STUDY), "DEST",
                                                   StudyRootQueryRetrieveInformationModelMove)]
    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"
    q.PatientID = "1CT1"
    get = [s.Status for s, _ in assoc.send_c_get(q, PatientRootQueryRetrieveInformationModelGet)]
    assert assoc.is_established
    assoc.release()
    assert move == [0x0124] and get == [0x0124]
    assert dest.received == []


def test_get_with_getscu(node, tmp_path):
    n = node({"DicomAlwaysAllowGet": True})
    upload(n, "CT_small.dcm")
    out = tmp_path / "got"
    out.mkdir()
    r = run_dcmtk("getscu", "-v", "-P", "-aec", "PACSBOX", "-od", str(out), "-k", "QueryRetrieveLevel=PATIENT",
                  "-k", "PatientID=1CT1", "127.0.0.1", str(n.dicom_port))
    assert r.returncode == 0, r.stderr
    assert [p.name for p in out.iterdir()] == ["CT.1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"]
