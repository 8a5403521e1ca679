"""The ``PushTransfer`` and ``PullTransfer`` jobs (the plugin's ``PushJob`` / ``PullJob``)
and the HTTP machinery they share (``HttpQueriesQueue`` / ``HttpQueriesRunner``).

Push (``POST /transfers/send``), as the plugin's states:

1. *create*: plan the buckets, ``POST <peer>/transfers/push`` with
   ``{"Instances", "Buckets", "Compression"}``; the answer's ``Path`` is the transaction;
2. *push*: ``PUT <peer><Path>/<n>`` of every bucket, ``Threads`` at once over pooled
   keep-alive connections, each retried ``MaxHttpRetries`` times one second apart;
3. *commit*: ``POST <peer><Path>/commit`` (timeout ``PeerCommitTimeout``); or, when a
   bucket failed for good, ``DELETE <peer><Path>`` and the job fails.

Pull (``POST /transfers/pull``): *lookup* (``POST <peer>/transfers/lookup``), *pull*
(``GET <peer>/transfers/chunks/...`` into a local staging area), *commit* (local, all or
nothing, see :mod:`.transfers_area`).

Beyond the plugin (whose jobs are never saved, see its TODO): both jobs serialize which
buckets are done, so a paused job, or one reloaded after a restart, goes on where it
stopped. A resumed push whose transaction the receiver no longer knows (it restarted, or
evicted it) opens a new transaction and sends everything again.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Mapping

import requests

from pacsbox import ErrorCode, Job, OrthancError, StepResult

from .transfers_area import DownloadArea, staging_root
from .transfers_protocol import (HEADER_SENDER_TRANSFER_ID, JOB_TYPE_PULL, JOB_TYPE_PUSH, KEY_COMPRESSION,
                                 KEY_ORIGINATOR, KEY_PEER, KEY_RESOURCES, KEY_SENDER_TRANSFER_ID, URI_LOOKUP,
                                 URI_PUSH, Bucket, InstanceInfo, megabytes, plan_buckets)

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

log = logging.getLogger("pacsbox.dicom_net.transfers")


# ------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------
# jobs
# ------------------------------------------------------------------------------------------

#: Smallest bucket size that :func:`effective_bucket_size` goes down to, bytes.
MIN_BUCKET_SIZE = 256 * 1024


def effective_bucket_size(st, instances) -> int:
    """The bucket size used to plan a transfer, bytes.

    ``BucketSize``, lowered for a transfer too small to make two buckets per thread, down
    to :data:`MIN_BUCKET_SIZE` (so that the last bucket does not travel alone while the
    other connections idle). The layout still follows the plugin's rules, which its
    receiving side checks; only the sender (push) or the puller (pull) chooses it.

    Parameters
    ----------
    st : TransferSettings
        ``bucket_size`` (bytes) and ``threads``.
    instances : sequence of InstanceInfo

    Returns
    -------
    int
    """
    total = sum(i.size for i in instances)
    wanted = -(-total // (2 * max(1, st.threads)))
    return max(1, min(st.bucket_size, max(MIN_BUCKET_SIZE, wanted)))


class _Interrupted(Exception):
    """A pause, cancel or shutdown came while a request was in flight."""


def _settings(ctx: "ServerContext"):
    from .transfers import settings
    return settings(ctx)


class _TransferJob(Job):
    """What push and pull jobs share: the query, the bucket plan, the done buckets."""

    def __init__(self, query: Mapping[str, Any]) -> None:
        super().__init__()
        self.query = dict(query)
        self.query.setdefault(KEY_SENDER_TRANSFER_ID, str(uuid.uuid4()))
        self.state = "init"
        self.instances: list[InstanceInfo] = []
        self.buckets: list[Bucket] = []
        self.done: set[int] = set()
        self.uploaded = 0
        self.downloaded = 0
        self.speed = 0
        self.client: PeerClient | None = None
        self.runner: QueryRunner | None = None
        self._lock = threading.Lock()

    # ---- shared plumbing ----------------------------------------------------------------
    @property
    def peer_name(self) -> str:
        """str: the peer's symbolic name (``Peer``)."""
        return self.query[KEY_PEER]

    @property
    def compression(self) -> str:
        """str: ``"gzip"`` or ``"none"`` (``Compression``)."""
        return self.query[KEY_COMPRESSION]

    def start(self, ctx: "ServerContext") -> None:
        """Open the peer's session (fails the job for an unknown peer)."""
        self.client = PeerClient(ctx, self.peer_name, _settings(ctx).threads, self.query[KEY_SENDER_TRANSFER_ID])

    def _absorb(self, runner: QueryRunner) -> None:
        """Take the results of a finished (or stopped) runner; called once per runner."""
        with runner._lock:  # noqa: SLF001 - a consistent snapshot of the counters
            self.done |= runner.done
            self.uploaded += runner.uploaded
            self.downloaded += runner.downloaded
        self.speed = runner.speed_kbs()

    def interrupt(self) -> None:
        """Abort the HTTP queries in flight (pause, cancel, shutdown)."""
        runner = self.runner
        if runner is not None:
            runner.stop()
        client = self.client
        if client is not None:
            client.close()

    def stop(self, reason: str) -> None:
        """Stop the threads; the done buckets are kept for a resumed run."""
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.stop(join=5.0)
            self._absorb(runner)
        if self.client is not None:
            self.client.close()

    def _interruptible(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (one blocking request) on a helper thread and wait for it, giving up
        as soon as a pause, cancel or shutdown is requested (the request then ends in the
        background, its outcome ignored).

        Raises
        ------
        _Interrupted
            A stop was requested first.
        Exception
            What ``fn`` raised.
        """
        box: dict[str, Any] = {}
        finished = threading.Event()

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the job's thread
                box["error"] = e
            finally:
                finished.set()

        threading.Thread(target=run, name="TF-REQ", daemon=True).start()
        while not finished.wait(0.1):
            if self.stop_requested:
                raise _Interrupted()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _fail(self, code: ErrorCode, details: str) -> StepResult:
        self.error_code = int(code)
        self.error_details = details
        log.error("transfers: %s job toward peer %s failed: %s", self.type_name, self.peer_name, details)
        return StepResult.FAILURE

    def _done_count(self) -> int:
        runner = self.runner
        n = len(self.done)
        if runner is not None:
            with runner._lock:  # noqa: SLF001
                n = len(self.done | runner.done)
        return n

    def progress(self) -> float:
        """``(1 + completed queries) / (2 + scheduled queries)``, as the plugin; 100 at the
        end."""
        if self.state == "success":
            return 100.0
        return 100.0 * (1 + self._done_count()) / (2 + len(self.buckets))

    def _transfer_counts(self) -> tuple[int, int]:
        up, down = self.uploaded, self.downloaded
        runner = self.runner
        if runner is not None:
            up += runner.uploaded
            down += runner.downloaded
        return up, down

    def base_serialized(self) -> dict[str, Any]:
        """The plugin's serialized query (``TransferQuery::Serialize``: ``Peer``,
        ``Resources``, ``Compression``, ``SenderTransferID``, ``Originator``) plus
        pacsbox's progress under ``"pacsbox"`` (state, instances, bucket plan, done
        buckets, bytes moved).

        Returns
        -------
        dict
        """
        d = {KEY_PEER: self.peer_name, KEY_RESOURCES: self.query[KEY_RESOURCES], KEY_COMPRESSION: self.compression,
             KEY_SENDER_TRANSFER_ID: self.query[KEY_SENDER_TRANSFER_ID]}
        if KEY_ORIGINATOR in self.query:
            d[KEY_ORIGINATOR] = self.query[KEY_ORIGINATOR]
        runner = self.runner
        done = set(self.done)
        if runner is not None:
            with runner._lock:  # noqa: SLF001
                done |= runner.done
        up, down = self._transfer_counts()
        d["pacsbox"] = {"State": self.state, "Instances": [i.to_json() for i in self.instances],
                        "Buckets": [b.to_json() for b in self.buckets], "DoneBuckets": sorted(done),
                        "Uploaded": up, "Downloaded": down}
        return d

    def load_base(self, data: Mapping[str, Any]) -> None:
        """Restore what :meth:`base_serialized` saved under ``"pacsbox"`` (a job saved
        by the plugin's form alone starts from its first state).

        Raises
        ------
        OrthancError
            ``BadFileFormat`` for a malformed saved plan.
        """
        extra = data.get("pacsbox") or {}
        self.state = extra.get("State", "init")
        self.instances = [InstanceInfo.from_json(i) for i in extra.get("Instances", [])]
        self.buckets = [Bucket.from_json(b) for b in extra.get("Buckets", [])]
        self.done = set(int(i) for i in extra.get("DoneBuckets", []))
        self.uploaded = int(extra.get("Uploaded", 0))
        self.downloaded = int(extra.get("Downloaded", 0))

    def reset(self) -> None:
        """Start again from the first state (``resubmit``)."""
        self.state = "init"
        self.instances, self.buckets, self.done = [], [], set()
        self.uploaded = self.downloaded = 0


class PushTransferJob(_TransferJob):
    """``PushTransfer``: send resources to a peer that runs the accelerator.

    Parameters
    ----------
    query : mapping
        The checked ``/transfers/send`` body (``Peer``, ``Resources``, ``Compression``,
        optional ``SenderTransferID`` / ``Originator``).

    Notes
    -----
    ``Content`` (as the plugin): ``Resources``, ``Peer``, ``Compression``,
    ``TotalInstances``, ``TotalSizeMB``, ``UploadedSizeMB``, ``CompletedHttpQueries``,
    ``NetworkSpeedKBs``.
    """

    type_name = JOB_TYPE_PUSH

    def __init__(self, query: Mapping[str, Any]) -> None:
        super().__init__(query)
        self.transaction: str | None = None
        self.restarts = 0

    def step(self, ctx: "ServerContext") -> StepResult:
        """One state step (see the module's docstring)."""
        st = _settings(ctx)
        assert self.client is not None
        if self.state == "init":
            from .transfers import source_cache
            from .transfers_source import describe_instances, instances_of_resources
            ids = instances_of_resources(ctx, self.query[KEY_RESOURCES])
            self.instances = describe_instances(source_cache(ctx), ids)
            self.buckets = plan_buckets(self.instances, effective_bucket_size(st, self.instances))
            self.state = "create"
            return StepResult.CONTINUE
        if self.state == "create":
            self.done = set()
            self.transaction = None
            body = {"Instances": [i.to_json() for i in sorted(self.instances, key=lambda i: i.id)],
                    "Buckets": [b.to_json() for b in self.buckets], "Compression": self.compression}
            try:
                answer = self._with_retries(st.max_http_retries, lambda: self._interruptible(
                    lambda: self.client.request("POST", URI_PUSH, json_body=body,
                                                timeout=st.peer_commit_timeout).json()))
            except _Interrupted:
                return StepResult.CONTINUE  # paused/canceled: created again at resume
            except (PeerHttpError, ValueError) as e:
                if self.stop_requested:
                    return StepResult.CONTINUE
                return self._fail(ErrorCode.NETWORK_PROTOCOL,
                                  f'Cannot create a push transaction to peer "{self.peer_name}" (check that it has '
                                  f"the transfers accelerator plugin installed): {e}")
            if not isinstance(answer, Mapping) or not isinstance(answer.get("Path"), str):
                return self._fail(ErrorCode.NETWORK_PROTOCOL, f"Bad network protocol from peer: {self.peer_name}")
            self.transaction = answer["Path"]
            self.state = "push"
            return StepResult.CONTINUE
        if self.state == "push":
            return self._push_step(ctx, st)
        if self.state == "commit":
            try:
                self._with_retries(st.max_http_retries, lambda: self._interruptible(
                    lambda: self.client.request("POST", f"{self.transaction}/commit", data=b"",
                                                timeout=st.peer_commit_timeout)))
            except _Interrupted:
                return StepResult.CONTINUE  # paused: committed again at resume (404 → sent again)
            except PeerHttpError as e:
                if self.stop_requested and e.status is None:
                    return StepResult.CONTINUE
                if e.status == 404 and self.restarts < 3:
                    # the receiver no longer knows the transaction (it restarted, or a first
                    # commit went through but its answer was lost): send again, the
                    # instances already stored answer AlreadyStored
                    self.restarts += 1
                    log.warning("transfers: peer %s does not know push transaction %s at commit, sending again",
                                self.peer_name, self.transaction)
                    self.state = "create"
                    return StepResult.CONTINUE
                return self._fail(ErrorCode.NETWORK_PROTOCOL,
                                  f"Cannot commit push transaction on remote peer {self.peer_name}: {e.details}")
            self.state = "success"
            return StepResult.SUCCESS
        if self.state == "discard":
            self._discard_remote(st)
            return StepResult.FAILURE
        raise OrthancError(ErrorCode.INTERNAL_ERROR, f"Bad state of a push job: {self.state}")

    def _with_retries(self, retries: int, fn: Callable[[], Any]) -> Any:
        attempt = 0
        while True:
            try:
                return fn()
            except PeerHttpError as e:
                attempt += 1
                if attempt > retries or (e.status is not None and 400 <= e.status < 500) or self.wait_stop(1.0):
                    raise

    def _push_step(self, ctx: "ServerContext", st) -> StepResult:
        if self.runner is None:
            todo = [i for i in range(len(self.buckets)) if i not in self.done]
            if not todo:
                self.state = "commit"
                return StepResult.CONTINUE
            from .transfers import source_cache
            cache = source_cache(ctx)
            client, tx, compression, buckets = self.client, self.transaction, self.compression, self.buckets

            def send(n: int) -> tuple[int, int]:
                body = cache.bucket_body(buckets[n], compression)
                client.request("PUT", f"{tx}/{n}", data=body, content_type="application/octet-stream")
                return len(body), 0

            self.runner = QueryRunner(todo, send, st.threads, st.max_http_retries,
                                      fatal=lambda e: isinstance(e, PeerHttpError) and e.status is not None
                                      and 400 <= e.status < 500)
        runner = self.runner
        runner.wait(0.2)
        if runner.running:
            self.speed = runner.speed_kbs()
            return StepResult.CONTINUE
        self.runner = None
        self._absorb(runner)
        if runner.failure is None:
            if len(self.done) >= len(self.buckets):
                self.state = "commit"
            return StepResult.CONTINUE  # else stopped (pause, cancel): the next run goes on
        e = runner.failure
        if isinstance(e, PeerHttpError) and e.status == 404 and self.restarts < 3:
            # the receiver no longer knows the transaction (restart, eviction): start again
            self.restarts += 1
            log.warning("transfers: peer %s lost push transaction %s, opening a new one", self.peer_name,
                        self.transaction)
            self.state = "create"
            return StepResult.CONTINUE
        self.error_code = int(ErrorCode.NETWORK_PROTOCOL)
        self.error_details = (f"Cannot send bucket {runner.failed_query} to peer {self.peer_name}: "
                              f"{getattr(e, 'details', e)}")
        self.state = "discard"
        return StepResult.CONTINUE

    def _discard_remote(self, st) -> None:
        if self.client is None or not self.transaction:
            return
        try:
            self.client.request("DELETE", self.transaction, timeout=min(30.0, self.client.timeout or 30.0))
        except PeerHttpError as e:
            log.warning("transfers: cannot discard push transaction %s on peer %s: %s", self.transaction,
                        self.peer_name, e)

    def stop(self, reason: str) -> None:
        """Stop the upload threads; a canceled job also discards its remote transaction."""
        super().stop(reason)
        if reason == "Canceled" and self.transaction and self.state in ("push", "commit", "discard"):
            self._discard_remote(None)  # the session closed by interrupt() opens new connections
            if self.client is not None:
                self.client.close()

    def public_content(self) -> dict[str, Any]:
        """The plugin's ``Content`` of a push job."""
        up, _ = self._transfer_counts()
        out: dict[str, Any] = {"Resources": self.query[KEY_RESOURCES], "Peer": self.peer_name,
                               "Compression": self.compression}
        if self.state != "init":
            out["TotalInstances"] = len(self.instances)
            out["TotalSizeMB"] = megabytes(sum(i.size for i in self.instances))
            out["UploadedSizeMB"] = megabytes(up)
            out["CompletedHttpQueries"] = self._done_count()
            out["NetworkSpeedKBs"] = self.speed
        return out

    def serialize(self) -> dict[str, Any]:
        """The plugin's serialized query plus pacsbox's progress (transaction, plan, done
        buckets)."""
        d = self.base_serialized()
        d["pacsbox"]["Transaction"] = self.transaction
        d["pacsbox"]["Restarts"] = self.restarts
        return d

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx: "ServerContext") -> "PushTransferJob":
        """Rebuild a push job; it goes on uploading the buckets not done yet."""
        job = cls(data)
        job.load_base(data)
        extra = data.get("pacsbox") or {}
        job.transaction = extra.get("Transaction")
        job.restarts = int(extra.get("Restarts", 0))
        if job.state == "discard" or (job.state in ("push", "commit") and not job.transaction):
            job.state = "create" if job.buckets else "init"
        return job

    def reset(self) -> None:
        """Start again from the first state, with a new transaction (``resubmit``)."""
        super().reset()
        self.transaction = None
        self.restarts = 0


class PullTransferJob(_TransferJob):
    """``PullTransfer``: fetch resources from a peer that runs the accelerator.

    Parameters
    ----------
    query : mapping
        The checked ``/transfers/pull`` body (``Peer``, ``Resources``, ``Compression``,
        optional ``Originator``).

    Notes
    -----
    ``Content`` (as the plugin): ``Originator`` (when given), ``Resources``, ``Peer``,
    ``Compression``, ``TotalInstances``, ``TotalSizeMB``, ``DownloadedSizeMB``,
    ``CompletedHttpQueries``, ``NetworkSpeedKBs``.
    """

    type_name = JOB_TYPE_PULL

    def __init__(self, query: Mapping[str, Any]) -> None:
        super().__init__(query)
        self.area_dir: str | None = None
        self.area: DownloadArea | None = None

    def _open_area(self, ctx: "ServerContext", fresh: bool) -> DownloadArea:
        if self.area_dir is None:
            self.area_dir = os.path.join(staging_root(ctx), "pull", str(uuid.uuid4()))
        self.area = DownloadArea(self.area_dir, self.instances, reopen=not fresh)
        return self.area

    def step(self, ctx: "ServerContext") -> StepResult:
        """One state step (see the module's docstring)."""
        st = _settings(ctx)
        assert self.client is not None
        if self.state == "init":
            try:
                answer = self._lookup(st)
            except _Interrupted:
                return StepResult.CONTINUE  # paused/canceled: asked again at resume
            except (PeerHttpError, ValueError) as e:
                if self.stop_requested:
                    return StepResult.CONTINUE  # interrupted by a pause: asked again at resume
                return self._fail(ErrorCode.NETWORK_PROTOCOL,
                                  f'Cannot retrieve the list of instances to pull from peer "{self.peer_name}" '
                                  f"(check that it has the transfers accelerator plugin installed): {e}")
            if (not isinstance(answer, Mapping) or not isinstance(answer.get("Instances"), list)
                    or not isinstance(answer.get(KEY_ORIGINATOR), str)):
                return self._fail(ErrorCode.NETWORK_PROTOCOL, f"Bad network protocol from peer: {self.peer_name}")
            if KEY_ORIGINATOR in self.query and self.query[KEY_ORIGINATOR] != answer[KEY_ORIGINATOR]:
                return self._fail(ErrorCode.NETWORK_PROTOCOL,
                                  'Invalid originator, check out the "RemoteSelf" configuration option of peer: '
                                  f"{self.peer_name}")
            try:
                self.instances = [InstanceInfo.from_json(i) for i in answer["Instances"]]
            except OrthancError:
                return self._fail(ErrorCode.NETWORK_PROTOCOL, f"Bad network protocol from peer: {self.peer_name}")
            if not self.instances:
                self.state = "success"
                return StepResult.SUCCESS
            self.buckets = plan_buckets(self.instances, effective_bucket_size(st, self.instances), base_url=self.client.base,
                                        compression=self.compression)
            self.done = set()
            self._open_area(ctx, fresh=True)
            self.state = "pull"
            return StepResult.CONTINUE
        if self.state == "pull":
            return self._pull_step(ctx, st)
        if self.state == "commit":
            if self.area is None and not (self.area_dir and os.path.isdir(self.area_dir)):
                self.state, self.done = "pull", set()  # staging lost (a commit cut by a crash)
                return StepResult.CONTINUE
            area = self.area or self._open_area(ctx, fresh=False)
            try:
                area.commit(ctx, st.commit_threads)
            finally:
                area.discard()
                self.area = None
            self.state = "success"
            return StepResult.SUCCESS
        raise OrthancError(ErrorCode.INTERNAL_ERROR, f"Bad state of a pull job: {self.state}")

    def _lookup(self, st) -> Any:
        attempt = 0
        while True:
            try:
                return self._interruptible(
                    lambda: self.client.request("POST", URI_LOOKUP, json_body=self.query[KEY_RESOURCES]).json())
            except PeerHttpError as e:
                attempt += 1
                if attempt > st.max_http_retries or (e.status is not None and 400 <= e.status < 500) \
                        or self.wait_stop(1.0):
                    raise

    def _pull_step(self, ctx: "ServerContext", st) -> StepResult:
        if self.runner is None:
            area = self.area
            if area is None or not os.path.isdir(area.directory):
                if self.area_dir and os.path.isdir(self.area_dir):
                    area = self._open_area(ctx, fresh=False)
                else:  # staging lost (restart): download everything again
                    self.done = set()
                    area = self._open_area(ctx, fresh=True)
            todo = [i for i in range(len(self.buckets)) if i not in self.done]
            client, compression, buckets = self.client, self.compression, self.buckets

            def fetch(n: int) -> tuple[int, int]:
                resp = client.request("GET", buckets[n].pull_uri(compression))
                body = resp.content
                area.write_bucket(buckets[n], body, compression, n)
                return 0, len(body)

            self.runner = QueryRunner(todo, fetch, st.threads, st.max_http_retries)
        runner = self.runner
        runner.wait(0.2)
        if runner.running:
            self.speed = runner.speed_kbs()
            return StepResult.CONTINUE
        self.runner = None
        self._absorb(runner)
        if runner.failure is None:
            if len(self.done) >= len(self.buckets):
                self.state = "commit"
            return StepResult.CONTINUE  # else stopped (pause, cancel): the next run goes on
        e = runner.failure
        self._drop_area()
        return self._fail(ErrorCode.NETWORK_PROTOCOL,
                          f"Cannot download bucket {runner.failed_query} from peer {self.peer_name}: "
                          f"{getattr(e, 'details', e)}")

    def _drop_area(self) -> None:
        if self.area is not None:
            self.area.discard()
        elif self.area_dir:
            import shutil
            shutil.rmtree(self.area_dir, ignore_errors=True)
        self.area = None

    def stop(self, reason: str) -> None:
        """Stop the download threads; the staging area is kept for a pause or a restart,
        deleted otherwise."""
        super().stop(reason)
        if reason not in ("Paused", "Shutdown", "Success"):
            self._drop_area()

    def public_content(self) -> dict[str, Any]:
        """The plugin's ``Content`` of a pull job."""
        _, down = self._transfer_counts()
        out: dict[str, Any] = {}
        if KEY_ORIGINATOR in self.query:
            out["Originator"] = self.query[KEY_ORIGINATOR]
        out.update({"Resources": self.query[KEY_RESOURCES], "Peer": self.peer_name, "Compression": self.compression})
        if self.state != "init":
            out["TotalInstances"] = len(self.instances)
            out["TotalSizeMB"] = megabytes(sum(i.size for i in self.instances))
            out["DownloadedSizeMB"] = megabytes(down)
            out["CompletedHttpQueries"] = self._done_count()
            out["NetworkSpeedKBs"] = self.speed
        return out

    def serialize(self) -> dict[str, Any]:
        """The plugin's serialized query plus pacsbox's progress (plan, done buckets,
        staging folder)."""
        d = self.base_serialized()
        d["pacsbox"]["Area"] = self.area_dir
        return d

    @classmethod
    def from_serialized(cls, data: Mapping[str, Any], ctx: "ServerContext") -> "PullTransferJob":
        """Rebuild a pull job; it goes on downloading the buckets not done yet (all of
        them when its staging folder is gone)."""
        job = cls(data)
        job.load_base(data)
        job.area_dir = (data.get("pacsbox") or {}).get("Area")
        if job.state == "commit" and not (job.area_dir and os.path.isdir(job.area_dir)):
            job.state, job.done = "pull", set()
        return job

    def reset(self) -> None:
        """Start again from the lookup, dropping the staged files (``resubmit``)."""
        self._drop_area()
        super().reset()
        self.area_dir = None
