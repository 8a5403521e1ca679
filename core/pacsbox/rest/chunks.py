"""Chunked uploads of Orthanc Explorer's jQuery File Upload: ``POST /instances`` as
``multipart/form-data`` with ``X-File-Name`` and ``X-File-Size``.

Each request carries one chunk of a file; the chunks of one file (same name and size) are
appended in their order of arrival until ``X-File-Size`` bytes are there, then the whole
file is stored as one upload. Chunks of different files may interleave. A file that gets
no chunk for :attr:`ChunkStore.timeout` seconds is dropped, and at most
:attr:`ChunkStore.max_files` files are assembled at once (the oldest gives way), as
Orthanc's ``ChunkStore`` keeps a bounded number of places.
"""
from __future__ import annotations

import threading
import time


class ChunkStore:
    """Files being assembled from chunks.

    Parameters
    ----------
    timeout : float
        Seconds without a chunk after which a file is dropped (default 300).
    max_files : int
        Files assembled at once (default 16).
    """

    def __init__(self, timeout: float = 300.0, max_files: int = 16) -> None:
        self.timeout = timeout
        self.max_files = max_files
        self._files: dict[tuple[str, int], tuple[bytearray, float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire(time.monotonic())
            return len(self._files)

    def _expire(self, now: float) -> None:
        for key in [k for k, (_, t) in self._files.items() if now - t > self.timeout]:
            del self._files[key]

    def add(self, name: str, size: int, chunk: bytes) -> bytes | None:
        """Append a chunk of file ``name`` of ``size`` bytes.

        Returns
        -------
        bytes or None
            The whole file once ``size`` bytes were received (the file leaves the store),
            else None.
        """
        now = time.monotonic()
        key = (name, size)
        with self._lock:
            self._expire(now)
            entry = self._files.get(key)
            if entry is None:
                if len(chunk) >= size:
                    return bytes(chunk)
                while len(self._files) >= self.max_files:
                    oldest = min(self._files, key=lambda k: self._files[k][1])
                    del self._files[oldest]
                buf = bytearray()
            else:
                buf = entry[0]
            buf += chunk
            if len(buf) >= size:
                self._files.pop(key, None)
                return bytes(buf)
            self._files[key] = (buf, now)
            return None
