"""Where a synchronous streamed archive's bytes go: the job writes into a bounded
:class:`StreamSink` that the HTTP response (:class:`ZipResponse`) reads; a client that hangs
up closes the sink and cancels the job. Part of :mod:`pacsbox_archive.jobs`.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from pacsbox import ErrorCode, OrthancError

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

log = logging.getLogger("pacsbox.archive")

#: Bytes gathered before they are handed to the HTTP response or the file.
CHUNK = 512 * 1024

class SinkClosed(Exception):
    """The HTTP client of a streamed archive went away."""


class StreamSink:
    """A bounded byte pipe between a job (producer) and an HTTP response (consumer).

    Parameters
    ----------
    max_chunks : int
        Chunks buffered before :meth:`write` blocks (each up to about :data:`CHUNK`
        bytes), which bounds the memory of a streamed archive.
    """

    def __init__(self, max_chunks: int = 8) -> None:
        self._chunks: deque[bytes] = deque()
        self._max = max_chunks
        self._cond = threading.Condition()
        self._done = False
        self._error: BaseException | None = None
        self.closed = False

    def write(self, data: bytes) -> None:
        """Queue ``data`` (producer side); blocks while the buffer is full.

        Raises
        ------
        SinkClosed
            The consumer closed the sink.
        """
        with self._cond:
            while len(self._chunks) >= self._max and not self.closed:
                self._cond.wait(1.0)
            if self.closed:
                raise SinkClosed()
            self._chunks.append(data)
            self._cond.notify_all()

    def finish(self) -> None:
        """End of the stream (producer side)."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Abort the stream with ``error`` (producer side)."""
        with self._cond:
            if not self._done:
                self._error = error
                self._done = True
            self._cond.notify_all()

    def read(self, timeout: float | None = None) -> bytes | None:
        """Next chunk (consumer side); None at the end of the stream.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; None waits as long as needed.

        Raises
        ------
        BaseException
            The error the producer failed with.
        TimeoutError
            Nothing came within ``timeout``.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._chunks or self._done or self.closed, timeout):
                raise TimeoutError("no data from the archive job")
            if self._chunks:
                chunk = self._chunks.popleft()
                self._cond.notify_all()
                return chunk
            if self._error is not None:
                raise self._error
            return None

    def close(self) -> None:
        """The consumer goes away: pending and later writes fail with :class:`SinkClosed`."""
        with self._cond:
            self.closed = True
            self._chunks.clear()
            self._cond.notify_all()


class _Coalescer:
    """Gathers the writer's small writes into chunks of about :data:`CHUNK` bytes."""

    def __init__(self, target: Callable[[bytes], Any]) -> None:
        self.target = target
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        if len(data) >= CHUNK:
            self.flush()
            self.target(data)
            return
        self.parts.append(data)
        self.size += len(data)
        if self.size >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
            self.parts = []
            self.size = 0
            self.target(data)



class ZipResponse:
    """The WSGI body of a streamed synchronous archive.

    It yields the chunks the job writes into its :class:`StreamSink`. When the server
    closes it before the end (the client hung up: waitress calls ``close()``), the job
    is canceled and its worker freed.

    Parameters
    ----------
    ctx : ServerContext
    job_id : str
    sink : StreamSink
    first : bytes
        The first chunk, already read by the resource (to report early failures as
        HTTP errors).
    """

    def __init__(self, ctx: "ServerContext", job_id: str, sink: StreamSink, first: bytes | None) -> None:
        self.ctx, self.job_id, self.sink = ctx, job_id, sink
        self._first = first
        self._done = first is None

    @staticmethod
    def next_chunk(ctx: "ServerContext", job_id: str, sink: StreamSink) -> bytes | None:
        """The next chunk of a streamed archive; None at its end.

        Raises
        ------
        OrthancError
            The job ended without finishing the stream (canceled while pending or
            paused, failed...): its error code and details.
        """
        while True:
            try:
                return sink.read(timeout=1.0)
            except TimeoutError:
                rec = ctx.jobs.get(job_id)
                if rec is not None and not rec.state.is_final:
                    continue
                err = OrthancError(ErrorCode.INTERNAL_ERROR, "The archive job ended") if rec is None else \
                    OrthancError(rec.error_code or ErrorCode.INTERNAL_ERROR, rec.error_details or None)
                raise err from None

    def __iter__(self) -> "ZipResponse":
        return self

    def __next__(self) -> bytes:
        if self._first is not None:
            chunk, self._first = self._first, None
            return chunk
        if self._done:
            raise StopIteration
        chunk = self.next_chunk(self.ctx, self.job_id, self.sink)
        if chunk is None:
            self._done = True
            # as Orthanc: the job shows its final state (Success) before the answer ends
            rec = self.ctx.jobs.get(self.job_id)
            if rec is not None:
                self.ctx.jobs.wait(rec, timeout=30)
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Called by the server when the response ends, normally or not."""
        if not self._done:
            self._done = True
            log.warning("a client has disconnected while receiving an archive; canceling job %s", self.job_id)
            self.ctx.jobs.cancel(self.job_id)
        self.sink.close()
