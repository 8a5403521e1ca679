"""The DICOM-side Lua filters on a pacsbox with the dicom_net plugin, with real peers on
loopback: dcmtk's findscu and storescu, pynetdicom SCUs, and a pynetdicom SCP that records
the C-FIND identifiers pacsbox sends. Also ``OnUpdated*``, and the plugin without dicom_net."""
from __future__ import annotations

import glob
import io
import os
import re
import subprocess

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

import pacsbox_dicom_net.plugin as dicom_net_plugin
import pacsbox_lua.plugin as lua_plugin
from pacsbox.testing import free_port

from lua_helpers import start_recorder

FINDSCU = "/usr/bin/findscu" if os.path.exists("/usr/bin/findscu") else None
STORESCU = "/usr/bin/storescu" if os.path.exists("/usr/bin/storescu") else None
needs_dcmtk = pytest.mark.skipif(not (FINDSCU and STORESCU), reason="dcmtk is not installed")
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def instance(patient, patient_id, modality="CT", description="Head", study_uid=None):
    """A small Part-10 file (bytes) of a new study."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = patient, patient_id
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.StudyDate, ds.StudyDescription, ds.AccessionNumber = "20240102", description, "ACC" + patient_id
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_worklist(folder, name, patient, accession, aet):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID, ds.AccessionNumber = patient, "W" + accession, accession
    step = Dataset()
    step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepStartDate = "MR", aet, "20240101"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(os.path.join(folder, name), enforce_file_format=True)


def node(live_server, tmp_path, script, extra=None, plugins=(dicom_net_plugin, lua_plugin)):
    path = tmp_path / f"filters{free_port()}.lua"
    path.write_text(script)
    cfg = {"DicomPort": free_port(), "DicomAet": "PACSBOX", "LuaScripts": [str(path)], "ExecuteLuaEnabled": True,
           "DicomAlwaysAllowFind": True, "DicomAlwaysAllowFindWorklist": True, "DicomAlwaysAllowStore": True}
    cfg.update(extra or {})
    return live_server(cfg, plugins=list(plugins)), cfg["DicomPort"]


def lua(server, code):
    r = requests.post(server.url + "/tools/execute-script", data=code.encode(), timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def findscu(port, tmp_path, *keys, root="-S", aet="FINDSCU", called="PACSBOX"):
    """``(final status text, answers as {keyword: str})`` of one findscu query."""
    out = tmp_path / f"rsp{free_port()}"
    out.mkdir()
    args = [FINDSCU, "-v", "-aet", aet, "-aec", called, root, "-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    p = subprocess.run([*args, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, TCP_NODELAY="1"))
    status = re.findall(r"Received Final Find Response \((.*)\)", p.stdout + p.stderr)
    answers = []
    for f in sorted(glob.glob(str(out / "rsp*.dcm"))):
        ds = pydicom.dcmread(f)
        answers.append({e.keyword or str(e.tag): (str(e.value) if e.VR != "SQ" else
                                                  [{x.keyword: str(x.value) for x in item} for item in e.value])
                        for e in ds if e.tag != 0x00080054})
    return (status[0] if status else p.stderr[-300:]), sorted(answers, key=repr)


def storescu(port, path, called="PACSBOX"):
    p = subprocess.run([STORESCU, "-v", "-aec", called, "127.0.0.1", str(port), path], capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, TCP_NODELAY="1"))
    found = re.findall(r"Received Store Response \((.*)\)", p.stdout + p.stderr)
    return found or [p.stderr[-500:]]


# ---- IncomingFindRequestFilter ------------------------------------------------------------

FIND_SCRIPT = r"""
Seen = {}
function IncomingFindRequestFilter(query, origin)
   table.insert(Seen, DumpJson(query) .. ' ' .. DumpJson(origin))
   -- the book's example: remove a private tag a manufacturer sets
   query['5555,0010'] = nil
   if query['0010,0010'] == 'ALIAS' then
      query['0010,0010'] = 'Roe*'
      query['0008,0020'] = nil             -- not answered any more
      query['StudyDescription'] = ''       -- a keyword: answered
   elseif query['0010,0010'] == 'FAIL' then
      error('find filter failed')
   elseif query['0010,0010'] == 'NOTHING' then
      return nil
   elseif query['0010,0010'] == 'NUMBER' then
      query['0010,0010'] = 12              -- a number is taken as a string, as in Orthanc
   elseif query['0010,0010'] == 'TABLE' then
      query['0010,0010'] = { 'x' }
   end
   return query
