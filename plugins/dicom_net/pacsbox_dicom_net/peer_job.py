"""The ``OrthancPeerStore`` job: send instances to an Orthanc peer with ``POST <Url>/instances``.

Differences from Orthanc 1.10.1's job, which sends one instance after the other:

- **Several uploads in flight** on one pooled HTTP session (keep-alive connections), at
  most ``OrthancPeerStoreConcurrency`` (default 4). Each upload runs in a worker thread;
  the job's step waits at most :data:`STEP_WAIT` seconds for one to complete, so that a
  pause or a cancel applies within that delay.
- **Transient errors are retried**: a connection error, a timeout, or an answer 429, 502,
  503 or 504 is retried up to ``OrthancPeerStoreRetries`` times (default 3) with an
  exponential backoff (0.25 s, 0.5 s, 1 s..., at most 5 s). Other answers 4xx/5xx are
  final for that instance.
- **Exact failures**: ``FailedInstancesCount`` counts the instances the peer refused, and
  the extra content field ``FailedInstances`` (present only when some failed) lists them.
  Orthanc counts 0 in a permissive run whatever happened. Without ``Permissive``, the
  first refused instance stops the job (uploads in flight are let finish) and the job
  fails with ``NetworkProtocol`` (9) and details naming the instance(s) and the HTTP
  status.
- **Resume without resending**: progress is the set of instances the peer confirmed (a
  bitmap, since uploads finish in any order), saved in the job's serialized state and,
  between two saves of the jobs engine, appended to a small journal file
  (``<IndexDirectory>/pacsbox-peer-journals/<token>``), so that after a ``SIGKILL`` only
  the uploads that were in flight are sent again. ``POST /jobs/{id}/resubmit`` re-sends
  everything, as Orthanc does.

``Size`` is the number of request-body bytes the peer answered (after ``Transcode`` and
``Compress``), retries included, as Orthanc counts them (its ``Size`` also counts refused
uploads).

Source: Orthanc 1.10.1 ``OrthancPeerStoreJob``, ``SetOfInstancesJob``; reference sections
3.3 and 10.2.
"""
from __future__ import annotations

import base64
import http.client
import logging
import os
import socket
import threading
import uuid
from urllib.parse import urlsplit
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Mapping

import requests

from pacsbox import ErrorCode, InstancesJob, OrthancError, StepResult, transcode

from .peer_registry import Peer, http_session, option, parse_peer, peer_timeout

log = logging.getLogger("pacsbox.dicom_net.peers")

#: Longest wait of one step for an upload to finish, in seconds (bounds pause/cancel delay).
STEP_WAIT = 0.2
#: HTTP statuses taken as transient (retried).
TRANSIENT_STATUSES = (429, 502, 503, 504)
#: First backoff delay and its cap, in seconds.
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 5.0
_MB = 1024 * 1024


def curl_like_error(e: BaseException) -> str:
    """Orthanc's wording of an HTTP client error for a ``requests`` exception.

    Parameters
    ----------
    e : BaseException
        What ``requests`` or ``http.client`` raised (connection refused, timeout, SSL
        error...).

    Returns
    -------
    str
        ``"libCURL error: Couldn't connect to server"``, ``"libCURL error: Timeout was
        reached"``..., so that ``Details`` read as the reference's (Orthanc 1.10.1
        ``HttpClient``).
    """
    if isinstance(e, (requests.Timeout, TimeoutError)):
        return "libCURL error: Timeout was reached"
    if isinstance(e, requests.exceptions.SSLError):
        return f"libCURL error: SSL connect error ({e})"
    if isinstance(e, requests.ConnectionError):
        text = str(e)
        if "Connection refused" in text or "Errno 111" in text or "NewConnectionError" in text:
            return "libCURL error: Couldn't connect to server"
        if "Name or service not known" in text or "resolve" in text:
            return "libCURL error: Couldn't resolve host name"
        return f"libCURL error: Failure when receiving data from the peer ({type(e).__name__})"
    # http.client (PlainPoster)
    if isinstance(e, ConnectionRefusedError):
        return "libCURL error: Couldn't connect to server"
    if isinstance(e, socket.gaierror):
        return "libCURL error: Couldn't resolve host name"
    if isinstance(e, (OSError, http.client.HTTPException)):
        return f"libCURL error: Failure when receiving data from the peer ({type(e).__name__})"
    return f"HTTP client error: {type(e).__name__}: {e}"


