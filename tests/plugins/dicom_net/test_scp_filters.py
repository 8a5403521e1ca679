"""The dicom_net plugin's filter hooks, with real peers on loopback: dcmtk's findscu and
storescu and pynetdicom against the SCP (``filter_incoming_find``,
``filter_incoming_worklist``, ``filter_incoming_cstore``), and the query SCU toward a
scripted pynetdicom SCP (``filter_outgoing_find``)."""
from __future__ import annotations

import io
import re

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from pacsbox import ErrorCode, OrthancError
from pacsbox.testing import inline_plugin

from qr_helpers import canned_answers, start_scripted_qr
from scp_helpers import run_dcmtk
from test_scp_find import FIND_OK, findscu, make_instance, upload, write_worklist

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STORE_OK = {"DicomAlwaysAllowStore": True}


def _opt(fn):
    return (fn, {"optionalhook": True})


def _copy(ds: Dataset) -> Dataset:
    out = Dataset()
    for el in ds:
        out.add(el)
    return out


def _indexed(n):
    upload(n.url, make_instance("Doe^John", "P1", "1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.1", description="Head"))
    upload(n.url, make_instance("Roe^Rick", "P2", "1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.1", description="Knee",
                                accession="ACC2"))


# ---- filter_incoming_find -----------------------------------------------------------------

