"""A write-ahead journal of the storage files whose index row may not exist (yet, or any
more), so that a crash never leaves a file no attachment row references.

Every file is written to the storage area *before* the index transaction that references
it commits, and removed *after* the one that dereferences it commits. A crash between the
two leaves an orphan file. :class:`PendingFiles` appends the file's UUID to a journal
(``index.pending-files`` next to the index) before the file is written, or before the
deleting transaction commits; at start-up, :meth:`PendingFiles.recover` removes every
journalled file that no attachment row references, then empties the journal.

The journal is appended with ``write(2)`` on an ``O_APPEND`` descriptor, which survives a
SIGKILL of the process (the kernel holds the data). With ``sync`` (the option
``SyncStorageArea``, default true) each append is also ``fdatasync``'ed before
:meth:`PendingFiles.begin` returns, so that it survives a power loss too: the storage file
it announces is fsync'ed after it, and a deleting transaction commits after it. It is
rewritten (and, with ``sync``, fsync'ed before it replaces the old one) with only the files
still in flight once it exceeds :attr:`PendingFiles.max_entries` lines, so it stays small.

New files do not pay one ``fdatasync`` each: :meth:`PendingFiles.new_file` hands out UUIDs
journalled ahead in batches of :attr:`PendingFiles.batch` (one append, one sync per batch).
A journalled UUID that was never used names no file, which recovery skips at no cost.
"""
from __future__ import annotations

import logging
import os
import threading
import uuid as uuidlib
from pathlib import Path
from typing import Iterable

log = logging.getLogger("pacsbox.storage")

#: Name of the journal file, in the index directory.
JOURNAL_NAME = "index.pending-files"


class PendingFiles:
    """The journal of storage files in flight.

    Parameters
    ----------
    path : path-like
        The journal file (created when missing).
    max_entries : int, default 1000
        Lines after which the journal is rewritten with the files still in flight.
    sync : bool, default False
        ``fdatasync`` every append (Orthanc's ``SyncStorageArea``): the journal then
        survives a power loss, not only a crash of the process.
    """

    def __init__(self, path: str | os.PathLike, max_entries: int = 1000, sync: bool = False) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self.sync = sync
        #: UUIDs journalled ahead per append by :meth:`new_file`.
        self.batch = 64
        self._ahead: dict[int, list[str]] = {}  # content type -> journalled, unused UUIDs
        self._lock = threading.Lock()
        self._inflight: dict[str, int] = {}   # "uuid content_type" -> references in flight
        self._lines = 0
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return self._fd

    def begin(self, files: Iterable[tuple[str, int]]) -> list[str]:
        """Journal files about to be written, or about to be dereferenced by a commit.

        Parameters
        ----------
        files : iterable of (str, int)
            ``(uuid, content_type)`` pairs.

        Returns
        -------
        list of str
            Keys to give to :meth:`end` once the index and the storage agree again.
        """
        keys = [f"{uuid} {int(ct)}" for uuid, ct in files]
        if not keys:
            return keys
        with self._lock:
            for k in keys:
                self._inflight[k] = self._inflight.get(k, 0) + 1
            self._append(keys)
        return keys

    def new_file(self, content_type: int = 1) -> tuple[str, list[str]]:
        """A fresh UUID for a file about to be written, already journalled.

        UUIDs are journalled :attr:`batch` at a time (one append, one ``fdatasync`` with
        ``sync``), so that a stream of uploads pays one sync per batch, not per file.

        Parameters
        ----------
        content_type : int, default 1

        Returns
        -------
        (str, list of str)
            The UUID, and the keys to give to :meth:`end` once the file is referenced or
            removed.
        """
        ct = int(content_type)
        with self._lock:
            ahead = self._ahead.get(ct)
            if not ahead:
                ahead = self._ahead[ct] = [str(uuidlib.uuid4()) for _ in range(self.batch)]
                keys = [f"{u} {ct}" for u in ahead]
                for k in keys:
                    self._inflight[k] = self._inflight.get(k, 0) + 1
                self._append(keys)
            uuid = ahead.pop()
        return uuid, [f"{uuid} {ct}"]

    def _append(self, keys: list[str]) -> None:
        """Append lines (lock held), rewriting the journal first when it grew too long."""
        if self._lines + len(keys) > self.max_entries:
            self._rewrite()
        fd = self._open()
        os.write(fd, ("\n".join(keys) + "\n").encode("ascii"))
        if self.sync:
            os.fdatasync(fd)
        self._lines += len(keys)

    def end(self, keys: Iterable[str]) -> None:
        """The files of :meth:`begin` are referenced, or removed: no longer in flight."""
        with self._lock:
            for k in keys:
                n = self._inflight.get(k, 0) - 1
                if n > 0:
                    self._inflight[k] = n
                else:
                    self._inflight.pop(k, None)

    def _rewrite(self) -> None:
        """Replace the journal with the files in flight (lock held)."""
        tmp = self.path.with_name(self.path.name + ".new")
        data = "".join(k + "\n" for k in self._inflight).encode("ascii")
        with open(tmp, "wb") as f:
            f.write(data)
            if self.sync:
                f.flush()
                os.fsync(f.fileno())
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        os.replace(tmp, self.path)
        self._lines = len(self._inflight)

    def recover(self, index, storage) -> int:
        """Remove the journalled files that no attachment row references (start-up).

        Parameters
        ----------
        index : Index
            The open index (its lock says no other server writes).
        storage : StorageArea

        Returns
        -------
        int
            Number of orphan files removed.
        """
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return 0
        entries: dict[str, int] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                entries[parts[0]] = int(parts[1])
        referenced = index.referenced_uuids(list(entries)) if entries else set()
        removed = 0
        for uuid, ct in entries.items():
            if uuid in referenced:
                continue
            try:
                storage.remove(uuid, ct)
                removed += 1
            except Exception:  # noqa: BLE001 - keep the entry for the next start
                log.exception("cannot remove the orphan storage file %s", uuid)
                return removed
        with self._lock:
            self._rewrite()
        return removed

    def close(self) -> None:
        """Close the journal's descriptor."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def begin(ctx, files: Iterable[tuple[str, int]]) -> list[str]:
    """:meth:`PendingFiles.begin` on the app's journal (``ctx.pending_files``), if any."""
    pending = getattr(ctx, "pending_files", None)
    return pending.begin(files) if pending is not None else []


def new_file(ctx, content_type: int = 1) -> tuple[str, list[str]]:
    """:meth:`PendingFiles.new_file` on the app's journal (``ctx.pending_files``); without
    one, a fresh UUID and no keys."""
    pending = getattr(ctx, "pending_files", None)
    if pending is None:
        return str(uuidlib.uuid4()), []
    return pending.new_file(content_type)


def end(ctx, keys: Iterable[str]) -> None:
    """:meth:`PendingFiles.end` on the app's journal (``ctx.pending_files``), if any."""
    pending = getattr(ctx, "pending_files", None)
    if pending is not None and keys:
        pending.end(keys)
