r"""The image routes side by side with the reference Orthanc 1.10.1 (Debian's build).

Every pydicom and pydicom-data file is uploaded to a scratch reference and to pacsbox.
For each file the reference can decode, the **decoded pixels** (PNG and ``.npy`` parsed,
never compared byte for byte) of ``frames/0/numpy?rescale=0``, ``frames/0/numpy``,
``preview``, ``rendered``, ``image-uint16`` and the last frame's ``preview`` must be
equal; ``frames``, ``matlab`` and ``raw`` answers must be identical. Where the reference
cannot decode a file, pacsbox may do better (JPEG 2000 lossy, uncompressed YBR, palette
colour...) but must not answer 500.

Known, deliberate differences (pacsbox follows the standard):

- ``mlut_18.dcm``: signed 12-bit values in 16 bits; the reference does not sign-extend
  bit 11 (so -1 reads 4095), pacsbox does.
- ``eCT_Supplemental.dcm``: its rescale slope/intercept are in the *shared* functional
  groups, which the reference ignores (only the per-frame groups); pacsbox applies them.
- ``OBXXXX1A_expb.dcm``: 8-bit palette indices in OW, big endian; pacsbox (pydicom)
  decodes the pixels of its little-endian original ``OBXXXX1A.dcm``, the reference
  swapped pairs of them.
- ``rtdose*.dcm``, ``badVR.dcm``: the reference answers 400 to ``frames/0/raw`` of these
  32-bit multi-frame / malformed files; pacsbox gives the frame's bytes.
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import ORTHANC, pydicom_data_files, pydicom_test_files

pytestmark = pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")

DIFFERENT = {
    "mlut_18.dcm": {"numpy", "numpy-raw", "preview", "rendered", "image-uint16", "matlab"},
    "eCT_Supplemental.dcm": {"numpy", "rendered"},
    "badVR.dcm": {"raw"},
    "OBXXXX1A_expb.dcm": {"numpy", "numpy-raw", "preview", "rendered"},
    "rtdose.dcm": {"raw"}, "rtdose_1frame.dcm": {"raw"}, "rtdose_expb.dcm": {"raw"},
    "rtdose_expb_1frame.dcm": {"raw"},
}


#: Files above this size (bytes) are checked on their decoded pixels and raw frame only.
BIG = 3_000_000


@pytest.fixture(scope="module")
def servers(reference, tmp_path_factory):
    """(reference URL, pacsbox URL), both empty."""
    from conftest import LiveServer, free_port
    from pacsbox import create_app

    port = free_port()
    app = create_app({"StorageDirectory": str(tmp_path_factory.mktemp("pb")), "HttpPort": port, "StableAge": 60},
                     plugins=[], load_entrypoints=False)
    server = LiveServer(app, port)
    try:
        yield reference, server.url
    finally:
        server.close()
        app.close()


def _files() -> dict[str, str]:
    """Every sample file by name (the first of a name)."""
    out: dict[str, str] = {}
    for path in pydicom_test_files() + pydicom_data_files():
        out.setdefault(os.path.basename(path), path)
    return out


FILES = _files()


class Both:
    """Upload files to both servers; many sample files share their UIDs, so a file is
    removed from both before another with its ID is stored."""

    def __init__(self, ref: str, ours: str):
        self.ref, self.ours = ref, ours
        self.sa, self.sb = requests.Session(), requests.Session()
        self.by_id: dict[str, str] = {}

    def put(self, name: str) -> str | None:
        with open(FILES[name], "rb") as f:
            data = f.read()
        a = self.sa.post(self.ref + "/instances", data=data)
        if a.status_code != 200 or not isinstance(a.json(), dict):
            return None
        iid = a.json()["ID"]
        if self.by_id.get(iid, name) != name or a.json()["Status"] == "AlreadyStored":
            self.sa.delete(f"{self.ref}/instances/{iid}")
            self.sb.delete(f"{self.ours}/instances/{iid}")
            a = self.sa.post(self.ref + "/instances", data=data)
        b = self.sb.post(self.ours + "/instances", data=data)
        assert b.status_code == 200 and b.json()["ID"] == iid, name
        self.by_id[iid] = name
        return iid

    def clear(self) -> None:
        """Delete every patient of both servers."""
        for url, s in ((self.ref, self.sa), (self.ours, self.sb)):
            for p in s.get(url + "/patients").json():
                s.delete(f"{url}/patients/{p}")
        self.by_id.clear()


@pytest.fixture(scope="module")
def both(servers):
    """A :class:`Both` on the module's two servers."""
    return Both(*servers)


def _body(resp):
    return resp.json() if resp.content else None


def _pixels(resp) -> np.ndarray:
    assert resp.status_code == 200, (resp.url, resp.status_code, resp.content[:300])
    if resp.headers["Content-Type"].startswith("image/"):
        return np.asarray(Image.open(io.BytesIO(resp.content)))
    return np.load(io.BytesIO(resp.content))


