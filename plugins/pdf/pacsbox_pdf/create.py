"""``POST /tools/create-dicom``: from the request body to a stored instance.

The rules are Orthanc 1.10.1's (``OrthancRestAnonymizeModify.cpp``, ``CreateDicomV1``,
``CreateDicomV2``, ``InjectTags``, ``CreateSeries``; reference section 6), checked against
the reference server:

- the v2 body (``Tags`` present) and the deprecated v1 flat body;
- PatientID (a random UUID) and the Study/Series/SOP Instance UIDs are generated first,
  then the current UTC date and time (``YYYYMMDD``, ``HHMMSS.000000``); the client's
  ``Tags`` are injected in key order, and may override a generated or inherited tag
  only with ``Force`` (PatientID and the dates and times always);
- ``Parent`` copies the module tags of the parent's levels from one of its instances,
  keeping its (0008,0005) *Specific Character Set* and the value bytes as they are;
- ``Content`` is a data URI (one instance) or an array of them (one series), handed to
  the encoder of its MIME type (:mod:`pacsbox_pdf.hookspecs`).

Values are encoded by their VR, the ``Dictionary`` option's for the tags it declares
(a private ``US`` is written as ``US``); a private element whose block has no creator
gets one when the creator is known (``PrivateCreator``, ``DefaultPrivateCreator`` or the
``Dictionary`` entry of a name), as DICOM PS3.5 7.8.1 requires (Orthanc 1.10.1 does not).
"""
from __future__ import annotations

import logging
import struct
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pacsbox import ErrorCode, Level, OrthancError, module_tags, tag_dictionary

from .values import _NUMBERS, _STRING_VRS, ValueEncoder, _out_of_range, _pad, _put, _raw, decode_data_uri

log = logging.getLogger("pacsbox.pdf")

#: Root of the UIDs pacsbox generates (the core's ``/tools/generate-uid`` uses the same).
UID_ROOT = "1.2.826.0.1.3680043.10.1404."
#: DCMTK's placeholder SOP class of the meta header when the dataset has none (as the
#: reference writes it).
NO_SOP_CLASS = "1.2.276.0.7230010.3.1.0.1"
IMPLEMENTATION_CLASS_UID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "https://pacsbox/implementation").int)

SPECIFIC_CHARACTER_SET = 0x00080005
PATIENT_ID = 0x00100020
PIXEL_DATA = 0x7FE00010
STUDY_DATE, STUDY_TIME = 0x00080020, 0x00080030
SERIES_DATE, SERIES_TIME = 0x00080021, 0x00080031
ACQUISITION_DATE, ACQUISITION_TIME = 0x00080022, 0x00080032
CONTENT_DATE, CONTENT_TIME = 0x00080023, 0x00080033
CREATION_DATE, CREATION_TIME = 0x00080012, 0x00080013
INSTANCE_NUMBER, IMAGE_INDEX = 0x00200013, 0x00541330
IMAGES_IN_ACQUISITION, TEMPORAL_POSITIONS = 0x00201002, 0x00200105

#: Tags ``Tags`` may set over a generated value without ``Force`` (``InjectTags``).
FREE_TAGS = frozenset({PATIENT_ID, ACQUISITION_DATE, ACQUISITION_TIME, CONTENT_DATE, CONTENT_TIME, CREATION_DATE,
                       CREATION_TIME, SERIES_DATE, SERIES_TIME, STUDY_DATE, STUDY_TIME})

#: Orthanc encoding name (``DefaultEncoding``) → (0008,0005) defined term.
ENCODING_TERMS = {
    "Ascii": "ISO_IR 6", "Utf8": "ISO_IR 192", "Latin1": "ISO_IR 100", "Latin2": "ISO_IR 101",
    "Latin3": "ISO_IR 109", "Latin4": "ISO_IR 110", "Latin5": "ISO_IR 148", "Cyrillic": "ISO_IR 144",
    "Windows1251": "ISO_IR 144", "Arabic": "ISO_IR 127", "Greek": "ISO_IR 126", "Hebrew": "ISO_IR 138",
    "Thai": "ISO_IR 166", "Japanese": "ISO_IR 13", "Chinese": "GB18030", "Korean": "ISO 2022 IR 149",
    "JapaneseKanji": "ISO 2022 IR 87", "SimplifiedChinese": "ISO 2022 IR 58",
}

Encoder = Callable[[bytes, pydicom.Dataset], None]


# ---- the request --------------------------------------------------------------------------------

