"""DIMSE handlers of the SCP: C-ECHO, C-STORE, C-FIND (Patient/Study Root and Modality
Worklist), and the permission checks of every command.

Every handler takes the pynetdicom event and the app's ``ctx`` (bound as an extra argument
by :mod:`.scp`, qrscp style) and never lets an exception reach pynetdicom: a failure
becomes a DIMSE failure status, logged (with the plugin's name when a plugin hook
raised), and the association goes on (design section 0: never an abort).

Status codes (DICOM PS3.4 annex B.2.3 and C.4.1.1.4, PS3.7 annex C):

======== ===============================================================================
status   when
======== ===============================================================================
0x0000   success; also a duplicate instance and an instance refused by a
         ``filter_received_instance`` filter returning False (Orthanc 1.10.1 answers
         success "to keep backward compatibility")
0x0124   refused: not authorized (the command is not allowed to the calling AET)
0xA700   C-STORE: an error while storing, or a ``filter_received_instance`` or
         ``filter_incoming_cstore`` filter that raised (Orthanc's
         ``STATUS_STORE_Refused_OutOfResources`` for an exception)
(any)    C-STORE: the status a ``filter_incoming_cstore`` implementation returned
0xA900   C-STORE: the data set's SOP Class/Instance UID differs from the command's
0xC000   cannot understand / unable to process (unparseable data set, handler failure)
0xFE00   C-FIND: answers cut at ``LimitFindResults``/``LimitFindInstances``
======== ===============================================================================
"""
from __future__ import annotations

import io
import logging
import ssl
import struct
from typing import Any, Callable, Iterator, Mapping

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pynetdicom.dsutils import encode as encode_dataset

from pacsbox import Level, OrthancError, element_text, find_resources

from .dimse import command_pdu, command_set, data_pdus, element, uid, us
from .send_wire import write_pdus
from .state import plugin_state

log = logging.getLogger("pacsbox.dicom_net.scp")

#: pynetdicom's status for a refused command: PS3.7 C.5 "Refused: Not Authorized".
STATUS_NOT_AUTHORIZED = 0x0124
STATUS_SUCCESS = 0x0000
STATUS_PENDING = 0xFF00
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DOES_NOT_MATCH = 0xA900
STATUS_MATCHING_TERMINATED = 0xFE00

#: Modality Worklist Information Model - FIND (PS3.4 K.6.1).
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"

#: ``DicomAlwaysAllow<Cmd>`` option of each command name.
ALWAYS_ALLOW = {"Echo": "DicomAlwaysAllowEcho", "Store": "DicomAlwaysAllowStore",
                "Find": "DicomAlwaysAllowFind", "FindWorklist": "DicomAlwaysAllowFindWorklist",
                "Move": "DicomAlwaysAllowMove", "Get": "DicomAlwaysAllowGet"}

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


# ---- association information ----------------------------------------------------------

def peer(event: Any) -> dict[str, str]:
    """The calling AET, called AET and IP of the event's association.

    Returns
    -------
    dict
        ``{"RemoteAET", "CalledAET", "RemoteIP"}``, AETs without padding: the ``origin``
        of the plugin's hooks and the C-STORE metadata.
    """
    assoc = event.assoc
    info = getattr(assoc, "pacsbox_peer", None)
    if info is None:
        rq = assoc.requestor.primitive
        info = {"RemoteAET": str(rq.calling_ae_title).strip(), "CalledAET": str(rq.called_ae_title).strip(),
                "RemoteIP": str(assoc.requestor.address)}
    return info


