"""``pacsbox.transcode`` to every target: lossless targets keep the SOPInstanceUID and
round-trip the pixels exactly (checked with pydicom's own decoders too), lossy ones get a
new UID and the lossy attributes; what cannot be written gives None, never a file whose
TransferSyntaxUID lies. Then ``Transcode`` through modify and anonymize, and the files
decoded by the reference Orthanc."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
import requests

from conftest import ORTHANC
from conftest import testfile as sample
from pacsbox import imaging as I
from pacsbox import transcode

LOSSLESS = ["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.5", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
            "1.2.840.10008.1.2.1.99"]
LOSSY = {"1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1",
         "1.2.840.10008.1.2.4.81": "ISO_14495_1", "1.2.840.10008.1.2.4.91": "ISO_15444_1"}

J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}

#: Sources: signed 16-bit CT, unsigned 16-bit MR, RGB, a multi-frame, a 12-bit JPEG, a
#: big-endian file, a JPEG 2000 YBR_RCT colour image, an 8-bit JPEG-LS file.
SOURCES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "emri_small.dcm", "JPGExtended.dcm",
           "MR_small_bigendian.dcm", "US1_J2KR.dcm", "SC_rgb_small_odd.dcm"]


def _read(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def _all_frames(ds) -> np.ndarray:
    return np.stack([I.decode_frame(ds, i) for i in range(I.frame_count(ds))])


@pytest.mark.parametrize("name", SOURCES)
@pytest.mark.parametrize("target", LOSSLESS)
def test_lossless_targets_round_trip(name, target):
    data = open(sample(name), "rb").read()
    src = _read(data)
    out = transcode(data, target)
    assert out is not None
    ds = _read(out)
    assert str(ds.file_meta.TransferSyntaxUID) == target
    assert ds.SOPInstanceUID == src.SOPInstanceUID
    assert "LossyImageCompression" not in ds or ds.LossyImageCompression == src.get("LossyImageCompression")
    assert np.array_equal(_all_frames(src), _all_frames(ds))
    # pydicom's default decoders (pylibjpeg/pyjpegls, not the ones pacsbox prefers) agree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ds.pixel_array.shape == src.pixel_array.shape


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "emri_small.dcm", "JPGExtended.dcm"])
@pytest.mark.parametrize("target", sorted(LOSSY))
def test_lossy_targets_get_a_new_uid_and_the_lossy_attributes(name, target):
    data = open(sample(name), "rb").read()
    src = _read(data)
    bits = int(src.BitsStored)
    if str(src.file_meta.TransferSyntaxUID) == target:
        assert transcode(data, target) == data  # already there: unchanged
        return
    out = transcode(data, target, quality=90)
    if target == "1.2.840.10008.1.2.4.50" and bits > 8 or target == "1.2.840.10008.1.2.4.51" and (
            bits > 12 or src.PixelRepresentation == 1):
        assert out is None  # JPEG cannot hold these: the caller keeps the file
        return
    assert out is not None
    ds = _read(out)
    assert str(ds.file_meta.TransferSyntaxUID) == target
    assert ds.SOPInstanceUID != src.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == LOSSY[target]
    assert float(ds.LossyImageCompressionRatio) > 1
    # as DCMTK's encoders (the reference's files)
    assert ds.DerivationCodeSequence[-1].CodeValue == "113040"
    assert ds.SourceImageSequence[-1].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ds.SourceImageSequence[-1].PurposeOfReferenceCodeSequence[0].CodeValue == "121320"
    assert ds.DerivationDescription
    if "ImageType" in src:
        assert ds.ImageType[0] == "DERIVED"
    a, b = _all_frames(src).astype(float), _all_frames(ds).astype(float)
    assert a.shape == b.shape
    span = a.max() - a.min()
    assert np.abs(a - b).mean() < 0.02 * span  # close to the source


def test_quality_changes_the_size():
    data = open(sample("SC_rgb.dcm"), "rb").read()
    small, big = transcode(data, "1.2.840.10008.1.2.4.50", quality=10), transcode(data, "1.2.840.10008.1.2.4.50", 99)
    assert len(small) < len(big)


@pytest.mark.parametrize("name, target", [
    ("rtdose.dcm", "1.2.840.10008.1.2.4.80"),      # 32-bit: no JPEG-LS
    ("rtdose.dcm", "1.2.840.10008.1.2.4.50"),
    ("liver.dcm", "1.2.840.10008.1.2.4.90"),       # 1-bit segmentation
    ("OBXXXX1A.dcm", "1.2.840.10008.1.2.4.50"),    # palette indices are not compressed lossily
    ("CT_small.dcm", "1.2.840.10008.1.2.4.100"),   # MPEG2: no encoder
    ("CT_small.dcm", "1.2.3.4"),
])
def test_impossible_targets_give_none(name, target):
    assert transcode(open(sample(name), "rb").read(), target) is None


def test_multiframe_encapsulation_has_one_fragment_per_frame():
    data = open(sample("emri_small.dcm"), "rb").read()
    ds = _read(transcode(data, "1.2.840.10008.1.2.4.80"))
    from pydicom.encaps import generate_frames
    assert len(list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))) == int(ds.NumberOfFrames)


def test_modify_and_anonymize_transcode(client):
    data = open(sample("CT_small.dcm"), "rb").read()
    iid = client.simulate_post("/instances", body=data).json["ID"]
    r = client.simulate_post(f"/instances/{iid}/modify", json={"Transcode": "1.2.840.10008.1.2.4.80",
                                                               "Replace": {"PatientName": "X"}, "Force": True})
    assert r.status_code == 200
    ds = _read(r.content)
    assert str(ds.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.80"
    assert np.array_equal(I.decode_frame(ds), I.decode_frame(_read(data)))
    study = client.simulate_get(f"/instances/{iid}/study").json["ID"]
    r = client.simulate_post(f"/studies/{study}/anonymize", json={"Transcode": "1.2.840.10008.1.2.4.70"})
    assert r.status_code == 200, r.text
    new_study = r.json["ID"]
    for inst in client.simulate_get(f"/studies/{new_study}/instances").json:
        f = client.simulate_get(f"/instances/{inst['ID']}/file").content
        assert str(_read(f).file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.70"
        # and the image routes decode it
        assert client.simulate_get(f"/instances/{inst['ID']}/preview").status_code == 200


@pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")
def test_the_reference_decodes_what_pacsbox_writes(reference):
    """Each compressed file pacsbox writes is decoded by Orthanc 1.10.1 (DCMTK/its own
    decoders) to the same pixels as pacsbox decodes them (lossless ones: the source's)."""
    problems = []
    for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "emri_small.dcm"):
        data = open(sample(name), "rb").read()
        for target in sorted(set(LOSSLESS) | set(LOSSY)):
            out = transcode(data, target)
            if out is None:
                continue
            r = requests.post(reference + "/instances", data=out)
            assert r.status_code == 200, (name, target)
            iid = r.json()["ID"]
            a = requests.get(f"{reference}/instances/{iid}/frames/0/numpy?rescale=0")
            requests.delete(f"{reference}/instances/{iid}")  # lossless targets keep the UID
            if a.status_code != 200:
                if target not in J2K:  # Debian's Orthanc has no JPEG 2000 decoder
                    problems.append(f"{name} -> {target}: the reference answers {a.status_code}")
                continue
            x = np.load(io.BytesIO(a.content))[..., 0] if np.load(io.BytesIO(a.content)).shape[-1] == 1 \
                else np.load(io.BytesIO(a.content))
            y = I.decode_frame(_read(out), 0)
            if x.shape != y.shape or np.abs(x.astype(int) - y.astype(int)).max() > (0 if target in LOSSLESS else 2):
                problems.append(f"{name} -> {target}: pixels differ")
    assert not problems, "\n".join(problems)


