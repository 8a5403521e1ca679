"""Every file of pydicom's test files and of the pydicom-data package goes through the
REST API: upload answer, Orthanc identifiers, ``/file`` byte-identical, ``/tags`` equal to
pydicom's reading.

Files the reference Orthanc 1.10.1 refuses are listed with the reason and must be refused
the same way (and leave nothing behind).
"""
from __future__ import annotations

import io
import os
import warnings

import falcon.testing
import pydicom
import pytest
from conftest import pydicom_data_files, pydicom_test_files

from pacsbox import create_app, orthanc_id

FILES = list(dict.fromkeys(pydicom_test_files() + pydicom_data_files()))

#: Refused with 400 "Cannot parse an invalid DICOM file (size: N bytes)" (reference: same).
BROKEN = {
    "MR_truncated.dcm": "the file is cut short",
    "rtplan_truncated.dcm": "the file is cut short",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "the encapsulated pixel data is cut short",
    "no_meta.dcm": "no meta group and a first element header that reads past the end of the file",
}

#: Refused with 404 "Inexistent tag" (reference: same): fragments without
#: StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID.
NO_UIDS = {"JPEGLSNearLossless_08.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm",
           "SC_rgb_jls_lossy_sample.dcm", "UN_sequence.dcm", "empty_charset_LEI.dcm", "meta_missing_tsyntax.dcm",
           "nested_priv_SQ.dcm", "no_meta_group_length.dcm", "priv_SQ.dcm"}

STRING_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """One app for the whole corpus: ``(client, first file of each instance ID, accepted files)``.

    ``accepted`` maps a file name to ``(transfer syntax, SOP class, modality, photometric
    interpretation)`` read with pydicom.
    """
    root = tmp_path_factory.mktemp("corpus")
    app = create_app({"StorageDirectory": str(root)}, load_entrypoints=False, start_jobs=False)
    yield falcon.testing.TestClient(app), {}, {}
    app.close()


def _identifier(ds: pydicom.Dataset, keyword: str) -> str:
    """An identifier as Orthanc hashes it, read with pydicom: padding stripped; a value
    written with VR UN is taken raw (DCMTK pads it to an even length, Orthanc drops one NUL)."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    raw = ds.get_item(tag)
    if raw is None:
        return ""
    if raw.VR == "UN":
        value = bytes(raw.value)
        if len(value) % 2 == 0 and value.endswith(b"\x00"):
            value = value[:-1]
        return value.decode("latin-1")
    return str(ds[tag].value).rstrip(" \x00")


def _pydicom_text(elem) -> list[str]:
    value = elem.value
    items = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    out = []
    for x in items:
        if x is None:
            x = ""
        s = getattr(x, "original_string", None)
        out.append((s if isinstance(s, str) else str(x)).strip(" \x00"))
    return out


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_file(corpus, path):
    client, first, accepted = corpus
    name = os.path.basename(path)
    data = open(path, "rb").read()
    before = client.simulate_get("/statistics").json
    r = client.simulate_post("/instances", body=data)
    if name in BROKEN:
        assert r.status_code == 400 and r.json["OrthancStatus"] == 15
        assert r.json["Details"] == f"Cannot parse an invalid DICOM file (size: {len(data)} bytes)"
        assert client.simulate_get("/statistics").json == before
        return
    if name in NO_UIDS:
        assert r.status_code == 404 and r.json["OrthancStatus"] == 21 and r.json["Message"] == "Inexistent tag"
        assert client.simulate_get("/statistics").json == before
        return
    assert r.status_code == 200, r.text
    answer = r.json
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        ids = [_identifier(ds, k) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    assert answer["ParentPatient"] == orthanc_id(ids[0])
    assert answer["ParentStudy"] == orthanc_id(*ids[:2])
    assert answer["ParentSeries"] == orthanc_id(*ids[:3])
    assert answer["ID"] == orthanc_id(*ids) and answer["Path"] == f"/instances/{answer['ID']}"
    iid = answer["ID"]
    accepted[name] = (str(ds.file_meta.get("TransferSyntaxUID", "")), str(ds.get("SOPClassUID", "")),
                      ds.get("Modality"), ds.get("PhotometricInterpretation"))
    if answer["Status"] == "AlreadyStored":
        # the same instance came in another file (another transfer syntax): the first is kept
        assert iid in first, f"{name}: AlreadyStored for an instance never uploaded"
        assert client.simulate_get(f"/instances/{iid}/file").content == first[iid]
        assert client.simulate_get("/statistics").json == before
        return
    assert answer["Status"] == "Success"
    first[iid] = data
    stored = client.simulate_get(f"/instances/{iid}/file")
    assert stored.status_code == 200 and stored.headers["content-type"] == "application/dicom"
    assert stored.content == data
    assert client.simulate_get("/statistics").json["CountInstances"] == before["CountInstances"] + 1

    tags = client.simulate_get(f"/instances/{iid}/tags").json
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        top = [e for e in ds.elements() if int(e.tag) <= 0x7FE00010]
        assert sorted(tags) == sorted(f"{int(e.tag) >> 16:04x},{int(e.tag) & 0xFFFF:04x}" for e in top)
        checked = 0
        for raw in top:
            tag = int(raw.tag)
            if raw.VR == "UN" or tag >> 16 & 1:
                continue
            try:
                elem = ds[tag]
            except Exception:  # noqa: BLE001 - pydicom cannot decode it either
                continue
            if elem.VR not in STRING_VRS or elem.VR == "SQ":
                continue
            ours = tags[f"{tag >> 16:04x},{tag & 0xFFFF:04x}"]
            expected = _pydicom_text(elem)
            if len("\\".join(expected).encode("utf-8")) > 256 + 64:
                assert ours["Type"] == "TooLong", (name, tag)
                continue
            if ours["Type"] == "TooLong":
                continue
            assert ours["Type"] == "String", (name, hex(tag), ours)
            got = [v.strip(" \x00") for v in ours["Value"].split("\\")] if elem.VR not in ("LT", "ST", "UT") \
                else [ours["Value"].strip(" \x00")]
            if elem.VR in ("LT", "ST", "UT"):
                expected = ["\\".join(expected)]
            assert got == expected, (name, hex(tag))
            checked += 1
    assert checked > 0 or len(top) < 8, f"{name}: no string element compared"


def test_corpus_covers_modalities_and_transfer_syntaxes(corpus):
    """Runs after the per-file tests: the accepted files cover the kinds the issue names,
    and each kind reached the index."""
    client, first, accepted = corpus
    if len(accepted) < 100:
        pytest.skip("needs the per-file tests of this module to have run first")
    syntaxes = {a[0] for a in accepted.values()}
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",  # implicit, explicit, big endian
            "1.2.840.10008.1.2.4.50",  # JPEG baseline
            "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
            "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
            "1.2.840.10008.1.2.5"} <= syntaxes  # RLE
    assert {"CT", "MR", "US", "NM", "SEG"} <= {a[2] for a in accepted.values()}
    assert "1.2.840.10008.5.1.4.1.1.66.4" in {a[1] for a in accepted.values()}  # Segmentation Storage
    assert "RGB" in {a[3] for a in accepted.values()}
    stored_modalities = {m["MainDicomTags"].get("Modality") for m in client.simulate_get(
        "/series", query_string="expand").json}
    assert {"CT", "MR", "US", "NM", "SEG"} <= stored_modalities
    stored_syntaxes = {client.simulate_get(f"/instances/{iid}/metadata/TransferSyntax").text for iid in first}
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.5"} <= stored_syntaxes
