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

from .app import PacsboxApp, create_app
from .config import Config, ConfigError, OptionSpec
from .context import ServerContext
from .dicom.ids import is_orthanc_id, orthanc_id
from .dicom.matching import compile_query
from .dicom.modules import module_tags
from .dicom.tags import TagDictionary, dataset_to_json, element_text, parse_tag, tag_dictionary, tag_to_key
from .dicom.scan import DicomFormatError, FileMeta, read_file_meta
from .dicom.transcode import is_transfer_syntax, transcode
from .hookspecs import hookimpl, hookspec
from .errors import ErrorCode, OrthancError, StartupError, not_found, refused
from .web import (dumps, query_flag, read_body, read_bool, read_json_body, read_json_object,
                  send_json, send_text)
from .index.index import CONTENT_TYPE_DICOM, Attachment, Level, Resource
from .internal_rest import RestAnswer, call_rest_api
from .jobs.base import InstancesJob, Job, JobInfo, JobOutput, JobState, StepResult
from .jobs.engine import request_mode
from .metrics import MetricSpec
from .plugins import PluginLoadError
from .query import find_resources
from .routing.registry import RouteSpec
from .storage.area import StorageArea
from .version import __version__

__all__ = [
    "__version__", "hookimpl", "hookspec", "create_app", "PacsboxApp", "Config", "ConfigError", "OptionSpec",
    "ServerContext",
    "PluginLoadError",
    "ErrorCode", "OrthancError", "not_found", "refused",
    "Job", "InstancesJob", "JobInfo", "JobOutput", "JobState", "StepResult", "StartupError", "request_mode",
    "RouteSpec", "MetricSpec", "StorageArea", "Resource", "Attachment", "Level", "CONTENT_TYPE_DICOM",
    "send_json", "send_text", "read_body", "read_bool", "read_json_body", "read_json_object", "query_flag", "dumps",
    "orthanc_id", "is_orthanc_id", "parse_tag", "tag_to_key", "element_text", "dataset_to_json",
    "TagDictionary", "tag_dictionary", "module_tags",
    "compile_query", "find_resources", "transcode", "is_transfer_syntax",
    "read_file_meta", "FileMeta", "DicomFormatError",
    "call_rest_api", "RestAnswer",
]
