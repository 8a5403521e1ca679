"""Test helpers for pacsbox plugin authors, shipped as a pytest plugin.

Installing pacsbox registers this module under the ``pytest11`` entry point, so its
fixtures are available in every pytest run without any ``conftest.py``. Every fixture is
prefixed ``pacsbox_`` so it cannot clash with a project's own fixtures.

Fixtures
--------
pacsbox_make_app
    Factory ``pacsbox_make_app(config=None, plugins=(), *, load_entrypoints=False,
    **create_app_kwargs)`` returning a :class:`pacsbox.PacsboxApp` whose storage and
    index live in the test's ``tmp_path`` (defaults: ``SaveJobs`` false, ``DicomPort`` a
    free port; ``config`` overrides them); every app is closed at teardown. Apps are
    built with an explicit plugin list (installed entry points are ignored unless
    ``load_entrypoints=True``), so a test never depends on what happens to be installed.
pacsbox_app
    An app with the core only (``pacsbox_make_app()``).
pacsbox_client
    A :class:`falcon.testing.TestClient` of ``pacsbox_app`` (in-process, no socket).
pacsbox_live_server
    Factory ``pacsbox_live_server(config=None, plugins=(), **kw)`` returning a
    :class:`LiveServer`: the app served by a real waitress server on a free loopback
    port (``.url``, ``.app``), stopped at teardown.
pacsbox_serve_process
    Factory ``pacsbox_serve_process(config=None, *, start=True)`` returning a
    :class:`ServeProcess`: a real ``pacsbox serve`` subprocess (with the plugins installed
    in the environment) whose config is written in the test's ``tmp_path`` (defaults:
    ``HttpPort`` and ``DicomPort`` free ports, ``StorageDirectory`` under ``tmp_path``,
    ``RemoteAccessAllowed`` false; ``config`` overrides them); started and answering
    ``/system`` unless ``start=False``; ``.kill()`` (SIGKILL, for crash tests),
    ``.stop()``, ``.restart()``, ``.url``; every process still running is stopped at
    teardown.

Helpers
-------
:func:`inline_plugin` builds a plugin from plain functions, to register hooks for one
test; :func:`wait_for_notifications` waits until the notification hooks ran;
:func:`wait_for_job` waits until a job is finished; :func:`free_port` gives a free TCP
port on 127.0.0.1; :class:`ServeProcess` runs ``pacsbox serve --config FILE`` in a
subprocess (the fixture above builds them).

Examples
--------
>>> from pacsbox import RouteSpec, send_json
>>> from pacsbox.testing import inline_plugin
>>> class Ping:
...     def __init__(self, ctx):
...         pass
...     def on_get(self, req, resp):
...         send_json(resp, {"Pong": True})
>>> plugin = inline_plugin("ping", register_routes=lambda ctx: [RouteSpec("/ping", Ping)])

and in a test module::

    def test_ping(pacsbox_make_app):
        import falcon.testing
        app = pacsbox_make_app(plugins=[plugin])
        assert falcon.testing.TestClient(app).simulate_get("/ping").json == {"Pong": True}

Notes
-----
pytest loads this module in every run of an environment where pacsbox is installed, so it
imports none of pacsbox's services at load time: the package ``pacsbox`` exports its
public names lazily (PEP 562) and the fixtures import what they use. Loading it imports
neither falcon nor pydicom (``tests/contract/test_import_structure.py`` checks it).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from typing import Any, Callable, Iterator

import pytest

__all__ = ["LiveServer", "ServeProcess", "free_port", "inline_plugin", "wait_for_job", "wait_for_notifications"]


def free_port() -> int:
    """int: a TCP port on 127.0.0.1 that was free when asked."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inline_plugin(name: str | None = None, **hooks: Callable[..., Any] | tuple[Callable[..., Any], dict]) -> Any:
    """Build a plugin object from plain functions (register hooks for one test).

    Parameters
    ----------
    name : str, optional
        The plugin's name (used in error messages, the blocklist and ``/plugins``
        attributions); pluggy generates one when omitted.
    **hooks : callable or (callable, dict)
        ``hook_name=function``; the function takes a subset of the hook's arguments by
        name. Give ``(function, {"tryfirst": True})`` to pass ``hookimpl`` options
        (``tryfirst``, ``trylast``, ``wrapper``, ``optionalhook``).

    Returns
    -------
    object
        A plugin to pass in ``create_app(plugins=[...])``.

    Raises
    ------
    TypeError
        A value is neither a callable nor a ``(callable, dict)`` pair.
    """
    from . import hookimpl

    plugin = types.SimpleNamespace()
    for hook_name, value in hooks.items():
        fn, opts = value if isinstance(value, tuple) else (value, {})
        if not callable(fn) or not isinstance(opts, dict):
            raise TypeError(f"inline_plugin: {hook_name} must be a callable or a (callable, dict) pair")
        setattr(plugin, hook_name, hookimpl(**opts)(fn))
    if name is not None:
        plugin.plugin_name = name
    return plugin


