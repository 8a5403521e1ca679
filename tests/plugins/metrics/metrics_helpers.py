"""Helpers of the metrics tests: parse an exposition with prometheus-client's own parser,
and run a real ``pacsbox serve`` subprocess on a free loopback port."""
from __future__ import annotations

import json
import re
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from pacsbox.testing import ServeProcess as _ServeProcess

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


class ServeProcess(_ServeProcess):
    """``pacsbox serve --config FILE`` in a subprocess (the installed command), stopped by PID
    (:class:`pacsbox.testing.ServeProcess` whose config is written at each start).

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
        self.config_path, self.log_path = str(self.tmp / "config.json"), str(self.tmp / "serve.log")
        self.env = dict(env or {})
        self.proc = None  # the directory may not exist yet: the config is written at start

    def _write(self) -> None:
        (self.tmp / "config.json").write_text(json.dumps(self.config), encoding="utf-8")

    def start(self, auth: tuple[str, str] | None = None, timeout: float = 60.0) -> "ServeProcess":
        """Start the server (with :attr:`config` as it is now) and wait until ``GET /system`` answers 200."""
        self._write()
        return super().start(timeout=timeout, auth=auth)

    def log(self, tail: int | None = None) -> str:
        """The server's output so far."""
        return super().log(tail)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM by PID, then SIGKILL after 15 s."""
        super().stop(timeout)
