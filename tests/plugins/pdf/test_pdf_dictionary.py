"""The ``Dictionary`` option everywhere a tag is named (reference section 7): a creator
with an LO and a US element, created by name, read back, found, modified and archived."""
from __future__ import annotations

import io
import struct
import zipfile

import falcon.testing
import pydicom
import pytest

import pacsbox_archive.plugin as archive_plugin
import pacsbox_pdf.plugin as pdf_plugin
from pacsbox import TagDictionary, tag_dictionary
from pdf_helpers import KIT_DICTIONARY, data_uri, make_pdf, read_dataset


@pytest.fixture
def client(make_app):
    app = make_app({"Dictionary": KIT_DICTIONARY}, plugins=[pdf_plugin, archive_plugin])
    return falcon.testing.TestClient(app)


@pytest.fixture
def kit(client):
    r = client.simulate_post("/tools/create-dicom", json={
        "Tags": {"PatientName": "Kit^Test", "KitComment": "hello", "KitNumber": "42"},
        "PrivateCreator": "KitCreator", "Content": data_uri("application/pdf", make_pdf())})
    assert r.status_code == 200, r.text
    return r.json["ID"]


def element_bytes(data: bytes, tag: int) -> tuple[str, bytes]:
    """``(VR, value)`` of a top-level element of an Explicit VR Little Endian file, read
    from the bytes themselves."""
    ds = pydicom.dcmread(io.BytesIO(data))
    raw = ds.get_item(tag)
    return raw.VR, raw.value


def test_names_in_create_dicom_are_written_with_their_vr_and_creator(client, kit):
    data = client.simulate_get(f"/instances/{kit}/file").content
    assert element_bytes(data, 0x00410010) == ("LO", b"KitCreator")
    assert element_bytes(data, 0x00411010) == ("LO", b"hello ")
    assert element_bytes(data, 0x00411011) == ("US", struct.pack("<H", 42))
    ds = read_dataset(client, kit)
    block = ds.private_block(0x0041, "KitCreator")
    assert block[0x10].value == "hello" and block[0x11].value == 42 and block[0x11].VR == "US"


def test_tags_and_simplified_tags_use_the_dictionary_names(client, kit):
    tags = client.simulate_get(f"/instances/{kit}/tags").json
    assert tags["0041,0010"] == {"Name": "PrivateCreator", "Type": "String", "Value": "KitCreator"}
    assert tags["0041,1010"] == {"Name": "KitComment", "PrivateCreator": "KitCreator", "Type": "String",
                                 "Value": "hello"}
    assert tags["0041,1011"] == {"Name": "KitNumber", "PrivateCreator": "KitCreator", "Type": "String",
                                 "Value": "42"}
    simple = client.simulate_get(f"/instances/{kit}/simplified-tags").json
    assert (simple["KitComment"], simple["KitNumber"]) == ("hello", "42")
    short = client.simulate_get(f"/instances/{kit}/tags?short").json
    assert short["0041,1011"] == "42"


def test_content_by_name(client, kit):
    r = client.simulate_get(f"/instances/{kit}/content/KitComment")
    assert r.status_code == 200 and r.content == b"hello "
    assert client.simulate_get(f"/instances/{kit}/content/KitNumber").content == struct.pack("<H", 42)
    assert client.simulate_get(f"/instances/{kit}/content/0041-1011").content == struct.pack("<H", 42)
    r = client.simulate_get(f"/instances/{kit}/content/NoSuchName")
    assert r.status_code == 500 and r.json["OrthancStatus"] == 27


def test_find_by_dictionary_name(client, kit):
    other = client.simulate_post("/tools/create-dicom", json={"Tags": {"KitComment": "other"}}).json["ID"]
    assert other != kit
    for query, expected in [({"KitComment": "hello"}, [kit]), ({"KitComment": "HEL*"}, [kit]),
                            ({"KitComment": "other"}, [other]), ({"KitNumber": "42"}, [kit]),
                            ({"KitComment": "nothing"}, [])]:
        r = client.simulate_post("/tools/find", json={"Level": "Instance", "Query": query})
        assert r.status_code == 200 and r.json == expected, query
    r = client.simulate_post("/tools/find", json={"Level": "Study", "Query": {"KitComment": "hello"}, "Expand": True})
    assert [s["ID"] for s in r.json] == [client.simulate_get(f"/instances/{kit}/study").json["ID"]]
    # wildcards follow the Dictionary VR: none on a US
    r = client.simulate_post("/tools/find", json={"Level": "Instance", "Query": {"KitNumber": "4*"}})
    assert r.status_code == 400