def command_allowed(ctx: Any, event: Any, command: str) -> bool:
    """Whether ``command`` may be served to the event's peer (reference section 9.7).

    Parameters
    ----------
    ctx : ServerContext
    event : pynetdicom.events.Event
    command : str
        ``Echo``, ``Store``, ``Find``, ``FindWorklist``, ``Move`` or ``Get``.

    Returns
    -------
    bool
        True when the ``DicomAlwaysAllow<command>`` option is true, or the calling AET
        is a configured modality (host checked with ``DicomCheckModalityHost``) whose
        ``Allow<command>`` flag is true. A refusal is logged with Orthanc's wording.
    """
    state = plugin_state(ctx)
    if state.options[ALWAYS_ALLOW[command]]:
        return True
    p = peer(event)
    mods = state.modalities.by_aet(p["RemoteAET"], p["RemoteIP"])
    if not mods:
        log.warning('DICOM authorization rejected for AET %s on IP %s: This AET is not listed in configuration '
                    'option "DicomModalities"', p["RemoteAET"], p["RemoteIP"])
        return False
    if any(m.allows(command) for _, m in mods):
        return True
    log.warning("DICOM authorization rejected for AET %s on IP %s: The DICOM command %s is not allowed for this "
                "modality according to configuration option \"DicomModalities\"", p["RemoteAET"], p["RemoteIP"],
                command)
    return False


def _hook_failed(ctx: Any, hook: str, exc: BaseException) -> None:
    log.error("plugin %r failed in hook %s: %s: %s", ctx.pm.culprit(hook, exc), hook, type(exc).__name__, exc,
              exc_info=exc)


class HookFailed(Exception):
    """An implementation of a chained or first-result hook of this plugin raised, or
    returned a value of the wrong type.

    Attributes
    ----------
    plugin : str
        The implementation's plugin name.
    hook : str
        The hook's name.
    error : BaseException
        What it raised (a ``TypeError`` for a wrong result).
    """

    def __init__(self, plugin: str, hook: str, error: BaseException) -> None:
        super().__init__(f"plugin {plugin!r} failed in hook {hook}: {type(error).__name__}: {error}")
        self.plugin, self.hook, self.error = plugin, hook, error


def _implementations(ctx: Any, hook: str) -> list[Any]:
    """The implementations of ``hook`` in pluggy's calling order (wrappers left out)."""
    caller = getattr(ctx.pm.hook, hook, None)
    if caller is None:
        return []
    return [i for i in reversed(caller.get_hookimpls()) if not (i.wrapper or i.hookwrapper)]


def call_chain(ctx: Any, hook: str, name: str, value: Any, expected: type | tuple[type, ...],
               valid: Callable[[Any], bool] | None = None, **kwargs: Any) -> Any:
    """Call a **chained filter** of this plugin (``filter_incoming_find``,
    ``filter_incoming_worklist``, ``filter_outgoing_find``).

    Parameters
    ----------
    ctx : ServerContext
    hook : str
        The hook's name.
    name : str
        The name of the argument that is chained (``"query"``).
    value : object
        Its value for the first implementation.
    expected : type or tuple of type
        What an implementation may return besides ``None``.
    valid : callable, optional
        A further check of a result (``valid(result) -> bool``).
    **kwargs
        The other arguments of the hook.

    Returns
    -------
    object
        What the last implementation that returned something gave (``value`` when none
        did, or when no plugin implements the hook).

    Raises
    ------
    HookFailed
        An implementation raised, or returned something not ``None`` nor ``expected``;
        the implementations after it are not called.
    """
    for impl in _implementations(ctx, hook):
        args = {**kwargs, name: value}
        try:
            out = impl.function(*[args[a] for a in impl.argnames])
        except Exception as e:  # noqa: BLE001 - reported with the plugin's name
            raise HookFailed(impl.plugin_name, hook, e) from e
        if out is None:
            continue
        if not isinstance(out, expected) or (valid is not None and not valid(out)):
            raise HookFailed(impl.plugin_name, hook, TypeError(f"returned an invalid {type(out).__name__}"))
        value = out
    return value


def _hook_error(exc: HookFailed) -> None:
    log.error("%s", exc, exc_info=exc.error if not isinstance(exc.error, TypeError) else None)


