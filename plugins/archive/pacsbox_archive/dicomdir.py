"""The DICOMDIR of a media archive, built with pydicom's :class:`~pydicom.fileset.FileSet`.

A media archive holds ``IMAGES/IM0``, ``IMAGES/IM1``... and a ``DICOMDIR`` (Basic
Directory, PS3.10 section 8 and PS3.3 Annex F) whose PATIENT → STUDY → SERIES → leaf
records reference them (reference section 4.3). The record contents come from
pydicom's record creators (:data:`pydicom.fileset.DIRECTORY_RECORDERS`), the tree and
its offsets from pydicom's ``FileSet``, so no directory record is assembled by hand:

- PATIENT: PatientName, PatientID; STUDY: StudyDate, StudyTime, StudyDescription,
  StudyInstanceUID, StudyID, AccessionNumber; SERIES: Modality, SeriesInstanceUID,
  SeriesNumber (plus SeriesDescription in extended mode); IMAGE: InstanceNumber and the
  four ``Referenced...InFile`` elements. Every record carries the instance's
  SpecificCharacterSet.
- Non-image SOP classes get pydicom's record type: an encapsulated PDF an ``ENCAP
  DOC`` record, an SR an ``SR DOCUMENT``, an RT plan an ``RT PLAN``... (Orthanc writes
  ``IMAGE`` for everything). When an instance lacks what its record type requires,
  it falls back to an ``IMAGE`` record.
- Values that Orthanc tolerates empty (no PatientID, no StudyID...) stay empty; a
  missing StudyDate/StudyTime falls back to the series, the instance creation or the
  content date/time, then to the current date/time.

Why not ``FileSet.add``: it writes a staged copy of every instance to a temporary
folder and checks each new instance against all the previous ones (quadratic), which
is far too slow for archives of thousands of files whose bytes are streamed into the
ZIP anyway. :class:`DicomDirBuilder` therefore hangs the records on the file-set's
record tree itself and lets the file-set encode the DICOMDIR. It relies on non-public
members of pydicom 3's ``fileset`` module (``FileSet._tree``,
``FileSet._write_dicomdir``, ``_four_level_record_type`` and ``RecordNode._record``);
``tests/plugins/archive/test_dicomdir.py`` and ``test_dirworker.py`` check them.

Nothing here knows about HTTP.
"""
from __future__ import annotations

import functools
import io
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pydicom
from pydicom import config as _pdconfig
from pydicom import fileset as _fileset
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.filebase import DicomFileLike
from pydicom.fileset import DIRECTORY_RECORDERS, FileSet, RecordNode
from pydicom.tag import BaseTag
from pydicom.uid import UID

#: File-set ID written by Orthanc (0004,1130).
FILE_SET_ID = "ORTHANC_MEDIA"

#: Type 1 elements pydicom's creators check for the four standard record types (and
#: InstanceNumber for the other leaf types). An instance may lack them; Orthanc then
#: writes them empty, and so do we.
_REQUIRED = {
    "PATIENT": ("PatientID",),
    "STUDY": ("StudyDate", "StudyTime", "StudyID"),
    "SERIES": ("Modality", "SeriesInstanceUID", "SeriesNumber"),
    "IMAGE": ("InstanceNumber",),
}
_PLACEHOLDER = {"DA": "19700101", "TM": "000000", "IS": "0", "UI": "1.2"}


_TAGS: dict[str, tuple[int, str]] = {}


def _element(keyword: str, value: Any) -> DataElement:
    """A data element of the dictionary's VR, without value validation (the values come
    from stored instances and are written as they are)."""
    tv = _TAGS.get(keyword)
    if tv is None:
        tag = tag_for_keyword(keyword)
        tv = _TAGS[keyword] = (tag, dictionary_VR(tag))
    return DataElement(tv[0], tv[1], value, validation_mode=_pdconfig.IGNORE)


def _dataset(values: Mapping[str, Any]) -> Dataset:
    ds = Dataset()
    for kw, v in values.items():
        if v is not None:
            ds.add(_element(kw, v))
    return ds


