"""Issue 13 case 10: ``pacsbox serve`` exits promptly on SIGINT or SIGTERM.

It used to take ~1.7 s after logging "stopped": the signal could land on a waitress
thread, so the main thread ran the handler only at the end of its 1 s poll, then waited
another poll for the loop to end, then the interpreter's exit collected the whole heap.
The test asserts the clean exit with an idle keep-alive connection open, within a hang
guard: the exit's speed is not asserted (a loaded machine can stretch any small bound).
"""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import requests

from crash_helpers import free_port
from core.test_cli import PACSBOX, clean_env


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_exits_promptly_on_a_signal(tmp_path, sig):
    port = free_port()
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"HttpPort": port, "DicomPort": free_port(), "StorageDirectory": str(tmp_path / "d")}))
    proc = subprocess.Popen([PACSBOX, "serve", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if requests.get(f"http://127.0.0.1:{port}/system", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with requests.Session() as http:  # an idle keep-alive connection stays open
            assert http.get(f"http://127.0.0.1:{port}/system", timeout=10).status_code == 200
            time.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(sig)
            proc.wait(30)
            elapsed = time.monotonic() - t0
        err = proc.stderr.read()
        assert proc.returncode == 0, err
        assert f"stopping (signal {int(sig)})" in err and "stopped" in err
        # the idle keep-alive connection does not hold the exit for channel_timeout (60 s
        # or more); how fast the exit is (~0.15 s here, ~1.7 s before 8bcdbf4) is a
        # benchmark's matter: a loaded machine stretched the old bound of 1 s
        assert elapsed < 20, f"exit took {elapsed:.2f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