end
"""


@needs_dcmtk
def test_incoming_find_request_filter(live_server, tmp_path):
    server, port = node(live_server, tmp_path, FIND_SCRIPT)
    for data in (instance("Doe^John", "P1", description="Head"), instance("Roe^Rick", "P2", description="Knee"),
                 instance("12", "P3", description="Twelve")):
        assert requests.post(server.url + "/instances", data=data, timeout=10).status_code == 200
    status, answers = findscu(port, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=ALIAS", "StudyDate",
                              "(5555,0010)=ACME")
    assert status == "Success"
    assert answers == [{"SpecificCharacterSet": "ISO_IR 100", "QueryRetrieveLevel": "STUDY",
                        "PatientName": "Roe^Rick", "StudyDescription": "Knee"}]
    [seen] = lua(server, "for _, s in ipairs(Seen) do print(s) end").splitlines()
    assert seen == ('{"0008,0020":"","0008,0052":"STUDY","0010,0010":"ALIAS","5555,0010":"ACME"} '
                    '{"CalledAet":"PACSBOX","Manufacturer":"Generic","RemoteAet":"FINDSCU","RemoteIp":"127.0.0.1"}')
    status, answers = findscu(port, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=NUMBER", "StudyDescription")
    assert (status, [a["StudyDescription"] for a in answers]) == ("Success", ["Twelve"])
    for name in ("FAIL", "NOTHING", "TABLE"):   # Orthanc 1.10.1 answers these 0xC000 too
        status, answers = findscu(port, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=" + name)
        assert (status, answers) == ("Failed: UnableToProcess", []), name
    # defined later through execute-script, in the same interpreter: used at once
    lua(server, "function IncomingFindRequestFilter(query, origin) query['0010,0010'] = 'Doe*' return query end")
    status, answers = findscu(port, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientName=nobody", "PatientID",
                              root="-P")
    assert [a["PatientID"] for a in answers] == ["P1"]
    # and removed: no filter any more
    lua(server, "IncomingFindRequestFilter = nil")
    status, answers = findscu(port, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientName=nobody", root="-P")
    assert (status, answers) == ("Success", [])


# ---- IncomingWorklistRequestFilter --------------------------------------------------------

@needs_dcmtk
def test_incoming_worklist_request_filter(live_server, tmp_path):
    """The book's example (Orthanc's ``FilterIssuerAet``), and the orthanc-tests one that
    removes the station from the query; installed through execute-script as they do."""
    folder = tmp_path / "wl"
    folder.mkdir()
    write_worklist(folder, "a.wl", "Doe^John", "A1", "SCANNER1")
    write_worklist(folder, "b.wl", "Doe^Jane", "A2", "SCANNER2")
    server, port = node(live_server, tmp_path, "", {"Worklists": {"Enable": True, "Database": str(folder)}})
    keys = ("PatientName", "AccessionNumber", "(0040,0100)[0].ScheduledStationAETitle", "(0040,0100)[0].Modality")
    status, answers = findscu(port, tmp_path, *keys, root="-W", aet="SCANNER1")
    assert [a["AccessionNumber"] for a in answers] == ["A1", "A2"]
    lua(server, """
Seen = {}
function IncomingWorklistRequestFilter(query, origin)
   table.insert(Seen, DumpJson(query) .. ' ' .. DumpJson(origin))
   query['0040,0100'][1]['0040,0001'] = origin['RemoteAet']
   return query
end""")
    for aet, expected in (("SCANNER1", ["A1"]), ("SCANNER2", ["A2"]), ("OTHER", [])):
        status, answers = findscu(port, tmp_path, *keys, root="-W", aet=aet)
        assert (status, [a["AccessionNumber"] for a in answers]) == ("Success", expected)
    assert answers == [] and lua(server, "print(Seen[1])") == (
        '{"0008,0050":"","0010,0010":"","0040,0100":[{"0008,0060":"","0040,0001":""}]} '
        '{"CalledAet":"PACSBOX","Manufacturer":"Generic","RemoteAet":"SCANNER1","RemoteIp":"127.0.0.1"}\n')
    lua(server, """
