"""The ``pacsbox`` command: ``serve``, ``plugins``, ``--version``.

- ``pacsbox serve [--config FILE] [--no-jobs] [--verbose]`` runs the server with waitress
  until SIGTERM/SIGINT (exit status 0), or exits with status 2 and a message naming the
  cause (bad configuration, a plugin that cannot be loaded or fails at start-up).
- ``pacsbox plugins [--config FILE] [--json]`` lists the installed ``pacsbox.plugins``
  entry points with their distribution, version, state (``loaded``/``blocked``) and the
  routes, job types, metrics and options each declares. It builds a throw-away app on a temporary
  storage directory, without running the ``startup`` hooks (no port is opened).
- ``pacsbox openapi [--config FILE]`` prints the OpenAPI 3.1 document of the routes of
  every installed plugin (what ``GET /tools/openapi.json`` serves).
- ``pacsbox install [PIP OPTIONS] NAME...`` and ``pacsbox uninstall [PIP OPTIONS] NAME...``
  run ``python -m pip install`` / ``uninstall -y`` with the interpreter that runs pacsbox, so
  a plugin lands in pacsbox's own environment (as ``datasette install``); the arguments
  go to pip as they are (``-U``, ``-e PATH``, a folder, a wheel...). The exit status is pip's.
- ``pacsbox --version`` prints ``pacsbox <version>``.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time

import pluggy
from waitress import wasyncore

from .version import __version__


#: Seconds that requests in progress get to finish after SIGTERM/SIGINT.
STOP_GRACE = 10.0


def _drain_channels(server, grace: float) -> None:
    """Close the HTTP connections left once the listening socket is closed, then end
    waitress's loop.

    waitress's loop runs until its last connection closes, and an idle keep-alive
    connection would otherwise hold the stop for ``channel_timeout`` seconds. Idle
    connections are closed at once; those with a request in progress after ``grace``
    seconds. Each change wakes the loop through its trigger (else it would notice only at
    the end of its poll timeout, 1 s); once no connection is left, the trigger itself is
    closed from the loop's thread, which empties the loop's map and ends it.
    """
    deadline = time.monotonic() + grace
    while True:
        channels = list(server.active_channels.values())
        if not channels:
            break
        late = time.monotonic() > deadline
        for channel in channels:
            if late or not channel.requests:
                channel.will_close = True
        _wake(server)
        time.sleep(0.02)

    def close_trigger():  # runs on the loop's (main) thread
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass
        server.trigger.close()

    _wake(server, close_trigger)


def _wake(server, thunk=None) -> None:
    """Wake waitress's loop (optionally running ``thunk`` on its thread)."""
    try:
        server.trigger.pull_trigger(thunk)
    except (OSError, ValueError, AttributeError, TypeError):
        pass


#: What :func:`_serve_once` returns when ``POST /tools/reset`` asked for a restart.
RESTART = "restart"


def _serve(args) -> int:
    """Serve until stopped; ``POST /tools/reset`` (Orthanc's hot restart) stops the app and
    serves again with the configuration read anew, in the same process."""
    while True:
        rc = _serve_once(args)
        if rc != RESTART:
            return rc
        logging.getLogger("pacsbox").info("restarting (POST /tools/reset): the configuration is read again")