def peer_content_json(peer: Peer) -> Any:
    """The ``Peer`` field of the job's content, in Orthanc's form: ``[Url]``,
    ``[Url, Username, ""]`` (password never shown), or the object form when the peer has
    headers, a certificate, a timeout or user properties. Unlike Orthanc, which shows
    the header *values* there, pacsbox shows the header names with null values."""
    advanced = bool(peer.http_headers or peer.certificate_file or peer.pkcs11 or peer.timeout
                    or peer.user_properties)
    if not advanced:
        return [peer.url, peer.username, ""] if peer.username else [peer.url]
    out: dict[str, Any] = {"Url": peer.url, "Pkcs11": peer.pkcs11, "Timeout": peer.timeout,
                           "HttpHeaders": {k: None for k in sorted(peer.http_headers)}}
    if peer.username:
        out["Username"] = peer.username
    if peer.certificate_file:
        out["CertificateFile"] = peer.certificate_file
    out.update(peer.user_properties)
    return dict(sorted(out.items()))


#: Bodies larger than this (bytes) are sent through :class:`_AbortableBody`.
ABORTABLE_SIZE = 256 * 1024


class _Aborted(Exception):
    """The run of the job stopped while a body was being sent."""


class _AbortableBody:
    """A request body read in blocks that stops (raises :class:`_Aborted`) once ``abort``
    is set, so that a pause or a cancel also stops a long upload on a slow link. Its
    ``__len__`` gives requests the ``Content-Length``."""

    def __init__(self, data: bytes, abort: threading.Event) -> None:
        self._view = memoryview(data)
        self._pos = 0
        self._abort = abort

    def __len__(self) -> int:
        return len(self._view) - self._pos

    def read(self, n: int = -1) -> bytes:
        if self._abort.is_set():
            raise _Aborted()
        end = len(self._view) if n is None or n < 0 else min(len(self._view), self._pos + n)
        chunk = bytes(self._view[self._pos:end])
        self._pos = end
        return chunk


