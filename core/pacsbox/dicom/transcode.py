"""Transfer-syntax conversion of Part-10 files (``Transcode`` of modify/anonymize,
archives and media, the ``/file`` download, the store SCU and peers).

Orthanc converts to the requested transfer syntax and keeps the original file when it
cannot (reference sections 4.1 and 5.2). Here:

- uncompressed targets (implicit VR little endian, explicit VR little endian, explicit
  VR big endian) and Deflated Explicit VR Little Endian: the source is decompressed when
  needed, every element is decoded in the source encoding and written in the target's;
  between little and big endian the binary values pydicom keeps as bytes (OW, OF, OL,
  OD, OV and native Pixel Data) are byte-swapped;
- compressed targets (JPEG baseline/extended/lossless, JPEG-LS lossless/near-lossless,
  JPEG 2000 lossless/lossy, RLE): :func:`pacsbox.imaging.encoders.encode_dataset`
  (imagecodecs, pydicom's RLE). A **lossy** target gives the instance a new
  SOPInstanceUID, as the reference does, and sets (0028,2110) *Lossy Image
  Compression* "01", (0028,2112) *Lossy Image Compression Ratio* and (0028,2114)
  *Lossy Image Compression Method*; a lossless target keeps the UID and the pixels.

Decompressing, byte-swapping and compressing pixel data needs the ``transcode`` extra
(NumPy, pylibjpeg, imagecodecs). Without it the conversion is reported as impossible and
the caller keeps the file; a returned file's TransferSyntaxUID always tells the truth
about its bytes.
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


def transcode(data: bytes, target: str, quality: int = 90) -> bytes | None:
    """Convert a Part-10 file to another transfer syntax.

    The codecs release the GIL: the worker threads of a job compress several instances
    at once.

    Parameters
    ----------
    data : bytes
        The file.
    target : str
        Transfer Syntax UID (PS3.5 section 10).
    quality : int
        JPEG quality (1-100) of the lossy targets (``LossyQuality``, Orthanc's
        ``DicomLossyTranscodingQuality``), 90 by default.

    Returns
    -------
    bytes or None
        The converted file (``data`` itself when it is already in ``target``), or None
        when the conversion is impossible (no encoder or decoder installed, pixel data the
        target cannot hold, unreadable file): the caller then keeps the original, as
        Orthanc does.

    Notes
    -----
    Compression to an encapsulated syntax runs in worker processes (one per CPU,
    :mod:`pacsbox.dicom.transcode_worker`), so that the threads of a job use every core:
    pydicom's parsing and writing hold the GIL. The result is the same as in-process.
    """
    if target not in UNCOMPRESSED and target != DEFLATED_LE and len(data) > 4096:
        from .transcode_worker import pool
        workers = pool()
        if workers is not None:
            try:
                return workers.transcode(bytes(data), target, quality)
            except Exception as e:  # noqa: BLE001 - a worker that died: compress here
                log.info("transcoding worker failed (%s: %s), compressing in-process", type(e).__name__, e)
    return transcode_here(data, target, quality)


def transcode_here(data: bytes, target: str, quality: int = 90) -> bytes | None:
    """:func:`transcode` in the calling thread (what the worker processes run).

    Returns
    -------
    bytes or None
        As :func:`transcode`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            source = UID(str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_LE)))
            if source == target:
                return data
            tsu = UID(target)
            if target not in UNCOMPRESSED and target != DEFLATED_LE:
                return _compress(ds, source, target, quality, data)
            if source.is_compressed and "PixelData" in ds:
                _decompress(ds)
                source = UID(str(ds.file_meta.TransferSyntaxUID))
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


def can_write(target: str) -> bool:
    """Whether :func:`transcode` can write ``target`` at all (codec installed).

    Returns
    -------
    bool
        True for the uncompressed and deflated syntaxes and for the compressed ones whose
        encoder is installed.
    """
    if target in UNCOMPRESSED or target == DEFLATED_LE:
        return True
    from ..imaging.encoders import can_encode
    return can_encode(target)


