"""Hook implementations of the pacsbox_archive plugin (entry point ``archive``).

Only hook implementations live here; see ``README.md`` for the routes, options and job
types.
"""
from __future__ import annotations

from pacsbox import Level, OptionSpec, RouteSpec, hookimpl

from .dirworker import close_workers
from .jobs import ArchiveJob, MediaJob
from .routes import ResourceArchiveRoute, ToolsArchiveRoute


@hookimpl
def register_options():
    """``SynchronousZipStream``, ``MediaArchiveSize``, ``ZipLoaderThreads`` (Orthanc's) and the
    pacsbox section ``Archive`` (see ``README.md``)."""
    return [
        OptionSpec("SynchronousZipStream", "bool", True,
                   "Stream synchronous archives while they are built (false: build a temporary file, then send it "
                   "with its Content-Length)"),
        OptionSpec("MediaArchiveSize", "int>=0", 1,
                   "Outputs of asynchronous archive jobs kept (server-wide); one more evicts the oldest"),
        OptionSpec("ZipLoaderThreads", "int>=0", 0,
                   "Threads reading, transcoding and deflating files ahead of the ZIP writer (0: one per CPU core)"),
        OptionSpec("Archive", "dict", {},
                   "pacsbox section: Deflate (\"isal\" or \"zlib\"), CompressionLevel (0-9), DicomDirProcess "
                   "(true: media DICOMDIRs are encoded in a child process)"),
    ]


@hookimpl
def register_routes(ctx):
    """``/{patients,studies,series}/{id}/archive|media`` and ``/tools/create-archive``,
    ``/tools/create-media``, ``/tools/create-media-extended`` (reference section 4.1)."""
    specs = []
    for level in (Level.PATIENT, Level.STUDY, Level.SERIES):
        specs.append(RouteSpec(f"/{level.plural}/{{id}}/archive", lambda c, lv=level: ResourceArchiveRoute(c, lv, False)))
        specs.append(RouteSpec(f"/{level.plural}/{{id}}/media", lambda c, lv=level: ResourceArchiveRoute(c, lv, True)))
    specs += [
        RouteSpec("/tools/create-archive", lambda c: ToolsArchiveRoute(c, False, False)),
        RouteSpec("/tools/create-media", lambda c: ToolsArchiveRoute(c, True, False)),
        RouteSpec("/tools/create-media-extended", lambda c: ToolsArchiveRoute(c, True, True)),
    ]
    return specs


@hookimpl
def register_job_types(ctx):
    """The ``Archive`` and ``Media`` job types (reference section 3.1)."""
    return [ArchiveJob, MediaJob]


@hookimpl
def shutdown(ctx):
    """Stop the idle DICOMDIR child processes of this app."""
    close_workers(ctx)
