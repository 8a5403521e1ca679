"""Worker processes that compress pixel data for :func:`pacsbox.dicom.transcode.transcode`.

pydicom's parsing and writing hold the GIL, so the threads of a job transcoding many
instances share one core; these workers give compression the other cores. A worker is
``python -m pacsbox.dicom.transcode_worker``: it reads requests on its standard input and
writes answers on its standard output, each a 4-byte little-endian length then a pickle
(requests ``(data, target, quality)``, answers the converted bytes or None). It ends when
its standard input closes, so it never outlives the server.

The pool starts one worker per CPU on first use (``PACSBOX_TRANSCODE_PROCESSES`` sets the
number, ``0`` or ``1`` keeps compression in the calling thread). A worker that fails is
discarded and the call made in-process: the result is the same either way.
"""
from __future__ import annotations

import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading

log = logging.getLogger("pacsbox.transcode")

#: Environment variable: number of worker processes (0 or 1: none).
PROCESSES_ENV = "PACSBOX_TRANSCODE_PROCESSES"

_HEAD = struct.Struct("<I")


def _read_exact(stream, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("worker pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ, **{PROCESSES_ENV: "0"})
        self.proc = subprocess.Popen([sys.executable, "-m", "pacsbox.dicom.transcode_worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def call(self, data: bytes, target: str, quality: int) -> bytes | None:
        blob = pickle.dumps((data, target, quality), protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(_HEAD.pack(len(blob)) + blob)
        self.proc.stdin.flush()
        (n,) = _HEAD.unpack(_read_exact(self.proc.stdout, 4))
        return pickle.loads(_read_exact(self.proc.stdout, n))

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except Exception:  # noqa: BLE001
            self.proc.kill()


class WorkerPool:
    """A pool of transcoding worker processes.

    Parameters
    ----------
    size : int
        Number of processes, started on demand.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: "queue.Queue[_Worker]" = queue.Queue()
        self._started = 0
        self._failures = 0
        self._lock = threading.Lock()

    @property
    def disabled(self) -> bool:
        """bool: workers failed three times (e.g. pacsbox not importable by a new
        interpreter): compression stays in-process from then on."""
        return self._failures >= 3

    def _take(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._started < self.size:
                self._started += 1
                try:
                    return _Worker()
                except Exception:
                    self._started -= 1
                    self._failures += 1
                    raise
        return self._idle.get()

    def close(self) -> None:
        """End the idle workers (a worker ends by itself when its parent exits)."""
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._started -= 1
            worker.close()

    def transcode(self, data: bytes, target: str, quality: int) -> bytes | None:
        """Run :func:`pacsbox.dicom.transcode.transcode_here` in a worker.

        Raises
        ------
        OSError, EOFError
            The worker could not be started or died; it is discarded.
        """
        worker = self._take()
        try:
            out = worker.call(data, target, quality)
        except BaseException:
            with self._lock:
                self._started -= 1
                self._failures += 1
            worker.proc.kill()
            raise
        self._idle.put(worker)
        return out


_pool: WorkerPool | None | bool = None
_pool_lock = threading.Lock()


def pool() -> WorkerPool | None:
    """The process-wide pool, or None when disabled (one CPU, ``PACSBOX_TRANSCODE_PROCESSES``
    0 or 1, or inside a worker)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                try:
                    n = int(os.environ.get(PROCESSES_ENV, "") or (os.cpu_count() or 1))
                except ValueError:
                    n = 0
                _pool = WorkerPool(n) if n > 1 else False
    if not _pool or _pool.disabled:
        return None
    return _pool


def main() -> None:
    """The worker's loop (standard input to standard output)."""
    from pacsbox.dicom.transcode import transcode_here
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        (n,) = _HEAD.unpack(head)
        data, target, quality = pickle.loads(_read_exact(inp, n))
        try:
            res = transcode_here(data, target, quality)
        except Exception:  # noqa: BLE001 - transcode_here already answers None on failure
            res = None
        blob = pickle.dumps(res, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_HEAD.pack(len(blob)) + blob)
        out.flush()


if __name__ == "__main__":
    main()
