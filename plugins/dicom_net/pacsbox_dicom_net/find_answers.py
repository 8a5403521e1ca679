"""The answers of a Patient Root or Study Root C-FIND (PS3.4 C.4.1), as Orthanc 1.10.1
builds them: from the ``find_answers`` hook when a plugin answers, else from the index
matched by :func:`pacsbox.find_resources` with DICOM rules.

Each answer holds exactly the requested keys (empty when the resource has no value),
plus (0008,0052) *Query/Retrieve Level*, (0008,0054) *Retrieve AE Title* and (0008,0005)
*Specific Character Set*; requested sequences are copied whole from one instance of the
resource; computed keys (``ModalitiesInStudy``, ``NumberOf...Related...``,
``SOPClassesInStudy``) are computed. An answer without sequences also carries its own
encoding (:class:`_EncodedAnswer`), which :mod:`.find_scp` writes instead of pydicom's.

Also the text helpers the worklist provider shares (:func:`codecs_of`, :func:`text_of`),
and :func:`limit_answers` (``LimitFindResults``/``LimitFindInstances``).
"""
from __future__ import annotations

import logging
import struct
from typing import Any, Mapping

from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from pacsbox import Level, OrthancError, element_text, find_resources

from .hook_calls import log_hook_exception
from .state import plugin_state
from .store_scp import LONG_LENGTH_VRS

log = logging.getLogger("pacsbox.dicom_net.scp")

#: Orthanc 1.10.1's main DICOM tags per level (patient, study, series, instance); kept
#: equal to the core's lists by a test.
MAIN_TAGS = (
    ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs"),
    ("StudyDate", "StudyTime", "StudyID", "StudyDescription", "AccessionNumber", "StudyInstanceUID",
     "RequestedProcedureDescription", "InstitutionName", "RequestingPhysician", "ReferringPhysicianName"),
    ("SeriesDate", "SeriesTime", "Modality", "Manufacturer", "StationName", "SeriesDescription",
     "BodyPartExamined", "SequenceName", "ProtocolName", "SeriesNumber", "CardiacNumberOfImages",
     "ImagesInAcquisition", "NumberOfTemporalPositions", "NumberOfSlices", "NumberOfTimeSlices",
     "SeriesInstanceUID", "ImageOrientationPatient", "SeriesType", "OperatorsName",
     "PerformedProcedureStepDescription", "AcquisitionDeviceProcessingDescription", "ContrastBolusAgent"),
    ("InstanceCreationDate", "InstanceCreationTime", "AcquisitionNumber", "ImageIndex", "InstanceNumber",
     "NumberOfFrames", "TemporalPositionIdentifier", "SOPInstanceUID", "ImagePositionPatient",
     "ImageComments", "ImageOrientationPatient"),
)
_ALL_MAIN = frozenset(t for level in MAIN_TAGS for t in level)

#: (0008,0052) values and the level number of :func:`pacsbox.find_resources`.
LEVELS = {"PATIENT": 0, "STUDY": 1, "SERIES": 2, "IMAGE": 3}

#: Computed keys answered at each level (Orthanc's ``ComputeCounters``).
COUNTERS = (
    frozenset({"NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"}),
    frozenset({"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy",
               "SOPClassesInStudy"}),
    frozenset({"NumberOfSeriesRelatedInstances"}),
    frozenset(),
)
_ALL_COUNTERS = frozenset().union(*COUNTERS)

#: DICOM term of Orthanc's ``DefaultEncoding`` names (others answer in ISO_IR 192).
_ENCODING_TERMS = {"Ascii": "ISO_IR 6", "Utf8": "ISO_IR 192", "Latin1": "ISO_IR 100", "Latin2": "ISO_IR 101",
                   "Latin3": "ISO_IR 109", "Latin4": "ISO_IR 110", "Latin5": "ISO_IR 148",
                   "Cyrillic": "ISO_IR 144", "Arabic": "ISO_IR 127", "Greek": "ISO_IR 126",
                   "Hebrew": "ISO_IR 138", "Thai": "ISO_IR 166"}

_BINARY_NUMBER_VRS = {"US": int, "SS": int, "UL": int, "SL": int, "UV": int, "SV": int, "FL": float, "FD": float}


