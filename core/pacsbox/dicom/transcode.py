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
    Lossless compression of a native explicit VR little endian file, the common case, is
    done here without pydicom (:func:`compress_native`): the codec releases the GIL, so
    the threads of a job encode on every core. The other compressions run in worker
    processes (one per CPU, :mod:`pacsbox.dicom.transcode_worker`), since pydicom's
    parsing and writing hold the GIL. The result is the same either way.
    """
    if target not in UNCOMPRESSED and target != DEFLATED_LE and len(data) > 4096:
        out = compress_native(data, target)
        if out is not None:
            return out
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
        spliced = compress_native(data, target)
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
#: Top-level image attributes :func:`compress_native` reads (PS3.3 C.7.6.3).
_IMAGE_TAGS = frozenset({0x00280002, 0x00280004, 0x00280006, 0x00280008, 0x00280010, 0x00280011, 0x00280100,
                         0x00280101, 0x00280103})


def _us(raw, tag: int, default: int) -> int:
    el = raw.get(tag)
    if el is None or len(el.value) < 2:
        return default
    return int.from_bytes(el.value[:2], "little")


def _text(raw, tag: int, default: str) -> str:
    el = raw.get(tag)
    if el is None:
        return default
    return el.value.decode("ascii", "replace").strip(" \x00").split("\\")[0] or default


def compress_native(data: bytes, target: str, threads: int = 1) -> bytes | None:
    """Lossless compression of an explicit VR little endian file without pydicom: the
    file is scanned (:func:`pacsbox.dicom.scan.scan`), its native Pixel Data encoded
    (:func:`pacsbox.imaging.encoders.encode_frames`, imagecodecs, which releases the GIL)
    and spliced in as encapsulated fragments; the File Meta Information is written again
    with the new (0002,0010) and every other byte of the file is kept.

    This is the common case of ``Transcode`` (and a third of the CPU of a pydicom read,
    encode and write of a 40 KB CT); the same bytes as :func:`transcode_here`'s full
    rewrite of the pixel data. An implicit VR little endian file is first re-encoded by
    :func:`implicit_to_explicit`.

    Parameters
    ----------
    data : bytes
        A Part-10 file (preamble, ``DICM``, meta group), explicit or implicit VR little
        endian.
    target : str
        A lossless compressed Transfer Syntax UID that imagecodecs writes (JPEG lossless,
        JPEG-LS lossless, JPEG 2000 lossless).
    threads : int
        Frames of a multi-frame instance encoded at once.

    Returns
    -------
    bytes or None
        The new file; None when the file is not of that form (another source syntax, no
        or encapsulated or planar Pixel Data, a bit depth or colour model the fast path
        leaves to the full rewrite, a lossy or RLE target, no imagecodecs).
    """
    from ..imaging.encoders import LOSSY, RLE, EncodeError, check_encodable, encode_frames, native_frames
    from .scan import DicomFormatError, read_file_meta, scan
    if target in LOSSY or target == RLE or target in UNCOMPRESSED or target == DEFLATED_LE:
        return None
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    try:
        res = scan(data, _IMAGE_TAGS)
        if res.transfer_syntax == IMPLICIT_LE:
            converted = implicit_to_explicit(data, res)
            if converted is None:
                return None
            data = converted
            res = scan(data, _IMAGE_TAGS)
    except DicomFormatError:
        return None
    start = res.pixel_data_offset
    if res.transfer_syntax != EXPLICIT_LE or res.implicit_vr or start is None:
        return None
    if data[start + 4:start + 6] not in (b"OB", b"OW"):
        return None
    length = int.from_bytes(data[start + 8:start + 12], "little")
    if length == 0xFFFFFFFF:
        return None
    raw = res.raw
    samples = _us(raw, 0x00280002, 1)
    bits_allocated = _us(raw, 0x00280100, 8)
    bits_stored = _us(raw, 0x00280101, bits_allocated)
    signed = _us(raw, 0x00280103, 0) == 1
    photometric = _text(raw, 0x00280004, "MONOCHROME2").upper()
    if samples not in (1, 3) or (samples == 3 and _us(raw, 0x00280006, 0) != 0):
        return None  # the encoders write colour-by-pixel: PlanarConfiguration would change
    try:
        frames = max(1, int(_text(raw, 0x00280008, "1")))
        check_encodable(target, bits_allocated=bits_allocated, samples=samples, photometric=photometric)
        value = memoryview(data)[start + 12:start + 12 + length]
        arrays = native_frames(value, rows=_us(raw, 0x00280010, 0), columns=_us(raw, 0x00280011, 0),
                               samples=samples, frames=frames, bits_allocated=bits_allocated,
                               bits_stored=bits_stored, signed=signed)
        if len(value) > arrays[0].nbytes * frames + 1:
            return None  # more bytes than the frames: left to pydicom's reading
        encoded = encode_frames(arrays, target, bits_stored=bits_stored, signed=signed, threads=threads)
        file_meta = read_file_meta(data)
    except (EncodeError, ValueError):
        return None
    from pydicom.encaps import encapsulate
    pixels = encapsulate(encoded, has_bot=len(encoded) > 1)
    return _with_meta(data, file_meta, target, [data[file_meta.dataset_offset:start], _PIXEL_TAG,
                                                b"OB\x00\x00\xff\xff\xff\xff", pixels, _SEQ_DELIMITER,
                                                data[start + 12 + length:]])


_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED_ITEM = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
_ITEM_DELIMITER = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"


class _NotConvertible(Exception):
    """An element :func:`implicit_to_explicit` leaves to pydicom."""


def implicit_to_explicit(data: bytes, scanned=None) -> bytes | None:
    """Re-encode an implicit VR little endian Part-10 file as explicit VR little endian at
    the byte level (PS3.5 section 7.1), values unchanged: each VR is pydicom's reading of
    the file (its data dictionary, the private dictionary under the element's private
    creator, ``UN`` when unknown, ``OW`` for native Pixel Data, ``US``/``SS`` after
    (0028,0103) for the ``US or SS`` attributes), sequences and items are written with
    undefined lengths and the retired group lengths of the data set are dropped; the File
    Meta Information is written again with (0002,0010) explicit VR little endian.

    Parameters
    ----------
    data : bytes
        The file (preamble, ``DICM``, meta group).
    scanned : pacsbox.dicom.scan.ScanResult, optional
        Its scan, when the caller has it.

    Returns
    -------
    bytes or None
        The file; None when it is not implicit VR little endian or has what only a full
        pydicom reading decides (another ambiguous VR, ``US or SS`` inside a sequence or
        without Pixel Representation, a value too long for its VR's 16-bit length).
    """
    import struct

    from .scan import DicomFormatError, read_file_meta, scan
    try:
        meta = read_file_meta(data)
        if meta.transfer_syntax != IMPLICIT_LE or data[128:132] != b"DICM":
            return None
        res = scanned if scanned is not None else scan(data, (0x00280103,))
        if res.implicit_vr is not True:
            return None
        rep = res.raw.get(0x00280103)
        pixel_rep = int.from_bytes(rep.value[:2], "little") if rep is not None and len(rep.value) >= 2 else None
        out: list[bytes] = []
        end = _Implicit(data, out, pixel_rep).dataset(meta.dataset_offset, len(data), True)
    except (_NotConvertible, DicomFormatError, ValueError, KeyError, struct.error):
        return None
    if end != len(data):
        return None
    return _with_meta(data, meta, EXPLICIT_LE, [b"".join(out)])


class _Implicit:
    """The walk of :func:`implicit_to_explicit` (``out`` collects the explicit bytes)."""

    def __init__(self, data: bytes, out: list[bytes], pixel_rep: int | None):
        import struct
        self.data, self.out, self.pixel_rep = data, out, pixel_rep
        self.head = struct.Struct("<HHI")

    def dataset(self, pos: int, end: int, top: bool) -> int:
        """Convert the elements in [pos, end), or up to an item delimiter; the position
        after them (after the delimiter)."""
        data, out, head = self.data, self.out, self.head
        creators: dict[int, str] = {}
        while pos < end:
            if pos + 8 > end:
                raise _NotConvertible("truncated")
            group, elem, length = head.unpack_from(data, pos)
            tag, vpos = (group << 16) | elem, pos + 8
            if tag == _ITEM_END:
                return vpos
            if group == 0xFFFE:
                raise _NotConvertible("item outside a sequence")
            if elem == 0 and group != 0x0002:
                pos = vpos + length  # a retired group length: dropped, lengths change
                continue
            vr = self.vr(tag, creators, top)
            if length == 0xFFFFFFFF:
                if vr not in ("SQ", "UN"):
                    raise _NotConvertible("undefined length")
                out.append(data[pos:pos + 4] + b"SQ\x00\x00\xff\xff\xff\xff")
                pos = self.sequence(vpos, None)
                continue
            nxt = vpos + length
            if nxt > end:
                raise _NotConvertible("truncated")
            if vr == "SQ":
                out.append(data[pos:pos + 4] + b"SQ\x00\x00\xff\xff\xff\xff")
                self.sequence(vpos, nxt)
            elif vr in _LONG_VRS:
                out.append(data[pos:pos + 4] + vr.encode() + b"\x00\x00" + data[pos + 4:nxt])
            else:
                if length > 0xFFFF:
                    raise _NotConvertible(f"{length} bytes in a {vr}")
                out.append(data[pos:pos + 4] + vr.encode() + length.to_bytes(2, "little") + data[vpos:nxt])
            if group & 1 and 0x0010 <= elem <= 0x00FF:
                creators[(group << 8) | elem] = data[vpos:nxt].decode("latin-1").strip(" \x00")
            pos = nxt
        return pos

    def sequence(self, pos: int, end: int | None) -> int:
        """Convert the items of a sequence, of defined length (up to ``end``) or not (up
        to its delimiter); writes the sequence delimiter."""
        data, head = self.data, self.head
        while end is None or pos < end:
            group, elem, length = head.unpack_from(data, pos)
            tag = (group << 16) | elem
            if tag == _SEQ_END and end is None:
                pos += 8
                break
            if tag != _ITEM:
                raise _NotConvertible("not an item")
            self.out.append(_UNDEFINED_ITEM)
            if length == 0xFFFFFFFF:
                pos = self.dataset(pos + 8, len(data), False)
            else:
                self.dataset(pos + 8, pos + 8 + length, False)
                pos += 8 + length
            self.out.append(_ITEM_DELIMITER)
        self.out.append(_SEQ_DELIMITER)
        return pos

    def vr(self, tag: int, creators: dict[int, str], top: bool) -> str:
        """pydicom's VR of an element read in implicit VR (see
        :func:`implicit_to_explicit`)."""
        from pydicom.datadict import dictionary_VR, get_private_entry
        group, elem = tag >> 16, tag & 0xFFFF
        if group & 1:
            if 0x0010 <= elem <= 0x00FF:
                return "LO"
            creator = creators.get((group << 8) | (elem >> 8))
            if creator is None:
                return "UN"
            try:
                vr = get_private_entry(tag, creator)[0]
            except KeyError:
                return "UN"
        else:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                return "UN"
        if " or " not in vr:
            return vr
        if tag == 0x7FE00010 or (vr == "OB or OW" and (group & 0xFF00) in (0x5000, 0x5400, 0x6000)):
            return "OW"  # native Pixel Data, curve, waveform and overlay data read in implicit VR
        if vr == "US or SS" and top and self.pixel_rep is not None:
            return "SS" if self.pixel_rep == 1 else "US"
        raise _NotConvertible(f"ambiguous VR {vr}")


def _with_meta(data: bytes, meta, target: str, body: list[bytes]) -> bytes:
    """The preamble of ``data``, its File Meta Information with (0002,0010) ``target``,
    then ``body``."""
    elements = {t: (meta.vrs[t], v) for t, v in meta.elements.items()}
    elements[0x00020010] = (b"UI", _even(target.encode(), b"\x00"))
    head = b"".join(_meta_element(t, vr, v) for t, (vr, v) in sorted(elements.items()) if t != 0x00020000)
    return b"".join((data[:128], b"DICM", _meta_element(0x00020000, b"UL", len(head).to_bytes(4, "little")), head,
                     *body))


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _meta_element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of the File Meta Information."""
    head = ((tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little") + vr)
    if vr in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"UV"):
        return head + b"\x00\x00" + len(value).to_bytes(4, "little") + value
    return head + len(value).to_bytes(2, "little") + value


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
