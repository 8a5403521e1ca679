"""``/patients``, ``/studies``, ``/series``, ``/instances``: listings, details, navigation,
statistics, shared tags, modules, metadata, attachments, deletion and the 404/405 shapes,
as Orthanc 1.10.1 answers them (reference section 2; every expectation was checked on
the reference server)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pacsbox import orthanc_id as oid

import dicomgen as g

PA, PB, PC = oid("PA"), oid("PB"), oid("PC")
ST_A, ST_C = oid("PA", "7.1"), oid("PC", "7.3")
SE_A, SE_C1, SE_C2 = oid("PA", "7.1", "7.1.1"), oid("PC", "7.3", "7.3.1"), oid("PC", "7.3", "7.3.2")
I_A1, I_A2 = oid("PA", "7.1", "7.1.1", "7.1.1.1"), oid("PA", "7.1", "7.1.1", "7.1.1.2")
I_C1, I_C2 = oid("PC", "7.3", "7.3.1", "7.3.1.1"), oid("PC", "7.3", "7.3.2", "7.3.2.1")

FILES = {
    "a1": g.instance("PA", "7.1", "7.1.1", "7.1.1.1", PatientName="Doe^John", PatientSex="M",
                     PatientBirthDate="19800101", StudyDate="20230115", StudyTime="101500", AccessionNumber="ACC1",
                     StudyDescription="Chest CT", Modality="CT", SeriesDescription="axial", InstanceNumber="1"),
    "a2": g.instance("PA", "7.1", "7.1.1", "7.1.1.2", PatientName="Doe^John", StudyDate="20230115",
                     AccessionNumber="ACC1", Modality="CT", InstanceNumber="2", ImagesInAcquisition="3"),
    "b": g.instance("PB", "7.2", "7.2.1", "7.2.1.1", PatientName="DOE^JANE", PatientSex="F", Modality="MR"),
    "c1": g.instance("PC", "7.3", "7.3.1", "7.3.1.1", PatientName="Smith^Anna", StudyDescription="abdomen",
                     Modality="US", AccessionNumber="XYZ"),
    "c2": g.instance("PC", "7.3", "7.3.2", "7.3.2.1", PatientName="Smith^Anna", Modality="SR", AccessionNumber="XYZ"),
}


@pytest.fixture
def loaded(client):
    for name in ("a1", "a2", "b", "c1", "c2"):
        assert client.simulate_post("/instances", body=FILES[name]).json["Status"] == "Success"
    return client


def test_lists_in_insertion_order_with_paging(loaded):
    c = loaded
    assert c.simulate_get("/patients").json == [PA, PB, PC]
    assert c.simulate_get("/instances").json == [I_A1, I_A2, oid("PB", "7.2", "7.2.1", "7.2.1.1"), I_C1, I_C2]
    assert c.simulate_get("/patients", query_string="since=1&limit=1").json == [PB]
    assert c.simulate_get("/patients", query_string="since=10&limit=2").json == []
    assert [p["ID"] for p in c.simulate_get("/patients", query_string="expand").json] == [PA, PB, PC]


@pytest.mark.parametrize("query, details", [
    ("limit=2", 'Missing "since" argument for GET request against: /patients/'),
    ("since=2", 'Missing "limit" argument for GET request against: /patients/'),
])
def test_since_and_limit_go_together(loaded, query, details):
    r = loaded.simulate_get("/patients", query_string=query)
    assert r.status_code == 400
    assert r.json == {"Details": details, "HttpError": "Bad Request", "HttpStatus": 400, "Message": "Bad request",
                      "Method": "GET", "OrthancError": "Bad request", "OrthancStatus": 8, "Uri": "/patients"}


@pytest.mark.parametrize("query", ["since=x&limit=2", "since=&limit=2", "since=%201&limit=2", "since=1_0&limit=2",
                                   "since=1.5&limit=2", "since=1&limit=18446744073709551616",
                                   pytest.param("since=1&limit=" + "9" * 5000, id="5000 digits"),
                                   "since=%C2%B2&limit=1", "since=-&limit=1"])
def test_bad_since_is_a_bad_parameter_type(loaded, query):
    r = loaded.simulate_get("/patients", query_string=query)
    assert r.status_code == 400 and r.json["OrthancStatus"] == 5
    assert r.json["Details"] == "Syntax error in some user-supplied data"


@pytest.mark.parametrize("query, expected", [
    # Orthanc 1.10.1 reads unsigned 64-bit integers whose bits the database takes as signed:
    # a negative (or >= 2**63) since starts at the first one, a negative limit is no limit
    ("since=-1&limit=2", [PA, PB]), ("since=9223372036854775808&limit=2", [PA, PB]),
    ("since=-9223372036854775808&limit=2", [PA, PB]), ("since=9223372036854775807&limit=2", []),
    ("since=99999999999&limit=2", []), ("since=1&limit=-5", [PB, PC]),
    ("since=1&limit=9223372036854775808", [PB, PC]), ("since=-0&limit=1", [PA]), ("since=1&limit=0", []),
    pytest.param("since=" + "0" * 5000 + "1&limit=1", [PB], id="5000 leading zeros"),
])
def test_since_and_limit_are_read_as_the_reference_does(loaded, query, expected):
    assert loaded.simulate_get("/patients", query_string=query).json == expected


def test_resource_fields(loaded):
    c = loaded
    patient = c.simulate_get(f"/patients/{PA}").json
    assert set(patient) == {"ID", "IsStable", "LastUpdate", "MainDicomTags", "Studies", "Type"}
    assert patient["MainDicomTags"] == {"PatientBirthDate": "19800101", "PatientID": "PA", "PatientName": "Doe^John",
                                        "PatientSex": "M"}
    assert patient["Studies"] == [ST_A] and patient["Type"] == "Patient" and patient["IsStable"] is False
    assert len(patient["LastUpdate"]) == 15 and patient["LastUpdate"][8] == "T"
    study = c.simulate_get(f"/studies/{ST_A}").json
    assert study["MainDicomTags"] == {"AccessionNumber": "ACC1", "StudyDate": "20230115",
                                      "StudyDescription": "Chest CT", "StudyInstanceUID": "7.1", "StudyTime": "101500"}
    assert study["PatientMainDicomTags"] == patient["MainDicomTags"]
    assert study["ParentPatient"] == PA and study["Series"] == [SE_A] and study["Type"] == "Study"
    series = c.simulate_get(f"/series/{SE_A}").json
    assert series["MainDicomTags"] == {"Modality": "CT", "SeriesDescription": "axial", "SeriesInstanceUID": "7.1.1"}
    assert series["Instances"] == [I_A1, I_A2] and series["ParentStudy"] == ST_A
    assert series["ExpectedNumberOfInstances"] is None and series["Status"] == "Unknown"
    inst = c.simulate_get(f"/instances/{I_A1}").json
    assert set(inst) == {"FileSize", "FileUuid", "ID", "IndexInSeries", "MainDicomTags", "ParentSeries", "Type"}
    assert inst["FileSize"] == len(FILES["a1"]) and inst["IndexInSeries"] == 1
    assert inst["MainDicomTags"] == {"InstanceNumber": "1", "SOPInstanceUID": "7.1.1.1"}


def test_study_keeps_the_patient_tags_of_its_first_instance(client):
    client.simulate_post("/instances", body=g.instance("PX", "5.1", "5.1.1", "5.1.1.1", PatientName="First^Name",
                                                       OtherPatientIDs="X1"))
    client.simulate_post("/instances", body=g.instance("PX", "5.2", "5.2.1", "5.2.1.1", PatientName=""))
    assert client.simulate_get(f"/patients/{oid('PX')}").json["MainDicomTags"]["PatientName"] == "First^Name"
    second = client.simulate_get(f"/studies/{oid('PX', '5.2')}").json
    assert second["PatientMainDicomTags"] == {"PatientID": "PX", "PatientName": ""}
    assert second["MainDicomTags"] == {"StudyInstanceUID": "5.2"}


def test_children_come_in_orthanc_order(loaded):
    c = loaded
    # Orthanc prepends the children of each parent: later studies' series come first
    c.simulate_post("/instances", body=g.instance("PC", "7.9", "7.9.1", "7.9.1.1"))
    se_9 = oid("PC", "7.9", "7.9.1")
    assert [s["ID"] for s in c.simulate_get(f"/patients/{PC}/series").json] == [se_9, SE_C1, SE_C2]
    assert [i["ID"] for i in c.simulate_get(f"/patients/{PC}/instances").json] == [
        I_C2, I_C1, oid("PC", "7.9", "7.9.1", "7.9.1.1")]
    assert [s["ID"] for s in c.simulate_get(f"/patients/{PC}/studies").json] == [ST_C, oid("PC", "7.9")]
    assert [i["ID"] for i in c.simulate_get(f"/studies/{ST_C}/instances").json] == [I_C2, I_C1]
    assert c.simulate_get(f"/series/{SE_A}/instances").json == [c.simulate_get(f"/instances/{I_A1}").json,
                                                                  c.simulate_get(f"/instances/{I_A2}").json]


def test_parent_routes(loaded):
    c = loaded
    assert c.simulate_get(f"/instances/{I_C2}/series").json["ID"] == SE_C2
    assert c.simulate_get(f"/instances/{I_C2}/study").json["ID"] == ST_C
    assert c.simulate_get(f"/instances/{I_C2}/patient").json["ID"] == PC
    assert c.simulate_get(f"/series/{SE_C2}/study").json == c.simulate_get(f"/studies/{ST_C}").json
    assert c.simulate_get(f"/series/{SE_C2}/patient").json["MainDicomTags"]["PatientName"] == "Smith^Anna"
    assert c.simulate_get(f"/studies/{ST_C}/patient").json["ID"] == PC


def test_statistics(loaded):
    c = loaded
    size_c = len(FILES["c1"]) + len(FILES["c2"])
    assert c.simulate_get(f"/patients/{PC}/statistics").json == {
        "CountInstances": 2, "CountSeries": 2, "CountStudies": 1,
        "DicomDiskSize": str(size_c), "DicomDiskSizeMB": 0, "DicomUncompressedSize": str(size_c),
        "DicomUncompressedSizeMB": 0, "DiskSize": str(size_c), "DiskSizeMB": 0, "UncompressedSize": str(size_c),
        "UncompressedSizeMB": 0}
    assert c.simulate_get(f"/studies/{ST_C}/statistics").json["CountSeries"] == 2
    assert "CountStudies" not in c.simulate_get(f"/studies/{ST_C}/statistics").json
    inst = c.simulate_get(f"/instances/{I_C1}/statistics").json
    assert "CountInstances" not in inst and inst["DiskSize"] == str(len(FILES["c1"]))
    total = sum(len(f) for f in FILES.values())
    assert c.simulate_get("/statistics").json == {
        "CountInstances": 5, "CountPatients": 3, "CountSeries": 4, "CountStudies": 3,
        "TotalDiskSize": str(total), "TotalDiskSizeMB": 0, "TotalUncompressedSize": str(total),
        "TotalUncompressedSizeMB": 0}


def test_shared_tags(loaded):
    c = loaded
    shared = c.simulate_get(f"/patients/{PC}/shared-tags", query_string="simplify").json
    assert shared == {"AccessionNumber": "XYZ", "PatientID": "PC", "PatientName": "Smith^Anna",
                      "SOPClassUID": g.SC, "StudyInstanceUID": "7.3"}
    full = c.simulate_get(f"/patients/{PC}/shared-tags").json
    assert full["0010,0010"] == {"Name": "PatientName", "Type": "String", "Value": "Smith^Anna"}
    assert c.simulate_get(f"/patients/{PC}/shared-tags", query_string="short").json["0010,0020"] == "PC"
    r = c.simulate_get(f"/instances/{I_C1}/shared-tags")
    assert r.status_code == 404 and r.json["OrthancStatus"] == 17


def test_module_reads_the_last_instance(client):
    for i, (st, se, sop) in enumerate([("9.1", "9.1.1", "9.1.1.1"), ("9.1", "9.1.1", "9.1.1.2"),
                                       ("9.1", "9.1.2", "9.1.2.1"), ("9.2", "9.2.1", "9.2.1.1")]):
        client.simulate_post("/instances", body=g.instance("PMOD", st, se, sop, PatientName=f"n{i}",
                                                           SeriesDescription=f"d{i}", StudyDescription=f"s{i}",
                                                           Modality="OT"))
    assert client.simulate_get(f"/patients/{oid('PMOD')}/module").json == {
        "0010,0010": {"Name": "PatientName", "Type": "String", "Value": "n3"},
        "0010,0020": {"Name": "PatientID", "Type": "String", "Value": "PMOD"}}
    assert client.simulate_get(f"/studies/{oid('PMOD', '9.1')}/module", query_string="simplify").json == {
        "StudyDescription": "s2", "StudyInstanceUID": "9.1"}
    assert client.simulate_get(f"/studies/{oid('PMOD', '9.1')}/module-patient", query_string="simplify").json == {
        "PatientID": "PMOD", "PatientName": "n2"}
    assert client.simulate_get(f"/series/{oid('PMOD', '9.1', '9.1.1')}/module", query_string="short").json == {
        "0008,0060": "OT", "0008,103e": "d1", "0020,000e": "9.1.1"}
    inst = client.simulate_get(f"/instances/{oid('PMOD', '9.1', '9.1.1', '9.1.1.1')}/module").json
    assert set(inst) == {"0008,0016", "0008,0018"}


def test_metadata(loaded):
    c = loaded
    assert c.simulate_get(f"/instances/{I_A1}/metadata").json == [
        "IndexInSeries", "ReceptionDate", "RemoteAET", "Origin", "TransferSyntax", "SopClassUid", "RemoteIP",
        "HttpUsername"]  # no PixelDataOffset: the file has no pixel data
    meta = c.simulate_get(f"/instances/{I_A1}/metadata", query_string="expand").json
    assert meta["Origin"] == "RestApi" and meta["RemoteAET"] == "" and meta["IndexInSeries"] == "1"
    assert meta["TransferSyntax"] == "1.2.840.10008.1.2.1" and meta["SopClassUid"] == g.SC
    r = c.simulate_get(f"/instances/{I_A1}/metadata/Origin")
    assert r.text == "RestApi" and r.headers["content-type"] == "text/plain"
    assert r.headers["etag"] == '"0-' + hashlib.md5(b"RestApi").hexdigest() + '"'
    assert c.simulate_get(f"/series/{SE_A}/metadata").json == ["RemoteAET", "LastUpdate"]
    assert c.simulate_get(f"/patients/{PA}/metadata", query_string="expand").json == {
        "LastUpdate": c.simulate_get(f"/patients/{PA}").json["LastUpdate"]}


def test_user_metadata_rules(loaded, make_app):
    c = loaded
    url = f"/patients/{PA}/metadata"
    assert c.simulate_put(url + "/1025", body="hello").status_code == 200
    assert c.simulate_get(url + "/1025").text == "hello"
    assert c.simulate_get(url).json == ["LastUpdate", "1025"]
    assert c.simulate_put(url + "/LastUpdate", body="x").status_code == 403
    assert c.simulate_put(f"/instances/{I_A1}/metadata/Origin", body="x").status_code == 403
    assert c.simulate_put(url + "/1023", body="x").status_code == 403
    assert c.simulate_put(url + "/70000", body="x").status_code == 403
    r = c.simulate_put(url + "/MyMeta", body="x")
    assert r.status_code == 404 and r.json["OrthancStatus"] == 7
    assert c.simulate_get(url + "/1030").status_code == 404 and c.simulate_get(url + "/1030").content == b""
    assert c.simulate_delete(url + "/1025").status_code == 200
    r = c.simulate_delete(url + "/1025")
    assert r.status_code == 404 and r.json["OrthancStatus"] == 17
    kinds = [(ch["ChangeType"], ch["ID"]) for ch in c.simulate_get("/changes").json["Changes"]][-2:]
    assert kinds == [("UpdatedMetadata", PA), ("UpdatedMetadata", PA)]  # the PUT and the DELETE


def test_user_metadata_names_from_the_configuration(make_app):
    import falcon.testing
    c = falcon.testing.TestClient(make_app({"UserMetadata": {"Sample": 1024}}))
    iid = c.simulate_post("/instances", body=g.instance()).json["ID"]
    assert c.simulate_put(f"/instances/{iid}/metadata/1024", body="v").status_code == 200
    assert c.simulate_get(f"/instances/{iid}/metadata/Sample").text == "v"
    assert c.simulate_get(f"/instances/{iid}/metadata").json[-1] == "Sample"


def test_attachments(loaded, app):
    c = loaded
    base = f"/instances/{I_A1}/attachments"
    assert c.simulate_get(base).json == ["dicom"]
    assert c.simulate_get(base + "/dicom").json == ["compress", "compressed-data", "compressed-md5", "compressed-size",
                                                     "data", "info", "is-compressed", "md5", "size", "uncompress",
                                                     "verify-md5", "uuid"]
    md5 = hashlib.md5(FILES["a1"]).hexdigest()
    uuid = c.simulate_get(f"/instances/{I_A1}").json["FileUuid"]
    assert c.simulate_get(base + "/dicom/info").json == {
        "CompressedMD5": md5, "CompressedSize": len(FILES["a1"]), "ContentType": 1, "UncompressedMD5": md5,
        "UncompressedSize": len(FILES["a1"]), "Uuid": uuid}
    assert c.simulate_get(base + "/dicom/md5").text == md5
    assert c.simulate_get(base + "/dicom/size").text == str(len(FILES["a1"]))
    assert c.simulate_get(base + "/dicom/is-compressed").text == "0"
    data = c.simulate_get(base + "/dicom/data")
    assert data.content == FILES["a1"] and data.headers["content-disposition"] == f'filename="{uuid}.dcm"'
    assert c.simulate_post(base + "/dicom/verify-md5").json == {}
    assert c.simulate_get(base, params={"full": ""}).json == {"dicom": 1}
    assert c.simulate_get(f"/studies/{ST_A}/attachments", params={"full": ""}).json == {}
    raw = c.simulate_get(base + "/dicom/compressed-data")  # the stored bytes, no file name
    assert raw.content == FILES["a1"] and raw.headers["content-type"] == "application/octet-stream"
    assert "content-disposition" not in raw.headers
    for op in ("compress", "uncompress", "verify-md5"):  # POST-only actions
        r = c.simulate_get(f"{base}/dicom/{op}")
        assert (r.status_code, r.headers["allow"], r.content) == (405, "POST", b"")
    assert c.simulate_put(base + "/dicom", body=b"x").status_code == 403
    assert c.simulate_delete(base + "/dicom").status_code == 403
    r = c.simulate_get(base + "/nope")
    assert r.status_code == 404 and r.json["OrthancStatus"] == 7
    r = c.simulate_get(base + "/1024")
    assert r.status_code == 404 and r.json["OrthancStatus"] == 17
    assert c.simulate_get(f"/patients/{PA}/attachments").json == []
    # a corrupted file is detected
    Path(app.ctx.storage.path(uuid)).write_bytes(b"x" + FILES["a1"][1:])
    r = c.simulate_post(base + "/dicom/verify-md5")
    assert r.status_code == 500 and r.json["OrthancStatus"] == 20


def test_file_route(loaded):
    r = loaded.simulate_get(f"/instances/{I_A1}/file")
    uuid = loaded.simulate_get(f"/instances/{I_A1}").json["FileUuid"]
    assert r.content == FILES["a1"] and r.headers["content-type"] == "application/dicom"
    assert r.headers["content-disposition"] == f'filename="{uuid}.dcm"'
    js = loaded.simulate_get(f"/instances/{I_A1}/file", headers={"Accept": "application/dicom+json"})
    assert js.headers["content-type"] == "application/dicom+json"
    assert js.json["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}


@pytest.mark.parametrize("route", ["/patients/{U}", "/studies/{U}", "/series/{U}", "/instances/{U}"])
def test_unknown_id_on_a_resource_is_an_empty_404(loaded, route):
    for method in ("GET", "DELETE"):
        r = loaded.simulate_request(method, route.format(U=oid("nope")))
        assert r.status_code == 404 and r.content == b""


@pytest.mark.parametrize("route", ["/patients/{U}/statistics", "/studies/{U}/series", "/series/{U}/study",
                                   "/instances/{U}/tags", "/instances/{U}/file", "/series/{U}/metadata",
                                   "/patients/{U}/module", "/studies/{U}/shared-tags", "/instances/{U}/attachments",
                                   "/instances/{U}/content/0010-0010", "/studies/abc/instances"])
def test_unknown_id_on_a_sub_route_is_the_json_error(loaded, route):
    path = route.format(U=oid("nope"))
    r = loaded.simulate_get(path)
    assert r.status_code == 404
    assert r.json == {"HttpError": "Not Found", "HttpStatus": 404, "Message": "Unknown resource", "Method": "GET",
                      "OrthancError": "Unknown resource", "OrthancStatus": 17, "Uri": path}


def test_no_route_and_wrong_method(loaded):
    r = loaded.simulate_get("/nonexistent")
    assert r.status_code == 404 and r.json["OrthancStatus"] == 17 and r.json["Uri"] == "/nonexistent"
    for method, path, allow in (("DELETE", "/system", "GET"), ("POST", "/patients", "GET"),
                                ("PUT", "/instances", "GET,POST"), ("POST", "/changes", "GET,DELETE"),
                                ("PUT", f"/patients/{PA}", "GET,DELETE"), ("GET", "/tools/find", "POST"),
                                ("POST", f"/instances/{I_A1}/metadata/1025", "GET,PUT,DELETE")):
        r = loaded.simulate_request(method, path)
        assert (r.status_code, r.headers.get("allow"), r.content) == (405, allow, b""), path


@pytest.mark.parametrize("path", ["/system", "/nonexistent", "/instances", f"/patients/{PA}"])
def test_methods_outside_the_rest_api_as_the_reference(loaded, path):
    # Orthanc 1.10.1 answers HEAD and OPTIONS with an empty 404 and other methods it does
    # not know with an empty 400, on any path, before routing
    for method, status in (("HEAD", 404), ("OPTIONS", 404), ("PATCH", 400), ("TRACE", 400)):
        r = loaded.simulate_request(method, path)
        assert (r.status_code, r.content, r.headers.get("allow")) == (status, b"", None), (method, path)
    assert loaded.simulate_get(f"/patients/{PA}").status_code == 200  # and the API still answers


def test_delete_cascades_and_removes_files(loaded, app):
    c = loaded
    root = Path(app.ctx.config.path("StorageDirectory"))
    files = lambda: sorted(p for p in root.glob("??/??/*") if p.is_file())  # noqa: E731
    assert len(files()) == 5
    uuid = c.simulate_get(f"/instances/{I_A2}").json["FileUuid"]
    assert c.simulate_delete(f"/instances/{I_A2}").json == {
        "RemainingAncestor": {"ID": SE_A, "Path": f"/series/{SE_A}", "Type": "Series"}}
    assert not Path(app.ctx.storage.path(uuid)).exists() and len(files()) == 4
    assert c.simulate_delete(f"/instances/{I_A1}").json == {"RemainingAncestor": None}
    assert c.simulate_get(f"/patients/{PA}").status_code == 404  # empty parents went too
    assert c.simulate_delete(f"/series/{SE_C2}").json == {
        "RemainingAncestor": {"ID": ST_C, "Path": f"/studies/{ST_C}", "Type": "Study"}}
    assert c.simulate_delete(f"/studies/{oid('PB', '7.2')}").json == {"RemainingAncestor": None}
    assert c.simulate_get("/patients").json == [PC]
    assert c.simulate_delete(f"/patients/{PC}").json == {"RemainingAncestor": None}
    assert files() == [] and c.simulate_get("/statistics").json["CountInstances"] == 0
    # the change-log rows of deleted resources are gone, nothing logs the deletion
    assert c.simulate_get("/changes").json == {"Changes": [], "Done": True, "Last": 15}
    assert c.simulate_delete(f"/patients/{PC}").status_code == 404


def test_lookup(loaded):
    c = loaded
    assert c.simulate_post("/tools/lookup", body="7.1").json == [{"ID": ST_A, "Path": f"/studies/{ST_A}",
                                                                  "Type": "Study"}]
    assert c.simulate_post("/tools/lookup", body="PA").json == [{"ID": PA, "Path": f"/patients/{PA}",
                                                                 "Type": "Patient"}]
    assert c.simulate_post("/tools/lookup", body="7.1.1.2").json[0]["Type"] == "Instance"
    assert c.simulate_post("/tools/lookup", body="ACC1").json == []
    assert c.simulate_post("/tools/lookup", body="").json == []


def test_lookup_ignores_case_and_padding_as_the_reference(client):
    # Orthanc 1.10.1 compares normalized identifiers: "5mr2" finds PatientID "5MR2", a
    # stored "ID7 " is found by "id7", and an empty body finds an empty PatientID
    for f in (g.instance("5MR2", "8.1", "8.1.1", "8.1.1.1"), g.instance("ID7 ", "8.2", "8.2.1", "8.2.1.1"),
              g.instance("", "8.3", "8.3.1", "8.3.1.1")):
        assert client.simulate_post("/instances", body=f).json["Status"] == "Success"
    for f in (g.instance("AB_12", "8.5", "8.5.1", "8.5.1.1"),
              g.instance("Müler", "8.6", "8.6.1", "8.6.1.1", SpecificCharacterSet="ISO_IR 100")):
        assert client.simulate_post("/instances", body=f).json["Status"] == "Success"
    found = {body: [x["ID"] for x in client.simulate_post("/tools/lookup", body=body).json]
             for body in ("5mr2", " 5MR2\n", "id7", "ID7", "", "ab 12", "AB%12", "MÜLER", "mler")}
    # "_" and "%" count as spaces and non-ASCII characters are dropped (Orthanc's normalization)
    assert found == {"5mr2": [oid("5MR2")], " 5MR2\n": [oid("5MR2")], "id7": [oid("ID7")], "ID7": [oid("ID7")],
                     "": [oid("")], "ab 12": [oid("AB_12")], "AB%12": [oid("AB_12")], "MÜLER": [oid("Müler")],
                     "mler": [oid("Müler")]}


def test_index_in_series_metadata_is_the_value_without_padding(client):
    f = g.instance("PX", "8.4", "8.4.1", "8.4.1.1", InstanceNumber="122")  # stored as "122 "
    assert b"122 " in f
    iid = client.simulate_post("/instances", body=f).json["ID"]
    assert client.simulate_get(f"/instances/{iid}/metadata/IndexInSeries").text == "122"
    assert client.simulate_get(f"/instances/{iid}").json["IndexInSeries"] == 122


def test_tools(client):
    for level in ("study", "series", "instance"):
        uid = client.simulate_get("/tools/generate-uid", query_string=f"level={level}").text
        assert uid.startswith("1.2.") and len(uid) <= 64 and all(p.isdigit() for p in uid.split("."))
    pid = client.simulate_get("/tools/generate-uid", query_string="level=patient").text
    assert len(pid) == 36 and pid.count("-") == 4
    assert client.simulate_get("/tools/generate-uid", query_string="level=foo").status_code == 404
    assert client.simulate_get("/tools/generate-uid", query_string="level=Study").status_code == 404  # case matters
    now = client.simulate_get("/tools/now").text
    assert len(now) == 15 and now[8] == "T" and now[:8].isdigit()
    tools = client.simulate_get("/tools").json
    assert "find" in tools and "lookup" in tools and len(tools) == 33


def test_system(client):
    system = client.simulate_get("/system").json
    assert system["ApiVersion"] == 16 and system["Version"] == "1.10.1" and system["DatabaseVersion"] == 6
    assert system["Product"] == "pacsbox" and system["IsHttpServerSecure"] is True
    assert system["DicomAet"] == "PACSBOX" and system["Name"] == "pacsbox"


def test_instances_tags(loaded):
    c = loaded
    for fmt in ("", "simplify", "short"):
        answer = c.simulate_get(f"/studies/{ST_A}/instances-tags", query_string=fmt)
        assert answer.headers["content-type"] == "application/json; charset=utf-8"
        assert list(answer.json) == sorted([I_A1, I_A2])  # keys sorted, as the reference
        for iid in (I_A1, I_A2):
            assert answer.json[iid] == c.simulate_get(f"/instances/{iid}/tags", query_string=fmt).json
    assert set(c.simulate_get(f"/patients/{PC}/instances-tags", query_string="simplify").json) == {I_C1, I_C2}
    assert c.simulate_get(f"/series/{SE_C2}/instances-tags", query_string="short").json[I_C2]["0010,0010"] == \
        "Smith^Anna"
    assert c.simulate_get(f"/instances/{I_A1}/instances-tags").status_code == 404
    assert c.simulate_get("/studies/nope/instances-tags").status_code == 404


@pytest.mark.parametrize("missing", [0, 1])
def test_instances_tags_leaves_out_an_instance_whose_file_is_gone(loaded, app, missing):
    iid = sorted([I_A1, I_A2])[missing]
    Path(app.ctx.storage.path(loaded.simulate_get(f"/instances/{iid}").json["FileUuid"])).unlink()
    r = loaded.simulate_get(f"/studies/{ST_A}/instances-tags", query_string="short")
    assert r.status_code == 200 and list(r.json) == [x for x in sorted([I_A1, I_A2]) if x != iid]


def test_default_encoding_changes_how_files_without_a_character_set_read(client):
    f = g.instance("ENC1", "5.5.1", "5.5.1.1", "5.5.1.1.1", PatientName="Mxx").replace(b"Mxx", "Mü".encode())
    iid = client.simulate_post("/instances", body=f).json["ID"]
    assert client.simulate_get("/tools/default-encoding").text == "Latin1"
    assert client.simulate_get(f"/instances/{iid}/simplified-tags").json["PatientName"] == "MÃ¼"
    r = client.simulate_put("/tools/default-encoding", body="Utf8")
    assert (r.status_code, r.text) == (200, "Utf8")
    assert client.simulate_get("/tools/default-encoding").text == "Utf8"
    assert client.simulate_get(f"/instances/{iid}/simplified-tags").json["PatientName"] == "Mü"
    # the main tags were decoded when the file arrived (as the reference)
    assert client.simulate_get(f"/instances/{iid}/patient").json["MainDicomTags"]["PatientName"] == "MÃ¼"
    for bad in ("Klingon", "Latin1\n"):
        r = client.simulate_put("/tools/default-encoding", body=bad)
        assert r.status_code == 400 and r.json["OrthancStatus"] == 3
    assert client.simulate_get("/tools/default-encoding").text == "Utf8"
    assert client.simulate_put("/tools/default-encoding", body="latin1").text == "Latin1"  # any case


def test_log_level_per_category(client):
    import logging

    from pacsbox.rest.tools import LOG_CATEGORIES
    names = [n for loggers in LOG_CATEGORIES.values() for n in loggers]
    before = {n: logging.getLogger(n).level for n in names}
    try:
        assert client.simulate_get("/tools/log-level").text == "default"
        assert client.simulate_put("/tools/log-level", body="verbose").text == ""
        assert client.simulate_get("/tools/log-level-sqlite").text == "verbose"
        assert logging.getLogger("pacsbox.index").level == logging.DEBUG
        assert client.simulate_put("/tools/log-level-http", body="trace").status_code == 200
        assert logging.getLogger("waitress").level == 5 and logging.getLogger("pacsbox.jobs").level == logging.DEBUG
        # the global answer is the most verbose category's
        assert [client.simulate_get(f"/tools/log-level{s}").text for s in ("", "-http", "-jobs")] == \
            ["trace", "trace", "verbose"]
        r = client.simulate_put("/tools/log-level-jobs", body="loud")
        assert r.status_code == 400 and r.json["Details"] == 'Verbosity can be "default", "verbose" or "trace": loud'
        client.simulate_put("/tools/log-level", body="default")
        assert client.simulate_get("/tools/log-level").text == "default"
        assert logging.getLogger("pacsbox.http").level == logging.INFO
    finally:
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)


def test_user_attachments(make_app):
    import falcon.testing
    app = make_app({"UserContentType": {"report": [1025, "application/pdf"], "notes": 1026, "bad": 12}})
    c = falcon.testing.TestClient(app)
    assert c.simulate_post("/instances", body=FILES["a1"]).json["Status"] == "Success"
    base = f"/instances/{I_A1}/attachments"
    r = c.simulate_put(base + "/1024", body=b"hello world")
    assert (r.status_code, r.json, r.headers["content-type"]) == (200, {}, "application/json")
    assert c.simulate_get(base).json == ["dicom", "1024"]
    info = c.simulate_get(base + "/1024/info").json
    assert info["UncompressedSize"] == 11 and info["ContentType"] == 1024
    assert info["UncompressedMD5"] == hashlib.md5(b"hello world").hexdigest()
    first = Path(app.ctx.storage.path(info["Uuid"]))
    assert first.read_bytes() == b"hello world"
    data = c.simulate_get(base + "/1024/data")
    assert (data.content, data.headers["content-type"]) == (b"hello world", "application/octet-stream")
    assert data.headers["content-disposition"] == f'filename="{info["Uuid"]}"'
    # replacing: new bytes, the old file removed, an UpdatedAttachment change
    assert c.simulate_put(base + "/1024", body=b"second").status_code == 200
    assert c.simulate_get(base + "/1024/data").content == b"second" and not first.exists()
    last = c.simulate_get("/changes", params={"last": ""}).json["Changes"][0]
    assert (last["ChangeType"], last["ID"]) == ("UpdatedAttachment", I_A1)
    # names and MIME types from UserContentType; a study can carry attachments too
    assert c.simulate_put(f"/studies/{ST_A}/attachments/report", body=b"%PDF-1.4").status_code == 200
    assert c.simulate_get(f"/studies/{ST_A}/attachments", params={"full": ""}).json == {"report": 1025}
    pdf = c.simulate_get(f"/studies/{ST_A}/attachments/1025/data")
    assert (pdf.content, pdf.headers["content-type"]) == (b"%PDF-1.4", "application/pdf")
    assert c.simulate_put(base + "/notes", body=b"n").status_code == 200
    assert c.simulate_get(base).json == ["dicom", "1024", "notes"]
    # reserved numbers and the DICOM file are refused (403, empty); unknown names are 404
    for name in ("1023", "65536", "dicom", "12"):
        r = c.simulate_put(f"{base}/{name}", body=b"x")
        assert (r.status_code, r.content) == (403, b""), name
    for name in ("bad", "1_024", " 1024", "١٠٢٥"):  # names must be known or ASCII digits
        r = c.simulate_put(f"{base}/{name}", body=b"x")
        assert r.status_code == 404 and r.json["OrthancStatus"] == 7, name
    assert c.simulate_put("/instances/nope/attachments/1024", body=b"x").status_code == 404
    # DELETE: 200 empty, then 404; the file goes with it
    second = Path(app.ctx.storage.path(c.simulate_get(base + "/1024/info").json["Uuid"]))
    r = c.simulate_delete(base + "/1024")
    assert (r.status_code, r.content) == (200, b"") and not second.exists()
    r = c.simulate_delete(base + "/1024")
    assert r.status_code == 404 and r.json["OrthancStatus"] == 17
    assert c.simulate_delete(base + "/dicom").status_code == 403
    # a PUT racing the deletion of its resource: 404, and no file left behind
    real = app.ctx.index.set_attachment
    app.ctx.index.set_attachment = lambda *a, **kw: None  # as when the row is gone inside the transaction
    before = set(Path(app.ctx.storage.path("x")).parent.parent.rglob("*"))
    try:
        assert c.simulate_put(base + "/1030", body=b"late").status_code == 404
    finally:
        app.ctx.index.set_attachment = real
    assert {p for p in Path(app.ctx.storage.path("x")).parent.parent.rglob("*") if p.is_file()} == \
        {p for p in before if p.is_file()}
    # deleting the resources removes their user attachments' files too
    files = [Path(app.ctx.storage.path(c.simulate_get(p).json["Uuid"]))
             for p in (f"{base}/notes/info", f"/studies/{ST_A}/attachments/report/info")]
    assert all(f.exists() for f in files)
    assert c.simulate_delete(f"/studies/{ST_A}").status_code == 200
    assert not any(f.exists() for f in files)


def test_overwriting_an_instance_removes_the_files_of_the_parents_it_empties(make_app):
    import falcon.testing
    app = make_app({"OverwriteInstances": True})
    c = falcon.testing.TestClient(app)
    assert c.simulate_post("/instances", body=FILES["b"]).json["Status"] == "Success"
    study = oid("PB", "7.2")
    assert c.simulate_put(f"/studies/{study}/attachments/1030", body=b"study note").status_code == 200
    note = Path(app.ctx.storage.path(c.simulate_get(f"/studies/{study}/attachments/1030/info").json["Uuid"]))
    assert note.exists()
    # the same instance again: the old one goes with its emptied parents, then all is made anew
    assert c.simulate_post("/instances", body=FILES["b"]).json["Status"] == "Success"
    assert c.simulate_get(f"/studies/{study}/attachments").json == []
    assert not note.exists()


def test_lookup_works_on_an_index_written_before_the_normalized_rows(tmp_path):
    import sqlite3

    import falcon.testing

    from pacsbox import create_app
    cfg = {"StorageDirectory": str(tmp_path / "data")}
    app = create_app(cfg, plugins=[], load_entrypoints=False)
    assert falcon.testing.TestClient(app).simulate_post("/instances", body=FILES["a1"]).status_code == 200
    path = app.ctx.index.path
    app.close()
    db = sqlite3.connect(path)  # as an index of the previous version: no normalized rows
    db.execute("DELETE FROM identifiers WHERE tag LIKE '~%'")
    db.execute("DELETE FROM global_properties WHERE name = 'NormalizedIdentifiers'")
    db.commit()
    db.close()
    app = create_app(cfg, plugins=[], load_entrypoints=False)
    try:
        found = falcon.testing.TestClient(app).simulate_post("/tools/lookup", body="pa").json
        assert [x["ID"] for x in found] == [PA]
    finally:
        app.close()
