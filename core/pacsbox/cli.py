"""The ``pacsbox`` command: ``serve``, ``plugins``, ``--version``."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from . import __version__


def _serve(args) -> int:
    from .app import create_app
    from .config import Config, ConfigError
    from .jobs.engine import StartupError
    from .plugins import PluginLoadError

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = Config.from_file(args.config)
    except ConfigError as e:
        print(f"pacsbox: bad configuration: {e}", file=sys.stderr)
        return 2
    try:
        app = create_app(config, load_jobs=not args.no_jobs)
    except (StartupError, PluginLoadError, ConfigError) as e:
        print(f"pacsbox: cannot start: {e}", file=sys.stderr)
        return 2
    import waitress
    from waitress.server import create_server

    host = str(config.get("HttpBindAddress", "127.0.0.1"))
    if config.bool("RemoteAccessAllowed") and not config.is_set("HttpBindAddress"):
        host = "0.0.0.0"
    threads = max(4, min(64, config.int("HttpThreadsCount")))
    server = create_server(app, host=host, port=config.int("HttpPort"), threads=threads,
                           channel_timeout=max(60, config.int("HttpTimeout")), ident="pacsbox",
                           clear_untrusted_proxy_headers=True, outbuf_high_watermark=4 * 1024 * 1024,
                           channel_request_lookahead=1, asyncore_use_poll=True)
    log = logging.getLogger("pacsbox")
    log.info("pacsbox %s: HTTP on %s:%s, AET %s, data in %s", __version__, host, config.int("HttpPort"),
             config["DicomAet"], config.path("StorageDirectory"))
    stopping = threading.Event()

    def stop(signum, frame):
        if not stopping.is_set():
            stopping.set()
            log.info("stopping (signal %s)", signum)
            server.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.run()
    except (OSError, ValueError):
        if not stopping.is_set():
            raise
    finally:
        app.close()
        log.info("stopped")
    return 0


def _plugins(args) -> int:
    from .app import create_app
    from .config import Config
    from .plugins import installed_entry_points, list_plugins
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        config = Config({"StorageDirectory": tmp, "SaveJobs": False}) if not args.config else \
            Config.from_file(args.config).with_overrides(StorageDirectory=tmp, SaveJobs=False)
        app = create_app(config, load_jobs=False, start_jobs=False)
        try:
            ctx = app.ctx
            routes = ctx.routes.by_plugin()
            jobs = ctx.job_types.by_plugin()
            metrics: dict[str, list[str]] = {}
            for s in ctx.metrics.specs():
                metrics.setdefault(s.plugin, []).append(s.name)
            loaded = {p["ID"] for p in list_plugins(ctx.pm)}
            for name, dist, version, module in installed_entry_points():
                state = "loaded" if name in loaded else "blocked"
                print(f"{name} ({dist} {version}) [{state}] {module}")
                for r in routes.get(name, []):
                    print(f"    route   {r}")
                for j in jobs.get(name, []):
                    print(f"    job     {j}")
                for m in metrics.get(name, []):
                    print(f"    metric  {m}")
        finally:
            app.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pacsbox`` command."""
    parser = argparse.ArgumentParser(prog="pacsbox", description="An Orthanc-compatible DICOM server.")
    parser.add_argument("--version", action="version", version=f"pacsbox {__version__}")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("serve", help="run the server")
    p.add_argument("--config", help="Orthanc-style JSON configuration file or directory")
    p.add_argument("--no-jobs", action="store_true", help="do not reload the saved jobs")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=_serve)
    p = sub.add_parser("plugins", help="list installed plugins, their routes, job types and metrics")
    p.add_argument("--config", help="configuration file (for blocklists)")
    p.set_defaults(func=_plugins)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