def _serve_once(args):
    from .app import create_app
    from .config import Config, ConfigError
    from .errors import StartupError
    from .plugins import list_plugins

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = Config.from_file(args.config)
    except ConfigError as e:
        print(f"pacsbox: bad configuration: {e}", file=sys.stderr)
        return 2
    try:
        app = create_app(config, load_jobs=not args.no_jobs)
    except ConfigError as e:
        print(f"pacsbox: bad configuration: {e}", file=sys.stderr)
        return 2
    except StartupError as e:
        if isinstance(e.__cause__, ConfigError):  # a plugin refused one of its options
            plugin = str(e).split(" failed in hook", 1)[0]
            print(f"pacsbox: bad configuration: {e.__cause__} ({plugin})", file=sys.stderr)
        else:
            print(f"pacsbox: cannot start: {e}", file=sys.stderr)
        return 2
    except pluggy.PluginValidationError as e:
        print(f"pacsbox: cannot start: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, AttributeError) as e:  # an option of the wrong type or shape
        print(f"pacsbox: cannot start: bad configuration value ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    logging.getLogger("pacsbox.plugins").info(
        "plugins: %s", ", ".join(f"{p['ID']} {p['Version']}" for p in list_plugins(app.ctx.pm)) or "none")
    from .server import make_server

    try:
        server = make_server(app, config)
    except (OSError, ValueError, TypeError) as e:
        app.close()
        print(f"pacsbox: cannot start the HTTP server on port {config.get('HttpPort')}: {e}", file=sys.stderr)
        return 2
    host = server.effective_host
    log = logging.getLogger("pacsbox")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth" is not news
    log.info("pacsbox %s: HTTP on %s:%s, AET %s, data in %s", __version__, host, config.int("HttpPort"),
             config["DicomAet"], config.path("StorageDirectory"))
    stopping = threading.Event()

    def stop(signum, frame):
        if not stopping.is_set():
            stopping.set()
            log.info("stopping (signal %s)", signum)
            wasyncore.dispatcher.close(server)  # stop listening; the trigger stays until drained
            threading.Thread(target=_drain_channels, args=(server, STOP_GRACE), name="pacsbox-stop",
                             daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restart = threading.Event()

    def request_restart():  # POST /tools/reset, once its answer is on its way
        restart.set()
        _wake(server, lambda: stop("reset", None))

    app.ctx.request_restart = request_restart
    # A signal may land on any thread; the C handler then writes to this descriptor, which
    # wakes waitress's poll on the main thread at once (else the Python handler would wait
    # for the poll's 1 s timeout, twice over: ~1.7 s between the signal and the exit).
    trigger_fd = getattr(getattr(server, "trigger", None), "trigger", None)
    if isinstance(trigger_fd, int):
        os.set_blocking(trigger_fd, False)
        signal.set_wakeup_fd(trigger_fd, warn_on_full_buffer=False)
    try:
        server.run()
    except (OSError, ValueError):
        if not stopping.is_set():
            raise
    finally:
        app.close()
        log.info("stopped")
        if not restart.is_set():
            # The interpreter's exit collects the whole heap (pydicom's dictionaries, plugin
            # state...: 0.5-1 s); everything is closed and saved now, so the objects left are
            # moved out of the collector's reach and the process exits at once.
            gc.freeze()
    return RESTART if restart.is_set() else 0


def plugin_rows(ctx) -> list[dict]:
    """One row per installed entry point: what ``pacsbox plugins`` prints.

    Parameters
    ----------
    ctx : ServerContext
        Context of an app built with the entry points loaded.

    Returns
    -------
    list of dict
        ``ID``, ``Distribution``, ``Version``, ``Module``, ``State`` (``"loaded"`` or
        ``"blocked"``), ``Routes``, ``JobTypes``, ``Metrics``, ``Options`` (the
        declarations of ``register_options``: ``Name``, ``Type``, ``Default``, ``Doc``),
        sorted by ``ID``.
    """
    from .plugins import installed_entry_points

    routes = ctx.routes.by_plugin()
    jobs = ctx.job_types.by_plugin()
    metrics: dict[str, list[str]] = {}
    for s in ctx.metrics.specs():
        metrics.setdefault(s.plugin, []).append(s.name)
    options: dict[str, list[dict]] = {}
    for spec in ctx.config.option_specs():
        options.setdefault(spec.plugin, []).append({k: v for k, v in spec.describe().items() if k != "Plugin"})
    rows = []
    for ep in installed_entry_points():
        loaded = ep.name in ctx.pm.dist_info
        rows.append({"ID": ep.name, "Distribution": ep.distribution, "Version": ep.version, "Module": ep.module,
                     "State": "loaded" if loaded else "blocked",
                     "Routes": sorted(routes.get(ep.name, [])) if loaded else [],
                     "JobTypes": sorted(jobs.get(ep.name, [])) if loaded else [],
                     "Metrics": sorted(metrics.get(ep.name, [])) if loaded else [],
                     "Options": sorted(options.get(ep.name, []), key=lambda o: o["Name"]) if loaded else []})
    return rows


def _with_throwaway_app(args, prefix: str, use) -> tuple[int, object]:
    """Build the configured app on a throw-away storage folder (no port, no jobs, no
    ``startup``), call ``use(ctx)`` and close it.

    Returns
    -------
    (int, object)
        ``(0, use's result)``, or ``(2, None)`` after printing why the configuration or the
        plugins could not be loaded.
    """
    import tempfile

    from .app import create_app
    from .config import Config, ConfigError
    from .errors import StartupError

    try:
        base = Config.from_file(args.config)
    except ConfigError as e:
        print(f"pacsbox: bad configuration: {e}", file=sys.stderr)
        return 2, None
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        config = base.with_overrides(StorageDirectory=tmp, IndexDirectory=tmp, SaveJobs=False)
        try:
            app = create_app(config, load_jobs=False, start_jobs=False, run_startup=False)
        except (StartupError, ConfigError, pluggy.PluginValidationError) as e:
            print(f"pacsbox: cannot load the plugins: {e}", file=sys.stderr)
            return 2, None
        try:
            return 0, use(app.ctx)
        finally:
            app.close()


def _plugins(args) -> int:
    import json

    code, rows = _with_throwaway_app(args, "pacsbox-plugins-", plugin_rows)
    if code:
        return code
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['ID']} ({row['Distribution']} {row['Version']}) [{row['State']}] {row['Module']}")
        for kind, key in (("route", "Routes"), ("job", "JobTypes"), ("metric", "Metrics")):
            for item in row[key]:
                print(f"    {kind:<7} {item}")
        for opt in row["Options"]:
            print(f"    option  {opt['Name']} ({opt['Type']}, default {json.dumps(opt['Default'])}): {opt['Doc']}")
    return 0


def _openapi(args) -> int:
    """``pacsbox openapi``: print the OpenAPI 3.1 document of the installed plugins' routes."""
    import json

    from .routing.openapi import openapi_document

    code, doc = _with_throwaway_app(args, "pacsbox-openapi-", openapi_document)
    if code:
        return code
    print(json.dumps(doc, indent=2, sort_keys=False))
    return 0


def pip_command(action: str, args: list[str]) -> list[str]:
    """The pip command line of ``pacsbox install``/``uninstall``.

    Parameters
    ----------
    action : {"install", "uninstall"}
    args : list of str
        Package names, paths and pip options, passed as they are (``uninstall`` gets
        ``-y``: no question asked).

    Returns
    -------
    list of str
        ``[sys.executable, "-m", "pip", action, ...]``.
    """
    cmd = [sys.executable, "-m", "pip", action]
    if action == "uninstall":
        cmd.append("-y")
    return cmd + list(args)


def _pip(action: str, packages: list[str]) -> int:
    import subprocess
    if not packages or packages in (["-h"], ["--help"]):
        print(f"usage: pacsbox {action} [PIP OPTIONS] NAME...\n"
              f"pacsbox {action}: name at least one package", file=sys.stderr)
        return 2
    return subprocess.call(pip_command(action, packages))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pacsbox`` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("install", "uninstall"):  # everything after goes to pip as is
        return _pip(argv[0], argv[1:])
    parser = argparse.ArgumentParser(prog="pacsbox", description="An Orthanc-compatible DICOM server.")
    parser.add_argument("--version", action="version", version=f"pacsbox {__version__}")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("serve", help="run the server")
    p.add_argument("--config", help="Orthanc-style JSON configuration file or directory")
    p.add_argument("--no-jobs", action="store_true", help="do not reload the saved jobs")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=_serve)
    p = sub.add_parser("plugins", help="list installed plugins, their routes, job types, metrics and options")
    p.add_argument("--config", help="configuration file (its PluginsBlocklist and plugin sections apply)")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of text")
    p.set_defaults(func=_plugins)
    p = sub.add_parser("openapi", help="print the OpenAPI 3.1 document of the routes (all installed plugins)")
    p.add_argument("--config", help="configuration file (its PluginsBlocklist applies)")
    p.set_defaults(func=_openapi)
    for action, text in (("install", "pip install packages (plugins) into pacsbox's environment"),
                         ("uninstall", "pip uninstall packages from pacsbox's environment")):
        p = sub.add_parser(action, help=text)
        p.add_argument("packages", nargs="*", help="names, paths or pip options (-U, -e PATH...)")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
