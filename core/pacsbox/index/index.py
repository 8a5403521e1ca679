"""The index: patients, studies, series and instances, with tags, metadata, attachments,
the change log, the exports log and global properties.

One narrow interface, :class:`Index`. :class:`SQLiteIndex` is the default (a WAL-mode file
in ``IndexDirectory``); the SQL is kept to the subset PostgreSQL also accepts, so that
another backend only supplies connections and placeholders.

Concurrency: reads use one connection per thread; writes are serialized by a lock and run
in ``BEGIN IMMEDIATE`` transactions, so concurrent first uploads of one new patient create
it once.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .attachments import MetadataAndAttachments
from .changes import ChangeLog
from .connection import IndexConnection
from .models import (CONTENT_TYPE_DICOM, LEVEL_NAMES, LOOKUP_TAGS, NORMALIZED_PREFIX, PLURAL, Attachment, Level,
                     NewInstance, Quota, Resource, ResourceGoneError, StoreOutcome, identifier_rows, now_stamp)
from .resources import ResourceRows

#: The names importable from here before the index was split (kept for callers).
__all__ = ["Index", "SQLiteIndex", "IndexInUseError", "CONTENT_TYPE_DICOM", "Level", "LEVEL_NAMES", "LOOKUP_TAGS",
           "NORMALIZED_PREFIX",
           "PLURAL", "Attachment", "NewInstance", "Quota", "Resource", "ResourceGoneError", "StoreOutcome",
           "identifier_rows", "now_stamp"]


class Index(ChangeLog, MetadataAndAttachments, ResourceRows, IndexConnection):
    """Interface of the index (see :class:`SQLiteIndex`), in four parts along its seams:
    connections and transactions (:class:`~pacsbox.index.connection.IndexConnection`), the
    resources table (:class:`~pacsbox.index.resources.ResourceRows`), what hangs off a
    resource (:class:`~pacsbox.index.attachments.MetadataAndAttachments`) and the logs
    (:class:`~pacsbox.index.changes.ChangeLog`).

    Every change-log row it writes (``/changes``) is announced, once its transaction
    committed, to the listeners of :meth:`add_change_listener` (the app's
    ``change_recorded`` notification), so that no caller can forget to announce one.
    """


class SQLiteIndex(Index):
    """The default index: a SQLite database in WAL mode.

    Parameters
    ----------
    path : path-like or ``":memory:"``
        The database file (``<IndexDirectory>/index.db``).
    """

    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = str(path)
        self._lock_fd: int | None = None
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _lock_exclusively(self.path + ".lock")
        try:
            self.create_schema()
        except BaseException:
            self._unlock()
            raise

    def close(self) -> None:
        """Close the connections and release the index's lock file."""
        super().close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _connect(self):
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=ON")
        c.execute("PRAGMA busy_timeout=30000")
        return c


class IndexInUseError(RuntimeError):
    """Another pacsbox process (or app) already uses this SQLite index."""


def _lock_exclusively(lock_path: str) -> int | None:
    """Hold an exclusive, non-blocking ``flock`` on ``lock_path`` for the life of the index.

    One SQLite index serves one server: a second ``pacsbox serve`` on the same folder would
    share the index but not the jobs registry or the storage clean-up. The lock is released
    when the index is closed or the process dies (SIGKILL included).

    Returns
    -------
    int or None
        The locked file descriptor (None where ``fcntl`` does not exist).

    Raises
    ------
    IndexInUseError
        The lock is held by another process or another open index.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise IndexInUseError(f"the index {lock_path[:-5]} is already in use by another pacsbox "
                              f"(lock file {lock_path})") from None
    return fd
