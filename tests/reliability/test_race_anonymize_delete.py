"""Issue 13 case 1: an anonymize racing the deletion of its own output never answers 500.

One thread loops ``POST /studies/{src}/anonymize {}``; another loops deleting every
patient except the source's. Each anonymize must succeed (200) or fail cleanly with the
reference's error for a resource deleted under the job (404 ``UnknownResource``), and the
log holds no traceback.
"""
from __future__ import annotations

import logging

import requests

from builtin.builtin_helpers import make_study
from race_helpers import assert_clean, race


def test_anonymize_racing_a_delete_of_its_output(live_server, caplog):
    s = live_server()
    for data in make_study(2, patient_id="RACE", series=1):
        assert requests.post(s.url + "/instances", data=data, timeout=30).status_code == 200
    src_patient = requests.get(s.url + "/patients", timeout=30).json()[0]
    src_study = requests.get(s.url + "/studies", timeout=30).json()[0]

    def others(http):
        return [f"{s.url}/patients/{pid}" for pid in http.get(s.url + "/patients", timeout=30).json()
                if pid != src_patient]

    caplog.set_level(logging.WARNING)
    statuses, bodies, deleted = race(
        lambda http: http.post(f"{s.url}/studies/{src_study}/anonymize", json={}, timeout=60), others,
        calls=60, seconds=20)
    assert_clean(statuses, bodies)
    assert deleted > 0 and statuses.get(200, 0) > 0
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    # the source is intact
    assert len(requests.get(f"{s.url}/studies/{src_study}/instances", timeout=30).json()) == 2
