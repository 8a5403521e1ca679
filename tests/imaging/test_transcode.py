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
#: big-endian file, a JPEG 2000 YBR_RCT colour image, an odd-sized RGB image, an implicit
#: VR file.
SOURCES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "emri_small.dcm", "JPGExtended.dcm",
           "MR_small_bigendian.dcm", "US1_J2KR.dcm", "SC_rgb_small_odd.dcm", "MR_small_implicit.dcm"]


def _read(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def _converted(name: str, target: str, convert) -> tuple[pydicom.Dataset, pydicom.Dataset]:
    """The sample file ``name`` and ``convert(data, target)`` (which must give a file in
    ``target``), both read."""
    data = open(sample(name), "rb").read()
    out = convert(data, target)
    assert out is not None
    ds = _read(out)
    assert str(ds.file_meta.TransferSyntaxUID) == target
    return _read(data), ds


def _all_frames(ds) -> np.ndarray:
    return np.stack([I.decode_frame(ds, i) for i in range(I.frame_count(ds))])


@pytest.mark.parametrize("name", SOURCES)
@pytest.mark.parametrize("target", LOSSLESS)
def test_lossless_targets_round_trip(name, target):
    src, ds = _converted(name, target, transcode)
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


def _signed_12_bit() -> bytes:
    """MR_small as signed 12-bit data (BitsStored 12, HighBit 11), with negative values
    and garbage in the 4 bits above BitsStored (a common CT layout)."""
    src = _read(open(sample("MR_small.dcm"), "rb").read())
    values = np.frombuffer(src.PixelData, "<u2").copy() & 0x07FF
    values[::11] = 0x0A00                 # -1536 in 12 bits
    values[::7] |= 0xF000
    src.PixelData = values.tobytes()
    src.PixelRepresentation, src.BitsStored, src.HighBit = 1, 12, 11
    buf = io.BytesIO()
    src.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")
def test_the_reference_decodes_what_pacsbox_writes(reference):
    """Each compressed file pacsbox writes is decoded by Orthanc 1.10.1 (DCMTK/its own
    decoders) to the same pixels as pacsbox decodes them (lossless ones: the source's)."""
    problems = []
    sources = {name: open(sample(name), "rb").read() for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm",
                                                                    "emri_small.dcm", "MR_small_implicit.dcm")}
    sources["signed 12-bit"] = _signed_12_bit()
    for name, data in sources.items():
        for target in sorted(set(LOSSLESS) | set(LOSSY)):
            if name == "signed 12-bit" and target not in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"):
                # the reference reads native and 12-bit JPEG lossless signed data as int16
                # without sign extension from HighBit: JPEG-LS (P 16, sign-extended) only
                continue
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


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "SC_rgb_16bit_2frame.dcm",
                                  "emri_small.dcm", "OBXXXX1A.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"])
@pytest.mark.parametrize("target", ["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
                                    "1.2.840.10008.1.2.4.90"])
def test_native_compression_keeps_every_other_byte(name, target):
    """The pydicom-free path (:func:`compress_native`, what modify/anonymize ``Transcode``
    takes for a native explicit VR little endian file) changes only (0002,0010), the group
    length and Pixel Data: every other element is the source's, and the pixels round-trip
    exactly; its codestreams are those of :func:`encode_dataset` (pydicom's reading)."""
    from pydicom.encaps import generate_frames

    from pacsbox.dicom.transcode import compress_native
    from pacsbox.imaging.encoders import encode_dataset
    src, ds = _converted(name, target, compress_native)
    assert [e for e in ds.file_meta if e.tag != 0x00020010 and e.tag != 0x00020000] == \
           [e for e in src.file_meta if e.tag != 0x00020010 and e.tag != 0x00020000]
    assert [e for e in ds if e.tag != 0x7FE00010] == [e for e in src if e.tag != 0x7FE00010]
    assert np.array_equal(_all_frames(src), _all_frames(ds))
    n = int(src.get("NumberOfFrames", 1) or 1)
    encode_dataset(src, target)
    assert list(generate_frames(ds.PixelData, number_of_frames=n)) == \
           list(generate_frames(src.PixelData, number_of_frames=n))


@pytest.mark.parametrize("name, target, why", [
    ("CT_small.dcm", "1.2.840.10008.1.2.4.50", "lossy: new UID and attributes, pydicom's path"),
    ("CT_small.dcm", "1.2.840.10008.1.2.5", "RLE: pydicom's encoder"),
    ("CT_small.dcm", "1.2.840.10008.1.2", "an uncompressed target"),
    ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.4.80", "big endian"),
    ("SC_rgb_rle.dcm", "1.2.840.10008.1.2.4.80", "encapsulated source"),
    ("rtdose.dcm", "1.2.840.10008.1.2.4.80", "32 bits allocated"),
    ("liver.dcm", "1.2.840.10008.1.2.4.80", "1 bit allocated"),
])
def test_native_compression_leaves_the_rest_to_pydicom(name, target, why):
    from pacsbox.dicom.transcode import compress_native
    assert compress_native(open(sample(name), "rb").read(), target) is None, why


def test_planar_colour_goes_through_pydicom():
    """Colour by plane (PlanarConfiguration 1): the encoders write colour by pixel, so
    the attribute changes and the full rewrite does it; the pixels round-trip."""
    from pacsbox.dicom.transcode import compress_native
    src = _read(open(sample("SC_rgb.dcm"), "rb").read())
    rgb = src.pixel_array
    src.PixelData = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
    src.PlanarConfiguration = 1
    buf = io.BytesIO()
    src.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    assert compress_native(data, "1.2.840.10008.1.2.4.80") is None
    ds = _read(transcode(data, "1.2.840.10008.1.2.4.80"))
    assert ds.PlanarConfiguration == 0
    assert np.array_equal(I.decode_frame(ds, 0), rgb)


