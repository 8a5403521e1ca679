"""What the ``PushTransfer`` and ``PullTransfer`` jobs share (:class:`TransferJob`): the
query, the bucket plan and the done buckets, the peer's session and the runner of HTTP
queries, pause/cancel plumbing, progress, and the serialized form that lets a paused or
reloaded job go on where it stopped; and the bucket size a transfer is planned with
(:func:`effective_bucket_size`).

The jobs are in :mod:`.transfers_jobs`, the HTTP machinery in :mod:`.transfers_http`.
"""
from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING, Any, Callable, Mapping

from pacsbox import ErrorCode, Job, StepResult

from .transfers_http import PeerClient, QueryRunner
from .transfers_protocol import (KEY_COMPRESSION, KEY_ORIGINATOR, KEY_PEER, KEY_RESOURCES, KEY_SENDER_TRANSFER_ID,
                                 Bucket, InstanceInfo)

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

log = logging.getLogger("pacsbox.dicom_net.transfers")


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


class RequestInterrupted(Exception):
    """A pause, cancel or shutdown came while a request was in flight."""


def transfer_settings(ctx: "ServerContext"):
    """The app's ``Transfers`` settings (:func:`pacsbox_dicom_net.transfers.settings`,
    imported when called: that module imports the jobs).

    Parameters
    ----------
    ctx : ServerContext

    Returns
    -------
    TransferSettings
    """
    from .transfers import settings
    return settings(ctx)


class TransferJob(Job):
    """What push and pull jobs share: the query, the bucket plan, the done buckets.

    Parameters
    ----------
    query : mapping
        The checked ``/transfers/send`` or ``/transfers/pull`` body (``Peer``,
        ``Resources``, ``Compression``, optional ``SenderTransferID`` / ``Originator``); a
        ``SenderTransferID`` is drawn when absent.
    """

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
        self.client = PeerClient(ctx, self.peer_name, transfer_settings(ctx).threads,
                                 self.query[KEY_SENDER_TRANSFER_ID])

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
        RequestInterrupted
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
                raise RequestInterrupted()
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

