"""The DICOM-side Lua filters side by side on Debian's Orthanc 1.10.1 and on pacsbox (dicom_net
and lua plugins), running the same script with the same options: the same answers to the same
findscu queries (Patient/Study Root and worklists), the same tables given to the filters, the
same C-STORE statuses and stored instances, the same identifiers sent to a scripted remote."""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import requests
from pydicom.data import get_testdata_file

from lua_helpers import side_by_side
from test_lua_dicom_filters import findscu, instance, recorder, storescu, write_worklist  # noqa: F401 (a fixture)

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)
WORKLISTS = "/usr/share/orthanc/plugins/libModalityWorklists.so"
pytestmark = pytest.mark.skipif(ORTHANC is None or not os.path.exists("/usr/bin/findscu"),
                                reason="Debian's Orthanc and dcmtk are needed")

SCRIPT = r"""
Finds = {}
function IncomingFindRequestFilter(query, origin)
   table.insert(Finds, DumpJson(query) .. ' ' .. DumpJson(origin))
   query['5555,0010'] = nil
   if query['0010,0010'] == 'ALIAS' then
      query['0010,0010'] = 'CompressedSamples^MR*'
      query['0008,0020'] = nil
      query['StudyDescription'] = ''
   elseif query['0010,0010'] == 'FAIL' then
      error('find filter failed')
   elseif query['0010,0010'] == 'NOTHING' then
      return nil
   elseif query['0010,0010'] == 'EMPTY' then
      return {}
   end
   return query
end

Worklists = {}
function IncomingWorklistRequestFilter(query, origin)
   table.insert(Worklists, DumpJson(query) .. ' ' .. DumpJson(origin))
   if query['0040,0100'] ~= nil then
      query['0040,0100'][1]['0040,0001'] = origin['RemoteAet']
   end
   if query['0010,0010'] == 'FAIL' then error('worklist filter failed') end
   return query
end

Outgoing = {}
function OutgoingFindRequestFilter(query, modality)
   table.insert(Outgoing, DumpJson(query) .. ' ' .. DumpJson(modality))
   if query['0010,0010'] == 'FAIL' then error('outgoing filter failed') end
   if query['0010,0010'] == 'BAD' then return 'nope' end
   for key, value in pairs(query) do
      if value == '*' then query[key] = '' end
   end
   query['0008,0090'] = 'ADDED'
   return query
end

Updated = {}
function OnUpdatedInstance(id) table.insert(Updated, 'instance ' .. id) end
function OnUpdatedStudy(id) table.insert(Updated, 'study ' .. id) end
function OnUpdatedSeries(id) table.insert(Updated, 'series ' .. id) end
function OnUpdatedPatient(id) table.insert(Updated, 'patient ' .. id) end

Deleted = {}
function OnDeletedInstance(id) table.insert(Deleted, 'instance ' .. id) end
function OnDeletedStudy(id) table.insert(Deleted, 'study ' .. id) end
function OnDeletedSeries(id) table.insert(Deleted, 'series ' .. id) end
function OnDeletedPatient(id) table.insert(Deleted, 'patient ' .. id) end

function ReceivedCStoreInstanceFilter(tags, origin, info)
   if tags['Modality'] == 'CT' then return 0 end
   if tags['Modality'] == 'US' then return 'refused' end
   return 0xA700
end
"""