def wait_for_notifications(app: Any, timeout: float = 10.0) -> bool:
    """Block until every queued notification hook (``instance_stored``...) has run.

    Parameters
    ----------
    app : PacsboxApp
    timeout : float
        Seconds.

    Returns
    -------
    bool
        False when ``timeout`` expired first.
    """
    return app.ctx.notifier.wait_idle(timeout)


def wait_for_job(app: Any, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Block until a job is ``Success`` or ``Failure`` and return its ``/jobs/{id}`` description.

    Parameters
    ----------
    app : PacsboxApp
    job_id : str
        The job's ID (``"ID"`` of an asynchronous answer).
    timeout : float
        Seconds.

    Returns
    -------
    dict
        As ``GET /jobs/{id}`` (``State``, ``ErrorCode``, ``Content``...).

    Raises
    ------
    KeyError
        Unknown job.
    TimeoutError
        The job is not finished after ``timeout`` seconds.
    """
    jobs = app.ctx.jobs
    rec = jobs.get(job_id)
    if rec is None:
        raise KeyError(job_id)
    jobs.wait(rec, timeout)
    info = jobs.describe(rec)
    if info["State"] not in ("Success", "Failure"):
        raise TimeoutError(f"job {job_id} is still {info['State']} after {timeout} s")
    return info


class LiveServer:
    """A real waitress server running an app on a free loopback port, in a thread.

    Parameters
    ----------
    app : PacsboxApp
    port : int
        A free port on 127.0.0.1.

    Attributes
    ----------
    url : str
        ``http://127.0.0.1:<port>``.
    """

    def __init__(self, app: Any, port: int, threads: int = 8) -> None:
        from .server import make_server

        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = make_server(app, app.ctx.config, host="127.0.0.1", port=port, threads=threads)
        self.thread = threading.Thread(target=self.server.run, name=f"pacsbox-live-{port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"waitress did not listen on port {port}")

    def close(self) -> None:
        """Stop the server (the app itself is closed by its factory fixture)."""
        self.server.close()
        self.thread.join(5)


def serve_command() -> list[str]:
    """list of str: the command line of ``pacsbox`` (the console script next to the running
    interpreter, else ``python -m pacsbox.cli``)."""
    exe = os.path.join(os.path.dirname(sys.executable), "pacsbox")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "pacsbox.cli"]


class ServeProcess:
    """``pacsbox serve --config FILE`` in a subprocess, controlled by its own PID.

    Parameters
    ----------
    config_path : str or path-like
        An existing JSON configuration file; its ``HttpPort`` gives :attr:`url` (serve
        on loopback: keep ``RemoteAccessAllowed`` false).
    log_path : str or path-like, optional
        Where the process's stdout and stderr are appended; ``serve.log`` next to the
        configuration when omitted.
    env : dict, optional
        Extra environment variables of the process.
    command : list of str, optional
        The ``pacsbox`` command line (default :func:`serve_command`); e.g.
        ``[venv_python, "-m", "pacsbox.cli"]`` to serve from another environment.

    Attributes
    ----------
    url : str
        ``http://127.0.0.1:<HttpPort>``.
    proc : subprocess.Popen or None
        The last process started.

    Examples
    --------
    A crash test::

        serve = ServeProcess.write(tmp_path, {"HttpPort": free_port(), "SaveJobs": True,
                                              "StorageDirectory": str(tmp_path / "db")}).start()
        ...
        serve.kill()       # SIGKILL: nothing saved on the way out
        serve.start()      # same configuration, same storage
        ...
        serve.stop()
    """

    #: The ``pacsbox`` command line; None: :func:`serve_command` (subclasses that do not
    #: call ``__init__`` get it too).
    command: list[str] | None = None

    def __init__(self, config_path: str | os.PathLike, log_path: str | os.PathLike | None = None,
                 env: dict | None = None, command: list[str] | None = None) -> None:
        self.config_path = str(config_path)
        self.env = dict(env or {})
        self.command = list(command) if command else None
        self.log_path = str(log_path) if log_path is not None else os.path.join(
            os.path.dirname(self.config_path), "serve.log")
        with open(self.config_path, encoding="utf-8") as f:
            self.url = "http://127.0.0.1:%d" % json.load(f)["HttpPort"]
        self.proc: subprocess.Popen | None = None

    @classmethod
    def write(cls, directory: str | os.PathLike, config: dict, log_path: str | os.PathLike | None = None
              ) -> "ServeProcess":
        """Write ``config`` to ``directory/config.json`` and return its (not started) process.

        Parameters
        ----------
        directory : str or path-like
            Created if missing.
        config : dict
            The configuration; must hold ``HttpPort``.
        log_path : str or path-like, optional
            As in the constructor (``directory/serve.log`` by default).

        Returns
        -------
        ServeProcess
        """
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "config.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        return cls(path, log_path)

    def log(self, tail: int | None = 4000) -> str:
        """str: the last ``tail`` characters of the process's output (all of it if None)."""
        try:
            with open(self.log_path, errors="replace") as f:
                text = f.read()
                return text[-tail:] if tail else text
        except FileNotFoundError:
            return ""

    def running(self) -> bool:
        """bool: the process was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, *args: str, timeout: float = 60.0, auth: tuple[str, str] | None = None) -> "ServeProcess":
        """Start ``pacsbox serve --config FILE *args`` and wait until ``GET /system`` answers 200.

        Parameters
        ----------
        *args : str
            Extra command-line arguments of ``serve``.
        timeout : float
            Seconds to wait for the first answer.
        auth : (str, str), optional
            HTTP basic credentials of the ``/system`` requests.

        Returns
        -------
        ServeProcess
            ``self``.

        Raises
        ------
        RuntimeError
            The process exited, or did not answer within ``timeout`` (it is then killed);
            the message ends with its output.
        """
        import requests

        with open(self.log_path, "ab") as log:
            command = (self.command or serve_command()) + ["serve", "--config", self.config_path, *args]
            self.proc = subprocess.Popen(command,
                                         stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pacsbox serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/system", timeout=1, auth=auth).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"pacsbox serve did not answer within {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the process by its PID (it saves nothing) and reap it."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process by its PID and wait; SIGKILL it after ``timeout`` seconds."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, *args: str, timeout: float = 60.0) -> "ServeProcess":
        """:meth:`stop` (if running) then :meth:`start`; returns ``self``."""
        self.stop()
        return self.start(*args, timeout=timeout)


@pytest.fixture
def pacsbox_make_app(tmp_path) -> Iterator[Callable[..., Any]]:
    """Factory of apps with an explicit plugin list, closed at teardown (see module doc)."""
    from . import create_app

    apps: list[Any] = []

    def factory(config: dict | None = None, plugins: Any = (), *, load_entrypoints: bool = False,
                **kwargs: Any) -> Any:
        n = len(apps)
        cfg = {"StorageDirectory": str(tmp_path / f"pacsbox-app{n}"), "DicomPort": free_port(), "SaveJobs": False}
        cfg.update(config or {})
        app = create_app(cfg, plugins=list(plugins), load_entrypoints=load_entrypoints, **kwargs)
        apps.append(app)
        return app

    yield factory
    for app in reversed(apps):
        app.close()


@pytest.fixture
def pacsbox_app(pacsbox_make_app) -> Any:
    """An app with the core only."""
    return pacsbox_make_app()


@pytest.fixture
def pacsbox_client(pacsbox_app) -> Any:
    """``falcon.testing.TestClient`` of :func:`pacsbox_app`."""
    import falcon.testing

    return falcon.testing.TestClient(pacsbox_app)


@pytest.fixture
def pacsbox_live_server(pacsbox_make_app) -> Iterator[Callable[..., LiveServer]]:
    """Factory of :class:`LiveServer` (real waitress on loopback), stopped at teardown."""
    servers: list[LiveServer] = []

    def factory(config: dict | None = None, plugins: Any = (), **kwargs: Any) -> LiveServer:
        port = free_port()
        cfg = {"HttpPort": port}
        cfg.update(config or {})
        server = LiveServer(pacsbox_make_app(cfg, plugins, **kwargs), port)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.close()


@pytest.fixture
def pacsbox_serve_process(tmp_path) -> Iterator[Callable[..., ServeProcess]]:
    """Factory of :class:`ServeProcess` (real ``pacsbox serve`` on loopback), stopped at teardown."""
    procs: list[ServeProcess] = []

    def factory(config: dict | None = None, *, start: bool = True) -> ServeProcess:
        d = tmp_path / f"pacsbox-serve{len(procs)}"
        cfg = {"HttpPort": free_port(), "DicomPort": free_port(), "StorageDirectory": str(d / "db"),
               "RemoteAccessAllowed": False}
        cfg.update(config or {})
        proc = ServeProcess.write(d, cfg)
        procs.append(proc)
        return proc.start() if start else proc

    yield factory
    for proc in procs:
        proc.stop()