def _tag_key(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


def codecs_of(ds: Dataset, default: str = "latin_1") -> list[str]:
    """Python codecs of a data set's (0008,0005) *Specific Character Set* (``[default]``
    without one; unknown terms are skipped)."""
    terms = _charset_terms(ds)
    if not terms or terms == [""]:
        return [default]
    try:
        return convert_encodings(terms)
    except Exception:  # noqa: BLE001 - unknown terms: fall back on the default
        return [default]


def text_of(ds: Dataset, tag: int, codecs: list[str]) -> str | None:
    """The text of element ``tag`` of ``ds`` as Orthanc renders it (values joined by
    ``\\``), decoded with ``codecs``; None when absent, binary or a sequence."""
    el = ds.get_item(tag)
    if el is None:
        return None
    try:
        if not isinstance(el, RawDataElement) and el.VR == "PN":
            v = el.value
            if v is None:
                return ""
            items = list(v) if isinstance(v, (list, tuple, MultiValue)) else [v]
            return "\\".join(str(x) for x in items)
        return element_text(el, codecs)
    except Exception:  # noqa: BLE001 - an undecodable value counts as absent
        return None


def _answer_encoding(query_charset: list[str], default_term: str, values: list[str]) -> str:
    """The (0008,0005) of an answer: the query's, else ``DefaultEncoding``'s, when every
    value encodes in it; ``ISO_IR 192`` otherwise."""
    candidates = [query_charset] if query_charset else [[default_term]]
    for terms in candidates:
        try:
            codecs = convert_encodings(terms)
        except Exception:  # noqa: BLE001 - unknown terms
            continue
        if len(codecs) != 1:
            # code extensions (ISO 2022): keep the query's terms when every value is ASCII
            if all(v.isascii() for v in values):
                return "\\".join(terms)
            continue
        try:
            for v in values:
                v.encode(codecs[0])
        except (UnicodeEncodeError, LookupError):
            continue
        return "\\".join(terms)
    return "ISO_IR 192"


def _element(tag: int, vr: str, value: str | None) -> DataElement:
    if value is None or value == "":
        return DataElement(tag, vr, None if vr in _BINARY_NUMBER_VRS else "")
    conv = _BINARY_NUMBER_VRS.get(vr)
    if conv is not None:
        try:
            items = [conv(x) for x in value.split("\\")]
            return DataElement(tag, vr, items[0] if len(items) == 1 else items)
        except ValueError:
            return DataElement(tag, vr, None)
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return DataElement(tag, vr, None)
    return DataElement(tag, vr, value.split("\\") if "\\" in value and vr not in ("LT", "ST", "UT", "UR") else value)


class _FindContext:
    """What one C-FIND request needs while its answers are built."""

    def __init__(self, ctx: Any, level: int, query: Dataset) -> None:
        self.ctx = ctx
        self.default_codec = getattr(ctx.ingest, "default_encoding", "latin_1")
        codecs = codecs_of(query, self.default_codec)
        self.level = level
        self.index = ctx.index
        self.keys: list[tuple[int, str, str]] = []   # (tag, keyword or gggg,eeee, VR) requested
        self.sequences: list[int] = []
        self.constraints: dict[str, str] = {}
        for elem in query:
            tag = int(elem.tag)
            if tag >> 16 < 0x0008 or tag in (0x00080005, 0x00080052):
                continue
            if elem.VR == "SQ":
                self.sequences.append(tag)
                continue
            key = _tag_key(tag)
            vr = elem.VR
            if vr == "UN":
                try:
                    vr = dictionary_VR(tag).split(" or ")[0]
                except KeyError:
                    vr = "LO" if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF else "UN"
            self.keys.append((tag, key, vr))
            value = text_of(query, tag, codecs) or ""
            if key in _ALL_COUNTERS and key != "ModalitiesInStudy":
                continue
            if key == "ModalitiesInStudy" and level != Level.STUDY:
                continue
            self.constraints[key] = value
        self.need_file = bool(self.sequences) or any(
            k not in _ALL_MAIN and k not in _ALL_COUNTERS and k != "RetrieveAETitle" for _, k, _ in self.keys)

    def values(self, res: Any) -> tuple[dict[str, str], Dataset | None]:
        """Values of the requested keys for one matching resource (Orthanc's
        ``AddAnswer``): the main tags of the resource, its ancestors and one of its
        instances (and that instance's file when a requested key is not a main tag)."""
        index = self.index
        values: dict[str, str] = {}
        chain = [res]
        node = res
        while node.parent_internal is not None:
            node = index.get_by_internal(node.parent_internal)
            if node is None:
                break
            chain.append(node)
        instance = None
        wanted_below = self.need_file or any(k in _ALL_MAIN and not any(k in MAIN_TAGS[lv] for lv in range(self.level + 1))
                                             for _, k, _ in self.keys)
        if wanted_below and res.level < Level.INSTANCE:
            down = res
            while down is not None and down.level < Level.INSTANCE:
                kids = index.children(down.internal_id)
                down = kids[0] if kids else None
                if down is not None:
                    chain.insert(0, down)
            instance = down if down is not None and down.level == Level.INSTANCE else None
        elif res.level == Level.INSTANCE:
            instance = res
        for r in reversed(chain):  # patient first: lower levels override
            values.update(r.main_tags)
        ds = None
        if self.need_file and instance is not None:
            try:
                ds = self.ctx.resources.read_dataset(instance, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - the file vanished: answer from the index
                ds = None
        return values, ds

    def counters(self, res: Any) -> dict[str, str]:
        """The computed keys of the query level that the query asks for."""
        wanted = {k for _, k, _ in self.keys} & COUNTERS[self.level]
        if not wanted:
            return {}
        index = self.index
        out: dict[str, str] = {}
        iid = res.internal_id
        if self.level == Level.PATIENT:
            if "NumberOfPatientRelatedStudies" in wanted:
                out["NumberOfPatientRelatedStudies"] = str(len(index.descendant_ids(iid, 0, 1)))
            if "NumberOfPatientRelatedSeries" in wanted:
                out["NumberOfPatientRelatedSeries"] = str(len(index.descendant_ids(iid, 0, 2)))
            if "NumberOfPatientRelatedInstances" in wanted:
                out["NumberOfPatientRelatedInstances"] = str(len(index.descendant_ids(iid, 0, 3)))
        elif self.level == Level.STUDY:
            series = index.children(iid)
            if "NumberOfStudyRelatedSeries" in wanted:
                out["NumberOfStudyRelatedSeries"] = str(len(series))
            if "ModalitiesInStudy" in wanted:
                mods = sorted({s.main_tags.get("Modality") for s in series if s.main_tags.get("Modality")})
                out["ModalitiesInStudy"] = "\\".join(mods)
            if "NumberOfStudyRelatedInstances" in wanted or "SOPClassesInStudy" in wanted:
                inst = index.descendant_ids(iid, 1, 3)
                out["NumberOfStudyRelatedInstances"] = str(len(inst))
                if "SOPClassesInStudy" in wanted:
                    classes = sorted({v for v in (index.get_metadata(i, "SopClassUid") for i in inst) if v})
                    out["SOPClassesInStudy"] = "\\".join(classes)
                if "NumberOfStudyRelatedInstances" not in wanted:
                    del out["NumberOfStudyRelatedInstances"]
        elif self.level == Level.SERIES:
            out["NumberOfSeriesRelatedInstances"] = str(index.count_children(iid))
        return out

    def answer(self, res: Any, qr_level: str, retrieve_aet: str, query_charset: list[str],
               default_term: str) -> Dataset:
        """The answer data set of one matching resource."""
        values, ds = self.values(res)
        file_codecs = codecs_of(ds, self.default_codec) if ds is not None else []
        counters = self.counters(res)
        texts: dict[int, tuple[str, str]] = {}
        for tag, key, vr in self.keys:
            if key in counters:
                texts[tag] = (vr, counters[key])
                continue
            v = None
            if ds is not None:
                v = text_of(ds, tag, file_codecs)
            if v is None:
                v = values.get(key)
            texts[tag] = (vr, v or "")
        charset = _answer_encoding(query_charset, default_term, [t for _, t in texts.values()])
        out = Dataset()
        if not self.sequences:
            items = [(0x00080005, "CS", charset), (0x00080052, "CS", qr_level), (0x00080054, "AE", retrieve_aet)]
            items += [(tag, vr, text) for tag, (vr, text) in texts.items() if tag != 0x00080054]
            items.sort()
            out.pacsbox_encoded = _EncodedAnswer(items, charset)
        out.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
        out.QueryRetrieveLevel = qr_level
        out.RetrieveAETitle = retrieve_aet
        for tag, (vr, text) in texts.items():
            if tag == 0x00080054:
                continue  # RetrieveAETitle: always ours
            out.add(_element(tag, vr, text))
        for tag in self.sequences:  # absent from the instance: left out, as Orthanc 1.10.1
            seq = ds.get(tag) if ds is not None else None
            if seq is not None and seq.VR == "SQ":
                out.add(DataElement(tag, "SQ", DicomSequence([copy_item(item) for item in seq.value])))
        return out


#: VRs whose explicit-VR header has a 4-byte length (PS3.5 section 7.1.2), as text.
_LONG_VRS = frozenset(v.decode() for v in LONG_LENGTH_VRS)
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                       "UR", "UT"})


