"""pacsbox.imaging and the image routes without the reference: memory of multi-frame
rendering, files omitting attributes, the answers without codecs, content negotiation."""
from __future__ import annotations

import io
import tracemalloc
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import testfile as sample
from pacsbox import imaging as I
from pacsbox.rest import images as R


def _file(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _synthetic(frames: int = 1, rows: int = 64, cols: int = 64, **attrs) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "IMG", generate_uid(), generate_uid()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, cols, 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = (np.arange(frames * rows * cols, dtype=np.uint32) % 4096).astype(np.uint16).tobytes()
    for k, v in attrs.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    return ds


def test_rendering_one_frame_of_500_decodes_only_that_frame():
    ds = I.read_dataset(_file(_synthetic(500)))
    frame_bytes = 64 * 64 * 2
    I.decode_frame(ds, 0)  # warm the imports
    tracemalloc.start()
    try:
        img = I.preview(I.decode_frame(ds, 250))
        I.render(I.decode_frame(ds, 499), center=2048, width=4096)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert img.shape == (64, 64)
    assert peak < 12 * frame_bytes  # a few frame-sized buffers, never the 500 frames (4 MB)


def test_multiframe_routes(client):
    iid = client.simulate_post("/instances", body=_file(_synthetic(500))).json["ID"]
    assert client.simulate_get(f"/instances/{iid}/frames").json == list(range(500))
    for n in (0, 250, 499):
        r = client.simulate_get(f"/instances/{iid}/frames/{n}/image-uint16")
        img = np.asarray(Image.open(io.BytesIO(r.content)))
        expected = (np.arange(n * 4096, (n + 1) * 4096) % 4096).reshape(64, 64)
        assert np.array_equal(img, expected)
    assert client.simulate_get(f"/instances/{iid}/frames/500/preview").status_code == 404
    raw = client.simulate_get(f"/instances/{iid}/frames/7/raw").content
    assert np.array_equal(np.frombuffer(raw, "<u2"), np.arange(7 * 4096, 8 * 4096) % 4096)


def test_files_omitting_samples_and_representation_decode(client):
    ds = _synthetic(1, SamplesPerPixel=None, PixelRepresentation=None)
    iid = client.simulate_post("/instances", body=_file(ds)).json["ID"]
    r = client.simulate_get(f"/instances/{iid}/image-uint16")
    assert r.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), np.arange(4096).reshape(64, 64))


def test_signed_12_bit_is_sign_extended():
    ds = _synthetic(1, PixelRepresentation=1)
    ds.PixelData = np.array([0xFFF, 0x800, 0x7FF, 1] * 1024, np.uint16).tobytes()
    frame = I.decode_frame(I.read_dataset(_file(ds)))
    assert frame.dtype == np.int16
    assert frame.ravel()[:4].tolist() == [-1, -2048, 2047, 1]


def test_segmentation_bits_are_0_or_255():
    ds = I.read_dataset(open(sample("liver_1frame.dcm"), "rb").read())
    frame = I.decode_frame(ds)
    assert frame.dtype == np.uint8 and set(np.unique(frame)) <= {0, 255}


def test_without_codecs_the_routes_answer_as_the_reference_unsupported(client, monkeypatch):
    iid = client.simulate_post("/instances", body=open(sample("CT_small.dcm"), "rb").read()).json["ID"]
    monkeypatch.setattr(I, "available", lambda: False)
    for route in ("preview", "rendered", "image-uint8", "frames/0/preview"):
        r = client.simulate_get(f"/instances/{iid}/{route}")
        assert r.status_code == 415 and r.content == b""
    r = client.simulate_get(f"/instances/{iid}/preview", params={"returnUnsupportedImage": ""})
    assert r.status_code == 301 and r.headers["Location"] == "../../app/images/unsupported.png"
    for route in ("numpy", "matlab", "frames/0/numpy"):
        r = client.simulate_get(f"/instances/{iid}/{route}")
        assert r.status_code == 500 and r.json["OrthancStatus"] == 2
    # the frame list and raw frames need no codec
    assert client.simulate_get(f"/instances/{iid}/frames").json == [0]
    assert client.simulate_get(f"/instances/{iid}/frames/0/raw").status_code == 200


