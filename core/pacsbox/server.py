"""The HTTP server: waitress, configured once for ``pacsbox serve`` and the test helpers.

:func:`make_server` builds a waitress server from the Orthanc-style configuration
(``HttpPort``, ``HttpBindAddress``, ``RemoteAccessAllowed``, ``HttpThreadsCount``,
``HttpTimeout``) with the settings that matter for a DICOM server's traffic:

- 256 KiB reads and request bodies up to 2 MiB kept in memory, so that an upload of a
  typical instance (40 KB CT to 0.5 MB MR) takes few trips through waitress's I/O loop;
- ``channel_request_lookahead`` so that a client hanging up is noticed while its answer
  is streamed (archives, Server-Sent Events);
- :class:`Channel`, which keeps the I/O loop from spinning while a request is running;
- :class:`RequestParser`, which keeps a request body that fits in memory as the list of
  its received chunks, joined once when the application reads it (waitress appends each
  chunk to a ``BytesIO``, whose regrowth copies a 0.5 MB body several times over, in the
  I/O thread, with the GIL held: ~0.4 ms per MR instance);
- :class:`Task`, which sends the header and the body of a small answer in one write
  (waitress sends the header first, and the client often wakes for it alone), and sends
  an empty error answer without ``Content-Type``, as Orthanc 1.10.1.
"""
from __future__ import annotations

from io import BytesIO
from typing import Any

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.receiver import FixedStreamReceiver
from waitress.server import create_server
from waitress.task import WSGITask

from .ingest import spool_threshold

#: Bytes read from a socket at a time (a 0.5 MB MR upload in 2-3 reads rather than 8; 1 MiB
#: reads cost more in page faults than they save).
RECV_BYTES = 256 * 1024
#: Request bodies up to this size stay in memory, larger ones spill to a temporary file: the
#: default of the option ``UploadSpoolThreshold`` (2 MB, see :func:`pacsbox.web.spool_threshold`).
INBUF_OVERFLOW = 2 * 1024 * 1024
#: An answer may buffer this much before the application thread waits for the client.
OUTBUF_HIGH_WATERMARK = 4 * 1024 * 1024
#: While an application thread is writing to a channel, the channel asks the I/O loop to
#: help only beyond this many buffered bytes.
_LOOP_WRITE_THRESHOLD = 64 * 1024
#: Pieces of a request body smaller than this are gathered into one buffer (a client
#: trickling its body a few bytes per segment must not cost an object per piece).
_SMALL_PIECE = 16 * 1024


class _ChunkedBody:
    """A request body in memory, as the list of the chunks read from the socket.

    It stands in for waitress's ``OverflowableBuffer`` behind a ``FixedStreamReceiver``
    (the same methods: ``append``, ``__len__``, ``getfile``, ``close``), for bodies whose
    ``Content-Length`` is at most ``inbuf_overflow`` bytes. Large reads are kept as they
    are; pieces under 16 KiB are gathered into one ``bytearray``, so the memory held is
    the body's size plus a few objects whatever the client's segment sizes. ``getfile()``
    joins everything once into a ``BytesIO`` that shares the joined bytes, so reading the
    whole body back (``wsgi.input.read()``) copies nothing more.
    """

    __slots__ = ("chunks", "small", "size", "file")

    def __init__(self) -> None:
        self.chunks: list[bytes | bytearray] = []
        self.small: bytearray | None = None  # the last element of ``chunks`` when gathering
        self.size = 0
        self.file: BytesIO | None = None

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, data: bytes) -> None:
        if len(data) >= _SMALL_PIECE:
            self.chunks.append(data)
            self.small = None
        elif self.small is not None:
            self.small += data
        else:
            self.small = bytearray(data)
            self.chunks.append(self.small)
        self.size += len(data)

    def getfile(self) -> BytesIO:
        if self.file is None:
            chunks = self.chunks
            self.file = BytesIO(chunks[0] if len(chunks) == 1 and type(chunks[0]) is bytes else b"".join(chunks))
            self.chunks, self.small = [], None
        return self.file

    def close(self) -> None:
        self.chunks, self.small = [], None
        if self.file is not None:
            self.file.close()


