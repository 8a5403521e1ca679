"""The C-STORE SCP: the ``EVT_C_STORE`` handler, which stores each received instance
through ``ctx.ingest.store`` with its data set byte for byte as received.

Before storing, the handler checks the peer's permission (``Store``), reads the data
set's SOP Class and Instance UIDs (:func:`leading_uids`, a walk of its first elements;
:func:`dataset_uids` with pydicom when that walk cannot tell) and compares them with the
command's, then asks the ``filter_incoming_cstore`` hook. The statuses it answers are
listed in :mod:`.scp_statuses`.
"""
from __future__ import annotations

import io
import logging
import struct
from typing import Any, Mapping

import pydicom

from pacsbox import OrthancError

from .hook_calls import HookFailed, implementations, log_hook_failed
from .scp_access import command_allowed, peer
from .scp_statuses import (STATUS_CANNOT_UNDERSTAND, STATUS_DOES_NOT_MATCH, STATUS_NOT_AUTHORIZED,
                           STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS)

log = logging.getLogger("pacsbox.dicom_net.scp")


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
    # the meta group is encoded directly (part10.part10, byte-equal to pydicom's writer
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
LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV",
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
        elif dataset[pos + 4:pos + 6] in LONG_LENGTH_VRS:
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
    impls = implementations(ctx, "filter_incoming_cstore")
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
            log_hook_failed(HookFailed(impl.plugin_name, "filter_incoming_cstore", e))
            return STATUS_OUT_OF_RESOURCES
        log.info("C-STORE: instance %s refused by plugin %r (filter_incoming_cstore) with status 0x%04X",
                 sop_uid, impl.plugin_name, status)
        return status
    return None
