"""The SCP's C-FIND (Patient/Study Root, every level) and Modality Worklist C-FIND, with
dcmtk's findscu on loopback; answers read back from the files ``findscu -X`` writes."""
from __future__ import annotations

import glob
import io
import os

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pacsbox.testing import inline_plugin

from scp_helpers import run_dcmtk, sample

from pacsbox_dicom_net.find_answers import MAIN_TAGS, answers_for
from pacsbox_dicom_net.find_scp import encode_find_response_pdus

FIND_OK = {"DicomAlwaysAllowFind": True, "DicomAlwaysAllowFindWorklist": True}


def make_instance(patient_name, patient_id, study_uid, series_uid, sop_uid, *, modality="CT", study_date="20200102",
                  charset="ISO_IR 100", accession="ACC1", description="Chest", birth="19700101", extra=None):
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date
    ds.StudyTime = "101010"
    ds.AccessionNumber = accession
    ds.StudyDescription = description
    ds.StudyID = "S1"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.SeriesNumber = "1"
    ds.InstanceNumber = "1"
    ds.Manufacturer = "ACME"
    ds.BodyPartExamined = "CHEST"
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def upload(url, data):
    r = requests.post(url + "/instances", data=data, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def dataset_node(node):
    """A node holding 2 patients, 3 studies, 4 series, 5 instances."""
    n = node(FIND_OK)
    files = [
        make_instance("Müller^Jörg", "P1", "1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.1", modality="CT"),
        make_instance("Müller^Jörg", "P1", "1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.2", modality="CT"),
        make_instance("Müller^Jörg", "P1", "1.2.3.1", "1.2.3.1.2", "1.2.3.1.2.1", modality="MR"),
        make_instance("Müller^Jörg", "P1", "1.2.3.2", "1.2.3.2.1", "1.2.3.2.1.1", modality="US", study_date="20210505",
                      accession="ACC2", description="Knee"),
        make_instance("Smith^Anne", "P2", "1.2.3.3", "1.2.3.3.1", "1.2.3.3.1.1", modality="MR", study_date="20221212",
                      accession="ACC3", description="Head", birth="19800202"),
    ]
    for f in files:
        upload(n.url, f)
    return n


def findscu(node, tmp_path, *keys, root="-S", extra=(), aet="FINDSCU"):
    out = tmp_path / f"rsp{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    args = ["-aet", aet, "-aec", node.aet, root, "-X", "-od", str(out), *extra]
    for k in keys:
        args += ["-k", k]
    r = run_dcmtk("findscu", "-v", *args, "127.0.0.1", str(node.dicom_port))
    answers = [pydicom.dcmread(p) for p in sorted(glob.glob(str(out / "rsp*.dcm")))]
    return r, answers


def test_patient_level_with_counters(dataset_node, tmp_path):
    r, answers = findscu(dataset_node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=P1", "PatientName",
                         "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                         "NumberOfPatientRelatedInstances", root="-P")
    assert r.returncode == 0, r.stderr
    [a] = answers
    assert a.QueryRetrieveLevel == "PATIENT"
    assert a.RetrieveAETitle == "PACSBOX"
    assert a.SpecificCharacterSet == "ISO_IR 100"
    assert str(a.PatientName) == "Müller^Jörg"
    assert tuple(int(v) for v in (a.NumberOfPatientRelatedStudies, a.NumberOfPatientRelatedSeries,
                                  a.NumberOfPatientRelatedInstances)) \
        == (2, 3, 4)
    # exactly the requested keys, plus the three the SCP adds
    assert sorted(e.keyword for e in a) == sorted([
        "SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle", "PatientName", "PatientID",
        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"])


def test_study_level_wildcards_dates_and_computed_keys(dataset_node, tmp_path):
    r, answers = findscu(dataset_node, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=Mü*".encode("latin-1"),
                         "StudyDate=20200101-",
                         "StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                         "NumberOfStudyRelatedInstances", "SOPClassesInStudy", "AccessionNumber",
                         extra=["-k", "SpecificCharacterSet=ISO_IR 100"])
    assert r.returncode == 0, r.stderr
    got = sorted((a.StudyInstanceUID, a.ModalitiesInStudy if isinstance(a.ModalitiesInStudy, str)
                  else "\\".join(a.ModalitiesInStudy), int(a.NumberOfStudyRelatedSeries),
                  int(a.NumberOfStudyRelatedInstances), a.AccessionNumber) for a in answers)
    assert got == [("1.2.3.1", "CT\\MR", 2, 3, "ACC1"), ("1.2.3.2", "US", 1, 1, "ACC2")]
    assert {a.SOPClassesInStudy for a in answers} == {"1.2.840.10008.5.1.4.1.1.7"}
    # ranges
    r, answers = findscu(dataset_node, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate=20210101-20211231",
                         "StudyInstanceUID")
    assert [a.StudyInstanceUID for a in answers] == ["1.2.3.2"]
    # ModalitiesInStudy as a constraint
    r, answers = findscu(dataset_node, tmp_path, "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=MR",
                         "StudyInstanceUID")
    assert sorted(a.StudyInstanceUID for a in answers) == ["1.2.3.1", "1.2.3.3"]


def test_series_and_image_levels(dataset_node, tmp_path):
    r, answers = findscu(dataset_node, tmp_path, "QueryRetrieveLevel=SERIES", "StudyInstanceUID=1.2.3.1",
                         "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances")
    assert sorted((a.SeriesInstanceUID, a.Modality, int(a.NumberOfSeriesRelatedInstances)) for a in answers) == \
        [("1.2.3.1.1", "CT", 2), ("1.2.3.1.2", "MR", 1)]
    r, answers = findscu(dataset_node, tmp_path, "QueryRetrieveLevel=IMAGE", "SeriesInstanceUID=1.2.3.1.1",
                         "SOPInstanceUID", "InstanceNumber")
    assert sorted(a.SOPInstanceUID for a in answers) == ["1.2.3.1.1.1", "1.2.3.1.1.2"]
    assert {a.QueryRetrieveLevel for a in answers} == {"IMAGE"}
    # a key that is not a main tag is read from the stored file
    r, answers = findscu(dataset_node, tmp_path, "QueryRetrieveLevel=IMAGE", "SOPInstanceUID=1.2.3.3.1.1",
                         "SOPClassUID", "PatientSex")
    [a] = answers
    assert (a.SOPClassUID, a.PatientSex) == ("1.2.840.10008.5.1.4.1.1.7", "O")


def test_non_ascii_answers_in_the_query_charset_or_utf8(dataset_node, tmp_path):
    # ISO_IR 100 query: answered in ISO_IR 100
    r, answers = findscu(dataset_node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientName=Müller*".encode("latin-1"),
                         "SpecificCharacterSet=ISO_IR 100", "PatientID", root="-P")
    [a] = answers
    assert a.SpecificCharacterSet == "ISO_IR 100" and str(a.PatientName) == "Müller^Jörg"
    # ISO_IR 192 query: answered in ISO_IR 192
    r, answers = findscu(dataset_node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientName=Müller*",
                         "SpecificCharacterSet=ISO_IR 192", "PatientID", root="-P")
    [a] = answers
    assert a.SpecificCharacterSet == "ISO_IR 192" and str(a.PatientName) == "Müller^Jörg"


def test_utf8_when_the_values_need_it(node, tmp_path):
    n = node(FIND_OK)
    upload(n.url, make_instance("王^小東", "P9", "1.2.9", "1.2.9.1", "1.2.9.1.1", charset="ISO_IR 192"))
    r, answers = findscu(n, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=P9", "PatientName",
                         "SpecificCharacterSet=ISO_IR 100", root="-P")
    [a] = answers
    assert a.SpecificCharacterSet == "ISO_IR 192"
    assert str(a.PatientName) == "王^小東"


def test_limit_find_results(node, tmp_path):
    n = node({**FIND_OK, "LimitFindResults": 1})
    for i in range(3):
        upload(n.url, make_instance(f"P^{i}", f"P{i}", f"1.2.8.{i}", f"1.2.8.{i}.1", f"1.2.8.{i}.1.1"))
    r, answers = findscu(n, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID")
    assert len(answers) == 1
    assert "Received Final Find Response (Cancel: MatchingTerminatedDueToCancelRequest)" in r.stderr


def test_find_not_allowed_gets_a_status(node, tmp_path):
    n = node()   # DicomAlwaysAllowFind is false by default
    r, answers = findscu(n, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID")
    assert answers == []
    assert "Received Final Find Response (Unknown Status: 0x124)" in r.stderr


def test_hook_find_answers(node, tmp_path):
    seen = []

    def answer(level, query, origin):
        seen.append((level, str(query.get("PatientID", "")), dict(origin)))
        if query.get("PatientID") != "HOOKED":
            return None
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        ds.PatientID = "HOOKED"
        ds.PatientName = "From^Plugin"
        return [ds, ds]

    n = node(FIND_OK, plugins=[inline_plugin("findhook", find_answers=(answer, {"optionalhook": True}))])
    upload(n.url, make_instance("Index^Patient", "P1", "1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.1"))
    r, answers = findscu(n, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=HOOKED", "PatientName", root="-P")
    assert [str(a.PatientName) for a in answers] == ["From^Plugin", "From^Plugin"]
    r, answers = findscu(n, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=P1", "PatientName", root="-P")
    assert [str(a.PatientName) for a in answers] == ["Index^Patient"]
    assert seen[0] == ("PATIENT", "HOOKED", {"RemoteAET": "FINDSCU", "CalledAET": "PACSBOX", "RemoteIP": "127.0.0.1"})


def test_hook_find_answers_that_raises_fails_the_request_only(node, tmp_path, caplog):
    def answer(level, query, origin):
        raise RuntimeError("find bug")

    n = node(FIND_OK, plugins=[inline_plugin("brokenfind", find_answers=(answer, {"optionalhook": True}))])
    r, answers = findscu(n, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientName", root="-P")
    assert answers == []
    assert "Received Final Find Response (Failed: UnableToProcess)" in r.stderr
    assert "brokenfind" in caplog.text
    assert run_dcmtk("echoscu", "127.0.0.1", str(n.dicom_port)).returncode == 0


def test_main_tags_list_matches_the_core():
    from pacsbox.dicom import tags as core_tags
    assert MAIN_TAGS == tuple(core_tags.MAIN_TAGS[lv] for lv in ("Patient", "Study", "Series", "Instance"))


# ---- Modality Worklist ---------------------------------------------------------------

def write_worklist(folder, name, patient, accession, modality, date, aet="SCANNER1"):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient
    ds.PatientID = "W" + accession
    ds.AccessionNumber = accession
    ds.RequestedProcedureID = "RP" + accession
    sps = Dataset()
    sps.Modality = modality
    sps.ScheduledStationAETitle = aet
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepDescription = "Step " + accession
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(os.path.join(folder, name), enforce_file_format=True)


WL_KEYS = ["PatientName", "AccessionNumber", "(0040,0100)[0].Modality", "(0040,0100)[0].ScheduledStationAETitle",
           "(0040,0100)[0].ScheduledProcedureStepStartDate"]


def test_worklist_refused_without_a_provider(node, tmp_path):
    n = node(FIND_OK)
    r, answers = findscu(n, tmp_path, *WL_KEYS, root="-W")
    assert answers == []
    assert r.returncode != 0 or "No Acceptable Presentation Contexts" in r.stderr


def test_worklist_folder_provider(node, tmp_path):
    folder = tmp_path / "wl"
    folder.mkdir()
    write_worklist(folder, "a.wl", "Doe^John", "A1", "MR", "20240101")
    write_worklist(folder, "b.wl", "Doe^Jane", "A2", "CT", "20240102")
    write_worklist(folder, "c.wl", "Roe^Rick", "A3", "MR", "20240301")
    (folder / "junk.wl").write_bytes(b"not dicom")
    n = node({**FIND_OK, "Worklists": {"Enable": True, "Database": str(folder)}})
    r, answers = findscu(n, tmp_path, "PatientName=Doe*", *WL_KEYS[1:], root="-W")
    assert r.returncode == 0, r.stderr
    assert sorted(str(a.PatientName) for a in answers) == ["Doe^Jane", "Doe^John"]
    # sequence matching and date ranges
    r, answers = findscu(n, tmp_path, "PatientName", "AccessionNumber", "(0040,0100)[0].Modality=MR",
                         "(0040,0100)[0].ScheduledProcedureStepStartDate=20240201-", root="-W")
    [a] = answers
    assert a.AccessionNumber == "A3"
    [step] = a.ScheduledProcedureStepSequence
    # only the requested keys of the item
    assert sorted(e.keyword for e in step) == ["Modality", "ScheduledProcedureStepStartDate"]
    assert sorted(e.keyword for e in a) == ["AccessionNumber", "PatientName", "ScheduledProcedureStepSequence",
                                            "SpecificCharacterSet"]


def test_hook_find_worklist_answers(node, tmp_path):
    """The example plugin (installed as a third-party distribution) answers worklists."""
    from fixtures.example_plugin.install import ensure_installed
    ensure_installed()
    import pacsbox_example.plugin as example
    n = node(FIND_OK, plugins=[example])
    r, answers = findscu(n, tmp_path, "PatientName", "PatientID", "AccessionNumber", "RequestedProcedureID",
                         root="-W")
    assert r.returncode == 0, r.stderr
    [a] = answers
    assert (str(a.PatientName), a.PatientID, a.AccessionNumber, a.RequestedProcedureID) == \
        ("Example^Worklist", "EX-1", "EXACC1", "EXRP1")
    r, answers = findscu(n, tmp_path, "PatientName", "AccessionNumber=OTHER", root="-W")
    assert answers == []


def test_hook_find_worklist_answers_first_plugin_wins_over_the_folder(node, tmp_path):
    folder = tmp_path / "wl2"
    folder.mkdir()
    write_worklist(folder, "a.wl", "Doe^John", "A1", "MR", "20240101")

    def provider(query, origin):
        ds = Dataset()
        ds.PatientName = "Plugin^First"
        return [ds]

    n = node({**FIND_OK, "Worklists": {"Enable": True, "Database": str(folder)}},
             plugins=[inline_plugin("wlfirst", find_worklist_answers=(provider, {"optionalhook": True}))])
    r, answers = findscu(n, tmp_path, "PatientName", root="-W")
    assert [str(a.PatientName) for a in answers] == ["Plugin^First"]


@pytest.mark.parametrize("status,size,max_pdu", [(0xFF00, 300, 16384), (0xFF00, 40000, 16384), (0xFF00, 9, 0),
                                                 (0x0000, 0, 16384), (0xFE00, 0, 0), (0xC000, 0, 16384)])
def test_find_response_pdus_equal_pynetdicom_encoding(status, size, max_pdu):
    """The hand-encoded C-FIND-RSP PDUs written by the SCP are byte for byte what
    pynetdicom's ``send_msg`` would write."""
    from pynetdicom.dimse_messages import C_FIND_RSP
    from pynetdicom.dimse_primitives import C_FIND
    from pynetdicom.pdu import P_DATA_TF

    identifier = (bytes(range(256)) * (size // 256 + 1))[:size]
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = 513
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    rsp.Status = status
    if identifier:
        rsp.Identifier = io.BytesIO(identifier)
    msg = C_FIND_RSP()
    msg.primitive_to_message(rsp)
    pdus = []
    for prim in msg.encode_msg(3, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(prim)
        pdus.append(pdu.encode())
    ours = encode_find_response_pdus(3, max_pdu, "1.2.840.10008.5.1.4.1.2.2.1", 513, status, identifier or None)
    assert ours == b"".join(pdus)


@pytest.mark.parametrize("level,keys,charset", [
    ("PATIENT", {"PatientName": "*", "PatientID": "", "PatientBirthDate": "", "PatientSex": "",
                 "NumberOfPatientRelatedStudies": "", "NumberOfPatientRelatedInstances": ""}, None),
    ("STUDY", {"PatientName": "M*", "StudyInstanceUID": "", "StudyDate": "20200101-", "StudyTime": "",
               "AccessionNumber": "", "ModalitiesInStudy": "", "StudyDescription": "", "StudyID": "",
               "NumberOfStudyRelatedSeries": "", "NumberOfStudyRelatedInstances": ""}, "ISO_IR 100"),
    ("STUDY", {"PatientName": "", "StudyInstanceUID": "", "ReferringPhysicianName": ""}, "ISO_IR 192"),
    ("SERIES", {"StudyInstanceUID": "1.2.3.1", "SeriesInstanceUID": "", "Modality": "", "SeriesNumber": "",
                "NumberOfSeriesRelatedInstances": ""}, None),
    ("IMAGE", {"SOPInstanceUID": "", "InstanceNumber": "", "SOPClassUID": "", "Manufacturer": "",
               "BodyPartExamined": ""}, "ISO_IR 6"),
])
def test_answers_encoded_without_pydicom_equal_pydicoms_encoding(dataset_node, level, keys, charset):
    """The C-FIND answers built from the index are encoded by hand (``_EncodedAnswer``);
    the bytes must be those pynetdicom's encoder (pydicom) writes for the same data set,
    in both little-endian syntaxes."""
    from pynetdicom.dsutils import encode

    query = Dataset()
    if charset:
        query.SpecificCharacterSet = charset
    query.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(query, k, v)
    answers, _cut = answers_for(dataset_node.ctx, query, {"RemoteAET": "X", "CalledAET": "PACSBOX",
                                                          "RemoteIP": "127.0.0.1"})
    assert answers
    for ans in answers:
        fast = ans.pacsbox_encoded
        for implicit in (True, False):
            ours = fast.encode(implicit, True, False)
            assert ours is not None
            assert ours == encode(ans, implicit, True, False), (level, implicit, ans)
    assert answers[0].pacsbox_encoded.encode(True, False, False) is None  # big endian: pydicom's
