"""C-FIND SCU mechanics: the identifier Orthanc sends, the C-FIND itself, and the store of
query results (``/queries``).

No falcon here: :mod:`.query_resources` holds the REST routes, :mod:`.move_job` the
retrieve jobs. What is sent follows Orthanc 1.10.1 (``DicomControlUserConnection::Find``,
``FixFindQuery``, ``ConvertQueryFields``), checked against the real server by a recording
SCP (reference section 9.5):

- ``Normalize`` (default true) drops the keys outside the Patient module and the modules
  down to the query level, except that level's computed counters and
  (0008,0005) *Specific Character Set*;
- the manufacturer quirks then apply: ``GenericNoWildcardInDates`` turns a ``*`` in a DA
  element into an empty (universal) value, ``GenericNoUniversalWildcard`` does so for any
  element;
- (0008,0052) *Query/Retrieve Level* is set, and the identifiers down to the level are
  added as universal keys when absent (``*`` instead of empty for ``GE``);
- (0008,0005) is ``ISO_IR 100`` (``DefaultEncoding`` Latin-1) unless the query sets it;
- Patient Root FIND for the patient level, Study Root FIND otherwise; Modality Worklist
  FIND for ``find-worklist``.

Before all that, :func:`run_query` (``/modalities/{id}/query`` and the child queries of
``/queries``) gives the keys to the chained filter ``filter_outgoing_find``, as Orthanc
1.10.1's ``QueryRetrieveHandler`` gives them to the Lua ``OutgoingFindRequestFilter``; the
``find-*`` routes do not.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (ModalityWorklistInformationFind, PatientRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelFind)

from pacsbox import ErrorCode, OrthancError, dataset_to_json, parse_tag, tag_to_key

from .modalities import Modality
from .scu import open_association, scu_timeout
from .state import plugin_state

log = logging.getLogger("pacsbox.dicom_net.query")

#: Orthanc's resource-type spellings (``StringToResourceType``, case-insensitive) -> level.
_LEVEL_NAMES = {"PATIENT": "Patient", "PATIENTS": "Patient", "STUDY": "Study", "STUDIES": "Study",
                "SERIES": "Series", "INSTANCE": "Instance", "INSTANCES": "Instance", "IMAGE": "Instance",
                "IMAGES": "Instance"}
#: The four levels, top-down.
LEVELS = ("Patient", "Study", "Series", "Instance")
#: Level -> (0008,0052) *Query/Retrieve Level* value.
QR_LEVEL = {"Patient": "PATIENT", "Study": "STUDY", "Series": "SERIES", "Instance": "IMAGE"}

QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
PATIENT_ID = 0x00100020
STUDY_INSTANCE_UID = 0x0020000D
ACCESSION_NUMBER = 0x00080050
SERIES_INSTANCE_UID = 0x0020000E
SOP_INSTANCE_UID = 0x00080018

#: Tags of each module (Orthanc ``DicomTag::AddTagsForModule``, reference appendix C).
MODULE_TAGS: dict[str, frozenset[int]] = {
    "Patient": frozenset([
        0x00100010, 0x00100020, 0x00100030, 0x00100040, 0x00081120, 0x00100032, 0x00101000, 0x00101002,
        0x00101001, 0x00102160, 0x00104000, 0x00102201, 0x00102202, 0x00102292, 0x00102293, 0x00102294,
        0x00102297, 0x00102298, 0x00102299, 0x00120062, 0x00120063, 0x00120064, 0x00100021, 0x00100024]),
    "Study": frozenset([
        0x0020000D, 0x00080020, 0x00080030, 0x00080090, 0x00080096, 0x00200010, 0x00080050, 0x00080051,
        0x00081030, 0x00081048, 0x00081049, 0x00081060, 0x00081062, 0x00321034, 0x00081110, 0x00081032,
        0x00401012]),
    "Series": frozenset([
        0x00080060, 0x0020000E, 0x00200011, 0x00200060, 0x00080021, 0x00080031, 0x00081050, 0x00081052,
        0x00181030, 0x0008103E, 0x0008103F, 0x00081070, 0x00081072, 0x00081111, 0x00081250, 0x00180015,
        0x00185100, 0x00280108, 0x00280109, 0x00400275, 0x00102210, 0x00400253, 0x00400244, 0x00400245,
        0x00400254, 0x00400260, 0x00400280]),
    "Instance": frozenset([
        0x00080016, 0x00080018, 0x00080005, 0x00080012, 0x00080013, 0x00080014, 0x0008001A, 0x0008001B,
        0x00080110, 0x00080201, 0x0018A001, 0x00200013, 0x01000410, 0x01000420, 0x01000424, 0x01000426,
        0x04000500, 0x04000561, 0x0040A390, 0x00280303, 0x4FFE0001, 0xFFFAFFFA]),
}
#: Computed counters a level may ask for (Orthanc ``FixFindQuery``).
LEVEL_COUNTERS: dict[str, frozenset[int]] = {
    "Patient": frozenset([0x00201200, 0x00201202, 0x00201204]),
    "Study": frozenset([0x00080061, 0x00201206, 0x00201208, 0x00080062]),
    "Series": frozenset([0x00201209]),
    "Instance": frozenset(),
}
#: Identifiers added (as universal keys) down to each level, in Orthanc's order.
LEVEL_IDENTIFIERS: dict[str, tuple[int, ...]] = {
    "Patient": (PATIENT_ID,),
    "Study": (PATIENT_ID, STUDY_INSTANCE_UID, ACCESSION_NUMBER),
    "Series": (PATIENT_ID, STUDY_INSTANCE_UID, ACCESSION_NUMBER, SERIES_INSTANCE_UID),
    "Instance": (PATIENT_ID, STUDY_INSTANCE_UID, ACCESSION_NUMBER, SERIES_INSTANCE_UID, SOP_INSTANCE_UID),
}
#: ``DefaultEncoding`` -> (0008,0005) value of outgoing queries (Orthanc ``GetDicomSpecificCharacterSet``).
_CHARSETS = {"Ascii": "ISO_IR 6", "Utf8": "ISO_IR 192", "Latin1": "ISO_IR 100", "Latin2": "ISO_IR 101",
             "Latin3": "ISO_IR 109", "Latin4": "ISO_IR 110", "Latin5": "ISO_IR 148", "Cyrillic": "ISO_IR 144",
             "Windows1251": "ISO_IR 144", "Arabic": "ISO_IR 127", "Greek": "ISO_IR 126", "Hebrew": "ISO_IR 138",
             "Thai": "ISO_IR 166", "Japanese": "ISO_IR 13", "Chinese": "GB18030", "Korean": "ISO 2022 IR 149",
             "JapaneseKanji": "ISO 2022 IR 87", "SimplifiedChinese": "ISO 2022 IR 58"}


def parse_level(value: Any) -> str:
    """Read a ``Level`` field as Orthanc's ``StringToResourceType`` does.

    Parameters
    ----------
    value : str
        ``Patient``, ``Study``, ``Series``, ``Instance`` in any case, or the plural and
        ``Image`` spellings.

    Returns
    -------
    str
        One of :data:`LEVELS`.

    Raises
    ------
    OrthancError
        400 ``PARAMETER_OUT_OF_RANGE`` (no details, as Orthanc 1.10.1) for another value.
    """
    level = _LEVEL_NAMES.get(str(value).upper()) if isinstance(value, str) else None
    if level is None:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE)
    return level


def parse_tag_map(body: Mapping[str, Any], name: str = "Query") -> dict[int, str]:
    """Read an object of tag -> string (Orthanc ``SerializationToolbox::ReadMapOfTags``).

    Parameters
    ----------
    body : mapping
        The request's JSON object.
    name : str
        Field name.

    Returns
    -------
    dict of int to str
        ``0xGGGGEEEE`` -> value; empty when the field is absent.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` "Associative array of DICOM tags to strings expected in
        field: Query" for an unknown tag name or a value that is not a string.
    """
    value = body.get(name, {})
    out: dict[int, str] = {}
    error = OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Associative array of DICOM tags to strings expected in field: {name}")
    if not isinstance(value, Mapping):
        raise error
    for key, v in value.items():
        if not isinstance(v, str):
            raise error
        try:
            out[parse_tag(key)] = v
        except (KeyError, ValueError):
            raise error from None
    return out


def tags_from_json(value: Any) -> dict[int, str]:
    """Read one identifier of ``/modalities/{id}/move`` ``Resources`` (Orthanc
    ``FromDcmtkBridge::FromJson``): an object of tag (keyword or ``gggg,eeee``) -> string.

    Raises
    ------
    OrthancError
        400 ``BAD_FILE_FORMAT`` (no details) when it is not such an object.
    """
    error = OrthancError(ErrorCode.BAD_FILE_FORMAT)   # no details, as Orthanc 1.10.1
    if not isinstance(value, Mapping):
        raise error
    try:
        return parse_tag_map({"Resource": value}, "Resource")
    except OrthancError:
        raise error from None


def allowed_tags(level: str) -> frozenset[int]:
    """Tags ``Normalize`` keeps at ``level`` (Orthanc ``FixFindQuery``).

    Parameters
    ----------
    level : str
        One of :data:`LEVELS`.

    Returns
    -------
    frozenset of int
        The tags of the modules from the Patient one down to ``level``, the level's
        computed counters, and (0008,0005) *Specific Character Set*.
    """
    idx = LEVELS.index(level)
    tags: set[int] = set()
    for lv in LEVELS[: idx + 1]:
        tags |= MODULE_TAGS[lv]
    return frozenset(tags | LEVEL_COUNTERS[level] | {SPECIFIC_CHARACTER_SET})


def _vr(tag: int) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "LO" if (tag >> 16) % 2 else "UN"
    return vr.split(" or ")[0] if vr else "UN"


def fix_for_manufacturer(fields: Mapping[int, str], manufacturer: str) -> dict[int, str]:
    """Apply a manufacturer's wildcard quirk (Orthanc ``ConvertQueryFields``).

    Parameters
    ----------
    fields : mapping of int to str
        Tag -> value.
    manufacturer : str
        The modality's ``Manufacturer``.

    Returns
    -------
    dict of int to str
        A copy where a ``*`` value becomes empty (universal matching) in DA elements for
        ``GenericNoWildcardInDates``, in every element for ``GenericNoUniversalWildcard``.
    """
    out = dict(fields)
    if manufacturer in ("GenericNoWildcardInDates", "GenericNoUniversalWildcard"):
        for tag, v in fields.items():
            if v == "*" and (manufacturer == "GenericNoUniversalWildcard" or _vr(tag) == "DA"):
                out[tag] = ""
    return out


def default_charset(ctx: Any) -> str:
    """The (0008,0005) *Specific Character Set* of outgoing identifiers.

    Parameters
    ----------
    ctx : ServerContext

    Returns
    -------
    str
        From the ``DefaultEncoding`` option (``Latin1``, the default, gives ``ISO_IR 100``).
    """
    enc = ctx.config.get("DefaultEncoding", "Latin1") if hasattr(ctx.config, "get") else "Latin1"
    return _CHARSETS.get(str(enc), "ISO_IR 100")


def make_dataset(fields: Mapping[int, str], charset: str | None = None) -> Dataset:
    """A data set holding ``fields`` with their dictionary VRs (empty values kept).

    Parameters
    ----------
    fields : mapping of int to str
    charset : str, optional
        (0008,0005) to set when ``fields`` has none.

    Returns
    -------
    pydicom.Dataset
        Group 0002 is left out (never part of an identifier); binary and numeric VRs get
        typed values, SQ an empty sequence.
    """
    ds = Dataset()
    if charset and SPECIFIC_CHARACTER_SET not in fields:
        ds.add_new(SPECIFIC_CHARACTER_SET, "CS", charset)
    for tag in sorted(fields):
        if tag >> 16 == 0x0002:    # group 2 is file meta, never part of an identifier
            continue
        vr = _vr(tag)
        value: Any = fields[tag]
        if vr == "SQ":
            value = []
        elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "AT", "UV", "SV") or vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            value = None if value == "" else value
            if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") and value is not None:
                value = value.encode("latin-1", "replace")
            elif value is not None:
                try:
                    value = [float(x) if vr in ("FL", "FD") else int(x) for x in value.split("\\")]
                    value = value[0] if len(value) == 1 else value
                except ValueError:
                    value = None
        elif value == "" and vr in ("IS", "DS"):
            value = None
        ds.add_new(tag, vr, value)
    return ds


def find_identifier(level: str, fields: Mapping[int, str], *, normalize: bool = True,
                    manufacturer: str = "Generic", charset: str = "ISO_IR 100") -> Dataset:
    """The C-FIND identifier Orthanc 1.10.1 sends for a query (module docstring).

    Parameters
    ----------
    level : str
        One of :data:`LEVELS`.
    fields : mapping of int to str
        The query (tag -> value), as submitted.
    normalize : bool
        ``Normalize``.
    manufacturer : str
        The modality's ``Manufacturer``.
    charset : str
        (0008,0005) when the query has none.

    Returns
    -------
    pydicom.Dataset
    """
    if normalize:
        keep = allowed_tags(level)
        fields = {t: v for t, v in fields.items() if t in keep}
        fields = fix_for_manufacturer(fields, manufacturer)
    fields = dict(fields)
    fields[QUERY_RETRIEVE_LEVEL] = QR_LEVEL[level]
    universal = "*" if manufacturer == "GE" else ""
    for tag in LEVEL_IDENTIFIERS[level]:
        fields.setdefault(tag, universal)
    return make_dataset(fields, charset)


def move_identifier(level: str, fields: Mapping[int, str], manufacturer: str = "Generic",
                    charset: str = "ISO_IR 100") -> Dataset:
    """The C-MOVE / C-GET identifier (Orthanc ``MoveInternal``).

    Parameters
    ----------
    level : str
        One of :data:`LEVELS`.
    fields : mapping of int to str
        The identifier's keys (see :func:`retrieve_keys`).
    manufacturer : str
        The modality's ``Manufacturer`` (wildcard quirks).
    charset : str
        (0008,0005) when ``fields`` has none.

    Returns
    -------
    pydicom.Dataset
        ``fields`` with (0008,0052) *Query/Retrieve Level* and (0008,0005).
    """
    fields = fix_for_manufacturer(fields, manufacturer)
    fields[QUERY_RETRIEVE_LEVEL] = QR_LEVEL[level]
    return make_dataset(fields, charset)


def retrieve_keys(answer: Dataset) -> tuple[str, dict[int, str]]:
    """What Orthanc moves for a C-FIND answer (``DicomControlUserConnection::Move``): the
    answer's level and its identifiers down to that level.

    Returns
    -------
    (str, dict of int to str)
        The level and the identifier fields.

    Raises
    ------
    OrthancError
        500 ``INTERNAL_ERROR`` when the answer has no valid (0008,0052).
    """
    short = answer_short(answer)
    level = _LEVEL_NAMES.get(str(short.get(QUERY_RETRIEVE_LEVEL) or "").strip().upper())
    if level is None:
        raise OrthancError(ErrorCode.INTERNAL_ERROR, "A C-FIND answer has no valid QueryRetrieveLevel")
    keys = {"Patient": (PATIENT_ID,), "Study": (STUDY_INSTANCE_UID,),
            "Series": (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID),
            "Instance": (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)}[level]
    return level, {t: short[t] for t in keys if isinstance(short.get(t), str)}


def answer_short(ds: Dataset) -> dict[int, Any]:
    """An answer's values by tag.

    Parameters
    ----------
    ds : pydicom.Dataset

    Returns
    -------
    dict of int to str or None
        Tag -> text value (binary values and sequences as None, as Orthanc's short form).
    """
    out = {}
    for key, value in dataset_to_json(ds, "short", max_len=0).items():
        out[int(key.replace(",", ""), 16)] = value
    return out


def render(ds: Dataset, fmt: str) -> dict[str, Any]:
    """Orthanc's JSON of an answer or a query (Orthanc ``DicomFindAnswers::ToJson``).

    Parameters
    ----------
    ds : pydicom.Dataset
        With raw elements (see :func:`as_raw`).
    fmt : {"full", "simplify", "short"}

    Returns
    -------
    dict
        Strings are never truncated (``max_len`` 0).
    """
    return dataset_to_json(ds, fmt, max_len=0)


def as_raw(ds: Dataset) -> Dataset:
    """Re-read a data set with raw elements, as :func:`pacsbox.dataset_to_json` expects.

    Parameters
    ----------
    ds : pydicom.Dataset
        As pynetdicom hands it out (decoded elements, whose PN values would render as
        bytes).

    Returns
    -------
    pydicom.Dataset
        Encoded in explicit VR little endian and read back without decoding.
    """
    from io import BytesIO

    from pydicom.filereader import read_dataset
    from pynetdicom.dsutils import encode
    data = encode(ds, False, True)
    if data is None:
        return ds
    return read_dataset(BytesIO(data), False, True)


def _status_text(status: int) -> str:
    return f"0x{status:04X}"


def run_find(ctx: Any, modality: Modality, identifier: Dataset, *, worklist: bool = False,
             local_aet: str | None = None, timeout: float | None = None) -> list[Dataset]:
    """Send one C-FIND and collect the answers.

    Parameters
    ----------
    ctx : ServerContext
    modality : Modality
    identifier : pydicom.Dataset
        From :func:`find_identifier` (its (0008,0052) picks Patient or Study Root).
    worklist : bool
        Modality Worklist Information Model FIND instead.
    local_aet : str, optional
        Calling AET (``LocalAet``).
    timeout : float, optional
        Seconds (``Timeout``; see :func:`pacsbox_dicom_net.scu.scu_timeout`).

    Returns
    -------
    list of pydicom.Dataset
        The identifiers of the Pending responses, in arrival order.

    Raises
    ------
    OrthancError
        ``NETWORK_PROTOCOL`` (500) when the association fails, when the remote answers a
        failure status ("C-FIND SCU to AET "X" has failed with DIMSE status 0xC000", as
        Orthanc) or when the exchange is aborted or times out.
    """
    if worklist:
        model = ModalityWorklistInformationFind
    elif str(identifier.get("QueryRetrieveLevel", "")) == "PATIENT":
        model = PatientRootQueryRetrieveInformationModelFind
    else:
        model = StudyRootQueryRetrieveInformationModelFind
    from pynetdicom.presentation import build_context
    assoc = open_association(ctx, modality, [build_context(model)], local_aet=local_aet, timeout=timeout)
    answers: list[Dataset] = []
    final = None
    t0 = time.monotonic()
    try:
        for status, ident in assoc.send_c_find(identifier, model):
            if not status or "Status" not in status:
                break
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if ident is not None:
                    answers.append(as_raw(ident))
                continue
            final = code
            break
    finally:
        if assoc.is_established:
            assoc.release()
    if final is None:
        seconds = scu_timeout(ctx, modality, timeout)
        if seconds and time.monotonic() - t0 >= 0.9 * seconds:   # Orthanc 1.10.1's (DCMTK's) wording
            reason = "DIMSE No data available (timeout in non-blocking mode)"
        else:
            reason = "the association was aborted by the remote"
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL, f'DicomAssociation - C-FIND to AET "{modality.aet}": {reason}')
    if final != 0x0000 and not 0xB000 <= final <= 0xBFFF:
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL,
                           f'C-FIND SCU to AET "{modality.aet}" has failed with DIMSE status {_status_text(final)}')
    return answers


@dataclass
class QueryResult:
    """One ``/queries/{id}``: a C-FIND that ran, with its answers.

    Attributes
    ----------
    id : str
        UUID.
    modality_name : str
        Symbolic name of the queried modality.
    modality : Modality
    level : str
        One of :data:`LEVELS`.
    query : dict of int to str
        The filter as submitted (``GET /queries/{id}/query``).
    normalize : bool
    local_aet : str or None
        ``LocalAet`` of the request (retrieves reuse it).
    timeout : float or None
        ``Timeout`` of the request, seconds (retrieves reuse it).
    answers : list of pydicom.Dataset
    """

    id: str
    modality_name: str
    modality: Modality
    level: str
    query: dict[int, str]
    normalize: bool = True
    local_aet: str | None = None
    timeout: float | None = None
    answers: list[Dataset] = field(default_factory=list)

    def answer(self, index: int) -> Dataset:
        """Answer ``index``.

        Raises
        ------
        OrthancError
            400 ``PARAMETER_OUT_OF_RANGE`` when out of range.
        """
        if not 0 <= index < len(self.answers):
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE)
        return self.answers[index]

    def query_dataset(self) -> Dataset:
        """The submitted filter as a data set (to render it)."""
        return as_raw(make_dataset(self.query, "ISO_IR 192"))


class QueryStore:
    """The ``/queries`` of one app: at most ``QueryRetrieveSize`` results, the least
    recently used dropped first (Orthanc ``SharedArchive``: a read makes a query recent).

    Parameters
    ----------
    size : int
        ``QueryRetrieveSize`` (0 keeps none, as Orthanc).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: "collections.OrderedDict[str, QueryResult]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, result: QueryResult) -> str:
        """Keep ``result`` (evicting the oldest beyond the size); returns its ID."""
        with self._lock:
            self._items[result.id] = result
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return result.id

    def get(self, query_id: str) -> QueryResult | None:
        """The query ``query_id`` (made most recent), or None."""
        with self._lock:
            res = self._items.get(query_id)
            if res is not None:
                self._items.move_to_end(query_id)
            return res

    def remove(self, query_id: str) -> None:
        """Forget ``query_id`` (no error when unknown, as Orthanc)."""
        with self._lock:
            self._items.pop(query_id, None)

    def ids(self) -> list[str]:
        """Query IDs, sorted (Orthanc lists its archive's map)."""
        with self._lock:
            return sorted(self._items)


def query_store(ctx: Any) -> QueryStore:
    """This app's query store.

    Parameters
    ----------
    ctx : ServerContext

    Returns
    -------
    QueryStore
        Kept in ``plugin_state(ctx).extra["queries"]``, created on first use with
        ``QueryRetrieveSize``.
    """
    state = plugin_state(ctx)
    with state.lock:
        store = state.extra.get("queries")
        if store is None:
            store = state.extra["queries"] = QueryStore(state.options["QueryRetrieveSize"])
        return store


def get_modality(ctx: Any, name: str) -> Modality:
    """The modality of symbolic name ``name``.

    Raises
    ------
    OrthancError
        404 ``INEXISTENT_ITEM`` "No modality with symbolic name: X" (Orthanc 1.10.1).
    """
    m = plugin_state(ctx).modalities.get(name)
    if m is None:
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"No modality with symbolic name: {name}")
    return m


def run_query(ctx: Any, modality_name: str, level: str, fields: Mapping[int, str], *, normalize: bool = True,
              local_aet: str | None = None, timeout: float | None = None) -> QueryResult:
    """Run a C-FIND on ``modality_name`` and keep the result in the app's query store.

    Parameters
    ----------
    ctx : ServerContext
    modality_name : str
    level : str
        One of :data:`LEVELS`.
    fields : mapping of int to str
    normalize : bool
    local_aet : str, optional
    timeout : float, optional
        Seconds.

    Returns
    -------
    QueryResult
        Stored (``/queries/{id}``).

    Raises
    ------
    OrthancError
        404 for an unknown modality; 500 ``NETWORK_PROTOCOL`` (see :func:`run_find`);
        what a ``filter_outgoing_find`` implementation raised (see
        :func:`filter_outgoing`).
    """
    modality = get_modality(ctx, modality_name)
    sent = filter_outgoing(ctx, modality_name, modality, level, fields)
    ident = find_identifier(level, sent, normalize=normalize, manufacturer=modality.manufacturer,
                            charset=default_charset(ctx))
    answers = run_find(ctx, modality, ident, local_aet=local_aet, timeout=timeout)
    result = QueryResult(str(uuid.uuid4()), modality_name, modality, level, dict(fields), normalize, local_aet,
                         timeout, answers)
    query_store(ctx).add(result)
    return result


def filter_outgoing(ctx: Any, modality_name: str, modality: Modality, level: str,
                    fields: Mapping[int, str]) -> Mapping[int, str]:
    """The keys of a query after the ``filter_outgoing_find`` implementations.

    Parameters
    ----------
    ctx : ServerContext
    modality_name : str
    modality : Modality
    level : str
        One of :data:`LEVELS`.
    fields : mapping of int to str
        The query as submitted.

    Returns
    -------
    mapping of int to str
        ``fields`` itself when no plugin implements the hook.

    Raises
    ------
    OrthancError
        What an implementation raised as an ``OrthancError`` (e.g. a Lua error, 500
        ``CannotExecuteLua``); 500 ``INTERNAL_ERROR`` naming the plugin for any other
        exception, or a result that is not a mapping of tags to strings (logged).
    """
    from .hook_calls import HookFailed, call_chain
    description = {"Name": modality_name, **modality.to_json()}
    try:
        return call_chain(ctx, "filter_outgoing_find", "query", dict(fields), Mapping, _tags_to_text, level=level,
                          modality=description)
    except HookFailed as e:
        if isinstance(e.error, OrthancError):
            raise e.error from None
        log.error("%s", e, exc_info=e.error)
        raise OrthancError(ErrorCode.INTERNAL_ERROR, str(e)) from None


def _tags_to_text(value: Mapping[Any, Any]) -> bool:
    return all(isinstance(k, int) and not isinstance(k, bool) and isinstance(v, str) for k, v in value.items())


def short_keys(fields: Mapping[int, Any]) -> dict[str, Any]:
    """Tag -> value with Orthanc's ``gggg,eeee`` keys.

    Parameters
    ----------
    fields : mapping of int to any

    Returns
    -------
    dict of str to any
        ``{0x00100020: "P"}`` gives ``{"0010,0020": "P"}``, sorted by tag.
    """
    return {tag_to_key(t): v for t, v in sorted(fields.items())}

