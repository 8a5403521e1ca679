"""Side by side with the reference (Debian's Orthanc 1.10.1, with the Dictionary of
reference section 7): the same create-dicom bodies give the same errors, the same tags,
and files that ``dciodvfy`` (dicom3tools) finds no worse."""
from __future__ import annotations

import io
import json
import shutil
import subprocess

import pydicom
import pytest
import requests

from conftest import ORTHANC
from orthanc_helpers import reference_orthanc
from pdf_helpers import KIT_DICTIONARY, data_uri, image_bytes, make_pdf, pdf_client
from test_pdf_bad_input import BAD

pytestmark = pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")

DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def reference_kit(tmp_path_factory):
    """URL of a scratch reference Orthanc whose Dictionary is :data:`KIT_DICTIONARY`."""
    d = tmp_path_factory.mktemp("orthanc-ref-kit")
    with reference_orthanc(d, Name="RefKit", Dictionary=KIT_DICTIONARY) as url:
        yield url


@pytest.fixture
def client(make_app):
    return pdf_client(make_app, {"Dictionary": KIT_DICTIONARY})


# ---- errors ------------------------------------------------------------------------------

#: Where pacsbox answers differently on purpose: a private Dictionary name is (0041,1011)
#: in pacsbox, (0041,0011) (the creator's slot) in Orthanc 1.10.1.
_DETAILS_DIFFER = {"text_in_dictionary_us"}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_as_reference(reference_kit, client, case):
    body = BAD[case][0]
    ref = requests.post(reference_kit + "/tools/create-dicom", data=json.dumps(body))
    ours = client.simulate_post("/tools/create-dicom", json=body)
    assert ours.status_code == ref.status_code
    a, b = ref.json(), ours.json
    if case in _DETAILS_DIFFER:
        a.pop("Details"), b.pop("Details")
    assert b == a


# ---- the instances made ---------------------------------------------------------------------

