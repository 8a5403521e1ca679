"""The files of archive jobs: the folder they are written in and the store of the outputs
of asynchronous archives (``MediaArchiveSize`` of them, least recently added evicted).
Part of :mod:`pacsbox_archive.jobs`.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

    from .jobs import ArchiveJob

log = logging.getLogger("pacsbox.archive")

_OUTPUTS_KEY = "pacsbox_archive.outputs"


class OutputStore:
    """The outputs of asynchronous archives of one server, least recently added first,
    at most ``MediaArchiveSize`` of them (Orthanc's ``SharedArchive``).

    Parameters
    ----------
    capacity : int
        ``MediaArchiveSize`` (at least 1).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self._items: "OrderedDict[ArchiveJob, str]" = OrderedDict()
        self._lock = threading.Lock()

    def add(self, job: "ArchiveJob", path: str) -> None:
        """Keep ``path`` as the output of ``job``; evict (and delete) the oldest outputs
        beyond the capacity."""
        evicted = []
        with self._lock:
            self._items[job] = path
            self._items.move_to_end(job)
            while len(self._items) > self.capacity:
                old_job, old_path = self._items.popitem(last=False)
                old_job.output_path = None
                evicted.append(old_path)
        for p in evicted:
            _unlink(p)

    def get(self, job: "ArchiveJob") -> str | None:
        """The output file of ``job``, or None (never produced, evicted or deleted)."""
        with self._lock:
            return self._items.get(job)

    def remove(self, job: "ArchiveJob") -> bool:
        """Drop the output of ``job`` and delete its file; returns whether it existed."""
        with self._lock:
            path = self._items.pop(job, None)
        if path is None:
            return False
        job.output_path = None
        _unlink(path)
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def output_store(ctx: "ServerContext") -> OutputStore:
    """The server's :class:`OutputStore` (created on first use, sized by
    ``MediaArchiveSize``)."""
    store = ctx.stash.get(_OUTPUTS_KEY)
    if store is None:
        store = ctx.stash.setdefault(_OUTPUTS_KEY, OutputStore(ctx.config.int("MediaArchiveSize")))
    return store


def output_directory(ctx: "ServerContext") -> str:
    """Folder of archive files: ``<IndexDirectory>/pacsbox-archives`` (created)."""
    d = os.path.join(str(ctx.config.path("IndexDirectory")), "pacsbox-archives")
    os.makedirs(d, exist_ok=True)
    return d


def _unlink(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError:
            log.exception("cannot delete archive file %s", path)
