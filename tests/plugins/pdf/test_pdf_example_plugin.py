"""The pip-installed example plugin adds ``text/plain`` to ``/tools/create-dicom`` through
the pdf plugin's ``register_content_encoders`` hook (entry points, as a user installs it)."""
from __future__ import annotations

import falcon.testing
import pytest

from fixtures.example_plugin.install import ensure_installed
from pdf_helpers import data_uri, make_pdf, read_dataset


@pytest.fixture(scope="module")
def example_installed():
    ensure_installed()


def test_example_plugin_text_content(example_installed, pacsbox_make_app, monkeypatch):
    monkeypatch.setenv("PACSBOX_DISABLE_PLUGINS", "dicom_net,archive,metrics")
    app = pacsbox_make_app({}, load_entrypoints=True)
    client = falcon.testing.TestClient(app)
    r = client.simulate_post("/tools/create-dicom", json={"Tags": {"PatientName": "Text"},
                                                          "Content": data_uri("text/plain", b"hello world")})
    assert r.status_code == 200, r.text
    ds = read_dataset(client, r.json["ID"])
    assert (ds.MIMETypeOfEncapsulatedDocument, ds.Modality, ds.EncapsulatedDocumentLength) == ("text/plain", "DOC", 11)
    assert ds.EncapsulatedDocument[:11] == b"hello world"
    # not a PDF: the /pdf route refuses it; the built-in types are still served
    assert client.simulate_get(f"/instances/{r.json['ID']}/pdf").status_code == 404
    r = client.simulate_post("/tools/create-dicom", json={"Tags": {}, "Content": data_uri("application/pdf", make_pdf())})
    assert r.status_code == 200


def test_without_the_example_plugin_text_is_refused(pacsbox_make_app, monkeypatch):
    import pacsbox_pdf.plugin as pdf_plugin
    app = pacsbox_make_app({}, plugins=[pdf_plugin])
    r = falcon.testing.TestClient(app).simulate_post(
        "/tools/create-dicom", json={"Tags": {}, "Content": data_uri("text/plain", b"x")})
    assert r.status_code == 500 and r.json["OrthancStatus"] == 2
    assert r.json["Details"] == "Unsupported MIME type for the content of a new DICOM file: text/plain"