def _decompress(ds: pydicom.Dataset) -> None:
    """Decompress in place with the decoders :mod:`pacsbox.imaging` prefers (the
    reference's values: libjpeg-turbo for lossless and 12-bit JPEG grayscale, Pillow for
    8-bit JPEG), keeping the stored values."""
    ts = str(ds.file_meta.TransferSyntaxUID)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    if ts in _IMAGING_FIRST and int(ds.get("SamplesPerPixel", 1) or 1) == 1 and bits in (8, 16):
        try:
            import numpy as np

            from .. import imaging
            frames = [imaging.decode_frame(ds, i) for i in range(imaging.frame_count(ds))]
            dtype = ("<i" if int(ds.get("PixelRepresentation", 0) or 0) else "<u") + str(bits // 8)
            data = b"".join(np.ascontiguousarray(f, dtype=dtype).tobytes() for f in frames)
            ds.PixelData = data + (b"\x00" if len(data) % 2 else b"")
            ds["PixelData"].VR = "OW" if bits > 8 else "OB"
            ds["PixelData"].is_undefined_length = False
            ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
            return
        except Exception:  # noqa: BLE001 - pydicom's own decompression below
            pass
    try:
        ds.decompress(decoding_plugin=_PLUGIN.get(str(ds.file_meta.TransferSyntaxUID), ""), generate_instance_uid=False)
    except Exception:  # noqa: BLE001 - the preferred plugin refused: any plugin
        ds.decompress(generate_instance_uid=False)


#: Sources decompressed through :func:`pacsbox.imaging.decode_frame` (grayscale).
_IMAGING_FIRST = frozenset({"1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})
#: pydicom decoding plugins preferred per source syntax (as :mod:`pacsbox.imaging`).
_PLUGIN = {"1.2.840.10008.1.2.4.50": "pillow", "1.2.840.10008.1.2.4.51": "pillow"}


def _compress(ds: pydicom.Dataset, source: UID, target: str, quality: int, data: bytes) -> bytes:
    from ..imaging.encoders import LOSSY, encode_dataset
    if target not in LOSSY and source == EXPLICIT_LE:
        spliced = _splice(ds, target, data)
        if spliced is not None:
            return spliced
    if "PixelData" not in ds:  # no pixels: only the declared syntax changes
        ds.file_meta.TransferSyntaxUID = target
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
    if source.is_compressed:
        _decompress(ds)
    if source.is_implicit_VR or not source.is_little_endian:
        for _ in ds.iterall():  # decode in the source encoding (VRs looked up, byte order)
            pass
    if not UID(str(ds.file_meta.TransferSyntaxUID)).is_little_endian:
        _swap_binary_values(ds, int(ds.get("BitsAllocated", 8) or 8))
        ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
    native_size = len(ds.PixelData)
    encode_dataset(ds, target, quality=quality)
    if target in LOSSY:
        _mark_lossy(ds, target, quality, native_size / max(1, len(ds.PixelData)))
    ds.file_meta.TransferSyntaxUID = target
    ds.preamble = ds.preamble or b"\x00" * 128
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    return buf.getvalue()


_PIXEL_TAG = b"\xe0\x7f\x10\x00"
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _splice(ds: pydicom.Dataset, target: str, data: bytes) -> bytes | None:
    """Lossless compression of an explicit VR little endian file without rewriting it:
    the file meta is written again (new TransferSyntaxUID) and the Pixel Data element
    replaced by its encapsulated form; every other byte is kept as it was. Half the CPU
    of a full pydicom write. None when the file does not have the expected layout
    (preamble, group length, a top-level native Pixel Data), the caller then rewrites."""
    import struct

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    from ..imaging.encoders import encode_dataset
    try:
        if data[128:132] != b"DICM" or data[132:140] != b"\x02\x00\x00\x00UL\x04\x00":
            return None
        meta_end = 144 + struct.unpack("<I", data[140:144])[0]
        elem = ds.get_item(0x7FE00010)
        tell = getattr(elem, "value_tell", None)
        length = getattr(elem, "length", None)
        if tell is None or length is None or length == 0xFFFFFFFF:
            return None
        start, end = tell - 12, tell + length
        if start < meta_end or data[start:start + 4] != _PIXEL_TAG or data[start + 4:start + 6] not in (b"OB", b"OW"):
            return None
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1 and int(ds.get("PlanarConfiguration", 0) or 0) != 0:
            return None  # the encoders write colour-by-pixel: PlanarConfiguration changes
        encode_dataset(ds, target)
        meta = ds.file_meta
        meta.TransferSyntaxUID = target
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, False
        write_file_meta_info(buf, meta, enforce_standard=True)
        pixels = _PIXEL_TAG + b"OB\x00\x00\xff\xff\xff\xff" + bytes(ds.PixelData) + _SEQ_DELIMITER
        return b"".join((data[:132], buf.getvalue(), data[meta_end:start], pixels, data[end:]))
    except Exception:  # noqa: BLE001 - the full rewrite decides
        return None


_DERIVATION = {
    "1.2.840.10008.1.2.4.50": "Lossy compression with JPEG baseline, IJG quality factor {q}, compression ratio {r}",
    "1.2.840.10008.1.2.4.51": "Lossy compression with JPEG extended sequential {b} bit, IJG quality factor {q}, "
                              "compression ratio {r}",
    "1.2.840.10008.1.2.4.81": "near lossless JPEG-LS compression, factor {r} (NEAR=2)",
    "1.2.840.10008.1.2.4.91": "Lossy compression with JPEG 2000, compression ratio {r}",
}


def _code(value: str, meaning: str) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _mark_lossy(ds: pydicom.Dataset, target: str, quality: int, ratio: float) -> None:
    """What DCMTK's lossy encoders write, which the reference's files carry: a new
    SOPInstanceUID (deterministic here, DCMTK's is random), (0028,2110)/(0028,2112)/(0028,2114), (0008,2111) *Derivation
    Description*, (0008,9215) *Derivation Code Sequence* "Lossy Compression", (0008,2112)
    *Source Image Sequence* naming the uncompressed predecessor, ImageType DERIVED."""
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    from ..imaging.encoders import LOSSY
    old_uid, sop_class = str(ds.get("SOPInstanceUID", "")), str(ds.get("SOPClassUID", ""))
    # derived from the source UID, the target and the quality: a job redone after a crash
    # writes the same instance again rather than a duplicate under a fresh UID
    uid = generate_uid(entropy_srcs=[old_uid, target, str(quality)]) if old_uid else generate_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    r = f"{ratio:.5g}"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = r[:16]
    ds.LossyImageCompressionMethod = LOSSY[target]
    bits = 8 if int(ds.get("BitsStored", 8) or 8) <= 8 else 12
    ds.DerivationDescription = _DERIVATION[target].format(q=quality, r=r, b=bits)[:1024]
    codes = list(ds.get("DerivationCodeSequence") or [])
    if not any(getattr(c, "CodeValue", None) == "113040" for c in codes):
        codes.append(_code("113040", "Lossy Compression"))
    ds.DerivationCodeSequence = Sequence(codes)
    if old_uid:
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, old_uid
        ref.PurposeOfReferenceCodeSequence = Sequence([_code("121320", "Uncompressed predecessor")])
        ds.SourceImageSequence = Sequence(list(ds.get("SourceImageSequence") or []) + [ref])
    image_type = ds.get("ImageType")
    if image_type:
        values = list(image_type) if not isinstance(image_type, str) else [image_type]
        values[0] = "DERIVED"
        ds.ImageType = values


def _swap_binary_values(ds: pydicom.Dataset, bits_allocated: int) -> None:
    """Byte-swap the binary values pydicom keeps as raw bytes (endianness change)."""
    import numpy as np

    for el in ds.iterall():
        if not isinstance(el.value, (bytes, bytearray)):
            continue
        if el.tag == _PIXEL_DATA:
            # 8-bit pixels in OW are swapped as 16-bit words too (PS3.5 section 8.2)
            size = {16: 2, 32: 4, 64: 8}.get(bits_allocated, 2 if el.VR == "OW" else 1)
        else:
            size = _SWAP_SIZES.get(el.VR, 1)
        if size > 1 and len(el.value) % size == 0:
            el.value = np.frombuffer(el.value, dtype=f"u{size}").byteswap().tobytes()