@functools.lru_cache(maxsize=256)
def is_image_sop_class(uid: str | None) -> bool:
    """Whether a SOP class gets an IMAGE record without looking into the instance.

    Parameters
    ----------
    uid : str or None
        (0008,0016) *SOP Class UID*.

    Returns
    -------
    bool
        True for the "... Image Storage" classes of the DICOM dictionary; False for
        everything else (SR, encapsulated documents, RT, presentation states,
        waveforms, unknown classes), whose record type pydicom decides from the
        instance's data set.
    """
    if not uid:
        return False
    name = UID(uid).name
    return "Image Storage" in name and "Presentation" not in name


@dataclass
class RecordSource:
    """Everything the records of one instance are made from.

    Attributes
    ----------
    file_id : tuple of str
        (0004,1500) *Referenced File ID* components, e.g. ``("IMAGES", "IM0")``.
    patient_key, study_key, series_key : str
        Identity of the parent records (Orthanc IDs): instances sharing a key share
        the record.
    patient, study, series, instance : dict of str to str
        Main DICOM tags of each level (keyword → text, as the index holds them).
    sop_class_uid, sop_instance_uid, transfer_syntax_uid : str
    specific_character_set : str or None
        As written in the instance (``\\``-separated values).
    dataset : pydicom.Dataset, optional
        The instance's data set (pixel data left out), needed for non-image SOP
        classes (see :func:`is_image_sop_class`).
    """

    file_id: tuple[str, ...]
    patient_key: str
    study_key: str
    series_key: str
    patient: Mapping[str, str]
    study: Mapping[str, str]
    series: Mapping[str, str]
    instance: Mapping[str, str]
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    specific_character_set: str | None = None
    dataset: Dataset | None = field(default=None, repr=False)


def _sr_concept_modifiers_only(record: Dataset) -> None:
    """An SR DOCUMENT record keeps only the ``HAS CONCEPT MOD`` items of the document's
    Content Sequence (PS3.3 F.5.24); pydicom copies the whole tree, whose ``CONTAINS``
    and ``HAS OBS CONTEXT`` items validators refuse there."""
    if "ContentSequence" not in record:
        return
    kept = [item for item in record.ContentSequence
            if str(item.get("RelationshipType", "")).strip() == "HAS CONCEPT MOD"]
    if kept:
        record.ContentSequence = kept
    else:
        del record.ContentSequence


def _charset_value(charset: str | None, texts: list[str]) -> str | list[str] | None:
    if charset:
        parts = charset.split("\\")
        return parts if len(parts) > 1 else parts[0]
    if not all(t.isascii() for t in texts if t):
        return "ISO_IR 192"   # the index holds Unicode: keep it exact with UTF-8
    return None


_NEXT_OFFSET = BaseTag(0x00041400)          # Offset of the Next Directory Record
_IN_USE = BaseTag(0x00041410)               # Record In-use Flag
_LOWER_OFFSET = BaseTag(0x00041420)         # Offset of Referenced Lower-Level Directory Entity
_FILE_ID = BaseTag(0x00041500)              # Referenced File ID
_SOP_INSTANCE_IN_FILE = BaseTag(0x00041511)  # Referenced SOP Instance UID in File
_INSTANCE_NUMBER = BaseTag(0x00200013)


