"""The sending side's reads: instances of a ``Resources`` list, their size and MD5, bucket
bodies, and the ``GET /transfers/chunks`` answer (the plugin's ``OrthancInstancesCache``,
``TransferScheduler::ParseListOfResources`` and ``ServeChunks``).

Instance files are kept in a least-recently-used memory cache of ``Transfers.CacheSize``
megabytes, so that the chunks of a large split instance, read by several connections at
once, cost one read of the storage area (a single instance larger than the cache is still
cached alone, as in the plugin).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from pacsbox import CONTENT_TYPE_DICOM, ErrorCode, OrthancError

from .transfers_protocol import Bucket, InstanceInfo, gzip_bytes, parse_resources

if TYPE_CHECKING:  # pragma: no cover
    from pacsbox import ServerContext

_LEVEL_INDEX = {"Patient": 0, "Study": 1, "Series": 2, "Instance": 3}


class InstancesCache:
    """LRU cache of instance files and their :class:`InstanceInfo`.

    Parameters
    ----------
    ctx : ServerContext
    max_bytes : int
        ``Transfers.CacheSize`` in bytes.

    Attributes
    ----------
    hits, misses : int
        Cache statistics (the plugin's ``orthanc_transfers_cache_hit_count`` /
        ``..._miss_count``).
    """

    def __init__(self, ctx: "ServerContext", max_bytes: int) -> None:
        self.ctx = ctx
        self.max_bytes = max_bytes
        self._files: "OrderedDict[str, bytes]" = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Event] = {}
        self.hits = 0
        self.misses = 0

    @property
    def memory_size(self) -> int:
        """int: bytes held."""
        with self._lock:
            return self._size

    def info(self, instance_id: str) -> InstanceInfo:
        """Size and MD5 of an instance, from the index (the file is read only when the
        index has no MD5 for it).

        Raises
        ------
        OrthancError
            ``UnknownResource`` (404) for an unknown instance.
        """
        att = self.ctx.index.attachment_by_public_id(instance_id, CONTENT_TYPE_DICOM)
        if att is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown instance: {instance_id}")
        if att.md5:
            return InstanceInfo(instance_id, int(att.uncompressed_size), att.md5.lower())
        data = self.read(instance_id)
        return InstanceInfo(instance_id, len(data), hashlib.md5(data).hexdigest())

    def read(self, instance_id: str) -> bytes:
        """The whole file of an instance, through the cache.

        Concurrent readers of the same missing instance wait for one read.

        Raises
        ------
        OrthancError
            ``UnknownResource`` / ``InexistentFile`` (404) as ``ctx.resources.read_file``.
        """
        while True:
            with self._lock:
                data = self._files.get(instance_id)
                if data is not None:
                    self._files.move_to_end(instance_id)
                    self.hits += 1
                    return data
                ev = self._loading.get(instance_id)
                if ev is None:
                    ev = self._loading[instance_id] = threading.Event()
                    break
            ev.wait(30)
        try:
            data = self.ctx.resources.read_file(instance_id)
            with self._lock:
                self.misses += 1
                while self._files and self._size + len(data) > self.max_bytes:
                    _, old = self._files.popitem(last=False)
                    self._size -= len(old)
                self._files[instance_id] = data
                self._size += len(data)
            return data
        finally:
            with self._lock:
                self._loading.pop(instance_id, None)
            ev.set()

    def chunk(self, instance_id: str, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset + size)`` of an instance's file.

        Raises
        ------
        OrthancError
            ``ParameterOutOfRange`` (400) when the range leaves the file.
        """
        data = self.read(instance_id)
        if offset + size > len(data):
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Chunk out of the file of instance {instance_id}")
        if offset == 0 and size == len(data):
            return data
        return data[offset:offset + size]

    def bucket_body(self, bucket: Bucket, compression: str) -> bytes:
        """The body of a bucket upload (``BucketPushQuery::ReadBody``): its chunks
        concatenated, gzipped for ``"gzip"``."""
        parts = [self.chunk(c.id, c.offset, c.size) for c in bucket.chunks]
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        return gzip_bytes(raw) if compression == "gzip" else raw

    def serve_chunks(self, instance_ids: Sequence[str], offset: int, size: int, compression: str) -> bytes:
        """The ``GET /transfers/chunks/{ids}`` answer (``ServeChunks``): the files of
        ``instance_ids`` concatenated, from byte ``offset`` of that concatenation, at most
        ``size`` bytes (0: to the end), gzipped for ``"gzip"``.

        Raises
        ------
        OrthancError
            ``UnknownResource`` (404) for an unknown instance.
        """
        out: list[bytes] = []
        total = 0
        for iid in instance_ids:
            if size and total >= size:
                break
            length = self.info(iid).size
            if offset >= length:
                offset -= length
                continue
            n = length - offset if size == 0 else min(size - total, length - offset)
            out.append(self.chunk(iid, offset, n))
            total += n
            offset = 0
        raw = b"".join(out)
        return gzip_bytes(raw) if compression == "gzip" else raw


def instances_of_resources(ctx: "ServerContext", resources: Any) -> list[str]:
    """Orthanc IDs of the instances below a ``Resources`` array of ``{"Level", "ID"}``.

    Parameters
    ----------
    ctx : ServerContext
    resources : any
        The array as received.

    Returns
    -------
    list of str
        Without duplicates, in index order.

    Raises
    ------
    OrthancError
        The errors of :func:`~.transfers_protocol.parse_resources`; ``UnknownResource``
        (404) for a missing resource (the plugin: "Missing study: <id>").
    """
    found = []
    for level, rid in parse_resources(resources):
        res = ctx.resources.find(rid, _LEVEL_INDEX[level])
        if res is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Missing {level.lower()}: {rid}")
        found.append(res)
    return [r.public_id for r in ctx.resources.instances_of(found)]


def describe_instances(cache: InstancesCache, instance_ids: Iterable[str]) -> list[InstanceInfo]:
    """:class:`InstanceInfo` of each instance (see :meth:`InstancesCache.info`)."""
    return [cache.info(i) for i in instance_ids]


def lookup_answer(infos: Sequence[InstanceInfo], originator: str) -> dict[str, Any]:
    """The ``POST /transfers/lookup`` answer (``LookupInstances``).

    Parameters
    ----------
    infos : sequence of InstanceInfo
    originator : str
        This server's accelerator UUID (``Originator``).

    Returns
    -------
    dict
        ``Instances`` (sorted by ID, as the plugin's map), ``Originator``,
        ``CountInstances``, ``TotalSize`` (string, bytes), ``TotalSizeMB`` (int).
    """
    from .transfers_protocol import megabytes
    ordered = sorted(infos, key=lambda i: i.id)
    total = sum(i.size for i in ordered)
    return {"Instances": [i.to_json() for i in ordered], "Originator": originator,
            "CountInstances": len(ordered), "TotalSize": str(total), "TotalSizeMB": megabytes(total)}