def _now() -> tuple[str, str]:
    t = datetime.now(timezone.utc)
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S") + ".000000"


def _uid() -> str:
    return generate_uid(prefix=UID_ROOT)


class DicomCreator:
    """Builds and stores the instances of one ``POST /tools/create-dicom``.

    Parameters
    ----------
    ctx : pacsbox.ServerContext
    encoders : mapping of str to callable
        MIME type → encoder (:func:`pacsbox_pdf.hookspecs.register_content_encoders`).
    origin : mapping
        The origin given to ``ctx.ingest.store`` (``Origin`` ``RestApi``...).
    """

    def __init__(self, ctx: Any, encoders: Mapping[str, Encoder], origin: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.encoders = encoders
        self.origin = origin
        self.dictionary = tag_dictionary(ctx)

    # ---- entry point ---------------------------------------------------------------------
    def create(self, body: Any) -> dict[str, Any]:
        """Create the instance(s) a request body describes and store them.

        Parameters
        ----------
        body : any
            The parsed JSON body.

        Returns
        -------
        dict
            ``POST /instances``'s answer for one instance; ``{"ID", "Path", "Status"}``
            of the series for an array ``Content``.

        Raises
        ------
        OrthancError
            With Orthanc 1.10.1's status and code for each refused body (reference
            section 6.2); nothing is stored then.
        """
        if not isinstance(body, dict):
            raise OrthancError(ErrorCode.BAD_REQUEST)
        if "Tags" in body:
            return self._create_v2(body)
        return self._create_v1(body)

    # ---- v1 ---------------------------------------------------------------------------------
    def _create_v1(self, body: dict) -> dict[str, Any]:
        ds, values = self._new_dataset(self._default_charset())
        del ds[SPECIFIC_CHARACTER_SET]  # v1 leaves (0008,0005) out, as Orthanc 1.10.1
        for name in sorted(body):
            value = body[name]
            if not isinstance(value, str):
                raise OrthancError(ErrorCode.CREATE_DICOM_NOT_STRING)
            tag, creator = values.parse(name)
            if tag == PIXEL_DATA:
                self._embed(ds, value)
            else:
                _put(ds, values.element(tag, creator, value))
        values.add_creators(ds)
        return self._store(ds).answer()

    # ---- v2 ---------------------------------------------------------------------------------
    def _create_v2(self, body: dict) -> dict[str, Any]:
        tags = body["Tags"]
        if not isinstance(tags, dict):
            raise OrthancError(ErrorCode.BAD_REQUEST)
        charset = tags.get("SpecificCharacterSet")
        if charset is not None:
            if not isinstance(charset, str):  # Orthanc 1.10.1 fails on it (asCString)
                raise OrthancError(ErrorCode.INTERNAL_ERROR, "An unhandled exception was generated inside the HTTP server")
            if not self._valid_charset(charset):
                raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown specific character set: {charset}")
        else:
            charset = self._default_charset()
        parent_level = 3  # no parent (Orthanc's ResourceType_Instance)
        sibling = None
        if "Parent" in body:
            parent_level, sibling = self._parent(body["Parent"])
            sib_charset = sibling.get_item(SPECIFIC_CHARACTER_SET)
            if sib_charset is not None:
                text = _charset_text(sib_charset)
                charset = text if self._valid_charset(text) else self._default_charset()
        decode_binary = self._bool(body, "InterpretBinaryTags", True)
        creator = body.get("PrivateCreator", self.dictionary.default_private_creator)
        if not isinstance(creator, str):
            raise OrthancError(ErrorCode.BAD_REQUEST)
        force = self._bool(body, "Force", False)

        ds, values = self._new_dataset(charset, creator, decode_binary)
        if sibling is not None:
            self._inherit(ds, sibling, parent_level)
        date, time = _now()
        for d, t in ((ACQUISITION_DATE, ACQUISITION_TIME), (CONTENT_DATE, CONTENT_TIME),
                     (CREATION_DATE, CREATION_TIME)):
            ds[d], ds[t] = _raw(d, "DA", date.encode()), _raw(t, "TM", time.encode())
        if parent_level in (0, 3):
            ds[STUDY_DATE], ds[STUDY_TIME] = _raw(STUDY_DATE, "DA", date.encode()), _raw(STUDY_TIME, "TM", time.encode())
        if parent_level in (0, 1, 3):
            ds[SERIES_DATE], ds[SERIES_TIME] = (_raw(SERIES_DATE, "DA", date.encode()),
                                                _raw(SERIES_TIME, "TM", time.encode()))
        self._inject(ds, values, tags, force)

        if "Content" not in body:
            return self._store(ds).answer()
        content = body["Content"]
        if isinstance(content, str):
            self._embed(ds, content)
            return self._store(ds).answer()
        if isinstance(content, list):
            if not content:
                return self._store(ds).answer()
            return self._create_series(ds, values, content, force)
        raise OrthancError(ErrorCode.CREATE_DICOM_USE_DATA_URI_SCHEME)

    def _create_series(self, base: pydicom.Dataset, values: ValueEncoder, content: list, force: bool) -> dict:
        """One instance per item of ``Content``; the partial series is deleted on failure."""
        base[IMAGES_IN_ACQUISITION] = _raw(IMAGES_IN_ACQUISITION, "IS", str(len(content)).encode())
        base[TEMPORAL_POSITIONS] = _raw(TEMPORAL_POSITIONS, "IS", b"1")
        series_id = None
        try:
            for i, item in enumerate(content):
                ds = _copy(base)
                ds[0x00080018] = _raw(0x00080018, "UI", _uid().encode())
                payload = None
                if isinstance(item, str):
                    payload = item
                elif isinstance(item, dict):
                    if "Content" not in item:
                        raise OrthancError(ErrorCode.CREATE_DICOM_NO_PAYLOAD)
                    payload = item["Content"]
                    if "Tags" in item:
                        if not isinstance(item["Tags"], dict):
                            raise OrthancError(ErrorCode.BAD_REQUEST, "Tags field is not an array")
                        self._inject(ds, values, item["Tags"], force)
                if not isinstance(payload, str):
                    raise OrthancError(ErrorCode.CREATE_DICOM_USE_DATA_URI_SCHEME)
                self._embed(ds, payload)
                number = str(i + 1).encode()
                ds[INSTANCE_NUMBER] = _raw(INSTANCE_NUMBER, "IS", number)
                ds[IMAGE_INDEX] = _raw(IMAGE_INDEX, "US", struct.pack("<H", (i + 1) & 0xFFFF))
                result = self._store(ds)
                if result.ids is not None:
                    series_id = result.ids[2]
        except OrthancError:
            if series_id is None:
                # Orthanc 1.10.1 looks the series of "no instance" up, and answers that
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE) from None
            self._delete_series(series_id)
            raise
        except Exception:
            if series_id is not None:
                self._delete_series(series_id)
            raise
        return {"ID": series_id, "Path": f"/series/{series_id}", "Status": "Success"}

    def _delete_series(self, series_id: str) -> None:
        ctx = self.ctx
        res = ctx.index.lookup(series_id, Level.SERIES)
        if res is not None:
            ctx.resources.delete(res)

    # ---- pieces ----------------------------------------------------------------------------
    def _default_charset(self) -> str:
        return ENCODING_TERMS.get(self.ctx.ingest.default_encoding_name, "ISO_IR 100")

    @staticmethod
    def _valid_charset(term: str) -> bool:
        if not term.strip():
            return False
        try:
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                convert_encodings([t.strip() for t in term.split("\\")])
        except Exception:  # noqa: BLE001 - an unknown term
            return False
        return True

    @staticmethod
    def _bool(body: dict, name: str, default: bool) -> bool:
        if name not in body:
            return default
        v = body[name]
        if not isinstance(v, bool):
            raise OrthancError(ErrorCode.BAD_REQUEST)
        return v

    def _new_dataset(self, charset: str, creator: str = "", decode_binary: bool = True
                     ) -> tuple[pydicom.Dataset, ValueEncoder]:
        """A dataset with (0008,0005) and the generated identifiers (``ParsedDicomFile(true)``)."""
        ds = pydicom.Dataset()
        ds[SPECIFIC_CHARACTER_SET] = _raw(SPECIFIC_CHARACTER_SET, "CS", charset.encode("ascii"))
        ds[PATIENT_ID] = _raw(PATIENT_ID, "LO", str(uuid.uuid4()).encode())
        ds[0x0020000D] = _raw(0x0020000D, "UI", _uid().encode())
        ds[0x0020000E] = _raw(0x0020000E, "UI", _uid().encode())
        ds[0x00080018] = _raw(0x00080018, "UI", _uid().encode())
        try:
            encodings = convert_encodings([t.strip() for t in charset.split("\\")])
        except Exception:  # noqa: BLE001 - checked before; Latin-1 as DCMTK's fallback
            encodings = ["latin_1"]
        return ds, ValueEncoder(self.dictionary, encodings, creator, decode_binary)

    def _parent(self, parent: Any) -> tuple[int, pydicom.Dataset]:
        """The level of ``Parent`` and the dataset of one of its instances.

        Raises
        ------
        OrthancError
            400 ``CREATE_DICOM_BAD_PARENT`` for an unknown resource, 400
            ``CREATE_DICOM_PARENT_IS_INSTANCE`` for an instance.
        """
        ctx = self.ctx
        res = ctx.index.lookup(parent) if isinstance(parent, str) and parent else None
        if res is None:
            raise OrthancError(ErrorCode.CREATE_DICOM_BAD_PARENT)
        if res.level == Level.INSTANCE:
            raise OrthancError(ErrorCode.CREATE_DICOM_PARENT_IS_INSTANCE)
        instances = ctx.index.descendant_instances(res.internal_id, res.level)
        if not instances:
            raise OrthancError(ErrorCode.INTERNAL_ERROR)
        return res.level, ctx.resources.read_dataset(instances[0], stop_before_pixels=True)

    @staticmethod
    def _inherit(ds: pydicom.Dataset, sibling: pydicom.Dataset, parent_level: int) -> None:
        """Copy the module tags of the parent's level and above from ``sibling``.

        String values keep their bytes (the charset is the sibling's); a binary or
        unknown value becomes empty and a sequence is not copied, as Orthanc copies
        from the JSON rendering (``Null`` → empty, sequences skipped).
        """
        raw_ok = not getattr(sibling, "is_implicit_VR", False) and getattr(sibling, "is_little_endian", True)
        for level in range(0, parent_level + 1):
            for tag in module_tags(level):
                el = sibling.get_item(tag)
                if el is None:
                    continue
                if isinstance(el, RawDataElement) and raw_ok and el.VR in _STRING_VRS:
                    ds[tag] = _raw(tag, el.VR, bytes(el.value or b"").rstrip(b"\x00 ") if el.VR != "UI"
                                   else bytes(el.value or b"").rstrip(b"\x00"))
                    continue
                try:
                    dec = sibling[tag]
                except Exception:  # noqa: BLE001 - undecodable: empty, as Orthanc's Null
                    ds[tag] = _raw(tag, "UN", b"")
                    continue
                if dec.VR == "SQ":
                    continue
                if dec.VR in _STRING_VRS:
                    ds[tag] = pydicom.DataElement(tag, dec.VR, dec.value)
                elif dec.VR in _NUMBERS:
                    ds[tag] = pydicom.DataElement(tag, dec.VR, dec.value)
                else:
                    ds[tag] = _raw(tag, dec.VR if len(dec.VR) == 2 else "UN", b"")

    def _inject(self, ds: pydicom.Dataset, values: ValueEncoder, tags: dict, force: bool) -> None:
        """``InjectTags``: the client's tags, in key order, with the override rule."""
        for name in sorted(tags):
            tag, creator = values.parse(name)
            if tag == SPECIFIC_CHARACTER_SET:
                continue
            if not force and tag not in FREE_TAGS and tag in ds:
                raise OrthancError(ErrorCode.CREATE_DICOM_OVERRIDE_TAG, name)
            if tag == PIXEL_DATA:
                raise OrthancError(ErrorCode.CREATE_DICOM_USE_CONTENT)
            _put(ds, values.element(tag, creator, tags[name]))
        values.add_creators(ds)

    def _embed(self, ds: pydicom.Dataset, uri: str) -> None:
        """``EmbedContent``: decode the data URI, then the encoder of its MIME type."""
        mime, payload = decode_data_uri(uri)
        encoder = self.encoders.get(mime)
        if encoder is None:
            raise OrthancError(ErrorCode.NOT_IMPLEMENTED,
                               f"Unsupported MIME type for the content of a new DICOM file: {mime}")
        if getattr(ds, "file_meta", None) is None or "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        encoder(payload, ds)

    def _store(self, ds: pydicom.Dataset):
        """Write the file (meta header, Explicit VR Little Endian unless the encoder chose
        another syntax) and store it through ``ctx.ingest``.

        Raises
        ------
        OrthancError
            500 ``CANNOT_STORE_INSTANCE`` when a filter refused it.
        """
        meta = getattr(ds, "file_meta", None)
        if meta is None or "TransferSyntaxUID" not in meta:
            meta = ds.file_meta = FileMetaDataset()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.FileMetaInformationVersion = b"\x00\x01"
        sop_class = ds.get_item(0x00080016)
        sop_class = _text(sop_class.value) if isinstance(sop_class, RawDataElement) else \
            (str(sop_class.value) if sop_class is not None else "")
        meta.MediaStorageSOPClassUID = sop_class or NO_SOP_CLASS
        meta.MediaStorageSOPInstanceUID = _text(ds.get_item(0x00080018).value)
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = "PACSBOX_010"
        result = self.ctx.ingest.store(write_file(ds), self.origin)
        if result.status == "FilteredOut" or result.ids is None:
            raise OrthancError(ErrorCode.CANNOT_STORE_INSTANCE)
        result.status = "Success"  # Orthanc answers Success, even for an instance stored before
        return result