def test_a_missing_codec_is_unsupported_not_a_500(client, monkeypatch):
    iid = client.simulate_post("/instances", body=open(sample("MR_small_jp2klossless.dcm"), "rb").read()).json["ID"]

    def refuse(*a, **k):
        raise I.ImagingUnavailable("no JPEG 2000 decoder")

    monkeypatch.setattr(I, "decode_frame", refuse)
    assert client.simulate_get(f"/instances/{iid}/preview").status_code == 415
    assert client.simulate_get(f"/instances/{iid}/numpy").status_code == 500


@pytest.mark.parametrize("accept, expected", [
    (None, "png"), ("*/*", "png"), ("image/*", "png"), ("image/png", "png"), ("image/jpeg", "jpeg"),
    ("image/jpeg, image/png", "jpeg"), ("image/png;q=0.5, image/jpeg", "jpeg"),
    ("image/*, image/jpeg;q=0.1", "jpeg"),  # more specific wins over quality
    ("text/html", None), ("application/json, text/*", None), ("image/x-portable-arbitrarymap", "pam"),
])
def test_negotiation(accept, expected):
    assert R._negotiate(accept) == expected


def test_negotiation_bad_quality_is_unsupported():
    with pytest.raises(R._Unsupported):
        R._negotiate("image/png;q=3")


def test_preview_and_render_arithmetic():
    f = np.array([[0, 100], [200, 1000]], np.uint16)
    assert I.preview(f).tolist() == [[0, 26], [51, 255]]
    assert I.preview(f, invert=True).tolist() == [[255, 229], [204, 0]]
    assert I.preview(np.full((2, 2), 7, np.int16)).tolist() == [[0, 0], [0, 0]]
    # window 0..200 after slope 2: v*2 in [0, 200] -> floor(255 * v*2 / 200)
    out = I.render(np.array([[0, 50], [100, 150]], np.int16), slope=2.0, intercept=0.0, center=100, width=200)
    assert out.tolist() == [[0, 127], [255, 255]]
    assert I.target_size(512, 256, 100, 0) == (100, 50)
    assert I.target_size(512, 256, 100, 100) == (100, 50)


def test_numpy_header_matches_numpy():
    arr = np.arange(12, dtype=np.int16).reshape(2, 3, 2, 1)
    data = I.numpy_header("int16", arr.shape) + arr.tobytes()
    assert np.array_equal(np.load(io.BytesIO(data)), arr)
    assert len(I.numpy_header("int16", arr.shape)) % 64 == 0


def test_public_api_is_documented():
    for name in I.__all__:
        obj = getattr(I, name)
        assert obj.__doc__ and obj.__doc__.strip(), name
    from pacsbox.imaging import encoders
    for name in encoders.__all__:
        obj = getattr(encoders, name)
        if callable(obj):
            assert obj.__doc__, name


#: Sample files that cannot be decoded by anyone: truncated or corrupt pixel data, or no
#: image attributes.
CORRUPT = {"MR_truncated.dcm", "badVR.dcm", "JPEG2000-embedded-sequence-delimiter.dcm", "meta_missing_tsyntax.dcm",
           "nested_priv_SQ.dcm", "no_meta_group_length.dcm", "UN_sequence.dcm"}


def test_every_sample_image_decodes():
    """Every pydicom and pydicom-data file with pixel data decodes (first and last frame),
    whatever its transfer syntax: native, big endian, deflated, JPEG 8/12-bit, lossless
    JPEG, JPEG-LS, JPEG 2000, RLE."""
    import os

    from conftest import pydicom_data_files, pydicom_test_files
    failures, syntaxes = [], set()
    for path in pydicom_test_files() + pydicom_data_files():
        name = os.path.basename(path)
        if name in CORRUPT or os.path.getsize(path) > 20_000_000:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = I.read_dataset(open(path, "rb").read())
            except I.DecodeError:
                continue
        if "PixelData" not in ds or not ds.get("Rows"):
            continue
        try:
            n = I.frame_count(ds)
            for i in {0, n - 1}:
                frame = I.decode_frame(ds, i)
                assert frame.shape[:2] == (ds.Rows, ds.Columns)
            syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        except Exception as e:  # noqa: BLE001
            failures.append(f"{name}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.5"} <= syntaxes
