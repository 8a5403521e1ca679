"""The files of an archive prepared ahead of its writer: read, transcoded if asked, CRC'd and
deflated in a small thread pool, in order, within a bounded window (:class:`_Pipeline`).
Part of :mod:`pacsbox_archive.jobs`.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from .dicomfile import FileFacts
from .layout import PlanItem
from .zipstream import PreparedEntry


@dataclass
class _Prepared:
    """A file read and made ready ahead of the writer."""

    entry: PreparedEntry | None          # None: large file, streamed by the writer itself
    facts: FileFacts | None = None
    header: Any = None                   # pydicom Dataset for non-image SOP classes
    missing: bool = False                # the file vanished from the storage area


class _Pipeline:
    """Prepares plan items ahead of the writer, in order, ``window`` at a time."""

    def __init__(self, fn: Callable[[PlanItem], _Prepared], plan: list[PlanItem], start: int, workers: int) -> None:
        self.fn = fn
        self.plan = plan
        self.next = start
        self.window = max(2, 2 * workers)
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pacsbox-zip")
        self.futures: dict[int, Future] = {}

    def get(self, i: int) -> _Prepared:
        while self.next < len(self.plan) and self.next < i + self.window:
            self.futures[self.next] = self.pool.submit(self.fn, self.plan[self.next])
            self.next += 1
        fut = self.futures.pop(i, None)
        if fut is None:
            return self.fn(self.plan[i])
        return fut.result()

    def close(self) -> None:
        for f in self.futures.values():
            f.cancel()
        self.futures.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
