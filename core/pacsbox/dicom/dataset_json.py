"""The JSON formats of ``/instances/{id}/tags`` (``full``, ``simplify``, ``short``;
reference section 2.5): :func:`dataset_to_json`. Part of the tag helpers
(:mod:`pacsbox.dicom.tags` re-exports it).
"""
from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pydicom.dataelem import RawDataElement

from .tag_dictionary import TagDictionary
from .tags import (_NUMERIC, BINARY_VRS, MAX_TAG_LENGTH, STRING_VRS, _creator_text, dataset_encodings, dictionary_vr,
                   element_text, keyword, private_name, tag_to_key, value_text)

PIXEL_DATA = 0x7FE00010



def _pixel_representation(ds: Dataset) -> int:
    el = ds.get_item(0x00280103)
    if el is None:
        return 0
    v = el.value
    if isinstance(v, (bytes, bytearray)):
        if len(v) < 2:
            return 0
        return int.from_bytes(v[:2], "little" if getattr(el, "is_little_endian", True) else "big")
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


_SKIP = object()


class _Renderer:
    """Renders datasets to Orthanc's JSON (``FromDcmtkBridge::DatasetToJson``)."""

    def __init__(self, fmt: str, max_len: int, include_binary: bool, pixel_representation: int,
                 dictionary: TagDictionary | None = None, ignore_length: frozenset[int] = frozenset()):
        self.fmt = fmt
        self.max_len = max_len
        self.ignore_length = ignore_length
        self.include_binary = include_binary
        self.pixel_representation = pixel_representation
        self.dictionary = dictionary or None  # None when the option is empty

    def dataset(self, ds: Dataset, encodings: list[str], top: bool, skip_pixel_data: bool = False) -> dict:
        if ds.get_item(0x00080005) is not None:
            encodings = dataset_encodings(ds, encodings[0] if encodings else "latin_1")
        # private creators, (group << 8 | block) -> text; a creator (gggg,00bb) sorts before
        # the elements (gggg,bbxx) of its block, so one pass in tag order finds them in time
        creators: dict[int, str] = {}
        fmt = self.fmt
        out: dict[str, Any] = {}
        for elem in ds.elements() if hasattr(ds, "elements") else ds:
            tag = int(elem.tag)
            if top and tag >= PIXEL_DATA:
                # Orthanc stops after the pixel data (DicomToJsonFlags_StopAfterPixelData)
                if tag > PIXEL_DATA or skip_pixel_data:
                    continue
            group = tag >> 16
            if group & 1:
                if 0x0010 <= tag & 0xFFFF <= 0x00FF:
                    text = _creator_text(elem)
                    if text is not None:
                        creators[(group << 8) | (tag & 0xFF)] = text
                creator = creators.get((group << 8) | ((tag & 0xFFFF) >> 8))
            else:
                creator = None
            node = self.element(ds, elem, tag, encodings, creator)
            if node is _SKIP:
                continue
            if self.dictionary is not None:
                name = self.dictionary.name(tag, creator)
            elif group & 1:
                name = private_name(tag, creator)
            else:
                name = keyword(tag)
            if fmt == "full":
                entry = {"Name": name}
                if creator and (tag & 0xFFFF) > 0x00FF and node["Type"] != "Sequence":
                    entry["PrivateCreator"] = creator  # leaves only, as Orthanc
                entry.update(node)
                out[tag_to_key(tag)] = entry
            elif fmt == "short":
                out[tag_to_key(tag)] = node
            else:  # simplify: keyed by name, a later tag of the same name wins (as JsonCpp)
                out[name] = node
        return out

    def element(self, ds: Dataset, elem, tag: int, encodings: list[str], creator: str | None):
        """The rendering of one element (``_SKIP`` to leave it out)."""
        if isinstance(elem, RawDataElement):
            file_vr = elem.VR
            if file_vr is None and self.dictionary is not None:
                entry = self.dictionary.entry(tag, creator)
                if entry is not None and entry[0] != "SQ":
                    file_vr = entry[0]  # implicit VR: the Dictionary's VR decodes the value
            is_seq = file_vr == "SQ" or (
                (file_vr is None or (file_vr == "UN" and elem.length == 0xFFFFFFFF))
                and dictionary_vr(tag, creator) == "SQ")
            if file_vr is None and elem.length == 0xFFFFFFFF and tag != PIXEL_DATA:
                is_seq = True
        else:
            file_vr = elem.VR
            is_seq = file_vr == "SQ"
        if is_seq:
            try:
                items = ds[tag].value
            except Exception:  # noqa: BLE001 - undecodable sequence: rendered as null
                items = None
            if items is not None and not isinstance(items, (bytes, str)):
                rendered = [self.dataset(item, encodings, top=False) for item in items]
                return {"Type": "Sequence", "Value": rendered} if self.fmt == "full" else rendered
            return self._null()
        binary = False
        if isinstance(elem, RawDataElement):
            text = value_text(tag, file_vr, elem.value, elem.is_little_endian, encodings, creator,
                              self.pixel_representation)
            if text is None:
                eff = dictionary_vr(tag, creator, self.pixel_representation) if file_vr in (None, "UN") else file_vr
                binary = eff not in STRING_VRS and eff not in _NUMERIC and eff != "AT"
        else:
            text = element_text(elem, encodings)
            binary = file_vr in BINARY_VRS
        if binary and not self.include_binary:
            return _SKIP
        if text is None:
            return self._null()
        if (self.max_len and len(text) > self.max_len and len(text.encode("utf-8")) > self.max_len
                and tag not in self.ignore_length):
            return {"Type": "TooLong", "Value": None} if self.fmt == "full" else None
        return {"Type": "String", "Value": text} if self.fmt == "full" else text

    def _null(self):
        return {"Type": "Null", "Value": None} if self.fmt == "full" else None


