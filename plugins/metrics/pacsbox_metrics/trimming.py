"""Periodic ``malloc_trim`` (Orthanc's memory-trimming housekeeper, since 1.11.3).

On glibc, freed heap memory at the end of an arena is only given back to the system when
``malloc_trim`` is called. Orthanc runs a thread that calls ``malloc_trim(128 KiB)``
every 30 seconds and records its duration as ``orthanc_memory_trimming_duration_ms``
(max over 10 s). :class:`MemoryTrimmer` does the same for one pacsbox app. Where the C
library has no ``malloc_trim`` (musl, macOS, Windows) no thread is started and the
metric never appears, as in Orthanc.

Source: Orthanc ``ServerContext::MemoryTrimmingThread``;
``OrthancServer/Resources/ImplementationNotes/memory_consumption.txt``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger("pacsbox.metrics")

#: Name of the metric recorded after each trim.
METRIC = "orthanc_memory_trimming_duration_ms"

#: Padding left at the top of the heap, in bytes (Orthanc's value).
PAD_BYTES = 128 * 1024


def find_malloc_trim() -> Callable[[int], int] | None:
    """``malloc_trim`` of the C library, or None where it does not exist."""
    for name in (None, ctypes.util.find_library("c")):
        try:
            fn = getattr(ctypes.CDLL(name), "malloc_trim")
        except (OSError, AttributeError, TypeError):
            continue
        fn.argtypes = [ctypes.c_size_t]
        fn.restype = ctypes.c_int
        return fn
    return None


class MemoryTrimmer:
    """A daemon thread calling ``malloc_trim`` every ``interval`` seconds.

    Parameters
    ----------
    metrics : MetricsStore
        ``ctx.metrics``; each trim is recorded into :data:`METRIC` (milliseconds, max
        over 10 s).
    interval : float
        Seconds between two trims (Orthanc: 30).
    trim : callable, optional
        ``trim(pad_bytes) -> int``; :func:`find_malloc_trim` by default.
    """

    def __init__(self, metrics: Any, interval: float = 30.0, trim: Callable[[int], int] | None = None) -> None:
        self.metrics = metrics
        self.interval = float(interval)
        self.trim = trim if trim is not None else find_malloc_trim()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        """bool: the platform has ``malloc_trim``."""
        return self.trim is not None

    def trim_once(self) -> float:
        """Trim now and record the duration.

        Returns
        -------
        float
            The duration, in seconds.
        """
        t0 = time.perf_counter()
        self.trim(PAD_BYTES)  # type: ignore[misc]
        seconds = time.perf_counter() - t0
        self.metrics.record_duration(METRIC, seconds)
        return seconds

    def start(self) -> bool:
        """Start the thread (once); False when ``malloc_trim`` is unavailable or the
        interval is not positive."""
        if not self.available or self.interval <= 0 or self._thread is not None:
            return False
        self._thread = threading.Thread(target=self._run, name="pacsbox-memory-trim", daemon=True)
        self._thread.start()
        log.info("memory trimming every %g s", self.interval)
        return True

    def stop(self) -> None:
        """Stop the thread and wait for it (at most a few seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.trim_once()
            except Exception:  # noqa: BLE001 - housekeeping never kills the server
                log.exception("malloc_trim failed")
