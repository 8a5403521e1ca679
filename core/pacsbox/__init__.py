"""pacsbox: an Orthanc-compatible DICOM server in Python, built on plugins.

This module is the **public API for plugin authors**: a plugin imports only from here
(``from pacsbox import ...``), never from ``pacsbox.<module>``.

Quick start. A plugin is a module of hook implementations, advertised by an entry point
in the group ``pacsbox.plugins`` of your distribution's ``pyproject.toml``; the
entry-point name (``hello``) is the plugin's ID in ``/plugins``, ``pacsbox plugins``,
the logs and the blocklist::

    [project.entry-points."pacsbox.plugins"]
    hello = "pacsbox_hello.plugin"

``pacsbox_hello/plugin.py``::

    from pacsbox import MetricSpec, RouteSpec, hookimpl, send_json

    class Hello:
        def __init__(self, ctx):          # called once per app, with its services
            self.ctx = ctx

        def on_get(self, req, resp):      # a falcon responder
            self.ctx.metrics.increment("hello_requests")
            send_json(resp, {"Hello": self.ctx.config["Name"]})

    @hookimpl
    def register_routes(ctx):
        return [RouteSpec("/hello", Hello)]

    @hookimpl
    def register_metrics(ctx):
        return [MetricSpec("hello_requests", "counter", "GET /hello requests")]

After ``pip install``, ``pacsbox plugins`` lists it and ``GET /hello`` answers.

- Every hook is documented in :mod:`pacsbox.hookspecs` (and ``docs/plugins.md``).
- Job types subclass :class:`Job` (or :class:`InstancesJob`), are declared with the
  ``register_job_types`` hook and submitted with ``ctx.jobs.run_request(job, body)``.
- Errors are raised as :class:`OrthancError` (``ErrorCode``); the core renders
  Orthanc's JSON error body. Never build an error answer by hand.
- Plugin-owned extension points are declared with :data:`hookspec` in the
  ``add_hookspecs`` hook.
- Tests: the pytest plugin :mod:`pacsbox.testing` (fixtures ``pacsbox_make_app``,
  ``pacsbox_client``, ``pacsbox_live_server``; helper ``inline_plugin``) is active
  whenever pacsbox is installed.
"""
from __future__ import annotations

import importlib

from .version import __version__

#: The public API: name -> the module defining it. Imported on first use (PEP 562), so
#: that ``import pacsbox`` (and the pytest plugin :mod:`pacsbox.testing`, loaded in every
#: pytest run of an environment where pacsbox is installed) costs next to nothing until a
#: name is used.
_EXPORTS: dict[str, str] = {
    "hookimpl": "hookspecs", "hookspec": "hookspecs",
    "create_app": "app", "PacsboxApp": "app",
    "Config": "config", "ConfigError": "errors", "OptionSpec": "options",
    "ServerContext": "context",
    "PluginLoadError": "plugins",
    "ErrorCode": "errors", "OrthancError": "errors", "StartupError": "errors", "not_found": "errors",
    "refused": "errors",
    "Job": "jobs.base", "InstancesJob": "jobs.base", "JobInfo": "jobs.base", "JobOutput": "jobs.base",
    "JobState": "jobs.base", "StepResult": "jobs.base", "request_mode": "jobs.engine",
    "RouteSpec": "routing.registry", "MetricSpec": "metrics", "StorageArea": "storage.area",
    "Resource": "index.index", "Attachment": "index.index", "Level": "levels",
    "CONTENT_TYPE_DICOM": "index.models",
    "send_json": "web", "send_text": "web", "read_body": "web", "read_bool": "web", "read_string": "web",
    "read_int": "web", "read_strings": "web", "read_json_body": "web",
    "read_json_object": "web", "query_flag": "web", "dumps": "web",
    "orthanc_id": "dicom.ids", "is_orthanc_id": "dicom.ids",
    "parse_tag": "dicom.tags", "tag_to_key": "dicom.tags", "element_text": "dicom.tags",
    "dataset_to_json": "dicom.dataset_json", "TagDictionary": "dicom.tag_dictionary",
    "tag_dictionary": "dicom.tag_dictionary",
    "module_tags": "dicom.modules", "compile_query": "dicom.matching", "find_resources": "query",
    "transcode": "dicom.transcode", "is_transfer_syntax": "dicom.transcode",
    "read_file_meta": "dicom.scan", "FileMeta": "dicom.scan", "DicomFormatError": "dicom.scan",
    "call_rest_api": "internal_rest", "RestAnswer": "internal_rest",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """Import a public name on first use (PEP 562) and keep it as a module attribute."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pacsbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
