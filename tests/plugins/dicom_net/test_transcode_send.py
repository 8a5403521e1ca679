"""The senders through the transcoder (issue 15): the C-STORE SCU (``POST
/modalities/{id}/store``) toward a real dcmtk ``storescp`` that accepts only uncompressed
syntaxes, and ``POST /peers/{id}/store`` with ``Transcode`` toward a second pacsbox node
and toward Orthanc 1.10.1. The receiver gets the syntax it accepts (or the one asked), and
the pixels of the source, exactly (lossless conversions), as an independent decoder (the
reference's DCMTK, or pydicom's numpy reading of native data) sees them.
"""
from __future__ import annotations

import io
import os
import socket
import subprocess
import time
import warnings

import numpy as np
import pydicom
import pytest
import requests

from pacsbox import imaging
from pacsbox.testing import free_port

from peers_helpers import testfile as sample_path
from peers_helpers import upload, wait_job

EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_LS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
RLE = "1.2.840.10008.1.2.5"

#: Compressed sources (the store SCU must decompress them for an uncompressed-only peer):
#: JPEG-LS, JPEG 2000 (grayscale and YBR_RCT colour), JPEG lossless, RLE.
COMPRESSED = ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "US1_J2KR.dcm",
              "JPGLosslessP14SV1_1s_1f_8b.dcm", "MR_small_RLE.dcm"]
#: Sources of the peer test: explicit VR LE (the pydicom-free path), big endian, a
#: multi-frame, RGB, JPEG 2000 colour.
PEER_SOURCES = ["CT_small.dcm", "MR_small_bigendian.dcm", "emri_small.dcm", "SC_rgb.dcm", "US1_J2KR.dcm"]