def test_modify_replace_and_remove_by_name(client, kit):
    r = client.simulate_post(f"/instances/{kit}/modify", json={"Replace": {"KitNumber": "7", "KitComment": "bye"},
                                                               "PrivateCreator": "KitCreator", "Force": True})
    assert r.status_code == 200, r.text
    ds = pydicom.dcmread(io.BytesIO(r.content))
    assert ds.get_item(0x00411011).VR == "US" and ds[0x00411011].value == 7
    assert ds[0x00411010].value == "bye"
    r = client.simulate_post(f"/instances/{kit}/modify", json={"Remove": ["KitComment"], "Force": True})
    assert r.status_code == 200, r.text
    ds = pydicom.dcmread(io.BytesIO(r.content))
    assert 0x00411010 not in ds and ds[0x00411011].value == 42


def test_archive_keeps_the_bytes(client, kit):
    study = client.simulate_get(f"/instances/{kit}/study").json["ID"]
    r = client.simulate_get(f"/studies/{study}/archive")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        assert len(names) == 1
        data = zf.read(names[0])
    assert data == client.simulate_get(f"/instances/{kit}/file").content
    assert element_bytes(data, 0x00411011) == ("US", struct.pack("<H", 42))


def test_private_creator_written_when_the_client_did_not(client):
    r = client.simulate_post("/tools/create-dicom", json={
        "Tags": {"0041,1010": "x", "0041,1011": "5"}, "PrivateCreator": "KitCreator"})
    ds = read_dataset(client, r.json["ID"])
    assert ds[0x00410010].value == "KitCreator" and ds[0x00411011].VR == "US"
    # the client's own creator element is kept as given
    r = client.simulate_post("/tools/create-dicom", json={
        "Tags": {"0041,0010": "KitCreator", "0041,1011": "5"}, "PrivateCreator": "KitCreator"})
    assert read_dataset(client, r.json["ID"])[0x00411011].value == 5
    # no creator known: UN, no creator element invented (as Orthanc)
    r = client.simulate_post("/tools/create-dicom", json={"Tags": {"0041,1011": "5"}})
    ds = read_dataset(client, r.json["ID"])
    assert 0x00410010 not in ds and ds.get_item(0x00411011).VR == "UN"


def test_bad_values_by_dictionary_vr(client):
    r = client.simulate_post("/tools/create-dicom", json={"Tags": {"KitNumber": "abc"}, "PrivateCreator": "KitCreator"})
    assert r.status_code == 400 and r.json["OrthancStatus"] == 15
    assert r.json["Details"] == 'While creating a DICOM instance, tag (0041,1011) has out-of-range value: "abc"'
    r = client.simulate_post("/tools/create-dicom", json={"Tags": {"KitMissing": "x"}})
    assert r.status_code == 500 and r.json["OrthancStatus"] == 27 and r.json["Message"] == "Unknown DICOM tag"
    assert client.simulate_get("/instances").json == []


def test_tag_dictionary_api():
    d = TagDictionary({**KIT_DICTIONARY, "0x0009,0x1001": ["DS", "Odd"], "0014,1020": ["DA", "ValidityDate", 1, 1],
                       "bad": ["LO", "Bad"], "0041,12": "not a list"}, "KitCreator")
    assert d.parse("KitComment") == 0x00411010 and d.parse("PatientName") == 0x00100010
    assert d.parse("ValidityDate") == 0x00141020 and d.parse("0010-0010") == 0x00100010
    with pytest.raises(KeyError):
        d.parse("Nope")
    assert d.vr(0x00411011, "KitCreator") == "US" and d.vr(0x00411011) == "UN"
    assert d.vr(0x00141020) == "DA" and d.vr(0x00100010) == "PN"
    assert d.name(0x00411110, "KitCreator") == "KitComment" and d.name(0x00411010, "Other") == "Unknown Tag & Data"
    assert d.creator_of(0x00411010) == "KitCreator" and d.default_private_creator == "KitCreator"
    ds = pydicom.Dataset()
    ds.add_new(0x00410011, "LO", "KitCreator")
    assert d.locate(0x00411010, ds) == 0x00411110 and d.locate(0x00100010, ds) == 0x00100010
    assert not TagDictionary({})


def test_tag_dictionary_is_built_once_per_app(make_app):
    app = make_app({"Dictionary": KIT_DICTIONARY, "DefaultPrivateCreator": "KitCreator"})
    d = tag_dictionary(app.ctx)
    assert d is tag_dictionary(app.ctx) and d.default_private_creator == "KitCreator" and "KitNumber" in d.names


