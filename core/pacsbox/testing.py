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

Helpers
-------
:func:`inline_plugin` builds a plugin from plain functions, to register hooks for one
test; :func:`wait_for_notifications` waits until the notification hooks ran;
:func:`wait_for_job` waits until a job is finished; :func:`free_port` gives a free TCP
port on 127.0.0.1.

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
This module imports pacsbox lazily (inside the fixtures), so that loading it in any
pytest run of the environment costs nothing.
"""
from __future__ import annotations

import socket
import threading
import time
import types
from typing import Any, Callable, Iterator

import pytest

__all__ = ["LiveServer", "free_port", "inline_plugin", "wait_for_job", "wait_for_notifications"]


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
