"""The HTTP machinery of the transfers accelerator jobs (the plugin's ``HttpQueriesQueue`` /
``HttpQueriesRunner``): requests to one peer over pooled keep-alive connections
(:class:`PeerClient`, failures as :class:`PeerHttpError`), and numbered queries run on
several threads with retries (:class:`QueryRunner`).

The jobs themselves are in :mod:`.transfers_jobs`, what they share in
:mod:`.transfers_job_base`.
"""
from __future__ import annotations

import collections
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

import requests

from pacsbox import ErrorCode, OrthancError

from .transfers_protocol import HEADER_SENDER_TRANSFER_ID

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

log = logging.getLogger("pacsbox.dicom_net.transfers")


class PeerHttpError(Exception):
    """An HTTP exchange with a peer failed.

    Attributes
    ----------
    status : int or None
        The peer's HTTP status, None when no answer came (connection refused, reset,
        timeout).
    details : str
    """

    def __init__(self, status: int | None, details: str) -> None:
        super().__init__(details)
        self.status = status
        self.details = details


def _error_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, Mapping):
            parts = [str(body.get(k)) for k in ("Message", "Details") if body.get(k)]
            if parts:
                return ": ".join(parts)
    except ValueError:
        pass
    return resp.reason or ""


class PeerClient:
    """Requests to one Orthanc peer for one job: the peer's URL, credentials and headers
    (``OrthancPeers``), a pooled session (:func:`.peers.http_session`) and the transfer's
    ``sender-transfer-id`` header.

    Parameters
    ----------
    ctx : ServerContext
    name : str
        The peer's symbolic name.
    pool_size : int
        Connections kept open (``Transfers.Threads``).
    transfer_id : str
        ``SenderTransferID``.

    Raises
    ------
    OrthancError
        ``UnknownResource`` (404) "Unknown Orthanc peer: <name>", as the plugin.
    """

    def __init__(self, ctx: "ServerContext", name: str, pool_size: int, transfer_id: str) -> None:
        from . import peers
        peer = peers.peer_registry(ctx).get(name)
        if peer is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown Orthanc peer: {name}")
        self.name = name
        self.peer = peer
        self.base = peer.url.rstrip("/")
        self.timeout = peers.peer_timeout(ctx, peer)
        self.session = peers.http_session(ctx, peer, pool_size=max(2, pool_size + 1))
        self.session.headers[HEADER_SENDER_TRANSFER_ID] = transfer_id

    def request(self, method: str, uri: str, *, data: bytes | None = None, json_body: Any = None,
                content_type: str | None = None, timeout: float | None = None) -> requests.Response:
        """One request; a 2xx answer is returned, anything else raised.

        Parameters
        ----------
        method : str
        uri : str
            Path below the peer's URL, starting with ``/``.
        data : bytes, optional
        json_body : any, optional
            Sent as ``application/json``.
        content_type : str, optional
        timeout : float, optional
            Seconds; the peer's timeout (``Timeout`` / ``HttpTimeout``) by default.

        Raises
        ------
        PeerHttpError
            A non-2xx status, or no answer.
        """
        headers = {}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        try:
            resp = self.session.request(method, self.base + uri, data=data, headers=headers,
                                        timeout=timeout if timeout is not None else self.timeout)
        except requests.RequestException as e:
            raise PeerHttpError(None, f"{method} {uri}: {type(e).__name__}: {e}") from None
        if not 200 <= resp.status_code < 300:
            raise PeerHttpError(resp.status_code, f"{method} {uri}: HTTP {resp.status_code} {_error_text(resp)}")
        return resp

    def close(self) -> None:
        """Close the pooled connections (aborts requests in flight)."""
        try:
            self.session.close()
        except Exception:  # noqa: BLE001
            pass


class QueryRunner:
    """Runs numbered HTTP queries on ``threads`` threads (``HttpQueriesRunner``): each
    query is tried ``1 + max_retries`` times, one second apart; the first query failing
    for good stops the run.

    Parameters
    ----------
    todo : iterable of int
        Query numbers to run.
    run_one : callable
        ``run_one(n) -> (uploaded bytes, downloaded bytes)``; raises on failure.
    threads : int
    max_retries : int
    fatal : callable, optional
        ``fatal(exc) -> bool``: an error not worth retrying.

    Attributes
    ----------
    done : set of int
    failure : BaseException or None
    uploaded, downloaded : int
        Bytes.
    """

    def __init__(self, todo, run_one: Callable[[int], tuple[int, int]], threads: int, max_retries: int,
                 fatal: Callable[[BaseException], bool] | None = None) -> None:
        self._queue = collections.deque(todo)
        self.total = len(self._queue)
        self._run_one = run_one
        self._max_retries = max_retries
        self._fatal = fatal or (lambda e: False)
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self._stop = threading.Event()
        self.done: set[int] = set()
        self.failure: BaseException | None = None
        self.failed_query: int | None = None
        self.uploaded = 0
        self.downloaded = 0
        self._active = 0
        self._t0 = time.monotonic()
        self._threads = [threading.Thread(target=self._worker, name=f"TF-HTTP-{i}", daemon=True)
                         for i in range(max(1, min(threads, self.total or 1)))]
        self._active = len(self._threads)
        for t in self._threads:
            t.start()

    def _worker(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    if not self._queue or self.failure is not None:
                        return
                    n = self._queue.popleft()
                attempt = 0
                while True:
                    try:
                        up, down = self._run_one(n)
                    except Exception as e:  # noqa: BLE001 - reported through self.failure
                        if self._stop.is_set():
                            with self._lock:
                                self._queue.appendleft(n)
                            return
                        attempt += 1
                        if attempt <= self._max_retries and not self._fatal(e):
                            log.warning("transfers: HTTP query %d failed (%s), retry %d of %d", n, e, attempt,
                                        self._max_retries)
                            if self._stop.wait(1.0):
                                with self._lock:
                                    self._queue.appendleft(n)
                                return
                            continue
                        with self._lock:
                            if self.failure is None:
                                self.failure, self.failed_query = e, n
                        return
                    with self._lock:
                        self.done.add(n)
                        self.uploaded += up
                        self.downloaded += down
                    break
        finally:
            with self._lock:
                self._active -= 1
                self._finished.notify_all()

    @property
    def running(self) -> bool:
        """bool: some thread still works."""
        with self._lock:
            return self._active > 0

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every thread to end; returns whether they did."""
        with self._lock:
            return self._finished.wait_for(lambda: self._active == 0, timeout)

    def stop(self, join: float = 0.0) -> None:
        """Ask the threads to stop after their current query (which may be aborted by
        closing the session); optionally wait ``join`` seconds."""
        self._stop.set()
        if join:
            self.wait(join)

    def speed_kbs(self) -> int:
        """int: kilobytes per second moved since the start."""
        dt = max(1e-3, time.monotonic() - self._t0)
        return int((self.uploaded + self.downloaded) / 1024 / dt)

