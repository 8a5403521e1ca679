"""The receiving side's staging area (the plugin's ``DownloadArea``) and its atomic commit.

Received buckets are written into one sparse file per instance under a staging folder
(``<IndexDirectory>/pacsbox-transfers/<push|pull>/<uuid>/``); nothing reaches the index
before the commit. The commit (:meth:`DownloadArea.commit`):

1. checks that every bucket arrived and that the MD5 of every staged file equals the
   announced one; a missing or corrupt instance refuses the whole commit
   (``CorruptedFile``) and nothing is stored;
2. stores the files through ``ctx.ingest.store`` (origin ``Plugins``, as the plugin's
   ``RestApiPost("/instances")``), writing to a journal (``commit.journal``) the ID of
   every instance this commit created;
3. if a store fails, deletes the instances it created (instances that were already
   there before the transfer are left alone), so the transfer leaves nothing behind.

The journal also covers a crash in the middle of step 2: at start-up
(:func:`recover_staging`) a staging folder whose journal has no ``done`` line gets its
journaled instances deleted, then the folder is removed. Beyond the plugin, whose commit
stops at the first bad instance and keeps those stored before it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from pacsbox import ErrorCode, Level, OrthancError

from .transfers_protocol import Bucket, InstanceInfo, gunzip_bytes

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

log = logging.getLogger("pacsbox.dicom_net.transfers")

JOURNAL = "commit.journal"
_READ = 1024 * 1024


def staging_root(ctx: "ServerContext") -> str:
    """``<IndexDirectory>/pacsbox-transfers``: where received buckets wait for their commit.

    Returns
    -------
    str
        The folder path (not created here).
    """
    return os.path.join(str(ctx.config.path("IndexDirectory")), "pacsbox-transfers")


def _delete_instance(ctx: "ServerContext", instance_id: str) -> None:
    res = ctx.index.lookup(instance_id, Level.INSTANCE)
    if res is not None:
        ctx.resources.delete(res)


def rollback(ctx: "ServerContext", instance_ids: Iterable[str]) -> int:
    """Delete instances created by an interrupted or failed commit.

    Parameters
    ----------
    ctx : ServerContext
    instance_ids : iterable of str
        Orthanc IDs of the instances to delete.

    Returns
    -------
    int
        How many IDs were processed.
    """
    n = 0
    for iid in instance_ids:
        try:
            _delete_instance(ctx, iid)
        except Exception:  # noqa: BLE001 - keep rolling back the others
            log.exception("transfers: cannot roll back instance %s", iid)
        n += 1
    return n


def recover_staging(ctx: "ServerContext") -> int:
    """Clean the staging folders left by a previous run of the server.

    A folder with an unfinished commit journal has its journaled instances deleted
    (:func:`rollback`) and is removed; every push folder is removed (push transactions do
    not survive a restart, as in the plugin); other pull folders stay for their reloaded
    job.

    Parameters
    ----------
    ctx : ServerContext

    Returns
    -------
    int
        Instances rolled back.
    """
    root = staging_root(ctx)
    rolled = 0
    base = os.path.join(root, "push")
    if os.path.isdir(base):
        for name in os.listdir(base):
            d = os.path.join(base, name)
            rolled += _recover_one(ctx, d)
            shutil.rmtree(d, ignore_errors=True)
    base = os.path.join(root, "pull")
    if os.path.isdir(base):  # pull areas stay for their reloaded job, unless a commit was cut
        for name in os.listdir(base):
            d = os.path.join(base, name)
            if os.path.exists(os.path.join(d, JOURNAL)):
                rolled += _recover_one(ctx, d)
                shutil.rmtree(d, ignore_errors=True)
    return rolled


def sweep_pull_areas(ctx: "ServerContext", grace: float = 60.0) -> int:
    """Delete the pull staging folders that no unfinished ``PullTransfer`` job uses (a
    paused job canceled, a job forgotten).

    Parameters
    ----------
    ctx : ServerContext
    grace : float
        Seconds: folders modified more recently are kept.

    Returns
    -------
    int
        Folders deleted.
    """
    import time

    base = os.path.join(staging_root(ctx), "pull")
    if not os.path.isdir(base):
        return 0
    keep = set()
    for rec in ctx.jobs.records():
        area = getattr(rec.job, "area_dir", None)
        if area and not rec.state.is_final:
            keep.add(os.path.normpath(area))
    n = 0
    for name in os.listdir(base):
        d = os.path.normpath(os.path.join(base, name))
        if d in keep:
            continue
        try:
            if time.time() - os.path.getmtime(d) < grace:
                continue
        except OSError:
            continue
        shutil.rmtree(d, ignore_errors=True)
        n += 1
    return n


def _recover_one(ctx: "ServerContext", directory: str) -> int:
    path = os.path.join(directory, JOURNAL)
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            lines = [ln.strip() for ln in f]
    except FileNotFoundError:
        return 0
    if "done" in lines:
        return 0
    ids = [ln[len("stored "):] for ln in lines if ln.startswith("stored ")]
    if ids:
        log.warning("transfers: rolling back %d instance(s) of a commit interrupted by a restart (%s)",
                    len(ids), directory)
    return rollback(ctx, ids)


class DownloadArea:
    """Staged files of one incoming transfer (the plugin's ``DownloadArea``).

    Parameters
    ----------
    directory : str
        Staging folder (created, emptied).
    instances : sequence of InstanceInfo
        What the transfer announces.
    buckets : sequence of Bucket, optional
        The transfer's buckets (push mode), so that :meth:`commit` can name a bucket that
        never arrived.
    reopen : bool
        Keep the files already staged in ``directory`` (a paused or reloaded pull job).

    Raises
    ------
    OrthancError
        ``CannotWriteFile`` when the folder cannot be prepared.
    """

    def __init__(self, directory: str, instances: Sequence[InstanceInfo], buckets: Sequence[Bucket] = (),
                 reopen: bool = False) -> None:
        self.directory = directory
        self.instances = {i.id: i for i in instances}
        # files are named by position, never by the ID a remote sent (no path games)
        self._names = {iid: f"{n:06d}.dcm" for n, iid in enumerate(sorted(self.instances))}
        self.buckets = list(buckets)
        self.received: set[int] = set()
        self.total_size = sum(i.size for i in instances)
        self._lock = threading.Lock()
        try:
            if not reopen:
                shutil.rmtree(directory, ignore_errors=True)
            os.makedirs(directory, exist_ok=True)
            for inst in instances:
                path = self._path(inst.id)
                if reopen and os.path.exists(path):
                    continue
                with open(path, "wb") as f:
                    if inst.size:
                        f.truncate(inst.size)  # a sparse file of the expected size
        except OSError as e:
            raise OrthancError(ErrorCode.CANNOT_WRITE_FILE, f"Cannot prepare the transfer area: {e}") from None

    def _path(self, instance_id: str) -> str:
        return os.path.join(self.directory, self._names[instance_id])

    def write_bucket(self, bucket: Bucket, data: bytes, compression: str, index: int | None = None) -> None:
        """Write the bytes of one bucket into the staged files.

        Parameters
        ----------
        bucket : Bucket
        data : bytes
            The bucket as it travelled (gzip when ``compression`` is ``"gzip"``).
        compression : {"none", "gzip"}
        index : int, optional
            The bucket's number, recorded as received.

        Raises
        ------
        OrthancError
            ``NetworkProtocol`` when the size differs from the bucket's (as the plugin);
            ``BadFileFormat`` for corrupt gzip; ``UnknownResource`` for a chunk of an
            unknown instance; ``ParameterOutOfRange`` for a chunk out of bounds.
        """
        if compression == "gzip":
            data = gunzip_bytes(data)
        if len(data) != bucket.total_size:
            raise OrthancError(ErrorCode.NETWORK_PROTOCOL,
                               f"WriteUncompressedBucket: {len(data)} != {bucket.total_size}")
        view = memoryview(data)
        pos = 0
        for c in bucket.chunks:
            inst = self.instances.get(c.id)
            if inst is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, "Unknown instance")
            if c.offset + c.size > inst.size:
                raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, "WriteChunk out of bounds")
            if c.size:
                fd = os.open(self._path(c.id), os.O_WRONLY)
                try:
                    os.pwrite(fd, view[pos:pos + c.size], c.offset)
                finally:
                    os.close(fd)
            pos += c.size
        if index is not None:
            with self._lock:
                self.received.add(index)

    def _md5(self, instance_id: str) -> str:
        h = hashlib.md5()
        with open(self._path(instance_id), "rb") as f:
            while True:
                block = f.read(_READ)
                if not block:
                    break
                h.update(block)
        return h.hexdigest()

    def check(self) -> None:
        """Check that every bucket arrived and every staged file has its announced MD5.

        Raises
        ------
        OrthancError
            ``CorruptedFile`` (500), naming the first missing bucket or bad instance, with
            the plugin's wording "Bad MD5 sum in a transfered DICOM instance: <id>".
        """
        if self.buckets:
            missing = [i for i in range(len(self.buckets)) if i not in self.received]
            if missing:
                raise OrthancError(ErrorCode.CORRUPTED_FILE,
                                   f"Bucket {missing[0]} of the transfer was never received "
                                   f"({len(missing)} bucket(s) missing)")
        for iid, inst in sorted(self.instances.items()):
            if self._md5(iid) != inst.md5:
                raise OrthancError(ErrorCode.CORRUPTED_FILE, f"Bad MD5 sum in a transfered DICOM instance: {iid}")

    def commit(self, ctx: "ServerContext", threads: int = 1) -> list[str]:
        """Store every staged instance, all or nothing (see the module's docstring).

        Parameters
        ----------
        ctx : ServerContext
        threads : int
            ``Transfers.CommitThreadsCount``: parallel stores.

        Returns
        -------
        list of str
            Orthanc IDs of the instances this commit created (not those already stored).

        Raises
        ------
        OrthancError
            ``CorruptedFile`` from :meth:`check`; or the error of the first failing store
            (``CannotStoreInstance`` when it is not an :class:`OrthancError`), after the
            rollback. Either way nothing of the transfer remains in the index.
        """
        self.check()
        journal_path = os.path.join(self.directory, JOURNAL)
        created: list[str] = []
        jlock = threading.Lock()
        with open(journal_path, "a", encoding="ascii") as journal:
            def store_one(iid: str) -> None:
                with open(self._path(iid), "rb") as f:
                    data = f.read()
                result = ctx.ingest.store(data, {"Origin": "Plugins"})
                if result.status == "Success" and result.ids is not None:
                    with jlock:
                        created.append(result.ids[3])
                        journal.write(f"stored {result.ids[3]}\n")
                        journal.flush()
                elif result.status not in ("Success", "AlreadyStored"):
                    raise OrthancError(ErrorCode.CANNOT_STORE_INSTANCE,
                                       f"Cannot import a transfered DICOM instance into Orthanc: {iid} "
                                       f"({result.status})")

            ids = sorted(self.instances)
            try:
                if threads <= 1:
                    for iid in ids:
                        store_one(iid)
                else:
                    with ThreadPoolExecutor(threads, thread_name_prefix="TF-COMMIT") as pool:
                        for fut in [pool.submit(store_one, iid) for iid in ids]:
                            fut.result()
            except BaseException as e:
                log.error("transfers: commit failed (%s); rolling back %d instance(s)", e, len(created))
                rollback(ctx, list(created))
                journal.write("done\n")
                journal.flush()
                if isinstance(e, OrthancError) or not isinstance(e, Exception):
                    raise
                raise OrthancError(ErrorCode.CANNOT_STORE_INSTANCE,
                                   f"Cannot import a transfered DICOM instance into Orthanc: {e}") from e
            journal.write("done\n")
            journal.flush()
        return created

    def discard(self) -> None:
        """Delete the staging folder (never raises)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def stats(self) -> dict[str, Any]:
        """dict: ``instances``, ``buckets``, ``received`` counts (for logs and tests)."""
        with self._lock:
            return {"instances": len(self.instances), "buckets": len(self.buckets), "received": len(self.received)}
