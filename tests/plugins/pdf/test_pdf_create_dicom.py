"""``POST /tools/create-dicom`` and ``GET /instances/{id}/pdf`` (reference section 6)."""
from __future__ import annotations

import io
import re

import pydicom
import pytest

from pacsbox.testing import inline_plugin
from pacsbox import StartupError
from pdf_helpers import data_uri, image_bytes, make_pdf, pdf_client, read_dataset


@pytest.fixture
def client(make_app):
    return pdf_client(make_app)


def create(client, body, status=200):
    r = client.simulate_post("/tools/create-dicom", json=body)
    assert r.status_code == status, r.text
    return r.json


# ---- PDF ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size,ending", [(193, b"%%EOF\n"), (194, b"%%EOF\n"), (195, b"%%EOF"), (196, b"%%EOF"),
                                         (1, None)])
def test_pdf_round_trip_keeps_every_byte(client, size, ending):
    pdf = b"%PDF-" if ending is None else make_pdf(size, ending=ending)
    ans = create(client, {"Tags": {"PatientName": "Test^PDF"}, "Content": data_uri("application/pdf", pdf)})
    assert sorted(ans) == ["ID", "ParentPatient", "ParentSeries", "ParentStudy", "Path", "Status"]
    assert ans["Status"] == "Success" and ans["Path"] == f"/instances/{ans['ID']}"
    r = client.simulate_get(f"/instances/{ans['ID']}/pdf")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/pdf"
    assert r.content == pdf
    ds = read_dataset(client, ans["ID"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert (ds.Modality, ds.ConversionType, ds.MIMETypeOfEncapsulatedDocument) == ("OT", "WSD", "application/pdf")
    assert ds["EncapsulatedDocument"].VR == "OB" and len(ds.EncapsulatedDocument) % 2 == 0
    assert ds.EncapsulatedDocumentLength == len(pdf)
    assert ds.EncapsulatedDocument[:len(pdf)] == pdf


def test_pdf_generated_attributes_as_the_reference(client):
    ans = create(client, {"Tags": {"PatientName": "A", "Modality": "DOC"},
                          "Content": data_uri("application/pdf", make_pdf())})
    ds = read_dataset(client, ans["ID"])
    assert ds.Modality == "DOC"  # never overwritten
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", ds.PatientID)
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert re.fullmatch(r"[0-9.]{10,64}", getattr(ds, kw))
    for kw in ("InstanceCreation", "Content", "Acquisition", "Series", "Study"):
        assert re.fullmatch(r"\d{8}", getattr(ds, kw + "Date"))
        assert re.fullmatch(r"\d{6}\.000000", getattr(ds, kw + "Time"))
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_pdf_route_refuses_other_instances(client):
    ans = create(client, {"Tags": {"PatientName": "NoContent"}})
    r = client.simulate_get(f"/instances/{ans['ID']}/pdf")
    assert r.status_code == 404 and r.content == b""
    r = client.simulate_get("/instances/00000000-00000000-00000000-00000000-00000000/pdf")
    assert r.status_code == 404 and r.content == b""
    # a PDF-looking document whose SOP class is not Encapsulated PDF
    ans = create(client, {"Tags": {"SOPClassUID": "1.2.3"}, "Content": data_uri("application/pdf", make_pdf())})
    assert client.simulate_get(f"/instances/{ans['ID']}/pdf").status_code == 404


def test_no_content_has_no_sop_class(client):
    ans = create(client, {"Tags": {"PatientName": "Empty"}})
    ds = read_dataset(client, ans["ID"])
    assert "SOPClassUID" not in ds and "PixelData" not in ds
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.276.0.7230010.3.1.0.1"


# ---- images ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,samples,bits,photometric", [
    ("L", 1, 8, "MONOCHROME2"), ("I;16", 1, 16, "MONOCHROME2"), ("RGB", 3, 8, "RGB"), ("RGBA", 3, 8, "RGB")])
