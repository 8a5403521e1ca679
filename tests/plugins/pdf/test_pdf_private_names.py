"""Private tags are named as the reference names them (DCMTK's private dictionary, else
"Unknown Tag & Data"), side by side with Orthanc 1.10.1 on the pydicom-data and pydicom
test files that carry private tags."""
from __future__ import annotations

import os
import warnings

import falcon.testing
import pydicom
import pytest
import requests

from conftest import ORTHANC, pydicom_data_files, pydicom_test_files

pytestmark = pytest.mark.skipif(ORTHANC is None, reason="the reference Orthanc is not installed")


def _private_files(max_bytes: int = 5_000_000) -> list[str]:
    out = []
    for path in pydicom_data_files() + pydicom_test_files():
        if os.path.getsize(path) > max_bytes:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if any(e.tag.is_private for e in ds):
                out.append(path)
        except Exception:  # noqa: BLE001 - unreadable sample files are not this test's business
            continue
    return out


def _names(tags: dict, path: str = "") -> dict[str, str]:
    """``path of a private element`` → its Name, through sequences."""
    out = {}
    for key, node in tags.items():
        if not isinstance(node, dict):
            continue
        if int(key[:4], 16) & 1:
            out[path + key] = node.get("Name")
        if node.get("Type") == "Sequence":
            for i, item in enumerate(node["Value"]):
                out.update(_names(item, f"{path}{key}[{i}]/"))
    return out


def test_private_names_as_reference(reference, app):
    files = _private_files()
    assert len(files) >= 10
    client = falcon.testing.TestClient(app)
    compared = 0
    differences = []
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        ref = requests.post(reference + "/instances", data=data)
        ours = client.simulate_post("/instances", body=data)
        if ref.status_code != 200 or ours.status_code != 200 or not isinstance(ref.json(), dict):
            continue
        a = _names(requests.get(reference + f"/instances/{ref.json()['ID']}/tags").json())
        b = _names(client.simulate_get(f"/instances/{ours.json['ID']}/tags").json)
        compared += len(a)
        differences += [(os.path.basename(path), k, a[k], b.get(k)) for k in a if a[k] != b.get(k)]
    assert compared > 500
    assert differences == []
