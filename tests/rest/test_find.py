"""``POST /tools/find`` as Orthanc 1.10.1 answers it (reference section 2.9; every case was
checked on the reference server): wildcards, ranges, lists, case rules, levels, paging,
answer order and errors."""
from __future__ import annotations

import pytest
from conftest import read

from pacsbox import orthanc_id as oid

import dicomgen as g

UPLOADS = [
    g.instance("PA", "7.1", "7.1.1", "7.1.1.1", PatientName="Doe^John", PatientSex="M", StudyDate="20230115",
               StudyTime="101500", AccessionNumber="ACC1", StudyDescription="Chest CT", Modality="CT",
               SeriesDescription="axial", InstanceNumber="1"),
    g.instance("PA", "7.1", "7.1.1", "7.1.1.2", PatientName="Doe^John", StudyDate="20230115", Modality="CT",
               InstanceNumber="2", ImagesInAcquisition="3"),
    g.instance("PB", "7.2", "7.2.1", "7.2.1.1", PatientName="DOE^JANE", PatientSex="F", StudyDate="20230301",
               StudyTime="235959.123", AccessionNumber="ACC2", StudyDescription="Brain MR", Modality="MR"),
    g.instance("PC", "7.3", "7.3.1", "7.3.1.1", PatientName="Smith^Anna", StudyDate="20221231", Modality="US",
               AccessionNumber="XYZ", StudyDescription="abdomen", StudyTime="080000"),
    g.instance("PC", "7.3", "7.3.2", "7.3.2.1", PatientName="Smith^Anna", StudyDate="20221231", Modality="SR"),
    g.instance("PD", "7.4", "7.4.1", "7.4.1.1", SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jörg",
               StudyDate="20230115", Modality="CT", StudyDescription="Kopf", InstitutionName="Klinik"),
    g.instance("PE", "7.5", "7.5.1", "7.5.1.1", SpecificCharacterSet="ISO_IR 192", PatientName="Ñandú^Zoë",
               StudyDate="", Modality="OT", StudyDescription="Ünïcode 漢字"),
    g.instance(None, "7.6", "7.6.1", "7.6.1.1", PatientName="NoPid", Modality="OT"),
]
P = {k: oid(k) for k in ("PA", "PB", "PC", "PD", "PE")}
P["none"] = oid("")
S = {k: oid(p, k) for p, k in (("PA", "7.1"), ("PB", "7.2"), ("PC", "7.3"), ("PD", "7.4"), ("PE", "7.5"), ("", "7.6"))}
SE = {"7.1.1": oid("PA", "7.1", "7.1.1"), "7.2.1": oid("PB", "7.2", "7.2.1"), "7.3.1": oid("PC", "7.3", "7.3.1"),
      "7.3.2": oid("PC", "7.3", "7.3.2"), "7.4.1": oid("PD", "7.4", "7.4.1"), "7.5.1": oid("PE", "7.5", "7.5.1"),
      "7.6.1": oid("", "7.6", "7.6.1")}


@pytest.fixture
def db(client):
    for data in UPLOADS:
        assert client.simulate_post("/instances", body=data).json["Status"] == "Success"
    return client


def find(client, level, query, **kw):
    r = client.simulate_post("/tools/find", json=dict({"Level": level, "Query": query}, **kw))
    assert r.status_code == 200, r.text
    return r.json


def ids(*keys, table):
    return sorted(table[k] for k in keys)


def test_answers_are_sorted_by_id_except_instances(db):
    assert find(db, "Patient", {}) == sorted(P.values())
    assert find(db, "Study", {}) == sorted(S.values())
    assert find(db, "Series", {}) == sorted(SE.values())
    assert find(db, "Instance", {}) == db.simulate_get("/instances").json  # index order
    assert find(db, "study", {}) == find(db, "STUDY", {}) == sorted(S.values())


