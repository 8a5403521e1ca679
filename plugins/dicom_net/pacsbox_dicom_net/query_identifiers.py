"""The data sets of query/retrieve as an SCU: the C-FIND identifier Orthanc sends, the
C-MOVE / C-GET identifier, the request fields they are read from (``Level``, ``Query``,
``Resources``), and the answers read back (Orthanc's JSON, or tag -> value).

No network and no falcon here: :mod:`.find_scu` sends the C-FIND and keeps the results,
:mod:`.query_routes` holds the REST routes, :mod:`.move_job` the retrieve jobs. What is
sent follows Orthanc 1.10.1 (``DicomControlUserConnection::Find``, ``FixFindQuery``,
``ConvertQueryFields``), checked against the real server by a recording SCP (reference
section 9.5):

- ``Normalize`` (default true) drops the keys outside the Patient module and the modules
  down to the query level, except that level's computed counters and
  (0008,0005) *Specific Character Set*;
- the manufacturer quirks then apply: ``GenericNoWildcardInDates`` turns a ``*`` in a DA
  element into an empty (universal) value, ``GenericNoUniversalWildcard`` does so for any
  element;
- (0008,0052) *Query/Retrieve Level* is set, and the identifiers down to the level are
  added as universal keys when absent (``*`` instead of empty for ``GE``);
- (0008,0005) is ``ISO_IR 100`` (``DefaultEncoding`` Latin-1) unless the query sets it.
"""
from __future__ import annotations

from typing import Any, Mapping

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from pacsbox import ErrorCode, OrthancError, dataset_to_json, parse_tag, tag_to_key

#: Orthanc's resource-type spellings (``StringToResourceType``, case-insensitive) -> level.
LEVEL_NAMES = {"PATIENT": "Patient", "PATIENTS": "Patient", "STUDY": "Study", "STUDIES": "Study",
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
    level = LEVEL_NAMES.get(str(value).upper()) if isinstance(value, str) else None
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
    level = LEVEL_NAMES.get(str(short.get(QUERY_RETRIEVE_LEVEL) or "").strip().upper())
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

