"""Transfer-syntax conversion of Part-10 files, with pydicom (``Transcode`` of
modify/anonymize, archives and media).

Orthanc converts to the requested transfer syntax and keeps the original file when it
cannot (reference sections 4.1 and 5.2). Here:

- uncompressed targets (implicit VR little endian, explicit VR little endian, explicit
  VR big endian) and Deflated Explicit VR Little Endian: the source is decompressed when
  needed, every element is decoded in the source encoding and written in the target's;
  between little and big endian the binary values pydicom keeps as bytes (OW, OF, OL,
  OD, OV and native Pixel Data) are byte-swapped;
- compressed targets: :meth:`pydicom.dataset.Dataset.compress` for the encoders pydicom
  has (RLE Lossless always; JPEG-LS and JPEG 2000 with the pylibjpeg/pyjpegls plugins).

Decompressing or byte-swapping pixel data needs NumPy (and, for JPEG sources, the
pylibjpeg plugins): the ``transcode`` extra of the distribution installs them. Without
them the conversion is reported as impossible and the caller keeps the file.
"""
from __future__ import annotations

import io
import logging
import warnings

import pydicom
from pydicom.uid import UID, UID_dictionary

log = logging.getLogger("pacsbox.transcode")

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
UNCOMPRESSED = (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE)

_PIXEL_DATA = 0x7FE00010
_SWAP_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def is_transfer_syntax(uid: str) -> bool:
    """Whether ``uid`` is a transfer syntax of the DICOM standard (pydicom's dictionary)."""
    entry = UID_dictionary.get(str(uid).strip())
    return entry is not None and entry[1] == "Transfer Syntax"


def transcode(data: bytes, target: str) -> bytes | None:
    """Convert a Part-10 file to another transfer syntax.

    Parameters
    ----------
    data : bytes
        The file.
    target : str
        Transfer Syntax UID (PS3.5 section 10).

    Returns
    -------
    bytes or None
        The converted file (``data`` itself when it is already in ``target``), or None
        when pydicom cannot do the conversion (no encoder or decoder, unreadable file):
        the caller then keeps the original, as Orthanc does.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            source = UID(str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_LE)))
            if source == target:
                return data
            if source.is_compressed and "PixelData" in ds:
                ds.decompress()
                source = UID(str(ds.file_meta.TransferSyntaxUID))
            tsu = UID(target)
            if target not in UNCOMPRESSED and target != DEFLATED_LE:
                ds.compress(tsu)
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                return buf.getvalue()
            for _ in ds.iterall():  # decode every raw element in the source encoding
                pass
            target_little = target != EXPLICIT_BE
            if source.is_little_endian != target_little:
                _swap_binary_values(ds, int(ds.get("BitsAllocated", 8) or 8))
            ds.file_meta.TransferSyntaxUID = tsu
            ds.preamble = b"\x00" * 128
            buf = io.BytesIO()
            pydicom.dcmwrite(buf, ds, implicit_vr=target == IMPLICIT_LE, little_endian=target_little,
                             force_encoding=True)
            return buf.getvalue()
    except Exception as e:  # noqa: BLE001 - any failure: the caller keeps the original file
        log.info("cannot transcode an instance to %s (%s: %s)", target, type(e).__name__, e)
        return None


def _swap_binary_values(ds: pydicom.Dataset, bits_allocated: int) -> None:
    """Byte-swap the binary values pydicom keeps as raw bytes (endianness change)."""
    import numpy as np

    for el in ds.iterall():
        if not isinstance(el.value, (bytes, bytearray)):
            continue
        if el.tag == _PIXEL_DATA:
            size = {16: 2, 32: 4, 64: 8}.get(bits_allocated, 1)
        else:
            size = _SWAP_SIZES.get(el.VR, 1)
        if size > 1 and len(el.value) % size == 0:
            el.value = np.frombuffer(el.value, dtype=f"u{size}").byteswap().tobytes()