function IncomingWorklistRequestFilter(query, origin)
   query['0040,0100'][1]['0040,0001'] = nil
   return query
end""")
    status, answers = findscu(port, tmp_path, *keys[:2], "(0040,0100)[0].ScheduledStationAETitle=SCANNER2",
                              root="-W")
    assert [a["AccessionNumber"] for a in answers] == ["A1", "A2"]
    lua(server, "function IncomingWorklistRequestFilter(query, origin) error('wl filter failed') end")
    assert findscu(port, tmp_path, *keys, root="-W") == ("Failed: UnableToProcess", [])


# ---- ReceivedCStoreInstanceFilter / IncomingCStoreInstanceFilter --------------------------

CSTORE_SCRIPT = r"""
function ReceivedCStoreInstanceFilter(tags, origin, info)
   if tags['Modality'] == 'CT' then return 0 end         -- 1.10.1: discarded, answered Success
   if tags['Modality'] == 'US' then return 'refused' end -- not a number: 0xA700, nothing stored
   if tags['Modality'] == 'NM' then return 65536 end     -- low 16 bits are 0: discarded
   return 0xA700                                         -- 1.10.1: any other number stores
end
"""


def _count(server):
    return len(requests.get(server.url + "/instances", timeout=10).json())


def _file(tmp_path, modality, patient="P"):
    path = tmp_path / f"{modality}{free_port()}.dcm"
    path.write_bytes(instance("Store^Test", patient + modality, modality=modality))
    return str(path)


@needs_dcmtk
def test_received_cstore_instance_filter_as_orthanc_1_10_1(live_server, tmp_path):
    server, port = node(live_server, tmp_path, CSTORE_SCRIPT)
    for modality, status, stored in (("CT", "Success", 0), ("US", "Refused: OutOfResources", 0),
                                     ("NM", "Success", 0), ("MR", "Success", 1)):
        assert storescu(port, _file(tmp_path, modality)) == [status], modality
        assert _count(server) == stored, modality
    # REST uploads are not C-STOREs
    assert requests.post(server.url + "/instances", data=instance("Rest^CT", "R1"), timeout=10).status_code == 200
    assert _count(server) == 2
    # as in Orthanc, execute-script does not reach the filters' interpreter
    lua(server, "function ReceivedCStoreInstanceFilter(tags, origin, info) return 0 end")
    assert storescu(port, _file(tmp_path, "MR", "Q")) == ["Success"] and _count(server) == 3


INCOMING_SCRIPT = r"""
function IncomingCStoreInstanceFilter(tags, origin, info)
   if origin['RemoteAet'] ~= 'PYSCU' or origin['RequestOrigin'] ~= 'DicomProtocol'
      or info['TransferSyntaxUID'] ~= '1.2.840.10008.1.2.1' or not info['HasPixelData'] == false then
      return 0xC002
   end
   if tags['Modality'] == 'CT' then return 0xA700 end
   if tags['Modality'] == 'MR' then return 0xA900 end
   if tags['Modality'] == 'NM' then error('cstore filter failed') end
   return 0
