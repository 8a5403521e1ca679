"""Issue 13: a small version (3 SIGKILLs) of the randomized crash campaign
(``crash_campaign.py``, run with 50 kills outside the suite): nothing lost, nothing
duplicated, no orphan file, no dangling row."""
from __future__ import annotations

from crash_campaign import run


def test_crash_campaign_small(tmp_path):
    counts = run(3, seed=13, workdir=tmp_path, log=lambda m: None)
    assert counts["uploads_acknowledged"] > 0
    assert {k: counts[k] for k in ("lost", "duplicated", "orphaned", "dangling", "temporary")} == \
        {"lost": 0, "duplicated": 0, "orphaned": 0, "dangling": 0, "temporary": 0}, counts