def _compare(sa, sb, ref, ours, name, path, kind, problems):
    a, b = sa.get(f"{ref}/instances/{path}"), sb.get(f"{ours}/instances/{path}")
    if kind in DIFFERENT.get(name, ()):
        return
    if a.status_code != 200:
        if b.status_code >= 500 and b.status_code != a.status_code:
            problems.append(f"{name} {path}: pacsbox {b.status_code} where the reference gives {a.status_code}")
        return
    if b.status_code != 200:
        problems.append(f"{name} {path}: pacsbox {b.status_code}")
        return
    if a.headers.get("Content-Type") != b.headers.get("Content-Type"):
        problems.append(f"{name} {path}: {b.headers.get('Content-Type')} (reference {a.headers.get('Content-Type')})")
        return
    if kind in ("matlab", "raw", "frames"):
        if a.content != b.content and (kind != "frames" or a.json() != b.json()):
            problems.append(f"{name} {path}: different bytes")
        return
    x, y = _pixels(a), _pixels(b)
    if x.shape != y.shape or x.dtype != y.dtype:
        problems.append(f"{name} {path}: {y.shape} {y.dtype} (reference {x.shape} {x.dtype})")
    elif not np.array_equal(x, y):
        problems.append(f"{name} {path}: max difference {np.abs(x.astype(float) - y.astype(float)).max()}")


def test_decoded_pixels_equal_the_reference(both):
    ref, ours, sa, sb = both.ref, both.ours, both.sa, both.sb
    problems: list[str] = []
    decoded = 0
    for name in sorted(FILES):
        iid = both.put(name)
        if iid is None:
            continue
        frames = sa.get(f"{ref}/instances/{iid}/frames")
        _compare(sa, sb, ref, ours, name, f"{iid}/frames", "frames", problems)
        if frames.status_code != 200 or not frames.json():
            continue
        last = frames.json()[-1]
        decoded += sa.get(f"{ref}/instances/{iid}/frames/0/numpy?rescale=0").status_code == 200
        checks = [(f"{iid}/frames/0/numpy?rescale=0", "numpy-raw"), (f"{iid}/frames/0/raw", "raw")]
        if os.path.getsize(FILES[name]) < BIG:  # every route on the files of usual size, to keep it short
            checks += [(f"{iid}/frames/0/numpy", "numpy"), (f"{iid}/preview", "preview"),
                       (f"{iid}/rendered", "rendered"), (f"{iid}/image-uint16", "image-uint16"),
                       (f"{iid}/frames/{last}/preview", "preview")]
        for path, kind in checks:
            _compare(sa, sb, ref, ours, name, path, kind, problems)
    assert decoded > 70
    assert not problems, "\n".join(problems)


def test_matlab_text_equals_the_reference(both):
    ref, ours, sa, sb = both.ref, both.ours, both.sa, both.sb
    problems: list[str] = []
    for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "US1_J2KR.dcm", "SC_rgb_rle.dcm", "liver_1frame.dcm",
                 "MR_small_jp2klossless.dcm", "JPEG2000.dcm"):
        iid = both.put(name)
        _compare(sa, sb, ref, ours, name, f"{iid}/matlab", "matlab", problems)
        _compare(sa, sb, ref, ours, name, f"{iid}/frames/0/matlab", "matlab", problems)
    assert not problems, "\n".join(problems)


def test_rendered_arguments_equal_the_reference(both):
    """window-center/width, width/height (with and without smooth), on grayscale,
    MONOCHROME1, colour and multi-frame instances."""
    ref, ours, sa, sb = both.ref, both.ours, both.sa, both.sb
    problems: list[str] = []
    queries = ["window-center=40&window-width=400", "window-center=1000&window-width=0.5", "width=64",
               "height=50", "width=300&height=100", "width=100&height=300", "width=37&window-width=100",
               "window-center=-3.5e2&window-width=2000", "width=0", "height=7"]
    for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "emri_small.dcm", "RG1_UNCI.dcm",
                 "MR2_J2KR.dcm", "SC_rgb_jpeg_gdcm.dcm", "rtdose_1frame.dcm"):
        iid = both.put(name)
        for q in queries:
            _compare(sa, sb, ref, ours, name, f"{iid}/rendered?{q}", "rendered", problems)
            _compare(sa, sb, ref, ours, name, f"{iid}/frames/0/rendered?{q}", "rendered", problems)
    assert not problems, "\n".join(problems)


def test_rendered_smooth_is_close_to_the_reference(both):
    """``smooth`` reductions: the 5x5 Gaussian rounds differently (within 2 levels)."""
    ref, ours = both.ref, both.ours
    for name in ("CT_small.dcm", "SC_rgb.dcm"):
        iid = both.put(name)
        a = requests.get(f"{ref}/instances/{iid}/rendered?width=50&smooth=1")
        b = requests.get(f"{ours}/instances/{iid}/rendered?width=50&smooth=1")
        x, y = _pixels(a), _pixels(b)
        assert x.shape == y.shape
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 2