@pytest.mark.parametrize("query, case, expected", [
    ({"PatientName": "doe*"}, None, ["PA", "PB"]),
    ({"PatientName": "doe*"}, True, []),
    ({"PatientName": "DOE*"}, True, ["PB"]),
    ({"PatientName": "*Jo*"}, None, ["PA"]),
    ({"PatientName": "d?e^j*"}, None, ["PA", "PB"]),
    ({"PatientName": "doe^john"}, None, ["PA"]),
    ({"PatientName": "müller*"}, None, ["PD"]),  # upper-casing keeps the accents
    ({"PatientName": "MULLER*"}, None, []),
    ({"PatientName": "Ñ*"}, None, ["PE"]),
    ({"PatientName": "?"}, None, []),
    ({"PatientName": "doe^john\\smith^anna"}, None, ["PA", "PC"]),  # a list, case-insensitive
    ({"PatientID": "pa"}, None, ["PA"]),  # every tag is case-insensitive by default
    ({"PatientID": "pa"}, True, []),
    ({"PatientID": "PA\\PB"}, None, ["PA", "PB"]),
    ({"PatientID": "P*\\D*"}, None, []),  # list items are not wildcards
    ({"PatientID": ""}, None, ["PA", "PB", "PC", "PD", "PE", "none"]),  # empty: universal
    ({"PatientID": "*"}, None, ["PA", "PB", "PC", "PD", "PE"]),  # "*" needs the tag
    ({"PatientSex": "*"}, None, ["PA", "PB"]),
    ({"0010,0020": "PA"}, None, ["PA"]),
])
def test_patient_level(db, query, case, expected):
    kw = {} if case is None else {"CaseSensitive": case}
    assert find(db, "Patient", query, **kw) == ids(*expected, table=P)


@pytest.mark.parametrize("query, expected", [
    ({"StudyDate": "20230115"}, ["7.1", "7.4"]),
    ({"StudyDate": "20230101-20230201"}, ["7.1", "7.4"]),
    ({"StudyDate": "20230101-"}, ["7.1", "7.2", "7.4"]),
    ({"StudyDate": "-20221231"}, ["7.3", "7.5"]),  # an empty date is below every bound
    ({"StudyDate": "20230115-20230115"}, ["7.1", "7.4"]),
    ({"StudyDate": "20230116-20230101"}, []),
    ({"StudyDate": "20230115\\20221231"}, ["7.1", "7.3", "7.4"]),
    ({"StudyTime": "100000-120000"}, ["7.1"]),
    ({"StudyTime": "2359-"}, ["7.2"]),
    ({"AccessionNumber": "acc*"}, ["7.1", "7.2"]),
    ({"StudyDescription": "*ct*"}, ["7.1"]),
    ({"StudyDescription": "ünïcode*"}, ["7.5"]),
    ({"InstitutionName": "klinik"}, ["7.4"]),
    ({"PatientName": "smith*"}, ["7.3"]),
    ({"PatientID": "PC"}, ["7.3"]),
    ({"StudyInstanceUID": "7.1"}, ["7.1"]),
    ({"ModalitiesInStudy": "CT"}, ["7.1", "7.4"]),
    ({"ModalitiesInStudy": "ct"}, ["7.1", "7.4"]),
    ({"ModalitiesInStudy": "SR\\MR"}, ["7.2", "7.3"]),
    ({"ModalitiesInStudy": "c*"}, ["7.1", "7.4"]),
    ({"ModalitiesInStudy": "XX"}, []),
    ({"Modality": "CT"}, []),  # a main tag of a lower level matches nothing
    ({"SeriesDescription": "axial"}, []),
    ({"SOPClassUID": g.SC}, ["7.1", "7.2", "7.3", "7.4", "7.5", "7.6"]),  # not a main tag: read in the file
    ({"ImageType": "x"}, []),
    ({"0008,0050": "XYZ"}, ["7.3"]),
])
def test_study_level(db, query, expected):
    assert find(db, "Study", query) == ids(*expected, table=S)