# ---- C-ECHO ------------------------------------------------------------------------------

def handle_echo(event: Any, ctx: Any) -> int:
    """``EVT_C_ECHO``: answer a Verification request (PS3.7 9.1.5).

    Returns
    -------
    int
        ``0x0000``, or ``0x0124`` when ``Echo`` is not allowed to the peer.
    """
    return STATUS_SUCCESS if command_allowed(ctx, event, "Echo") else STATUS_NOT_AUTHORIZED


# ---- C-STORE -----------------------------------------------------------------------------

def part10_file(event: Any) -> bytes:
    """The Part-10 file of a C-STORE request, with the data set **byte for byte as
    received** (never decoded nor re-encoded).

    Parameters
    ----------
    event : pynetdicom.events.Event
        An ``EVT_C_STORE`` event.

    Returns
    -------
    bytes
        128-byte preamble, ``DICM``, the File Meta Information (PS3.10 7.1: Media Storage
        SOP Class/Instance UID from the command, Transfer Syntax UID of the presentation
        context, pynetdicom's implementation UID and version name, and (0002,0016)
        *Source Application Entity Title* = the calling AET, as DCMTK writes it), then the
        data set exactly as it arrived in the P-DATA fragments (still deflated for Deflated
        Explicit VR Little Endian).
    """
    # the meta group is encoded directly (move_job.part10, byte-equal to pydicom's writer
    # fed with pynetdicom's event.file_meta, which costs a pydicom data set per instance)
    from .part10 import part10

    req = event.request
    return part10(req.DataSet.getvalue(), str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID),
                  str(event.context.transfer_syntax), peer(event)["RemoteAET"] or "")


def dataset_uids(data: bytes) -> tuple[str, str] | None:
    """(0008,0016) *SOP Class UID* and (0008,0018) *SOP Instance UID* of a Part-10 file,
    reading the data set only up to them.

    Returns
    -------
    (str, str) or None
        Both UIDs without padding (empty when absent); None when the data set cannot be
        read up to there.
    """
    try:
        ds = pydicom.filereader.read_partial(io.BytesIO(data), stop_when=lambda tag, vr, length: tag > 0x00080018)
        return (str(ds.get("SOPClassUID", "") or "").strip("\0 "),
                str(ds.get("SOPInstanceUID", "") or "").strip("\0 "))
    except Exception:  # noqa: BLE001 - any parse failure is "cannot understand"
        return None


_EXPLICIT_LE, _IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
#: Explicit VRs with a 4-byte length (PS3.5 section 7.1.2).
_LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV",
                              b"UV"})


def leading_uids(dataset: bytes, transfer_syntax: str) -> tuple[str, str] | None:
    """(0008,0016) *SOP Class UID* and (0008,0018) *SOP Instance UID* of a data set (no
    preamble nor meta group), read by walking its first elements without pydicom.

    Parameters
    ----------
    dataset : bytes
        The data set as received in the C-STORE.
    transfer_syntax : str
        Its transfer syntax UID; only Implicit and Explicit VR Little Endian are read
        here (PS3.5 section 7.1).

    Returns
    -------
    (str, str) or None
        Both UIDs without padding (empty when absent); None when this reader cannot
        tell (another transfer syntax, an element of undefined length before them, a
        value running past the end): :func:`dataset_uids` then reads the file.
    """
    implicit = transfer_syntax == _IMPLICIT_LE
    if not implicit and transfer_syntax != _EXPLICIT_LE:
        return None
    found = {0x00080016: "", 0x00080018: ""}
    pos, n = 0, len(dataset)
    unpack = struct.unpack_from
    while pos + 8 <= n:
        group, elem = unpack("<HH", dataset, pos)
        tag = group << 16 | elem
        if tag > 0x00080018:
            break
        if implicit:
            (length,) = unpack("<I", dataset, pos + 4)
            pos += 8
        elif dataset[pos + 4:pos + 6] in _LONG_LENGTH_VRS:
            if pos + 12 > n:
                return None
            (length,) = unpack("<I", dataset, pos + 8)
            pos += 12
        else:
            (length,) = unpack("<H", dataset, pos + 6)
            pos += 8
        if length == 0xFFFFFFFF or pos + length > n:
            return None
        if tag in found:
            found[tag] = dataset[pos:pos + length].decode("ascii", "replace").strip("\0 ")
        pos += length
    return found[0x00080016], found[0x00080018]