class _LeafTemplate:
    """Makes the IMAGE records of one series from pydicom's record of its first instance.

    The records of a series' images differ only by Referenced File ID, Referenced SOP
    Instance UID in File and Instance Number (and the two offsets pydicom sets when it
    encodes). A record is a copy of the template's elements with new elements for
    these five, in ascending tag order (so that pydicom's encoder finds them sorted).
    The other elements are shared between the records, which pydicom's encoder only
    reads (its offset updates touch the two offset elements, which are never shared).

    Parameters
    ----------
    record : pydicom.Dataset
        pydicom's IMAGE record of the first instance, with its Referenced... elements.
    """

    def __init__(self, record: Dataset) -> None:
        base: dict[BaseTag, Any] = dict(record.items())
        self.numbered = bool(base.get(_INSTANCE_NUMBER) is not None and base[_INSTANCE_NUMBER].value != "")
        in_use = DataElement(_IN_USE, "US", 0xFFFF, already_converted=True, validation_mode=_pdconfig.IGNORE)
        base.update({_NEXT_OFFSET: None, _IN_USE: in_use, _LOWER_OFFSET: None, _FILE_ID: None,
                     _SOP_INSTANCE_IN_FILE: None})
        if self.numbered:
            base[_INSTANCE_NUMBER] = None
        self.base = dict(sorted(base.items()))

    def leaf(self, file_id: tuple[str, ...], sop_instance_uid: str, number: str) -> Dataset:
        """The record of one more image of the series.

        Parameters
        ----------
        file_id : tuple of str
            (0004,1500) components.
        sop_instance_uid : str
            (0004,1511).
        number : str
            (0020,0013) *Instance Number* (unused when the template's is empty).

        Returns
        -------
        pydicom.Dataset
        """
        ignore = _pdconfig.IGNORE
        d = self.base.copy()
        d[_NEXT_OFFSET] = DataElement(_NEXT_OFFSET, "UL", 0, already_converted=True, validation_mode=ignore)
        d[_LOWER_OFFSET] = DataElement(_LOWER_OFFSET, "UL", 0, already_converted=True, validation_mode=ignore)
        d[_FILE_ID] = DataElement(_FILE_ID, "CS", list(file_id), validation_mode=ignore)
        d[_SOP_INSTANCE_IN_FILE] = DataElement(_SOP_INSTANCE_IN_FILE, "UI", sop_instance_uid,
                                               validation_mode=ignore)
        if self.numbered:
            d[_INSTANCE_NUMBER] = DataElement(_INSTANCE_NUMBER, "IS", number, validation_mode=ignore)
        return Dataset(d)

    def node(self, file_id: tuple[str, ...], sop_instance_uid: str, number: str) -> RecordNode:
        """The tree node of one more image of the series (see :meth:`leaf`).

        ``RecordNode(record)`` would check the record and add the offset and in-use
        elements, which every record of the template has (the first one went through
        those checks): the record is set directly.
        """
        node = RecordNode()
        node._record = self.leaf(file_id, sop_instance_uid, number)    # noqa: SLF001 (see module notes)
        return node


