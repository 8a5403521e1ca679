"""The tutorial of ``docs/plugins.md`` works as written (issue 14 item 16).

The test builds the tutorial's plugin, ``pacsbox-census``, in a temporary folder from the
blocks of the guide (each follows a ``<!-- file: ... -->`` marker), pip-installs it with
``pacsbox install`` into a throw-away virtual environment that sees this one's packages
(so the shared environment is left as it was), checks ``pacsbox plugins`` against the
output the guide shows, and drives it through a real ``pacsbox serve``: the route submits
the job, the job runs, its output and its metric are served, its option is applied and a
bad value of it stops the start-up with the message the guide quotes; then
``pacsbox uninstall`` removes it. If the guide is wrong, this test fails.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from pacsbox.testing import ServeProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugins.md"
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)```\n", re.S)
CONSOLE_BLOCK = re.compile(r"```console\n(.*?)```\n", re.S)


def tutorial() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("## Tutorial: a plugin from scratch")
    return text[start:text.index("\n## ", start + 1)]


def guide_files() -> dict[str, str]:
    """The files the tutorial writes: path -> content."""
    return dict(FILE_BLOCK.findall(tutorial()))


def shown_output(command: str) -> list[str]:
    """The lines the guide shows after ``$ <command>`` (a shell pattern: ``*`` matches a job
    ID), up to the next prompt."""
    for block in CONSOLE_BLOCK.findall(tutorial()):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if fnmatch.fnmatchcase(line, f"$ {command}"):
                out = []
                for following in lines[i + 1:]:
                    if following.startswith("$ "):
                        break
                    out.append(following)
                return out
    raise AssertionError(f"the guide shows no output of {command!r}")


def test_the_guide_has_every_file_of_the_plugin():
    assert sorted(guide_files()) == ["pacsbox-census/pacsbox_census/__init__.py", "pacsbox-census/pacsbox_census/jobs.py",
                                     "pacsbox-census/pacsbox_census/plugin.py",
                                     "pacsbox-census/pacsbox_census/routes.py", "pacsbox-census/pyproject.toml"]


def wait_done(url: str, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = requests.get(f"{url}/jobs/{job_id}", timeout=10).json()
        if info["State"] in ("Success", "Failure"):
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.05)


def pydicom_file(name: str) -> bytes:
    from pydicom.data import get_testdata_file
    return Path(get_testdata_file(name)).read_bytes()


@pytest.mark.timeout(600) if hasattr(pytest.mark, "timeout") else (lambda f: f)
def test_the_tutorial_plugin_installs_and_serves(tmp_path):
    for path, content in guide_files().items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PACSBOX_DISABLE_PLUGINS", "PACSBOX_TRACE_PLUGINS")}

    def pacsbox(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([py, "-m", "pacsbox.cli", *args], capture_output=True, text=True, timeout=600,
                              cwd=tmp_path, env=env)

    r = pacsbox("install", "--quiet", "--disable-pip-version-check", str(tmp_path / "pacsbox-census"))
    assert r.returncode == 0, r.stdout + r.stderr
    where = subprocess.run([py, "-c", "import pacsbox_census; print(pacsbox_census.__file__)"],
                           capture_output=True, text=True, env=env)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    try:
        # pacsbox plugins: what the guide shows
        r = pacsbox("plugins")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        shown = shown_output("pacsbox plugins")
        i = lines.index(shown[0])
        assert lines[i:i + len(shown)] == shown
        row = {p["ID"]: p for p in json.loads(pacsbox("plugins", "--json").stdout)}["census"]
        assert (row["Distribution"], row["Version"], row["Routes"], row["JobTypes"], row["Metrics"]) == \
            ("pacsbox-census", "0.1.0", ["/census"], ["Census"], ["census_studies_examined"])

        # a real server, the option set to one study per step
        (tmp_path / "run").mkdir()
        config = {"HttpPort": free_port(), "DicomPort": free_port(), "DicomServerEnabled": False,
                  "StorageDirectory": str(tmp_path / "run" / "db"), "CensusStudiesPerStep": 1}
        server = ServeProcess.write(tmp_path / "run", config)
        server.command = [py, "-m", "pacsbox.cli"]
        server.env = {"PACSBOX_DISABLE_PLUGINS": ""}
        server.start()
        try:
            url = server.url
            studies = []
            for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
                answer = requests.post(f"{url}/instances", data=pydicom_file(name), timeout=30).json()
                assert answer["Status"] == "Success"
                studies.append(answer["ParentStudy"])
            assert requests.get(f"{url}/plugins/census", timeout=10).json()["Description"] == \
                "Census: counts the series and instances of each modality, in a job."

            # the route submits the job (asynchronous by default) ...
            submitted = requests.post(f"{url}/census", data="{}", timeout=10).json()
            assert sorted(submitted) == ["ID", "Path"] and submitted["Path"] == f"/jobs/{submitted['ID']}"
            info = wait_done(url, submitted["ID"])
            # ... the job runs, one study per step (the option) ...
            assert (info["State"], info["Type"], info["Progress"]) == ("Success", "Census", 100)
            assert info["Content"] == {"Studies": 3, "StudiesExamined": 3, "Modalities": {
                "CT": {"Series": 1, "Instances": 1}, "MR": {"Series": 1, "Instances": 1},
                "RTPLAN": {"Series": 1, "Instances": 1}}}
            # ... its output is served as the guide shows ...
            report = requests.get(f"{url}/jobs/{submitted['ID']}/report", timeout=10)
            assert report.status_code == 200 and report.headers["Content-Type"] == "text/csv"
            assert report.headers["Content-Disposition"] == 'filename="census.csv"'
            assert report.text.splitlines() == shown_output("curl -s http://localhost:8042/jobs/*/report")
            # ... and its metric counted each study once
            metrics = requests.get(f"{url}/tools/metrics-prometheus", timeout=10).text
            assert re.search(r"^census_studies_examined 3 \d+$", metrics, re.M), metrics

            # synchronous, on one study; a malformed body in Orthanc's error format
            one = requests.post(f"{url}/census", json={"Studies": [studies[1]], "Synchronous": True},
                                timeout=60).json()
            assert one == {"Studies": 1, "StudiesExamined": 1, "Modalities": {"MR": {"Series": 1, "Instances": 1}}}
            bad = requests.post(f"{url}/census", json={"Studies": "all"}, timeout=10)
            assert bad.status_code == 400
            assert (bad.json()["OrthancStatus"], bad.json()["Details"]) == \
                (15, '"Studies" must be a list of study IDs')
            assert requests.post(f"{url}/census", data="[1]", timeout=10).status_code == 400
            metrics = requests.get(f"{url}/tools/metrics-prometheus", timeout=10).text
            assert re.search(r"^census_studies_examined 4 \d+$", metrics, re.M)
        finally:
            server.stop()

        # a bad value of the option stops the start-up, as the guide says
        config["CensusStudiesPerStep"] = 0
        (tmp_path / "run" / "config.json").write_text(json.dumps(config))
        r = pacsbox("serve", "--config", str(tmp_path / "run" / "config.json"))
        assert r.returncode == 2
        assert r.stderr == ("pacsbox: bad configuration: option CensusStudiesPerStep: 0 is not an integer in 1-1000 "
                            "(plugin 'census')\n")
        assert " ".join(tutorial().split()).count("pacsbox: bad configuration: option CensusStudiesPerStep: 0 is "
                                                  "not an integer in 1-1000 (plugin 'census')") == 1
    finally:
        r = pacsbox("uninstall", "--quiet", "pacsbox-census")
        assert r.returncode == 0, r.stdout + r.stderr
    assert "census" not in {p["ID"] for p in json.loads(pacsbox("plugins", "--json").stdout)}