def handle_store(event: Any, ctx: Any) -> int:
    """``EVT_C_STORE``: store the received instance through ``ctx.ingest.store``.

    Parameters
    ----------
    event : pynetdicom.events.Event
    ctx : ServerContext

    Returns
    -------
    int
        The C-STORE status (PS3.4 B.2.3): ``0x0000`` when stored, already stored, or
        filtered out by a filter returning False (as Orthanc 1.10.1); ``0xA700`` when a
        ``filter_received_instance`` implementation raised (logged with its plugin's
        name; Orthanc answers an exception in a filter so); ``0x0124`` when ``Store`` is not allowed to
        the peer; ``0xA900`` when the data set's SOP Class or Instance UID differs from
        the command's (as DCMTK's store SCP in Orthanc); ``0xC000`` when the data set
        cannot be read or lacks these UIDs; ``0xA700`` when storing fails (bad file for the index, storage
        error, a plugin hook that raised...). Nothing is half-stored in any case.
    """
    if not command_allowed(ctx, event, "Store"):
        return STATUS_NOT_AUTHORIZED
    try:
        data = part10_file(event)
    except Exception:  # noqa: BLE001
        log.exception("C-STORE: cannot build the file of the received data set")
        return STATUS_CANNOT_UNDERSTAND
    req = event.request
    uids = leading_uids(req.DataSet.getvalue(), str(event.context.transfer_syntax)) or dataset_uids(data)
    if uids is None or not uids[0] or not uids[1]:
        log.error("C-STORE: cannot read the SOP Class and Instance UIDs of the received data set (%d bytes)",
                  len(data))
        return STATUS_CANNOT_UNDERSTAND
    if uids[0] != str(req.AffectedSOPClassUID).strip("\0 ") or uids[1] != str(req.AffectedSOPInstanceUID).strip("\0 "):
        log.error("C-STORE: the data set's SOP Class/Instance UID (%s, %s) differ from the command's (%s, %s)",
                  uids[0], uids[1], req.AffectedSOPClassUID, req.AffectedSOPInstanceUID)
        return STATUS_DOES_NOT_MATCH
    origin = {"Origin": "DicomProtocol", **peer(event)}
    refused = _cstore_filter(ctx, data, origin, uids[1])
    if refused is not None:
        return refused
    try:
        result = ctx.ingest.store(data, origin)
    except OrthancError as e:
        log.error("C-STORE: cannot store the instance %s: %s", uids[1], e)
        return STATUS_CANNOT_UNDERSTAND if e.code.name in ("BAD_FILE_FORMAT", "INEXISTENT_TAG") \
            else STATUS_OUT_OF_RESOURCES
    except Exception:  # noqa: BLE001 - a peer always gets a status
        log.exception("C-STORE: error while storing the instance %s", uids[1])
        return STATUS_OUT_OF_RESOURCES
    if result.status == "FilteredOut":
        failed = getattr(result, "failed_filters", ())
        if failed:
            log.error("C-STORE: instance %s refused: filter_received_instance of plugin %s raised", uids[1],
                      ", ".join(repr(f) for f in failed))
            return STATUS_OUT_OF_RESOURCES
        log.info("C-STORE: instance %s discarded by a filter", uids[1])
    return STATUS_SUCCESS