class _EncodedAnswer:
    """The encoding of a C-FIND answer built from text values, without pydicom: what
    ``pynetdicom.dsutils.encode`` gives for the same data set (checked by a test), at a
    fraction of its cost. None (pydicom's encoder then) for what it does not cover:
    big endian, deflate, binary VRs, ISO 2022 code extensions.

    Parameters
    ----------
    items : list of (int, str, str)
        ``(tag, VR, text)`` in ascending tag order, texts as on the wire (multiple values
        joined with a backslash), without padding.
    charset : str
        The answer's *Specific Character Set* (defined terms joined with a backslash).
    """

    def __init__(self, items: list[tuple[int, str, str]], charset: str) -> None:
        self.items = items
        self.charset = charset

    def encode(self, implicit: bool, little: bool, deflated: bool) -> bytes | None:
        """The data set bytes in the given transfer syntax, or None (see above)."""
        if not little or deflated or "\\" in self.charset:
            return None
        try:
            (codec,) = convert_encodings([self.charset or "ISO_IR 6"])
        except Exception:  # noqa: BLE001 - unknown term: pydicom decides
            return None
        out = []
        for tag, vr, text in self.items:
            if vr not in _TEXT_VRS:
                return None
            try:
                raw = text.encode("ascii" if vr in ("AE", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "AS") else codec)
            except UnicodeEncodeError:
                return None
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
            group, elem = tag >> 16, tag & 0xFFFF
            if implicit:
                out.append(struct.pack("<HHI", group, elem, len(raw)))
            elif vr in _LONG_VRS:
                out.append(struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(raw)))
            elif len(raw) > 0xFFFF:
                return None
            else:
                out.append(struct.pack("<HH2sH", group, elem, vr.encode(), len(raw)))
            out.append(raw)
        return b"".join(out)


