"""Transcoding of the files put in an archive (``Transcode`` / ``?transcode=``).

Orthanc converts every file to the requested transfer syntax and keeps the original
file when it cannot (reference section 4.1, ``ArchiveJob``). Here pydicom does the
conversion: uncompressed targets by decompressing (when needed) and re-encoding, and
compressed targets with :meth:`pydicom.dataset.Dataset.compress` for the encoders
pydicom has (RLE Lossless, JPEG-LS and JPEG 2000 when their plugins are installed,
Deflated Explicit VR Little Endian).
"""
from __future__ import annotations

import io
import logging

import pydicom
from pydicom.uid import UID

from pacsbox import ErrorCode, OrthancError

log = logging.getLogger("pacsbox.archive")

_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_DEFLATED = "1.2.840.10008.1.2.1.99"


def check_transfer_syntax(uid: object) -> str:
    """Validate a ``Transcode`` value.

    Parameters
    ----------
    uid : object
        The value given in the request.

    Returns
    -------
    str
        The UID.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT``/``PARAMETER_OUT_OF_RANGE`` when it is not a string
        naming a known transfer syntax.
    """
    if not isinstance(uid, str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Field \"Transcode\" should be a string")
    u = UID(uid.strip())
    if not u.is_transfer_syntax:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown transfer syntax: {uid}")
    return str(u)


def transcode(data: bytes, target: str) -> bytes:
    """Convert a Part 10 file to ``target``; return it unchanged when not possible.

    Parameters
    ----------
    data : bytes
        The file.
    target : str
        Transfer syntax UID.

    Returns
    -------
    bytes
        The converted file, or ``data`` itself (already in ``target``, or no encoder
        or decoder available for the conversion).
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        source = str(ds.file_meta.get("TransferSyntaxUID", ""))
        if source == target:
            return data
        tsu = UID(target)
        if target in _UNCOMPRESSED or target == _DEFLATED:
            if UID(source).is_compressed:
                ds.decompress()
            ds.file_meta.TransferSyntaxUID = tsu
        else:
            if UID(source).is_compressed:
                ds.decompress()
            ds.compress(tsu)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()
    except Exception as e:  # noqa: BLE001 - Orthanc keeps the original file on any failure
        log.info("cannot transcode an instance to %s (%s: %s); keeping it as it is", target,
                 type(e).__name__, e)
        return data