def _cstore_filter(ctx: Any, data: bytes, origin: Mapping[str, Any], sop_uid: str) -> int | None:
    """Ask the ``filter_incoming_cstore`` implementations (first result wins).

    Returns
    -------
    int or None
        None to store the instance; else the C-STORE status to answer (nothing stored):
        the status an implementation returned, ``0xA700`` when one raised or returned
        something else than None or an integer in 0..0xFFFF, ``0xC000`` when the data
        set cannot be parsed for them.
    """
    impls = _implementations(ctx, "filter_incoming_cstore")
    if not impls:
        return None
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:  # noqa: BLE001 - the data set cannot be read: nothing to filter nor store
        log.exception("C-STORE: cannot parse the instance %s for filter_incoming_cstore", sop_uid)
        return STATUS_CANNOT_UNDERSTAND
    for impl in impls:
        args = {"dataset": dataset, "origin": origin}
        try:
            status = impl.function(*[args[a] for a in impl.argnames])
            if status is None:
                continue
            if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 0xFFFF:
                raise TypeError(f"returned {status!r}, not None or a DIMSE status (0..0xFFFF)")
        except Exception as e:  # noqa: BLE001 - a broken filter refuses (fail closed)
            _hook_error(HookFailed(impl.plugin_name, "filter_incoming_cstore", e))
            return STATUS_OUT_OF_RESOURCES
        log.info("C-STORE: instance %s refused by plugin %r (filter_incoming_cstore) with status 0x%04X",
                 sop_uid, impl.plugin_name, status)
        return status
    return None


# ---- C-FIND ------------------------------------------------------------------------------

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
                out.add(DataElement(tag, "SQ", DicomSequence([_copy_item(item) for item in seq.value])))
        return out


#: VRs whose explicit-VR header has a 4-byte length (PS3.5 section 7.1.2), as text.
_LONG_VRS = frozenset(v.decode() for v in _LONG_LENGTH_VRS)
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


def _copy_item(item: Dataset) -> Dataset:
    new = Dataset()
    for el in item:
        if el.VR == "SQ":
            new.add(DataElement(el.tag, "SQ", DicomSequence([_copy_item(i) for i in el.value])))
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


def _limit_answers(ctx: Any, answers: Any, level: str | None = None) -> tuple[list, bool]:
    limit = ctx.config.int("LimitFindInstances" if level == "IMAGE" else "LimitFindResults")
    answers = list(answers or [])
    if limit and len(answers) > limit:
        return answers[:limit], True
    return answers, False


