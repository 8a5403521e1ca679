"""Issue 13 case 13: the body field ``Filename`` of an archive or media request (Orthanc
1.12.11) sets the ``Content-Disposition`` of the answer and of ``/jobs/{id}/archive``,
cleaned of quotes, CR and LF."""
from __future__ import annotations

import time

import falcon.testing
import pytest

from plugins.archive.archive_helpers import archive_app, synth, upload


@pytest.fixture
def client(make_app):
    c = falcon.testing.TestClient(archive_app(make_app))
    upload(c, synth(sop_uid="1.2.826.0.1.3680043.8.498.77", instance_number=1))
    return c


@pytest.mark.parametrize("kind", ["archive", "media"])
def test_filename_of_a_synchronous_answer(client, kind):
    study = client.simulate_get("/studies").json[0]
    r = client.simulate_post(f"/studies/{study}/{kind}", json={"Filename": 'tot"o\r\n.zip'})
    assert r.status_code == 200 and r.content[:2] == b"PK"
    assert r.headers["Content-Disposition"] == 'filename="toto.zip"'
    r = client.simulate_post(f"/tools/create-{kind}", json={"Resources": [study], "Filename": "My study.zip"})
    assert r.headers["Content-Disposition"] == 'filename="My study.zip"'
    # without it, the defaults stay
    r = client.simulate_post(f"/studies/{study}/{kind}", json={})
    assert r.headers["Content-Disposition"] == f'filename="{study}.zip"'
    r = client.simulate_post(f"/studies/{study}/{kind}", json={"Filename": 3})
    assert r.status_code == 400


def test_filename_of_an_asynchronous_archive(client):
    study = client.simulate_get("/studies").json[0]
    job = client.simulate_post(f"/studies/{study}/archive", json={"Asynchronous": True, "Filename": 'a"b.zip'}).json
    deadline = time.monotonic() + 30
    while client.simulate_get(f"/jobs/{job['ID']}").json["State"] != "Success":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = client.simulate_get(f"/jobs/{job['ID']}/archive")
    assert r.status_code == 200 and r.headers["Content-Disposition"] == 'filename="ab.zip"'
    other = client.simulate_post(f"/studies/{study}/archive", json={"Asynchronous": True}).json
    while client.simulate_get(f"/jobs/{other['ID']}").json["State"] != "Success":
        time.sleep(0.02)
    assert client.simulate_get(f"/jobs/{other['ID']}/archive").headers["Content-Disposition"] == \
        'filename="archive.zip"'
