"""Microbenchmark (not a test): a job's overhead when empty, from submission to
``Success``.

Run: ``python tests/jobs/bench_empty_job.py [N]``. Prints the median and p90 in
milliseconds of:

- ``engine``: ``ctx.jobs.run_sync(EmptyJob())`` in process (submit → worker → Success →
  the waiting caller wakes up);
- ``engine-async``: ``ctx.jobs.submit`` then ``ctx.jobs.wait``;
- ``http-nojob``: ``POST /bench/nojob`` (answers ``{}`` without a job): the HTTP round
  trip alone, for comparison;
- ``http-sync``: ``POST /bench/empty`` through a real waitress server on loopback (sync
  job; includes the HTTP round trip);
- ``http-async``: the same with ``{"Asynchronous": true}`` then polling ``GET /jobs/{id}``
  every 0.5 ms until ``Success``;

each with ``SaveJobs`` true (default) and false, ``ConcurrentJobs`` 2.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pacsbox import Job, RouteSpec, StepResult, create_app, hookimpl, read_json_body, send_json  # noqa: E402
from conftest import LiveServer, free_port  # noqa: E402


class EmptyJob(Job):
    type_name = "BenchEmpty"

    def step(self, ctx):
        return StepResult.SUCCESS

    def serialize(self):
        return {}

    @classmethod
    def from_serialized(cls, data, ctx):
        return cls()


class Submit:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        send_json(resp, self.ctx.jobs.run_request(EmptyJob(), read_json_body(req) or {}))


class NoJob:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        read_json_body(req)
        send_json(resp, {})


class BenchPlugin:
    @hookimpl
    def register_job_types(self, ctx):
        return [EmptyJob]

    @hookimpl
    def register_routes(self, ctx):
        return [RouteSpec("/bench/empty", Submit), RouteSpec("/bench/nojob", NoJob)]


def _stats(samples):
    s = sorted(samples)
    return statistics.median(s) * 1000, s[int(len(s) * 0.9)] * 1000


def run(n: int, save_jobs: bool) -> dict[str, tuple[float, float]]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        app = create_app({"StorageDirectory": tmp, "SaveJobs": save_jobs, "ConcurrentJobs": 2,
                          "HttpPort": port}, plugins=[BenchPlugin()], load_entrypoints=False)
        jobs = app.ctx.jobs
        try:
            for _ in range(50):
                jobs.run_sync(EmptyJob())
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                jobs.run_sync(EmptyJob())
                samples.append(time.perf_counter() - t0)
            out["engine"] = _stats(samples)
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                jobs.wait(jobs.submit(EmptyJob()))
                samples.append(time.perf_counter() - t0)
            out["engine-async"] = _stats(samples)
            server = LiveServer(app, port)
            try:
                http = requests.Session()
                url = f"{server.url}/bench/empty"
                for _ in range(20):
                    http.post(url, json={})
                samples = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    http.post(f"{server.url}/bench/nojob", json={})
                    samples.append(time.perf_counter() - t0)
                out["http-nojob"] = _stats(samples)
                samples = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    r = http.post(url, json={})
                    samples.append(time.perf_counter() - t0)
                    assert r.status_code == 200
                out["http-sync"] = _stats(samples)
                samples = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    job = http.post(url, json={"Asynchronous": True}).json()
                    while http.get(f"{server.url}{job['Path']}").json()["State"] != "Success":
                        time.sleep(0.0005)
                    samples.append(time.perf_counter() - t0)
                out["http-async"] = _stats(samples)
                http.close()
            finally:
                server.close()
        finally:
            app.close()
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    for save in (True, False):
        for name, (p50, p90) in run(n, save).items():
            print(f"SaveJobs={str(save):5} {name:13} p50 {p50:7.3f} ms   p90 {p90:7.3f} ms")