end
"""


def test_incoming_cstore_instance_filter_returns_the_dimse_status(live_server, tmp_path):
    """pacsbox's ``IncomingCStoreInstanceFilter``: the number returned is the status a
    pynetdicom SCU receives, and nothing is stored; 0 stores; an error answers 0xA700."""
    server, port = node(live_server, tmp_path, INCOMING_SCRIPT)
    ae = AE("PYSCU")
    ae.add_requested_context(CT_IMAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSBOX")
    assert assoc.is_established
    try:
        statuses = []
        for modality in ("CT", "MR", "NM", "OT"):
            ds = pydicom.dcmread(io.BytesIO(instance("Py^Store", "PY" + modality, modality=modality)))
            statuses.append(int(assoc.send_c_store(ds).Status))
    finally:
        assoc.release()
    assert statuses == [0xA700, 0xA900, 0xA700, 0x0000]
    assert [requests.get(server.url + f"/instances/{i}/simplified-tags", timeout=10).json()["Modality"]
            for i in requests.get(server.url + "/instances", timeout=10).json()] == ["OT"]


# ---- OutgoingFindRequestFilter ------------------------------------------------------------

@pytest.fixture(scope="module")
def recorder():
    """``(port, received)`` of :func:`lua_helpers.start_recorder` (AET REMOTE); a test
    empties ``received`` first."""
    port, received, stop = start_recorder()
    yield port, received
    stop()


def _keys(identifier):
    return {tag: value for tag, _, value in identifier}


OUTGOING_SCRIPT = r"""
Seen = {}
function OutgoingFindRequestFilter(query, modality)
   table.insert(Seen, DumpJson(query) .. ' ' .. DumpJson(modality))
   if query['0010,0010'] == 'FAIL' then error('outgoing filter failed') end
   if query['0010,0010'] == 'BAD' then return 'nope' end
   -- the book's example: no asterisk wildcards for this modality
   for key, value in pairs(query) do
      if value == '*' then query[key] = '' end
   end
   query['0008,0090'] = 'ADDED'
   return query
end
"""


def test_outgoing_find_request_filter(live_server, tmp_path, recorder):
    port, received = recorder
    del received[:]
    server, _ = node(live_server, tmp_path, OUTGOING_SCRIPT,
                     {"DicomModalities": {"remote": ["REMOTE", "127.0.0.1", port]}})
    r = requests.post(server.url + "/modalities/remote/query", timeout=30,
                      json={"Level": "Study", "Query": {"PatientName": "DOE*", "StudyDate": "*", "PatientID": "*"}})
    assert r.status_code == 200, r.text
    assert [_keys(i) for i in received] == [{
        "(0008,0005)": "ISO_IR 100", "(0008,0020)": "", "(0008,0050)": "", "(0008,0052)": "STUDY",
        "(0008,0090)": "ADDED", "(0010,0010)": "DOE*", "(0010,0020)": "", "(0020,000D)": ""}]
    assert lua(server, "print(Seen[1])") == '{"0008,0020":"*","0010,0010":"DOE*","0010,0020":"*"} "REMOTE"\n'
    query = requests.get(server.url + f"/queries/{r.json()['ID']}/query?short", timeout=10).json()
    assert query == {"0008,0020": "*", "0010,0010": "DOE*", "0010,0020": "*"}   # as submitted
    # the find-* routes are not filtered, as in Orthanc 1.10.1
    assert requests.post(server.url + "/modalities/remote/find-patient", json={"PatientName": "*"},
                         timeout=30).status_code == 200
    assert _keys(received[-1])["(0010,0010)"] == "*" and "(0008,0090)" not in _keys(received[-1])
    before = len(received)
    r = requests.post(server.url + "/modalities/remote/query", json={"Level": "Study", "Query": {"PatientName": "FAIL"}},
                      timeout=30)
    assert (r.status_code, r.json()["OrthancStatus"], r.json()["Message"]) == (500, 2031, "Cannot execute a Lua command")
    assert re.search(r"filters\d+\.lua:5: outgoing filter failed$", r.json()["Details"])
    r = requests.post(server.url + "/modalities/remote/query", json={"Level": "Study", "Query": {"PatientName": "BAD"}},
                      timeout=30)
    assert (r.status_code, r.json()["OrthancStatus"], r.json()["Details"]) == \
        (500, 2033, "Lua: The script must return a table")
    assert len(received) == before                      # nothing sent on an error


# ---- OnUpdated* ----------------------------------------------------------------------------

def test_on_updated_callbacks(live_server, tmp_path):
    """``OnUpdated<Level>(id)`` on the ``UpdatedMetadata`` and ``UpdatedAttachment`` changes,
    as Orthanc 1.10.1's ``LuaScripting::UpdateEvent``."""
    server, _ = node(live_server, tmp_path, r"""
Updated = {}
function OnUpdatedInstance(id) table.insert(Updated, 'instance ' .. id) end
function OnUpdatedStudy(id) table.insert(Updated, 'study ' .. id) end
function OnUpdatedSeries(id) table.insert(Updated, 'series ' .. id) end
function OnUpdatedPatient(id) table.insert(Updated, 'patient ' .. id) end
""")
    stored = requests.post(server.url + "/instances", data=instance("Upd^Ate", "U1"), timeout=10).json()
    iid, study = stored["ID"], stored["ParentStudy"]
    assert requests.put(server.url + f"/instances/{iid}/metadata/1024", data="x", timeout=10).status_code == 200
    assert requests.put(server.url + f"/studies/{study}/attachments/1025", data="y", timeout=10).status_code == 200
    from pacsbox_lua.plugin import engine_of
    assert engine_of(server.app.ctx).wait_idle(20)
    assert lua(server, "for _, u in ipairs(Updated) do print(u) end").splitlines() == \
        [f"instance {iid}", f"study {study}"]


