"""Edge cases of the waitress subclasses of ``core/pacsbox/server.py`` found by testing a real
server: an answer held back behind the next pipelined request (``Channel.writable``) and the
memory a body trickled in small pieces costs (``_ChunkedBody``)."""
from __future__ import annotations

import socket
import threading
import tracemalloc

from conftest import free_port, read
from waitress.adjustments import Adjustments

from pacsbox import RouteSpec
from pacsbox.server import INBUF_OVERFLOW, Channel, RequestParser, _ChunkedBody, make_server
from pacsbox.testing import inline_plugin


class _Held:
    """``GET /held``: a request that works until the test sets :attr:`release` (a slow
    ``/tools/find``, a synchronous archive, a job run with ``Synchronous``...); answers
    ``released``, or ``timed out`` when not released within 20 s."""

    release = threading.Event()

    def __init__(self, ctx):
        pass

    def on_get(self, req, resp):
        released = self.release.wait(20)
        resp.content_type = "text/plain"
        resp.data = b"released" if released else b"timed out"


HOLDER = inline_plugin("holder", register_routes=lambda ctx: [RouteSpec("/held", _Held)])


class SlowLinkChannel(Channel):
    """The server's channel on a link whose kernel send buffer fills up (a client farther
    away than loopback): a small ``SO_SNDBUF``, nothing else changed."""

    def __init__(self, server, sock, addr, adj, map=None):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        super().__init__(server, sock, addr, adj, map)


class _Answers:
    """Reads the answers of one connection in order (bytes past an answer are kept for the
    next one: pipelined answers may arrive in the same segment)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def _more(self) -> None:
        d = self.sock.recv(65536)
        assert d, "connection closed"
        self.buf += d

    def next(self) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        cl = int(next(l.split(b":", 1)[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")))
        self.buf = rest
        while len(self.buf) < cl:
            self._more()
        body, self.buf = self.buf[:cl], self.buf[cl:]
        return head, body


def test_a_pipelined_answer_is_not_held_back_until_the_next_request_ends(make_app):
    """Two pipelined requests: a file, then a request that works until the test releases
    it, which the test does once it has the whole file. The file must reach the client as
    fast as the client reads it, not when the second request ends (here: never, as long as
    the file is not there, until the request gives up after 20 s and says so).

    ``Channel.writable`` (as committed in 3f3842a) tells the I/O loop to write nothing below
    64 KiB while the channel has a request in progress; once the first answer is done, the
    second request counts as "in progress", so the first answer's last bytes (< 64 KiB,
    left over when the socket's send buffer was full) wait for the second request to
    finish: up to the length of any slow request, or 15 s between two
    keep-alives of ``/jobs/{id}/events``. Whether the last bytes are left over depends on
    the kernel's timing, so the exchange is repeated (4 files, 4 rounds); waitress's own
    ``writable()`` passes every round."""
    port = free_port()
    app = make_app({"HttpPort": port}, plugins=[HOLDER])
    srv = make_server(app, app.ctx.config, host="127.0.0.1", port=port)
    srv.channel_class = SlowLinkChannel
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a client on that link
            s.settimeout(60)
            s.connect(("127.0.0.1", port))
            answers = _Answers(s)
            late = []
            for name in ["US1_UNCR.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm", "MR2_UNCR.dcm"]:
                data = read(name)
                s.sendall(b"POST /instances HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
                head, body = answers.next()
                assert head.startswith(b"HTTP/1.1 200")
                iid = body.split(b'"ID": "')[1].split(b'"')[0].decode()

                _Held.release.clear()
                s.sendall(f"GET /instances/{iid}/file HTTP/1.1\r\nHost: x\r\n\r\n"
                          f"GET /held HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                head, body = answers.next()
                assert head.startswith(b"HTTP/1.1 200") and body == data
                _Held.release.set()
                head, body = answers.next()
                if body != b"released":   # the file came only once /held gave up
                    late.append(name)
            assert not late, f"a file's last bytes came with the next answer: {late}"
    finally:
        srv.close()
        t.join(5)


def test_a_body_trickled_in_small_pieces_costs_about_its_size_in_memory():
    """A client sending a 2 MiB body a few bytes per TCP segment (each a separate socket
    read) makes ``_ChunkedBody`` keep one ``bytes`` object per read: ~60 bytes of server
    memory per byte of body (measured on a real server: 100 KB sent one byte at a time on
    8 connections grew the server by 48 MB; waitress's BytesIO: no growth), so a few
    slow clients holding unfinished 2 MiB bodies cost ~130 MB each instead of 2 MB."""
    p = RequestParser(Adjustments(inbuf_overflow=INBUF_OVERFLOW))  # the server's setting
    p.received(b"POST /instances HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n")
    n = 200_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(0, n, 2):  # 2-byte pieces (1-byte bytes objects are cached by CPython)
            p.received(bytes((i & 0xFF, 7)))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert type(p.body_rcv.buf) is _ChunkedBody
    assert len(p.body_rcv) == n and not p.completed
    assert held < 4 * n, f"{held} bytes held for a {n}-byte partial body ({held / n:.0f} per byte)"