def _read(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def _source(name: str) -> bytes:
    """A pydicom test file under a new SOPInstanceUID (several are the same instance in
    other syntaxes); its pixel data bytes are kept as they are."""
    from pydicom.uid import generate_uid
    ds = _read(open(sample_path(name), "rb").read())
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _frames(data: bytes) -> np.ndarray:
    """Every frame as pacsbox decodes it (the reference's pixel formats: colour as RGB)."""
    ds = _read(data)
    return np.stack([imaging.decode_frame(ds, i) for i in range(imaging.frame_count(ds))])


def _native(data: bytes) -> np.ndarray:
    """The stored values of a native file by pydicom's own reading (no pacsbox code)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read(data).pixel_array


def _reference_frame0(url: str, data: bytes) -> np.ndarray | None:
    """Frame 0 as Orthanc 1.10.1 decodes ``data`` (None when it cannot: JPEG 2000)."""
    iid = requests.post(url + "/instances", data=data).json()["ID"]
    r = requests.get(f"{url}/instances/{iid}/frames/0/numpy?rescale=0")
    requests.delete(f"{url}/instances/{iid}")
    if r.status_code != 200:
        return None
    arr = np.load(io.BytesIO(r.content))
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def _start_storescp(dcmtk, out, port: int, *syntax_options: str) -> subprocess.Popen:
    proc = subprocess.Popen([dcmtk("storescp"), *syntax_options, "+B", "-aet", "RX", "--output-directory", str(out),
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, TCP_NODELAY="1"))
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("storescp did not start")


def _received(out) -> dict[str, bytes]:
    """The files storescp wrote, by SOPInstanceUID."""
    return {str(_read((out / f).read_bytes()).SOPInstanceUID): (out / f).read_bytes() for f in os.listdir(out)}


def test_store_scu_decompresses_for_an_uncompressed_only_storescp(node, orthanc, tmp_path, dcmtk_tools):
    """``storescp +xe`` accepts the uncompressed syntaxes only (explicit VR little endian
    first): the C-STORE SCU converts each compressed instance and the receiver holds
    explicit VR little endian files whose pixels are the source's, as the reference decodes
    the source (pydicom's where the reference cannot: JPEG 2000); the ``Transcode`` field
    is ignored, as Orthanc 1.10.1 does (checked with it below)."""
    dcmtk = dcmtk_tools[0]
    out = tmp_path / "rx"
    out.mkdir()
    port = free_port()
    proc = _start_storescp(dcmtk, out, port, "+xe")
    try:
        sender = node({"DicomModalities": {"rx": ["RX", "127.0.0.1", port]}})
        sources = {name: _source(name) for name in COMPRESSED}
        ids = [a["ID"] for a in upload(sender.url, list(sources.values()))]
        r = requests.post(f"{sender.url}/modalities/rx/store", json={"Resources": ids, "Transcode": JPEG_LS})
        assert r.status_code == 200, r.text
        assert r.json()["InstancesCount"] == len(COMPRESSED) and r.json()["FailedInstancesCount"] == 0
        got = _received(out)

        ref = orthanc({"DicomModalities": {"rx": ["RX", "127.0.0.1", port]}, "DicomServerEnabled": False})
        for name, data in sources.items():
            uid = str(_read(data).SOPInstanceUID)
            rx = got[uid]
            assert str(_read(rx).file_meta.TransferSyntaxUID) == EXPLICIT_LE, name
            received = _native(rx)
            expected = _reference_frame0(ref.url, data)
            if expected is None:  # the reference has no JPEG 2000 decoder: pydicom's (openjpeg)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    src = _read(data)
                    expected = src.pixel_array  # YBR_RCT is given as RGB by pydicom too
            frame0 = received[0] if received.ndim > expected.ndim else received
            assert frame0.shape == expected.shape and np.array_equal(frame0, expected), name
            assert np.array_equal(_frames(rx), _frames(data)), name

        # the reference, same request: the same syntax arrives (Transcode is not a field of
        # its store SCU), for the sources it can decode
        for f in os.listdir(out):
            os.remove(out / f)
        ref_ids = [a["ID"] for a in upload(ref.url, [sources["MR_small_jpeg_ls_lossless.dcm"],
                                                      sources["MR_small_RLE.dcm"]])]
        r = requests.post(f"{ref.url}/modalities/rx/store", json={"Resources": ref_ids, "Transcode": JPEG_LS})
        assert r.status_code == 200, r.text
        theirs = _received(out)
        assert len(theirs) == 2
        for uid, data in theirs.items():
            assert str(_read(data).file_meta.TransferSyntaxUID) == EXPLICIT_LE
            assert np.array_equal(_native(data), _native(got[uid]))
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("target", [JPEG_LS, J2K, JPEG_LOSSLESS, RLE])
def test_peer_store_transcode_to_pacsbox(node, target):
    """``/peers/{id}/store`` with ``Transcode``: the receiving pacsbox holds every instance
    in ``target`` with the source's pixels, every frame, and the same SOPInstanceUID
    (lossless)."""
    receiver = node({"DicomServerEnabled": False})
    sender = node({"DicomServerEnabled": False, "OrthancPeers": {"rx": [receiver.url]}})
    sources = [_source(name) for name in PEER_SOURCES]
    ids = [a["ID"] for a in upload(sender.url, sources)]
    r = requests.post(f"{sender.url}/peers/rx/store", json={"Resources": ids, "Transcode": target,
                                                            "Asynchronous": True})
    assert r.status_code == 200, r.text
    job = wait_job(sender.url, r.json()["ID"], lambda j: j["State"] in ("Success", "Failure"))
    assert job["State"] == "Success", job
    assert job["Content"]["Transcode"] == target
    for name, iid, data in zip(PEER_SOURCES, ids, sources):
        assert requests.get(f"{receiver.url}/instances/{iid}/metadata/TransferSyntax").text == target, name
        rx = requests.get(f"{receiver.url}/instances/{iid}/file").content
        assert str(_read(rx).file_meta.TransferSyntaxUID) == target
        assert _read(rx).SOPInstanceUID == _read(data).SOPInstanceUID
        assert np.array_equal(_frames(rx), _frames(data)), name


def test_peer_store_transcode_to_the_reference(node, orthanc):
    """pacsbox → Orthanc 1.10.1 with ``Transcode`` JPEG-LS: the reference stores the
    converted files (its metadata says JPEG-LS) and decodes them, with DCMTK, to the
    source's stored values (as pydicom reads the native sources)."""
    ref = orthanc({"DicomServerEnabled": False})
    sender = node({"DicomServerEnabled": False, "OrthancPeers": {"ref": [ref.url]}})
    names = ["CT_small.dcm", "MR_small_bigendian.dcm", "SC_rgb.dcm"]
    sources = [_source(name) for name in names]
    ids = [a["ID"] for a in upload(sender.url, sources)]
    r = requests.post(f"{sender.url}/peers/ref/store", json={"Resources": ids, "Transcode": JPEG_LS})
    assert r.status_code == 200, r.text
    for name, iid, data in zip(names, ids, sources):
        assert requests.get(f"{ref.url}/instances/{iid}/metadata/TransferSyntax").text == JPEG_LS, name
        a = requests.get(f"{ref.url}/instances/{iid}/frames/0/numpy?rescale=0")
        assert a.status_code == 200, name
        arr = np.load(io.BytesIO(a.content))
        arr = arr[..., 0] if arr.shape[-1] == 1 else arr
        assert np.array_equal(arr, _native(data)), name
