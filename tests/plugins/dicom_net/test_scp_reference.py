"""pacsbox's SCP side by side with a real Orthanc 1.10.1 (the ``orthanc`` fixture):

- Orthanc sends to pacsbox with ``/modalities/{x}/store`` and queries it with
  ``/modalities/{x}/query``;
- the same files are stored in both, the same ``findscu`` queries are run against both,
  and the answers must be equal, except (0008,0054) *Retrieve AE Title* (each server's
  own AET) and where noted.
"""
from __future__ import annotations

import glob
import io

import pydicom
import pytest
import requests

from scp_helpers import run_dcmtk, sample

FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "SC_rgb.dcm", "emri_small.dcm",
         "liver.dcm"]


@pytest.fixture
def pair(node, orthanc):
    """(pacsbox, Orthanc) knowing each other as modalities, the same files in both."""
    n = node({"DicomAlwaysAllowFind": True})
    ref = orthanc({"DicomAlwaysAllowFind": True, "DicomModalities": {"pacsbox": ["PACSBOX", "127.0.0.1",
                                                                                 n.dicom_port]}})
    ids = []
    for name in FILES:
        data = open(sample(name), "rb").read()
        r = requests.post(ref.url + "/instances", data=data, timeout=10)
        assert r.status_code == 200
        ids.append(r.json()["ID"])
    return n, ref, ids