@pytest.mark.parametrize("query, expected", [
    ({"Modality": "CT"}, ["7.1.1", "7.4.1"]),
    ({"Modality": "ct"}, ["7.1.1", "7.4.1"]),
    ({"Modality": "CT\\US"}, ["7.1.1", "7.3.1", "7.4.1"]),
    ({"Modality": "C*"}, ["7.1.1", "7.4.1"]),
    ({"SeriesDescription": "AX*"}, ["7.1.1"]),
    ({"StudyDate": "20230115"}, ["7.1.1", "7.4.1"]),
    ({"PatientID": "PC"}, ["7.3.1", "7.3.2"]),
])
def test_series_level(db, query, expected):
    assert find(db, "Series", query) == ids(*expected, table=SE)


def test_instance_level(db):
    assert find(db, "Instance", {"SOPInstanceUID": "7.1.1.2"}) == [oid("PA", "7.1", "7.1.1", "7.1.1.2")]
    assert find(db, "Instance", {"InstanceNumber": "2"}) == [oid("PA", "7.1", "7.1.1", "7.1.1.2")]
    assert find(db, "Instance", {"InstanceNumber": "1-2"}) == []  # IS: no ranges
    assert find(db, "Instance", {"StudyInstanceUID": "7.3"}) == [oid("PC", "7.3", "7.3.1", "7.3.1.1"),
                                                                  oid("PC", "7.3", "7.3.2", "7.3.2.1")]
    assert find(db, "Instance", {"SOPInstanceUID": "7.1.1.1\\7.2.1.1"}) == [oid("PA", "7.1", "7.1.1", "7.1.1.1"),
                                                                            oid("PB", "7.2", "7.2.1", "7.2.1.1")]
    assert find(db, "Instance", {"ImageComments": "*"}) == []


def test_expand_and_tag_formats(db):
    expanded = find(db, "Study", {"PatientID": "PA"}, Expand=True)
    assert expanded == [db.simulate_get(f"/studies/{S['7.1']}").json]
    short = find(db, "Study", {"PatientID": "PA"}, Expand=True, Short=True)[0]
    assert short["MainDicomTags"]["0008,0050"] == "ACC1" and short["PatientMainDicomTags"]["0010,0020"] == "PA"
    full = find(db, "Study", {"PatientID": "PA"}, Expand=True, Full=True)[0]
    assert full["MainDicomTags"]["0008,1030"] == {"Name": "StudyDescription", "Type": "String", "Value": "Chest CT"}


def test_limit_and_since_page_the_sorted_answer(db):
    everything = sorted(SE.values())
    assert find(db, "Series", {}, Limit=2) == everything[:2]
    assert find(db, "Series", {}, Since=2) == everything[2:]
    assert find(db, "Series", {}, Since=1, Limit=2) == everything[1:3]
    assert find(db, "Series", {}, Limit=0) == everything


def test_limit_find_results_option(make_app):
    import falcon.testing
    c = falcon.testing.TestClient(make_app({"LimitFindResults": 2}))
    for data in UPLOADS:
        c.simulate_post("/instances", body=data)
    assert find(c, "Patient", {}) == sorted(P.values())[:2]


def _error(client, body):
    r = client.simulate_post("/tools/find", json=body) if not isinstance(body, bytes) else \
        client.simulate_post("/tools/find", body=body)
    return r.status_code, r.json.get("OrthancStatus"), r.json.get("Details")