@pytest.mark.parametrize("signed", [0, 1])
@pytest.mark.parametrize("bits_stored", [16, 12, 10])
def test_native_frames_are_pydicoms_stored_values(signed, bits_stored):
    """Values outside BitsStored (overlay bits, garbage) are masked, signed ones sign-
    extended, as pydicom's ``pixel_array(raw=True)`` gives them, and both paths encode the
    same values."""
    from pydicom.pixels import pixel_array

    from pacsbox.dicom.transcode import compress_native
    from pacsbox.imaging.encoders import native_frames
    src = _read(open(sample("MR_small.dcm"), "rb").read())
    values = np.frombuffer(src.PixelData, "<u2").copy()
    values[::7] |= 0xF000  # bits above BitsStored
    values[::11] = 0x0A00 | 0x0200  # negative in 10 and 12 bits when signed
    src.PixelData = values.tobytes()
    src.PixelRepresentation, src.BitsStored, src.HighBit = signed, bits_stored, bits_stored - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = pixel_array(src, raw=True)
    got = native_frames(src.PixelData, rows=src.Rows, columns=src.Columns, bits_allocated=16,
                        bits_stored=bits_stored, signed=bool(signed))
    assert got[0].dtype == expected.dtype and np.array_equal(got[0], expected)
    buf = io.BytesIO()
    src.save_as(buf, enforce_file_format=True)
    out = _read(compress_native(buf.getvalue(), "1.2.840.10008.1.2.4.80"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(pixel_array(out, raw=True), expected)


def _elements(ds, prefix=()) -> list:
    """(path, VR, value) of every element, sequences walked; group lengths left out."""
    out = []
    for el in ds:
        if el.VR == "SQ":
            out.append((prefix + (el.tag,), "SQ", len(el.value)))
            for i, item in enumerate(el.value):
                out += _elements(item, prefix + (el.tag, i))
        elif el.tag.element != 0:
            out.append((prefix + (el.tag,), el.VR, el.value))
    return out


def test_implicit_to_explicit_is_pydicoms_reading():
    """Every implicit VR little endian sample file re-encoded at the byte level reads (in
    explicit VR) as pydicom reads the original: same elements, VRs (private dictionary,
    UN, OW pixel data, US/SS after Pixel Representation) and values, nested private
    sequences included; what it cannot decide gives None."""
    from conftest import pydicom_data_files, pydicom_test_files

    from pacsbox.dicom.transcode import implicit_to_explicit
    converted = []
    for path in pydicom_test_files() + pydicom_data_files():
        data = open(path, "rb").read()
        try:
            src = _read(data)
        except Exception:  # noqa: BLE001
            continue
        if str(src.file_meta.get("TransferSyntaxUID", "")) != "1.2.840.10008.1.2":
            continue
        out = implicit_to_explicit(data)
        if out is None:
            continue
        dst = _read(out)
        assert str(dst.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.1"
        assert _elements(dst) == _elements(src), path
        converted.append(path.rsplit("/", 1)[-1])
    assert {"MR_small_implicit.dcm", "rtdose.dcm", "nested_priv_SQ.dcm", "priv_SQ.dcm", "rtplan.dcm",
            "gdcm-US-ALOKA-16.dcm"} <= set(converted)
    assert implicit_to_explicit(open(sample("rtplan_truncated.dcm"), "rb").read()) is None
    assert implicit_to_explicit(open(sample("CT_small.dcm"), "rb").read()) is None  # explicit already


@pytest.mark.parametrize("signed", [0, 1])
def test_implicit_source_us_or_ss_and_the_native_path(signed):
    """An implicit VR CT whose Smallest/Largest Image Pixel Value are ``US or SS``: US or
    SS after its Pixel Representation, as pydicom reads them, then JPEG-LS through the
    pydicom-free path; the same attribute inside a sequence is left to pydicom."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from pacsbox.dicom.transcode import compress_native, implicit_to_explicit
    src = _read(open(sample("MR_small.dcm"), "rb").read())
    src.PixelRepresentation = signed
    src.SmallestImagePixelValue, src.LargestImagePixelValue = (-5 if signed else 5), 900
    src.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    buf = io.BytesIO()
    src.save_as(buf, implicit_vr=True, enforce_file_format=True)
    data = buf.getvalue()
    explicit = _read(implicit_to_explicit(data))
    assert explicit["SmallestImagePixelValue"].VR == ("SS" if signed else "US")
    assert explicit.SmallestImagePixelValue == (-5 if signed else 5)
    out = _read(compress_native(data, "1.2.840.10008.1.2.4.80"))
    assert str(out.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.80"
    assert np.array_equal(I.decode_frame(out), I.decode_frame(_read(data)))
    item = Dataset()
    item.SmallestImagePixelValue = 3
    src.ReferencedImageSequence = Sequence([item])
    buf = io.BytesIO()
    src.save_as(buf, implicit_vr=True, enforce_file_format=True)
    assert implicit_to_explicit(buf.getvalue()) is None
    assert _read(transcode(buf.getvalue(), "1.2.840.10008.1.2.4.80")).file_meta.TransferSyntaxUID == \
           "1.2.840.10008.1.2.4.80"
