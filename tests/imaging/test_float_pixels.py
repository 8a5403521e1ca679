"""Parametric maps: (7FE0,0008) *Float Pixel Data* and (7FE0,0009) *Double Float Pixel
Data* (PS3.3 C.7.6.24; pydicom ships no such file, so they are built here).

:mod:`pacsbox.imaging` decodes them (float32 / float64 frames, any byte order, raw frames
as little-endian bytes). Orthanc 1.10.1 reads (7FE0,0010) only and refuses them: the image
routes give its answers, checked side by side on every route, together with the two
neighbouring cases that take the same paths (an image whose Pixel Data was removed, a
structured report without image attributes).
"""
from __future__ import annotations

import io
import json

import numpy as np
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid

from conftest import ORTHANC
from conftest import testfile as sample
from pacsbox import imaging as I

PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"


def parametric_map(kind: str = "float", frames: int = 2, rows: int = 4, columns: int = 5,
                   syntax: str = "1.2.840.10008.1.2.1") -> tuple[bytes, np.ndarray]:
    """A parametric map of ``frames`` frames (values -10.875, -9.375... in steps of 1.5)
    in ``syntax``; returns the file and the values ``(frames, rows, columns)``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = PARAMETRIC_MAP
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PatientID, ds.PatientName, ds.Modality = "PM", "Parametric^Map", "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 32 if kind == "float" else 64
    values = (np.arange(frames * rows * columns, dtype=np.float64).reshape(frames, rows, columns) - 7.25) * 1.5
    order = ">" if syntax == "1.2.840.10008.1.2.2" else "<"
    if kind == "float":
        ds.FloatPixelData = values.astype(f"{order}f4").tobytes()
    else:
        ds.DoubleFloatPixelData = values.astype(f"{order}f8").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=syntax == "1.2.840.10008.1.2", little_endian=order == "<", enforce_file_format=True)
    return buf.getvalue(), values


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"])
@pytest.mark.parametrize("kind, dtype", [("float", np.float32), ("double", np.float64)])
def test_imaging_decodes_float_pixels(kind, dtype, syntax):
    data, values = parametric_map(kind, frames=3, syntax=syntax)
    ds = I.read_dataset(data)
    info = I.image_info(ds)
    assert info.is_float and info.pixel_keyword == ("FloatPixelData" if kind == "float" else "DoubleFloatPixelData")
    assert (info.bits_allocated, info.frames, info.rows, info.columns) == (32 if kind == "float" else 64, 3, 4, 5)
    assert I.frame_count(ds) == 3
    for i in range(3):
        frame = I.decode_frame(ds, i)
        assert frame.dtype == dtype and frame.shape == (4, 5)
        assert np.array_equal(frame, values[i].astype(dtype))
        raw, mime = I.raw_frame(ds, i)
        assert mime == "application/octet-stream" and raw == values[i].astype(f"<f{np.dtype(dtype).itemsize}").tobytes()
    assert [f.dtype for f in I.iter_frames(ds)] == [np.dtype(dtype)] * 3
    with pytest.raises(I.FrameOutOfRange):
        I.decode_frame(ds, 3)


def test_imaging_refuses_a_short_float_buffer():
    data, _ = parametric_map("float", frames=2)
    ds = I.read_dataset(data)
    ds.FloatPixelData = ds.FloatPixelData[:40]
    with pytest.raises(I.DecodeError):
        I.decode_frame(ds, 1)


#: Every image route of an instance, with out-of-range and malformed frame indices.
ROUTES = ["frames", "frames/0", "preview", "frames/0/preview", "frames/1/preview", "frames/5/preview",
          "image-uint8", "image-uint16", "image-int16", "frames/1/image-uint8", "frames/0/image-int16", "rendered",
          "frames/1/rendered", "numpy", "numpy?rescale=0", "numpy?compress=1", "frames/0/numpy", "frames/5/numpy",
          "frames/x/numpy", "matlab", "frames/1/matlab", "frames/5/matlab", "frames/0/raw", "frames/1/raw",
          "frames/5/raw", "frames/x/raw", "frames/0/raw.gz", "preview?returnUnsupportedImage"]


def _answer(resp) -> tuple:
    """Status, and the JSON body (or the bytes) without the URI."""
    if not resp.content:
        return resp.status_code, b""
    try:
        body = resp.json()
    except json.JSONDecodeError:
        return resp.status_code, resp.content
    if isinstance(body, dict):
        body.pop("Uri", None)
    return resp.status_code, body


def _without_pixels() -> bytes:
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    del ds.PixelData
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


CASES = {
    "float": lambda: parametric_map("float")[0],
    "double": lambda: parametric_map("double")[0],
    "float big endian": lambda: parametric_map("float", syntax="1.2.840.10008.1.2.2")[0],
    "CT without pixel data": _without_pixels,
    "structured report": lambda: open(sample("test-SR.dcm"), "rb").read(),
}


@pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")
@pytest.mark.parametrize("case", sorted(CASES))
def test_routes_answer_as_the_reference(reference, live_server, case):
    """Every image route of the instance and ``/series/{id}/numpy``: the reference's
    status and JSON error (Orthanc 1.10.1: 415 for the images; 400 "Bad file format" for
    numpy and matlab of a 32-bit map or an image without pixels, "Cannot access a raw
    frame" for raw; 500 "Image not supported: 64 bits allocated" for every numpy, matlab
    and raw of a 64-bit map; its bare 500 for a report)."""
    ours = live_server().url
    data = CASES[case]()
    ids = {}
    for url in (reference, ours):
        r = requests.post(url + "/instances", data=data)
        assert r.status_code == 200, r.text
        ids[url] = (r.json()["ID"], r.json()["ParentSeries"])
    problems = []
    for route in ROUTES:
        a = requests.get(f"{reference}/instances/{ids[reference][0]}/{route}", allow_redirects=False)
        b = requests.get(f"{ours}/instances/{ids[ours][0]}/{route}", allow_redirects=False)
        if _answer(a) != _answer(b) or a.headers.get("Location") != b.headers.get("Location"):
            problems.append(f"{route}: pacsbox {_answer(b)} {b.headers.get('Location')}, "
                            f"reference {_answer(a)} {a.headers.get('Location')}")
    a = requests.get(f"{reference}/series/{ids[reference][1]}/numpy")
    b = requests.get(f"{ours}/series/{ids[ours][1]}/numpy")
    if _answer(a) != _answer(b):
        problems.append(f"series numpy: pacsbox {_answer(b)}, reference {_answer(a)}")
    requests.delete(f"{reference}/instances/{ids[reference][0]}")
    assert not problems, "\n".join(problems)
