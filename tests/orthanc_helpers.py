"""Start and stop a scratch reference Orthanc (Debian's ``Orthanc``, installed by
``.ci/run``) on loopback, for the tests that compare pacsbox with it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import pytest
import requests

from pacsbox.testing import free_port

#: The reference server, Debian's Orthanc 1.10.1 (``.ci/run`` installs it), or None.
ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)


def start_orthanc(d: Path, cfg: dict, env: dict | None = None) -> tuple[subprocess.Popen, IO[bytes], str]:
    """Write ``cfg`` to ``d/config.json``, start Orthanc on it (logs in ``d``) and wait up to
    20 s until ``/system`` answers; returns ``(proc, log, url)`` (give both to
    :func:`stop_orthanc`)."""
    d = Path(d)
    (d / "config.json").write_text(json.dumps(cfg))
    log = open(d / "stdout.log", "wb")
    proc = subprocess.Popen([ORTHANC, f"--logdir={d}", str(d / "config.json")], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{cfg['HttpPort']}"
    for _ in range(400):
        try:
            requests.get(url + "/system", timeout=1)
            break
        except requests.ConnectionError:
            if proc.poll() is not None:
                log.close()
                pytest.fail(f"the reference Orthanc exited; see {d / 'stdout.log'}")
            time.sleep(0.05)
    else:
        stop_orthanc(proc, log)
        pytest.fail(f"the reference Orthanc did not answer within 20 s; see {d / 'stdout.log'}")
    return proc, log, url


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a process started by a test (by its handle), killing it after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def stop_orthanc(proc: subprocess.Popen, log: IO[bytes]) -> None:
    """Stop an Orthanc started by :func:`start_orthanc` (:func:`stop_process`) and close its log."""
    stop_process(proc)
    log.close()


@contextmanager
def reference_orthanc(d: Path, **overrides) -> Iterator[str]:
    """A scratch reference Orthanc in ``d`` on free loopback ports, DICOM server off
    (``overrides`` are added to its config); yields its URL and stops it on exit."""
    d = Path(d)
    cfg = {"Name": "Ref", "StorageDirectory": str(d / "db"), "IndexDirectory": str(d / "db"), "HttpPort": free_port(),
           "DicomPort": free_port(), "DicomServerEnabled": False, "RemoteAccessAllowed": False,
           "AuthenticationEnabled": False, "StableAge": 60, "WebDavEnabled": False, **overrides}
    proc, log, url = start_orthanc(d, cfg)
    try:
        yield url
    finally:
        stop_orthanc(proc, log)