#: VRs whose explicit-VR header has a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})


def _meta_element(tag: int, vr: str, value: bytes) -> bytes:
    value = _pad(value, vr)
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def write_file(ds: pydicom.Dataset) -> bytes:
    """The DICOM file of ``ds``: preamble, ``DICM``, meta header, then the dataset in
    Explicit VR Little Endian (whatever ``file_meta.TransferSyntaxUID`` says of the pixel
    data: the encoders only choose encapsulated syntaxes).

    The elements built by this module (raw, explicit VR little endian) are written as
    they are, each value copied once; the others (set by encoders through pydicom) go
    through :func:`pydicom.filewriter.write_data_element`. The bytes are those of
    ``pydicom.dcmwrite(..., enforce_file_format=True)`` (PS3.10 7.1), without its copies
    of a large value through intermediate buffers.

    Parameters
    ----------
    ds : pydicom.Dataset
        With ``file_meta`` holding (0002,0002), (0002,0003), (0002,0010), (0002,0012)
        and (0002,0013).

    Returns
    -------
    bytes

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "... out-of-range value ..." for a value too long for
        its VR's 16-bit length field.
    """
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element
    meta = ds.file_meta
    elems = [_meta_element(0x00020001, "OB", b"\x00\x01")]
    for tag, vr in ((0x00020002, "UI"), (0x00020003, "UI"), (0x00020010, "UI"), (0x00020012, "UI"), (0x00020013, "SH")):
        if tag in meta:
            elems.append(_meta_element(tag, vr, str(meta[tag].value).encode("ascii")))
    group = b"".join(elems)
    parts = [b"\x00" * 128, b"DICM", _meta_element(0x00020000, "UL", struct.pack("<I", len(group))), group]
    charset = ds.get_item(SPECIFIC_CHARACTER_SET)
    encodings = None
    for tag in sorted(ds.keys()):
        el = ds.get_item(tag)
        if isinstance(el, RawDataElement) and el.VR and not el.is_implicit_VR and el.is_little_endian \
                and el.length != 0xFFFFFFFF and el.VR != "SQ":
            value = _pad(bytes(el.value or b""), el.VR)
            if el.VR in _LONG_VRS:
                parts.append(struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, el.VR.encode(), 0, len(value)))
            elif len(value) > 0xFFFF:
                raise _out_of_range(int(tag), value[:64].decode("latin-1") + "...")
            else:
                parts.append(struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, el.VR.encode(), len(value)))
            parts.append(value)
            continue
        if encodings is None:
            try:
                encodings = convert_encodings(_charset_text(charset).split("\\")) if charset is not None \
                    else ["iso8859"]
            except Exception:  # noqa: BLE001 - checked when the dataset was made
                encodings = ["iso8859"]
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_data_element(fp, el, encodings)
        parts.append(fp.getvalue())
    return b"".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1").strip(" \x00")
    return str(value).strip(" \x00")


def _charset_text(el: Any) -> str:
    v = el.value
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("latin-1").strip(" \x00")
    if isinstance(v, (list, tuple)) or (hasattr(v, "__iter__") and not isinstance(v, str)):
        return "\\".join(str(x) for x in v)
    return str(v or "").strip()


def _copy(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of a dataset under construction (its elements are immutable or raw)."""
    out = pydicom.Dataset()
    for tag in ds.keys():
        out[tag] = ds.get_item(tag)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.file_meta = FileMetaDataset(meta)
    return out


__all__ = ["DicomCreator", "ValueEncoder", "decode_data_uri", "ENCODING_TERMS"]