def test_png_images(client, mode, samples, bits, photometric):
    from PIL import Image
    png = image_bytes(mode)
    ans = create(client, {"Tags": {"PatientName": "Img"}, "Content": data_uri("image/png", png)})
    ds = read_dataset(client, ans["ID"])
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit) == \
        (3, 5, samples, bits, bits, bits - 1)
    assert (ds.PhotometricInterpretation, ds.PixelRepresentation) == (photometric, 0)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # beyond the reference: Secondary Capture
    assert ds["PixelData"].VR == "OW"
    if samples == 3:
        assert ds.PlanarConfiguration == 0
    arr = ds.pixel_array
    expected = Image.open(io.BytesIO(png))
    expected = expected.convert("RGB") if mode == "RGBA" else expected
    assert arr.tolist() == __import__("numpy").array(expected).tolist()


def test_png_keeps_a_given_sop_class(client):
    ans = create(client, {"Tags": {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.2"},
                          "Content": data_uri("image/png", image_bytes("L"))})
    assert read_dataset(client, ans["ID"]).SOPClassUID == "1.2.840.10008.5.1.4.1.1.7.2"


@pytest.mark.parametrize("mode,photometric", [("RGB", "YBR_FULL_422"), ("L", "MONOCHROME2")])
def test_jpeg_is_kept_as_baseline(client, mode, photometric):
    jpg = image_bytes(mode, size=(16, 8), fmt="JPEG", quality=90)
    ans = create(client, {"Tags": {}, "Content": data_uri("image/jpeg", jpg)})
    ds = read_dataset(client, ans["ID"])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.PhotometricInterpretation == photometric and ds.LossyImageCompression == "01"
    assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (8, 16, 8)
    from pydicom.encaps import generate_frames
    frames = list(generate_frames(ds.PixelData, number_of_frames=1))
    assert frames[0][:len(jpg)] == jpg  # the very bytes, not re-encoded
    assert ds.pixel_array.shape[:2] == (8, 16)


def test_progressive_jpeg_is_decoded(client):
    jpg = image_bytes("RGB", size=(16, 8), fmt="JPEG", progressive=True)
    ans = create(client, {"Tags": {}, "Content": data_uri("image/jpeg", jpg)})
    ds = read_dataset(client, ans["ID"])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" and ds.PhotometricInterpretation == "RGB"


@pytest.mark.parametrize("mime,sop", [("model/stl", "1.2.840.10008.5.1.4.1.1.104.3"),
                                      ("model/obj", "1.2.840.10008.5.1.4.1.1.104.4"),
                                      ("model/mtl", "1.2.840.10008.5.1.4.1.1.104.5")])
def test_3d_models(client, mime, sop):
    payload = b"solid cube\nendsolid cube\n" + b"x"
    ans = create(client, {"Tags": {}, "Content": data_uri(mime, payload)})
    ds = read_dataset(client, ans["ID"])
    assert (ds.SOPClassUID, ds.Modality, ds.MIMETypeOfEncapsulatedDocument) == (sop, "M3D", mime)
    assert ds.EncapsulatedDocument[:len(payload)] == payload and ds.EncapsulatedDocumentLength == len(payload)


def test_array_content_makes_one_series(client):
    png = data_uri("image/png", image_bytes("L"))
    ans = create(client, {"Tags": {"PatientName": "Series"},
                          "Content": [png, {"Content": png, "Tags": {"ImageComments": "second"}}, png]})
    assert sorted(ans) == ["ID", "Path", "Status"] and ans["Path"] == f"/series/{ans['ID']}"
    instances = client.simulate_get(f"/series/{ans['ID']}/instances").json
    assert len(instances) == 3
    dss = sorted((read_dataset(client, i["ID"]) for i in instances), key=lambda d: int(d.InstanceNumber))
    assert [int(d.InstanceNumber) for d in dss] == [1, 2, 3] and [d.ImageIndex for d in dss] == [1, 2, 3]
    assert {d.ImagesInAcquisition for d in dss} == {3} and {d.NumberOfTemporalPositions for d in dss} == {1}
    assert len({d.SOPInstanceUID for d in dss}) == 3
    assert dss[1].ImageComments == "second" and "ImageComments" not in dss[0]
    assert client.simulate_get(f"/series/{ans['ID']}").json["Status"] == "Complete"


def test_array_content_failure_removes_the_series(client):
    png = data_uri("image/png", image_bytes("L"))
    r = client.simulate_post("/tools/create-dicom", json={"Tags": {}, "Content": [png, png, "data:image/png;base64,AAAA"]})
    assert r.status_code == 400 and r.json["OrthancStatus"] == 15
    assert client.simulate_get("/instances").json == []


def test_v1_flat_body(client):
    ans = create(client, {"PatientName": "V1^Test", "Modality": "CT",
                          "PixelData": data_uri("image/png", image_bytes("L"))})
    ds = read_dataset(client, ans["ID"])
    assert (ds.PatientName, ds.Modality, ds.Rows) == ("V1^Test", "CT", 3)
    assert "SpecificCharacterSet" not in ds and "StudyDate" not in ds  # v1 adds no dates, as 1.10.1


def test_sequences_and_binary_tags(client):
    ans = create(client, {"Tags": {
        "ReferencedStudySequence": [{"ReferencedSOPClassUID": "1.2.3", "ReferencedSOPInstanceUID": "1.2.4"}],
        "0009,0010": "ACME", "0009,1001": data_uri("application/octet-stream", b"\x01\x02\x03")},
        "PrivateCreator": "ACME"})
    ds = read_dataset(client, ans["ID"])
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.4"
    assert ds[0x00091001].VR == "UN" and ds[0x00091001].value[:3] == b"\x01\x02\x03"
    ans = create(client, {"Tags": {"0009,0010": "ACME", "0009,1001": data_uri("application/octet-stream", b"AB")},
                          "InterpretBinaryTags": False})
    assert read_dataset(client, ans["ID"])[0x00091001].value.startswith(b"data:")


# ---- Parent --------------------------------------------------------------------------------

def test_parent_study_adds_a_series_and_keeps_charset(client):
    name = "Müller^Jörg"
    parent = create(client, {"Tags": {"PatientName": name, "SpecificCharacterSet": "ISO_IR 192",
                                      "StudyDescription": "Étude", "AccessionNumber": "A1"},
                             "Content": data_uri("application/pdf", make_pdf())})
    raw_parent = client.simulate_get(f"/instances/{parent['ID']}/file").content
    ans = create(client, {"Tags": {"SeriesDescription": "attached"}, "Parent": parent["ParentStudy"],
                          "Content": data_uri("application/pdf", make_pdf(200))})
    assert ans["ParentStudy"] == parent["ParentStudy"] and ans["ParentSeries"] != parent["ParentSeries"]
    ds = read_dataset(client, ans["ID"])
    src = pydicom.dcmread(io.BytesIO(raw_parent))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientName == name and ds.StudyDescription == "Étude" and ds.AccessionNumber == "A1"
    assert ds.PatientID == src.PatientID and ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.StudyDate == src.StudyDate  # the study keeps its date: not regenerated
    raw = client.simulate_get(f"/instances/{ans['ID']}/content/0010-0010").content
    assert raw.rstrip(b" ") == name.encode("utf-8")


def test_parent_series_and_patient(client):
    first = create(client, {"Tags": {"PatientName": "P^One", "Modality": "OT"}})
    into_series = create(client, {"Tags": {}, "Parent": first["ParentSeries"]})
    assert into_series["ParentSeries"] == first["ParentSeries"]
    into_patient = create(client, {"Tags": {}, "Parent": first["ParentPatient"]})
    assert into_patient["ParentPatient"] == first["ParentPatient"]
    assert into_patient["ParentStudy"] != first["ParentStudy"]


def test_parent_inherited_tag_needs_force(client):
    first = create(client, {"Tags": {"PatientName": "P^Two"}})
    r = client.simulate_post("/tools/create-dicom", json={"Tags": {"PatientName": "Other"},
                                                          "Parent": first["ParentStudy"]})
    assert r.status_code == 400
    assert r.json["OrthancStatus"] == 2020 and r.json["Details"] == "PatientName"
    ans = create(client, {"Tags": {"PatientName": "Other"}, "Parent": first["ParentStudy"], "Force": True})
    assert read_dataset(client, ans["ID"]).PatientName == "Other"


# ---- hooks -----------------------------------------------------------------------------------

def test_hook_register_content_encoders(make_app):
    def encode_text(payload, dataset):
        dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
        dataset.MIMETypeOfEncapsulatedDocument = "text/plain"
        dataset.EncapsulatedDocument = payload + b" " * (len(payload) % 2)

    plugin = inline_plugin("texter", register_content_encoders=(lambda ctx: {"Text/Plain": encode_text},
                                                                {"optionalhook": True}))
    client = pdf_client(make_app, plugins=[plugin])
    ans = create(client, {"Tags": {}, "Content": data_uri("text/plain", b"hello")})
    assert read_dataset(client, ans["ID"]).MIMETypeOfEncapsulatedDocument == "text/plain"
    # the built-in types are still there
    create(client, {"Tags": {}, "Content": data_uri("application/pdf", make_pdf())})


def test_hook_register_content_encoders_override_and_duplicates(make_app):
    calls = []
    plugin = inline_plugin("mypdf", register_content_encoders=(
        lambda ctx: {"application/pdf": lambda p, d: calls.append(len(p))}, {"optionalhook": True}))
    client = pdf_client(make_app, plugins=[plugin])
    create(client, {"Tags": {}, "Content": data_uri("application/pdf", make_pdf())})
    assert calls == [193]
    other = inline_plugin("otherpdf", register_content_encoders=(
        lambda ctx: {"application/pdf": lambda p, d: None}, {"optionalhook": True}))
    with pytest.raises(StartupError, match="mypdf|otherpdf"):
        pdf_client(make_app, plugins=[plugin, other])
    bad = inline_plugin("bad", register_content_encoders=(lambda ctx: ["x"], {"optionalhook": True}))
    with pytest.raises(StartupError, match="bad"):
        pdf_client(make_app, plugins=[bad])


def test_numbers_as_boost_lexical_cast(client):
    ans = create(client, {"Tags": {"Rows": "-1", "Columns": "+7", "0018,9089": "1.5e1", "SliceThickness": "abc"}})
    ds = read_dataset(client, ans["ID"])
    assert (ds.Rows, ds.Columns) == (65535, 7)  # a negative unsigned wraps, as Orthanc 1.10.1
    assert ds[0x00189089].VR == "FD" and ds[0x00189089].value == 15.0
    assert ds["SliceThickness"].VR == "DS"  # DS/IS strings are written as given, as DCMTK's putString


@pytest.mark.parametrize("name", ["chrH31.dcm", "chrH32.dcm", "chrI2.dcm", "chrGreek.dcm", "chrX2.dcm", "chrRuss.dcm"])
def test_parent_keeps_names_byte_for_byte(client, name):
    """A child of a study in ISO 2022 / GB18030 / single-byte charsets keeps the parent's
    (0008,0005) and the very bytes of its patient and study tags."""
    from pydicom.data import get_charset_files
    path = get_charset_files(name)[0]
    with open(path, "rb") as f:
        parent = client.simulate_post("/instances", body=f.read()).json
    ans = create(client, {"Tags": {"SeriesDescription": "child"}, "Parent": parent["ParentStudy"],
                          "Content": data_uri("application/pdf", make_pdf())})
    for tag in ("0008-0005", "0010-0010", "0010-0020"):
        src = client.simulate_get(f"/instances/{parent['ID']}/content/{tag}").content
        new = client.simulate_get(f"/instances/{ans['ID']}/content/{tag}").content
        assert new.rstrip(b" \x00") == src.rstrip(b" \x00"), tag
    a = client.simulate_get(f"/instances/{parent['ID']}/simplified-tags").json
    b = client.simulate_get(f"/instances/{ans['ID']}/simplified-tags").json
    assert b["PatientName"] == a["PatientName"]
