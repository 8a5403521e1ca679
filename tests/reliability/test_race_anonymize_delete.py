"""Issue 13 case 1: an anonymize racing the deletion of its own output never answers 500.

One thread loops ``POST /studies/{src}/anonymize {}``; another loops deleting every
patient except the source's. Each anonymize must succeed (200) or fail cleanly with the
reference's error for a resource deleted under the job (404 ``UnknownResource``), and the
log holds no traceback.
"""
from __future__ import annotations

import logging
import threading
import time

import requests

from builtin.builtin_helpers import make_study


def test_anonymize_racing_a_delete_of_its_output(live_server, caplog):
    s = live_server()
    for data in make_study(2, patient_id="RACE", series=1):
        assert requests.post(s.url + "/instances", data=data, timeout=30).status_code == 200
    src_patient = requests.get(s.url + "/patients", timeout=30).json()[0]
    src_study = requests.get(s.url + "/studies", timeout=30).json()[0]
    stop = threading.Event()
    deleted = [0]

    def deleter():
        with requests.Session() as http:
            while not stop.is_set():
                for pid in http.get(s.url + "/patients", timeout=30).json():
                    if pid != src_patient:
                        r = http.delete(f"{s.url}/patients/{pid}", timeout=30)
                        assert r.status_code in (200, 404), r.text
                        deleted[0] += r.status_code == 200

    statuses: dict[int, int] = {}
    bodies = []
    t = threading.Thread(target=deleter, daemon=True)
    caplog.set_level(logging.WARNING)
    t.start()
    try:
        with requests.Session() as http:
            deadline = time.monotonic() + 20
            n = 0
            while n < 60 and time.monotonic() < deadline:
                r = http.post(f"{s.url}/studies/{src_study}/anonymize", json={}, timeout=60)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code != 200:
                    bodies.append(r.json())
                n += 1
    finally:
        stop.set()
        t.join(30)
    assert set(statuses) <= {200, 404}, (statuses, bodies[:3])
    for body in bodies:
        assert (body["HttpStatus"], body["OrthancError"]) == (404, "Unknown resource"), body
    assert deleted[0] > 0 and statuses.get(200, 0) > 0
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    # the source is intact
    assert len(requests.get(f"{s.url}/studies/{src_study}/instances", timeout=30).json()) == 2
