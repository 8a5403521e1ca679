"""The waitress server of ``core/pacsbox/server.py``: request bodies of every shape reach the
app byte for byte (fixed length in memory, chunked, beyond ``inbuf_overflow`` in a temporary
file), on a real waitress server on a loopback port."""
from __future__ import annotations

import threading

import pytest
import requests
from conftest import free_port, read
from waitress.adjustments import Adjustments
from waitress.buffers import OverflowableBuffer

from pacsbox.server import INBUF_OVERFLOW, Channel, RequestParser, _ChunkedBody, make_server


def header(length: int) -> bytes:
    return (f"POST /instances HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n").encode()


def test_parser_keeps_a_body_that_fits_as_chunks():
    adj = Adjustments(inbuf_overflow=1000)
    p = RequestParser(adj)
    body = bytes(range(256)) * 3  # 768 bytes, fed in three pieces
    data = header(len(body)) + body[:100]
    n = p.received(data)
    assert n == len(data) - 100  # the header only: the body comes next
    assert isinstance(p.body_rcv.buf, _ChunkedBody)
    assert p.received(body[:100]) == 100
    assert p.received(body[100:500]) == 400
    assert not p.completed
    assert p.received(body[500:] + b"GET / HTTP/1.1\r\n") == 268  # stops at the body's end
    assert p.completed
    assert p.body_rcv.buf.chunks == [bytearray(body)]  # small pieces gathered in one buffer
    assert len(p.body_rcv.buf) == 768
    f = p.get_body_stream()
    assert f.read() == body
    assert p.body_rcv.buf.chunks == []  # joined once
    p.close()
    assert f.closed


def test_large_reads_are_kept_as_they_come_and_small_ones_gathered():
    body = bytes(range(256)) * 400  # 102,400 bytes
    p = RequestParser(Adjustments())
    p.received(header(len(body)))
    pieces = [body[:20_000], body[20_000:20_010], body[20_010:20_500], body[20_500:60_000], body[60_000:]]
    for piece in pieces:
        assert p.received(piece) == len(piece)
    assert p.completed
    chunks = p.body_rcv.buf.chunks
    assert [type(c).__name__ for c in chunks] == ["bytes", "bytearray", "bytes", "bytes"]
    assert chunks[0] is pieces[0] and chunks[2] is pieces[3] and chunks[3] is pieces[4]  # not copied
    assert chunks[1] == body[20_000:20_500]
    assert p.get_body_stream().read() == body


def test_one_large_read_is_shared_not_copied():
    body = bytes(range(256)) * 100
    p = RequestParser(Adjustments())
    p.received(header(len(body)))
    p.received(body)
    assert p.get_body_stream().read() is body  # what wsgi.input.read() hands the app


@pytest.mark.parametrize("length", [1001, 5000])
def test_parser_leaves_larger_bodies_to_waitress(length):
    p = RequestParser(Adjustments(inbuf_overflow=1000))
    p.received(header(length))
    assert type(p.body_rcv.buf) is OverflowableBuffer


def test_parser_leaves_chunked_bodies_to_waitress():
    p = RequestParser(Adjustments())
    p.received(b"POST /instances HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert type(p.body_rcv.buf) is OverflowableBuffer
    assert p.received(b"5\r\nhello\r\n0\r\n\r\n") == 15
    assert p.completed and p.get_body_stream().read() == b"hello"


def test_default_memory_bound_holds_an_mr_instance():
    assert INBUF_OVERFLOW == 2 * 1024 * 1024  # a 0.5 MB MR instance stays in memory


@pytest.fixture
def server(make_app):
    """A real waitress server with a small ``inbuf_overflow`` (100 KB), so that both the
    in-memory and the temporary-file paths are taken by real files."""
    port = free_port()
    app = make_app({"HttpPort": port})
    srv = make_server(app, app.ctx.config, host="127.0.0.1", port=port, inbuf_overflow=100_000)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{port}", app
    srv.close()
    t.join(5)


# (file, size in bytes): several 64 KiB reads in memory; beyond inbuf_overflow (temporary file)
FILES = [("CT_small.dcm", 39206), ("US1_UNCR.dcm", 922878), ("MR2_UNCR.dcm", 2098988)]


def test_bodies_of_every_shape_arrive_whole(server):
    url, app = server
    s = requests.Session()  # one keep-alive connection: the requests follow each other on it
    ids = []
    for name, size in FILES:
        data = read(name)
        assert len(data) == size
        r = s.post(url + "/instances", data=data, timeout=60)
        assert r.status_code == 200 and r.json()["Status"] == "Success", r.text
        ids.append(r.json()["ID"])
        assert s.get(f"{url}/instances/{r.json()['ID']}/file", timeout=60).content == data
    assert len(set(ids)) == 3
    # chunked transfer encoding (a generator body): the same bytes, already stored
    data = read("US1_UNCR.dcm")
    r = s.post(url + "/instances", data=(data[i:i + 50_000] for i in range(0, len(data), 50_000)), timeout=60)
    assert r.status_code == 200 and r.json() == {**r.json(), "ID": ids[1], "Status": "AlreadyStored"}
    assert requests.get(url + "/statistics", timeout=30).json()["CountInstances"] == 3
    # a body cut short by a client that hangs up stores nothing and the server keeps serving
    import socket
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(header(50_000) + data[:20_000])
    assert requests.get(url + "/statistics", timeout=30).json()["CountInstances"] == 3


class RecordingChannel(Channel):
    """The server's channel, noting what each answer hands to ``write_soon``."""

    writes: list = []

    def write_soon(self, data):
        RecordingChannel.writes.append(data if isinstance(data, bytes) else type(data).__name__)
        return super().write_soon(data)


def test_small_answers_leave_in_one_write_with_their_header(make_app):
    port = free_port()
    app = make_app({"HttpPort": port})
    srv = make_server(app, app.ctx.config, host="127.0.0.1", port=port)
    srv.channel_class = RecordingChannel
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    try:
        s = requests.Session()
        small, large = read("CT_small.dcm"), read("US1_UNCR.dcm")
        ids = [s.post(url + "/instances", data=d, timeout=60).json()["ID"] for d in (small, large)]

        RecordingChannel.writes.clear()
        r = s.get(url + "/system", timeout=30)
        assert r.status_code == 200
        [w] = RecordingChannel.writes  # header and JSON body together
        assert w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(r.content)

        RecordingChannel.writes.clear()
        r = s.get(f"{url}/instances/{ids[0]}/file", timeout=30)
        assert r.content == small
        [w] = RecordingChannel.writes
        assert w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(small)
        assert b"\r\nContent-Length: 39206\r\n" in w

        # a large file is streamed: the header, then waitress's file buffer
        RecordingChannel.writes.clear()
        r = s.get(f"{url}/instances/{ids[1]}/file", timeout=30)
        assert r.content == large
        assert RecordingChannel.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert RecordingChannel.writes[0].endswith(b"\r\n\r\n")
        assert RecordingChannel.writes[1:] == ["ReadOnlyFileBasedBuffer"]

        # an error answer of known length: one write as well, Orthanc's JSON body
        RecordingChannel.writes.clear()
        r = s.post(url + "/tools/find", data=b"{", timeout=30)
        assert r.status_code == 400 and r.json()["HttpStatus"] == 400
        [w] = RecordingChannel.writes
        assert w.startswith(b"HTTP/1.1 400 Bad Request\r\n") and w.endswith(r.content)
    finally:
        srv.close()
        t.join(5)
