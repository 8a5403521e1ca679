"""The receiving side of push transfers (the plugin's ``ActivePushTransactions``).

A sender creates a transaction (``POST /transfers/push``) announcing the instances and
the buckets, uploads each bucket (``PUT /transfers/push/{id}/{n}``), then commits
(``POST /transfers/push/{id}/commit``) or discards it (``DELETE /transfers/push/{id}``).

- At most ``MaxPushTransactions`` transactions are open; creating one more discards the
  least recently used one, as the plugin does.
- A transaction that receives nothing for ``PushTransactionTimeout`` seconds (pacsbox
  option, default 3600) is discarded by a reaper thread; the plugin keeps it until it is
  evicted.
- Whatever the way a transaction ends without a successful commit (discard, eviction,
  timeout, failed commit, shutdown), its staging folder is deleted and nothing of it is
  in the index.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Sequence

from pacsbox import ErrorCode, OrthancError

from .transfers_area import DownloadArea, staging_root
from .transfers_protocol import Bucket, InstanceInfo, check_bucket_layout, gunzip_bytes

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

log = logging.getLogger("pacsbox.dicom_net.transfers")


class PushTransaction:
    """One open push transaction.

    Attributes
    ----------
    id : str
        UUID (``ID`` of the creation answer).
    area : DownloadArea
    compression : str
        ``"none"`` or ``"gzip"``.
    last_touch : float
        ``time.monotonic()`` of the last activity.
    closed : bool
        Committed or discarded: later uploads are refused.
    """

    def __init__(self, tid: str, area: DownloadArea, compression: str) -> None:
        self.id = tid
        self.area = area
        self.compression = compression
        self.last_touch = time.monotonic()
        self.created = time.monotonic()
        self.closed = False
        self.lock = threading.Lock()


class PushTransactions:
    """The open push transactions of one server.

    Parameters
    ----------
    ctx : ServerContext
    max_transactions : int
        ``Transfers.MaxPushTransactions``.
    commit_threads : int
        ``Transfers.CommitThreadsCount``.
    timeout : float
        Seconds of inactivity after which a transaction is discarded (0: never).
    """

    def __init__(self, ctx: "ServerContext", max_transactions: int, commit_threads: int = 1,
                 timeout: float = 3600.0) -> None:
        self.ctx = ctx
        self.max = max_transactions
        self.commit_threads = commit_threads
        self.timeout = timeout
        self._items: "OrderedDict[str, PushTransaction]" = OrderedDict()
        self._lock = threading.Lock()
        self.counters = {"created": 0, "committed": 0, "aborted": 0, "received_bytes": 0, "reception_ms": 0,
                         "commit_ms": 0}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    # ---- life cycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the reaper thread of idle transactions (when a timeout is set)."""
        if self.timeout > 0 and self._reaper is None:
            self._reaper = threading.Thread(target=self._reap_loop, name="TF-REAPER", daemon=True)
            self._reaper.start()

    def stop(self) -> None:
        """Discard every open transaction and stop the reaper."""
        self._stop.set()
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        for tx in items:
            log.warning("transfers: discarding an uncommitted push transaction at shutdown: %s", tx.id)
            self._close(tx)
        if self._reaper is not None:
            self._reaper.join(5)
            self._reaper = None

    def _reap_loop(self) -> None:
        period = max(0.05, min(30.0, self.timeout / 4))
        while not self._stop.wait(period):
            self.reap()

    def reap(self, now: float | None = None) -> int:
        """Discard the transactions idle for more than the timeout.

        Parameters
        ----------
        now : float, optional
            ``time.monotonic()`` to compare with (tests).

        Returns
        -------
        int
            Transactions discarded.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [tx for tx in self._items.values() if now - tx.last_touch > self.timeout]
            for tx in old:
                del self._items[tx.id]
        for tx in old:
            log.warning("transfers: discarding push transaction %s, idle for more than %s s", tx.id, self.timeout)
            self.counters["aborted"] += 1
            self._close(tx)
        return len(old)

    # ---- operations -----------------------------------------------------------------------
    def create(self, instances: Sequence[InstanceInfo], buckets: Sequence[Bucket], compression: str) -> str:
        """Open a transaction (``POST /transfers/push``).

        Parameters
        ----------
        instances : sequence of InstanceInfo
        buckets : sequence of Bucket
        compression : {"none", "gzip"}

        Returns
        -------
        str
            The transaction's UUID.

        Raises
        ------
        OrthancError
            ``BadFileFormat`` (400) when a bucket names an unknown instance or leaves its
            bounds; ``CannotWriteFile`` when the staging folder cannot be made.
        """
        check_bucket_layout(instances, buckets)
        tid = str(uuid.uuid4())
        area = DownloadArea(os.path.join(staging_root(self.ctx), "push", tid), instances, buckets)
        tx = PushTransaction(tid, area, compression)
        evicted = None
        with self._lock:
            self.counters["created"] += 1
            if len(self._items) >= self.max:
                _, evicted = self._items.popitem(last=False)
                self.counters["aborted"] += 1
            self._items[tid] = tx
        if evicted is not None:
            log.warning("transfers: an inactive push transaction has been discarded: %s", evicted.id)
            self._close(evicted)
        log.info("transfers: created push transaction %s for %d instance(s), %d bucket(s)", tid, len(instances),
                 len(buckets))
        return tid

    def _get(self, tid: str, pop: bool = False) -> PushTransaction:
        with self._lock:
            tx = self._items.pop(tid, None) if pop else self._items.get(tid)
            if tx is not None and not pop:
                self._items.move_to_end(tid)
                tx.last_touch = time.monotonic()
        if tx is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown push transaction: {tid}")
        return tx

    def store(self, tid: str, index: int, data: bytes) -> None:
        """Receive bucket ``index`` (``PUT /transfers/push/{id}/{index}``).

        Raises
        ------
        OrthancError
            ``UnknownResource`` (404) for an unknown or closed transaction;
            ``ParameterOutOfRange`` (400) for a bucket number out of range; the errors of
            :meth:`DownloadArea.write_bucket`.
        """
        tx = self._get(tid)
        if not 0 <= index < len(tx.area.buckets):
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"No bucket {index} in push transaction {tid}")
        if tx.compression == "gzip":
            data = gunzip_bytes(data)  # outside the lock: the CPU-heavy part
        with tx.lock:
            if tx.closed:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown push transaction: {tid}")
            tx.area.write_bucket(tx.area.buckets[index], data, "none", index)
            tx.last_touch = time.monotonic()
        self.counters["received_bytes"] += len(data)

    def commit(self, tid: str) -> list[str]:
        """Commit (``POST /transfers/push/{id}/commit``): all instances stored, or none.

        The transaction is closed whatever the outcome (a failed commit cannot be retried;
        the sender starts a new transaction).

        Returns
        -------
        list of str
            Orthanc IDs of the instances created.

        Raises
        ------
        OrthancError
            ``UnknownResource`` (404) for an unknown transaction; the errors of
            :meth:`DownloadArea.commit` (``CorruptedFile`` for a missing bucket or an MD5
            mismatch).
        """
        tx = self._get(tid, pop=True)
        with tx.lock:
            tx.closed = True
        t0 = time.monotonic()
        self.counters["reception_ms"] += int(1000 * (t0 - tx.created))
        try:
            created = tx.area.commit(self.ctx, self.commit_threads)
            self.counters["commit_ms"] += int(1000 * (time.monotonic() - t0))
            self.counters["committed"] += 1
            log.info("transfers: committed push transaction %s (%d new instance(s))", tid, len(created))
            return created
        except BaseException:
            self.counters["aborted"] += 1
            raise
        finally:
            tx.area.discard()

    def discard(self, tid: str) -> None:
        """Discard (``DELETE /transfers/push/{id}``).

        Raises
        ------
        OrthancError
            ``UnknownResource`` (404) for an unknown transaction.
        """
        tx = self._get(tid, pop=True)
        self.counters["aborted"] += 1
        self._close(tx)

    def _close(self, tx: PushTransaction) -> None:
        with tx.lock:
            tx.closed = True
            tx.area.discard()

    def ids(self) -> list[str]:
        """list of str: open transactions, least recently used first."""
        with self._lock:
            return list(self._items)

    def available(self) -> int:
        """int: transactions that can still be opened before one is evicted."""
        with self._lock:
            return self.max - len(self._items)

    def info(self) -> dict[str, Any]:
        """dict: counters and open transactions (for metrics and tests)."""
        with self._lock:
            return dict(self.counters, open=list(self._items))
