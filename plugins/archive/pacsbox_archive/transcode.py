"""Transcoding of the files put in an archive (``Transcode`` / ``?transcode=``).

Orthanc converts every file to the requested transfer syntax and keeps the original
file when it cannot (reference section 4.1, ``ArchiveJob``). The conversion is the
core's (:func:`pacsbox.transcode`, pydicom).
"""
from __future__ import annotations

from pydicom.uid import UID

from pacsbox import ErrorCode, OrthancError
from pacsbox import transcode as convert_transfer_syntax


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
        or decoder available for the conversion: Orthanc keeps the original then).
    """
    out = convert_transfer_syntax(data, target)
    return data if out is None else out