class PlainPoster:
    """``POST {peer}/instances`` over plain HTTP with :mod:`http.client`, one keep-alive
    connection per upload thread (TCP_NODELAY, headers and a small body in one write).

    ``requests`` costs about four times the CPU per call (1.4 ms against 0.3 ms for a 39 KB
    body, measured on this machine), which bounds the speed of a peer store on a fast
    link. The peer store uses this for ``http://`` peers when no ``HttpProxy`` is set;
    anything else (HTTPS, client certificates, a proxy) goes through ``requests``.

    Parameters
    ----------
    peer : Peer
        Its URL, ``Username``/``Password`` (HTTP Basic) and ``HttpHeaders`` are used.
    timeout : float
        Seconds for connecting and for each read (0 or None: no limit).
    """

    def __init__(self, peer: Peer, timeout: float | None) -> None:
        parts = urlsplit(peer.url)
        self.host, self.port = parts.hostname or "localhost", parts.port or 80
        self.path = (parts.path or "/").rstrip("/") + "/instances"
        self.timeout = timeout or None
        self.headers = dict(peer.http_headers)
        if peer.username:
            token = base64.b64encode(f"{peer.username}:{peer.password or ''}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[http.client.HTTPConnection] = []

    @staticmethod
    def usable(ctx: Any, peer: Peer) -> bool:
        """Whether ``peer`` can be reached this way (plain HTTP, no ``HttpProxy``)."""
        return peer.url.startswith("http://") and not option(ctx, "HttpProxy")

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._local.conn = conn
        with self._lock:
            self._open.append(conn)
        return conn, False

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def post(self, data: bytes, headers: Mapping[str, str], abort: threading.Event) -> int:
        """Send one instance; returns the HTTP status.

        Raises
        ------
        _Aborted
            ``abort`` was set while a large body was being sent.
        OSError, http.client.HTTPException
            The connection failed (after one silent retry on a fresh connection when a
            kept-alive one turns out closed by the peer before any answer).
        """
        for fresh_retry in (True, False):
            conn, reused = self._connection()
            try:
                conn.putrequest("POST", self.path, skip_accept_encoding=True)
                for k, v in {**self.headers, **headers, "Content-Length": str(len(data))}.items():
                    conn.putheader(k, v)
                if len(data) <= ABORTABLE_SIZE:
                    conn.endheaders(data)
                else:
                    conn.endheaders()
                    view = memoryview(data)
                    for pos in range(0, len(data), ABORTABLE_SIZE):
                        if abort.is_set():
                            raise _Aborted()
                        conn.send(view[pos:pos + ABORTABLE_SIZE])
                r = conn.getresponse()
                r.read()
                if r.will_close:
                    self._drop()
                return r.status
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop()
                if not (reused and fresh_retry):
                    raise
            except BaseException:
                self._drop()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every connection (thread-safe)."""
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()


@dataclass
class _Outcome:
    """What one upload thread reports."""

    index: int
    ok: bool
    sent: int = 0
    detail: str = ""


def journal_directory(ctx: Any) -> str:
    """Folder of the confirmation journals of the peer-store jobs.

    Parameters
    ----------
    ctx : pacsbox.ServerContext

    Returns
    -------
    str
        ``<IndexDirectory>/pacsbox-peer-journals``, created if missing. Each running job
        appends there, to a file named by its token, the 4-byte little-endian index of
        every instance the peer confirmed.
    """
    d = os.path.join(str(ctx.config.path("IndexDirectory")), "pacsbox-peer-journals")
    os.makedirs(d, exist_ok=True)
    return d


class OrthancPeerStoreJob(InstancesJob):
    """``OrthancPeerStore``: upload instances to a peer (``POST /peers/{id}/store``).

    Parameters
    ----------
    peer : Peer
        The destination (a snapshot: later changes to ``/peers`` do not affect the job).
    instances : list of str
        Orthanc IDs of the instances, in index order, without duplicates.
    parents : list of str
        The IDs given in the request (``ParentResources``).
    transcode_to : str, optional
        ``Transcode``: transfer syntax UID to convert to before sending (the original is
        sent when the conversion is impossible, as Orthanc does).
    compress : bool
        ``Compress``: gzip each body and send ``Content-Encoding: gzip``.
    permissive : bool
        ``Permissive``: a refused instance is counted and skipped.

    Attributes
    ----------
    confirmed : bytearray
        Bitmap of the instances the peer confirmed (bit ``i`` for ``instances[i]``).
    failed_indexes : dict of int to str
        Refused instances (index into :attr:`instances`) and why.
    size : int
        Request-body bytes the peer answered, in bytes.
    """

    type_name = "OrthancPeerStore"

    def __init__(self, peer: Peer, instances: list[str], parents: list[str] | None = None, *,
                 transcode_to: str | None = None, compress: bool = False, permissive: bool = False) -> None:
        super().__init__(instances, permissive)
        self.peer = peer
        self.parents = sorted(set(parents or []))
        self.transcode_to = transcode_to
        self.compress = compress
        self.confirmed = bytearray((len(self.instances) + 7) // 8)
        self.failed_indexes: dict[int, str] = {}
        self.size = 0
        self.token = uuid.uuid4().hex
        self._journal = None
        self._executor: ThreadPoolExecutor | None = None
        self._session: requests.Session | None = None
        self._poster: PlainPoster | None = None
        self._inflight: dict[Future, int] = {}
        self._queue: list[int] = []
        self._halt = False

    # ---- bitmap ----------------------------------------------------------------------------
    def is_confirmed(self, i: int) -> bool:
        """Whether the peer confirmed ``instances[i]``."""
        return bool(self.confirmed[i >> 3] & (1 << (i & 7)))

    def _confirm(self, i: int) -> None:
        self.confirmed[i >> 3] |= 1 << (i & 7)

    def confirmed_count(self) -> int:
        """int: number of instances the peer confirmed."""
        return sum(bin(b).count("1") for b in self.confirmed)

    # ---- journal ---------------------------------------------------------------------------
    def _journal_path(self, ctx: Any) -> str:
        return os.path.join(journal_directory(ctx), self.token)

    def _read_journal(self, ctx: Any) -> None:
        try:
            with open(self._journal_path(ctx), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        n = len(self.instances)
        for k in range(0, len(data) - len(data) % 4, 4):
            i = int.from_bytes(data[k:k + 4], "little")
            if i < n:
                self._confirm(i)

    def _drop_journal(self, ctx: Any) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        try:
            os.unlink(self._journal_path(ctx))
        except FileNotFoundError:
            pass
        except OSError:
            log.exception("cannot delete peer-store journal %s", self._journal_path(ctx))

    # ---- the run ---------------------------------------------------------------------------
    def start(self, ctx: Any) -> None:
        """Open the HTTP session, the upload threads and the journal; queue the instances
        neither confirmed nor refused."""
        self._ctx = ctx
        self._read_journal(ctx)
        self._journal = open(self._journal_path(ctx), "ab", buffering=0)
        self._concurrency = int(option(ctx, "OrthancPeerStoreConcurrency"))
        self._retries = int(option(ctx, "OrthancPeerStoreRetries"))
        self._timeout = peer_timeout(ctx, self.peer)
        self._session = http_session(ctx, self.peer, pool_size=self._concurrency)
        self._poster = PlainPoster(self.peer, self._timeout) if PlainPoster.usable(ctx, self.peer) else None
        self._executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="peer-store")
        self._queue = [i for i in range(len(self.instances)) if not self.is_confirmed(i)
                       and i not in self.failed_indexes]
        self._queue.reverse()      # pop() from the end gives index order
        self._inflight = {}
        self._halt = False
        self._abort = threading.Event()
        self.setup_done = True

    def _body(self, ctx: Any, iid: str) -> bytes:
        data = ctx.resources.read_file(iid)
        if self.transcode_to:
            converted = transcode(data, self.transcode_to)
            if converted is not None:
                data = converted
        return data

    def _upload(self, i: int, session: requests.Session) -> _Outcome:
        """Send ``instances[i]`` (worker thread); retries transient errors."""
        ctx = self._ctx
        abort = self._abort        # this run's: set by stop()
        iid = self.instances[i]
        try:
            data = self._body(ctx, iid)
        except OrthancError as e:
            return _Outcome(i, False, 0, f"instance {iid}: {e.details or e.code.name}")
        headers = {"Content-Type": "application/dicom"}
        if self.compress:
            from isal import igzip
            data = igzip.compress(data, 1)
            headers["Content-Encoding"] = "gzip"
        url = self.peer.url + "instances"
        poster = self._poster
        sent = 0
        delay = BACKOFF_FIRST
        for attempt in range(self._retries + 1):
            if self.stop_requested or abort.is_set():
                return _Outcome(i, False, sent, "interrupted")
            try:
                if poster is not None:
                    status = poster.post(data, headers, abort)
                else:
                    body: Any = _AbortableBody(data, abort) if len(data) > ABORTABLE_SIZE else data
                    status = session.post(url, data=body, headers=headers, timeout=self._timeout).status_code
            except _Aborted:
                return _Outcome(i, False, sent, "interrupted")
            except (requests.RequestException, OSError, http.client.HTTPException) as e:
                if abort.is_set():
                    return _Outcome(i, False, sent, "interrupted")
                detail = curl_like_error(e)
                transient = True
            else:
                sent += len(data)
                if 200 <= status < 300:
                    return _Outcome(i, True, sent)
                detail = f"the peer answered HTTP {status} to POST {url} for instance {iid}"
                transient = status in TRANSIENT_STATUSES
            if not transient or attempt == self._retries:
                break
            log.info("peer store: %s; retry %d/%d in %.2f s", detail, attempt + 1, self._retries, delay)
            if self.wait_stop(delay) or abort.is_set():
                return _Outcome(i, False, sent, "interrupted")
            delay = min(delay * 2, BACKOFF_MAX)
        if not detail.startswith("the peer"):
            detail = f"{detail} (instance {iid})"
        return _Outcome(i, False, sent, detail)

    def _fill(self) -> None:
        assert self._executor is not None and self._session is not None
        while not self._halt and self._queue and len(self._inflight) < self._concurrency:
            i = self._queue.pop()
            self._inflight[self._executor.submit(self._upload, i, self._session)] = i

    def _handle(self, out: _Outcome) -> None:
        self.size += out.sent
        if out.ok:
            self._confirm(out.index)
            if self._journal is not None:
                self._journal.write(out.index.to_bytes(4, "little"))
        elif out.detail == "interrupted":
            self._queue.append(out.index)
        else:
            self.failed_indexes[out.index] = out.detail
            log.warning("peer store to %s: %s", self.peer.url, out.detail)
            if not self.permissive:
                self._halt = True

    def step(self, ctx: Any) -> StepResult:
        """Keep up to ``OrthancPeerStoreConcurrency`` uploads in flight; collect those
        done within :data:`STEP_WAIT` seconds."""
        if self._executor is None:
            self.start(ctx)
        self._fill()
        if not self._inflight:
            return self._finish()
        done, _ = wait(list(self._inflight), timeout=STEP_WAIT, return_when=FIRST_COMPLETED)
        for f in done:
            i = self._inflight.pop(f)
            try:
                out = f.result()
            except Exception as e:  # noqa: BLE001 - an upload thread's bug fails that instance
                log.exception("peer store: upload of %s failed", self.instances[i])
                out = _Outcome(i, False, 0, f"instance {self.instances[i]}: {type(e).__name__}: {e}")
            self._handle(out)
        self.position = self.confirmed_count() + len(self.failed_indexes)
        return StepResult.CONTINUE

    def _finish(self) -> StepResult:
        self.position = len(self.instances)
        self.finalized = True
        self.failed = [self.instances[i] for i in sorted(self.failed_indexes)]
        if self.failed_indexes and not self.permissive:
            self.error_code = int(ErrorCode.NETWORK_PROTOCOL)
            self.error_details = "; ".join(self.failed_indexes[i] for i in sorted(self.failed_indexes))
            return StepResult.FAILURE
        return StepResult.SUCCESS

    def stop(self, reason: str) -> None:
        """Stop the upload threads: bodies larger than :data:`ABORTABLE_SIZE` stop being
        sent, smaller uploads in flight finish on their own; their results are dropped and
        the instances sent again at the next run. Close the session; drop the journal when
        the job is over."""
        abort = getattr(self, "_abort", None)
        if abort is not None:
            abort.set()
        ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)
        for f, i in self._inflight.items():
            self._queue.append(i)
        self._inflight = {}
        s, self._session = self._session, None
        if s is not None:
            s.close()
        poster, self._poster = self._poster, None
        if poster is not None:
            poster.close()
        ctx = getattr(self, "_ctx", None)
        if reason in ("Success", "Failure", "Canceled") and ctx is not None:
            self._drop_journal(ctx)
        elif self._journal is not None:
            self._journal.close()
            self._journal = None

    def reset(self) -> None:
        """``POST /jobs/{id}/resubmit``: everything is sent again."""
        super().reset()
        self.position = 0
        self.failed = []
        self.setup_done = self.finalized = False
        self.confirmed = bytearray((len(self.instances) + 7) // 8)
        self.failed_indexes = {}
        self.size = 0
        old = self.token
        self.token = uuid.uuid4().hex
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            try:
                os.unlink(os.path.join(journal_directory(ctx), old))
            except OSError:
                pass

    # ---- reporting -------------------------------------------------------------------------
    def progress(self) -> float:
        """Percent of instances confirmed (or refused, in a permissive run: a refused
        instance stops a strict job, whose progress stays at what the peer confirmed, as
        Orthanc's stays at the failed step)."""
        n = len(self.instances)
        if n == 0:
            return 100.0 if self.finalized else 0.0
        done = self.confirmed_count() + (len(self.failed_indexes) if self.permissive else 0)
        return 100.0 * done / n

    def public_content(self) -> dict[str, Any]:
        """``Compress``, ``Description``, ``FailedInstancesCount``, ``InstancesCount``,
        ``ParentResources`` (sorted; absent when none), ``Peer``, ``Size`` (string, bytes),
        ``SizeMB`` (integer, MiB), ``Transcode`` (when asked) and ``FailedInstances`` (pacsbox:
        the refused instance IDs, only when there are some)."""
        out: dict[str, Any] = {"Compress": self.compress, "Description": self.description,
                               "FailedInstancesCount": len(self.failed_indexes),
                               "InstancesCount": len(self.instances), "Peer": peer_content_json(self.peer),
                               "Size": str(self.size), "SizeMB": self.size // _MB}
        if self.parents:
            out["ParentResources"] = list(self.parents)
        if self.transcode_to:
            out["Transcode"] = self.transcode_to
        if self.failed_indexes:
            out["FailedInstances"] = [self.instances[i] for i in sorted(self.failed_indexes)]
        return dict(sorted(out.items()))

    def serialize(self) -> dict[str, Any]:
        """The peer (secrets included, as Orthanc saves them), the instances, the
        confirmed bitmap (base64), the refused instances, ``Size`` and the journal token."""
        return {"Peer": self.peer.full_json(), "Instances": list(self.instances), "Parents": list(self.parents),
                "Transcode": self.transcode_to, "Compress": self.compress, "Permissive": self.permissive,
                "Confirmed": base64.b64encode(bytes(self.confirmed)).decode("ascii"),
                "Failed": {str(i): d for i, d in self.failed_indexes.items()}, "Size": self.size,
                "Token": self.token, "Description": self.description, "Finalized": self.finalized}

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx: Any) -> "OrthancPeerStoreJob":
        """Rebuild the job (the journal is merged at :meth:`start`)."""
        job = cls(parse_peer("peer", data["Peer"], check_files=False), list(data["Instances"]), list(data.get("Parents", [])),
                  transcode_to=data.get("Transcode"), compress=bool(data.get("Compress")),
                  permissive=bool(data.get("Permissive")))
        bitmap = base64.b64decode(data.get("Confirmed", ""))
        job.confirmed[:len(bitmap)] = bitmap[:len(job.confirmed)]
        job.failed_indexes = {int(k): str(v) for k, v in dict(data.get("Failed", {})).items()}
        job.size = int(data.get("Size", 0))
        job.token = str(data.get("Token") or job.token)
        job.description = str(data.get("Description", job.description))
        job.finalized = bool(data.get("Finalized", False))
        job.position = job.confirmed_count() + len(job.failed_indexes)
        return job