def dataset_to_json(ds: Dataset, fmt: str = "full", encodings: list[str] | None = None,
                    max_len: int = MAX_TAG_LENGTH, *, skip_pixel_data: bool = False,
                    include_binary: bool = True, top: bool = True,
                    dictionary: TagDictionary | None = None,
                    ignore_length: frozenset[int] = frozenset()) -> dict[str, Any]:
    """Orthanc's JSON rendering of a dataset (``/instances/{id}/tags``, reference section 2.5).

    Parameters
    ----------
    ds : Dataset
        Preferably as read by :func:`pydicom.dcmread`, with its elements still raw: the
        VR written in the file decides some renderings (implicit VR, ``UN``).
    fmt : {"full", "simplify", "short"}
        ``full``: ``{"gggg,eeee": {"Name", "Type", "Value"}}`` (plus ``PrivateCreator``
        for private tags whose creator is known); ``simplify``: ``{name: value}`` (a later
        tag of the same name overwrites an earlier one, as in Orthanc); ``short``:
        ``{"gggg,eeee": value}``.
    encodings : list of str, optional
        Codecs inherited from the parent dataset (default: from (0008,0005), else Latin-1).
    max_len : int
        Values longer than this many UTF-8 bytes become ``TooLong`` (null in
        ``simplify``/``short``); 0 = unlimited.
    skip_pixel_data : bool
        Leave out (7FE0,0010) *Pixel Data*.
    include_binary : bool
        Include binary elements (OB, OW, UN...) as ``Null``; False leaves them out (the
        ``/header`` route).
    top : bool
        ``ds`` is a top-level dataset: elements after (7FE0,0010) are left out, as Orthanc does.
    dictionary : TagDictionary, optional
        The app's ``Dictionary`` option (:func:`tag_dictionary`): the tags it lists take
        its names, and an implicit-VR value of such a tag is decoded with its VR.
    ignore_length : frozenset of int, optional
        Tags rendered in full whatever their length (``?ignore-length=``), at any depth.

    Returns
    -------
    dict
        Keys in tag order.
    """
    if encodings is None:
        encodings = dataset_encodings(ds, "latin_1")
    r = _Renderer(fmt, max_len, include_binary, _pixel_representation(ds), dictionary, ignore_length)
    return r.dataset(ds, encodings, top=top, skip_pixel_data=skip_pixel_data)
