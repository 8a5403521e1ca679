"""The storage-area protocol: move bytes by UUID, nothing else.

Source: Orthanc ``IStorageArea`` / ``OrthancPluginRegisterStorageArea``.
"""
from __future__ import annotations

from typing import BinaryIO, Protocol, runtime_checkable

#: Attachment content types, as numbered by Orthanc (``FileContentType``).
CONTENT_DICOM = 1
CONTENT_DICOM_AS_JSON = 2
CONTENT_DICOM_UNTIL_PIXEL_DATA = 3


@runtime_checkable
class StorageArea(Protocol):
    """Where attachments are stored.

    Every method takes the attachment ``uuid`` (a 36-character UUID string) and its
    ``content_type`` (an Orthanc ``FileContentType`` number, 1 = DICOM).
    """

    def create(self, uuid: str, data: bytes, content_type: int) -> None:
        """Store ``data`` under ``uuid``, atomically: a reader sees all of it or nothing.

        Raises
        ------
        OSError
            The write failed; nothing is left under ``uuid``.
        """

    # Optional: ``create_stream(uuid, chunks, content_type)`` writes an iterable of bytes
    # pieces atomically, as :meth:`create` (a large upload is then never joined in memory;
    # see ``FilesystemStorageArea.create_stream``). Without it, the pieces are joined.

    def read(self, uuid: str, content_type: int) -> bytes:
        """Return the whole attachment.

        Raises
        ------
        FileNotFoundError
            No such attachment.
        """

    def open(self, uuid: str, content_type: int) -> BinaryIO:
        """Open the attachment for streaming reads (the caller closes it).

        Raises
        ------
        FileNotFoundError
            No such attachment.
        """

    def remove(self, uuid: str, content_type: int) -> None:
        """Delete the attachment; a missing one is not an error."""
