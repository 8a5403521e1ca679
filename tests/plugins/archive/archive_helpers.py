"""Helpers of the archive tests: synthetic instances made from pydicom's test files,
an app with the archive plugin, ZIP checks, and a real ``pacsbox serve`` subprocess."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import pydicom
import requests
from pydicom.uid import generate_uid

import pacsbox_archive.plugin as archive_plugin
from pacsbox.testing import ServeProcess

warnings.filterwarnings("ignore", module="pydicom")


def sample_path(name: str) -> str:
    """Path of a pydicom test file, bundled, charset or pydicom-data."""
    from pydicom.data import get_charset_files, get_testdata_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = get_testdata_file(name)
        if p is None:
            found = get_charset_files(name)
            p = found[0] if found else None
    if p is None:
        raise FileNotFoundError(name)
    return p


def synth(*, template: str = "CT_small.dcm", patient_id: str | None = "P1", patient_name: str | None = "DOE^JOHN",
          study_uid: str | None = None, series_uid: str | None = None, sop_uid: str | None = None,
          modality: str | None = "CT", accession: str | None = "ACC1", study_description: str | None = "Study",
          series_description: str | None = "Series", instance_number: int | None = 1,
          charset: str | None = None, pixel_bytes: bytes | None = None, extra: dict | None = None) -> bytes:
    """A Part 10 file made from a real test file with the given identity tags.

    ``None`` removes a tag. ``pixel_bytes`` replaces the pixel data (same length
    constraints are not checked: use for size only).
    """
    ds = pydicom.dcmread(sample_path(template))
    values = {"PatientID": patient_id, "PatientName": patient_name,
              "StudyInstanceUID": study_uid or generate_uid(), "SeriesInstanceUID": series_uid or generate_uid(),
              "SOPInstanceUID": sop_uid or generate_uid(), "Modality": modality, "AccessionNumber": accession,
              "StudyDescription": study_description, "SeriesDescription": series_description,
              "InstanceNumber": instance_number, "SpecificCharacterSet": charset}
    values.update(extra or {})
    for kw, v in values.items():
        if v is None:
            if kw in ds:
                delattr(ds, kw)
        else:
            setattr(ds, kw, v)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if pixel_bytes is not None:
        ds.PixelData = pixel_bytes
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def encapsulated_pdf(patient_id: str = "PDF1", patient_name: str = "PDF^Patient") -> bytes:
    """An Encapsulated PDF Storage instance (made with pydicom)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101112", "7", "PDFACC"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DOC", 1, 1
    ds.ContentDate, ds.ContentTime = "20240102", "101112"
    ds.AcquisitionDateTime = "20240102101112"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "Report"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def archive_app(make_app, config: dict | None = None):
    """An app with the core plugins and the archive plugin."""
    return make_app(config or {}, plugins=[archive_plugin])


def upload(client, data: bytes) -> dict:
    """POST /instances; returns the answer (asserts 200)."""
    r = client.simulate_post("/instances", body=data)
    assert r.status_code == 200, r.text
    return r.json


def open_zip(data: bytes) -> zipfile.ZipFile:
    """A ZipFile on ``data`` whose CRCs all check (``testzip``)."""
    z = zipfile.ZipFile(io.BytesIO(data))
    assert z.testzip() is None
    return z


def assert_safe_names(names) -> None:
    """No entry name can leave the archive's root."""
    for n in names:
        assert n and not n.startswith("/") and "\\" not in n and "\x00" not in n, n
        parts = PurePosixPath(n).parts
        assert all(p not in (".", "..") and p.strip(".") for p in parts), n


def unzip_test(path: str | os.PathLike) -> str:
    """``unzip -t`` of a file (asserts success); returns its output."""
    exe = shutil.which("unzip")
    assert exe is not None, "unzip is required (.ci/run installs it)"
    p = subprocess.run([exe, "-t", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout


def wait_job(client_get, job_id: str, timeout: float = 60.0, states=("Success", "Failure")) -> dict:
    """Poll ``/jobs/{id}`` with ``client_get(path) -> dict`` until its state is in ``states``."""
    deadline = time.time() + timeout
    while True:
        j = client_get(f"/jobs/{job_id}")
        if j["State"] in states or time.time() > deadline:
            return j
        time.sleep(0.02)


class Serve(ServeProcess):
    """``pacsbox serve --config FILE`` in a subprocess on a free loopback port
    (:class:`pacsbox.testing.ServeProcess` with its config written in ``tmp``)."""

    def __init__(self, tmp: Path, config: dict) -> None:
        self.tmp = Path(tmp)
        self.config = config
        self.tmp.mkdir(parents=True, exist_ok=True)
        (self.tmp / "config.json").write_text(json.dumps(config), encoding="utf-8")
        super().__init__(self.tmp / "config.json", self.tmp / "serve.log")

    def log(self, tail: int | None = None) -> str:
        """The whole output of every start."""
        return super().log(tail)

    def get(self, path: str) -> dict:
        r = requests.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM by PID, SIGKILL after 15 s."""
        super().stop(timeout)
