"""The documentation's examples, as users type them, on a real server: attaching
``HelloWorld2.pdf`` to an existing study through ``Parent`` (the bash pipeline with
``base64`` and ``curl -d @-``, and Python with ``requests``), and the private-tags
configuration with its create-dicom body."""
from __future__ import annotations

import base64
import shutil
import subprocess

import pytest
import requests

import pacsbox_pdf.plugin as pdf_plugin
from pdf_helpers import make_pdf

PRIVATE_CONFIG = {
    "Dictionary": {"0405,10": ["LO", "MyPrivateTag", 1, 1, "MyPrivateCreator"],
                   "0405,11": ["US", "MyPrivateNumber", 1, 1, "MyPrivateCreator"]},
    "DefaultPrivateCreator": "MyPrivateCreator",
}


@pytest.fixture
def server(live_server, tmp_path):
    s = live_server(PRIVATE_CONFIG, plugins=[pdf_plugin])
    pdf = tmp_path / "HelloWorld2.pdf"
    pdf.write_bytes(make_pdf(6017, ending=b"%%EOF\n"))
    study = requests.post(s.url + "/tools/create-dicom", json={
        "Tags": {"PatientName": "Hello^World", "StudyDescription": "Test"}}).json()["ParentStudy"]
    return s, pdf, study


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("base64") is None, reason="needs curl and base64")
def test_bash_example_attaches_the_pdf(server):
    s, pdf, study = server
    script = (f"(echo -n '{{\"Parent\": \"{study}\", \"Tags\": {{\"Modality\": \"OT\", \"SeriesDescription\": \"PDF\"}}, "
              f"\"Content\": \"data:application/pdf;base64,'; base64 {pdf}; echo '\"}}') "
              f"| curl -s -H 'Content-Type: application/json' -d @- {s.url}/tools/create-dicom")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    ans = requests.compat.json.loads(out.stdout)
    assert ans["ParentStudy"] == study and ans["Status"] == "Success"
    assert requests.get(s.url + f"/instances/{ans['ID']}/pdf").content == pdf.read_bytes()
    series = requests.get(s.url + f"/series/{ans['ParentSeries']}").json()
    assert series["MainDicomTags"]["SeriesDescription"] == "PDF" and series["MainDicomTags"]["Modality"] == "OT"


def test_python_example_attaches_the_pdf(server):
    s, pdf, study = server
    with open(pdf, "rb") as f:
        content = base64.b64encode(f.read()).decode()
    r = requests.post(s.url + "/tools/create-dicom", json={
        "Parent": study, "Tags": {"Modality": "OT", "SeriesDescription": "PDF"},
        "Content": "data:application/pdf;base64," + content})
    r.raise_for_status()
    ans = r.json()
    r = requests.get(s.url + f"/instances/{ans['ID']}/pdf")
    assert r.headers["Content-Type"] == "application/pdf" and r.content == pdf.read_bytes()
    assert len(requests.get(s.url + f"/studies/{study}/series").json()) == 2
    # the new series' instance carries the study's patient and study tags
    tags = requests.get(s.url + f"/instances/{ans['ID']}/simplified-tags").json()
    assert (tags["PatientName"], tags["StudyDescription"]) == ("Hello^World", "Test")


def test_private_tags_configuration_example(server):
    s, _, _ = server
    r = requests.post(s.url + "/tools/create-dicom", json={
        "Tags": {"PatientName": "Private^Tags", "MyPrivateTag": "my value", "MyPrivateNumber": "1234"}})
    r.raise_for_status()
    iid = r.json()["ID"]
    tags = requests.get(s.url + f"/instances/{iid}/tags").json()
    assert tags["0405,0010"]["Value"] == "MyPrivateCreator"
    assert tags["0405,1010"] == {"Name": "MyPrivateTag", "PrivateCreator": "MyPrivateCreator", "Type": "String",
                                 "Value": "my value"}
    assert tags["0405,1011"]["Name"] == "MyPrivateNumber" and tags["0405,1011"]["Value"] == "1234"
    assert requests.get(s.url + f"/instances/{iid}/content/MyPrivateNumber").content == (1234).to_bytes(2, "little")
    found = requests.post(s.url + "/tools/find", json={"Level": "Instance", "Query": {"MyPrivateTag": "my*"}}).json()
    assert found == [iid]
    # with hexadecimal tags and the creator by DefaultPrivateCreator
    r = requests.post(s.url + "/tools/create-dicom", json={"Tags": {"0405,1010": "hex", "0405,1011": "7"}})
    iid = r.json()["ID"]
    simple = requests.get(s.url + f"/instances/{iid}/simplified-tags").json()
    assert (simple["MyPrivateTag"], simple["MyPrivateNumber"]) == ("hex", "7")