class DicomDirBuilder:
    """Collects the directory records of a media archive, then encodes its DICOMDIR.

    Parameters
    ----------
    extended : bool
        Orthanc's "extended" media: SERIES records also carry SeriesDescription
        (0008,103E).
    file_set_id : str
        (0004,1130) *File-set ID*.

    Examples
    --------
    >>> b = DicomDirBuilder(extended=False)
    >>> b.add(source)                  # once per instance, in archive order
    >>> data = b.encode()              # the DICOMDIR file's bytes
    """

    def __init__(self, *, extended: bool = False, file_set_id: str = FILE_SET_ID) -> None:
        self.extended = extended
        self.fs = FileSet()
        self.fs.ID = file_set_id
        self._nodes: dict[tuple[str, str], RecordNode] = {}
        self._templates: dict[tuple, _LeafTemplate] = {}
        self.count = 0
        self._non_ascii = False   # a record holds text beyond ASCII: the DICOMDIR declares UTF-8

    # ---- records ------------------------------------------------------------------
    @staticmethod
    def _record(rtype: str, ds: Dataset) -> Dataset:
        """pydicom's record of type ``rtype`` for ``ds``; empty Type 1 values stay empty."""
        blanks = [kw for kw in _REQUIRED.get(rtype, ("InstanceNumber",)) if not ds.get(kw)]
        for kw in blanks:
            vr = dictionary_VR(tag_for_keyword(kw))
            ds.add(_element(kw, _PLACEHOLDER.get(vr, "X")))
        record = DIRECTORY_RECORDERS[rtype](ds)
        for kw in blanks:
            record.add(_element(kw, ""))
        record.add(_element("DirectoryRecordType", rtype))
        return record

    def _parent(self, kind: str, key: str, make) -> RecordNode:
        node = self._nodes.get((kind, key))
        if node is None:
            node = RecordNode(make())
            self._nodes[(kind, key)] = node
        return node

    def add(self, src: RecordSource) -> None:
        """Add the records of one instance (its parents' records on first use).

        Parameters
        ----------
        src : RecordSource

        Raises
        ------
        ValueError
            ``src.file_id`` is empty.
        """
        if not src.file_id:
            raise ValueError("empty Referenced File ID")
        number = src.instance.get("InstanceNumber", "")
        if src.dataset is None:
            # the common case: one more IMAGE record in a series already seen
            senode = self._nodes.get(("E", src.series_key))
            tpl = self._templates.get((src.series_key, src.sop_class_uid, src.transfer_syntax_uid,
                                       src.specific_character_set, bool(number)))
            if senode is not None and tpl is not None:
                tpl.node(src.file_id, src.sop_instance_uid, number).parent = senode
                self.count += 1
                return
        p, st, se, inst = src.patient, src.study, src.series, src.instance
        full = src.dataset
        charset = _charset_value(src.specific_character_set,
                                 [p.get("PatientName", ""), st.get("StudyDescription", ""),
                                  se.get("SeriesDescription", "")])

        if charset is not None:
            self._non_ascii = True

        def framed(record: Dataset) -> Dataset:
            if charset is not None:
                record.add(_element("SpecificCharacterSet", charset))
            return record

        def make_patient() -> Dataset:
            return framed(self._record("PATIENT", _dataset({
                "PatientName": p.get("PatientName", ""), "PatientID": p.get("PatientID", "")})))

        def make_study() -> Dataset:
            date, tm = self._study_date_time(st, se, inst, full)
            return framed(self._record("STUDY", _dataset({
                "StudyDate": date, "StudyTime": tm, "StudyDescription": st.get("StudyDescription", ""),
                "StudyInstanceUID": st.get("StudyInstanceUID") or None, "StudyID": st.get("StudyID", ""),
                "AccessionNumber": st.get("AccessionNumber", "")})))

        def make_series() -> Dataset:
            record = self._record("SERIES", _dataset({
                "Modality": se.get("Modality", ""), "SeriesInstanceUID": se.get("SeriesInstanceUID", ""),
                "SeriesNumber": se.get("SeriesNumber", "")}))
            if self.extended:
                record.add(_element("SeriesDescription", se.get("SeriesDescription", "")))
            return framed(record)

        pnode = self._parent("P", src.patient_key, make_patient)
        if pnode.parent is None:
            pnode.parent = self.fs._tree                          # noqa: SLF001 (see module notes)
        stnode = self._parent("S", src.study_key, make_study)
        if stnode.parent is None:
            stnode.parent = pnode
        senode = self._parent("E", src.series_key, make_series)
        if senode.parent is None:
            senode.parent = stnode

        if full is None:
            # IMAGE records of a series differ only by three values: pydicom's record of
            # the first one is the template of the others
            key = (src.series_key, src.sop_class_uid, src.transfer_syntax_uid, src.specific_character_set,
                   bool(number))
            tpl = self._templates.get(key)
            if tpl is None:
                tpl = self._templates[key] = _LeafTemplate(self._framed_leaf(src, inst, None, framed))
            leaf = tpl.leaf(src.file_id, src.sop_instance_uid, number)
        else:
            leaf = self._framed_leaf(src, inst, full, framed)
        RecordNode(leaf).parent = senode
        self.count += 1

    def _framed_leaf(self, src: RecordSource, inst, full, framed) -> Dataset:
        leaf = framed(self._leaf(src, inst, full))
        leaf.add(_element("ReferencedFileID", list(src.file_id)))
        leaf.add(_element("ReferencedSOPClassUIDInFile", src.sop_class_uid))
        leaf.add(_element("ReferencedSOPInstanceUIDInFile", src.sop_instance_uid))
        leaf.add(_element("ReferencedTransferSyntaxUIDInFile", src.transfer_syntax_uid))
        return leaf

    def _leaf(self, src: RecordSource, inst: Mapping[str, str], full: Dataset | None) -> Dataset:
        number = inst.get("InstanceNumber", "")
        if full is not None:
            rtype = _fileset._four_level_record_type(full)       # noqa: SLF001 (see module notes)
            if rtype != "IMAGE":
                try:
                    record = self._record(rtype, full)
                except (ValueError, KeyError, AttributeError, TypeError):
                    pass                                          # lacks what the type needs: IMAGE
                else:
                    if rtype == "SR DOCUMENT":
                        _sr_concept_modifiers_only(record)
                    return record
        return self._record("IMAGE", _dataset({"InstanceNumber": number}))

    @staticmethod
    def _study_date_time(st, se, inst, full: Dataset | None) -> tuple[str, str]:
        dates = [st.get("StudyDate"), se.get("SeriesDate"), inst.get("InstanceCreationDate")]
        times = [st.get("StudyTime"), se.get("SeriesTime"), inst.get("InstanceCreationTime")]
        if full is not None:
            dates += [full.get("AcquisitionDate"), full.get("ContentDate")]
            times += [full.get("AcquisitionTime"), full.get("ContentTime")]
        now = time.localtime()
        date = next((str(d) for d in dates if d), time.strftime("%Y%m%d", now))
        tm = next((str(t) for t in times if t), time.strftime("%H%M%S", now))
        return date, tm

    # ---- encoding -------------------------------------------------------------------
    def encode(self) -> bytes:
        """The DICOMDIR file (Part 10, explicit VR little endian).

        When a record holds text beyond ASCII, the DICOMDIR's own data set declares
        (0008,0005) ``ISO_IR 192`` (each such record declares its own character set too).

        Returns
        -------
        bytes
        """
        if self._non_ascii:
            fs = self.fs
            if not fs._ds:                                        # noqa: SLF001 (see module notes)
                fs._ds = fs._create_dicomdir()                    # noqa: SLF001
            fs._ds.SpecificCharacterSet = "ISO_IR 192"            # noqa: SLF001
        buf = io.BytesIO()
        fp = DicomFileLike(buf)
        self.fs._write_dicomdir(fp)                              # noqa: SLF001 (see module notes)
        return buf.getvalue()


