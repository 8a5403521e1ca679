"""The ``pacsbox`` command, run as a real subprocess: ``--version``, ``plugins``,
``serve`` (with the pip-installed example plugin, ``--no-jobs``, ``--verbose``, broken
configuration and broken plugins).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import requests

import pacsbox
from fixtures.example_plugin.install import ensure_installed
from pacsbox.testing import free_port

PACSBOX = str(Path(sys.executable).parent / "pacsbox")
if not os.path.exists(PACSBOX):  # pragma: no cover - unusual layouts
    PACSBOX = shutil.which("pacsbox") or PACSBOX


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PACSBOX_DISABLE_PLUGINS", "PACSBOX_TRACE_PLUGINS")}
    env.update(extra)
    return env


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PACSBOX, *args], capture_output=True, text=True, env=env or clean_env(), timeout=timeout)


@pytest.fixture(scope="module")
def example_installed():
    ensure_installed()


class Server:
    """A ``pacsbox serve`` process on free loopback ports."""

    def __init__(self, workdir: Path, config: dict, args: tuple[str, ...] = (), env: dict | None = None):
        self.port = free_port()
        cfg = {"HttpPort": self.port, "DicomPort": free_port(), "StorageDirectory": str(workdir / "data")}
        cfg.update(config)
        self.config_path = workdir / f"config-{self.port}.json"
        self.config_path.write_text("// written by test_cli.py\n" + json.dumps(cfg, indent=2))
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([PACSBOX, "serve", "--config", str(self.config_path), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or clean_env())
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"pacsbox serve exited with {self.proc.returncode}:\n{err}")
            try:
                if requests.get(self.url + "/system", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("pacsbox serve did not answer within 60 s")
            time.sleep(0.1)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kw)

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, then the exit status and the output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err


@pytest.fixture
def serve(tmp_path):
    """Factory: ``serve(config={}, *args)`` → running :class:`Server`; killed at teardown."""
    servers: list[Server] = []

    def factory(config: dict | None = None, *args: str, env: dict | None = None) -> Server:
        s = Server(tmp_path, config or {}, args, env)
        servers.append(s)
        return s

    yield factory
    for s in servers:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.communicate(timeout=30)


def write_broken_distribution(root: Path) -> None:
    """An installed distribution whose entry point cannot be imported."""
    info = root / "pacsbox_broken_cli-0.9.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pacsbox-broken-cli\nVersion: 0.9\n")
    (info / "entry_points.txt").write_text("[pacsbox.plugins]\nbroken = pacsbox_broken_cli_test.plugin\n")


# ---------------------------------------------------------------------------------------

def test_version():
    r = run("--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"pacsbox {pacsbox.__version__}\n", "")
    assert pacsbox.__version__ == metadata.version("pacsbox")


def test_without_command_prints_help():
    r = run()
    assert r.returncode == 2
    assert "serve" in r.stdout and "plugins" in r.stdout


def test_plugins_lists_installed_plugins(example_installed):
    r = run("plugins")
    assert r.returncode == 0, r.stderr
    version = pacsbox.__version__
    for name, module in (("archive", "pacsbox_archive.plugin"), ("dicom_net", "pacsbox_dicom_net.plugin"),
                         ("metrics", "pacsbox_metrics.plugin"), ("pdf", "pacsbox_pdf.plugin")):
        assert f"{name} (pacsbox {version}) [loaded] {module}\n" in r.stdout
    assert ("example (pacsbox-example-plugin 1.2.3) [loaded] pacsbox_example.plugin\n"
            "    route   /example/hello\n"
            "    route   /example/jobs\n"
            "    job     ExampleSleep\n"
            "    metric  example_hello_requests\n") in r.stdout

    rows = json.loads(run("plugins", "--json").stdout)
    assert [row["ID"] for row in rows] == sorted(ep.name for ep in metadata.entry_points(group="pacsbox.plugins"))
    example = {row["ID"]: row for row in rows}["example"]
    assert example == {"ID": "example", "Distribution": "pacsbox-example-plugin", "Version": "1.2.3",
                       "Module": "pacsbox_example.plugin", "State": "loaded",
                       "Routes": ["/example/hello", "/example/jobs"], "JobTypes": ["ExampleSleep"],
                       "Metrics": ["example_hello_requests"], "Options": []}
    pdf = {row["ID"]: row for row in rows}["pdf"]
    assert pdf["Options"] == [{"Name": "CreateDicomMaximumSize", "Type": "int>=0", "Default": 256,
                               "Doc": "Largest body of POST /tools/create-dicom, in MB (0: no limit)"}]
    assert "    option  CreateDicomMaximumSize (int>=0, default 256): Largest body of POST /tools/create-dicom, " \
           "in MB (0: no limit)\n" in r.stdout


def test_plugins_shows_blocked_plugins(example_installed, tmp_path):
    cfg = tmp_path / "blocklist.json"
    cfg.write_text('{ "PluginsBlocklist": ["pdf"] }  // the environment adds "example"')
    r = run("plugins", "--config", str(cfg), env=clean_env(PACSBOX_DISABLE_PLUGINS="example"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    i = lines.index("example (pacsbox-example-plugin 1.2.3) [blocked] pacsbox_example.plugin")
    assert i + 1 == len(lines) or not lines[i + 1].startswith("    ")
    assert f"pdf (pacsbox {pacsbox.__version__}) [blocked] pacsbox_pdf.plugin" in lines
    assert f"archive (pacsbox {pacsbox.__version__}) [loaded] pacsbox_archive.plugin" in lines


def test_broken_plugin_stops_plugins_and_serve_naming_its_distribution(tmp_path):
    write_broken_distribution(tmp_path / "site")
    env = clean_env(PYTHONPATH=str(tmp_path / "site"))
    r = run("plugins", env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("pacsbox: cannot load the plugins: cannot load plugin 'broken' (pacsbox_broken_cli_test.plugin)"
                        " of distribution 'pacsbox-broken-cli' 0.9: ModuleNotFoundError: No module named "
                        "'pacsbox_broken_cli_test'\n")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"HttpPort": free_port(), "DicomPort": free_port(),
                               "StorageDirectory": str(tmp_path / "data")}))
    r = run("serve", "--config", str(cfg), env=env)
    assert r.returncode == 2
    assert "pacsbox: cannot start: cannot load plugin 'broken'" in r.stderr
    assert "distribution 'pacsbox-broken-cli' 0.9" in r.stderr
    # blocked, the server starts
    r = run("plugins", env=dict(env, PACSBOX_DISABLE_PLUGINS="broken"))
    assert r.returncode == 0 and "broken (pacsbox-broken-cli 0.9) [blocked] pacsbox_broken_cli_test.plugin" in r.stdout


def test_serve_bad_configuration(tmp_path):
    cfg = tmp_path / "bad.json"
    cfg.write_text('{\n  "HttpPort": 8042,\n  "Name": oops\n}\n')
    r = run("serve", "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.startswith("pacsbox: bad configuration: ") and "line 3" in r.stderr


def test_serve_with_the_example_plugin(example_installed, serve):
    s = serve({"Name": "CliBox", "Example": {"StepSeconds": 0.001}})
    assert s.get("/example/hello").json() == {"Hello": "CliBox", "Count": 1}
    assert s.get("/example/hello").json() == {"Hello": "CliBox", "Count": 2}
    plugins = s.get("/plugins").json()
    assert plugins[0] == "explorer.js" and "example" in plugins
    assert s.get("/plugins/example").json()["Version"] == "1.2.3"
    r = s.post("/example/jobs", json={"Steps": 3, "Synchronous": True})
    assert r.status_code == 200 and r.json() == {"Description": "REST API", "Steps": 3, "StepsDone": 3}
    job_id = s.post("/example/jobs", json={"Steps": 4}).json()["ID"]
    deadline = time.monotonic() + 30
    while (info := s.get(f"/jobs/{job_id}").json())["State"] not in ("Success", "Failure"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (info["State"], info["Type"], info["Content"]["StepsDone"]) == ("Success", "ExampleSleep", 4)
    rc, out, err = s.stop()
    assert rc == 0, err
    assert "example 1.2.3" in err and "stopped" in err


def test_serve_no_jobs_does_not_reload_saved_jobs(example_installed, serve, tmp_path):
    config = {"SaveJobs": True, "Example": {"StepSeconds": 0.001}}
    s = serve(config)
    job_id = s.post("/example/jobs", json={"Steps": 2}).json()["ID"]
    deadline = time.monotonic() + 30
    while s.get(f"/jobs/{job_id}").json()["State"] != "Success":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert s.stop()[0] == 0
    s = serve(config)
    assert job_id in s.get("/jobs").json()
    assert s.stop()[0] == 0
    s = serve(config, "--no-jobs")
    assert s.get("/jobs").json() == []
    assert s.stop()[0] == 0


def test_serve_verbose(serve):
    s = serve()
    rc, _, err = s.stop()
    assert rc == 0 and " DEBUG " not in err and " INFO pacsbox" in err
    s = serve({}, "--verbose")
    rc, _, err = s.stop()
    assert rc == 0
    assert " DEBUG pacsbox.plugins: loaded plugin 'archive' from pacsbox_archive.plugin (distribution pacsbox" in err


def test_serve_stops_promptly_with_an_idle_keepalive_connection(serve):
    s = serve()
    with requests.Session() as session:
        assert session.get(s.url + "/system", timeout=10).status_code == 200  # connection kept alive
        t0 = time.monotonic()
        rc, _, err = s.stop()
        elapsed = time.monotonic() - t0
    assert rc == 0 and "stopped" in err
    # not held by the idle connection for channel_timeout (60 s or more); a hang guard,
    # not a speed bound (that was 5 s)
    assert elapsed < 20, f"stop took {elapsed:.1f} s"


@pytest.mark.parametrize("config, message", [
    ({"HttpPort": "abc"}, 'bad configuration: option HttpPort: "abc" is not a TCP port number (1-65535)'),
    ({"RegisteredUsers": "alice", "AuthenticationEnabled": True},
     'bad configuration: option RegisteredUsers: "alice" is not a JSON object'),
])
def test_serve_refuses_bad_option_values_cleanly(tmp_path, config, message):
    cfg = {"StorageDirectory": str(tmp_path / "data"), "DicomPort": free_port(), **config}
    path = tmp_path / "bad-values.json"
    path.write_text(json.dumps(cfg))
    proc = run("serve", "--config", str(path), timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_serve_refuses_a_port_in_use_and_a_shared_index(tmp_path):
    first = Server(tmp_path, {})
    try:
        # same port, other data folder
        cfg = {"HttpPort": first.port, "StorageDirectory": str(tmp_path / "other")}
        (tmp_path / "same-port.json").write_text(json.dumps(cfg))
        proc = run("serve", "--config", str(tmp_path / "same-port.json"), timeout=60)
        assert proc.returncode == 2 and f"cannot start the HTTP server on port {first.port}" in proc.stderr
        # other port, same data folder: one server per index
        cfg = {"HttpPort": free_port(), "StorageDirectory": str(tmp_path / "data")}
        (tmp_path / "same-index.json").write_text(json.dumps(cfg))
        proc = run("serve", "--config", str(tmp_path / "same-index.json"), timeout=60)
        assert proc.returncode == 2 and "already in use by another pacsbox" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        first.stop()