def test_module_tags_api():
    from pacsbox import module_tags
    assert 0x00100010 in module_tags(0) and module_tags("Patient") == module_tags(0)
    assert 0x0020000D in module_tags("study") and 0x00080060 in module_tags(2) and 0x00080018 in module_tags(3)
    for bad in (4, -1, "Frame", 1.5):
        with pytest.raises(ValueError):
            module_tags(bad)


def test_dataset_to_json_with_a_dictionary_reads_implicit_vr_values():
    from pydicom.filewriter import dcmwrite
    from pydicom.dataset import FileMetaDataset
    from pacsbox import dataset_to_json
    ds = pydicom.Dataset()
    ds.add_new(0x00410010, "LO", "KitCreator")
    ds.add_new(0x00411011, "US", 42)
    ds.add_new(0x00411010, "LO", "hello")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"  # implicit VR: the file states no VR
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    raw = pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True)
    plain = dataset_to_json(raw, "full")
    assert plain["0041,1011"]["Name"] == "Unknown Tag & Data" and plain["0041,1011"]["Type"] == "Null"
    named = dataset_to_json(pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True), "full",
                            dictionary=TagDictionary(KIT_DICTIONARY))
    assert named["0041,1011"] == {"Name": "KitNumber", "PrivateCreator": "KitCreator", "Type": "String", "Value": "42"}
    assert named["0041,1010"]["Value"] == "hello"
    simple = dataset_to_json(pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True), "simplify",
                             dictionary=TagDictionary(KIT_DICTIONARY))
    assert simple["KitNumber"] == "42"


@pytest.mark.parametrize("load", [True, False])
def test_load_private_dictionary_option(make_app, load):
    from pydicom.data import get_testdata_file
    from pacsbox.dicom.tags import dcmtk_private_dictionary
    if load and not dcmtk_private_dictionary():
        pytest.skip("DCMTK's private.dic is not installed")
    app = make_app({"LoadPrivateDictionary": load, "Dictionary": KIT_DICTIONARY})
    client = falcon.testing.TestClient(app)
    with open(get_testdata_file("CT_small.dcm"), "rb") as f:
        iid = client.simulate_post("/instances", body=f.read()).json["ID"]
    tags = client.simulate_get(f"/instances/{iid}/tags").json
    # as Orthanc 1.10.1 with DCMTK's private dictionary (GEMS_IDEN_01), or without it
    assert tags["0009,1001"]["Name"] == ("FullFidelity" if load else "Unknown Tag & Data")
    assert tags["0009,1001"]["PrivateCreator"] == "GEMS_IDEN_01"
    assert tags["0009,0010"]["Name"] == "PrivateCreator"


def test_c_store_keeps_the_dictionary_vr(make_app):
    """Sent by C-STORE (dicom_net, Explicit VR Little Endian accepted), the private US is
    still a US on the wire."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import EncapsulatedPDFStorage
    net_plugin = pytest.importorskip("pacsbox_dicom_net.plugin")
    from conftest import free_port
    received = []

    def handle(event):
        received.append((event.context.transfer_syntax, event.request.DataSet.getvalue()))
        return 0x0000

    ae = AE(ae_title="KITSCP")
    ae.add_supported_context(EncapsulatedPDFStorage, ["1.2.840.10008.1.2.1"])
    port = free_port()
    scp = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])
    try:
        app = make_app({"DicomServerEnabled": False, "Dictionary": KIT_DICTIONARY,
                        "DicomModalities": {"kit": ["KITSCP", "127.0.0.1", port]}}, plugins=[pdf_plugin, net_plugin])
        client = falcon.testing.TestClient(app)
        r = client.simulate_post("/tools/create-dicom", json={"Tags": {"KitNumber": "42", "KitComment": "c"},
                                                              "Content": data_uri("application/pdf", make_pdf())})
        r = client.simulate_post("/modalities/kit/store", json={"Resources": [r.json["ID"]], "Synchronous": True})
        assert r.status_code == 200 and r.json["FailedInstancesCount"] == 0
    finally:
        scp.shutdown()
    assert len(received) == 1 and received[0][0] == "1.2.840.10008.1.2.1"
    ds = pydicom.dcmread(io.BytesIO(received[0][1]), force=True)
    raw = ds.get_item(0x00411011)
    assert (raw.VR, raw.value) == ("US", struct.pack("<H", 42))
    assert ds.get_item(0x00410010).value.rstrip(b" ") == b"KitCreator"
