"""Query/retrieve options: ``LocalAet`` (call, query, modality), ``Timeout`` on a silent
remote (compared with Orthanc 1.10.1), ``QueryRetrieveSize`` dropping the least recently
used query (compared with Orthanc 1.10.1), ``RetrieveMethod`` per call, per modality and as
an option."""
from __future__ import annotations

import time

import pytest
import requests

from qr_helpers import canned_answers, make_instances, start_scripted_qr
from test_qr_retrieve_jobs import mover


@pytest.fixture
def remote():
    qr = start_scripted_qr("REMOTE")
    qr.find_answers = canned_answers(2)
    yield qr
    qr.stop()


def test_local_aet(remote, node):
    n = node({"DicomModalities": {"remote": ["REMOTE", "127.0.0.1", remote.port],
                                  "withlocal": {"AET": "REMOTE", "Port": remote.port, "LocalAet": "MODLOCAL"}}})
    q = requests.post(n.url + "/modalities/remote/query", json={"Level": "Study", "LocalAet": "CALLQ"}).json()["Path"]
    requests.post(f"{n.url}{q}/answers/0/retrieve", json={"TargetAet": "X"})
    q2 = requests.post(n.url + "/modalities/remote/query", json={"Level": "Study"}).json()["Path"]
    requests.post(f"{n.url}{q2}/answers/0/retrieve", json={"TargetAet": "X"})
    requests.post(n.url + "/modalities/withlocal/query", json={"Level": "Study", "LocalAet": "CALLQ"})
    requests.post(n.url + "/modalities/remote/move", json={"Level": "Study", "LocalAet": "CALLM",
                                                           "Resources": [{"StudyInstanceUID": "1.2"}]})
    assert remote.callers == [("FIND", "CALLQ"), ("MOVE", "CALLQ"), ("FIND", "PACSBOX"), ("MOVE", "PACSBOX"),
                              ("FIND", "MODLOCAL"), ("MOVE", "CALLM")]
    job = requests.get(n.url + "/jobs?expand").json()
    assert sorted(j["Content"]["LocalAet"] for j in job) == ["CALLM", "CALLQ", "PACSBOX"]


def test_timeout_on_a_silent_remote(remote, node, orthanc):
    # the call's Timeout (1 s) against a DicomScuTimeout of 60 s: an answer well before 60 s
    # shows the call's value is used, whatever the machine's speed
    mods = {"DicomModalities": {"remote": ["REMOTE", "127.0.0.1", remote.port]}, "DicomScuTimeout": 60}
    remote.hang.set()
    answers = []
    for url in (orthanc(dict(mods)).url, node(dict(mods)).url):
        t0 = time.monotonic()
        r = requests.post(url + "/modalities/remote/query", json={"Level": "Study", "Timeout": 1})
        answers.append((r.status_code, r.json()["OrthancStatus"], r.json()["Details"], time.monotonic() - t0))
    (ref_status, ref_code, ref_details, ref_dt), (status, code, details, dt) = answers
    assert (status, code) == (ref_status, ref_code) == (500, 9)
    assert details == ref_details == ('DicomAssociation - C-FIND to AET "REMOTE": DIMSE No data available '
                                      '(timeout in non-blocking mode)')
    assert 0.9 < dt < 30


def test_query_retrieve_size_drops_least_recently_used(remote, node, orthanc):
    cfg = {"DicomModalities": {"remote": ["REMOTE", "127.0.0.1", remote.port]}, "QueryRetrieveSize": 2}
    out = []
    for url in (orthanc(dict(cfg)).url, node(dict(cfg)).url):
        qs = [requests.post(url + "/modalities/remote/query", json={"Level": "Study"}).json()["ID"] for _ in range(2)]
        assert requests.get(f"{url}/queries/{qs[0]}/level").text == "Study"    # a read makes it recent
        qs.append(requests.post(url + "/modalities/remote/query", json={"Level": "Study"}).json()["ID"])
        kept = requests.get(url + "/queries").json()
        out.append([q in kept for q in qs])
    assert out[0] == out[1] == [True, False, True]


@pytest.mark.parametrize("where", ["call", "modality", "option"])
def test_retrieve_method(remote, node, where):
    mod = {"AET": "REMOTE", "Port": remote.port}
    cfg = {}
    body = {}
    if where == "modality":
        mod["RetrieveMethod"] = "C-GET"
    elif where == "option":
        cfg["RetrieveMethod"] = "C-GET"
    else:
        body["RetrieveMethod"] = "C-GET"
    n = node({"DicomModalities": {"remote": mod}, **cfg})
    files = make_instances(2, "RM1", series=1)

    def get(event):
        import io

        import pydicom
        yield 2
        for f in files:
            yield 0xFF00, pydicom.dcmread(io.BytesIO(f))

    remote.get = get
    q = requests.post(n.url + "/modalities/remote/query", json={"Level": "Study"}).json()["Path"]
    r = requests.post(f"{n.url}{q}/answers/0/retrieve", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["RetrieveMethod"] == "C-GET" and r.json()["InstancesCount"] == 2
    assert "TargetAet" not in r.json()
    assert [c[0] for c in remote.callers] == ["FIND", "GET"]
    assert len(requests.get(n.url + "/instances").json()) == 2
    # the call's RetrieveMethod wins over the modality and the option
    remote.move = mover({"PACSBOX": n.dicom_port}, files)
    r = requests.post(f"{n.url}{q}/answers/0/retrieve", json={"RetrieveMethod": "C-MOVE"})
    assert r.json()["RetrieveMethod"] == "C-MOVE" and remote.callers[-1][0] == "MOVE"
    assert requests.post(f"{n.url}{q}/answers/0/retrieve",
                         json={"RetrieveMethod": "C-FOO"}).json()["OrthancStatus"] == 3


def test_retrieve_timeout_on_a_silent_remote(remote, node, orthanc):
    mods = {"DicomModalities": {"remote": ["REMOTE", "127.0.0.1", remote.port]}, "DicomScuTimeout": 60}
    out = []
    for url in (orthanc(dict(mods)).url, node(dict(mods)).url):
        remote.hang.clear()
        q = requests.post(url + "/modalities/remote/query", json={"Level": "Study"}).json()["Path"]
        remote.hang.set()
        t0 = time.monotonic()
        r = requests.post(f"{url}{q}/answers/0/retrieve", json={"TargetAet": "X", "Timeout": 1})
        out.append((r.status_code, r.json()["OrthancStatus"], r.json()["Details"]))
        assert time.monotonic() - t0 < 30     # the call's Timeout, not DicomScuTimeout
    assert out[0] == out[1] == (500, 9, 'DicomAssociation - C-MOVE to AET "REMOTE": DIMSE No data available '
                                        '(timeout in non-blocking mode)')