FILES = [get_testdata_file(n) for n in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm")]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, recorder):
    """``{"orthanc": (url, dicom port), "pacsbox": (url, dicom port)}`` with the same script,
    instances and worklists."""
    d = tmp_path_factory.mktemp("lua-dicom-ref")
    (d / "script.lua").write_text(SCRIPT)
    wl = d / "worklists"
    wl.mkdir()
    write_worklist(wl, "a.wl", "Doe^John", "A1", "SCANNER1")
    write_worklist(wl, "b.wl", "Doe^Jane", "A2", "SCANNER2")
    common = {"LuaScripts": [str(d / "script.lua")], "ExecuteLuaEnabled": True, "DicomAet": "ORTHANC",
              "DicomAlwaysAllowFind": True, "DicomAlwaysAllowFindWorklist": True, "DicomAlwaysAllowStore": True,
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "StableAge": 60,
              "Worklists": {"Enable": True, "Database": str(wl)},
              "DicomModalities": {"rec": ["REMOTE", "127.0.0.1", recorder[0]],
                                  "scanner": {"AET": "SCANNER2", "Host": "127.0.0.1", "Port": 104,
                                              "Manufacturer": "GE"}}}
    with side_by_side(d, common, {"Plugins": [WORKLISTS]}) as (ref, dport, ours, pdport):
        both = {"orthanc": (ref, dport), "pacsbox": (ours, pdport)}
        for url, _ in both.values():
            for f in FILES:
                assert requests.post(url + "/instances", data=open(f, "rb").read(), timeout=30).status_code == 200
        yield both


def _lua(url, code):
    return requests.post(url + "/tools/execute-script", data=code.encode(), timeout=30).text


def _drain(url, name):
    return _lua(url, f"for _, s in ipairs({name}) do print(s) end {name} = {{}}").splitlines()


FIND_QUERIES = [
    ("-S", ["QueryRetrieveLevel=STUDY", "PatientName=ALIAS", "StudyDate", "StudyInstanceUID", "(5555,0010)=ACME"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "PatientName=CompressedSamples*", "StudyDate", "ModalitiesInStudy"]),
    ("-P", ["QueryRetrieveLevel=PATIENT", "PatientName", "PatientID", "SpecificCharacterSet=ISO_IR 100"]),
    ("-S", ["QueryRetrieveLevel=SERIES", "PatientName=FAIL", "SeriesInstanceUID"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "PatientName=NOTHING"]),
    ("-S", ["QueryRetrieveLevel=STUDY", "PatientName=EMPTY"]),
]


@pytest.mark.parametrize("root,keys", FIND_QUERIES, ids=[k[1] for _, k in FIND_QUERIES])
@pytest.mark.parametrize("aet", ["FINDSCU", "SCANNER2"])   # SCANNER2: a GE modality; origin says Generic
def test_incoming_find_request_filter_as_orthanc(pair, tmp_path, root, keys, aet):
    out = {}
    for name, (url, port) in pair.items():
        out[name] = (findscu(port, tmp_path, *keys, root=root, aet=aet, called="ORTHANC"), _drain(url, "Finds"))
    assert out["pacsbox"] == out["orthanc"]
    (status, answers), seen = out["pacsbox"]
    assert len(seen) == 1 and status in ("Success", "Failed: UnableToProcess")
    if keys[1] == "PatientName=ALIAS":
        assert [a["PatientName"] for a in answers] == ["CompressedSamples^MR1"]
        assert "StudyDate" not in answers[0] and "StudyDescription" in answers[0]


# OrthancServer/Resources/Samples/Lua/IncomingFindRequestFilter.lua, unchanged
SAMPLE = r"""
-- This example solves the following problem:
-- https://groups.google.com/d/msg/orthanc-users/PLWKqVVaXLs/n_0x4vKhAgAJ

function IncomingFindRequestFilter(source, origin)
   -- First display the content of the C-Find query
   PrintRecursive(source)
   PrintRecursive(origin)

   -- Remove the "PrivateCreator" tag from the query
   local v = source
   v['5555,0010'] = nil

   return v
end
"""


def test_incoming_find_request_filter_sample_as_orthanc(pair, tmp_path):
    """The sample folder's script, installed through execute-script on both: a query that
    carries a private creator matches again."""
    keys = ["QueryRetrieveLevel=STUDY", "PatientName=CompressedSamples*", "StudyInstanceUID", "(5555,0010)=Vendor"]
    out = {}
    for name, (url, port) in pair.items():
        try:
            _lua(url, "function IncomingFindRequestFilter(query, origin) return query end")
            without = findscu(port, tmp_path, *keys, called="ORTHANC")
            _lua(url, SAMPLE)
            out[name] = (without, findscu(port, tmp_path, *keys, called="ORTHANC"))
        finally:
            _lua(url, SCRIPT)       # the fixture's filter back
    assert out["pacsbox"] == out["orthanc"]
    assert out["pacsbox"][0] == ("Success", [])
    assert len(out["pacsbox"][1][1]) == 3


WORKLIST_QUERIES = [
    ("SCANNER1", ["PatientName", "AccessionNumber", "(0040,0100)[0].ScheduledStationAETitle",
                  "(0040,0100)[0].Modality"]),
    ("SCANNER2", ["PatientName", "AccessionNumber", "(0040,0100)[0].ScheduledStationAETitle"]),
    ("OTHER", ["PatientName", "AccessionNumber", "(0040,0100)[0].ScheduledStationAETitle"]),
    ("SCANNER1", ["PatientName=Doe*", "AccessionNumber"]),
    ("SCANNER1", ["PatientName=FAIL", "AccessionNumber"]),
]


@pytest.mark.parametrize("aet,keys", WORKLIST_QUERIES, ids=[f"{a}-{k[0]}" for a, k in WORKLIST_QUERIES])
def test_incoming_worklist_request_filter_as_orthanc(pair, tmp_path, aet, keys):
    """pacsbox's folder provider against Orthanc's ModalityWorklists plugin, same files."""
    out = {}
    for name, (url, port) in pair.items():
        out[name] = (findscu(port, tmp_path, *keys, root="-W", aet=aet, called="ORTHANC"), _drain(url, "Worklists"))
    assert out["pacsbox"] == out["orthanc"]
    assert len(out["pacsbox"][1]) == 1


def test_received_cstore_instance_filter_as_orthanc(pair, tmp_path):
    """Orthanc 1.10.1's ReceivedCStoreInstanceFilter: 0 discards (Success), another number
    stores, a non-number refuses with 0xA700."""
    out = {}
    for name, (url, port) in pair.items():
        before = set(requests.get(url + "/instances", timeout=10).json())
        statuses = []
        for modality in ("CT", "US", "MR"):
            path = tmp_path / f"{name}{modality}.dcm"
            path.write_bytes(instance("CStore^Ref", "CS" + modality, modality=modality))
            statuses.append(storescu(port, str(path), called="ORTHANC"))
        added = set(requests.get(url + "/instances", timeout=10).json()) - before
        out[name] = (statuses, sorted(requests.get(url + f"/instances/{i}/simplified-tags", timeout=10).json()
                                      ["Modality"] for i in added))
    assert out["pacsbox"] == out["orthanc"]
    assert out["pacsbox"] == ([["Success"], ["Refused: OutOfResources"], ["Success"]], ["MR"])


OUTGOING = [
    {"Level": "Study", "Query": {"PatientName": "DOE*", "StudyDate": "*", "PatientID": "*"}},
    {"Level": "Series", "Query": {"Modality": "*", "StudyInstanceUID": "1.2.3"}, "Normalize": False},
    {"Level": "Study", "Query": {"PatientName": "FAIL"}},
    {"Level": "Study", "Query": {"PatientName": "BAD"}},
]


@pytest.mark.parametrize("body", OUTGOING, ids=[json.dumps(b["Query"]) for b in OUTGOING])
def test_outgoing_find_request_filter_as_orthanc(pair, recorder, body):
    _, received = recorder
    out = {}
    for name, (url, _) in pair.items():
        del received[:]
        r = requests.post(url + "/modalities/rec/query", json=body, timeout=30)
        answer = r.json()
        answer = {k: answer.get(k) for k in ("HttpStatus", "Message", "OrthancStatus")} if r.status_code != 200 \
            else {"ID": bool(answer.get("ID"))}
        out[name] = (r.status_code, answer, list(received), _drain(url, "Outgoing"))
    assert out["pacsbox"] == out["orthanc"]
    assert len(out["pacsbox"][3]) == 1


def test_find_routes_are_not_filtered_as_orthanc(pair, recorder):
    _, received = recorder
    out = {}
    for name, (url, _) in pair.items():
        del received[:]
        r = requests.post(url + "/modalities/rec/find-patient", json={"PatientName": "*"}, timeout=30)
        out[name] = (r.status_code, list(received), _drain(url, "Outgoing"))
    assert out["pacsbox"] == out["orthanc"]
    assert out["pacsbox"][2] == []


def test_on_updated_as_orthanc(pair):
    """``OnUpdated<Level>(id)``: metadata set and deleted, an attachment added; none at
    ingest, as Orthanc 1.10.1."""
    out = {}
    data = instance("Upd^Ref", "UPD1")
    for name, (url, _) in pair.items():
        _drain(url, "Updated")
        stored = requests.post(url + "/instances", data=data, timeout=10).json()
        iid, study = stored["ID"], stored["ParentStudy"]
        codes = [requests.put(url + f"/instances/{iid}/metadata/1024", data="x", timeout=10).status_code,
                 requests.put(url + f"/studies/{study}/attachments/1025", data="y", timeout=10).status_code,
                 requests.delete(url + f"/instances/{iid}/metadata/1024", timeout=10).status_code]
        deadline = time.monotonic() + 10
        seen: list = []
        while time.monotonic() < deadline and len(seen) < 3:
            time.sleep(0.1)
            seen += _drain(url, "Updated")
        time.sleep(0.5)
        out[name] = (codes, seen + _drain(url, "Updated"))
    assert out["pacsbox"] == out["orthanc"]
    assert out["pacsbox"][1] == [f"instance {iid}", f"study {study}", f"instance {iid}"]


def test_on_deleted_as_orthanc(pair):
    """``OnDeleted<Level>(id)`` for each resource a deletion removes: an instance of a
    two-instance series (that instance only), then the series (the last instance, the
    series, and the study and patient left empty), as Orthanc 1.10.1. Orthanc's order
    follows its SQLite triggers: the sets are compared."""
    out = {}
    import io

    import pydicom
    from pydicom.uid import generate_uid

    first = instance("Del^Ref", "DEL1")
    ds = pydicom.dcmread(io.BytesIO(first))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # same series
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    second = buf.getvalue()
    for name, (url, _) in pair.items():
        _drain(url, "Deleted")
        a = requests.post(url + "/instances", data=first, timeout=10).json()
        b = requests.post(url + "/instances", data=second, timeout=10).json()
        events = []
        for path in (f"/instances/{a['ID']}", f"/series/{b['ParentSeries']}"):
            assert requests.delete(url + path, timeout=10).status_code == 200
            deadline = time.monotonic() + 10
            seen: list = []
            while time.monotonic() < deadline and not seen:
                time.sleep(0.1)
                seen += _drain(url, "Deleted")
            time.sleep(0.3)
            events.append(sorted(seen + _drain(url, "Deleted")))
        out[name] = (events, a, b)
    for name in out:
        events, a, b = out[name]
        assert events == [[f"instance {a['ID']}"],
                          sorted([f"instance {b['ID']}", f"series {b['ParentSeries']}", f"study {b['ParentStudy']}",
                                  f"patient {b['ParentPatient']}"])], name
    assert out["pacsbox"] == out["orthanc"]