# ---- without the dicom_net plugin ---------------------------------------------------------

def test_dicom_filters_without_dicom_net(live_server, tmp_path):
    """The Lua plugin loads, and its other callbacks work, when dicom_net is not loaded:
    its DICOM filters are optional hook implementations nobody calls."""
    server, _ = node(live_server, tmp_path, FIND_SCRIPT + CSTORE_SCRIPT + OUTGOING_SCRIPT + r"""
function IncomingWorklistRequestFilter(query, origin) return query end
function ReceivedInstanceFilter(tags, origin, info) return tags['Modality'] ~= 'US' end
""", plugins=(lua_plugin,))
    assert requests.post(server.url + "/instances", data=instance("No^Net", "N1"), timeout=10).json()["Status"] == \
        "Success"
    assert requests.post(server.url + "/instances", data=instance("No^Net", "N2", modality="US"),
                         timeout=10).json()["Status"] == "FilteredOut"
    assert lua(server, "print(#Seen)") == "0\n"
    assert requests.get(server.url + "/modalities", timeout=10).status_code == 404


# ---- conversions ------------------------------------------------------------------------

def test_query_conversions_round_trip():
    """The tables the C-FIND filters receive, and the data sets made of their results."""
    from pacsbox import OrthancError
    from pacsbox_lua.dicom import fields_query, json_worklist, query_table, table_fields, worklist_json
    q = Dataset()
    q.SpecificCharacterSet = "ISO_IR 100"
    q.QueryRetrieveLevel = "STUDY"
    q.PatientName = "Müller*"
    q.add_new(0x00091001, "OB", b"\x01\x02")
    q.add_new(0x00280010, "US", 512)
    q.ProcedureCodeSequence = Sequence([])
    from pynetdicom.dsutils import decode, encode
    raw = decode(io.BytesIO(encode(q, False, True)), False, True)      # as pynetdicom gives an identifier
    table = query_table(raw)
    assert table == {"0008,0005": "ISO_IR 100", "0008,0052": "STUDY", "0009,1001": "", "0010,0010": "Müller*",
                     "0028,0010": "512"}
    table["StudyDescription"] = "12"
    back = fields_query(table_fields(table), raw)
    assert (str(back.PatientName), back.Rows, back.StudyDescription, back[0x00091001].VR) == ("Müller*", 512, "12", "OB")
    assert back[0x00081032].VR == "SQ"                               # the received sequences are kept
    assert table_fields([]) == {}
    for bad in ("x", {"PatientName": ["x"]}, {"NoSuchKeyword": "1"}):
        with pytest.raises(OrthancError):
            table_fields(bad)
    wl = Dataset()
    wl.PatientName = ""
    step = Dataset()
    step.ScheduledStationAETitle = ""
    wl.ScheduledProcedureStepSequence = Sequence([step])
    wl.add_new(0x00091010, "LO", "private")                         # left out, as Orthanc
    as_json = worklist_json(wl)
    assert as_json == {"0010,0010": "", "0040,0100": [{"0040,0001": ""}]}
    as_json["0040,0100"][0]["0040,0001"] = "SCANNER1"
    again = json_worklist(as_json, wl)
    assert again.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "SCANNER1"
    assert json_worklist({"0040,0100": [[]]}).ScheduledProcedureStepSequence[0] == Dataset()
    for bad in ([], {"0008,0050": []}, {"0040,0100": "x"}):
        with pytest.raises(OrthancError):
            json_worklist(bad)