class _DiscardedBody:
    """A request body above ``MaximumUploadSize``: counted, not kept (neither in memory
    nor in a spool file); the application refuses the request with 413 before reading
    it (:class:`pacsbox.web.BodyLimitMiddleware`)."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, data: bytes) -> None:
        self.size += len(data)

    def getfile(self) -> BytesIO:
        return BytesIO()

    def close(self) -> None:
        pass


class RequestParser(HTTPRequestParser):
    """waitress's request parser; a body of known length that fits in memory is kept as
    a :class:`_ChunkedBody` (chunked bodies and larger ones keep waitress's buffers,
    which spill to a temporary file beyond ``inbuf_overflow``); a body longer than
    :attr:`max_body` (``MaximumUploadSize``) is discarded as it arrives."""

    #: Bytes (0: no limit); set on a subclass by :func:`make_server`.
    max_body = 0

    def parse_header(self, header_plus: bytes) -> None:  # noqa: D102 - see the class docstring
        super().parse_header(header_plus)
        rcv = self.body_rcv
        if type(rcv) is FixedStreamReceiver and not self.chunked:
            if self.max_body and self.content_length > self.max_body:
                rcv.buf = _DiscardedBody()
            elif self.content_length <= self.adj.inbuf_overflow:
                rcv.buf = _ChunkedBody()


#: Answers of known length up to this size leave in one write with their header.
COALESCE_BYTES = 256 * 1024


class Task(WSGITask):
    """waitress's WSGI task; the first (and only) chunk of an answer of known length up
    to :data:`COALESCE_BYTES` is written together with the header.

    waitress writes the header as soon as the first chunk comes, then the chunk: two
    sends, between which the client (for instance ``requests``, which reads the header
    first) wakes for nothing. Anything else (chunked answers, several chunks, files sent
    with ``wsgi.file_wrapper``, HEAD, 1xx/204/304) keeps waitress's path.

    An error answer (4xx, 5xx) with an empty body goes without ``Content-Type``, as Orthanc
    1.10.1 sends them (405 with ``Allow``, empty 404, 401...). The header is dropped here,
    at the HTTP layer, because WSGI validators (falcon's test client) want every answer
    of the application to carry one.
    """

    def build_response_header(self) -> bytes:  # noqa: D102 - see the class docstring
        if self.content_length == 0 and self.status[:1] in ("4", "5"):
            self.response_headers = [h for h in self.response_headers if h[0].lower() != "content-type"]
        return super().build_response_header()

    def write(self, data: bytes) -> None:  # noqa: D102 - see the class docstring
        if (data and not self.wrote_header and self.complete and not self.chunked_response
                and self.content_length == len(data) and len(data) <= COALESCE_BYTES
                and self.has_body and self.request.command != "HEAD"):
            header = self.build_response_header()
            self.wrote_header = True
            self.content_bytes_written = len(data)
            self.channel.write_soon(header + data)
            return
        super().write(data)


class Channel(HTTPChannel):
    """waitress's HTTP channel, minus a busy loop.

    waitress's application threads write their answers to the socket themselves; while
    one does (inside ``write_soon``, holding the output lock), its channel still reports
    pending output, and the I/O loop polls it again and again without being able to take
    the lock, holding the GIL the application thread needs to finish. Here, while an
    application thread is inside ``write_soon``, the channel is writable for the I/O loop
    only when a large answer has piled up (which the loop must then help flush) or when it
    must close. Any other time, output left over (a send buffer that was full) is the I/O
    loop's to send at once, as in waitress, even while the next request runs.
    """

    parser_class = RequestParser
    task_class = Task
    _writing = False

    def write_soon(self, data: Any) -> int:  # noqa: D102 - see the class docstring
        self._writing = True
        try:
            return super().write_soon(data)
        finally:
            self._writing = False

    def writable(self) -> bool:  # noqa: D102 - see the class docstring
        n = self.total_outbufs_len
        if n and (not self._writing or n >= _LOOP_WRITE_THRESHOLD):
            return True
        return bool(self.will_close or self.close_when_flushed)


def make_server(app: Any, config: Any, *, host: str | None = None, port: int | None = None, **overrides: Any):
    """Build the waitress server of an app.

    Parameters
    ----------
    app : callable
        The WSGI application (``create_app(...)``).
    config : Config
        Uses ``HttpPort``, ``HttpBindAddress`` (default ``127.0.0.1``; ``0.0.0.0`` when
        ``RemoteAccessAllowed`` and no address is set), ``HttpThreadsCount`` (clamped to
        4-64 worker threads), ``HttpTimeout`` (idle connection timeout, seconds, at
        least 60) and ``UploadSpoolThreshold`` (MB: a request body above it is spooled
        to a temporary file, not held in memory; 0 spools every body).
    host, port : optional
        Override the configured address.
    **overrides
        Further waitress adjustments (e.g. ``threads``).

    Returns
    -------
    waitress.server.BaseWSGIServer
        Call ``.run()`` to serve, ``.close()`` to stop listening.

    Raises
    ------
    OSError
        The port cannot be bound.
    """
    if host is None:
        host = str(config.get("HttpBindAddress", "127.0.0.1"))
        if config.bool("RemoteAccessAllowed") and not config.is_set("HttpBindAddress"):
            host = "0.0.0.0"
    kw: dict[str, Any] = dict(
        host=host, port=int(port if port is not None else config.int("HttpPort")),
        threads=max(4, min(64, config.int("HttpThreadsCount"))),
        channel_timeout=max(60, config.int("HttpTimeout")), ident="pacsbox",
        clear_untrusted_proxy_headers=True, outbuf_high_watermark=OUTBUF_HIGH_WATERMARK,
        channel_request_lookahead=1, asyncore_use_poll=True,
        recv_bytes=RECV_BYTES, inbuf_overflow=spool_threshold(config),
    )
    max_body = config.int("MaximumUploadSize") * 1024 * 1024 if config.get("MaximumUploadSize") else 0
    if max_body:  # larger bodies are discarded as they arrive and refused by the app with 413
        kw["max_request_body_size"] = 1 << 62
    kw.update(overrides)
    server = create_server(app, **kw)
    parser = type("RequestParser", (RequestParser,), {"max_body": max_body}) if max_body else RequestParser
    server.channel_class = type("Channel", (Channel,), {"parser_class": parser}) if max_body else Channel
    return server
