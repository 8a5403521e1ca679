"""Helpers of the peer tests: a scriptable stand-in for a peer's ``POST /instances``, small
synthetic studies, upload and job helpers."""
from __future__ import annotations

import gzip
import http.server
import io
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import pydicom
import requests
from pydicom.uid import generate_uid

from pacsbox.testing import free_port


def testfile(name: str) -> str:
    """Path of one of pydicom's test files."""
    import warnings

    from pydicom.data import get_testdata_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_testdata_file(name)


def make_study(n: int, patient_id: str = "PEERS", series: int = 2, size: int = 0) -> list[bytes]:
    """``n`` CT instances (pydicom's CT_small.dcm, ~39 KB each) of one new study, new UIDs;
    ``size`` > 0 makes ``size`` x ``size`` 16-bit images instead of 128 x 128."""
    template = pydicom.dcmread(testfile("CT_small.dcm"))
    if size:
        template.Rows = template.Columns = size
        template.PixelData = bytes(range(256)) * (size * size * 2 // 256)
    template.PatientID = patient_id
    template.PatientName = f"Peers^{patient_id}"
    template.StudyInstanceUID = generate_uid()
    series_uids = [generate_uid() for _ in range(series)]
    out = []
    for i in range(n):
        ds = template.copy()
        ds.SeriesInstanceUID = series_uids[i % series]
        ds.InstanceNumber = i + 1
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta = template.file_meta.copy()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def upload(url: str, files: list[bytes]) -> list[dict]:
    """``POST /instances`` each file; the answers."""
    out = []
    with requests.Session() as s:
        for data in files:
            r = s.post(url + "/instances", data=data, timeout=30)
            assert r.status_code == 200, r.text
            out.append(r.json())
    return out


def wait_job(url: str, job_id: str, pred: Callable[[dict], bool], timeout: float = 30) -> dict:
    """Poll ``/jobs/{id}`` until ``pred(job)``; the job."""
    deadline = time.monotonic() + timeout
    while True:
        j = requests.get(f"{url}/jobs/{job_id}", timeout=10).json()
        if pred(j):
            return j
        assert time.monotonic() < deadline, j
        time.sleep(0.01)


def sop_uid_of(body: bytes, encoding: str | None) -> str:
    """SOP Instance UID of an uploaded body (gunzipped when ``Content-Encoding: gzip``)."""
    if (encoding or "").lower() == "gzip":
        body = gzip.decompress(body)
    return str(pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True).SOPInstanceUID)


@dataclass
class StandIn:
    """A stand-in for an Orthanc peer on loopback: ``POST /instances`` answers what
    :attr:`decide` says; ``GET /system`` answers a small JSON object.

    Attributes
    ----------
    url : str
        Base URL, ending in ``/``.
    decide : callable
        ``decide(sop_uid, attempt) -> int``: HTTP status for the ``attempt``-th (1-based)
        upload of that instance (200 by default).
    delay : float
        Seconds each upload waits before answering.
    received : list of dict
        ``{"uid", "status", "headers", "size"}`` per upload, in arrival order.
    max_inflight : int
        Most uploads being handled at the same time.
    read_delay : float
        When > 0, bodies are read 64 KB at a time with this pause (seconds) in between (a
        slow link); a body cut short is recorded in :attr:`truncated`.
    close_after_answer : bool
        Close the connection after each answer without saying so (no ``Connection:
        close``), as a server whose keep-alive timeout expired between two requests.
    hold : threading.Event or None
        When set to an Event, each upload waits for it (at most 60 s) once its body is read
        (counted in :attr:`inflight`), before :attr:`delay` and the answer: a peer that
        answers only when the test releases it.
    reading : threading.Event
        Set once a paced body (:attr:`read_delay`) has started to arrive.
    """

    url: str = ""
    decide: Callable[[str, int], int] = lambda uid, attempt: 200
    delay: float = 0.0
    received: list = field(default_factory=list)
    attempts: dict = field(default_factory=dict)
    inflight: int = 0
    max_inflight: int = 0
    read_delay: float = 0.0
    truncated: list = field(default_factory=list)
    close_after_answer: bool = False
    hold: threading.Event | None = None
    reading: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: object = None

    def uids(self, status: int = 200) -> list[str]:
        """UIDs of the uploads answered ``status``."""
        with self.lock:
            return [r["uid"] for r in self.received if r["status"] == status]


def start_standin(ssl_context=None) -> StandIn:
    """Start a :class:`StandIn` (stop it with ``standin.server.shutdown()``); HTTPS when
    ``ssl_context`` (a server-side ``ssl.SSLContext``) is given. ``received`` entries
    then also hold the client certificate's subject (``"client_cert"``)."""
    st = StandIn()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self, status: int, obj) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            cert = self.connection.getpeercert() if ssl_context is not None else None
            if cert:
                with st.lock:
                    st.received.append({"uid": None, "status": 200, "headers": dict(self.headers), "size": 0,
                                        "client_cert": dict(x[0] for x in cert["subject"])})
            if self.path == "/system":
                self._answer(200, {"Name": "StandIn", "Version": "0"})
            else:
                self._answer(404, {})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            if st.read_delay:
                parts = []
                got = 0
                while got < length:
                    piece = self.rfile.read(min(65536, length - got))
                    if not piece:
                        with st.lock:
                            st.truncated.append(got)
                        self.close_connection = True
                        return
                    parts.append(piece)
                    got += len(piece)
                    st.reading.set()
                    time.sleep(st.read_delay)
                body = b"".join(parts)
            else:
                body = self.rfile.read(length)
            with st.lock:
                st.inflight += 1
                st.max_inflight = max(st.max_inflight, st.inflight)
            try:
                hold = st.hold
                if hold is not None:
                    hold.wait(60)
                if st.delay:
                    time.sleep(st.delay)
                uid = sop_uid_of(body, self.headers.get("Content-Encoding"))
                with st.lock:
                    attempt = st.attempts[uid] = st.attempts.get(uid, 0) + 1
                status = st.decide(uid, attempt)
                with st.lock:
                    st.received.append({"uid": uid, "status": status, "headers": dict(self.headers),
                                        "size": len(body)})
                self._answer(status, {"ID": uid, "Status": "Success"} if status == 200 else {"Error": status})
                if st.close_after_answer:
                    self.close_connection = True
            finally:
                with st.lock:
                    st.inflight -= 1

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    st.server = server
    scheme = "https" if ssl_context is not None else "http"
    st.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/"
    return st