def build_dicomdir(sources: "Iterable[RecordSource]", *, extended: bool = False,
                   file_set_id: str = FILE_SET_ID) -> bytes:
    """The DICOMDIR file of the given instances (what the DICOMDIR child process runs).

    Parameters
    ----------
    sources : iterable of RecordSource
        One per instance, in archive order.
    extended : bool
        SeriesDescription in SERIES records.
    file_set_id : str
        (0004,1130) *File-set ID*.

    Returns
    -------
    bytes
        As :meth:`DicomDirBuilder.encode`.
    """
    builder = DicomDirBuilder(extended=extended, file_set_id=file_set_id)
    for src in sources:
        builder.add(src)
    return builder.encode()


#: Binary VRs; no record type copies such an element (pydicom's record creators take
#: dates, codes, UIDs and text), though their presence may decide the record type
#: (EncapsulatedDocument makes an ENCAP DOC).
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
#: Binary values longer than this (bytes) are left out of the headers.
_BULK = 64 * 1024


def read_header(data: bytes) -> Dataset:
    """Parse an instance up to its pixel data (for non-image record types), with its
    large binary values (an encapsulated PDF's document, a waveform's samples...)
    emptied: no record uses them, and they would only weigh on the DICOMDIR child
    process.

    Parameters
    ----------
    data : bytes
        The Part 10 file.

    Returns
    -------
    pydicom.Dataset
    """
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        if elem.VR in _BINARY_VRS and (elem.length if elem.is_raw else len(elem.value or b"")) > _BULK:
            ds[tag] = DataElement(tag, elem.VR, b"")
    return ds
