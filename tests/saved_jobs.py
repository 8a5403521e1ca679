"""The jobs registry a ``pacsbox serve`` process saved in its index (global property
``JobsRegistry``, see :meth:`pacsbox.jobs.engine.JobsEngine.serialize`), read from outside
the process.

Crash tests kill the server once the saved registry holds what they need (a job in some
state, a position in the middle of its work) instead of sleeping for the save: how long
the save takes depends on the machine, and a job killed before its first save is lost by
design.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any, Callable


def saved_jobs(storage_directory: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The saved jobs of the index in ``storage_directory`` (``index.db``).

    Returns
    -------
    dict
        ``{job ID: entry}`` with the entry's ``State``, ``Progress``... and ``Job`` (what
        the job's ``serialize`` gave at its last captured step); empty before the first
        save.
    """
    path = os.path.join(os.fspath(storage_directory), "index.db")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        row = db.execute("SELECT value FROM global_properties WHERE name = 'JobsRegistry'").fetchone()
    finally:
        db.close()
    return json.loads(row[0])["Jobs"] if row else {}


def wait_saved(storage_directory: str | os.PathLike, predicate: Callable[[dict[str, dict[str, Any]]], bool],
               timeout: float = 60.0, interval: float = 0.005) -> dict[str, dict[str, Any]]:
    """Poll :func:`saved_jobs` until ``predicate(jobs)`` is true; returns those jobs.

    Raises
    ------
    AssertionError
        Still false after ``timeout`` seconds (a hang guard, not a speed bound).
    """
    deadline = time.monotonic() + timeout
    while True:
        jobs = saved_jobs(storage_directory)
        if predicate(jobs):
            return jobs
        assert time.monotonic() < deadline, f"the saved registry never matched: {jobs}"
        time.sleep(interval)


def saved_state(jobs: dict[str, dict[str, Any]], job_id: str) -> str | None:
    """State of ``job_id`` in ``jobs`` (from :func:`saved_jobs`), None when not saved."""
    return jobs.get(job_id, {}).get("State")


def saved_position(jobs: dict[str, dict[str, Any]], job_id: str) -> int:
    """``Position`` of ``job_id``'s saved step (instances done by an instances job, entries
    by an archive, identifiers by a retrieve), 0 when not saved."""
    return int(jobs.get(job_id, {}).get("Job", {}).get("Position", 0))