@pytest.mark.parametrize("body, expected", [
    (b"", (400, 8, "The body must contain a JSON object")),
    (b"notjson", (400, 8, "The body must contain a JSON object")),
    ([1], (400, 8, "The body must contain a JSON object")),
    ({"Level": "Study"}, (400, 8, 'Field "Query" is missing, or should be a JSON object')),
    ({"Level": "Nope", "Query": {}}, (400, 3, None)),
    ({"Level": "Study", "Query": {"PatientID": 3}}, (400, 8, 'Tag "PatientID" should be associated with a string')),
    ({"Level": "Study", "Query": {"Nonsense": "x"}}, (500, 27, None)),
    ({"Level": "Study", "Query": {"StudyDate": "2023*"}}, (400, 3, "Wildcards are not allowed on tag 0008,0020")),
    ({"Level": "Study", "Query": {"StudyInstanceUID": "7.*"}}, (400, 3, "Wildcards are not allowed on tag 0020,000d")),
    ({"Level": "Study", "Query": {"StudyTime": "10*"}}, (400, 3, "Wildcards are not allowed on tag 0008,0030")),
    # wildcards only on AE, CS, LO, LT, PN, SH, ST, UC, UR, UT (numbers, ages, unknown private tags refused)
    ({"Level": "Instance", "Query": {"SliceThickness": "5*"}}, (400, 3, "Wildcards are not allowed on tag 0018,0050")),
    ({"Level": "Instance", "Query": {"InstanceNumber": "1?"}}, (400, 3, "Wildcards are not allowed on tag 0020,0013")),
    ({"Level": "Instance", "Query": {"Rows": "*"}}, (400, 3, "Wildcards are not allowed on tag 0028,0010")),
    ({"Level": "Patient", "Query": {"PatientAge": "0*"}}, (400, 3, "Wildcards are not allowed on tag 0010,1010")),
    ({"Level": "Instance", "Query": {"0011,1010": "a*"}}, (400, 3, "Wildcards are not allowed on tag 0011,1010")),
    ({"Level": " Study", "Query": {}}, (400, 3, None)),
    ({"Level": "\u017ftudy", "Query": {}}, (400, 3, None)),  # long s: upper-cases to "STUDY" in Python
    ({"Level": "Study", "Query": {}, "Limit": -1}, (400, 3, 'Field "Limit" should be a positive integer')),
    ({"Level": "Study", "Query": {}, "Limit": "x"}, (400, 8, 'Field "Limit" should be an integer')),
    ({"Level": "Study", "Query": {}, "Since": -1}, (400, 3, 'Field "Since" should be a positive integer')),
    ({"Level": "Study", "Query": {}, "CaseSensitive": "yes"}, (400, 8, 'Field "CaseSensitive" should be a Boolean')),
    # each field as Orthanc 1.10.1 reads it (answers of the reference): null is no Boolean nor
    # integer, Full and Short are read by SerializationToolbox
    ({"Level": "Study", "Query": {}, "CaseSensitive": None}, (400, 8, 'Field "CaseSensitive" should be a Boolean')),
    ({"Level": "Study", "Query": {}, "Limit": None}, (400, 8, 'Field "Limit" should be an integer')),
    ({"Level": "Study", "Query": {}, "Since": None}, (400, 8, 'Field "Since" should be an integer')),
    ({"Level": "Study", "Query": {}, "Full": None}, (400, 15, "Boolean value expected in field: Full")),
    ({"Level": "Study", "Query": {}, "Short": "x"}, (400, 15, "Boolean value expected in field: Short")),
])
def test_errors(db, body, expected):
    assert _error(db, body) == expected


def test_expand_is_read_as_orthanc_reads_it(db):
    """``Expand`` is Json::Value::asBool() in Orthanc 1.10.1: null is false, 1 is true."""
    assert all(isinstance(x, str) for x in find(db, "Study", {}, Expand=None))
    assert all(isinstance(x, dict) for x in find(db, "Study", {}, Expand=1))


def test_cfind_rules_for_the_dicom_plugin(db, app):
    """``find_resources(..., dicom_rules=True)``: the C-FIND flavour used by the DICOM plugin."""
    from pacsbox import find_resources

    def ids_of(query, **kw):
        return sorted(r.public_id for r in find_resources(app.ctx, 0, query, dicom_rules=True, **kw))

    assert ids_of({"PatientID": "pa"}) == []  # non-PN tags are case-sensitive
    assert ids_of({"PatientID": "PA"}) == [P["PA"]]
    assert ids_of({"PatientName": "doe*"}) == sorted([P["PA"], P["PB"]])  # PN per CaseSensitivePN (false)
    assert ids_of({"PatientName": "doe*"}, case_sensitive=True) == []
    assert ids_of({"PatientID": "*"}) == sorted(P.values())  # "*" is universal in C-FIND


@pytest.mark.parametrize("query", [{"ImageComments": "a*"}, {"StationName": "?"}, {"RetrieveAETitle": "A*"},
                                   {"SeriesDescription": "*"}, {"0009,0010": "a*"}])