def copy_item(item: Dataset) -> Dataset:
    """A copy of a sequence item (nested sequences copied too) that shares no element
    with ``item``.

    Parameters
    ----------
    item : pydicom.Dataset

    Returns
    -------
    pydicom.Dataset
    """
    new = Dataset()
    for el in item:
        if el.VR == "SQ":
            new.add(DataElement(el.tag, "SQ", DicomSequence([copy_item(i) for i in el.value])))
        else:
            new.add(DataElement(el.tag, el.VR, el.value))
    return new


def _charset_terms(query: Dataset) -> list[str]:
    el = query.get_item(0x00080005)
    if el is None:
        return []
    v = query.SpecificCharacterSet
    terms = list(v) if isinstance(v, (list, tuple, MultiValue)) else [v]
    return [str(t).strip() for t in terms if t is not None]


def limit_answers(ctx: Any, answers: Any, level: str | None = None) -> tuple[list, bool]:
    """The answers kept under ``LimitFindResults`` (``LimitFindInstances`` at IMAGE level).

    Parameters
    ----------
    ctx : ServerContext
    answers : iterable of pydicom.Dataset or None
    level : str, optional
        The query's (0008,0052) *Query/Retrieve Level*.

    Returns
    -------
    (list of pydicom.Dataset, bool)
        The first answers up to the limit (all when the option is 0), and whether some
        were cut.
    """
    limit = ctx.config.int("LimitFindInstances" if level == "IMAGE" else "LimitFindResults")
    answers = list(answers or [])
    if limit and len(answers) > limit:
        return answers[:limit], True
    return answers, False


def answers_for(ctx: Any, query: Dataset, origin: Mapping[str, Any]) -> tuple[list[Dataset] | None, bool]:
    """The answers of a Patient/Study Root C-FIND (see the module docstring).

    Parameters
    ----------
    ctx : ServerContext
    query : pydicom.Dataset
        The identifier, as the ``filter_incoming_find`` hooks left it.
    origin : mapping
        ``{"RemoteAET", "CalledAET", "RemoteIP"}`` of the association.

    Returns
    -------
    (list of pydicom.Dataset or None, bool)
        The answers (None when the query has no valid (0008,0052), is rejected by the
        index or the ``find_answers`` hook raised: logged), and whether
        ``LimitFindResults``/``LimitFindInstances`` cut them.
    """
    qr = str(query.get("QueryRetrieveLevel", "") or "").strip().upper()
    if qr not in LEVELS:
        log.error("C-FIND request without a valid QueryRetrieveLevel (0008,0052): %r", qr)
        return None, False
    try:
        hooked = ctx.pm.hook.find_answers(level=qr, query=query, origin=origin)
    except Exception as e:  # noqa: BLE001
        log_hook_exception(ctx, "find_answers", e)
        return None, False
    if hooked is not None:
        return limit_answers(ctx, hooked, qr)
    level = LEVELS[qr]
    fc = _FindContext(ctx, level, query)
    opts = plugin_state(ctx).options
    limit = ctx.config.int("LimitFindInstances" if level == Level.INSTANCE else "LimitFindResults")
    try:
        found = find_resources(ctx, level, fc.constraints, dicom_rules=True, limit=limit + 1 if limit else 0)
    except OrthancError as e:
        log.error("C-FIND: bad query: %s", e)
        return None, False
    cut = bool(limit) and len(found) > limit
    if cut:
        found = found[:limit]
        log.warning("Too many results for an incoming C-FIND query")
    charset = _charset_terms(query)
    default_term = _ENCODING_TERMS.get(getattr(ctx.ingest, "default_encoding_name", "Latin1"), "ISO_IR 192")
    aet = opts["DicomAet"]
    return [fc.answer(res, qr, aet, charset, default_term) for res in found], cut
