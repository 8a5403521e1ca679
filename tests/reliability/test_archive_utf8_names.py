"""Issue 13 case 12: non-ASCII names in ZIP paths.

- ``"Utf8": true`` (Orthanc 1.12.11) writes ``Müller^Jürgen`` byte for byte in UTF-8 with
  the ZIP's UTF-8 flag (bit 11), the caret kept;
- without it, names are ASCII transliterations (``Muller Jurgen``), not names with the
  letters dropped (Orthanc 1.10.1 writes ``Mller Jrgen``);
- a patient whose name and ID hold no Latin character still gets a non-empty, meaningful
  folder name.
"""
from __future__ import annotations

import io
import struct
import zipfile

import falcon.testing
import pytest

from plugins.archive.archive_helpers import archive_app, synth, upload


@pytest.fixture
def client(make_app):
    return falcon.testing.TestClient(archive_app(make_app))


def _raw_names(data: bytes) -> list[tuple[bytes, int]]:
    """(name bytes, flags) of every central-directory record, read by hand."""
    out, i = [], data.find(b"PK\x01\x02")
    while i >= 0:
        flags = struct.unpack_from("<H", data, i + 8)[0]
        nlen, xlen, clen = struct.unpack_from("<HHH", data, i + 28)
        out.append((data[i + 46:i + 46 + nlen], flags))
        i = data.find(b"PK\x01\x02", i + 46 + nlen + xlen + clen)
    return out


def test_utf8_and_transliterated_names(client):
    ans = upload(client, synth(patient_id="P\u00c4", patient_name="M\u00fcller^J\u00fcrgen", charset="ISO_IR 100",
                               study_description="\u00c9tude", sop_uid="1.2.826.0.1.3680043.8.498.1301"))
    study = ans["ParentStudy"]
    r = client.simulate_post("/tools/create-archive", json={"Resources": [study], "Utf8": True})
    raw = _raw_names(r.content)
    assert raw and all(flags & 0x800 for _n, flags in raw)
    assert all(n.startswith("PÄ Müller^Jürgen/".encode("utf-8")) for n, _f in raw), raw
    assert zipfile.ZipFile(io.BytesIO(r.content)).namelist()[0].startswith("PÄ Müller^Jürgen/ACC1 Étude/")
    # without Utf8: ASCII transliterations, no UTF-8 flag
    for r in (client.simulate_post("/tools/create-archive", json={"Resources": [study]}),
              client.simulate_get(f"/studies/{study}/archive")):
        raw = _raw_names(r.content)
        assert raw and not any(flags & 0x800 for _n, flags in raw)
        assert all(n.startswith(b"PA Muller Jurgen/ACC1 Etude/") for n, _f in raw), raw


def test_a_name_without_any_latin_character(client):
    ans = upload(client, synth(patient_id="\u60a3\u8005", patient_name="\u738b^\u5c0f\u660e", charset="ISO_IR 192",
                               sop_uid="1.2.826.0.1.3680043.8.498.1401"))
    assert client.simulate_get(f"/patients/{ans['ParentPatient']}").json["MainDicomTags"]["PatientName"] == \
        "\u738b^\u5c0f\u660e"
    names = zipfile.ZipFile(io.BytesIO(client.simulate_get(f"/studies/{ans['ParentStudy']}/archive").content)).namelist()
    assert names[0].startswith(f"Patient {ans['ParentPatient'][:8]}/"), names
    r = client.simulate_post("/tools/create-archive", json={"Resources": [ans["ParentStudy"]], "Utf8": True})
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert names[0].startswith("\u60a3\u8005 \u738b^\u5c0f\u660e/"), names
