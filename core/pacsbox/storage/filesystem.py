"""The default storage area: one file per attachment in a two-level folder tree.

Layout (as Orthanc's): ``<StorageDirectory>/ab/cd/abcd....-....`` where ``ab`` and ``cd``
are the first four hex digits of the UUID. Writes go to a temporary file in the target
folder, are flushed and fsync'ed (option ``SyncStorageArea``, default true), then renamed
over the final name, so a crash never leaves a half-written file under a real name.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Iterable

from ..hookspecs import hookimpl


def compress_blob(data: bytes) -> bytes:
    """Orthanc's ``StorageCompression`` format: the uncompressed size as an 8-byte
    little-endian integer, then the zlib stream (so that an Orthanc storage folder and a
    pacsbox one stay interchangeable)."""
    return struct.pack("<Q", len(data)) + zlib.compress(data, 6)


def compressed_size_of(head: bytes) -> int | None:
    """The uncompressed size announced by a blob in :func:`compress_blob`'s format (its
    first 10 bytes or more), or None when the bytes do not look like one (a DICOM file
    starts with its preamble, never with a size then a zlib header)."""
    if len(head) < 10 or head[8] != 0x78 or ((head[8] << 8) | head[9]) % 31:
        return None
    size = struct.unpack_from("<Q", head)[0]
    return size if size < (1 << 42) else None


def decompress_blob(blob: bytes) -> bytes | None:
    """The content of a :func:`compress_blob` blob; None when ``blob`` is not one."""
    size = compressed_size_of(blob[:10])
    if size is None:
        return None
    try:
        data = zlib.decompress(blob[8:])
    except zlib.error:
        return None
    return data if len(data) == size else None


class FilesystemStorageArea:
    """Attachments as files under ``root``.

    Parameters
    ----------
    root : path-like
        The storage directory (created when missing).
    sync : bool, default True
        fsync each file before the rename (Orthanc ``SyncStorageArea``).
    """

    #: Files in Orthanc's ``StorageCompression`` format (:func:`compress_blob`) are read
    #: back uncompressed by :meth:`read` and :meth:`open`; :meth:`read_stored` gives the
    #: bytes as stored.
    supports_compression = True

    def __init__(self, root: str | os.PathLike, sync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        self._root = str(self.root)

    def path(self, uuid: str) -> Path:
        """Path: the file holding attachment ``uuid``."""
        return self.root / uuid[0:2] / uuid[2:4] / uuid

    def _file(self, uuid: str) -> str:
        return f"{self._root}/{uuid[0:2]}/{uuid[2:4]}/{uuid}"

    def create(self, uuid: str, data: bytes, content_type: int = 1) -> None:
        """Write ``data`` atomically under ``uuid`` (see the module docstring)."""
        self.create_stream(uuid, (data,), content_type)

    def create_stream(self, uuid: str, chunks: Iterable[bytes], content_type: int = 1) -> None:
        """Write the pieces ``chunks`` one after the other, atomically, under ``uuid``
        (a large file never held whole in memory); see the module docstring.

        Raises
        ------
        Exception
            Whatever writing or ``chunks`` raised; nothing is left under ``uuid`` then.
        """
        final = self._file(uuid)
        tmp = final + ".tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:  # first file of this folder
            os.makedirs(os.path.dirname(final), exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            for data in chunks:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            if self.sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        os.close(fd)
        os.replace(tmp, final)

    def read(self, uuid: str, content_type: int = 1) -> bytes:
        """Return the content of ``uuid`` (uncompressed); raises FileNotFoundError when absent."""
        with open(self._file(uuid), "rb") as f:
            blob = f.read()
        if compressed_size_of(blob[:10]) is not None:
            data = decompress_blob(blob)
            if data is not None:
                return data
        return blob

    def read_stored(self, uuid: str, content_type: int = 1) -> bytes:
        """Return the bytes of ``uuid`` as stored (compressed or not)."""
        with open(self._file(uuid), "rb") as f:
            return f.read()

    def open(self, uuid: str, content_type: int = 1) -> BinaryIO:
        """Open ``uuid`` for reading (its uncompressed content); raises FileNotFoundError
        when absent."""
        f = open(self._file(uuid), "rb")
        head = f.read(10)
        f.seek(0)
        if compressed_size_of(head) is not None:
            with f:
                data = decompress_blob(f.read())
            if data is not None:
                return io.BytesIO(data)
            f = open(self._file(uuid), "rb")
        return f

    def remove(self, uuid: str, content_type: int = 1) -> None:
        """Delete ``uuid`` (a missing file is ignored)."""
        try:
            os.unlink(self._file(uuid))
        except FileNotFoundError:
            pass

    def cleanup_temporary_files(self) -> int:
        """Remove ``*.tmp`` leftovers of writes interrupted by a crash.

        Returns
        -------
        int
            Number of files removed.
        """
        n = 0
        for p in self.root.glob("??/??/*.tmp"):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
        return n


@hookimpl(trylast=True)
def get_storage_area(config):
    """Default provider: :class:`FilesystemStorageArea` on ``StorageDirectory``."""
    return FilesystemStorageArea(config.path("StorageDirectory"), sync=config.bool("SyncStorageArea"))