def test_wildcards_on_text_vrs_and_private_creators(db, query):
    assert find(db, "Instance", query) == ([oid("PA", "7.1", "7.1.1", "7.1.1.1"), oid("PA", "7.1", "7.1.1", "7.1.1.2")]
                                           if "SeriesDescription" in query else [])


@pytest.mark.parametrize("name, canonical", [("studies", "Study"), ("STUDY", "Study"), ("patients", "Patient"),
                                             ("Image", "Instance"), ("images", "Instance"),
                                             ("INSTANCES", "Instance"), ("series", "Series")])
def test_level_names_as_orthanc_resource_types(db, name, canonical):
    assert find(db, name, {}) == find(db, canonical, {})
    assert find(db, name, {})


def test_patient_tags_below_patient_level_are_those_kept_with_each_study(client):
    # one PatientID, two studies whose first instances name the patient differently; a
    # third study's instance has no patient tags at all. At study level and below, the
    # name is matched against each study's copy (PatientMainDicomTags); at patient level,
    # against the patient's tags (those of its first instance).
    for f in (g.instance("PQ", "9.1", "9.1.1", "9.1.1.1", PatientName="Before^Name"),
              g.instance("PQ", "9.2", "9.2.1", "9.2.1.1", PatientName="After^Name"),
              g.instance("PQ", "9.3", "9.3.1", "9.3.1.1")):
        assert client.simulate_post("/instances", body=f).json["Status"] == "Success"
    s1, s2, s3 = oid("PQ", "9.1"), oid("PQ", "9.2"), oid("PQ", "9.3")
    assert client.simulate_get(f"/studies/{s2}").json["PatientMainDicomTags"]["PatientName"] == "After^Name"
    assert find(client, "Study", {"PatientName": "after*"}) == [s2]
    assert find(client, "Series", {"PatientName": "After^Name"}) == [oid("PQ", "9.2", "9.2.1")]
    assert find(client, "Instance", {"PatientName": "before*"}) == [oid("PQ", "9.1", "9.1.1", "9.1.1.1")]
    assert find(client, "Patient", {"PatientName": "after*"}) == []
    assert find(client, "Patient", {"PatientName": "before*"}) == [oid("PQ")]
    # "*" needs the tag: the third study's copy has none
    assert find(client, "Study", {"PatientName": "*"}) == sorted([s1, s2])
    assert find(client, "Study", {"PatientID": "*"}) == sorted([s1, s2, s3])


def test_wildcards_on_identifiers_also_match_their_normalized_form(client):
    # Orthanc 1.10.1 indexes PatientID, PatientName, PatientBirthDate (and, per study,
    # StudyInstanceUID, AccessionNumber, StudyDescription, StudyDate...) normalized: upper
    # case, printable ASCII, "_" and "%" as spaces, surrounding spaces stripped. A wildcard
    # must match both the stored and the normalized value. These files keep a trailing
    # space: PatientID "id11111 " (rtdose_rle.dcm), PatientName/StudyID "PANCREAS_0001 ".
    ids = {name: client.simulate_post("/instances", body=read(name)).json
           for name in ("rtdose_rle.dcm", "explicit_VR-UN.dcm")}
    rtdose, pancreas = ids["rtdose_rle.dcm"]["ParentPatient"], ids["explicit_VR-UN.dcm"]["ParentPatient"]
    assert client.simulate_get(f"/patients/{rtdose}").json["MainDicomTags"]["PatientID"] == "id11111 "
    assert find(client, "Patient", {"PatientID": "id11111?"}) == []     # "?" would match the space
    assert find(client, "Patient", {"PatientID": "*1 "}) == sorted([rtdose, pancreas])  # stored values count
    assert find(client, "Patient", {"PatientID": "*1"}) == []
    assert find(client, "Patient", {"PatientName": "PANCREAS_0001?"}) == []
    assert find(client, "Patient", {"PatientName": "pancreas?0001*"}) == [pancreas]
    # StudyID is no identifier: its "?" matches the stored trailing space
    assert find(client, "Study", {"StudyID": "PANCREAS_0001?"}) == [ids["explicit_VR-UN.dcm"]["ParentStudy"]]
