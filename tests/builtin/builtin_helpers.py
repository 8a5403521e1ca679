"""Study builders for the built-in job tests: real sample files with new UIDs."""
from __future__ import annotations

import io

import pydicom
from pydicom.uid import generate_uid

from conftest import testfile


def make_study(n: int, patient_id: str = "PAT-1", series: int = 2, name: str = "CT_small.dcm",
               patient_name: str = "Doe^John", institution: str | None = None) -> list[bytes]:
    """``n`` instances of one new study built from a pydicom sample file.

    Instances are spread over ``series`` series; each gets new Study/Series/SOP Instance
    UIDs, PatientID ``patient_id`` and an InstanceNumber.
    """
    template = pydicom.dcmread(testfile(name))
    template.PatientID = patient_id
    template.PatientName = patient_name
    if institution is not None:
        template.InstitutionName = institution
    template.StudyInstanceUID = generate_uid()
    series_uids = [generate_uid() for _ in range(series)]
    out = []
    for i in range(n):
        ds = template.copy()
        ds.file_meta = template.file_meta.copy()
        ds.SeriesInstanceUID = series_uids[i % series]
        ds.SeriesNumber = i % series + 1
        ds.InstanceNumber = i // series + 1
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def upload(client, files: list[bytes]) -> dict:
    """POST every file; returns the answer of the last one (``ParentStudy``...)."""
    ans = None
    for data in files:
        r = client.simulate_post("/instances", body=data)
        assert r.status_code == 200, r.text
        ans = r.json
    return ans


def dataset(client, instance_id: str) -> pydicom.Dataset:
    """The stored file of an instance, parsed."""
    r = client.simulate_get(f"/instances/{instance_id}/file")
    assert r.status_code == 200
    return pydicom.dcmread(io.BytesIO(r.content))


def post(client, path: str, body) -> "falcon.testing.Result":  # noqa: F821
    """POST a JSON body (a str is sent as it is)."""
    import json
    return client.simulate_post(path, body=body if isinstance(body, str) else json.dumps(body))