BODIES = {
    "pdf": {"Tags": {"PatientName": "V^PDF"}, "Content": data_uri("application/pdf", make_pdf(1001))},
    "png": {"Tags": {"PatientName": "V^PNG", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"},
            "Content": data_uri("image/png", image_bytes("L"))},
    "png16": {"Tags": {"PatientName": "V^PNG16", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"},
              "Content": data_uri("image/png", image_bytes("I;16"))},
    "png_rgba_no_sop_class": {"Tags": {"PatientName": "V^RGBA"}, "Content": data_uri("image/png", image_bytes("RGBA"))},
    "jpeg": {"Tags": {"PatientName": "V^JPG", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"},
             "Content": data_uri("image/jpeg", image_bytes("RGB", size=(16, 16), fmt="JPEG"))},
    "stl": {"Tags": {"PatientName": "V^STL"}, "Content": data_uri("model/stl", b"solid x\nendsolid x\n")},
    "private": {"Tags": {"PatientName": "V^Priv", "0041,0010": "KitCreator", "0041,1010": "hello", "0041,1011": "42"},
                "PrivateCreator": "KitCreator", "Content": data_uri("application/pdf", make_pdf(1001))},
    "no_content": {"Tags": {"PatientName": "V^None", "StudyDescription": "d"}},
}

#: Tags pacsbox adds beyond Orthanc 1.10.1, per body (see the plugin's README).
_EXTRA = {"pdf": {"0042,0015"}, "private": {"0042,0015"}, "jpeg": {"0028,2110", "0028,2114"}}
_GENERATED = {"0008,0012", "0008,0013", "0008,0018", "0008,0020", "0008,0021", "0008,0022", "0008,0023", "0008,0030",
              "0008,0031", "0008,0032", "0008,0033", "0010,0020", "0020,000d", "0020,000e"}


def _dciodvfy_errors(data: bytes, tmp_path, name: str) -> list[str]:
    path = tmp_path / f"{name}.dcm"
    path.write_bytes(data)
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if "Error" in line]


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (dicom3tools) is not installed")
@pytest.mark.parametrize("case", sorted(BODIES))
def test_dciodvfy_no_worse_than_reference(reference_kit, client, case, tmp_path):
    body = BODIES[case]
    ours = client.simulate_post("/tools/create-dicom", json=body)
    assert ours.status_code == 200, ours.text
    data = client.simulate_get(ours.json["Path"] + "/file").content
    mine = _dciodvfy_errors(data, tmp_path, "pacsbox")
    ref = requests.post(reference_kit + "/tools/create-dicom", data=json.dumps(body))
    if ref.status_code == 200:
        theirs = _dciodvfy_errors(requests.get(reference_kit + ref.json()["Path"] + "/file").content, tmp_path, "ref")
        assert len(mine) <= len(theirs), "\n".join(mine)
    else:  # STL: Orthanc 1.10.1 does not know the type; pacsbox's file must then be clean
        assert mine == []
    # pydicom reads it, and a round trip through /file gives the very same instance
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    again = client.simulate_post("/instances", body=data)
    assert again.json["ID"] == ours.json["ID"] and again.json["Status"] == "AlreadyStored"
    assert client.simulate_get(ours.json["Path"] + "/file").content == data


@pytest.mark.parametrize("case", sorted(set(BODIES) - {"stl"}))
def test_tags_as_reference(reference_kit, client, case):
    body = BODIES[case]
    ref = requests.post(reference_kit + "/tools/create-dicom", data=json.dumps(body))
    ours = client.simulate_post("/tools/create-dicom", json=body)
    assert ref.status_code == ours.status_code == 200
    a = requests.get(reference_kit + ref.json()["Path"] + "/tags").json()
    b = client.simulate_get(ours.json["Path"] + "/tags").json
    extra = set(_EXTRA.get(case, ()))
    if case == "png_rgba_no_sop_class":  # the SC Image IOD pacsbox completes (README)
        extra |= {k for k in b if k not in a}
    assert set(b) - extra == set(a)
    kept_jpeg = {"0028,0004", "0028,0006"} if case == "jpeg" else set()  # YBR_FULL_422, not decoded to RGB
    for key in set(a) - _GENERATED - {"7fe0,0010"} - kept_jpeg:
        assert (b[key]["Name"], b[key]["Type"], b[key]["Value"]) == (a[key]["Name"], a[key]["Type"], a[key]["Value"]), key


@pytest.mark.parametrize("level", ["ParentPatient", "ParentStudy", "ParentSeries"])
def test_parent_inheritance_as_reference(reference_kit, client, level):
    """The same parent on both servers, then a child through ``Parent``: the same tags
    (inherited values, charset, which dates are regenerated)."""
    first = {"Tags": {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Jörg^Müller", "PatientSex": "M",
                      "PatientBirthDate": "19800101", "StudyDescription": "Étude", "AccessionNumber": "ACC1",
                      "StudyDate": "20200101", "StudyTime": "101010", "SeriesDate": "20200102",
                      "SeriesTime": "111111", "SeriesDescription": "first", "Modality": "OT",
                      "ReferringPhysicianName": "Dr^Who", "BodyPartExamined": "CHEST"}}
    r = requests.post(reference_kit + "/tools/create-dicom", data=json.dumps(first))
    assert r.status_code == 200, r.text
    ref_parent = r.json()
    r = client.simulate_post("/tools/create-dicom", json=first)
    assert r.status_code == 200, r.text
    our_parent = r.json
    child = {"Tags": {"InstanceNumber": "2"}, "Content": data_uri("application/pdf", make_pdf())}
    ref = requests.post(reference_kit + "/tools/create-dicom", data=json.dumps({**child, "Parent": ref_parent[level]}))
    ours = client.simulate_post("/tools/create-dicom", json={**child, "Parent": our_parent[level]})
    assert ref.status_code == ours.status_code == 200
    assert (ref.json()[level] == ref_parent[level]) and (ours.json[level] == our_parent[level])
    a = requests.get(reference_kit + ref.json()["Path"] + "/tags").json()
    b = client.simulate_get(ours.json["Path"] + "/tags").json
    assert set(b) - {"0042,0015"} == set(a)
    uids = {"0008,0018", "0010,0020", "0020,000d", "0020,000e"}
    now = {"0008,0012", "0008,0013", "0008,0022", "0008,0023", "0008,0032", "0008,0033"}
    for key in set(a) - uids - now - {"0042,0011"}:
        if a[key]["Value"] == first["Tags"].get(a[key]["Name"], "?") or key in ("0008,0020", "0008,0021"):
            assert b[key]["Value"] == a[key]["Value"], key
        assert (b[key]["Name"], b[key]["Type"]) == (a[key]["Name"], a[key]["Type"]), key
    assert b["0008,0005"]["Value"] == a["0008,0005"]["Value"] == "ISO_IR 192"
    assert b["0010,0010"]["Value"] == a["0010,0010"]["Value"] == "Jörg^Müller"


@pytest.mark.parametrize("size,ending", [(193, b"%%EOF\n"), (194, b"%%EOF\n"), (195, b"%%EOF"), (196, b"%%EOF")])
def test_pdf_of_the_reference_files(reference_kit, client, size, ending):
    """A file made by Orthanc 1.10.1 (no (0042,0015)) gives, through pacsbox's ``/pdf``, the
    bytes the reference's ``/pdf`` gives (its padding rule); pacsbox's own file gives the
    PDF as uploaded."""
    pdf = make_pdf(size, ending=ending)
    body = {"Tags": {}, "Content": data_uri("application/pdf", pdf)}
    ref = requests.post(reference_kit + "/tools/create-dicom", data=json.dumps(body)).json()
    ref_pdf = requests.get(reference_kit + f"/instances/{ref['ID']}/pdf")
    assert ref_pdf.headers["Content-Type"] == "application/pdf"
    data = requests.get(reference_kit + f"/instances/{ref['ID']}/file").content
    ours = client.simulate_post("/instances", body=data).json
    assert client.simulate_get(f"/instances/{ours['ID']}/pdf").content == ref_pdf.content
    own = client.simulate_post("/tools/create-dicom", json=body).json
    assert client.simulate_get(f"/instances/{own['ID']}/pdf").content == pdf
