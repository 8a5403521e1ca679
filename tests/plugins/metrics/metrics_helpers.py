"""Helpers of the metrics tests: parse an exposition with prometheus-client's own parser,
and run a real ``pacsbox serve`` subprocess on a free loopback port."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

#: One exposition line: name, optional labels, value, millisecond timestamp.
LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                  r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? '
                  r'(-?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?|NaN|[+-]Inf) [0-9]{13}$')

#: The metric names of Orthanc's table (reference section 8.1, issue 5) that the core
#: records, computed at every scrape.
COMPUTED = {
    "orthanc_up_time_s", "orthanc_last_change",
    "orthanc_count_patients", "orthanc_count_studies", "orthanc_count_series", "orthanc_count_instances",
    "orthanc_disk_size_mb", "orthanc_uncompressed_size_mb",
    "orthanc_jobs_pending", "orthanc_jobs_running", "orthanc_jobs_completed", "orthanc_jobs_success",
    "orthanc_jobs_failed",
    # Orthanc 1.13's totals, which only grow (issue 13 case 17)
    "orthanc_jobs_total_success", "orthanc_jobs_total_failed", "orthanc_jobs_total_completed",
}


def samples(text: str) -> list:
    """Every sample of an exposition, parsed by prometheus-client's text parser.

    Returns
    -------
    list of prometheus_client.samples.Sample
        ``name``, ``labels`` (dict), ``value`` (float), ``timestamp`` (seconds).
    """
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def names(text: str) -> set[str]:
    """The set of sample names of an exposition (as the parser reads them)."""
    return {s.name for s in samples(text)}


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample (None when absent)."""
    for s in samples(text):
        if s.name == name and s.labels == labels:
            return s.value
    return None


def sample(text: str, name: str, **labels: str):
    """One parsed sample (None when absent)."""
    for s in samples(text):
        if s.name == name and s.labels == labels:
            return s
    return None


def check_lines(text: str) -> list[str]:
    """Assert every line has Orthanc's shape and the names are sorted; return the lines."""
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    for line in lines:
        assert LINE.match(line), line
    heads = [re.split(r"[{ ]", line, maxsplit=1)[0] for line in lines]
    histograms = {h[:-len("_bucket")] for h in heads if h.endswith("_bucket")}
    families = []
    for h in heads:
        base = re.sub(r"_(bucket|count|sum)$", "", h)
        family = base if base in histograms else h
        if not families or families[-1] != family:
            families.append(family)
    assert families == sorted(set(families)), "families not sorted by name, or not contiguous"
    return lines


def http(method: str, url: str, **kwargs) -> tuple[int, "requests.structures.CaseInsensitiveDict", str]:
    """Send one request and return ``(status, headers, text)`` without keeping the response.

    A live ``requests`` response keeps its socket open, and ``pacsbox serve`` (waitress)
    waits for open client connections when it stops; the helpers therefore never hold
    on to a response.
    """
    with requests.Session() as session:
        r = session.request(method, url, timeout=30, **kwargs)
        try:
            return r.status_code, requests.structures.CaseInsensitiveDict(r.headers), r.text
        finally:
            r.close()
            del r


def http_get(url: str, **kwargs) -> tuple[int, "requests.structures.CaseInsensitiveDict", str]:
    """``GET`` with :func:`http`."""
    return http("GET", url, **kwargs)


class ServeProcess:
    """``pacsbox serve --config FILE`` in a subprocess (the installed command), stopped by PID.

    Parameters
    ----------
    tmp : pathlib.Path
        Directory for the configuration, the storage and the log.
    config : dict
        Options; ``HttpPort`` must be set.
    env : dict, optional
        Extra environment variables.
    """

    def __init__(self, tmp: Path, config: dict, env: dict | None = None) -> None:
        self.tmp = Path(tmp)
        self.config = {"StorageDirectory": str(self.tmp / "db"), "StableAge": 60, **config}
        self.port = int(self.config["HttpPort"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.tmp / "serve.log"

    def start(self, auth: tuple[str, str] | None = None, timeout: float = 60.0) -> "ServeProcess":
        """Start the server and wait until ``GET /system`` answers 200."""
        cfg = self.tmp / "config.json"
        cfg.write_text(json.dumps(self.config), encoding="utf-8")
        env = {**os.environ, **self.env}
        exe = Path(sys.executable).with_name("pacsbox")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pacsbox.cli"]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd + ["serve", "--config", str(cfg)], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pacsbox serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if http_get(self.url + "/system", auth=auth)[0] == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pacsbox serve did not answer in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """The server's output so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL after 15 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        self.proc = None