ERROR_PATHS = [
    "{ct}/frames/1/preview", "{ct}/frames/x/preview", "{ct}/frames/-1/preview", "{ct}/frames/1",
    "{ct}/frames/1/numpy", "{ct}/frames/x/numpy", "{ct}/frames/1/matlab", "{ct}/frames/x/matlab",
    "{ct}/frames/1/raw", "{ct}/frames/x/raw", "{ct}/frames/1/raw.gz", "{ct}/numpy?compress=maybe",
    "{ct}/numpy?rescale=no", "{ct}/preview?quality=0", "{ct}/preview?quality=abc", "{ct}/preview?quality=101",
    "{ct}/rendered?width=-1", "{ct}/rendered?height=x", "{ct}/rendered?window-width=abc",
    "{ct}/rendered?window-center=", "{ct}/rendered?smooth=maybe", "{rgb}/image-uint8", "{rgb}/image-int16",
    "{rgb}/image-uint16", "nonexistent/preview", "nonexistent/frames", "nonexistent/numpy",
    "nonexistent/frames/0/raw", "nonexistent/matlab", "nonexistent/rendered",
]


@pytest.mark.parametrize("template", ERROR_PATHS)
def test_errors_equal_the_reference(both, template):
    ref, ours = both.ref, both.ours
    path = template.format(ct=both.put("CT_small.dcm"), rgb=both.put("SC_rgb.dcm"))
    a, b = requests.get(f"{ref}/instances/{path}"), requests.get(f"{ours}/instances/{path}")
    assert b.status_code == a.status_code
    if a.content:
        assert b.json() == a.json()
    else:
        assert b.content == b""


ACCEPTS = ["image/png", "image/jpeg", "image/*", "*/*", "text/html", "application/json",
           "image/png;q=0.5, image/jpeg", "image/jpeg, image/png", "image/png, image/jpeg",
           "image/x-portable-arbitrarymap", "image/jpeg;q=2", "image/*;q=0.1, image/jpeg;q=0.2", "", None]


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("route", ["preview", "image-uint8", "image-uint16", "rendered", "frames/0/image-int16"])
def test_content_negotiation_equals_the_reference(both, accept, route):
    ref, ours = both.ref, both.ours
    headers = {} if accept is None else {"Accept": accept}
    for name in ("CT_small.dcm", "SC_rgb.dcm"):
        path = f"{both.put(name)}/{route}?quality=75"
        a = requests.get(f"{ref}/instances/{path}", headers=headers)
        b = requests.get(f"{ours}/instances/{path}", headers=headers)
        assert b.status_code == a.status_code, (name, route, accept)
        if a.status_code != 200:
            assert b.content == a.content == b""
            continue
        assert b.headers.get("Content-Type") == a.headers.get("Content-Type")
        if a.status_code == 200 and a.headers["Content-Type"] == "image/jpeg":
            x, y = _pixels(a), _pixels(b)
            assert x.shape == y.shape and np.abs(x.astype(int) - y.astype(int)).mean() < 2  # two JPEG encoders
        elif a.status_code == 200 and a.headers["Content-Type"] == "image/x-portable-arbitrarymap":
            assert a.content == b.content
        elif a.status_code == 200:
            assert np.array_equal(_pixels(a), _pixels(b))


def test_series_numpy_equals_the_reference(both):
    ref, ours = both.ref, both.ours
    both.clear()
    for name in ("CT_small.dcm", "emri_small.dcm", "SC_rgb.dcm"):
        series = requests.get(f"{ref}/instances/{both.put(name)}/series").json()["ID"]
        for q in ("", "?rescale=0", "?compress"):
            a = requests.get(f"{ref}/series/{series}/numpy{q}")
            b = requests.get(f"{ours}/series/{series}/numpy{q}")
            assert a.status_code == b.status_code == 200
            if q == "?compress":
                x, y = np.load(io.BytesIO(a.content))["arr_0"], np.load(io.BytesIO(b.content))["arr_0"]
            else:
                x, y = _pixels(a), _pixels(b)
            assert x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y), (name, q)


def test_instance_numpy_of_a_multiframe_equals_the_reference(both):
    ref, ours = both.ref, both.ours
    both.clear()
    for name in ("emri_small.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm"):
        iid = both.put(name)
        for q in ("", "?rescale=0"):
            a = requests.get(f"{ref}/instances/{iid}/numpy{q}")
            b = requests.get(f"{ours}/instances/{iid}/numpy{q}")
            if a.status_code != 200:  # the reference lacks the codec (JPEG 2000 here): pacsbox decodes
                assert b.status_code == 200
                continue
            x, y = _pixels(a), _pixels(b)
            assert x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)
