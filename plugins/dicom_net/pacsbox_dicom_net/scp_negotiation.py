"""Association negotiation of the SCP (reference section 9.7): who may associate, and
with which presentation contexts, decided afresh for every association in its
``EVT_REQUESTED`` handler (:func:`on_requested`, bound by :mod:`.scp`):

1. ``DicomCheckCalledAet``: the called AET must be ``DicomAet`` (compared as
   ``StrictAetComparison`` says), else A-ASSOCIATE-RJ permanent/service-user/reason 7
   (dcmtk: "Called AE title not recognised");
2. the calling AET is accepted when any ``DicomAlwaysAllow*`` option is true or it
   matches a ``DicomModalities`` entry (with its host when ``DicomCheckModalityHost``),
   else reason 3 ("Calling AE title not recognised");
3. the ``filter_incoming_association`` veto hook (any ``False``, or an implementation
   that raises, rejects with reason 3; the failure is logged with the plugin's name);
4. the presentation contexts are computed for this association from what it proposes
   and the current state: Verification, every storage SOP class (any unknown SOP class
   too while ``UnknownSopClassAccepted``) with the proposed transfer syntaxes that match
   an ``AcceptedTransferSyntaxes`` pattern (both changeable at run time, read afresh
   for every association), Patient/Study Root FIND/MOVE/GET, and Modality Worklist FIND
   only when a ``find_worklist_answers`` implementation is registered. The requestor's
   order of transfer syntaxes is kept (the first acceptable one is chosen). Storage
   contexts accept SCP/SCU role selection, so that a C-GET requestor can take the SCP
   role.

Once the association is accepted, its ``EVT_ACCEPTED`` handler (:func:`on_accepted`)
serves the accepted unknown SOP classes as storage.

Also the SOP class and transfer syntax UIDs the SCP serves, which the SCP's routes
(:mod:`.scp_routes`) report.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

from pynetdicom import evt
from pynetdicom.pdu_primitives import SOPClassCommonExtendedNegotiation
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from .modalities import aet_equal
from .scp_access import ALWAYS_ALLOW
from .state import plugin_state

log = logging.getLogger("pacsbox.dicom_net.scp")

VERIFICATION = "1.2.840.10008.1.1"
#: The uncompressed transfer syntaxes accepted for non-storage services (their data sets
#: are decoded by pynetdicom).
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
QUERY_RETRIEVE = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND, PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE, PATIENT_ROOT_GET,
                  STUDY_ROOT_GET)
#: Modality Worklist Information Model - FIND (PS3.4 K.6.1).
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
#: Service class UID of the Storage Service Class (PS3.4 B.3): the common-extended
#: service class under which an accepted unknown SOP class is served.
STORAGE_SERVICE_CLASS = "1.2.840.10008.4.2"

#: The transfer syntaxes Orthanc 1.10.1 knows (``GetAllDicomTransferSyntaxes``), in its order.
ORTHANC_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.52", "1.2.840.10008.1.2.4.53",
    "1.2.840.10008.1.2.4.54", "1.2.840.10008.1.2.4.55", "1.2.840.10008.1.2.4.56", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.58", "1.2.840.10008.1.2.4.59", "1.2.840.10008.1.2.4.60", "1.2.840.10008.1.2.4.61",
    "1.2.840.10008.1.2.4.62", "1.2.840.10008.1.2.4.63", "1.2.840.10008.1.2.4.64", "1.2.840.10008.1.2.4.65",
    "1.2.840.10008.1.2.4.66", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.94", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.106", "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.6.1", "1.2.840.10008.1.2.6.2",
)
_KNOWN_TS = frozenset(ORTHANC_TRANSFER_SYNTAXES)

_REASON_CALLING = 0x03
_REASON_CALLED = 0x07


@lru_cache(maxsize=None)
def is_storage_sop_class(uid: str) -> bool:
    """Whether pynetdicom knows ``uid`` as a storage SOP class (PS3.4 annex B)."""
    try:
        return issubclass(uid_to_service_class(uid), StorageServiceClass)
    except Exception:  # noqa: BLE001
        return False


@lru_cache(maxsize=None)
def is_known_sop_class(uid: str) -> bool:
    """Whether pynetdicom knows ``uid`` as a SOP class of any service."""
    return uid_to_service_class(uid) is not ServiceClass


@lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z")


def transfer_syntax_accepted(uid: str, patterns: list[str]) -> bool:
    """Whether transfer syntax ``uid`` matches one of the ``AcceptedTransferSyntaxes``
    patterns (``*``: any run of characters, ``?``: one character) and is one of the
    :data:`ORTHANC_TRANSFER_SYNTAXES`.

    Parameters
    ----------
    uid : str
    patterns : list of str

    Returns
    -------
    bool
    """
    return uid in _KNOWN_TS and any(_pattern(p).match(uid) for p in patterns)


def has_worklist_provider(ctx: Any) -> bool:
    """Whether a ``find_worklist_answers`` implementation is registered (otherwise the
    worklist presentation context is refused, as Orthanc without a worklist plugin)."""
    hook = getattr(ctx.pm.hook, "find_worklist_answers", None)
    return bool(hook is not None and hook.get_hookimpls())


def accepted_contexts(ctx: Any, requested: list[PresentationContext]) -> tuple[list[PresentationContext], list[str]]:
    """The presentation contexts to support for an association that proposes ``requested``.

    Parameters
    ----------
    ctx : ServerContext
    requested : list of PresentationContext
        The A-ASSOCIATE-RQ's presentation context definitions.

    Returns
    -------
    (list of PresentationContext, list of str)
        The supported contexts (see the module docstring for the rules), and the unknown
        SOP classes among them (accepted as storage while ``UnknownSopClassAccepted``).
    """
    state = plugin_state(ctx)
    with state.lock:
        patterns = list(state.accepted_transfer_syntaxes)
        unknown_ok = state.unknown_sop_class_accepted
    worklist = None
    proposed: dict[str, list[str]] = {}
    for rq in requested:  # a requestor may propose one context per transfer syntax
        syntaxes = proposed.setdefault(str(rq.abstract_syntax), [])
        syntaxes.extend(str(ts) for ts in rq.transfer_syntax if str(ts) not in syntaxes)
    out: dict[str, PresentationContext] = {}
    unknown: list[str] = []
    for uid, offered in proposed.items():
        role = False
        if uid == VERIFICATION or uid in QUERY_RETRIEVE:
            syntaxes = [ts for ts in offered if ts in UNCOMPRESSED]
        elif uid == WORKLIST_FIND:
            if worklist is None:
                worklist = has_worklist_provider(ctx)
            if not worklist:
                continue
            syntaxes = [ts for ts in offered if ts in UNCOMPRESSED]
        elif is_storage_sop_class(uid) or (unknown_ok and not is_known_sop_class(uid)):
            syntaxes = [ts for ts in offered if transfer_syntax_accepted(ts, patterns)]
            role = True
            if not is_storage_sop_class(uid):
                unknown.append(uid)
        else:
            continue
        if not syntaxes:
            continue
        cx = PresentationContext()
        cx.abstract_syntax = uid
        cx.transfer_syntax = syntaxes
        if role:
            cx.scu_role = True
            cx.scp_role = True
        out[uid] = cx
    return list(out.values()), unknown


def _reject(assoc: Any, reason: int) -> None:
    assoc.acse.send_reject(0x01, 0x01, reason)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def on_requested(event: Any, ctx: Any) -> None:
    """``EVT_REQUESTED``: the association checks and this association's contexts (see
    the module docstring); a refused association gets its A-ASSOCIATE-RJ here.

    Parameters
    ----------
    event : pynetdicom.events.Event
    ctx : ServerContext
    """
    assoc = event.assoc
    try:
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        ip = str(assoc.requestor.address)
        assoc.pacsbox_peer = {"RemoteAET": calling, "CalledAET": called, "RemoteIP": ip}
        state = plugin_state(ctx)
        opts = state.options
        if opts["DicomCheckCalledAet"] and not aet_equal(called, opts["DicomAet"], opts["StrictAetComparison"]):
            log.warning("Rejected association: called AET %r is not ours (%r), from %s (AET %r)", called,
                        opts["DicomAet"], ip, calling)
            _reject(assoc, _REASON_CALLED)
            return
        if not any(opts[name] for name in ALWAYS_ALLOW.values()) and not state.modalities.by_aet(calling, ip):
            log.warning("Rejected association: unknown calling AET %r from %s (not in DicomModalities)", calling, ip)
            _reject(assoc, _REASON_CALLING)
            return
        if not ctx.pm.call_veto("filter_incoming_association", {"calling_aet": calling, "called_aet": called,
                                                                "ip": ip}):
            log.warning("Rejected association from %s (AET %r) by filter_incoming_association", ip, calling)
            _reject(assoc, _REASON_CALLING)
            return
        contexts, unknown = accepted_contexts(ctx, rq.presentation_context_definition_list)
        assoc.acceptor.supported_contexts = contexts
        assoc.pacsbox_unknown = unknown
    except Exception:  # noqa: BLE001 - a broken check fails closed, with a proper rejection
        log.exception("Rejected association: error while checking it")
        if not assoc.is_rejected:
            _reject(assoc, 0x01)


def on_accepted(event: Any, ctx: Any) -> None:
    """``EVT_ACCEPTED``: serve the accepted unknown SOP classes as storage.

    pynetdicom picks the service of a request by its SOP class; an unknown one is mapped
    to the Storage Service Class (``1.2.840.10008.4.2``) for this association only,
    through its SOP Class Common Extended Negotiation table (PS3.7 D.3.3.6).

    Parameters
    ----------
    event : pynetdicom.events.Event
    ctx : ServerContext
    """
    assoc = event.assoc
    unknown = getattr(assoc, "pacsbox_unknown", ())
    if not unknown:
        return
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    table = assoc.acceptor._common_ext  # pynetdicom keeps no public setter for this table
    for uid in unknown:
        if uid in accepted:
            item = SOPClassCommonExtendedNegotiation()
            item.sop_class_uid = uid
            item.service_class_uid = STORAGE_SERVICE_CLASS
            table[uid] = item
