"""Helper of the race tests (issue 13 case 1): an operation looped while another thread
deletes resources, over a real HTTP server."""
from __future__ import annotations

import threading
import time

import requests


def race(operation, victims, calls: int = 25, seconds: float = 40.0):
    """Loop ``operation(http)`` while another thread deletes ``victims(http)``.

    Parameters
    ----------
    operation : callable
        Takes a ``requests.Session``, returns the response of one call.
    victims : callable
        Takes a ``requests.Session``, returns the URLs to DELETE (each answered 200 or 404).
    calls : int
        Calls of ``operation`` at most.
    seconds : float
        Time bound of the loop.

    Returns
    -------
    (dict of int to int, list of dict, int)
        Count of each status of ``operation``, the JSON bodies of the non-200 answers, and
        the deletions that succeeded.
    """
    stop = threading.Event()
    deleted = [0]

    def deleter():
        with requests.Session() as http:
            while not stop.is_set():
                for url in victims(http):
                    r = http.delete(url, timeout=60)
                    assert r.status_code in (200, 404), r.text
                    deleted[0] += r.status_code == 200
                time.sleep(0.001)

    statuses: dict[int, int] = {}
    bodies = []
    t = threading.Thread(target=deleter, daemon=True)
    t.start()
    try:
        with requests.Session() as http:
            deadline = time.monotonic() + seconds
            n = 0
            while n < calls and time.monotonic() < deadline:
                r = operation(http)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code != 200:
                    bodies.append(r.json())
                n += 1
    finally:
        stop.set()
        t.join(60)
    return statuses, bodies, deleted[0]


def assert_clean(statuses, bodies):
    """Only 200 and 404 ``UnknownResource`` (the reference's error for a resource deleted
    under a request or a job)."""
    assert set(statuses) <= {200, 404}, (statuses, bodies[:3])
    for body in bodies:
        assert (body["HttpStatus"], body["OrthancError"]) == (404, "Unknown resource"), body
