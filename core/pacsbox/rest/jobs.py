"""Default plugin: the ``/jobs`` REST routes (reference section 3)."""
from __future__ import annotations

import json
import os

import falcon

from ..errors import ErrorCode, OrthancError, not_found, refused
from ..hookspecs import hookimpl
from ..web import query_flag, send_json
from ..routing.registry import RouteSpec


class JobsListRoute:
    """``GET /jobs`` (``?expand``)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        jobs = self.ctx.jobs
        if query_flag(req, "expand"):
            send_json(resp, [jobs.describe(r) for r in jobs.records()])
        else:
            send_json(resp, jobs.ids())


class JobRoute:
    """``GET``/``DELETE /jobs/{id}``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp, id):
        rec = self.ctx.jobs.get(id)
        if rec is None:
            raise not_found()
        send_json(resp, self.ctx.jobs.describe(rec))

    def on_delete(self, req, resp, id):
        jobs = self.ctx.jobs
        rec = jobs.get(id)
        if rec is None:
            raise not_found()
        if not jobs.delete(id):
            raise OrthancError(ErrorCode.BAD_SEQUENCE_OF_CALLS, "Cannot delete a job that is not finished",
                               http_status=400)
        resp.content_type = None
        resp.data = b""


class JobActionRoute:
    """``POST /jobs/{id}/cancel|pause|resume|resubmit``: 200 ``{}`` or 400 with an empty body
    when refused or when the job is unknown (reference section 3.4).

    ``GET`` on these paths is the output route of the reference: 404 "Job has no such
    output: pause".
    """

    def __init__(self, ctx, action: str):
        self.ctx, self.action = ctx, action

    def on_post(self, req, resp, id):
        if not getattr(self.ctx.jobs, self.action)(id):
            raise refused()
        send_json(resp, {}, content_type="application/json")

    def on_get(self, req, resp, id):
        JobOutputRoute(self.ctx).on_get(req, resp, id, self.action)


class JobOutputRoute:
    """``GET``/``DELETE /jobs/{id}/{key}``: job outputs (e.g. ``archive``)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp, id, key):
        out = self.ctx.jobs.get_output(id, key)
        if out is None:
            raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Job has no such output: {key}")
        resp.content_type = out.mime
        resp.set_header("Content-Disposition", f'filename="{out.filename}"')
        if out.path is not None:
            try:
                f = open(out.path, "rb")
            except FileNotFoundError:
                raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Job has no such output: {key}") from None
            resp.set_stream(f, os.fstat(f.fileno()).st_size)
        else:
            resp.data = out.data or b""

    def on_delete(self, req, resp, id, key):
        if self.ctx.jobs.get(id) is None:
            raise not_found()
        if not self.ctx.jobs.delete_output(id, key):
            raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Job has no such output: {key}")
        resp.content_type = None
        resp.data = b""


class JobEventsRoute:
    """``GET /jobs/{id}/events``: Server-Sent Events of the job's state and progress until
    it ends (pacsbox addition, not in Orthanc).

    The stream starts with the job's current state, then sends one event per state or
    progress change; it ends after the ``Success`` or ``Failure`` event. Each event is::

        event: <State>
        id: <n>
        data: <the /jobs/{id} JSON object on one line>

    A comment line (``: keep-alive``) is sent after 15 s without a change. Unknown job:
    404 with an empty body, like ``GET /jobs/{id}``.
    """

    KEEPALIVE = 15.0

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp, id):
        jobs = self.ctx.jobs
        rec = jobs.get(id)
        if rec is None:
            raise not_found()

        def stream():
            n = 0
            for snap in jobs.follow(rec, poll=self.KEEPALIVE):
                if snap is None:
                    yield b": keep-alive\n\n"
                    continue
                n += 1
                yield (f"event: {snap['State']}\nid: {n}\n"
                       f"data: {json.dumps(snap, sort_keys=True)}\n\n").encode("utf-8")

        resp.content_type = "text/event-stream; charset=utf-8"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = stream()


@hookimpl(trylast=True)
def register_routes(ctx):
    """The ``/jobs`` routes."""
    specs = [
        RouteSpec("/jobs", JobsListRoute),
        RouteSpec("/jobs/{id}", JobRoute),
        RouteSpec("/jobs/{id}/events", JobEventsRoute),
        RouteSpec("/jobs/{id}/{key}", JobOutputRoute),
    ]
    for action in ("cancel", "pause", "resume", "resubmit"):
        specs.append(RouteSpec(f"/jobs/{{id}}/{action}", lambda c, a=action: JobActionRoute(c, a)))
    return specs