def handle_find(event: Any, ctx: Any) -> Iterator[tuple[int, Dataset | None]]:
    """``EVT_C_FIND``: Patient Root and Study Root Q/R FIND, and Modality Worklist FIND.

    Patient/Study Root (PS3.4 C.4.1): the ``find_answers`` hook answers first; else the
    index is matched by :func:`pacsbox.find_resources` with DICOM rules. Each answer
    holds exactly the requested keys (empty when the resource has no value), plus
    (0008,0052) *Query/Retrieve Level*, (0008,0054) *Retrieve AE Title* = ``DicomAet``
    and (0008,0005) *Specific Character Set*; requested sequences are copied whole from
    one instance of the resource (left out when it has none), as Orthanc 1.10.1. Computed keys of the level
    (``ModalitiesInStudy``, ``NumberOf...Related...``, ``SOPClassesInStudy``) are
    computed. The main tags in the index answer the query without reading any file
    unless a requested key is not a main tag (Orthanc's ``IsDicomAsJsonNeeded``).

    Modality Worklist (PS3.4 K.6.1): answers come from the ``find_worklist_answers``
    hook, sent as returned.

    Before either, the chained filter ``filter_incoming_find`` (or
    ``filter_incoming_worklist``) may rewrite the identifier; what it returns is the
    query (matching keys and answered keys), as Orthanc's Lua ``Incoming*RequestFilter``.

    Yields
    ------
    (int, pydicom.Dataset or None)
        ``(0xFF00, answer)`` per answer, then ``(0x0000, None)``; ``(0xFE00, None)``
        last when ``LimitFindResults`` (``LimitFindInstances`` at IMAGE level) cut the
        answers; ``(0x0124, None)`` when the command is not allowed;
        ``(0xC000, None)`` on any failure (bad query, hook that raised...).
    """
    worklist = str(event.request.AffectedSOPClassUID) == WORKLIST_FIND
    if not command_allowed(ctx, event, "FindWorklist" if worklist else "Find"):
        yield STATUS_NOT_AUTHORIZED, None
        return
    try:
        query = event.identifier
        origin = dict(peer(event))
        try:
            query = call_chain(ctx, "filter_incoming_worklist" if worklist else "filter_incoming_find", "query",
                               query, Dataset, origin=origin)
        except HookFailed as e:
            _hook_error(e)
            yield STATUS_CANNOT_UNDERSTAND, None
            return
        if worklist:
            hook = "find_worklist_answers"
            try:
                answers = ctx.pm.hook.find_worklist_answers(query=query, origin=origin)
            except Exception as e:  # noqa: BLE001
                _hook_failed(ctx, hook, e)
                yield STATUS_CANNOT_UNDERSTAND, None
                return
            answers, cut = _limit_answers(ctx, answers)
        else:
            answers, cut = _find(ctx, query, origin)
            if answers is None:
                yield STATUS_CANNOT_UNDERSTAND, None
                return
    except Exception:  # noqa: BLE001
        log.exception("C-FIND request handler has failed")
        yield STATUS_CANNOT_UNDERSTAND, None
        return
    direct = _DirectFindResponses.of(event)
    if direct is None:
        for ans in answers:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield STATUS_PENDING, ans
        yield (STATUS_MATCHING_TERMINATED if cut else STATUS_SUCCESS), None
        return
    for ans in answers:
        if event.is_cancelled:
            direct.flush()
            yield 0xFE00, None
            return
        if not direct.add(ans):
            log.error("C-FIND: cannot encode an answer")
            direct.flush()
            yield STATUS_CANNOT_UNDERSTAND, None
            return
    # the final response goes through pynetdicom (after the Pending ones, already
    # written), so that the peer's A-RELEASE-RQ can only come once pynetdicom is done
    direct.flush()
    yield (STATUS_MATCHING_TERMINATED if cut else STATUS_SUCCESS), None


# ---- C-FIND responses written directly ----------------------------------------------------

def encode_find_response_pdus(context_id: int, max_pdu: int, sop_class_uid: str, responded_id: int, status: int,
                              identifier: bytes | None = None) -> bytes:
    """The P-DATA-TF PDUs of one C-FIND-RSP, ready for the socket.

    Parameters
    ----------
    context_id : int
        Presentation context ID of the request.
    max_pdu : int
        The peer's maximum PDU length (bytes; 0 = unlimited).
    sop_class_uid : str
        (0000,0002) *Affected SOP Class UID* of the request.
    responded_id : int
        (0000,0120) *Message ID Being Responded To*.
    status : int
        (0000,0900) *Status*.
    identifier : bytes, optional
        The encoded identifier (a Pending response's answer), in the context's
        transfer syntax.

    Returns
    -------
    bytes
        The command set (Implicit VR Little Endian, group length first) in one PDU, then
        the identifier in PDVs of at most ``max_pdu - 6`` bytes, one per PDU, the last
        one flagged (PS3.8 annex E): byte-identical to what pynetdicom's
        ``DIMSEServiceProvider.send_msg`` writes for the same response (checked by a test).
    """
    elements = [element(0x0002, uid(sop_class_uid)), element(0x0100, us(0x8020)), element(0x0120, us(responded_id)),
                element(0x0800, us(0x0001 if identifier else 0x0101)), element(0x0900, us(status))]
    pdus = [command_pdu(context_id, command_set(elements))]
    if identifier:
        pdus.extend(data_pdus(context_id, identifier, max_pdu))
    return b"".join(pdus)


