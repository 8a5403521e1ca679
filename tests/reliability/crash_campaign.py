"""Randomized crash campaign (issue 13): N SIGKILLs of a real ``pacsbox serve`` at random
points during mixed REST ingest and jobs (anonymize with and without Transcode, modify,
deletes), each followed by a restart; then a consistency check of the index against the
storage folder.

Counts:

- ``lost``: uploads answered 200 whose instance is missing after the restarts;
- ``duplicated``: finished modify/anonymize jobs whose output study holds more instances
  than the source (or two instances with one InstanceNumber in a series);
- ``orphaned``: storage files no attachment row references; ``dangling``: rows whose file
  is missing; ``temporary``: ``*.tmp`` files left.

Run: ``python tests/reliability/crash_campaign.py [--kills 50] [--seed 1]`` (a few minutes);
``test_crash_campaign_small`` runs 3 kills in the suite.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from crash_helpers import make_server, make_study, storage_consistency  # noqa: E402

RLE = "1.2.840.10008.1.2.5"


def _activity(url: str, rng: random.Random, stop: threading.Event, acked: list, jobs: list, studies: list) -> None:
    """Upload small studies and start jobs until ``stop`` (or the server dies)."""
    http = requests.Session()
    try:
        while not stop.is_set():
            roll = rng.random()
            if roll < 0.6 or not studies:
                files = make_study(rng.randint(2, 12), f"CAMP-{rng.randrange(10**6)}", size=rng.choice((64, 256)),
                                   series=rng.randint(1, 3))
                study = None
                for data in files:
                    r = http.post(url + "/instances", data=data, timeout=30)
                    if r.status_code == 200:
                        acked.append(r.json()["ID"])
                        study = r.json()["ParentStudy"]
                if study is not None and study not in studies:
                    studies.append(study)
            elif roll < 0.9:
                study = rng.choice(studies)
                kind = rng.choice(("anonymize", "modify"))
                body = {"Asynchronous": True}
                if kind == "modify":
                    body["Replace"] = {"StudyDescription": "CAMPAIGN"}
                if rng.random() < 0.5:
                    body["Transcode"] = RLE
                r = http.post(f"{url}/studies/{study}/{kind}", json=body, timeout=30)
                if r.status_code == 200:
                    jobs.append((r.json()["ID"], study))
            else:  # delete a job's output (never an acknowledged upload)
                for job_id, _ in list(jobs)[-3:]:
                    d = http.get(f"{url}/jobs/{job_id}", timeout=30).json()
                    if d.get("State") == "Success" and rng.random() < 0.3:
                        http.delete(f"{url}/studies/{d['Content']['ID']}", timeout=30)
                        deleted_outputs.add(d["Content"]["ID"])
                        break
    except (requests.ConnectionError, requests.Timeout, ValueError, KeyError):
        return  # the server was killed


deleted_outputs: set[str] = set()


def run(kills: int, seed: int, workdir: Path, log=print) -> dict:
    """Run the campaign; returns the counts."""
    rng = random.Random(seed)
    server = make_server(workdir, ConcurrentJobs=2, JobsHistorySize=10000)
    acked: list[str] = []
    jobs: list[tuple[str, str]] = []
    studies: list[str] = []
    server.start()
    for k in range(kills):
        stop = threading.Event()
        t = threading.Thread(target=_activity, args=(server.url, random.Random(rng.random()), stop, acked, jobs,
                                                     studies), daemon=True)
        t.start()
        time.sleep(rng.uniform(0.3, 2.0))
        server.kill()
        stop.set()
        t.join(60)
        server.start()
        log(f"kill {k + 1}/{kills}: {len(acked)} uploads acknowledged, {len(jobs)} jobs")
    # let every job end, then check
    http = requests.Session()
    deadline = time.monotonic() + 600
    while True:
        states = [http.get(f"{server.url}/jobs/{j}", timeout=30) for j, _ in jobs]
        pending = [r for r in states if r.status_code == 200 and r.json()["State"] not in ("Success", "Failure")]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    lost = [i for i in acked if http.get(f"{server.url}/instances/{i}", timeout=30).status_code != 200]
    duplicated = 0
    checked_jobs = 0
    for job_id, source in jobs:
        r = http.get(f"{server.url}/jobs/{job_id}", timeout=30)
        if r.status_code != 200 or r.json()["State"] != "Success":
            continue  # forgotten by the history (JobsHistorySize) or failed
        out = r.json()["Content"].get("ID")
        if not out or out in deleted_outputs:
            continue
        src = http.get(f"{server.url}/studies/{source}/instances", timeout=30)
        got = http.get(f"{server.url}/studies/{out}/instances?expand", timeout=30)
        if src.status_code != 200 or got.status_code != 200:
            continue
        checked_jobs += 1
        per = collections.Counter((i["ParentSeries"], i["MainDicomTags"].get("InstanceNumber")) for i in got.json())
        if len(got.json()) > len(src.json()) or (per and max(per.values()) > 1):
            duplicated += 1
    stats = http.get(f"{server.url}/statistics", timeout=30).json()
    http.close()
    server.stop()
    consistency = storage_consistency(workdir / "db")
    counts = {"kills": kills, "uploads_acknowledged": len(acked), "jobs": len(jobs), "jobs_checked": checked_jobs,
              "instances": stats["CountInstances"], "lost": len(lost), "duplicated": duplicated,
              "orphaned": len(consistency["orphans"]), "dangling": len(consistency["dangling"]),
              "temporary": len(consistency["temporary"])}
    return counts


def main(argv=None) -> int:
    """Command line: ``--kills N --seed S [--workdir DIR]``; prints the counts as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pacsbox-campaign-"))
    counts = run(args.kills, args.seed, workdir, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(counts, indent=2))
    ok = counts["lost"] == counts["duplicated"] == counts["orphaned"] == counts["dangling"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