def test_orthanc_stores_to_pacsbox_and_queries_it(pair):
    n, ref, ids = pair
    r = requests.post(ref.url + "/modalities/pacsbox/store", json={"Resources": ids, "Synchronous": True}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["FailedInstancesCount"] == 0
    assert sorted(requests.get(n.url + "/instances", timeout=10).json()) == sorted(ids)
    md = requests.get(f"{n.url}/instances/{ids[0]}/metadata?expand", timeout=10).json()
    assert (md["RemoteAET"], md["CalledAET"], md["Origin"]) == ("ORTHANCREF", "PACSBOX", "DicomProtocol")
    # what Orthanc sent is what pacsbox stored: its stored data set (DCMTK drops the
    # trailing padding and may write sequences with explicit lengths when sending), in the
    # same transfer syntax
    for i in ids:
        theirs = pydicom.dcmread(io.BytesIO(requests.get(f"{ref.url}/instances/{i}/file", timeout=10).content))
        ours = pydicom.dcmread(io.BytesIO(requests.get(f"{n.url}/instances/{i}/file", timeout=10).content))
        for ds in (theirs, ours):
            ds.pop(0xFFFCFFFC, None)
        assert ours == theirs, i
        assert ours.file_meta.TransferSyntaxUID == theirs.file_meta.TransferSyntaxUID

    r = requests.post(ref.url + "/modalities/pacsbox/query",
                      json={"Level": "Study", "Query": {"PatientName": "*", "ModalitiesInStudy": "",
                                                        "NumberOfStudyRelatedInstances": ""}}, timeout=30)
    assert r.status_code == 200, r.text
    answers = requests.get(ref.url + r.json()["Path"] + "/answers?expand&simplify", timeout=10).json()
    studies = requests.get(n.url + "/studies?expand", timeout=10).json()
    assert sorted(a["StudyInstanceUID"] for a in answers) == \
        sorted(s["MainDicomTags"]["StudyInstanceUID"] for s in studies)
    for a in answers:
        assert a["RetrieveAETitle"] == "PACSBOX" and a["QueryRetrieveLevel"] == "STUDY"
        assert int(a["NumberOfStudyRelatedInstances"]) >= 1


def _findscu(port, aet, tmp_path, tag, keys, root):
    out = tmp_path / f"{tag}{len(list(tmp_path.glob(tag + '*')))}"
    out.mkdir()
    args = ["-aec", aet, root, "-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    r = run_dcmtk("findscu", *args, "127.0.0.1", str(port))
    assert r.returncode == 0, r.stderr
    answers = []
    for p in sorted(glob.glob(str(out / "rsp*.dcm"))):
        ds = pydicom.dcmread(p)
        answers.append({(e.tag, e.VR): (str(e.value) if e.VR != "SQ" else
                                        [sorted((str(x.tag), str(x.value)) for x in item) for item in e.value])
                        for e in ds if e.tag != 0x00080054})
    return sorted(answers, key=repr)


QUERIES = [
    ("-P", ["QueryRetrieveLevel=PATIENT", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
            "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "PatientName=*", "PatientID", "StudyInstanceUID", "StudyDate",
            "StudyDescription", "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances", "SOPClassesInStudy"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "StudyDate=20000101-", "StudyInstanceUID", "ReferringPhysicianName"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "ModalitiesInStudy=MR", "StudyInstanceUID"]),
    ("-S", ["QueryRetrieveLevel=SERIES", "Modality=CT", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
            "NumberOfSeriesRelatedInstances", "StudyInstanceUID"]),
    ("-S", ["QueryRetrieveLevel=SERIES", "SeriesInstanceUID", "Modality", "BodyPartExamined"]),
    ("-S", ["QueryRetrieveLevel=IMAGE", "SOPInstanceUID", "InstanceNumber", "SOPClassUID", "Rows", "Columns"]),
    ("-S", ["QueryRetrieveLevel=IMAGE", "SOPInstanceUID", "PatientName=CompressedSamples*", "ImageType"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "(0008,1032)"]),   # a sequence key
    ("-S", ["QueryRetrieveLevel=IMAGE", "SOPInstanceUID", "(0043,0010)", "(0043,1001)"]),   # private keys
]


@pytest.mark.parametrize("root,keys", QUERIES, ids=[k[0] + ":" + ",".join(k[1][:2]) for k in QUERIES])
def test_same_findscu_answers_as_orthanc(pair, tmp_path, root, keys):
    n, ref, ids = pair
    for name in FILES:
        requests.post(n.url + "/instances", data=open(sample(name), "rb").read(), timeout=10)
    theirs = _findscu(ref.dicom_port, ref.aet, tmp_path, "ref", keys, root)
    ours = _findscu(n.dicom_port, n.aet, tmp_path, "ours", keys, root)
    assert theirs, "the reference found nothing: the query is not a useful comparison"
    assert ours == theirs


CLOSED = {"DicomCheckCalledAet": True, "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False,
          "DicomAlwaysAllowFind": False, "DicomAlwaysAllowFindWorklist": False, "DicomAlwaysAllowGet": False,
          "DicomAlwaysAllowMove": False, "DicomModalities": {"friend": ["FRIEND", "127.0.0.1", 104]}}


@pytest.mark.parametrize("calling,called", [("FRIEND", "WRONG"), ("STRANGER", "{aet}"), ("friend", "{aet}"),
                                            ("FRIEND", "{aet}")])
def test_association_checks_as_orthanc(node, orthanc, calling, called):
    n = node(CLOSED)
    ref = orthanc(CLOSED)
    outs = []
    for port, aet in ((ref.dicom_port, ref.aet), (n.dicom_port, n.aet)):
        r = run_dcmtk("echoscu", "-aet", calling, "-aec", called.format(aet=aet), "127.0.0.1", str(port))
        outs.append((r.returncode, r.stderr))
    assert outs[1] == outs[0]


def _raw_store(port, called, body, sop_class, sop_instance):
    """A hand-made C-STORE whose data set is ``body`` as is; returns the status, or None
    when the peer answered nothing (aborted)."""
    import time as _time
    from pynetdicom import AE
    from pynetdicom.dimse_primitives import C_STORE
    ae = AE(ae_title="RAWSCU")
    ae.add_requested_context(sop_class, ["1.2.840.10008.1.2.1"])
    ae.dimse_timeout = 4
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    req = C_STORE()
    req.MessageID = 1
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = sop_instance
    req.Priority = 2
    req.DataSet = io.BytesIO(body)
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        _time.sleep(0.001)
    assoc.dimse.send_msg(req, assoc.accepted_contexts[0].context_id)
    _, rsp = assoc.dimse.get_msg(block=True)
    assoc._reactor_checkpoint.set()
    status = None if rsp is None else rsp.Status
    if assoc.is_established:
        assoc.release()
    return status


def test_store_statuses_as_orthanc(node, orthanc):
    from pacsbox import read_file_meta
    n = node()
    ref = orthanc()
    source = open(sample("CT_small.dcm"), "rb").read()
    meta = read_file_meta(source)
    body = source[meta.dataset_offset:]
    cases = {
        "ok": (body, meta.sop_instance_uid),
        "duplicate": (body, meta.sop_instance_uid),
        "uid mismatch": (body, "1.2.3.4"),
    }
    for name, (data, uid) in cases.items():
        theirs = _raw_store(ref.dicom_port, ref.aet, data, meta.sop_class_uid, uid)
        ours = _raw_store(n.dicom_port, n.aet, data, meta.sop_class_uid, uid)
        assert ours == theirs, name
    # deliberate difference: a data set DCMTK cannot parse (truncated, garbage) gets no
    # answer from Orthanc (the association is dropped); pacsbox answers 0xC000 and goes on
    for data in (body[: len(body) - 1000], bytes(range(256))):
        assert _raw_store(ref.dicom_port, ref.aet, data, meta.sop_class_uid, meta.sop_instance_uid) is None
        assert _raw_store(n.dicom_port, n.aet, data, meta.sop_class_uid, meta.sop_instance_uid) == 0xC000


WORKLIST_QUERIES = [
    ["PatientName", "PatientID", "AccessionNumber"],
    ["PatientName=Doe*", "AccessionNumber", "(0040,0100)[0].Modality", "(0040,0100)[0].ScheduledStationAETitle"],
    ["PatientName", "(0040,0100)[0].Modality=MR", "(0040,0100)[0].ScheduledProcedureStepStartDate=20240201-"],
    ["AccessionNumber=A2", "(0040,0100)[0].ScheduledProcedureStepDescription", "RequestedProcedureID",
     "PatientBirthDate"],
    ["PatientName", "(0040,0100)"],
    ["PatientName=doe*", "PatientID"],
]


@pytest.mark.parametrize("keys", WORKLIST_QUERIES, ids=[",".join(k[:2]) for k in WORKLIST_QUERIES])
def test_worklists_answer_as_orthanc_s_plugin(node, orthanc, tmp_path, keys):
    """The folder provider against Orthanc 1.10.1 with its ModalityWorklists plugin, on
    the same *.wl files."""
    from test_scp_find import write_worklist
    folder = tmp_path / "worklists"
    folder.mkdir()
    write_worklist(folder, "a.wl", "Doe^John", "A1", "MR", "20240101")
    write_worklist(folder, "b.wl", "Doe^Jane", "A2", "CT", "20240102")
    write_worklist(folder, "c.wl", "Roe^Rick", "A3", "MR", "20240301")
    wl = {"Worklists": {"Enable": True, "Database": str(folder)}, "DicomAlwaysAllowFindWorklist": True}
    n = node(wl)
    ref = orthanc({**wl, "Plugins": ["/usr/share/orthanc/plugins/libModalityWorklists.so"]})
    theirs = _findscu(ref.dicom_port, ref.aet, tmp_path, "ref", keys, "-W")
    ours = _findscu(n.dicom_port, n.aet, tmp_path, "ours", keys, "-W")
    assert theirs, "the reference found nothing: the query is not a useful comparison"
    assert ours == theirs