def test_file_download_transcode(client):
    data = open(sample("CT_small.dcm"), "rb").read()
    iid = client.simulate_post("/instances", body=data).json["ID"]
    r = client.simulate_get(f"/instances/{iid}/file", params={"transcode": "1.2.840.10008.1.2.4.90"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/dicom"
    ds = _read(r.content)
    assert str(ds.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.90"
    assert np.array_equal(I.decode_frame(ds), I.decode_frame(_read(data)))
    assert client.simulate_get(f"/instances/{iid}/file", params={"transcode": "1.2.3"}).status_code == 400
    r = client.simulate_get(f"/instances/{iid}/file", params={"transcode": "1.2.840.10008.1.2.4.100"})
    assert r.status_code == 404 and r.content == b""
    assert client.simulate_get(f"/instances/{iid}/file").content == data


def test_archive_transcode_writes_compressed_files(make_app):
    import zipfile

    import falcon.testing
    import pacsbox_archive.plugin
    client = falcon.testing.TestClient(make_app(plugins=[pacsbox_archive.plugin]))
    data = open(sample("MR_small.dcm"), "rb").read()
    iid = client.simulate_post("/instances", body=data).json["ID"]
    study = client.simulate_get(f"/instances/{iid}/study").json["ID"]
    r = client.simulate_get(f"/studies/{study}/archive", params={"transcode": "1.2.840.10008.1.2.4.80"})
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        (member,) = [n for n in zf.namelist() if not n.endswith("/")]
        ds = _read(zf.read(member))
    assert str(ds.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.80"
    assert np.array_equal(I.decode_frame(ds), I.decode_frame(_read(data)))


@pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")
@pytest.mark.parametrize("target", ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
                                    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"])
def test_modify_transcode_side_by_side(reference, client, target):
    """``POST /instances/{id}/modify`` with ``Transcode``: the same syntax, photometric
    interpretation and lossy attributes as the reference (DCMTK), the same pixels for
    lossless targets and pixels within 2 of each other for lossy ones."""
    import re
    data = open(sample("SC_rgb.dcm"), "rb").read()
    body = {"Transcode": target, "Force": True, "Keep": ["SOPInstanceUID"]}
    iid = requests.post(reference + "/instances", data=data).json()["ID"]
    ra = requests.post(f"{reference}/instances/{iid}/modify", json=body)
    r = client.simulate_post(f"/instances/{client.simulate_post('/instances', body=data).json['ID']}/modify", json=body)
    assert r.status_code == 200, r.text
    b = _read(r.content)
    if ra.status_code != 200:  # RLE: the reference has no encoder ("Cannot transcode"), pacsbox has
        assert str(b.file_meta.TransferSyntaxUID) == target
        return
    a = _read(ra.content)
    assert str(a.file_meta.TransferSyntaxUID) == str(b.file_meta.TransferSyntaxUID) == target
    assert a.PhotometricInterpretation == b.PhotometricInterpretation
    for kw in ("LossyImageCompression", "LossyImageCompressionMethod", "ImageType"):
        assert a.get(kw) == b.get(kw), kw
    assert (a.SOPInstanceUID == a.file_meta.MediaStorageSOPInstanceUID) and (b.SOPInstanceUID ==
                                                                            b.file_meta.MediaStorageSOPInstanceUID)
    if target in LOSSY:
        assert a.SOPInstanceUID != _read(data).SOPInstanceUID and b.SOPInstanceUID != _read(data).SOPInstanceUID
        number = re.compile(r"[0-9.]+")
        assert number.sub("N", a.DerivationDescription) == number.sub("N", b.DerivationDescription)
        assert [c.CodeValue for c in a.DerivationCodeSequence] == [c.CodeValue for c in b.DerivationCodeSequence]
        assert [s.PurposeOfReferenceCodeSequence[0].CodeValue for s in a.SourceImageSequence] == \
               [s.PurposeOfReferenceCodeSequence[0].CodeValue for s in b.SourceImageSequence]
        assert abs(float(a.LossyImageCompressionRatio) - float(b.LossyImageCompressionRatio)) < \
               0.5 * float(a.LossyImageCompressionRatio)
    else:
        assert a.SOPInstanceUID == b.SOPInstanceUID == _read(data).SOPInstanceUID
    x, y = I.decode_frame(a).astype(int), I.decode_frame(b).astype(int)
    assert np.abs(x - y).max() <= (0 if target not in LOSSY else 12) and np.abs(x - y).mean() < 2
    requests.delete(f"{reference}/instances/{iid}")


def test_lossy_quality_of_modify(client):
    data = open(sample("SC_rgb.dcm"), "rb").read()
    iid = client.simulate_post("/instances", body=data).json["ID"]
    sizes = []
    for q in (10, 95):
        r = client.simulate_post(f"/instances/{iid}/modify", json={"Transcode": "1.2.840.10008.1.2.4.50",
                                                                   "LossyQuality": q, "Force": True})
        assert r.status_code == 200
        ds = _read(r.content)
        assert f"quality factor {q}," in ds.DerivationDescription
        sizes.append(len(ds.PixelData))
    assert sizes[0] < sizes[1]
    series = client.simulate_get(f"/instances/{iid}/series").json["ID"]
    r = client.simulate_post(f"/series/{series}/modify", json={"Transcode": "1.2.840.10008.1.2.4.50",
                                                              "LossyQuality": 20, "Replace": {"SeriesDescription": "Q"}})
    assert r.status_code == 200, r.text
    new = client.simulate_get(f"/series/{r.json['ID']}/instances").json[0]["ID"]
    ds = _read(client.simulate_get(f"/instances/{new}/file").content)
    assert "quality factor 20," in ds.DerivationDescription
    for bad, status in ((0, 400), (101, 400), ("90", 400)):
        r = client.simulate_post(f"/instances/{iid}/modify", json={"Transcode": "1.2.840.10008.1.2.4.50",
                                                                   "LossyQuality": bad, "Force": True})
        assert r.status_code == status


def test_worker_processes_give_the_same_files(monkeypatch):
    """Compression in the worker processes equals compression in-process; a worker
    that cannot start leaves compression in-process."""
    from pacsbox.dicom import transcode_worker as W
    from pacsbox.dicom.transcode import transcode_here
    data = open(sample("CT_small.dcm"), "rb").read()
    pool = W.WorkerPool(2)
    for target in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.5"):
        assert pool.transcode(data, target, 90) == transcode_here(data, target)
    assert pool.transcode(b"not dicom" * 1000, "1.2.840.10008.1.2.4.80", 90) is None
    pool.close()

    class Broken(W._Worker):
        def __init__(self):
            raise OSError("cannot start")

    monkeypatch.setattr(W, "_Worker", Broken)
    monkeypatch.setattr(W, "_pool", None)
    monkeypatch.setenv(W.PROCESSES_ENV, "2")
    assert transcode(data, "1.2.840.10008.1.2.4.80") == transcode_here(data, "1.2.840.10008.1.2.4.80")


def test_lossy_uid_is_the_same_when_done_again():
    """A job redone after a crash must not store a duplicate under a fresh UID."""
    data = open(sample("SC_rgb.dcm"), "rb").read()
    a = _read(transcode(data, "1.2.840.10008.1.2.4.50"))
    b = _read(transcode(data, "1.2.840.10008.1.2.4.50"))
    c = _read(transcode(data, "1.2.840.10008.1.2.4.50", quality=50))
    assert a.SOPInstanceUID == b.SOPInstanceUID != c.SOPInstanceUID != _read(data).SOPInstanceUID
