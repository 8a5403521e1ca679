"""REST routes of the metrics plugin (reference section 8).

* ``GET /tools/metrics-prometheus``: the exposition (:class:`PrometheusRoute`);
* ``GET /tools/metrics``: ``1`` or ``0``; ``PUT /tools/metrics`` with ``1``/``0`` or
  ``true``/``false`` switches collection at run time (:class:`MetricsSwitchRoute`).
"""
from __future__ import annotations

from typing import Any

from pacsbox import ErrorCode, OrthancError, read_body, send_text

from .collector import CONTENT_TYPE, Exposition

#: Accepted bodies of ``PUT /tools/metrics`` (Orthanc compares after stripping spaces,
#: case-sensitively).
_BOOLEANS = {"1": True, "true": True, "0": False, "false": False}


class PrometheusRoute:
    """``GET /tools/metrics-prometheus``.

    Parameters
    ----------
    exposition : Exposition
        The app's registry and renderer.

    Notes
    -----
    Answers 200 with ``Content-Type: text/plain; version=0.0.4`` and one
    ``name value timestamp_ms`` line per recorded sample; an empty body while metrics are
    disabled (``MetricsEnabled`` false or ``PUT /tools/metrics 0``). Orthanc equivalent:
    ``GET /tools/metrics-prometheus``.
    """

    def __init__(self, exposition: Exposition) -> None:
        self.exposition = exposition

    def on_get(self, req: Any, resp: Any) -> None:
        """Render the exposition."""
        send_text(resp, self.exposition.render(), CONTENT_TYPE)


class MetricsSwitchRoute:
    """``GET``/``PUT /tools/metrics``: read or switch the collection of metrics.

    Parameters
    ----------
    ctx : ServerContext
        Its ``metrics.enabled`` flag is read and switched (initial value: option
        ``MetricsEnabled``, default true).
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def on_get(self, req: Any, resp: Any) -> None:
        """Answer ``1`` or ``0`` (``text/plain``, no newline)."""
        send_text(resp, "1" if self.ctx.metrics.enabled else "0")

    def on_put(self, req: Any, resp: Any) -> None:
        """Switch collection on (``1``/``true``) or off (``0``/``false``).

        Raises
        ------
        OrthancError
            ``BAD_FILE_FORMAT`` (400, ``OrthancStatus`` 15) with details "Boolean value
            expected" for any other body, as Orthanc 1.10.1.
        """
        text = read_body(req).decode("utf-8", "replace").strip()
        value = _BOOLEANS.get(text)
        if value is None:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Boolean value expected")
        self.ctx.metrics.enabled = value
        send_text(resp, "")