def test_hook_filter_incoming_find(node, tmp_path):
    """A rewritten query is matched, and its keys are the answers' keys; two filters chain
    (the last registered runs first)."""
    seen = []

    def rewrite(query, origin):
        seen.append(("rewrite", str(query.PatientName), dict(origin)))
        if str(query.PatientName) != "ALIAS":
            return None
        out = _copy(query)
        out.PatientName = "Roe*"
        del out.StudyDate
        out.StudyDescription = ""
        return out

    def upper(query, origin):           # registered last: runs first, feeds "rewrite"
        seen.append(("upper", str(query.PatientName), origin["RemoteAET"]))
        out = _copy(query)
        out.PatientName = str(query.PatientName).upper()
        return out

    n = node(FIND_OK, plugins=[inline_plugin("rewrite", filter_incoming_find=_opt(rewrite)),
                           inline_plugin("upper", filter_incoming_find=_opt(upper))])
    _indexed(n)
    r, answers = findscu(n, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=alias", "StudyDate",
                         "StudyInstanceUID")
    assert "Received Final Find Response (Success)" in r.stderr
    [a] = answers
    assert (str(a.PatientName), a.StudyDescription, a.StudyInstanceUID) == ("Roe^Rick", "Knee", "1.2.3.2")
    assert "StudyDate" not in a                         # dropped by the filter: not answered
    assert seen == [("upper", "alias", "FINDSCU"),
                    ("rewrite", "ALIAS", {"RemoteAET": "FINDSCU", "CalledAET": "PACSBOX", "RemoteIP": "127.0.0.1"})]
    # None keeps the query: an ordinary query answers as without filters
    r, answers = findscu(n, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=Doe*", "StudyDate")
    assert [(str(a.PatientName), a.StudyDate) for a in answers] == [("Doe^John", "20200102")]


def test_hook_filter_incoming_find_that_raises_fails_the_request_only(node, tmp_path, caplog):
    def broken(query, origin):
        raise RuntimeError("filter bug")

    def wrong(query, origin):
        return {"PatientName": "x"}     # not a data set

    for name, fn in (("brokenfindfilter", broken), ("wrongfindfilter", wrong)):
        caplog.clear()
        n = node(FIND_OK, plugins=[inline_plugin(name, filter_incoming_find=_opt(fn))])
        _indexed(n)
        r, answers = findscu(n, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName", "StudyInstanceUID")
        assert answers == []
        assert "Received Final Find Response (Failed: UnableToProcess)" in r.stderr
        assert name in caplog.text and "filter_incoming_find" in caplog.text
        assert run_dcmtk("echoscu", "-aec", "PACSBOX", "127.0.0.1", str(n.dicom_port)).returncode == 0


def test_hook_filter_incoming_find_without_level_gets_0xc000(node, tmp_path):
    def drop_level(query, origin):
        out = _copy(query)
        del out.QueryRetrieveLevel
        return out

    n = node(FIND_OK, plugins=[inline_plugin("nolevel", filter_incoming_find=_opt(drop_level))])
    _indexed(n)
    r, answers = findscu(n, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName")
    assert answers == [] and "Received Final Find Response (Failed: UnableToProcess)" in r.stderr


# ---- filter_incoming_worklist ---------------------------------------------------------------

def test_hook_filter_incoming_worklist(node, tmp_path):
    """The book's example: the query is restricted to the calling AET's station."""
    folder = tmp_path / "wl"
    folder.mkdir()
    write_worklist(folder, "a.wl", "Doe^John", "A1", "MR", "20240101", aet="SCANNER1")
    write_worklist(folder, "b.wl", "Doe^Jane", "A2", "CT", "20240102", aet="SCANNER2")
    seen = []

    def own_station(query, origin):
        seen.append(sorted(e.keyword for e in query))
        out = _copy(query)
        step = Dataset()
        for el in query.ScheduledProcedureStepSequence[0]:
            step.add(el)
        step.ScheduledStationAETitle = origin["RemoteAET"]
        out.ScheduledProcedureStepSequence = [step]
        return out

    def not_called(query, origin):       # Patient/Study Root filters do not see worklist queries
        raise AssertionError("filter_incoming_find called for a worklist query")

    n = node({**FIND_OK, "Worklists": {"Enable": True, "Database": str(folder)}},
             plugins=[inline_plugin("station", filter_incoming_worklist=_opt(own_station),
                                    filter_incoming_find=_opt(not_called))])
    for aet, expected in (("SCANNER1", ["A1"]), ("SCANNER2", ["A2"]), ("OTHER", [])):
        r, answers = findscu(n, tmp_path, "PatientName", "AccessionNumber", "(0040,0100)[0].Modality",
                             "(0040,0100)[0].ScheduledStationAETitle", root="-W", aet=aet)
        assert "Received Final Find Response (Success)" in r.stderr, r.stderr
        assert [a.AccessionNumber for a in answers] == expected
    assert seen[0] == ["AccessionNumber", "PatientName", "ScheduledProcedureStepSequence"]


def test_hook_filter_incoming_worklist_that_raises_gets_0xc000(node, tmp_path, caplog):
    folder = tmp_path / "wl"
    folder.mkdir()
    write_worklist(folder, "a.wl", "Doe^John", "A1", "MR", "20240101")

    def broken(query, origin):
        raise ValueError("worklist filter bug")

    n = node({**FIND_OK, "Worklists": {"Enable": True, "Database": str(folder)}},
             plugins=[inline_plugin("brokenwl", filter_incoming_worklist=_opt(broken))])
    r, answers = findscu(n, tmp_path, "PatientName", root="-W")
    assert answers == [] and "Received Final Find Response (Failed: UnableToProcess)" in r.stderr
    assert "brokenwl" in caplog.text and "filter_incoming_worklist" in caplog.text


# ---- filter_incoming_cstore -----------------------------------------------------------------

def _instance(tmp_path, modality, patient="P"):
    ds = pydicom.dcmread(io.BytesIO(make_instance("Filter^Test", patient + modality, generate_uid(), generate_uid(),
                                                  generate_uid(), modality=modality)))
    path = tmp_path / f"{modality}-{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return ds, str(path)


def _statuses(r):
    return re.findall(r"Received Store Response \((.*)\)", r.stdout + r.stderr)


def _count(n):
    return len(requests.get(n.url + "/instances", timeout=10).json())


def test_hook_filter_incoming_cstore(node, tmp_path):
    """The status a filter returns is the C-STORE's, and nothing is stored; None stores."""
    seen = []

    def by_modality(dataset, origin):
        seen.append((dataset.Modality, dataset.file_meta.TransferSyntaxUID, dict(origin)))
        return {"CT": 0xA700, "MR": 0xA900, "US": 0x0000, "NM": 0xC123}.get(dataset.Modality)

    n = node(STORE_OK, plugins=[inline_plugin("storefilter", filter_incoming_cstore=_opt(by_modality))])
    for modality, expected in (("CT", "Refused: OutOfResources"), ("MR", "Error: DataSetDoesNotMatchSOPClass"),
                               ("US", "Success"), ("NM", "Error: CannotUnderstand")):   # dcmtk names the Cxxx class
        _, path = _instance(tmp_path, modality)
        r = run_dcmtk("storescu", "-v", "-aec", "PACSBOX", "127.0.0.1", str(n.dicom_port), path)
        assert _statuses(r) == [expected], (modality, r.stderr)
        assert _count(n) == 0, modality
    ds, path = _instance(tmp_path, "OT")
    r = run_dcmtk("storescu", "-v", "-aec", "PACSBOX", "127.0.0.1", str(n.dicom_port), path)
    assert _statuses(r) == ["Success"] and _count(n) == 1
    assert seen[0] == ("CT", ExplicitVRLittleEndian, {"Origin": "DicomProtocol", "RemoteAET": "STORESCU",
                                                      "CalledAET": "PACSBOX", "RemoteIP": "127.0.0.1"})
    # the exact status numbers, seen by a pynetdicom SCU on one association
    ae = AE("PYSCU")
    ae.add_requested_context(CT_IMAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", n.dicom_port, ae_title="PACSBOX")
    assert assoc.is_established
    try:
        got = []
        for modality in ("CT", "MR", "NM", "US", "OT"):
            ds, _ = _instance(tmp_path, modality, patient="Q")
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
            got.append(int(assoc.send_c_store(ds).Status))
    finally:
        assoc.release()
    assert got == [0xA700, 0xA900, 0xC123, 0x0000, 0x0000]
    assert _count(n) == 2                               # the two OT instances only
    # REST uploads do not go through it
    upload(n.url, make_instance("Rest^Upload", "R1", generate_uid(), generate_uid(), generate_uid(), modality="CT"))
    assert _count(n) == 3


def test_hook_filter_incoming_cstore_that_raises_answers_0xa700(node, tmp_path, caplog):
    def broken(dataset, origin):
        raise RuntimeError("cstore filter bug")

    def wrong(dataset, origin):
        return "refuse"

    for name, fn in (("brokencstore", broken), ("wrongcstore", wrong)):
        caplog.clear()
        n = node(STORE_OK, plugins=[inline_plugin(name, filter_incoming_cstore=_opt(fn))])
        _, path = _instance(tmp_path, "CT")
        r = run_dcmtk("storescu", "-v", "-aec", "PACSBOX", "127.0.0.1", str(n.dicom_port), path)
        assert _statuses(r) == ["Refused: OutOfResources"]
        assert _count(n) == 0
        assert name in caplog.text and "filter_incoming_cstore" in caplog.text


def test_hook_filter_incoming_cstore_first_result_wins(node, tmp_path):
    calls = []

    def first(dataset, origin):      # registered last: called first
        calls.append("first")
        return 0xA701 if dataset.Modality == "CT" else None

    def second(dataset, origin):
        calls.append("second")
        return 0xA702

    n = node(STORE_OK, plugins=[inline_plugin("second", filter_incoming_cstore=_opt(second)),
                                inline_plugin("first", filter_incoming_cstore=_opt(first))])
    _, path = _instance(tmp_path, "CT")
    r = run_dcmtk("storescu", "-v", "-aec", "PACSBOX", "127.0.0.1", str(n.dicom_port), path)
    assert _statuses(r) == ["Refused: OutOfResources"] and calls == ["first"]   # 0xA701: dcmtk's A7xx
    _, path = _instance(tmp_path, "MR")
    run_dcmtk("storescu", "-v", "-aec", "PACSBOX", "127.0.0.1", str(n.dicom_port), path)
    assert calls == ["first", "first", "second"]


# ---- filter_outgoing_find -------------------------------------------------------------------

@pytest.fixture
def remote():
    qr = start_scripted_qr("REMOTE")
    qr.find_answers = canned_answers(1)
    yield qr
    qr.stop()


def _sent(qr):
    return {tag: value for tag, _, value in qr.log[-1][2]}


def test_hook_filter_outgoing_find(node, remote):
    """The keys the remote receives are the filtered ones (then normalized, as Orthanc);
    /queries/{id}/query shows the query as submitted; find-* routes are not filtered."""
    seen = []

    def no_star(query, level, modality):
        seen.append((dict(query), level, modality["Name"], modality["AET"], modality["Manufacturer"]))
        out = {t: ("" if v == "*" else v) for t, v in query.items()}
        out[0x00080090] = "ADDED"          # ReferringPhysicianName: kept by normalization
        out[0x00180015] = "DROPPED"        # BodyPartExamined: a series key, dropped at study level
        return out

    n = node({"DicomModalities": {"remote": ["REMOTE", "127.0.0.1", remote.port]}},
             plugins=[inline_plugin("nostar", filter_outgoing_find=_opt(no_star))])
    r = requests.post(n.url + "/modalities/remote/query", timeout=30,
                      json={"Level": "Study", "Query": {"PatientName": "DOE*", "StudyDate": "*", "PatientID": "*"}})
    assert r.status_code == 200, r.text
    sent = _sent(remote)
    assert (sent["0010,0010"], sent["0008,0020"], sent["0010,0020"], sent["0008,0090"]) == ("DOE*", "", "", "ADDED")
    assert "0018,0015" not in sent and sent["0008,0052"] == "STUDY"
    assert seen == [({0x00100010: "DOE*", 0x00080020: "*", 0x00100020: "*"}, "Study", "remote", "REMOTE",
                     "Generic")]
    query = requests.get(n.url + f"/queries/{r.json()['ID']}/query?short", timeout=10).json()
    assert query == {"0008,0020": "*", "0010,0010": "DOE*", "0010,0020": "*"}
    # a child query goes through the filter too
    r2 = requests.post(n.url + f"/queries/{r.json()['ID']}/answers/0/query-series", json={"Query": {"Modality": "*"}},
                       timeout=30)
    assert r2.status_code == 200, r2.text
    assert seen[-1][1] == "Series" and _sent(remote)["0008,0060"] == ""
    # find-* routes are not (nor are they in Orthanc 1.10.1)
    before = len(seen)
    r3 = requests.post(n.url + "/modalities/remote/find-patient", json={"PatientName": "*"}, timeout=30)
    assert r3.status_code == 200 and len(seen) == before
    assert _sent(remote)["0010,0010"] == "*"


def test_hook_filter_outgoing_find_errors_send_nothing(node, remote, caplog):
    def orthanc_error(query, level, modality):
        raise OrthancError(ErrorCode.CANNOT_EXECUTE_LUA, "script.lua:3: boom")

    def broken(query, level, modality):
        raise KeyError("bug")

    def wrong(query, level, modality):
        return {"PatientName": 1}

    mods = {"DicomModalities": {"remote": ["REMOTE", "127.0.0.1", remote.port]}}
    n = node(mods, plugins=[inline_plugin("orthancerror", filter_outgoing_find=_opt(orthanc_error))])
    r = requests.post(n.url + "/modalities/remote/query", json={"Level": "Study", "Query": {}}, timeout=30)
    assert (r.status_code, r.json()["OrthancStatus"], r.json()["Details"]) == (500, 2031, "script.lua:3: boom")
    for name, fn in (("brokenout", broken), ("wrongout", wrong)):
        n = node(mods, plugins=[inline_plugin(name, filter_outgoing_find=_opt(fn))])
        r = requests.post(n.url + "/modalities/remote/query", json={"Level": "Study", "Query": {}}, timeout=30)
        assert r.status_code == 500 and name in r.json()["Details"] and name in caplog.text
    assert remote.log == []
