"""C-MOVE served side by side by pacsbox and Orthanc 1.10.1 to the same destination:
same final statuses and counts, same Move Originator in the sub-operations."""
from __future__ import annotations

import pydicom
import requests
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelMove,
                                  StudyRootQueryRetrieveInformationModelMove)

FILES = [get_testdata_file(n) for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")]


def _move(port, aet, identifier, dest, model=StudyRootQueryRetrieveInformationModelMove):
    ae = AE("MOVER")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established
    try:
        rsps = list(assoc.send_c_move(identifier, dest, model))
    finally:
        assoc.release()
    final = rsps[-1][0]
    return (final.Status, final.get("NumberOfCompletedSuboperations"), final.get("NumberOfFailedSuboperations"),
            final.get("NumberOfWarningSuboperations"))


def test_cmove_answers_as_orthanc(node, orthanc, storage_scp):
    scp = storage_scp("DEST")
    cfg = {"DicomAet": "REFAET", "DicomAlwaysAllowMove": True,
           "DicomModalities": {"dest": ["DEST", "127.0.0.1", scp.port]}}
    ref, ours = orthanc(cfg), node(cfg)
    for url in (ref.url, ours.url):
        for f in FILES:
            assert requests.post(url + "/instances", data=open(f, "rb").read()).status_code == 200
    dss = [pydicom.dcmread(f, stop_before_pixels=True) for f in FILES]

    def ident(level, **keys):
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        for k, v in keys.items():
            setattr(ds, k, v)
        return ds

    cases = [
        (ident("STUDY", StudyInstanceUID=dss[0].StudyInstanceUID), "DEST", StudyRootQueryRetrieveInformationModelMove),
        (ident("SERIES", SeriesInstanceUID=dss[1].SeriesInstanceUID), "DEST",
         StudyRootQueryRetrieveInformationModelMove),
        (ident("IMAGE", SOPInstanceUID=dss[2].SOPInstanceUID), "DEST", StudyRootQueryRetrieveInformationModelMove),
        (ident("STUDY", StudyInstanceUID=[d.StudyInstanceUID for d in dss]), "DEST",
         StudyRootQueryRetrieveInformationModelMove),
        (ident("PATIENT", PatientID=dss[0].PatientID), "DEST", PatientRootQueryRetrieveInformationModelMove),
        (ident("STUDY", StudyInstanceUID="1.2.3.4"), "DEST", StudyRootQueryRetrieveInformationModelMove),
        (ident("STUDY", StudyInstanceUID=dss[0].StudyInstanceUID), "NOTKNOWN",
         StudyRootQueryRetrieveInformationModelMove),
    ]
    for identifier, dest, model in cases:
        scp.received.clear()
        a = _move(ref.dicom_port, ref.aet if hasattr(ref, "aet") else "REFAET", identifier, dest, model)
        got_ref = sorted((ds.SOPInstanceUID, m["move_originator_aet"], m["move_originator_id"], m["calling_aet"])
                         for ds, m in scp.received)
        scp.received.clear()
        b = _move(ours.dicom_port, ours.aet, identifier, dest, model)
        got_ours = sorted((ds.SOPInstanceUID, m["move_originator_aet"], m["move_originator_id"], m["calling_aet"])
                          for ds, m in scp.received)
        assert a == b, (identifier, dest)
        assert got_ref == got_ours, (identifier, dest)


def _get(port, aet, identifier, storage, syntaxes):
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET
    received = []

    def on_store(event):
        received.append((event.dataset.SOPInstanceUID, str(event.context.transfer_syntax)))
        return 0x0000

    ae = AE("GETTER")
    ae.add_requested_context(GET)
    for cls in storage:
        ae.add_requested_context(cls, syntaxes)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, ext_neg=[build_role(c, scp_role=True) for c in storage],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        rsps = list(assoc.send_c_get(identifier, GET))
    finally:
        assoc.release()
    final = rsps[-1][0]
    return ((final.Status, final.get("NumberOfCompletedSuboperations"), final.get("NumberOfFailedSuboperations")),
            sorted(received))


def test_cget_answers_as_orthanc(node, orthanc):
    from pynetdicom.sop_class import CTImageStorage, MRImageStorage
    cfg = {"DicomAet": "REFAET", "DicomAlwaysAllowGet": True}
    ref, ours = orthanc(cfg), node(cfg)
    for url in (ref.url, ours.url):
        for f in FILES:
            assert requests.post(url + "/instances", data=open(f, "rb").read()).status_code == 200
    dss = [pydicom.dcmread(f, stop_before_pixels=True) for f in FILES]
    study = Dataset()
    study.QueryRetrieveLevel = "STUDY"
    study.StudyInstanceUID = dss[0].StudyInstanceUID
    nothing = Dataset()
    nothing.QueryRetrieveLevel = "STUDY"
    nothing.StudyInstanceUID = "1.2.3.4"
    implicit, explicit = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
    cases = [(study, [CTImageStorage], [explicit, implicit]),
             (study, [CTImageStorage], [implicit]),  # stored Explicit VR: converted
             (nothing, [CTImageStorage], [explicit])]
    for identifier, storage, syntaxes in cases:
        a = _get(ref.dicom_port, "REFAET", identifier, storage, syntaxes)
        b = _get(ours.dicom_port, ours.aet, identifier, storage, syntaxes)
        assert a == b, (identifier, syntaxes)
    # no storage context for the class: that instance fails, 0xC000 with the count
    a = _get(ref.dicom_port, "REFAET", study, [MRImageStorage], [explicit])
    b = _get(ours.dicom_port, ours.aet, study, [MRImageStorage], [explicit])
    assert a == b == ((0xC000, 0, 1), [])
