"""The presentation contexts of the C-STORE SCU: which ones to propose, and which
accepted one each instance is sent in.

- :func:`plan_contexts`: for each SOP class, one context per transfer syntax the
  instances are stored in, then one context holding the uncompressed syntaxes
  (``DicomScuPreferredTransferSyntax`` first) when converting is allowed, then
  Verification; at most 128 contexts;
- :func:`choose_context`: the stored syntax when the peer accepted it, else the first
  accepted uncompressed one (:func:`uncompressed_order`) when converting is allowed or the
  instance is uncompressed already;
- :func:`no_context_error`: Orthanc's words when none fits.

Source: DICOM PS3.8 section 9.3.2.2 (at most 128 presentation contexts), PS3.5 section
10 (transfer syntaxes); Orthanc 1.10.1 ``DicomStoreUserConnection`` for the behaviour.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from pynetdicom.presentation import PresentationContext, build_context

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
VERIFICATION = "1.2.840.10008.1.1"
#: The uncompressed transfer syntaxes a converted instance may be sent in.
UNCOMPRESSED = (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE)
#: PS3.8 section 9.3.2.2: presentation contexts in one A-ASSOCIATE-RQ.
MAX_CONTEXTS = 128


def is_uncompressed(ts: str) -> bool:
    """Whether ``ts`` is one of the three uncompressed transfer syntaxes (not deflated)."""
    return ts in UNCOMPRESSED


def uncompressed_order(preferred: str) -> list[str]:
    """The uncompressed syntaxes to offer for conversion, ``preferred`` first when it is
    uncompressed (``DicomScuPreferredTransferSyntax``), then Explicit and Implicit VR
    Little Endian, then Explicit VR Big Endian."""
    out = [preferred] if is_uncompressed(preferred) else []
    return out + [ts for ts in UNCOMPRESSED if ts not in out]


def plan_contexts(pairs: Iterable[tuple[str, str]], *, allow_transcoding: bool,
                  preferred_ts: str = EXPLICIT_LE, limit: int = MAX_CONTEXTS) -> list[PresentationContext]:
    """The presentation contexts to propose for instances of the given kinds.

    Parameters
    ----------
    pairs : iterable of (str, str)
        ``(SOP class UID, stored transfer syntax UID)`` of the instances to send, in
        sending order (duplicates are fine).
    allow_transcoding : bool
        Also propose, per SOP class, a context of uncompressed syntaxes for converting
        instances whose stored syntax the peer refuses. Without it, an uncompressed
        instance is still proposed in the three uncompressed syntaxes (no pixel data
        is converted then, only the element encoding), a compressed one only in its own.
    preferred_ts : str
        ``DicomScuPreferredTransferSyntax``: first syntax of the conversion context.
    limit : int
        Contexts at most (128 in DICOM, one of them Verification); the first
        instances' kinds are proposed first.

    Returns
    -------
    list of PresentationContext
        For each SOP class, in order of first appearance: one context per stored syntax
        (a single syntax each, so that the peer's choice cannot replace it), then the
        conversion context; last, Verification. Context IDs are given by pynetdicom
        when associating.
    """
    order: dict[str, list[str]] = {}
    for sop_class, ts in pairs:
        tss = order.setdefault(sop_class, [])
        if ts not in tss:
            tss.append(ts)
    out: list[PresentationContext] = []
    for sop_class, tss in order.items():
        wanted = [[ts] for ts in tss]
        if allow_transcoding or any(is_uncompressed(ts) for ts in tss):
            wanted.append(uncompressed_order(preferred_ts))
        if len(out) + len(wanted) > limit - 1:
            break
        for syntaxes in wanted:
            out.append(build_context(sop_class, syntaxes))
    # Verification too, as Orthanc (DCMTK) does: a peer that refuses every storage
    # context then still accepts the association, and each instance fails on its own
    out.append(build_context(VERIFICATION, [IMPLICIT_LE]))
    return out


def no_context_error(ts: str, accepted: Sequence[str]) -> str:
    """Orthanc 1.10.1's detail when no accepted context fits an instance: ``Cannot
    transcode from <stored syntax> to one of [ <syntaxes accepted for its SOP class> ]``."""
    return f"Cannot transcode from {ts} to one of [ " + "".join(f"{t} " for t in accepted) + "]"


def choose_context(accepted: Sequence[Any], sop_class: str, ts: str, *, allow_transcoding: bool,
                   preferred_ts: str = EXPLICIT_LE, role: str | None = None) -> tuple[Any, str] | None:
    """The accepted presentation context to send an instance in.

    Parameters
    ----------
    accepted : sequence of PresentationContext
        ``assoc.accepted_contexts``.
    sop_class, ts : str
        The instance's SOP class and stored transfer syntax.
    allow_transcoding : bool
        Whether a compressed instance may be converted to an uncompressed syntax
        (uncompressed ones may always change their element encoding).
    preferred_ts : str
        ``DicomScuPreferredTransferSyntax``.
    role : {"scu", None}
        ``"scu"``: only contexts where this side may send C-STORE requests (the
        acceptor side of a C-GET: the peer offered the SCP role).

    Returns
    -------
    (PresentationContext, str) or None
        The context and the syntax to send in: the stored one if accepted, else the
        first accepted of :func:`uncompressed_order`; None when there is none.
    """
    cands = [cx for cx in accepted if cx.abstract_syntax == sop_class and (role != "scu" or cx.as_scu)]
    for cx in cands:
        if cx.transfer_syntax[0] == ts:
            return cx, ts
    if allow_transcoding or is_uncompressed(ts):
        for target in uncompressed_order(preferred_ts):
            for cx in cands:
                if cx.transfer_syntax[0] == target:
                    return cx, target
    return None