class _DirectFindResponses:
    """Writes the C-FIND responses of one request straight on the association's socket,
    from the thread that serves the request.

    pynetdicom's path costs, per answer, a pydicom command-set data set and its
    encoding, and one hand-off per PDU to the DUL thread through its queue (each a GIL
    switch, slow on a loaded machine). Here the command sets are encoded by
    :func:`encode_find_response_pdus` and the Pending responses written in batches of
    at most :attr:`BATCH` bytes (C-CANCEL is checked between answers, by the caller).
    The final response stays pynetdicom's (sent after the handler's last yield): the
    peer's A-RELEASE-RQ, which follows it, then never reaches the DUL while pynetdicom
    is still serving the request (writing the final response here too made findscu's
    release fail now and then on a loaded machine). The DUL thread keeps reading
    the socket (C-CANCEL, A-RELEASE, A-ABORT), so the state machine sees everything the
    peer sends; it writes nothing meanwhile, since only this thread answers the request.
    """

    #: Bytes of encoded responses written at once.
    BATCH = 65536

    def __init__(self, event: Any) -> None:
        self.assoc = event.assoc
        self.encode = encode_dataset
        req = event.request
        self.message_id = int(req.MessageID)
        self.sop_class = str(req.AffectedSOPClassUID)
        self.cx_id = int(event.context.context_id)
        ts = event.context.transfer_syntax
        self.ts = (ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
        self.max_pdu = int(self.assoc.requestor.maximum_length or 0)
        self.buf: list[bytes] = []
        self.size = 0

    @classmethod
    def of(cls, event: Any) -> "_DirectFindResponses | None":
        """The writer for ``event``'s request, or None when responses must go through
        pynetdicom (a TLS socket, which its DUL thread alone may use; an association
        whose DIMSE messages are logged, ``pynetdicom`` logger at DEBUG)."""
        assoc = event.assoc
        sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
        if sock is None or isinstance(sock, ssl.SSLSocket) or assoc.is_requestor:
            return None
        if logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            return None
        try:
            return cls(event)
        except Exception:  # noqa: BLE001 - anything unexpected: pynetdicom's path
            return None

    def add(self, answer: Dataset) -> bool:
        """Queue the Pending response of ``answer`` (written once :attr:`BATCH` bytes are
        queued); False when the answer cannot be encoded."""
        try:
            fast = getattr(answer, "pacsbox_encoded", None)
            data = fast.encode(*self.ts) if fast is not None else None
            if data is None:
                data = self.encode(answer, *self.ts)
        except Exception:  # noqa: BLE001
            data = None
        if not data:
            return False
        pdus = encode_find_response_pdus(self.cx_id, self.max_pdu, self.sop_class, self.message_id, STATUS_PENDING,
                                         data)
        self.buf.append(pdus)
        self.size += len(pdus)
        if self.size >= self.BATCH:
            self.flush()
        return True

    def flush(self) -> None:
        """Write the queued responses."""
        if self.buf:
            data = b"".join(self.buf)
            self.buf, self.size = [], 0
            if self.assoc.is_established:
                write_pdus(self.assoc, data)


def _find(ctx: Any, query: Dataset, origin: Mapping[str, Any]) -> tuple[list[Dataset] | None, bool]:
    qr = str(query.get("QueryRetrieveLevel", "") or "").strip().upper()
    if qr not in LEVELS:
        log.error("C-FIND request without a valid QueryRetrieveLevel (0008,0052): %r", qr)
        return None, False
    try:
        hooked = ctx.pm.hook.find_answers(level=qr, query=query, origin=origin)
    except Exception as e:  # noqa: BLE001
        _hook_failed(ctx, "find_answers", e)
        return None, False
    if hooked is not None:
        return _limit_answers(ctx, hooked, qr)
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
